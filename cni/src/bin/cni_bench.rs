//! `cni-bench`: ADD and DEL latency of `kwk-cni` against the reference `bridge` + `host-local`
//! plugins (`/usr/lib/cni`), same machine, same run, interleaved iteration by iteration.
//!
//! Needs root. Everything happens in throwaway network namespaces (`kwkb-*`, created with
//! `ip netns add` — the benchmark's own setup, not the plugin's), removed at the end.
//!
//! Usage: `cni-bench [--store-dir DIR] [ITERATIONS] [KWK_CNI_PATH] [REFERENCE_DIR]` (200, the
//! `kwk-cni` next to this binary, `/usr/lib/cni`). Timing covers the whole plugin process:
//! spawn, stdin, run, exit. Both plugins are spawned the same way (cleared environment, piped
//! stdio), get a fresh pod namespace in the same host namespace for every round, and keep their
//! allocations in the same place: a tmpfs private to the benchmark (kwk-cni's default `dataDir`
//! is under `/run`, a tmpfs on a standard host), or `--store-dir` (e.g. on disk, host-local's
//! habit). Each round also times `VERSION` of each (its process spawn floor), so the floors see
//! the same machine load as the calls.
//! Ship-like numbers come from the build as it ships, statically linked against musl:
//! `rustup target add x86_64-unknown-linux-musl && cargo build-cni` (an alias in
//! `.cargo/config.toml`) puts it and this benchmark in `target/x86_64-unknown-linux-musl/release/`. On a shared machine `nice -n -10` keeps other
//! builds' scheduling noise out; p10 shows what a quiet machine gives.

use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, setns, unshare};

/// Pause before each timed call (see the loop).
const SETTLE: Duration = Duration::from_millis(30);

/// A namespace created with `ip netns add`, deleted on drop.
struct NetNs {
    name: String,
}

impl NetNs {
    fn new(name: String) -> Result<Self, String> {
        let _ = ip(&["netns", "del", &name]);
        ip(&["netns", "add", &name])?;
        Ok(Self { name })
    }

    fn path(&self) -> String {
        format!("/run/netns/{}", self.name)
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.name]);
    }
}

fn ip(args: &[&str]) -> Result<(), String> {
    let status = Command::new("ip")
        .args(args)
        .stderr(Stdio::null())
        .status()
        .map_err(|err| format!("ip: {err}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("ip {args:?} failed"))
    }
}

/// The allocation directory of both plugins, removed on drop (also when the run fails).
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = umount2(&self.0, MntFlags::MNT_DETACH);
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A fresh directory for both plugins' allocations: on `dir` when given, else a tmpfs mounted
/// in a mount namespace of the benchmark's own (so nothing outside sees it, even after a crash).
fn allocation_store(dir: Option<&Path>) -> Result<(TempDir, &'static str), String> {
    let name = format!("kwkb-ipam-{}", std::process::id());
    let Some(dir) = dir else {
        let path = std::env::temp_dir().join(name);
        unshare(CloneFlags::CLONE_NEWNS).map_err(|err| format!("unshare: {err}"))?;
        mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_REC | MsFlags::MS_PRIVATE,
            None::<&str>,
        )
        .map_err(|err| format!("making mounts private: {err}"))?;
        std::fs::create_dir_all(&path).map_err(|err| format!("{}: {err}", path.display()))?;
        let store = TempDir(path);
        mount(
            Some("tmpfs"),
            &store.0,
            Some("tmpfs"),
            MsFlags::empty(),
            Some("mode=0700"),
        )
        .map_err(|err| format!("mounting a tmpfs: {err}"))?;
        return Ok((store, "tmpfs"));
    };
    let store = TempDir(dir.join(name));
    std::fs::create_dir_all(&store.0).map_err(|err| format!("{}: {err}", store.0.display()))?;
    Ok((store, "--store-dir"))
}

struct Plugin {
    label: &'static str,
    binary: PathBuf,
    config: String,
}

/// Runs one plugin command and returns its wall time; an error carries its stdout.
fn invoke(plugin: &Plugin, command: &str, id: &str, netns: &str) -> Result<Duration, String> {
    let started = Instant::now();
    let mut child = Command::new(&plugin.binary)
        .env_clear()
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", id)
        .env("CNI_NETNS", netns)
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", plugin.binary.parent().unwrap_or(Path::new("/")))
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|err| format!("{}: {err}", plugin.binary.display()))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A plugin may exit without reading its config (the reference's VERSION sometimes
        // does): its exit status decides, not the closed pipe.
        match stdin.write_all(plugin.config.as_bytes()) {
            Err(err) if err.kind() != std::io::ErrorKind::BrokenPipe => {
                return Err(format!("{} {command}: stdin: {err}", plugin.label));
            }
            _ => {}
        }
    }
    let out = child
        .wait_with_output()
        .map_err(|err| format!("wait: {err}"))?;
    let elapsed = started.elapsed();
    if !out.status.success() {
        return Err(format!(
            "{} {command}: {}{}",
            plugin.label,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(elapsed)
}

fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort();
    let rank = ((samples.len() as f64 - 1.0) * p).round() as usize;
    samples.get(rank).copied().unwrap_or_default()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Whether an ELF executable names a program interpreter (`PT_INTERP`), i.e. is dynamically
/// linked; `None` when it cannot be read as a 64-bit little-endian ELF file.
fn dynamically_linked(elf: &[u8]) -> Option<bool> {
    const PT_INTERP: u32 = 3;
    if elf.get(..6)? != b"\x7fELF\x02\x01" {
        return None;
    }
    let u16_at = |at: usize| Some(u16::from_le_bytes(elf.get(at..at + 2)?.try_into().ok()?));
    let phoff = usize::try_from(u64::from_le_bytes(elf.get(0x20..0x28)?.try_into().ok()?)).ok()?;
    let (phentsize, phnum) = (usize::from(u16_at(0x36)?), usize::from(u16_at(0x38)?));
    (0..phnum).try_fold(false, |found, i| {
        let at = phoff.checked_add(i.checked_mul(phentsize)?)?;
        let p_type = u32::from_le_bytes(elf.get(at..at + 4)?.try_into().ok()?);
        Some(found || p_type == PT_INTERP)
    })
}

fn linkage(binary: &Path) -> &'static str {
    match std::fs::read(binary)
        .ok()
        .as_deref()
        .and_then(dynamically_linked)
    {
        Some(true) => "dynamically linked",
        Some(false) => "statically linked",
        None => "linkage unknown",
    }
}

/// `ipMasq` is on for kwk-cni (as `node_conflist` renders it: one nftables table, checked on
/// every ADD) and off for the reference (its `ipMasq` runs `iptables` per container, which
/// would only flatter the comparison).
fn config(kind: &str, name: &str, bridge: &str, subnet: &str, data_dir: &Path) -> String {
    serde_json::json!({
        "ipMasq": kind == "kwk-cni",
        "cniVersion": "1.0.0",
        "name": name,
        "type": kind,
        "bridge": bridge,
        "isGateway": true,
        "isDefaultGateway": true,
        "hairpinMode": true,
        "mtu": 1500,
        "ipam": {"type": "host-local", "subnet": subnet, "dataDir": data_dir},
    })
    .to_string()
}

#[allow(
    clippy::disallowed_methods,
    reason = "a synchronous benchmark: sleeping between timed calls blocks nothing"
)]
fn run() -> Result<(), String> {
    let mut args: Vec<String> = std::env::args().collect();
    let store_dir = match args.iter().position(|arg| arg == "--store-dir") {
        Some(at) if at + 1 < args.len() => {
            let dir = PathBuf::from(args.remove(at + 1));
            args.remove(at);
            Some(dir)
        }
        Some(_) => return Err("--store-dir needs a directory".into()),
        None => None,
    };
    let iterations: usize = args.get(1).and_then(|n| n.parse().ok()).unwrap_or(200);
    let kwk = match args.get(2) {
        Some(path) => PathBuf::from(path),
        None => std::env::current_exe()
            .map_err(|err| err.to_string())?
            .with_file_name("kwk-cni"),
    };
    let reference_dir = PathBuf::from(args.get(3).map_or("/usr/lib/cni", String::as_str));
    if !nix::unistd::geteuid().is_root() {
        return Err("cni-bench needs root (network namespaces)".into());
    }
    let pid = std::process::id();
    let (data_dir, store_kind) = allocation_store(store_dir.as_deref())?;
    let store_line = format!(
        "  allocations of both in {} ({store_kind})",
        data_dir.0.display()
    );
    let mut plugins = vec![Plugin {
        label: "kwk-cni",
        binary: kwk,
        config: config(
            "kwk-cni",
            "bench-kwk",
            "kwkb0",
            "10.201.0.0/16",
            &data_dir.0,
        ),
    }];
    let reference = reference_dir.join("bridge");
    if reference.exists() && reference_dir.join("host-local").exists() {
        plugins.push(Plugin {
            label: "bridge+host-local",
            binary: reference,
            config: config("bridge", "bench-ref", "refb0", "10.202.0.0/16", &data_dir.0),
        });
    } else {
        println!(
            "reference plugins not found in {} (package containernetworking-plugins): kwk-cni only",
            reference_dir.display()
        );
    }

    let host = NetNs::new(format!("kwkb-host-{pid}"))?;
    // The plugins run in the bench's host namespace: children inherit this thread's namespace.
    let host_file = File::open(host.path()).map_err(|err| err.to_string())?;
    setns(&host_file, CloneFlags::CLONE_NEWNET).map_err(|err| format!("setns: {err}"))?;

    let mut add: Vec<Vec<Duration>> = vec![Vec::new(); plugins.len()];
    let mut del: Vec<Vec<Duration>> = vec![Vec::new(); plugins.len()];
    // The floor under every CNI call: spawning the plugin for VERSION (no netlink, no files).
    let mut floor: Vec<Vec<Duration>> = vec![Vec::new(); plugins.len()];
    // One warm-up round per plugin (page cache, bridge creation), not counted.
    for round in 0..=iterations {
        for (index, plugin) in plugins.iter().enumerate() {
            let pod = NetNs::new(format!("kwkb-pod-{pid}-{index}"))?;
            let id = format!("bench-{round}-{index}");
            // Let the kernel's deferred work (netns creation and teardown, the previous DEL's
            // unregister) settle so each call is timed on a quiet rtnl lock, for both plugins.
            std::thread::sleep(SETTLE);
            let add_time = invoke(plugin, "ADD", &id, &pod.path())?;
            std::thread::sleep(SETTLE);
            let del_time = invoke(plugin, "DEL", &id, &pod.path())?;
            std::thread::sleep(SETTLE);
            let floor_time = invoke(plugin, "VERSION", "", "")?;
            if round > 0 {
                add[index].push(add_time);
                del[index].push(del_time);
                floor[index].push(floor_time);
            }
        }
    }
    drop(host);
    drop(data_dir);

    println!(
        "CNI latency, {iterations} rounds, interleaved (ms, whole plugin process: spawn, stdin, run, exit)"
    );
    println!("{store_line}");
    for plugin in &plugins {
        println!(
            "  {:<18} {} ({})",
            plugin.label,
            plugin.binary.display(),
            linkage(&plugin.binary)
        );
    }
    println!(
        "{:<18} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}",
        "plugin", "ADD p10", "ADD p50", "ADD p90", "DEL p10", "DEL p50", "DEL p90", "VER p50"
    );
    let mut stats = Vec::new();
    for (index, plugin) in plugins.iter().enumerate() {
        let row = [
            percentile(&mut add[index], 0.1),
            percentile(&mut add[index], 0.5),
            percentile(&mut add[index], 0.9),
            percentile(&mut del[index], 0.1),
            percentile(&mut del[index], 0.5),
            percentile(&mut del[index], 0.9),
            percentile(&mut floor[index], 0.5),
        ];
        println!(
            "{:<18} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>8.2}",
            plugin.label,
            ms(row[0]),
            ms(row[1]),
            ms(row[2]),
            ms(row[3]),
            ms(row[4]),
            ms(row[5]),
            ms(row[6]),
        );
        stats.push(row);
    }
    println!("(VER: VERSION, the process spawn floor of each plugin)");
    if let [kwk, reference] = &stats[..] {
        let ratio = |at: usize| ms(reference[at]) / ms(kwk[at]);
        println!(
            "speed-up of kwk-cni (p50): ADD {:.1}x, DEL {:.1}x (goal >= 5x); at p10: ADD {:.1}x, DEL {:.1}x",
            ratio(1),
            ratio(4),
            ratio(0),
            ratio(3)
        );
        println!(
            "work that differs between the two (all of it inside the timed calls unless said):"
        );
        println!(
            "  - kwk-cni runs with ipMasq: ADD checks the node's `ip kwk-cni` nftables table (one chain\n    listing); the reference runs without (its ipMasq would run iptables per call)"
        );
        println!(
            "  - the reference runs host-local as a second process and writes per-interface sysctls\n    (accept_ra on the bridge and host veth, arp_notify and accept_dad on the pod interface);\n    kwk-cni allocates in-process and writes none of these"
        );
        println!(
            "  - kwk-cni creates single-queue veth pairs; the reference takes the kernel's default\n    (one queue per CPU allocated)"
        );
        println!(
            "  - DEL: the reference deletes the veth pair in the call (the kernel's unregister, ~17 ms);\n    kwk-cni takes it off the network and leaves the delete to a detached child, which\n    finishes during the pause before the next call"
        );
    }
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("cni-bench: {err}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ELF64 header with program headers of the given types.
    fn elf(types: &[u32]) -> Vec<u8> {
        let mut out = vec![0u8; 64];
        out[..6].copy_from_slice(b"\x7fELF\x02\x01");
        out[0x20..0x28].copy_from_slice(&64u64.to_le_bytes());
        out[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
        out[0x38..0x3a].copy_from_slice(&(types.len() as u16).to_le_bytes());
        for p_type in types {
            let mut header = vec![0u8; 56];
            header[..4].copy_from_slice(&p_type.to_le_bytes());
            out.extend(header);
        }
        out
    }

    #[test]
    fn linkage_is_read_from_the_program_headers() {
        assert_eq!(dynamically_linked(&elf(&[6, 3, 1, 2])), Some(true));
        assert_eq!(dynamically_linked(&elf(&[6, 1, 1, 2])), Some(false));
        assert_eq!(dynamically_linked(b"#!/bin/sh\n"), None);
        let mut cut = elf(&[1, 3]);
        cut.truncate(100);
        assert_eq!(dynamically_linked(&cut), None, "program headers cut short");
        let this = std::fs::read("/proc/self/exe").expect("own executable");
        assert!(dynamically_linked(&this).is_some());
    }
}
