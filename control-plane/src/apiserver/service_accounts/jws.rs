//! Compact JWS (RFC 7515) with exactly one algorithm, ES256 (ECDSA P-256 with SHA-256, the
//! signature as the 64-byte `r || s`): signing with the PKCS#8 key of `sa.key`, verifying with
//! its public key. The header's `alg` must be `ES256` — `none`, `HS256` (the classic
//! public-key-as-HMAC-secret confusion) or anything else is refused before any crypto runs.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::SystemRandom;
use ring::signature::{
    ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair,
    UnparsedPublicKey,
};
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// The one algorithm tokens are signed and accepted with.
pub const ALGORITHM: &str = "ES256";

/// The DER prefix of a P-256 SubjectPublicKeyInfo in front of the 65-byte uncompressed point
/// (`SEQUENCE { SEQUENCE { id-ecPublicKey, prime256v1 }, BIT STRING }`).
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

/// Why a signing key could not be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("not a PEM private key: {0}")]
    Pem(String),
    #[error("only ECDSA P-256 keys in PKCS#8 (\"BEGIN PRIVATE KEY\") are supported for ES256")]
    NotPkcs8,
    #[error("not an ECDSA P-256 PKCS#8 key: {0}")]
    Rejected(String),
}

/// Why a compact JWS was refused.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum JwsError {
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    #[error("unsupported signing algorithm {0:?} (only {ALGORITHM} is accepted)")]
    Algorithm(String),
    #[error("invalid signature")]
    Signature,
}

/// The ES256 signing key, and the public key that verifies what it signs.
pub struct SigningKey {
    pair: EcdsaKeyPair,
    rng: SystemRandom,
    /// The uncompressed public point (what ring verifies with).
    public: Vec<u8>,
    /// Upstream's key id: base64url(SHA-256(SubjectPublicKeyInfo DER)).
    kid: String,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// The key of a PEM PKCS#8 document (`sa.key`).
    pub fn from_pem(pem: &str) -> Result<Self, KeyError> {
        let der = PrivateKeyDer::from_pem_slice(pem.as_bytes())
            .map_err(|e| KeyError::Pem(e.to_string()))?;
        let PrivateKeyDer::Pkcs8(pkcs8) = der else {
            return Err(KeyError::NotPkcs8);
        };
        let rng = SystemRandom::new();
        let pair = EcdsaKeyPair::from_pkcs8(
            &ECDSA_P256_SHA256_FIXED_SIGNING,
            pkcs8.secret_pkcs8_der(),
            &rng,
        )
        .map_err(|e| KeyError::Rejected(e.to_string()))?;
        let public = pair.public_key().as_ref().to_vec();
        let mut spki = P256_SPKI_PREFIX.to_vec();
        spki.extend_from_slice(&public);
        let kid = URL_SAFE_NO_PAD.encode(Sha256::digest(&spki));
        Ok(Self {
            pair,
            rng,
            public,
            kid,
        })
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// `header.payload.signature` over the JSON `claims`.
    pub fn sign(&self, claims: &Value) -> Result<String, JwsError> {
        let header = json!({"alg": ALGORITHM, "kid": self.kid});
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature = self
            .pair
            .sign(&self.rng, input.as_bytes())
            .map_err(|_| JwsError::Signature)?;
        Ok(format!(
            "{input}.{}",
            URL_SAFE_NO_PAD.encode(signature.as_ref())
        ))
    }

    /// The payload of `token` as JSON if its header names ES256 and the signature verifies
    /// with this key's public key.
    pub fn verify(&self, token: &str) -> Result<Value, JwsError> {
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(JwsError::Malformed("not three dot-separated parts"));
        };
        let header: Value = decode_json(header).ok_or(JwsError::Malformed("header"))?;
        match header.get("alg").and_then(Value::as_str) {
            Some(ALGORITHM) => {}
            Some(other) => return Err(JwsError::Algorithm(other.to_string())),
            None => return Err(JwsError::Algorithm(String::new())),
        }
        // `crit` names extensions the verifier must understand; there are none.
        if header.get("crit").is_some() {
            return Err(JwsError::Malformed("unsupported critical header"));
        }
        let signature = URL_SAFE_NO_PAD
            .decode(signature)
            .map_err(|_| JwsError::Malformed("signature encoding"))?;
        let signed = &token[..header_len(token)];
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &self.public)
            .verify(signed.as_bytes(), &signature)
            .map_err(|_| JwsError::Signature)?;
        decode_json(payload).ok_or(JwsError::Malformed("payload"))
    }
}

/// The length of `header.payload` (everything before the last dot).
fn header_len(token: &str) -> usize {
    token.rfind('.').unwrap_or_default()
}

fn decode_json(part: &str) -> Option<Value> {
    let bytes = URL_SAFE_NO_PAD.decode(part).ok()?;
    serde_json::from_slice(&bytes).ok().filter(Value::is_object)
}

/// Whether `token` has the shape of a compact JWS (three base64url parts): a cheap test
/// before any decoding, so that static tokens never pay for JWT parsing.
pub fn looks_like_jws(token: &str) -> bool {
    token.bytes().filter(|b| *b == b'.').count() == 2
        && token.starts_with("eyJ")
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A fresh P-256 PKCS#8 key as PEM (what `kwk-pki` writes to `sa.key`).
    pub(crate) fn new_key() -> SigningKey {
        let key = rcgen::KeyPair::generate().expect("generate");
        SigningKey::from_pem(&key.serialize_pem()).expect("load")
    }

    fn unsigned(header: &Value, claims: &Value) -> String {
        format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        )
    }

    #[test]
    fn signs_and_verifies_round_trip() {
        let key = new_key();
        let claims = json!({"sub": "x", "n": 1});
        let token = key.sign(&claims).expect("sign");
        assert!(looks_like_jws(&token), "{token}");
        assert_eq!(key.verify(&token), Ok(claims));
        let header = decode_json(token.split('.').next().expect("header")).expect("json");
        assert_eq!(header, json!({"alg": "ES256", "kid": key.kid()}));
    }

    #[test]
    fn refuses_other_keys_algorithms_and_tampering() {
        let key = new_key();
        let other = new_key();
        let claims = json!({"sub": "x"});
        let token = other.sign(&claims).expect("sign");
        assert_eq!(key.verify(&token), Err(JwsError::Signature), "another key");

        let none = format!("{}.", unsigned(&json!({"alg": "none"}), &claims));
        assert_eq!(key.verify(&none), Err(JwsError::Algorithm("none".into())));
        let hs = format!("{}.c2ln", unsigned(&json!({"alg": "HS256"}), &claims));
        assert_eq!(key.verify(&hs), Err(JwsError::Algorithm("HS256".into())));

        let good = key.sign(&claims).expect("sign");
        let parts: Vec<&str> = good.split('.').collect();
        let forged = URL_SAFE_NO_PAD.encode(json!({"sub": "admin"}).to_string());
        let tampered = format!("{}.{forged}.{}", parts[0], parts[2]);
        assert_eq!(key.verify(&tampered), Err(JwsError::Signature), "payload");
        assert!(matches!(key.verify("a.b"), Err(JwsError::Malformed(_))));
        assert!(matches!(
            key.verify(&format!("{good}.x")),
            Err(JwsError::Malformed(_))
        ));
    }

    #[test]
    fn only_p256_pkcs8_keys_load() {
        let rsa_pkcs1 = "-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n";
        assert_eq!(
            SigningKey::from_pem(rsa_pkcs1).err(),
            Some(KeyError::NotPkcs8)
        );
        assert!(matches!(
            SigningKey::from_pem("garbage"),
            Err(KeyError::Pem(_))
        ));
    }
}
