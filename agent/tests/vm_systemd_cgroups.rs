//! kwk-node's systemd cgroup driver against real systemd (Debian 12: systemd 252, cgroup v2), in
//! the VM tier. One boot: containerd with `SystemdCgroup = true`, kwk-node as a transient
//! `systemd-run` unit with `cgroupDriver: systemd` and `podPidsLimit: 256`, three static pods
//! (Burstable, Guaranteed, and Guaranteed at 15m CPU). Checked, from `systemctl show` and the
//! cgroup files:
//!
//! - the node and QoS slices (`kubepods.slice` limited to node allocatable, the burstable and
//!   besteffort slices) are transient, without default dependencies, nested as named; the
//!   burstable slice weighted by its pods' CPU requests (and back to the minimum once they go);
//! - each pod slice sits where upstream's naming puts it, with the CPU weight, CFS quota (per
//!   second, rounded up to 10 ms for systemd), memory and pids limits of the pod, and holds the
//!   runtime's container scopes;
//! - a kwk-node restart (with a changed `systemReserved`) adopts the slices: same
//!   `ActiveEnterTimestamp`, same containers, node slice updated in place;
//! - limits survive a `systemctl daemon-reload`;
//! - a deleted manifest's pod slice is stopped (`LoadState=not-found`) and its cgroup is gone.
//!
//! The guest script prints `phase|unit|property=value` facts; every mismatch is collected and
//! reported at once with kwk-node's journal. Run time: one boot, ~80 s on an idle 2-core host
//! (pods start ~45 s into the script under software emulation).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use kwk_tests::config::{Layout, containerd_toml, reference_conflist};
use kwk_tests::images::test_images;
use kwk_tests::vm::{Vm, VmOutput, vm_tests_enabled};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_kwk-node");
/// The guest's host name, which kwk-node takes as the node name (static pods: `<name>-kwk-vm`).
const NODE: &str = "kwk-vm";
/// containerd's directory in the guest (config, socket, state, CNI).
const CONTAINERD_DIR: &str = "/var/lib/kwkc";
const RESULTS: &str = "/var/tmp/kwk";
const MIB: u64 = 1 << 20;
/// `systemReserved` memory before and after the restart.
const RESERVED_BEFORE_MIB: u64 = 256;
const RESERVED_AFTER_MIB: u64 = 384;

/// The guest script. Phases: `run` (all pods up), `restarted` (kwk-node stopped, config
/// changed, started again), `deleted` (after `daemon-reload`, one manifest removed).
const SCRIPT: &str = r#"
R=/var/tmp/kwk
SOCK=/var/lib/kwkc/c.sock
API=/run/kwk/node.sock
PROPS=LoadState,ActiveState,Transient,DefaultDependencies,Slice,Wants,After,CPUWeight,CPUQuotaPerSecUSec,CPUQuotaPeriodUSec,MemoryMax,TasksMax,ActiveEnterTimestampMonotonic,ControlGroup
mkdir -p "$R"
: >"$R/units"
: >"$R/cgroups"
log() { echo "[${SECONDS}s] $*" >&2; }
save_journal() { journalctl -u kwk-node --no-pager -o short-monotonic >"$R/kwk-node.journal" 2>&1 || true; }
trap save_journal EXIT

echo "nproc=$(nproc)"
echo "memtotal_kib=$(awk '/^MemTotal:/ {print $2}' /proc/meminfo)"
echo "systemd_version=$(systemctl --version | awk 'NR == 1 {print $2}')"
echo "cgroup_fs=$(stat -f -c %T /sys/fs/cgroup)"

systemctl start containerd
for archive in /var/lib/kwk-images/*.tar; do
  ctr --address "$SOCK" -n k8s.io images import "$archive" >/dev/null
done
log "containerd up, images imported"

node_pods() { kwk-node pods --local-api-socket "$API" "$@" 2>/dev/null; }
node_up() { node_pods >/dev/null; }
pods_running() { [ "$(node_pods | awk '$2 == "1/1" && $3 == "Running"' | wc -l)" -eq "$1" ]; }
start_node() {
  systemd-run --quiet --unit=kwk-node --collect --setenv=RUST_LOG=info,kwk_agent=debug \
    /usr/local/bin/kwk-node --config /etc/kwk/kubelet.yaml --root-dir /var/lib/kwk \
    --hostname-override kwk-vm --local-api-socket "$API" --image-dir /var/lib/kwk/images
}
wait_until() {
  local limit=$1 what=$2 deadline=$((SECONDS + $1))
  shift 2
  until "$@"; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      log "gave up after ${limit}s: $what"
      return 1
    fi
    sleep 1
  done
  log "$what"
}
fail() {
  log "FAILED: $*"
  node_pods >&2 || true
  systemctl list-units --all --plain --no-legend 'kubepods*' 'cri-containerd-*' 'kwk-node*' >&2 || true
  exit 1
}
# Every kubepods slice and container scope seen so far, with its properties and, while its
# cgroup exists, its cgroup files.
dump() {
  local phase=$1 unit cg dir file
  systemctl list-units --all --plain --no-legend --type=slice,scope 'kubepods*' 'cri-containerd-*' \
    | awk '{print $1}' >>"$R/units"
  sort -u -o "$R/units" "$R/units"
  node_pods --json >"$R/pods-$phase.json" || true
  while read -r unit; do
    systemctl show --property="$PROPS" "$unit" </dev/null | sed "s#^#$phase|$unit|#"
    cg=$(systemctl show --property=ControlGroup --value "$unit" </dev/null)
    if [ -n "$cg" ]; then echo "$unit $cg" >>"$R/cgroups"; fi
  done <"$R/units"
  sort -u -o "$R/cgroups" "$R/cgroups"
  while read -r unit cg; do
    dir="/sys/fs/cgroup$cg"
    if [ -d "$dir" ]; then
      echo "$phase|$unit|cgroup=present"
      for file in cpu.weight cpu.max memory.max pids.max cgroup.controllers; do
        echo "$phase|$unit|$file=$(cat "$dir/$file" 2>/dev/null || echo '<unreadable>')"
      done
    else
      echo "$phase|$unit|cgroup=absent"
    fi
  done <"$R/cgroups"
  echo "$phase|containerd|containers=$(ctr --address "$SOCK" -n k8s.io containers ls -q | wc -l)"
  echo "$phase|timing|seconds=$SECONDS"
}

# Phase 1: kwk-node starts the pods.
start_node
wait_until 60 "kwk-node answers" node_up || fail "kwk-node's local API did not come up"
wait_until 300 "3 pods running" pods_running 3 || fail "the pods did not run"
dump run

# Phase 2: restart with more memory reserved; the slices are adopted, not recreated.
systemctl stop kwk-node
cp /etc/kwk/kubelet-after-restart.yaml /etc/kwk/kubelet.yaml
start_node
wait_until 60 "kwk-node answers again" node_up || fail "kwk-node did not come back"
wait_until 120 "3 pods running after the restart" pods_running 3 || fail "pods not running after the restart"
dump restarted

# Phase 3: systemd reloads its units; then one manifest goes.
systemctl daemon-reload
log "daemon-reload"
victim=$(systemctl list-units --all --plain --no-legend 'kubepods-burstable-pod*.slice' | awk '{print $1}')
echo "victim=$victim"
rm /etc/kwk/manifests/burstable.yaml
removed() {
  node_pods >"$R/pods.txt" || true
  ! grep -q '^burstable-' "$R/pods.txt" &&
    [ "$(systemctl show --property=LoadState --value "$victim")" = not-found ]
}
wait_until 120 "the burstable pod and its slice are gone" removed || log "not gone; the checks tell what is left"
dump deleted
"#;

fn manifest(name: &str, image: &str, resources: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: {image}
    command: ["/bin/sh", "-c", "trap 'exit 0' TERM; sleep 1000000 & wait"]
    resources: {resources}
"#
    )
}

fn kubelet_config(reserved_mib: u64, socket: &Path) -> String {
    format!(
        "apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
cgroupDriver: systemd
podPidsLimit: 256
systemReserved: {{cpu: 500m, memory: {reserved_mib}Mi}}
staticPodPath: /etc/kwk/manifests
fileCheckFrequency: 2s
syncFrequency: 10s
containerRuntimeEndpoint: unix://{socket}
resolvConf: \"\"
clusterDomain: cluster.local
",
        socket = socket.display(),
    )
}

/// `key=value` lines of the script's stdout.
fn facts(stdout: &str) -> BTreeMap<String, String> {
    stdout
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

/// The last `n` lines of `text`.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// What a pod looked like in one phase, from kwk-node's local API.
#[derive(Clone, Debug, PartialEq, Eq)]
struct PodView {
    uid: String,
    container_id: String,
    restarts: i64,
}

/// The run's facts, pods and journal, and the mismatches found so far.
struct Checks {
    facts: BTreeMap<String, String>,
    pods: BTreeMap<String, BTreeMap<String, PodView>>,
    failures: Vec<String>,
}

impl Checks {
    fn new(out: &VmOutput) -> anyhow::Result<Self> {
        let mut pods = BTreeMap::new();
        for phase in ["run", "restarted", "deleted"] {
            let path = format!("{RESULTS}/pods-{phase}.json");
            let Some(bytes) = out.file(&path) else {
                continue;
            };
            let list: Value =
                serde_json::from_slice(bytes).with_context(|| format!("parsing {path}"))?;
            let mut views = BTreeMap::new();
            for pod in list["items"].as_array().into_iter().flatten() {
                let status = &pod["status"]["containerStatuses"][0];
                views.insert(
                    pod["metadata"]["name"].as_str().unwrap_or_default().into(),
                    PodView {
                        uid: pod["metadata"]["uid"].as_str().unwrap_or_default().into(),
                        container_id: status["containerID"]
                            .as_str()
                            .unwrap_or_default()
                            .trim_start_matches("containerd://")
                            .into(),
                        restarts: status["restartCount"].as_i64().unwrap_or(-1),
                    },
                );
            }
            pods.insert(phase.to_owned(), views);
        }
        Ok(Self {
            facts: facts(&out.stdout),
            pods,
            failures: Vec::new(),
        })
    }

    fn get(&self, phase: &str, unit: &str, key: &str) -> Option<&str> {
        self.facts
            .get(&format!("{phase}|{unit}|{key}"))
            .map(String::as_str)
    }

    fn fail(&mut self, message: String) {
        self.failures.push(message);
    }

    fn eq(&mut self, phase: &str, unit: &str, key: &str, want: &str) {
        let got = self.get(phase, unit, key);
        if got != Some(want) {
            self.fail(format!("{phase}: {unit} {key} is {got:?}, want {want:?}"));
        }
    }

    /// A space-separated list property (`Wants`, `After`, `cgroup.controllers`) contains `word`.
    fn has_word(&mut self, phase: &str, unit: &str, key: &str, word: &str) {
        let got = self.get(phase, unit, key);
        if !got.is_some_and(|list| list.split_whitespace().any(|w| w == word)) {
            self.fail(format!(
                "{phase}: {unit} {key} is {got:?}, want it to list {word}"
            ));
        }
    }

    /// A pod as kwk-node reported it in `phase`.
    fn pod(&mut self, phase: &str, name: &str) -> Option<PodView> {
        let full = format!("{name}-{NODE}");
        let found = self.pods.get(phase).and_then(|p| p.get(&full)).cloned();
        if found.is_none() {
            self.fail(format!("{phase}: kwk-node does not report pod {full}"));
        }
        found
    }

    /// Units whose `Slice=` is `parent` in `phase`.
    fn children(&self, phase: &str, parent: &str) -> Vec<String> {
        let prefix = format!("{phase}|");
        self.facts
            .iter()
            .filter_map(|(k, v)| {
                let unit = k.strip_prefix(&prefix)?.strip_suffix("|Slice")?;
                (v == parent).then(|| unit.to_owned())
            })
            .collect()
    }

    /// A transient slice as kwk-node starts every slice: active, no default dependencies,
    /// wanted by and ordered after its parent, in the cgroup its name implies.
    fn slice(&mut self, phase: &str, unit: &str, parent: &str, cgroup: &str) {
        self.eq(phase, unit, "LoadState", "loaded");
        self.eq(phase, unit, "ActiveState", "active");
        self.eq(phase, unit, "Transient", "yes");
        self.eq(phase, unit, "DefaultDependencies", "no");
        self.eq(phase, unit, "Slice", parent);
        self.has_word(phase, unit, "Wants", parent);
        self.has_word(phase, unit, "After", parent);
        self.eq(phase, unit, "ControlGroup", cgroup);
        self.eq(phase, unit, "cgroup", "present");
        for controller in ["cpu", "memory", "pids"] {
            self.has_word(phase, unit, "cgroup.controllers", controller);
        }
    }

    fn gone(&mut self, phase: &str, unit: &str) {
        self.eq(phase, unit, "LoadState", "not-found");
        self.eq(phase, unit, "cgroup", "absent");
    }

    /// The unit was not restarted since the first phase (µs-precise activation time).
    fn unchanged(&mut self, phase: &str, unit: &str) {
        const KEY: &str = "ActiveEnterTimestampMonotonic";
        let before = self.get("run", unit, KEY).map(str::to_owned);
        let after = self.get(phase, unit, KEY).map(str::to_owned);
        if before.as_deref().is_none_or(|t| t == "0") || before != after {
            self.fail(format!(
                "{phase}: {unit} {KEY} is {after:?}, was {before:?} (restarted?)"
            ));
        }
    }
}

/// One pod's expected slice and limits.
struct PodCase {
    name: &'static str,
    manifest_resources: &'static str,
    /// `burstable` or `""` (Guaranteed pods sit in `kubepods.slice`).
    qos: &'static str,
    cpu_weight: &'static str,
    quota_per_sec: &'static str,
    cpu_max: &'static str,
    memory: &'static str,
    /// The container scope's `cpu.max`: runc writes the exact quota below systemd's rounding.
    container_cpu_max: &'static str,
}

const PODS: [PodCase; 3] = [
    // Burstable: shares 256 → weight 10; no CPU limit; every container limits memory.
    PodCase {
        name: "burstable",
        manifest_resources: "{requests: {cpu: 250m}, limits: {memory: 64Mi}}",
        qos: "burstable",
        cpu_weight: "10",
        quota_per_sec: "infinity",
        cpu_max: "max 100000",
        memory: "67108864",
        container_cpu_max: "max 100000",
    },
    // Guaranteed 500m: shares 512 → weight 20; 50 ms per 100 ms.
    PodCase {
        name: "guaranteed",
        manifest_resources: "{requests: {cpu: 500m, memory: 64Mi}, limits: {cpu: 500m, memory: 64Mi}}",
        qos: "",
        cpu_weight: "20",
        quota_per_sec: "500ms",
        cpu_max: "50000 100000",
        memory: "67108864",
        container_cpu_max: "50000 100000",
    },
    // 15m: quota 1.5 ms per 100 ms, 15 ms per second, which systemd keeps in whole percent:
    // rounded up to 20 ms (2 ms per period); shares 15 → weight 1.
    PodCase {
        name: "tiny",
        manifest_resources: "{limits: {cpu: 15m, memory: 32Mi}}",
        qos: "",
        cpu_weight: "1",
        quota_per_sec: "20ms",
        cpu_max: "2000 100000",
        memory: "33554432",
        container_cpu_max: "1500 100000",
    },
];

impl PodCase {
    /// (slice unit, parent slice, cgroup path) for the pod's UID, as upstream names them:
    /// `kubepods[-<qos>]-pod<uid with - as _>.slice`, one nested slice per name prefix.
    fn slice(&self, uid: &str) -> (String, String, String) {
        let escaped = uid.replace('-', "_");
        if self.qos.is_empty() {
            let unit = format!("kubepods-pod{escaped}.slice");
            let cgroup = format!("/kubepods.slice/{unit}");
            (unit, "kubepods.slice".into(), cgroup)
        } else {
            let parent = format!("kubepods-{}.slice", self.qos);
            let unit = format!("kubepods-{}-pod{escaped}.slice", self.qos);
            let cgroup = format!("/kubepods.slice/{parent}/{unit}");
            (unit, parent, cgroup)
        }
    }
}

/// The node and QoS slices in `phase`; `kubepods.slice` limited to allocatable memory, the
/// burstable slice weighted by its pods' CPU requests (`burstable_weight`).
fn check_node_slices(c: &mut Checks, phase: &str, allocatable_memory: u64, burstable_weight: &str) {
    c.slice(phase, "kubepods.slice", "-.slice", "/kubepods.slice");
    // 2 CPUs less 500m reserved: 1536 shares, weight 59.
    c.eq(phase, "kubepods.slice", "CPUWeight", "59");
    c.eq(phase, "kubepods.slice", "cpu.weight", "59");
    let memory = allocatable_memory.to_string();
    c.eq(phase, "kubepods.slice", "MemoryMax", &memory);
    // The kernel keeps whole pages.
    let pages = (allocatable_memory / 4096 * 4096).to_string();
    c.eq(phase, "kubepods.slice", "memory.max", &pages);
    for qos in ["burstable", "besteffort"] {
        let unit = format!("kubepods-{qos}.slice");
        let cgroup = format!("/kubepods.slice/{unit}");
        c.slice(phase, &unit, "kubepods.slice", &cgroup);
    }
    c.eq(
        phase,
        "kubepods-burstable.slice",
        "CPUWeight",
        burstable_weight,
    );
    c.eq(
        phase,
        "kubepods-burstable.slice",
        "cpu.weight",
        burstable_weight,
    );
    c.eq(phase, "kubepods-besteffort.slice", "CPUWeight", "1");
    c.eq(phase, "kubepods-besteffort.slice", "cpu.weight", "1");
}

/// A running pod's slice, limits and container scope in `phase`. After a `daemon-reload`
/// systemd re-applies its own (rounded) quota to runc's container scopes, so the exact quota
/// runc wrote there is only checked before one.
fn check_pod(c: &mut Checks, phase: &str, case: &PodCase, reloaded: bool) {
    let Some(pod) = c.pod(phase, case.name) else {
        return;
    };
    let (unit, parent, cgroup) = case.slice(&pod.uid);
    c.slice(phase, &unit, &parent, &cgroup);
    c.eq(phase, &unit, "CPUWeight", case.cpu_weight);
    c.eq(phase, &unit, "CPUQuotaPerSecUSec", case.quota_per_sec);
    c.eq(phase, &unit, "CPUQuotaPeriodUSec", "100ms");
    c.eq(phase, &unit, "MemoryMax", case.memory);
    c.eq(phase, &unit, "TasksMax", "256");
    c.eq(phase, &unit, "cpu.weight", case.cpu_weight);
    c.eq(phase, &unit, "cpu.max", case.cpu_max);
    c.eq(phase, &unit, "memory.max", case.memory);
    c.eq(phase, &unit, "pids.max", "256");
    // The runtime's scopes (sandbox and container) are inside the pod's slice.
    let scope = format!("cri-containerd-{}.scope", pod.container_id);
    let children = c.children(phase, &unit);
    if children.len() != 2 || !children.contains(&scope) {
        c.fail(format!(
            "{phase}: {unit} holds {children:?}, want the sandbox's scope and {scope}"
        ));
    }
    c.eq(phase, &scope, "ActiveState", "active");
    c.eq(phase, &scope, "ControlGroup", &format!("{cgroup}/{scope}"));
    if !reloaded {
        c.eq(phase, &scope, "cpu.max", case.container_cpu_max);
    }
}

/// The pods of `phase` run the containers of the first phase, never restarted.
fn check_same_containers(c: &mut Checks, phase: &str, names: &[&str]) {
    for name in names {
        let (Some(before), Some(after)) = (c.pod("run", name), c.pod(phase, name)) else {
            continue;
        };
        if before != after || after.restarts != 0 {
            c.fail(format!("{phase}: pod {name} is {after:?}, was {before:?}"));
        }
    }
}

#[test]
fn kwk_node_drives_real_systemd_slices_across_restart_reload_and_deletion() -> anyhow::Result<()> {
    if !vm_tests_enabled() {
        return Ok(());
    }
    let images = test_images()?;
    let layout = Layout::new(Path::new(CONTAINERD_DIR), &images.pause_reference);
    let default_toml = containerd_toml(&layout);
    let toml = default_toml.replace("SystemdCgroup = false", "SystemdCgroup = true");
    assert_ne!(toml, default_toml, "SystemdCgroup not found in the config");
    let conflist = layout.cni_conf_dir().join("10-kwk.conflist");
    let mut vm = Vm::builder()
        .file(BIN, "/usr/local/bin/kwk-node")
        .file(&images.pause_archive, "/var/lib/kwk-images/pause.tar")
        .file(&images.busybox_archive, "/var/lib/kwk-images/busybox.tar")
        .file_contents("/etc/containerd/config.toml", toml, 0o644)
        .file_contents(
            &conflist.to_string_lossy(),
            reference_conflist(&layout),
            0o644,
        )
        .file_contents(
            "/etc/kwk/kubelet.yaml",
            kubelet_config(RESERVED_BEFORE_MIB, &layout.socket()),
            0o644,
        )
        .file_contents(
            "/etc/kwk/kubelet-after-restart.yaml",
            kubelet_config(RESERVED_AFTER_MIB, &layout.socket()),
            0o644,
        );
    for case in &PODS {
        vm = vm.file_contents(
            &format!("/etc/kwk/manifests/{}.yaml", case.name),
            manifest(
                case.name,
                &images.busybox_reference,
                case.manifest_resources,
            ),
            0o644,
        );
    }
    let out = vm
        .script(SCRIPT)
        .fetch(RESULTS)
        .timeout(Duration::from_secs(900))
        .run()?;
    eprintln!("boot to poweroff: {:.1} s", out.wall_time.as_secs_f64());
    let journal = out
        .file(&format!("{RESULTS}/kwk-node.journal"))
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .unwrap_or_default();
    let report = |what: String| -> anyhow::Error {
        anyhow::anyhow!(
            "{what}\n--- kwk-node journal (tail):\n{}\n{}",
            tail(&journal, 80),
            out.diagnostics()
        )
    };
    if out.exit_code != 0 {
        return Err(report(format!("the guest script exited {}", out.exit_code)));
    }

    let mut c = Checks::new(&out)?;
    let all_facts = c.facts.clone();
    let fact = |key: &str| all_facts.get(key).cloned().unwrap_or_default();
    for (key, want) in [
        ("systemd_version", "252"),
        ("cgroup_fs", "cgroup2fs"),
        ("nproc", "2"),
    ] {
        if fact(key) != want {
            c.fail(format!("{key} is {:?}, want {want:?}", fact(key)));
        }
    }
    let memtotal: u64 = fact("memtotal_kib")
        .parse::<u64>()
        .context("MemTotal")?
        .checked_mul(1024)
        .context("MemTotal overflows")?;
    let starts = journal.matches("connected to systemd over D-Bus").count();
    if starts != 2 || !journal.contains("version=252") {
        c.fail(format!(
            "the journal shows {starts} D-Bus connections to systemd 252, want 2"
        ));
    }
    let errors: Vec<&str> = journal.lines().filter(|l| l.contains(" ERROR ")).collect();
    if !errors.is_empty() {
        c.fail(format!("kwk-node logged errors:\n{}", errors.join("\n")));
    }
    // The first kwk-node stopped cleanly on SIGTERM (pods keep running).
    if !journal.contains("kwk-node.service: Deactivated successfully") {
        c.fail("the first kwk-node did not exit cleanly when stopped".into());
    }

    // 1. All pods running.
    // The burstable pod requests 250m: 256 shares, weight 10. Without it: 2 shares, weight 1.
    check_node_slices(&mut c, "run", memtotal - RESERVED_BEFORE_MIB * MIB, "10");
    for case in &PODS {
        check_pod(&mut c, "run", case, false);
    }
    let units: Vec<String> = c
        .facts
        .iter()
        .filter_map(|(k, v)| {
            let unit = k.strip_prefix("run|")?.strip_suffix("|ActiveState")?;
            (v == "active").then(|| unit.to_owned())
        })
        .collect();
    c.eq("run", "containerd", "containers", "6");

    // 2. After the restart: the same units (never restarted) and containers; the node slice
    // is updated in place to the new allocatable memory.
    check_node_slices(
        &mut c,
        "restarted",
        memtotal - RESERVED_AFTER_MIB * MIB,
        "10",
    );
    for case in &PODS {
        check_pod(&mut c, "restarted", case, false);
    }
    for unit in &units {
        c.unchanged("restarted", unit);
    }
    check_same_containers(&mut c, "restarted", &["burstable", "guaranteed", "tiny"]);
    c.eq("restarted", "containerd", "containers", "6");

    // 3. After daemon-reload and the burstable manifest's removal: its slice and scopes are
    // gone; the other pods keep their units and limits.
    check_node_slices(&mut c, "deleted", memtotal - RESERVED_AFTER_MIB * MIB, "1");
    for case in &PODS[1..] {
        check_pod(&mut c, "deleted", case, true);
    }
    check_same_containers(&mut c, "deleted", &["guaranteed", "tiny"]);
    if let Some(pod) = c.pod("run", "burstable") {
        let (unit, _, _) = PODS[0].slice(&pod.uid);
        let victim = fact("victim");
        if victim != unit {
            c.fail(format!(
                "the burstable pod's slice was {victim:?}, want {unit}"
            ));
        }
        let mut removed = c.children("run", &unit);
        removed.push(unit);
        for unit in &removed {
            c.gone("deleted", unit);
        }
        for unit in units.iter().filter(|u| !removed.contains(u)) {
            c.unchanged("deleted", unit);
        }
    }
    if c.pods
        .get("deleted")
        .is_some_and(|p| p.contains_key(&format!("burstable-{NODE}")))
    {
        c.fail("deleted: kwk-node still reports the burstable pod".into());
    }
    c.eq("deleted", "containerd", "containers", "4");

    let timing: Vec<String> = ["run", "restarted", "deleted"]
        .iter()
        .map(|p| format!("{p} at {} s", fact(&format!("{p}|timing|seconds"))))
        .collect();
    eprintln!("guest script phases: {}", timing.join(", "));
    if !c.failures.is_empty() {
        let mut message = format!("{} mismatches:\n", c.failures.len());
        for failure in &c.failures {
            let _ = writeln!(message, "- {failure}");
        }
        let _ = write!(message, "--- facts:\n{}", out.stdout);
        return Err(report(message));
    }
    Ok(())
}
