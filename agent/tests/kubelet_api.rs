//! The kubelet API end to end: a real kwk-node joined to the in-process apiserver (its
//! TokenReview and SubjectAccessReview decide), a static pod in real containerd, and HTTPS
//! callers with and without credentials: 401 without any or with an unknown token, and for a
//! certificate of the cluster CA the pod list, the container's log (also followed), the stats
//! summary, the metrics and the configuration.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed expectation aborts the test"
)]

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use http_body_util::BodyExt as _;
use kwk_control_plane::apiserver::pki;
use kwk_tests::apiserver::TestApiServer;
use kwk_tests::node::TestNode;
use kwk_tests::{TestContainerd, privileged_tests_enabled, wait_for};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_kwk-node");
const WAIT: Duration = Duration::from_secs(30);

/// A container that writes a line at start and then one every second.
const TALKER: &str = r#"apiVersion: v1
kind: Pod
metadata:
  name: talker
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: talk
    image: localhost/kwk/busybox:1
    command: ["/bin/sh", "-c", "echo hello-from-talker; i=0; while true; do sleep 1; i=$((i+1)); echo tick-$i; done"]
"#;

/// A kube-rs client for the kubelet at `server` (its self-signed certificate is not checked),
/// with the credentials of `user_yaml` (a kubeconfig `user:` value).
async fn kubelet_client(server: &str, user_yaml: &str) -> anyhow::Result<kube::Client> {
    let yaml = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: kubelet\n  cluster:\n    server: {server}\n    \
         insecure-skip-tls-verify: true\nusers:\n- name: caller\n  user: {user_yaml}\ncontexts:\n- name: c\n  \
         context: {{cluster: kubelet, user: caller}}\ncurrent-context: c\n"
    );
    let kubeconfig = kube::config::Kubeconfig::from_yaml(&yaml)?;
    let config = kube::Config::from_custom_kubeconfig(
        kubeconfig,
        &kube::config::KubeConfigOptions::default(),
    )
    .await?;
    Ok(kube::Client::try_from(config)?)
}

/// A client with a certificate for `user` (in `group`) issued by the cluster CA.
async fn cert_client(
    server: &str,
    pki_dir: &Path,
    dir: &Path,
    user: &str,
    group: Option<&str>,
) -> anyhow::Result<kube::Client> {
    let ca = pki::load_pair(&pki_dir.join("ca.crt"), &pki_dir.join("ca.key"))?;
    let issued = pki::issue_client(&ca, user, group)?;
    let cert = dir.join(format!("{user}.crt"));
    let key = dir.join(format!("{user}.key"));
    std::fs::write(&cert, issued.cert_pem)?;
    std::fs::write(&key, issued.key_pem)?;
    kubelet_client(
        server,
        &format!(
            "{{client-certificate: {}, client-key: {}}}",
            cert.display(),
            key.display()
        ),
    )
    .await
}

/// `GET path`: the status and the response (its body not yet read).
async fn get(
    client: &kube::Client,
    path: &str,
) -> anyhow::Result<http::Response<kube::client::Body>> {
    let request = http::Request::get(path).body(kube::client::Body::empty())?;
    Ok(client.send(request).await?)
}

/// `GET path`: the status and the whole body.
async fn get_text(client: &kube::Client, path: &str) -> anyhow::Result<(u16, String)> {
    let response = get(client, path).await?;
    let status = response.status().as_u16();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// `GET path` answered 200: the body as JSON.
async fn get_json(client: &kube::Client, path: &str) -> anyhow::Result<Value> {
    let (status, body) = get_text(client, path).await?;
    anyhow::ensure!(status == 200, "GET {path}: {status} {body}");
    serde_json::from_str(&body).with_context(|| format!("GET {path}: {body}"))
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kubelet_api_authenticates_authorizes_and_serves_pods_logs_stats_and_metrics()
-> anyhow::Result<()> {
    if !privileged_tests_enabled() {
        return Ok(());
    }
    let apiserver = TestApiServer::start().await?;
    let containerd = TestContainerd::start().await?;
    let dir = tempfile::tempdir()?;
    // kwk-node joined to the apiserver: TestNode starts this wrapper, which adds --kubeconfig.
    let wrapper = dir.path().join("kwk-node");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nexec {BIN} --kubeconfig {} \"$@\"\n",
            apiserver.kubeconfig().display()
        ),
    )?;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755))?;
    let port = free_port()?;
    let extra = format!(
        "address: 127.0.0.1\nport: {port}\nauthentication:\n  x509:\n    clientCAFile: {}\n  \
         anonymous:\n    enabled: false\nauthorization:\n  mode: Webhook\n",
        apiserver.pki_dir().join("ca.crt").display()
    );
    let node = TestNode::start_with(&containerd, &wrapper, &extra).await?;
    let server = format!("https://127.0.0.1:{port}");
    let admin = cert_client(
        &server,
        &apiserver.pki_dir(),
        dir.path(),
        "kwkt-admin",
        Some("system:masters"),
    )
    .await?;
    wait_for(WAIT, "the kubelet API", || async {
        get_text(&admin, "/healthz")
            .await
            .is_ok_and(|(status, body)| status == 200 && body == "ok")
    })
    .await
    .with_context(|| node.log_tail())?;

    // No credentials; a token the apiserver does not know (a real TokenReview says so).
    let nobody = kubelet_client(&server, "{}").await?;
    assert_eq!(get_text(&nobody, "/pods").await?.0, 401);
    let bad_token = kubelet_client(&server, "{token: not-a-known-token}").await?;
    assert_eq!(get_text(&bad_token, "/pods").await?.0, 401);
    // A certificate of the cluster CA authenticates; the SubjectAccessReview decides. kwk's
    // apiserver authorizes with AlwaysAllow today, so its answer is "allowed" for anyone (the
    // denied path, 403 with upstream's message, is covered by the unit tests in
    // kubelet_api::authz with a scripted apiserver).
    let alice = cert_client(&server, &apiserver.pki_dir(), dir.path(), "alice", None).await?;
    let (status, body) = get_text(&alice, "/healthz").await?;
    assert_eq!((status, body.as_str()), (200, "ok"));

    // /pods lists the running static pod.
    node.write_manifest("talker.yaml", TALKER)?;
    let name = format!("talker-{}", node.node_name);
    wait_for(WAIT, "the static pod to run on /pods", || async {
        get_json(&admin, "/pods").await.is_ok_and(|list| {
            list["kind"] == "PodList"
                && list["items"].as_array().is_some_and(|items| {
                    items.iter().any(|p| {
                        p["metadata"]["name"] == name.as_str()
                            && p["metadata"]["namespace"] == "default"
                            && p["status"]["phase"] == "Running"
                    })
                })
        })
    })
    .await
    .with_context(|| node.log_tail())?;

    // The container's output; then followed: a line written after the request arrives.
    let logs = format!("/containerLogs/default/{name}/talk");
    wait_for(WAIT, "the container's first line", || async {
        get_text(&admin, &logs)
            .await
            .is_ok_and(|(s, body)| s == 200 && body.starts_with("hello-from-talker\n"))
    })
    .await?;
    let (status, body) = get_text(&admin, &format!("{logs}?tailLines=1&timestamps=true")).await?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body.lines().count(), 1, "{body}");
    assert!(
        body.contains("Z tick-") || body.contains("Z hello"),
        "{body}"
    );
    let (status, body) = get_text(&admin, &format!("/containerLogs/default/{name}/nope")).await?;
    assert_eq!(status, 404, "{body}");

    let response = get(&admin, &format!("{logs}?follow=true&tailLines=1")).await?;
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let mut seen = String::new();
    tokio::time::timeout(Duration::from_secs(10), async {
        while seen.lines().count() < 2 {
            let frame = body.frame().await.context("stream ended")??;
            if let Ok(data) = frame.into_data() {
                seen.push_str(&String::from_utf8_lossy(&data));
            }
        }
        anyhow::Ok(())
    })
    .await
    .with_context(|| format!("followed log so far: {seen:?}"))??;
    let lines: Vec<&str> = seen.lines().collect();
    assert!(lines[1].starts_with("tick-"), "{seen:?}");
    assert_ne!(lines[0], lines[1], "a new line arrived: {seen:?}");
    drop(body);

    // /stats/summary: the node and the pod, with real memory figures.
    let has_pod_memory = |summary: &Value| {
        summary["pods"].as_array().is_some_and(|pods| {
            pods.iter().any(|p| {
                p["podRef"]["name"] == name.as_str()
                    && p["memory"]["workingSetBytes"].as_u64().unwrap_or(0) > 0
            })
        })
    };
    let deadline = tokio::time::Instant::now() + WAIT;
    let summary = loop {
        let summary = get_json(&admin, "/stats/summary").await?;
        if has_pod_memory(&summary) {
            break summary;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the pod's memory never showed in /stats/summary: {summary}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(summary["node"]["nodeName"], node.node_name.as_str());
    assert!(
        summary["node"]["memory"]["workingSetBytes"]
            .as_u64()
            .unwrap()
            > 0
    );
    assert!(
        summary["node"]["cpu"]["usageCoreNanoSeconds"]
            .as_u64()
            .unwrap()
            > 0
    );
    assert!(summary["node"]["fs"]["capacityBytes"].as_u64().unwrap() > 0);
    assert!(summary["node"]["network"]["interfaces"].is_array());
    let pod = summary["pods"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["podRef"]["name"] == name.as_str())
        .unwrap();
    // Its log file at least (the busybox layer writes nothing).
    assert!(
        pod["ephemeral-storage"]["usedBytes"].as_u64().unwrap() > 0,
        "{pod}"
    );
    assert!(pod["containers"][0]["logs"]["usedBytes"].as_u64().unwrap() > 0);
    assert!(pod["network"]["rxBytes"].is_u64(), "{pod}");

    // /metrics and /metrics/resource.
    let (status, metrics) = get_text(&admin, "/metrics").await?;
    assert_eq!(status, 200);
    assert!(metrics.contains("\nkubelet_running_pods 1\n"), "{metrics}");
    assert!(
        metrics.contains("\nkubelet_pod_start_duration_seconds_count 1\n"),
        "{metrics}"
    );
    let (status, resource) = get_text(&admin, "/metrics/resource").await?;
    assert_eq!(status, 200);
    assert!(
        resource.contains(&format!(
            "pod_memory_working_set_bytes{{namespace=\"default\",pod=\"{name}\"}}"
        )),
        "{resource}"
    );

    // The streaming endpoints are authenticated first; an authorized exec that is not an
    // upgrade (and asks for no stream) is a bad request. (The streams themselves: the cluster
    // and streaming tests.)
    let exec = format!("/exec/default/{name}/talk?command=true&output=1");
    let post = || http::Request::post(exec.as_str()).body(kube::client::Body::empty());
    assert_eq!(nobody.send(post()?).await?.status(), 401);
    assert_eq!(admin.send(post()?).await?.status(), 400);

    // /configz carries the configuration the node runs with.
    let configz = get_json(&admin, "/configz").await?;
    assert_eq!(configz["kubeletconfig"]["port"], port);
    assert_eq!(configz["kubeletconfig"]["authorization"]["mode"], "Webhook");
    Ok(())
}
