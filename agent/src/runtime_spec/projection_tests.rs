use super::*;
use crate::runtime_spec::testpod::pod;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};

fn objects() -> ApiObjects {
    let mut objects = ApiObjects::new("prod");
    objects.insert_config_map(
        "cfg",
        Some(ConfigMap {
            data: Some([("a.conf".into(), "A".into()), ("b.conf".into(), "B".into())].into()),
            binary_data: Some([("bin".into(), ByteString(vec![0, 1, 2]))].into()),
            ..Default::default()
        }),
    );
    objects.insert_config_map("gone", None);
    objects.insert_secret(
        "creds",
        Some(Secret {
            data: Some([("password".into(), ByteString(b"hunter2".to_vec()))].into()),
            ..Default::default()
        }),
    );
    objects.insert_secret("nope", None);
    objects.insert_token(
        TokenSource {
            service_account: "default".into(),
            audience: "vault".into(),
            expiration_seconds: 3600,
        },
        "jwt-for-vault".into(),
    );
    objects
}

/// `(path, content, mode)` of each file, or the error.
type Files = Result<Vec<(String, String, u32)>, String>;

fn payload_of(volume_yaml: &str) -> Files {
    let p = pod(&format!(
        r#"
metadata:
  name: web
  namespace: prod
  uid: u1
  labels: {{app: web, tier: "front\"end"}}
  annotations: {{note: "two\nlines"}}
spec:
  volumes:
  - {volume_yaml}
  containers:
  - name: app
    image: busybox
    resources: {{limits: {{memory: 64Mi}}}}
"#
    ));
    let volume = &p.spec.as_ref().unwrap().volumes.as_ref().unwrap()[0];
    volume_payload(
        &p,
        volume,
        "spec.volumes[0]",
        &objects(),
        &DownwardContext::default(),
    )
    .map(|payload| {
        payload
            .into_iter()
            .map(|(path, file)| {
                (
                    path.display().to_string(),
                    String::from_utf8_lossy(&file.data).into_owned(),
                    file.mode,
                )
            })
            .collect()
    })
    .map_err(|e| e.to_string())
}

fn files(list: &[(&str, &str, u32)]) -> Files {
    Ok(list
        .iter()
        .map(|(p, d, m)| (p.to_string(), d.to_string(), *m))
        .collect())
}

#[test]
fn config_map_and_secret_layouts() {
    let cases: &[(&str, Files)] = &[
        (
            "{name: v, configMap: {name: cfg}}",
            files(&[
                ("a.conf", "A", 0o644),
                ("b.conf", "B", 0o644),
                ("bin", "\u{0}\u{1}\u{2}", 0o644),
            ]),
        ),
        (
            "{name: v, configMap: {name: cfg, defaultMode: 0o400, items: [{key: a.conf, path: conf/a}, {key: b.conf, path: b, mode: 0o600}]}}",
            files(&[("b", "B", 0o600), ("conf/a", "A", 0o400)]),
        ),
        (
            "{name: v, configMap: {name: gone, optional: true}}",
            files(&[]),
        ),
        (
            "{name: v, configMap: {name: gone}}",
            Err("configmap \"gone\" not found".into()),
        ),
        (
            "{name: v, configMap: {name: cfg, items: [{key: x, path: x}]}}",
            Err("configmap references non-existent config key: x".into()),
        ),
        (
            "{name: v, configMap: {name: cfg, optional: true, items: [{key: x, path: x}, {key: a.conf, path: a}]}}",
            files(&[("a", "A", 0o644)]),
        ),
        (
            "{name: v, configMap: {name: cfg, items: [{key: a.conf, path: ../escape}]}}",
            Err("spec.volumes[0].configMap.items[0].path: \"../escape\" must be a relative path without '..' that does not start with '..'".into()),
        ),
        (
            "{name: v, configMap: {name: cfg, items: [{key: a.conf, path: ..data}]}}",
            Err("spec.volumes[0].configMap.items[0].path: \"..data\" must be a relative path without '..' that does not start with '..'".into()),
        ),
        (
            "{name: v, configMap: {name: cfg, items: [{key: a.conf, path: /abs}]}}",
            Err("spec.volumes[0].configMap.items[0].path: \"/abs\" must be a relative path without '..' that does not start with '..'".into()),
        ),
        (
            "{name: v, configMap: {name: cfg, defaultMode: 0o1777}}",
            Err("spec.volumes[0].configMap.defaultMode: 1023 must be a file mode between 0 and 0777".into()),
        ),
        (
            "{name: v, secret: {secretName: creds, defaultMode: 0o400}}",
            files(&[("password", "hunter2", 0o400)]),
        ),
        (
            "{name: v, secret: {secretName: nope}}",
            Err("secret \"nope\" not found".into()),
        ),
        (
            "{name: v, secret: {secretName: creds, items: [{key: user, path: u}]}}",
            Err("references non-existent secret key: user".into()),
        ),
    ];
    for (volume, want) in cases {
        assert_eq!(&payload_of(volume), want, "{volume}");
    }
}

#[test]
fn downward_api_and_projected_layouts() {
    let cases: &[(&str, Files)] = &[
        (
            "{name: v, downwardAPI: {items: [{path: labels, fieldRef: {fieldPath: metadata.labels}}, {path: notes, fieldRef: {fieldPath: metadata.annotations}}, {path: name, fieldRef: {fieldPath: metadata.name}}, {path: mem, mode: 0o600, resourceFieldRef: {containerName: app, resource: limits.memory, divisor: 1Mi}}]}}",
            files(&[
                ("labels", "app=\"web\"\ntier=\"front\\\"end\"", 0o644),
                ("mem", "64", 0o600),
                ("name", "web", 0o644),
                ("notes", "note=\"two\\nlines\"", 0o644),
            ]),
        ),
        (
            "{name: v, downwardAPI: {items: [{path: m, resourceFieldRef: {resource: limits.memory}}]}}",
            Err("spec.volumes[0].downwardAPI.items[0].resourceFieldRef.containerName: no container named \"\"".into()),
        ),
        (
            "{name: v, projected: {defaultMode: 0o440, sources: [{configMap: {name: cfg, items: [{key: a.conf, path: a}]}}, {secret: {name: creds}}, {downwardAPI: {items: [{path: ns, fieldRef: {fieldPath: metadata.namespace}}]}}, {serviceAccountToken: {path: token, audience: vault}}, {secret: {name: nope, optional: true}}]}}",
            files(&[
                ("a", "A", 0o440),
                ("ns", "prod", 0o440),
                ("password", "hunter2", 0o440),
                ("token", "jwt-for-vault", 0o440),
            ]),
        ),
        (
            "{name: v, projected: {sources: [{serviceAccountToken: {path: token}}]}}",
            Err("no token for service account \"default\" (audience \"\") was issued".into()),
        ),
        (
            "{name: v, projected: {sources: [{clusterTrustBundle: {path: b, name: x}}]}}",
            Err("spec.volumes[0].projected.sources[0].clusterTrustBundle: ClusterTrustBundle projections are not supported by kwk-node yet".into()),
        ),
    ];
    for (volume, want) in cases {
        assert_eq!(&payload_of(volume), want, "{volume}");
    }
}

#[test]
fn go_quoting_escapes_like_percent_q() {
    assert_eq!(go_quote("plain"), "\"plain\"");
    assert_eq!(go_quote("a\"b\\c"), "\"a\\\"b\\\\c\"");
    assert_eq!(go_quote("\u{1}\u{7f}é"), "\"\\x01\\x7fé\"");
}

#[test]
fn unfetched_objects_are_named() {
    let p = pod(
        "metadata: {name: p}\nspec:\n  volumes:\n  - {name: v, secret: {secretName: s}}\n  containers: [{name: c, image: i}]\n",
    );
    let volume = &p.spec.as_ref().unwrap().volumes.as_ref().unwrap()[0];
    let err = volume_payload(
        &p,
        volume,
        "spec.volumes[0]",
        &ApiObjects::default(),
        &DownwardContext::default(),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "secret \"s\" cannot be read (no apiserver)"
    );
}
