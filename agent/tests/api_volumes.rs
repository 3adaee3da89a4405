//! ConfigMaps, Secrets and the downward API reaching pods through a whole single-node cluster
//! (real containerd, the real apiserver, kubectl): env `configMapKeyRef`/`secretKeyRef`/
//! `envFrom`; configMap (also one key through `subPath`), secret (tmpfs, `defaultMode`), downwardAPI and projected volumes (a
//! service-account token bound to the pod, accepted by the apiserver); updates of a
//! ConfigMap, a Secret and the pod's labels appear in the running container within
//! `syncFrequency`, atomically (a reader looping over a 2,000-line file never sees a mix of
//! versions or a short file); a missing ConfigMap holds the pod in `ContainerCreating` with a
//! `FailedMount` event until it is created; a missing key is a `CreateContainerConfigError`.
//!
//! Needs `kwk-control-plane` and `kwk-cni` built next to kwk-node: `cargo build -p
//! kwk-control-plane -p kwk-cni` first.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed expectation aborts the test"
)]

use std::path::Path;
use std::time::{Duration, Instant};

use kwk_tests::cluster::{ClusterBinaries, TestCluster};
use kwk_tests::privileged_tests_enabled;

const KWK_NODE: &str = env!("CARGO_BIN_EXE_kwk-node");
const KWK: &str = env!("CARGO_BIN_EXE_kwk");
const WAIT: Duration = Duration::from_secs(90);
/// The lines of the `big` key; a reader checks it sees exactly this many, all alike.
const BIG_LINES: usize = 2000;

/// The ConfigMap at version `v`: `mode` is `v<v>`, `big` is `v<v>` on every line.
fn config_map(v: u32) -> String {
    let big = format!("v{v}\\n").repeat(BIG_LINES);
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: app-config}}\n\
         data: {{mode: \"v{v}\", big: \"{big}\"}}\n"
    )
}

/// The Secret with `password` base64-encoded as given.
fn secret(password_b64: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: creds}}\n\
         data: {{password: {password_b64}, user: YWRtaW4=}}\n"
    )
}

/// Reads `/config/big` in a loop; a short file or a mix of versions is written to /tmp/bad,
/// each read adds a byte to /tmp/reads.
const READER: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: reader, labels: {app: reader, tier: front}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: localhost/busybox:latest
    command:
    - sh
    - -c
    - |
      while true; do
        c=$(cat /config/big)
        n=$(echo "$c" | sort -u | wc -l)
        l=$(echo "$c" | wc -l)
        if [ "$n" != 1 ] || [ "$l" != 2000 ]; then echo "n=$n l=$l" >> /tmp/bad; fi
        echo -n . >> /tmp/reads
      done
    env:
    - {name: MODE, valueFrom: {configMapKeyRef: {name: app-config, key: mode}}}
    - {name: ABSENT, valueFrom: {configMapKeyRef: {name: app-config, key: nope, optional: true}}}
    envFrom: [{secretRef: {name: creds}, prefix: SECRET_}]
    volumeMounts:
    - {name: config, mountPath: /config}
    - {name: config, mountPath: /etc/app/mode.conf, subPath: mode}
    - {name: creds, mountPath: /creds}
    - {name: info, mountPath: /info}
    - {name: projected, mountPath: /var/run/secrets/tokens}
  volumes:
  - {name: config, configMap: {name: app-config}}
  - {name: creds, secret: {secretName: creds, defaultMode: 256}}
  - name: info
    downwardAPI:
      items: [{path: labels, fieldRef: {fieldPath: metadata.labels}}]
  - name: projected
    projected:
      sources:
      - serviceAccountToken: {path: token, expirationSeconds: 600}
      - configMap: {name: app-config, items: [{key: mode, path: config/mode}]}
      - configMap: {name: kube-root-ca.crt, items: [{key: ca.crt, path: ca.crt}]}
"#;

const WAITS_FOR_CONFIG: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: waits}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: localhost/busybox:latest
    command: [sh, -c, "cat /late/key && echo && exec sleep 3600"]
    volumeMounts: [{name: late, mountPath: /late}]
  volumes: [{name: late, configMap: {name: late-config}}]
---
apiVersion: v1
kind: Pod
metadata: {name: badkey}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: localhost/busybox:latest
    command: [sleep, "3600"]
    env: [{name: X, valueFrom: {secretKeyRef: {name: creds, key: nokey}}}]
"#;

fn exec(cluster: &TestCluster, pod: &str, script: &str) -> Option<String> {
    cluster
        .kubectl(&["exec", pod, "--", "sh", "-c", script])
        .ok()
        .map(|out| out.trim_end().to_string())
}

fn waiting_reason(cluster: &TestCluster, pod: &str) -> String {
    cluster.pod_json(pod)["status"]["containerStatuses"][0]["state"]["waiting"]["reason"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Waits until `script` in the reader prints `want`; returns how long that took.
async fn wait_for_output(cluster: &TestCluster, script: &str, want: &str) -> Duration {
    let started = Instant::now();
    cluster
        .wait_until(WAIT, &format!("{script} → {want:?}"), || {
            exec(cluster, "reader", script).as_deref() == Some(want)
        })
        .await;
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_maps_secrets_and_downward_api_reach_running_pods_atomically() {
    if !privileged_tests_enabled() {
        return;
    }
    let binaries = ClusterBinaries::next_to(Path::new(KWK_NODE), Path::new(KWK)).unwrap();
    let cluster = TestCluster::start(binaries).await.unwrap();
    cluster.apply(&format!(
        "{}---\n{}---\n{READER}",
        config_map(0),
        secret("aHVudGVyMg==")
    ));
    cluster
        .wait_until(WAIT, "reader running", || {
            cluster.pod_json("reader")["status"]["phase"] == "Running"
        })
        .await;

    // Environment from the ConfigMap and the Secret; an optional missing key is not set.
    assert_eq!(
        exec(&cluster, "reader", "echo $MODE").as_deref(),
        Some("v0")
    );
    assert_eq!(
        exec(&cluster, "reader", "echo $SECRET_password $SECRET_user").as_deref(),
        Some("hunter2 admin")
    );
    assert_eq!(
        exec(&cluster, "reader", "env | grep -c ^ABSENT= || true").as_deref(),
        Some("0")
    );

    // Files: keys as files, the secret on a tmpfs with mode 0400, the labels file, the
    // atomic-writer layout visible to the container.
    assert_eq!(
        exec(&cluster, "reader", "cat /config/mode").as_deref(),
        Some("v0")
    );
    assert_eq!(
        exec(
            &cluster,
            "reader",
            "cat /creds/password; echo; stat -L -c %a /creds/password"
        )
        .as_deref(),
        Some("hunter2\n400")
    );
    assert_eq!(
        exec(
            &cluster,
            "reader",
            "awk '$2 == \"/creds\" {print $3}' /proc/mounts"
        )
        .as_deref(),
        Some("tmpfs")
    );
    assert_ne!(
        exec(
            &cluster,
            "reader",
            "awk '$2 == \"/config\" {print $3}' /proc/mounts"
        )
        .as_deref(),
        Some("tmpfs")
    );
    assert_eq!(
        exec(&cluster, "reader", "readlink /config/mode").as_deref(),
        Some("..data/mode")
    );
    assert_eq!(
        exec(&cluster, "reader", "cat /info/labels").as_deref(),
        Some("app=\"reader\"\ntier=\"front\"")
    );
    assert!(
        exec(&cluster, "reader", "touch /config/x").is_none(),
        "configMap volumes are read-only"
    );

    // The projected volume: a service-account token bound to this pod, which the apiserver
    // accepts (TokenReview), next to a ConfigMap key.
    assert_eq!(
        exec(
            &cluster,
            "reader",
            "cat /var/run/secrets/tokens/config/mode"
        )
        .as_deref(),
        Some("v0")
    );
    // kube-root-ca.crt, published in every namespace by the controller manager, is the
    // cluster CA (what kube-api-access volumes give in-cluster clients).
    let cluster_ca = std::fs::read_to_string(cluster.config_dir().join("pki/ca.crt")).unwrap();
    assert_eq!(
        exec(&cluster, "reader", "cat /var/run/secrets/tokens/ca.crt").as_deref(),
        Some(cluster_ca.trim_end())
    );
    let token = exec(&cluster, "reader", "cat /var/run/secrets/tokens/token").unwrap();
    let review = cluster
        .kubectl_output(
            &["create", "-o", "json", "-f", "-"],
            Some(&format!(
                "{{\"apiVersion\": \"authentication.k8s.io/v1\", \"kind\": \"TokenReview\",                  \"spec\": {{\"token\": \"{token}\"}}}}"
            )),
        )
        .unwrap();
    let review: serde_json::Value = serde_json::from_slice(&review.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&review.stderr)));
    assert_eq!(review["status"]["authenticated"], true, "{review}");
    let user = &review["status"]["user"];
    assert_eq!(
        user["username"], "system:serviceaccount:default:default",
        "{review}"
    );
    assert_eq!(
        user["extra"]["authentication.kubernetes.io/pod-name"][0], "reader",
        "{review}"
    );

    // ConfigMap updates while the reader loops: each version appears, none is half-seen.
    for v in 1..=4 {
        cluster.apply(&config_map(v));
        let took = wait_for_output(&cluster, "cat /config/mode", &format!("v{v}")).await;
        println!("ConfigMap version {v} visible in the pod after {took:?} (syncFrequency 10s)");
        assert_eq!(
            exec(&cluster, "reader", "head -1 /config/big").as_deref(),
            Some(format!("v{v}").as_str())
        );
    }
    let reads = exec(&cluster, "reader", "wc -c < /tmp/reads").unwrap();
    println!("the reader read /config/big {reads} times");
    assert!(reads.trim().parse::<u32>().unwrap() > 10, "{reads}");
    assert_eq!(
        exec(&cluster, "reader", "cat /tmp/bad 2>/dev/null || echo none").as_deref(),
        Some("none"),
        "a reader saw a torn or mixed file"
    );

    // A Secret update and a label change reach the pod too; the environment does not change.
    cluster.apply(&secret("czNjcjN0"));
    wait_for_output(&cluster, "cat /creds/password", "s3cr3t").await;
    cluster
        .kubectl(&["label", "pod", "reader", "tier=back", "--overwrite"])
        .unwrap();
    wait_for_output(
        &cluster,
        "cat /info/labels",
        "app=\"reader\"\ntier=\"back\"",
    )
    .await;
    assert_eq!(
        exec(&cluster, "reader", "echo $MODE").as_deref(),
        Some("v0")
    );

    // A missing ConfigMap holds the container in ContainerCreating with FailedMount until it
    // exists; a missing Secret key is a CreateContainerConfigError naming the key.
    cluster.apply(WAITS_FOR_CONFIG);
    cluster
        .wait_until(WAIT, "waits' FailedMount event", || {
            cluster.events_of("waits").iter().any(|(reason, message)| {
                reason == "FailedMount"
                    && message.contains("MountVolume.SetUp failed for volume \"late\"")
                    && message.contains("configmap \"late-config\" not found")
            })
        })
        .await;
    assert_eq!(waiting_reason(&cluster, "waits"), "ContainerCreating");
    cluster
        .wait_until(WAIT, "badkey CreateContainerConfigError", || {
            waiting_reason(&cluster, "badkey") == "CreateContainerConfigError"
        })
        .await;
    let message = cluster.pod_json("badkey")["status"]["containerStatuses"][0]["state"]["waiting"]
        ["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        message.contains("couldn't find key nokey in Secret default/creds"),
        "{message}"
    );
    cluster.apply(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: late-config}\ndata: {key: here}\n",
    );
    cluster
        .wait_until(WAIT, "waits running", || {
            cluster.pod_json("waits")["status"]["phase"] == "Running"
        })
        .await;
    cluster
        .wait_until(WAIT, "waits' log", || {
            cluster
                .kubectl(&["logs", "waits"])
                .is_ok_and(|logs| logs.trim() == "here")
        })
        .await;
}
