//! kube-rs (the Rust client, rustls on ring) against the apiserver over TLS with the admin
//! client certificate from the generated kubeconfig: `Api::list` with paging and selectors,
//! reflector stores (list+watch, and streaming lists) that converge after creates, updates and
//! deletes, merge and strategic merge patches, delete, and the 410 a watch from a compacted
//! revision gets; server-side apply (`Patch::Apply`): create, conflict between managers, force.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::reflector::{self, Store as Reader};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Config, ResourceExt};
use kwk_control_plane::storage::Store;
use kwk_control_plane::storage::embedded::{EmbeddedOptions, EmbeddedStore};
use serde_json::json;
use support::TestApiServer;

async fn client(api: &TestApiServer) -> Client {
    let kubeconfig = Kubeconfig::read_from(api.kubeconfig()).expect("read kubeconfig");
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("config");
    Client::try_from(config).expect("client")
}

fn configmap(name: &str, value: &str) -> ConfigMap {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "labels": {"app": "kube-rs"}},
        "data": {"v": value}
    }))
    .expect("configmap")
}

/// Starts a reflector on `api`; returns its reader (the task runs until the test ends).
fn reflect(api: Api<ConfigMap>, config: watcher::Config) -> Reader<ConfigMap> {
    let (reader, writer) = reflector::store();
    let stream = reflector::reflector(writer, watcher(api, config)).applied_objects();
    tokio::spawn(async move {
        futures::pin_mut!(stream);
        while let Some(item) = stream.next().await {
            if let Err(e) = item {
                eprintln!("reflector: {e}");
            }
        }
    });
    reader
}

/// The reader's contents: name → data `v`.
fn contents(reader: &Reader<ConfigMap>) -> BTreeMap<String, String> {
    reader
        .state()
        .iter()
        .map(|cm| {
            let v = cm
                .data
                .as_ref()
                .and_then(|d| d.get("v").cloned())
                .unwrap_or_default();
            (cm.name_any(), v)
        })
        .collect()
}

async fn converges(reader: &Reader<ConfigMap>, want: &BTreeMap<String, String>, what: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let got = contents(reader);
        if &got == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: the reflector has {got:?}, want {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_rs_lists_reflects_patches_and_deletes() {
    let db = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(
        EmbeddedStore::open(db.path(), EmbeddedOptions::default())
            .await
            .expect("open the embedded store"),
    );
    let server = TestApiServer::start_with(store.clone(), "").await;
    let client = client(&server).await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");

    // Two reflectors: list-then-watch (pages of 2, so the list follows continue tokens) and a
    // streaming list (sendInitialEvents). Both start with one object already there.
    cms.create(&PostParams::default(), &configmap("pre", "0"))
        .await
        .expect("create pre");
    let listed = reflect(cms.clone(), watcher::Config::default().page_size(2));
    let streamed = reflect(cms.clone(), watcher::Config::default().streaming_lists());
    let mut want = BTreeMap::from([("pre".to_string(), "0".to_string())]);
    converges(&listed, &want, "initial list").await;
    converges(&streamed, &want, "initial streaming list").await;

    for (name, v) in [("a", "1"), ("b", "1"), ("c", "1")] {
        cms.create(&PostParams::default(), &configmap(name, v))
            .await
            .expect("create");
        want.insert(name.into(), v.into());
    }
    // Merge patch and strategic merge patch (maps merge key by key).
    let merged = cms
        .patch(
            "a",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"v": "2", "extra": "x"}})),
        )
        .await
        .expect("merge patch");
    assert_eq!(
        merged
            .data
            .as_ref()
            .expect("data")
            .get("extra")
            .map(String::as_str),
        Some("x")
    );
    want.insert("a".into(), "2".into());
    let strategic = cms
        .patch(
            "b",
            &PatchParams::default(),
            &Patch::Strategic(
                json!({"data": {"v": "3"}, "metadata": {"labels": {"patched": "yes"}}}),
            ),
        )
        .await
        .expect("strategic patch");
    assert_eq!(
        strategic.labels().get("app").map(String::as_str),
        Some("kube-rs")
    );
    assert_eq!(
        strategic.labels().get("patched").map(String::as_str),
        Some("yes")
    );
    want.insert("b".into(), "3".into());
    let deleted = cms
        .delete("c", &DeleteParams::default())
        .await
        .expect("delete");
    assert_eq!(
        deleted.left().map(|cm| cm.name_any()).as_deref(),
        Some("c"),
        "a configmap is gone at once: the deleted object comes back"
    );
    want.remove("c");
    converges(
        &listed,
        &want,
        "after creates, patches, delete (list+watch)",
    )
    .await;
    converges(
        &streamed,
        &want,
        "after creates, patches, delete (streaming)",
    )
    .await;
    assert!(cms.get_opt("c").await.expect("get").is_none());

    // Api::list: everything, paged with the count of what remains, and by selectors.
    let all = cms.list(&ListParams::default()).await.expect("list");
    let names: Vec<String> = all.items.iter().map(ResourceExt::name_any).collect();
    assert_eq!(names, ["a", "b", "pre"]);
    let page = cms
        .list(&ListParams::default().limit(2))
        .await
        .expect("page");
    assert_eq!(page.items.len(), 2);
    assert_eq!(page.metadata.remaining_item_count, Some(1));
    let token = page.metadata.continue_.clone().expect("continue token");
    let rest = cms
        .list(&ListParams::default().limit(2).continue_token(&token))
        .await
        .expect("next page");
    assert_eq!(
        rest.items
            .iter()
            .map(ResourceExt::name_any)
            .collect::<Vec<_>>(),
        ["pre"]
    );
    let by_field = cms
        .list(&ListParams::default().fields("metadata.name=b"))
        .await
        .expect("field selector");
    assert_eq!(by_field.items.len(), 1);
    assert_eq!(by_field.items[0].name_any(), "b");
    let by_label = cms
        .list(&ListParams::default().labels("patched=yes"))
        .await
        .expect("label selector");
    assert_eq!(
        by_label
            .items
            .iter()
            .map(ResourceExt::name_any)
            .collect::<Vec<_>>(),
        ["b"]
    );

    // A strategic merge patch merges a container list by name (a merge patch would replace it).
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let deployment: Deployment = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {"selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [
                    {"name": "app", "image": "app:1"},
                    {"name": "sidecar", "image": "sidecar:1"}]}}}
    }))
    .expect("deployment");
    deployments
        .create(&PostParams::default(), &deployment)
        .await
        .expect("create deployment");
    let patched = deployments
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Strategic(json!({"spec": {"template": {"spec": {"containers": [
                {"name": "app", "image": "app:2"}]}}}})),
        )
        .await
        .expect("strategic patch of a deployment");
    let images: Vec<(String, String)> = patched
        .spec
        .expect("spec")
        .template
        .spec
        .expect("pod spec")
        .containers
        .into_iter()
        .map(|c| (c.name, c.image.unwrap_or_default()))
        .collect();
    assert_eq!(
        images,
        [
            ("app".to_string(), "app:2".to_string()),
            ("sidecar".to_string(), "sidecar:1".to_string())
        ]
    );
    assert_eq!(patched.metadata.generation, Some(2));

    // A watch from a compacted revision: the client sees the 410 it relists on.
    let old = all.metadata.resource_version.clone().expect("list rv");
    cms.create(&PostParams::default(), &configmap("later", "1"))
        .await
        .expect("create later");
    let current = store.current_revision().await.expect("revision");
    store.compact(current).await.expect("compact");
    let events: Vec<WatchEvent<ConfigMap>> = cms
        .watch(&WatchParams::default().timeout(2), &old)
        .await
        .expect("watch starts")
        .try_collect()
        .await
        .expect("watch stream");
    match events.as_slice() {
        [WatchEvent::Error(status)] => {
            assert_eq!(status.code, 410, "{status:?}");
            assert_eq!(status.reason, "Expired");
        }
        other => panic!("expected one 410 event, got {other:?}"),
    }
    // The reflectors relist or resume and still converge.
    want.insert("later".into(), "1".into());
    converges(&listed, &want, "after compaction (list+watch)").await;
    converges(&streamed, &want, "after compaction (streaming)").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_rs_server_side_apply_creates_conflicts_and_forces() {
    let server = TestApiServer::start().await;
    let client = client(&server).await;
    let deployments: Api<Deployment> = Api::namespaced(client, "default");
    let desired = |replicas: i32, image: &str| {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "applied"},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "applied"}},
                "template": {"metadata": {"labels": {"app": "applied"}},
                    "spec": {"containers": [{"name": "app", "image": image}]}}}
        })
    };
    // Apply creates, and records the manager as the owner of what it applied.
    let created = deployments
        .patch(
            "applied",
            &PatchParams::apply("rust-operator"),
            &Patch::Apply(desired(2, "app:1")),
        )
        .await
        .expect("apply creates");
    assert_eq!(created.spec.as_ref().and_then(|s| s.replicas), Some(2));
    let managers: Vec<(String, String)> = created
        .metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .map(|m| {
            (
                m.manager.unwrap_or_default(),
                m.operation.unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        managers,
        [("rust-operator".to_string(), "Apply".to_string())]
    );
    // Another manager changing an owned field conflicts ...
    let conflict = deployments
        .patch(
            "applied",
            &PatchParams::apply("someone-else"),
            &Patch::Apply(desired(5, "app:1")),
        )
        .await
        .expect_err("a conflicting apply is refused");
    match conflict {
        kube::Error::Api(status) => {
            assert_eq!(status.code, 409, "{status:?}");
            assert!(
                status.message.contains("conflict with \"rust-operator\"")
                    && status.message.contains(".spec.replicas"),
                "{}",
                status.message
            );
        }
        other => panic!("expected a 409, got {other:?}"),
    }
    // ... until it forces, and takes the field over.
    let forced = deployments
        .patch(
            "applied",
            &PatchParams::apply("someone-else").force(),
            &Patch::Apply(desired(5, "app:1")),
        )
        .await
        .expect("a forced apply wins");
    assert_eq!(forced.spec.as_ref().and_then(|s| s.replicas), Some(5));
    // The first manager re-applying without replicas leaves them to their new owner; the
    // image both applied stays shared (changing it now would conflict with "someone-else").
    let again = deployments
        .patch(
            "applied",
            &PatchParams::apply("rust-operator"),
            &Patch::Apply(json!({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "applied"},
                "spec": {"selector": {"matchLabels": {"app": "applied"}},
                    "template": {"metadata": {"labels": {"app": "applied"}},
                        "spec": {"containers": [{"name": "app", "image": "app:1"}]}}}
            })),
        )
        .await
        .expect("re-apply");
    assert_eq!(again.spec.as_ref().and_then(|s| s.replicas), Some(5));
    let owners_of_replicas: Vec<String> = again
        .metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .filter(|m| {
            m.fields_v1
                .as_ref()
                .is_some_and(|f| f.0.pointer("/f:spec/f:replicas").is_some())
        })
        .filter_map(|m| m.manager)
        .collect();
    assert_eq!(owners_of_replicas, ["someone-else"]);
}
