//! Authentication: who sent a request. x509 client certificates (CN = user name, each O = a
//! group) verified against the cluster CA during the TLS handshake, bearer tokens from a
//! static token file (upstream's `--token-auth-file` CSV: `token,user,uid[,"group1,group2"]`),
//! and bound service-account JWTs (see [`super::service_accounts`]: verified here, their
//! bound objects checked against the store by the handler). Anything else is anonymous, which
//! the server answers with 401.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use x509_parser::prelude::{FromDer, X509Certificate};

use super::service_accounts::TokenAuthority;
use super::service_accounts::claims::{Claims, TokenError};
use super::service_accounts::jws::looks_like_jws;

/// The group every authenticated user is in.
pub const AUTHENTICATED_GROUP: &str = "system:authenticated";

/// An authenticated user (upstream's `user.Info`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UserInfo {
    pub name: String,
    pub uid: String,
    pub groups: Vec<String>,
    pub extra: BTreeMap<String, Vec<String>>,
}

impl UserInfo {
    fn new(name: String, uid: String, mut groups: Vec<String>) -> Self {
        if !groups.iter().any(|g| g == AUTHENTICATED_GROUP) {
            groups.push(AUTHENTICATED_GROUP.to_string());
        }
        Self {
            name,
            uid,
            groups,
            extra: BTreeMap::new(),
        }
    }
}

/// Why the token file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} line {line}: {reason}")]
    Invalid {
        path: PathBuf,
        line: usize,
        reason: String,
    },
}

/// Bearer tokens from a static token file.
#[derive(Debug, Default, Clone)]
pub struct TokenFile {
    users: BTreeMap<String, UserInfo>,
}

impl TokenFile {
    pub fn load(path: &Path) -> Result<Self, TokenFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| TokenFileError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text).map_err(|(line, reason)| TokenFileError::Invalid {
            path: path.to_path_buf(),
            line,
            reason,
        })
    }

    /// Parses the CSV text; on error, the 1-based line and why.
    pub fn parse(text: &str) -> Result<Self, (usize, String)> {
        let mut users = BTreeMap::new();
        for (index, line) in text.lines().enumerate() {
            let line_no = index + 1;
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let fields = split_csv(line).map_err(|e| (line_no, e))?;
            if fields.len() < 3 {
                return Err((
                    line_no,
                    "expected at least 3 columns: token,user,uid".to_string(),
                ));
            }
            let [token, user, uid] = [&fields[0], &fields[1], &fields[2]];
            if token.is_empty() || user.is_empty() {
                return Err((line_no, "token and user must not be empty".to_string()));
            }
            let groups = fields
                .get(3)
                .map(|g| {
                    g.split(',')
                        .map(str::trim)
                        .filter(|g| !g.is_empty())
                        .map(String::from)
                        .collect()
                })
                .unwrap_or_default();
            if users.contains_key(token.as_str()) {
                return Err((line_no, format!("duplicate token for user {user:?}")));
            }
            users.insert(
                token.clone(),
                UserInfo::new(user.clone(), uid.clone(), groups),
            );
        }
        Ok(Self { users })
    }

    fn lookup(&self, token: &str) -> Option<&UserInfo> {
        self.users.get(token)
    }
}

/// Splits one CSV line (double quotes group a field; `""` inside quotes is a quote).
fn split_csv(line: &str) -> Result<Vec<String>, String> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut chars = line.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (false, '"') if field.is_empty() => quoted = true,
            (false, ',') => fields.push(std::mem::take(&mut field)),
            (_, c) => field.push(c),
        }
    }
    if quoted {
        return Err("unterminated quote".to_string());
    }
    fields.push(field);
    Ok(fields)
}

/// What a request presented.
#[derive(Debug, Clone, Copy, Default)]
pub struct Credentials<'a> {
    /// The verified client certificate (DER), if the TLS peer sent one.
    pub client_cert: Option<&'a [u8]>,
    /// The `Authorization` header value.
    pub authorization: Option<&'a str>,
}

/// Authenticates requests.
#[derive(Debug, Default, Clone)]
pub struct Authenticator {
    tokens: TokenFile,
    /// Verifies service-account JWTs (none: JWTs are not accepted).
    service_accounts: Option<Arc<TokenAuthority>>,
}

/// Who the credentials name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Authenticated {
    /// Fully authenticated.
    User(UserInfo),
    /// A service-account token with a valid signature and claims whose ServiceAccount (and
    /// bound Pod or Secret) must still be checked in the store
    /// ([`super::service_accounts::resolve`]).
    ServiceAccount {
        claims: Box<Claims>,
        /// The token's audiences that were accepted.
        audiences: Vec<String>,
    },
}

/// Why credentials were refused (the server answers 401 either way).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthnError {
    #[error("no credentials")]
    Anonymous,
    #[error("invalid bearer token")]
    InvalidToken,
    #[error("client certificate: {0}")]
    BadCertificate(String),
    #[error("service account token: {0}")]
    ServiceAccount(#[from] TokenError),
}

impl Authenticator {
    pub fn new(tokens: TokenFile) -> Self {
        Self {
            tokens,
            service_accounts: None,
        }
    }

    /// The same authenticator accepting the service-account tokens `authority` signs.
    pub fn with_service_accounts(mut self, authority: Arc<TokenAuthority>) -> Self {
        self.service_accounts = Some(authority);
        self
    }

    /// What issues and verifies service-account tokens, if anything.
    pub fn service_accounts(&self) -> Option<&Arc<TokenAuthority>> {
        self.service_accounts.as_ref()
    }

    /// The user behind the credentials. A bearer token, when present, is checked first (as
    /// upstream's union authenticator: any success wins; a bad token with a good certificate
    /// still authenticates by the certificate). A service-account JWT is checked against
    /// `audiences` (the apiserver's when `None`) and the clock `now` (Unix seconds).
    pub fn authenticate(
        &self,
        credentials: Credentials<'_>,
        audiences: Option<&[String]>,
        now: i64,
    ) -> Result<Authenticated, AuthnError> {
        let token_result = credentials
            .authorization
            .and_then(bearer_token)
            .map(|token| self.authenticate_token(token, audiences, now));
        if let Some(Ok(found)) = token_result {
            return Ok(found);
        }
        if let Some(der) = credentials.client_cert {
            return user_from_certificate(der).map(Authenticated::User);
        }
        match token_result {
            Some(Err(e)) => Err(e),
            _ => Err(AuthnError::Anonymous),
        }
    }

    fn authenticate_token(
        &self,
        token: &str,
        audiences: Option<&[String]>,
        now: i64,
    ) -> Result<Authenticated, AuthnError> {
        if let Some(user) = self.tokens.lookup(token) {
            return Ok(Authenticated::User(user.clone()));
        }
        match &self.service_accounts {
            Some(authority) if looks_like_jws(token) => {
                let (claims, audiences) = authority.verify(token, audiences, now)?;
                Ok(Authenticated::ServiceAccount {
                    claims: Box::new(claims),
                    audiences,
                })
            }
            _ => Err(AuthnError::InvalidToken),
        }
    }
}

fn bearer_token(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// The user named by a (TLS-verified) client certificate: CN → name, O → groups.
pub fn user_from_certificate(der: &[u8]) -> Result<UserInfo, AuthnError> {
    let (_, cert) =
        X509Certificate::from_der(der).map_err(|e| AuthnError::BadCertificate(e.to_string()))?;
    let subject = cert.subject();
    let name = subject
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .filter(|cn| !cn.is_empty())
        .ok_or_else(|| AuthnError::BadCertificate("no common name".to_string()))?
        .to_string();
    let groups = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok())
        .map(String::from)
        .collect();
    Ok(UserInfo::new(name, String::new(), groups))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::pki;

    #[test]
    fn token_file_parses_upstream_format() {
        let file = TokenFile::parse(
            "# comment\nabc,alice,1001,\"dev,ops\"\nxyz,bob,1002\n\"q,t\",carol,3\n",
        )
        .expect("parse");
        let alice = file.lookup("abc").expect("alice");
        assert_eq!(alice.name, "alice");
        assert_eq!(alice.uid, "1001");
        assert_eq!(alice.groups, ["dev", "ops", AUTHENTICATED_GROUP]);
        assert_eq!(
            file.lookup("xyz").expect("bob").groups,
            [AUTHENTICATED_GROUP]
        );
        assert_eq!(file.lookup("q,t").expect("carol").name, "carol");
    }

    #[test]
    fn token_file_errors_name_the_line() {
        assert_eq!(
            TokenFile::parse("a,b,c\nonly,two\n").err().map(|e| e.0),
            Some(2)
        );
        assert_eq!(TokenFile::parse("\"open,b,c\n").err().map(|e| e.0), Some(1));
        assert_eq!(
            TokenFile::parse("t,a,1\nt,b,2\n").err().map(|e| e.0),
            Some(2)
        );
    }

    #[test]
    fn authenticates_token_then_certificate() {
        let tokens = TokenFile::parse("secret,alice,1\n").expect("parse");
        let authn = Authenticator::new(tokens);
        let authn = |c| authn.authenticate(c, None, 0);
        let ok = authn(Credentials {
            client_cert: None,
            authorization: Some("Bearer secret"),
        });
        assert!(
            matches!(&ok, Ok(Authenticated::User(u)) if u.name == "alice"),
            "{ok:?}"
        );
        assert_eq!(
            authn(Credentials {
                client_cert: None,
                authorization: Some("Bearer wrong"),
            }),
            Err(AuthnError::InvalidToken)
        );
        assert_eq!(authn(Credentials::default()), Err(AuthnError::Anonymous));
        assert_eq!(
            authn(Credentials {
                client_cert: None,
                authorization: Some("Basic Zm9vOmJhcg=="),
            }),
            Err(AuthnError::Anonymous)
        );
    }

    #[test]
    fn certificate_subject_gives_user_and_groups() {
        let ca = pki::generate_ca("test-ca").expect("ca");
        let client = pki::issue_client(&ca, "jane", Some("system:masters")).expect("client");
        let der = rustls_pki_types::pem::PemObject::from_pem_slice(client.cert_pem.as_bytes())
            .map(|c: rustls_pki_types::CertificateDer<'_>| c.to_vec())
            .expect("pem");
        let user = user_from_certificate(&der).expect("user");
        assert_eq!(user.name, "jane");
        assert_eq!(user.groups, ["system:masters", AUTHENTICATED_GROUP]);
    }
}
