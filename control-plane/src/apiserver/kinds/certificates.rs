//! certificates.k8s.io/v1 CertificateSigningRequests: the main spec checks (a PEM
//! certificate request, a signer, usages, a minimum duration), the `spec.signerName` field
//! selector and the table (status from the Approved/Denied/Failed conditions and the issued
//! certificate). The requesting user's name and groups come from the request context, so
//! the caller fills `spec.username`, `spec.uid`, `spec.groups` and `spec.extra` on create.

use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use kwk_api::field::{FieldError, invalid, not_supported, required};
use kwk_api::names;
use serde_json::{Value, json};

use super::cells::{age_column, col, name_column};
use super::util::{arr, s, since, validate_typed};
use super::{Column, KindStrategy, human_duration, name_of};
use crate::apiserver::errors::Cause;

#[derive(Debug, Default, Clone, Copy)]
pub struct CertificateSigningRequestStrategy;

const USAGES: &[&str] = &[
    "any",
    "cert sign",
    "client auth",
    "code signing",
    "content commitment",
    "crl sign",
    "data encipherment",
    "decipher only",
    "digital signature",
    "email protection",
    "encipher only",
    "ipsec end system",
    "ipsec tunnel",
    "ipsec user",
    "key agreement",
    "key encipherment",
    "microsoft sgc",
    "netscape sgc",
    "ocsp signing",
    "s/mime",
    "server auth",
    "signing",
    "timestamping",
];

fn validate_csr(
    new: &CertificateSigningRequest,
    _old: Option<&CertificateSigningRequest>,
) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let spec = &new.spec;
    let request = String::from_utf8_lossy(&spec.request.0);
    if spec.request.0.is_empty() {
        errs.push(required("spec.request", ""));
    } else if !request.contains("-----BEGIN CERTIFICATE REQUEST-----") {
        errs.push(invalid(
            "spec.request",
            kwk_api::field::Shown::Raw("[]byte{...}".to_string()),
            "PEM block type must be CERTIFICATE REQUEST",
        ));
    }
    if spec.signer_name.is_empty() {
        errs.push(required("spec.signerName", ""));
    } else {
        let (domain, path) = spec
            .signer_name
            .split_once('/')
            .unwrap_or((&spec.signer_name, ""));
        if path.is_empty() {
            errs.push(invalid(
                "spec.signerName",
                spec.signer_name.as_str(),
                "must be a fully qualified domain and path of the form 'example.com/signer-name'",
            ));
        } else {
            for p in names::dns1123_subdomain_problems(domain) {
                errs.push(invalid("spec.signerName", spec.signer_name.as_str(), &p));
            }
        }
    }
    let usages = spec.usages.as_deref().unwrap_or_default();
    if usages.is_empty() {
        errs.push(required("spec.usages", ""));
    }
    for (i, usage) in usages.iter().enumerate() {
        if !USAGES.contains(&usage.as_str()) {
            errs.push(not_supported(
                &format!("spec.usages[{i}]"),
                usage.as_str(),
                USAGES,
            ));
        }
    }
    if let Some(seconds) = spec.expiration_seconds.filter(|s| *s < 600) {
        errs.push(invalid(
            "spec.expirationSeconds",
            i64::from(seconds),
            "may not specify a duration less than 600 seconds (10 minutes)",
        ));
    }
    errs
}

/// The CONDITION cell: Denied/Approved/Pending, then `,Failed` and `,Issued`.
fn csr_status(object: &Value) -> String {
    let has = |kind: &str| {
        arr(object, "/status/conditions")
            .iter()
            .any(|c| s(c, "/type") == kind)
    };
    let mut status = if has("Denied") {
        "Denied".to_string()
    } else if has("Approved") {
        "Approved".to_string()
    } else {
        "Pending".to_string()
    };
    if has("Failed") {
        status.push_str(",Failed");
    }
    if !s(object, "/status/certificate").is_empty() {
        status.push_str(",Issued");
    }
    status
}

impl KindStrategy for CertificateSigningRequestStrategy {
    fn validate(&self, object: &Value, old: Option<&Value>) -> Vec<Cause> {
        validate_typed(object, old, validate_csr)
    }

    fn columns(&self) -> Vec<Column> {
        vec![
            name_column(),
            age_column(),
            col("SignerName", "string", "The signer asked to sign."),
            col("Requestor", "string", "The user who created the request."),
            col(
                "RequestedDuration",
                "string",
                "The certificate lifetime asked for.",
            ),
            col(
                "Condition",
                "string",
                "Approved, Denied or Pending, and Failed or Issued.",
            ),
        ]
    }

    fn row(&self, object: &Value, now: i64) -> Vec<Value> {
        let signer = match s(object, "/spec/signerName") {
            "" => "<none>",
            v => v,
        };
        let duration = match object
            .pointer("/spec/expirationSeconds")
            .and_then(Value::as_i64)
        {
            Some(seconds) => human_duration(seconds),
            None => "<none>".to_string(),
        };
        vec![
            json!(name_of(object)),
            json!(since(s(object, "/metadata/creationTimestamp"), now)),
            json!(signer),
            json!(s(object, "/spec/username")),
            json!(duration),
            json!(csr_status(object)),
        ]
    }

    fn field(&self, object: &Value, label: &str) -> Option<String> {
        (label == "spec.signerName").then(|| s(object, "/spec/signerName").to_string())
    }
}
