//! CustomResourceDefinitions and custom resources end to end with the real kubectl: CRD
//! establishment, discovery (short names, categories, `api-resources`), printer columns,
//! schema defaulting and validation, field validation of unknown fields, merge patch,
//! status and scale subresources, multiple versions, `explain`, a restart, and CRD deletion
//! removing its custom resources.

mod support;

use support::{TestApiServer, stderr, stdout};

const VERSION_SCHEMA: &str = r#"
    schema:
      openAPIV3Schema:
        type: object
        description: CronTab runs a command on a schedule.
        properties:
          spec:
            type: object
            description: The desired schedule.
            required: [cronSpec]
            properties:
              cronSpec:
                type: string
                description: The cron schedule.
                pattern: '^(\d+|\*)(/\d+)?(\s+(\d+|\*)(/\d+)?){4}$'
              image:
                type: string
              replicas:
                type: integer
                minimum: 1
                maximum: 10
                default: 1
          status:
            type: object
            properties:
              replicas:
                type: integer
              labelSelector:
                type: string"#;

fn crd_yaml() -> String {
    format!(
        r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: crontabs.stable.example.com
spec:
  group: stable.example.com
  scope: Namespaced
  names:
    plural: crontabs
    singular: crontab
    kind: CronTab
    shortNames: [ct]
    categories: [all]
  versions:
  - name: v1
    served: true
    storage: true
    subresources:
      status: {{}}
      scale:
        specReplicasPath: .spec.replicas
        statusReplicasPath: .status.replicas
        labelSelectorPath: .status.labelSelector
    additionalPrinterColumns:
    - name: Spec
      type: string
      jsonPath: .spec.cronSpec
    - name: Replicas
      type: integer
      jsonPath: .spec.replicas
    - name: Image
      type: string
      priority: 1
      jsonPath: .spec.image
    - name: Age
      type: date
      jsonPath: .metadata.creationTimestamp{VERSION_SCHEMA}
  - name: v1beta1
    served: true
    storage: false{VERSION_SCHEMA}
"#
    )
}

const CRONTAB: &str = r#"apiVersion: stable.example.com/v1
kind: CronTab
metadata:
  name: my-cron
spec:
  cronSpec: "* * * * */5"
  image: my-image
"#;

async fn establish(api: &TestApiServer) {
    let out = api
        .kubectl_stdin(&["apply", "-f", "-"], Some(&crd_yaml()))
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    api.kubectl_ok(&[
        "wait",
        "--for",
        "condition=established",
        "crd/crontabs.stable.example.com",
        "--timeout=30s",
    ])
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crontab_crd_serves_custom_resources() {
    let api = TestApiServer::start().await;
    establish(&api).await;
    let crd = api
        .kubectl_ok(&[
            "get",
            "crd",
            "crontabs.stable.example.com",
            "-o",
            "jsonpath={.status.acceptedNames.kind} {.status.storedVersions} {.metadata.finalizers}",
        ])
        .await;
    assert_eq!(
        crd,
        r#"CronTab ["v1"] ["customresourcecleanup.apiextensions.k8s.io"]"#
    );
    let resources = api
        .kubectl_ok(&["api-resources", "--api-group=stable.example.com"])
        .await;
    assert!(
        resources.lines().any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f == ["crontabs", "ct", "stable.example.com/v1", "true", "CronTab"]
        }),
        "{resources}"
    );

    // Create; the schema's default fills spec.replicas.
    let out = api
        .kubectl_stdin(&["apply", "-f", "-"], Some(CRONTAB))
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out).trim(),
        "crontab.stable.example.com/my-cron created"
    );
    let table = api.kubectl_ok(&["get", "ct"]).await;
    let lines: Vec<Vec<&str>> = table
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(lines[0], ["NAME", "SPEC", "REPLICAS", "AGE"], "{table}");
    assert_eq!(
        &lines[1][..7],
        ["my-cron", "*", "*", "*", "*", "*/5", "1"],
        "{table}"
    );
    let wide = api.kubectl_ok(&["get", "crontabs", "-o", "wide"]).await;
    assert!(
        wide.lines().next().unwrap_or_default().contains("IMAGE"),
        "{wide}"
    );
    assert!(wide.contains("my-image"), "{wide}");

    // Merge patch changes the spec and bumps the generation; label and selectors.
    api.kubectl_ok(&[
        "patch",
        "ct",
        "my-cron",
        "--type=merge",
        "-p",
        r#"{"spec":{"replicas":3}}"#,
    ])
    .await;
    api.kubectl_ok(&["label", "ct", "my-cron", "tier=web"])
        .await;
    let got = api
        .kubectl_ok(&[
            "get",
            "ct",
            "-l",
            "tier=web",
            "-o",
            "jsonpath={.items[*].metadata.name} {.items[0].spec.replicas} {.items[0].metadata.generation}",
        ])
        .await;
    assert_eq!(got, "my-cron 3 2");
    assert!(
        api.kubectl_ok(&["get", "ct", "-l", "tier=db"])
            .await
            .is_empty()
    );

    // Status subresource: status changes, the generation does not; the main resource
    // ignores status.
    api.kubectl_ok(&[
        "patch",
        "ct",
        "my-cron",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"replicas":2,"labelSelector":"app=cron"}}"#,
    ])
    .await;
    api.kubectl_ok(&[
        "patch",
        "ct",
        "my-cron",
        "--type=merge",
        "-p",
        r#"{"status":{"replicas":9}}"#,
    ])
    .await;
    let got = api
        .kubectl_ok(&[
            "get",
            "ct",
            "my-cron",
            "-o",
            "jsonpath={.status.replicas} {.metadata.generation}",
        ])
        .await;
    assert_eq!(got, "2 2");

    // Scale subresource.
    let out = api
        .kubectl_ok(&["scale", "ct", "my-cron", "--replicas=5"])
        .await;
    assert_eq!(out.trim(), "crontab.stable.example.com/my-cron scaled");
    let scale = api
        .kubectl_ok(&[
            "get",
            "--raw",
            "/apis/stable.example.com/v1/namespaces/default/crontabs/my-cron/scale",
        ])
        .await;
    let scale: serde_json::Value = serde_json::from_str(&scale).expect("scale json");
    assert_eq!(scale["kind"], "Scale");
    assert_eq!(scale["spec"]["replicas"], 5);
    assert_eq!(scale["status"]["replicas"], 2);
    assert_eq!(scale["status"]["selector"], "app=cron");

    // Another served version: same object, its apiVersion.
    let got = api
        .kubectl_ok(&[
            "get",
            "crontabs.v1beta1.stable.example.com",
            "my-cron",
            "-o",
            "jsonpath={.apiVersion} {.spec.replicas}",
        ])
        .await;
    assert_eq!(got, "stable.example.com/v1beta1 5");
    // A LIST streams stored objects: they too come at the requested version.
    let listed = api
        .kubectl_ok(&[
            "get",
            "--raw",
            "/apis/stable.example.com/v1beta1/namespaces/default/crontabs",
        ])
        .await;
    let listed: serde_json::Value = serde_json::from_str(&listed).expect("list json");
    assert_eq!(
        listed["items"][0]["apiVersion"], "stable.example.com/v1beta1",
        "{listed}"
    );

    // `kubectl get all` includes custom resources in the `all` category.
    let all = api.kubectl_ok(&["get", "all"]).await;
    assert!(all.contains("crontab.stable.example.com/my-cron"), "{all}");

    // Strategic merge patch is not supported for custom resources: 415.
    let out = api
        .kubectl(&[
            "patch",
            "ct",
            "my-cron",
            "--type=strategic",
            "-p",
            r#"{"spec":{"replicas":2}}"#,
        ])
        .await;
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(
            "application/strategic-merge-patch+json is not supported by stable.example.com/v1, Kind=CronTab"
        ),
        "{}",
        stderr(&out)
    );

    // `kubectl explain` from the OpenAPI v3 document.
    let explain = api.kubectl_ok(&["explain", "crontab.spec"]).await;
    assert!(explain.contains("cronSpec"), "{explain}");
    assert!(explain.contains("The desired schedule."), "{explain}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_and_unknown_fields_of_custom_resources() {
    let api = TestApiServer::start().await;
    establish(&api).await;
    // Schema violations: 422 naming the fields.
    let bad = CRONTAB.replace("image: my-image", "image: my-image\n  replicas: 20");
    let out = api.kubectl_stdin(&["apply", "-f", "-"], Some(&bad)).await;
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains(r#"The CronTab "my-cron" is invalid: spec.replicas: Invalid value: 20: spec.replicas in body should be less than or equal to 10"#),
        "{err}"
    );
    let bad = CRONTAB.replace("  cronSpec: \"* * * * */5\"\n", "");
    let out = api.kubectl_stdin(&["create", "-f", "-"], Some(&bad)).await;
    assert!(
        stderr(&out).contains("spec.cronSpec: Required value"),
        "{}",
        stderr(&out)
    );
    let bad = CRONTAB.replace("image: my-image", "image: 7");
    let out = api.kubectl_stdin(&["create", "-f", "-"], Some(&bad)).await;
    assert!(
        stderr(&out).contains(r#"spec.image: Invalid value: "integer": spec.image in body must be of type string: "integer""#),
        "{}",
        stderr(&out)
    );

    // Unknown fields: Strict (kubectl's default) → 400; Warn → a warning; Ignore → pruned.
    let unknown = CRONTAB.replace("image: my-image", "image: my-image\n  bogus: 1");
    let out = api
        .kubectl_stdin(&["create", "-f", "-"], Some(&unknown))
        .await;
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(r#"unknown field "spec.bogus""#),
        "{}",
        stderr(&out)
    );
    let out = api
        .kubectl_stdin(&["create", "--validate=warn", "-f", "-"], Some(&unknown))
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(r#"unknown field "spec.bogus""#),
        "{}",
        stderr(&out)
    );
    api.kubectl_ok(&["delete", "ct", "my-cron"]).await;
    let out = api
        .kubectl_stdin(&["create", "--validate=false", "-f", "-"], Some(&unknown))
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stderr(&out).contains("bogus"), "{}", stderr(&out));
    let got = api
        .kubectl_ok(&["get", "ct", "my-cron", "-o", "json"])
        .await;
    assert!(!got.contains("bogus"), "pruned: {got}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_resources_survive_a_restart_and_go_with_their_crd() {
    let api = TestApiServer::start().await;
    establish(&api).await;
    let out = api
        .kubectl_stdin(&["apply", "-f", "-"], Some(CRONTAB))
        .await;
    assert!(out.status.success(), "{}", stderr(&out));

    let api = api.restart().await;
    let got = api
        .kubectl_ok(&["get", "ct", "my-cron", "-o", "jsonpath={.spec.cronSpec}"])
        .await;
    assert_eq!(got, "* * * * */5");

    let out = api
        .kubectl_ok(&["delete", "crd", "crontabs.stable.example.com"])
        .await;
    assert!(out.contains("deleted"), "{out}");
    let out = api
        .kubectl(&[
            "get",
            "--raw",
            "/apis/stable.example.com/v1/namespaces/default/crontabs",
        ])
        .await;
    assert!(!out.status.success(), "no longer served");
    // Recreated, the CRD starts empty: its custom resources went with it.
    establish(&api).await;
    let out = api.kubectl(&["get", "ct"]).await;
    assert!(stdout(&out).is_empty(), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("No resources found"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_and_deletecollection_of_custom_resources() {
    let api = TestApiServer::start().await;
    establish(&api).await;
    let out = api
        .kubectl_stdin(&["apply", "-f", "-"], Some(CRONTAB))
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let watcher = {
        let args = [
            "get",
            "ct",
            "-w",
            "--output-watch-events",
            "--request-timeout=6s",
        ];
        let api_ref = &api;
        async move { api_ref.kubectl(&args).await }
    };
    let changer = async {
        tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
        api.kubectl_ok(&[
            "patch",
            "ct",
            "my-cron",
            "--type=json",
            "-p",
            r#"[{"op":"replace","path":"/spec/replicas","value":4}]"#,
        ])
        .await;
        api.kubectl_ok(&["delete", "ct", "my-cron"]).await;
    };
    let (out, ()) = tokio::join!(watcher, changer);
    let text = stdout(&out);
    let events: Vec<Vec<&str>> = text
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|w| {
            w.first()
                .is_some_and(|e| ["ADDED", "MODIFIED", "DELETED"].contains(e))
        })
        .collect();
    assert_eq!(events.len(), 3, "{text}");
    assert_eq!(events[0][..2], ["ADDED", "my-cron"], "{text}");
    assert_eq!(events[1][0], "MODIFIED", "{text}");
    assert_eq!(
        events[1][7], "4",
        "the printer columns of the new object: {text}"
    );
    assert_eq!(events[2][0], "DELETED", "{text}");

    // DELETE on the collection removes what the selector matches.
    for (name, tier) in [("a", "web"), ("b", "web"), ("c", "db")] {
        let object = CRONTAB.replace(
            "name: my-cron",
            &format!("name: {name}\n  labels:\n    tier: {tier}"),
        );
        let out = api
            .kubectl_stdin(&["create", "-f", "-"], Some(&object))
            .await;
        assert!(out.status.success(), "{}", stderr(&out));
    }
    api.kubectl_ok(&[
        "delete",
        "--raw",
        "/apis/stable.example.com/v1/namespaces/default/crontabs?labelSelector=tier%3Dweb",
    ])
    .await;
    let left = api
        .kubectl_ok(&["get", "ct", "-o", "jsonpath={.items[*].metadata.name}"])
        .await;
    assert_eq!(left, "c");
}

/// A CRD whose `spec.ports` is a list map keyed by `name`; `extra` is added to `spec`'s
/// properties.
fn widget_crd(extra: &str) -> String {
    format!(
        r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.ssa.example.com
spec:
  group: ssa.example.com
  scope: Namespaced
  names: {{plural: widgets, singular: widget, kind: Widget}}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              ports:
                type: array
                x-kubernetes-list-type: map
                x-kubernetes-list-map-keys: [name]
                items:
                  type: object
                  required: [name]
                  properties:
                    name: {{type: string}}
                    port: {{type: integer}}{extra}
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_side_apply_and_explain_follow_the_crd_schema() {
    let api = TestApiServer::start().await;
    let out = api
        .kubectl_stdin(&["apply", "-f", "-"], Some(&widget_crd("")))
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    api.kubectl_ok(&[
        "wait",
        "--for",
        "condition=established",
        "crd/widgets.ssa.example.com",
        "--timeout=30s",
    ])
    .await;

    // Two managers own one entry each of a list map: no conflict, both entries stay.
    let widget = |port: &str| {
        format!(
            "apiVersion: ssa.example.com/v1\nkind: Widget\nmetadata:\n  name: w\nspec:\n  ports:\n  - {port}\n"
        )
    };
    for (manager, port) in [
        ("alpha", "{name: http, port: 80}"),
        ("beta", "{name: metrics, port: 9090}"),
    ] {
        let out = api
            .kubectl_stdin(
                &[
                    "apply",
                    "--server-side",
                    &format!("--field-manager={manager}"),
                    "-f",
                    "-",
                ],
                Some(&widget(port)),
            )
            .await;
        assert!(out.status.success(), "{manager}: {}", stderr(&out));
    }
    let ports = api
        .kubectl_ok(&["get", "widget", "w", "-o", "jsonpath={.spec.ports[*].name}"])
        .await;
    assert_eq!(ports, "http metrics");
    let owners = api
        .kubectl_ok(&[
            "get",
            "widget",
            "w",
            "--show-managed-fields",
            "-o",
            "jsonpath={.metadata.managedFields[*].fieldsV1}",
        ])
        .await;
    assert!(
        owners.contains(r#"k:{\"name\":\"http\"}"#) || owners.contains(r#"k:{"name":"http"}"#),
        "entries are owned by key: {owners}"
    );
    // alpha changing beta's entry conflicts.
    let out = api
        .kubectl_stdin(
            &["apply", "--server-side", "--field-manager=alpha", "-f", "-"],
            Some(&widget("{name: metrics, port: 9091}")),
        )
        .await;
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(r#".spec.ports[name="metrics"].port"#),
        "{}",
        stderr(&out)
    );

    // A schema change reaches the published OpenAPI document without a restart.
    let out = api.kubectl(&["explain", "widgets.spec.replicas"]).await;
    assert!(!out.status.success(), "{}", stdout(&out));
    let replicas = "\n              replicas: {type: integer, description: How many widgets run.}";
    let out = api
        .kubectl_stdin(&["apply", "-f", "-"], Some(&widget_crd(replicas)))
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let mut explained = String::new();
    for _ in 0..50 {
        let out = api.kubectl(&["explain", "widgets.spec.replicas"]).await;
        explained = stdout(&out);
        if explained.contains("How many widgets run.") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert!(explained.contains("How many widgets run."), "{explained}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_crd_waits_for_the_finalizers_of_its_custom_resources() {
    let api = TestApiServer::start().await;
    establish(&api).await;
    let held = CRONTAB.replace(
        "name: my-cron",
        "name: held\n  finalizers: [example.com/keep]",
    );
    for object in [held.as_str(), CRONTAB] {
        let out = api
            .kubectl_stdin(&["create", "-f", "-"], Some(object))
            .await;
        assert!(out.status.success(), "{}", stderr(&out));
    }
    api.kubectl_ok(&[
        "delete",
        "crd",
        "crontabs.stable.example.com",
        "--wait=false",
    ])
    .await;

    // The CRD lingers, Terminating; the free object is gone, the held one is deleting.
    let mut state = String::new();
    for _ in 0..50 {
        state = api
            .kubectl_ok(&[
                "get",
                "ct",
                "-o",
                "jsonpath={range .items[*]}{.metadata.name}={.metadata.deletionTimestamp}{\"\\n\"}{end}",
            ])
            .await;
        if !state.contains("my-cron") && state.contains("held=2") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        !state.contains("my-cron") && state.contains("held=2"),
        "{state}"
    );
    let terminating = api
        .kubectl_ok(&[
            "get",
            "crd",
            "crontabs.stable.example.com",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Terminating\")].reason}",
        ])
        .await;
    assert_eq!(terminating, "InstanceDeletionInProgress");
    let out = api
        .kubectl_stdin(
            &["create", "-f", "-"],
            Some(&CRONTAB.replace("my-cron", "late")),
        )
        .await;
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(
            "crontabs.stable.example.com \"late\" is forbidden: create not allowed while custom resource definition is terminating"
        ),
        "{}",
        stderr(&out)
    );

    // Removing the finalizer lets the object, then the CRD, go.
    api.kubectl_ok(&[
        "patch",
        "ct",
        "held",
        "--type=merge",
        "-p",
        r#"{"metadata":{"finalizers":null}}"#,
    ])
    .await;
    api.kubectl_ok(&[
        "wait",
        "--for=delete",
        "crd/crontabs.stable.example.com",
        "--timeout=20s",
    ])
    .await;
    let out = api
        .kubectl(&[
            "get",
            "--raw",
            "/apis/stable.example.com/v1/namespaces/default/crontabs",
        ])
        .await;
    assert!(!out.status.success(), "no longer served");
}
