//! Resource amounts the way the scheduler adds them up: CPU in millicores, memory and
//! ephemeral storage in bytes, the `pods` slot count, and scalar resources (extended
//! resources such as `example.com/gpu`, `hugepages-*`, `attachable-volumes-*`) as whole units.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity as ApiQuantity;
use kwk_api::pod::qos::ResourceList;

/// Resource name of ephemeral storage.
pub const EPHEMERAL_STORAGE: &str = "ephemeral-storage";
/// Resource name of the pod slot count in a node's allocatable.
pub const PODS: &str = "pods";
/// CPU a container without a CPU request counts as when scoring (upstream's 100m).
pub const DEFAULT_MILLI_CPU_REQUEST: i64 = 100;
/// Memory a container without a memory request counts as when scoring (upstream's 200Mi).
pub const DEFAULT_MEMORY_REQUEST: i64 = 200 * 1024 * 1024;

/// An amount of every resource the scheduler accounts for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resources {
    pub milli_cpu: i64,
    pub memory: i64,
    pub ephemeral_storage: i64,
    /// Pod slots (only meaningful for a node's allocatable).
    pub pods: i64,
    /// Scalar resources by name, sorted by name.
    pub scalar: Vec<(String, i64)>,
}

/// Whether the scheduler accounts for `name` as a scalar resource (extended resources,
/// prefixed native resources, huge pages, attachable volumes).
pub fn is_scalar_resource(name: &str) -> bool {
    name.starts_with("hugepages-") || name.starts_with("attachable-volumes-") || name.contains('/')
}

impl Resources {
    /// Resources of a parsed resource list (a pod's effective requests).
    pub fn from_list(list: &ResourceList) -> Self {
        let mut out = Resources::default();
        for (name, q) in list {
            out.set(name, if name == "cpu" { q.milli() } else { q.value() });
        }
        out
    }

    /// Resources of an API resource list (a node's allocatable); amounts that do not parse
    /// count as zero.
    pub fn from_api(list: Option<&BTreeMap<String, ApiQuantity>>) -> Self {
        let mut out = Resources::default();
        for (name, q) in list.into_iter().flatten() {
            let Ok(parsed) = kwk_api::quantity::parse(&q.0) else {
                continue;
            };
            out.set(
                name,
                if name == "cpu" {
                    parsed.milli()
                } else {
                    parsed.value()
                },
            );
        }
        out
    }

    fn set(&mut self, name: &str, amount: i64) {
        match name {
            "cpu" => self.milli_cpu = amount,
            "memory" => self.memory = amount,
            EPHEMERAL_STORAGE => self.ephemeral_storage = amount,
            PODS => self.pods = amount,
            other if is_scalar_resource(other) => match self.scalar_slot(other) {
                Ok(i) => self.scalar[i].1 = amount,
                Err(i) => self.scalar.insert(i, (other.to_string(), amount)),
            },
            _ => {}
        }
    }

    fn scalar_slot(&self, name: &str) -> Result<usize, usize> {
        self.scalar.binary_search_by(|(n, _)| n.as_str().cmp(name))
    }

    /// The amount of scalar resource `name` (0 when absent).
    pub fn scalar(&self, name: &str) -> i64 {
        self.scalar_slot(name).map_or(0, |i| self.scalar[i].1)
    }

    /// Adds `other` into `self`.
    pub fn add(&mut self, other: &Resources) {
        self.combine(other, 1);
    }

    /// Subtracts `other` from `self`.
    pub fn subtract(&mut self, other: &Resources) {
        self.combine(other, -1);
    }

    fn combine(&mut self, other: &Resources, sign: i64) {
        self.milli_cpu += sign * other.milli_cpu;
        self.memory += sign * other.memory;
        self.ephemeral_storage += sign * other.ephemeral_storage;
        self.pods += sign * other.pods;
        for (name, amount) in &other.scalar {
            match self.scalar_slot(name) {
                Ok(i) => self.scalar[i].1 += sign * amount,
                Err(i) => self.scalar.insert(i, (name.clone(), sign * amount)),
            }
        }
    }

    /// Whether nothing at all is requested.
    pub fn is_zero(&self) -> bool {
        self.milli_cpu == 0
            && self.memory == 0
            && self.ephemeral_storage == 0
            && self.scalar.iter().all(|(_, a)| *a == 0)
    }
}
