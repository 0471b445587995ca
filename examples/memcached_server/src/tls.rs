//! The server's TLS configuration: a certificate chain and a private key from PEM files, as
//! `memcached -Z -o ssl_chain_cert=...,ssl_key=...` takes them.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;

/// Where the listener's certificate chain and key are (`--tls-cert`, `--tls-key`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain, the server's own certificate first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of the first certificate.
    pub key: PathBuf,
}

impl TlsFiles {
    /// Reads both files and makes the rustls configuration every connection shares: TLS 1.2
    /// and 1.3 with rustls's safe defaults and its `aws-lc-rs` provider, no client certificates.
    ///
    /// # Errors
    ///
    /// [`InvalidInput`](io::ErrorKind::InvalidInput) naming the option and the file when a file
    /// cannot be read, holds no certificate or key, or the key does not fit the certificate.
    pub fn server_config(&self) -> io::Result<Arc<ServerConfig>> {
        let bad = |what: &str, path: &Path, why: &dyn std::fmt::Display| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{what} {}: {why}", path.display()),
            )
        };
        let chain = CertificateDer::pem_file_iter(&self.cert)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|e| bad("--tls-cert", &self.cert, &e))?;
        if chain.is_empty() {
            return Err(bad("--tls-cert", &self.cert, &"no certificate in the file"));
        }
        let key =
            PrivateKeyDer::from_pem_file(&self.key).map_err(|e| bad("--tls-key", &self.key, &e))?;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| io::Error::other(format!("TLS versions: {e}")))?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| bad("--tls-key", &self.key, &e))?;
        // After the handshake each session seals and opens its records itself: one copy of a
        // response instead of rustls's two, and an idle connection keeps only its keys.
        config.enable_secret_extraction = true;
        Ok(Arc::new(config))
    }
}
