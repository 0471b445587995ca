//! `--tls`: a rustls client that accepts any certificate, driven by the load generator's loop.
//!
//! Every connection speaks TLS (rustls 0.23 with the `aws-lc-rs` provider; TLS 1.3 or 1.2, as the
//! server chooses) to server name `localhost`. The certificate is not checked (the benchmark's is
//! a throwaway self-signed one), so no verification cost lands anywhere. The handshakes run on the
//! same mio loop before the populate step, timed on their own ([`handshake`]).
//!
//! * Send ([`flush`]): the connection's queued request segments (and the shared SET value) go to
//!   `writer().write_vectored`, which encrypts them straight into records, at most
//!   [`BUFFER_LIMIT`] bytes ahead of the socket; `write_tls` then sends the records with one
//!   `writev`.
//! * Receive ([`receive`]): one `read` of up to 256 KiB into the thread's page-aligned buffer, fed
//!   to `read_tls` from memory (so a large response is not read 4 KiB per syscall, as `read_tls`
//!   on the socket would), `process_new_packets` after each piece, and the plaintext parsed where
//!   rustls holds it (`reader().fill_buf()` / `consume`, no copy). The plaintext is drained after
//!   every `read_tls`: rustls refuses more input past 16 KiB of unread plaintext.

use std::io::{self, BufRead, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::TcpStream as MioStream;
use mio::{Events, Poll};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, SignatureScheme, StreamOwned};

use crate::conn::{Conn, Requests};
use crate::report::Counts;

/// Encrypted bytes rustls may hold ahead of the socket (and plaintext before the handshake ends).
const BUFFER_LIMIT: usize = 256 << 10;
/// The name sent as SNI; the certificate is not checked against it.
const SERVER_NAME: &str = "localhost";

/// Accepts any certificate chain and signature: the servers under test use a throwaway
/// self-signed certificate, and verification is no part of what is measured.
#[derive(Debug)]
struct AcceptAnyCert {
    schemes: Vec<SignatureScheme>,
}

impl ServerCertVerifier for AcceptAnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.verify_tls12_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.schemes.clone()
    }
}

/// The client configuration every connection shares: the `aws-lc-rs` provider, its default protocol
/// versions and cipher suites, no certificate verification, no client certificate.
pub(crate) fn client_config() -> io::Result<Arc<ClientConfig>> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let schemes = provider
        .signature_verification_algorithms
        .supported_schemes();
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(io::Error::other)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyCert { schemes }))
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// A new client session for one connection.
pub(crate) fn session(config: &Arc<ClientConfig>) -> io::Result<Box<ClientConnection>> {
    let name = ServerName::try_from(SERVER_NAME).map_err(io::Error::other)?;
    let mut tls = ClientConnection::new(Arc::clone(config), name).map_err(io::Error::other)?;
    tls.set_buffer_limit(Some(BUFFER_LIMIT));
    Ok(Box::new(tls))
}

/// A blocking TLS stream over `sock` with its handshake done (for `--idle-conns`).
pub(crate) fn blocking(
    config: &Arc<ClientConfig>,
    mut sock: TcpStream,
) -> io::Result<StreamOwned<ClientConnection, TcpStream>> {
    let mut tls = session(config)?;
    while tls.is_handshaking() {
        tls.complete_io(&mut sock)?;
    }
    Ok(StreamOwned::new(*tls, sock))
}

/// What the handshakes of a run took: connections, the slowest thread's wall time, and what was
/// negotiated (of the first connection).
pub(crate) struct Handshakes {
    conns: u64,
    time: Duration,
    params: Option<(String, String)>,
}

impl Handshakes {
    pub(crate) fn merge(&mut self, o: Handshakes) {
        self.conns += o.conns;
        self.time = self.time.max(o.time);
        if self.params.is_none() {
            self.params = o.params;
        }
    }

    /// One machine-readable line; not part of the counted window.
    pub(crate) fn print(&self) {
        let (version, suite) = self
            .params
            .clone()
            .unwrap_or_else(|| ("none".into(), "none".into()));
        println!(
            "tls_handshakes={} tls_handshake_secs={:.3} tls_version={version} tls_suite={suite}",
            self.conns,
            self.time.as_secs_f64()
        );
    }
}

impl Default for Handshakes {
    fn default() -> Handshakes {
        Handshakes {
            conns: 0,
            time: Duration::ZERO,
            params: None,
        }
    }
}

fn is_handshaking(c: &Conn) -> bool {
    c.tls.as_ref().is_some_and(|t| t.is_handshaking())
}

/// Drives the handshakes of `conns` (registered with `poll`, readable and writable) until every
/// one is done. `Err` if one fails, its connection closes, or `limit` passes first.
pub(crate) fn handshake(
    poll: &mut Poll,
    events: &mut Events,
    conns: &mut [Conn],
    limit: Instant,
) -> io::Result<Handshakes> {
    let start = Instant::now();
    for c in conns.iter_mut() {
        pump(c)?;
    }
    while conns.iter().any(is_handshaking) {
        let now = Instant::now();
        if now >= limit {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "TLS handshakes not done in time",
            ));
        }
        match poll.poll(events, Some((limit - now).min(Duration::from_millis(100)))) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        for ev in events.iter() {
            pump(&mut conns[ev.token().0])?;
        }
    }
    let params = conns.first().and_then(|c| c.tls.as_ref()).map(|t| {
        let version = t.protocol_version().map(|v| format!("{v:?}"));
        let suite = t
            .negotiated_cipher_suite()
            .map(|s| format!("{:?}", s.suite()));
        (version.unwrap_or_default(), suite.unwrap_or_default())
    });
    Ok(Handshakes {
        conns: conns.len() as u64,
        time: start.elapsed(),
        params,
    })
}

/// Moves one connection's handshake as far as its socket allows without blocking.
fn pump(c: &mut Conn) -> io::Result<()> {
    let Some(tls) = c.tls.as_deref_mut() else {
        return Ok(());
    };
    loop {
        while tls.wants_write() {
            match tls.write_tls(&mut c.stream) {
                Ok(_) => {}
                // The writable event calls again.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if !tls.is_handshaking() {
            return Ok(());
        }
        match tls.read_tls(&mut c.stream) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed during the TLS handshake",
                ))
            }
            Ok(_) => {
                tls.process_new_packets()
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Encrypts queued requests and writes the records until both are done or the socket is full.
/// `Err` means the connection is unusable.
pub(crate) fn flush(
    tls: &mut ClientConnection,
    stream: &mut MioStream,
    tx: &mut Requests,
    value: &[u8],
) -> io::Result<()> {
    loop {
        while tls.wants_write() {
            match tls.write_tls(stream) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if tx.is_empty() {
            return Ok(());
        }
        // rustls takes plaintext until BUFFER_LIMIT of records wait; Ok(0) is "full".
        let all = tx.send(value, |iov| match tls.writer().write_vectored(iov) {
            Ok(0) => Err(io::ErrorKind::WouldBlock.into()),
            r => r,
        })?;
        if !all && !tls.wants_write() {
            return Ok(()); // nothing taken and nothing to send: wait for the peer
        }
    }
}

/// Reads every record the socket has (until `WouldBlock`) into `buf`, decrypts it and hands the
/// plaintext to `parse` (with the time of the read). `Err` means the connection must close:
/// closed (also by `close_notify`), a read error, a TLS error, or `parse` failed.
pub(crate) fn receive(
    tls: &mut ClientConnection,
    stream: &mut MioStream,
    buf: &mut [u8],
    counts: &mut Counts,
    parse: &mut impl FnMut(&[u8], Instant, &mut Counts) -> Result<(), ()>,
) -> Result<(), ()> {
    loop {
        let n = match stream.read(buf) {
            Ok(0) => return Err(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return Err(()),
        };
        let now = Instant::now();
        let mut input = &buf[..n];
        while !input.is_empty() {
            // Ok(0) with input left: a close_notify came before it.
            if !matches!(tls.read_tls(&mut input), Ok(1..)) || tls.process_new_packets().is_err() {
                return Err(());
            }
            loop {
                let chunk = match tls.reader().into_first_chunk() {
                    Ok([]) => return Err(()), // close_notify
                    Ok(chunk) => chunk,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(_) => return Err(()),
                };
                let len = chunk.len();
                parse(chunk, now, counts)?;
                tls.reader().consume(len);
            }
        }
        if n < buf.len() {
            // Short read: drained; epoll reports the next arrival.
            return Ok(());
        }
    }
}
