//! kwk's cluster PKI, shared by the apiserver (`--pki-dir`, `--generate-pki`) and `kwk init`:
//! a cluster CA, the apiserver serving certificate, client certificates and kubeconfigs, so a
//! first start needs no tooling. Existing files are never overwritten: an operator's own CA or
//! certificates always win, and a missing file is issued from the CA on disk.
//!
//! Layout (kubeadm's names): `ca.crt`/`ca.key`, `apiserver.crt`/`apiserver.key`,
//! `admin.crt`/`admin.key` (CN `kubernetes-admin`, O `system:masters`), `admin.kubeconfig`, and
//! `apiserver-kubelet-client.crt/key` (CN `kube-apiserver-kubelet-client`, O `system:masters`),
//! and `sa.key`/`sa.pub`, the ECDSA P-256 key that signs service-account tokens (PKCS#8 and
//! SubjectPublicKeyInfo PEM; kubeadm's names, though kubeadm makes an RSA key).

pub mod tls;

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use base64::Engine;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use time::{Duration, OffsetDateTime};

/// CA lifetime (as kubeadm: ten years).
const CA_VALIDITY: Duration = Duration::days(3650);
/// Leaf certificate lifetime (as kubeadm: one year).
const LEAF_VALIDITY: Duration = Duration::days(365);

/// Why the PKI could not be loaded or generated.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Cert { path: PathBuf, source: rcgen::Error },
    #[error("generating a certificate for {what}: {source}")]
    Generate {
        what: &'static str,
        source: rcgen::Error,
    },
}

/// The user name of the apiserver's kubelet client certificate (kubeadm's).
pub const KUBELET_CLIENT_USER: &str = "kube-apiserver-kubelet-client";

/// File names inside the PKI directory.
#[derive(Debug, Clone)]
pub struct PkiPaths {
    dir: PathBuf,
}

impl PkiPaths {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }
    pub fn ca_key(&self) -> PathBuf {
        self.dir.join("ca.key")
    }
    pub fn serving_cert(&self) -> PathBuf {
        self.dir.join("apiserver.crt")
    }
    pub fn serving_key(&self) -> PathBuf {
        self.dir.join("apiserver.key")
    }
    pub fn admin_cert(&self) -> PathBuf {
        self.dir.join("admin.crt")
    }
    pub fn admin_key(&self) -> PathBuf {
        self.dir.join("admin.key")
    }
    /// The apiserver's client certificate towards kubelets (`--kubelet-client-certificate`).
    pub fn kubelet_client_cert(&self) -> PathBuf {
        self.dir.join("apiserver-kubelet-client.crt")
    }
    pub fn kubelet_client_key(&self) -> PathBuf {
        self.dir.join("apiserver-kubelet-client.key")
    }
    pub fn admin_kubeconfig(&self) -> PathBuf {
        self.dir.join("admin.kubeconfig")
    }
    /// The service-account token signing key (`--service-account-signing-key-file`).
    pub fn service_account_key(&self) -> PathBuf {
        self.dir.join("sa.key")
    }
    /// Its public key (`--service-account-key-file`).
    pub fn service_account_pub(&self) -> PathBuf {
        self.dir.join("sa.pub")
    }
}

/// A PEM certificate and its PEM private key.
#[derive(Clone)]
pub struct CertAndKey {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for CertAndKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertAndKey").finish_non_exhaustive()
    }
}

/// What to put in generated certificates.
#[derive(Debug, Clone)]
pub struct PkiRequest {
    /// DNS names and IP addresses the serving certificate is valid for (besides `localhost`,
    /// `127.0.0.1`, `::1` and the `kubernetes.default.svc…` names, always added).
    pub serving_hosts: Vec<String>,
    /// The server URL written into `admin.kubeconfig`.
    pub server_url: String,
}

/// Generates whatever is missing in the PKI directory (creating it, mode 0700).
pub fn ensure_pki(paths: &PkiPaths, request: &PkiRequest) -> Result<(), PkiError> {
    create_private_dir(paths.dir())?;
    let ca = if paths.ca_cert().exists() && paths.ca_key().exists() {
        load_pair(&paths.ca_cert(), &paths.ca_key())?
    } else {
        let ca = generate_ca("kwk-ca")?;
        write_private(&paths.ca_key(), ca.key_pem.as_bytes())?;
        write_public(&paths.ca_cert(), ca.cert_pem.as_bytes())?;
        ca
    };
    if !(paths.serving_cert().exists() && paths.serving_key().exists()) {
        let serving = issue_serving(&ca, &request.serving_hosts)?;
        write_private(&paths.serving_key(), serving.key_pem.as_bytes())?;
        write_public(&paths.serving_cert(), serving.cert_pem.as_bytes())?;
    }
    if !(paths.admin_cert().exists() && paths.admin_key().exists()) {
        let admin = issue_client(&ca, "kubernetes-admin", Some("system:masters"))?;
        write_private(&paths.admin_key(), admin.key_pem.as_bytes())?;
        write_public(&paths.admin_cert(), admin.cert_pem.as_bytes())?;
    }
    if !(paths.kubelet_client_cert().exists() && paths.kubelet_client_key().exists()) {
        // kubeadm's name; the group every authorizer admits, so that the kubelet's
        // SubjectAccessReview for nodes/proxy, nodes/log ... allows it.
        let client = issue_client(&ca, KUBELET_CLIENT_USER, Some("system:masters"))?;
        write_private(&paths.kubelet_client_key(), client.key_pem.as_bytes())?;
        write_public(&paths.kubelet_client_cert(), client.cert_pem.as_bytes())?;
    }
    ensure_service_account_key(paths)?;
    if !paths.admin_kubeconfig().exists() {
        let admin = load_pair(&paths.admin_cert(), &paths.admin_key())?;
        let config = kubeconfig(
            &request.server_url,
            &ca.cert_pem,
            &admin,
            "kubernetes-admin",
        );
        write_private(&paths.admin_kubeconfig(), config.as_bytes())?;
    }
    Ok(())
}

/// Generates the service-account signing key if it is missing (a key that exists, the
/// operator's or an earlier start's, is kept: tokens it signed stay valid), and writes its
/// public key next to it if that is missing.
pub fn ensure_service_account_key(paths: &PkiPaths) -> Result<(), PkiError> {
    let gen_err = |source| PkiError::Generate {
        what: "the service-account key",
        source,
    };
    let key_path = paths.service_account_key();
    if key_path.exists() && paths.service_account_pub().exists() {
        // Not parsed: whatever key the operator installed is the apiserver's to judge.
        return Ok(());
    }
    let key = if key_path.exists() {
        let pem = read_string(&key_path)?;
        KeyPair::from_pem(&pem).map_err(|source| PkiError::Cert {
            path: key_path.clone(),
            source,
        })?
    } else {
        // rcgen's default: ECDSA P-256 (ES256), PKCS#8.
        let key = KeyPair::generate().map_err(gen_err)?;
        write_private(&key_path, key.serialize_pem().as_bytes())?;
        key
    };
    if !paths.service_account_pub().exists() {
        write_public(
            &paths.service_account_pub(),
            key.public_key_pem().as_bytes(),
        )?;
    }
    Ok(())
}

/// Reads a certificate and key pair.
pub fn load_pair(cert: &Path, key: &Path) -> Result<CertAndKey, PkiError> {
    Ok(CertAndKey {
        cert_pem: read_string(cert)?,
        key_pem: read_string(key)?,
    })
}

/// A new self-signed CA.
pub fn generate_ca(common_name: &str) -> Result<CertAndKey, PkiError> {
    let gen_err = |source| PkiError::Generate {
        what: "the CA",
        source,
    };
    let key = KeyPair::generate().map_err(gen_err)?;
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(gen_err)?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    set_validity(&mut params, CA_VALIDITY);
    let cert = params.self_signed(&key).map_err(gen_err)?;
    Ok(CertAndKey {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// A serving certificate for the apiserver, signed by `ca`: `hosts` plus the names every
/// apiserver answers to (`localhost`, loopback, `kubernetes.default.svc…`).
pub fn issue_serving(ca: &CertAndKey, hosts: &[String]) -> Result<CertAndKey, PkiError> {
    let mut names: Vec<String> = [
        "localhost",
        "127.0.0.1",
        "::1",
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for host in hosts {
        if !names.contains(host) {
            names.push(host.clone());
        }
    }
    issue_server(ca, "kube-apiserver", &names)
}

/// A serving certificate for `common_name`, valid for exactly `names` (DNS names or IPs),
/// signed by `ca`.
pub fn issue_server(
    ca: &CertAndKey,
    common_name: &str,
    names: &[String],
) -> Result<CertAndKey, PkiError> {
    let gen_err = |source| PkiError::Generate {
        what: "a serving certificate",
        source,
    };
    let mut params = CertificateParams::new(names.to_vec()).map_err(gen_err)?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    sign_leaf(ca, params, "a serving certificate")
}

/// A client certificate for user `common_name` in `group` (x509 authentication: CN is the
/// user name, O the group), signed by `ca`. (One group: the certificate library keeps one
/// value per attribute type; the authenticator reads any number of O attributes.)
pub fn issue_client(
    ca: &CertAndKey,
    common_name: &str,
    group: Option<&str>,
) -> Result<CertAndKey, PkiError> {
    let gen_err = |source| PkiError::Generate {
        what: "a client certificate",
        source,
    };
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(gen_err)?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    if let Some(group) = group {
        params
            .distinguished_name
            .push(DnType::OrganizationName, group);
    }
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    sign_leaf(ca, params, "a client certificate")
}

/// A kubeconfig for `server` authenticating with a client certificate (data embedded).
pub fn kubeconfig(server: &str, ca_pem: &str, client: &CertAndKey, user: &str) -> String {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s.as_bytes());
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: kwk\n  cluster:\n    server: {server}\n    \
         certificate-authority-data: {ca}\nusers:\n- name: {user}\n  user:\n    \
         client-certificate-data: {cert}\n    client-key-data: {key}\ncontexts:\n- name: {user}@kwk\n  \
         context:\n    cluster: kwk\n    user: {user}\ncurrent-context: {user}@kwk\n",
        ca = b64(ca_pem),
        cert = b64(&client.cert_pem),
        key = b64(&client.key_pem),
    )
}

fn sign_leaf(
    ca: &CertAndKey,
    mut params: CertificateParams,
    what: &'static str,
) -> Result<CertAndKey, PkiError> {
    let gen_err = |source| PkiError::Generate { what, source };
    set_validity(&mut params, LEAF_VALIDITY);
    let ca_key = KeyPair::from_pem(&ca.key_pem).map_err(gen_err)?;
    let issuer = Issuer::from_ca_cert_pem(&ca.cert_pem, ca_key).map_err(gen_err)?;
    let key = KeyPair::generate().map_err(gen_err)?;
    let cert = params.signed_by(&key, &issuer).map_err(gen_err)?;
    Ok(CertAndKey {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

fn set_validity(params: &mut CertificateParams, validity: Duration) {
    // Back-dated a little so a peer with a slightly slow clock accepts a fresh certificate.
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::hours(1);
    params.not_after = now + validity;
}

fn read_string(path: &Path) -> Result<String, PkiError> {
    fs::read_to_string(path).map_err(|source| PkiError::Io {
        path: path.to_path_buf(),
        source,
    })
}

pub fn create_private_dir(dir: &Path) -> Result<(), PkiError> {
    let io_err = |source| PkiError::Io {
        path: dir.to_path_buf(),
        source,
    };
    if !dir.exists() {
        fs::create_dir_all(dir).map_err(io_err)?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(io_err)?;
    }
    Ok(())
}

pub fn write_private(path: &Path, data: &[u8]) -> Result<(), PkiError> {
    write_file(path, data, 0o600)
}

pub fn write_public(path: &Path, data: &[u8]) -> Result<(), PkiError> {
    write_file(path, data, 0o644)
}

/// Writes a new file (never replacing an existing one) and syncs it.
pub fn write_file(path: &Path, data: &[u8], mode: u32) -> Result<(), PkiError> {
    let io_err = |source| PkiError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(io_err)?;
    file.write_all(data).map_err(io_err)?;
    file.sync_all().map_err(io_err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_once_and_keeps_existing_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let paths = PkiPaths::new(dir.path().join("pki"));
        let request = PkiRequest {
            serving_hosts: vec!["10.0.0.1".into(), "api.example".into()],
            server_url: "https://127.0.0.1:6443".into(),
        };
        ensure_pki(&paths, &request).expect("generate");
        let ca_before = fs::read(paths.ca_cert()).expect("ca");
        fs::remove_file(paths.serving_cert()).expect("rm");
        fs::remove_file(paths.serving_key()).expect("rm");
        ensure_pki(&paths, &request).expect("regenerate serving");
        assert_eq!(fs::read(paths.ca_cert()).expect("ca"), ca_before, "CA kept");
        let key_mode = fs::metadata(paths.ca_key())
            .expect("key")
            .permissions()
            .mode();
        assert_eq!(key_mode & 0o777, 0o600);
        let kubeconfig = fs::read_to_string(paths.admin_kubeconfig()).expect("kubeconfig");
        assert!(kubeconfig.contains("server: https://127.0.0.1:6443"));
    }

    #[test]
    fn service_account_key_is_generated_once_and_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let paths = PkiPaths::new(dir.path().join("pki"));
        let request = PkiRequest {
            serving_hosts: Vec::new(),
            server_url: "https://127.0.0.1:6443".into(),
        };
        ensure_pki(&paths, &request).expect("generate");
        let key = fs::read_to_string(paths.service_account_key()).expect("sa.key");
        assert!(key.starts_with("-----BEGIN PRIVATE KEY-----"), "{key}");
        let mode = fs::metadata(paths.service_account_key())
            .expect("sa.key")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let public = fs::read_to_string(paths.service_account_pub()).expect("sa.pub");
        assert!(public.starts_with("-----BEGIN PUBLIC KEY-----"), "{public}");
        fs::remove_file(paths.service_account_pub()).expect("rm sa.pub");
        ensure_pki(&paths, &request).expect("again");
        assert_eq!(
            fs::read_to_string(paths.service_account_key()).expect("sa.key"),
            key,
            "the signing key survives a restart"
        );
        assert_eq!(
            fs::read_to_string(paths.service_account_pub()).expect("sa.pub"),
            public,
            "the public key is derived again from the same key"
        );
    }
}
