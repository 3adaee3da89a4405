//! `PodCgroups` end to end with the cgroupfs driver: against fake v1 trees in temp dirs, and
//! (privileged) against the real cgroup hierarchy of this host under a root of its own. The
//! systemd driver's tests are in `tests_systemd`.

use std::path::{Path, PathBuf};

use super::*;
use kwk_api::pod::testing::*;

const GUARANTEED_UID: &str = "1111-aaaa";
const BURSTABLE_UID: &str = "2222-bbbb";
const BESTEFFORT_UID: &str = "3333-cccc";

fn read(path: impl AsRef<Path>) -> String {
    std::fs::read_to_string(path.as_ref())
        .unwrap_or_else(|e| panic!("{}: {e}", path.as_ref().display()))
}

fn config(mount_root: &Path, driver: CgroupDriver, cgroup_root: &str) -> CgroupConfig {
    CgroupConfig {
        mount_root: mount_root.to_path_buf(),
        driver,
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

#[test]
fn v1_cgroupfs_node_hierarchy_pods_list_and_remove() {
    let tmp = tempfile::tempdir().unwrap();
    v1::fake::tree(tmp.path());
    let cgroups = PodCgroups::new(config(tmp.path(), CgroupDriver::Cgroupfs, "/kwkt-abc")).unwrap();
    assert!(!cgroups.is_v2());
    cgroups
        .ensure_node_hierarchy(Some(NodeAllocatable {
            cpu_milli: 2000,
            memory_bytes: 1 << 30,
        }))
        .unwrap();
    let cpu = tmp.path().join("cpu,cpuacct/kwkt-abc/kubepods");
    let memory = tmp.path().join("memory/kwkt-abc/kubepods");
    assert_eq!(read(cpu.join("cpu.shares")), "2048");
    assert_eq!(read(memory.join("memory.limit_in_bytes")), "1073741824");
    assert_eq!(read(cpu.join("besteffort/cpu.shares")), "2");
    assert!(
        tmp.path()
            .join("freezer/kwkt-abc/kubepods/burstable")
            .is_dir()
    );

    let [guaranteed, burstable, besteffort] = three_pods();
    let g = cgroups.ensure_pod(&guaranteed).unwrap();
    assert_eq!(g.qos, QosClass::Guaranteed);
    assert_eq!(g.cri_parent, "/kwkt-abc/kubepods/pod1111-aaaa");
    assert_eq!(read(cpu.join("pod1111-aaaa/cpu.shares")), "1024");
    assert_eq!(read(cpu.join("pod1111-aaaa/cpu.cfs_quota_us")), "100000");
    assert_eq!(
        read(memory.join("pod1111-aaaa/memory.limit_in_bytes")),
        "134217728"
    );
    assert_eq!(
        read(
            tmp.path()
                .join("pids/kwkt-abc/kubepods/pod1111-aaaa/pids.max")
        ),
        "256"
    );
    // Ensuring again is idempotent and puts drifted values back.
    std::fs::write(cpu.join("pod1111-aaaa/cpu.shares"), "9").unwrap();
    assert_eq!(cgroups.ensure_pod(&guaranteed).unwrap(), g);
    assert_eq!(read(cpu.join("pod1111-aaaa/cpu.shares")), "1024");

    let b = cgroups.ensure_pod(&burstable).unwrap();
    assert_eq!(b.cri_parent, "/kwkt-abc/kubepods/burstable/pod2222-bbbb");
    assert_eq!(
        cgroups.parse_pod_cgroup(&b.cri_parent),
        Some((QosClass::Burstable, BURSTABLE_UID.to_string()))
    );
    assert_eq!(
        cgroups.parse_pod_cgroup("/kwkt-abc/kubepods/burstable"),
        None
    );
    assert_eq!(read(cpu.join("burstable/pod2222-bbbb/cpu.shares")), "256");
    assert_eq!(
        read(cpu.join("burstable/pod2222-bbbb/cpu.cfs_quota_us")),
        "-1"
    );
    assert_eq!(
        read(memory.join("burstable/pod2222-bbbb/memory.limit_in_bytes")),
        "67108864"
    );

    let e = cgroups.ensure_pod(&besteffort).unwrap();
    assert_eq!(e.cri_parent, "/kwkt-abc/kubepods/besteffort/pod3333-cccc");
    assert_eq!(read(cpu.join("besteffort/pod3333-cccc/cpu.shares")), "2");

    cgroups
        .update_qos_shares(&[&guaranteed, &burstable, &besteffort])
        .unwrap();
    assert_eq!(read(cpu.join("burstable/cpu.shares")), "256");

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

    // A container cgroup the runtime made below the pod goes with it, in every hierarchy.
    std::fs::create_dir(memory.join("burstable/pod2222-bbbb/ctr")).unwrap();
    cgroups.remove_pod(BURSTABLE_UID).unwrap();
    for h in v1::fake::HIERARCHIES {
        assert!(
            !tmp.path()
                .join(h)
                .join("kwkt-abc/kubepods/burstable/pod2222-bbbb")
                .exists(),
            "{h}"
        );
    }
    cgroups.remove_pod(BURSTABLE_UID).unwrap();
    cgroups.remove_pod("never-there").unwrap();
    assert_eq!(cgroups.list_pods().unwrap().len(), 2);

    cgroups.remove_root().unwrap();
    for h in v1::fake::HIERARCHIES {
        assert!(!tmp.path().join(h).join("kwkt-abc").exists(), "{h}");
    }
}

#[test]
fn v2_cgroupfs_pods_list_and_remove() {
    let tmp = tempfile::tempdir().unwrap();
    v2::fake::tree(tmp.path(), "cpuset cpu io memory pids");
    let cgroups = PodCgroups::new(config(tmp.path(), CgroupDriver::Cgroupfs, "/")).unwrap();
    assert!(cgroups.is_v2());
    cgroups.ensure_node_hierarchy(None).unwrap();
    let kubepods = tmp.path().join("kubepods");
    assert!(
        !kubepods.join("cpu.weight").exists(),
        "no allocatable, no node limits"
    );
    assert_eq!(read(kubepods.join("besteffort/cpu.weight")), "1");

    let [guaranteed, burstable, besteffort] = three_pods();
    let b = cgroups.ensure_pod(&burstable).unwrap();
    assert_eq!(b.cri_parent, "/kubepods/burstable/pod2222-bbbb");
    let dir = tmp.path().join(b.cri_parent.trim_start_matches('/'));
    assert_eq!(read(dir.join("cpu.weight")), "10");
    assert_eq!(read(dir.join("cpu.max")), "max 100000");
    assert_eq!(read(dir.join("memory.max")), "67108864");
    assert_eq!(read(dir.join("pids.max")), "256");
    for ancestor in ["", "kubepods", "kubepods/burstable"] {
        assert_eq!(
            read(tmp.path().join(ancestor).join("cgroup.subtree_control")),
            "+cpu +memory +pids"
        );
    }

    let g = cgroups.ensure_pod(&guaranteed).unwrap();
    let gdir = tmp.path().join(g.cri_parent.trim_start_matches('/'));
    assert_eq!(read(gdir.join("cpu.max")), "100000 100000");
    assert_eq!(read(gdir.join("memory.max")), "134217728");
    cgroups.ensure_pod(&besteffort).unwrap();

    let mut listed = cgroups.list_pods().unwrap();
    listed.sort();
    assert_eq!(listed.len(), 3);
    assert_eq!(listed[1], (QosClass::Burstable, BURSTABLE_UID.to_string()));

    cgroups.remove_pod(GUARANTEED_UID).unwrap();
    assert!(!gdir.exists());
    assert!(kubepods.is_dir());
    assert_eq!(cgroups.list_pods().unwrap().len(), 2);
}

#[test]
fn without_per_qos_nothing_is_created_below_the_root() {
    let tmp = tempfile::tempdir().unwrap();
    v1::fake::tree(tmp.path());
    let cgroups = PodCgroups::new(CgroupConfig {
        per_qos: false,
        ..config(tmp.path(), CgroupDriver::Cgroupfs, "/kwkt-flat")
    })
    .unwrap();
    cgroups.ensure_node_hierarchy(None).unwrap();
    let [_, burstable, _] = three_pods();
    let b = cgroups.ensure_pod(&burstable).unwrap();
    assert_eq!(b.cri_parent, "/kwkt-flat");
    assert_eq!(b.path, None);
    assert_eq!(
        fs::child_names(&tmp.path().join("memory/kwkt-flat")).unwrap(),
        Vec::<String>::new()
    );
    assert!(cgroups.list_pods().unwrap().is_empty());
    cgroups.remove_pod(BURSTABLE_UID).unwrap();
}

#[test]
fn bad_pods_are_refused_with_context() {
    let tmp = tempfile::tempdir().unwrap();
    v1::fake::tree(tmp.path());
    let cgroups = PodCgroups::new(config(tmp.path(), CgroupDriver::Cgroupfs, "/")).unwrap();
    let mut no_uid = pod("x", &[("c", "", "")]);
    no_uid.metadata.uid = None;
    assert!(matches!(
        cgroups.ensure_pod(&no_uid),
        Err(CgroupError::MissingUid { .. })
    ));
    let bad_quantity = pod("x", &[("c", "cpu=fast", "")]);
    let err = cgroups.ensure_pod(&bad_quantity).unwrap_err();
    assert!(err.to_string().contains("container c"), "{err}");
    let bad_uid = pod("../../etc", &[("c", "", "")]);
    assert!(matches!(
        cgroups.ensure_pod(&bad_uid),
        Err(CgroupError::Name(_))
    ));
    assert!(!tmp.path().join("memory/kubepods").exists());
}

#[test]
fn missing_mount_root_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let err = PodCgroups::new(config(
        &tmp.path().join("none"),
        CgroupDriver::Cgroupfs,
        "/",
    ))
    .unwrap_err();
    assert!(matches!(err, CgroupError::NoHierarchy { .. }), "{err}");
}

/// Removes the test's cgroup root and kills its child, even when an assertion failed.
struct RealRootGuard {
    cgroups: PodCgroups,
    child: Option<std::process::Child>,
}

impl Drop for RealRootGuard {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Err(e) = self.cgroups.remove_root() {
            eprintln!(
                "cleanup of {:?} failed: {e}",
                self.cgroups.config().cgroup_root
            );
        }
    }
}

fn privileged_tests_skipped() -> bool {
    std::env::var("KWK_SKIP_PRIVILEGED").is_ok_and(|v| v == "1")
        || !nix::unistd::Uid::effective().is_root()
}

/// The pod cgroup's directory in the hierarchy holding `controller` (v1) or the unified one.
fn real_dir(cgroups: &PodCgroups, controller: &str, path: &str) -> PathBuf {
    let root = &cgroups.config().mount_root;
    if cgroups.is_v2() {
        return root.join(path);
    }
    let v1 = v1::V1::discover(root).unwrap();
    let hierarchy = v1
        .hierarchies()
        .iter()
        .find(|h| h.controllers.iter().any(|c| c == controller))
        .unwrap();
    hierarchy.path.join(path)
}

#[test]
fn privileged_real_pod_cgroup_lifecycle() {
    if privileged_tests_skipped() {
        eprintln!("skipped: needs root (and KWK_SKIP_PRIVILEGED unset)");
        return;
    }
    let root = format!("/kwkt-cg-{}", std::process::id());
    let cgroups = PodCgroups::new(CgroupConfig {
        cgroup_root: root.clone(),
        pod_pids_limit: 100,
        ..CgroupConfig::default()
    })
    .unwrap();
    let mut guard = RealRootGuard {
        cgroups,
        child: None,
    };
    let cgroups = &guard.cgroups;
    let v2 = cgroups.is_v2();

    cgroups
        .ensure_node_hierarchy(Some(NodeAllocatable {
            cpu_milli: 1000,
            memory_bytes: 1 << 30,
        }))
        .unwrap();
    let uid = "9999-real";
    let pod = pod(uid, &[("c", "cpu=100m", "cpu=500m,memory=64Mi")]);
    let made = cgroups.ensure_pod(&pod).unwrap();
    assert_eq!(made.qos, QosClass::Burstable);
    assert_eq!(
        made.cri_parent,
        format!("{root}/kubepods/burstable/pod{uid}")
    );
    let path = made.path.unwrap();
    let cpu = real_dir(cgroups, "cpu", &path);
    let memory = real_dir(cgroups, "memory", &path);
    let pids = real_dir(cgroups, "pids", &path);
    if v2 {
        assert_eq!(read(cpu.join("cpu.max")).trim(), "50000 100000");
        assert_eq!(read(cpu.join("cpu.weight")).trim(), "4");
        assert_eq!(read(memory.join("memory.max")).trim(), "67108864");
    } else {
        assert_eq!(read(cpu.join("cpu.shares")).trim(), "102");
        assert_eq!(read(cpu.join("cpu.cfs_quota_us")).trim(), "50000");
        assert_eq!(read(cpu.join("cpu.cfs_period_us")).trim(), "100000");
        assert_eq!(
            read(memory.join("memory.limit_in_bytes")).trim(),
            "67108864"
        );
        let cpuset = real_dir(cgroups, "cpuset", &path);
        assert!(!read(cpuset.join("cpuset.cpus")).trim().is_empty());
    }
    assert_eq!(read(pids.join("pids.max")).trim(), "100");
    assert_eq!(
        cgroups.list_pods().unwrap(),
        [(QosClass::Burstable, uid.to_string())]
    );

    // The kernel refuses a nonsense value; the error names the file.
    let bad = if v2 {
        cpu.join("cpu.weight")
    } else {
        cpu.join("cpu.shares")
    };
    match fs::write_value(&bad, "lots") {
        Err(CgroupError::Write { path, .. }) => assert_eq!(path, bad),
        other => panic!("expected a write error, got {other:?}"),
    }

    let child = std::process::Command::new("sleep")
        .arg("300")
        .spawn()
        .unwrap();
    let pid = child.id();
    guard.child = Some(child);
    let cgroups = &guard.cgroups;
    let mut dirs = vec![cpu, memory, pids];
    dirs.dedup();
    for dir in &dirs {
        fs::write_value(&dir.join("cgroup.procs"), &pid.to_string()).unwrap();
        assert!(
            fs::read_procs(dir).unwrap().contains(&(pid as i32)),
            "{}",
            dir.display()
        );
    }

    cgroups.remove_pod(uid).unwrap();
    for dir in &dirs {
        assert!(!dir.exists(), "{} still exists", dir.display());
    }
    let status = guard.child.take().unwrap().wait().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(9), "the sleeper was SIGKILLed");
    assert!(guard.cgroups.list_pods().unwrap().is_empty());
}
