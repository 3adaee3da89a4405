//! A whole pod life cycle through `kwk-cri` against a real containerd: sandbox, container with
//! limits, HTTP into the pod, exec, CRI log file, stats, stop and remove; pod network and host
//! network.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed expectation aborts the test"
)]

use std::net::SocketAddr;
use std::time::Duration;

use kwk_cri::api;
use kwk_tests::cgroups::{cgroups_path_from_info, read_limits};
use kwk_tests::pods::{PodShape, container_config, limits};
use kwk_tests::{TestContainerd, privileged_tests_enabled, wait_for};

const MEMORY_LIMIT: i64 = 64 << 20;
const MILLI_CPU: i64 = 250;

/// busybox httpd serving a page that names the pod, in the foreground.
fn web_server(port: u16, page: &str) -> Vec<String> {
    let script = format!(
        "mkdir -p /www && echo '{page}' > /www/index.html && echo serving {page} && exec httpd -f -v -p {port} -h /www"
    );
    vec!["/bin/sh".into(), "-c".into(), script]
}

async fn pod_cycle(host_network: bool) -> anyhow::Result<()> {
    let node = TestContainerd::start().await?;
    let cri = &node.cri;
    let name = if host_network { "web-host" } else { "web" };
    let log_dir = node.pod_log_dir(name);
    let sandbox = node.sandbox(
        name,
        PodShape {
            host_network,
            shared_pid: false,
        },
    )?;

    let pod_id = cri.run_pod_sandbox(sandbox.clone(), "").await?;
    let status = cri.pod_sandbox_status(&pod_id, false).await?.status;
    assert_eq!(status.state, api::PodSandboxState::SandboxReady as i32);
    let pod_ip = status.network.map(|n| n.ip).unwrap_or_default();
    if host_network {
        assert!(
            pod_ip.is_empty(),
            "a host-network sandbox has no pod IP of its own: {pod_ip}"
        );
    } else {
        assert!(
            pod_ip.starts_with("10.88."),
            "pod IP {pod_ip:?} should come from the test bridge"
        );
    }

    let port = if host_network { 8081 } else { 80 };
    let command: Vec<String> = web_server(port, name);
    let command: Vec<&str> = command.iter().map(String::as_str).collect();
    let mut config = container_config("httpd", &node.images.busybox_reference, &command);
    config.linux = Some(api::LinuxContainerConfig {
        resources: Some(limits(MILLI_CPU, MEMORY_LIMIT)),
        ..Default::default()
    });
    let container_id = cri
        .create_container(&pod_id, config, sandbox.clone())
        .await?;
    cri.start_container(&container_id).await?;

    let verbose = cri.container_status(&container_id, true).await?;
    assert_eq!(
        verbose.status.state,
        api::ContainerState::ContainerRunning as i32
    );

    // The limits landed in the container's cgroup.
    let cgroup = cgroups_path_from_info(&verbose.info).expect("verbose status carries the spec");
    assert!(
        cgroup.starts_with(node.cgroup_root()),
        "{cgroup} is under the test's cgroup root"
    );
    let landed = read_limits(&cgroup)?;
    assert_eq!(landed.memory_bytes, Some(MEMORY_LIMIT as u64));
    assert_eq!(landed.cpu_period_us, 100_000);
    assert_eq!(landed.cpu_quota_us, Some(25_000));

    // HTTP from the node to the pod answers with the pod's page.
    let addr: SocketAddr = if host_network {
        format!("127.0.0.1:{port}")
    } else {
        format!("{pod_ip}:{port}")
    }
    .parse()?;
    let mut response = String::new();
    let mut last_error = String::new();
    wait_for(Duration::from_secs(10), "the pod's web server", || {
        match node
            .netns()
            .run(|| kwk_tests::http::get(addr, "/index.html"))
            .and_then(|r| r)
        {
            Ok(body) => response = body,
            Err(err) => last_error = format!("{err:#}"),
        }
        std::future::ready(kwk_tests::http::is_ok(&response))
    })
    .await
    .map_err(|e| {
        e.context(format!(
            "last error: {last_error}; last response: {response:?}"
        ))
    })?;
    assert!(
        response.contains(name),
        "response names the pod: {response}"
    );

    // ExecSync returns output and exit code.
    let exec = cri
        .exec_sync(
            &container_id,
            vec!["cat".into(), "/www/index.html".into()],
            Duration::from_secs(10),
        )
        .await?;
    assert_eq!(exec.exit_code, 0);
    assert_eq!(String::from_utf8_lossy(&exec.stdout).trim(), name);
    let failing = cri
        .exec_sync(
            &container_id,
            vec!["sh".into(), "-c".into(), "echo oops >&2; exit 3".into()],
            Duration::from_secs(10),
        )
        .await?;
    assert_eq!(failing.exit_code, 3);
    assert_eq!(String::from_utf8_lossy(&failing.stderr).trim(), "oops");

    // The log file is in CRI format: "<RFC3339Nano> <stream> <P|F> <line>".
    let log_path = log_dir.join("httpd.log");
    let mut log = String::new();
    wait_for(Duration::from_secs(5), "the container log", || {
        log = std::fs::read_to_string(&log_path).unwrap_or_default();
        std::future::ready(log.contains(&format!("serving {name}")))
    })
    .await?;
    let line = log
        .lines()
        .find(|l| l.ends_with(&format!("serving {name}")))
        .expect("log line");
    let fields: Vec<&str> = line.splitn(4, ' ').collect();
    assert_eq!(fields.len(), 4, "{line}");
    assert!(
        fields[0].contains('T') && fields[0].ends_with('Z') || fields[0].contains('+'),
        "timestamp in {line}"
    );
    assert_eq!(fields[1], "stdout", "{line}");
    assert_eq!(fields[2], "F", "{line}");

    // Stats: memory in use, under the limit.
    let stats = cri.container_stats(&container_id).await?;
    let working_set = stats
        .memory
        .and_then(|m| m.working_set_bytes)
        .map(|v| v.value)
        .unwrap_or(0);
    assert!(
        working_set > 0 && working_set < MEMORY_LIMIT as u64,
        "working set {working_set}"
    );
    assert!(stats.cpu.is_some());
    let listed = cri.list_container_stats(None).await?;
    assert!(
        listed
            .iter()
            .any(|s| s.attributes.as_ref().is_some_and(|a| a.id == container_id))
    );

    // Stop, remove; nothing of the pod is left.
    cri.stop_container(&container_id, Duration::from_secs(1))
        .await?;
    let stopped = cri.container_status(&container_id, false).await?.status;
    assert_eq!(stopped.state, api::ContainerState::ContainerExited as i32);
    cri.remove_container(&container_id).await?;
    cri.stop_pod_sandbox(&pod_id).await?;
    cri.remove_pod_sandbox(&pod_id).await?;
    assert!(cri.list_pod_sandbox(None).await?.is_empty());
    assert!(cri.list_containers(None).await?.is_empty());
    let err = cri.pod_sandbox_status(&pod_id, false).await.unwrap_err();
    assert!(err.is_not_found(), "{err}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_network_pod_serves_http_and_cleans_up() -> anyhow::Result<()> {
    if !privileged_tests_enabled() {
        return Ok(());
    }
    pod_cycle(false).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_network_pod_serves_http_and_cleans_up() -> anyhow::Result<()> {
    if !privileged_tests_enabled() {
        return Ok(());
    }
    pod_cycle(true).await
}
