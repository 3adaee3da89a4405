//! One VM run: [`Vm::builder`] collects the script, the files to send and the paths to fetch;
//! [`VmBuilder::run`] takes the machine-wide VM lock, gives the run a qcow2 overlay over the
//! cached root disk and an io disk, boots qemu (serial console to a log file), enforces a hard
//! timeout, and reads the results back. The run's directory is removed afterwards, also on
//! failure or panic; a failed run's serial log is kept under `<vm dir>/logs/`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context as _, bail};
use sha2::{Digest as _, Sha256};

use super::disk::{self, Ext4};
use super::image::{GuestImage, guest_image};
use super::io::{self, Inputs, Source};
use super::{guest, lock_exclusive, tools, vm_dir};
use crate::cleanup;

/// Entry point of the run API.
#[derive(Debug)]
pub struct Vm;

impl Vm {
    pub fn builder() -> VmBuilder {
        VmBuilder {
            inputs: Inputs::default(),
            timeout: Duration::from_secs(300),
            memory_mib: 1024,
            io_space_mib: 256,
        }
    }
}

/// What to run in the guest and what to bring back.
#[derive(Debug, Clone)]
pub struct VmBuilder {
    inputs: Inputs,
    timeout: Duration,
    memory_mib: u32,
    io_space_mib: u64,
}

impl VmBuilder {
    /// The test script, run by `bash -eu -o pipefail` in `/root/work` once the system finished
    /// booting (`systemctl is-system-running --wait` returned). Its stdout, stderr and exit
    /// code come back in [`VmOutput`].
    pub fn script(mut self, script: &str) -> Self {
        self.inputs.script = script.to_owned();
        self
    }

    /// Places the host file `host` at `guest` (absolute) before the script runs; its mode is
    /// kept, its owner becomes root.
    pub fn file(mut self, host: impl AsRef<Path>, guest: &str) -> Self {
        self.inputs
            .files
            .push((Source::Host(host.as_ref().to_owned()), guest.to_owned()));
        self
    }

    /// Places a file with `contents` and `mode` at `guest` before the script runs.
    pub fn file_contents(mut self, guest: &str, contents: impl Into<Vec<u8>>, mode: u32) -> Self {
        let data = contents.into();
        self.inputs
            .files
            .push((Source::Bytes { data, mode }, guest.to_owned()));
        self
    }

    /// Copies `guest` (a file or a directory tree) back after the script ran, exited well or
    /// not; read it with [`VmOutput::file`].
    pub fn fetch(mut self, guest: &str) -> Self {
        self.inputs.fetch.push(guest.to_owned());
        self
    }

    /// Hard limit for the whole run, boot to poweroff (default 300 s); qemu is killed after it.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Guest memory (default 1024 MiB).
    pub fn memory_mib(mut self, mib: u32) -> Self {
        self.memory_mib = mib;
        self
    }

    /// Free space on the io disk for fetched files (default 256 MiB).
    pub fn io_space_mib(mut self, mib: u64) -> Self {
        self.io_space_mib = mib;
        self
    }

    /// Boots the VM, runs the script, powers off. `Ok` when the script ran to its end (whatever
    /// its exit code); an error, with the serial console's tail, when the guest did not boot, did
    /// not finish in time or qemu failed.
    pub fn run(self) -> anyhow::Result<VmOutput> {
        for (_, guest) in &self.inputs.files {
            io::check_guest_path(guest)?;
        }
        for guest in &self.inputs.fetch {
            io::check_guest_path(guest)?;
        }
        let image = guest_image()?;
        let root = vm_dir();
        let _one_vm = lock_exclusive(&root.join("run.lock"))?;
        kill_stale_qemu(&root.join("qemu.pid"));
        let run = RunDir::create(&root)?;
        self.run_in(image, &run, &root)
    }

    fn run_in(&self, image: &GuestImage, run: &RunDir, root: &Path) -> anyhow::Result<VmOutput> {
        let staged = io::stage(&run.path("io"), &self.inputs)?;
        disk::mkfs_ext4(
            &run.path("io"),
            &run.path("io.img"),
            Ext4 {
                label: guest::IO_LABEL,
                size_bytes: staged + staged / 8 + (self.io_space_mib + 16) * (1 << 20),
                journal: false,
            },
        )?;
        disk::overlay(&image.root_disk(), &run.path("root.qcow2"))?;
        let machine_id = machine_id();
        let started = Instant::now();
        let mut qemu = Qemu::spawn(
            self.qemu_command(image, run, &machine_id)?,
            &root.join("qemu.pid"),
        )?;
        let status = qemu.wait(self.timeout)?;
        let wall_time = started.elapsed();
        let serial = std::fs::read_to_string(run.path("serial.log")).unwrap_or_default();
        let qemu_log = std::fs::read_to_string(run.path("qemu.log")).unwrap_or_default();
        let context = || failure_context(&serial, &qemu_log, run, root);
        let Some(status) = status else {
            bail!(
                "the VM did not power off within {:?}{}",
                self.timeout,
                context()
            );
        };
        disk::read_out(&run.path("io.img"), "/out", &run.path("results"))
            .with_context(|| format!("qemu exited ({status}){}", context()))?;
        let outputs = io::collect(&run.path("results/out"))?;
        let Some(exit_code) = outputs.exit_code else {
            bail!(
                "the VM stopped (qemu {status}) without running the test script to its end \
                 (system state {:?}){}",
                outputs.system_state,
                context()
            );
        };
        Ok(VmOutput {
            exit_code,
            stdout: outputs.stdout,
            stderr: outputs.stderr,
            system_state: outputs.system_state,
            failed_units: outputs.failed_units,
            journal: outputs.journal,
            serial,
            missing: outputs.missing,
            files: outputs.files,
            machine_id,
            wall_time,
            runner_errors: outputs.runner_errors,
        })
    }

    fn qemu_command(
        &self,
        image: &GuestImage,
        run: &RunDir,
        machine_id: &str,
    ) -> anyhow::Result<Command> {
        let mut cmd = tools::command(tools::QEMU)?;
        cmd.args(["-name", &format!("kwk-vm-{machine_id}")])
            .args(["-accel", "tcg", "-cpu", "qemu64", "-machine", "q35"])
            .args(["-smp", "2", "-m", &self.memory_mib.to_string()])
            .args(["-nodefaults", "-no-reboot", "-display", "none"])
            .args(["-monitor", "none", "-nic", "none"])
            .arg("-chardev")
            .arg(format!(
                "file,id=serial,path={}",
                qemu_path(&run.path("serial.log"))
            ))
            .args(["-serial", "chardev:serial"])
            .arg("-kernel")
            .arg(image.vmlinux())
            .arg("-initrd")
            .arg(image.initrd())
            .arg("-append")
            .arg(guest::kernel_cmdline(machine_id))
            // The overlay is thrown away: no need to flush it.
            .arg("-drive")
            .arg(format!(
                "file={},format=qcow2,if=virtio,cache=unsafe",
                qemu_path(&run.path("root.qcow2"))
            ))
            .arg("-drive")
            .arg(format!(
                "file={},format=raw,if=virtio",
                qemu_path(&run.path("io.img"))
            ));
        let log = std::fs::File::create(run.path("qemu.log"))?;
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        Ok(cmd)
    }
}

/// What a run produced.
#[derive(Debug, Clone)]
pub struct VmOutput {
    /// The test script's exit code.
    pub exit_code: i32,
    pub stdout: String,
    pub stderr: String,
    /// What `systemctl is-system-running --wait` said before the script ran.
    pub system_state: String,
    /// `systemctl list-units --failed` at that moment.
    pub failed_units: String,
    /// The guest's journal of this boot (`journalctl -b`), taken after the script.
    pub journal: String,
    /// The serial console: kernel messages and systemd's status lines.
    pub serial: String,
    /// Fetched paths that did not exist in the guest.
    pub missing: Vec<String>,
    /// The machine ID this run's guest was given.
    pub machine_id: String,
    /// qemu start to exit: boot, script, poweroff.
    pub wall_time: Duration,
    runner_errors: String,
    files: BTreeMap<String, Vec<u8>>,
}

impl VmOutput {
    /// A fetched file by its guest path (a fetched directory's files are listed one by one).
    pub fn file(&self, guest: &str) -> Option<&[u8]> {
        self.files.get(guest).map(Vec::as_slice)
    }

    /// The guest paths of all fetched files.
    pub fn fetched(&self) -> impl Iterator<Item = &str> {
        self.files.keys().map(String::as_str)
    }

    /// `Ok(self)` when the script exited 0, else an error carrying [`VmOutput::diagnostics`].
    pub fn success(self) -> anyhow::Result<Self> {
        if self.exit_code == 0 && self.runner_errors.is_empty() {
            return Ok(self);
        }
        bail!(
            "the guest script exited {}\n{}",
            self.exit_code,
            self.diagnostics()
        )
    }

    /// The script's output, failed units, and the tails of journal and serial console.
    pub fn diagnostics(&self) -> String {
        format!(
            "--- system state: {} (wall time {:.1} s)\n--- failed units:\n{}\n{}\
             --- stdout:\n{}\n--- stderr:\n{}\n--- journal (tail):\n{}\n--- serial (tail):\n{}",
            self.system_state,
            self.wall_time.as_secs_f64(),
            self.failed_units,
            if self.runner_errors.is_empty() {
                String::new()
            } else {
                format!("--- runner errors:\n{}\n", self.runner_errors)
            },
            tools::tail(&self.stdout, 40),
            tools::tail(&self.stderr, 40),
            tools::tail(&self.journal, 40),
            tools::tail(&plain_text(&self.serial), 30),
        )
    }
}

/// A qemu process, killed on drop.
struct Qemu {
    child: Child,
    pidfile: PathBuf,
}

impl Qemu {
    fn spawn(mut cmd: Command, pidfile: &Path) -> anyhow::Result<Self> {
        let child = cmd.spawn().context("starting qemu")?;
        std::fs::write(pidfile, child.id().to_string())?;
        Ok(Self {
            child,
            pidfile: pidfile.to_owned(),
        })
    }

    /// Waits for qemu to exit; `None` if `timeout` passed first (qemu is then killed).
    fn wait(&mut self, timeout: Duration) -> anyhow::Result<Option<ExitStatus>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(Some(status));
            }
            if Instant::now() >= deadline {
                self.child.kill()?;
                self.child.wait()?;
                return Ok(None);
            }
            pause(Duration::from_millis(100));
        }
    }
}

impl Drop for Qemu {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let _ = std::fs::remove_file(&self.pidfile);
    }
}

/// A qemu whose test process died (the lock it held is free again, so nobody owns it): kill it.
fn kill_stale_qemu(pidfile: &Path) {
    let Ok(pid) = std::fs::read_to_string(pidfile) else {
        return;
    };
    if let Ok(pid) = pid.trim().parse::<u32>() {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains("kwk-vm-") {
            eprintln!("kwk vm: killing qemu {pid} left by a test process that died");
            cleanup::stop_process(pid, Duration::from_secs(1));
        }
    }
    let _ = std::fs::remove_file(pidfile);
}

/// The directory of one run (`<vm dir>/runs/<pid>-<n>`), removed on drop.
struct RunDir {
    dir: PathBuf,
}

impl RunDir {
    /// Creates this run's directory. Called with the VM lock held, so any other run directory
    /// is a leftover of a test process that died: those are removed first.
    fn create(root: &Path) -> anyhow::Result<Self> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let runs = root.join("runs");
        for entry in std::fs::read_dir(&runs).into_iter().flatten().flatten() {
            if let Some(problem) = cleanup::remove_dir(&entry.path()) {
                eprintln!("warning: kwk vm: {problem}");
            }
        }
        let id = format!(
            "{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let dir = runs.join(id);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Self { dir })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Copies the serial log to `logs/<run id>.serial.log` (it outlives the run directory).
    fn kept_serial_log(&self, logs: &Path) -> PathBuf {
        let name = self.dir.file_name().unwrap_or_default().to_string_lossy();
        let kept = logs.join(format!("{name}.serial.log"));
        let _ = std::fs::create_dir_all(logs);
        let _ = std::fs::copy(self.path("serial.log"), &kept);
        kept
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        if std::env::var_os("KWK_VM_KEEP").is_some() {
            let kept = self.dir.parent().and_then(Path::parent).map(|root| {
                root.join("kept")
                    .join(self.dir.file_name().unwrap_or_default())
            });
            if let Some(kept) = kept
                && std::fs::create_dir_all(kept.parent().unwrap_or(&kept)).is_ok()
                && std::fs::rename(&self.dir, &kept).is_ok()
            {
                eprintln!("kwk vm: KWK_VM_KEEP is set, run kept in {}", kept.display());
                return;
            }
        }
        if let Some(problem) = cleanup::remove_dir(&self.dir) {
            eprintln!("warning: kwk vm: {problem}");
        }
    }
}

/// Serial and qemu log tails for an error message, and where the whole serial log is kept.
fn failure_context(serial: &str, qemu_log: &str, run: &RunDir, root: &Path) -> String {
    let tail = if serial.trim().is_empty() {
        "(empty: the kernel never printed, so it did not start; too little memory for the \
         vmlinux and initrd, or a broken image)"
            .to_owned()
    } else {
        tools::tail(&plain_text(serial), 60)
    };
    let mut text = format!(
        "\n--- serial console (tail; whole log: {}):\n{tail}",
        run.kept_serial_log(&root.join("logs")).display(),
    );
    if !qemu_log.trim().is_empty() {
        text.push_str(&format!("\n--- qemu:\n{}", tools::tail(qemu_log, 20)));
    }
    text
}

/// Console text without colour escapes (`ESC [ ... m`) and carriage returns.
fn plain_text(console: &str) -> String {
    let mut out = String::with_capacity(console.len());
    let mut chars = console.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' if chars.peek() == Some(&'[') => {
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            '\r' => {}
            c => out.push(c),
        }
    }
    out
}

/// qemu option values separate on commas; a literal comma is written twice.
fn qemu_path(path: &Path) -> String {
    path.to_string_lossy().replace(',', ",,")
}

/// 32 hex digits, unique per run.
fn machine_id() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let seed = format!(
        "{}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed),
        now.as_nanos()
    );
    hex::encode(Sha256::digest(seed.as_bytes()))[..32].to_owned()
}

#[allow(
    clippy::disallowed_methods,
    reason = "the run API is synchronous: it waits on qemu from a plain test thread"
)]
fn pause(duration: Duration) {
    std::thread::sleep(duration);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machine_ids_are_32_hex_digits_and_differ() {
        let (a, b) = (machine_id(), machine_id());
        assert_eq!(a.len(), 32);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }

    #[test]
    fn console_colours_and_carriage_returns_are_dropped() {
        let console = "[\u{1b}[0;32m  OK  \u{1b}[0m] Started \u{1b}[0;1;39mfoo\u{1b}[0m.\r\n";
        assert_eq!(plain_text(console), "[  OK  ] Started foo.\n");
    }

    #[test]
    fn commas_in_qemu_paths_are_doubled() {
        assert_eq!(qemu_path(Path::new("/a,b/c")), "/a,,b/c");
    }

    #[test]
    fn bad_guest_paths_fail_before_anything_boots() {
        let err = Vm::builder()
            .file("/etc/hostname", "relative/path")
            .run()
            .unwrap_err()
            .to_string();
        assert!(err.contains("not absolute"), "{err}");
    }
}
