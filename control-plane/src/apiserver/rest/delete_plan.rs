//! What a DELETE does to one stored object, decided without the store (upstream's
//! `rest.BeforeDelete`, the pod strategy's `CheckGracefulDelete`, the garbage collection
//! finalizers of `deletionFinalizersForGarbageCollection` and the Namespace registry's
//! two-phase delete). [`plan_delete`] and [`plan_namespace_delete`] are pure: the caller
//! reads the object, checks preconditions, and carries out the [`Plan`] with a CAS write.

use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};

use super::delete::DeleteOptions;
use super::object::{finalizers, meta_mut};

/// The finalizer of an `Orphan` deletion.
pub const ORPHAN_FINALIZER: &str = "orphan";
/// The finalizer of a `Foreground` deletion.
pub const FOREGROUND_FINALIZER: &str = "foregroundDeletion";

/// What to do with the stored object.
#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    /// Remove it from the store; `Some` is written first (a graceless delete of a graceful
    /// kind records its `deletionTimestamp` before the object goes, as upstream).
    DeleteNow(Option<Value>),
    /// Write this object (it stays: graceful deletion or pending finalizers).
    Linger(Value),
    /// Nothing changes (a graceful deletion is already pending); answer with the object.
    Unchanged,
}

/// Whether a kind is deleted gracefully (only pods upstream).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Graceful {
    Pod,
    No,
}

/// The decision for `current` (the stored object) at `now` (seconds since the epoch).
pub fn plan_delete(kind: Graceful, current: &Value, options: &DeleteOptions, now: i64) -> Plan {
    let mut next = current.clone();
    let requested = options
        .grace_period_seconds
        .map(|g| if g < 0 { 1 } else { g });
    let (graceful, pending) = before_delete(kind, &mut next, requested, now);
    if pending {
        return Plan::Unchanged;
    }
    if let Some(list) = gc_finalizers(&finalizers(&next), options) {
        meta_mut(&mut next).insert("finalizers".into(), json!(list));
    }
    let pending_finalizers = !finalizers(&next).is_empty();
    match graceful {
        None if pending_finalizers => {
            mark_as_deleting(&mut next, now);
            Plan::Linger(next)
        }
        None => Plan::DeleteNow(None),
        Some(_) if pending_finalizers => Plan::Linger(next),
        Some(grace) if grace > 0 => Plan::Linger(next),
        Some(_) => Plan::DeleteNow(Some(next)),
    }
}

/// Upstream's `BeforeDelete` on `object`: `(Some(grace), _)` when a graceful deletion was
/// recorded (or shortened) on it, `(_, true)` when one is already pending and nothing changes.
fn before_delete(
    kind: Graceful,
    object: &mut Value,
    requested: Option<i64>,
    now: i64,
) -> (Option<i64>, bool) {
    if kind == Graceful::No {
        return (None, false);
    }
    let meta = object.get("metadata").cloned().unwrap_or_default();
    let existing_grace = meta
        .get("deletionGracePeriodSeconds")
        .and_then(Value::as_i64)
        .map(|g| if g < 0 { 1 } else { g });
    if let Some(stamp) = meta.get("deletionTimestamp").and_then(Value::as_str) {
        let Some(existing) = existing_grace.filter(|g| *g > 0) else {
            return (None, false);
        };
        let Some(grace) = requested else {
            return (None, true);
        };
        if grace >= existing {
            return (None, true);
        }
        // Only shorter: the deadline moves back by the difference.
        let base = parse_time(stamp).unwrap_or(now + existing) - existing;
        let m = meta_mut(object);
        m.insert("deletionTimestamp".into(), json!(format_time(base + grace)));
        m.insert("deletionGracePeriodSeconds".into(), json!(grace));
        return (Some(grace), false);
    }
    let grace = pod_grace_period(object, requested);
    let generation = meta.get("generation").and_then(Value::as_i64).unwrap_or(0);
    let m = meta_mut(object);
    m.insert("deletionTimestamp".into(), json!(format_time(now + grace)));
    m.insert("deletionGracePeriodSeconds".into(), json!(grace));
    if generation > 0 {
        m.insert("generation".into(), json!(generation + 1));
    }
    (Some(grace), false)
}

/// The pod strategy's `CheckGracefulDelete`: the request's period, else the pod's
/// `terminationGracePeriodSeconds` (30 when unset); 0 for a pod no node runs (no
/// `nodeName`) or one that has finished (`Succeeded`/`Failed`); negative is 1.
pub fn pod_grace_period(pod: &Value, requested: Option<i64>) -> i64 {
    let mut period = requested
        .or_else(|| {
            pod.pointer("/spec/terminationGracePeriodSeconds")
                .and_then(Value::as_i64)
        })
        .unwrap_or(30);
    let scheduled = pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .is_some_and(|n| !n.is_empty());
    let phase = pod
        .pointer("/status/phase")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if !scheduled || phase == "Succeeded" || phase == "Failed" {
        period = 0;
    }
    if period < 0 { 1 } else { period }
}

/// Upstream's `markAsDeleting`: a non-graceful delete held by finalizers.
fn mark_as_deleting(object: &mut Value, now: i64) {
    let meta = meta_mut(object);
    let stamp = meta
        .get("deletionTimestamp")
        .and_then(Value::as_str)
        .map(String::from);
    if stamp.is_none()
        && let Some(generation) = meta
            .get("generation")
            .and_then(Value::as_i64)
            .filter(|g| *g > 0)
    {
        meta.insert("generation".into(), json!(generation + 1));
    }
    if stamp
        .as_deref()
        .and_then(parse_time)
        .is_none_or(|t| t > now)
    {
        meta.insert("deletionTimestamp".into(), json!(format_time(now)));
    }
    meta.insert("deletionGracePeriodSeconds".into(), json!(0));
}

/// The finalizers after the options' propagation (`None`: unchanged). `orphanDependents`
/// wins over `propagationPolicy`; without either, finalizers already present decide.
fn gc_finalizers(current: &[String], options: &DeleteOptions) -> Option<Vec<String>> {
    let has = |f: &str| current.iter().any(|c| c == f);
    let (orphan, foreground) = match (
        options.orphan_dependents,
        options.propagation_policy.as_deref(),
    ) {
        (Some(orphan), _) => (orphan, false),
        (None, Some("Orphan")) => (true, false),
        (None, Some("Foreground")) => (false, true),
        (None, Some(_)) => (false, false),
        // Without options, the finalizers present decide (the first of the two for orphaning).
        (None, None) => (
            current
                .iter()
                .find(|f| *f == ORPHAN_FINALIZER || *f == FOREGROUND_FINALIZER)
                .is_some_and(|f| f == ORPHAN_FINALIZER),
            has(FOREGROUND_FINALIZER),
        ),
    };
    let mut next: Vec<String> = current
        .iter()
        .filter(|f| *f != ORPHAN_FINALIZER && *f != FOREGROUND_FINALIZER)
        .cloned()
        .collect();
    if orphan {
        next.push(ORPHAN_FINALIZER.into());
    }
    if foreground {
        next.push(FOREGROUND_FINALIZER.into());
    }
    let same = next.len() == current.len() && next.iter().all(|f| has(f));
    (!same).then_some(next)
}

/// The Namespace registry's delete: the first DELETE marks it `Terminating` (deletion
/// timestamp, phase, GC finalizers as the options ask: note that `orphanDependents: false`
/// asks for `foregroundDeletion`, as upstream); later ones delete it once `spec.finalizers`
/// is empty (the namespace controller empties it), as any object otherwise.
pub fn plan_namespace_delete(current: &Value, options: &DeleteOptions, now: i64) -> Plan {
    if current.pointer("/metadata/deletionTimestamp").is_none() {
        let mut next = current.clone();
        meta_mut(&mut next).insert("deletionTimestamp".into(), json!(format_time(now)));
        if !next.get("status").is_some_and(Value::is_object) {
            next["status"] = json!({});
        }
        next["status"]["phase"] = json!("Terminating");
        let present = finalizers(current);
        let has = |f: &str| present.iter().any(|c| c == f);
        let policy = options.propagation_policy.as_deref();
        let orphan = match (options.orphan_dependents, policy) {
            (Some(o), _) => o,
            (None, Some(p)) => p == "Orphan",
            (None, None) => has(ORPHAN_FINALIZER),
        };
        let foreground = match (options.orphan_dependents, policy) {
            (Some(o), _) => !o,
            (None, Some(p)) => p == "Foreground",
            (None, None) => has(FOREGROUND_FINALIZER),
        };
        let mut list: Vec<String> = present
            .iter()
            .filter(|f| *f != ORPHAN_FINALIZER && *f != FOREGROUND_FINALIZER)
            .cloned()
            .collect();
        if orphan {
            list.push(ORPHAN_FINALIZER.into());
        }
        if foreground {
            list.push(FOREGROUND_FINALIZER.into());
        }
        if list != present {
            meta_mut(&mut next).insert("finalizers".into(), json!(list));
        }
        return Plan::Linger(next);
    }
    let spec_finalizers = current
        .pointer("/spec/finalizers")
        .and_then(Value::as_array)
        .is_some_and(|a| !a.is_empty());
    if spec_finalizers {
        return Plan::Unchanged;
    }
    plan_delete(Graceful::No, current, options, now)
}

/// Namespaces upstream's NamespaceLifecycle admission refuses to delete.
pub const IMMORTAL_NAMESPACES: &[&str] = &["default", "kube-system", "kube-public"];

fn parse_time(text: &str) -> Option<i64> {
    text.parse::<Timestamp>().ok().map(|t| t.as_second())
}

fn format_time(seconds: i64) -> String {
    Timestamp::from_second(seconds)
        .map(|t| t.to_string())
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_700_000_000; // 2023-11-14T22:13:20Z

    fn opts(grace: Option<i64>, policy: Option<&str>, orphan: Option<bool>) -> DeleteOptions {
        DeleteOptions {
            grace_period_seconds: grace,
            propagation_policy: policy.map(String::from),
            orphan_dependents: orphan,
            ..DeleteOptions::default()
        }
    }

    fn pod(node: &str, phase: &str, tgps: Option<i64>) -> Value {
        let mut p = json!({"metadata": {"name": "p", "generation": 1},
            "spec": {"nodeName": node}, "status": {"phase": phase}});
        if let Some(t) = tgps {
            p["spec"]["terminationGracePeriodSeconds"] = json!(t);
        }
        p
    }

    fn deleting(mut object: Value, at: &str, grace: i64) -> Value {
        object["metadata"]["deletionTimestamp"] = json!(at);
        object["metadata"]["deletionGracePeriodSeconds"] = json!(grace);
        object
    }

    #[test]
    fn pod_grace_periods() {
        type GraceCase<'a> = (&'a str, &'a str, Option<i64>, Option<i64>, i64);
        let cases: &[GraceCase<'_>] = &[
            // node, phase, terminationGracePeriodSeconds, requested → period
            ("n1", "Running", Some(45), None, 45),
            ("n1", "Running", None, None, 30),
            ("n1", "Running", Some(45), Some(5), 5),
            ("n1", "Running", Some(45), Some(0), 0),
            ("n1", "Running", Some(45), Some(-3), 1),
            ("", "Pending", Some(45), Some(10), 0),
            ("n1", "Succeeded", Some(45), None, 0),
            ("n1", "Failed", Some(45), Some(20), 0),
        ];
        for (node, phase, tgps, requested, want) in cases {
            assert_eq!(
                pod_grace_period(&pod(node, phase, *tgps), *requested),
                *want,
                "{node} {phase} {tgps:?} {requested:?}"
            );
        }
    }

    /// (object, kind, options) → (plan kind, deletionTimestamp, grace, finalizers)
    #[test]
    fn delete_plans() {
        type Case = (
            Value,
            Graceful,
            DeleteOptions,
            &'static str,
            Option<&'static str>,
            Option<i64>,
            &'static [&'static str],
        );
        let cm = json!({"metadata": {"name": "c"}});
        let with_fin = json!({"metadata": {"name": "c", "finalizers": ["x/y"]}});
        let running = pod("n1", "Running", Some(30));
        let cases: Vec<Case> = vec![
            (
                cm.clone(),
                Graceful::No,
                opts(None, None, None),
                "delete",
                None,
                None,
                &[],
            ),
            (
                cm.clone(),
                Graceful::No,
                opts(None, Some("Background"), None),
                "delete",
                None,
                None,
                &[],
            ),
            (
                cm.clone(),
                Graceful::No,
                opts(None, Some("Foreground"), None),
                "linger",
                Some("2023-11-14T22:13:20Z"),
                Some(0),
                &["foregroundDeletion"],
            ),
            (
                cm.clone(),
                Graceful::No,
                opts(None, Some("Orphan"), None),
                "linger",
                Some("2023-11-14T22:13:20Z"),
                Some(0),
                &["orphan"],
            ),
            (
                cm.clone(),
                Graceful::No,
                opts(None, None, Some(true)),
                "linger",
                Some("2023-11-14T22:13:20Z"),
                Some(0),
                &["orphan"],
            ),
            (
                cm,
                Graceful::No,
                opts(None, None, Some(false)),
                "delete",
                None,
                None,
                &[],
            ),
            (
                with_fin,
                Graceful::No,
                opts(None, None, None),
                "linger",
                Some("2023-11-14T22:13:20Z"),
                Some(0),
                &["x/y"],
            ),
            // A later DELETE switches an orphan deletion to background: the finalizer goes.
            (
                json!({"metadata": {"name": "c", "finalizers": ["orphan"], "deletionTimestamp": "2023-11-14T22:00:00Z", "deletionGracePeriodSeconds": 0}}),
                Graceful::No,
                opts(None, Some("Background"), None),
                "delete",
                None,
                None,
                &[],
            ),
            // Pods: graceful on a node.
            (
                running.clone(),
                Graceful::Pod,
                opts(None, None, None),
                "linger",
                Some("2023-11-14T22:13:50Z"),
                Some(30),
                &[],
            ),
            (
                running.clone(),
                Graceful::Pod,
                opts(Some(10), None, None),
                "linger",
                Some("2023-11-14T22:13:30Z"),
                Some(10),
                &[],
            ),
            (
                running.clone(),
                Graceful::Pod,
                opts(Some(0), None, None),
                "delete+write",
                Some("2023-11-14T22:13:20Z"),
                Some(0),
                &[],
            ),
            (
                pod("", "Pending", Some(30)),
                Graceful::Pod,
                opts(None, None, None),
                "delete+write",
                Some("2023-11-14T22:13:20Z"),
                Some(0),
                &[],
            ),
            (
                pod("n1", "Succeeded", Some(30)),
                Graceful::Pod,
                opts(None, None, None),
                "delete+write",
                Some("2023-11-14T22:13:20Z"),
                Some(0),
                &[],
            ),
            // Pending graceful deletion: longer or equal → unchanged; shorter → shortened.
            (
                deleting(running.clone(), "2023-11-14T22:13:50Z", 30),
                Graceful::Pod,
                opts(Some(60), None, None),
                "unchanged",
                None,
                None,
                &[],
            ),
            (
                deleting(running.clone(), "2023-11-14T22:13:50Z", 30),
                Graceful::Pod,
                opts(None, None, None),
                "unchanged",
                None,
                None,
                &[],
            ),
            (
                deleting(running.clone(), "2023-11-14T22:13:50Z", 30),
                Graceful::Pod,
                opts(Some(5), None, None),
                "linger",
                Some("2023-11-14T22:13:25Z"),
                Some(5),
                &[],
            ),
            (
                deleting(running.clone(), "2023-11-14T22:13:50Z", 30),
                Graceful::Pod,
                opts(Some(0), None, None),
                "delete+write",
                Some("2023-11-14T22:13:20Z"),
                Some(0),
                &[],
            ),
            (
                deleting(running.clone(), "2023-11-14T22:13:20Z", 0),
                Graceful::Pod,
                opts(None, None, None),
                "delete",
                None,
                None,
                &[],
            ),
            // A foreground pod deletion lingers even with grace 0.
            (
                running,
                Graceful::Pod,
                opts(Some(0), Some("Foreground"), None),
                "linger",
                Some("2023-11-14T22:13:20Z"),
                Some(0),
                &["foregroundDeletion"],
            ),
        ];
        for (i, (object, kind, options, want, stamp, grace, fins)) in cases.into_iter().enumerate()
        {
            let plan = plan_delete(kind, &object, &options, NOW);
            let (name, written) = match &plan {
                Plan::DeleteNow(None) => ("delete", None),
                Plan::DeleteNow(Some(o)) => ("delete+write", Some(o)),
                Plan::Linger(o) => ("linger", Some(o)),
                Plan::Unchanged => ("unchanged", None),
            };
            assert_eq!(name, want, "case {i}: {plan:?}");
            if let Some(o) = written {
                assert_eq!(
                    o.pointer("/metadata/deletionTimestamp")
                        .and_then(Value::as_str),
                    stamp,
                    "case {i}"
                );
                assert_eq!(
                    o.pointer("/metadata/deletionGracePeriodSeconds")
                        .and_then(Value::as_i64),
                    grace,
                    "case {i}"
                );
                assert_eq!(finalizers(o), *fins, "case {i}");
            }
        }
    }

    #[test]
    fn graceful_pod_deletion_bumps_generation() {
        let Plan::Linger(o) = plan_delete(
            Graceful::Pod,
            &pod("n1", "Running", None),
            &opts(None, None, None),
            NOW,
        ) else {
            panic!("lingers");
        };
        assert_eq!(o["metadata"]["generation"], 2);
    }

    #[test]
    fn namespace_deletion_two_phases() {
        let ns = json!({"metadata": {"name": "t"}, "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}});
        let Plan::Linger(first) = plan_namespace_delete(&ns, &opts(None, None, None), NOW) else {
            panic!("first delete marks it");
        };
        assert_eq!(first["status"]["phase"], "Terminating");
        assert_eq!(
            first["metadata"]["deletionTimestamp"],
            "2023-11-14T22:13:20Z"
        );
        assert!(first["metadata"].get("finalizers").is_none());
        assert_eq!(
            plan_namespace_delete(&first, &opts(None, None, None), NOW),
            Plan::Unchanged
        );
        let mut finalized = first;
        finalized["spec"]["finalizers"] = json!([]);
        assert_eq!(
            plan_namespace_delete(&finalized, &opts(None, None, None), NOW),
            Plan::DeleteNow(None)
        );
        let Plan::Linger(fg) = plan_namespace_delete(&ns, &opts(None, None, Some(false)), NOW)
        else {
            panic!("lingers");
        };
        assert_eq!(finalizers(&fg), ["foregroundDeletion"]);
        let Plan::Linger(or) = plan_namespace_delete(&ns, &opts(None, Some("Orphan"), None), NOW)
        else {
            panic!("lingers");
        };
        assert_eq!(finalizers(&or), ["orphan"]);
    }
}
