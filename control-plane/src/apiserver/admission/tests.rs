//! Tables for the pure admission rules: which plugins run, ServiceAccount's mirror-pod
//! refusals, defaulting, automount and token volume, mountable secrets, the node taint, and
//! the storage protection finalizers.

use k8s_openapi::api::core::v1::{Node, Pod, ServiceAccount};
use serde_json::{Value, json};

use super::node_taint::taint_new_node;
use super::service_account::{self as sa, Refusal};
use super::storage_protection::{add_finalizer, finalizer_for};
use super::{
    AdmissionPlugins, SERVICE_ACCOUNT, STORAGE_OBJECT_IN_USE_PROTECTION, TAINT_NODES_BY_CONDITION,
    UnknownPlugin,
};

fn pod(spec: Value) -> Pod {
    let mut pod = json!({"metadata": {"name": "p", "namespace": "ns"}});
    pod["spec"] = spec;
    serde_json::from_value(pod).expect("pod")
}

fn mirror(spec: Value) -> Pod {
    let mut pod = pod(spec);
    pod.metadata.annotations =
        Some([(sa::MIRROR_POD_ANNOTATION.to_string(), "x".to_string())].into());
    pod
}

fn account(extra: Value) -> ServiceAccount {
    let mut base = json!({"metadata": {"name": "default", "namespace": "ns"}});
    if let (Some(base), Value::Object(extra)) = (base.as_object_mut(), extra) {
        base.extend(extra);
    }
    serde_json::from_value(base).expect("account")
}

#[test]
fn plugins_can_be_disabled_by_upstream_name() {
    // Disabled names → (ServiceAccount, TaintNodesByCondition, StorageObjectInUseProtection)
    // running, or the unknown name.
    type Case<'a> = (&'a [&'a str], Result<(bool, bool, bool), &'a str>);
    let cases: &[Case<'_>] = &[
        (&[], Ok((true, true, true))),
        (&[""], Ok((true, true, true))),
        (&["ServiceAccount"], Ok((false, true, true))),
        (
            &["TaintNodesByCondition", " ServiceAccount"],
            Ok((false, false, true)),
        ),
        (&["StorageObjectInUseProtection"], Ok((true, true, false))),
        (&["NamespaceLifecycle"], Err("NamespaceLifecycle")),
    ];
    for (names, want) in cases {
        let got = AdmissionPlugins::disabling(names).map(|p| {
            (
                p.enabled(SERVICE_ACCOUNT),
                p.enabled(TAINT_NODES_BY_CONDITION),
                p.enabled(STORAGE_OBJECT_IN_USE_PROTECTION),
            )
        });
        let want = want.map_err(|n| UnknownPlugin {
            name: n.to_string(),
        });
        assert_eq!(got, want, "{names:?}");
    }
    assert_eq!(
        UnknownPlugin { name: "X".into() }.to_string(),
        "disable-admission-plugins plugin \"X\" is unknown"
    );
}

#[test]
fn new_claims_and_volumes_get_their_protection_finalizer_once() {
    let pvc = "kubernetes.io/pvc-protection";
    let pv = "kubernetes.io/pv-protection";
    // (plural, metadata) → the finalizers after admission (`None`: the plugin leaves the
    // kind alone).
    let cases: Vec<(&str, Value, Option<Value>)> = vec![
        (
            "persistentvolumeclaims",
            json!({"name": "c"}),
            Some(json!([pvc])),
        ),
        ("persistentvolumes", json!({"name": "v"}), Some(json!([pv]))),
        (
            "persistentvolumeclaims",
            json!({"name": "c", "finalizers": null}),
            Some(json!([pvc])),
        ),
        (
            "persistentvolumeclaims",
            json!({"name": "c", "finalizers": ["example.com/keep"]}),
            Some(json!(["example.com/keep", pvc])),
        ),
        (
            "persistentvolumeclaims",
            json!({"name": "c", "finalizers": [pvc, "example.com/keep"]}),
            Some(json!([pvc, "example.com/keep"])),
        ),
        (
            "persistentvolumes",
            json!({"name": "v", "finalizers": [pv]}),
            Some(json!([pv])),
        ),
        ("pods", json!({"name": "p"}), None),
        ("configmaps", json!({"name": "m"}), None),
    ];
    for (plural, metadata, want) in cases {
        let mut object = json!({"metadata": metadata.clone()});
        let finalizer = finalizer_for(plural);
        if let Some(f) = finalizer {
            add_finalizer(&mut object, f);
        }
        let got = finalizer.map(|_| object["metadata"]["finalizers"].clone());
        assert_eq!(got, want, "{plural} {metadata}");
    }
}

#[test]
fn mirror_pods_may_not_reference_accounts_secrets_or_tokens() {
    let c = |extra: Value| {
        let mut spec = json!({"containers": [{"name": "c", "image": "i"}]});
        if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
            s.extend(e.clone());
        }
        spec
    };
    let cases: Vec<(&str, Value, Result<(), Refusal>)> = vec![
        ("plain", c(json!({})), Ok(())),
        (
            "empty account name",
            c(json!({"serviceAccountName": ""})),
            Ok(()),
        ),
        (
            "configMap volume",
            c(json!({"volumes": [{"name": "v", "configMap": {"name": "cm"}}]})),
            Ok(()),
        ),
        (
            "account",
            c(json!({"serviceAccountName": "default"})),
            Err(Refusal::MirrorServiceAccount),
        ),
        (
            "secret volume",
            c(json!({"volumes": [{"name": "v", "secret": {"secretName": "s"}}]})),
            Err(Refusal::MirrorSecrets),
        ),
        (
            "pull secret",
            c(json!({"imagePullSecrets": [{"name": "s"}]})),
            Err(Refusal::MirrorSecrets),
        ),
        (
            "env secret",
            json!({"containers": [{"name": "c", "image": "i", "env": [{"name": "E", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]}]}),
            Err(Refusal::MirrorSecrets),
        ),
        (
            "init envFrom secret",
            c(
                json!({"initContainers": [{"name": "i", "image": "i", "envFrom": [{"secretRef": {"name": "s"}}]}]}),
            ),
            Err(Refusal::MirrorSecrets),
        ),
        (
            "projected secret",
            c(
                json!({"volumes": [{"name": "v", "projected": {"sources": [{"secret": {"name": "s"}}]}}]}),
            ),
            Err(Refusal::MirrorSecrets),
        ),
        (
            "csi publish secret",
            c(
                json!({"volumes": [{"name": "v", "csi": {"driver": "d", "nodePublishSecretRef": {"name": "s"}}}]}),
            ),
            Err(Refusal::MirrorSecrets),
        ),
        (
            "token projection",
            c(
                json!({"volumes": [{"name": "v", "projected": {"sources": [{"serviceAccountToken": {"path": "t"}}]}}]}),
            ),
            Err(Refusal::MirrorTokenProjection),
        ),
    ];
    for (name, spec, want) in cases {
        let pod = mirror(spec);
        assert!(sa::is_mirror_pod(&pod));
        assert_eq!(sa::check_mirror_pod(&pod), want, "{name}");
    }
    assert!(!sa::is_mirror_pod(&pod(json!({"containers": []}))));
    assert_eq!(
        Refusal::MirrorTokenProjection.to_string(),
        "a mirror pod may not use ServiceAccountToken volume projections"
    );
}

#[test]
fn the_account_defaults_to_default() {
    for (given, want) in [
        (None, "default"),
        (Some(""), "default"),
        (Some("robot"), "robot"),
    ] {
        let mut p = pod(json!({"containers": [], "serviceAccountName": given}));
        assert_eq!(sa::default_service_account_name(&mut p), want);
        let spec = p.spec.unwrap();
        assert_eq!(spec.service_account_name.as_deref(), Some(want));
        assert_eq!(
            spec.service_account.as_deref(),
            Some(want),
            "the alias follows"
        );
    }
}

#[test]
fn automount_follows_the_pod_then_the_account() {
    let cases = [
        (None, None, true),
        (None, Some(true), true),
        (None, Some(false), false),
        (Some(true), Some(false), true),
        (Some(false), Some(true), false),
        (Some(false), None, false),
    ];
    for (on_pod, on_account, want) in cases {
        let p = pod(json!({"containers": [], "automountServiceAccountToken": on_pod}));
        let a = account(json!({"automountServiceAccountToken": on_account}));
        assert_eq!(
            sa::should_automount(&p, &a),
            want,
            "{on_pod:?} {on_account:?}"
        );
    }
}

fn token_volume(name: &str) -> Value {
    json!({"name": name, "projected": {
        "defaultMode": 420,
        "sources": [
            {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
            {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
            {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
        ],
    }})
}

fn token_mount(volume: &str) -> Value {
    json!({"name": volume, "mountPath": sa::TOKEN_MOUNT_PATH, "readOnly": true})
}

#[test]
fn the_token_volume_is_mounted_where_nothing_else_is() {
    let own = json!({"name": "own", "mountPath": sa::TOKEN_MOUNT_PATH});
    let cases: Vec<(&str, Value, Value)> = vec![
        (
            "every init and app container",
            json!({"initContainers": [{"name": "i", "image": "x"}],
                   "containers": [{"name": "a", "image": "x"}, {"name": "b", "image": "x",
                       "volumeMounts": [{"name": "data", "mountPath": "/data"}]}],
                   "volumes": [{"name": "data", "emptyDir": {}}]}),
            json!({"initContainers": [{"name": "i", "image": "x", "volumeMounts": [token_mount("kube-api-access-abcde")]}],
                   "containers": [{"name": "a", "image": "x", "volumeMounts": [token_mount("kube-api-access-abcde")]},
                       {"name": "b", "image": "x", "volumeMounts": [{"name": "data", "mountPath": "/data"}, token_mount("kube-api-access-abcde")]}],
                   "volumes": [{"name": "data", "emptyDir": {}}, token_volume("kube-api-access-abcde")]}),
        ),
        (
            "a container with its own mount there keeps it",
            json!({"containers": [{"name": "a", "image": "x", "volumeMounts": [own]}, {"name": "b", "image": "x"}],
                   "volumes": [{"name": "own", "emptyDir": {}}]}),
            json!({"containers": [{"name": "a", "image": "x", "volumeMounts": [own]},
                       {"name": "b", "image": "x", "volumeMounts": [token_mount("kube-api-access-abcde")]}],
                   "volumes": [{"name": "own", "emptyDir": {}}, token_volume("kube-api-access-abcde")]}),
        ),
        (
            "no volume when no container needs it",
            json!({"containers": [{"name": "a", "image": "x", "volumeMounts": [own]}],
                   "volumes": [{"name": "own", "emptyDir": {}}]}),
            json!({"containers": [{"name": "a", "image": "x", "volumeMounts": [own]}],
                   "volumes": [{"name": "own", "emptyDir": {}}]}),
        ),
        (
            "an existing kube-api-access volume is reused, not doubled",
            json!({"containers": [{"name": "a", "image": "x"}], "volumes": [token_volume("kube-api-access-zzzzz")]}),
            json!({"containers": [{"name": "a", "image": "x", "volumeMounts": [token_mount("kube-api-access-zzzzz")]}],
                   "volumes": [token_volume("kube-api-access-zzzzz")]}),
        ),
    ];
    for (name, spec, want) in cases {
        let mut p = pod(spec);
        sa::admit(&mut p, &account(json!({})), "abcde");
        assert_eq!(serde_json::to_value(&p.spec).expect("spec"), want, "{name}");
    }
}

#[test]
fn automount_off_leaves_the_containers_alone() {
    let spec =
        json!({"containers": [{"name": "a", "image": "x"}], "automountServiceAccountToken": false});
    let mut p = pod(spec.clone());
    sa::admit(&mut p, &account(json!({})), "abcde");
    assert_eq!(serde_json::to_value(&p.spec).expect("spec"), spec);
    let spec = json!({"containers": [{"name": "a", "image": "x"}]});
    let mut p = pod(spec.clone());
    sa::admit(
        &mut p,
        &account(json!({"automountServiceAccountToken": false})),
        "abcde",
    );
    assert_eq!(serde_json::to_value(&p.spec).expect("spec"), spec);
}

#[test]
fn pull_secrets_come_from_the_account_when_the_pod_has_none() {
    let cases = [
        (
            json!(null),
            json!([{"name": "reg"}]),
            json!([{"name": "reg"}]),
        ),
        (
            json!([]),
            json!([{"name": "reg"}]),
            json!([{"name": "reg"}]),
        ),
        (
            json!([{"name": "mine"}]),
            json!([{"name": "reg"}]),
            json!([{"name": "mine"}]),
        ),
        (json!(null), json!(null), json!(null)),
    ];
    for (on_pod, on_account, want) in cases {
        let mut p = pod(
            json!({"containers": [], "imagePullSecrets": on_pod, "automountServiceAccountToken": false}),
        );
        sa::admit(
            &mut p,
            &account(json!({"imagePullSecrets": on_account})),
            "abcde",
        );
        let got = serde_json::to_value(p.spec.and_then(|s| s.image_pull_secrets)).expect("json");
        assert_eq!(got, want, "{on_pod} {on_account}");
    }
}

#[test]
fn enforced_accounts_limit_the_secrets_a_pod_uses() {
    let enforced = |v: &str| {
        json!({"metadata": {"name": "robot", "annotations": {sa::ENFORCE_MOUNTABLE_SECRETS: v}},
               "secrets": [{"name": "ok"}], "imagePullSecrets": [{"name": "reg"}]})
    };
    let env = |secret: &str| json!([{"name": "E", "valueFrom": {"secretKeyRef": {"name": secret, "key": "k"}}}]);
    let cases: Vec<(&str, Value, Value, Result<(), String>)> = vec![
        ("not enforced", json!({"metadata": {"name": "robot"}}),
         json!({"containers": [], "volumes": [{"name": "v", "secret": {"secretName": "other"}}]}), Ok(())),
        ("annotation false", enforced("false"),
         json!({"containers": [], "volumes": [{"name": "v", "secret": {"secretName": "other"}}]}), Ok(())),
        ("listed secret", enforced("true"),
         json!({"containers": [{"name": "c", "env": env("ok")}], "volumes": [{"name": "v", "secret": {"secretName": "ok"}}], "imagePullSecrets": [{"name": "reg"}]}),
         Ok(())),
        ("volume", enforced("true"),
         json!({"containers": [], "volumes": [{"name": "v", "secret": {"secretName": "other"}}]}),
         Err("volume with secret.secretName=\"other\" is not allowed because service account robot does not reference that secret".into())),
        ("init env", enforced("1"),
         json!({"containers": [], "initContainers": [{"name": "i", "env": env("other")}]}),
         Err("init container i with envVar E referencing secret.secretName=\"other\" is not allowed because service account robot does not reference that secret".into())),
        ("env", enforced("true"),
         json!({"containers": [{"name": "c", "env": env("other")}]}),
         Err("container c with envVar E referencing secret.secretName=\"other\" is not allowed because service account robot does not reference that secret".into())),
        ("pull secret", enforced("true"),
         json!({"containers": [], "imagePullSecrets": [{"name": "reg"}, {"name": "x"}]}),
         Err("imagePullSecrets[1].name=\"x\" is not allowed because service account robot does not reference that imagePullSecret".into())),
    ];
    for (name, acct, spec, want) in cases {
        let acct: ServiceAccount = serde_json::from_value(acct).expect("account");
        let got = sa::check_mountable_secrets(&pod(spec), &acct).map_err(|r| r.to_string());
        assert_eq!(got, want, "{name}");
    }
}

#[test]
fn new_nodes_are_tainted_not_ready_once() {
    let not_ready = json!({"key": "node.kubernetes.io/not-ready", "effect": "NoSchedule"});
    let cases = [
        (json!({}), json!([not_ready])),
        (
            json!({"taints": [{"key": "a", "effect": "NoExecute"}]}),
            json!([{"key": "a", "effect": "NoExecute"}, not_ready]),
        ),
        (json!({"taints": [not_ready]}), json!([not_ready])),
        (
            json!({"taints": [{"key": "node.kubernetes.io/not-ready", "value": "x", "effect": "NoSchedule"}]}),
            json!([{"key": "node.kubernetes.io/not-ready", "value": "x", "effect": "NoSchedule"}]),
        ),
        (
            json!({"taints": [{"key": "node.kubernetes.io/not-ready", "effect": "NoExecute"}]}),
            json!([{"key": "node.kubernetes.io/not-ready", "effect": "NoExecute"}, not_ready]),
        ),
    ];
    for (spec, want) in cases {
        let mut node: Node =
            serde_json::from_value(json!({"metadata": {"name": "n"}, "spec": spec})).expect("node");
        taint_new_node(&mut node);
        let got = serde_json::to_value(node.spec.and_then(|s| s.taints)).expect("json");
        assert_eq!(got, want, "{spec}");
    }
}
