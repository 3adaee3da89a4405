//! A container's Linux resources as upstream `calculateLinuxResources` sets them: CPU shares
//! from the request, CFS quota/period from the limit, the memory limit, and the OOM score
//! adjustment by QoS class (`qos.GetContainerOOMScoreAdjust`).

use k8s_openapi::api::core::v1::{Container, Pod};
use kwk_cri::api::LinuxContainerResources;

use super::{SpecError, podx};
pub use crate::cgroups::qos::QosClass;
use crate::cgroups::values::{Limit, milli_cpu_to_quota, milli_cpu_to_shares};
use crate::labels;
use crate::quantity;

/// The CFS period the kubelet uses by default, in microseconds.
pub const CFS_PERIOD_US: i64 = 100_000;
const GUARANTEED_OOM_SCORE_ADJ: i64 = -997;
const BEST_EFFORT_OOM_SCORE_ADJ: i64 = 1000;
/// Priority class of pods that must be the last to be OOM-killed.
const SYSTEM_NODE_CRITICAL: &str = "system-node-critical";
/// Priority from which a pod is critical (`scheduling.SystemCriticalPriority`).
const SYSTEM_CRITICAL_PRIORITY: i32 = 2_000_000_000;

/// A container resource amount (`limits`/`requests` → `cpu`/`memory`), parsed.
pub(crate) fn container_amount(
    container: &Container,
    field: &str,
    kind: &str,
    resource: &str,
) -> Result<Option<quantity::Quantity>, SpecError> {
    let resources = container.resources.as_ref();
    let map = match kind {
        "limits" => resources.and_then(|r| r.limits.as_ref()),
        _ => resources.and_then(|r| r.requests.as_ref()),
    };
    map.and_then(|m| m.get(resource))
        .map(|q| {
            quantity::parse(&q.0).map_err(|source| SpecError::Quantity {
                field: format!("{field}.resources.{kind}.{resource}"),
                source,
            })
        })
        .transpose()
}

/// The Linux resources of a container, without the OOM score adjustment.
/// `memory_oom_group` sets `memory.oom.group=1` (upstream does on cgroup v2 unless
/// `singleProcessOOMKill`).
pub fn linux_resources(
    container: &Container,
    field: &str,
    memory_oom_group: bool,
) -> Result<LinuxContainerResources, SpecError> {
    let cpu_request = container_amount(container, field, "requests", "cpu")?;
    let cpu_limit = container_amount(container, field, "limits", "cpu")?.map_or(0, |q| q.milli());
    let memory_limit =
        container_amount(container, field, "limits", "memory")?.map_or(0, |q| q.value());
    // A request defaults to the limit (the API server does this too, for new pods).
    let shares = match cpu_request {
        None if cpu_limit != 0 => milli_cpu_to_shares(cpu_limit),
        request => milli_cpu_to_shares(request.map_or(0, |q| q.milli())),
    };
    // CRI: a quota of 0 means none.
    let quota = match milli_cpu_to_quota(cpu_limit, CFS_PERIOD_US.unsigned_abs()) {
        Limit::Value(q) => q,
        Limit::Max => 0,
    };
    let mut resources = LinuxContainerResources {
        cpu_period: CFS_PERIOD_US,
        cpu_quota: quota,
        cpu_shares: i64::try_from(shares).unwrap_or(i64::MAX),
        memory_limit_in_bytes: memory_limit,
        ..Default::default()
    };
    if memory_oom_group {
        resources
            .unified
            .insert("memory.oom.group".into(), "1".into());
    }
    Ok(resources)
}

/// Upstream `GetContainerOOMScoreAdjust`: node-critical and Guaranteed pods -997, BestEffort
/// 1000, Burstable `1000 - 1000*request/capacity` within [3, 999] (a sidecar never above the
/// smallest app container's value).
pub fn oom_score_adj(
    pod: &Pod,
    container: &Container,
    field: &str,
    qos: QosClass,
    is_sidecar: bool,
    memory_capacity_bytes: i64,
) -> Result<i64, SpecError> {
    if is_node_critical(pod) {
        return Ok(GUARANTEED_OOM_SCORE_ADJ);
    }
    match qos {
        QosClass::Guaranteed => return Ok(GUARANTEED_OOM_SCORE_ADJ),
        QosClass::BestEffort => return Ok(BEST_EFFORT_OOM_SCORE_ADJ),
        QosClass::Burstable => {}
    }
    let capacity = memory_capacity_bytes.max(1);
    let score = |request: i64| {
        1000 - (1000_i128 * i128::from(request) / i128::from(capacity)).min(2000) as i64
    };
    let request =
        container_amount(container, field, "requests", "memory")?.map_or(0, |q| q.value());
    let mut adj = score(request);
    if is_sidecar {
        let mut smallest: Option<i64> = None;
        for (index, app) in podx::spec(pod)
            .map(|s| s.containers.as_slice())
            .unwrap_or_default()
            .iter()
            .enumerate()
        {
            let app_field = format!("spec.containers[{index}]");
            let r =
                container_amount(app, &app_field, "requests", "memory")?.map_or(0, |q| q.value());
            smallest = Some(smallest.map_or(r, |s| s.min(r)));
        }
        if let Some(min) = smallest.filter(|m| *m != 0) {
            adj = adj.min(score(min));
        }
    }
    if adj < 1000 + GUARANTEED_OOM_SCORE_ADJ {
        return Ok(1000 + GUARANTEED_OOM_SCORE_ADJ);
    }
    if adj == BEST_EFFORT_OOM_SCORE_ADJ {
        return Ok(adj - 1);
    }
    Ok(adj)
}

/// A static or mirror pod (or one at system-critical priority) in `system-node-critical`.
fn is_node_critical(pod: &Pod) -> bool {
    let spec = podx::spec(pod);
    if spec.and_then(|s| s.priority_class_name.as_deref()) != Some(SYSTEM_NODE_CRITICAL) {
        return false;
    }
    let annotations = pod.metadata.annotations.as_ref();
    let is_static = annotations
        .and_then(|a| a.get(labels::CONFIG_SOURCE))
        .is_some_and(|source| source != "api");
    let is_mirror = annotations.is_some_and(|a| a.contains_key(labels::CONFIG_MIRROR));
    let priority = spec.and_then(|s| s.priority).unwrap_or(0);
    is_static || is_mirror || priority >= SYSTEM_CRITICAL_PRIORITY
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime_spec::testpod::pod;

    fn resources(res: &str) -> LinuxContainerResources {
        let p = pod(&format!(
            "metadata: {{name: p}}\nspec:\n  containers:\n  - name: c\n    resources: {res}\n"
        ));
        linux_resources(&p.spec.unwrap().containers[0], "spec.containers[0]", false).unwrap()
    }

    #[test]
    fn linux_resources_table() {
        let cases = [
            ("{}", (100_000, 0, 2, 0)),
            ("{requests: {cpu: 250m}}", (100_000, 0, 256, 0)),
            (
                "{limits: {cpu: 500m, memory: 64Mi}}",
                (100_000, 50_000, 512, 67_108_864),
            ),
            (
                "{requests: {cpu: 100m}, limits: {cpu: '2'}}",
                (100_000, 200_000, 102, 0),
            ),
            (
                "{requests: {cpu: '0'}, limits: {cpu: '1'}}",
                (100_000, 100_000, 2, 0),
            ),
        ];
        for (res, want) in cases {
            let r = resources(res);
            assert_eq!(
                (
                    r.cpu_period,
                    r.cpu_quota,
                    r.cpu_shares,
                    r.memory_limit_in_bytes
                ),
                want,
                "{res}"
            );
            assert_eq!(r.oom_score_adj, 0);
        }
        let p = pod("metadata: {name: p}\nspec: {containers: [{name: c}]}\n");
        let r = linux_resources(&p.spec.unwrap().containers[0], "f", true).unwrap();
        assert_eq!(
            r.unified.get("memory.oom.group").map(String::as_str),
            Some("1")
        );
    }

    #[test]
    fn bad_quantity_names_the_field() {
        let p = pod(
            "metadata: {name: p}\nspec: {containers: [{name: c, resources: {limits: {cpu: lots}}}]}\n",
        );
        let err = linux_resources(&p.spec.unwrap().containers[0], "spec.containers[0]", false)
            .unwrap_err();
        assert!(
            matches!(err, SpecError::Quantity { ref field, .. } if field == "spec.containers[0].resources.limits.cpu"),
            "{err:?}"
        );
    }

    #[test]
    fn oom_score_adj_table() {
        const GI: i64 = 1 << 30;
        let burst = |mem: &str| {
            pod(&format!(
                "metadata: {{name: p}}\nspec:\n  containers:\n  - name: c\n    resources: {{requests: {{memory: {mem}}}}}\n"
            ))
        };
        let cases: Vec<(Pod, QosClass, i64)> = vec![
            (burst("1Gi"), QosClass::Guaranteed, -997),
            (burst("1Gi"), QosClass::BestEffort, 1000),
            (burst("1Gi"), QosClass::Burstable, 1000 - 1000 / 10),
            (burst("10Gi"), QosClass::Burstable, 3),
            (burst("20Gi"), QosClass::Burstable, 3),
            (burst("1"), QosClass::Burstable, 999),
            (burst("0"), QosClass::Burstable, 999),
        ];
        for (p, qos, want) in cases {
            let c = p.spec.as_ref().unwrap().containers[0].clone();
            assert_eq!(
                oom_score_adj(&p, &c, "f", qos, false, 10 * GI).unwrap(),
                want,
                "{qos:?} {:?}",
                c.resources
            );
        }
        // A static pod in system-node-critical is protected whatever its QoS.
        let mut p = burst("1Gi");
        p.spec.as_mut().unwrap().priority_class_name = Some(SYSTEM_NODE_CRITICAL.into());
        let c = p.spec.as_ref().unwrap().containers[0].clone();
        assert_eq!(
            oom_score_adj(&p, &c, "f", QosClass::BestEffort, false, 10 * GI).unwrap(),
            1000
        );
        p.metadata.annotations =
            Some([(labels::CONFIG_SOURCE.to_string(), "file".to_string())].into());
        assert_eq!(
            oom_score_adj(&p, &c, "f", QosClass::BestEffort, false, 10 * GI).unwrap(),
            -997
        );
    }

    #[test]
    fn sidecar_never_scores_above_the_smallest_app_container() {
        let p = pod(r#"
metadata: {name: p}
spec:
  initContainers: [{name: side, restartPolicy: Always, resources: {requests: {memory: 100Mi}}}]
  containers:
  - {name: a, resources: {requests: {memory: 4Gi}}}
  - {name: b, resources: {requests: {memory: 2Gi}}}
"#);
        let side = p.spec.as_ref().unwrap().init_containers.as_ref().unwrap()[0].clone();
        let got = oom_score_adj(&p, &side, "f", QosClass::Burstable, true, 10 << 30).unwrap();
        assert_eq!(got, 1000 - 200);
        let alone = oom_score_adj(&p, &side, "f", QosClass::Burstable, false, 10 << 30).unwrap();
        assert_eq!(alone, 1000 - (1000 * (100 << 20)) / (10 << 30));
    }
}
