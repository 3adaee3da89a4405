//! The Node upkeep against the real apiserver (in-process) and a real containerd: the Node is
//! registered with its labels, addresses, machine capacity, node info and Ready=True, its Lease
//! is renewed with the Node as owner, `spec.podCIDR` is published, and an apiserver that goes
//! away and comes back on the same data finds the status and Lease resumed.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed expectation aborts the test"
)]

use std::net::IpAddr;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::{Patch, PatchParams};
use kwk_agent::config::KubeletConfig;
use kwk_agent::node_status::{self, EvictionReserve, NodeStatusOptions};
use kwk_cri::{ConnectOptions, CriClient, Timeouts};
use kwk_tests::apiserver::TestApiServer;
use kwk_tests::{TestContainerd, privileged_tests_enabled, wait_for};
use tokio_util::sync::CancellationToken;

const NODE: &str = "kwkt-status-node";
const WAIT: Duration = Duration::from_secs(30);

fn condition<'a>(node: &'a Node, type_: &str) -> Option<&'a str> {
    node.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| c.status.as_str())
}

fn ready_heartbeat(node: &Node) -> Option<Timestamp> {
    node.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")?
        .last_heartbeat_time
        .as_ref()
        .map(|t| t.0)
}

fn renew_time(lease: &Lease) -> Option<Timestamp> {
    lease.spec.as_ref()?.renew_time.as_ref().map(|t| t.0)
}

async fn get_node(nodes: &Api<Node>) -> Option<Node> {
    nodes.get_opt(NODE).await.ok().flatten()
}

async fn get_lease(leases: &Api<Lease>) -> Option<Lease> {
    leases.get_opt(NODE).await.ok().flatten()
}

fn quantity(node: &Node, field: &str, name: &str) -> String {
    let status = node.status.as_ref().unwrap();
    let map = match field {
        "capacity" => status.capacity.as_ref(),
        _ => status.allocatable.as_ref(),
    };
    map.and_then(|m| m.get(name))
        .map(|q| q.0.clone())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_registers_heartbeats_and_survives_an_apiserver_restart() -> anyhow::Result<()> {
    if !privileged_tests_enabled() {
        return Ok(());
    }
    let containerd = TestContainerd::start().await?;
    let mut apiserver = TestApiServer::start().await?;
    let root = tempfile::tempdir()?;
    let cri = CriClient::connect(
        &containerd.socket(),
        &ConnectOptions::default(),
        Timeouts::default(),
    )
    .await?;
    let node_ip: IpAddr = "192.0.2.10".parse()?;
    let options = NodeStatusOptions {
        node_name: NODE.to_string(),
        root_dir: root.path().to_path_buf(),
        node_ip: Some(node_ip),
        config: KubeletConfig {
            node_status_update_frequency: Duration::from_secs(1),
            node_status_report_frequency: Duration::from_secs(1),
            node_lease_duration_seconds: 4,
            ..KubeletConfig::default()
        },
        eviction_reserve: EvictionReserve::from_kubelet(&KubeletConfig::default()),
        pressures: None,
    };
    let client = kwk_agent::api_client::client_from_kubeconfig(&apiserver.kubeconfig()).await?;
    let cancel = CancellationToken::new();
    let _stop_on_failure = cancel.clone().drop_guard();
    let (pod_cidr_tx, mut pod_cidr) = node_status::pod_cidr_channel();
    let upkeep = tokio::spawn(node_status::run(
        client,
        options,
        cri,
        pod_cidr_tx,
        cancel.clone(),
    ));

    let admin = apiserver.client().await?;
    let nodes: Api<Node> = Api::all(admin.clone());
    let leases: Api<Lease> = Api::namespaced(admin.clone(), "kube-node-lease");
    wait_for(WAIT, "the Node, Ready", || async {
        get_node(&nodes)
            .await
            .is_some_and(|n| condition(&n, "Ready") == Some("True"))
    })
    .await?;
    let node = nodes.get(NODE).await?;

    // Labels, addresses.
    let labels = node.metadata.labels.clone().unwrap_or_default();
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    for (key, value) in [
        ("kubernetes.io/hostname", NODE),
        ("kubernetes.io/os", "linux"),
        ("kubernetes.io/arch", arch),
        ("beta.kubernetes.io/os", "linux"),
        ("beta.kubernetes.io/arch", arch),
    ] {
        assert_eq!(labels.get(key).map(String::as_str), Some(value), "{key}");
    }
    assert!(
        !labels
            .keys()
            .any(|k| k.starts_with("node-role.kubernetes.io/")),
        "node-role labels are the admin's"
    );
    let status = node.status.clone().unwrap();
    let addresses: Vec<(String, String)> = status
        .addresses
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|a| (a.type_, a.address))
        .collect();
    assert_eq!(
        addresses,
        vec![
            ("InternalIP".to_string(), node_ip.to_string()),
            ("Hostname".to_string(), NODE.to_string())
        ]
    );

    // Capacity: the machine's.
    let cpus = std::thread::available_parallelism()?.get();
    assert_eq!(quantity(&node, "capacity", "cpu"), cpus.to_string());
    let mem_total_kib: u64 = std::fs::read_to_string("/proc/meminfo")?
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .map(|v| v.trim().parse())
        .unwrap()?;
    let memory = quantity(&node, "capacity", "memory");
    let memory_bytes = kwk_agent::quantity::parse(&memory)?.value();
    assert_eq!(
        u64::try_from(memory_bytes)?,
        mem_total_kib * 1024,
        "memory capacity {memory}"
    );
    let fs = nix::sys::statvfs::statvfs(root.path())?;
    let storage = kwk_agent::quantity::parse(&quantity(&node, "capacity", "ephemeral-storage"))?;
    assert_eq!(
        u64::try_from(storage.value())?,
        fs.blocks() * fs.fragment_size()
    );
    assert_eq!(quantity(&node, "capacity", "pods"), "110");
    assert!(
        kwk_agent::quantity::parse(&quantity(&node, "allocatable", "memory"))?.value()
            < memory_bytes,
        "allocatable memory is less the eviction threshold"
    );

    // Node info, images, endpoint, conditions.
    let info = status.node_info.clone().unwrap();
    assert!(
        info.container_runtime_version.starts_with("containerd://"),
        "{}",
        info.container_runtime_version
    );
    assert!(info.kubelet_version.starts_with("v1.33."));
    assert_eq!(info.operating_system, "linux");
    assert_eq!(info.architecture, arch);
    assert_eq!(
        info.boot_id,
        std::fs::read_to_string("/proc/sys/kernel/random/boot_id")?.trim()
    );
    assert_eq!(
        info.kernel_version,
        std::fs::read_to_string("/proc/sys/kernel/osrelease")?.trim()
    );
    let images = status.images.clone().unwrap_or_default();
    assert!(
        images
            .iter()
            .any(|i| i.names.iter().flatten().any(|n| n.contains("busybox"))),
        "the imported busybox is listed: {images:?}"
    );
    let sizes: Vec<i64> = images.iter().filter_map(|i| i.size_bytes).collect();
    assert!(sizes.windows(2).all(|w| w[0] >= w[1]), "largest first");
    assert_eq!(
        status
            .daemon_endpoints
            .and_then(|d| d.kubelet_endpoint)
            .map(|e| e.port),
        Some(10250)
    );
    for type_ in ["MemoryPressure", "DiskPressure", "PIDPressure"] {
        assert!(condition(&node, type_).is_some(), "{type_}");
    }

    // The Lease: owned by the Node, renewed.
    // Renewals that find the Node give the Lease its owner (the first may precede the Node).
    wait_for(WAIT, "the Lease, owned", || async {
        get_lease(&leases)
            .await
            .is_some_and(|l| l.metadata.owner_references.is_some_and(|o| !o.is_empty()))
    })
    .await?;
    let lease = leases.get(NODE).await?;
    let owner = &lease.metadata.owner_references.clone().unwrap()[0];
    assert_eq!((owner.kind.as_str(), owner.name.as_str()), ("Node", NODE));
    assert_eq!(Some(&owner.uid), node.metadata.uid.as_ref());
    let spec = lease.spec.clone().unwrap();
    assert_eq!(spec.holder_identity.as_deref(), Some(NODE));
    assert_eq!(spec.lease_duration_seconds, Some(4));
    let first_renewal = renew_time(&lease).unwrap();
    wait_for(WAIT, "the Lease renewed", || async {
        get_lease(&leases)
            .await
            .and_then(|l| renew_time(&l))
            .is_some_and(|t| t > first_renewal)
    })
    .await?;

    // spec.podCIDR, once set, is published.
    nodes
        .patch(
            NODE,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"podCIDR": "10.244.3.0/24"}})),
        )
        .await?;
    tokio::time::timeout(
        WAIT,
        pod_cidr.wait_for(|c| c.as_deref() == Some("10.244.3.0/24")),
    )
    .await??;

    // The apiserver goes away and comes back on the same data: status and Lease resume.
    apiserver.pause().await?;
    let paused_at = Timestamp::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(!upkeep.is_finished(), "the upkeep outlives the apiserver");
    apiserver.resume().await?;
    let admin = apiserver.client().await?;
    let nodes: Api<Node> = Api::all(admin.clone());
    let leases: Api<Lease> = Api::namespaced(admin, "kube-node-lease");
    wait_for(WAIT, "a Ready heartbeat after the restart", || async {
        get_node(&nodes)
            .await
            .and_then(|n| ready_heartbeat(&n))
            .is_some_and(|t| t > paused_at)
    })
    .await?;
    wait_for(WAIT, "a Lease renewal after the restart", || async {
        get_lease(&leases)
            .await
            .and_then(|l| renew_time(&l))
            .is_some_and(|t| t > paused_at)
    })
    .await?;
    let node = nodes.get(NODE).await?;
    assert_eq!(condition(&node, "Ready"), Some("True"));
    assert_eq!(
        node.spec.and_then(|s| s.pod_cidr).as_deref(),
        Some("10.244.3.0/24"),
        "the data survived the restart"
    );

    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(10), upkeep).await??;
    apiserver.stop().await;
    Ok(())
}
