//! The root-ca-cert-publisher controller: every active namespace holds the ConfigMap
//! `kube-root-ca.crt` with the cluster CA bundle under `ca.crt`, which the projected
//! `kube-api-access` volumes of pods read to verify the apiserver. A deleted or edited copy is
//! put back. The bundle is the `--root-ca-file` (in `kwk-control-plane all`: the PKI's
//! `ca.crt`); without one the controller publishes nothing. [`plan`] is pure.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::runtime::watcher;
use kube::{Api, ResourceExt};

use crate::action::Action;
use crate::runtime::manager::ControllerOptions;
use crate::runtime::{Controller, ObjectKey, Plan, Watches};

/// The ConfigMap's name, in every namespace.
pub const CONFIG_MAP: &str = "kube-root-ca.crt";
/// The key the bundle is stored under.
pub const CA_KEY: &str = "ca.crt";
/// The annotation upstream sets on the ConfigMap.
const DESCRIPTION_KEY: &str = "kubernetes.io/description";
const DESCRIPTION: &str = "Contains a CA bundle that can be used to verify the kube-apiserver \
     when using internal endpoints such as the internal service IP or kubernetes.default.svc. \
     No other usage is guaranteed across distributions of Kubernetes clusters.";

fn is_terminating(namespace: &Namespace) -> bool {
    namespace.metadata.deletion_timestamp.is_some()
        || namespace
            .status
            .as_ref()
            .and_then(|s| s.phase.as_deref())
            .is_some_and(|phase| phase == "Terminating")
}

/// The create or update that gives `namespace` its `kube-root-ca.crt` holding `bundle`, given
/// the `existing` copy.
pub fn plan(namespace: &Namespace, existing: Option<&ConfigMap>, bundle: &str) -> Vec<Action> {
    let Some(ns_name) = namespace.metadata.name.as_deref() else {
        return Vec::new();
    };
    if is_terminating(namespace) {
        return Vec::new();
    }
    let data = BTreeMap::from([(CA_KEY.to_string(), bundle.to_string())]);
    let description = |metadata: &mut ObjectMeta| {
        metadata
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .insert(DESCRIPTION_KEY.to_string(), DESCRIPTION.to_string());
    };
    match existing {
        None => {
            let mut metadata = ObjectMeta {
                name: Some(CONFIG_MAP.to_string()),
                namespace: Some(ns_name.to_string()),
                ..ObjectMeta::default()
            };
            description(&mut metadata);
            vec![Action::create(&ConfigMap {
                metadata,
                data: Some(data),
                ..ConfigMap::default()
            })]
        }
        Some(current) => {
            let described = current
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(DESCRIPTION_KEY))
                .is_some_and(|d| d == DESCRIPTION);
            let current_data = current.data.clone().unwrap_or_default();
            let binary = current.binary_data.as_ref().is_some_and(|b| !b.is_empty());
            if current_data == data && !binary && described {
                return Vec::new();
            }
            let mut fixed = current.clone();
            description(&mut fixed.metadata);
            fixed.data = Some(data);
            fixed.binary_data = None;
            vec![Action::update(&fixed)]
        }
    }
}

/// The controller: one key per namespace.
pub fn controller(client: &kube::Client, options: &ControllerOptions) -> Controller {
    let bundle = match &options.root_ca_file {
        Some(path) => match std::fs::read_to_string(path) {
            Ok(pem) if pem.contains("-----BEGIN CERTIFICATE-----") => Some(pem),
            Ok(_) => {
                tracing::warn!(path = %path.display(), "--root-ca-file holds no PEM certificate; {CONFIG_MAP} is not published");
                None
            }
            Err(err) => {
                tracing::warn!(path = %path.display(), %err, "--root-ca-file unreadable; {CONFIG_MAP} is not published");
                None
            }
        },
        None => None,
    };
    let mut watches = Watches::new(client.clone());
    let namespaces = watches.watch(
        Api::<Namespace>::all(client.clone()),
        watcher::Config::default(),
        |ns| vec![ObjectKey::cluster(ns.name_any())],
    );
    let config_maps = watches.watch(
        Api::<ConfigMap>::all(client.clone()),
        watcher::Config::default().fields(&format!("metadata.name={CONFIG_MAP}")),
        |cm| cm.namespace().map(ObjectKey::cluster).into_iter().collect(),
    );
    Controller::new("root-ca-cert-publisher", watches, move |key| {
        let (Some(bundle), Some(namespace)) = (&bundle, namespaces.get(&key.store_ref())) else {
            return Plan::default();
        };
        let existing = config_maps
            .state()
            .into_iter()
            .find(|cm| cm.metadata.namespace.as_deref() == Some(key.name.as_str()));
        plan(&namespace, existing.as_deref(), bundle).into()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;
    use k8s_openapi::api::core::v1::NamespaceStatus;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::jiff::Timestamp;

    const PEM: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

    fn namespace(phase: Option<&str>, deleting: bool) -> Namespace {
        Namespace {
            metadata: ObjectMeta {
                name: Some("team".into()),
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

    fn published(ca: &str) -> ConfigMap {
        let Action::Create { body, .. } = &plan(&namespace(None, false), None, ca)[0] else {
            panic!("a create");
        };
        serde_json::from_value(body.clone()).expect("a ConfigMap")
    }

    /// "create", "update" or "" per plan, and the ConfigMap it writes.
    fn outcome(actions: &[Action]) -> (&'static str, Option<ConfigMap>) {
        match actions {
            [] => ("", None),
            [Action::Create { target, body }] | [Action::Update { target, body }] => {
                assert_eq!(target.kind, "ConfigMap");
                assert_eq!(target.name, CONFIG_MAP);
                assert_eq!(target.namespace.as_deref(), Some("team"));
                let verb = if matches!(actions[0], Action::Create { .. }) {
                    "create"
                } else {
                    "update"
                };
                (verb, Some(serde_json::from_value(body.clone()).unwrap()))
            }
            other => panic!("one action at most: {other:?}"),
        }
    }

    #[test]
    fn the_bundle_is_published_and_kept_in_every_active_namespace() {
        let current = published(PEM);
        let mut edited = current.clone();
        edited.data = Some(BTreeMap::from([(CA_KEY.into(), "tampered".into())]));
        let mut extra = current.clone();
        extra.binary_data = Some(BTreeMap::from([("x".into(), ByteString(vec![1]))]));
        let mut undescribed = current.clone();
        undescribed.metadata.annotations = None;
        let active = namespace(Some("Active"), false);
        let cases = [
            ("missing", active.clone(), None, "create"),
            ("up to date", active.clone(), Some(&current), ""),
            ("edited", active.clone(), Some(&edited), "update"),
            ("binary data added", active.clone(), Some(&extra), "update"),
            ("annotation gone", active, Some(&undescribed), "update"),
            (
                "terminating",
                namespace(Some("Terminating"), false),
                None,
                "",
            ),
            ("being deleted", namespace(Some("Active"), true), None, ""),
        ];
        for (name, ns, existing, want) in cases {
            let (verb, written) = outcome(&plan(&ns, existing, PEM));
            assert_eq!(verb, want, "{name}");
            if let Some(written) = written {
                assert_eq!(written.data.unwrap()[CA_KEY], PEM, "{name}");
                assert!(written.binary_data.is_none(), "{name}");
                assert_eq!(
                    written.metadata.annotations.unwrap()[DESCRIPTION_KEY],
                    DESCRIPTION,
                    "{name}"
                );
            }
        }
    }
}
