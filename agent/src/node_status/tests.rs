//! Table tests of the Node plans: registration, adoption, and when and what status to post.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, NodeCondition};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};

use super::eviction_reserve::EvictionReserve;
use super::machine::MachineFacts;
use super::plan::{self, PlanInputs};
use super::runtime::{NETWORK_READY, RUNTIME_READY, RuntimeCondition, RuntimeFacts, RuntimeImage};
use super::{STARTUP_CHECK_PERIOD, STARTUP_FAST_CHECKS_FOR, next_status_check};
use crate::config::{KubeletConfig, MachineResources, NodeTaint, ReservedResource, TaintEffect};
use crate::eviction::Pressures;
use crate::eviction::signals::Amount;

const GI: u64 = 1 << 30;
const EVICTION_RESERVE: EvictionReserve = EvictionReserve {
    memory_available: Some(Amount::Quantity(100 << 20)),
    nodefs_available: Some(Amount::Percentage(0.1)),
};

fn at(seconds: i64) -> Timestamp {
    Timestamp::from_second(seconds).unwrap()
}

fn machine() -> MachineFacts {
    MachineFacts {
        resources: MachineResources {
            cpu_millis: 4000,
            memory_bytes: 8 * GI,
        },
        ephemeral_storage_bytes: Some(100 * GI),
        hugepages: [("2Mi".to_string(), 4 << 20), ("1Gi".to_string(), 0)].into(),
        kernel_version: "6.1.0-18-amd64".into(),
        os_image: "Debian GNU/Linux 12 (bookworm)".into(),
        machine_id: "m-id".into(),
        system_uuid: "s-uuid".into(),
        boot_id: "b-id".into(),
        internal_ip: Some("10.0.0.5".parse().unwrap()),
    }
}

fn condition(type_: &str, status: bool, reason: &str, message: &str) -> RuntimeCondition {
    RuntimeCondition {
        type_: type_.into(),
        status,
        reason: reason.into(),
        message: message.into(),
    }
}

fn image(tag: &str, size: u64) -> RuntimeImage {
    RuntimeImage {
        repo_tags: vec![tag.to_string()],
        repo_digests: vec![format!("{tag}@sha256:00")],
        size_bytes: size,
    }
}

fn ready_runtime() -> RuntimeFacts {
    RuntimeFacts {
        version: Some("containerd://1.6.20".into()),
        conditions: Some(vec![
            condition(RUNTIME_READY, true, "", ""),
            condition(NETWORK_READY, true, "", ""),
        ]),
        images: Some(vec![image("small", 10), image("big", 1000)]),
    }
}

fn no_cni() -> RuntimeFacts {
    RuntimeFacts {
        conditions: Some(vec![
            condition(RUNTIME_READY, true, "", ""),
            condition(
                NETWORK_READY,
                false,
                "NetworkPluginNotReady",
                "Network plugin returns error: cni plugin not initialized",
            ),
        ]),
        ..ready_runtime()
    }
}

fn config() -> KubeletConfig {
    KubeletConfig {
        kube_reserved: [
            (
                ReservedResource::Cpu,
                crate::quantity::parse("100m").unwrap(),
            ),
            (
                ReservedResource::Memory,
                crate::quantity::parse("1Gi").unwrap(),
            ),
            (
                ReservedResource::EphemeralStorage,
                crate::quantity::parse("10Gi").unwrap(),
            ),
        ]
        .into(),
        register_with_taints: vec![NodeTaint {
            key: "node-role.kubernetes.io/control-plane".into(),
            value: String::new(),
            effect: TaintEffect::NoSchedule,
        }],
        ..KubeletConfig::default()
    }
}

fn inputs<'a>(
    machine: &'a MachineFacts,
    config: &'a KubeletConfig,
    runtime: &'a RuntimeFacts,
    now: Timestamp,
) -> PlanInputs<'a> {
    PlanInputs {
        node_name: "n1",
        machine,
        config,
        runtime,
        eviction_reserve: &EVICTION_RESERVE,
        pressures: Pressures::default(),
        now,
    }
}

fn conditions(node: &Node) -> BTreeMap<String, NodeCondition> {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default()
        .into_iter()
        .map(|c| (c.type_.clone(), c))
        .collect()
}

/// The Node after a merge patch (`serde_json` merge, as the apiserver applies it).
fn patched(node: &Node, patch: &Value) -> Node {
    let mut value = serde_json::to_value(node).unwrap();
    crate::config::merge_patch(&mut value, patch);
    serde_json::from_value(value).unwrap()
}

#[test]
fn registers_with_labels_taints_resources_and_info() {
    let (machine, config, runtime) = (machine(), config(), ready_runtime());
    let node = plan::initial_node(&inputs(&machine, &config, &runtime, at(1000)));
    let value = serde_json::to_value(&node).unwrap();
    let (os, arch) = super::machine::os_and_arch();
    assert_eq!(
        value["metadata"]["labels"],
        json!({"kubernetes.io/hostname": "n1", "kubernetes.io/os": os, "kubernetes.io/arch": arch,
               "beta.kubernetes.io/os": os, "beta.kubernetes.io/arch": arch})
    );
    assert_eq!(
        value["metadata"]["annotations"],
        json!({"volumes.kubernetes.io/controller-managed-attach-detach": "true"})
    );
    assert_eq!(
        value["spec"]["taints"],
        json!([{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}])
    );
    let status = &value["status"];
    assert_eq!(
        status["addresses"],
        json!([{"type": "InternalIP", "address": "10.0.0.5"}, {"type": "Hostname", "address": "n1"}])
    );
    assert_eq!(
        status["capacity"],
        json!({"cpu": "4", "memory": "8Gi", "pods": "110", "ephemeral-storage": "100Gi",
               "hugepages-2Mi": "4Mi", "hugepages-1Gi": "0"})
    );
    assert_eq!(
        status["allocatable"],
        json!({"cpu": "3900m", "memory": "7064Mi", "pods": "110", "ephemeral-storage": "80Gi",
               "hugepages-2Mi": "4Mi", "hugepages-1Gi": "0"}),
        "allocatable: less the reservations, the huge pages and the hard eviction thresholds"
    );
    assert_eq!(
        status["daemonEndpoints"],
        json!({"kubeletEndpoint": {"Port": 10250}})
    );
    let info = &status["nodeInfo"];
    assert_eq!(info["containerRuntimeVersion"], "containerd://1.6.20");
    assert_eq!(info["kernelVersion"], "6.1.0-18-amd64");
    assert_eq!(info["osImage"], "Debian GNU/Linux 12 (bookworm)");
    assert_eq!(info["operatingSystem"], os);
    assert_eq!(info["architecture"], arch);
    assert_eq!(info["machineID"], "m-id");
    assert_eq!(info["systemUUID"], "s-uuid");
    assert_eq!(info["bootID"], "b-id");
    assert!(
        info["kubeletVersion"]
            .as_str()
            .unwrap()
            .starts_with("v1.33.0")
    );
    assert_eq!(
        status["images"],
        json!([{"names": ["big@sha256:00", "big"], "sizeBytes": 1000},
               {"names": ["small@sha256:00", "small"], "sizeBytes": 10}]),
        "largest first, digests then tags"
    );
    let conditions = conditions(&node);
    let order: Vec<&str> = status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        order,
        ["MemoryPressure", "DiskPressure", "PIDPressure", "Ready"]
    );
    for (type_, status, reason, message) in [
        (
            "Ready",
            "True",
            "KubeletReady",
            "kubelet is posting ready status",
        ),
        (
            "MemoryPressure",
            "False",
            "KubeletHasSufficientMemory",
            "kubelet has sufficient memory available",
        ),
        (
            "DiskPressure",
            "False",
            "KubeletHasNoDiskPressure",
            "kubelet has no disk pressure",
        ),
        (
            "PIDPressure",
            "False",
            "KubeletHasSufficientPID",
            "kubelet has sufficient PID available",
        ),
    ] {
        let c = &conditions[type_];
        assert_eq!(
            (c.status.as_str(), c.reason.as_deref(), c.message.as_deref()),
            (status, Some(reason), Some(message)),
            "{type_}"
        );
        assert_eq!(c.last_heartbeat_time, Some(Time(at(1000))));
        assert_eq!(c.last_transition_time, Some(Time(at(1000))));
    }
}

#[test]
fn image_list_is_capped_by_node_status_max_images() {
    let machine = machine();
    let runtime = RuntimeFacts {
        images: Some((0..60).map(|i| image(&format!("i{i}"), i)).collect()),
        ..ready_runtime()
    };
    for (max, expected) in [(50, 50), (0, 0), (-1, 60)] {
        let config = KubeletConfig {
            node_status_max_images: max,
            ..config()
        };
        let node = plan::initial_node(&inputs(&machine, &config, &runtime, at(1)));
        let images = node.status.unwrap().images.unwrap();
        assert_eq!(images.len(), expected, "max {max}");
    }
}

/// Name, what changes before the second look, seconds since the first post, whether a patch is
/// expected.
type StatusCase = (
    &'static str,
    fn(&mut MachineFacts, &mut RuntimeFacts),
    i64,
    bool,
);

#[test]
fn posts_status_when_changed_or_when_the_report_is_due() {
    let config = config();
    let cases: &[StatusCase] = &[
        ("nothing changed, report not due", |_, _| {}, 10, false),
        ("nothing changed, report due after 5m", |_, _| {}, 300, true),
        (
            "capacity changed",
            |m, _| m.resources.memory_bytes = 16 * GI,
            10,
            true,
        ),
        (
            "address changed",
            |m, _| m.internal_ip = Some("10.0.0.6".parse().unwrap()),
            10,
            true,
        ),
        ("network not ready", |_, r| *r = no_cni(), 10, true),
        (
            "new image",
            |_, r| r.images.as_mut().unwrap().push(image("new", 5)),
            10,
            true,
        ),
        (
            "images unknown: the reported list stays",
            |_, r| r.images = None,
            10,
            false,
        ),
        (
            "runtime version unknown: the reported one stays",
            |_, r| r.version = None,
            10,
            false,
        ),
    ];
    let first_post = at(1000);
    for (name, change, after, expected) in cases {
        let (mut machine, mut runtime) = (machine(), ready_runtime());
        let existing = plan::initial_node(&inputs(&machine, &config, &runtime, first_post));
        change(&mut machine, &mut runtime);
        let now = at(1000 + after);
        let patch = plan::status_patch(
            &inputs(&machine, &config, &runtime, now),
            &existing,
            Some(first_post),
        );
        assert_eq!(patch.is_some(), *expected, "{name}: {patch:?}");
        if let Some(patch) = patch {
            let after = patched(&existing, &patch);
            for (type_, c) in conditions(&after) {
                assert_eq!(
                    c.last_heartbeat_time,
                    Some(Time(now)),
                    "{name}: {type_} heartbeat"
                );
            }
        }
    }
}

#[test]
fn a_fresh_start_posts_status_at_once() {
    let (machine, config, runtime) = (machine(), config(), ready_runtime());
    let existing = plan::initial_node(&inputs(&machine, &config, &runtime, at(1000)));
    let patch = plan::status_patch(
        &inputs(&machine, &config, &runtime, at(1001)),
        &existing,
        None,
    );
    assert!(patch.is_some());
}

#[test]
fn ready_follows_the_runtime_and_keeps_transition_times() {
    let (machine, config) = (machine(), config());
    let ready = ready_runtime();
    let not_ready = no_cni();
    let registered = plan::initial_node(&inputs(&machine, &config, &ready, at(1000)));

    // The network goes away: Ready turns False now; pressure conditions keep their times.
    let patch = plan::status_patch(
        &inputs(&machine, &config, &not_ready, at(1010)),
        &registered,
        Some(at(1000)),
    )
    .unwrap();
    let down = patched(&registered, &patch);
    let c = conditions(&down);
    assert_eq!(c["Ready"].status, "False");
    assert_eq!(c["Ready"].reason.as_deref(), Some("KubeletNotReady"));
    assert_eq!(
        c["Ready"].message.as_deref(),
        Some(
            "container runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady message:Network plugin returns error: cni plugin not initialized"
        )
    );
    assert_eq!(c["Ready"].last_transition_time, Some(Time(at(1010))));
    assert_eq!(
        c["MemoryPressure"].last_transition_time,
        Some(Time(at(1000)))
    );

    // Still down at the next report: only heartbeats move.
    let patch = plan::status_patch(
        &inputs(&machine, &config, &not_ready, at(1400)),
        &down,
        Some(at(1010)),
    )
    .unwrap();
    let still = patched(&down, &patch);
    let c = conditions(&still);
    assert_eq!(c["Ready"].last_transition_time, Some(Time(at(1010))));
    assert_eq!(c["Ready"].last_heartbeat_time, Some(Time(at(1400))));

    // Runtime unreachable: both errors become one aggregated message.
    let down_runtime = RuntimeFacts {
        conditions: None,
        ..ready_runtime()
    };
    let status = plan::desired_status(
        &inputs(&machine, &config, &down_runtime, at(1500)),
        still.status.as_ref(),
    );
    let ready_condition = status
        .conditions
        .unwrap()
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert_eq!(
        ready_condition.message.as_deref(),
        Some("container runtime is down")
    );
    assert_eq!(
        ready_condition.last_transition_time,
        Some(Time(at(1010))),
        "still False"
    );

    // Back: True again, transition now.
    let patch = plan::status_patch(
        &inputs(&machine, &config, &ready, at(1600)),
        &still,
        Some(at(1400)),
    )
    .unwrap();
    let c = conditions(&patched(&still, &patch));
    assert_eq!(c["Ready"].status, "True");
    assert_eq!(c["Ready"].reason.as_deref(), Some("KubeletReady"));
    assert_eq!(c["Ready"].last_transition_time, Some(Time(at(1600))));
}

#[test]
fn capacity_keeps_foreign_resources_and_drops_stale_huge_pages() {
    let (mut machine, config, runtime) = (machine(), config(), ready_runtime());
    let mut existing = plan::initial_node(&inputs(&machine, &config, &runtime, at(1000)));
    let status = existing.status.as_mut().unwrap();
    for map in [
        status.capacity.as_mut().unwrap(),
        status.allocatable.as_mut().unwrap(),
    ] {
        map.insert("example.com/dongle".into(), Quantity("4".into()));
    }
    machine.hugepages.remove("1Gi");
    let patch = plan::status_patch(
        &inputs(&machine, &config, &runtime, at(1010)),
        &existing,
        Some(at(1000)),
    )
    .unwrap();
    assert_eq!(patch["status"]["capacity"]["hugepages-1Gi"], Value::Null);
    assert!(
        patch["status"]["capacity"]
            .as_object()
            .unwrap()
            .contains_key("hugepages-1Gi")
    );
    let after = patched(&existing, &patch).status.unwrap();
    let capacity = after.capacity.unwrap();
    assert_eq!(
        capacity.get("example.com/dongle"),
        Some(&Quantity("4".into()))
    );
    assert!(!capacity.contains_key("hugepages-1Gi"));
    assert!(!after.allocatable.unwrap().contains_key("hugepages-1Gi"));
}

#[test]
fn adopting_an_existing_node_updates_only_managed_labels() {
    let (machine, config, runtime) = (machine(), config(), ready_runtime());
    let initial = plan::initial_node(&inputs(&machine, &config, &runtime, at(1000)));
    assert_eq!(
        plan::adoption_patch(&initial, &initial),
        None,
        "same node: nothing to do"
    );

    let mut existing = initial.clone();
    let labels = existing.metadata.labels.as_mut().unwrap();
    labels.insert("kubernetes.io/hostname".into(), "old-name".into());
    labels.remove("kubernetes.io/os");
    labels.insert("node-role.kubernetes.io/worker".into(), String::new());
    existing.metadata.annotations = None;
    let (os, _) = super::machine::os_and_arch();
    assert_eq!(
        plan::adoption_patch(&initial, &existing),
        Some(json!({"metadata": {
            "labels": {"kubernetes.io/hostname": "n1", "kubernetes.io/os": os},
            "annotations": {"volumes.kubernetes.io/controller-managed-attach-detach": "true"},
        }}))
    );
}

#[test]
fn quantities_are_canonical() {
    assert_eq!(plan::cpu_quantity(4000), "4");
    assert_eq!(plan::cpu_quantity(3900), "3900m");
    assert_eq!(plan::binary_quantity(8_340_721_664), "8145236Ki");
    assert_eq!(plan::binary_quantity(2 << 20), "2Mi");
    assert_eq!(plan::binary_quantity(GI), "1Gi");
    assert_eq!(plan::binary_quantity(1000), "1000");
    assert_eq!(plan::binary_quantity(0), "0");
}

#[test]
fn backoff_doubles_to_its_cap_and_resets() {
    let mut backoff = super::Backoff::new(Duration::from_millis(100), Duration::from_millis(350));
    let delays: Vec<u128> = (0..4).map(|_| backoff.next_delay().as_millis()).collect();
    assert_eq!(delays, [100, 200, 350, 350]);
    backoff.reset();
    assert_eq!(backoff.next_delay(), Duration::from_millis(100));
}

#[test]
fn pressure_conditions_follow_the_eviction_manager() {
    let config = config();
    let runtime = ready_runtime();
    let calm = machine();
    let registered = plan::initial_node(&inputs(&calm, &config, &runtime, at(1000)));
    let c = conditions(&registered);
    for (type_, reason) in [
        ("MemoryPressure", "KubeletHasSufficientMemory"),
        ("DiskPressure", "KubeletHasNoDiskPressure"),
        ("PIDPressure", "KubeletHasSufficientPID"),
    ] {
        assert_eq!(c[type_].status, "False", "{type_}");
        assert_eq!(c[type_].reason.as_deref(), Some(reason), "{type_}");
    }

    let pressed_inputs = PlanInputs {
        pressures: Pressures {
            memory: true,
            disk: true,
            pid: false,
        },
        ..inputs(&calm, &config, &runtime, at(1010))
    };
    let patch = plan::status_patch(&pressed_inputs, &registered, Some(at(1000)))
        .expect("a changed status is posted at once");
    let pressed = patched(&registered, &patch);
    let c = conditions(&pressed);
    let expected = [
        (
            "MemoryPressure",
            "True",
            "KubeletHasInsufficientMemory",
            "kubelet has insufficient memory available",
            1010,
        ),
        (
            "DiskPressure",
            "True",
            "KubeletHasDiskPressure",
            "kubelet has disk pressure",
            1010,
        ),
        (
            "PIDPressure",
            "False",
            "KubeletHasSufficientPID",
            "kubelet has sufficient PID available",
            1000,
        ),
    ];
    for (type_, status, reason, message, transition) in expected {
        assert_eq!(c[type_].status, status, "{type_}");
        assert_eq!(c[type_].reason.as_deref(), Some(reason), "{type_}");
        assert_eq!(c[type_].message.as_deref(), Some(message), "{type_}");
        assert_eq!(
            c[type_].last_transition_time,
            Some(Time(at(transition))),
            "{type_}"
        );
        assert_eq!(c[type_].last_heartbeat_time, Some(Time(at(1010))));
    }
    assert_eq!(
        c["Ready"].status, "True",
        "pressure does not make the node NotReady"
    );

    let patch = plan::status_patch(
        &inputs(&calm, &config, &runtime, at(1020)),
        &pressed,
        Some(at(1010)),
    )
    .expect("relief is posted at once");
    let c = conditions(&patched(&pressed, &patch));
    assert_eq!(c["MemoryPressure"].status, "False");
    assert_eq!(
        c["MemoryPressure"].last_transition_time,
        Some(Time(at(1020)))
    );
    assert_eq!(c["DiskPressure"].status, "False");
}

#[test]
fn status_is_checked_every_second_until_the_runtime_is_first_ready() {
    let frequency = Duration::from_secs(10);
    let cases = [
        // (since start, runtime ready once, wait)
        (Duration::ZERO, false, STARTUP_CHECK_PERIOD),
        (Duration::from_secs(119), false, STARTUP_CHECK_PERIOD),
        (Duration::from_secs(5), true, frequency),
        // A runtime that never gets ready is not polled fast forever.
        (STARTUP_FAST_CHECKS_FOR, false, frequency),
    ];
    for (since_start, ready_once, want) in cases {
        assert_eq!(
            next_status_check(frequency, since_start, ready_once),
            want,
            "{since_start:?} {ready_once}"
        );
    }
    // A configured period shorter than the startup one is kept.
    let fast = Duration::from_millis(500);
    assert_eq!(next_status_check(fast, Duration::ZERO, false), fast);
}
