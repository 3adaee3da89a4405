//! apps/v1: Deployment, ReplicaSet, StatefulSet, DaemonSet, ControllerRevision.

use serde_json::{Value, json};

use super::*;

fn template() -> Value {
    json!({"metadata": {"labels": {"app": "web"}},
           "spec": {"containers": [{"name": "nginx", "image": "nginx:1.27"}, {"name": "log", "image": "busybox"}]}})
}

fn deployment() -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta("web", 86400 * 3),
           "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": template()}})
}

#[test]
fn deployment_defaults() {
    let d = defaulted("apps", "Deployment", deployment());
    let spec = &d["spec"];
    assert_eq!(spec["replicas"], 1);
    assert_eq!(
        spec["strategy"],
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}})
    );
    assert_eq!(spec["revisionHistoryLimit"], 10);
    assert_eq!(spec["progressDeadlineSeconds"], 600);
    let pod_spec = &spec["template"]["spec"];
    assert_eq!(pod_spec["restartPolicy"], "Always");
    assert_eq!(pod_spec["securityContext"], json!({}));
    assert!(
        pod_spec.get("enableServiceLinks").is_none(),
        "pod-only default"
    );
    assert_eq!(pod_spec["containers"][1]["imagePullPolicy"], "Always");
    assert_eq!(defaulted("apps", "Deployment", d.clone()), d, "idempotent");
}

#[test]
fn deployment_causes() {
    let mut no_selector = deployment();
    no_selector["spec"]
        .as_object_mut()
        .unwrap()
        .remove("selector");
    assert_eq!(
        causes("apps", "Deployment", no_selector, None),
        [
            "spec.selector: Required value [FieldValueRequired]",
            "spec.template.metadata.labels: Invalid value: map[string]string{\"app\":\"web\"}: `selector` does not match template `labels` [FieldValueInvalid]",
        ],
        "a missing selector matches no labels"
    );
    let mut mismatch = deployment();
    mismatch["spec"]["selector"] = json!({"matchLabels": {"app": "api"}});
    assert_cause(
        &causes("apps", "Deployment", mismatch, None),
        "spec.template.metadata.labels: Invalid value: map[string]string{\"app\":\"web\"}: `selector` does not match template `labels` [FieldValueInvalid]",
    );
    let mut empty = deployment();
    empty["spec"]["selector"] = json!({});
    assert_eq!(
        causes("apps", "Deployment", empty, None),
        [
            "spec.selector: Invalid value: v1.LabelSelector{MatchLabels:map[string]string(nil), MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: empty selector is invalid for deployment [FieldValueInvalid]"
        ],
        "an empty selector matches every label"
    );
    let mut empty_labels = deployment();
    empty_labels["spec"]["selector"] = json!({"matchLabels": {}});
    assert_cause(
        &causes(
            "apps",
            "ReplicaSet",
            json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": meta("web", 0), "spec": empty_labels["spec"].clone()}),
            None,
        ),
        "spec.selector: Invalid value: v1.LabelSelector{MatchLabels:map[string]string{}, MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: empty selector is invalid for deployment [FieldValueInvalid]",
    );
    let mut never = deployment();
    never["spec"]["template"]["spec"]["restartPolicy"] = json!("Never");
    assert_cause(
        &causes("apps", "Deployment", never, None),
        "spec.template.spec.restartPolicy: Unsupported value: \"Never\": supported values: \"Always\"",
    );
    let mut zero = deployment();
    zero["spec"]["strategy"] =
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 0}});
    assert_cause(
        &causes("apps", "Deployment", zero, None),
        "spec.strategy.rollingUpdate.maxUnavailable: Invalid value: 0: may not be 0 when `maxSurge` is 0",
    );
    let mut percent = deployment();
    percent["spec"]["strategy"] =
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "120%"}});
    assert_cause(
        &causes("apps", "Deployment", percent, None),
        "spec.strategy.rollingUpdate.maxUnavailable: Invalid value: \"120%\": must not be greater than 100%",
    );
    assert_eq!(
        causes("apps", "Deployment", deployment(), None),
        Vec::<String>::new()
    );
    let mut moved = deployment();
    moved["spec"]["selector"] = json!({"matchLabels": {"app": "web", "tier": "x"}});
    moved["spec"]["template"]["metadata"]["labels"]["tier"] = json!("x");
    assert_cause(
        &causes("apps", "Deployment", moved, Some(deployment())),
        "spec.selector: Invalid value: &LabelSelector{MatchLabels:map[string]string{app: web,tier: x,},MatchExpressions:[]LabelSelectorRequirement{},}: field is immutable",
    );
}

#[test]
fn deployment_and_replica_set_rows() {
    let mut d = defaulted("apps", "Deployment", deployment());
    d["spec"]["replicas"] = json!(3);
    d["status"] =
        json!({"replicas": 3, "readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2});
    assert_eq!(
        row("apps", "Deployment", &d),
        [
            json!("web"),
            json!("2/3"),
            json!(3),
            json!(2),
            json!("3d"),
            json!("nginx,log"),
            json!("nginx:1.27,busybox"),
            json!("app=web")
        ]
    );
    let mut rs = json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": meta("web-5d7f", 600),
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web", "pod-template-hash": "5d7f"}}, "template": template()},
        "status": {"replicas": 3, "readyReplicas": 1}});
    assert_eq!(
        row("apps", "ReplicaSet", &rs),
        [
            json!("web-5d7f"),
            json!(3),
            json!(3),
            json!(1),
            json!("10m"),
            json!("nginx,log"),
            json!("nginx:1.27,busybox"),
            json!("app=web,pod-template-hash=5d7f")
        ]
    );
    assert_eq!(
        strategy_for("apps", "ReplicaSet")
            .field(&rs, "status.replicas")
            .as_deref(),
        Some("3")
    );
    rs["spec"].as_object_mut().unwrap().remove("replicas");
    assert_eq!(defaulted("apps", "ReplicaSet", rs)["spec"]["replicas"], 1);
    assert_eq!(
        column_names("apps", "Deployment"),
        [
            ("Name", 0),
            ("Ready", 0),
            ("Up-to-date", 0),
            ("Available", 0),
            ("Age", 0),
            ("Containers", 1),
            ("Images", 1),
            ("Selector", 1)
        ]
    );
}

fn stateful_set() -> Value {
    json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": meta("db", 7200),
           "spec": {"selector": {"matchLabels": {"app": "web"}}, "serviceName": "db", "template": template(),
                    "volumeClaimTemplates": [{"metadata": {"name": "data"},
                        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}]}})
}

#[test]
fn stateful_set_defaults_rules_and_row() {
    let sts = defaulted("apps", "StatefulSet", stateful_set());
    let spec = &sts["spec"];
    assert_eq!(spec["podManagementPolicy"], "OrderedReady");
    assert_eq!(
        spec["updateStrategy"],
        json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 0}})
    );
    assert_eq!(
        spec["persistentVolumeClaimRetentionPolicy"],
        json!({"whenDeleted": "Retain", "whenScaled": "Retain"})
    );
    assert_eq!(spec["replicas"], 1);
    assert_eq!(spec["revisionHistoryLimit"], 10);
    assert_eq!(
        spec["volumeClaimTemplates"][0]["spec"]["volumeMode"],
        "Filesystem"
    );
    assert_eq!(
        spec["volumeClaimTemplates"][0]["status"],
        json!({"phase": "Pending"})
    );

    let mut scaled = stateful_set();
    scaled["spec"]["replicas"] = json!(5);
    assert_eq!(
        causes("apps", "StatefulSet", scaled, Some(stateful_set())),
        Vec::<String>::new()
    );
    let mut renamed = stateful_set();
    renamed["spec"]["serviceName"] = json!("other");
    assert_eq!(
        causes("apps", "StatefulSet", renamed, Some(stateful_set())),
        [
            "spec: Forbidden: updates to statefulset spec for fields other than 'replicas', 'ordinals', \
          'template', 'updateStrategy', 'revisionHistoryLimit', 'persistentVolumeClaimRetentionPolicy' \
          and 'minReadySeconds' are forbidden [FieldValueForbidden]"
        ]
    );
    // Containers mount claim templates by name (the controller adds the volumes); other
    // names must still be volumes.
    let mut mounting = stateful_set();
    mounting["spec"]["template"]["spec"]["containers"][0]["volumeMounts"] =
        json!([{"name": "data", "mountPath": "/data"}]);
    assert_eq!(
        causes("apps", "StatefulSet", mounting.clone(), None),
        Vec::<String>::new()
    );
    mounting["spec"]["template"]["spec"]["containers"][0]["volumeMounts"][0]["name"] =
        json!("nope");
    assert_cause(
        &causes("apps", "StatefulSet", mounting, None),
        "spec.template.spec.containers[0].volumeMounts[0].name: Not found: \"nope\"",
    );
    let mut policy = stateful_set();
    policy["spec"]["podManagementPolicy"] = json!("Random");
    assert_cause(
        &causes("apps", "StatefulSet", policy, None),
        "spec.podManagementPolicy: Invalid value: \"Random\": must be 'OrderedReady' or 'Parallel'",
    );
    let mut running = sts.clone();
    running["spec"]["replicas"] = json!(3);
    running["status"] = json!({"readyReplicas": 2});
    assert_eq!(
        row("apps", "StatefulSet", &running),
        [
            json!("db"),
            json!("2/3"),
            json!("120m"),
            json!("nginx,log"),
            json!("nginx:1.27,busybox")
        ]
    );
}

#[test]
fn daemon_set_defaults_and_row() {
    let ds = defaulted(
        "apps",
        "DaemonSet",
        json!({"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": meta("kube-proxy", 172800),
               "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": template()}}),
    );
    assert_eq!(
        ds["spec"]["updateStrategy"],
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}})
    );
    assert_eq!(ds["spec"]["revisionHistoryLimit"], 10);
    assert_eq!(
        causes("apps", "DaemonSet", ds.clone(), None),
        Vec::<String>::new()
    );
    let mut with_status = ds;
    with_status["spec"]["template"]["spec"]["nodeSelector"] = json!({"kubernetes.io/os": "linux"});
    with_status["status"] = json!({"desiredNumberScheduled": 3, "currentNumberScheduled": 3, "numberReady": 2,
                                    "updatedNumberScheduled": 3, "numberAvailable": 2});
    assert_eq!(
        row("apps", "DaemonSet", &with_status)[..8],
        [
            json!("kube-proxy"),
            json!(3),
            json!(3),
            json!(2),
            json!(3),
            json!(2),
            json!("kubernetes.io/os=linux"),
            json!("2d")
        ]
    );
}

#[test]
fn controller_revision_row() {
    let cr = json!({"apiVersion": "apps/v1", "kind": "ControllerRevision", "metadata": {
        "name": "db-7d9f", "creationTimestamp": ago(60),
        "ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "db", "uid": "u", "controller": true}]},
        "revision": 2, "data": {}});
    assert_eq!(
        row("apps", "ControllerRevision", &cr),
        [
            json!("db-7d9f"),
            json!("statefulset.apps/db"),
            json!(2),
            json!("60s")
        ]
    );
    let mut no_data = cr;
    no_data.as_object_mut().unwrap().remove("data");
    assert_cause(
        &causes("apps", "ControllerRevision", no_data, None),
        "data: Required value: data is mandatory",
    );
}
