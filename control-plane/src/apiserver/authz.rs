//! Authorization: may this user do this? A pluggable [`Authorizer`] (RBAC and the Node
//! authorizer come later); for now [`AlwaysAllow`] admits every authenticated user, and
//! `kubectl auth can-i` / `can-i --list` answer consistently from the same trait.

use super::authn::UserInfo;

/// What a request wants to do (upstream's `authorizer.Attributes`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attributes {
    pub verb: String,
    /// A resource request (`/api`, `/apis`) rather than a non-resource path (`/healthz`).
    pub resource_request: bool,
    pub namespace: String,
    pub api_group: String,
    pub api_version: String,
    pub resource: String,
    pub subresource: String,
    pub name: String,
    /// The URL path, for non-resource requests.
    pub path: String,
}

/// An authorizer's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// Denied, with the reason shown to the client.
    Deny(String),
    /// This authorizer has no opinion (the next one decides; denied if none does).
    NoOpinion,
}

/// One rule of a user's permissions, as `SelfSubjectRulesReview` reports them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceRule {
    pub verbs: Vec<String>,
    pub api_groups: Vec<String>,
    pub resources: Vec<String>,
    pub resource_names: Vec<String>,
}

/// A non-resource URL rule, as `SelfSubjectRulesReview` reports them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NonResourceRule {
    pub verbs: Vec<String>,
    pub non_resource_urls: Vec<String>,
}

/// What a user may do in a namespace.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RuleSet {
    pub resource_rules: Vec<ResourceRule>,
    pub non_resource_rules: Vec<NonResourceRule>,
    /// Whether the list may be missing rules (an authorizer that cannot enumerate).
    pub incomplete: bool,
}

/// Decides requests.
pub trait Authorizer: Send + Sync + std::fmt::Debug {
    fn authorize(&self, user: &UserInfo, attributes: &Attributes) -> Decision;
    /// The rules `user` has in `namespace` (for `SelfSubjectRulesReview`).
    fn rules_for(&self, user: &UserInfo, namespace: &str) -> RuleSet;
}

/// Allows every authenticated request.
#[derive(Debug, Default, Clone, Copy)]
pub struct AlwaysAllow;

impl Authorizer for AlwaysAllow {
    fn authorize(&self, _user: &UserInfo, _attributes: &Attributes) -> Decision {
        Decision::Allow
    }

    fn rules_for(&self, _user: &UserInfo, _namespace: &str) -> RuleSet {
        let all = || vec!["*".to_string()];
        RuleSet {
            resource_rules: vec![ResourceRule {
                verbs: all(),
                api_groups: all(),
                resources: all(),
                resource_names: Vec::new(),
            }],
            non_resource_rules: vec![NonResourceRule {
                verbs: all(),
                non_resource_urls: all(),
            }],
            incomplete: false,
        }
    }
}
