//! `/metrics`: a few of upstream kubelet's metrics in the Prometheus text format —
//! `kubelet_node_name`, `kubelet_running_pods`, `kubelet_running_containers{container_state}`
//! — and the standard `process_*` metrics of kwk-node itself (`kubelet_pod_start_duration_seconds`
//! is in [`super::pod_start`]).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use k8s_openapi::api::core::v1::Pod;

/// `/proc` counts CPU time in USER_HZ (100 on Linux).
const TICKS_PER_SECOND: f64 = 100.0;
/// The page size `/proc/self/stat` counts RSS in.
const PAGE_SIZE: u64 = 4096;

/// Running pods (with a running container) and containers by state (`running`, `exited`,
/// `created`, `unknown`).
pub fn pod_counts(pods: &[Pod]) -> (usize, BTreeMap<&'static str, usize>) {
    let mut states: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut running_pods = 0;
    for pod in pods {
        let statuses = pod.status.as_ref().map(|s| {
            s.container_statuses
                .iter()
                .flatten()
                .chain(s.init_container_statuses.iter().flatten())
        });
        let mut any_running = false;
        for status in statuses.into_iter().flatten() {
            let state = status.state.as_ref();
            let name = match state {
                Some(s) if s.running.is_some() => "running",
                Some(s) if s.terminated.is_some() => "exited",
                Some(s) if s.waiting.is_some() && status.container_id.is_some() => "created",
                Some(s) if s.waiting.is_some() => continue,
                _ => "unknown",
            };
            any_running |= name == "running";
            *states.entry(name).or_default() += 1;
        }
        running_pods += usize::from(any_running);
    }
    (running_pods, states)
}

/// The process figures from `/proc/self/stat` (text after the command name) and the boot time.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ProcessSample {
    pub cpu_seconds: f64,
    pub start_time_seconds: f64,
    pub virtual_memory_bytes: u64,
    pub resident_memory_bytes: u64,
}

/// Reads `/proc/self/stat`; `boot_time` is `btime` of `/proc/stat`.
pub fn parse_self_stat(text: &str, boot_time: u64) -> Option<ProcessSample> {
    let after_comm = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    // Field numbers of proc(5), minus the 3 before this text (pid, comm) and 1 for state.
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    let ticks = field(14)? + field(15)?;
    Some(ProcessSample {
        cpu_seconds: ticks as f64 / TICKS_PER_SECOND,
        start_time_seconds: boot_time as f64 + field(22)? as f64 / TICKS_PER_SECOND,
        virtual_memory_bytes: field(23)?,
        resident_memory_bytes: field(24)? * PAGE_SIZE,
    })
}

fn boot_time() -> Option<u64> {
    std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime ")?.trim().parse().ok())
}

fn process_sample() -> Option<ProcessSample> {
    parse_self_stat(
        &std::fs::read_to_string("/proc/self/stat").ok()?,
        boot_time()?,
    )
}

/// The `/metrics` text.
pub fn render(node_name: &str, pods: &[Pod]) -> String {
    let (running_pods, states) = pod_counts(pods);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP kubelet_node_name [ALPHA] The node's name. The count is always 1.\n\
         # TYPE kubelet_node_name gauge\nkubelet_node_name{{node=\"{node_name}\"}} 1\n\
         # HELP kubelet_running_pods [ALPHA] Number of pods that have a running pod sandbox\n\
         # TYPE kubelet_running_pods gauge\nkubelet_running_pods {running_pods}\n\
         # HELP kubelet_running_containers [ALPHA] Number of containers currently running\n\
         # TYPE kubelet_running_containers gauge"
    );
    for (state, count) in &states {
        let _ = writeln!(
            out,
            "kubelet_running_containers{{container_state=\"{state}\"}} {count}"
        );
    }
    if let Some(p) = process_sample() {
        let fds = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count());
        let _ = writeln!(
            out,
            "# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.\n\
             # TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total {}\n\
             # HELP process_open_fds Number of open file descriptors.\n\
             # TYPE process_open_fds gauge\nprocess_open_fds {fds}\n\
             # HELP process_resident_memory_bytes Resident memory size in bytes.\n\
             # TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes {}\n\
             # HELP process_start_time_seconds Start time of the process since unix epoch in seconds.\n\
             # TYPE process_start_time_seconds gauge\nprocess_start_time_seconds {}\n\
             # HELP process_virtual_memory_bytes Virtual memory size in bytes.\n\
             # TYPE process_virtual_memory_bytes gauge\nprocess_virtual_memory_bytes {}",
            p.cpu_seconds, p.resident_memory_bytes, p.start_time_seconds, p.virtual_memory_bytes
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
        ContainerStatus, PodStatus,
    };

    fn status(state: ContainerState, id: Option<&str>) -> ContainerStatus {
        ContainerStatus {
            state: Some(state),
            container_id: id.map(String::from),
            ..ContainerStatus::default()
        }
    }

    #[test]
    fn containers_are_counted_by_state() {
        let running = ContainerState {
            running: Some(ContainerStateRunning::default()),
            ..ContainerState::default()
        };
        let exited = ContainerState {
            terminated: Some(ContainerStateTerminated::default()),
            ..ContainerState::default()
        };
        let waiting = ContainerState {
            waiting: Some(ContainerStateWaiting::default()),
            ..ContainerState::default()
        };
        let pod = |statuses: Vec<ContainerStatus>| Pod {
            status: Some(PodStatus {
                container_statuses: Some(statuses),
                ..PodStatus::default()
            }),
            ..Pod::default()
        };
        let pods = [
            pod(vec![
                status(running.clone(), Some("c1")),
                status(exited, Some("c2")),
            ]),
            pod(vec![
                status(waiting.clone(), Some("c3")),
                status(waiting, None),
            ]),
            pod(vec![
                status(running, Some("c4")),
                status(ContainerState::default(), None),
            ]),
            Pod::default(),
        ];
        let (running_pods, states) = pod_counts(&pods);
        assert_eq!(running_pods, 2);
        assert_eq!(
            states,
            BTreeMap::from([
                ("created", 1),
                ("exited", 1),
                ("running", 2),
                ("unknown", 1)
            ])
        );
        let text = render("node-1", &pods);
        assert!(
            text.contains("kubelet_node_name{node=\"node-1\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("kubelet_running_pods 2\n"), "{text}");
        assert!(text.contains("kubelet_running_containers{container_state=\"running\"} 2\n"));
        assert!(text.contains("process_start_time_seconds "), "{text}");
    }

    #[test]
    fn self_stat_is_read() {
        let text = "42 (kwk node) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 8 0 1000 \
                    123456 10 18446744073709551615";
        let sample = parse_self_stat(text, 1_700_000_000).unwrap();
        assert_eq!(sample.cpu_seconds, 3.0);
        assert_eq!(sample.start_time_seconds, 1_700_000_010.0);
        assert_eq!(sample.virtual_memory_bytes, 123_456);
        assert_eq!(sample.resident_memory_bytes, 10 * 4096);
        assert_eq!(parse_self_stat("garbage", 0), None);
    }
}
