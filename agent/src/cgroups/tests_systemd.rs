//! `PodCgroups` with the systemd driver, against a recording stand-in for systemd that makes
//! the slices' directories in fake v1 and v2 trees as systemd would: which units are started,
//! updated and stopped with which properties, adoption after a restart, and systemd's errors.

use std::path::Path;
use std::sync::Arc;

use super::systemd::fake::{Call, Failure, RecordingSystemd, show};
use super::*;
use kwk_api::pod::testing::*;

const GUARANTEED_UID: &str = "1111-aaaa";
const BURSTABLE_UID: &str = "2222-bbbb";
const BESTEFFORT_UID: &str = "3333-cccc";
const BURSTABLE_SLICE: &str = "kubepods-burstable-pod2222_bbbb.slice";

fn config(mount_root: &Path, cgroup_root: &str) -> CgroupConfig {
    CgroupConfig {
        mount_root: mount_root.to_path_buf(),
        driver: CgroupDriver::Systemd,
        cgroup_root: cgroup_root.to_string(),
        per_qos: true,
        pod_pids_limit: 256,
    }
}

fn three_pods() -> [Pod; 3] {
    [
        pod(GUARANTEED_UID, &[("c", "", "cpu=1,memory=128Mi")]),
        pod(BURSTABLE_UID, &[("c", "cpu=250m", "memory=64Mi")]),
        pod(BESTEFFORT_UID, &[("c", "", "")]),
    ]
}

/// A fake v2 (or v1) tree, the stand-in, and the driver using it.
fn setup(v2: bool, cgroup_root: &str) -> (tempfile::TempDir, Arc<RecordingSystemd>, PodCgroups) {
    let tmp = tempfile::tempdir().unwrap();
    if v2 {
        v2::fake::tree(tmp.path(), "cpuset cpu io memory pids");
    } else {
        v1::fake::tree(tmp.path());
    }
    let systemd = Arc::new(RecordingSystemd::with_tree(tmp.path(), v2));
    let cgroups =
        PodCgroups::with_systemd(config(tmp.path(), cgroup_root), systemd.clone()).unwrap();
    (tmp, systemd, cgroups)
}

/// The properties of the last start (or set) of `unit`.
fn sent(systemd: &RecordingSystemd, unit: &str, start: bool) -> Vec<String> {
    systemd
        .calls()
        .into_iter()
        .rev()
        .find_map(|call| match call {
            Call::Start(u, props) if start && u == unit => Some(show(&props)),
            Call::Set(u, props) if !start && u == unit => Some(show(&props)),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no {} of {unit}", if start { "start" } else { "set" }))
}

const V2_ACCOUNTING: [&str; 4] = [
    "CPUAccounting=true",
    "MemoryAccounting=true",
    "TasksAccounting=true",
    "IOAccounting=true",
];

fn slice_head(description: &str, parent: &str) -> Vec<String> {
    let mut head = vec![
        format!("Description={description:?}"),
        format!("Wants=[{parent:?}]"),
        "DefaultDependencies=false".to_string(),
    ];
    head.extend(V2_ACCOUNTING.iter().map(|s| s.to_string()));
    head
}

fn with(mut head: Vec<String>, tail: &[&str]) -> Vec<String> {
    head.extend(tail.iter().map(|s| s.to_string()));
    head
}

#[test]
fn v2_node_hierarchy_and_pods_are_slices_started_by_systemd() {
    let (tmp, systemd, cgroups) = setup(true, "/");
    assert!(cgroups.is_v2());
    cgroups
        .ensure_node_hierarchy(Some(NodeAllocatable {
            cpu_milli: 2000,
            memory_bytes: 1 << 30,
        }))
        .unwrap();
    assert_eq!(
        systemd.short_calls(),
        [
            "start kubepods.slice",
            "start kubepods-burstable.slice",
            "start kubepods-besteffort.slice"
        ]
    );
    assert_eq!(
        sent(&systemd, "kubepods.slice", true),
        with(
            slice_head("kwk-node pods (node allocatable)", "-.slice"),
            &["CPUWeight=79", "MemoryMax=1073741824"]
        )
    );
    assert_eq!(
        sent(&systemd, "kubepods-burstable.slice", true),
        slice_head("kwk-node QoS class Burstable", "kubepods.slice")
    );
    assert_eq!(
        sent(&systemd, "kubepods-besteffort.slice", true),
        with(
            slice_head("kwk-node QoS class BestEffort", "kubepods.slice"),
            &["CPUWeight=1"]
        )
    );
    // systemd made the directories; kwk-node wrote nothing into cgroupfs.
    let kubepods = tmp.path().join("kubepods.slice");
    assert!(kubepods.join("kubepods-besteffort.slice").is_dir());
    assert!(
        !kubepods
            .join("kubepods-besteffort.slice/cpu.weight")
            .exists()
    );
    assert_eq!(read_subtree_control(tmp.path()), "");

    let [guaranteed, burstable, besteffort] = three_pods();
    systemd.clear_calls();
    let b = cgroups.ensure_pod(&burstable).unwrap();
    assert_eq!(
        b.cri_parent,
        format!("/kubepods.slice/kubepods-burstable.slice/{BURSTABLE_SLICE}")
    );
    assert_eq!(b.path.as_deref(), Some(&b.cri_parent[1..]));
    assert_eq!(systemd.short_calls(), [format!("start {BURSTABLE_SLICE}")]);
    assert_eq!(
        sent(&systemd, BURSTABLE_SLICE, true),
        with(
            slice_head(
                "kwk-node pod default/pod-2222-bbbb (2222-bbbb)",
                "kubepods-burstable.slice"
            ),
            &[
                "CPUWeight=10",
                "CPUQuotaPeriodUSec=100000",
                "CPUQuotaPerSecUSec=infinity",
                "MemoryMax=67108864",
                "TasksMax=256",
            ]
        )
    );
    let g = cgroups.ensure_pod(&guaranteed).unwrap();
    assert_eq!(g.cri_parent, "/kubepods.slice/kubepods-pod1111_aaaa.slice");
    assert_eq!(
        &sent(&systemd, "kubepods-pod1111_aaaa.slice", true)[7..],
        [
            "CPUWeight=39",
            "CPUQuotaPeriodUSec=100000",
            "CPUQuotaPerSecUSec=1000000",
            "MemoryMax=134217728",
            "TasksMax=256",
        ]
    );
    cgroups.ensure_pod(&besteffort).unwrap();

    // Reading stays with cgroupfs.
    let mut listed = cgroups.list_pods().unwrap();
    listed.sort();
    assert_eq!(
        listed,
        [
            (QosClass::Guaranteed, GUARANTEED_UID.to_string()),
            (QosClass::Burstable, BURSTABLE_UID.to_string()),
            (QosClass::BestEffort, BESTEFFORT_UID.to_string()),
        ]
    );

    // Removal stops the pod's slice under each class; a cgroup the runtime made below the
    // slice without systemd knowing (so systemd cannot remove the slice's directory) is
    // removed from the filesystem afterwards.
    let dir = tmp.path().join(&b.cri_parent[1..]);
    std::fs::create_dir(dir.join("ctr")).unwrap();
    systemd.clear_calls();
    cgroups.remove_pod(BURSTABLE_UID).unwrap();
    assert_eq!(
        systemd.short_calls(),
        [
            "stop kubepods-pod2222_bbbb.slice",
            "stop kubepods-burstable-pod2222_bbbb.slice",
            "stop kubepods-besteffort-pod2222_bbbb.slice",
        ]
    );
    assert!(!dir.exists());
    assert!(!systemd.units().contains(BURSTABLE_SLICE));
    assert_eq!(cgroups.list_pods().unwrap().len(), 2);
    cgroups.remove_pod(BURSTABLE_UID).unwrap();
}

fn read_subtree_control(root: &Path) -> String {
    std::fs::read_to_string(root.join("cgroup.subtree_control")).unwrap()
}

#[test]
fn a_restart_adopts_loaded_slices_and_updates_them() {
    let (tmp, systemd, cgroups) = setup(true, "/");
    cgroups.ensure_node_hierarchy(None).unwrap();
    let [_, burstable, _] = three_pods();
    let before = cgroups.ensure_pod(&burstable).unwrap();
    drop(cgroups);

    // kwk-node restarts; systemd still has every slice.
    systemd.clear_calls();
    let cgroups = PodCgroups::with_systemd(config(tmp.path(), "/"), systemd.clone()).unwrap();
    cgroups.ensure_node_hierarchy(None).unwrap();
    assert_eq!(cgroups.ensure_pod(&burstable).unwrap(), before);
    assert_eq!(
        systemd.short_calls(),
        [
            "start kubepods.slice",
            "set kubepods.slice",
            "start kubepods-burstable.slice",
            "set kubepods-burstable.slice",
            "start kubepods-besteffort.slice",
            "set kubepods-besteffort.slice",
            format!("start {BURSTABLE_SLICE}").as_str(),
            format!("set {BURSTABLE_SLICE}").as_str(),
        ]
    );
    // Updates carry the accounting toggles and resources, not the unit's own settings.
    assert_eq!(sent(&systemd, "kubepods.slice", false), V2_ACCOUNTING);
    assert_eq!(
        sent(&systemd, BURSTABLE_SLICE, false),
        with(
            V2_ACCOUNTING.iter().map(|s| s.to_string()).collect(),
            &[
                "CPUWeight=10",
                "CPUQuotaPeriodUSec=100000",
                "CPUQuotaPerSecUSec=infinity",
                "MemoryMax=67108864",
                "TasksMax=256",
            ]
        )
    );
    assert!(!systemd.calls().iter().any(|c| matches!(c, Call::Stop(_))));
    assert_eq!(cgroups.list_pods().unwrap().len(), 1);
}

#[test]
fn qos_updates_set_properties_and_recreate_a_vanished_slice() {
    let (_tmp, systemd, cgroups) = setup(true, "/");
    cgroups.ensure_node_hierarchy(None).unwrap();
    let [guaranteed, burstable, besteffort] = three_pods();
    systemd.clear_calls();
    cgroups
        .update_qos_shares(&[&guaranteed, &burstable, &besteffort])
        .unwrap();
    assert_eq!(
        systemd.short_calls(),
        [
            "set kubepods-burstable.slice",
            "set kubepods-besteffort.slice"
        ]
    );
    assert_eq!(
        sent(&systemd, "kubepods-burstable.slice", false)
            .last()
            .unwrap(),
        "CPUWeight=10"
    );

    systemd.forget("kubepods-burstable.slice");
    systemd.clear_calls();
    cgroups.update_qos_shares(&[&burstable]).unwrap();
    assert_eq!(
        systemd.short_calls(),
        [
            "set kubepods-burstable.slice",
            "start kubepods-burstable.slice",
            "set kubepods-besteffort.slice"
        ]
    );
    assert!(systemd.units().contains("kubepods-burstable.slice"));
}

#[test]
fn v1_uses_v1_properties_and_a_root_slice() {
    let (tmp, systemd, cgroups) = setup(false, "/kwkt-abc");
    assert!(!cgroups.is_v2());
    cgroups
        .ensure_node_hierarchy(Some(NodeAllocatable {
            cpu_milli: 1500,
            memory_bytes: 3 << 30,
        }))
        .unwrap();
    assert_eq!(
        systemd.short_calls(),
        [
            "start kwkt_abc.slice",
            "start kwkt_abc-kubepods.slice",
            "start kwkt_abc-kubepods-burstable.slice",
            "start kwkt_abc-kubepods-besteffort.slice",
        ]
    );
    assert_eq!(
        sent(&systemd, "kwkt_abc.slice", true),
        [
            "Description=\"kwk-node cgroup root\"",
            "Wants=[\"-.slice\"]",
            "DefaultDependencies=false",
            "CPUAccounting=true",
            "MemoryAccounting=true",
            "TasksAccounting=true",
            "BlockIOAccounting=true",
        ]
    );
    assert_eq!(
        &sent(&systemd, "kwkt_abc-kubepods.slice", true)[1..],
        [
            "Wants=[\"kwkt_abc.slice\"]",
            "DefaultDependencies=false",
            "CPUAccounting=true",
            "MemoryAccounting=true",
            "TasksAccounting=true",
            "BlockIOAccounting=true",
            "CPUShares=1536",
            "MemoryLimit=3221225472",
        ]
    );
    let [guaranteed, burstable, _] = three_pods();
    let g = cgroups.ensure_pod(&guaranteed).unwrap();
    assert_eq!(
        g.cri_parent,
        "/kwkt_abc.slice/kwkt_abc-kubepods.slice/kwkt_abc-kubepods-pod1111_aaaa.slice"
    );
    assert_eq!(
        &sent(&systemd, "kwkt_abc-kubepods-pod1111_aaaa.slice", true)[7..],
        [
            "CPUShares=1024",
            "CPUQuotaPeriodUSec=100000",
            "CPUQuotaPerSecUSec=1000000",
            "MemoryLimit=134217728",
            "TasksMax=256",
        ]
    );
    cgroups.ensure_pod(&burstable).unwrap();
    let memory = tmp.path().join("memory").join(&g.cri_parent[1..]);
    assert!(memory.is_dir());
    assert!(!memory.join("memory.limit_in_bytes").exists());
    let mut listed = cgroups.list_pods().unwrap();
    listed.sort();
    assert_eq!(
        listed,
        [
            (QosClass::Guaranteed, GUARANTEED_UID.to_string()),
            (QosClass::Burstable, BURSTABLE_UID.to_string()),
        ]
    );

    // Removing the root stops its slice; what systemd leaves goes from every hierarchy.
    systemd.clear_calls();
    cgroups.remove_root().unwrap();
    assert_eq!(systemd.short_calls(), ["stop kwkt_abc.slice"]);
    for h in v1::fake::HIERARCHIES {
        assert!(!tmp.path().join(h).join("kwkt_abc.slice").exists(), "{h}");
    }
}

#[test]
fn without_per_qos_only_the_root_slice_is_made() {
    let tmp = tempfile::tempdir().unwrap();
    v2::fake::tree(tmp.path(), "cpu memory pids");
    let systemd = Arc::new(RecordingSystemd::with_tree(tmp.path(), true));
    let cgroups = PodCgroups::with_systemd(
        CgroupConfig {
            per_qos: false,
            ..config(tmp.path(), "/kwkt-flat")
        },
        systemd.clone(),
    )
    .unwrap();
    cgroups.ensure_node_hierarchy(None).unwrap();
    let [_, burstable, _] = three_pods();
    let b = cgroups.ensure_pod(&burstable).unwrap();
    assert_eq!(b.cri_parent, "/kwkt_flat.slice");
    assert_eq!(b.path, None);
    assert_eq!(systemd.short_calls(), ["start kwkt_flat.slice"]);
    cgroups.remove_pod(BURSTABLE_UID).unwrap();
    assert_eq!(systemd.short_calls(), ["start kwkt_flat.slice"]);
}

#[test]
fn systemd_errors_are_clear_and_leave_nothing_half_made() {
    let (tmp, systemd, cgroups) = setup(true, "/");
    cgroups.ensure_node_hierarchy(None).unwrap();
    let [_, burstable, _] = three_pods();

    // systemd refuses the pod's slice: the error names the call, the unit and the D-Bus
    // error, and no cgroup is left behind.
    systemd.fail(
        "StartTransientUnit",
        BURSTABLE_SLICE,
        Failure::Call("org.freedesktop.DBus.Error.AccessDenied"),
    );
    let err = cgroups.ensure_pod(&burstable).unwrap_err();
    assert!(matches!(err, CgroupError::Systemd(_)), "{err}");
    let text = err.to_string();
    assert!(
        text.contains(&format!("systemd StartTransientUnit {BURSTABLE_SLICE}"))
            && text.contains("org.freedesktop.DBus.Error.AccessDenied"),
        "{text}"
    );
    assert!(cgroups.list_pods().unwrap().is_empty());
    assert!(!systemd.units().contains(BURSTABLE_SLICE));

    // Its job fails.
    systemd.fail(
        "StartTransientUnit",
        BURSTABLE_SLICE,
        Failure::Job("failed"),
    );
    let err = cgroups.ensure_pod(&burstable).unwrap_err().to_string();
    assert!(err.contains("finished with result \"failed\""), "{err}");
    assert!(cgroups.list_pods().unwrap().is_empty());

    // It works once systemd does.
    systemd.heal();
    let b = cgroups.ensure_pod(&burstable).unwrap();
    let dir = tmp.path().join(&b.cri_parent[1..]);
    assert!(dir.is_dir());

    // Adopting works, but the update is refused: an error, and the slice stays.
    systemd.fail(
        "SetUnitProperties",
        BURSTABLE_SLICE,
        Failure::Call("org.freedesktop.DBus.Error.InvalidArgs"),
    );
    let err = cgroups.ensure_pod(&burstable).unwrap_err().to_string();
    assert!(err.contains("SetUnitProperties"), "{err}");
    assert!(systemd.units().contains(BURSTABLE_SLICE));

    // A failed stop removes nothing behind systemd's back; a retry finishes the job.
    systemd.fail("StopUnit", BURSTABLE_SLICE, Failure::Job("timeout"));
    let err = cgroups.remove_pod(BURSTABLE_UID).unwrap_err().to_string();
    assert!(
        err.contains(&format!("StopUnit {BURSTABLE_SLICE}")),
        "{err}"
    );
    assert!(dir.is_dir());
    systemd.heal();
    cgroups.remove_pod(BURSTABLE_UID).unwrap();
    assert!(!dir.exists());

    // A QoS slice systemd refuses: start-up stops with the error; a retry is idempotent.
    systemd.forget("kubepods-besteffort.slice");
    systemd.fail(
        "StartTransientUnit",
        "kubepods-besteffort.slice",
        Failure::Call("org.freedesktop.DBus.Error.AccessDenied"),
    );
    assert!(cgroups.ensure_node_hierarchy(None).is_err());
    systemd.heal();
    cgroups.ensure_node_hierarchy(None).unwrap();
    assert!(systemd.units().contains("kubepods-besteffort.slice"));
}

#[test]
fn start_up_fails_clearly_without_systemd() {
    let sockets = ["/run/systemd/private", "/run/dbus/system_bus_socket"];
    if sockets.iter().any(|s| Path::new(s).exists())
        || std::env::var_os("DBUS_SYSTEM_BUS_ADDRESS").is_some()
    {
        eprintln!("skipped: this host has systemd or a system bus");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    v2::fake::tree(tmp.path(), "cpu memory pids");
    let err = PodCgroups::new(config(tmp.path(), "/")).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("cgroupDriver is systemd, but systemd cannot be reached over D-Bus")
            && text.contains("/run/systemd/private")
            && text.contains("system bus"),
        "{text}"
    );
    // The cgroupfs driver needs no systemd.
    PodCgroups::new(CgroupConfig {
        driver: CgroupDriver::Cgroupfs,
        ..config(tmp.path(), "/")
    })
    .unwrap();
}
