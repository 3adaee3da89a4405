//! Upstream's Priority admission plugin over the store: a new pod's priority resolved from
//! the stored PriorityClass it names (or the `globalDefault` class), refusing unknown classes
//! (the pure rules are `kinds::pod::admit_pod_priority`); at most one `globalDefault`
//! PriorityClass; and the system classes every cluster serves, created at start-up.

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::scheduling::v1::PriorityClass;
use serde_json::Value;

use super::object::decode_stored;
use super::read::ListParams;
use super::write::WriteParams;
use super::{Registry, Target};
use crate::apiserver::catalog::ResourceDef;
use crate::apiserver::errors::{ApiError, qualified};
use crate::apiserver::kinds::pod::{
    SYSTEM_PRIORITY_CLASSES, admit_pod_priority, named_priority_class, system_priority_classes,
};

impl Registry {
    /// Priority admission of a create: a pod gets its priority (see `admit_pod_priority`), a
    /// PriorityClass marked `globalDefault` is refused while another class is the default.
    /// `shown_name` names the object in errors (the `generateName` prefix for generated names,
    /// as upstream). Other kinds pass.
    pub(super) async fn admit_priority_on_create(
        &self,
        target: &Target,
        object: &mut Value,
        shown_name: &str,
    ) -> Result<(), ApiError> {
        let def = &target.def;
        if is_pods(def) && target.subresource.is_none() {
            let Ok(mut pod) = serde_json::from_value::<Pod>(object.clone()) else {
                return Ok(());
            };
            let class = match named_priority_class(&pod) {
                Some(name) => self.stored_priority_class(name).await?,
                None => self.default_priority_class().await?,
            };
            admit_pod_priority(&mut pod, class.as_ref())
                .map_err(|reason| admission_forbidden(def, shown_name, &reason.to_string()))?;
            *object = serde_json::to_value(&pod)
                .map_err(|e| ApiError::internal(format!("encoding the pod: {e}")))?;
        } else if is_priority_classes(def) {
            self.admit_global_default(def, object, shown_name, false)
                .await?;
        }
        Ok(())
    }

    /// Priority admission of an update: a PriorityClass may become `globalDefault` only while
    /// no other class is the default.
    pub(super) async fn admit_priority_on_update(
        &self,
        target: &Target,
        object: &Value,
    ) -> Result<(), ApiError> {
        if is_priority_classes(&target.def) && target.subresource.is_none() {
            self.admit_global_default(&target.def, object, target.name(), true)
                .await?;
        }
        Ok(())
    }

    async fn admit_global_default(
        &self,
        def: &ResourceDef,
        class: &Value,
        shown_name: &str,
        update: bool,
    ) -> Result<(), ApiError> {
        if class.get("globalDefault").and_then(Value::as_bool) != Some(true) {
            return Ok(());
        }
        let Some(default) = self.default_priority_class().await? else {
            return Ok(());
        };
        let default_name = default.metadata.name.unwrap_or_default();
        if update && default_name == shown_name {
            return Ok(());
        }
        Err(admission_forbidden(
            def,
            shown_name,
            &format!(
                "PriorityClass {default_name} is already marked as default. Only one default can \
                 exist"
            ),
        ))
    }

    /// The stored PriorityClass `name`; a system class not (yet) stored resolves to its
    /// built-in form.
    async fn stored_priority_class(&self, name: &str) -> Result<Option<PriorityClass>, ApiError> {
        let target = self.priority_classes(Some(name))?;
        let stored = match self.store().get(&target.key()).await {
            Ok(Some(kv)) => Some(decode_class(&decode_stored(&kv)?)?),
            Ok(None) => None,
            Err(e) => {
                return Err(ApiError::internal(format!(
                    "failed to get PriorityClass with name {name}: {e}"
                )));
            }
        };
        Ok(stored.or_else(|| {
            system_priority_classes()
                .into_iter()
                .find(|c| c.metadata.name.as_deref() == Some(name))
        }))
    }

    /// The `globalDefault` class; of several (a race), the one with the lowest value.
    async fn default_priority_class(&self) -> Result<Option<PriorityClass>, ApiError> {
        let target = self.priority_classes(None)?;
        let list = self.list_raw(&target, &ListParams::default()).await?;
        let mut default: Option<PriorityClass> = None;
        for kv in &list.items {
            let class = decode_class(&decode_stored(kv)?)?;
            if class.global_default == Some(true)
                && default.as_ref().is_none_or(|d| d.value > class.value)
            {
                default = Some(class);
            }
        }
        Ok(default)
    }

    fn priority_classes(&self, name: Option<&str>) -> Result<Target, ApiError> {
        let def = self
            .catalog()
            .lookup("scheduling.k8s.io", "v1", "priorityclasses")
            .cloned()
            .ok_or_else(|| ApiError::internal("priorityclasses are not served"))?;
        Ok(Target {
            def,
            namespace: None,
            name: name.map(str::to_string),
            subresource: None,
        })
    }
}

/// Creates `system-node-critical` and `system-cluster-critical` when they are missing, as
/// upstream's apiserver does at start-up.
pub async fn bootstrap_system_priority_classes(registry: &Registry) -> Result<(), ApiError> {
    debug_assert_eq!(
        SYSTEM_PRIORITY_CLASSES.len(),
        system_priority_classes().len()
    );
    for class in system_priority_classes() {
        let target = registry.priority_classes(None)?;
        let mut body = serde_json::to_value(&class)
            .map_err(|e| ApiError::internal(format!("encoding a system class: {e}")))?;
        if let Some(map) = body.as_object_mut() {
            map.insert("apiVersion".into(), "scheduling.k8s.io/v1".into());
            map.insert("kind".into(), "PriorityClass".into());
        }
        match registry
            .create(&target, body, &WriteParams::default())
            .await
        {
            Ok(_) => {}
            Err(e) if e.code == 409 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn decode_class(object: &Value) -> Result<PriorityClass, ApiError> {
    serde_json::from_value(object.clone())
        .map_err(|e| ApiError::internal(format!("decoding a stored PriorityClass: {e}")))
}

fn is_pods(def: &ResourceDef) -> bool {
    def.group.is_empty() && def.plural == "pods"
}

fn is_priority_classes(def: &ResourceDef) -> bool {
    def.group == "scheduling.k8s.io" && def.plural == "priorityclasses"
}

/// An admission plugin's refusal: `pods "name" is forbidden: reason` (403).
pub(super) fn admission_forbidden(def: &ResourceDef, name: &str, reason: &str) -> ApiError {
    let mut error = ApiError::forbidden(format!(
        "{} \"{name}\" is forbidden: {reason}",
        qualified(&def.group, &def.plural)
    ));
    error.details.name = Some(name.to_string()).filter(|n| !n.is_empty());
    error.details.group = Some(def.group.clone()).filter(|g| !g.is_empty());
    error.details.kind = Some(def.plural.clone());
    error
}
