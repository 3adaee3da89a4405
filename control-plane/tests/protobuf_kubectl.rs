//! Real client bytes: protobuf bodies kubectl 1.33.9 sent (captured by `fixtures/pb/capture.sh`),
//! decoded and compared with the JSON the same kubectl command prints for the same object
//! (`--dry-run=client -o json`, i.e. Go's `encoding/json` of it) — the body it would send as JSON.

use std::path::{Path, PathBuf};

use kwk_control_plane::apiserver::protobuf::{CONTENT_TYPE, decode_body, decode_envelope};
use serde_json::{Value, json};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pb")
}

fn body(name: &str) -> Vec<u8> {
    std::fs::read(fixtures().join(format!("{name}.bin")))
        .unwrap_or_else(|e| panic!("{name}.bin: {e}"))
}

fn decode(name: &str) -> Value {
    decode_body(&body(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn every_captured_create_body_is_the_json_kubectl_prints_for_it() {
    let mut checked = Vec::new();
    for entry in std::fs::read_dir(fixtures()).expect("fixtures") {
        let path = entry.expect("entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .expect("name")
            .to_owned();
        let want: Value =
            serde_json::from_slice(&std::fs::read(&path).expect("read")).expect("json");
        let got = decode(&name);
        assert_eq!(
            got,
            want,
            "{name}: got\n{}\nwant\n{}",
            serde_json::to_string_pretty(&got).unwrap_or_default(),
            serde_json::to_string_pretty(&want).unwrap_or_default()
        );
        checked.push(name);
    }
    for required in ["configmap", "secret", "namespace", "deployment", "service"] {
        assert!(
            checked.iter().any(|n| n == required),
            "fixture {required} missing"
        );
    }
    assert!(checked.len() >= 20, "only {} fixtures", checked.len());
}

#[test]
fn the_envelope_names_the_kind_and_holds_protobuf() {
    let unknown = decode_envelope(&body("deployment")).expect("envelope");
    assert_eq!(
        (unknown.api_version.as_str(), unknown.kind.as_str()),
        ("apps/v1", "Deployment")
    );
    assert_eq!(
        (
            unknown.content_encoding.as_str(),
            unknown.content_type.as_str()
        ),
        ("", "")
    );
    assert!(!unknown.raw.is_empty());
    assert_eq!(CONTENT_TYPE, "application/vnd.kubernetes.protobuf");
}

#[test]
fn auth_can_i_sends_a_self_subject_access_review() {
    // Go writes every non-pointer field; omitempty drops the empty ones, the value structs stay.
    assert_eq!(
        decode("ssar"),
        json!({
            "kind": "SelfSubjectAccessReview",
            "apiVersion": "authorization.k8s.io/v1",
            "metadata": {"creationTimestamp": null},
            "spec": {"resourceAttributes": {"namespace": "default", "verb": "create", "resource": "pods"}},
            "status": {"allowed": false}
        })
    );
    assert_eq!(
        decode("ssar-sub")["spec"]["resourceAttributes"]["subresource"],
        json!("log")
    );
}

#[test]
fn auth_can_i_list_and_whoami_and_create_token() {
    assert_eq!(
        decode("ssrr"),
        json!({
            "kind": "SelfSubjectRulesReview",
            "apiVersion": "authorization.k8s.io/v1",
            "metadata": {"creationTimestamp": null},
            "spec": {"namespace": "default"},
            "status": {"resourceRules": null, "nonResourceRules": null, "incomplete": false}
        })
    );
    assert_eq!(
        decode("ssr"),
        json!({
            "kind": "SelfSubjectReview",
            "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"creationTimestamp": null},
            "status": {"userInfo": {}}
        })
    );
    assert_eq!(
        decode("token"),
        json!({
            "kind": "TokenRequest",
            "apiVersion": "authentication.k8s.io/v1",
            // The name is in the URL (serviceaccounts/sa/token); a nil pointer without
            // omitempty is null, as Go writes it.
            "metadata": {"creationTimestamp": null},
            "spec": {"audiences": ["api"], "expirationSeconds": 3600, "boundObjectRef": null},
            "status": {"token": "", "expirationTimestamp": null}
        })
    );
}

#[test]
fn helm_release_secrets_and_their_delete_options() {
    for (name, status) in [
        ("helm-release-create", "pending-install"),
        ("helm-release-deployed", "deployed"),
        ("helm-release-uninstalling", "uninstalling"),
    ] {
        let secret = decode(name);
        assert_eq!(secret["kind"], json!("Secret"), "{name}");
        assert_eq!(secret["type"], json!("helm.sh/release.v1"), "{name}");
        assert_eq!(
            secret["metadata"]["name"],
            json!("sh.helm.release.v1.demo.v1"),
            "{name}"
        );
        assert_eq!(
            secret["metadata"]["labels"]["owner"],
            json!("helm"),
            "{name}"
        );
        assert_eq!(
            secret["metadata"]["labels"]["status"],
            json!(status),
            "{name}"
        );
        // []byte is base64 in JSON; helm's payload is itself base64 of gzip ("H4sI…").
        let release = secret["data"]["release"].as_str().expect("data.release");
        use base64::Engine as _;
        let inner = base64::engine::general_purpose::STANDARD
            .decode(release)
            .expect("base64");
        assert!(
            inner.starts_with(b"H4sI"),
            "{name}: {:?}",
            &inner[..8.min(inner.len())]
        );
    }
    // helm uninstall: DELETE with an empty DeleteOptions (every field a nil pointer or slice).
    assert_eq!(
        decode("helm-delete"),
        json!({"kind": "DeleteOptions", "apiVersion": "v1"})
    );
}
