//! Server-side apply (`PATCH` with `application/apply-patch+yaml`) and the managedFields
//! bookkeeping of the other writes: the option checks upstream makes (`fieldManager`
//! required for apply, `force` only for apply), the apply itself (create when missing), and
//! [`Tracking`], which the write paths call to record `Update` entries. The field-set logic
//! lives in [`crate::apiserver::managed`].

use serde_json::{Value, json};

use super::object::{meta_mut, meta_str, now_rfc3339};
use super::write::{BodySource, WriteParams, WriteResult, admit_body, separate_status};
use super::{Registry, Target, store_error};
use crate::apiserver::catalog::ResourceDef;
use crate::apiserver::errors::{ApiError, Cause};
use crate::apiserver::http_util::decode_yaml;
use crate::apiserver::managed::{self, FIELD_MANAGER_MAX_LENGTH, Scope};
use crate::apiserver::patch::PatchType;

/// How many times an apply that races with a create or an update starts over.
const MAX_ATTEMPTS: usize = 4;

/// Who a write records in managedFields, and through which subresource.
#[derive(Debug, Clone)]
pub struct Tracking {
    pub manager: String,
    pub subresource: String,
}

impl Tracking {
    /// The tracking of a write with `params` on `target`; `None` when the write has no
    /// manager (internal writes with neither a `fieldManager` nor a User-Agent).
    pub fn of(params: &WriteParams, subresource: Option<&str>) -> Option<Tracking> {
        Some(Tracking {
            manager: params.manager()?,
            subresource: subresource.unwrap_or_default().to_string(),
        })
    }

    /// Records the write of `new` over `live` (`None` on create) as an `Update`.
    pub fn record(&self, def: &ResourceDef, live: Option<&Value>, new: &mut Value) {
        let api_version = def.api_version();
        let scope = Scope {
            manager: &self.manager,
            api_version: &api_version,
            subresource: &self.subresource,
            has_status: def.has_subresource("status"),
        };
        let now = now_rfc3339();
        managed::with_shape(&api_version, &def.kind, def.managed_schema(), |shape| {
            managed::track_update(live, new, &scope, shape, &now)
        });
    }
}

impl WriteParams {
    /// The field manager: the `fieldManager` parameter, else derived from the User-Agent.
    pub fn manager(&self) -> Option<String> {
        match (&self.field_manager, &self.user_agent) {
            (Some(m), _) if !m.is_empty() => Some(m.clone()),
            (_, Some(ua)) => Some(managed::manager_from_user_agent(ua)),
            _ => None,
        }
    }
}

/// `PatchOptions.meta.k8s.io "" is invalid: ...` with its causes.
fn invalid_options(kind: &str, causes: Vec<Cause>) -> ApiError {
    let summaries: Vec<String> = causes
        .iter()
        .map(|c| format!("{}: {}", c.field, c.message))
        .collect();
    let list = if summaries.len() == 1 {
        summaries[0].clone()
    } else {
        format!("[{}]", summaries.join(", "))
    };
    let mut error = ApiError::new(
        422,
        "Invalid",
        format!("{kind}.meta.k8s.io \"\" is invalid: {list}"),
    );
    error.details.kind = Some(kind.to_string());
    error.details.group = Some("meta.k8s.io".to_string());
    error.details.name = Some(String::new());
    error.details.causes = causes;
    error
}

/// Upstream's `ValidateFieldManager` causes.
fn field_manager_causes(params: &WriteParams) -> Vec<Cause> {
    let mut causes = Vec::new();
    if let Some(manager) = &params.field_manager {
        if manager.len() > FIELD_MANAGER_MAX_LENGTH {
            causes.push(Cause {
                reason: "FieldValueTooLong",
                message: format!("Too long: may not be more than {FIELD_MANAGER_MAX_LENGTH} bytes"),
                field: "fieldManager".into(),
            });
        }
        if manager.chars().any(char::is_control) {
            causes.push(Cause::invalid(
                "fieldManager",
                &json!(manager),
                "invalid characters",
            ));
        }
    }
    causes
}

/// Checks the options of a create or an update (`fieldManager`).
pub fn validate_write_options(kind: &str, params: &WriteParams) -> Result<(), ApiError> {
    let causes = field_manager_causes(params);
    if causes.is_empty() {
        Ok(())
    } else {
        Err(invalid_options(kind, causes))
    }
}

/// Checks the options of a patch (upstream `ValidatePatchOptions`).
pub fn validate_patch_options(patch_type: PatchType, params: &WriteParams) -> Result<(), ApiError> {
    let mut causes = Vec::new();
    if patch_type == PatchType::Apply {
        if params
            .field_manager
            .as_deref()
            .unwrap_or_default()
            .is_empty()
        {
            causes.push(Cause {
                reason: "FieldValueRequired",
                message: "Required value: is required for apply patch".into(),
                field: "fieldManager".into(),
            });
        }
    } else if params.force.is_some() {
        causes.push(Cause::forbidden(
            "force",
            "may not be specified for non-apply patch",
        ));
    }
    causes.extend(field_manager_causes(params));
    if causes.is_empty() {
        Ok(())
    } else {
        Err(invalid_options("PatchOptions", causes))
    }
}

/// Rejects an apply configuration of a built-in kind with fields its schema does not
/// declare, as upstream's typed conversion does (there a 500; a 400 here, since the request is
/// at fault). Custom resources are pruned by their schema instead.
fn check_declared(def: &ResourceDef, config: &Value) -> Result<(), ApiError> {
    if def.custom.is_some() {
        return Ok(());
    }
    let api_version = def.api_version();
    let undeclared = managed::with_shape(&api_version, &def.kind, None, |shape| {
        managed::typed::undeclared_fields(config, shape)
    });
    if undeclared.is_empty() {
        return Ok(());
    }
    let errors: Vec<String> = undeclared
        .iter()
        .map(|path| format!("{path}: field not declared in schema"))
        .collect();
    let errors = match errors.as_slice() {
        [one] => one.clone(),
        many => format!("errors:\n  {}", many.join("\n  ")),
    };
    let gv = if def.group.is_empty() {
        format!("/{}", def.version)
    } else {
        api_version
    };
    Err(ApiError::bad_request(format!(
        "failed to create typed patch object ({}/{}; {gv}, Kind={}): {errors}",
        meta_str(config, "namespace").unwrap_or_default(),
        meta_str(config, "name").unwrap_or_default(),
        def.kind
    )))
}

/// Checks an apply configuration against the request: an object of the resource's group,
/// version and kind, without managedFields, named as the URL (the name is filled in when
/// absent).
fn admit_config(target: &Target, body: &[u8]) -> Result<Value, ApiError> {
    let def = &target.def;
    let mut config = decode_yaml(body)?;
    if !config.is_object() {
        return Err(ApiError::bad_request(
            "error decoding YAML: the apply configuration must be an object",
        ));
    }
    let text = |k: &str| config.get(k).and_then(Value::as_str).unwrap_or_default();
    if text("apiVersion") != def.api_version() || text("kind") != def.kind {
        let (group, version) = match text("apiVersion").rsplit_once('/') {
            Some((g, v)) => (g.to_string(), v.to_string()),
            None => (String::new(), text("apiVersion").to_string()),
        };
        return Err(ApiError::bad_request(format!(
            "invalid object type: {group}/{version}, Kind={}",
            text("kind")
        )));
    }
    if config
        .pointer("/metadata/managedFields")
        .is_some_and(|m| !m.is_null())
    {
        return Err(ApiError::bad_request("metadata.managedFields must be nil"));
    }
    match meta_str(&config, "name") {
        Some(name) if name != target.name() => {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({name}) does not match the name on the URL ({})",
                target.name()
            )));
        }
        Some(_) => {}
        None => {
            if !config.get("metadata").is_some_and(Value::is_object) {
                config["metadata"] = json!({});
            }
            config["metadata"]["name"] = json!(target.name());
        }
    }
    Ok(config)
}

impl Registry {
    /// Server-side apply of the configuration `body` (YAML or JSON) to `target`, creating the
    /// object when it does not exist (201).
    pub async fn apply(
        &self,
        target: &Target,
        body: &[u8],
        params: &WriteParams,
    ) -> Result<WriteResult, ApiError> {
        validate_patch_options(PatchType::Apply, params)?;
        let config = admit_config(target, body)?;
        check_declared(&target.def, &config)?;
        let def = target.def.clone();
        let api_version = def.api_version();
        let subresource = target.subresource.clone().unwrap_or_default();
        let manager = params.field_manager.clone().unwrap_or_default();
        let scope = Scope {
            manager: &manager,
            api_version: &api_version,
            subresource: &subresource,
            has_status: def.has_subresource("status"),
        };
        let force = params.force.unwrap_or(false);
        let run = |live: Option<&Value>| {
            let now = now_rfc3339();
            managed::with_shape(&api_version, &def.kind, def.managed_schema(), |shape| {
                managed::apply(live, &config, &scope, shape, force, &now)
            })
        };
        for _ in 0..MAX_ATTEMPTS {
            let exists = self
                .store()
                .get(&target.key())
                .await
                .map_err(|e| store_error(target, e))?
                .is_some();
            if !exists {
                if target.subresource.is_some() {
                    return Err(target.not_found());
                }
                let merged = run(None)?;
                match self.create_with(target, merged, params, None).await {
                    Err(e) if e.reason == "AlreadyExists" => continue,
                    other => return other,
                }
            }
            let warnings = std::sync::Mutex::new(Vec::new());
            let status_only = subresource == "status";
            let result = self
                .guaranteed_update_tracked(target, None, params.dry_run, None, |current| {
                    let merged = run(Some(current))?;
                    let wanted = merged.pointer("/metadata/resourceVersion");
                    if wanted
                        .is_some_and(|rv| Some(rv) != current.pointer("/metadata/resourceVersion"))
                    {
                        return Err(ApiError::modified(&def.group, &def.plural, target.name()));
                    }
                    let (admitted, unknown) =
                        admit_body(target, merged, params.field_validation, BodySource::Patched)?;
                    if let Ok(mut w) = warnings.lock() {
                        *w = unknown;
                    }
                    let managed = admitted.pointer("/metadata/managedFields").cloned();
                    let mut next = separate_status(
                        current,
                        admitted,
                        status_only,
                        def.has_subresource("status"),
                    );
                    // A status write keeps the stored metadata, but not its managedFields.
                    let meta = meta_mut(&mut next);
                    match managed {
                        Some(managed) => meta.insert("managedFields".into(), managed),
                        None => meta.remove("managedFields"),
                    };
                    Ok(next)
                })
                .await;
            match result {
                Err(e) if e.code == 404 => continue,
                Err(e) => return Err(e),
                Ok(mut result) => {
                    result.warnings = warnings.into_inner().unwrap_or_default();
                    return Ok(result);
                }
            }
        }
        Err(ApiError::conflict(
            &def.group,
            &def.plural,
            target.name(),
            "too many concurrent updates, please retry",
        ))
    }
}
