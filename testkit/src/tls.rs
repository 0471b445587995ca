//! A throwaway certificate for `localhost`, made at run time (no key is committed), with a
//! rustls server configuration that uses it and a client configuration that trusts it; and
//! rustls's client on the other side of a `TlsSession`, over in-memory pipes.

use std::io::{self, Read, Write};
use std::sync::Arc;

use rustls::pki_types::PrivateKeyDer;
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig};
use sendbuf::TlsSession;

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
