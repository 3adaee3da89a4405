//! Request dispatch: authenticate, parse what the request addresses, authorize, then serve
//! health, version, discovery or a resource verb. Everything returns a response; errors are
//! `Status` bodies.

use std::sync::Arc;

use http::{HeaderMap, Method, Request, Response, StatusCode, header};
use serde_json::{Value, json};

use super::authn::{Authenticated, Authenticator, AuthnError, Credentials, UserInfo};
use super::authz::{Attributes, Authorizer, Decision};
use super::discovery;
use super::errors::ApiError;
use super::http_util::{Body, error_response, json_response, text_response};
use super::request::{self, Query, RequestInfo, ResourceRequest};
use super::rest::{Registry, Target};

/// The apiserver's request handler (shared by all connections).
#[derive(Debug)]
pub struct ApiHandler {
    pub registry: Registry,
    pub authenticator: Authenticator,
    pub authorizer: Arc<dyn Authorizer>,
    /// `host:port` clients reach the server at (for `/api`).
    pub server_address: String,
    /// How `pods/log|exec|attach|portforward` and `nodes/proxy` reach kubelets.
    pub kubelet: super::kubelet_proxy::KubeletClient,
}

/// Paths answered without authentication (probes of a static-pod apiserver have no
/// credentials; they reveal nothing).
const PUBLIC_PATHS: &[&str] = &["/healthz", "/livez", "/readyz"];

/// What `/version` reports.
pub fn version_info() -> Value {
    json!({
        "major": "1",
        "minor": "33",
        "gitVersion": format!("v1.33.0+kwk.{}", env!("CARGO_PKG_VERSION")),
        "gitCommit": "",
        "gitTreeState": "clean",
        "buildDate": "",
        "goVersion": "",
        "compiler": "rustc",
        "platform": format!("linux/{}", match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            other => other,
        }),
    })
}

impl ApiHandler {
    /// Serves one request. `client_cert` is the TLS-verified client certificate (DER).
    pub async fn handle<B>(
        self: Arc<Self>,
        request: Request<B>,
        client_cert: Option<Arc<Vec<u8>>>,
    ) -> Response<Body>
    where
        B: hyper::body::Body + Send + 'static,
        B::Data: Send,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let path = request.uri().path().to_string();
        let query = Query::parse(request.uri().query());
        let method = request.method().clone();
        let authorization = header_str(request.headers(), header::AUTHORIZATION);
        let credentials = Credentials {
            client_cert: client_cert.as_deref().map(Vec::as_slice),
            authorization: authorization.as_deref(),
        };
        let user = match self.authenticate(credentials, None).await {
            Ok((user, _)) => user,
            Err(_)
                if PUBLIC_PATHS
                    .iter()
                    .any(|p| path == *p || path.starts_with(&format!("{p}/"))) =>
            {
                UserInfo {
                    name: "system:anonymous".into(),
                    groups: vec!["system:unauthenticated".into()],
                    ..UserInfo::default()
                }
            }
            Err(e) => {
                tracing::debug!(%path, error = %e, "unauthenticated request");
                return error_response(&ApiError::unauthorized());
            }
        };
        let user = match super::impersonation::impersonate(
            self.authorizer.as_ref(),
            user,
            request.headers(),
        ) {
            Ok(user) => user,
            Err(e) => return error_response(&e),
        };
        let Some(info) = request::parse(&method, &path, &query) else {
            return error_response(&ApiError::page_not_found());
        };
        let attributes = attributes_of(&info, &method);
        match self.authorizer.authorize(&user, &attributes) {
            Decision::Allow => {}
            Decision::Deny(reason) => {
                return error_response(&forbidden(&user, &attributes, &reason));
            }
            Decision::NoOpinion => return error_response(&forbidden(&user, &attributes, "")),
        }
        let accept = header_str(request.headers(), header::ACCEPT).unwrap_or_default();
        match info {
            RequestInfo::NonResource { path } => self.non_resource(&path),
            RequestInfo::RootDiscovery { legacy } => {
                let catalog = self.registry.catalog();
                if discovery::wants_aggregated(&accept) {
                    discovery::aggregated_response(
                        &discovery::aggregated(&catalog, legacy),
                        header_str(request.headers(), header::IF_NONE_MATCH).as_deref(),
                    )
                } else if legacy {
                    json_response(
                        StatusCode::OK,
                        &discovery::api_versions(&self.server_address),
                    )
                } else {
                    json_response(StatusCode::OK, &discovery::api_group_list(&catalog))
                }
            }
            RequestInfo::GroupDiscovery { group } => {
                match discovery::api_group(&self.registry.catalog(), &group) {
                    Some(doc) => json_response(StatusCode::OK, &doc),
                    None => error_response(&ApiError::page_not_found()),
                }
            }
            RequestInfo::VersionDiscovery { group, version } => {
                match discovery::api_resource_list(&self.registry.catalog(), &group, &version) {
                    Some(doc) => json_response(StatusCode::OK, &doc),
                    None => error_response(&ApiError::page_not_found()),
                }
            }
            RequestInfo::Resource(resource) => {
                let (parts, body) = request.into_parts();
                match self.resolve(&resource) {
                    Ok(target) => {
                        super::verbs::serve(
                            &self, &user, resource, target, parts, body, query, &accept,
                        )
                        .await
                    }
                    Err(e) => error_response(&e),
                }
            }
        }
    }

    /// Authenticates `credentials` for `audiences` (the apiserver's when `None`): the
    /// synchronous authenticator, then, for a service-account token, the check that its
    /// ServiceAccount and bound object still exist (a certificate presented alongside a token
    /// that fails it still authenticates, as upstream's union). With the audiences a
    /// service-account token was accepted for.
    pub async fn authenticate(
        &self,
        credentials: Credentials<'_>,
        audiences: Option<&[String]>,
    ) -> Result<(UserInfo, Vec<String>), AuthnError> {
        let now = super::rest::object::unix_now();
        match self
            .authenticator
            .authenticate(credentials, audiences, now)?
        {
            Authenticated::User(user) => Ok((user, Vec::new())),
            Authenticated::ServiceAccount { claims, audiences } => {
                match super::service_accounts::resolve(&self.registry, &claims, now).await {
                    Ok(user) => Ok((user, audiences)),
                    Err(e) => match credentials.client_cert {
                        Some(der) => {
                            super::authn::user_from_certificate(der).map(|u| (u, Vec::new()))
                        }
                        None => Err(e.into()),
                    },
                }
            }
        }
    }

    fn non_resource(&self, path: &str) -> Response<Body> {
        match path {
            "/version" => json_response(StatusCode::OK, &version_info()),
            "/openapi/v3" => {
                let docs = super::openapi::documents(&self.registry.catalog());
                json_response(StatusCode::OK, &super::openapi::index(&docs))
            }
            p if p.starts_with("/openapi/v3/") => {
                let docs = super::openapi::documents(&self.registry.catalog());
                match docs.get(&p["/openapi/v3/".len()..]).map(|d| &**d) {
                    Some((doc, hash)) => {
                        let mut response = json_response(StatusCode::OK, doc);
                        if let Ok(v) = http::HeaderValue::from_str(&format!("\"{hash}\"")) {
                            response.headers_mut().insert(header::ETAG, v);
                        }
                        response.headers_mut().insert(
                            header::CACHE_CONTROL,
                            http::HeaderValue::from_static("public, immutable"),
                        );
                        response
                    }
                    None => text_response(StatusCode::NOT_FOUND, "404 page not found\n"),
                }
            }
            "/healthz" | "/livez" | "/readyz" => text_response(StatusCode::OK, "ok"),
            p if p.starts_with("/healthz/")
                || p.starts_with("/livez/")
                || p.starts_with("/readyz/") =>
            {
                text_response(StatusCode::OK, "ok")
            }
            _ => text_response(StatusCode::NOT_FOUND, "404 page not found\n"),
        }
    }

    /// Finds the resource a request addresses.
    fn resolve(&self, request: &ResourceRequest) -> Result<Target, ApiError> {
        let catalog = self.registry.catalog();
        let def = catalog
            .lookup(&request.group, &request.version, &request.resource)
            .cloned()
            .ok_or_else(ApiError::page_not_found)?;
        if let Some(sub) = &request.subresource
            && !def.has_subresource(sub)
        {
            return Err(ApiError::page_not_found());
        }
        let (namespace, name) = if def.namespaced {
            (request.namespace.clone(), request.name.clone())
        } else {
            // `namespaces/<n>` parses with namespace = n; cluster-scoped keys have none.
            (None, request.name.clone())
        };
        if def.namespaced && namespace.is_none() && request.name.is_some() {
            return Err(ApiError::page_not_found());
        }
        Ok(Target {
            def,
            namespace,
            name,
            subresource: request.subresource.clone(),
        })
    }
}

fn header_str(headers: &HeaderMap, name: header::HeaderName) -> Option<String> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .reduce(|a, _| a)
        .map(String::from)
}

fn attributes_of(info: &RequestInfo, method: &Method) -> Attributes {
    match info {
        RequestInfo::Resource(r) => Attributes {
            verb: r.verb.as_str().to_string(),
            resource_request: true,
            namespace: r.namespace.clone().unwrap_or_default(),
            api_group: r.group.clone(),
            api_version: r.version.clone(),
            resource: r.resource.clone(),
            subresource: r.subresource.clone().unwrap_or_default(),
            name: r.name.clone().unwrap_or_default(),
            path: String::new(),
        },
        other => Attributes {
            verb: method.as_str().to_ascii_lowercase(),
            resource_request: false,
            path: match other {
                RequestInfo::NonResource { path } => path.clone(),
                _ => String::new(),
            },
            ..Attributes::default()
        },
    }
}

/// The 403 of a denied request (upstream's `responsewriters.Forbidden`).
pub(crate) fn forbidden(user: &UserInfo, a: &Attributes, reason: &str) -> ApiError {
    let mut message = if a.resource_request {
        let resource = if a.subresource.is_empty() {
            a.resource.clone()
        } else {
            format!("{}/{}", a.resource, a.subresource)
        };
        let object = if a.name.is_empty() {
            super::errors::qualified(&a.api_group, &a.resource)
        } else {
            format!(
                "{} \"{}\"",
                super::errors::qualified(&a.api_group, &a.resource),
                a.name
            )
        };
        let mut m = format!(
            "{object} is forbidden: User \"{}\" cannot {} resource \"{}\" in API group \"{}\"",
            user.name, a.verb, resource, a.api_group
        );
        if a.namespace.is_empty() {
            m.push_str(" at the cluster scope");
        } else {
            m.push_str(&format!(" in the namespace \"{}\"", a.namespace));
        }
        m
    } else {
        format!(
            "forbidden: User \"{}\" cannot {} path \"{}\"",
            user.name, a.verb, a.path
        )
    };
    if !reason.is_empty() {
        message.push_str(&format!(": {reason}"));
    }
    ApiError::forbidden(message)
}
