//! Roles, ClusterRoles, RoleBindings, ClusterRoleBindings.

use serde_json::json;

use super::*;

const G: &str = "rbac.authorization.k8s.io";

#[test]
fn roles() {
    let role = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": "reader", "namespace": "d", "creationTimestamp": "2025-05-31T12:00:00Z"},
        "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}]});
    assert_eq!(causes(G, "Role", role.clone(), None), Vec::<String>::new());
    assert_eq!(
        row(G, "Role", &role),
        [json!("reader"), json!("2025-05-31T12:00:00Z")]
    );
    assert_eq!(
        column_names(G, "ClusterRole"),
        [("Name", 0), ("Created At", 0)]
    );
    let bad = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "r"},
        "rules": [{"resources": ["pods"], "verbs": []}, {"nonResourceURLs": ["/healthz"], "verbs": ["get"]}]});
    let got = causes(G, "Role", bad, None);
    assert_cause(
        &got,
        "rules[0].verbs: Required value: verbs must contain at least one value",
    );
    assert_cause(
        &got,
        "rules[0].apiGroups: Required value: resource rules must supply at least one api group",
    );
    assert_cause(
        &got,
        "rules[1].nonResourceURLs: Invalid value: []string[\"/healthz\"]: namespaced rules cannot apply to non-resource URLs",
    );
    let cluster = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "system:health"},
        "rules": [{"nonResourceURLs": ["/healthz"], "verbs": ["get"]}]});
    assert_eq!(
        causes(G, "ClusterRole", cluster, None),
        Vec::<String>::new()
    );
}

#[test]
fn bindings() {
    let binding = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": "admins", "creationTimestamp": ago(3600 * 5)},
        "roleRef": {"kind": "ClusterRole", "name": "cluster-admin"},
        "subjects": [{"kind": "User", "name": "alice"}, {"kind": "Group", "name": "system:masters"},
                     {"kind": "ServiceAccount", "name": "deployer", "namespace": "ci"}]});
    let d = defaulted(G, "ClusterRoleBinding", binding);
    assert_eq!(d["roleRef"]["apiGroup"], G);
    assert_eq!(d["subjects"][0]["apiGroup"], G);
    assert!(d["subjects"][2].get("apiGroup").is_none());
    assert_eq!(
        causes(G, "ClusterRoleBinding", d.clone(), None),
        Vec::<String>::new()
    );
    assert_eq!(
        row(G, "ClusterRoleBinding", &d),
        [
            json!("admins"),
            json!("ClusterRole/cluster-admin"),
            json!("5h"),
            json!("alice"),
            json!("system:masters"),
            json!("ci/deployer")
        ]
    );
    let mut other_role = d.clone();
    other_role["roleRef"]["name"] = json!("view");
    assert_eq!(
        causes(G, "ClusterRoleBinding", other_role, Some(d.clone())),
        [
            "roleRef: Invalid value: rbac.RoleRef{APIGroup:\"rbac.authorization.k8s.io\", Kind:\"ClusterRole\", Name:\"view\"}: cannot change roleRef [FieldValueInvalid]"
        ]
    );
    let mut role_kind = d;
    role_kind["roleRef"]["kind"] = json!("Role");
    role_kind["subjects"] =
        json!([{"kind": "ServiceAccount", "name": "x"}, {"kind": "Robot", "name": "r"}]);
    let got = causes(G, "ClusterRoleBinding", role_kind, None);
    assert_cause(
        &got,
        "roleRef.kind: Unsupported value: \"Role\": supported values: \"ClusterRole\"",
    );
    assert_cause(&got, "subjects[0].namespace: Required value");
    assert_cause(&got, "subjects[1].kind: Unsupported value: \"Robot\"");
}
