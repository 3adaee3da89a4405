use super::*;
use crate::runtime_spec::testpod::pod;
use std::collections::HashMap;

#[test]
fn expansion_table() {
    let vars: HashMap<&str, &str> = [("A", "a"), ("EMPTY", ""), ("B", "$(A)")].into();
    let look = |n: &str| vars.get(n).map(|v| v.to_string());
    let cases = [
        ("$(A)", "a"),
        ("x$(A)y$(A)", "xaya"),
        ("$$(A)", "$(A)"),
        ("$$$(A)", "$a"),
        ("$(UNKNOWN)", "$(UNKNOWN)"),
        ("$(EMPTY)x", "x"),
        ("$(B)", "$(A)"),
        ("$(A", "$(A"),
        ("$A", "$A"),
        ("a$", "a$"),
        ("$", "$"),
        ("$()", "$()"),
        ("é$(A)é$é", "éaé$é"),
        ("$$", "$"),
        ("(A)", "(A)"),
    ];
    for (input, want) in cases {
        assert_eq!(expand(input, look), want, "{input:?}");
    }
}

fn ctx() -> DownwardContext {
    DownwardContext {
        pod_ip: Some("10.1.0.5".into()),
        pod_ips: vec!["10.1.0.5".into(), "fd00::5".into()],
        host_ip: Some("192.168.1.10".into()),
        host_ips: vec![],
        node_name: "node-a".into(),
        allocatable: Some(NodeAllocatable {
            cpu_milli: 4000,
            memory_bytes: 8 << 30,
            ephemeral_storage_bytes: 100 << 30,
        }),
    }
}

const POD: &str = r#"
metadata:
  name: web
  namespace: prod
  uid: u-1
  labels: {app: web}
  annotations: {team: core}
spec:
  serviceAccountName: sa
  containers:
  - name: app
    command: ["/bin/$(CMD)", "$$(CMD)"]
    args: ["--x=$(LATER)", "$(POD)"]
    resources:
      requests: {cpu: 250m, memory: 64Mi}
      limits: {memory: 128Mi}
    env:
    - {name: POD, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
    - {name: NS, valueFrom: {fieldRef: {fieldPath: metadata.namespace}}}
    - {name: UID, valueFrom: {fieldRef: {fieldPath: metadata.uid}}}
    - {name: APP, valueFrom: {fieldRef: {fieldPath: "metadata.labels['app']"}}}
    - {name: TEAM, valueFrom: {fieldRef: {fieldPath: "metadata.annotations['team']"}}}
    - {name: MISSING, valueFrom: {fieldRef: {fieldPath: "metadata.labels['nope']"}}}
    - {name: NODE, valueFrom: {fieldRef: {fieldPath: spec.nodeName}}}
    - {name: SA, valueFrom: {fieldRef: {fieldPath: spec.serviceAccountName}}}
    - {name: HOST, valueFrom: {fieldRef: {fieldPath: status.hostIP}}}
    - {name: HOSTS, valueFrom: {fieldRef: {fieldPath: status.hostIPs}}}
    - {name: IP, valueFrom: {fieldRef: {fieldPath: status.podIP}}}
    - {name: IPS, valueFrom: {fieldRef: {fieldPath: status.podIPs}}}
    - {name: CPU_REQ, valueFrom: {resourceFieldRef: {resource: requests.cpu, divisor: 1}}}
    - {name: CPU_REQ_M, valueFrom: {resourceFieldRef: {resource: requests.cpu, divisor: 1m}}}
    - {name: CPU_LIM, valueFrom: {resourceFieldRef: {resource: limits.cpu}}}
    - {name: MEM_LIM_MI, valueFrom: {resourceFieldRef: {resource: limits.memory, divisor: 1Mi}}}
    - {name: MEM_REQ, valueFrom: {resourceFieldRef: {resource: requests.memory}}}
    - {name: STORAGE_LIM_GI, valueFrom: {resourceFieldRef: {resource: limits.ephemeral-storage, divisor: 1Gi}}}
    - {name: CMD, value: "sh-$(POD)"}
    - {name: SELF, value: "$(SELF)-$(LATER)"}
    - {name: LATER, value: "late"}
    - {name: POD, value: "again-$(POD)"}
"#;

#[test]
fn resolves_env_in_order_with_downward_api() {
    let p = pod(POD);
    let c = &p.spec.as_ref().unwrap().containers[0];
    let env = resolve_env(&p, c, "spec.containers[0]", &ctx(), &ApiObjects::default()).unwrap();
    let got: Vec<(&str, &str)> = env.iter().collect();
    assert_eq!(
        got,
        vec![
            ("POD", "again-web"),
            ("NS", "prod"),
            ("UID", "u-1"),
            ("APP", "web"),
            ("TEAM", "core"),
            ("MISSING", ""),
            ("NODE", "node-a"),
            ("SA", "sa"),
            ("HOST", "192.168.1.10"),
            ("HOSTS", "192.168.1.10"),
            ("IP", "10.1.0.5"),
            ("IPS", "10.1.0.5,fd00::5"),
            ("CPU_REQ", "1"),
            ("CPU_REQ_M", "250"),
            ("CPU_LIM", "4"),
            ("MEM_LIM_MI", "128"),
            ("MEM_REQ", "67108864"),
            ("STORAGE_LIM_GI", "100"),
            ("CMD", "sh-web"),
            ("SELF", "$(SELF)-$(LATER)"),
            ("LATER", "late"),
        ]
    );
    let (command, args) = expand_command_and_args(c, &env);
    assert_eq!(command, vec!["/bin/sh-web", "$(CMD)"]);
    assert_eq!(args, vec!["--x=late", "again-web"]);
}

#[test]
fn unknown_sources_and_unfetched_objects_are_refused() {
    let cases = [
        (
            "{name: X, valueFrom: {configMapKeyRef: {name: cm, key: k}}}",
            "spec.containers[0].env[0].valueFrom.configMapKeyRef",
        ),
        (
            "{name: X, valueFrom: {secretKeyRef: {name: s, key: k}}}",
            "spec.containers[0].env[0].valueFrom.secretKeyRef",
        ),
        (
            "{name: X, valueFrom: {fieldRef: {fieldPath: spec.bogus}}}",
            "spec.containers[0].env[0].valueFrom.fieldRef.fieldPath",
        ),
        (
            "{name: X, valueFrom: {resourceFieldRef: {resource: limits.gpu}}}",
            "spec.containers[0].env[0].valueFrom.resourceFieldRef.resource",
        ),
    ];
    for (env, want_field) in cases {
        let p = pod(&format!(
            "metadata: {{name: p}}\nspec:\n  containers:\n  - name: c\n    env: [{env}]\n"
        ));
        let c = &p.spec.as_ref().unwrap().containers[0];
        let err =
            resolve_env(&p, c, "spec.containers[0]", &ctx(), &ApiObjects::default()).unwrap_err();
        let field = match &err {
            SpecError::NotKnown { field, .. } | SpecError::Invalid { field, .. } => field.clone(),
            other => panic!("unexpected {other:?}"),
        };
        assert_eq!(field, want_field);
    }
    let p = pod(
        "metadata: {name: p}\nspec:\n  containers:\n  - name: c\n    envFrom: [{configMapRef: {name: x}}]\n",
    );
    let c = &p.spec.as_ref().unwrap().containers[0];
    assert_eq!(
        resolve_env(&p, c, "spec.containers[0]", &ctx(), &ApiObjects::default())
            .unwrap_err()
            .to_string(),
        "spec.containers[0].envFrom[0].configMapRef: configmap \"x\" (no apiserver) is not known yet"
    );
}

fn fetched() -> ApiObjects {
    use k8s_openapi::ByteString;
    use k8s_openapi::api::core::v1::{ConfigMap, Secret};
    let mut objects = ApiObjects::new("prod");
    objects.insert_config_map(
        "cfg",
        Some(ConfigMap {
            data: Some(
                [
                    ("mode".into(), "fast".into()),
                    ("bad=key".into(), "x".into()),
                ]
                .into(),
            ),
            binary_data: Some([("blob".into(), ByteString(vec![1]))].into()),
            ..Default::default()
        }),
    );
    objects.insert_config_map("gone", None);
    objects.insert_secret(
        "creds",
        Some(Secret {
            data: Some(
                [
                    ("user".into(), ByteString(b"admin".to_vec())),
                    ("mode".into(), ByteString(b"secret-mode".to_vec())),
                ]
                .into(),
            ),
            ..Default::default()
        }),
    );
    objects.insert_secret("nope", None);
    objects
}

#[test]
fn config_map_and_secret_values_with_env_from_precedence() {
    let p = pod(r#"
metadata: {name: p, namespace: prod}
spec:
  containers:
  - name: c
    envFrom:
    - {configMapRef: {name: cfg}}
    - {secretRef: {name: creds}, prefix: S_}
    - {configMapRef: {name: gone, optional: true}}
    env:
    - {name: MODE_AGAIN, value: "$(mode)"}
    - {name: mode, valueFrom: {secretKeyRef: {name: creds, key: mode}}}
    - {name: OPT_KEY, valueFrom: {configMapKeyRef: {name: cfg, key: missing, optional: true}}}
    - {name: OPT_OBJ, valueFrom: {secretKeyRef: {name: nope, key: k, optional: true}}}
    - {name: USER, valueFrom: {secretKeyRef: {name: creds, key: user}}}
"#);
    let c = &p.spec.as_ref().unwrap().containers[0];
    let env = resolve_env(&p, c, "spec.containers[0]", &ctx(), &fetched()).unwrap();
    assert_eq!(
        env.iter().collect::<Vec<_>>(),
        vec![
            ("mode", "secret-mode"),
            ("S_mode", "secret-mode"),
            ("S_user", "admin"),
            ("MODE_AGAIN", "fast"),
            ("USER", "admin"),
        ]
    );
}

#[test]
fn missing_config_maps_secrets_and_keys_name_the_field() {
    let cases = [
        (
            "env: [{name: X, valueFrom: {configMapKeyRef: {name: cfg, key: nokey}}}]",
            "spec.containers[0].env[0].valueFrom.configMapKeyRef: couldn't find key nokey in ConfigMap prod/cfg",
        ),
        (
            "env: [{name: X, valueFrom: {configMapKeyRef: {name: cfg, key: blob}}}]",
            "spec.containers[0].env[0].valueFrom.configMapKeyRef: couldn't find key blob in ConfigMap prod/cfg",
        ),
        (
            "env: [{name: X, valueFrom: {secretKeyRef: {name: nope, key: k}}}]",
            "spec.containers[0].env[0].valueFrom.secretKeyRef: secret \"nope\" not found",
        ),
        (
            "env: [{name: X, valueFrom: {secretKeyRef: {name: creds, key: k}}}]",
            "spec.containers[0].env[0].valueFrom.secretKeyRef: couldn't find key k in Secret prod/creds",
        ),
        (
            "envFrom: [{configMapRef: {name: cfg}}, {configMapRef: {name: gone}}]",
            "spec.containers[0].envFrom[1].configMapRef: configmap \"gone\" not found",
        ),
    ];
    for (container, want) in cases {
        let p = pod(&format!(
            "metadata: {{name: p, namespace: prod}}\nspec:\n  containers:\n  - name: c\n    {container}\n"
        ));
        let c = &p.spec.as_ref().unwrap().containers[0];
        let err = resolve_env(&p, c, "spec.containers[0]", &ctx(), &fetched()).unwrap_err();
        assert_eq!(err.to_string(), want, "{container}");
    }
}

#[test]
fn host_ip_must_be_known() {
    let p = pod(
        "metadata: {name: p}\nspec:\n  containers:\n  - name: c\n    env: [{name: H, valueFrom: {fieldRef: {fieldPath: status.hostIP}}}]\n",
    );
    let c = &p.spec.as_ref().unwrap().containers[0];
    let mut context = ctx();
    context.host_ip = None;
    assert!(matches!(
        resolve_env(&p, c, "f", &context, &ApiObjects::default()),
        Err(SpecError::NotKnown { .. })
    ));
}

#[test]
fn resource_ref_to_other_container_and_no_allocatable() {
    let p = pod(r#"
metadata: {name: p}
spec:
  containers:
  - name: c
    env:
    - {name: OTHER, valueFrom: {resourceFieldRef: {containerName: side, resource: limits.cpu, divisor: 100m}}}
    - {name: NOLIM, valueFrom: {resourceFieldRef: {resource: limits.memory}}}
  - name: side
    resources: {limits: {cpu: 1250m}}
"#);
    let c = &p.spec.as_ref().unwrap().containers[0];
    let mut context = ctx();
    context.allocatable = None;
    let env = resolve_env(&p, c, "f", &context, &ApiObjects::default()).unwrap();
    assert_eq!(
        (env.get("OTHER"), env.get("NOLIM")),
        (Some("13"), Some("0"))
    );
}
