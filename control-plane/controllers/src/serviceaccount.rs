//! The serviceaccount controller: every active namespace has a `default` ServiceAccount
//! (upstream's `managedServiceAccounts`). Terminating namespaces are left alone. The planner
//! is [`plan`]; [`controller`] wires it to the runtime, keyed by namespace name and
//! triggered by namespace changes and ServiceAccount changes (a deleted `default` comes back).

use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::runtime::watcher;
use kube::{Api, ResourceExt};

use crate::action::Action;
use crate::runtime::manager::ControllerOptions;
use crate::runtime::{Controller, ObjectKey, Plan, Watches};

/// The ServiceAccounts every namespace gets.
pub const MANAGED_SERVICE_ACCOUNTS: &[&str] = &["default"];

fn is_terminating(namespace: &Namespace) -> bool {
    namespace.metadata.deletion_timestamp.is_some()
        || namespace
            .status
            .as_ref()
            .and_then(|s| s.phase.as_deref())
            .is_some_and(|phase| phase == "Terminating")
}

/// The creates that give `namespace` its managed ServiceAccounts, given the
/// `service_accounts` observed in it.
pub fn plan(namespace: &Namespace, service_accounts: &[ServiceAccount]) -> Vec<Action> {
    let Some(ns_name) = namespace.metadata.name.as_deref() else {
        return Vec::new();
    };
    if is_terminating(namespace) {
        return Vec::new();
    }
    MANAGED_SERVICE_ACCOUNTS
        .iter()
        .filter(|wanted| {
            !service_accounts.iter().any(|sa| {
                sa.metadata.name.as_deref() == Some(**wanted)
                    && sa.metadata.namespace.as_deref() == Some(ns_name)
            })
        })
        .map(|wanted| {
            Action::create(&ServiceAccount {
                metadata: ObjectMeta {
                    name: Some((*wanted).to_string()),
                    namespace: Some(ns_name.to_string()),
                    ..ObjectMeta::default()
                },
                ..ServiceAccount::default()
            })
        })
        .collect()
}

/// The controller: one key per namespace (it reads no options).
pub fn controller(client: &kube::Client, _options: &ControllerOptions) -> Controller {
    let mut watches = Watches::new(client.clone());
    let namespaces = watches.watch(
        Api::<Namespace>::all(client.clone()),
        watcher::Config::default(),
        |ns| vec![ObjectKey::cluster(ns.name_any())],
    );
    let service_accounts = watches.watch(
        Api::<ServiceAccount>::all(client.clone()),
        watcher::Config::default(),
        |sa| sa.namespace().map(ObjectKey::cluster).into_iter().collect(),
    );
    Controller::new("serviceaccount", watches, move |key| {
        let Some(namespace) = namespaces.get(&key.store_ref()) else {
            return Plan::default();
        };
        let in_namespace: Vec<ServiceAccount> = service_accounts
            .state()
            .iter()
            .filter(|sa| sa.metadata.namespace.as_deref() == Some(key.name.as_str()))
            .map(|sa| (**sa).clone())
            .collect();
        plan(&namespace, &in_namespace).into()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::NamespaceStatus;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::jiff::Timestamp;

    fn namespace(name: &str, phase: Option<&str>, deleting: bool) -> Namespace {
        Namespace {
            metadata: ObjectMeta {
                name: Some(name.into()),
                deletion_timestamp: deleting.then_some(Time(Timestamp::UNIX_EPOCH)),
                ..ObjectMeta::default()
            },
            status: Some(NamespaceStatus {
                phase: phase.map(String::from),
                ..NamespaceStatus::default()
            }),
            ..Namespace::default()
        }
    }

    fn sa(namespace: &str, name: &str) -> ServiceAccount {
        ServiceAccount {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(namespace.into()),
                ..ObjectMeta::default()
            },
            ..ServiceAccount::default()
        }
    }

    /// (namespace, name) of a created ServiceAccount.
    type Created = (String, String);

    /// Every ServiceAccount the plan creates.
    fn creates(actions: &[Action]) -> Vec<Created> {
        actions
            .iter()
            .map(|action| {
                let Action::Create { target, body } = action else {
                    panic!("only creates: {action:?}");
                };
                assert_eq!(target.kind, "ServiceAccount");
                assert_eq!(body["apiVersion"], "v1");
                (
                    target.namespace.clone().unwrap_or_default(),
                    target.name.clone(),
                )
            })
            .collect()
    }

    #[test]
    fn default_service_account_is_created_only_where_missing_in_active_namespaces() {
        let want_default = vec![("team".to_string(), "default".to_string())];
        let cases: Vec<(&str, Namespace, Vec<ServiceAccount>, Vec<Created>)> = vec![
            (
                "active, none yet",
                namespace("team", Some("Active"), false),
                vec![],
                want_default.clone(),
            ),
            (
                "no phase yet (just created)",
                namespace("team", None, false),
                vec![],
                want_default.clone(),
            ),
            (
                "other accounts do not count",
                namespace("team", Some("Active"), false),
                vec![sa("team", "builder"), sa("other", "default")],
                want_default,
            ),
            (
                "already there",
                namespace("team", Some("Active"), false),
                vec![sa("team", "default")],
                vec![],
            ),
            (
                "terminating phase",
                namespace("team", Some("Terminating"), false),
                vec![],
                vec![],
            ),
            (
                "deletion timestamp set",
                namespace("team", Some("Active"), true),
                vec![],
                vec![],
            ),
        ];
        for (name, ns, accounts, want) in cases {
            assert_eq!(creates(&plan(&ns, &accounts)), want, "{name}");
        }
    }
}
