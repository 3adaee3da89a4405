use std::time::Duration;

use super::{ContainerGcPolicy, DeadContainer, plan};

const S: i64 = 1_000_000_000;

/// `(id, pod UID, container name, created at in seconds)`.
type Row = (&'static str, &'static str, &'static str, i64);

/// `(what, policy, dead containers, now in seconds, removed in order)`.
type Case = (
    &'static str,
    ContainerGcPolicy,
    Vec<Row>,
    i64,
    Vec<&'static str>,
);

fn dead(rows: &[Row]) -> Vec<DeadContainer> {
    rows.iter()
        .map(|&(id, pod, name, created)| DeadContainer {
            id: id.into(),
            pod_uid: pod.into(),
            name: name.into(),
            created_at: created * S,
        })
        .collect()
}

fn policy(min_age_secs: u64, per_container: i32, node: i32) -> ContainerGcPolicy {
    ContainerGcPolicy {
        min_age: Duration::from_secs(min_age_secs),
        max_per_pod_container: per_container,
        max_containers: node,
    }
}

#[test]
fn defaults_are_upstreams() {
    assert_eq!(ContainerGcPolicy::default(), policy(0, 1, -1));
}

#[test]
fn plans() {
    let cases: Vec<Case> = vec![
        ("nothing dead", policy(0, 1, -1), vec![], 100, vec![]),
        (
            "defaults: one dead instance per container, the newest; oldest removed first",
            policy(0, 1, -1),
            vec![
                ("a2", "p", "a", 20),
                ("a1", "p", "a", 10),
                ("a3", "p", "a", 30),
            ],
            100,
            vec!["a1", "a2"],
        ),
        (
            "units are per pod and per name",
            policy(0, 1, -1),
            vec![
                ("pa", "p", "a", 10),
                ("qa", "q", "a", 20),
                ("pb", "p", "b", 30),
                ("pb0", "p", "b", 5),
            ],
            100,
            vec!["pb0"],
        ),
        (
            "younger than min_age: kept and not counted",
            policy(10, 1, -1),
            vec![
                ("a0", "p", "a", 40),
                ("a1", "p", "a", 50),
                ("a2", "p", "a", 95),
                ("a3", "p", "a", 96),
            ],
            100,
            vec!["a0"],
        ),
        (
            "exactly min_age old is collectable",
            policy(10, 0, -1),
            vec![("a1", "p", "a", 90), ("a2", "p", "a", 91)],
            100,
            vec!["a1"],
        ),
        (
            "no limits: nothing removed",
            policy(0, -1, -1),
            vec![
                ("a1", "p", "a", 1),
                ("a2", "p", "a", 2),
                ("b1", "q", "b", 3),
            ],
            100,
            vec![],
        ),
        (
            "per-container limit 0: every dead instance goes",
            policy(0, 0, -1),
            vec![
                ("a1", "p", "a", 1),
                ("a2", "p", "a", 2),
                ("b1", "q", "b", 3),
            ],
            100,
            vec!["a1", "a2", "b1"],
        ),
        (
            "node limit: units cut to an even share first (the big unit pays)",
            policy(0, -1, 2),
            vec![
                ("a1", "p", "a", 1),
                ("a2", "p", "a", 2),
                ("a3", "p", "a", 3),
                ("b1", "q", "b", 4),
            ],
            100,
            vec!["a1", "a2"],
        ),
        (
            "node limit below the number of units: one each, then the oldest node-wide",
            policy(0, -1, 2),
            vec![
                ("a1", "p", "a", 5),
                ("b1", "q", "b", 1),
                ("c1", "r", "c", 3),
                ("c0", "r", "c", 2),
            ],
            100,
            vec!["c0", "b1"],
        ),
        (
            "node limit after the per-container limit",
            policy(0, 1, 1),
            vec![
                ("a1", "p", "a", 1),
                ("a2", "p", "a", 2),
                ("b1", "q", "b", 3),
            ],
            100,
            vec!["a1", "a2"],
        ),
        (
            "node limit 0: unit shares first, then the rest oldest first; young ones stay",
            policy(5, -1, 0),
            vec![
                ("a1", "p", "a", 10),
                ("b1", "q", "b", 20),
                ("b2", "q", "b", 30),
                ("young", "q", "b", 98),
            ],
            100,
            vec!["b1", "a1", "b2"],
        ),
        (
            "under the node limit: untouched",
            policy(0, -1, 10),
            vec![("a1", "p", "a", 1), ("a2", "p", "a", 2)],
            100,
            vec![],
        ),
        (
            "equal creation times: the ID decides which is newer",
            policy(0, 1, -1),
            vec![("x", "p", "a", 7), ("y", "p", "a", 7)],
            100,
            vec!["x"],
        ),
    ];
    for (what, policy, rows, now, want) in cases {
        let got = plan(&policy, &dead(&rows), now * S);
        assert_eq!(got, want, "{what}");
    }
}

#[test]
fn a_huge_min_age_keeps_everything() {
    let rows = [("a1", "p", "a", 1), ("a2", "p", "a", 2)];
    let policy = ContainerGcPolicy {
        min_age: Duration::MAX,
        max_per_pod_container: 0,
        max_containers: 0,
    };
    assert!(plan(&policy, &dead(&rows), 100 * S).is_empty());
}

#[test]
fn labelled_instances_not_running_are_dead_created_ones_once_settled() {
    use kwk_cri::api;
    let container = |id: &str, state: api::ContainerState, labelled: bool| api::Container {
        id: id.into(),
        state: state as i32,
        created_at: 42 * S,
        labels: if labelled {
            [
                (crate::labels::POD_UID.to_string(), "u1".to_string()),
                (
                    crate::labels::CONTAINER_NAME.to_string(),
                    "main".to_string(),
                ),
            ]
            .into()
        } else {
            Default::default()
        },
        ..Default::default()
    };
    let listed = [
        container("exited", api::ContainerState::ContainerExited, true),
        container("running", api::ContainerState::ContainerRunning, true),
        container("created", api::ContainerState::ContainerCreated, true),
        container("unknown", api::ContainerState::ContainerUnknown, true),
        container("foreign", api::ContainerState::ContainerExited, false),
    ];
    let dead_at = |now_secs: i64| -> Vec<String> {
        super::executor::dead_containers(&listed, now_secs * S)
            .into_iter()
            .map(|c| {
                assert_eq!((c.pod_uid.as_str(), c.name.as_str()), ("u1", "main"));
                assert_eq!(c.created_at, 42 * S);
                c.id
            })
            .collect()
    };
    // Just created: may be about to start.
    assert_eq!(dead_at(50), vec!["exited"]);
    // Not started a minute on: dead.
    assert_eq!(dead_at(42 + 60), vec!["exited", "created", "unknown"]);
}

#[test]
fn the_worker_keeps_the_per_container_limit_but_at_least_the_last_state() {
    for (per_container, want) in [(-1, None), (0, Some(1)), (1, Some(1)), (5, Some(5))] {
        let policy = policy(0, per_container, -1);
        assert_eq!(policy.earlier_instances_kept(), want, "{per_container}");
    }
}
