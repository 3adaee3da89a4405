//! Our cgroup resource configs as systemd unit properties (pure), with the property names and
//! D-Bus types of org.freedesktop.systemd1(5) and the conversions systemd expects:
//!
//! | setting            | cgroup v1                | cgroup v2                 | type |
//! |--------------------|--------------------------|---------------------------|------|
//! | CPU shares         | `CPUShares` (2..262144)  | `CPUWeight` (1..10000)    | `t`  |
//! | CFS period         | `CPUQuotaPeriodUSec`     | same (systemd ≥ 242 only) | `t`  |
//! | CFS quota          | `CPUQuotaPerSecUSec`     | same                      | `t`  |
//! | memory limit       | `MemoryLimit`            | `MemoryMax`               | `t`  |
//! | pids limit         | `TasksMax`               | same                      | `t`  |
//! | accounting         | `CPUAccounting`, `MemoryAccounting`, `TasksAccounting`, `BlockIOAccounting` (v1) / `IOAccounting` (v2) | | `b` |
//!
//! No limit is `u64::MAX`, systemd's "infinity". The quota is per second of CPU time, not per
//! period; systemd keeps it exactly at run time but persists it as a whole percentage
//! (`CPUQuota=N%`, i.e. 10 ms steps), so it is rounded *up* to a multiple of 10 ms per second,
//! as runc does: the limit never ends below the request and survives a `daemon-reload`. Weights
//! on v2 come from shares with the same conversion as for cgroupfs (`shares_to_weight`), not
//! systemd's own `CPUShares` → weight mapping. The accounting toggles are what makes systemd
//! enable the cpu, memory, pids and io controllers for the slice (v2) or create it in those
//! hierarchies (v1).
//!
//! New slices also get `Description`, `Wants=<parent slice>` and `DefaultDependencies=no`
//! (no implicit ordering against shutdown.target and friends), as runc gives them. `Delegate`
//! is not set: systemd refuses it on slices; the runtime's container scopes below a pod slice
//! carry it.

use super::{PropertyValue, UnitProperty};
use crate::cgroups::values::{CFS_PERIOD_US, Limit, ResourceConfig, shares_to_weight};

/// systemd's "infinity" for limits and `CPUQuotaPerSecUSec`.
pub const INFINITY: u64 = u64::MAX;
/// The first systemd release with `CPUQuotaPeriodUSec`.
pub const QUOTA_PERIOD_MIN_VERSION: u32 = 242;
const USEC_PER_SEC: u64 = 1_000_000;
/// The granularity systemd persists `CPUQuota` in (1 % of a CPU second).
const QUOTA_STEP_USEC: u64 = 10_000;

/// What the properties are rendered for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Target {
    /// cgroup v2 (unified hierarchy) rather than v1 or hybrid.
    pub unified: bool,
    /// systemd's major version; 0 when unknown (then only properties every supported release
    /// has are sent).
    pub systemd_version: u32,
}

/// A limit as systemd takes it: a value, or `u64::MAX` for none. A negative value (v1's
/// "unlimited") is none too.
pub fn limit_value(limit: Limit) -> u64 {
    match limit {
        Limit::Max => INFINITY,
        Limit::Value(v) => u64::try_from(v).unwrap_or(INFINITY),
    }
}

/// `CPUQuotaPerSecUSec` for a CFS quota per period (both in µs): the quota per CPU second,
/// rounded up to 10 ms; `u64::MAX` without a quota. A period of 0 counts as the default.
pub fn cpu_quota_per_sec(quota: Limit, period_us: u64) -> u64 {
    let Limit::Value(quota) = quota else {
        return INFINITY;
    };
    let Ok(quota) = u64::try_from(quota) else {
        return INFINITY;
    };
    if quota == 0 {
        return INFINITY;
    }
    let period = if period_us == 0 {
        CFS_PERIOD_US
    } else {
        period_us
    };
    let per_sec = u128::from(quota) * u128::from(USEC_PER_SEC) / u128::from(period);
    let step = u128::from(QUOTA_STEP_USEC);
    let rounded = per_sec.div_ceil(step) * step;
    // Beyond what systemd can express: no limit.
    u64::try_from(rounded).unwrap_or(INFINITY)
}

fn bool_prop(name: &'static str, value: bool) -> UnitProperty {
    UnitProperty::new(name, PropertyValue::Bool(value))
}

fn u64_prop(name: &'static str, value: u64) -> UnitProperty {
    UnitProperty::new(name, PropertyValue::U64(value))
}

/// The accounting toggles that make systemd manage the controllers we set limits in.
pub fn accounting(target: Target) -> Vec<UnitProperty> {
    vec![
        bool_prop("CPUAccounting", true),
        bool_prop("MemoryAccounting", true),
        bool_prop("TasksAccounting", true),
        bool_prop(
            if target.unified {
                "IOAccounting"
            } else {
                "BlockIOAccounting"
            },
            true,
        ),
    ]
}

/// The resource properties of a config; settings the config leaves alone (`None`) are not
/// sent.
pub fn resources(config: &ResourceConfig, target: Target) -> Vec<UnitProperty> {
    let mut out = Vec::new();
    if let Some(shares) = config.cpu_shares {
        out.push(if target.unified {
            u64_prop("CPUWeight", shares_to_weight(shares))
        } else {
            u64_prop("CPUShares", shares)
        });
    }
    if let Some(period) = config.cpu_period
        && target.systemd_version >= QUOTA_PERIOD_MIN_VERSION
    {
        out.push(u64_prop("CPUQuotaPeriodUSec", period));
    }
    if config.cpu_quota.is_some() || config.cpu_period.is_some() {
        let quota = config.cpu_quota.unwrap_or(Limit::Max);
        let period = config.cpu_period.unwrap_or(CFS_PERIOD_US);
        out.push(u64_prop(
            "CPUQuotaPerSecUSec",
            cpu_quota_per_sec(quota, period),
        ));
    }
    if let Some(memory) = config.memory {
        let name = if target.unified {
            "MemoryMax"
        } else {
            "MemoryLimit"
        };
        out.push(u64_prop(name, limit_value(memory)));
    }
    if let Some(pids) = config.pids {
        out.push(u64_prop("TasksMax", limit_value(pids)));
    }
    out
}

/// Everything a new transient slice is started with.
pub fn new_slice(
    description: &str,
    parent: &str,
    config: &ResourceConfig,
    target: Target,
) -> Vec<UnitProperty> {
    let mut out = vec![
        UnitProperty::new("Description", PropertyValue::Str(description.to_string())),
        UnitProperty::new("Wants", PropertyValue::StrList(vec![parent.to_string()])),
        bool_prop("DefaultDependencies", false),
    ];
    out.extend(update(config, target));
    out
}

/// What an existing slice is updated with (`SetUnitProperties`): the accounting toggles, so an
/// adopted slice gets them too, and the resources.
pub fn update(config: &ResourceConfig, target: Target) -> Vec<UnitProperty> {
    let mut out = accounting(target);
    out.extend(resources(config, target));
    out
}

#[cfg(test)]
mod tests {
    use super::super::fake::show;
    use super::*;
    use crate::cgroups::values::{NodeAllocatable, besteffort_config, node_config};

    const V2: Target = Target {
        unified: true,
        systemd_version: 252,
    };
    const V1: Target = Target {
        unified: false,
        systemd_version: 252,
    };

    #[test]
    fn quota_per_second_table() {
        // (quota µs, period µs, CPUQuotaPerSecUSec)
        let cases = [
            (Limit::Max, 100_000, INFINITY),
            (Limit::Value(0), 100_000, INFINITY),
            (Limit::Value(-1), 100_000, INFINITY),
            // 1m and 10m CPU: the 1 ms minimum quota, exactly 1 %.
            (Limit::Value(1000), 100_000, 10_000),
            // 15m: 1.5 % rounds up to 2 %.
            (Limit::Value(1500), 100_000, 20_000),
            (Limit::Value(25_000), 100_000, 250_000),
            (Limit::Value(50_000), 100_000, 500_000),
            // 1001m: 100.1 % rounds up to 101 %.
            (Limit::Value(100_100), 100_000, 1_010_000),
            (Limit::Value(250_000), 100_000, 2_500_000),
            // Another period: 20 ms per 50 ms is 40 %.
            (Limit::Value(20_000), 50_000, 400_000),
            // Period 0 means the default.
            (Limit::Value(50_000), 0, 500_000),
            // 300 CPUs.
            (Limit::Value(30_000_000), 100_000, 300_000_000),
            // Absurd but must not overflow.
            (Limit::Value(i64::MAX), 1, INFINITY),
        ];
        for (quota, period, want) in cases {
            assert_eq!(cpu_quota_per_sec(quota, period), want, "{quota:?}/{period}");
        }
    }

    #[test]
    fn limits() {
        assert_eq!(limit_value(Limit::Max), u64::MAX);
        assert_eq!(limit_value(Limit::Value(-1)), u64::MAX);
        assert_eq!(limit_value(Limit::Value(4096)), 4096);
    }

    #[test]
    fn resources_table() {
        let pod = ResourceConfig {
            cpu_shares: Some(512),
            cpu_quota: Some(Limit::Value(50_000)),
            cpu_period: Some(CFS_PERIOD_US),
            memory: Some(Limit::Value(64 << 20)),
            pids: Some(Limit::Value(100)),
        };
        let unlimited = ResourceConfig {
            cpu_shares: Some(2),
            cpu_quota: Some(Limit::Max),
            cpu_period: Some(CFS_PERIOD_US),
            memory: Some(Limit::Max),
            pids: Some(Limit::Max),
        };
        let old = |unified| Target {
            unified,
            systemd_version: 239,
        };
        let unknown = Target {
            unified: true,
            systemd_version: 0,
        };
        // (name, config, target, properties)
        let cases: [(&str, ResourceConfig, Target, &[&str]); 8] = [
            (
                "v2 pod",
                pod,
                V2,
                &[
                    "CPUWeight=20",
                    "CPUQuotaPeriodUSec=100000",
                    "CPUQuotaPerSecUSec=500000",
                    "MemoryMax=67108864",
                    "TasksMax=100",
                ],
            ),
            (
                "v1 pod",
                pod,
                V1,
                &[
                    "CPUShares=512",
                    "CPUQuotaPeriodUSec=100000",
                    "CPUQuotaPerSecUSec=500000",
                    "MemoryLimit=67108864",
                    "TasksMax=100",
                ],
            ),
            (
                "v2 unlimited",
                unlimited,
                V2,
                &[
                    "CPUWeight=1",
                    "CPUQuotaPeriodUSec=100000",
                    "CPUQuotaPerSecUSec=infinity",
                    "MemoryMax=infinity",
                    "TasksMax=infinity",
                ],
            ),
            (
                "v1 unlimited",
                unlimited,
                V1,
                &[
                    "CPUShares=2",
                    "CPUQuotaPeriodUSec=100000",
                    "CPUQuotaPerSecUSec=infinity",
                    "MemoryLimit=infinity",
                    "TasksMax=infinity",
                ],
            ),
            (
                "systemd 239 has no CPUQuotaPeriodUSec (v1)",
                pod,
                old(false),
                &[
                    "CPUShares=512",
                    "CPUQuotaPerSecUSec=500000",
                    "MemoryLimit=67108864",
                    "TasksMax=100",
                ],
            ),
            (
                "unknown version: no CPUQuotaPeriodUSec",
                pod,
                unknown,
                &[
                    "CPUWeight=20",
                    "CPUQuotaPerSecUSec=500000",
                    "MemoryMax=67108864",
                    "TasksMax=100",
                ],
            ),
            ("nothing to set", ResourceConfig::default(), V2, &[]),
            (
                "besteffort QoS slice",
                besteffort_config(),
                V2,
                &["CPUWeight=1"],
            ),
        ];
        for (name, config, target, want) in cases {
            assert_eq!(show(&resources(&config, target)), want, "{name}");
        }
        let node = node_config(Some(NodeAllocatable {
            cpu_milli: 1500,
            memory_bytes: 3 << 30,
        }));
        assert_eq!(
            show(&resources(&node, V2)),
            ["CPUWeight=59", "MemoryMax=3221225472"]
        );
        assert_eq!(
            show(&resources(&node, V1)),
            ["CPUShares=1536", "MemoryLimit=3221225472"]
        );
        // A quota without a period is per the default period, and sends no period.
        let quota_only = ResourceConfig {
            cpu_quota: Some(Limit::Value(20_000)),
            ..ResourceConfig::default()
        };
        assert_eq!(
            show(&resources(&quota_only, V2)),
            ["CPUQuotaPerSecUSec=200000"]
        );
    }

    #[test]
    fn new_slice_and_update() {
        let config = besteffort_config();
        assert_eq!(
            show(&new_slice(
                "kwk-node QoS class BestEffort",
                "kubepods.slice",
                &config,
                V2
            )),
            [
                "Description=\"kwk-node QoS class BestEffort\"",
                "Wants=[\"kubepods.slice\"]",
                "DefaultDependencies=false",
                "CPUAccounting=true",
                "MemoryAccounting=true",
                "TasksAccounting=true",
                "IOAccounting=true",
                "CPUWeight=1",
            ]
        );
        assert_eq!(
            show(&update(&config, V1)),
            [
                "CPUAccounting=true",
                "MemoryAccounting=true",
                "TasksAccounting=true",
                "BlockIOAccounting=true",
                "CPUShares=2",
            ]
        );
        let types: Vec<&str> = new_slice("d", "-.slice", &config, V2)
            .iter()
            .map(|p| p.value.signature())
            .collect();
        assert_eq!(types, ["s", "as", "b", "b", "b", "b", "b", "t"]);
    }
}
