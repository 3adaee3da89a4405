//! The pod table of `kubectl get pods` (upstream 1.33's `printPod`): READY counts ready app
//! containers and started sidecars, STATUS is the phase refined by init progress, waiting and
//! terminated reasons and deletion, RESTARTS carries `(<age> ago)` of the last restart. Reads
//! the JSON directly: this runs for every row of a LIST.

use serde_json::{Value, json};

use super::cells::{age_column, col, name_column, wide};
use super::util::{arr, flag, int, s, seconds, since};
use super::{Column, name_of};

/// The pod columns (wide ones last, as upstream).
pub fn columns() -> Vec<Column> {
    vec![
        name_column(),
        col("Ready", "string", "Ready containers of all containers."),
        col(
            "Status",
            "string",
            "The pod's state as kubectl summarises it.",
        ),
        col(
            "Restarts",
            "string",
            "Container restarts, and how long ago the last one was.",
        ),
        age_column(),
        wide("IP", "string", "The pod's first IP address."),
        wide("Node", "string", "The node the pod is bound to."),
        wide(
            "Nominated Node",
            "string",
            "The node preemption made room on.",
        ),
        wide(
            "Readiness Gates",
            "string",
            "Readiness gates whose condition is true.",
        ),
    ]
}

fn is_sidecar(spec_container: Option<&Value>) -> bool {
    spec_container.is_some_and(|c| s(c, "/restartPolicy") == "Always")
}

fn condition_true(object: &Value, kind: &str) -> bool {
    arr(object, "/status/conditions")
        .iter()
        .any(|c| s(c, "/type") == kind && s(c, "/status") == "True")
}

/// The later of two restart times (seconds).
fn later(current: Option<i64>, candidate: &Value) -> Option<i64> {
    let finished = seconds(s(candidate, "/lastState/terminated/finishedAt"));
    match (current, finished) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

fn terminated_reason(prefix: &str, terminated: &Value) -> String {
    let reason = s(terminated, "/reason");
    if !reason.is_empty() {
        return format!("{prefix}{reason}");
    }
    let signal = int(terminated, "/signal");
    if signal != 0 {
        format!("{prefix}Signal:{signal}")
    } else {
        format!("{prefix}ExitCode:{}", int(terminated, "/exitCode"))
    }
}

/// The row of one pod.
pub fn row(object: &Value, now: i64) -> Vec<Value> {
    let spec_inits = arr(object, "/spec/initContainers");
    let init_spec = |name: &str| spec_inits.iter().find(|c| s(c, "/name") == name);
    let total = arr(object, "/spec/containers").len()
        + spec_inits.iter().filter(|c| is_sidecar(Some(c))).count();
    let mut ready = 0usize;
    let mut restarts = 0i64;
    let mut sidecar_restarts = 0i64;
    let mut last_restart: Option<i64> = None;
    let mut last_sidecar_restart: Option<i64> = None;

    let phase = s(object, "/status/phase");
    let mut reason = match s(object, "/status/reason") {
        "" => phase.to_string(),
        r => r.to_string(),
    };
    if arr(object, "/status/conditions")
        .iter()
        .any(|c| s(c, "/type") == "PodScheduled" && s(c, "/reason") == "SchedulingGated")
    {
        reason = "SchedulingGated".to_string();
    }

    let mut initializing = false;
    let init_statuses = arr(object, "/status/initContainerStatuses");
    for (i, status) in init_statuses.iter().enumerate() {
        restarts += int(status, "/restartCount");
        last_restart = later(last_restart, status);
        let sidecar = is_sidecar(init_spec(s(status, "/name")));
        if sidecar {
            sidecar_restarts += int(status, "/restartCount");
            last_sidecar_restart = later(last_sidecar_restart, status);
        }
        let terminated = status.pointer("/state/terminated");
        let waiting_reason = s(status, "/state/waiting/reason");
        if terminated.is_some_and(|t| int(t, "/exitCode") == 0) {
            continue;
        }
        if sidecar && flag(status, "/started") == Some(true) {
            if flag(status, "/ready") == Some(true) {
                ready += 1;
            }
            continue;
        }
        if let Some(t) = terminated {
            reason = terminated_reason("Init:", t);
        } else if !waiting_reason.is_empty() && waiting_reason != "PodInitializing" {
            reason = format!("Init:{waiting_reason}");
        } else {
            reason = format!("Init:{i}/{}", spec_inits.len());
        }
        initializing = true;
        break;
    }

    if !initializing || condition_true(object, "Initialized") {
        restarts = sidecar_restarts;
        last_restart = last_sidecar_restart;
        let mut has_running = false;
        for status in arr(object, "/status/containerStatuses").iter().rev() {
            restarts += int(status, "/restartCount");
            last_restart = later(last_restart, status);
            let waiting = s(status, "/state/waiting/reason");
            let terminated = status.pointer("/state/terminated");
            if !waiting.is_empty() {
                reason = waiting.to_string();
            } else if let Some(t) = terminated {
                reason = terminated_reason("", t);
            } else if flag(status, "/ready") == Some(true)
                && status.pointer("/state/running").is_some()
            {
                has_running = true;
                ready += 1;
            }
        }
        if reason == "Completed" && has_running {
            reason = if condition_true(object, "Ready") {
                "Running".to_string()
            } else {
                "NotReady".to_string()
            };
        }
    }

    let deleting = object.pointer("/metadata/deletionTimestamp").is_some();
    if deleting && s(object, "/status/reason") == "NodeLost" {
        reason = "Unknown".to_string();
    } else if deleting && phase != "Succeeded" && phase != "Failed" {
        reason = "Terminating".to_string();
    }

    let restarts_cell = match last_restart {
        Some(at) if restarts != 0 => {
            format!("{restarts} ({} ago)", super::human_duration(now - at))
        }
        _ => restarts.to_string(),
    };

    let or_none =
        |v: &str| -> Value { Value::String(if v.is_empty() { "<none>" } else { v }.to_string()) };
    let ip = arr(object, "/status/podIPs")
        .first()
        .map(|ip| s(ip, "/ip"))
        .unwrap_or_default();
    let gates = arr(object, "/spec/readinessGates");
    let gates_cell = if gates.is_empty() {
        "<none>".to_string()
    } else {
        let true_count = gates
            .iter()
            .filter(|g| condition_true(object, s(g, "/conditionType")))
            .count();
        format!("{true_count}/{}", gates.len())
    };
    vec![
        json!(name_of(object)),
        json!(format!("{ready}/{total}")),
        json!(reason),
        json!(restarts_cell),
        json!(since(s(object, "/metadata/creationTimestamp"), now)),
        or_none(ip),
        or_none(s(object, "/spec/nodeName")),
        or_none(s(object, "/status/nominatedNodeName")),
        json!(gates_cell),
    ]
}

/// Row conditions: `Completed` for pods that succeeded or failed.
pub fn conditions(object: &Value) -> Vec<Value> {
    let (reason, message) = match s(object, "/status/phase") {
        "Succeeded" => ("Succeeded", "The pod has completed successfully."),
        "Failed" => ("Failed", "The pod failed."),
        _ => return Vec::new(),
    };
    vec![json!({"type": "Completed", "status": "True", "reason": reason, "message": message})]
}
