//! Pod spec → CRI v1 configs, the way the upstream kubelet's `kuberuntime` builds them for
//! containerd, plus the per-pod host files (volumes, `/etc/hosts`, termination-message files).
//!
//! Everything here is pure except `volumes_fs`, which does the filesystem work a
//! [`volumes::VolumePlan`] describes. The usual flow for one container instance:
//! [`env::resolve_env`] → [`volumes::plan_volumes`] → [`volumes_fs::apply_volume_plan`] →
//! [`container::container_config`] (with the mounts the apply step returned).

pub mod api_objects;
pub mod claims;
pub mod container;
pub mod dns;
pub mod env;
pub mod hosts;
pub mod projection;
pub mod resources;
pub mod sandbox;
pub mod security;
pub mod volumes;
pub mod volumes_fs;

pub use container::{ContainerContext, ContainerKind, ImageUser, NodeSettings, container_config};
pub use dns::DnsContext;
pub use env::{DownwardContext, EnvVars, NodeAllocatable, resolve_env};
pub use resources::QosClass;
pub use sandbox::{SandboxContext, sandbox_config};
pub use volumes::{VolumeContext, VolumePlan, plan_volumes};
pub use volumes_fs::{AppliedVolumes, VolumeError, apply_volume_plan, cleanup_pod_dir};

use k8s_openapi::api::core::v1::{Container, Pod};

use crate::quantity::QuantityError;

/// Why a pod (or one of its containers) cannot be turned into a CRI config. Every variant names
/// the field it is about, as a path into the pod (`spec.containers[0].env[2].valueFrom`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// A feature kwk-node does not implement (yet).
    #[error("{field}: {what} is not supported by kwk-node yet")]
    Unsupported { field: String, what: String },
    /// A value upstream would also refuse at this point.
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
    /// A resource quantity that does not parse.
    #[error("{field}: {source}")]
    Quantity {
        field: String,
        #[source]
        source: QuantityError,
    },
    /// A volumeMount naming a volume the pod does not have.
    #[error("{field}: volume {volume:?} is not defined in spec.volumes")]
    MissingVolume { field: String, volume: String },
    /// `runAsNonRoot` is set but the container would (or might) run as root.
    #[error("{field}: {reason}")]
    RunAsNonRoot { field: String, reason: String },
    /// A downward-API value the caller did not provide (e.g. the node's IP).
    #[error("{field}: {what} is not known yet")]
    NotKnown { field: String, what: String },
}

impl SpecError {
    pub(crate) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn unsupported(field: impl Into<String>, what: impl Into<String>) -> Self {
        Self::Unsupported {
            field: field.into(),
            what: what.into(),
        }
    }
}

/// The field path of a container in its pod: `spec.initContainers[1]` or `spec.containers[0]`
/// (found by name; names are unique across both lists).
pub fn container_field_path(pod: &Pod, container: &Container) -> String {
    let Some(spec) = pod.spec.as_ref() else {
        return format!("spec.containers[{}]", container.name);
    };
    if let Some(index) = spec
        .init_containers
        .iter()
        .flatten()
        .position(|c| c.name == container.name)
    {
        return format!("spec.initContainers[{index}]");
    }
    if let Some(index) = spec
        .containers
        .iter()
        .position(|c| c.name == container.name)
    {
        return format!("spec.containers[{index}]");
    }
    format!("spec.containers[{}]", container.name)
}

/// Small accessors over the many optional fields of a pod.
pub(crate) mod podx {
    use k8s_openapi::api::core::v1::{Pod, PodSpec};

    pub(crate) fn name(pod: &Pod) -> &str {
        pod.metadata.name.as_deref().unwrap_or_default()
    }
    pub(crate) fn namespace(pod: &Pod) -> &str {
        pod.metadata.namespace.as_deref().unwrap_or("default")
    }
    pub(crate) fn uid(pod: &Pod) -> &str {
        pod.metadata.uid.as_deref().unwrap_or_default()
    }
    pub(crate) fn spec(pod: &Pod) -> Option<&PodSpec> {
        pod.spec.as_ref()
    }
    pub(crate) fn host_network(pod: &Pod) -> bool {
        spec(pod).and_then(|s| s.host_network).unwrap_or(false)
    }
}

#[cfg(test)]
pub(crate) mod testpod {
    //! A compact way to write pods in tests: YAML through serde-saphyr.
    use k8s_openapi::api::core::v1::Pod;

    pub(crate) fn pod(yaml: &str) -> Pod {
        serde_saphyr::from_str(yaml).expect("test pod YAML")
    }

    pub(crate) fn minimal() -> Pod {
        pod(r#"
metadata: {name: web, namespace: prod, uid: 1111-2222}
spec:
  containers:
  - name: app
    image: busybox
"#)
    }
}
