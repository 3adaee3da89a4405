//! The label and annotation keys kwk-node writes on CRI sandboxes and containers, and on static
//! pods. They are the only state a restarted kwk-node needs to adopt what it started, so they
//! are a stable format: keys match the upstream kubelet's where one exists.

/// Pod name (sandbox and container label).
pub const POD_NAME: &str = "io.kubernetes.pod.name";
/// Pod namespace (sandbox and container label).
pub const POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
/// Pod UID (sandbox and container label).
pub const POD_UID: &str = "io.kubernetes.pod.uid";
/// Container name (container label).
pub const CONTAINER_NAME: &str = "io.kubernetes.container.name";
/// Marks sandboxes and containers kwk-node created, so it never touches anything else on the
/// same runtime (value `"true"`).
pub const MANAGED: &str = "io.kwk.managed";

/// How many times this container was restarted before this instance (container annotation).
pub const RESTART_COUNT: &str = "io.kubernetes.container.restartCount";
/// Where the container writes its termination message (container annotation).
pub const TERMINATION_MESSAGE_PATH: &str = "io.kubernetes.container.terminationMessagePath";
/// `File` or `FallbackToLogsOnError` (container annotation).
pub const TERMINATION_MESSAGE_POLICY: &str = "io.kubernetes.container.terminationMessagePolicy";
/// The pod's termination grace period in seconds (container annotation).
pub const POD_TERMINATION_GRACE_PERIOD: &str = "io.kubernetes.pod.terminationGracePeriod";
/// The versioned fingerprint of the container's spec, `v1:<hex>` (container annotation): a
/// running container whose fingerprint differs from the desired spec is replaced.
pub const CONTAINER_FINGERPRINT: &str = "io.kwk.container.fingerprint";
/// `init`, `sidecar` or `app` (container label).
pub const CONTAINER_KIND: &str = "io.kwk.container.kind";

/// Static pod annotation: the hash of the manifest's pod, also its UID.
pub const CONFIG_HASH: &str = "kubernetes.io/config.hash";
/// Static pod annotation: where the pod came from (`file`).
pub const CONFIG_SOURCE: &str = "kubernetes.io/config.source";
/// Static pod annotation: when kwk-node first saw this version (RFC 3339).
pub const CONFIG_SEEN: &str = "kubernetes.io/config.seen";
/// Mirror pod annotation (set on the API copy of a static pod; used from the node issue on).
pub const CONFIG_MIRROR: &str = "kubernetes.io/config.mirror";
