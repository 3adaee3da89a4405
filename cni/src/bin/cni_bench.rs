//! `cni-bench`: ADD and DEL latency of `kwk-cni` against the reference `bridge` + `host-local`
//! plugins (`/usr/lib/cni`), same machine, same run, interleaved iteration by iteration.
//!
//! Needs root. Everything happens in throwaway network namespaces (`kwkb-*`, created with
//! `ip netns add` — the benchmark's own setup, not the plugin's), removed at the end.
//!
//! Usage: `cni-bench [ITERATIONS] [KWK_CNI_PATH] [REFERENCE_DIR]` (200, the `kwk-cni` next to this
//! binary, `/usr/lib/cni`). Timing covers the whole plugin process: spawn, stdin, run, exit.
//! Ship-like numbers come from the static build (`RUSTFLAGS='-C target-feature=+crt-static'
//! cargo build --release -p kwk-cni --target x86_64-unknown-linux-gnu`, path as the second
//! argument); on a shared machine `nice -n -10` keeps other builds' scheduling noise out.

use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use nix::sched::{CloneFlags, setns};

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
        let _ = std::fs::remove_dir_all(&self.0);
    }
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
        stdin
            .write_all(plugin.config.as_bytes())
            .map_err(|err| format!("stdin: {err}"))?;
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
    let args: Vec<String> = std::env::args().collect();
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
    let data_dir = TempDir(std::env::temp_dir().join(format!("kwkb-ipam-{pid}")));
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
            if round > 0 {
                add[index].push(add_time);
                del[index].push(del_time);
            }
        }
    }
    // The floor under every CNI call: spawning the plugin for VERSION (no netlink, no files).
    let mut floor: Vec<Duration> = (0..iterations)
        .map(|_| invoke(&plugins[0], "VERSION", "", ""))
        .collect::<Result<_, _>>()?;
    drop(host);
    drop(data_dir);

    println!("CNI latency, {iterations} iterations each, interleaved (ms, whole plugin process)");
    println!(
        "{:<20} {:>9} {:>9} {:>9} {:>9}",
        "plugin", "ADD p50", "ADD p90", "DEL p50", "DEL p90"
    );
    let mut p50s = Vec::new();
    for (index, plugin) in plugins.iter().enumerate() {
        let add_p50 = percentile(&mut add[index], 0.5);
        let del_p50 = percentile(&mut del[index], 0.5);
        println!(
            "{:<20} {:>9.2} {:>9.2} {:>9.2} {:>9.2}",
            plugin.label,
            ms(add_p50),
            ms(percentile(&mut add[index], 0.9)),
            ms(del_p50),
            ms(percentile(&mut del[index], 0.9)),
        );
        p50s.push((add_p50, del_p50));
    }
    println!(
        "{:<20} {:>9.2}   (process spawn floor: kwk-cni VERSION, p50)",
        "spawn floor",
        ms(percentile(&mut floor, 0.5))
    );
    if let [(kwk_add, kwk_del), (ref_add, ref_del)] = p50s[..] {
        println!(
            "speed-up of kwk-cni (p50): ADD {:.1}x, DEL {:.1}x (goal >= 5x)",
            ms(ref_add) / ms(kwk_add),
            ms(ref_del) / ms(kwk_del)
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
