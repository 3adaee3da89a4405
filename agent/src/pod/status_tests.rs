//! Status computation: phase, conditions, container states for the situations an operator sees.

use super::*;
use crate::pod::observed::ObservedSandbox;

const S: i64 = 1_000_000_000;

fn pod(policy: &str) -> Pod {
    serde_saphyr::from_str(&format!(
        "metadata: {{name: web, uid: u1}}
spec:
  restartPolicy: {policy}
  containers:
  - {{name: app, image: busybox}}"
    ))
    .expect("test pod parses")
}

fn sandbox() -> ObservedSandbox {
    ObservedSandbox {
        id: "s1".into(),
        attempt: 0,
        ready: true,
        created_at: 1,
        ips: vec!["10.88.0.5".into()],
    }
}

fn app(id: &str, state: InstanceState, restart_count: u32, created_at: i64) -> ObservedContainer {
    ObservedContainer {
        id: id.into(),
        sandbox_id: "s1".into(),
        name: "app".into(),
        kind: ContainerKind::App,
        restart_count,
        fingerprint: String::new(),
        state,
        created_at,
        started_at: created_at + S,
        image: "busybox".into(),
        image_ref: "sha256:abc".into(),
        termination_message_file: None,
    }
}

fn exited(code: i32, reason: &str) -> InstanceState {
    InstanceState::Exited {
        exit_code: code,
        reason: reason.into(),
        message: String::new(),
        finished_at: 50 * S,
    }
}

fn cond(status: &PodStatus, type_: &str) -> String {
    status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == type_)
        .map(|c| c.status.clone())
        .unwrap_or_default()
}

#[test]
fn a_running_pod_is_ready_with_its_ip() {
    let observed = ObservedPod::new(
        vec![sandbox()],
        vec![app("c1", InstanceState::Running, 0, 10 * S)],
    );
    let status = pod_status(
        &pod("Always"),
        &observed,
        &BTreeMap::new(),
        Outcome::Active,
        &StatusContext::default(),
    );
    assert_eq!(status.phase.as_deref(), Some("Running"));
    assert_eq!(status.pod_ip.as_deref(), Some("10.88.0.5"));
    assert_eq!(cond(&status, "Ready"), "True");
    assert_eq!(cond(&status, "Initialized"), "True");
    let c = &status.container_statuses.as_ref().unwrap()[0];
    assert!(c.ready);
    assert_eq!(c.container_id.as_deref(), Some("containerd://c1"));
    assert!(c.state.as_ref().unwrap().running.is_some());
}

#[test]
fn a_crash_looping_container_waits_with_its_last_termination() {
    let observed = ObservedPod::new(
        vec![sandbox()],
        vec![
            app("c2", exited(1, "Error"), 2, 20 * S),
            app("c1", exited(1, "Error"), 1, 10 * S),
        ],
    );
    let mut waiting = BTreeMap::new();
    waiting.insert(
        "app".to_string(),
        Waiting {
            reason: "CrashLoopBackOff",
            message: "back-off 20s restarting failed container=app pod=web".into(),
        },
    );
    let status = pod_status(
        &pod("Always"),
        &observed,
        &waiting,
        Outcome::Active,
        &StatusContext::default(),
    );
    assert_eq!(status.phase.as_deref(), Some("Running"));
    assert_eq!(cond(&status, "Ready"), "False");
    let c = &status.container_statuses.as_ref().unwrap()[0];
    assert_eq!(c.restart_count, 2);
    let state = c.state.as_ref().unwrap().waiting.as_ref().unwrap();
    assert_eq!(state.reason.as_deref(), Some("CrashLoopBackOff"));
    let last = c.last_state.as_ref().unwrap().terminated.as_ref().unwrap();
    assert_eq!(last.exit_code, 1);
    assert_eq!(last.container_id.as_deref(), Some("containerd://c2"));
}

#[test]
fn terminal_phases_and_oom_reason() {
    let cases = [
        (
            Outcome::Completed { succeeded: true },
            exited(0, ""),
            "Succeeded",
            "Completed",
        ),
        (
            Outcome::Completed { succeeded: false },
            exited(137, "OOMKilled"),
            "Failed",
            "OOMKilled",
        ),
    ];
    for (outcome, state, phase, reason) in cases {
        let observed = ObservedPod::new(vec![sandbox()], vec![app("c1", state, 0, 10 * S)]);
        let status = pod_status(
            &pod("Never"),
            &observed,
            &BTreeMap::new(),
            outcome,
            &StatusContext::default(),
        );
        assert_eq!(status.phase.as_deref(), Some(phase));
        let c = &status.container_statuses.as_ref().unwrap()[0];
        let t = c.state.as_ref().unwrap().terminated.as_ref().unwrap();
        assert_eq!(t.reason.as_deref(), Some(reason));
        assert_eq!(cond(&status, "Ready"), "False");
    }
}

#[test]
fn a_new_pod_is_pending_and_creating() {
    let mut waiting = BTreeMap::new();
    waiting.insert(
        "app".to_string(),
        Waiting {
            reason: "ContainerCreating",
            message: String::new(),
        },
    );
    let status = pod_status(
        &pod("Always"),
        &ObservedPod::default(),
        &waiting,
        Outcome::Active,
        &StatusContext {
            host_ip: Some("192.0.2.1".into()),
            start_time: Some(5 * S),
            qos_class: Some("BestEffort".into()),
            ..StatusContext::default()
        },
    );
    assert_eq!(status.phase.as_deref(), Some("Pending"));
    assert_eq!(status.host_ip.as_deref(), Some("192.0.2.1"));
    assert_eq!(status.pod_ip, None);
    assert!(status.start_time.is_some());
    let c = &status.container_statuses.as_ref().unwrap()[0];
    let w = c.state.as_ref().unwrap().waiting.as_ref().unwrap();
    assert_eq!(w.reason.as_deref(), Some("ContainerCreating"));
}

#[test]
fn a_stopped_pod_is_succeeded_only_when_every_container_exited_zero() {
    let cases = [
        (vec![exited(0, "Completed")], "Succeeded"),
        (vec![exited(143, "Error")], "Failed"),
        (vec![InstanceState::Running], "Running"),
        (vec![], "Failed"),
    ];
    for (states, want) in cases {
        let containers = states
            .iter()
            .enumerate()
            .map(|(i, s)| app(&format!("c{i}"), s.clone(), 0, 10 * S))
            .collect();
        let observed = ObservedPod::new(vec![sandbox()], containers);
        let status = pod_status(
            &pod("Always"),
            &observed,
            &BTreeMap::new(),
            Outcome::Stopped,
            &StatusContext::default(),
        );
        assert_eq!(status.phase.as_deref(), Some(want), "{states:?}");
        assert_eq!(cond(&status, "Ready"), "False");
    }
}

#[test]
fn probes_decide_started_and_ready() {
    use crate::pod::probe::prober::{ContainerProbes, ProbeSnapshot};
    use crate::pod::probe::spec::ProbeKind;
    use crate::pod::probe::tracker::Verdict;
    let probed: Pod = serde_saphyr::from_str(
        "metadata: {name: web, uid: u1}
spec:
  containers:
  - name: app
    image: busybox
    startupProbe: {exec: {command: [true]}}
    readinessProbe: {tcpSocket: {port: 80}}",
    )
    .expect("test pod parses");
    let observed = ObservedPod::new(
        vec![sandbox()],
        vec![app("c1", InstanceState::Running, 0, 10 * S)],
    );
    // (verdicts of c1, started, ready, the pod's Ready condition)
    let cases = [
        (vec![], false, false, "False"),
        (
            vec![(ProbeKind::Startup, Verdict::Success)],
            true,
            false,
            "False",
        ),
        (
            vec![
                (ProbeKind::Startup, Verdict::Success),
                (ProbeKind::Readiness, Verdict::Success),
            ],
            true,
            true,
            "True",
        ),
        (
            vec![
                (ProbeKind::Startup, Verdict::Success),
                (ProbeKind::Readiness, Verdict::Failure),
            ],
            true,
            false,
            "False",
        ),
    ];
    for (verdicts, started, ready, condition) in cases {
        let probes = ProbeSnapshot {
            containers: BTreeMap::from([(
                "c1".to_string(),
                ContainerProbes {
                    verdicts: verdicts.iter().copied().collect(),
                    failure: None,
                },
            )]),
        };
        let status = pod_status(
            &probed,
            &observed,
            &BTreeMap::new(),
            Outcome::Active,
            &StatusContext {
                probes,
                ..StatusContext::default()
            },
        );
        let c = &status.container_statuses.as_ref().unwrap()[0];
        assert_eq!(c.started, Some(started), "{verdicts:?}");
        assert_eq!(c.ready, ready, "{verdicts:?}");
        assert_eq!(cond(&status, "Ready"), condition, "{verdicts:?}");
        assert_eq!(cond(&status, "ContainersReady"), condition, "{verdicts:?}");
        assert_eq!(status.phase.as_deref(), Some("Running"));
    }
}
