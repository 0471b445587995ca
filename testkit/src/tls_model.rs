//! A `TlsSession`'s life as operations, checked against the plaintext a correct session sends.
//!
//! The model is the application's view: the plaintext queued, in order (`expected`), and the
//! drop-counting values pinned. A rustls client on the other side of in-memory pipes decrypts
//! every byte the session sends; after each operation the client must have received a prefix
//! of `expected`, and at the end, after a send that takes everything, all of it. Every value
//! must be dropped exactly once (copied under the flatten threshold, or once encrypted), the
//! session must be empty and its steal accepted; requests the client sends must reach the
//! session's read buffer whole, however the reads split them; garbage from the peer must end in
//! an error, never a panic, and after it nothing but the alert goes out.
//!
//! The fuzz target `tls_session` and `tests/prop_tls.rs` drive this one model.

use std::io::{self, IoSlice, Write};
use std::sync::OnceLock;

use rustls::SupportedCipherSuite;
use sendbuf::{Stealable, TlsSession};

use crate::tls::{connect, ecdsa_suites, pki, Client, Pki};
use crate::util::{Counted, DropCount};

/// Largest pinned value an input makes (several records, past the encrypt-ahead bound).
pub const MAX_VALUE: usize = 300_000;

/// One operation on the session.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Debug, Clone)]
pub enum TlsOp {
    /// Queue `len` scratch bytes of value `byte`.
    Put { len: u16, byte: u8 },
    /// Pin a drop-counting value of `len % (MAX_VALUE + 1)` bytes of value `byte`.
    Pin { len: u32, byte: u8 },
    /// Send, the peer taking at most `take` bytes per write (0: the socket is full), `rounds`
    /// times.
    Send { take: u16, rounds: u8 },
    /// The client sends a request of `len` bytes; the session reads it in pieces of at most
    /// `piece` bytes (at least 1).
    Request { len: u16, piece: u16 },
    /// The session asks for `close_notify`; nothing queued after it is sent.
    Close,
    /// The client updates its traffic keys and asks the session to update its own (TLS 1.3;
    /// nothing under TLS 1.2).
    KeyUpdate,
    /// The peer sends these bytes as if they were TLS: the session fails (or waits for more).
    Garbage(Vec<u8>),
}

/// A session's operations, after a completed handshake.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Debug, Clone)]
pub struct TlsInput {
    /// Who makes the records and with which suite: see [`variant`].
    pub variant: u8,
    /// Applied in order.
    pub ops: Vec<TlsOp>,
}

/// Number of distinct [`TlsInput::variant`]s.
pub const VARIANTS: u8 = 14;

/// The configurations of variant `v % VARIANTS`: records made by the session (even) or by
/// rustls (odd), with all of aws-lc-rs's suites (`v / 2 % 7 == 0`) or one of the six an ECDSA
/// certificate allows, TLS 1.3 and 1.2.
pub fn variant(v: u8) -> &'static (Pki, Option<SupportedCipherSuite>) {
    static VARIANTS_: OnceLock<Vec<(Pki, Option<SupportedCipherSuite>)>> = OnceLock::new();
    let all = VARIANTS_.get_or_init(|| {
        let base = pki();
        let suites = ecdsa_suites();
        (0..VARIANTS)
            .map(|v| {
                let suite = match v / 2 % 7 {
                    0 => None,
                    n => Some(suites[usize::from(n) - 1]),
                };
                (base.variant(v % 2 == 0, suite), suite)
            })
            .collect()
    });
    &all[usize::from(v % VARIANTS)]
}

/// A writer that takes at most `take` bytes per call, or none (`WouldBlock`) when `take` is 0.
struct Limited<'a> {
    out: &'a mut Vec<u8>,
    take: usize,
}

impl Write for Limited<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[IoSlice::new(buf)])
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        if self.take == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let mut n = 0;
        for buf in bufs {
            let part = buf.len().min(self.take - n);
            self.out.extend_from_slice(&buf[..part]);
            n += part;
            if n == self.take {
                break;
            }
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Sends with `take` bytes per write (`usize::MAX`: everything), hands the bytes to the client
/// and checks what it decrypted so far.
fn send(server: &mut TlsSession, client: &mut Client, expected: &[u8], take: usize) {
    let mut wire = Vec::new();
    match server.write_to(&mut Limited {
        out: &mut wire,
        take,
    }) {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => assert_eq!(take, 0),
        Err(e) => panic!("send: {e}"),
    }
    client.feed(&wire);
    assert!(
        expected.starts_with(&client.received),
        "the client decrypted {} bytes that are not a prefix of the {} queued",
        client.received.len(),
        expected.len()
    );
}

/// Applies every operation of `input` and checks the session after each one and at the end.
pub fn run(input: &TlsInput) {
    // The certificate is made once per process: key generation is slow next to an operation.
    let (pki, suite) = variant(input.variant);
    let (mut server, mut client) = connect(pki);
    if let Some(suite) = suite {
        assert_eq!(client.conn.negotiated_cipher_suite(), Some(*suite));
    }
    let drops = DropCount::new();
    let (mut expected, mut created) = (Vec::new(), 0);
    let mut closed = false;
    for op in &input.ops {
        match op {
            TlsOp::Put { len, byte } => {
                let bytes = vec![*byte; *len as usize];
                server.write_buffer().put_slice(&bytes);
                if !closed {
                    expected.extend_from_slice(&bytes);
                }
            }
            TlsOp::Pin { len, byte } => {
                let bytes = vec![*byte; *len as usize % (MAX_VALUE + 1)];
                if !closed {
                    expected.extend_from_slice(&bytes);
                }
                created += 1;
                server.write_buffer().pin(Counted::counting(bytes, &drops));
            }
            TlsOp::Send { take, rounds } => {
                for _ in 0..=*rounds % 4 {
                    send(&mut server, &mut client, &expected, *take as usize);
                }
            }
            // After close_notify the session reads nothing more (see `read_tls_from`).
            TlsOp::Request { .. } if closed => {}
            TlsOp::Request { len, piece } => {
                let request = vec![b'r'; *len as usize];
                let tls = client.send(&request);
                let before = server.read_buffer().len();
                for part in tls.chunks((*piece as usize).max(1)) {
                    let mut part = part;
                    while !part.is_empty() {
                        server.read_tls_from(&mut part).expect("a valid record");
                    }
                }
                let data = server.read_buffer().data();
                assert_eq!(
                    data.len(),
                    before + request.len(),
                    "the request arrived whole"
                );
                assert!(data[before..] == request[..]);
                let all = server.read_buffer().len();
                server.read_buffer_mut().consume(all);
            }
            TlsOp::KeyUpdate if closed => {}
            TlsOp::KeyUpdate => {
                if client.conn.refresh_traffic_keys().is_ok() {
                    let tls = client.outgoing();
                    let mut src = &tls[..];
                    while !src.is_empty() {
                        server.read_tls_from(&mut src).expect("a valid record");
                    }
                }
            }
            TlsOp::Close => {
                server.queue_close_notify();
                closed = true;
            }
            TlsOp::Garbage(bytes) => {
                let mut src = &bytes[..];
                while !src.is_empty() {
                    if server.read_tls_from(&mut src).is_err() {
                        // Failed: only the alert leaves; the client sees it and stops here.
                        let mut wire = Vec::new();
                        server.write_to(&mut wire).expect("the alert");
                        assert!(server.is_empty(), "{server:?}");
                        assert!(server.steal().is_ok());
                        drop(server);
                        assert_eq!(drops.get(), created, "every value dropped exactly once");
                        return;
                    }
                }
                // Not failed (an incomplete record waits): the session can no longer be
                // checked against a peer that would not have sent it; stop here.
                drop(server);
                assert_eq!(drops.get(), created, "every value dropped exactly once");
                return;
            }
        }
    }
    send(&mut server, &mut client, &expected, usize::MAX);
    assert_eq!(
        server.seals_records(),
        input.variant % VARIANTS % 2 == 0,
        "the records are the session's exactly when the configuration allows it"
    );
    assert_eq!(client.received.len(), expected.len());
    assert!(client.received == expected, "the decrypted stream differs");
    assert_eq!(
        client.closed, closed,
        "close_notify seen if and only if asked for"
    );
    assert_eq!(drops.get(), created, "every value dropped exactly once");
    assert!(server.is_empty(), "{server:?}");
    assert!(server.steal().is_ok());
}
