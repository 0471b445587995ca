//! A throwaway certificate for `localhost`, made at run time (no key is committed), with a
//! rustls server configuration that uses it and a client configuration that trusts it; and
//! rustls's client on the other side of a `TlsSession`, over in-memory pipes.

use std::io::{self, Read, Write};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, SupportedCipherSuite};
use sendbuf::TlsSession;

/// The certificate, its key, and both sides' configurations (the `aws-lc-rs` provider, rustls's
/// safe default protocol versions).
#[derive(Clone)]
pub struct Pki {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// Its private key, PEM (PKCS#8).
    pub key_pem: String,
    /// A server configuration presenting the certificate.
    pub server: Arc<ServerConfig>,
    /// A client configuration trusting only the certificate.
    pub client: Arc<ClientConfig>,
    cert: CertificateDer<'static>,
    key: Arc<PrivatePkcs8KeyDer<'static>>,
}

/// A fresh certificate for `localhost` and the configurations over it. The server's allows
/// secret extraction: its sessions seal and open records themselves after the handshake.
pub fn pki() -> Pki {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let key = PrivatePkcs8KeyDer::from(cert.signing_key.serialize_der());
    Pki {
        cert_pem: cert.cert.pem(),
        key_pem: cert.signing_key.serialize_pem(),
        server: Arc::new(server_config(cert.cert.der(), &key, None, true)),
        client: Arc::new(client_config(cert.cert.der(), None)),
        cert: cert.cert.der().clone(),
        key: Arc::new(key),
    }
}

impl Pki {
    /// The same certificate with the records left to rustls (`own_records` false) or taken
    /// over by the session, and both sides limited to `suite` (which also decides the
    /// protocol version) when there is one.
    pub fn variant(&self, own_records: bool, suite: Option<SupportedCipherSuite>) -> Pki {
        Pki {
            server: Arc::new(server_config(&self.cert, &self.key, suite, own_records)),
            client: Arc::new(client_config(&self.cert, suite)),
            ..self.clone()
        }
    }
}

/// aws-lc-rs's provider, limited to `suite` if there is one.
fn provider(suite: Option<SupportedCipherSuite>) -> Arc<CryptoProvider> {
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    if let Some(suite) = suite {
        provider.cipher_suites = vec![suite];
    }
    Arc::new(provider)
}

fn server_config(
    cert: &CertificateDer<'static>,
    key: &PrivatePkcs8KeyDer<'static>,
    suite: Option<SupportedCipherSuite>,
    own_records: bool,
) -> ServerConfig {
    let mut server = ServerConfig::builder_with_provider(provider(suite))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], PrivateKeyDer::Pkcs8(key.clone_key()))
        .unwrap();
    server.enable_secret_extraction = own_records;
    server
}

fn client_config(
    cert: &CertificateDer<'static>,
    suite: Option<SupportedCipherSuite>,
) -> ClientConfig {
    let mut roots = RootCertStore::empty();
    roots.add(cert.clone()).unwrap();
    ClientConfig::builder_with_provider(provider(suite))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth()
}

/// Every suite of aws-lc-rs's provider whose certificate type fits an ECDSA key: TLS 1.3's three,
/// TLS 1.2's three ECDHE-ECDSA ones.
pub fn ecdsa_suites() -> Vec<SupportedCipherSuite> {
    use rustls::crypto::aws_lc_rs::cipher_suite as cs;
    vec![
        cs::TLS13_AES_128_GCM_SHA256,
        cs::TLS13_AES_256_GCM_SHA384,
        cs::TLS13_CHACHA20_POLY1305_SHA256,
        cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    ]
}

/// rustls's client, collecting every plaintext byte it decrypts.
pub struct Client {
    /// rustls's connection.
    pub conn: ClientConnection,
    /// Every plaintext byte decrypted so far.
    pub received: Vec<u8>,
    /// The server's `close_notify` arrived.
    pub closed: bool,
}

impl Client {
    pub fn new(pki: &Pki) -> Client {
        Client {
            conn: ClientConnection::new(pki.client.clone(), "localhost".try_into().unwrap())
                .unwrap(),
            received: Vec::new(),
            closed: false,
        }
    }

    /// Takes TLS bytes from the server and decrypts them.
    pub fn feed(&mut self, mut tls: &[u8]) {
        while !tls.is_empty() {
            self.conn.read_tls(&mut tls).unwrap();
            self.conn.process_new_packets().unwrap();
            let mut buf = [0u8; 16384];
            loop {
                match self.conn.reader().read(&mut buf) {
                    Ok(0) => {
                        self.closed = true;
                        break;
                    }
                    Ok(n) => self.received.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => panic!("client read: {e}"),
                }
            }
        }
    }

    /// TLS bytes the client has for the server.
    pub fn outgoing(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        while self.conn.wants_write() {
            self.conn.write_tls(&mut out).unwrap();
        }
        out
    }

    /// Encrypts `plaintext` and returns the TLS bytes.
    pub fn send(&mut self, plaintext: &[u8]) -> Vec<u8> {
        self.conn.writer().write_all(plaintext).unwrap();
        self.outgoing()
    }
}

/// Hands all of `tls` to the server, one read at a time.
pub fn deliver(server: &mut TlsSession, mut tls: &[u8]) {
    while !tls.is_empty() {
        server.read_tls_from(&mut tls).unwrap();
    }
}

/// Runs the handshake to its end over in-memory pipes.
pub fn connect(pki: &Pki) -> (TlsSession, Client) {
    let mut server = TlsSession::new(pki.server.clone()).unwrap();
    let mut client = Client::new(pki);
    for _ in 0..10 {
        let out = client.outgoing();
        deliver(&mut server, &out);
        let mut wire = Vec::new();
        server.write_to(&mut wire).unwrap();
        client.feed(&wire);
        if !client.conn.is_handshaking()
            && !server.is_handshaking()
            && !server.has_pending()
            && !client.conn.wants_write()
        {
            return (server, client);
        }
    }
    panic!("no handshake after 10 rounds: {server:?}");
}
