//! LIST and WATCH semantics as kubectl and client-go rely on them, over HTTPS on the embedded
//! store (compacted through the `Store` trait): `limit`/`continue` with `remainingItemCount`,
//! consistent pages, the 410 of an expired continue token and its fresh token,
//! `resourceVersion` + `resourceVersionMatch` (exact reads of old revisions, 504 for revisions
//! from the future), watch resume from retained revisions and 410 after compaction, bookmarks,
//! and the field selectors kubectl uses per kind.

mod support;

use std::sync::Arc;

use kwk_control_plane::storage::Store;
use kwk_control_plane::storage::embedded::{EmbeddedOptions, EmbeddedStore};
use serde_json::{Value, json};
use support::{TestApiServer, stderr, stdout};

const TOKEN: &str = "t,admin,1,system:masters\n";

struct Api {
    api: TestApiServer,
    store: Arc<EmbeddedStore>,
    _db: tempfile::TempDir,
}

async fn start() -> Api {
    let db = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(
        EmbeddedStore::open(db.path(), EmbeddedOptions::default())
            .await
            .expect("open the embedded store"),
    );
    let api = TestApiServer::start_with(store.clone(), TOKEN).await;
    Api {
        api,
        store,
        _db: db,
    }
}

/// A response: status, headers (lower-cased names) and the JSON body (or the raw text as a
/// JSON string when it is not JSON, e.g. a watch stream).
struct Answer {
    status: u16,
    headers: String,
    body: Value,
    text: String,
}

impl Api {
    async fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Answer {
        let url = format!("{}{path}", self.api.url());
        let data = body.map(Value::to_string);
        let mut args = vec![
            "-D",
            "-",
            "-X",
            method,
            "-H",
            "Authorization: Bearer t",
            "-H",
            "Content-Type: application/json",
        ];
        if let Some(data) = &data {
            args.extend(["--data-binary", data.as_str()]);
        }
        args.push(&url);
        let out = self.api.curl(&args).await;
        let raw = stdout(&out);
        let (headers, text) = raw
            .split_once("\r\n\r\n")
            .unwrap_or_else(|| panic!("no headers in {raw:?}: {}", stderr(&out)));
        let status = headers
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("status");
        Answer {
            status,
            headers: headers.to_lowercase(),
            body: serde_json::from_str(text).unwrap_or_else(|_| json!(text)),
            text: text.to_string(),
        }
    }

    async fn get(&self, path: &str) -> Answer {
        self.call("GET", path, None).await
    }

    async fn ok(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        let answer = self.call(method, path, body).await;
        assert!(
            (200..300).contains(&answer.status),
            "{method} {path}: {} {}",
            answer.status,
            answer.text
        );
        answer.body
    }

    async fn configmap(&self, name: &str, value: &str) -> Value {
        let body = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "labels": {"set": "paged"}}, "data": {"v": value}});
        self.ok("POST", "/api/v1/namespaces/default/configmaps", Some(&body))
            .await
    }
}

fn names(list: &Value) -> Vec<String> {
    list["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| i["metadata"]["name"].as_str().expect("name").to_string())
        .collect()
}

fn rv(object: &Value) -> i64 {
    object["metadata"]["resourceVersion"]
        .as_str()
        .expect("resourceVersion")
        .parse()
        .expect("numeric resourceVersion")
}

fn events(text: &str) -> Vec<Value> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("event line"))
        .collect()
}

const CMS: &str = "/api/v1/namespaces/default/configmaps";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paged_lists_are_consistent_count_what_remains_and_expire_after_compaction() {
    let api = start().await;
    for i in 0..5 {
        api.configmap(&format!("cm-{i}"), "1").await;
    }
    let first = api.ok("GET", &format!("{CMS}?limit=2"), None).await;
    assert_eq!(names(&first), ["cm-0", "cm-1"]);
    assert_eq!(first["metadata"]["remainingItemCount"], 3);
    let token = first["metadata"]["continue"].as_str().expect("continue");
    let second = api
        .ok("GET", &format!("{CMS}?limit=2&continue={token}"), None)
        .await;
    assert_eq!(names(&second), ["cm-2", "cm-3"]);
    assert_eq!(second["metadata"]["remainingItemCount"], 1);
    assert_eq!(
        second["metadata"]["resourceVersion"], first["metadata"]["resourceVersion"],
        "every page is read at the first page's revision"
    );
    // A write after the first page is not in the rest of the list (a consistent snapshot).
    api.configmap("cm-5", "1").await;
    let token2 = second["metadata"]["continue"].as_str().expect("continue");
    let last = api
        .ok("GET", &format!("{CMS}?limit=2&continue={token2}"), None)
        .await;
    assert_eq!(names(&last), ["cm-4"]);
    assert!(last["metadata"].get("continue").is_none(), "{last}");
    assert!(last["metadata"].get("remainingItemCount").is_none());
    // A selector makes the count unknowable without reading everything: no count.
    let selected = api
        .ok(
            "GET",
            &format!("{CMS}?limit=2&labelSelector=set%3Dpaged"),
            None,
        )
        .await;
    assert_eq!(names(&selected), ["cm-0", "cm-1"]);
    assert!(selected["metadata"].get("remainingItemCount").is_none());
    assert!(selected["metadata"]["continue"].is_string());
    // kubectl pages through with --chunk-size.
    let kubectl = api
        .api
        .kubectl_ok(&["get", "cm", "--chunk-size=2", "-o", "name"])
        .await;
    assert_eq!(
        kubectl
            .lines()
            .filter(|l| l.contains("configmap/cm-"))
            .count(),
        6,
        "{kubectl}"
    );

    // Compaction: the first page's revision is gone.
    let current = api.store.current_revision().await.expect("revision");
    api.store.compact(current).await.expect("compact");
    let expired = api.get(&format!("{CMS}?limit=2&continue={token}")).await;
    assert_eq!(expired.status, 410, "{}", expired.text);
    assert_eq!(expired.body["reason"], "Expired");
    assert!(
        expired.body["message"]
            .as_str()
            .expect("message")
            .starts_with("The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response"),
        "{}",
        expired.text
    );
    // The token in the 410 continues after the same key, at the latest revision.
    let fresh = expired.body["metadata"]["continue"]
        .as_str()
        .expect("a fresh continue token");
    let rest = api
        .ok("GET", &format!("{CMS}?limit=10&continue={fresh}"), None)
        .await;
    assert_eq!(names(&rest), ["cm-2", "cm-3", "cm-4", "cm-5"]);
    assert_eq!(rv(&rest), current);
    // An exact read of a compacted revision.
    let old = first["metadata"]["resourceVersion"].as_str().expect("rv");
    let gone = api
        .get(&format!(
            "{CMS}?resourceVersion={old}&resourceVersionMatch=Exact"
        ))
        .await;
    assert_eq!(gone.status, 410, "{}", gone.text);
    assert_eq!(
        gone.body["message"],
        "The resourceVersion for the provided list is too old."
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resource_versions_read_exactly_not_older_than_and_not_from_the_future() {
    let api = start().await;
    let a = api.configmap("a", "old").await;
    let at = rv(&a);
    api.ok(
        "PUT",
        &format!("{CMS}/a"),
        Some(&json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "a", "resourceVersion": at.to_string()}, "data": {"v": "new"}})),
    )
    .await;
    api.configmap("b", "1").await;

    // Exact: the list as it was at `at` (the old data, no `b`).
    let exact = api
        .ok(
            "GET",
            &format!("{CMS}?resourceVersion={at}&resourceVersionMatch=Exact"),
            None,
        )
        .await;
    assert_eq!(names(&exact), ["a"]);
    assert_eq!(exact["items"][0]["data"]["v"], "old");
    assert_eq!(rv(&exact), at);
    // Legacy: a resourceVersion with a limit is exact too.
    let legacy = api
        .ok("GET", &format!("{CMS}?resourceVersion={at}&limit=5"), None)
        .await;
    assert_eq!(legacy["items"][0]["data"]["v"], "old");
    // NotOlderThan and "0" read the latest.
    for query in [
        format!("resourceVersion={at}&resourceVersionMatch=NotOlderThan"),
        format!("resourceVersion={at}"),
        "resourceVersion=0".to_string(),
    ] {
        let list = api.ok("GET", &format!("{CMS}?{query}"), None).await;
        assert_eq!(names(&list), ["a", "b"], "{query}");
        assert_eq!(list["items"][0]["data"]["v"], "new", "{query}");
    }

    // From the future: 504 with the cause client-go's reflector looks for, after a wait.
    let current = api.store.current_revision().await.expect("revision");
    let ahead = current + 100;
    let started = std::time::Instant::now();
    let future = api
        .get(&format!(
            "{CMS}?resourceVersion={ahead}&resourceVersionMatch=NotOlderThan"
        ))
        .await;
    assert!(started.elapsed() >= std::time::Duration::from_secs(2));
    assert_eq!(future.status, 504, "{}", future.text);
    assert_eq!(future.body["reason"], "Timeout");
    assert_eq!(
        future.body["message"],
        format!("Timeout: Too large resource version: {ahead}, current: {current}")
    );
    assert_eq!(
        future.body["details"]["causes"],
        json!([{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}])
    );
    assert_eq!(future.body["details"]["retryAfterSeconds"], 1);
    assert!(
        future.headers.contains("retry-after: 1"),
        "{}",
        future.headers
    );

    // Invalid combinations.
    let cases = [
        (
            "resourceVersion=0&resourceVersionMatch=Exact",
            422,
            "ListOptions.meta.k8s.io \"\" is invalid: resourceVersionMatch: Forbidden: resourceVersionMatch \"exact\" is forbidden for resourceVersion \"0\"",
        ),
        (
            "resourceVersionMatch=NotOlderThan",
            422,
            "ListOptions.meta.k8s.io \"\" is invalid: resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden unless resourceVersion is provided",
        ),
        (
            "continue=abc&resourceVersion=3",
            400,
            "specifying resource version is not allowed when using continue",
        ),
        (
            "continue=abc",
            400,
            "continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)",
        ),
    ];
    for (query, code, message) in cases {
        let answer = api.get(&format!("{CMS}?{query}")).await;
        assert_eq!(answer.status, code, "{query}: {}", answer.text);
        assert_eq!(answer.body["message"], message, "{query}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_resume_from_retained_revisions_get_410_after_compaction_and_bookmarks() {
    let api = start().await;
    let created = api.configmap("w", "0").await;
    let from = rv(&created);
    let mut last = from;
    for v in 1..=2 {
        let body = json!({"data": {"v": v.to_string()}});
        let patched = api
            .api
            .curl(&[
                "-X",
                "PATCH",
                "-H",
                "Authorization: Bearer t",
                "-H",
                "Content-Type: application/merge-patch+json",
                "--data-binary",
                &body.to_string(),
                &format!("{}{CMS}/w", api.api.url()),
            ])
            .await;
        last = rv(&serde_json::from_str(&stdout(&patched)).expect("patched"));
    }
    // Resume from the creation: the two changes after it, in order.
    let resumed = api
        .get(&format!(
            "{CMS}?watch=1&resourceVersion={from}&timeoutSeconds=1"
        ))
        .await;
    let got: Vec<(String, String)> = events(&resumed.text)
        .iter()
        .map(|e| {
            (
                e["type"].as_str().expect("type").to_string(),
                e["object"]["data"]["v"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("MODIFIED".into(), "1".into()),
            ("MODIFIED".into(), "2".into())
        ]
    );

    // Bookmarks when asked: the last one before the timeout carries the newest revision.
    let marked = api
        .get(&format!(
            "{CMS}?watch=1&resourceVersion={last}&timeoutSeconds=3&allowWatchBookmarks=true"
        ))
        .await;
    let marks = events(&marked.text);
    assert_eq!(marks.len(), 1, "{}", marked.text);
    assert_eq!(marks[0]["type"], "BOOKMARK");
    assert_eq!(marks[0]["object"]["kind"], "ConfigMap");
    assert_eq!(rv(&marks[0]["object"]), last);
    let unmarked = api
        .get(&format!(
            "{CMS}?watch=1&resourceVersion={last}&timeoutSeconds=3"
        ))
        .await;
    assert!(events(&unmarked.text).is_empty(), "{}", unmarked.text);

    // resourceVersionMatch on a watch needs sendInitialEvents.
    let refused = api
        .get(&format!(
            "{CMS}?watch=1&resourceVersion={last}&resourceVersionMatch=NotOlderThan"
        ))
        .await;
    assert_eq!(refused.status, 422, "{}", refused.text);
    assert_eq!(
        refused.body["details"]["causes"][0]["message"],
        "Forbidden: resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided"
    );

    // A watch-list asking for a state newer than the store's: 504 after the wait, as a LIST.
    let ahead = last + 50;
    let future = api
        .get(&format!(
            "{CMS}?watch=1&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true&resourceVersion={ahead}"
        ))
        .await;
    assert_eq!(future.status, 504, "{}", future.text);
    assert_eq!(
        future.body["details"]["causes"][0]["reason"],
        "ResourceVersionTooLarge"
    );

    // After compaction, resuming from a compacted revision: the watch's one event is a 410.
    let current = api.store.current_revision().await.expect("revision");
    api.store.compact(current).await.expect("compact");
    let gone = api
        .get(&format!(
            "{CMS}?watch=1&resourceVersion={from}&timeoutSeconds=5"
        ))
        .await;
    assert_eq!(gone.status, 200, "{}", gone.text);
    let error = events(&gone.text);
    assert_eq!(error.len(), 1, "{}", gone.text);
    assert_eq!(error[0]["type"], "ERROR");
    assert_eq!(error[0]["object"]["code"], 410);
    assert_eq!(error[0]["object"]["reason"], "Expired");
    assert!(
        error[0]["object"]["message"]
            .as_str()
            .expect("message")
            .starts_with(&format!("too old resource version: {from} (")),
        "{}",
        gone.text
    );
    // A retained revision still resumes.
    api.configmap("after", "1").await;
    let fine = api
        .get(&format!(
            "{CMS}?watch=1&resourceVersion={current}&timeoutSeconds=1"
        ))
        .await;
    let added = events(&fine.text);
    assert_eq!(added.len(), 1, "{}", fine.text);
    assert_eq!(added[0]["object"]["metadata"]["name"], "after");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn field_selectors_kubectl_uses_per_kind() {
    let api = start().await;
    let pod = |name: &str, node: Option<&str>| {
        let mut spec = json!({"containers": [{"name": "c", "image": "busybox"}]});
        if let Some(node) = node {
            spec["nodeName"] = json!(node);
        }
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec})
    };
    let pods = "/api/v1/namespaces/default/pods";
    api.ok("POST", pods, Some(&pod("on-n1", Some("n1")))).await;
    api.ok("POST", pods, Some(&pod("on-n2", Some("n2")))).await;
    api.ok("POST", pods, Some(&pod("unscheduled", None))).await;
    let event = |name: &str, involved: &str, kind: &str| {
        json!({"apiVersion": "v1", "kind": "Event", "metadata": {"name": name},
            "involvedObject": {"kind": "Pod", "name": involved, "namespace": "default"},
            "reason": "Test", "message": "m", "type": kind})
    };
    let evs = "/api/v1/namespaces/default/events";
    api.ok("POST", evs, Some(&event("e1", "on-n1", "Warning")))
        .await;
    api.ok("POST", evs, Some(&event("e2", "on-n2", "Normal")))
        .await;
    let secret = |name: &str, kind: &str| {
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "type": kind,
            "data": {"tls.crt": "eA==", "tls.key": "eA=="}})
    };
    let secrets = "/api/v1/namespaces/default/secrets";
    api.ok("POST", secrets, Some(&secret("tls", "kubernetes.io/tls")))
        .await;
    api.ok("POST", secrets, Some(&secret("plain", "Opaque")))
        .await;

    let cases: [(&[&str], &str); 9] = [
        (&["pods", "--field-selector", "spec.nodeName=n1"], "on-n1"),
        (
            &["pods", "--field-selector", "spec.nodeName="],
            "unscheduled",
        ),
        (
            &[
                "pods",
                "--field-selector",
                "spec.nodeName!=n1,spec.nodeName!=",
            ],
            "on-n2",
        ),
        (
            &[
                "pods",
                "--field-selector",
                "status.phase=Pending,metadata.name=on-n2",
            ],
            "on-n2",
        ),
        (
            &[
                "pods",
                "-A",
                "--field-selector",
                "metadata.namespace=default,spec.nodeName=n2",
            ],
            "on-n2",
        ),
        (
            &["events", "--field-selector", "involvedObject.name=on-n2"],
            "e2",
        ),
        (
            &[
                "events",
                "--field-selector",
                "involvedObject.kind=Pod,type=Warning",
            ],
            "e1",
        ),
        (
            &["secrets", "--field-selector", "type=kubernetes.io/tls"],
            "tls",
        ),
        (
            &["secrets", "--field-selector", "type!=kubernetes.io/tls"],
            "plain",
        ),
    ];
    for (args, want) in cases {
        let mut full = vec!["get"];
        full.extend_from_slice(args);
        full.extend(["-o", "jsonpath={.items[*].metadata.name}"]);
        let got = api.api.kubectl_ok(&full).await;
        assert_eq!(got, want, "kubectl {full:?}");
    }
    let unknown = api
        .api
        .kubectl(&["get", "pods", "--field-selector", "spec.hostname=x"])
        .await;
    assert!(!unknown.status.success());
    assert!(
        stderr(&unknown).contains("field label not supported: spec.hostname"),
        "{}",
        stderr(&unknown)
    );
    // A watch filters by the same selectors.
    let watched = api
        .get(&format!(
            "{pods}?watch=1&fieldSelector=spec.nodeName%3Dn2&timeoutSeconds=1"
        ))
        .await;
    let names: Vec<Value> = events(&watched.text)
        .iter()
        .map(|e| e["object"]["metadata"]["name"].clone())
        .collect();
    assert_eq!(names, [json!("on-n2")]);
}
