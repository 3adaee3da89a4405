//! A recording stand-in for systemd behind [`SystemdApi`], for the cgroup manager's tests: it
//! keeps the set of loaded units, records every call, creates and removes the slices'
//! directories in a temp-dir cgroup tree as systemd would, and fails on request.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::{PropertyValue, Started, Stopped, SystemdApi, SystemdError, UnitProperty, error_names};

/// Properties as `Name=value` (`infinity` for `u64::MAX`), for assertions.
pub(crate) fn show(properties: &[UnitProperty]) -> Vec<String> {
    properties
        .iter()
        .map(|p| match &p.value {
            PropertyValue::Bool(b) => format!("{}={b}", p.name),
            PropertyValue::U64(u64::MAX) => format!("{}=infinity", p.name),
            PropertyValue::U64(v) => format!("{}={v}", p.name),
            PropertyValue::Str(s) => format!("{}={s:?}", p.name),
            PropertyValue::StrList(l) => format!("{}={l:?}", p.name),
        })
        .collect()
}

/// One recorded call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Call {
    Start(String, Vec<UnitProperty>),
    Set(String, Vec<UnitProperty>),
    Stop(String),
}

impl Call {
    /// `start kubepods.slice`, `set ...`, `stop ...`.
    pub(crate) fn short(&self) -> String {
        match self {
            Call::Start(unit, _) => format!("start {unit}"),
            Call::Set(unit, _) => format!("set {unit}"),
            Call::Stop(unit) => format!("stop {unit}"),
        }
    }
}

/// How an injected failure shows.
#[derive(Clone, Debug)]
pub(crate) enum Failure {
    /// The call is answered with this D-Bus error name.
    Call(&'static str),
    /// The job ends with this result.
    Job(&'static str),
}

/// Hierarchies of the fake v1 tree that systemd creates slices in (not cpuset, not freezer).
const V1_MANAGED: [&str; 5] = ["cpu,cpuacct", "memory", "pids", "systemd", "unified"];

#[derive(Debug, Default)]
struct State {
    calls: Vec<Call>,
    units: BTreeSet<String>,
    failures: BTreeMap<(&'static str, String), Failure>,
}

#[derive(Debug)]
pub(crate) struct RecordingSystemd {
    state: Mutex<State>,
    /// The fake cgroup tree and whether it is v2.
    tree: Option<(PathBuf, bool)>,
    version: u32,
}

/// The cgroup path of a slice unit, as systemd derives it from the name
/// (`a-b.slice` → `a.slice/a-b.slice`; `-.slice` is the root).
pub(crate) fn slice_path(unit: &str) -> String {
    let Some(stem) = unit.strip_suffix(".slice") else {
        return unit.to_string();
    };
    if stem == "-" {
        return String::new();
    }
    let parts: Vec<&str> = stem.split('-').collect();
    (1..=parts.len())
        .map(|n| format!("{}.slice", parts[..n].join("-")))
        .collect::<Vec<_>>()
        .join("/")
}

impl RecordingSystemd {
    /// A stand-in that makes directories under `mount_root` (a fake v1 or v2 tree).
    pub(crate) fn with_tree(mount_root: &Path, unified: bool) -> Self {
        Self {
            state: Mutex::default(),
            tree: Some((mount_root.to_path_buf(), unified)),
            version: 252,
        }
    }

    pub(crate) fn calls(&self) -> Vec<Call> {
        self.state.lock().unwrap().calls.clone()
    }

    pub(crate) fn short_calls(&self) -> Vec<String> {
        self.calls().iter().map(Call::short).collect()
    }

    pub(crate) fn clear_calls(&self) {
        self.state.lock().unwrap().calls.clear();
    }

    pub(crate) fn units(&self) -> BTreeSet<String> {
        self.state.lock().unwrap().units.clone()
    }

    /// Forgets a unit, as if someone had stopped it behind our back.
    pub(crate) fn forget(&self, unit: &str) {
        self.state.lock().unwrap().units.remove(unit);
    }

    /// Makes `method` (`StartTransientUnit`, `SetUnitProperties`, `StopUnit`) fail for `unit`.
    pub(crate) fn fail(&self, method: &'static str, unit: &str, failure: Failure) {
        self.state
            .lock()
            .unwrap()
            .failures
            .insert((method, unit.to_string()), failure);
    }

    pub(crate) fn heal(&self) {
        self.state.lock().unwrap().failures.clear();
    }

    fn dirs(&self, unit: &str) -> Vec<PathBuf> {
        let Some((root, unified)) = &self.tree else {
            return Vec::new();
        };
        let path = slice_path(unit);
        if *unified {
            vec![root.join(path)]
        } else {
            V1_MANAGED
                .iter()
                .map(|h| root.join(h).join(&path))
                .collect()
        }
    }

    fn injected(
        &self,
        state: &State,
        method: &'static str,
        unit: &str,
    ) -> Result<(), SystemdError> {
        match state.failures.get(&(method, unit.to_string())) {
            None => Ok(()),
            Some(Failure::Call(name)) => Err(SystemdError::Call {
                method,
                unit: unit.to_string(),
                name: (*name).to_string(),
                message: "injected".to_string(),
            }),
            Some(Failure::Job(result)) => Err(SystemdError::Job {
                method,
                unit: unit.to_string(),
                job: "/org/freedesktop/systemd1/job/1".to_string(),
                result: (*result).to_string(),
            }),
        }
    }
}

impl SystemdApi for RecordingSystemd {
    fn start_transient_unit(
        &self,
        unit: &str,
        properties: &[UnitProperty],
    ) -> Result<Started, SystemdError> {
        let mut state = self.state.lock().unwrap();
        state
            .calls
            .push(Call::Start(unit.to_string(), properties.to_vec()));
        self.injected(&state, "StartTransientUnit", unit)?;
        if !state.units.insert(unit.to_string()) {
            return Ok(Started::AlreadyLoaded);
        }
        for dir in self.dirs(unit) {
            std::fs::create_dir_all(dir).unwrap();
        }
        Ok(Started::Created)
    }

    fn set_unit_properties(
        &self,
        unit: &str,
        properties: &[UnitProperty],
    ) -> Result<(), SystemdError> {
        let mut state = self.state.lock().unwrap();
        state
            .calls
            .push(Call::Set(unit.to_string(), properties.to_vec()));
        self.injected(&state, "SetUnitProperties", unit)?;
        if !state.units.contains(unit) {
            return Err(SystemdError::Call {
                method: "SetUnitProperties",
                unit: unit.to_string(),
                name: error_names::NO_SUCH_UNIT.to_string(),
                message: format!("Unit {unit} not loaded."),
            });
        }
        Ok(())
    }

    fn stop_unit(&self, unit: &str) -> Result<Stopped, SystemdError> {
        let mut state = self.state.lock().unwrap();
        state.calls.push(Call::Stop(unit.to_string()));
        self.injected(&state, "StopUnit", unit)?;
        if !state.units.remove(unit) {
            return Ok(Stopped::NotLoaded);
        }
        // systemd removes the cgroup when nothing it does not know of is left below it.
        for dir in self.dirs(unit) {
            let _ = std::fs::remove_dir(dir);
        }
        Ok(Stopped::Stopped)
    }

    fn version(&self) -> u32 {
        self.version
    }
}

#[test]
fn slice_paths() {
    assert_eq!(slice_path("-.slice"), "");
    assert_eq!(slice_path("kubepods.slice"), "kubepods.slice");
    assert_eq!(
        slice_path("kubepods-burstable-pod12_ab.slice"),
        "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod12_ab.slice"
    );
}
