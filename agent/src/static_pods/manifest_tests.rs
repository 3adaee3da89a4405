//! Tests of `parse_manifest`: decoding, every validation rule's message, defaulting, and the
//! hash (stability, sensitivity, golden value).

use std::path::Path;

use k8s_openapi::api::core::v1::Pod;

use super::manifest::{MAX_MANIFEST_BYTES, ManifestError, parse_manifest};
use super::pod_hash;
use crate::labels;

const NODE: &str = "node1";
const FILE: &str = "/etc/kwk/manifests/web.yaml";

fn parse(text: &str) -> Result<Pod, ManifestError> {
    parse_manifest(Path::new(FILE), text.as_bytes(), NODE)
}

/// A valid manifest with extra spec lines (2-space indent) and extra lines for the first
/// container (4-space indent).
fn manifest(spec_extra: &str, container_extra: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\nspec:\n{spec_extra}  containers:\n  \
         - name: app\n    image: nginx:1.27\n{container_extra}"
    )
}

fn field_errors(text: &str) -> Vec<String> {
    match parse(text) {
        Err(ManifestError::Invalid { errors, .. }) => {
            errors.iter().map(ToString::to_string).collect()
        }
        Err(other) => panic!("expected field errors, got {other}"),
        Ok(_) => panic!("expected field errors, manifest was accepted:\n{text}"),
    }
}

#[test]
fn valid_manifest_is_accepted() {
    let pod = parse(&manifest("", "")).unwrap();
    assert_eq!(pod.metadata.name.as_deref(), Some("web-node1"));
}

#[test]
fn each_rule_reports_its_field_and_message() {
    let long = "a".repeat(250);
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "name required",
            "apiVersion: v1\nkind: Pod\nspec:\n  containers:\n  - name: a\n    image: x\n".into(),
            "metadata.name: Required value",
        ),
        (
            "name subdomain",
            manifest("", "").replace("name: web", "name: Web_1"),
            "metadata.name: Invalid value: \"Web_1\": a lowercase RFC 1123 subdomain",
        ),
        (
            "name plus node too long",
            manifest("", "").replace("name: web", &format!("name: {long}")),
            "metadata.name: Invalid value: \"aaaa",
        ),
        (
            "namespace label",
            manifest("", "").replace("name: web", "name: web\n  namespace: a.b"),
            "metadata.namespace: Invalid value: \"a.b\": a lowercase RFC 1123 label",
        ),
        (
            "label value",
            manifest("", "").replace("name: web", "name: web\n  labels:\n    tier: \"-x\""),
            "metadata.labels[tier]: Invalid value: \"-x\": a valid label",
        ),
        (
            "containers required",
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\nspec:\n  containers: []\n".into(),
            "spec.containers: Required value",
        ),
        (
            "no spec",
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n".into(),
            "spec.containers: Required value",
        ),
        (
            "image required",
            manifest("", "").replace("    image: nginx:1.27\n", ""),
            "spec.containers[0].image: Required value",
        ),
        (
            "container name label",
            manifest("", "").replace("name: app", "name: App"),
            "spec.containers[0].name: Invalid value: \"App\": a lowercase RFC 1123 label",
        ),
        (
            "duplicate across init and app containers",
            manifest(
                "  initContainers:\n  - name: app\n    image: busybox:1\n",
                "",
            ),
            "spec.containers[0].name: Duplicate value: \"app\"",
        ),
        (
            "restart policy",
            manifest("  restartPolicy: Sometimes\n", ""),
            "spec.restartPolicy: Unsupported value: \"Sometimes\": supported values: \
             \"Always\", \"OnFailure\", \"Never\"",
        ),
        (
            "init restart policy",
            manifest(
                "  initContainers:\n  - name: init\n    image: b:1\n    restartPolicy: Never\n",
                "",
            ),
            "spec.initContainers[0].restartPolicy: Unsupported value: \"Never\": supported \
             values: \"Always\"",
        ),
        (
            "app container restart policy",
            manifest("", "    restartPolicy: Always\n"),
            "spec.containers[0].restartPolicy: Forbidden: may not be set for non-init containers",
        ),
        (
            "init container probe",
            manifest(
                "  initContainers:\n  - name: init\n    image: b:1\n    livenessProbe:\n      \
                 exec:\n        command: [true]\n",
                "",
            ),
            "spec.initContainers[0].livenessProbe: Forbidden: may not be set for init \
             containers without restartPolicy=Always",
        ),
        (
            "container port range",
            manifest("", "    ports:\n    - containerPort: 70000\n"),
            "spec.containers[0].ports[0].containerPort: Invalid value: 70000: must be between \
             1 and 65535, inclusive",
        ),
        (
            "host port range",
            manifest(
                "",
                "    ports:\n    - containerPort: 80\n      hostPort: -1\n",
            ),
            "spec.containers[0].ports[0].hostPort: Invalid value: -1: must be between 1 and \
             65535, inclusive",
        ),
        (
            "protocol",
            manifest(
                "",
                "    ports:\n    - containerPort: 80\n      protocol: ICMP\n",
            ),
            "spec.containers[0].ports[0].protocol: Unsupported value: \"ICMP\": supported \
             values: \"SCTP\", \"TCP\", \"UDP\"",
        ),
        (
            "port name",
            manifest(
                "",
                "    ports:\n    - containerPort: 80\n      name: HTTP\n",
            ),
            "spec.containers[0].ports[0].name: Invalid value: \"HTTP\": must contain only \
             alpha-numeric characters (a-z, 0-9), and hyphens (-)",
        ),
        (
            "port name unique",
            manifest(
                "",
                "    ports:\n    - containerPort: 80\n      name: web\n    - containerPort: \
                 81\n      name: web\n",
            ),
            "spec.containers[0].ports[1].name: Duplicate value: \"web\"",
        ),
        (
            "host port conflict",
            manifest(
                "",
                "    ports:\n    - containerPort: 80\n      hostPort: 8080\n    - \
                 containerPort: 81\n      hostPort: 8080\n",
            ),
            "spec.containers[0].ports[1].hostPort: Duplicate value: \"8080/TCP\"",
        ),
        (
            "host network port mismatch",
            manifest(
                "  hostNetwork: true\n",
                "    ports:\n    - containerPort: 80\n      hostPort: 81\n",
            ),
            "spec.containers[0].ports[0].hostPort: Invalid value: 81: must match \
             `containerPort` when `hostNetwork` is true",
        ),
        (
            "volume name unique",
            manifest(
                "  volumes:\n  - name: d\n    emptyDir: {}\n  - name: d\n    emptyDir: {}\n",
                "",
            ),
            "spec.volumes[1].name: Duplicate value: \"d\"",
        ),
        (
            "volume name label",
            manifest("  volumes:\n  - name: D\n    emptyDir: {}\n", ""),
            "spec.volumes[0].name: Invalid value: \"D\": a lowercase RFC 1123 label",
        ),
        (
            "two volume sources",
            manifest(
                "  volumes:\n  - name: d\n    emptyDir: {}\n    hostPath:\n      path: /x\n",
                "",
            ),
            "spec.volumes[0].hostPath: Forbidden: may not specify more than 1 volume type",
        ),
        (
            "mount of unknown volume",
            manifest(
                "",
                "    volumeMounts:\n    - name: data\n      mountPath: /data\n",
            ),
            "spec.containers[0].volumeMounts[0].name: Not found: \"data\"",
        ),
        (
            "mount path required",
            manifest(
                "  volumes:\n  - name: d\n    emptyDir: {}\n",
                "    volumeMounts:\n    - name: d\n      mountPath: \"\"\n",
            ),
            "spec.containers[0].volumeMounts[0].mountPath: Required value",
        ),
        (
            "mount path absolute",
            manifest(
                "  volumes:\n  - name: d\n    emptyDir: {}\n",
                "    volumeMounts:\n    - name: d\n      mountPath: data\n",
            ),
            "spec.containers[0].volumeMounts[0].mountPath: Invalid value: \"data\": must be an \
             absolute path",
        ),
        (
            "mount path unique",
            manifest(
                "  volumes:\n  - name: d\n    emptyDir: {}\n",
                "    volumeMounts:\n    - name: d\n      mountPath: /a\n    - name: d\n      \
                 mountPath: /a\n",
            ),
            "spec.containers[0].volumeMounts[1].mountPath: Invalid value: \"/a\": must be unique",
        ),
        (
            "sub path backsteps",
            manifest(
                "  volumes:\n  - name: d\n    emptyDir: {}\n",
                "    volumeMounts:\n    - name: d\n      mountPath: /a\n      subPath: \
                 ../etc\n",
            ),
            "spec.containers[0].volumeMounts[0].subPath: Invalid value: \"../etc\": must not \
             contain '..'",
        ),
        (
            "host path required",
            manifest(
                "  volumes:\n  - name: d\n    hostPath:\n      path: \"\"\n",
                "",
            ),
            "spec.volumes[0].hostPath.path: Required value",
        ),
        (
            "host path type",
            manifest(
                "  volumes:\n  - name: d\n    hostPath:\n      path: /x\n      type: Folder\n",
                "",
            ),
            "spec.volumes[0].hostPath.type: Unsupported value: \"Folder\": supported values: \
             \"\", \"BlockDevice\", \"CharDevice\", \"Directory\", \"DirectoryOrCreate\", \
             \"File\", \"FileOrCreate\", \"Socket\"",
        ),
        (
            "secret volume",
            manifest(
                "  volumes:\n  - name: d\n    secret:\n      secretName: s\n",
                "",
            ),
            "spec.volumes[0].secret: Forbidden: static pods may only use emptyDir, hostPath, \
             downwardAPI and image volumes",
        ),
        (
            "config map volume",
            manifest(
                "  volumes:\n  - name: d\n    configMap:\n      name: c\n",
                "",
            ),
            "spec.volumes[0].configMap: Forbidden: static pods may only use",
        ),
        (
            "pvc volume",
            manifest(
                "  volumes:\n  - name: d\n    persistentVolumeClaim:\n      claimName: c\n",
                "",
            ),
            "spec.volumes[0].persistentVolumeClaim: Forbidden: static pods may only use",
        ),
        (
            "projected volume",
            manifest(
                "  volumes:\n  - name: d\n    projected:\n      sources: []\n",
                "",
            ),
            "spec.volumes[0].projected: Forbidden: static pods may only use",
        ),
        (
            "git repo volume",
            manifest(
                "  volumes:\n  - name: d\n    gitRepo:\n      repository: https://x/y.git\n",
                "",
            ),
            "spec.volumes[0].gitRepo: Forbidden: gitRepo volumes are not supported \
             (CVE-2024-10220)",
        ),
        (
            "quantity syntax",
            manifest("", "    resources:\n      limits:\n        cpu: lots\n"),
            "spec.containers[0].resources.limits[cpu]: Invalid value: \"lots\": quantity",
        ),
        (
            "negative quantity",
            manifest(
                "",
                "    resources:\n      requests:\n        memory: -1Mi\n",
            ),
            "spec.containers[0].resources.requests[memory]: Invalid value: \"-1Mi\": must be \
             greater than or equal to 0",
        ),
        (
            "request above limit",
            manifest(
                "",
                "    resources:\n      requests:\n        cpu: 2\n      limits:\n        cpu: \
                 500m\n",
            ),
            "spec.containers[0].resources.requests[cpu]: Invalid value: \"2\": must be less \
             than or equal to cpu limit of 500m",
        ),
        (
            "resource name",
            manifest("", "    resources:\n      limits:\n        gpus: 1\n"),
            "spec.containers[0].resources.limits[gpus]: Invalid value: \"gpus\": must be a \
             standard resource type or fully qualified",
        ),
        (
            "env name",
            manifest("", "    env:\n    - name: A=B\n      value: x\n"),
            "spec.containers[0].env[0].name: Invalid value: \"A=B\": a valid environment \
             variable name must consist only of printable ASCII characters other than '='",
        ),
        (
            "env field path",
            manifest(
                "",
                "    env:\n    - name: X\n      valueFrom:\n        fieldRef:\n          \
                 fieldPath: spec.hostname\n",
            ),
            "spec.containers[0].env[0].valueFrom.fieldRef.fieldPath: Unsupported value: \
             \"spec.hostname\": supported values: \"metadata.annotations['<KEY>']\"",
        ),
        (
            "env secret",
            manifest(
                "",
                "    env:\n    - name: X\n      valueFrom:\n        secretKeyRef:\n          \
                 name: s\n          key: k\n",
            ),
            "spec.containers[0].env[0].valueFrom.secretKeyRef: Forbidden: static pods may not \
             reference API objects",
        ),
        (
            "env from",
            manifest("", "    envFrom:\n    - configMapRef:\n        name: c\n"),
            "spec.containers[0].envFrom: Forbidden: static pods may not reference API objects",
        ),
        (
            "grace period",
            manifest("  terminationGracePeriodSeconds: -5\n", ""),
            "spec.terminationGracePeriodSeconds: Invalid value: -5: must be greater than or \
             equal to 0",
        ),
        (
            "dns policy",
            manifest("  dnsPolicy: Google\n", ""),
            "spec.dnsPolicy: Unsupported value: \"Google\": supported values: \"ClusterFirst\", \
             \"ClusterFirstWithHostNet\", \"Default\", \"None\"",
        ),
        (
            "dns none needs nameservers",
            manifest("  dnsPolicy: None\n", ""),
            "spec.dnsConfig.nameservers: Required value",
        ),
        (
            "service account",
            manifest("  serviceAccountName: admin\n", ""),
            "spec.serviceAccountName: Forbidden: static pods may not use a service account",
        ),
        (
            "probe handler",
            manifest("", "    readinessProbe:\n      periodSeconds: 5\n"),
            "spec.containers[0].readinessProbe: Required value: must specify a handler type",
        ),
        (
            "pull policy",
            manifest("", "    imagePullPolicy: Sometimes\n"),
            "spec.containers[0].imagePullPolicy: Unsupported value: \"Sometimes\": supported \
             values: \"Always\", \"IfNotPresent\", \"Never\"",
        ),
    ];
    for (name, text, want) in cases {
        let errors = field_errors(&text);
        assert!(
            errors.iter().any(|e| e.starts_with(want)),
            "{name}: want an error starting with\n  {want}\ngot\n  {errors:#?}"
        );
    }
}

#[test]
fn valid_variants_are_accepted() {
    let cases = [
        (
            "sidecar with probe",
            manifest(
                "  initContainers:\n  - name: side\n    image: b:1\n    restartPolicy: Always\n    \
                 readinessProbe:\n      tcpSocket:\n        port: 80\n",
                "",
            ),
        ),
        (
            "relaxed env names and field refs",
            manifest(
                "",
                "    env:\n    - name: my.var-1\n      value: x\n    - name: NODE\n      \
                 valueFrom:\n        fieldRef:\n          fieldPath: spec.nodeName\n    - name: \
                 APP\n      valueFrom:\n        fieldRef:\n          fieldPath: \
                 metadata.labels['app']\n",
            ),
        ),
        (
            "host path types and mounts",
            manifest(
                "  volumes:\n  - name: certs\n    hostPath:\n      path: /etc/kwk/pki\n      \
                 type: DirectoryOrCreate\n  - name: scratch\n",
                "    volumeMounts:\n    - name: certs\n      mountPath: /pki\n      readOnly: \
                 true\n    - name: scratch\n      mountPath: /tmp\n",
            ),
        ),
        (
            "host network ports",
            manifest(
                "  hostNetwork: true\n",
                "    ports:\n    - containerPort: 6443\n",
            ),
        ),
        (
            "limits only",
            manifest(
                "",
                "    resources:\n      limits:\n        cpu: \"1\"\n        memory: 1Gi\n",
            ),
        ),
    ];
    for (name, text) in cases {
        if let Err(e) = parse(&text) {
            panic!("{name}: rejected: {e}");
        }
    }
}

#[test]
fn all_errors_of_a_file_are_reported_with_the_file_name() {
    let text = manifest(
        "  restartPolicy: Sometimes\n",
        "    ports:\n    - containerPort: 0\n",
    )
    .replace("    image: nginx:1.27\n", "");
    let err = parse(&text).unwrap_err();
    let message = err.to_string();
    assert!(message.starts_with(&format!("{FILE}: ")), "{message}");
    for part in [
        "spec.containers[0].image: Required value",
        "spec.containers[0].ports[0].containerPort: Invalid value: 0",
        "spec.restartPolicy: Unsupported value: \"Sometimes\"",
    ] {
        assert!(message.contains(part), "{part} missing from {message}");
    }
}

#[test]
fn decoding_errors() {
    let wrong_kind = manifest("", "").replace("kind: Pod", "kind: Deployment");
    let wrong_version = manifest("", "").replace("apiVersion: v1", "apiVersion: apps/v1");
    let two_docs = format!("{}---\n{}", manifest("", ""), manifest("", ""));
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "kind",
            wrong_kind.into(),
            "kind: Unsupported value: \"Deployment\": supported values: \"Pod\"",
        ),
        (
            "apiVersion",
            wrong_version.into(),
            "apiVersion: Unsupported value: \"apps/v1\"",
        ),
        (
            "no kind",
            b"apiVersion: v1\nmetadata: {name: a}\n".to_vec(),
            "kind: Required value",
        ),
        ("empty", b"# nothing\n\n".to_vec(), "file is empty"),
        (
            "two documents",
            two_docs.into(),
            "more than one YAML document",
        ),
        ("not utf-8", b"\xff\xfe".to_vec(), "not UTF-8"),
        (
            "bad yaml",
            b"apiVersion: v1\nkind: [Pod\n".to_vec(),
            "invalid YAML",
        ),
        (
            "bad json",
            b"{\"apiVersion\": \"v1\",}".to_vec(),
            "invalid JSON",
        ),
        (
            "wrong type",
            manifest("", "    ports:\n    - containerPort: eighty\n").into(),
            "invalid YAML",
        ),
    ];
    for (name, bytes, want) in cases {
        let err = parse_manifest(Path::new(FILE), &bytes, NODE).unwrap_err();
        let message = err.to_string();
        assert!(message.starts_with(FILE), "{name}: {message}");
        assert!(message.contains(want), "{name}: want {want:?} in {message}");
    }
}

#[test]
fn json_manifest_gives_the_same_pod_as_yaml() {
    let json = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"web"},
        "spec":{"containers":[{"name":"app","image":"nginx:1.27"}]}}"#;
    let from_json = parse(json).unwrap();
    let from_yaml = parse(&manifest("", "")).unwrap();
    assert_eq!(from_json, from_yaml);
}

#[test]
fn oversized_file_is_rejected_before_parsing() {
    let mut bytes = manifest("", "").into_bytes();
    bytes.resize(MAX_MANIFEST_BYTES + 1, b' ');
    let err = parse_manifest(Path::new(FILE), &bytes, NODE).unwrap_err();
    assert!(matches!(err, ManifestError::TooLarge { .. }), "{err}");
}

#[test]
fn alias_bomb_is_rejected_fast() {
    let mut text =
        String::from("apiVersion: v1\nkind: Pod\na0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..10 {
        let prev = i - 1;
        text.push_str(&format!(
            "a{i}: &a{i} [*a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, \
             *a{prev}, *a{prev}, *a{prev}]\n"
        ));
    }
    text.push_str("metadata: {name: web}\nspec: {containers: [{name: a, image: b}]}\n");
    let started = std::time::Instant::now();
    let err = parse(&text).unwrap_err();
    assert!(matches!(err, ManifestError::Yaml { .. }), "{err}");
    // Generous bound: a bomb that expanded would take minutes and gigabytes.
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
}

#[test]
fn anchors_within_budget_work() {
    let text = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\nspec:\n  containers:\n  - name: \
                a\n    image: b:1\n    env: &env\n    - name: A\n      value: x\n  - name: c\n    \
                image: b:1\n    env: *env\n";
    let pod = parse(text).unwrap();
    let spec = pod.spec.unwrap();
    assert_eq!(spec.containers[1].env, spec.containers[0].env);
}

#[test]
fn defaults_are_applied() {
    let text = manifest(
        "  volumes:\n  - name: h\n    hostPath:\n      path: /x\n  - name: e\n    emptyDir: \
         {}\n",
        "    ports:\n    - containerPort: 80\n    env:\n    - name: N\n      valueFrom:\n        \
         fieldRef:\n          fieldPath: metadata.name\n    resources:\n      limits:\n        \
         memory: 1Gi\n    livenessProbe:\n      httpGet:\n        port: 80\n  - name: latest\n    \
         image: busybox\n",
    );
    let pod = parse(&text).unwrap();
    let meta = &pod.metadata;
    assert_eq!(meta.name.as_deref(), Some("web-node1"));
    assert_eq!(meta.namespace.as_deref(), Some("default"));
    let annotations = meta.annotations.as_ref().unwrap();
    assert_eq!(annotations[labels::CONFIG_SOURCE], "file");
    assert_eq!(Some(&annotations[labels::CONFIG_HASH]), meta.uid.as_ref());
    assert!(!annotations.contains_key(labels::CONFIG_SEEN));

    let spec = pod.spec.as_ref().unwrap();
    assert_eq!(spec.node_name.as_deref(), Some(NODE));
    assert_eq!(spec.restart_policy.as_deref(), Some("Always"));
    assert_eq!(spec.termination_grace_period_seconds, Some(30));
    assert_eq!(spec.dns_policy.as_deref(), Some("ClusterFirst"));
    assert_eq!(spec.scheduler_name.as_deref(), Some("default-scheduler"));
    assert_eq!(spec.enable_service_links, Some(true));
    let tolerations = spec.tolerations.as_ref().unwrap();
    assert_eq!(tolerations.len(), 1);
    assert_eq!(tolerations[0].operator.as_deref(), Some("Exists"));
    assert_eq!(tolerations[0].effect.as_deref(), Some("NoExecute"));

    let app = &spec.containers[0];
    assert_eq!(
        app.termination_message_path.as_deref(),
        Some("/dev/termination-log")
    );
    assert_eq!(app.termination_message_policy.as_deref(), Some("File"));
    assert_eq!(app.image_pull_policy.as_deref(), Some("IfNotPresent"));
    assert_eq!(
        spec.containers[1].image_pull_policy.as_deref(),
        Some("Always")
    );
    assert_eq!(
        app.ports.as_ref().unwrap()[0].protocol.as_deref(),
        Some("TCP")
    );
    let field_ref = app.env.as_ref().unwrap()[0]
        .value_from
        .as_ref()
        .unwrap()
        .field_ref
        .as_ref();
    assert_eq!(field_ref.unwrap().api_version.as_deref(), Some("v1"));
    let requests = app.resources.as_ref().unwrap().requests.as_ref().unwrap();
    assert_eq!(requests["memory"].0, "1Gi");
    let probe = app.liveness_probe.as_ref().unwrap();
    assert_eq!(probe.timeout_seconds, Some(1));
    assert_eq!(probe.period_seconds, Some(10));
    assert_eq!(probe.failure_threshold, Some(3));
    assert_eq!(probe.http_get.as_ref().unwrap().path.as_deref(), Some("/"));

    let volumes = spec.volumes.as_ref().unwrap();
    assert_eq!(
        volumes[0].host_path.as_ref().unwrap().type_.as_deref(),
        Some("")
    );
    assert_eq!(
        volumes[1].empty_dir.as_ref().unwrap().medium.as_deref(),
        Some("")
    );
}

#[test]
fn manifest_uid_and_status_are_ignored() {
    let plain = parse(&manifest("", "")).unwrap();
    let with_extras = manifest("", "").replace("name: web", "name: web\n  uid: fixed")
        + "status:\n  phase: Running\n";
    let pod = parse(&with_extras).unwrap();
    assert_eq!(pod.metadata.uid, plain.metadata.uid);
    assert!(pod.status.is_none());
}

#[test]
fn reformatting_does_not_change_the_hash() {
    let a = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n  labels: {b: \"2\", a: \"1\"}\n\
             spec:\n  containers:\n  - name: app\n    image: nginx:1.27\n    args: [\"-g\", \
             'daemon off;']\n    resources:\n      limits: {cpu: 1}\n";
    let b = r#"# comment
kind: "Pod"
spec:
    containers:
        -   image: 'nginx:1.27'
            # the app
            args:
            - -g
            - "daemon off;"
            name: app
            resources: {limits: {cpu: "1"}}
metadata: {labels: {a: '1', b: '2'}, name: web}
apiVersion: v1
"#;
    let c = r#"{"kind":"Pod","apiVersion":"v1","metadata":{"name":"web","labels":{"a":"1","b":"2"}},
        "spec":{"containers":[{"resources":{"limits":{"cpu":1}},"name":"app","image":"nginx:1.27",
        "args":["-g","daemon off;"]}]}}"#;
    let ha = parse(a).unwrap().metadata.uid.unwrap();
    assert_eq!(parse(b).unwrap().metadata.uid.unwrap(), ha);
    assert_eq!(parse(c).unwrap().metadata.uid.unwrap(), ha);
}

#[test]
fn any_spec_change_changes_the_hash() {
    let base = manifest("", "");
    let uid = |text: &str| parse(text).unwrap().metadata.uid.unwrap();
    let base_uid = uid(&base);
    let changes = [
        manifest("", "    env:\n    - name: A\n      value: x\n"),
        manifest("", "    command: [/bin/sh]\n"),
        manifest("", "    args: [x]\n"),
        manifest("  volumes:\n  - name: d\n    emptyDir: {}\n", ""),
        manifest("", "    resources:\n      limits:\n        cpu: 100m\n"),
        manifest("  hostNetwork: true\n", ""),
        manifest("", "").replace("nginx:1.27", "nginx:1.28"),
        manifest("", "").replace("name: web", "name: web\n  labels: {a: b}"),
    ];
    for text in changes {
        assert_ne!(uid(&text), base_uid, "hash did not change for\n{text}");
    }
    // The node is part of the pod (name suffix, nodeName), so it is part of the hash.
    let other_node = parse_manifest(Path::new(FILE), base.as_bytes(), "node2").unwrap();
    assert_ne!(other_node.metadata.uid.unwrap(), base_uid);
}

/// Pins the hash format. If this fails, the UID of every static pod changes, and upgrading
/// kwk-node restarts every static pod (the whole control plane) once. Change the expected
/// value only on purpose, and say so in the release notes.
#[test]
fn golden_hash() {
    let text = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: kube-apiserver\n  namespace: \
                kube-system\n  labels: {component: kube-apiserver, tier: control-plane}\nspec:\n  \
                hostNetwork: true\n  priorityClassName: system-node-critical\n  containers:\n  - \
                name: kube-apiserver\n    image: registry.k8s.io/kube-apiserver:v1.33.0\n    \
                command: [kube-apiserver, --secure-port=6443]\n    ports:\n    - containerPort: \
                6443\n      name: https\n    resources:\n      requests: {cpu: 250m}\n    \
                volumeMounts:\n    - {name: pki, mountPath: /etc/kwk/pki, readOnly: true}\n  \
                volumes:\n  - name: pki\n    hostPath: {path: /etc/kwk/pki, type: Directory}\n";
    let pod = parse_manifest(
        Path::new("/etc/kwk/manifests/kube-apiserver.yaml"),
        text.as_bytes(),
        "server-1",
    )
    .unwrap();
    assert_eq!(pod_hash(&pod), pod.metadata.uid.clone().unwrap());
    assert_eq!(
        pod.metadata.uid.as_deref(),
        Some("817d7a66bfe156dd180f04e68f41b751")
    );
}
