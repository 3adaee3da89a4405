//! Pod semantics: [`defaults`] (upstream's API defaults for pods and templates), validation
//! of a spec, template or pod on create ([`validate_pod_spec`], [`validate_pod_template`],
//! [`validate_pod`]) and of an update ([`validate_pod_update`]), the QoS class and effective
//! resources ([`qos`]), and pod builders for tests ([`testing`]).

mod container;
pub mod defaults;
pub mod qos;
pub mod testing;
mod update;
mod validation;
mod volumes;

#[cfg(test)]
mod tests;

pub use container::{
    PROTOCOLS, check_port_num_or_name, check_quantity, is_valid_resource_name, validate_resources,
};
pub use defaults::{
    DefaultSet, default_pod, default_pod_spec, default_pull_policy, default_pvc_spec,
};
pub use update::{UPDATABLE_POD_SPEC_FIELDS, validate_pod_update};
pub use validation::{
    DNS_POLICIES, RESTART_POLICIES, validate_pod, validate_pod_spec, validate_pod_template,
    validate_tolerations,
};
pub use volumes::{HOST_PATH_TYPES, volume_source_names};
