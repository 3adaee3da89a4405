//! Table tests of pod defaulting (both sets), validation and update rules.

use k8s_openapi::api::core::v1::Pod;
use serde_json::{Value, json};

use super::*;
use crate::field::FieldError;

fn pod(spec: Value) -> Pod {
    let mut object = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}});
    object["spec"] = spec;
    serde_json::from_value(object).unwrap()
}

fn defaulted(spec: Value, set: DefaultSet) -> Value {
    let mut p = pod(spec);
    default_pod(&mut p, set);
    serde_json::to_value(&p).unwrap()["spec"].clone()
}

fn messages(errs: &[FieldError]) -> Vec<String> {
    errs.iter().map(ToString::to_string).collect()
}

#[test]
fn upstream_defaults_of_a_pod() {
    let spec = defaulted(
        json!({
            "containers": [{
                "name": "app", "image": "nginx",
                "ports": [{"containerPort": 80}],
                "resources": {"limits": {"cpu": "1"}},
                "readinessProbe": {"httpGet": {"port": 80}},
                "livenessProbe": {"grpc": {"port": 9000}},
                "lifecycle": {"preStop": {"httpGet": {"port": 80}}},
            }],
            "volumes": [
                {"name": "cm", "configMap": {"name": "c"}},
                {"name": "s", "secret": {"secretName": "s"}},
                {"name": "t", "projected": {"sources": [{"serviceAccountToken": {"path": "token"}}]}},
                {"name": "e", "emptyDir": {}},
                {"name": "none"},
            ],
        }),
        DefaultSet::Upstream,
    );
    let want = json!({
        "restartPolicy": "Always",
        "dnsPolicy": "ClusterFirst",
        "schedulerName": "default-scheduler",
        "terminationGracePeriodSeconds": 30,
        "securityContext": {},
        "enableServiceLinks": true,
    });
    for (k, v) in want.as_object().unwrap() {
        assert_eq!(&spec[k], v, "{k}");
    }
    let c = &spec["containers"][0];
    assert_eq!(c["imagePullPolicy"], "Always");
    assert_eq!(c["terminationMessagePath"], "/dev/termination-log");
    assert_eq!(c["terminationMessagePolicy"], "File");
    assert_eq!(c["ports"][0]["protocol"], "TCP");
    assert_eq!(c["resources"]["requests"]["cpu"], "1");
    assert_eq!(
        c["readinessProbe"],
        json!({"httpGet": {"port": 80, "path": "/", "scheme": "HTTP"}, "timeoutSeconds": 1,
               "periodSeconds": 10, "successThreshold": 1, "failureThreshold": 3})
    );
    assert_eq!(c["livenessProbe"]["grpc"]["service"], "");
    assert_eq!(c["lifecycle"]["preStop"]["httpGet"]["path"], "/");
    let vols = &spec["volumes"];
    assert_eq!(vols[0]["configMap"]["defaultMode"], 420);
    assert_eq!(vols[1]["secret"]["defaultMode"], 420);
    assert_eq!(vols[2]["projected"]["defaultMode"], 420);
    assert_eq!(
        vols[2]["projected"]["sources"][0]["serviceAccountToken"]["expirationSeconds"],
        3600
    );
    assert_eq!(vols[3], json!({"name": "e", "emptyDir": {}}));
    assert_eq!(vols[4], json!({"name": "none", "emptyDir": {}}));
}

#[test]
fn static_pod_set_keeps_the_pinned_subset() {
    let spec = defaulted(
        json!({
            "hostNetwork": true,
            "containers": [{"name": "a", "image": "b:1", "ports": [{"containerPort": 6443}],
                "lifecycle": {"preStop": {"httpGet": {"port": 80}}}}],
            "volumes": [{"name": "e", "emptyDir": {}}, {"name": "d", "downwardAPI": {}}],
        }),
        DefaultSet::StaticPodV1,
    );
    assert!(spec.get("securityContext").is_none());
    assert_eq!(spec["containers"][0]["ports"][0]["hostPort"], 6443);
    assert!(
        spec["containers"][0]["lifecycle"]["preStop"]["httpGet"]
            .get("path")
            .is_none()
    );
    assert_eq!(spec["volumes"][0]["emptyDir"]["medium"], "");
    assert!(
        spec["volumes"][1]["downwardAPI"]
            .get("defaultMode")
            .is_none()
    );
}

#[test]
fn defaults_are_idempotent() {
    let spec = json!({"containers": [{"name": "a", "image": "b", "ports": [{"containerPort": 1}]}],
                      "volumes": [{"name": "v"}]});
    for set in [DefaultSet::Upstream, DefaultSet::StaticPodV1] {
        let once = defaulted(spec.clone(), set);
        assert_eq!(defaulted(once.clone(), set), once);
    }
}

#[test]
fn the_deprecated_service_account_is_an_alias_of_service_account_name() {
    let account = |spec: Value, set| {
        let spec = defaulted(spec, set);
        (
            spec["serviceAccountName"].clone(),
            spec["serviceAccount"].clone(),
        )
    };
    let containers = json!([{"name": "a", "image": "b"}]);
    let cases = [
        // (serviceAccountName, serviceAccount) in → out
        ((json!(null), json!(null)), (json!(null), json!(null))),
        ((json!("sa"), json!(null)), (json!("sa"), json!("sa"))),
        ((json!(null), json!("old")), (json!("old"), json!("old"))),
        ((json!(""), json!("old")), (json!("old"), json!("old"))),
        ((json!("sa"), json!("old")), (json!("sa"), json!("sa"))),
    ];
    for ((name, alias), want) in cases {
        let mut spec = json!({"containers": containers});
        if !name.is_null() {
            spec["serviceAccountName"] = name.clone();
        }
        if !alias.is_null() {
            spec["serviceAccount"] = alias.clone();
        }
        assert_eq!(account(spec.clone(), DefaultSet::Upstream), want, "{spec}");
        // Not in the static pod hash's set: a static pod's UID stays the same.
        let static_pod = account(spec.clone(), DefaultSet::StaticPodV1);
        assert_eq!(static_pod, (name, alias), "{spec}");
    }
}

#[test]
fn template_defaults_leave_pod_only_fields() {
    let mut spec: k8s_openapi::api::core::v1::PodSpec = serde_json::from_value(json!({
        "containers": [{"name": "a", "image": "b", "resources": {"limits": {"cpu": "1"}}}]
    }))
    .unwrap();
    default_pod_spec(&mut spec, DefaultSet::Upstream);
    assert_eq!(spec.enable_service_links, None);
    assert_eq!(
        spec.containers[0].resources.as_ref().unwrap().requests,
        None
    );
}

#[test]
fn validation_causes() {
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "containers required",
            json!({"containers": []}),
            "spec.containers: Required value",
        ),
        (
            "image required",
            json!({"containers": [{"name": "a"}]}),
            "spec.containers[0].image: Required value",
        ),
        (
            "duplicate names",
            json!({"containers": [{"name": "a", "image": "x"}, {"name": "a", "image": "x"}]}),
            "spec.containers[1].name: Duplicate value: \"a\"",
        ),
        (
            "restart policy",
            json!({"restartPolicy": "Sometimes", "containers": [{"name": "a", "image": "x"}]}),
            "spec.restartPolicy: Unsupported value: \"Sometimes\": supported values: \"Always\", \"OnFailure\", \"Never\"",
        ),
        (
            "dns policy",
            json!({"dnsPolicy": "Foo", "containers": [{"name": "a", "image": "x"}]}),
            "spec.dnsPolicy: Unsupported value: \"Foo\": supported values: \"ClusterFirst\", \"ClusterFirstWithHostNet\", \"Default\", \"None\"",
        ),
        (
            "secret name",
            json!({"containers": [{"name": "a", "image": "x"}], "volumes": [{"name": "s", "secret": {}}]}),
            "spec.volumes[0].secret.secretName: Required value",
        ),
        (
            "mount of unknown volume",
            json!({"containers": [{"name": "a", "image": "x", "volumeMounts": [{"name": "v", "mountPath": "/v"}]}]}),
            "spec.containers[0].volumeMounts[0].name: Not found: \"v\"",
        ),
        (
            "quantity",
            json!({"containers": [{"name": "a", "image": "x", "resources": {"requests": {"cpu": "2"}, "limits": {"cpu": "1"}}}]}),
            "spec.containers[0].resources.requests[cpu]: Invalid value: \"2\": must be less than or equal to cpu limit of 1",
        ),
        (
            "toleration",
            json!({"containers": [{"name": "a", "image": "x"}], "tolerations": [{"operator": "Equal", "value": "x"}]}),
            "spec.tolerations[0].operator: Invalid value: \"Equal\": operator must be Exists when `key` is empty",
        ),
        (
            "env source",
            json!({"containers": [{"name": "a", "image": "x", "env": [{"name": "A", "valueFrom": {"secretKeyRef": {"name": "s", "key": ""}}}]}]}),
            "spec.containers[0].env[0].valueFrom.secretKeyRef.key: Required value",
        ),
        (
            "service account name",
            json!({"containers": [{"name": "a", "image": "x"}], "serviceAccountName": "Bad_Name"}),
            "spec.serviceAccountName: Invalid value: \"Bad_Name\": a lowercase RFC 1123 subdomain",
        ),
    ];
    for (name, spec, want) in cases {
        let mut p = pod(spec);
        default_pod(&mut p, DefaultSet::Upstream);
        let errs = messages(&validate_pod(&p));
        assert!(
            errs.iter().any(|e| e.starts_with(want)),
            "{name}: want {want}\ngot {errs:#?}"
        );
    }
}

#[test]
fn valid_pods_pass() {
    let mut p = pod(json!({
        "containers": [{"name": "a", "image": "x:1", "env": [{"name": "N", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
            "volumeMounts": [{"name": "cm", "mountPath": "/cm"}]}],
        "volumes": [{"name": "cm", "configMap": {"name": "c"}}],
        "tolerations": [{"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}],
    }));
    default_pod(&mut p, DefaultSet::Upstream);
    assert_eq!(messages(&validate_pod(&p)), Vec::<String>::new());
}

fn updated(old: &Value, change: impl FnOnce(&mut Value)) -> Vec<String> {
    let mut old_pod = pod(old.clone());
    default_pod(&mut old_pod, DefaultSet::Upstream);
    let mut new = serde_json::to_value(&old_pod).unwrap();
    change(&mut new);
    let mut new_pod: Pod = serde_json::from_value(new).unwrap();
    default_pod(&mut new_pod, DefaultSet::Upstream);
    messages(&validate_pod_update(&new_pod, &old_pod))
}

#[test]
fn update_rules() {
    let base = json!({"containers": [{"name": "a", "image": "x:1"}], "activeDeadlineSeconds": 100});
    assert!(
        updated(&base, |p| p["spec"]["containers"][0]["image"] =
            json!("x:2"))
        .is_empty()
    );
    assert!(updated(&base, |p| p["spec"]["activeDeadlineSeconds"] = json!(50)).is_empty());
    assert!(
        updated(&base, |p| p["spec"]["tolerations"] =
            json!([{"operator": "Exists"}]))
        .is_empty()
    );
    let raised = updated(&base, |p| p["spec"]["activeDeadlineSeconds"] = json!(200));
    assert_eq!(
        raised,
        [
            "spec.activeDeadlineSeconds: Invalid value: 200: must be less than or equal to previous value"
        ]
    );
    let other = updated(&base, |p| p["spec"]["restartPolicy"] = json!("Never"));
    assert_eq!(other.len(), 1);
    assert!(other[0].starts_with(
        "spec: Forbidden: pod updates may not change fields other than `spec.containers[*].image`,\
         `spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only \
         additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be \
         set to 1 if it was previously negative)\n"
    ));
    assert!(other[0].contains("spec.restartPolicy"), "{other:?}");
    let added = updated(&base, |p| {
        p["spec"]["containers"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "b", "image": "y"}))
    });
    assert_eq!(
        added,
        ["spec.containers: Forbidden: pod updates may not add or remove containers"]
    );
    let tolerated = json!({"containers": [{"name": "a", "image": "x"}],
                           "tolerations": [{"key": "k", "operator": "Exists"}]});
    let removed = updated(&tolerated, |p| p["spec"]["tolerations"] = json!([]));
    assert_eq!(
        removed,
        [
            "spec.tolerations: Forbidden: existing toleration can not be modified except its tolerationSeconds"
        ]
    );
}
