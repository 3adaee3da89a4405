//! The VM tier works end to end: the guest boots to `running` under systemd with cgroup v2 and
//! can load `ip_vs`; files travel in (content and mode) and out; containerd starts under
//! systemd and answers; a run past its timeout is killed. Each test is one boot (~10 s idle; the
//! first also builds the image, ~90 s).

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context as _;
use kwk_tests::images::test_images;
use kwk_tests::vm::{Vm, vm_tests_enabled};

/// `key=value` lines of the script's stdout.
fn facts(stdout: &str) -> BTreeMap<String, String> {
    stdout
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

#[test]
fn guest_boots_systemd_with_cgroup_v2_and_loads_ip_vs() -> anyhow::Result<()> {
    if !vm_tests_enabled() {
        return Ok(());
    }
    let out = Vm::builder()
        .script(
            r#"
echo "pid1=$(cat /proc/1/comm)"
echo "state=$(systemctl is-system-running)"
echo "cgroup_fs=$(stat -f -c %T /sys/fs/cgroup)"
echo "controllers=$(cat /sys/fs/cgroup/cgroup.controllers)"
echo "kernel=$(uname -r)"
echo "machine_id=$(cat /etc/machine-id)"
modprobe ip_vs
echo "ip_vs_loaded=$(grep -c '^ip_vs ' /proc/modules)"
ipvsadm -A -t 10.96.0.1:80 -s rr
ipvsadm -a -t 10.96.0.1:80 -r 10.0.0.2:8080 -m
echo "ipvs_services=$(ipvsadm -Ln | grep -c '^TCP')"
echo "cni_bridge=$(test -x /usr/lib/cni/bridge && echo yes)"
"#,
        )
        .timeout(Duration::from_secs(300))
        .run()?
        .success()?;
    eprintln!("boot to poweroff: {:.1} s", out.wall_time.as_secs_f64());
    let facts = facts(&out.stdout);
    let diagnostics = || out.diagnostics();
    assert_eq!(
        out.system_state,
        "running",
        "boot did not settle cleanly:\n{}",
        diagnostics()
    );
    assert_eq!(facts["pid1"], "systemd", "{}", diagnostics());
    assert_eq!(facts["state"], "running", "{}", diagnostics());
    assert_eq!(facts["cgroup_fs"], "cgroup2fs", "{}", diagnostics());
    for controller in ["cpu", "memory", "pids", "io"] {
        assert!(
            facts["controllers"].split(' ').any(|c| c == controller),
            "controller {controller} missing from {:?}",
            facts["controllers"]
        );
    }
    assert_eq!(facts["machine_id"], out.machine_id, "per-run machine ID");
    assert_eq!(facts["ip_vs_loaded"], "1", "{}", diagnostics());
    assert_eq!(facts["ipvs_services"], "1", "{}", diagnostics());
    assert_eq!(
        facts["cni_bridge"], "yes",
        "the reference CNI plugins are installed"
    );
    Ok(())
}

#[test]
fn files_go_in_with_their_mode_and_come_back_out_even_when_the_script_fails() -> anyhow::Result<()>
{
    if !vm_tests_enabled() {
        return Ok(());
    }
    let host_dir = std::env::temp_dir().join(format!("kwk-vm-files-{}", std::process::id()));
    std::fs::create_dir_all(&host_dir)?;
    let payload: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let host_file = host_dir.join("payload.bin");
    std::fs::write(&host_file, &payload)?;

    let result = Vm::builder()
        .file(&host_file, "/opt/kwk/payload.bin")
        .file_contents(
            "/usr/local/bin/kwk-hello",
            "#!/bin/sh\necho \"hello from $(hostname)\"\n",
            0o755,
        )
        .script(
            r#"
mkdir -p /var/tmp/results/nested
sha256sum /opt/kwk/payload.bin | cut -d' ' -f1 > /var/tmp/results/payload.sha256
kwk-hello > /var/tmp/results/nested/hello.txt
stat -c %a /usr/local/bin/kwk-hello > /var/tmp/results/mode
cp /opt/kwk/payload.bin /var/tmp/results/payload.copy
echo "to stderr" >&2
echo "before the failure"
false
echo "not reached"
"#,
        )
        .fetch("/var/tmp/results")
        .fetch("/etc/hostname")
        .fetch("/does/not/exist")
        .run();
    std::fs::remove_dir_all(&host_dir)?;
    let out = result?;

    assert_eq!(out.exit_code, 1, "{}", out.diagnostics());
    assert_eq!(
        out.stdout, "before the failure\n",
        "bash -e stops at `false`"
    );
    assert_eq!(out.stderr.trim(), "to stderr");
    let err = out.clone().success().unwrap_err().to_string();
    assert!(
        err.contains("exited 1") && err.contains("to stderr"),
        "{err}"
    );

    let text = |path: &str| -> anyhow::Result<String> {
        let bytes = out.file(path).with_context(|| {
            let fetched: Vec<&str> = out.fetched().collect();
            format!("{path} not fetched; got {fetched:?}")
        })?;
        Ok(String::from_utf8_lossy(bytes).trim().to_owned())
    };
    let expected_hash = {
        use sha2::Digest as _;
        hex::encode(sha2::Sha256::digest(&payload))
    };
    assert_eq!(text("/var/tmp/results/payload.sha256")?, expected_hash);
    assert_eq!(
        out.file("/var/tmp/results/payload.copy"),
        Some(payload.as_slice())
    );
    assert_eq!(
        text("/var/tmp/results/nested/hello.txt")?,
        "hello from kwk-vm"
    );
    assert_eq!(text("/var/tmp/results/mode")?, "755");
    assert_eq!(text("/etc/hostname")?, "kwk-vm");
    assert_eq!(out.missing, ["/does/not/exist"]);
    Ok(())
}

/// containerd as the systemd cgroup driver needs it: a systemd unit of its own, and with
/// `SystemdCgroup = true` containers in systemd scopes, here with our offline-built images.
#[test]
fn containerd_runs_our_image_with_the_systemd_cgroup_driver() -> anyhow::Result<()> {
    if !vm_tests_enabled() {
        return Ok(());
    }
    let images = test_images()?;
    let out = Vm::builder()
        .file(&images.pause_archive, "/var/lib/kwk-images/pause.tar")
        .file(&images.busybox_archive, "/var/lib/kwk-images/busybox.tar")
        .script(&format!(
            r#"
mkdir -p /etc/containerd
containerd config default > /etc/containerd/config.toml
sed -i 's/SystemdCgroup = false/SystemdCgroup = true/' /etc/containerd/config.toml
echo "systemd_cgroup_lines=$(grep -c 'SystemdCgroup = true' /etc/containerd/config.toml)"
systemctl start containerd
echo "active=$(systemctl is-active containerd)"
echo "containerd_cgroup=$(cat /proc/$(systemctl show -p MainPID --value containerd)/cgroup)"
echo "version=$(ctr version | sed -n 's/^ *Version: *//p' | tail -n 1)"
for archive in /var/lib/kwk-images/*.tar; do ctr -n k8s.io images import "$archive" >/dev/null; done
echo "images=$(ctr -n k8s.io images ls -q | grep -v '^sha256:' | sort | tr '\n' ' ')"
echo "container_cgroup=$(ctr -n k8s.io run --rm --runc-systemd-cgroup \
  --cgroup system.slice:kwk:probe {busybox} probe cat /proc/self/cgroup)"
"#,
            busybox = images.busybox_reference,
        ))
        .run()?
        .success()?;
    let facts = facts(&out.stdout);
    let diagnostics = || out.diagnostics();
    assert_eq!(facts["systemd_cgroup_lines"], "1", "{}", diagnostics());
    assert_eq!(facts["active"], "active", "{}", diagnostics());
    assert_eq!(
        facts["containerd_cgroup"], "0::/system.slice/containerd.service",
        "containerd runs in its unit's cgroup (v2)"
    );
    assert!(
        facts["version"].contains("1.6"),
        "{:?}\n{}",
        facts["version"],
        diagnostics()
    );
    for reference in [&images.pause_reference, &images.busybox_reference] {
        assert!(
            facts["images"].split(' ').any(|i| i == reference.as_str()),
            "{reference} not imported: {:?}",
            facts["images"]
        );
    }
    assert_eq!(
        facts["container_cgroup"],
        "0::/system.slice/kwk-probe.scope",
        "the container is in a systemd scope:\n{}",
        diagnostics()
    );
    Ok(())
}

#[test]
fn a_run_past_its_timeout_is_killed_and_reports_the_serial_console() -> anyhow::Result<()> {
    if !vm_tests_enabled() {
        return Ok(());
    }
    // qemu is killed and waited for before `run` returns the error.
    let err = Vm::builder()
        .script("sleep 600")
        .timeout(Duration::from_secs(8))
        .run()
        .expect_err("the script outlives the timeout");
    let message = format!("{err:#}");
    assert!(message.contains("did not power off within 8s"), "{message}");
    // The whole serial log is kept, and the kernel prints its banner first thing.
    let kept = message
        .split("whole log: ")
        .nth(1)
        .and_then(|rest| rest.split_once("):"))
        .map(|(path, _)| path.to_owned())
        .with_context(|| format!("no kept serial log named in: {message}"))?;
    let serial = std::fs::read_to_string(&kept).with_context(|| format!("reading {kept}"))?;
    assert!(serial.contains("Linux version"), "{serial}");
    std::fs::remove_file(&kept)?;
    Ok(())
}
