//! Bound service-account tokens end to end with the real kubectl: `kubectl create token
//! --bound-object-kind Pod` issues a JWT, the token authenticates (curl and `kubectl --token`)
//! as the service account with the pod in its user extras, and stops working the moment the
//! pod is deleted. Field validation reaches kubectl's error output.

mod support;

use std::process::Command;

use support::{TestApiServer, kubectl_path, stderr, stdout};

const NS: &str = "sa-tokens";

/// kubectl with only the server, the CA and `token`: no client certificate that could
/// authenticate the request instead.
async fn kubectl_with_token(
    api: &TestApiServer,
    token: &str,
    args: &[&str],
) -> std::process::Output {
    let mut cmd = Command::new(kubectl_path());
    cmd.arg("--kubeconfig")
        .arg("/dev/null")
        .arg("--server")
        .arg(api.url())
        .arg("--certificate-authority")
        .arg(api.ca())
        .arg("--token")
        .arg(token)
        .arg("--cache-dir")
        .arg(api.dir.path().join("token-cache"))
        .args(args)
        .env_remove("KUBECONFIG")
        .env("HOME", api.dir.path());
    tokio::task::spawn_blocking(move || cmd.output().expect("run kubectl"))
        .await
        .expect("join")
}

/// `status` of a TokenReview of `token`, created with the admin credentials.
async fn token_review(api: &TestApiServer, token: &str) -> serde_json::Value {
    let review = serde_json::json!({
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenReview",
        "spec": {"token": token},
    });
    let out = api
        .kubectl_stdin(
            &["create", "-f", "-", "-o", "json"],
            Some(&review.to_string()),
        )
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let answer: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("json");
    answer["status"].clone()
}

/// The HTTP status of a GET with `token` as the bearer.
async fn status_with_bearer(api: &TestApiServer, token: &str, path: &str) -> String {
    let header = format!("Authorization: Bearer {token}");
    let url = format!("{}{path}", api.url());
    let out = api
        .curl(&["-o", "/dev/null", "-w", "%{http_code}", "-H", &header, &url])
        .await;
    stdout(&out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_bound_token_works_until_the_pod_is_deleted() {
    let api = TestApiServer::start().await;
    api.kubectl_ok(&["create", "namespace", NS]).await;
    // No controller manager here: the namespace's `default` ServiceAccount is made by hand.
    api.kubectl_ok(&["create", "serviceaccount", "default", "-n", NS])
        .await;
    api.kubectl_ok(&["run", "web", "-n", NS, "--image=busybox", "--restart=Never"])
        .await;
    let pod_uid = api
        .kubectl_ok(&[
            "get",
            "pod",
            "web",
            "-n",
            NS,
            "-o",
            "jsonpath={.metadata.uid}",
        ])
        .await;

    let token = api
        .kubectl_ok(&[
            "create",
            "token",
            "default",
            "-n",
            NS,
            "--bound-object-kind",
            "Pod",
            "--bound-object-name",
            "web",
            "--duration",
            "10m",
        ])
        .await;
    let token = token.trim().to_string();
    assert_eq!(token.split('.').count(), 3, "a compact JWS: {token}");

    let pods_path = format!("/api/v1/namespaces/{NS}/pods");
    assert_eq!(status_with_bearer(&api, &token, &pods_path).await, "200");
    let listed = kubectl_with_token(&api, &token, &["get", "pods", "-n", NS, "-o", "name"]).await;
    assert!(listed.status.success(), "{}", stderr(&listed));
    assert_eq!(stdout(&listed), "pod/web\n");
    let whoami = kubectl_with_token(&api, &token, &["auth", "whoami", "-o", "json"]).await;
    assert!(whoami.status.success(), "{}", stderr(&whoami));
    let review: serde_json::Value = serde_json::from_str(&stdout(&whoami)).expect("json");
    let user = &review["status"]["userInfo"];
    assert_eq!(
        user["username"],
        format!("system:serviceaccount:{NS}:default")
    );
    assert_eq!(
        user["groups"],
        serde_json::json!([
            "system:serviceaccounts",
            format!("system:serviceaccounts:{NS}"),
            "system:authenticated"
        ])
    );
    assert_eq!(
        user["extra"]["authentication.kubernetes.io/pod-name"][0],
        "web"
    );
    assert_eq!(
        user["extra"]["authentication.kubernetes.io/pod-uid"][0],
        pod_uid.as_str()
    );
    let reviewed = token_review(&api, &token).await;
    assert_eq!(reviewed["authenticated"], true, "{reviewed}");
    assert_eq!(
        reviewed["audiences"],
        serde_json::json!(["https://kubernetes.default.svc.cluster.local"])
    );

    api.kubectl_ok(&[
        "delete",
        "pod",
        "web",
        "-n",
        NS,
        "--grace-period=0",
        "--force",
    ])
    .await;
    let reviewed = token_review(&api, &token).await;
    assert_eq!(reviewed["authenticated"], false, "{reviewed}");
    assert!(
        reviewed["error"]
            .as_str()
            .is_some_and(|e| e.contains("pod sa-tokens/web the token is bound to no longer exists")),
        "{reviewed}"
    );
    assert_eq!(
        status_with_bearer(&api, &token, &pods_path).await,
        "401",
        "a token bound to a deleted pod must stop authenticating"
    );
    let refused = kubectl_with_token(&api, &token, &["get", "pods", "-n", NS]).await;
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("Unauthorized") || stderr(&refused).contains("401"),
        "{}",
        stderr(&refused)
    );
    // A pod recreated under the same name does not revive the token (another uid).
    api.kubectl_ok(&["run", "web", "-n", NS, "--image=busybox", "--restart=Never"])
        .await;
    assert_eq!(status_with_bearer(&api, &token, &pods_path).await, "401");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_requests_are_checked() {
    let api = TestApiServer::start().await;
    api.kubectl_ok(&["create", "namespace", NS]).await;
    // No ServiceAccount yet: 404.
    let missing = api.kubectl(&["create", "token", "default", "-n", NS]).await;
    assert!(!missing.status.success());
    assert!(
        stderr(&missing).contains("serviceaccounts \"default\" not found"),
        "{}",
        stderr(&missing)
    );
    api.kubectl_ok(&["create", "serviceaccount", "default", "-n", NS])
        .await;
    let short = api
        .kubectl(&["create", "token", "default", "-n", NS, "--duration", "5m"])
        .await;
    assert!(!short.status.success());
    assert!(
        stderr(&short).contains("spec.expirationSeconds")
            && stderr(&short).contains("less than 10 minutes"),
        "{}",
        stderr(&short)
    );
    let no_pod = api
        .kubectl(&[
            "create",
            "token",
            "default",
            "-n",
            NS,
            "--bound-object-kind",
            "Pod",
            "--bound-object-name",
            "ghost",
        ])
        .await;
    assert!(!no_pod.status.success());
    assert!(
        stderr(&no_pod).contains("pods \"ghost\" not found"),
        "{}",
        stderr(&no_pod)
    );
    // An unbound token for a custom audience is not accepted by the apiserver itself.
    let other_audience = api
        .kubectl_ok(&[
            "create",
            "token",
            "default",
            "-n",
            NS,
            "--audience",
            "vault",
        ])
        .await;
    assert_eq!(
        status_with_bearer(&api, other_audience.trim(), "/api/v1/namespaces").await,
        "401"
    );
    // An unbound token with the default audience works until its ServiceAccount goes.
    let unbound = api
        .kubectl_ok(&["create", "token", "default", "-n", NS])
        .await;
    assert_eq!(
        status_with_bearer(&api, unbound.trim(), "/api/v1/namespaces").await,
        "200"
    );
    // The signing key is kept across restarts: issued tokens stay valid.
    let api = api.restart().await;
    assert_eq!(
        status_with_bearer(&api, unbound.trim(), "/api/v1/namespaces").await,
        "200"
    );
    api.kubectl_ok(&["delete", "serviceaccount", "default", "-n", NS])
        .await;
    assert_eq!(
        status_with_bearer(&api, unbound.trim(), "/api/v1/namespaces").await,
        "401"
    );
}
