//! Authorization of kubelet API requests, as upstream with `KubeletFineGrainedAuthz` (beta, on
//! by default in v1.33): the request path maps to a subresource of the node object
//! (`nodes/stats`, `nodes/metrics`, `nodes/log`, `nodes/pods`, `nodes/healthz`,
//! `nodes/configz`, ..., else `nodes/proxy`); `/pods`, `/runningPods`, `/healthz` and
//! `/configz` fall back to `nodes/proxy` when their own subresource is denied. The apiserver
//! decides with a `SubjectAccessReview`; decisions are cached (allowed and denied answers with
//! their own TTLs).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::PostParams;

use super::authn::User;

/// What a request asks for, in the apiserver's terms.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct NodeAttributes {
    pub verb: &'static str,
    /// The subresource of `nodes/<node name>`, in the order they are tried.
    pub subresources: Vec<&'static str>,
}

/// The API verb of an HTTP method (upstream's mapping; other methods have none).
pub fn verb_of(method: &http::Method) -> &'static str {
    match *method {
        http::Method::POST => "create",
        http::Method::GET | http::Method::HEAD => "get",
        http::Method::PUT => "update",
        http::Method::PATCH => "patch",
        http::Method::DELETE => "delete",
        _ => "",
    }
}

/// Whether `path` is `prefix` or below it.
fn is_subpath(path: &str, prefix: &str) -> bool {
    path == prefix
        || path
            .strip_prefix(prefix)
            .is_some_and(|rest| prefix.ends_with('/') || rest.starts_with('/'))
}

/// The attributes to authorize for a request to `path`.
pub fn attributes_for(method: &http::Method, path: &str) -> NodeAttributes {
    const OWN: &[(&str, &str)] = &[
        ("/stats", "stats"),
        ("/metrics", "metrics"),
        ("/logs", "log"),
        ("/spec", "spec"),
        ("/checkpoint", "checkpoint"),
    ];
    const WITH_PROXY_FALLBACK: &[(&str, &str)] = &[
        ("/pods", "pods"),
        ("/runningpods", "pods"),
        ("/runningPods", "pods"),
        ("/healthz", "healthz"),
        ("/configz", "configz"),
    ];
    let subresources = if let Some((_, sub)) = OWN.iter().find(|(p, _)| is_subpath(path, p)) {
        vec![*sub]
    } else if let Some((_, sub)) = WITH_PROXY_FALLBACK
        .iter()
        .find(|(p, _)| is_subpath(path, p))
    {
        vec![*sub, "proxy"]
    } else {
        vec!["proxy"]
    };
    NodeAttributes {
        verb: verb_of(method),
        subresources,
    }
}

/// The body of the 403 answer (upstream's wording).
pub fn forbidden_message(user: &User, attributes: &NodeAttributes) -> String {
    format!(
        "Forbidden (user={}, verb={}, resource=nodes, subresource(s)=[{}])\n",
        user.name,
        attributes.verb,
        attributes.subresources.join(" ")
    )
}

/// Why the authorizer could not answer.
#[derive(Debug, thiserror::Error)]
#[error("SubjectAccessReview: {0}")]
pub struct AuthzError(#[from] kube::Error);

/// How requests are authorized.
pub enum Authorizer {
    /// Every authenticated request (`authorization.mode: AlwaysAllow`, or standalone).
    AlwaysAllow,
    /// A SubjectAccessReview per (user, verb, subresource), cached.
    Webhook(WebhookAuthorizer),
}

impl std::fmt::Debug for Authorizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::AlwaysAllow => f.write_str("AlwaysAllow"),
            Self::Webhook(_) => f.write_str("Webhook"),
        }
    }
}

impl std::fmt::Debug for WebhookAuthorizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookAuthorizer")
            .field("allowed_ttl", &self.allowed_ttl)
            .field("denied_ttl", &self.denied_ttl)
            .finish_non_exhaustive()
    }
}

impl Authorizer {
    /// Whether `user` may do `attributes` on node `node`.
    pub async fn allowed(
        &self,
        user: &User,
        node: &str,
        attributes: &NodeAttributes,
    ) -> Result<bool, AuthzError> {
        match self {
            Self::AlwaysAllow => Ok(true),
            Self::Webhook(webhook) => {
                for subresource in &attributes.subresources {
                    if webhook
                        .allowed(user, node, attributes.verb, subresource)
                        .await?
                    {
                        return Ok(true);
                    }
                }
                Ok(false)
            }
        }
    }
}

/// SubjectAccessReviews against the apiserver, with a decision cache.
pub struct WebhookAuthorizer {
    client: kube::Client,
    allowed_ttl: Duration,
    denied_ttl: Duration,
    cache: Mutex<HashMap<String, (Instant, bool)>>,
}

/// The most decisions kept; the cache is cleared when full.
const MAX_CACHED: usize = 4096;

impl WebhookAuthorizer {
    pub fn new(client: kube::Client, allowed_ttl: Duration, denied_ttl: Duration) -> Self {
        Self {
            client,
            allowed_ttl,
            denied_ttl,
            cache: Mutex::new(HashMap::new()),
        }
    }

    async fn allowed(
        &self,
        user: &User,
        node: &str,
        verb: &str,
        subresource: &str,
    ) -> Result<bool, AuthzError> {
        let key = format!(
            "{}\0{}\0{:?}\0{:?}\0{node}\0{verb}\0{subresource}",
            user.name, user.uid, user.groups, user.extra
        );
        if let Ok(cache) = self.cache.lock()
            && let Some((at, allowed)) = cache.get(&key)
        {
            let ttl = if *allowed {
                self.allowed_ttl
            } else {
                self.denied_ttl
            };
            if at.elapsed() < ttl {
                return Ok(*allowed);
            }
        }
        let review = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: Some(user.name.clone()),
                uid: Some(user.uid.clone()).filter(|u| !u.is_empty()),
                groups: Some(user.groups.clone()),
                extra: Some(user.extra.clone()).filter(|e| !e.is_empty()),
                resource_attributes: Some(ResourceAttributes {
                    verb: Some(verb.to_string()),
                    group: Some(String::new()),
                    version: Some("v1".to_string()),
                    resource: Some("nodes".to_string()),
                    subresource: Some(subresource.to_string()),
                    name: Some(node.to_string()),
                    ..ResourceAttributes::default()
                }),
                ..SubjectAccessReviewSpec::default()
            },
            ..SubjectAccessReview::default()
        };
        let api = kube::Api::<SubjectAccessReview>::all(self.client.clone());
        let answer = api.create(&PostParams::default(), &review).await?;
        let allowed = answer.status.is_some_and(|s| s.allowed);
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() >= MAX_CACHED {
                cache.clear();
            }
            cache.insert(key, (Instant::now(), allowed));
        }
        Ok(allowed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_map_to_node_subresources() {
        let get = http::Method::GET;
        let cases: &[(&http::Method, &str, &str, &[&str])] = &[
            (&get, "/stats/summary", "get", &["stats"]),
            (&get, "/stats", "get", &["stats"]),
            (&get, "/statsx", "get", &["proxy"]),
            (&get, "/metrics", "get", &["metrics"]),
            (&get, "/metrics/resource", "get", &["metrics"]),
            (&get, "/metrics/cadvisor", "get", &["metrics"]),
            (&get, "/logs/syslog", "get", &["log"]),
            (&get, "/pods", "get", &["pods", "proxy"]),
            (&get, "/runningpods/", "get", &["pods", "proxy"]),
            (&get, "/healthz", "get", &["healthz", "proxy"]),
            (&get, "/healthz/ping", "get", &["healthz", "proxy"]),
            (&get, "/configz", "get", &["configz", "proxy"]),
            (&get, "/spec/", "get", &["spec"]),
            (
                &http::Method::POST,
                "/checkpoint/ns/p/c",
                "create",
                &["checkpoint"],
            ),
            (&get, "/containerLogs/ns/p/c", "get", &["proxy"]),
            (&http::Method::POST, "/exec/ns/p/c", "create", &["proxy"]),
            (&http::Method::PUT, "/", "update", &["proxy"]),
            (&http::Method::DELETE, "/x", "delete", &["proxy"]),
            (&http::Method::PATCH, "/x", "patch", &["proxy"]),
            (&http::Method::OPTIONS, "/x", "", &["proxy"]),
        ];
        for (method, path, verb, subresources) in cases {
            assert_eq!(
                attributes_for(method, path),
                NodeAttributes {
                    verb,
                    subresources: subresources.to_vec()
                },
                "{method} {path}"
            );
        }
    }

    #[test]
    fn forbidden_names_user_verb_and_subresources() {
        let user = User {
            name: "alice".into(),
            ..User::default()
        };
        assert_eq!(
            forbidden_message(&user, &attributes_for(&http::Method::GET, "/pods")),
            "Forbidden (user=alice, verb=get, resource=nodes, subresource(s)=[pods proxy])\n"
        );
    }
    fn user(name: &str) -> User {
        User {
            name: name.into(),
            groups: vec!["system:authenticated".into()],
            ..User::default()
        }
    }

    #[tokio::test]
    async fn the_apiserver_decides_per_subresource_and_decisions_are_cached() {
        let (client, calls) =
            crate::kubelet_api::scripted_apiserver::scripted_client(|path, body| {
                assert_eq!(path, "/apis/authorization.k8s.io/v1/subjectaccessreviews");
                let spec = &body["spec"];
                let attributes = &spec["resourceAttributes"];
                assert_eq!(attributes["resource"], "nodes");
                assert_eq!(attributes["name"], "node-1");
                let allowed = match spec["user"].as_str().unwrap() {
                    "admin" => true,
                    "pod-reader" => attributes["subresource"] == "pods",
                    _ => false,
                };
                serde_json::json!({
                    "apiVersion": "authorization.k8s.io/v1",
                    "kind": "SubjectAccessReview",
                    "spec": spec,
                    "status": {"allowed": allowed},
                })
            });
        let authorizer = Authorizer::Webhook(WebhookAuthorizer::new(
            client,
            Duration::from_secs(60),
            Duration::from_secs(60),
        ));
        let get = http::Method::GET;
        let pods = attributes_for(&get, "/pods");
        let stats = attributes_for(&get, "/stats/summary");
        let cases: &[(&str, &NodeAttributes, bool, usize)] = &[
            // user, request, allowed, reviews asked so far
            ("alice", &pods, false, 2),
            ("alice", &pods, false, 2),
            ("pod-reader", &pods, true, 3),
            ("pod-reader", &stats, false, 4),
            ("admin", &stats, true, 5),
            ("admin", &stats, true, 5),
        ];
        for (name, attributes, allowed, asked) in cases {
            assert_eq!(
                authorizer
                    .allowed(&user(name), "node-1", attributes)
                    .await
                    .unwrap(),
                *allowed,
                "{name} {attributes:?}"
            );
            assert_eq!(
                calls.load(std::sync::atomic::Ordering::SeqCst),
                *asked,
                "{name} {attributes:?}"
            );
        }
    }
}
