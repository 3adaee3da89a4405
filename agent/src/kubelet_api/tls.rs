//! The kubelet API's TLS: the serving certificate from `tlsCertFile`/`tlsPrivateKeyFile`, or a
//! self-signed one kept in `<root-dir>/pki/kubelet.crt|key` (generated once, as upstream does
//! in its `--cert-dir`), and client certificates verified against `clientCAFile` when set.
//! Connections without a certificate are accepted at the TLS level; HTTP answers them 401
//! unless a token or anonymous access lets them in.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Pem { path: PathBuf, reason: String },
    #[error("generating the self-signed serving certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
    #[error("client CA {path}: {reason}")]
    ClientCa { path: PathBuf, reason: String },
    #[error("tlsCertFile and tlsPrivateKeyFile must be set together")]
    HalfPair,
}

/// Where the serving certificate comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServingCert {
    /// Configured files.
    Files { cert: PathBuf, key: PathBuf },
    /// Self-signed, kept in this directory (`kubelet.crt`, `kubelet.key`) for these names.
    SelfSigned { dir: PathBuf, hosts: Vec<String> },
}

/// The certificate and key PEM texts, generating and storing a self-signed pair if needed.
pub fn serving_pair(source: &ServingCert) -> Result<(String, String), TlsError> {
    match source {
        ServingCert::Files { cert, key } => Ok((read(cert)?, read(key)?)),
        ServingCert::SelfSigned { dir, hosts } => {
            let cert_path = dir.join("kubelet.crt");
            let key_path = dir.join("kubelet.key");
            if cert_path.exists() && key_path.exists() {
                return Ok((read(&cert_path)?, read(&key_path)?));
            }
            let write_err = |path: &Path| {
                let path = path.to_path_buf();
                move |source| TlsError::Write { path, source }
            };
            std::fs::create_dir_all(dir).map_err(write_err(dir))?;
            let generated = rcgen::generate_simple_self_signed(hosts.clone())?;
            let cert_pem = generated.cert.pem();
            let key_pem = generated.signing_key.serialize_pem();
            write_file(&key_path, &key_pem, 0o600).map_err(write_err(&key_path))?;
            write_file(&cert_path, &cert_pem, 0o644).map_err(write_err(&cert_path))?;
            tracing::info!(
                cert = %cert_path.display(),
                "generated a self-signed kubelet serving certificate"
            );
            Ok((cert_pem, key_pem))
        }
    }
}

fn read(path: &Path) -> Result<String, TlsError> {
    std::fs::read_to_string(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn write_file(path: &Path, text: &str, mode: u32) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)?;
    file.write_all(text.as_bytes())
}

/// The rustls server configuration: HTTP/1.1 and h2, client certificates optional and, when
/// `client_ca` is set, verified against it (without one, no certificate is asked for).
pub fn server_config(
    source: &ServingCert,
    client_ca: Option<&Path>,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let (cert_pem, key_pem) = serving_pair(source)?;
    let (cert_path, key_path) = match source {
        ServingCert::Files { cert, key } => (cert.clone(), key.clone()),
        ServingCert::SelfSigned { dir, .. } => (dir.join("kubelet.crt"), dir.join("kubelet.key")),
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Pem {
            path: cert_path,
            reason: e.to_string(),
        })?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| TlsError::Pem {
        path: key_path,
        reason: e.to_string(),
    })?;
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let mut config = match client_ca {
        None => builder.with_no_client_auth().with_single_cert(certs, key)?,
        Some(path) => {
            let ca_err = |reason: String| TlsError::ClientCa {
                path: path.to_path_buf(),
                reason,
            };
            let pem = read(path)?;
            let mut roots = RootCertStore::empty();
            for ca in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                roots
                    .add(ca.map_err(|e| ca_err(e.to_string()))?)
                    .map_err(|e| ca_err(e.to_string()))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .allow_unauthenticated()
                .build()
                .map_err(|e| ca_err(e.to_string()))?;
            builder
                .with_client_cert_verifier(verifier)
                .with_single_cert(certs, key)?
        }
    };
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_signed_pair_is_generated_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let source = ServingCert::SelfSigned {
            dir: dir.path().join("pki"),
            hosts: vec!["node-1".into(), "127.0.0.1".into()],
        };
        let first = serving_pair(&source).unwrap();
        let second = serving_pair(&source).unwrap();
        assert_eq!(first, second);
        let mode = std::fs::metadata(dir.path().join("pki/kubelet.key"))
            .unwrap()
            .permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );
        server_config(&source, None).unwrap();
    }

    #[test]
    fn a_missing_client_ca_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let source = ServingCert::SelfSigned {
            dir: dir.path().to_path_buf(),
            hosts: vec!["localhost".into()],
        };
        let err = server_config(&source, Some(&dir.path().join("ca.crt"))).unwrap_err();
        assert!(matches!(err, TlsError::Read { .. }), "{err}");
    }
}
