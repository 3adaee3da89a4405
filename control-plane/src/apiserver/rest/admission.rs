//! The registry's side of the `ServiceAccount`, `TaintNodesByCondition` and
//! `StorageObjectInUseProtection` admission plugins (pure rules in `apiserver::admission`):
//! on pod create, the pod's account looked up in the store — `default` a few more times over
//! ~1.5 s, as upstream, since the serviceaccount controller creates it only after the
//! namespace — and a refusal when it is missing; on node create, the `not-ready` taint; on
//! PersistentVolumeClaim and PersistentVolume create, the protection finalizer. Which
//! plugins run is [`Registry::admission`].

use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod, ServiceAccount};
use serde_json::Value;

use super::object::decode_stored;
use super::priority::admission_forbidden;
use super::{Registry, Target};
use crate::apiserver::admission::service_account::{self as sa, DEFAULT_SERVICE_ACCOUNT};
use crate::apiserver::admission::{
    SERVICE_ACCOUNT, STORAGE_OBJECT_IN_USE_PROTECTION, TAINT_NODES_BY_CONDITION, node_taint,
    storage_protection,
};
use crate::apiserver::catalog::ResourceDef;
use crate::apiserver::errors::ApiError;

/// Attempts at reading the `default` account before refusing (one for other accounts).
const DEFAULT_ACCOUNT_ATTEMPTS: usize = 10;

impl Registry {
    /// The optional admission plugins on a create (before Priority, as upstream orders
    /// them); `shown_name` names the object in refusals.
    pub(super) async fn admit_plugins_on_create(
        &self,
        target: &Target,
        object: &mut Value,
        shown_name: &str,
    ) -> Result<(), ApiError> {
        let def = &target.def;
        if target.subresource.is_some() || !def.group.is_empty() {
            return Ok(());
        }
        if def.plural == "pods" && self.admission().enabled(SERVICE_ACCOUNT) {
            self.admit_service_account(target, object, shown_name)
                .await?;
        } else if def.plural == "nodes" && self.admission().enabled(TAINT_NODES_BY_CONDITION) {
            let Ok(mut node) = serde_json::from_value::<Node>(object.clone()) else {
                return Ok(());
            };
            node_taint::taint_new_node(&mut node);
            *object = encode(&node)?;
        } else if let Some(finalizer) = storage_protection::finalizer_for(&def.plural)
            && self.admission().enabled(STORAGE_OBJECT_IN_USE_PROTECTION)
        {
            storage_protection::add_finalizer(object, finalizer);
        }
        Ok(())
    }

    async fn admit_service_account(
        &self,
        target: &Target,
        object: &mut Value,
        shown_name: &str,
    ) -> Result<(), ApiError> {
        let def = &target.def;
        let Ok(mut pod) = serde_json::from_value::<Pod>(object.clone()) else {
            return Ok(());
        };
        if sa::is_mirror_pod(&pod) {
            return sa::check_mirror_pod(&pod)
                .map_err(|r| admission_forbidden(def, shown_name, &r.to_string()));
        }
        let namespace = target.namespace.clone().unwrap_or_default();
        let name = sa::default_service_account_name(&mut pod);
        let Some(account) = self.service_account(&namespace, &name).await? else {
            return Err(admission_forbidden(
                def,
                shown_name,
                &format!(
                    "error looking up service account {namespace}/{name}: serviceaccount \
                     \"{name}\" not found"
                ),
            ));
        };
        sa::admit(&mut pod, &account, &super::object::random_suffix(5));
        sa::check_mountable_secrets(&pod, &account)
            .map_err(|r| admission_forbidden(def, shown_name, &r.to_string()))?;
        *object = encode(&pod)?;
        Ok(())
    }

    /// The stored ServiceAccount `namespace/name`; `default` is read up to
    /// [`DEFAULT_ACCOUNT_ATTEMPTS`] times 100–200 ms apart.
    async fn service_account(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<ServiceAccount>, ApiError> {
        let def = self
            .catalog()
            .lookup("", "v1", "serviceaccounts")
            .cloned()
            .ok_or_else(|| ApiError::internal("serviceaccounts are not served"))?;
        let key = def.key(Some(namespace), name);
        let attempts = if name == DEFAULT_SERVICE_ACCOUNT {
            DEFAULT_ACCOUNT_ATTEMPTS
        } else {
            1
        };
        let interval = retry_interval();
        for attempt in 0..attempts {
            if attempt > 0 {
                tokio::time::sleep(interval).await;
            }
            match self.store().get(&key).await {
                Ok(Some(kv)) => return decode_account(&def, &decode_stored(&kv)?).map(Some),
                Ok(None) => {}
                Err(e) => {
                    return Err(ApiError::internal(format!(
                        "error looking up service account {namespace}/{name}: {e}"
                    )));
                }
            }
        }
        Ok(None)
    }
}

/// 100 ms plus up to 100 ms of jitter, so pods waiting for one namespace's account do not
/// poll in step.
fn retry_interval() -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    Duration::from_millis(100 + u64::from(nanos % 100))
}

fn decode_account(def: &ResourceDef, object: &Value) -> Result<ServiceAccount, ApiError> {
    serde_json::from_value(object.clone())
        .map_err(|e| ApiError::internal(format!("decoding a stored {}: {e}", def.kind)))
}

fn encode<T: serde::Serialize>(object: &T) -> Result<Value, ApiError> {
    serde_json::to_value(object).map_err(|e| ApiError::internal(format!("encoding: {e}")))
}
