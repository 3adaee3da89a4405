//! The node's heartbeat Lease, `kube-node-lease/<node>`: held by the node, renewed every quarter
//! of `nodeLeaseDurationSeconds` (upstream's renew interval fraction), owned by the Node so it
//! goes away with it. [`desired_lease`] is the pure plan; [`renew_loop`] performs it.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference};
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::PostParams;
use tokio_util::sync::CancellationToken;

use super::Backoff;

/// The namespace of node Leases.
pub const NODE_LEASE_NAMESPACE: &str = "kube-node-lease";

/// How often the Lease is renewed: a quarter of its duration.
pub fn renew_interval(lease_duration_seconds: u32) -> Duration {
    Duration::from_secs(u64::from(lease_duration_seconds)) / 4
}

/// The Node as the owner of its Lease.
pub fn node_owner(node: &Node) -> Option<OwnerReference> {
    Some(OwnerReference {
        api_version: "v1".to_string(),
        kind: "Node".to_string(),
        name: node.metadata.name.clone()?,
        uid: node.metadata.uid.clone()?,
        ..OwnerReference::default()
    })
}

/// The Lease to write: `existing` (if any) renewed at `now`, held by the node, with the node as
/// owner when it has none and the Node is known.
pub fn desired_lease(
    existing: Option<&Lease>,
    node_name: &str,
    lease_duration_seconds: u32,
    owner: Option<OwnerReference>,
    now: Timestamp,
) -> Lease {
    let mut lease = existing.cloned().unwrap_or_else(|| Lease {
        metadata: ObjectMeta {
            name: Some(node_name.to_string()),
            namespace: Some(NODE_LEASE_NAMESPACE.to_string()),
            ..ObjectMeta::default()
        },
        spec: None,
    });
    let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
    spec.holder_identity = Some(node_name.to_string());
    spec.lease_duration_seconds = Some(i32::try_from(lease_duration_seconds).unwrap_or(i32::MAX));
    spec.renew_time = Some(MicroTime(now));
    if lease
        .metadata
        .owner_references
        .as_ref()
        .is_none_or(Vec::is_empty)
        && let Some(owner) = owner
    {
        lease.metadata.owner_references = Some(vec![owner]);
    }
    lease
}

/// Renews the Lease until `cancel`; failures are logged and retried with backoff.
pub async fn renew_loop(
    client: kube::Client,
    node_name: String,
    lease_duration_seconds: u32,
    cancel: CancellationToken,
) {
    let interval = renew_interval(lease_duration_seconds);
    let mut backoff = Backoff::new(Duration::from_millis(200), interval);
    loop {
        let wait = match renew_once(&client, &node_name, lease_duration_seconds).await {
            Ok(()) => {
                backoff.reset();
                interval
            }
            Err(err) => {
                tracing::warn!(node = %node_name, %err, "failed to renew the node lease; will retry");
                backoff.next_delay()
            }
        };
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
    }
}

async fn renew_once(
    client: &kube::Client,
    node_name: &str,
    lease_duration_seconds: u32,
) -> Result<(), kube::Error> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), NODE_LEASE_NAMESPACE);
    let existing = leases.get_opt(node_name).await?;
    let has_owner = existing
        .as_ref()
        .and_then(|l| l.metadata.owner_references.as_ref())
        .is_some_and(|o| !o.is_empty());
    let owner = if has_owner {
        None
    } else {
        let nodes: Api<Node> = Api::all(client.clone());
        nodes
            .get_opt(node_name)
            .await?
            .as_ref()
            .and_then(node_owner)
    };
    let lease = desired_lease(
        existing.as_ref(),
        node_name,
        lease_duration_seconds,
        owner,
        Timestamp::now(),
    );
    let params = PostParams::default();
    match existing {
        Some(_) => leases.replace(node_name, &params, &lease).await?,
        None => leases.create(&params, &lease).await?,
    };
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(seconds).unwrap()
    }

    fn owner(uid: &str) -> OwnerReference {
        OwnerReference {
            api_version: "v1".into(),
            kind: "Node".into(),
            name: "n1".into(),
            uid: uid.into(),
            ..OwnerReference::default()
        }
    }

    #[test]
    fn renews_every_quarter_of_the_duration() {
        assert_eq!(renew_interval(40), Duration::from_secs(10));
        assert_eq!(renew_interval(4), Duration::from_secs(1));
    }

    #[test]
    fn plans_the_lease() {
        let fresh = desired_lease(None, "n1", 40, None, at(100));
        assert_eq!(fresh.metadata.name.as_deref(), Some("n1"));
        assert_eq!(
            fresh.metadata.namespace.as_deref(),
            Some(NODE_LEASE_NAMESPACE)
        );
        assert_eq!(fresh.metadata.owner_references, None, "node not known yet");
        let spec = fresh.spec.clone().unwrap();
        assert_eq!(spec.holder_identity.as_deref(), Some("n1"));
        assert_eq!(spec.lease_duration_seconds, Some(40));
        assert_eq!(spec.renew_time, Some(MicroTime(at(100))));

        let owned = desired_lease(Some(&fresh), "n1", 40, Some(owner("u1")), at(110));
        assert_eq!(owned.metadata.owner_references, Some(vec![owner("u1")]));
        assert_eq!(
            owned.spec.clone().unwrap().renew_time,
            Some(MicroTime(at(110)))
        );

        let kept = desired_lease(Some(&owned), "n1", 20, Some(owner("u2")), at(120));
        assert_eq!(
            kept.metadata.owner_references,
            Some(vec![owner("u1")]),
            "owner kept"
        );
        let spec = kept.spec.unwrap();
        assert_eq!(spec.lease_duration_seconds, Some(20));
        assert_eq!(spec.renew_time, Some(MicroTime(at(120))));
    }
}
