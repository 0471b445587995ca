//! A throwaway certificate for `localhost`, made at run time (no key is committed), with a
//! rustls server configuration that uses it and a client configuration that trusts it.

use std::sync::Arc;

use rustls::pki_types::PrivateKeyDer;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

/// The certificate, its key, and both sides' configurations (the `ring` provider, rustls's
/// safe default protocol versions).
pub struct Pki {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// Its private key, PEM (PKCS#8).
    pub key_pem: String,
    /// A server configuration presenting the certificate.
    pub server: Arc<ServerConfig>,
    /// A client configuration trusting only the certificate.
    pub client: Arc<ClientConfig>,
}

/// A fresh certificate for `localhost` and the configurations over it.
pub fn pki() -> Pki {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let key = PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
    let server = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.cert.der().clone()], key)
        .unwrap();
    let mut roots = RootCertStore::empty();
    roots.add(cert.cert.der().clone()).unwrap();
    let client = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Pki {
        cert_pem: cert.cert.pem(),
        key_pem: cert.signing_key.serialize_pem(),
        server: Arc::new(server),
        client: Arc::new(client),
    }
}
