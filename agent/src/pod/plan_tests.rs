//! Table tests of the pod planner: each case is a pod spec, what the runtime holds, and the
//! actions (and outcome) the planner must choose.

use super::*;
use crate::pod::observed::{ObservedContainer, ObservedSandbox};
use crate::pod::probe::spec::ProbeKind;
use crate::pod::spec::find_container;

const S: i64 = 1_000_000_000;
const NOW: i64 = 1_000 * S;

fn pod(yaml: &str) -> Pod {
    serde_saphyr::from_str(yaml).expect("test pod parses")
}

fn web(restart_policy: &str) -> Pod {
    pod(&format!(
        "metadata: {{name: web, uid: u1}}
spec:
  restartPolicy: {restart_policy}
  containers:
  - {{name: app, image: busybox}}"
    ))
}

fn with_init() -> Pod {
    pod("metadata: {name: web, uid: u1}
spec:
  initContainers:
  - {name: setup, image: busybox}
  - {name: proxy, image: busybox, restartPolicy: Always}
  - {name: migrate, image: busybox}
  containers:
  - {name: app, image: busybox}")
}

fn sandbox(id: &str, attempt: u32, ready: bool) -> ObservedSandbox {
    ObservedSandbox {
        id: id.into(),
        attempt,
        ready,
        created_at: i64::from(attempt) + 1,
        ips: vec!["10.0.0.2".into()],
    }
}

/// An instance of the named spec container, with the spec's fingerprint.
fn instance(
    pod: &Pod,
    name: &str,
    id: &str,
    sandbox: &str,
    state: InstanceState,
) -> ObservedContainer {
    let c = find_container(pod, name).expect("container in spec");
    ObservedContainer {
        id: id.into(),
        sandbox_id: sandbox.into(),
        name: name.into(),
        kind: c.kind,
        restart_count: 0,
        fingerprint: c.fingerprint,
        state,
        created_at: NOW - 100 * S,
        started_at: NOW - 99 * S,
        image: "busybox".into(),
        image_ref: "sha256:1".into(),
        termination_message_file: None,
    }
}

fn exited(code: i32, finished_at: i64) -> InstanceState {
    InstanceState::Exited {
        exit_code: code,
        reason: if code == 0 { "Completed" } else { "Error" }.into(),
        message: String::new(),
        finished_at,
    }
}

fn run(pod: &Pod, observed: &ObservedPod) -> Plan {
    plan_with(pod, observed, &PodBackoff::default(), false)
}

fn plan_with(pod: &Pod, observed: &ObservedPod, backoff: &PodBackoff, terminating: bool) -> Plan {
    plan(PlanInput {
        pod,
        observed,
        backoff,
        now: NOW,
        terminating,
        probe_failures: &BTreeMap::new(),
        earlier_instances_kept: Some(1),
    })
}

/// A plan where the liveness or startup probes of `failures` (by instance ID) failed.
fn plan_with_failures(
    pod: &Pod,
    observed: &ObservedPod,
    failures: &BTreeMap<String, ProbeFailure>,
) -> Plan {
    plan(PlanInput {
        pod,
        observed,
        backoff: &PodBackoff::default(),
        now: NOW,
        terminating: false,
        probe_failures: failures,
        earlier_instances_kept: Some(1),
    })
}

fn start(name: &str, kind: ContainerKind, restart_count: u32) -> Action {
    Action::StartContainer {
        name: name.into(),
        kind,
        restart_count,
    }
}

#[test]
fn a_new_pod_gets_a_sandbox_and_its_containers() {
    let p = web("Always");
    let plan = run(&p, &ObservedPod::default());
    assert_eq!(
        plan.actions,
        vec![
            Action::CreateSandbox { attempt: 0 },
            start("app", ContainerKind::App, 0)
        ]
    );
    assert_eq!(plan.outcome, Outcome::Active);
    assert_eq!(plan.waiting["app"].reason, "ContainerCreating");
}

#[test]
fn a_running_pod_that_matches_its_spec_is_left_alone() {
    let p = web("Always");
    let observed = ObservedPod::new(
        vec![sandbox("s1", 0, true)],
        vec![instance(&p, "app", "c1", "s1", InstanceState::Running)],
    );
    let plan = run(&p, &observed);
    assert_eq!(plan.actions, vec![]);
    assert!(plan.waiting.is_empty());
}

#[test]
fn created_but_never_started_is_started_not_replaced() {
    let p = web("Always");
    let observed = ObservedPod::new(
        vec![sandbox("s1", 0, true)],
        vec![instance(&p, "app", "c1", "s1", InstanceState::Created)],
    );
    assert_eq!(
        run(&p, &observed).actions,
        vec![Action::StartCreated {
            id: "c1".into(),
            name: "app".into()
        }]
    );
}

#[test]
fn a_changed_spec_replaces_the_container_and_counts_a_restart() {
    let p = web("Always");
    let mut old = instance(&p, "app", "c1", "s1", InstanceState::Running);
    old.fingerprint = "v1:old".into();
    old.restart_count = 2;
    let observed = ObservedPod::new(vec![sandbox("s1", 0, true)], vec![old]);
    assert_eq!(
        run(&p, &observed).actions,
        vec![
            Action::KillContainer {
                id: "c1".into(),
                name: "app".into(),
                reason: KillReason::SpecChanged
            },
            start("app", ContainerKind::App, 3),
        ]
    );
}

#[test]
fn a_failed_liveness_or_startup_probe_kills_and_restarts_per_policy() {
    // (restart policy, probe, probe grace, expected actions after the kill)
    let cases = [
        ("Always", ProbeKind::Liveness, None, true),
        ("OnFailure", ProbeKind::Startup, Some(5), true),
        ("Never", ProbeKind::Liveness, None, false),
    ];
    for (policy, kind, grace_seconds, restart) in cases {
        let p = web(policy);
        let observed = ObservedPod::new(
            vec![sandbox("s1", 0, true)],
            vec![instance(&p, "app", "c1", "s1", InstanceState::Running)],
        );
        let failures = BTreeMap::from([(
            "c1".to_string(),
            ProbeFailure {
                kind,
                grace_seconds,
            },
        )]);
        let got = plan_with_failures(&p, &observed, &failures);
        let mut want = vec![Action::KillContainer {
            id: "c1".into(),
            name: "app".into(),
            reason: KillReason::ProbeFailed {
                probe: kind.lowercase(),
                grace_seconds,
                restart,
            },
        }];
        if restart {
            want.push(start("app", ContainerKind::App, 1));
        }
        assert_eq!(got.actions, want, "{policy} {kind:?}");
        assert_eq!(got.outcome, Outcome::Active, "{policy}");
    }
    // A failure recorded for another (older) instance changes nothing.
    let p = web("Always");
    let observed = ObservedPod::new(
        vec![sandbox("s1", 0, true)],
        vec![instance(&p, "app", "c2", "s1", InstanceState::Running)],
    );
    let failures = BTreeMap::from([(
        "c1".to_string(),
        ProbeFailure {
            kind: ProbeKind::Liveness,
            grace_seconds: None,
        },
    )]);
    let got = plan_with_failures(&p, &observed, &failures);
    assert!(got.actions.is_empty(), "{:?}", got.actions);
}

#[test]
fn a_dead_sandbox_is_replaced_with_the_next_attempt() {
    let p = web("Always");
    let observed = ObservedPod::new(
        vec![sandbox("s1", 0, false)],
        vec![instance(&p, "app", "c1", "s1", exited(137, NOW - S))],
    );
    let plan = run(&p, &observed);
    assert_eq!(
        plan.actions,
        vec![
            Action::CreateSandbox { attempt: 1 },
            start("app", ContainerKind::App, 1),
        ]
    );
}

#[test]
fn restart_policy_decides_what_an_exit_means() {
    // (policy, exit code, expected actions, expected outcome)
    let cases: &[(&str, i32, bool, Outcome)] = &[
        ("Always", 0, true, Outcome::Active),
        ("Always", 1, true, Outcome::Active),
        ("OnFailure", 1, true, Outcome::Active),
        (
            "OnFailure",
            0,
            false,
            Outcome::Completed { succeeded: true },
        ),
        ("Never", 1, false, Outcome::Completed { succeeded: false }),
        ("Never", 0, false, Outcome::Completed { succeeded: true }),
    ];
    for (policy, code, restarts, outcome) in cases {
        let p = web(policy);
        let observed = ObservedPod::new(
            vec![sandbox("s1", 0, true)],
            vec![instance(&p, "app", "c1", "s1", exited(*code, NOW - S))],
        );
        let plan = run(&p, &observed);
        let expected = if *restarts {
            vec![start("app", ContainerKind::App, 1)]
        } else {
            // A finished pod is stopped: its sandbox goes down.
            vec![Action::KillPod]
        };
        assert_eq!(plan.actions, expected, "{policy} exit {code}");
        assert_eq!(plan.outcome, *outcome, "{policy} exit {code}");
    }
}

#[test]
fn repeated_crashes_back_off_and_report_it() {
    let p = web("Always");
    let observed = ObservedPod::new(
        vec![sandbox("s1", 0, true)],
        vec![instance(&p, "app", "c1", "s1", exited(1, NOW - 3 * S))],
    );
    let mut backoff = PodBackoff::default();
    backoff.set(
        "app",
        Entry {
            delay: Duration::from_secs(10),
            counted_exit: "c0".into(),
        },
    );
    let plan = plan_with(&p, &observed, &backoff, false);
    assert_eq!(plan.actions, vec![]);
    assert_eq!(plan.requeue_at, Some(NOW + 7 * S));
    let waiting = &plan.waiting["app"];
    assert_eq!(waiting.reason, "CrashLoopBackOff");
    assert_eq!(
        waiting.message,
        "back-off 10s restarting failed container=app pod=web"
    );
    // Once the delay has passed it starts, and the next delay doubles.
    assert_eq!(plan.outcome, Outcome::Active);
    let after = super::plan(PlanInput {
        pod: &p,
        observed: &observed,
        backoff: &backoff,
        now: NOW + 8 * S,
        terminating: false,
        probe_failures: &BTreeMap::new(),
        earlier_instances_kept: Some(1),
    });
    assert_eq!(after.actions, vec![start("app", ContainerKind::App, 1)]);
    assert_eq!(after.backoff_updates[0].1.delay, Duration::from_secs(20));
}

#[test]
fn init_containers_run_one_at_a_time_and_sidecars_keep_running() {
    let p = with_init();
    let s = || sandbox("s1", 0, true);
    // Nothing yet: sandbox, then only the first init container.
    let plan = run(&p, &ObservedPod::default());
    assert_eq!(
        plan.actions,
        vec![
            Action::CreateSandbox { attempt: 0 },
            start("setup", ContainerKind::Init, 0)
        ]
    );
    assert_eq!(plan.waiting["app"].reason, "PodInitializing");

    // setup running: wait.
    let observed = ObservedPod::new(
        vec![s()],
        vec![instance(&p, "setup", "i1", "s1", InstanceState::Running)],
    );
    assert_eq!(run(&p, &observed).actions, vec![]);

    // setup done: the sidecar starts and, as it is running, the next init container too.
    let observed = ObservedPod::new(
        vec![s()],
        vec![instance(&p, "setup", "i1", "s1", exited(0, NOW - S))],
    );
    assert_eq!(
        run(&p, &observed).actions,
        vec![
            start("proxy", ContainerKind::Sidecar, 0),
            start("migrate", ContainerKind::Init, 0)
        ]
    );

    // All init done, sidecar running: the app starts.
    let observed = ObservedPod::new(
        vec![s()],
        vec![
            instance(&p, "setup", "i1", "s1", exited(0, NOW - 3 * S)),
            instance(&p, "proxy", "p1", "s1", InstanceState::Running),
            instance(&p, "migrate", "i2", "s1", exited(0, NOW - S)),
        ],
    );
    assert_eq!(
        run(&p, &observed).actions,
        vec![start("app", ContainerKind::App, 0)]
    );
}

#[test]
fn a_failed_init_container_blocks_the_app_and_under_never_fails_the_pod() {
    let mut p = with_init();
    let observed = ObservedPod::new(
        vec![sandbox("s1", 0, true)],
        vec![instance(&p, "setup", "i1", "s1", exited(2, NOW - S))],
    );
    // Always: the init container is retried, the app waits.
    let plan = run(&p, &observed);
    assert_eq!(plan.actions, vec![start("setup", ContainerKind::Init, 1)]);
    assert_eq!(plan.waiting["app"].reason, "PodInitializing");

    // Never: the pod failed.
    if let Some(spec) = p.spec.as_mut() {
        spec.restart_policy = Some("Never".into());
    }
    let plan = run(&p, &observed);
    assert_eq!(plan.actions, vec![Action::KillPod]);
    assert_eq!(plan.outcome, Outcome::Completed { succeeded: false });
}

#[test]
fn a_sidecar_that_dies_after_initialization_restarts_without_blocking_the_app() {
    let p = with_init();
    let observed = ObservedPod::new(
        vec![sandbox("s1", 0, true)],
        vec![
            instance(&p, "proxy", "p1", "s1", exited(1, NOW - S)),
            instance(&p, "app", "a1", "s1", InstanceState::Running),
        ],
    );
    assert_eq!(
        run(&p, &observed).actions,
        vec![start("proxy", ContainerKind::Sidecar, 1)]
    );
}

#[test]
fn a_finished_pod_with_a_sidecar_stops_the_sidecar() {
    let mut p = with_init();
    if let Some(spec) = p.spec.as_mut() {
        spec.restart_policy = Some("Never".into());
    }
    let observed = ObservedPod::new(
        vec![sandbox("s1", 0, true)],
        vec![
            instance(&p, "proxy", "p1", "s1", InstanceState::Running),
            instance(&p, "app", "a1", "s1", exited(0, NOW - S)),
        ],
    );
    let plan = run(&p, &observed);
    assert_eq!(plan.actions, vec![Action::KillPod]);
    assert_eq!(plan.outcome, Outcome::Completed { succeeded: true });
}

#[test]
fn never_does_not_recreate_a_dead_sandbox() {
    let p = web("Never");
    let observed = ObservedPod::new(
        vec![sandbox("s1", 0, false)],
        vec![instance(&p, "app", "c1", "s1", InstanceState::Running)],
    );
    let plan = run(&p, &observed);
    assert!(
        !plan
            .actions
            .iter()
            .any(|a| matches!(a, Action::CreateSandbox { .. }))
    );
}

#[test]
fn terminating_kills_then_removes_everything_once_stopped() {
    let p = web("Always");
    let observed = ObservedPod::new(
        vec![sandbox("s1", 0, true)],
        vec![instance(&p, "app", "c1", "s1", InstanceState::Running)],
    );
    let plan = plan_with(&p, &observed, &PodBackoff::default(), true);
    assert_eq!(plan.actions, vec![Action::KillPod]);
    assert_eq!(plan.outcome, Outcome::Stopped);
    // Stopped (its exit code seen): removed.
    let stopped = ObservedPod::new(
        vec![sandbox("s1", 0, false)],
        vec![instance(&p, "app", "c1", "s1", exited(143, NOW))],
    );
    let plan = plan_with(&p, &stopped, &PodBackoff::default(), true);
    assert_eq!(
        plan.actions,
        vec![
            Action::RemoveContainer { id: "c1".into() },
            Action::RemoveSandbox { id: "s1".into() }
        ]
    );
    assert_eq!(plan.outcome, Outcome::Stopped);
    // Nothing left: nothing to do.
    let empty = plan_with(&p, &ObservedPod::default(), &PodBackoff::default(), true);
    assert_eq!(empty.actions, vec![]);
}

#[test]
fn old_instances_and_sandboxes_are_collected_but_the_last_state_is_kept() {
    let p = web("Always");
    let mut a0 = instance(&p, "app", "c0", "s0", exited(1, NOW - 30 * S));
    a0.created_at = NOW - 40 * S;
    let mut a1 = instance(&p, "app", "c1", "s1", exited(1, NOW - 20 * S));
    a1.created_at = NOW - 25 * S;
    a1.restart_count = 1;
    let mut a2 = instance(&p, "app", "c2", "s1", InstanceState::Running);
    a2.created_at = NOW - 10 * S;
    a2.restart_count = 2;
    let observed = ObservedPod::new(
        vec![sandbox("s0", 0, false), sandbox("s1", 1, true)],
        vec![a0, a1, a2],
    );
    assert_eq!(
        run(&p, &observed).actions,
        vec![
            Action::RemoveContainer { id: "c0".into() },
            Action::RemoveSandbox { id: "s0".into() }
        ]
    );
    // `--maximum-dead-containers-per-container` 2 keeps one more; negative (None) keeps all.
    for (kept, removed) in [(Some(1), vec!["c0"]), (Some(2), vec![]), (None, vec![])] {
        let plan = super::plan(PlanInput {
            pod: &p,
            observed: &observed,
            backoff: &PodBackoff::default(),
            now: NOW,
            terminating: false,
            probe_failures: &BTreeMap::new(),
            earlier_instances_kept: kept,
        });
        let got: Vec<&str> = plan
            .actions
            .iter()
            .filter_map(|a| match a {
                Action::RemoveContainer { id } => Some(id.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(got, removed, "kept {kept:?}");
    }
}

#[test]
fn containers_not_in_the_spec_are_killed_and_removed() {
    let p = web("Always");
    let mut stray = instance(&p, "app", "x1", "s1", InstanceState::Running);
    stray.name = "gone".into();
    let mut stray_exited = instance(&p, "app", "x2", "s1", exited(0, NOW - S));
    stray_exited.name = "gone-too".into();
    let observed = ObservedPod::new(
        vec![sandbox("s1", 0, true)],
        vec![
            instance(&p, "app", "c1", "s1", InstanceState::Running),
            stray,
            stray_exited,
        ],
    );
    assert_eq!(
        run(&p, &observed).actions,
        vec![
            Action::KillContainer {
                id: "x1".into(),
                name: "gone".into(),
                reason: KillReason::NotInSpec
            },
            Action::RemoveContainer { id: "x2".into() }
        ]
    );
}
