//! Discovery documents from the catalogue: legacy (`APIVersions`, `APIGroupList`, `APIGroup`,
//! `APIResourceList` with `pods/status`-style subresource entries) and aggregated
//! (`apidiscovery.k8s.io/v2` `APIGroupDiscoveryList`, chosen by the client's Accept header).

use serde_json::{Value, json};

use super::catalog::{Catalog, ResourceDef, group_version};

/// The Content-Type of an aggregated discovery answer.
pub const AGGREGATED_CONTENT_TYPE: &str =
    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

/// Whether the Accept header asks for aggregated discovery v2.
pub fn wants_aggregated(accept: &str) -> bool {
    accept.split(',').any(|part| {
        let params: Vec<&str> = part.split(';').map(str::trim).collect();
        params.contains(&"g=apidiscovery.k8s.io")
            && params.contains(&"v=v2")
            && params.contains(&"as=APIGroupDiscoveryList")
    })
}

/// `/api`.
pub fn api_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
    })
}

fn group_entry(group: &str, versions: &[String]) -> Value {
    let versions: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": group_version(group, v), "version": v}))
        .collect();
    json!({
        "name": group,
        "versions": versions,
        "preferredVersion": versions.first().cloned().unwrap_or(Value::Null),
    })
}

/// `/apis`.
pub fn api_group_list(catalog: &Catalog) -> Value {
    let groups: Vec<Value> = catalog
        .groups()
        .iter()
        .filter(|(g, _)| !g.is_empty())
        .map(|(g, versions)| group_entry(g, versions))
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `/apis/<group>` (`None` if the group is not served).
pub fn api_group(catalog: &Catalog, group: &str) -> Option<Value> {
    catalog
        .groups()
        .iter()
        .find(|(g, _)| g == group && !g.is_empty())
        .map(|(g, versions)| {
            let mut entry = group_entry(g, versions);
            entry["kind"] = json!("APIGroup");
            entry["apiVersion"] = json!("v1");
            entry
        })
}

/// `/api/v1` or `/apis/<g>/<v>` (`None` if not served).
pub fn api_resource_list(catalog: &Catalog, group: &str, version: &str) -> Option<Value> {
    let resources = catalog.resources_of(group, version);
    if resources.is_empty() {
        return None;
    }
    let mut list = Vec::new();
    for r in resources {
        let mut entry = json!({
            "name": r.plural,
            "singularName": r.singular,
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": r.verbs,
        });
        if !r.short_names.is_empty() {
            entry["shortNames"] = json!(r.short_names);
        }
        if !r.categories.is_empty() {
            entry["categories"] = json!(r.categories);
        }
        list.push(entry);
        for s in &r.subresources {
            let mut sub = json!({
                "name": format!("{}/{}", r.plural, s.name),
                "singularName": "",
                "namespaced": r.namespaced,
                "kind": s.kind,
                "verbs": s.verbs,
            });
            if s.group != r.group || s.version != r.version {
                sub["group"] = json!(s.group);
                sub["version"] = json!(s.version);
            }
            list.push(sub);
        }
    }
    Some(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version(group, version),
        "resources": list,
    }))
}

fn aggregated_resource(r: &ResourceDef) -> Value {
    let subresources: Vec<Value> = r
        .subresources
        .iter()
        .map(|s| {
            json!({
                "subresource": s.name,
                "responseKind": {"group": s.group, "version": s.version, "kind": s.kind},
                "verbs": s.verbs,
            })
        })
        .collect();
    let mut entry = json!({
        "resource": r.plural,
        "responseKind": {"group": r.group, "version": r.version, "kind": r.kind},
        "scope": if r.namespaced { "Namespaced" } else { "Cluster" },
        "singularResource": r.singular,
        "verbs": r.verbs,
    });
    if !r.short_names.is_empty() {
        entry["shortNames"] = json!(r.short_names);
    }
    if !r.categories.is_empty() {
        entry["categories"] = json!(r.categories);
    }
    if !subresources.is_empty() {
        entry["subresources"] = json!(subresources);
    }
    entry
}

/// Aggregated discovery for `/api` (`legacy`) or `/apis`.
pub fn aggregated(catalog: &Catalog, legacy: bool) -> Value {
    let items: Vec<Value> = catalog
        .groups()
        .iter()
        .filter(|(g, _)| g.is_empty() == legacy)
        .map(|(group, versions)| {
            let versions: Vec<Value> = versions
                .iter()
                .map(|v| {
                    let resources: Vec<Value> = catalog
                        .resources_of(group, v)
                        .into_iter()
                        .map(|r| aggregated_resource(r))
                        .collect();
                    json!({"version": v, "resources": resources, "freshness": "Current"})
                })
                .collect();
            json!({"metadata": {"name": group, "creationTimestamp": null}, "versions": versions})
        })
        .collect();
    json!({
        "kind": "APIGroupDiscoveryList",
        "apiVersion": "apidiscovery.k8s.io/v2",
        "metadata": {},
        "items": items,
    })
}

/// The ETag of an aggregated discovery document: a hash of its content, so it changes
/// whenever the served resources do (CRDs added or removed).
pub fn aggregated_etag(doc: &Value) -> String {
    use sha2::{Digest, Sha512};
    format!(
        "\"{}\"",
        hex::encode_upper(Sha512::digest(doc.to_string().as_bytes()))
    )
}

/// The aggregated discovery response with its ETag; `304 Not Modified` when the client's
/// `If-None-Match` is the current ETag (as upstream).
pub fn aggregated_response(
    doc: &Value,
    if_none_match: Option<&str>,
) -> http::Response<super::http_util::Body> {
    let etag = aggregated_etag(doc);
    let mut response = if if_none_match
        .is_some_and(|tags| tags.split(',').any(|t| t.trim() == etag))
    {
        let mut r = http::Response::new(super::http_util::full(Vec::new()));
        *r.status_mut() = http::StatusCode::NOT_MODIFIED;
        r
    } else {
        super::http_util::json_response_typed(http::StatusCode::OK, doc, AGGREGATED_CONTENT_TYPE)
    };
    if let Ok(v) = http::HeaderValue::from_str(&etag) {
        response.headers_mut().insert(http::header::ETAG, v);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_lists_subresources_with_cross_group_kinds() {
        let catalog = Catalog::builtin();
        let core = api_resource_list(&catalog, "", "v1").expect("core");
        let resources = core["resources"].as_array().expect("array");
        let eviction = resources
            .iter()
            .find(|r| r["name"] == "pods/eviction")
            .expect("pods/eviction");
        assert_eq!(eviction["group"], "policy");
        assert_eq!(eviction["kind"], "Eviction");
        let pods = resources
            .iter()
            .find(|r| r["name"] == "pods")
            .expect("pods");
        assert_eq!(pods["shortNames"], json!(["po"]));
        assert!(api_resource_list(&catalog, "apps", "v9").is_none());
        assert!(api_group(&catalog, "apps").is_some());
    }

    #[test]
    fn aggregated_accept_detection() {
        assert!(wants_aggregated(
            "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json"
        ));
        assert!(!wants_aggregated("application/json"));
        let agg = aggregated(&Catalog::builtin(), false);
        assert!(
            agg["items"]
                .as_array()
                .expect("items")
                .iter()
                .any(|g| g["metadata"]["name"] == "apps")
        );
    }
}
