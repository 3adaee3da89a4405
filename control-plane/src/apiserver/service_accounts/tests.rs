//! Table tests of issuing and verifying tokens: a good token authenticates with the upstream
//! user layout; every way of being wrong (expired, early, wrong audience or issuer, another
//! key, `alg=none`, HS256, tampered payload, deleted or recreated ServiceAccount, deleted or
//! recreated or long-deleting bound pod or secret) is refused with its reason.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

use super::claims::{
    self, BoundObject, EXTRA_CREDENTIAL_ID, EXTRA_NODE_NAME, EXTRA_POD_NAME, EXTRA_POD_UID,
    ObjectRef, Observed, TokenError, TokenSpec,
};
use super::jws::{JwsError, tests::new_key};
use super::token_request::{BoundRef, parse};
use super::{DEFAULT_ISSUER, TokenAuthority};

const NOW: i64 = 1_700_000_000;

fn authority() -> TokenAuthority {
    TokenAuthority::new(new_key(), DEFAULT_ISSUER, Vec::new())
}

fn object(name: &str, uid: &str) -> Value {
    json!({"metadata": {"name": name, "uid": uid}})
}

fn spec(bound: BoundObject) -> TokenSpec {
    TokenSpec {
        issuer: DEFAULT_ISSUER.into(),
        namespace: "ns1".into(),
        service_account: ObjectRef {
            name: "default".into(),
            uid: "sa-uid".into(),
        },
        bound,
        audiences: vec![DEFAULT_ISSUER.into()],
        expiration_seconds: 600,
    }
}

fn pod_bound() -> BoundObject {
    BoundObject::Pod {
        pod: ObjectRef {
            name: "web".into(),
            uid: "pod-uid".into(),
        },
        node: Some(ObjectRef {
            name: "n1".into(),
            uid: "node-uid".into(),
        }),
    }
}

fn observed_all() -> Observed {
    Observed {
        service_account: Some(object("default", "sa-uid")),
        pod: Some(object("web", "pod-uid")),
        secret: Some(object("s", "secret-uid")),
    }
}

/// Signs `spec`'s claims at `issued` and authenticates the token at `at` against `observed`.
fn round_trip(
    signer: &TokenAuthority,
    verifier: &TokenAuthority,
    spec: &TokenSpec,
    issued: i64,
    at: i64,
    observed: &Observed,
) -> Result<crate::apiserver::authn::UserInfo, TokenError> {
    let token = signer
        .sign(&claims::build(spec, issued, Some("jti-1".into())))
        .expect("sign");
    let (claims, _) = verifier.verify(&token, None, at)?;
    claims::check_objects(&claims, observed, at)
}

#[test]
fn claims_have_the_upstream_layout() {
    let claims = claims::build(&spec(pod_bound()), NOW, Some("j".into()));
    assert_eq!(
        serde_json::to_value(&claims).expect("json"),
        json!({
            "iss": DEFAULT_ISSUER,
            "sub": "system:serviceaccount:ns1:default",
            "aud": [DEFAULT_ISSUER],
            "exp": NOW + 600, "iat": NOW, "nbf": NOW, "jti": "j",
            "kubernetes.io": {
                "namespace": "ns1",
                "serviceaccount": {"name": "default", "uid": "sa-uid"},
                "pod": {"name": "web", "uid": "pod-uid"},
                "node": {"name": "n1", "uid": "node-uid"},
            },
        })
    );
}

#[test]
fn a_good_token_authenticates_as_the_service_account() {
    let a = authority();
    let user = round_trip(&a, &a, &spec(pod_bound()), NOW, NOW + 5, &observed_all()).expect("ok");
    assert_eq!(user.name, "system:serviceaccount:ns1:default");
    assert_eq!(user.uid, "sa-uid");
    assert_eq!(
        user.groups,
        [
            "system:serviceaccounts",
            "system:serviceaccounts:ns1",
            "system:authenticated"
        ]
    );
    assert_eq!(user.extra[EXTRA_POD_NAME], ["web"]);
    assert_eq!(user.extra[EXTRA_POD_UID], ["pod-uid"]);
    assert_eq!(user.extra[EXTRA_NODE_NAME], ["n1"]);
    assert_eq!(user.extra[EXTRA_CREDENTIAL_ID], ["JTI=jti-1"]);
    // Unbound and secret-bound tokens too; leeway on both ends.
    let unbound = round_trip(
        &a,
        &a,
        &spec(BoundObject::None),
        NOW,
        NOW + 659,
        &observed_all(),
    );
    assert!(unbound.is_ok(), "{unbound:?}");
    let secret = BoundObject::Secret(ObjectRef {
        name: "s".into(),
        uid: "secret-uid".into(),
    });
    assert!(round_trip(&a, &a, &spec(secret), NOW, NOW - 59, &observed_all()).is_ok());
}

#[test]
fn bad_tokens_are_refused_with_their_reason() {
    let a = authority();
    let other = authority();
    let mut foreign =
        serde_json::to_value(claims::build(&spec(pod_bound()), NOW, None)).expect("json");
    foreign["iss"] = json!("https://elsewhere");
    let mut wrong_aud = spec(pod_bound());
    wrong_aud.audiences = vec!["vault".into()];
    let deleted = |f: fn(&mut Observed)| {
        let mut o = observed_all();
        f(&mut o);
        o
    };
    let secret_spec = spec(BoundObject::Secret(ObjectRef {
        name: "s".into(),
        uid: "secret-uid".into(),
    }));
    let long_deleting = deleted(|o| {
        o.pod = Some(json!({"metadata": {"name": "web", "uid": "pod-uid",
            "deletionTimestamp": "2023-11-14T22:00:00Z"}}));
    });
    let cases: Vec<(&str, Result<_, TokenError>, &str)> = vec![
        (
            "expired",
            round_trip(
                &a,
                &a,
                &spec(pod_bound()),
                NOW,
                NOW + 600 + 61,
                &observed_all(),
            ),
            "token has expired",
        ),
        (
            "not yet valid",
            round_trip(&a, &a, &spec(pod_bound()), NOW, NOW - 61, &observed_all()),
            "not valid yet",
        ),
        (
            "wrong audience",
            round_trip(&a, &a, &wrong_aud, NOW, NOW, &observed_all()),
            "[\"vault\"] are not any of the accepted audiences",
        ),
        (
            "signed with another key",
            round_trip(&other, &a, &spec(pod_bound()), NOW, NOW, &observed_all()),
            "invalid signature",
        ),
        (
            "another issuer",
            a.verify(&a.key.sign(&foreign).expect("sign"), None, NOW)
                .map(|(c, _)| claims::user_of(&c)),
            "issued by \"https://elsewhere\"",
        ),
        (
            "deleted service account",
            round_trip(
                &a,
                &a,
                &spec(pod_bound()),
                NOW,
                NOW,
                &deleted(|o| o.service_account = None),
            ),
            "serviceaccount ns1/default the token is bound to no longer exists",
        ),
        (
            "recreated service account",
            round_trip(
                &a,
                &a,
                &spec(pod_bound()),
                NOW,
                NOW,
                &deleted(|o| o.service_account = Some(object("default", "new"))),
            ),
            "serviceaccount ns1/default has uid new, not sa-uid",
        ),
        (
            "deleted bound pod",
            round_trip(
                &a,
                &a,
                &spec(pod_bound()),
                NOW,
                NOW,
                &deleted(|o| o.pod = None),
            ),
            "pod ns1/web the token is bound to no longer exists",
        ),
        (
            "recreated bound pod",
            round_trip(
                &a,
                &a,
                &spec(pod_bound()),
                NOW,
                NOW,
                &deleted(|o| o.pod = Some(object("web", "pod-2"))),
            ),
            "pod ns1/web has uid pod-2, not pod-uid",
        ),
        (
            "bound pod past its grace period",
            round_trip(&a, &a, &spec(pod_bound()), NOW, NOW, &long_deleting),
            "pod ns1/web the token is bound to is being deleted",
        ),
        (
            "deleted bound secret",
            round_trip(
                &a,
                &a,
                &secret_spec,
                NOW,
                NOW,
                &deleted(|o| o.secret = None),
            ),
            "secret ns1/s the token is bound to no longer exists",
        ),
    ];
    for (name, result, reason) in cases {
        match result {
            Ok(user) => panic!("{name}: accepted as {user:?}"),
            Err(e) => assert!(
                e.to_string().contains(reason),
                "{name}: {e} (want {reason:?})"
            ),
        }
    }
}

#[test]
fn forged_headers_and_payloads_are_refused_before_the_store() {
    let a = authority();
    let claims = serde_json::to_value(claims::build(&spec(pod_bound()), NOW, None)).expect("json");
    let b64 = |v: &Value| URL_SAFE_NO_PAD.encode(v.to_string());
    let none = format!("{}.{}.", b64(&json!({"alg": "none"})), b64(&claims));
    assert_eq!(
        a.verify(&none, None, NOW).err(),
        Some(TokenError::Jws(JwsError::Algorithm("none".into())))
    );
    let hs = format!(
        "{}.{}.AAAA",
        b64(&json!({"alg": "HS256", "typ": "JWT"})),
        b64(&claims)
    );
    assert_eq!(
        a.verify(&hs, None, NOW).err(),
        Some(TokenError::Jws(JwsError::Algorithm("HS256".into())))
    );
    let good = a
        .sign(&serde_json::from_value(claims.clone()).expect("claims"))
        .expect("sign");
    let mut forged = claims.clone();
    forged["kubernetes.io"]["serviceaccount"]["name"] = json!("admin");
    forged["sub"] = json!("system:serviceaccount:ns1:admin");
    let parts: Vec<&str> = good.split('.').collect();
    let tampered = format!("{}.{}.{}", parts[0], b64(&forged), parts[2]);
    assert_eq!(
        a.verify(&tampered, None, NOW).err(),
        Some(TokenError::Jws(JwsError::Signature))
    );
    // Signed by us but naming a subject other than its kubernetes.io claims.
    let mut mismatched = claims;
    mismatched["sub"] = json!("system:serviceaccount:kube-system:admin");
    let token = a.key.sign(&mismatched).expect("sign");
    assert!(matches!(
        a.verify(&token, None, NOW),
        Err(TokenError::Subject(_))
    ));
    // Audiences asked by a TokenReview replace the apiserver's.
    let token = a
        .sign(&claims::build(&spec(pod_bound()), NOW, None))
        .expect("sign");
    let vault = ["vault".to_string()];
    assert!(matches!(
        a.verify(&token, Some(&vault), NOW),
        Err(TokenError::Audience(_))
    ));
}

#[test]
fn token_requests_are_validated_naming_the_field() {
    let invalid = |body: Value| parse(&body, "ns1", "default").expect_err("refused");
    let short = invalid(json!({"spec": {"expirationSeconds": 599}}));
    assert_eq!(short.code, 422);
    assert_eq!(short.details.causes[0].field, "spec.expirationSeconds");
    assert!(
        short.message.contains("less than 10 minutes"),
        "{}",
        short.message
    );
    let huge = invalid(json!({"spec": {"expirationSeconds": 5_000_000_000_i64}}));
    assert_eq!(huge.details.causes[0].field, "spec.expirationSeconds");
    let name = invalid(json!({"metadata": {"name": "other"}, "spec": {}}));
    assert_eq!(name.details.causes[0].field, "metadata.name");
    let aud = invalid(json!({"spec": {"audiences": "x"}}));
    assert_eq!(aud.details.causes[0].field, "spec.audiences");
    let kind = invalid(
        json!({"spec": {"boundObjectRef": {"kind": "Deployment", "apiVersion": "apps/v1", "name": "d"}}}),
    );
    assert_eq!(kind.code, 400);
    assert!(
        kind.message.contains("spec.boundObjectRef"),
        "{}",
        kind.message
    );
    let no_name = invalid(json!({"spec": {"boundObjectRef": {"kind": "Pod", "apiVersion": "v1"}}}));
    assert_eq!(no_name.details.causes[0].field, "spec.boundObjectRef.name");

    let ok = parse(
        &json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
            "spec": {"boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": "web", "uid": "u"}}}),
        "ns1",
        "default",
    )
    .expect("ok");
    assert_eq!(ok.expiration_seconds, 3600);
    assert!(ok.audiences.is_empty());
    assert_eq!(
        ok.bound,
        Some(BoundRef::Pod {
            name: "web".into(),
            uid: Some("u".into())
        })
    );
}
