//! ConfigMaps, Secrets, ServiceAccounts.

use serde_json::json;

use super::*;

#[test]
fn config_maps() {
    let cm = |data: serde_json::Value| json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta("settings", 45), "data": data});
    assert_eq!(
        causes(
            "",
            "ConfigMap",
            cm(json!({"a.conf": "x", "B_2": "y"})),
            None
        ),
        Vec::<String>::new()
    );
    assert_cause(
        &causes("", "ConfigMap", cm(json!({"a/b": "x"})), None),
        "data[a/b]: Invalid value: \"a/b\": a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+') [FieldValueInvalid]",
    );
    assert_cause(
        &causes("", "ConfigMap", cm(json!({"..a": "x"})), None),
        "data[..a]: Invalid value: \"..a\": must not start with '..'",
    );
    let big = cm(json!({"a": "x".repeat(600 * 1024), "b": "y".repeat(600 * 1024)}));
    assert_eq!(
        causes("", "ConfigMap", big, None),
        [": Too long: may not be more than 1048576 bytes [FieldValueTooLong]"]
    );
    let mut both = cm(json!({"k": "v"}));
    both["binaryData"] = json!({"k": "AAE="});
    assert_cause(
        &causes("", "ConfigMap", both.clone(), None),
        "data[k]: Invalid value: \"k\": duplicate of key present in binaryData",
    );
    let mut frozen = cm(json!({"k": "v"}));
    frozen["immutable"] = json!(true);
    let mut edited = frozen.clone();
    edited["data"]["k"] = json!("w");
    assert_eq!(
        causes("", "ConfigMap", edited, Some(frozen)),
        ["data: Forbidden: field is immutable when `immutable` is set [FieldValueForbidden]"]
    );
    assert_eq!(
        row("", "ConfigMap", &both),
        [json!("settings"), json!(2), json!("45s")]
    );
}

#[test]
fn secrets() {
    let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": meta("creds", 7200),
                        "data": {"user": "YWRtaW4="}, "stringData": {"password": "s3cret"}});
    let d = defaulted("", "Secret", secret);
    assert_eq!(d["type"], "Opaque");
    assert_eq!(
        d["data"],
        json!({"user": "YWRtaW4=", "password": "czNjcmV0"})
    );
    assert!(d.get("stringData").is_none());
    assert_eq!(
        row("", "Secret", &d),
        [json!("creds"), json!("Opaque"), json!(2), json!("120m")]
    );
    assert_eq!(
        strategy_for("", "Secret").field(&d, "type").as_deref(),
        Some("Opaque")
    );

    let typed = |ty: &str, data: serde_json::Value| json!({"apiVersion": "v1", "kind": "Secret", "metadata": meta("s", 1), "type": ty, "data": data});
    assert_eq!(
        causes(
            "",
            "Secret",
            typed("kubernetes.io/tls", json!({"tls.crt": "eA=="})),
            None
        ),
        ["data[tls.key]: Required value [FieldValueRequired]"]
    );
    assert_cause(
        &causes(
            "",
            "Secret",
            typed(
                "kubernetes.io/dockerconfigjson",
                json!({".dockerconfigjson": "bm9wZQ=="}),
            ),
            None,
        ),
        "data[.dockerconfigjson]: Invalid value: \"<secret contents redacted>\"",
    );
    assert_eq!(
        causes(
            "",
            "Secret",
            typed("kubernetes.io/service-account-token", json!({})),
            None
        ),
        [
            "metadata.annotations[kubernetes.io/service-account.name]: Required value [FieldValueRequired]"
        ]
    );
    let old = typed("Opaque", json!({}));
    assert_eq!(
        causes(
            "",
            "Secret",
            typed("kubernetes.io/basic-auth", json!({"username": "eA=="})),
            Some(old)
        ),
        [
            "type: Invalid value: \"kubernetes.io/basic-auth\": field is immutable [FieldValueInvalid]"
        ]
    );
}

#[test]
fn service_accounts() {
    let sa = json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta("default", 86400 * 10)});
    assert_eq!(
        row("", "ServiceAccount", &sa),
        [json!("default"), json!(0), json!("10d")]
    );
    assert_eq!(
        column_names("", "ServiceAccount"),
        [("Name", 0), ("Secrets", 0), ("Age", 0)]
    );
}
