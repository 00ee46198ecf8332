//! TLS server side of a listener: rustls with the ring provider, the configured certificate
//! chain and key, and optional client-certificate verification against `client_ca`; and the
//! identity (CN or first SAN) read from a verified client certificate.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio_rustls::rustls::pki_types::pem::PemObject as _;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{RootCertStore, ServerConfig};

use super::config::{IdentitySource, ListenerTls};

/// Why a listener's TLS files cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    /// A PEM file could not be read or holds nothing usable.
    #[error("cannot use {path}: {reason}")]
    File {
        /// The configured file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// rustls refused the combination (e.g. a key that does not match the certificate).
    #[error("TLS configuration refused: {0}")]
    Rustls(String),
}

fn file_error(path: &Path, reason: impl ToString) -> TlsSetupError {
    TlsSetupError::File {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// The certificates of a PEM file, at least one; the error is the reason, for the caller to
/// attach to its configuration key (listener TLS here, bridge TLS in `bridge::tls`).
pub(crate) fn pem_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| e.to_string())?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    if certs.is_empty() {
        return Err("no PEM certificate in the file".into());
    }
    Ok(certs)
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsSetupError> {
    pem_certificates(path).map_err(|reason| file_error(path, reason))
}

/// Builds the rustls server configuration of `tls` (reads the files now). `alpn` is offered
/// to clients (empty: none).
pub fn server_config(tls: &ListenerTls) -> Result<Arc<ServerConfig>, TlsSetupError> {
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsSetupError::Rustls(e.to_string()))?;
    let builder = match &tls.client_ca {
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for cert in certificates(ca)? {
                roots
                    .add(cert)
                    .map_err(|e| file_error(ca, format!("unusable CA certificate: {e}")))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = if tls.require_client_cert {
                verifier.build()
            } else {
                verifier.allow_unauthenticated().build()
            }
            .map_err(|e| file_error(ca, e))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let chain = certificates(&tls.cert)?;
    let key = PrivateKeyDer::from_pem_file(&tls.key).map_err(|e| file_error(&tls.key, e))?;
    let config = builder.with_single_cert(chain, key).map_err(|e| {
        TlsSetupError::Rustls(format!(
            "{} / {}: {e}",
            tls.cert.display(),
            tls.key.display()
        ))
    })?;
    Ok(Arc::new(config))
}

/// The identity of a (verified) client certificate: its subject CN, or its first Subject
/// Alternative Name (DNS name, e-mail or URI). `None` when the field is absent.
pub fn certificate_identity(cert: &CertificateDer<'_>, source: IdentitySource) -> Option<String> {
    use x509_parser::prelude::{FromDer as _, GeneralName, X509Certificate};
    let (_, parsed) = X509Certificate::from_der(cert.as_ref()).ok()?;
    match source {
        IdentitySource::Cn => parsed
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .map(str::to_owned),
        IdentitySource::San => {
            let san = parsed.subject_alternative_name().ok()??;
            san.value.general_names.iter().find_map(|name| match name {
                GeneralName::DNSName(s) | GeneralName::RFC822Name(s) | GeneralName::URI(s) => {
                    Some((*s).to_owned())
                }
                _ => None,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(cn: &str, sans: &[&str]) -> CertificateDer<'static> {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params =
            rcgen::CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        params.self_signed(&key).expect("sign").der().clone()
    }

    #[test]
    fn identity_is_the_common_name_or_the_first_san() {
        let der = cert("device-7", &["dev7.example", "other.example"]);
        assert_eq!(
            certificate_identity(&der, IdentitySource::Cn).as_deref(),
            Some("device-7")
        );
        assert_eq!(
            certificate_identity(&der, IdentitySource::San).as_deref(),
            Some("dev7.example")
        );
        let no_san = cert("only-cn", &[]);
        assert_eq!(certificate_identity(&no_san, IdentitySource::San), None);
        assert_eq!(
            certificate_identity(&CertificateDer::from(vec![1, 2, 3]), IdentitySource::Cn),
            None
        );
    }

    #[test]
    fn unreadable_files_name_the_file() {
        let tls = ListenerTls {
            cert: PathBuf::from("/nonexistent/server.pem"),
            key: PathBuf::from("/nonexistent/server.key"),
            client_ca: None,
            require_client_cert: false,
            use_identity_as_username: false,
            identity: IdentitySource::Cn,
        };
        let err = server_config(&tls).unwrap_err().to_string();
        assert!(err.contains("/nonexistent/server.pem"), "{err}");
    }
}
