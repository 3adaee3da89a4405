//! The namespace controller wired to the runtime: one key per namespace, queued by
//! namespace changes. A namespace being deleted needs what no watch cache holds — every
//! object left in it, of every namespaced kind the apiserver serves — so its key starts a
//! **deletion pass** in the background (discovery, a list of each deletable kind, then
//! [`super::plan`] and its actions) and comes back every [`POLL`] while the namespace
//! exists; a pass starts only when the previous one has finished and the planner's
//! `requeue_after` has passed. The runtime's reconcile function cannot do I/O, hence the
//! spawned pass.
//!
//! The planner asks for the `kubernetes` finalizer's removal as a patch of the `finalize`
//! subresource; the apiserver (like upstream) only accepts a PUT there, so the pass performs
//! that one itself: it reads the namespace and replaces `spec.finalizers` through
//! `PUT /api/v1/namespaces/{name}/finalize`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, DynamicObject, ListParams, PostParams};
use kube::core::ApiResource;
use kube::discovery::{ApiCapabilities, Discovery, Scope, verbs};
use kube::runtime::watcher;
use serde_json::Value;
use tokio::time::Instant;

use super::{Content, Observed};
use crate::action::{Action, ObjectRef};
use crate::runtime::manager::ControllerOptions;
use crate::runtime::{Controller, ObjectKey, Plan, Watches, execute};

/// How often a terminating namespace's key comes back.
pub const POLL: Duration = Duration::from_secs(1);
/// At most this many plan-and-execute rounds in one pass: pods go first, the rest after,
/// then the finalizer — each round sees what the previous one deleted.
const ROUNDS_PER_PASS: usize = 3;

/// The controller (it reads no options).
pub fn controller(client: &kube::Client, _options: &ControllerOptions) -> Controller {
    let mut watches = Watches::new(client.clone());
    let namespaces = watches.watch(
        Api::<Namespace>::all(client.clone()),
        watcher::Config::default(),
        |ns| vec![ObjectKey::cluster(ns.name_any())],
    );
    let deleter = Arc::new(Deleter {
        client: client.clone(),
        passes: Mutex::new(HashMap::new()),
    });
    Controller::new("namespace", watches, move |key| {
        let terminating = namespaces
            .get(&key.store_ref::<Namespace>())
            .is_some_and(|ns| ns.metadata.deletion_timestamp.is_some());
        if !terminating {
            deleter.forget(&key.name);
            return Plan::default();
        }
        deleter.start_pass(&key.name);
        Plan {
            actions: Vec::new(),
            requeue_after: Some(POLL),
        }
    })
}

/// What the deleter remembers of one terminating namespace.
#[derive(Debug, Default)]
struct PassState {
    running: bool,
    /// The next pass waits until then (the planner's `requeue_after`).
    not_before: Option<Instant>,
    /// The previous pass's failed deletions, for the planner's conditions.
    delete_failures: Vec<String>,
}

/// The outcome of one pass.
struct PassOutcome {
    wait: Duration,
    delete_failures: Vec<String>,
}

struct Deleter {
    client: kube::Client,
    passes: Mutex<HashMap<String, PassState>>,
}

impl Deleter {
    fn forget(&self, name: &str) {
        let mut passes = self.passes.lock().unwrap_or_else(PoisonError::into_inner);
        if passes.get(name).is_some_and(|state| !state.running) {
            passes.remove(name);
        }
    }

    /// Starts a pass over `name` unless one runs or the last one asked to wait.
    fn start_pass(self: &Arc<Self>, name: &str) {
        let failures = {
            let mut passes = self.passes.lock().unwrap_or_else(PoisonError::into_inner);
            let state = passes.entry(name.to_string()).or_default();
            if state.running || state.not_before.is_some_and(|at| Instant::now() < at) {
                return;
            }
            state.running = true;
            state.delete_failures.clone()
        };
        let this = Arc::clone(self);
        let name = name.to_string();
        tokio::spawn(async move {
            let outcome = this.pass(&name, failures).await;
            let mut passes = this.passes.lock().unwrap_or_else(PoisonError::into_inner);
            let state = passes.entry(name).or_default();
            state.running = false;
            state.not_before = Some(Instant::now() + outcome.wait);
            state.delete_failures = outcome.delete_failures;
        });
    }

    /// Discovers, lists, plans and executes, for up to [`ROUNDS_PER_PASS`] rounds.
    async fn pass(&self, name: &str, mut delete_failures: Vec<String>) -> PassOutcome {
        let mut outcome = PassOutcome {
            wait: POLL,
            delete_failures: delete_failures.clone(),
        };
        let namespaces: Api<Namespace> = Api::all(self.client.clone());
        let (kinds, discovery_failures) = deletable_kinds(&self.client).await;
        for _ in 0..ROUNDS_PER_PASS {
            let namespace = match namespaces.get_opt(name).await {
                Ok(Some(ns)) if ns.metadata.deletion_timestamp.is_some() => ns,
                Ok(_) => return outcome,
                Err(err) => {
                    tracing::warn!(namespace = name, "reading the namespace: {err}");
                    return outcome;
                }
            };
            let (content, list_failures) = self.content(name, &kinds).await;
            let mut failures = discovery_failures.clone();
            failures.extend(list_failures);
            let planned = super::plan(
                &namespace,
                &Observed {
                    content: &content,
                    discovery_failures: &failures,
                    delete_failures: &delete_failures,
                },
                Timestamp::now(),
            );
            delete_failures = self.perform(name, &planned.actions).await;
            outcome = PassOutcome {
                wait: planned.requeue_after.unwrap_or(POLL),
                delete_failures: delete_failures.clone(),
            };
            let deleted = planned
                .actions
                .iter()
                .any(|a| matches!(a, Action::Delete { .. }));
            if !deleted {
                break;
            }
        }
        outcome
    }

    /// Everything left in namespace `name`, and the kinds whose list failed.
    async fn content(
        &self,
        name: &str,
        kinds: &[ApiResource],
    ) -> (Vec<Content>, Vec<(String, String)>) {
        let mut content = Vec::new();
        let mut failures = Vec::new();
        for resource in kinds {
            let api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), name, resource);
            match api.list(&ListParams::default()).await {
                Ok(list) => content.extend(
                    list.items
                        .iter()
                        .map(|object| content_of(resource, name, object)),
                ),
                Err(err) => failures.push((resource.api_version.clone(), err.to_string())),
            }
        }
        (content, failures)
    }

    /// Performs `actions` one by one (a failed deletion does not stop the others); the
    /// finalize patch becomes a PUT of the `finalize` subresource. Returns the failed
    /// deletions, as the planner's conditions report them.
    async fn perform(&self, name: &str, actions: &[Action]) -> Vec<String> {
        let mut failures = Vec::new();
        for action in actions {
            match action {
                Action::Patch {
                    subresource: Some(subresource),
                    patch,
                    ..
                } if subresource == "finalize" => {
                    if let Err(err) = self.finalize(name, patch).await {
                        tracing::warn!(namespace = name, "finalizing: {err}");
                    }
                }
                _ => {
                    let Err(err) = execute(&self.client, std::slice::from_ref(action)).await else {
                        continue;
                    };
                    if err.status_code() == Some(404) {
                        continue;
                    }
                    tracing::debug!(namespace = name, "namespace deletion: {err}");
                    if let Action::Delete { target, .. } = action {
                        failures.push(format!(
                            "{}.{}: {err}",
                            target.plural,
                            crate::garbagecollector::group_of(&target.api_version)
                        ));
                    }
                }
            }
        }
        failures
    }

    /// `PUT /api/v1/namespaces/{name}/finalize` with the finalizers `patch` names.
    async fn finalize(&self, name: &str, patch: &Value) -> Result<(), kube::Error> {
        let kept: Vec<String> = patch
            .pointer("/spec/finalizers")
            .and_then(Value::as_array)
            .map(|list| {
                list.iter()
                    .filter_map(|f| f.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        let namespaces: Api<Namespace> = Api::all(self.client.clone());
        let Some(mut namespace) = namespaces.get_opt(name).await? else {
            return Ok(());
        };
        namespace
            .spec
            .get_or_insert_with(Default::default)
            .finalizers = Some(kept);
        namespaces
            .replace_subresource("finalize", name, &PostParams::default(), &namespace)
            .await?;
        Ok(())
    }
}

/// The namespaced kinds that can be listed and deleted (the preferred version of each), and
/// the discovery failures.
async fn deletable_kinds(client: &kube::Client) -> (Vec<ApiResource>, Vec<(String, String)>) {
    let discovery = match Discovery::new(client.clone()).run_aggregated().await {
        Ok(discovery) => Ok(discovery),
        Err(_) => Discovery::new(client.clone()).run().await,
    };
    match discovery {
        Ok(discovery) => {
            let kinds = discovery
                .groups()
                .flat_map(|group| group.recommended_resources())
                .filter(|(_, caps)| is_deletable_namespaced(caps))
                .map(|(resource, _)| resource)
                .collect();
            (kinds, Vec::new())
        }
        Err(err) => (Vec::new(), vec![("discovery".to_string(), err.to_string())]),
    }
}

fn is_deletable_namespaced(caps: &ApiCapabilities) -> bool {
    caps.scope == Scope::Namespaced
        && caps.supports_operation(verbs::LIST)
        && caps.supports_operation(verbs::DELETE)
}

/// The planner's view of one listed object (pods with their grace period).
fn content_of(resource: &ApiResource, namespace: &str, object: &DynamicObject) -> Content {
    if resource.group.is_empty() && resource.kind == "Pod" {
        let pod = serde_json::to_value(object).and_then(serde_json::from_value::<Pod>);
        if let Ok(pod) = pod {
            return Content::of_pod(&pod);
        }
    }
    let target = ObjectRef {
        api_version: resource.api_version.clone(),
        kind: resource.kind.clone(),
        plural: resource.plural.clone(),
        namespace: Some(namespace.to_string()),
        name: object.name_any(),
        uid: object.metadata.uid.clone(),
    };
    Content::from_meta(target, &object.metadata)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::discovery::ApiCapabilities;
    use serde_json::json;

    fn resource(group: &str, version: &str, kind: &str, plural: &str) -> ApiResource {
        let api_version = if group.is_empty() {
            version.to_string()
        } else {
            format!("{group}/{version}")
        };
        ApiResource {
            group: group.into(),
            version: version.into(),
            api_version,
            kind: kind.into(),
            plural: plural.into(),
        }
    }

    fn object(value: serde_json::Value) -> DynamicObject {
        serde_json::from_value(value).expect("dynamic object")
    }

    #[test]
    fn listed_objects_become_content() {
        let pod = object(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web", "namespace": "doomed", "uid": "u1"},
            "spec": {"terminationGracePeriodSeconds": 7, "containers": [{"name": "app"}]},
        }));
        let got = content_of(&resource("", "v1", "Pod", "pods"), "doomed", &pod);
        assert_eq!(got.grace_period_seconds, Some(7), "a running pod's grace");
        assert_eq!(got.target.plural, "pods");

        let held = object(json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "doomed", "uid": "u2",
                         "finalizers": ["example.com/hold"],
                         "deletionTimestamp": "2026-01-01T00:00:00Z"},
        }));
        let got = content_of(
            &resource("apps", "v1", "Deployment", "deployments"),
            "doomed",
            &held,
        );
        assert_eq!(got.target.api_version, "apps/v1");
        assert_eq!(got.target.namespace.as_deref(), Some("doomed"));
        assert_eq!(got.target.uid.as_deref(), Some("u2"));
        assert_eq!(got.finalizers, vec!["example.com/hold".to_string()]);
        assert!(got.deleting);
        assert_eq!(got.grace_period_seconds, None);
    }

    #[test]
    fn only_namespaced_kinds_that_list_and_delete_are_deletable() {
        let caps = |scope: Scope, ops: &[&str]| ApiCapabilities {
            scope,
            subresources: Vec::new(),
            operations: ops.iter().map(|o| o.to_string()).collect(),
        };
        let list_delete = [verbs::LIST, verbs::DELETE];
        assert!(is_deletable_namespaced(&caps(
            Scope::Namespaced,
            &list_delete
        )));
        assert!(!is_deletable_namespaced(&caps(
            Scope::Cluster,
            &list_delete
        )));
        assert!(!is_deletable_namespaced(&caps(
            Scope::Namespaced,
            &[verbs::CREATE]
        )));
        assert!(!is_deletable_namespaced(&caps(
            Scope::Namespaced,
            &[verbs::LIST]
        )));
    }
}
