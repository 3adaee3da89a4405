//! PersistentVolumeClaims through a whole single-node cluster (real containerd, the real
//! apiserver and controller manager, kubectl): the persistentvolume binder binds a claim to
//! the smallest matching `hostPath` PersistentVolume (both sides `Bound`, the volume's
//! `claimRef` carrying the claim's uid); a pod writes through the claim and the file lands
//! in the volume's directory on the host; a `readOnly` mount of the claim is read-only; a
//! pod whose claim cannot bind stays unscheduled (`pod has unbound immediate
//! PersistentVolumeClaims`), and one bound to the node anyway waits in `ContainerCreating`
//! with a `FailedMount` event naming the claim; a claim deleted while a pod uses it stays
//! (`pvc-protection`) and still serves that pod's restarting container, but a new pod is
//! refused it (`FailedMount`: being deleted); once the pods are gone the claim goes and
//! releases the volume (`Released`, reclaim policy Retain).
//!
//! Needs `kwk-control-plane` and `kwk-cni` built next to kwk-node: `cargo build -p
//! kwk-control-plane -p kwk-cni` first.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed expectation aborts the test"
)]

use std::path::Path;
use std::time::Duration;

use kwk_tests::cluster::{ClusterBinaries, TestCluster};
use kwk_tests::privileged_tests_enabled;

const KWK_NODE: &str = env!("CARGO_BIN_EXE_kwk-node");
const KWK: &str = env!("CARGO_BIN_EXE_kwk");
const WAIT: Duration = Duration::from_secs(90);

/// A Retain hostPath PersistentVolume of `size` at `path`.
fn host_path_volume(name: &str, size: &str, path: &Path) -> String {
    format!(
        "apiVersion: v1\nkind: PersistentVolume\nmetadata: {{name: {name}}}\n\
         spec:\n  capacity: {{storage: {size}}}\n  accessModes: [ReadWriteOnce]\n  \
         persistentVolumeReclaimPolicy: Retain\n  \
         hostPath: {{path: {}, type: Directory}}\n",
        path.display()
    )
}

fn claim(name: &str, size: &str) -> String {
    format!(
        "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {{name: {name}}}\n\
         spec:\n  accessModes: [ReadWriteOnce]\n  resources: {{requests: {{storage: {size}}}}}\n"
    )
}

const WRITER: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: writer}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: localhost/busybox:latest
    # Exits once told to (/tmp is the container's own: a restarted container waits anew).
    command: [sh, -c, "echo written-through-claim > /data/out && while [ ! -e /tmp/exit ]; do sleep 0.2; done"]
    volumeMounts:
    - {name: data, mountPath: /data}
    - {name: data, mountPath: /ro, readOnly: true}
  volumes: [{name: data, persistentVolumeClaim: {claimName: data}}]
---
apiVersion: v1
kind: Pod
metadata: {name: stuck}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: localhost/busybox:latest
    command: [sleep, "3600"]
    volumeMounts: [{name: big, mountPath: /big}]
  volumes: [{name: big, persistentVolumeClaim: {claimName: too-big}}]
---
apiVersion: v1
kind: Pod
metadata: {name: stuck-pinned}
spec:
  nodeName: kwkt-node
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: localhost/busybox:latest
    command: [sleep, "3600"]
    volumeMounts: [{name: big, mountPath: /big}]
  volumes: [{name: big, persistentVolumeClaim: {claimName: too-big}}]
"#;

const LATE: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: late}
spec:
  nodeName: kwkt-node
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: localhost/busybox:latest
    command: [sleep, "3600"]
    volumeMounts: [{name: data, mountPath: /data}]
  volumes: [{name: data, persistentVolumeClaim: {claimName: data}}]
"#;

fn field(cluster: &TestCluster, args: &[&str], pointer: &str) -> String {
    cluster
        .json(args)
        .pointer(pointer)
        .and_then(|v| v.as_str())
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_bind_to_host_path_volumes_and_pods_write_through_them() {
    if !privileged_tests_enabled() {
        return;
    }
    let host = tempfile::tempdir().unwrap();
    let small = host.path().join("small");
    let big = host.path().join("big");
    std::fs::create_dir(&small).unwrap();
    std::fs::create_dir(&big).unwrap();

    let binaries = ClusterBinaries::next_to(Path::new(KWK_NODE), Path::new(KWK)).unwrap();
    let cluster = TestCluster::start(binaries).await.unwrap();
    cluster.apply(&format!(
        "{}---\n{}---\n{}---\n{}",
        host_path_volume("pv-big", "5Gi", &big),
        host_path_volume("pv-small", "1Gi", &small),
        claim("data", "500Mi"),
        claim("too-big", "100Gi"),
    ));

    // The binder picks the smallest volume that fits; both sides say Bound.
    cluster
        .wait_until(WAIT, "claim data Bound", || {
            field(
                &cluster,
                &["get", "pvc", "data", "-o", "json"],
                "/status/phase",
            ) == "Bound"
        })
        .await;
    let pvc = cluster.json(&["get", "pvc", "data", "-o", "json"]);
    assert_eq!(pvc["spec"]["volumeName"], "pv-small");
    assert_eq!(pvc["status"]["capacity"]["storage"], "1Gi");
    assert_eq!(pvc["status"]["accessModes"][0], "ReadWriteOnce");
    let pv = cluster.json(&["get", "pv", "pv-small", "-o", "json"]);
    assert_eq!(pv["status"]["phase"], "Bound");
    assert_eq!(pv["spec"]["claimRef"]["uid"], pvc["metadata"]["uid"]);
    assert_eq!(pv["spec"]["claimRef"]["name"], "data");
    assert_eq!(pv["spec"]["claimRef"]["namespace"], "default");
    assert_eq!(
        field(
            &cluster,
            &["get", "pv", "pv-big", "-o", "json"],
            "/status/phase"
        ),
        "Available"
    );
    assert_eq!(
        field(
            &cluster,
            &["get", "pvc", "too-big", "-o", "json"],
            "/status/phase"
        ),
        "Pending"
    );

    // A pod writes through the claim; the file is in the volume's host directory.
    cluster.apply(WRITER);
    cluster
        .wait_until(WAIT, "writer running", || {
            cluster.pod_json("writer")["status"]["phase"] == "Running"
        })
        .await;
    let out = small.join("out");
    cluster
        .wait_until(WAIT, "out written on the host", || {
            std::fs::read_to_string(&out).is_ok_and(|s| s == "written-through-claim\n")
        })
        .await;
    assert!(!big.join("out").exists());
    let read_back = cluster
        .kubectl(&["exec", "writer", "--", "cat", "/ro/out"])
        .unwrap();
    assert_eq!(read_back.trim_end(), "written-through-claim");
    assert!(
        cluster
            .kubectl(&["exec", "writer", "--", "touch", "/ro/x"])
            .is_err(),
        "a readOnly mount of the claim is read-only"
    );
    assert!(!small.join("x").exists());

    // An unbindable claim: the scheduler keeps the pod Pending (VolumeBinding); a pod bound
    // to the node all the same waits in ContainerCreating with a FailedMount event naming it.
    cluster
        .wait_until(WAIT, "stuck unschedulable for its claim", || {
            cluster.pod_json("stuck")["status"]["conditions"]
                .as_array()
                .is_some_and(|conditions| {
                    conditions.iter().any(|c| {
                        c["type"] == "PodScheduled"
                            && c["status"] == "False"
                            && c["message"].as_str().is_some_and(|m| {
                                m.contains("pod has unbound immediate PersistentVolumeClaims")
                            })
                    })
                })
        })
        .await;
    cluster
        .wait_until(WAIT, "stuck-pinned's FailedMount event", || {
            cluster
                .events_of("stuck-pinned")
                .iter()
                .any(|(reason, message)| {
                    reason == "FailedMount"
                        && message.contains("MountVolume.SetUp failed for volume \"big\"")
                        && message.contains("PVC default/too-big has non-bound phase (\"Pending\")")
                })
        })
        .await;
    assert_eq!(
        cluster.pod_json("stuck-pinned")["status"]["containerStatuses"][0]["state"]["waiting"]["reason"],
        "ContainerCreating"
    );

    // Deleting the claim while writer uses it only marks it (pvc-protection); writer's
    // container restarts with it all the same, while a new pod is refused it.
    cluster
        .kubectl(&["delete", "pvc", "data", "--wait=false"])
        .unwrap();
    cluster
        .wait_until(WAIT, "claim data Terminating", || {
            !field(
                &cluster,
                &["get", "pvc", "data", "-o", "json"],
                "/metadata/deletionTimestamp",
            )
            .is_empty()
        })
        .await;
    cluster
        .kubectl(&["exec", "writer", "--", "touch", "/tmp/exit"])
        .unwrap();
    cluster
        .wait_until(WAIT, "writer restarted with its claim", || {
            let status = &cluster.pod_json("writer")["status"]["containerStatuses"][0];
            status["restartCount"].as_u64().unwrap_or(0) >= 1 && status["ready"] == true
        })
        .await;
    let read_back = cluster
        .kubectl(&["exec", "writer", "--", "cat", "/data/out"])
        .unwrap();
    assert_eq!(read_back.trim_end(), "written-through-claim");
    cluster.apply(LATE);
    cluster
        .wait_until(WAIT, "late's FailedMount event", || {
            cluster.events_of("late").iter().any(|(reason, message)| {
                reason == "FailedMount"
                    && message.contains("can't start pod because PVC default/data is being deleted")
            })
        })
        .await;
    assert_eq!(
        cluster.pod_json("late")["status"]["containerStatuses"][0]["state"]["waiting"]["reason"],
        "ContainerCreating"
    );

    // The claim goes with the pods that use it: its volume is Released (Retain), the data
    // stays.
    cluster
        .kubectl(&[
            "delete",
            "pod",
            "writer",
            "late",
            "--wait=true",
            "--timeout=60s",
        ])
        .unwrap();
    cluster
        .wait_until(WAIT, "claim data gone", || {
            cluster
                .kubectl(&["get", "pvc", "data", "-o", "name"])
                .is_err()
        })
        .await;
    cluster
        .wait_until(WAIT, "pv-small Released", || {
            field(
                &cluster,
                &["get", "pv", "pv-small", "-o", "json"],
                "/status/phase",
            ) == "Released"
        })
        .await;
    assert!(out.exists());
}
