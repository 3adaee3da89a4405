//! User impersonation (`kubectl --as`, `--as-group`, `--as-uid`): the `Impersonate-User`,
//! `Impersonate-Group`, `Impersonate-Uid` and `Impersonate-Extra-<key>` headers, as
//! upstream's impersonation filter. Each requested identity is authorized for the
//! authenticated user with verb `impersonate` on `users`, `groups`, `serviceaccounts`
//! (a `system:serviceaccount:<ns>:<name>` user), `uids` or `userextras/<key>`; any denial is
//! a 403. The request then runs as the impersonated user: `system:authenticated` is added
//! unless a group given already says `system:authenticated`/`system:unauthenticated`, and a
//! service account without explicit groups gets its fixed ones.

use std::collections::BTreeMap;

use http::HeaderMap;

use super::authn::{AUTHENTICATED_GROUP, UserInfo};
use super::authz::{Attributes, Authorizer, Decision};
use super::errors::ApiError;

pub const USER_HEADER: &str = "impersonate-user";
pub const GROUP_HEADER: &str = "impersonate-group";
pub const UID_HEADER: &str = "impersonate-uid";
pub const EXTRA_PREFIX: &str = "impersonate-extra-";

const ANONYMOUS: &str = "system:anonymous";
const UNAUTHENTICATED_GROUP: &str = "system:unauthenticated";
const SA_PREFIX: &str = "system:serviceaccount:";

/// One identity asked for, and what authorizes it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Request {
    User(String),
    ServiceAccount { namespace: String, name: String },
    Group(String),
    Extra { key: String, value: String },
    Uid(String),
}

/// The requests in the headers (empty: no impersonation).
fn requests(headers: &HeaderMap) -> Result<Vec<Request>, ApiError> {
    let values = |name: &str| -> Vec<String> {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(String::from)
            .collect()
    };
    let mut out = Vec::new();
    let user = values(USER_HEADER)
        .into_iter()
        .next()
        .filter(|u| !u.is_empty());
    if let Some(user) = &user {
        out.push(match service_account(user) {
            Some((namespace, name)) => Request::ServiceAccount { namespace, name },
            None => Request::User(user.clone()),
        });
    }
    let mut extras: Vec<(String, String)> = Vec::new();
    for (name, value) in headers {
        if let Some(key) = name.as_str().strip_prefix(EXTRA_PREFIX)
            && let Ok(value) = value.to_str()
        {
            extras.push((unescape(key), value.to_string()));
        }
    }
    let has_extra = !extras.is_empty();
    out.extend(
        extras
            .into_iter()
            .map(|(key, value)| Request::Extra { key, value }),
    );
    let groups = values(GROUP_HEADER);
    let has_groups = !groups.is_empty();
    out.extend(groups.into_iter().map(Request::Group));
    let uid = values(UID_HEADER)
        .into_iter()
        .next()
        .filter(|u| !u.is_empty());
    let has_uid = uid.is_some();
    out.extend(uid.map(Request::Uid));
    if (has_groups || has_extra || has_uid) && user.is_none() {
        return Err(ApiError::internal(format!(
            "Internal error occurred: requested {} without impersonating a user",
            describe(&out)
        )));
    }
    Ok(out)
}

fn describe(requests: &[Request]) -> String {
    let items: Vec<String> = requests
        .iter()
        .map(|r| match r {
            Request::Group(g) => format!("group {g:?}"),
            Request::Extra { key, value } => format!("extra {key}={value:?}"),
            Request::Uid(u) => format!("uid {u:?}"),
            Request::User(u) => format!("user {u:?}"),
            Request::ServiceAccount { namespace, name } => {
                format!("serviceaccount {namespace}/{name}")
            }
        })
        .collect();
    format!("[{}]", items.join(" "))
}

/// `system:serviceaccount:<ns>:<name>` → (ns, name).
fn service_account(user: &str) -> Option<(String, String)> {
    let rest = user.strip_prefix(SA_PREFIX)?;
    let (namespace, name) = rest.split_once(':')?;
    (!namespace.is_empty() && !name.is_empty() && !name.contains(':'))
        .then(|| (namespace.to_string(), name.to_string()))
}

/// Percent-decoding of an extra key (upstream escapes keys that are not header-safe).
fn unescape(key: &str) -> String {
    let bytes = key.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(b) = key
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(b);
            i += 3;
            continue;
        }
        if bytes[i] == b'%' {
            return key.to_string();
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out).unwrap_or_else(|_| key.to_string())
}

/// The attributes authorizing one request.
fn attributes(request: &Request) -> Attributes {
    let base = Attributes {
        verb: "impersonate".into(),
        resource_request: true,
        ..Attributes::default()
    };
    match request {
        Request::User(name) => Attributes {
            resource: "users".into(),
            name: name.clone(),
            ..base
        },
        Request::ServiceAccount { namespace, name } => Attributes {
            resource: "serviceaccounts".into(),
            namespace: namespace.clone(),
            name: name.clone(),
            ..base
        },
        Request::Group(name) => Attributes {
            resource: "groups".into(),
            name: name.clone(),
            ..base
        },
        Request::Extra { key, value } => Attributes {
            api_group: "authentication.k8s.io".into(),
            api_version: "v1".into(),
            resource: "userextras".into(),
            subresource: key.clone(),
            name: value.clone(),
            ..base
        },
        Request::Uid(uid) => Attributes {
            api_group: "authentication.k8s.io".into(),
            api_version: "v1".into(),
            resource: "uids".into(),
            name: uid.clone(),
            ..base
        },
    }
}

/// The user the request runs as: `user` itself without impersonation headers, else the
/// impersonated user once every part is authorized (403 otherwise).
pub fn impersonate(
    authorizer: &dyn Authorizer,
    user: UserInfo,
    headers: &HeaderMap,
) -> Result<UserInfo, ApiError> {
    let requests = requests(headers)?;
    if requests.is_empty() {
        return Ok(user);
    }
    let groups_given = headers.get_all(GROUP_HEADER).iter().next().is_some();
    let mut name = String::new();
    let mut groups = Vec::new();
    let mut extra: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut uid = String::new();
    for request in &requests {
        let attrs = attributes(request);
        match authorizer.authorize(&user, &attrs) {
            Decision::Allow => {}
            Decision::Deny(reason) => {
                return Err(super::handler::forbidden(&user, &attrs, &reason));
            }
            Decision::NoOpinion => return Err(super::handler::forbidden(&user, &attrs, "")),
        }
        match request {
            Request::User(u) => name = u.clone(),
            Request::ServiceAccount {
                namespace,
                name: sa,
            } => {
                name = format!("{SA_PREFIX}{namespace}:{sa}");
                if !groups_given {
                    groups.push("system:serviceaccounts".to_string());
                    groups.push(format!("system:serviceaccounts:{namespace}"));
                }
            }
            Request::Group(g) => groups.push(g.clone()),
            Request::Extra { key, value } => {
                extra.entry(key.clone()).or_default().push(value.clone())
            }
            Request::Uid(u) => uid = u.clone(),
        }
    }
    if name != ANONYMOUS {
        if !groups
            .iter()
            .any(|g| g == AUTHENTICATED_GROUP || g == UNAUTHENTICATED_GROUP)
        {
            groups.push(AUTHENTICATED_GROUP.to_string());
        }
    } else if !groups.iter().any(|g| g == UNAUTHENTICATED_GROUP) {
        groups.push(UNAUTHENTICATED_GROUP.to_string());
    }
    Ok(UserInfo {
        name,
        uid,
        groups,
        extra,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::authz::RuleSet;

    /// Allows impersonating everything except the users, groups or extras named `forbidden`.
    #[derive(Debug)]
    struct OnlyNot;

    impl Authorizer for OnlyNot {
        fn authorize(&self, _user: &UserInfo, a: &Attributes) -> Decision {
            assert_eq!(a.verb, "impersonate");
            if a.name == "forbidden" {
                Decision::Deny(String::new())
            } else if a.name == "silent" {
                Decision::NoOpinion
            } else {
                Decision::Allow
            }
        }

        fn rules_for(&self, _user: &UserInfo, _namespace: &str) -> RuleSet {
            RuleSet::default()
        }
    }

    fn admin() -> UserInfo {
        UserInfo {
            name: "admin".into(),
            groups: vec!["system:masters".into(), AUTHENTICATED_GROUP.into()],
            ..UserInfo::default()
        }
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).expect("name"),
                v.parse().expect("value"),
            );
        }
        h
    }

    #[test]
    fn impersonated_users() {
        let run = |pairs: &[(&str, &str)]| impersonate(&OnlyNot, admin(), &headers(pairs));
        assert_eq!(run(&[]).expect("no headers"), admin());
        let jane = run(&[
            ("Impersonate-User", "jane"),
            ("Impersonate-Group", "devs"),
            ("Impersonate-Group", "ops"),
            ("Impersonate-Uid", "42"),
            ("Impersonate-Extra-Scopes", "a"),
            ("Impersonate-Extra-Scopes", "b"),
            ("Impersonate-Extra-acme.com%2Fproject", "x"),
        ])
        .expect("jane");
        assert_eq!(jane.name, "jane");
        assert_eq!(jane.uid, "42");
        assert_eq!(jane.groups, ["devs", "ops", AUTHENTICATED_GROUP]);
        assert_eq!(jane.extra["scopes"], ["a", "b"]);
        assert_eq!(jane.extra["acme.com/project"], ["x"]);
        let bare = run(&[("Impersonate-User", "bob")]).expect("bob");
        assert_eq!(bare.groups, [AUTHENTICATED_GROUP]);
        let unauth = run(&[
            ("Impersonate-User", "bob"),
            ("Impersonate-Group", "system:unauthenticated"),
        ])
        .expect("bob");
        assert_eq!(unauth.groups, ["system:unauthenticated"]);
        let anon = run(&[("Impersonate-User", "system:anonymous")]).expect("anon");
        assert_eq!(anon.groups, ["system:unauthenticated"]);
        let sa = run(&[(
            "Impersonate-User",
            "system:serviceaccount:kube-system:builder",
        )])
        .expect("sa");
        assert_eq!(
            sa.groups,
            [
                "system:serviceaccounts",
                "system:serviceaccounts:kube-system",
                AUTHENTICATED_GROUP
            ]
        );
    }

    #[test]
    fn denials_and_malformed_requests() {
        let run = |pairs: &[(&str, &str)]| impersonate(&OnlyNot, admin(), &headers(pairs));
        let denied = run(&[("Impersonate-User", "forbidden")]).expect_err("denied");
        assert_eq!(denied.code, 403);
        assert_eq!(
            denied.message,
            "users \"forbidden\" is forbidden: User \"admin\" cannot impersonate resource \"users\" in API group \"\" at the cluster scope"
        );
        let group = run(&[
            ("Impersonate-User", "jane"),
            ("Impersonate-Group", "silent"),
        ])
        .expect_err("group");
        assert!(
            group
                .message
                .contains("cannot impersonate resource \"groups\""),
            "{}",
            group.message
        );
        let extra = run(&[
            ("Impersonate-User", "jane"),
            ("Impersonate-Extra-k", "forbidden"),
        ])
        .expect_err("extra");
        assert!(
            extra
                .message
                .contains("resource \"userextras/k\" in API group \"authentication.k8s.io\""),
            "{}",
            extra.message
        );
        let no_user = run(&[("Impersonate-Group", "devs")]).expect_err("no user");
        assert_eq!(no_user.code, 500);
        assert!(no_user.message.contains("without impersonating a user"));
    }

    #[test]
    fn service_account_names() {
        assert_eq!(
            service_account("system:serviceaccount:ns:sa"),
            Some(("ns".into(), "sa".into()))
        );
        assert_eq!(service_account("system:serviceaccount:ns"), None);
        assert_eq!(service_account("jane"), None);
        assert_eq!(unescape("a%2Fb"), "a/b");
        assert_eq!(unescape("bad%zz"), "bad%zz");
    }
}
