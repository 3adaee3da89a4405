//! A container's environment: `$(VAR)` expansion (upstream's forked `expansion` package rules),
//! `envFrom` (ConfigMaps and Secrets, with a prefix) then `env` resolution in declaration order
//! with `valueFrom.fieldRef` and `valueFrom.resourceFieldRef` (the downward API) and
//! `configMapKeyRef`/`secretKeyRef` (from the fetched [`ApiObjects`]), and command/args
//! expansion.
//!
//! Differences from upstream, on purpose: the result keeps declaration order (upstream goes
//! through a Go map, so its order is random); a name declared twice keeps its first position
//! and its last value. Service environment variables are not injected yet.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Container, EnvFromSource, EnvVarSource, ObjectFieldSelector, Pod, ResourceFieldSelector,
};

use super::api_objects::{ApiObjects, Entries, KeyedEntries, KeyedKind};
use super::{SpecError, podx};
use crate::quantity;

/// The node's allocatable resources: the downward API reports them as a container's limits when
/// it has none.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodeAllocatable {
    pub cpu_milli: i64,
    pub memory_bytes: i64,
    pub ephemeral_storage_bytes: i64,
}

/// The runtime facts the downward API reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DownwardContext {
    /// The pod's primary IP (used when `pod_ips` is empty).
    pub pod_ip: Option<String>,
    /// All pod IPs, primary first (for host-network pods: the node's IPs).
    pub pod_ips: Vec<String>,
    /// The node's primary IP (used when `host_ips` is empty).
    pub host_ip: Option<String>,
    /// All node IPs, primary first.
    pub host_ips: Vec<String>,
    /// The node name, when the pod's `spec.nodeName` is empty.
    pub node_name: String,
    /// Node allocatable, for `resourceFieldRef` of a resource without a limit.
    pub allocatable: Option<NodeAllocatable>,
}

/// A resolved environment, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnvVars {
    vars: Vec<(String, String)>,
}

impl EnvVars {
    /// The variables in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.vars.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// The value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn set(&mut self, name: &str, value: String) {
        match self.vars.iter_mut().find(|(k, _)| k == name) {
            Some((_, v)) => *v = value,
            None => self.vars.push((name.to_string(), value)),
        }
    }

    /// Expands `$(VAR)` in `input` with these variables, leaving unknown references as written.
    pub fn expand(&self, input: &str) -> String {
        expand(input, |name| self.get(name).map(str::to_string))
    }
}

/// Expands `$(NAME)` references: `$$` is a literal `$`, an unterminated `$(` and a `$` before
/// anything else are kept as written, and a name `lookup` does not know stays `$(NAME)`.
pub fn expand(input: &str, mut lookup: impl FnMut(&str) -> Option<String>) -> String {
    let bytes = input.as_bytes();
    let mut out = String::with_capacity(input.len());
    let mut checkpoint = 0;
    let mut cursor = 0;
    while cursor < bytes.len() {
        if bytes[cursor] != b'$' || cursor + 1 >= bytes.len() {
            cursor += 1;
            continue;
        }
        out.push_str(&input[checkpoint..cursor]);
        match bytes[cursor + 1] {
            b'$' => {
                out.push('$');
                cursor += 2;
            }
            b'(' => match input[cursor + 2..].find(')') {
                Some(len) => {
                    let name = &input[cursor + 2..cursor + 2 + len];
                    match lookup(name) {
                        Some(value) => out.push_str(&value),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    cursor += 3 + len;
                }
                None => {
                    out.push_str("$(");
                    cursor += 2;
                }
            },
            _ => {
                out.push('$');
                cursor += 1;
            }
        }
        checkpoint = cursor;
    }
    out.push_str(&input[checkpoint..]);
    out
}

/// Resolves the container's `envFrom` and `env` (`field` is the container's path, e.g.
/// `spec.containers[0]`); ConfigMap and Secret values come from `objects`.
pub fn resolve_env(
    pod: &Pod,
    container: &Container,
    field: &str,
    ctx: &DownwardContext,
    objects: &ApiObjects,
) -> Result<EnvVars, SpecError> {
    let mut vars = EnvVars::default();
    for (index, from) in container.env_from.iter().flatten().enumerate() {
        env_from(
            from,
            &format!("{field}.envFrom[{index}]"),
            objects,
            &mut vars,
        )?;
    }
    for (index, var) in container.env.iter().flatten().enumerate() {
        let var_field = format!("{field}.env[{index}]");
        let value = match (
            var.value.as_deref().filter(|v| !v.is_empty()),
            var.value_from.as_ref(),
        ) {
            (Some(value), _) => vars.expand(value),
            (None, Some(source)) => {
                let from = format!("{var_field}.valueFrom");
                match value_from(pod, container, source, &from, ctx, objects)? {
                    Some(value) => value,
                    // An optional reference to something missing: the variable is not set.
                    None => continue,
                }
            }
            (None, None) => String::new(),
        };
        vars.set(&var.name, value);
    }
    Ok(vars)
}

/// One `valueFrom`; `None` for an optional ConfigMap/Secret key that is missing.
fn value_from(
    pod: &Pod,
    container: &Container,
    source: &EnvVarSource,
    from: &str,
    ctx: &DownwardContext,
    objects: &ApiObjects,
) -> Result<Option<String>, SpecError> {
    if let Some(fr) = source.field_ref.as_ref() {
        return field_ref_value(pod, fr, &format!("{from}.fieldRef"), ctx).map(Some);
    }
    if let Some(rr) = source.resource_field_ref.as_ref() {
        let field = format!("{from}.resourceFieldRef");
        return resource_field_value(pod, container, rr, &field, ctx).map(Some);
    }
    if let Some(sel) = source.config_map_key_ref.as_ref() {
        let field = format!("{from}.configMapKeyRef");
        let optional = opt(sel.optional);
        let source = (KeyedKind::ConfigMap, sel.name.as_str());
        return key_ref_value(source, &sel.key, optional, &field, objects);
    }
    if let Some(sel) = source.secret_key_ref.as_ref() {
        let field = format!("{from}.secretKeyRef");
        let optional = opt(sel.optional);
        let source = (KeyedKind::Secret, sel.name.as_str());
        return key_ref_value(source, &sel.key, optional, &field, objects);
    }
    Ok(Some(String::new()))
}

/// The value of one key of a ConfigMap or Secret (`None`: optional and missing).
fn key_ref_value(
    (kind, name): (KeyedKind, &str),
    key: &str,
    optional: bool,
    field: &str,
    objects: &ApiObjects,
) -> Result<Option<String>, SpecError> {
    let Some(entries) = keyed_entries(objects, kind, name, field, optional)? else {
        return Ok(None);
    };
    match entries.get(key) {
        Some(value) => Ok(Some(String::from_utf8_lossy(value).into_owned())),
        None if optional => Ok(None),
        None => Err(SpecError::invalid(
            field,
            format!(
                "couldn't find key {key} in {} {}/{name}",
                kind.kind(),
                objects.namespace(),
            ),
        )),
    }
}

/// The entries environment variables read from a ConfigMap (`data`) or Secret; `None` when
/// the object does not exist and is optional.
fn keyed_entries<'a>(
    objects: &'a ApiObjects,
    kind: KeyedKind,
    name: &str,
    field: &str,
    optional: bool,
) -> Result<Option<BTreeMap<&'a str, &'a [u8]>>, SpecError> {
    let lower = kind.lower_name();
    match objects.keyed(kind, name, Entries::Strings) {
        KeyedEntries::Found(entries) => Ok(Some(entries)),
        KeyedEntries::NotFound if optional => Ok(None),
        KeyedEntries::NotFound => Err(SpecError::invalid(
            field,
            format!("{lower} {name:?} not found"),
        )),
        KeyedEntries::NotFetched => Err(SpecError::NotKnown {
            field: field.to_string(),
            what: format!("{lower} {name:?} (no apiserver)"),
        }),
    }
}

/// One `envFrom` source: every key of the ConfigMap (`data`) or Secret, prefixed; keys that
/// cannot be variable names (empty, or with `=`) are skipped as upstream does.
fn env_from(
    from: &EnvFromSource,
    field: &str,
    objects: &ApiObjects,
    vars: &mut EnvVars,
) -> Result<(), SpecError> {
    let prefix = from.prefix.as_deref().unwrap_or_default();
    let (kind, name, optional, field) = if let Some(sel) = from.config_map_ref.as_ref() {
        let field = format!("{field}.configMapRef");
        (KeyedKind::ConfigMap, &sel.name, sel.optional, field)
    } else if let Some(sel) = from.secret_ref.as_ref() {
        let field = format!("{field}.secretRef");
        (KeyedKind::Secret, &sel.name, sel.optional, field)
    } else {
        return Ok(());
    };
    let entries = keyed_entries(objects, kind, name, &field, opt(optional))?;
    for (key, value) in entries.iter().flatten() {
        let name = format!("{prefix}{key}");
        if valid_env_name(&name) {
            vars.set(&name, String::from_utf8_lossy(value).into_owned());
        }
    }
    Ok(())
}

fn opt(optional: Option<bool>) -> bool {
    optional.unwrap_or(false)
}

/// Upstream's relaxed environment variable names: printable ASCII without `=`.
fn valid_env_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| (b' '..=b'~').contains(&b) && b != b'=')
}

/// The container's command and args with `$(VAR)` references expanded from `env`.
pub fn expand_command_and_args(container: &Container, env: &EnvVars) -> (Vec<String>, Vec<String>) {
    let all = |list: &Option<Vec<String>>| list.iter().flatten().map(|s| env.expand(s)).collect();
    (all(&container.command), all(&container.args))
}

/// A `fieldRef` value, as upstream `podFieldSelectorRuntimeValue` reads it.
pub(super) fn field_ref_value(
    pod: &Pod,
    sel: &ObjectFieldSelector,
    field: &str,
    ctx: &DownwardContext,
) -> Result<String, SpecError> {
    if let Some(version) = sel
        .api_version
        .as_deref()
        .filter(|v| !v.is_empty() && *v != "v1")
    {
        return Err(SpecError::invalid(
            format!("{field}.apiVersion"),
            format!("unsupported API version {version:?}"),
        ));
    }
    let path = sel.field_path.as_str();
    let pod_ips: Vec<String> = if ctx.pod_ips.is_empty() {
        ctx.pod_ip.iter().cloned().collect()
    } else {
        ctx.pod_ips.clone()
    };
    let host_ips: Vec<String> = if ctx.host_ips.is_empty() {
        ctx.host_ip.iter().cloned().collect()
    } else {
        ctx.host_ips.clone()
    };
    let spec = podx::spec(pod);
    let value = match path {
        "metadata.name" => podx::name(pod).to_string(),
        "metadata.namespace" => podx::namespace(pod).to_string(),
        "metadata.uid" => podx::uid(pod).to_string(),
        "spec.nodeName" => spec
            .and_then(|s| s.node_name.clone())
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| ctx.node_name.clone()),
        "spec.serviceAccountName" => spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_default(),
        "status.podIP" => pod_ips.first().cloned().unwrap_or_default(),
        "status.podIPs" => pod_ips.join(","),
        "status.hostIP" | "status.hostIPs" => {
            if host_ips.is_empty() {
                return Err(SpecError::NotKnown {
                    field: field.to_string(),
                    what: "the node's IP".into(),
                });
            }
            if path == "status.hostIP" {
                host_ips[0].clone()
            } else {
                host_ips.join(",")
            }
        }
        _ => {
            let subscript = |prefix: &str| {
                path.strip_prefix(prefix)
                    .and_then(|rest| rest.strip_prefix("['"))
                    .and_then(|rest| rest.strip_suffix("']"))
            };
            if let Some(key) = subscript("metadata.labels") {
                pod.metadata
                    .labels
                    .as_ref()
                    .and_then(|m| m.get(key))
                    .cloned()
                    .unwrap_or_default()
            } else if let Some(key) = subscript("metadata.annotations") {
                pod.metadata
                    .annotations
                    .as_ref()
                    .and_then(|m| m.get(key))
                    .cloned()
                    .unwrap_or_default()
            } else {
                return Err(SpecError::invalid(
                    format!("{field}.fieldPath"),
                    format!("unsupported field path {path:?}"),
                ));
            }
        }
    };
    Ok(value)
}

/// A `resourceFieldRef` value, as upstream `containerResourceRuntimeValue` computes it: the
/// amount divided by the divisor, rounded up; a missing limit reads as node allocatable.
pub(super) fn resource_field_value(
    pod: &Pod,
    container: &Container,
    sel: &ResourceFieldSelector,
    field: &str,
    ctx: &DownwardContext,
) -> Result<String, SpecError> {
    let target = match sel.container_name.as_deref().filter(|n| !n.is_empty()) {
        None => container,
        Some(name) => podx::spec(pod)
            .and_then(|s| {
                s.containers
                    .iter()
                    .chain(s.init_containers.iter().flatten())
                    .find(|c| c.name == name)
            })
            .ok_or_else(|| {
                SpecError::invalid(
                    format!("{field}.containerName"),
                    format!("no container named {name:?}"),
                )
            })?,
    };
    let parse = |q: &str, f: &str| {
        quantity::parse(q).map_err(|source| SpecError::Quantity {
            field: f.to_string(),
            source,
        })
    };
    let divisor = match sel.divisor.as_ref() {
        Some(d) => parse(&d.0, &format!("{field}.divisor"))?,
        None => quantity::Quantity::from_milli(1000),
    };
    let divisor = if divisor.milli() == 0 {
        quantity::Quantity::from_milli(1000)
    } else {
        divisor
    };
    let (kind, resource) = sel.resource.split_once('.').ok_or_else(|| {
        SpecError::invalid(
            format!("{field}.resource"),
            format!("unsupported resource {:?}", sel.resource),
        )
    })?;
    let resources = target.resources.as_ref();
    let map = match kind {
        "limits" => resources.and_then(|r| r.limits.as_ref()),
        "requests" => resources.and_then(|r| r.requests.as_ref()),
        _ => {
            return Err(SpecError::invalid(
                format!("{field}.resource"),
                format!("unsupported resource {:?}", sel.resource),
            ));
        }
    };
    let set = match map.and_then(|m| m.get(resource)) {
        Some(q) => Some(parse(&q.0, &format!("{field}.resource"))?),
        None => None,
    };
    let allocatable = |milli: fn(&NodeAllocatable) -> i64| {
        ctx.allocatable
            .as_ref()
            .map_or(quantity::Quantity::from_milli(0), |a| {
                quantity::Quantity::from_milli(milli(a))
            })
    };
    let amount = match (set, kind) {
        (Some(q), _) => q,
        (None, "limits") => match resource {
            "cpu" => allocatable(|a| a.cpu_milli),
            "memory" => allocatable(|a| a.memory_bytes.saturating_mul(1000)),
            "ephemeral-storage" => allocatable(|a| a.ephemeral_storage_bytes.saturating_mul(1000)),
            _ => quantity::Quantity::from_milli(0),
        },
        (None, _) => quantity::Quantity::from_milli(0),
    };
    let value = match resource {
        "cpu" => div_ceil(amount.milli(), divisor.milli()),
        "memory" | "ephemeral-storage" => div_ceil(amount.value(), divisor.value()),
        r if r.starts_with("hugepages-") => div_ceil(amount.value(), divisor.value()),
        _ => {
            return Err(SpecError::invalid(
                format!("{field}.resource"),
                format!("unsupported resource {:?}", sel.resource),
            ));
        }
    };
    Ok(value.to_string())
}

fn div_ceil(amount: i64, divisor: i64) -> i64 {
    if divisor == 0 {
        return 0;
    }
    let q = amount / divisor;
    if amount % divisor != 0 && (amount > 0) == (divisor > 0) {
        q + 1
    } else {
        q
    }
}

#[cfg(test)]
#[path = "env_tests.rs"]
mod tests;
