//! CREATE, UPDATE (PUT) and PATCH: body admission (type, namespace, typed decode, unknown
//! fields), system metadata, defaulting and validation, spec/status separation, generation,
//! and optimistic concurrency — a PUT with a stale `resourceVersion` is a 409, a write without
//! one retries on a concurrent change (upstream's `GuaranteedUpdate`). No-op updates write
//! nothing and keep the `resourceVersion`.

use serde_json::{Value, json};

use super::apply::{Tracking, validate_patch_options, validate_write_options};
use super::object::{
    FieldValidation, decode_stored, encode_for_store, finalizers, meta_mut, meta_str, new_uid,
    now_rfc3339, random_suffix, typed_decode,
};
use super::{Registry, Target, parse_revision, store_error};
use crate::apiserver::catalog::ResourceDef;
use crate::apiserver::errors::{ApiError, Cause};
use crate::apiserver::kinds::names;
use crate::apiserver::patch::{PatchError, PatchType, apply_patch, builtin_schema};
use crate::storage::StoreError;

/// How many times a write without a precondition retries after a concurrent change.
const MAX_RETRIES: usize = 16;

/// Options of a write.
#[derive(Debug, Clone)]
pub struct WriteParams {
    pub dry_run: bool,
    pub field_manager: Option<String>,
    pub field_validation: FieldValidation,
    /// `force` (server-side apply only; `None` when not given).
    pub force: Option<bool>,
    /// The request's User-Agent (the field manager when `field_manager` is not given).
    pub user_agent: Option<String>,
}

impl Default for WriteParams {
    fn default() -> Self {
        Self {
            dry_run: false,
            field_manager: None,
            field_validation: FieldValidation::Warn,
            force: None,
            user_agent: None,
        }
    }
}

/// The outcome of a write.
#[derive(Debug, Clone)]
pub struct WriteResult {
    pub object: Value,
    /// `Warning` headers for the client (e.g. unknown fields with `fieldValidation=Warn`).
    pub warnings: Vec<String>,
    /// Whether the object was created (201) rather than updated (200).
    pub created: bool,
}

/// A PATCH body and its media type.
#[derive(Debug, Clone)]
pub struct Patch {
    pub patch_type: PatchType,
    pub body: Vec<u8>,
}

impl Patch {
    /// Applies the patch to `current`, an object of `api_version`/`kind` (built-in kinds carry
    /// the merge metadata strategic merge patch needs; anything else has none → 415). A
    /// `metadata.resourceVersion` the patch sets that is not `current`'s is a 409, as upstream
    /// treats it as a precondition.
    pub fn apply_to(
        &self,
        current: &Value,
        api_version: &str,
        kind: &str,
        conflict: impl Fn() -> ApiError,
    ) -> Result<Value, ApiError> {
        let schema = builtin_schema(api_version, kind);
        let patched = apply_patch(self.patch_type, current, &self.body, schema)
            .map_err(|e| patch_error(&e))?;
        let wanted = patched.pointer("/metadata/resourceVersion");
        if wanted.is_some_and(|rv| Some(rv) != current.pointer("/metadata/resourceVersion")) {
            return Err(conflict());
        }
        Ok(patched)
    }
}

/// A patch engine's error as the API answers it. Strategic merge failures upstream reports as
/// 500 are the client's patch not fitting the object's schema: 422, message kept.
fn patch_error(err: &PatchError) -> ApiError {
    match err.status_code() {
        500 => ApiError::new(422, "Invalid", err.to_string()),
        code => ApiError::new(code, err.reason(), err.to_string()),
    }
}

impl Registry {
    /// POST: creates the object.
    pub async fn create(
        &self,
        target: &Target,
        body: Value,
        params: &WriteParams,
    ) -> Result<WriteResult, ApiError> {
        validate_write_options("CreateOptions", params)?;
        self.create_with(target, body, params, Tracking::of(params, None))
            .await
    }

    /// Creates the object, recording the create in managedFields with `tracking`.
    pub(super) async fn create_with(
        &self,
        target: &Target,
        body: Value,
        params: &WriteParams,
        tracking: Option<Tracking>,
    ) -> Result<WriteResult, ApiError> {
        let def = &target.def;
        let (mut object, warnings) =
            admit_body(target, body, params.field_validation, BodySource::Request)?;
        let meta = meta_mut(&mut object);
        // Admission errors name a generated object by its prefix, as upstream.
        let shown_name = meta_str_map(meta, "name")
            .or_else(|| meta_str_map(meta, "generateName"))
            .unwrap_or_default()
            .to_string();
        if meta_str_map(meta, "name").is_none() {
            match meta_str_map(meta, "generateName") {
                Some(prefix) => {
                    let name = format!("{prefix}{}", random_suffix(5));
                    meta.insert("name".into(), json!(name));
                }
                None => {
                    return Err(ApiError::invalid(
                        &def.group,
                        &def.kind,
                        "",
                        vec![Cause {
                            reason: "FieldValueRequired",
                            message: "Required value: name or generateName is required".into(),
                            field: "metadata.name".into(),
                        }],
                    ));
                }
            }
        }
        let target = Target {
            name: meta_str(&object, "name").map(String::from),
            ..target.clone()
        };
        self.check_namespace_open(&target).await?;
        check_definition_open(&target)?;
        self.admit_plugins_on_create(&target, &mut object, &shown_name)
            .await?;
        self.admit_priority_on_create(&target, &mut object, &shown_name)
            .await?;
        prepare_for_create(def, &mut object);
        finish(def, &mut object, None)?;
        if let Some(tracking) = &tracking {
            tracking.record(def, None, &mut object);
        }
        let reserved = if super::is_service(def) {
            Some(
                self.services()
                    .allocate(&mut object, None, params.dry_run)
                    .await?,
            )
        } else {
            None
        };
        if params.dry_run {
            return Ok(WriteResult {
                object,
                warnings,
                created: true,
            });
        }
        let created = self
            .store()
            .create(
                &target.key(),
                encode_for_store(&super::convert::stored(def, stored_form(def, &object))),
            )
            .await;
        if let (Err(_), Some(reserved)) = (&created, &reserved) {
            let owner = crate::apiserver::allocator::Owner::of(&object);
            self.services().release_reserved(reserved, &owner).await;
        }
        let kv = created.map_err(|e| store_error(&target, e))?;
        Ok(WriteResult {
            object: super::convert::served(def, super::read::with_type(decode_stored(&kv)?, def)),
            warnings,
            created: true,
        })
    }

    /// PUT: replaces the object (or its status with `subresource = status`).
    pub async fn update(
        &self,
        target: &Target,
        body: Value,
        params: &WriteParams,
    ) -> Result<WriteResult, ApiError> {
        let def = &target.def;
        validate_write_options("UpdateOptions", params)?;
        let (body, warnings) =
            admit_body(target, body, params.field_validation, BodySource::Request)?;
        match meta_str(&body, "name") {
            Some(name) if name == target.name() => {}
            Some(name) => {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({name}) does not match the name on the URL ({})",
                    target.name()
                )));
            }
            None => {
                return Err(ApiError::bad_request(
                    "name is required in the body of an update",
                ));
            }
        }
        let precondition = parse_revision(meta_str(&body, "resourceVersion"))?;
        let status_only = target.subresource.as_deref() == Some("status");
        let main_has_status = def.has_subresource("status");
        let tracking = Tracking::of(params, target.subresource.as_deref());
        let mut result = self
            .guaranteed_update_tracked(target, precondition, params.dry_run, tracking, |current| {
                Ok(separate_status(
                    current,
                    body.clone(),
                    status_only,
                    main_has_status,
                ))
            })
            .await?;
        result.warnings = warnings;
        Ok(result)
    }

    /// PATCH: applies the patch to the current object and writes the result.
    pub async fn patch(
        &self,
        target: &Target,
        patch: Patch,
        params: &WriteParams,
    ) -> Result<WriteResult, ApiError> {
        if patch.patch_type == PatchType::Apply {
            return self.apply(target, &patch.body, params).await;
        }
        validate_patch_options(patch.patch_type, params)?;
        let def = target.def.clone();
        let status_only = target.subresource.as_deref() == Some("status");
        let validation = params.field_validation;
        let warnings = std::sync::Mutex::new(Vec::new());
        let api_version = def.api_version();
        let tracking = Tracking::of(params, target.subresource.as_deref());
        let mut result = self
            .guaranteed_update_tracked(target, None, params.dry_run, tracking, |current| {
                let patched = patch.apply_to(current, &api_version, &def.kind, || {
                    ApiError::modified(&def.group, &def.plural, target.name())
                })?;
                let (patched, unknown) =
                    admit_body(target, patched, validation, BodySource::Patched)?;
                if let Ok(mut w) = warnings.lock() {
                    *w = unknown;
                }
                Ok(separate_status(
                    current,
                    patched,
                    status_only,
                    def.has_subresource("status"),
                ))
            })
            .await?;
        result.warnings = warnings.into_inner().unwrap_or_default();
        Ok(result)
    }

    /// Read-modify-write with compare-and-swap. `mutate` gets the current object and returns
    /// the desired one; system fields are then restored, generation bumped, defaults and
    /// validation applied. A `precondition` revision that is not current is a 409.
    pub async fn guaranteed_update(
        &self,
        target: &Target,
        precondition: Option<i64>,
        dry_run: bool,
        mutate: impl Fn(&Value) -> Result<Value, ApiError>,
    ) -> Result<WriteResult, ApiError> {
        self.guaranteed_update_tracked(target, precondition, dry_run, None, mutate)
            .await
    }

    /// [`Registry::guaranteed_update`] that records the write in managedFields with
    /// `tracking` (after defaulting, as upstream tracks the decoded, defaulted object).
    pub async fn guaranteed_update_tracked(
        &self,
        target: &Target,
        precondition: Option<i64>,
        dry_run: bool,
        tracking: Option<Tracking>,
        mutate: impl Fn(&Value) -> Result<Value, ApiError>,
    ) -> Result<WriteResult, ApiError> {
        let def = &target.def;
        let key = target.key();
        for _ in 0..MAX_RETRIES {
            let kv = self
                .store()
                .get(&key)
                .await
                .map_err(|e| store_error(target, e))?
                .ok_or_else(|| target.not_found())?;
            if precondition.is_some_and(|p| p != kv.mod_revision) {
                return Err(ApiError::modified(&def.group, &def.plural, target.name()));
            }
            let current =
                super::convert::served(def, super::read::with_type(decode_stored(&kv)?, def));
            let mut next = mutate(&current)?;
            carry_system_fields(def, &current, &mut next);
            if target.subresource.is_none() {
                // What an update of the object itself may omit and keep (a Service's cluster
                // IP and node ports ...); status and finalize writes keep the spec anyway.
                def.strategy().prepare_for_update(&mut next, &current);
            }
            finish(def, &mut next, Some(&current))?;
            if let Some(tracking) = &tracking {
                tracking.record(def, Some(&current), &mut next);
            }
            if same_object(&current, &next) {
                return Ok(WriteResult {
                    object: current,
                    warnings: Vec::new(),
                    created: false,
                });
            }
            self.admit_priority_on_update(target, &next).await?;
            if dry_run {
                return Ok(WriteResult {
                    object: next,
                    warnings: Vec::new(),
                    created: false,
                });
            }
            // Removing the last finalizer of an object being deleted deletes it (a Namespace
            // also needs its `spec.finalizers` empty, as upstream's namespace store) — unless
            // a graceful deletion is under way (a pod's grace period > 0: the kubelet's final
            // status lands on the pod, which its grace-0 delete removes later).
            let grace_pending = current
                .pointer("/metadata/deletionGracePeriodSeconds")
                .and_then(Value::as_i64)
                .is_some_and(|grace| grace > 0);
            let deleting = next.pointer("/metadata/deletionTimestamp").is_some() && !grace_pending;
            let spec_finalizers = def.group.is_empty()
                && def.kind == "Namespace"
                && next
                    .pointer("/spec/finalizers")
                    .and_then(Value::as_array)
                    .is_some_and(|f| !f.is_empty());
            let removing = deleting && finalizers(&next).is_empty() && !spec_finalizers;
            let service = super::is_service(def);
            let reserved = if service && !removing {
                self.services()
                    .allocate(&mut next, Some(&current), false)
                    .await?
            } else {
                Default::default()
            };
            let outcome = if removing {
                self.store()
                    .delete(&key, Some(kv.mod_revision))
                    .await
                    .map(|deleted| {
                        let mut object = next.clone();
                        super::object::set_resource_version(&mut object, deleted.mod_revision);
                        object
                    })
            } else {
                match self
                    .store()
                    .update(
                        &key,
                        encode_for_store(&super::convert::stored(def, stored_form(def, &next))),
                        kv.mod_revision,
                    )
                    .await
                {
                    Ok(stored) => decode_stored(&stored)
                        .map(|o| super::convert::served(def, super::read::with_type(o, def)))
                        .map_err(|e| StoreError::Backend(e.message)),
                    Err(e) => Err(e),
                }
            };
            if service {
                match &outcome {
                    Ok(object)
                        if object.pointer("/metadata/deletionTimestamp").is_some()
                            && finalizers(object).is_empty() =>
                    {
                        self.services().release_dropped(&current, None).await;
                    }
                    Ok(object) => {
                        self.services()
                            .release_dropped(&current, Some(object))
                            .await
                    }
                    Err(_) => {
                        let owner = crate::apiserver::allocator::Owner::of(&next);
                        self.services().release_reserved(&reserved, &owner).await;
                    }
                }
            }
            match outcome {
                Ok(object) => {
                    return Ok(WriteResult {
                        object,
                        warnings: Vec::new(),
                        created: false,
                    });
                }
                Err(StoreError::Conflict { .. }) if precondition.is_none() => continue,
                Err(e) => return Err(store_error(target, e)),
            }
        }
        Err(ApiError::conflict(
            &def.group,
            &def.plural,
            target.name(),
            "too many concurrent updates, please retry",
        ))
    }

    /// Namespaced creates need an existing namespace that is not being deleted (upstream's
    /// NamespaceLifecycle admission).
    async fn check_namespace_open(&self, target: &Target) -> Result<(), ApiError> {
        let Some(namespace) = target
            .namespace
            .as_deref()
            .filter(|_| target.def.namespaced)
        else {
            return Ok(());
        };
        let key = format!("/registry/namespaces/{namespace}");
        let kv = self
            .store()
            .get(&key)
            .await
            .map_err(|e| store_error(target, e))?
            .ok_or_else(|| ApiError::not_found("", "namespaces", namespace))?;
        let ns = decode_stored(&kv)?;
        if ns.pointer("/metadata/deletionTimestamp").is_some()
            || ns.pointer("/status/phase").and_then(Value::as_str) == Some("Terminating")
        {
            let mut error = ApiError::forbidden(format!(
                "{} \"{}\" is forbidden: unable to create new content in namespace {namespace} because it is being terminated",
                crate::apiserver::errors::qualified(&target.def.group, &target.def.plural),
                target.name()
            ));
            error.details.causes.push(Cause {
                reason: "NamespaceTerminating",
                message: format!("namespace {namespace} is being terminated"),
                field: "metadata.namespace".into(),
            });
            return Err(error);
        }
        Ok(())
    }
}

/// Refuses to create a custom resource whose CRD is being deleted (upstream's
/// forbid-create admission of terminating CRDs).
fn check_definition_open(target: &Target) -> Result<(), ApiError> {
    match &target.def.custom {
        Some(custom) if custom.terminating => Err(ApiError::forbidden(format!(
            "{} \"{}\" is forbidden: create not allowed while custom resource definition is terminating",
            crate::apiserver::errors::qualified(&target.def.group, &target.def.plural),
            target.name()
        ))),
        _ => Ok(()),
    }
}

fn meta_str_map<'a>(meta: &'a serde_json::Map<String, Value>, field: &str) -> Option<&'a str> {
    meta.get(field)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

/// Spec/status separation of a write: through the `status` subresource only the status
/// changes; through the main resource of a kind with a status subresource the status is
/// kept as stored.
pub(super) fn separate_status(
    current: &Value,
    mut next: Value,
    status_only: bool,
    has_status: bool,
) -> Value {
    if status_only {
        let mut merged = current.clone();
        merged["status"] = next.get("status").cloned().unwrap_or(Value::Null);
        return merged;
    }
    if has_status {
        match current.get("status") {
            Some(status) => next["status"] = status.clone(),
            None => {
                if let Some(map) = next.as_object_mut() {
                    map.remove("status");
                }
            }
        }
    }
    next
}

/// Where a body handed to [`admit_body`] comes from; it decides how decode errors read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodySource {
    /// A create or update request: `Deployment in version "v1" cannot be handled as a
    /// Deployment: ...` (400).
    Request,
    /// The result of a patch: `"" is invalid: patch: Invalid value: ...` (422).
    Patched,
}

impl BodySource {
    /// The error for a body of `def` that fails to decode with `message`; `body` is the
    /// object as it was handed in (shown for a patch, as upstream does).
    fn decode_error(self, def: &ResourceDef, body: Option<&Value>, message: &str) -> ApiError {
        match self {
            BodySource::Request => ApiError::bad_request(format!(
                "{kind} in version \"{version}\" cannot be handled as a {kind}: {message}",
                kind = def.kind,
                version = def.version,
            )),
            BodySource::Patched => ApiError::invalid(
                "",
                "",
                "",
                vec![Cause::invalid(
                    "patch",
                    &json!(body.map(Value::to_string).unwrap_or_default()),
                    message,
                )],
            ),
        }
    }
}

/// Checks and normalises a request body: `apiVersion`/`kind` (filled from the URL when
/// absent), the namespace, the typed decode and unknown fields per `validation`.
pub fn admit_body(
    target: &Target,
    mut body: Value,
    validation: FieldValidation,
    source: BodySource,
) -> Result<(Value, Vec<String>), ApiError> {
    let def = &target.def;
    let Some(map) = body.as_object_mut() else {
        return Err(ApiError::bad_request(
            "the request body must be a JSON object",
        ));
    };
    let expected_version = def.api_version();
    match map.get("apiVersion").and_then(Value::as_str) {
        None | Some("") => {
            map.insert("apiVersion".into(), json!(expected_version));
        }
        Some(v) if v == expected_version => {}
        Some(v) => {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({v}) does not match the expected API version ({expected_version})"
            )));
        }
    }
    match map.get("kind").and_then(Value::as_str) {
        None | Some("") => {
            map.insert("kind".into(), json!(def.kind));
        }
        Some(k) if k == def.kind => {}
        Some(k) => {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({k}) does not match the expected kind ({})",
                def.kind
            )));
        }
    }
    let meta = meta_mut(&mut body);
    if def.namespaced {
        let url_ns = target.namespace.as_deref().unwrap_or_default();
        match meta.get("namespace").and_then(Value::as_str) {
            None | Some("") => {
                meta.insert("namespace".into(), json!(url_ns));
            }
            Some(ns) if ns == url_ns => {}
            Some(_) => {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
        }
    } else {
        meta.remove("namespace");
    }
    let shown = (source == BodySource::Patched).then(|| body.clone());
    let (decoded, unknown) = typed_decode(def, body)
        .map_err(|message| source.decode_error(def, shown.as_ref(), &message))?;
    let unknown: Vec<String> = unknown
        .into_iter()
        .filter(|f| f != "metadata.resourceVersion")
        .collect();
    let warnings = match validation {
        FieldValidation::Strict if !unknown.is_empty() => {
            let list: Vec<String> = unknown
                .iter()
                .map(|f| format!("unknown field \"{f}\""))
                .collect();
            let message = format!("strict decoding error: {}", list.join(", "));
            return Err(source.decode_error(def, shown.as_ref(), &message));
        }
        FieldValidation::Ignore => Vec::new(),
        _ => unknown
            .iter()
            .map(|f| format!("unknown field \"{f}\""))
            .collect(),
    };
    Ok((decoded, warnings))
}

/// System fields of a new object: uid, creation time, generation; status reset for kinds
/// whose status is a subresource; then the kind strategy's `prepare_for_create`.
fn prepare_for_create(def: &ResourceDef, object: &mut Value) {
    if def.has_subresource("status")
        && let Some(map) = object.as_object_mut()
    {
        map.remove("status");
    }
    let meta = meta_mut(object);
    for field in [
        "resourceVersion",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "selfLink",
    ] {
        meta.remove(field);
    }
    meta.insert("uid".into(), json!(new_uid()));
    meta.insert("creationTimestamp".into(), json!(now_rfc3339()));
    meta.insert("generation".into(), json!(1));
    // The kind's part (a pod's Pending status, a Job's selector, a Namespace's finalizer ...).
    def.strategy().prepare_for_create(object);
}

/// Restores what a client cannot change on update, and bumps `generation` when anything
/// outside metadata and status changed.
fn carry_system_fields(def: &ResourceDef, current: &Value, next: &mut Value) {
    let kept: Vec<(&str, Option<Value>)> = [
        "name",
        "namespace",
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "generation",
    ]
    .iter()
    .map(|f| (*f, current.pointer(&format!("/metadata/{f}")).cloned()))
    .collect();
    let meta = meta_mut(next);
    for (field, value) in kept {
        match value {
            Some(v) => {
                meta.insert(field.into(), v);
            }
            None => {
                meta.remove(field);
            }
        }
    }
    meta.remove("resourceVersion");
    if let Some(map) = next.as_object_mut() {
        map.insert("apiVersion".into(), json!(def.api_version()));
        map.insert("kind".into(), json!(def.kind));
    }
    if spec_changed(current, next) {
        let generation = current
            .pointer("/metadata/generation")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        meta_mut(next).insert("generation".into(), json!(generation + 1));
    }
}

/// Whether anything outside `metadata` and `status` differs.
fn spec_changed(a: &Value, b: &Value) -> bool {
    let strip = |v: &Value| -> Value {
        let mut v = v.clone();
        if let Some(map) = v.as_object_mut() {
            map.remove("metadata");
            map.remove("status");
        }
        v
    };
    strip(a) != strip(b)
}

/// The object as stored: custom resources at their CRD's storage version.
fn stored_form(def: &ResourceDef, object: &Value) -> Value {
    let mut object = object.clone();
    if let Some(custom) = &def.custom {
        object["apiVersion"] = json!(custom.storage_api_version);
    }
    object
}

/// Equal but for `resourceVersion`.
fn same_object(current: &Value, next: &Value) -> bool {
    let mut a = current.clone();
    let mut b = next.clone();
    meta_mut(&mut a).remove("resourceVersion");
    meta_mut(&mut b).remove("resourceVersion");
    a == b
}

/// Defaults, then generic metadata and kind validation.
fn finish(def: &ResourceDef, object: &mut Value, old: Option<&Value>) -> Result<(), ApiError> {
    let strategy = def.strategy();
    strategy.default(object);
    let rule = names::name_rule(&def.group, &def.kind);
    let mut causes = names::validate_object_meta(object, rule, def.namespaced);
    if let Some(old) = old {
        causes.extend(names::validate_object_meta_update(object, old));
    }
    causes.extend(strategy.validate(object, old));
    if causes.is_empty() {
        Ok(())
    } else {
        let name = meta_str(object, "name").unwrap_or_default().to_string();
        Err(ApiError::invalid(&def.group, &def.kind, &name, causes))
    }
}
