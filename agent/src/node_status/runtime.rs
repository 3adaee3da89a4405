//! What the node reports about its container runtime: the version (`containerd://1.6.20`), the
//! readiness errors that make the node NotReady (worded as upstream's kubelet words them), and
//! the images it holds. [`RuntimeSource`] abstracts the CRI so tests can feed facts directly.

use std::future::Future;

use kwk_cri::CriClient;
use kwk_cri::api;

/// One runtime condition as the CRI reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeCondition {
    pub type_: String,
    pub status: bool,
    pub reason: String,
    pub message: String,
}

/// An image on the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeImage {
    pub repo_tags: Vec<String>,
    pub repo_digests: Vec<String>,
    pub size_bytes: u64,
}

/// What the runtime said at the last look.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RuntimeFacts {
    /// `<runtime name>://<version>`; `None` when the Version call failed.
    pub version: Option<String>,
    /// The CRI Status conditions; `None` when the Status call failed.
    pub conditions: Option<Vec<RuntimeCondition>>,
    /// The images; `None` when ListImages failed (the last reported list is kept).
    pub images: Option<Vec<RuntimeImage>>,
}

/// Where runtime facts come from.
pub trait RuntimeSource: Send + Sync + 'static {
    fn facts(&self) -> impl Future<Output = RuntimeFacts> + Send;
}

impl RuntimeSource for CriClient {
    async fn facts(&self) -> RuntimeFacts {
        let version = match self.version().await {
            Ok(v) => Some(format!("{}://{}", v.runtime_name, v.runtime_version)),
            Err(err) => {
                tracing::warn!(%err, "container runtime version");
                None
            }
        };
        let conditions = match self.status(false).await {
            Ok(verbose) => Some(conditions_of(&verbose.status)),
            Err(err) => {
                tracing::warn!(%err, "container runtime status");
                None
            }
        };
        let images = match self.list_images(None).await {
            Ok(images) => Some(images.iter().map(image_of).collect()),
            Err(err) => {
                tracing::warn!(%err, "listing images");
                None
            }
        };
        RuntimeFacts {
            version,
            conditions,
            images,
        }
    }
}

/// The runtime's conditions as its `Status` reports them.
pub fn conditions_of(status: &api::RuntimeStatus) -> Vec<RuntimeCondition> {
    status
        .conditions
        .iter()
        .map(|c| RuntimeCondition {
            type_: c.r#type.clone(),
            status: c.status,
            reason: c.reason.clone(),
            message: c.message.clone(),
        })
        .collect()
}

fn image_of(image: &api::Image) -> RuntimeImage {
    RuntimeImage {
        repo_tags: image.repo_tags.clone(),
        repo_digests: image.repo_digests.clone(),
        size_bytes: image.size,
    }
}

/// The CRI condition that says the runtime can run containers.
pub const RUNTIME_READY: &str = "RuntimeReady";
/// The CRI condition that says pod networking is set up.
pub const NETWORK_READY: &str = "NetworkReady";

/// Why the runtime keeps the node from being Ready, in upstream's words and order (runtime
/// errors, then network errors); empty when it is ready.
pub fn readiness_errors(conditions: Option<&[RuntimeCondition]>) -> Vec<String> {
    let Some(conditions) = conditions else {
        return vec!["container runtime is down".to_string()];
    };
    let mut errors = Vec::new();
    if let Some(runtime) = describe(conditions, RUNTIME_READY) {
        errors.push(format!("container runtime not ready: {runtime}"));
    }
    errors.extend(network_error(conditions));
    errors
}

/// Why pod networking is not ready, in upstream's words; `None` when it is.
pub fn network_error(conditions: &[RuntimeCondition]) -> Option<String> {
    describe(conditions, NETWORK_READY)
        .map(|network| format!("container runtime network not ready: {network}"))
}

/// A condition that is not true, as upstream prints it (`<nil>` when missing).
fn describe(conditions: &[RuntimeCondition], type_: &str) -> Option<String> {
    match conditions.iter().find(|c| c.type_ == type_) {
        Some(c) if c.status => None,
        Some(c) => Some(format!(
            "{}={} reason:{} message:{}",
            c.type_, c.status, c.reason, c.message
        )),
        None => Some("<nil>".to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn condition(type_: &str, status: bool, reason: &str, message: &str) -> RuntimeCondition {
        RuntimeCondition {
            type_: type_.into(),
            status,
            reason: reason.into(),
            message: message.into(),
        }
    }

    #[test]
    fn readiness_errors_are_worded_as_upstream() {
        let ready = condition(RUNTIME_READY, true, "", "");
        let network_ready = condition(NETWORK_READY, true, "", "");
        let no_cni = condition(
            NETWORK_READY,
            false,
            "NetworkPluginNotReady",
            "Network plugin returns error: cni plugin not initialized",
        );
        type Case<'a> = (&'a str, Option<Vec<RuntimeCondition>>, Vec<&'a str>);
        let cases: Vec<Case<'_>> = vec![
            ("ready", Some(vec![ready.clone(), network_ready]), vec![]),
            (
                "no network",
                Some(vec![ready, no_cni]),
                vec![
                    "container runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady message:Network plugin returns error: cni plugin not initialized",
                ],
            ),
            (
                "runtime not ready, network condition missing",
                Some(vec![condition(RUNTIME_READY, false, "Broken", "x")]),
                vec![
                    "container runtime not ready: RuntimeReady=false reason:Broken message:x",
                    "container runtime network not ready: <nil>",
                ],
            ),
            ("status failed", None, vec!["container runtime is down"]),
        ];
        for (name, conditions, expected) in cases {
            assert_eq!(readiness_errors(conditions.as_deref()), expected, "{name}");
        }
    }
}
