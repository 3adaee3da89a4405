//! `/openapi/v3` schemas as kubectl uses them: `kubectl explain` (fields, types,
//! descriptions), client-side apply merging lists by key, and server-side field validation.

mod support;

use support::{TestApiServer, stderr, stdout};

const TWO_CONTAINERS: &str = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: two
spec:
  selector:
    matchLabels: {app: two}
  template:
    metadata:
      labels: {app: two}
    spec:
      containers:
      - name: a
        image: nginx:1
      - name: b
        image: busybox:1
";

/// The `name <type>` lines of an explain FIELDS section (first level only).
fn fields(explain: &str) -> Vec<String> {
    explain
        .lines()
        .skip_while(|l| *l != "FIELDS:")
        .filter(|l| l.starts_with("  ") && !l.starts_with("   ") && l.contains('\t'))
        .map(|l| l.trim().replace('\t', " "))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_explain_reads_the_schemas() {
    let api = TestApiServer::start().await;
    let out = api
        .kubectl_ok(&["explain", "deployment.spec.strategy"])
        .await;
    assert!(
        out.starts_with("GROUP:      apps\nKIND:       Deployment\nVERSION:    v1\n\nFIELD: strategy <DeploymentStrategy>\n"),
        "{out}"
    );
    assert!(
        out.contains("The deployment strategy to use to replace existing pods with new ones."),
        "{out}"
    );
    assert_eq!(
        fields(&out),
        ["rollingUpdate <RollingUpdateDeployment>", "type <string>"]
    );
    assert!(out.contains("Type of deployment. Can be \"Recreate\" or \"RollingUpdate\"."));

    let out = api.kubectl_ok(&["explain", "svc.spec.ports"]).await;
    assert!(
        out.starts_with("KIND:       Service\nVERSION:    v1\n\nFIELD: ports <[]ServicePort>\n"),
        "{out}"
    );
    assert_eq!(
        fields(&out),
        [
            "appProtocol <string>",
            "name <string>",
            "nodePort <integer>",
            "port <integer> -required-",
            "protocol <string>",
            "targetPort <IntOrString>",
        ]
    );
    assert!(out.contains("The port that will be exposed by this service."));

    let out = api.kubectl_ok(&["explain", "pods", "--recursive"]).await;
    assert!(
        out.starts_with("KIND:       Pod\nVERSION:    v1\n"),
        "{out}"
    );
    for line in [
        "  metadata\t<ObjectMeta>\n",
        "    labels\t<map[string]string>\n",
        "  spec\t<PodSpec>\n",
        "    containers\t<[]Container> -required-\n",
        "      image\t<string>\n",
        "      resources\t<ResourceRequirements>\n",
        "        limits\t<map[string]Quantity>\n",
        "  status\t<PodStatus>\n",
    ] {
        assert!(out.contains(line), "{line:?} missing in:\n{out}");
    }
    let out = api.kubectl(&["explain", "deployment.spec.nope"]).await;
    assert_eq!(stderr(&out).trim(), "error: field \"nope\" does not exist");
    let out = api
        .kubectl_ok(&[
            "explain",
            "cronjobs.spec.jobTemplate.spec.template.spec.restartPolicy",
        ])
        .await;
    assert!(
        out.starts_with("GROUP:      batch\nKIND:       CronJob\n"),
        "{out}"
    );
    assert!(out.contains("FIELD: restartPolicy <string>"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_side_apply_merges_containers_by_name() {
    let api = TestApiServer::start().await;
    api.kubectl_stdin(&["apply", "-f", "-"], Some(TWO_CONTAINERS))
        .await;
    // Another party adds a container the manifest does not know.
    api.kubectl_ok(&[
        "patch",
        "deploy",
        "two",
        "--type=json",
        "-p",
        r#"[{"op":"add","path":"/spec/template/spec/containers/-","value":{"name":"c","image":"redis:7"}}]"#,
    ])
    .await;
    let changed = TWO_CONTAINERS.replace("nginx:1", "nginx:2");
    let out = api
        .kubectl_stdin(&["apply", "-f", "-"], Some(&changed))
        .await;
    assert_eq!(
        stdout(&out),
        "deployment.apps/two configured\n",
        "{}",
        stderr(&out)
    );
    let images = api
        .kubectl_ok(&[
            "get",
            "deploy",
            "two",
            "-o",
            "jsonpath={range .spec.template.spec.containers[*]}{.name}={.image} {end}",
        ])
        .await;
    assert_eq!(images, "a=nginx:2 b=busybox:1 c=redis:7 ");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_still_rejects_unknown_fields() {
    let api = TestApiServer::start().await;
    let bad = TWO_CONTAINERS.replace(
        "        image: nginx:1\n",
        "        image: nginx:1\n        imagePullPolice: Always\n",
    );
    let out = api.kubectl_stdin(&["apply", "-f", "-"], Some(&bad)).await;
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(
            "Error from server (BadRequest): error when creating \"STDIN\": Deployment in version \"v1\" cannot be handled as a Deployment: strict decoding error: unknown field \"spec.template.spec.containers[0].imagePullPolice\""
        ),
        "{}",
        stderr(&out)
    );
    let out = api
        .kubectl_stdin(&["apply", "--server-side", "-f", "-"], Some(&bad))
        .await;
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(
            "Error from server (BadRequest): failed to create typed patch object (default/two; apps/v1, Kind=Deployment): .spec.template.spec.containers[name=\"a\"].imagePullPolice: field not declared in schema"
        ),
        "{}",
        stderr(&out)
    );
    api.kubectl_stdin(&["apply", "-f", "-"], Some(TWO_CONTAINERS))
        .await;
    let out = api.kubectl_stdin(&["apply", "-f", "-"], Some(&bad)).await;
    assert!(
        // Upstream's answer to a patch that does not decode: 422 with the patched object.
        stderr(&out).contains("The request is invalid: patch: Invalid value: \"{\\\"apiVersion\\\":\\\"apps/v1\\\"")
            && stderr(&out).contains(
                "strict decoding error: unknown field \"spec.template.spec.containers[0].imagePullPolice\""
            ),
        "{}",
        stderr(&out)
    );
}

/// Review kinds are create-only: `kubectl create -f` validates them (server-side, strict)
/// without `--validate=false`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn review_kinds_are_created_from_files_with_validation() {
    let api = TestApiServer::start().await;
    let create = |yaml: &'static str| {
        let api = &api;
        async move {
            api.kubectl_stdin(&["create", "-f", "-", "-o", "json"], Some(yaml))
                .await
        }
    };
    let out = create(
        "apiVersion: authentication.k8s.io/v1\nkind: TokenReview\nspec: {token: not-a-token}\n",
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let review: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("json");
    assert_eq!(review["kind"], "TokenReview");
    assert_ne!(review["status"]["authenticated"], true, "{review}");

    let out = create(
        "apiVersion: authorization.k8s.io/v1\nkind: SubjectAccessReview\nspec:\n  user: jane\n  \
         resourceAttributes: {verb: get, resource: pods, namespace: default}\n",
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let review: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("json");
    assert_eq!(review["status"]["allowed"], true);

    let out = create("apiVersion: authentication.k8s.io/v1\nkind: SelfSubjectReview\n").await;
    assert!(out.status.success(), "{}", stderr(&out));
    let review: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("json");
    assert!(
        review["status"]["userInfo"]["username"].is_string(),
        "{review}"
    );

    // The server validates strictly: an unknown field is refused.
    let out = create(
        "apiVersion: authentication.k8s.io/v1\nkind: TokenReview\nspec: {token: x, tokn: y}\n",
    )
    .await;
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("unknown field \"spec.tokn\""),
        "{}",
        stderr(&out)
    );
}
