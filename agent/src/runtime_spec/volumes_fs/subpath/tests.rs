//! subPaths against a real kernel: resolution (unprivileged, both resolvers), binds proven by
//! inode to be inside the volume, replacement on restart, unmounting before the pod directory
//! goes, and the swap race. The mount tests run in a private mount namespace.

use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use nix::fcntl::{AT_FDCWD, RenameFlags, renameat2};

use super::super::tests::{in_private_mount_ns, mount, plan_with};
use super::super::{MountSource, apply_volume_plan, cleanup_pod_dir};
use super::*;

const FIELD: &str = "spec.containers[0].volumeMounts[0].subPath";
const RESOLVERS: [Resolver; 2] = [Resolver::Openat2, Resolver::Walk];

type Inode = (u64, u64);

fn inode(path: &Path) -> Inode {
    let meta = fs::symlink_metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (meta.dev(), meta.ino())
}

fn fd_inode(fd: &OwnedFd) -> Inode {
    let stat = fstat(fd).unwrap();
    (stat.st_dev, stat.st_ino)
}

fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap().permissions().mode() & 0o7777
}

/// How many mounts sit on `path` in the calling thread's mount namespace.
fn mounts_on(path: &Path) -> usize {
    // `thread-self`: the test's namespace is its thread's, not the process's.
    let info = fs::read_to_string("/proc/thread-self/mountinfo").unwrap();
    let want = path.to_string_lossy().replace(' ', "\\040");
    info.lines()
        .filter(|line| line.split(' ').nth(4) == Some(want.as_str()))
        .count()
}

/// `<tmp>/vol` (mode 0750) with `inner/`, `existing/file` and links out of it, `<tmp>/outside`
/// with `secret` and `dir/`; the pod directory is `<tmp>/pods/u1`.
struct Fixture {
    tmp: tempfile::TempDir,
    vol: PathBuf,
    outside: PathBuf,
    pod_dir: PathBuf,
}

fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let vol = tmp.path().join("vol");
    let outside = tmp.path().join("outside");
    fs::create_dir_all(vol.join("inner")).unwrap();
    fs::create_dir_all(vol.join("existing")).unwrap();
    fs::write(vol.join("existing/file"), "f").unwrap();
    fs::set_permissions(&vol, fs::Permissions::from_mode(0o750)).unwrap();
    fs::create_dir_all(outside.join("dir")).unwrap();
    fs::write(outside.join("secret"), "s").unwrap();
    // Out of the volume: absolute, relative with `..`, as the final component.
    symlink(&outside, vol.join("escape")).unwrap();
    symlink("../../outside", vol.join("inner/up")).unwrap();
    symlink(outside.join("secret"), vol.join("inner/final")).unwrap();
    // A link that stays inside the volume (to something missing here: refused by both).
    symlink("inner", vol.join("local")).unwrap();
    // The atomic writer's layout: `key -> ..data/key`, `..data -> ..ts`.
    fs::create_dir_all(vol.join("..ts")).unwrap();
    fs::write(vol.join("..ts/key"), "k").unwrap();
    symlink("..ts", vol.join("..data")).unwrap();
    symlink("..data/key", vol.join("key")).unwrap();
    let pod_dir = tmp.path().join("pods/u1");
    Fixture {
        vol,
        outside,
        pod_dir,
        tmp,
    }
}

/// The subPaths every resolver refuses, and how.
const REFUSED: [(&str, &str); 9] = [
    ("escape", "symlink"),
    ("escape/secret", "symlink"),
    ("escape/new/dir", "symlink"),
    ("inner/up", "symlink"),
    ("inner/up/secret", "symlink"),
    ("inner/final", "symlink"),
    ("local/x", "symlink"),
    ("existing/file/x", "not a directory"),
    // The planner refuses `..` (volumes.rs `refusals_name_the_field`); so does this layer.
    ("inner/../../outside", "not a directory"),
];

fn check_refusal(err: &VolumeError, sub: &str, kind: &str, vol: &Path) {
    let ok = match kind {
        "symlink" => matches!(err, VolumeError::SubPathSymlink { .. }),
        _ => matches!(err, VolumeError::SubPathNotDirectory { .. }),
    };
    assert!(ok, "{sub}: want {kind}, got {err:?}");
    let text = err.to_string();
    assert!(text.starts_with(FIELD), "{sub}: {text}");
    assert!(
        text.contains(&vol.join(sub).display().to_string()),
        "{sub}: {text}"
    );
}

#[test]
fn open_creates_missing_directories_with_the_volume_mode() {
    for resolver in RESOLVERS {
        let f = fixture();
        let fd = open_sub_path(&f.vol, Path::new("a/b"), FIELD, resolver).unwrap();
        assert_eq!(fd_inode(&fd), inode(&f.vol.join("a/b")), "{resolver:?}");
        assert_eq!(
            (mode(&f.vol.join("a")), mode(&f.vol.join("a/b"))),
            (0o750, 0o750),
            "{resolver:?}"
        );
        // Existing: a file as the last component, a directory.
        for sub in ["existing/file", "existing", "a/b"] {
            let fd = open_sub_path(&f.vol, Path::new(sub), FIELD, resolver).unwrap();
            assert_eq!(fd_inode(&fd), inode(&f.vol.join(sub)), "{resolver:?} {sub}");
        }
    }
}

#[test]
fn links_within_the_volume_are_followed_by_openat2_only() {
    let f = fixture();
    let fd = open_sub_path(&f.vol, Path::new("key"), FIELD, Resolver::Openat2).unwrap();
    assert_eq!(fd_inode(&fd), inode(&f.vol.join("..ts/key")));
    let err = open_sub_path(&f.vol, Path::new("key"), FIELD, Resolver::Walk).unwrap_err();
    check_refusal(&err, "key", "symlink", &f.vol);
}

#[test]
fn open_refuses_symlinks_and_dotdot_naming_the_field() {
    for resolver in RESOLVERS {
        let f = fixture();
        for (sub, kind) in REFUSED {
            let err = open_sub_path(&f.vol, Path::new(sub), FIELD, resolver).unwrap_err();
            check_refusal(&err, sub, kind, &f.vol);
        }
        assert!(
            !f.outside.join("new").exists() && !f.tmp.path().join("outside/inner").exists(),
            "{resolver:?}: nothing may be created through a link"
        );
    }
}

#[test]
fn binds_show_the_inode_inside_the_volume_or_are_refused() {
    if !kwk_tests::privileged_tests_enabled() {
        return;
    }
    let f = fixture();
    in_private_mount_ns(|| {
        let target = f.pod_dir.join("volume-subpaths/v/app/0");
        for (sub, kind) in REFUSED {
            let plan = plan_with(
                vec![],
                vec![mount(MountSource::Host(f.vol.clone()), Some(sub))],
            );
            let err = apply_volume_plan(&plan, &f.pod_dir).unwrap_err();
            check_refusal(&err, sub, kind, &f.vol);
            assert_eq!(mounts_on(&target), 0, "{sub}: nothing mounted");
        }
        // Mounted: a directory, a file, a missing path (created as a directory), each proven
        // by inode to be the one inside the volume. Binding over the previous one (a container
        // restart, or the subPath changed kind) leaves exactly one mount.
        for resolver in RESOLVERS {
            for sub in [
                "inner",
                "existing/file",
                "new/dir",
                "inner",
                "existing/file",
            ] {
                let sub_path = SubPath {
                    path: sub.into(),
                    bind: "volume-subpaths/v/app/0".into(),
                };
                let got = bind_sub_path(&f.vol, &sub_path, &f.pod_dir, FIELD, resolver)
                    .unwrap_or_else(|e| panic!("{resolver:?} {sub}: {e}"));
                assert_eq!(got, target);
                assert_eq!(inode(&got), inode(&f.vol.join(sub)), "{resolver:?} {sub}");
                assert_eq!(mounts_on(&target), 1, "{resolver:?} {sub}");
            }
        }
        assert!(f.vol.join("new/dir").is_dir());
        assert_eq!(mode(&f.vol.join("new/dir")), 0o750);

        // Through the plan: the CRI mount gets the private path; readOnly stays the CRI's.
        let mut planned = mount(MountSource::Host(f.vol.clone()), Some("existing"));
        planned.readonly = true;
        let applied = apply_volume_plan(&plan_with(vec![], vec![planned]), &f.pod_dir).unwrap();
        assert_eq!(applied.mounts[0].host_path, target.to_string_lossy());
        assert!(applied.mounts[0].readonly);
        assert_eq!(inode(&target), inode(&f.vol.join("existing")));

        // A stale bind of something else (the outside) is replaced, not stacked on.
        nix::mount::umount2(&target, MntFlags::MNT_DETACH).unwrap();
        nix::mount::mount(
            Some(&f.outside.join("dir")),
            &target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .unwrap();
        let applied = apply_volume_plan(
            &plan_with(
                vec![],
                vec![mount(MountSource::Host(f.vol.clone()), Some("inner"))],
            ),
            &f.pod_dir,
        )
        .unwrap();
        assert_eq!(applied.mounts[0].host_path, target.to_string_lossy());
        assert_eq!(inode(&target), inode(&f.vol.join("inner")));
        assert_eq!(mounts_on(&target), 1);

        // Removing the pod unmounts the binds first and never empties the volume through them.
        fs::write(f.vol.join("inner/keep"), "k").unwrap();
        cleanup_pod_dir(&f.pod_dir).unwrap();
        assert!(!f.pod_dir.exists());
        assert_eq!(mounts_on(&target), 0);
        assert_eq!(fs::read_to_string(f.vol.join("inner/keep")).unwrap(), "k");
        assert_eq!(
            fs::read_to_string(f.vol.join("existing/file")).unwrap(),
            "f"
        );
    });
}

#[test]
fn cleanup_unmounts_binds_without_following_symlinks() {
    if !kwk_tests::privileged_tests_enabled() {
        return;
    }
    let f = fixture();
    in_private_mount_ns(|| {
        // A mount reached only through a symlink in volume-subpaths stays: the cleanup refuses
        // to cross into it rather than unmount or empty it.
        let elsewhere = f.tmp.path().join("elsewhere");
        fs::create_dir_all(elsewhere.join("app/0")).unwrap();
        nix::mount::mount(
            Some(&f.vol.join("inner")),
            &elsewhere.join("app/0"),
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .unwrap();
        fs::create_dir_all(f.pod_dir.join("volume-subpaths")).unwrap();
        symlink(&elsewhere, f.pod_dir.join("volume-subpaths/v")).unwrap();
        fs::write(f.vol.join("inner/keep"), "k").unwrap();
        cleanup_pod_dir(&f.pod_dir).unwrap();
        assert!(!f.pod_dir.exists());
        assert_eq!(mounts_on(&elsewhere.join("app/0")), 1);
        assert_eq!(fs::read_to_string(f.vol.join("inner/keep")).unwrap(), "k");
    });
}

/// CVE-2017-1002101's shape: while the subPath `dir/leaf` is resolved and bind-mounted, another
/// thread keeps exchanging the directory `dir` with a symlink to a directory outside the volume.
/// Every bind either fails or shows the `leaf` inside the volume; never the outside one.
#[test]
fn a_component_swapped_for_a_symlink_never_redirects_the_bind() {
    if !kwk_tests::privileged_tests_enabled() {
        return;
    }
    const ATTEMPTS: usize = 500;
    for resolver in RESOLVERS {
        let f = fixture();
        fs::create_dir_all(f.vol.join("dir/leaf")).unwrap();
        fs::create_dir_all(f.outside.join("leaf")).unwrap();
        symlink(&f.outside, f.vol.join("swap")).unwrap();
        let inside = inode(&f.vol.join("dir/leaf"));
        let outside = inode(&f.outside.join("leaf"));
        let sub = SubPath {
            path: "dir/leaf".into(),
            bind: "volume-subpaths/v/app/0".into(),
        };
        let (mounted, refused, escaped) = in_private_mount_ns(|| {
            let stop = AtomicBool::new(false);
            let swaps = AtomicUsize::new(0);
            let counts = std::thread::scope(|scope| {
                scope.spawn(|| {
                    let exchange = || {
                        renameat2(
                            AT_FDCWD,
                            &f.vol.join("dir"),
                            AT_FDCWD,
                            &f.vol.join("swap"),
                            RenameFlags::RENAME_EXCHANGE,
                        )
                        .unwrap();
                        swaps.fetch_add(1, Ordering::Relaxed);
                    };
                    // Out and straight back, then a yield: the symlink is in place for short,
                    // frequent windows, and a preempted swapper leaves the directory in place
                    // (else a long stretch of refusals can starve the successes).
                    while !stop.load(Ordering::Relaxed) {
                        exchange();
                        exchange();
                        std::thread::yield_now();
                    }
                });
                // Stops the swapper however this thread leaves the scope.
                struct Stop<'a>(&'a AtomicBool);
                impl Drop for Stop<'_> {
                    fn drop(&mut self) {
                        self.0.store(true, Ordering::Relaxed);
                    }
                }
                let _stop = Stop(&stop);
                let (mut mounted, mut refused, mut escaped) = (0, 0, 0);
                let mut reasons = std::collections::BTreeMap::new();
                let mut seen = 0;
                for _ in 0..ATTEMPTS {
                    // Paced by the swapper: on a busy machine it may sit preempted for a
                    // while, and binds in that stretch would all see the same tree.
                    while swaps.load(Ordering::Relaxed) == seen {
                        std::thread::yield_now();
                    }
                    seen = swaps.load(Ordering::Relaxed);
                    match bind_sub_path(&f.vol, &sub, &f.pod_dir, FIELD, resolver) {
                        Ok(target) => {
                            let got = inode(&target);
                            if got == outside {
                                escaped += 1;
                            } else {
                                assert_eq!(got, inside, "{resolver:?}: mounted something else");
                                mounted += 1;
                            }
                        }
                        Err(err) => {
                            refused += 1;
                            let kind = match &err {
                                VolumeError::Io { source, .. } => format!("Io({source})"),
                                other => format!("{other:?}")
                                    .split(' ')
                                    .next()
                                    .unwrap_or("")
                                    .to_string(),
                            };
                            *reasons.entry(kind).or_insert(0usize) += 1;
                        }
                    }
                }
                (mounted, refused, escaped, reasons)
            });
            eprintln!(
                "{resolver:?}: {ATTEMPTS} binds under {} swaps: {} mounted inside, {} refused {:?}, {} escaped",
                swaps.load(Ordering::Relaxed),
                counts.0,
                counts.1,
                counts.3,
                counts.2
            );
            unmount_sub_paths(&f.pod_dir).unwrap();
            (counts.0, counts.1, counts.2)
        });
        assert_eq!(
            escaped, 0,
            "{resolver:?}: a bind showed the outside directory"
        );
        assert!(
            mounted >= 1,
            "{resolver:?}: no bind succeeded ({refused} refused)"
        );
        assert_eq!(fs::read_dir(f.outside.join("leaf")).unwrap().count(), 0);
    }
}
