//! What goes into the guest image, as data: the Debian packages, the files written into the
//! root file system (the boot-time runner and its unit among them), the units kept from starting
//! at boot, the initrd's `/init` and the kernel command line. All of it feeds [`recipe`], whose
//! hash names the cached image, so changing anything here rebuilds the image.

/// Debian release of the guest (the host's too).
pub(crate) const SUITE: &str = "bookworm";

/// Packages on top of debootstrap's `minbase` variant: init, the runtime (with the reference CNI
/// plugins in `/usr/lib/cni`, as on the host) and dataplane tools, the stock kernel, and the
/// busybox that the initrd runs.
pub(crate) const PACKAGES: &[&str] = &[
    "systemd",
    "systemd-sysv",
    "dbus",
    "udev",
    "kmod",
    "procps",
    "linux-image-amd64",
    "containerd",
    "runc",
    "containernetworking-plugins",
    "iproute2",
    "nftables",
    "iptables",
    "ipvsadm",
    "conntrack",
    "ca-certificates",
    "busybox-static",
];

/// Kernel modules the initrd loads to mount the root disk (their dependencies come along).
/// `crc32c_generic` is ext4's and jbd2's soft dependency; qemu64 has no SSE4.2 for the Intel one.
pub(crate) const INITRD_MODULES: &[&str] = &["virtio_pci", "virtio_blk", "crc32c_generic", "ext4"];

/// Units masked in the image: they slow boot or would act on the test's behalf (ipvsadm restores
/// saved rules; timers run apt and scrubs; gettys wait for a login nobody gives).
pub(crate) const MASKED_UNITS: &[&str] = &[
    "ipvsadm.service",
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "dpkg-db-backup.timer",
    "e2scrub_all.timer",
    "e2scrub_reap.service",
    "fstrim.timer",
    "systemd-networkd-wait-online.service",
    "getty@tty1.service",
    "serial-getty@ttyS0.service",
];

/// Units installed but not started at boot: tests start (and first configure) them.
pub(crate) const NOT_STARTED_AT_BOOT: &[&str] = &["containerd.service"];

/// The runner unit's name; enabled in `multi-user.target`.
pub(crate) const RUNNER_UNIT_NAME: &str = "kwk-vm-runner.service";

/// Label of the second ("io") disk's file system.
pub(crate) const IO_LABEL: &str = "kwk-io";

/// `Type=simple`: a oneshot unit would keep `systemctl is-system-running --wait` waiting for
/// itself. It needs the io disk, which is always the second virtio disk (`/dev/vdb`).
const RUNNER_UNIT: &str = r"[Unit]
Description=kwk VM test runner (script from the io disk, results back to it, then poweroff)
Requires=dev-vdb.device
After=dev-vdb.device

[Service]
Type=simple
ExecStart=/usr/local/sbin/kwk-vm-runner
StandardOutput=journal+console
StandardError=journal+console

[Install]
WantedBy=multi-user.target
";

/// The runner. Layout of the io disk: `in/script` (run with bash in strict mode), `in/files/`
/// (copied onto `/`), `in/fetch` (guest paths to copy back, one a line); results go to `out/`:
/// `system-state`, `failed-units`, `stdout`, `stderr`, `exit-code`, `files/<guest path>`,
/// `missing` (fetched paths that did not exist), `journal`.
const RUNNER_SCRIPT: &str = r#"#!/bin/sh
# kwk VM runner: waits for boot to settle, runs the test script from the io disk, copies results
# back to it and powers off. Built into the image by kwk-tests (tests/src/vm/guest.rs).
io=/run/kwk-io
out="$io/out"
finish() {
  cd / && sync && umount "$io"
  systemctl poweroff --no-block
  exit 0
}
mkdir -p "$io"
if ! mount -t ext4 /dev/vdb "$io"; then
  echo "kwk-vm-runner: cannot mount the io disk /dev/vdb"
  systemctl poweroff --no-block
  exit 1
fi
mkdir -p "$out/files"
timeout 300 systemctl is-system-running --wait >"$out/system-state" 2>&1
systemctl list-units --failed --plain --no-legend >"$out/failed-units" 2>&1
echo "kwk-vm-runner: system $(cat "$out/system-state"), running the test script"
if [ -d "$io/in/files" ]; then
  cp -a "$io/in/files/." / || echo "kwk-vm-runner: copying input files failed" >>"$out/runner-errors"
fi
mkdir -p /root/work
(cd /root/work && exec bash -eu -o pipefail "$io/in/script") </dev/null >"$out/stdout" 2>"$out/stderr"
echo "$?" >"$out/exit-code"
echo "kwk-vm-runner: test script exited $(cat "$out/exit-code")"
if [ -f "$io/in/fetch" ]; then
  while IFS= read -r path; do
    if [ -e "$path" ]; then
      mkdir -p "$out/files$(dirname "$path")"
      cp -a "$path" "$out/files$path"
    else
      echo "$path" >>"$out/missing"
    fi
  done <"$io/in/fetch"
fi
journalctl -b --no-pager -o short-monotonic >"$out/journal" 2>&1
finish
"#;

/// Files written into the root file system: (path, contents, mode).
pub(crate) fn files() -> Vec<(&'static str, &'static str, u32)> {
    vec![
        // Non-empty, or systemd stops at a first-boot prompt; each run overrides it on the
        // kernel command line (`systemd.machine_id=`).
        (
            "etc/machine-id",
            "6b776b766d00000000000000000000aa\n",
            0o444,
        ),
        ("etc/hostname", "kwk-vm\n", 0o644),
        (
            "etc/hosts",
            "127.0.0.1 localhost\n127.0.1.1 kwk-vm\n::1 localhost\n",
            0o644,
        ),
        // No fsck pass: the base is built fresh and every run writes to a throwaway overlay.
        ("etc/fstab", "/dev/vda / ext4 rw,noatime 0 0\n", 0o644),
        // The emulated CPU advertises SVM; loading kvm would only cost boot time.
        (
            "etc/modprobe.d/kwk-vm.conf",
            "blacklist kvm_amd\nblacklist kvm_intel\n",
            0o644,
        ),
        (
            "etc/systemd/system/kwk-vm-runner.service",
            RUNNER_UNIT,
            0o644,
        ),
        ("usr/local/sbin/kwk-vm-runner", RUNNER_SCRIPT, 0o755),
    ]
}

/// The initrd's `/init`: load `modules` (paths inside the initrd, in dependency order), wait
/// for the root disk, mount it and hand over to systemd.
pub(crate) fn init_script(modules: &[String]) -> String {
    let mut script = String::from(
        "#!/bin/busybox sh\n\
         # kwk VM initrd: only what mounting the root disk takes.\n\
         bb=/bin/busybox\n\
         $bb mkdir -p /proc /sys /dev /newroot\n\
         $bb mount -t devtmpfs devtmpfs /dev\n",
    );
    for module in modules {
        script.push_str(&format!(
            "$bb insmod /{module} || echo \"kwk initrd: insmod {module} failed\"\n"
        ));
    }
    script.push_str(
        "i=0\n\
         while [ ! -b /dev/vda ] && [ $i -lt 300 ]; do $bb sleep 0.1; i=$((i + 1)); done\n\
         if ! $bb mount -t ext4 -o rw /dev/vda /newroot; then\n\
         \x20 echo \"kwk initrd: cannot mount /dev/vda as root\"\n\
         \x20 $bb poweroff -f\n\
         fi\n\
         $bb umount /dev\n\
         exec $bb switch_root /newroot /sbin/init\n",
    );
    script
}

/// The kernel command line of one run. `panic=-1` turns a kernel panic into a reboot, which
/// `-no-reboot` turns into qemu exiting: a failed boot ends at once instead of at the timeout.
pub(crate) fn kernel_cmdline(machine_id: &str) -> String {
    format!("root=/dev/vda rw console=ttyS0 panic=-1 systemd.machine_id={machine_id}")
}

/// Everything that determines the image's contents, as text: its hash names the cache entry.
/// Bump the version on its first line when `image.rs`, `initrd.rs` or `kernel.rs` change what
/// they produce from the same inputs.
pub(crate) fn recipe() -> String {
    let mut recipe = format!(
        "kwk vm image v1\nsuite {SUITE}\nvariant minbase\npackages {}\ninitrd {}\nmasked {}\nnot started {}\n",
        PACKAGES.join(","),
        INITRD_MODULES.join(","),
        MASKED_UNITS.join(","),
        NOT_STARTED_AT_BOOT.join(","),
    );
    for (path, contents, mode) in files() {
        recipe.push_str(&format!("file {path} {mode:o}\n{contents}\n"));
    }
    recipe.push_str(&init_script(&["<modules>".into()]));
    recipe
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_loads_modules_in_the_given_order_before_mounting_root() {
        let script = init_script(&["a.ko".into(), "b.ko".into()]);
        let a = script.find("insmod /a.ko").unwrap();
        let b = script.find("insmod /b.ko").unwrap();
        let mount = script.find("/dev/vda /newroot").unwrap();
        assert!(a < b && b < mount, "{script}");
        assert!(script.ends_with("exec $bb switch_root /newroot /sbin/init\n"));
    }

    #[test]
    fn the_recipe_covers_packages_files_and_units() {
        let recipe = recipe();
        assert!(recipe.contains("linux-image-amd64"));
        assert!(recipe.contains(RUNNER_SCRIPT));
        assert!(recipe.contains("ipvsadm.service"));
        assert!(recipe.contains("containerd.service"));
    }

    #[test]
    fn the_runner_unit_is_simple_and_enabled_by_the_install_section() {
        assert!(RUNNER_UNIT.contains("Type=simple"));
        assert!(RUNNER_UNIT.contains("WantedBy=multi-user.target"));
        assert!(
            files()
                .iter()
                .any(|(path, _, _)| path.ends_with(RUNNER_UNIT_NAME))
        );
    }

    #[test]
    fn machine_id_reaches_the_command_line() {
        assert!(kernel_cmdline("0123").contains("systemd.machine_id=0123"));
    }
}
