//! A container's environment: `$(VAR)` expansion (upstream's forked `expansion` package rules),
//! `envFrom` (ConfigMaps and Secrets, with a prefix) then `env` resolution in declaration order
//! with `valueFrom.fieldRef` and `valueFrom.resourceFieldRef` (the downward API) and
//! `configMapKeyRef`/`secretKeyRef` (from the fetched [`ApiObjects`]), and command/args
//! expansion.
//!
//! Differences from upstream, on purpose: the result keeps declaration order (upstream goes
//! through a Go map, so its order is random); a name declared twice keeps its first position
//! and its last value. Service environment variables are not injected yet.

use k8s_openapi::api::core::v1::{
    Container, EnvFromSource, EnvVarSource, ObjectFieldSelector, Pod, ResourceFieldSelector,
};

use super::api_objects::{self, ApiObjects, Lookup};
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
        let optional = sel.optional.unwrap_or(false);
        let value = match objects.config_map(&sel.name) {
            Lookup::Found(cm) => api_objects::config_map_strings(cm)
                .find(|(k, _)| *k == sel.key)
                .map(|(_, v)| String::from_utf8_lossy(v).into_owned()),
            lookup => return missing_object(lookup, "configmap", &sel.name, &field, optional),
        };
        return match value {
            Some(value) => Ok(Some(value)),
            None if optional => Ok(None),
            None => Err(SpecError::invalid(
                field,
                format!(
                    "couldn't find key {} in ConfigMap {}/{}",
                    sel.key,
                    objects.namespace(),
                    sel.name
                ),
            )),
        };
    }
    if let Some(sel) = source.secret_key_ref.as_ref() {
        let field = format!("{from}.secretKeyRef");
        let optional = sel.optional.unwrap_or(false);
        let value = match objects.secret(&sel.name) {
            Lookup::Found(secret) => api_objects::secret_entries(secret)
                .find(|(k, _)| *k == sel.key)
                .map(|(_, v)| String::from_utf8_lossy(v).into_owned()),
            lookup => return missing_object(lookup, "secret", &sel.name, &field, optional),
        };
        return match value {
            Some(value) => Ok(Some(value)),
            None if optional => Ok(None),
            None => Err(SpecError::invalid(
                field,
                format!(
                    "couldn't find key {} in Secret {}/{}",
                    sel.key,
                    objects.namespace(),
                    sel.name
                ),
            )),
        };
    }
    Ok(Some(String::new()))
}

/// The outcome of a reference to an object that was not found (or never fetched).
fn missing_object<T, V>(
    lookup: Lookup<'_, T>,
    kind: &str,
    name: &str,
    field: &str,
    optional: bool,
) -> Result<Option<V>, SpecError> {
    match lookup {
        Lookup::NotFound if optional => Ok(None),
        Lookup::NotFound | Lookup::Found(_) => Err(SpecError::invalid(
            field,
            format!("{kind} {name:?} not found"),
        )),
        Lookup::NotFetched => Err(SpecError::NotKnown {
            field: field.to_string(),
            what: format!("{kind} {name:?} (no apiserver)"),
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
    let mut set = |entries: &mut dyn Iterator<Item = (&str, &[u8])>| {
        for (key, value) in entries {
            let name = format!("{prefix}{key}");
            if valid_env_name(&name) {
                vars.set(&name, String::from_utf8_lossy(value).into_owned());
            }
        }
    };
    if let Some(sel) = from.config_map_ref.as_ref() {
        let field = format!("{field}.configMapRef");
        match objects.config_map(&sel.name) {
            Lookup::Found(cm) => set(&mut api_objects::config_map_strings(cm)),
            lookup => {
                missing_object::<_, ()>(lookup, "configmap", &sel.name, &field, opt(sel.optional))?;
            }
        }
    } else if let Some(sel) = from.secret_ref.as_ref() {
        let field = format!("{field}.secretRef");
        match objects.secret(&sel.name) {
            Lookup::Found(secret) => set(&mut api_objects::secret_entries(secret)),
            lookup => {
                missing_object::<_, ()>(lookup, "secret", &sel.name, &field, opt(sel.optional))?;
            }
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
mod tests {
    use super::*;
    use crate::runtime_spec::testpod::pod;
    use std::collections::HashMap;

    #[test]
    fn expansion_table() {
        let vars: HashMap<&str, &str> = [("A", "a"), ("EMPTY", ""), ("B", "$(A)")].into();
        let look = |n: &str| vars.get(n).map(|v| v.to_string());
        let cases = [
            ("$(A)", "a"),
            ("x$(A)y$(A)", "xaya"),
            ("$$(A)", "$(A)"),
            ("$$$(A)", "$a"),
            ("$(UNKNOWN)", "$(UNKNOWN)"),
            ("$(EMPTY)x", "x"),
            ("$(B)", "$(A)"),
            ("$(A", "$(A"),
            ("$A", "$A"),
            ("a$", "a$"),
            ("$", "$"),
            ("$()", "$()"),
            ("é$(A)é$é", "éaé$é"),
            ("$$", "$"),
            ("(A)", "(A)"),
        ];
        for (input, want) in cases {
            assert_eq!(expand(input, look), want, "{input:?}");
        }
    }

    fn ctx() -> DownwardContext {
        DownwardContext {
            pod_ip: Some("10.1.0.5".into()),
            pod_ips: vec!["10.1.0.5".into(), "fd00::5".into()],
            host_ip: Some("192.168.1.10".into()),
            host_ips: vec![],
            node_name: "node-a".into(),
            allocatable: Some(NodeAllocatable {
                cpu_milli: 4000,
                memory_bytes: 8 << 30,
                ephemeral_storage_bytes: 100 << 30,
            }),
        }
    }

    const POD: &str = r#"
metadata:
  name: web
  namespace: prod
  uid: u-1
  labels: {app: web}
  annotations: {team: core}
spec:
  serviceAccountName: sa
  containers:
  - name: app
    command: ["/bin/$(CMD)", "$$(CMD)"]
    args: ["--x=$(LATER)", "$(POD)"]
    resources:
      requests: {cpu: 250m, memory: 64Mi}
      limits: {memory: 128Mi}
    env:
    - {name: POD, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
    - {name: NS, valueFrom: {fieldRef: {fieldPath: metadata.namespace}}}
    - {name: UID, valueFrom: {fieldRef: {fieldPath: metadata.uid}}}
    - {name: APP, valueFrom: {fieldRef: {fieldPath: "metadata.labels['app']"}}}
    - {name: TEAM, valueFrom: {fieldRef: {fieldPath: "metadata.annotations['team']"}}}
    - {name: MISSING, valueFrom: {fieldRef: {fieldPath: "metadata.labels['nope']"}}}
    - {name: NODE, valueFrom: {fieldRef: {fieldPath: spec.nodeName}}}
    - {name: SA, valueFrom: {fieldRef: {fieldPath: spec.serviceAccountName}}}
    - {name: HOST, valueFrom: {fieldRef: {fieldPath: status.hostIP}}}
    - {name: HOSTS, valueFrom: {fieldRef: {fieldPath: status.hostIPs}}}
    - {name: IP, valueFrom: {fieldRef: {fieldPath: status.podIP}}}
    - {name: IPS, valueFrom: {fieldRef: {fieldPath: status.podIPs}}}
    - {name: CPU_REQ, valueFrom: {resourceFieldRef: {resource: requests.cpu, divisor: 1}}}
    - {name: CPU_REQ_M, valueFrom: {resourceFieldRef: {resource: requests.cpu, divisor: 1m}}}
    - {name: CPU_LIM, valueFrom: {resourceFieldRef: {resource: limits.cpu}}}
    - {name: MEM_LIM_MI, valueFrom: {resourceFieldRef: {resource: limits.memory, divisor: 1Mi}}}
    - {name: MEM_REQ, valueFrom: {resourceFieldRef: {resource: requests.memory}}}
    - {name: STORAGE_LIM_GI, valueFrom: {resourceFieldRef: {resource: limits.ephemeral-storage, divisor: 1Gi}}}
    - {name: CMD, value: "sh-$(POD)"}
    - {name: SELF, value: "$(SELF)-$(LATER)"}
    - {name: LATER, value: "late"}
    - {name: POD, value: "again-$(POD)"}
"#;

    #[test]
    fn resolves_env_in_order_with_downward_api() {
        let p = pod(POD);
        let c = &p.spec.as_ref().unwrap().containers[0];
        let env = resolve_env(&p, c, "spec.containers[0]", &ctx(), &ApiObjects::default()).unwrap();
        let got: Vec<(&str, &str)> = env.iter().collect();
        assert_eq!(
            got,
            vec![
                ("POD", "again-web"),
                ("NS", "prod"),
                ("UID", "u-1"),
                ("APP", "web"),
                ("TEAM", "core"),
                ("MISSING", ""),
                ("NODE", "node-a"),
                ("SA", "sa"),
                ("HOST", "192.168.1.10"),
                ("HOSTS", "192.168.1.10"),
                ("IP", "10.1.0.5"),
                ("IPS", "10.1.0.5,fd00::5"),
                ("CPU_REQ", "1"),
                ("CPU_REQ_M", "250"),
                ("CPU_LIM", "4"),
                ("MEM_LIM_MI", "128"),
                ("MEM_REQ", "67108864"),
                ("STORAGE_LIM_GI", "100"),
                ("CMD", "sh-web"),
                ("SELF", "$(SELF)-$(LATER)"),
                ("LATER", "late"),
            ]
        );
        let (command, args) = expand_command_and_args(c, &env);
        assert_eq!(command, vec!["/bin/sh-web", "$(CMD)"]);
        assert_eq!(args, vec!["--x=late", "again-web"]);
    }

    #[test]
    fn unknown_sources_and_unfetched_objects_are_refused() {
        let cases = [
            (
                "{name: X, valueFrom: {configMapKeyRef: {name: cm, key: k}}}",
                "spec.containers[0].env[0].valueFrom.configMapKeyRef",
            ),
            (
                "{name: X, valueFrom: {secretKeyRef: {name: s, key: k}}}",
                "spec.containers[0].env[0].valueFrom.secretKeyRef",
            ),
            (
                "{name: X, valueFrom: {fieldRef: {fieldPath: spec.bogus}}}",
                "spec.containers[0].env[0].valueFrom.fieldRef.fieldPath",
            ),
            (
                "{name: X, valueFrom: {resourceFieldRef: {resource: limits.gpu}}}",
                "spec.containers[0].env[0].valueFrom.resourceFieldRef.resource",
            ),
        ];
        for (env, want_field) in cases {
            let p = pod(&format!(
                "metadata: {{name: p}}\nspec:\n  containers:\n  - name: c\n    env: [{env}]\n"
            ));
            let c = &p.spec.as_ref().unwrap().containers[0];
            let err = resolve_env(&p, c, "spec.containers[0]", &ctx(), &ApiObjects::default())
                .unwrap_err();
            let field = match &err {
                SpecError::NotKnown { field, .. } | SpecError::Invalid { field, .. } => {
                    field.clone()
                }
                other => panic!("unexpected {other:?}"),
            };
            assert_eq!(field, want_field);
        }
        let p = pod(
            "metadata: {name: p}\nspec:\n  containers:\n  - name: c\n    envFrom: [{configMapRef: {name: x}}]\n",
        );
        let c = &p.spec.as_ref().unwrap().containers[0];
        assert_eq!(
            resolve_env(&p, c, "spec.containers[0]", &ctx(), &ApiObjects::default())
                .unwrap_err()
                .to_string(),
            "spec.containers[0].envFrom[0].configMapRef: configmap \"x\" (no apiserver) is not known yet"
        );
    }

    fn fetched() -> ApiObjects {
        use k8s_openapi::ByteString;
        use k8s_openapi::api::core::v1::{ConfigMap, Secret};
        let mut objects = ApiObjects::new("prod");
        objects.insert_config_map(
            "cfg",
            Some(ConfigMap {
                data: Some(
                    [
                        ("mode".into(), "fast".into()),
                        ("bad=key".into(), "x".into()),
                    ]
                    .into(),
                ),
                binary_data: Some([("blob".into(), ByteString(vec![1]))].into()),
                ..Default::default()
            }),
        );
        objects.insert_config_map("gone", None);
        objects.insert_secret(
            "creds",
            Some(Secret {
                data: Some(
                    [
                        ("user".into(), ByteString(b"admin".to_vec())),
                        ("mode".into(), ByteString(b"secret-mode".to_vec())),
                    ]
                    .into(),
                ),
                ..Default::default()
            }),
        );
        objects.insert_secret("nope", None);
        objects
    }

    #[test]
    fn config_map_and_secret_values_with_env_from_precedence() {
        let p = pod(r#"
metadata: {name: p, namespace: prod}
spec:
  containers:
  - name: c
    envFrom:
    - {configMapRef: {name: cfg}}
    - {secretRef: {name: creds}, prefix: S_}
    - {configMapRef: {name: gone, optional: true}}
    env:
    - {name: MODE_AGAIN, value: "$(mode)"}
    - {name: mode, valueFrom: {secretKeyRef: {name: creds, key: mode}}}
    - {name: OPT_KEY, valueFrom: {configMapKeyRef: {name: cfg, key: missing, optional: true}}}
    - {name: OPT_OBJ, valueFrom: {secretKeyRef: {name: nope, key: k, optional: true}}}
    - {name: USER, valueFrom: {secretKeyRef: {name: creds, key: user}}}
"#);
        let c = &p.spec.as_ref().unwrap().containers[0];
        let env = resolve_env(&p, c, "spec.containers[0]", &ctx(), &fetched()).unwrap();
        assert_eq!(
            env.iter().collect::<Vec<_>>(),
            vec![
                ("mode", "secret-mode"),
                ("S_mode", "secret-mode"),
                ("S_user", "admin"),
                ("MODE_AGAIN", "fast"),
                ("USER", "admin"),
            ]
        );
    }

    #[test]
    fn missing_config_maps_secrets_and_keys_name_the_field() {
        let cases = [
            (
                "env: [{name: X, valueFrom: {configMapKeyRef: {name: cfg, key: nokey}}}]",
                "spec.containers[0].env[0].valueFrom.configMapKeyRef: couldn't find key nokey in ConfigMap prod/cfg",
            ),
            (
                "env: [{name: X, valueFrom: {configMapKeyRef: {name: cfg, key: blob}}}]",
                "spec.containers[0].env[0].valueFrom.configMapKeyRef: couldn't find key blob in ConfigMap prod/cfg",
            ),
            (
                "env: [{name: X, valueFrom: {secretKeyRef: {name: nope, key: k}}}]",
                "spec.containers[0].env[0].valueFrom.secretKeyRef: secret \"nope\" not found",
            ),
            (
                "env: [{name: X, valueFrom: {secretKeyRef: {name: creds, key: k}}}]",
                "spec.containers[0].env[0].valueFrom.secretKeyRef: couldn't find key k in Secret prod/creds",
            ),
            (
                "envFrom: [{configMapRef: {name: cfg}}, {configMapRef: {name: gone}}]",
                "spec.containers[0].envFrom[1].configMapRef: configmap \"gone\" not found",
            ),
        ];
        for (container, want) in cases {
            let p = pod(&format!(
                "metadata: {{name: p, namespace: prod}}\nspec:\n  containers:\n  - name: c\n    {container}\n"
            ));
            let c = &p.spec.as_ref().unwrap().containers[0];
            let err = resolve_env(&p, c, "spec.containers[0]", &ctx(), &fetched()).unwrap_err();
            assert_eq!(err.to_string(), want, "{container}");
        }
    }

    #[test]
    fn host_ip_must_be_known() {
        let p = pod(
            "metadata: {name: p}\nspec:\n  containers:\n  - name: c\n    env: [{name: H, valueFrom: {fieldRef: {fieldPath: status.hostIP}}}]\n",
        );
        let c = &p.spec.as_ref().unwrap().containers[0];
        let mut context = ctx();
        context.host_ip = None;
        assert!(matches!(
            resolve_env(&p, c, "f", &context, &ApiObjects::default()),
            Err(SpecError::NotKnown { .. })
        ));
    }

    #[test]
    fn resource_ref_to_other_container_and_no_allocatable() {
        let p = pod(r#"
metadata: {name: p}
spec:
  containers:
  - name: c
    env:
    - {name: OTHER, valueFrom: {resourceFieldRef: {containerName: side, resource: limits.cpu, divisor: 100m}}}
    - {name: NOLIM, valueFrom: {resourceFieldRef: {resource: limits.memory}}}
  - name: side
    resources: {limits: {cpu: 1250m}}
"#);
        let c = &p.spec.as_ref().unwrap().containers[0];
        let mut context = ctx();
        context.allocatable = None;
        let env = resolve_env(&p, c, "f", &context, &ApiObjects::default()).unwrap();
        assert_eq!(
            (env.get("OTHER"), env.get("NOLIM")),
            (Some("13"), Some("0"))
        );
    }
}
