//! Effect-layer tests against a temp dir: hostPath kinds, emptyDir, the hosts and termination
//! files, and a cleanup that must not follow symlinks. subPaths: `subpath/tests.rs`.

use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::os::unix::net::UnixListener;
use std::sync::Mutex;

use super::*;
use crate::runtime_spec::volumes::{HostPathType, SubPath, TerminationFile};
use kwk_cri::api::MountPropagation;

fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap().permissions().mode() & 0o7777
}

fn host(field: &str, path: &Path, kind: HostPathType) -> VolumeSetup {
    VolumeSetup::HostPath {
        volume: field.into(),
        field: field.into(),
        path: path.into(),
        kind,
    }
}

pub(super) fn plan_with(volumes: Vec<VolumeSetup>, mounts: Vec<PlannedMount>) -> VolumePlan {
    VolumePlan {
        volumes,
        mounts,
        hosts_file: None,
        termination_file: None,
    }
}

/// Mount 0 of container `app`, volume `v`.
pub(super) fn mount(source: MountSource, sub: Option<&str>) -> PlannedMount {
    PlannedMount {
        field: "spec.containers[0].volumeMounts[0]".into(),
        volume: "v".into(),
        source,
        sub_path: sub.map(|sub| SubPath {
            path: sub.into(),
            bind: "volume-subpaths/v/app/0".into(),
        }),
        container_path: "/mnt".into(),
        readonly: false,
        propagation: MountPropagation::PropagationPrivate,
    }
}

/// Runs `f` on a thread of its own in a private mount namespace (`/` made rprivate), so nothing
/// it mounts reaches the host and all of it goes when the thread ends, failed or not. The
/// namespace is per thread (`unshare(CLONE_NEWNS)` leaves the test harness's other threads
/// alone). Files to mount must be opened on that thread: a mount of another namespace cannot be
/// bind-mounted here. Calls are serialised: the namespaces' teardown competes for little else,
/// but two mount-heavy tests at once make the race test's numbers noisier.
pub(super) fn in_private_mount_ns<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)
                    .expect("unshare(CLONE_NEWNS)");
                nix::mount::mount(
                    None::<&str>,
                    "/",
                    None::<&str>,
                    MsFlags::MS_REC | MsFlags::MS_PRIVATE,
                    None::<&str>,
                )
                .expect("making / rprivate in the test's mount namespace");
                f()
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

#[test]
fn host_path_kinds_are_checked_and_created() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let pod_dir = t.join("pods/u1");
    fs::create_dir(t.join("dir")).unwrap();
    fs::write(t.join("file"), "x").unwrap();
    let _listener = UnixListener::bind(t.join("sock")).unwrap();

    let ok = [
        ("dir", HostPathType::Directory),
        ("file", HostPathType::File),
        ("sock", HostPathType::Socket),
        ("missing-unchecked", HostPathType::Unchecked),
        ("dir", HostPathType::DirectoryOrCreate),
        ("file", HostPathType::FileOrCreate),
    ];
    for (name, kind) in ok {
        let plan = plan_with(vec![host("f", &t.join(name), kind)], vec![]);
        apply_volume_plan(&plan, &pod_dir).unwrap_or_else(|e| panic!("{name} {kind:?}: {e}"));
    }
    assert_eq!(
        fs::read_to_string(t.join("file")).unwrap(),
        "x",
        "FileOrCreate must not truncate"
    );

    // Upstream's FailedMount messages, a missing path included.
    let bad = [
        ("missing", HostPathType::Directory, "is not a directory"),
        ("missing", HostPathType::File, "is not a file"),
        ("missing", HostPathType::Socket, "is not a socket file"),
        ("file", HostPathType::Directory, "is not a directory"),
        ("dir", HostPathType::File, "is not a file"),
        ("file", HostPathType::Socket, "is not a socket file"),
        ("dir", HostPathType::CharDevice, "is not a character device"),
        ("file", HostPathType::BlockDevice, "is not a block device"),
    ];
    for (name, kind, reason) in bad {
        let plan = plan_with(vec![host("data", &t.join(name), kind)], vec![]);
        let err = apply_volume_plan(&plan, &pod_dir).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "MountVolume.SetUp failed for volume \"data\" : hostPath type check failed: {} {reason}",
                t.join(name).display()
            ),
            "{name} {kind:?}"
        );
    }
    // /dev/null is a character device.
    apply_volume_plan(
        &plan_with(
            vec![host("f", Path::new("/dev/null"), HostPathType::CharDevice)],
            vec![],
        ),
        &pod_dir,
    )
    .unwrap();

    // The *OrCreate kinds create: a directory tree 0755, an empty file 0644 (parent must exist).
    let new_dir = t.join("a/b/c");
    let new_file = t.join("dir/new.conf");
    let plan = plan_with(
        vec![
            host("d", &new_dir, HostPathType::DirectoryOrCreate),
            host("f", &new_file, HostPathType::FileOrCreate),
        ],
        vec![],
    );
    apply_volume_plan(&plan, &pod_dir).unwrap();
    assert!(new_dir.is_dir());
    assert_eq!(mode(&new_dir), 0o755);
    assert_eq!(fs::read(&new_file).unwrap(), b"");
    assert_eq!(mode(&new_file), 0o644);
    let orphan = plan_with(
        vec![host("f", &t.join("nope/x"), HostPathType::FileOrCreate)],
        vec![],
    );
    assert!(matches!(
        apply_volume_plan(&orphan, &pod_dir),
        Err(VolumeError::SetUp { volume, .. }) if volume == "f"
    ));
}

/// A claim's volume: an unbound claim fails with the resolver's reason; a `local` volume's
/// path must exist (its message points at nodeAffinity); a hostPath one is type-checked.
#[test]
fn claim_volumes_fail_mount_until_resolved_and_local_paths_must_exist() {
    use crate::runtime_spec::claims::{ClaimError, ClaimVolume};
    let tmp = tempfile::tempdir().unwrap();
    let pod_dir = tmp.path().join("pod");
    let claim = |resolved| VolumeSetup::Claim {
        volume: "data".into(),
        field: "spec.volumes[0].persistentVolumeClaim".into(),
        claim: "pvc".into(),
        resolved,
    };
    let resolved = |path: &Path, local, kind| {
        Ok(ClaimVolume {
            persistent_volume: "pv1".into(),
            path: path.into(),
            kind,
            local,
            readonly: false,
        })
    };
    let message = |setup| {
        apply_volume_plan(&plan_with(vec![setup], vec![]), &pod_dir)
            .unwrap_err()
            .to_string()
    };
    assert_eq!(
        message(claim(Err(ClaimError::ClaimNotFound {
            claim: "pvc".into()
        }))),
        "MountVolume.SetUp failed for volume \"data\" : persistentvolumeclaim \"pvc\" not found"
    );
    let missing = tmp.path().join("disk");
    let local_missing = message(claim(resolved(&missing, true, HostPathType::Unchecked)));
    assert!(
        local_missing.contains(&format!(
            "path {} does not exist on this node",
            missing.display()
        )) && local_missing.contains("nodeAffinity"),
        "{local_missing}"
    );
    let host_missing = message(claim(resolved(&missing, false, HostPathType::Directory)));
    assert!(
        host_missing.contains("is not a directory"),
        "{host_missing}"
    );
    fs::create_dir(&missing).unwrap();
    apply_volume_plan(
        &plan_with(
            vec![claim(resolved(&missing, true, HostPathType::Unchecked))],
            vec![],
        ),
        &pod_dir,
    )
    .unwrap();
}

#[test]
fn empty_dir_is_created_world_writable_and_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let pod_dir = tmp.path().join("pods/u1");
    let rel = PathBuf::from("volumes/kubernetes.io~empty-dir/cache");
    let setup = VolumeSetup::EmptyDir {
        volume: "cache".into(),
        field: "spec.volumes[0].emptyDir".into(),
        dir: rel.clone(),
        fs_group: None,
        memory: None,
    };
    let plan = plan_with(
        vec![setup],
        vec![mount(MountSource::PodDir(rel.clone()), None)],
    );
    let applied = apply_volume_plan(&plan, &pod_dir).unwrap();
    let dir = pod_dir.join(&rel);
    assert!(dir.is_dir());
    assert_eq!(mode(&dir), 0o777);
    assert_eq!(mode(&pod_dir), 0o750);
    assert_eq!(applied.mounts[0].host_path, dir.to_string_lossy());
    assert_eq!(applied.mounts[0].container_path, "/mnt");
    // A second apply (container restart) keeps the contents.
    fs::write(dir.join("state"), "1").unwrap();
    apply_volume_plan(&plan, &pod_dir).unwrap();
    assert_eq!(fs::read_to_string(dir.join("state")).unwrap(), "1");
}

#[test]
fn a_memory_empty_dir_is_a_sized_tmpfs_unmounted_with_the_pod() {
    if !kwk_tests::privileged_tests_enabled() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let pod_dir = tmp.path().join("pods/u1");
    in_private_mount_ns(|| {
        let rel = PathBuf::from("volumes/kubernetes.io~empty-dir/shm");
        let setup = VolumeSetup::EmptyDir {
            volume: "shm".into(),
            field: "spec.volumes[0].emptyDir".into(),
            dir: rel.clone(),
            fs_group: None,
            memory: Some(TmpfsSize::Limit(1 << 20)),
        };
        let plan = plan_with(vec![setup], vec![]);
        apply_volume_plan(&plan, &pod_dir).unwrap();
        let dir = pod_dir.join(&rel);
        let stat = nix::sys::statfs::statfs(&dir).unwrap();
        assert_eq!(stat.filesystem_type(), nix::sys::statfs::TMPFS_MAGIC);
        assert_eq!(mode(&dir), 0o777);
        // Sized: 1 MiB fits in no more than 1 MiB.
        let err = fs::write(dir.join("big"), vec![0u8; 2 << 20]).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(nix::libc::ENOSPC), "{err}");
        fs::remove_file(dir.join("big")).unwrap();
        fs::write(dir.join("state"), "1").unwrap();
        // A container restart keeps it (no second mount on top).
        apply_volume_plan(&plan, &pod_dir).unwrap();
        assert_eq!(fs::read_to_string(dir.join("state")).unwrap(), "1");
        // Removing the pod unmounts it, and only then removes the directory.
        cleanup_pod_dir(&pod_dir).unwrap();
        assert!(!pod_dir.exists());
    });
}

#[test]
fn empty_dir_with_fs_group_is_group_owned_and_setgid() {
    let tmp = tempfile::tempdir().unwrap();
    let pod_dir = tmp.path().join("pods/u1");
    let gid = fs::metadata(tmp.path()).unwrap().gid(); // a group we may chown to
    let rel = PathBuf::from("volumes/kubernetes.io~empty-dir/shared");
    let setup = VolumeSetup::EmptyDir {
        volume: "shared".into(),
        field: "f".into(),
        dir: rel.clone(),
        fs_group: Some(gid),
        memory: None,
    };
    apply_volume_plan(&plan_with(vec![setup], vec![]), &pod_dir).unwrap();
    let meta = fs::metadata(pod_dir.join(&rel)).unwrap();
    assert_eq!(
        (meta.gid(), meta.permissions().mode() & 0o7777),
        (gid, 0o2777)
    );
}

#[test]
fn hosts_and_termination_files() {
    let tmp = tempfile::tempdir().unwrap();
    let pod_dir = tmp.path().join("pods/u1");
    let node_hosts = tmp.path().join("node-hosts");
    fs::write(&node_hosts, "127.0.0.1 localhost\n").unwrap();
    let mut plan = plan_with(vec![], vec![]);
    plan.hosts_file = Some(HostsFile::FromNode {
        node_hosts,
        suffix: "\n# x\n".into(),
    });
    plan.termination_file = Some(TerminationFile {
        container: "app".into(),
        id: "0000beef".into(),
        container_path: "/dev/termination-log".into(),
    });
    let applied = apply_volume_plan(&plan, &pod_dir).unwrap();

    let hosts = pod_dir.join("etc-hosts");
    assert_eq!(
        fs::read_to_string(&hosts).unwrap(),
        "# Kubernetes-managed hosts file (host network).\n127.0.0.1 localhost\n\n# x\n"
    );
    assert_eq!(mode(&hosts), 0o644);
    let term = pod_dir.join("containers/app/0000beef");
    assert_eq!(
        applied.termination_message_path.as_deref(),
        Some(term.as_path())
    );
    assert_eq!(mode(&term), 0o666);
    assert_eq!(fs::read(&term).unwrap(), b"");
    let paths: Vec<(&str, String)> = applied
        .mounts
        .iter()
        .map(|m| (m.container_path.as_str(), m.host_path.clone()))
        .collect();
    assert_eq!(
        paths,
        vec![
            ("/etc/hosts", hosts.to_string_lossy().into_owned()),
            ("/dev/termination-log", term.to_string_lossy().into_owned())
        ]
    );
    assert!(applied.mounts.iter().all(|m| !m.readonly));

    plan.hosts_file = Some(HostsFile::Managed {
        content: "managed\n".into(),
    });
    apply_volume_plan(&plan, &pod_dir).unwrap();
    assert_eq!(fs::read_to_string(&hosts).unwrap(), "managed\n");

    plan.hosts_file = Some(HostsFile::FromNode {
        node_hosts: tmp.path().join("absent"),
        suffix: String::new(),
    });
    let err = apply_volume_plan(&plan, &pod_dir).unwrap_err();
    assert!(err.to_string().contains("absent"), "{err}");
}

#[test]
fn cleanup_removes_everything_but_never_follows_symlinks() {
    let tmp = tempfile::tempdir().unwrap();
    let outside = tmp.path().join("outside");
    fs::create_dir_all(outside.join("sub")).unwrap();
    fs::write(outside.join("keep"), "k").unwrap();
    fs::write(outside.join("sub/keep"), "k").unwrap();

    let pod_dir = tmp.path().join("pods/u1");
    let empty = pod_dir.join("volumes/kubernetes.io~empty-dir/cache");
    fs::create_dir_all(empty.join("deep/er")).unwrap();
    fs::write(empty.join("deep/er/f"), "x").unwrap();
    symlink(&outside, empty.join("to-outside")).unwrap();
    symlink(outside.join("keep"), pod_dir.join("file-link")).unwrap();
    symlink("/nonexistent", pod_dir.join("dangling")).unwrap();
    fs::write(pod_dir.join("etc-hosts"), "h").unwrap();

    cleanup_pod_dir(&pod_dir).unwrap();
    assert!(!pod_dir.exists());
    assert_eq!(fs::read_to_string(outside.join("keep")).unwrap(), "k");
    assert_eq!(fs::read_to_string(outside.join("sub/keep")).unwrap(), "k");
    // Missing is fine; a symlink as the pod dir itself is refused and left alone.
    cleanup_pod_dir(&pod_dir).unwrap();
    symlink(&outside, &pod_dir).unwrap();
    assert!(matches!(
        cleanup_pod_dir(&pod_dir),
        Err(VolumeError::Cleanup { .. })
    ));
    assert!(outside.join("keep").exists());
}

#[test]
fn cleanup_stops_at_another_filesystem() {
    // Mounting needs privileges, so pretend: walk the pod dir with /proc's device as the
    // expected one; then its own subdirectories look like another filesystem.
    let tmp = tempfile::tempdir().unwrap();
    let pod_dir = tmp.path().join("pods/u1");
    fs::create_dir_all(&pod_dir).unwrap();
    let fd = nix::fcntl::open(
        &pod_dir,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY,
        Mode::empty(),
    )
    .unwrap();
    let proc_dev = fs::metadata("/proc").unwrap().dev();
    assert_ne!(fstat(&fd).unwrap().st_dev, proc_dev);
    fs::create_dir(pod_dir.join("child")).unwrap();
    let err = remove_contents(fd, proc_dev, &pod_dir).unwrap_err();
    assert!(err.to_string().contains("mount point"), "{err}");
    assert!(pod_dir.join("child").exists());
}
