//! Node-pressure eviction, as upstream's eviction manager (`pkg/kubelet/eviction`): when memory,
//! disk or PIDs run low against `evictionHard`/`evictionSoft`, report the pressure in the Node
//! conditions and evict one pod at a time until the signal recovers.
//!
//! - [`signals`]: the signals and thresholds, read from the kubelet configuration (pure);
//! - [`plan`]: thresholds met, grace periods, pressure conditions (pure, table-tested);
//! - [`rank`]: which pod goes, and the eviction message (pure, table-tested).

pub mod notify;
pub mod plan;
pub mod rank;
pub mod signals;

pub use plan::{Decision, Observation, Observations, State};
pub use rank::{PodUsage, Victim};
pub use signals::{Condition, EvictionConfig, Signal, Threshold};
