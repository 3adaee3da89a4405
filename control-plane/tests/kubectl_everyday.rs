//! Everyday kubectl 1.33 commands an operator types, against the apiserver: generators
//! (`create configmap|secret|deployment|namespace|service`, sent as protobuf), `edit` with a
//! scripted editor, and the output formats (`-o yaml|json|wide|name|jsonpath`) on several kinds.
//! Outputs are asserted, not only exit codes.

mod support;

use std::process::Command;

use support::{TestApiServer, kubectl_path, stderr, stdout};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generators_create_what_they_say() {
    let api = TestApiServer::start().await;
    assert_eq!(
        api.kubectl_ok(&["create", "namespace", "shop"]).await,
        "namespace/shop created\n"
    );
    assert_eq!(
        api.kubectl_ok(&[
            "create",
            "configmap",
            "settings",
            "-n",
            "shop",
            "--from-literal=mode=fast",
            "--from-literal=level=3",
        ])
        .await,
        "configmap/settings created\n"
    );
    assert_eq!(
        api.kubectl_ok(&[
            "create",
            "secret",
            "generic",
            "creds",
            "-n",
            "shop",
            "--from-literal=password=s3cr3t",
        ])
        .await,
        "secret/creds created\n"
    );
    assert_eq!(
        api.kubectl_ok(&[
            "create",
            "deployment",
            "web",
            "-n",
            "shop",
            "--image=nginx:1.27",
            "--replicas=2",
            "--port=80",
        ])
        .await,
        "deployment.apps/web created\n"
    );
    let data = api
        .kubectl_ok(&[
            "get",
            "cm",
            "settings",
            "-n",
            "shop",
            "-o",
            "jsonpath={.data.mode} {.data.level}",
        ])
        .await;
    assert_eq!(data, "fast 3");
    // Secret data is base64 on the wire and stored as given.
    let password = api
        .kubectl_ok(&[
            "get",
            "secret",
            "creds",
            "-n",
            "shop",
            "-o",
            "jsonpath={.data.password} {.type}",
        ])
        .await;
    assert_eq!(password, "czNjcjN0 Opaque");
    // Defaults a Deployment gets from the apiserver, as upstream.
    let deploy = api
        .kubectl_ok(&["get", "deploy", "web", "-n", "shop", "-o", "json"])
        .await;
    let deploy: serde_json::Value = serde_json::from_str(&deploy).expect("json");
    assert_eq!(deploy["spec"]["replicas"], 2);
    assert_eq!(deploy["spec"]["strategy"]["type"], "RollingUpdate");
    assert_eq!(
        deploy["spec"]["strategy"]["rollingUpdate"]["maxSurge"],
        "25%"
    );
    assert_eq!(deploy["spec"]["revisionHistoryLimit"], 10);
    assert_eq!(deploy["spec"]["progressDeadlineSeconds"], 600);
    let container = &deploy["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["image"], "nginx:1.27");
    assert_eq!(container["imagePullPolicy"], "IfNotPresent");
    assert_eq!(container["ports"][0]["protocol"], "TCP");
    assert_eq!(
        deploy["spec"]["template"]["spec"]["restartPolicy"], "Always",
        "{deploy}"
    );
    assert_eq!(deploy["metadata"]["generation"], 1);

    // The namespace's objects, by name, in kubectl's order.
    let names = api
        .kubectl_ok(&["get", "cm,secret,deploy", "-n", "shop", "-o", "name"])
        .await;
    assert_eq!(
        names,
        "configmap/settings\nsecret/creds\ndeployment.apps/web\n"
    );
    // A second create of the same name is refused with upstream's words.
    let again = api.kubectl(&["create", "namespace", "shop"]).await;
    assert!(!again.status.success());
    assert_eq!(
        stderr(&again),
        "Error from server (AlreadyExists): namespaces \"shop\" already exists\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edit_with_a_scripted_editor_updates_the_object() {
    let api = TestApiServer::start().await;
    api.kubectl_ok(&[
        "create",
        "configmap",
        "tunable",
        "--from-literal=size=small",
    ])
    .await;
    // The "editor" rewrites the value in the file kubectl hands it.
    let editor = api.dir.path().join("editor.sh");
    std::fs::write(
        &editor,
        "#!/bin/sh\nsed -i 's/size: small/size: large/' \"$1\"\n",
    )
    .expect("write editor");
    std::fs::set_permissions(&editor, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod editor");
    let kubeconfig = api.kubeconfig();
    let cache = api.dir.path().join("kube-cache");
    let home = api.dir.path().to_path_buf();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(kubectl_path())
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .arg("--cache-dir")
            .arg(cache)
            .args(["edit", "configmap", "tunable"])
            .env_remove("KUBECONFIG")
            .env("HOME", home)
            .env("KUBE_EDITOR", &editor)
            .output()
            .expect("run kubectl edit")
    })
    .await
    .expect("join");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "configmap/tunable edited\n");
    assert_eq!(
        api.kubectl_ok(&["get", "cm", "tunable", "-o", "jsonpath={.data.size}"])
            .await,
        "large"
    );
}

const SERVICE_AND_POD: &str = "apiVersion: v1
kind: Service
metadata:
  name: api
  labels: {app: api}
spec:
  clusterIP: None
  selector: {app: api}
  ports:
  - {name: http, port: 80, targetPort: 8080}
---
apiVersion: v1
kind: Pod
metadata:
  name: api-0
  labels: {app: api}
spec:
  nodeName: node-a
  containers:
  - name: app
    image: busybox:1.36
    command: [sleep, '3600']
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_formats_on_services_and_pods() {
    let api = TestApiServer::start().await;
    let out = api
        .kubectl_stdin(&["apply", "-f", "-"], Some(SERVICE_AND_POD))
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "service/api created\npod/api-0 created\n");

    // Tables: the columns kubectl shows for each kind, and -o wide's extra ones.
    let svc = api.kubectl_ok(&["get", "svc", "api", "-o", "wide"]).await;
    let mut lines = svc.lines();
    let header: Vec<&str> = lines.next().expect("header").split_whitespace().collect();
    assert_eq!(
        header,
        [
            "NAME",
            "TYPE",
            "CLUSTER-IP",
            "EXTERNAL-IP",
            "PORT(S)",
            "AGE",
            "SELECTOR"
        ]
    );
    let row: Vec<&str> = lines.next().expect("row").split_whitespace().collect();
    assert_eq!(
        (row[0], row[1], row[2], row[3], row[4], row[6]),
        ("api", "ClusterIP", "None", "<none>", "80/TCP", "app=api"),
        "{svc}"
    );
    let pods = api.kubectl_ok(&["get", "pods", "-o", "wide"]).await;
    let mut lines = pods.lines();
    let header: Vec<&str> = lines.next().expect("header").split_whitespace().collect();
    assert_eq!(
        header[..6],
        ["NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP"],
        "{pods}"
    );
    let row: Vec<&str> = lines.next().expect("row").split_whitespace().collect();
    assert_eq!(
        (row[0], row[1], row[2], row[3]),
        ("api-0", "0/1", "Pending", "0")
    );
    assert!(row.contains(&"node-a"), "{pods}");

    // YAML and JSON carry the same object, with the server's defaults and system fields.
    let yaml = api.kubectl_ok(&["get", "pod", "api-0", "-o", "yaml"]).await;
    assert!(yaml.starts_with("apiVersion: v1\nkind: Pod\n"), "{yaml}");
    assert!(yaml.contains("  uid: "), "{yaml}");
    assert!(
        yaml.contains("    terminationMessagePath: /dev/termination-log\n"),
        "{yaml}"
    );
    assert!(yaml.contains("  qosClass: BestEffort\n"), "{yaml}");
    let json = api.kubectl_ok(&["get", "pod", "api-0", "-o", "json"]).await;
    let pod: serde_json::Value = serde_json::from_str(&json).expect("json");
    assert_eq!(pod["spec"]["dnsPolicy"], "ClusterFirst");
    assert_eq!(pod["spec"]["schedulerName"], "default-scheduler");
    assert_eq!(pod["spec"]["terminationGracePeriodSeconds"], 30);
    assert_eq!(pod["status"]["phase"], "Pending");
    // Label selection across kinds.
    let selected = api
        .kubectl_ok(&["get", "svc,pods", "-l", "app=api", "-o", "name"])
        .await;
    assert_eq!(selected, "service/api\npod/api-0\n");
    // Field selectors the kubelet and kubectl use.
    let on_node = api
        .kubectl_ok(&[
            "get",
            "pods",
            "--field-selector",
            "spec.nodeName=node-a,status.phase=Pending",
            "-o",
            "name",
        ])
        .await;
    assert_eq!(on_node, "pod/api-0\n");
    let elsewhere = api
        .kubectl(&["get", "pods", "--field-selector", "spec.nodeName=node-b"])
        .await;
    assert_eq!(
        stderr(&elsewhere),
        "No resources found in default namespace.\n"
    );
}
