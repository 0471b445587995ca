//! [`TlsSession`]: a server-side TLS connection that keeps the write path (feature `rustls`).
//!
//! The application queues plaintext exactly as without TLS, in a [`WriteBuffer`]: headers
//! formatted into scratch, values pinned by reference. At send time the pending plaintext is
//! encrypted once, straight into records in scratch the session owns, and the records go out
//! gathered, many in one `sendmsg`; partial writes advance through the records byte-exactly. A
//! pinned value is released as soon as its last byte is encrypted: its bytes live on as
//! ciphertext.
//!
//! ```text
//!  format / pin          seal (aws-lc-rs or rustls)         sendmsg
//! ─────────────▶ plaintext ──────────────────▶ records ──────────────▶ socket
//!                WriteBuffer                  WriteBuffer (scratch)
//!
//!  socket ──▶ TLS bytes ──open──▶ plaintext ──▶ the application parses, consumes
//!             ReadBuffer          ReadBuffer
//! ```
//!
//! **Two record layers.** rustls runs the handshake (through its unbuffered API). If the
//! configuration allows secret extraction ([`ServerConfig::enable_secret_extraction`], as for
//! kernel TLS), the session then takes the records over: rustls hands over the traffic keys
//! and keeps only what derives the next ones ([`KernelConnection`]), and the session seals and
//! opens TLS 1.2 and 1.3 records itself with aws-lc-rs's AEADs (AES-128-GCM, AES-256-GCM,
//! ChaCha20-Poly1305). A record is sealed out of place: the cipher reads its plaintext where
//! it lies, in scratch or in a pinned value, and writes the record into the session's scratch.
//! The session follows the peer's `KeyUpdate`s (answering one that asks), updates its own key
//! before the suite's confidentiality limit, and declines TLS 1.2 renegotiation with a
//! warning, as rustls does. Otherwise rustls keeps the records ([`WriteTraffic::encrypt`]),
//! which costs two copies: rustls 0.23 copies each record's plaintext into a `Vec` of its own,
//! seals it there and copies it out.
//!
//! **Records.** A record carries up to 16 KiB ([`MAX_RECORD_PLAINTEXT`]), and comes from one
//! run of the plaintext queue: a run of scratch (many small responses formatted one after
//! another share a record instead of costing one record, 22 bytes and an AEAD operation,
//! each), or a pinned value, encrypted from its own memory. The queue's flatten threshold is
//! one record: a shorter value is copied beside its header and trailer and shares their
//! records, which costs less than records of its own would (and through rustls makes a
//! response one `encrypt` call). At most [`ENCRYPT_AHEAD`] bytes of records wait unsent: the
//! rest stays plaintext (pinned values stay pinned) until the socket takes them.
//!
//! **Accounting.** [`is_empty`](TlsSession::is_empty) is true only when no plaintext is
//! pending, no record is unsent, rustls has no handshake or alert bytes waiting, and nothing
//! received waits to be processed or read; the [steal](Stealable) of an idle session's buffers
//! is refused in every other state. A steal drops the buffers too, not only their storage (and
//! aws-lc-rs's expanded keys, made again from the secrets on the next record): an idle session
//! holds its keys and its own fields, and the first call that needs a buffer again makes them
//! (one allocation), with the settings they had. The water marks and the hard limit of
//! [`write_buffer`](TlsSession::write_buffer) count the plaintext and the records made from it.
//!
//! **Reads.** Every complete record received is processed at once: a request whose bytes sit
//! in the TLS layer is handed to the application by the same call, never left to wait for the
//! socket to become readable again. A record is decrypted in place in the TLS input and its
//! plaintext appended to the session's plaintext [`ReadBuffer`].
//!
//! **Copies.** On the send side, per payload byte: a pinned value is read once, by the
//! cipher, with no copy before it (own records); a value copied into scratch is copied once.
//! Through rustls's records a pinned value is copied twice before and after the cipher, a value
//! in scratch three times. rustls's buffered `ServerConnection` copies once, `memcached -Z`
//! twice (its response buffer, then OpenSSL's). `BENCHMARKS.md`, "TLS", has the figures.
//! Kernel TLS would let the kernel encrypt from pinned pages; see the crate documentation.
//!
//! [`ServerConfig::enable_secret_extraction`]: rustls::ServerConfig::enable_secret_extraction
//! [`KernelConnection`]: rustls::kernel::KernelConnection
//! [`WriteTraffic::encrypt`]: rustls::unbuffered::WriteTraffic::encrypt

use core::fmt;
use std::cell::OnceCell;
use std::io::{self, Read, Write};
use std::sync::Arc;

use rustls::server::{ServerConnectionData, UnbufferedServerConnection};
use rustls::unbuffered::{AppDataRecord, ConnectionState, EncodeError, EncryptError, WriteTraffic};
use rustls::ServerConfig;

use crate::error::{ReadLimitError, StealError, TlsError};
use crate::iovec::GatherLimits;
use crate::pool::Pool;
use crate::read_buffer::ReadBuffer;
use crate::steal::Stealable;
use crate::watermark::{Pressure, Watermarks};
use crate::write_buffer::WriteBuffer;

mod record;

use record::{Answer, Opened, RecordLayer, Refused};

/// Plaintext bytes one TLS record carries at most (RFC 8446, 5.1).
///
/// # Examples
///
/// ```
/// # #[cfg(not(miri))] { // rustls's aws-lc-rs provider runs C and assembly, which Miri cannot
/// # let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()])?;
/// # let key = cert.signing_key.serialize_der().try_into()?;
/// # let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
/// # let config = rustls::ServerConfig::builder_with_provider(provider.clone())
/// #     .with_safe_default_protocol_versions()?.with_no_client_auth()
/// #     .with_single_cert(vec![cert.cert.der().clone()], key)?.into();
/// # let mut roots = rustls::RootCertStore::empty();
/// # roots.add(cert.cert.der().clone())?;
/// # let client = rustls::ClientConfig::builder_with_provider(provider)
/// #     .with_safe_default_protocol_versions()?.with_root_certificates(roots)
/// #     .with_no_client_auth();
/// # let mut client = rustls::ClientConnection::new(client.into(), "localhost".try_into()?)?;
/// # let mut server = sendbuf::TlsSession::new(config)?;
/// # let mut wire = Vec::new();
/// # while client.is_handshaking() || client.wants_write() || server.has_pending() {
/// #     client.write_tls(&mut wire)?;
/// #     server.read_tls_from(&mut &wire[..])?;
/// #     wire.clear();
/// #     server.write_to(&mut wire)?;
/// #     client.read_tls(&mut &wire[..])?;
/// #     client.process_new_packets()?;
/// #     wire.clear();
/// # }
/// use sendbuf::tls::MAX_RECORD_PLAINTEXT;
///
/// // `server` has done its handshake with `client`, rustls's client, over in-memory pipes.
/// server.write_buffer().pin(vec![b'v'; 40_000]);
/// server.write_to(&mut Vec::new())?;
/// assert_eq!(MAX_RECORD_PLAINTEXT, 16_384);
/// assert_eq!(server.stats().records, 3); // 16 KiB + 16 KiB + 7 KiB
/// # }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub const MAX_RECORD_PLAINTEXT: usize = 16 * 1024;

/// Bytes of records encrypted ahead of the socket at most: one send's worth. Plaintext beyond
/// it waits (pinned values stay pinned) until the records before it are sent.
///
/// # Examples
///
/// ```
/// # #[cfg(not(miri))] { // rustls's aws-lc-rs provider runs C and assembly, which Miri cannot
/// # let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()])?;
/// # let key = cert.signing_key.serialize_der().try_into()?;
/// # let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
/// # let config = rustls::ServerConfig::builder_with_provider(provider.clone())
/// #     .with_safe_default_protocol_versions()?.with_no_client_auth()
/// #     .with_single_cert(vec![cert.cert.der().clone()], key)?.into();
/// # let mut roots = rustls::RootCertStore::empty();
/// # roots.add(cert.cert.der().clone())?;
/// # let client = rustls::ClientConfig::builder_with_provider(provider)
/// #     .with_safe_default_protocol_versions()?.with_root_certificates(roots)
/// #     .with_no_client_auth();
/// # let mut client = rustls::ClientConnection::new(client.into(), "localhost".try_into()?)?;
/// # let mut server = sendbuf::TlsSession::new(config)?;
/// # let mut wire = Vec::new();
/// # while client.is_handshaking() || client.wants_write() || server.has_pending() {
/// #     client.write_tls(&mut wire)?;
/// #     server.read_tls_from(&mut &wire[..])?;
/// #     wire.clear();
/// #     server.write_to(&mut wire)?;
/// #     client.read_tls(&mut &wire[..])?;
/// #     client.process_new_packets()?;
/// #     wire.clear();
/// # }
/// use std::sync::Arc;
/// use sendbuf::tls::ENCRYPT_AHEAD;
///
/// // `server` has done its handshake with `client`, rustls's client, over in-memory pipes.
/// let value: Arc<[u8]> = vec![b'v'; 1 << 20].into();
/// server.write_buffer().pin(value.clone());
/// let mut socket = [0u8; 1000]; // a socket that takes 1000 bytes, then is full
/// server.write_to(&mut &mut socket[..])?;
/// // One send's worth was encrypted; the rest waits as plaintext, the value still pinned.
/// assert!(server.unsent_tls_len() + 1000 >= ENCRYPT_AHEAD);
/// assert!(server.write_buffer().pending_len() > (1 << 20) - 2 * ENCRYPT_AHEAD);
/// assert_eq!(Arc::strong_count(&value), 2);
/// # }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub const ENCRYPT_AHEAD: usize = 256 * 1024;

/// Scratch block size of the records buffer: three full records and their overhead fit (one
/// `encrypt` call's), in a block a pool of 64 KiB buffers keeps.
const RECORD_BLOCK: usize = 64 * 1024;

/// Largest TLS record on the wire (a full record plus the largest expansion TLS allows),
/// the least the TLS input buffer must be able to hold.
const MAX_WIRE_RECORD: usize = 5 + MAX_RECORD_PLAINTEXT + 2048;

/// Default bound on decrypted bytes waiting to be consumed, as [`ReadBuffer`]'s.
const DEFAULT_MAX_PLAINTEXT_IN: usize = 1024 * 1024 + 64 * 1024;

/// Where the session is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Until rustls first allows application data.
    Handshaking,
    /// Application data flows both ways.
    Open,
    /// Both sides sent `close_notify`.
    Closed,
    /// A [`TlsError`] was returned: only the alert rustls queued for it may still go out.
    Failed,
}

/// What a [`TlsSession`] did, for tests and monitoring.
///
/// # Examples
///
/// ```
/// # #[cfg(not(miri))] { // rustls's aws-lc-rs provider runs C and assembly, which Miri cannot
/// # let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()])?;
/// # let key = cert.signing_key.serialize_der().try_into()?;
/// # let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
/// # let config = rustls::ServerConfig::builder_with_provider(provider.clone())
/// #     .with_safe_default_protocol_versions()?.with_no_client_auth()
/// #     .with_single_cert(vec![cert.cert.der().clone()], key)?.into();
/// # let mut roots = rustls::RootCertStore::empty();
/// # roots.add(cert.cert.der().clone())?;
/// # let client = rustls::ClientConfig::builder_with_provider(provider)
/// #     .with_safe_default_protocol_versions()?.with_root_certificates(roots)
/// #     .with_no_client_auth();
/// # let mut client = rustls::ClientConnection::new(client.into(), "localhost".try_into()?)?;
/// # let mut server = sendbuf::TlsSession::new(config)?;
/// # let mut wire = Vec::new();
/// # while client.is_handshaking() || client.wants_write() || server.has_pending() {
/// #     client.write_tls(&mut wire)?;
/// #     server.read_tls_from(&mut &wire[..])?;
/// #     wire.clear();
/// #     server.write_to(&mut wire)?;
/// #     client.read_tls(&mut &wire[..])?;
/// #     client.process_new_packets()?;
/// #     wire.clear();
/// # }
/// use std::io::Write;
///
/// // `server` has done its handshake with `client`, rustls's client, over in-memory pipes.
/// let handshake = server.stats().tls_out; // the server's handshake messages
/// client.writer().write_all(b"get k\r\n")?;
/// let mut tls = Vec::new();
/// client.write_tls(&mut tls)?;
/// server.read_tls_from(&mut &tls[..])?;
/// server.read_buffer_mut().consume(7);
/// server.write_buffer().put_slice(b"END\r\n");
/// let sent = server.write_to(&mut Vec::new())?;
/// let stats = server.stats();
/// assert_eq!((stats.plaintext_in, stats.plaintext_out), (7, 5));
/// assert_eq!((stats.records, stats.encrypt_calls), (1, 1));
/// assert_eq!(sent, 5 + 22); // TLS 1.3: a 5-byte header, the content type and a 16-byte tag
/// assert_eq!(stats.tls_out, handshake + 27);
/// # }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TlsStats {
    /// Records made from application data.
    pub records: u64,
    /// Encryption calls: rustls's `encrypt` (each makes one or more records), or one per
    /// record the session seals itself.
    pub encrypt_calls: u64,
    /// Application bytes encrypted.
    pub plaintext_out: u64,
    /// Bytes of records and handshake messages sent.
    pub tls_out: u64,
    /// Application bytes decrypted.
    pub plaintext_in: u64,
}

/// A server-side TLS session over owned buffers, for `mio` loops, `poll` loops and tokio alike
/// (feature `rustls`).
///
/// Reading: [`read_tls_from`](Self::read_tls_from) reads TLS bytes from the socket and
/// processes every complete record (handshake messages are answered, application data lands in
/// [`read_buffer`](Self::read_buffer)). Writing: queue plaintext in
/// [`write_buffer`](Self::write_buffer) as in any [`WriteBuffer`], then
/// [`send_to`](Self::send_to) encrypts and sends. See the [module docs](crate::tls) for the
/// record and accounting rules.
///
/// # Examples
///
/// A handshake and one request over in-memory pipes, with a rustls client on the other side:
///
/// ```
/// # #[cfg(not(miri))] { // rustls's aws-lc-rs provider runs C and assembly, which Miri cannot
/// use std::io::{Read, Write};
/// use std::sync::Arc;
/// use sendbuf::TlsSession;
///
/// # let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
/// # let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()])?;
/// # let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
/// # let server_config = Arc::new(
/// #     rustls::ServerConfig::builder_with_provider(provider.clone())
/// #         .with_safe_default_protocol_versions()?
/// #         .with_no_client_auth()
/// #         .with_single_cert(vec![cert.cert.der().clone()], key)?,
/// # );
/// # let mut roots = rustls::RootCertStore::empty();
/// # roots.add(cert.cert.der().clone())?;
/// # let client_config = Arc::new(
/// #     rustls::ClientConfig::builder_with_provider(provider)
/// #         .with_safe_default_protocol_versions()?
/// #         .with_root_certificates(roots)
/// #         .with_no_client_auth(),
/// # );
/// let mut server = TlsSession::new(server_config)?;
/// let mut client = rustls::ClientConnection::new(client_config, "localhost".try_into()?)?;
/// let mut to_server = Vec::new();
/// let mut to_client = Vec::new();
///
/// client.writer().write_all(b"get k\r\n")?;
/// while !server.read_buffer().data().ends_with(b"\r\n") {
///     client.write_tls(&mut to_server)?;
///     server.read_tls_from(&mut &to_server[..])?;
///     to_server.clear();
///     server.write_to(&mut to_client)?;
///     client.read_tls(&mut &to_client[..])?;
///     client.process_new_packets()?;
///     to_client.clear();
/// }
/// assert_eq!(server.read_buffer().data(), b"get k\r\n");
/// server.read_buffer_mut().consume(7);
///
/// server.write_buffer().put_slice(b"VALUE k 0 5\r\n");
/// server.write_buffer().pin(Arc::<[u8]>::from(&b"hello"[..]));
/// server.write_buffer().put_slice(b"\r\nEND\r\n");
/// server.write_to(&mut to_client)?;
/// client.read_tls(&mut &to_client[..])?;
/// client.process_new_packets()?;
/// let mut answer = [0u8; 25];
/// client.reader().read_exact(&mut answer)?;
/// assert_eq!(&answer, b"VALUE k 0 5\r\nhello\r\nEND\r\n");
/// assert!(server.is_empty());
/// # }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct TlsSession {
    conn: Conn,
    /// The configuration allows secret extraction: records are the session's after the
    /// handshake.
    take_over: bool,
    /// The buffers, made on first use and dropped by a successful [steal](Stealable::steal).
    buffers: LazyBuffers,
    /// The most decrypted bytes [`read_tls_from`](Self::read_tls_from) lets wait: beyond it
    /// it reads no more (`plain_in` may exceed it by what was already received).
    max_plain_in: usize,
    phase: Phase,
    /// The peer sent `close_notify`: no more application data will come.
    peer_closed: bool,
    /// `close_notify` asked for and not yet encrypted: after this many more bytes of plaintext
    /// (those queued when it was asked for).
    close_after: Option<usize>,
    /// `close_notify` encrypted into `records`.
    close_queued: bool,
    stats: TlsStats,
}

/// Who makes and opens the records.
enum Conn {
    /// rustls: the handshake, and every record when the session does not take them over.
    Rustls(Box<UnbufferedServerConnection>),
    /// The session, after the handshake ([`record`]).
    Own(Box<RecordLayer>),
    /// Neither: the take-over failed, and the session with it.
    Gone,
}

impl Conn {
    /// rustls has bytes for the peer it has not handed over yet.
    fn wants_write(&self) -> bool {
        match self {
            Conn::Rustls(conn) => conn.wants_write(),
            Conn::Own(_) | Conn::Gone => false,
        }
    }
}

/// A session's buffers.
struct Buffers {
    /// Plaintext the application queues.
    plain_out: WriteBuffer,
    /// Records and handshake messages, in scratch this session owns, not yet sent.
    records: WriteBuffer,
    /// TLS bytes received and not yet processed (a partial record at most, between calls).
    tls_in: ReadBuffer,
    /// Decrypted application data the application has not consumed.
    plain_in: ReadBuffer,
}

/// What a session's buffers are made with: what [`TlsSession`] sets on them and what the
/// application may set through [`write_buffer`](TlsSession::write_buffer) and
/// [`read_buffer_mut`](TlsSession::read_buffer_mut), kept while the buffers are dropped.
#[derive(Debug)]
struct Settings {
    pool: Option<Arc<dyn Pool>>,
    /// The plaintext queue's.
    watermarks: Option<Watermarks>,
    hard_limit: Option<usize>,
    flatten_threshold: usize,
    /// A crossing of a water mark the application has not taken yet.
    pressure_event: Option<Pressure>,
    /// The decrypted bytes' bound.
    plain_in_max_len: usize,
    /// The TLS input's bound.
    tls_in_max_len: usize,
}

/// A session's buffers (896 bytes, boxed), made on first use and dropped when the session is
/// idle, and what they are made with: an idle session keeps neither their storage nor their
/// structures. A cell, so that [`read_buffer`](TlsSession::read_buffer) can make them too.
struct LazyBuffers {
    made: OnceCell<Box<Buffers>>,
    /// While the buffers exist, they hold the settings: these are the settings of the last
    /// buffers dropped (or the first's).
    settings: Settings,
}

impl LazyBuffers {
    /// The buffers, if they exist.
    #[inline]
    fn get(&self) -> Option<&Buffers> {
        self.made.get().map(|b| &**b)
    }

    /// The buffers, if they exist.
    #[inline]
    fn get_mut(&mut self) -> Option<&mut Buffers> {
        self.made.get_mut().map(|b| &mut **b)
    }

    /// The buffers, made if they do not exist (one allocation; their storage comes on first
    /// use, from the pool if the session has one).
    #[inline]
    fn make(&self) -> &Buffers {
        self.made.get_or_init(|| Buffers::new(&self.settings))
    }

    /// [`make`](Self::make), mutable.
    #[inline]
    fn make_mut(&mut self) -> &mut Buffers {
        self.make();
        self.get_mut().expect("the buffers were just made")
    }

    /// Gives the buffers' storage back (to the pool, if any) and drops them, keeping their
    /// settings; refused, with nothing dropped, if a buffer refuses.
    fn steal(&mut self) -> Result<usize, StealError> {
        let Some(b) = self.made.get_mut() else {
            return Ok(0);
        };
        let stolen =
            b.plain_out.steal()? + b.records.steal()? + b.tls_in.steal()? + b.plain_in.steal()?;
        let pool = self.settings.pool.take();
        self.settings = b.settings(pool, self.settings.tls_in_max_len);
        self.made = OnceCell::new();
        Ok(stolen)
    }
}

impl Buffers {
    /// Empty buffers made with `settings`. Their storage comes on first use.
    #[cold]
    #[inline(never)]
    fn new(settings: &Settings) -> Box<Buffers> {
        let mut plain_out = WriteBuffer::new();
        plain_out.set_flatten_threshold(settings.flatten_threshold);
        plain_out.set_watermarks(settings.watermarks);
        plain_out.set_hard_limit(settings.hard_limit);
        plain_out.put_back_pressure_event(settings.pressure_event);
        let mut records = WriteBuffer::with_block_size(RECORD_BLOCK);
        let mut tls_in = ReadBuffer::with_block_size(MAX_WIRE_RECORD);
        tls_in.set_max_len(settings.tls_in_max_len);
        let mut plain_in = ReadBuffer::new();
        plain_in.set_max_len(settings.plain_in_max_len);
        if let Some(pool) = &settings.pool {
            plain_out = plain_out.with_pool(pool.clone());
            records = records.with_pool(pool.clone());
            tls_in = tls_in.with_pool(pool.clone());
            plain_in = plain_in.with_pool(pool.clone());
        }
        Box::new(Buffers {
            plain_out,
            records,
            tls_in,
            plain_in,
        })
    }

    /// What the buffers were set to, to make them again as they are (the pressure event is
    /// taken).
    fn settings(&mut self, pool: Option<Arc<dyn Pool>>, tls_in_max_len: usize) -> Settings {
        Settings {
            pool,
            tls_in_max_len,
            watermarks: self.plain_out.watermarks(),
            hard_limit: self.plain_out.hard_limit(),
            flatten_threshold: self.plain_out.flatten_threshold(),
            pressure_event: self.plain_out.take_pressure_event(),
            plain_in_max_len: self.plain_in.max_len(),
        }
    }
}

impl TlsSession {
    /// A session for a connection just accepted, with its buffers' storage taken from the
    /// allocator on first use.
    ///
    /// Set `config.enable_secret_extraction` (rustls's switch for kernel TLS) to let the
    /// session seal and open its records itself after the handshake, with aws-lc-rs: one copy of
    /// each payload byte instead of two, records packed across responses, and an idle session
    /// of about 1 KiB instead of 3.4 ([module docs](crate::tls)). Without it, or with a cipher
    /// suite aws-lc-rs does not implement, rustls keeps the records.
    ///
    /// # Errors
    ///
    /// rustls's, if it cannot start a connection with `config`.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(not(miri))] { // rustls's aws-lc-rs provider runs C and assembly, which Miri cannot
    /// # let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()])?;
    /// # let key = cert.signing_key.serialize_der().try_into()?;
    /// # let provider = rustls::crypto::aws_lc_rs::default_provider().into();
    /// use std::sync::Arc;
    /// use sendbuf::TlsSession;
    ///
    /// let mut config = rustls::ServerConfig::builder_with_provider(provider)
    ///     .with_safe_default_protocol_versions()?
    ///     .with_no_client_auth()
    ///     .with_single_cert(vec![cert.cert.der().clone()], key)?;
    /// config.enable_secret_extraction = true; // the records are the session's after the handshake
    /// let config = Arc::new(config);
    ///
    /// let server = TlsSession::new(config)?; // one per connection accepted
    /// assert!(server.is_handshaking());
    /// assert!(server.is_empty() && !server.has_pending()); // the client speaks first
    /// # }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn new(config: Arc<ServerConfig>) -> Result<TlsSession, rustls::Error> {
        let take_over = config.enable_secret_extraction;
        let mut session = TlsSession {
            conn: Conn::Rustls(Box::new(UnbufferedServerConnection::new(config)?)),
            take_over,
            buffers: LazyBuffers {
                made: OnceCell::new(),
                settings: Settings {
                    pool: None,
                    watermarks: None,
                    hard_limit: None,
                    // Values shorter than a record are copied next to their header and
                    // trailer and share their records: a copy costs less than a record of
                    // their own (an AEAD operation and 22 bytes), and through rustls a
                    // response is then one `encrypt` call. A longer one fills records of its
                    // own, sealed from where it lies (`BENCHMARKS.md`, "TLS").
                    flatten_threshold: MAX_RECORD_PLAINTEXT,
                    pressure_event: None,
                    // Set below.
                    plain_in_max_len: 0,
                    tls_in_max_len: 0,
                },
            },
            max_plain_in: DEFAULT_MAX_PLAINTEXT_IN,
            phase: Phase::Handshaking,
            peer_closed: false,
            close_after: None,
            close_queued: false,
            stats: TlsStats::default(),
        };
        session.set_max_read_len(DEFAULT_MAX_PLAINTEXT_IN);
        Ok(session)
    }

    /// Takes every buffer's storage from `pool` (and gives it back on
    /// [`steal`](Stealable::steal)), as [`WriteBuffer::with_pool`] does.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(not(miri))] { // rustls's aws-lc-rs provider runs C and assembly, which Miri cannot
    /// # let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()])?;
    /// # let key = cert.signing_key.serialize_der().try_into()?;
    /// # let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    /// # let config = rustls::ServerConfig::builder_with_provider(provider.clone())
    /// #     .with_safe_default_protocol_versions()?.with_no_client_auth()
    /// #     .with_single_cert(vec![cert.cert.der().clone()], key)?.into();
    /// # let mut roots = rustls::RootCertStore::empty();
    /// # roots.add(cert.cert.der().clone())?;
    /// # let client = rustls::ClientConfig::builder_with_provider(provider)
    /// #     .with_safe_default_protocol_versions()?.with_root_certificates(roots)
    /// #     .with_no_client_auth();
    /// # let mut client = rustls::ClientConnection::new(client.into(), "localhost".try_into()?)?;
    /// use sendbuf::{LocalPool, Pool, PoolLimits, Stealable, TlsSession};
    ///
    /// let pool = LocalPool::new(PoolLimits::new());
    /// let mut server = TlsSession::new(config)?.with_pool(pool.clone());
    /// # let mut wire = Vec::new();
    /// # while client.is_handshaking() || client.wants_write() || server.has_pending() {
    /// #     client.write_tls(&mut wire)?;
    /// #     server.read_tls_from(&mut &wire[..])?;
    /// #     wire.clear();
    /// #     server.write_to(&mut wire)?;
    /// #     client.read_tls(&mut &wire[..])?;
    /// #     client.process_new_packets()?;
    /// #     wire.clear();
    /// # }
    /// // After the handshake (with rustls's client, hidden), the idle session's storage goes back:
    /// server.steal()?;
    /// assert!(pool.stats().returned > 0);
    /// server.write_buffer().put_slice(b"END\r\n"); // and comes from the pool again
    /// assert_eq!(pool.stats().taken, 1);
    /// # }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn with_pool(mut self, pool: Arc<dyn Pool>) -> TlsSession {
        if let Some(b) = self.buffers.get_mut() {
            b.plain_out = core::mem::take(&mut b.plain_out).with_pool(pool.clone());
            b.records = core::mem::take(&mut b.records).with_pool(pool.clone());
            b.tls_in = core::mem::take(&mut b.tls_in).with_pool(pool.clone());
            b.plain_in = core::mem::take(&mut b.plain_in).with_pool(pool.clone());
        }
        self.buffers.settings.pool = Some(pool);
        self
    }

    /// Bounds the decrypted bytes waiting to be consumed (default 1 MiB + 64 KiB): past it,
    /// [`read_tls_from`](Self::read_tls_from) reads nothing and fails as
    /// [`ReadBuffer::read_from`] does on a full buffer.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(not(miri))] { // rustls's aws-lc-rs provider runs C and assembly, which Miri cannot
    /// # let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()])?;
    /// # let key = cert.signing_key.serialize_der().try_into()?;
    /// # let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    /// # let config = rustls::ServerConfig::builder_with_provider(provider.clone())
    /// #     .with_safe_default_protocol_versions()?.with_no_client_auth()
    /// #     .with_single_cert(vec![cert.cert.der().clone()], key)?.into();
    /// # let mut roots = rustls::RootCertStore::empty();
    /// # roots.add(cert.cert.der().clone())?;
    /// # let client = rustls::ClientConfig::builder_with_provider(provider)
    /// #     .with_safe_default_protocol_versions()?.with_root_certificates(roots)
    /// #     .with_no_client_auth();
    /// # let mut client = rustls::ClientConnection::new(client.into(), "localhost".try_into()?)?;
    /// # let mut server = sendbuf::TlsSession::new(config)?;
    /// # let mut wire = Vec::new();
    /// # while client.is_handshaking() || client.wants_write() || server.has_pending() {
    /// #     client.write_tls(&mut wire)?;
    /// #     server.read_tls_from(&mut &wire[..])?;
    /// #     wire.clear();
    /// #     server.write_to(&mut wire)?;
    /// #     client.read_tls(&mut &wire[..])?;
    /// #     client.process_new_packets()?;
    /// #     wire.clear();
    /// # }
    /// use std::io::Write;
    ///
    /// // `server` has done its handshake with `client`, rustls's client, over in-memory pipes.
    /// server.set_max_read_len(4);
    /// client.writer().write_all(b"get k\r\n")?;
    /// let mut tls = Vec::new();
    /// client.write_tls(&mut tls)?;
    /// server.read_tls_from(&mut &tls[..])?; // a record is delivered whole, past the bound
    /// assert_eq!(server.read_buffer().len(), 7);
    /// let err = server.read_tls_from(&mut std::io::empty()).unwrap_err(); // reads nothing more
    /// assert_eq!(err.kind(), std::io::ErrorKind::OutOfMemory);
    /// server.read_buffer_mut().consume(7);
    /// assert_eq!(server.read_tls_from(&mut std::io::empty())?, 0);
    /// # }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn set_max_read_len(&mut self, max_len: usize) {
        // Decrypted bytes may exceed the bound by what was already received (twice it at
        // most), so that a record is never left half delivered.
        self.max_plain_in = max_len.max(1);
        let plain_in_max_len = self.max_plain_in.saturating_mul(2);
        let tls_in_max_len = self.max_plain_in.max(MAX_WIRE_RECORD);
        match self.buffers.get_mut() {
            Some(b) => {
                b.plain_in.set_max_len(plain_in_max_len);
                b.tls_in.set_max_len(tls_in_max_len);
            }
            None => self.buffers.settings.plain_in_max_len = plain_in_max_len,
        }
        self.buffers.settings.tls_in_max_len = tls_in_max_len;
    }

    /// Sets the water marks of the plaintext queue, which count its records too.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(not(miri))] { // rustls's aws-lc-rs provider runs C and assembly, which Miri cannot
    /// # let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()])?;
    /// # let key = cert.signing_key.serialize_der().try_into()?;
    /// # let provider = rustls::crypto::aws_lc_rs::default_provider().into();
    /// # let config = std::sync::Arc::new(rustls::ServerConfig::builder_with_provider(provider)
    /// #     .with_safe_default_protocol_versions()?.with_no_client_auth()
    /// #     .with_single_cert(vec![cert.cert.der().clone()], key)?);
    /// use sendbuf::{TlsSession, Watermarks};
    ///
    /// let mut server = TlsSession::new(config)?;
    /// server.set_watermarks(Some(Watermarks::new(1024, 4096)));
    /// server.write_buffer().put_slice(&[0u8; 5000]);
    /// assert!(server.is_backed_up());
    /// # }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn set_watermarks(&mut self, marks: Option<Watermarks>) {
        match self.buffers.get_mut() {
            Some(b) => b.plain_out.set_watermarks(marks),
            // Nothing is held: setting marks crosses none.
            None => self.buffers.settings.watermarks = marks,
        }
    }

    /// True while the plaintext queue and its records are over the high water mark (until
    /// they drain to the low one): read no more requests.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(not(miri))] { // rustls's aws-lc-rs provider runs C and assembly, which Miri cannot
    /// # let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()])?;
    /// # let key = cert.signing_key.serialize_der().try_into()?;
    /// # let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    /// # let config = rustls::ServerConfig::builder_with_provider(provider.clone())
    /// #     .with_safe_default_protocol_versions()?.with_no_client_auth()
    /// #     .with_single_cert(vec![cert.cert.der().clone()], key)?.into();
    /// # let mut roots = rustls::RootCertStore::empty();
    /// # roots.add(cert.cert.der().clone())?;
    /// # let client = rustls::ClientConfig::builder_with_provider(provider)
    /// #     .with_safe_default_protocol_versions()?.with_root_certificates(roots)
    /// #     .with_no_client_auth();
    /// # let mut client = rustls::ClientConnection::new(client.into(), "localhost".try_into()?)?;
    /// # let mut server = sendbuf::TlsSession::new(config)?;
    /// # let mut wire = Vec::new();
    /// # while client.is_handshaking() || client.wants_write() || server.has_pending() {
    /// #     client.write_tls(&mut wire)?;
    /// #     server.read_tls_from(&mut &wire[..])?;
    /// #     wire.clear();
    /// #     server.write_to(&mut wire)?;
    /// #     client.read_tls(&mut &wire[..])?;
    /// #     client.process_new_packets()?;
    /// #     wire.clear();
    /// # }
    /// use sendbuf::Watermarks;
    ///
    /// // `server` has done its handshake with `client`, rustls's client, over in-memory pipes.
    /// server.set_watermarks(Some(Watermarks::new(1024, 4096)));
    /// server.write_buffer().put_slice(&[0u8; 5000]);
    /// assert!(server.is_backed_up()); // stop reading requests
    /// server.write_to(&mut Vec::new())?;
    /// assert!(!server.is_backed_up()); // sent: read again
    /// # }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn is_backed_up(&self) -> bool {
        self.buffers
            .get()
            .is_some_and(|b| b.plain_out.is_backed_up())
    }

    /// The plaintext queue: format and pin responses into it.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(not(miri))] { // rustls's aws-lc-rs provider runs C and assembly, which Miri cannot
    /// # let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()])?;
    /// # let key = cert.signing_key.serialize_der().try_into()?;
    /// # let provider = rustls::crypto::aws_lc_rs::default_provider().into();
    /// # let config = std::sync::Arc::new(rustls::ServerConfig::builder_with_provider(provider)
    /// #     .with_safe_default_protocol_versions()?.with_no_client_auth()
    /// #     .with_single_cert(vec![cert.cert.der().clone()], key)?);
    /// use std::sync::Arc;
    /// use sendbuf::TlsSession;
    ///
    /// let mut server = TlsSession::new(config)?;
    /// let out = server.write_buffer();
    /// let mut f = out.format();
    /// f.put_slice(b"VALUE k 0 ");
    /// f.put_decimal(5);
    /// f.put_slice(b"\r\n");
    /// f.commit();
    /// out.pin(Arc::<[u8]>::from(&b"hello"[..]));
    /// out.put_slice(b"\r\nEND\r\n");
    /// assert_eq!(server.write_buffer().pending_len(), 13 + 5 + 7);
    /// # }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn write_buffer(&mut self) -> &mut WriteBuffer {
        &mut self.buffers.make_mut().plain_out
    }

    /// Decrypted application data, oldest first.
    ///
    /// After a [steal](Stealable::steal) this makes the buffers again (one allocation), as
    /// every accessor of a buffer does: to ask whether requests wait, ask
    /// [`is_empty`](Self::is_empty).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(not(miri))] { // rustls's aws-lc-rs provider runs C and assembly, which Miri cannot
    /// # let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()])?;
    /// # let key = cert.signing_key.serialize_der().try_into()?;
    /// # let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    /// # let config = rustls::ServerConfig::builder_with_provider(provider.clone())
    /// #     .with_safe_default_protocol_versions()?.with_no_client_auth()
    /// #     .with_single_cert(vec![cert.cert.der().clone()], key)?.into();
    /// # let mut roots = rustls::RootCertStore::empty();
    /// # roots.add(cert.cert.der().clone())?;
    /// # let client = rustls::ClientConfig::builder_with_provider(provider)
    /// #     .with_safe_default_protocol_versions()?.with_root_certificates(roots)
    /// #     .with_no_client_auth();
    /// # let mut client = rustls::ClientConnection::new(client.into(), "localhost".try_into()?)?;
    /// # let mut server = sendbuf::TlsSession::new(config)?;
    /// # let mut wire = Vec::new();
    /// # while client.is_handshaking() || client.wants_write() || server.has_pending() {
    /// #     client.write_tls(&mut wire)?;
    /// #     server.read_tls_from(&mut &wire[..])?;
    /// #     wire.clear();
    /// #     server.write_to(&mut wire)?;
    /// #     client.read_tls(&mut &wire[..])?;
    /// #     client.process_new_packets()?;
    /// #     wire.clear();
    /// # }
    /// use std::io::Write;
    ///
    /// // `server` has done its handshake with `client`, rustls's client, over in-memory pipes.
    /// let mut tls = Vec::new();
    /// for request in [&b"get a\r\n"[..], b"get b\r\n"] {
    ///     client.writer().write_all(request)?;
    ///     client.write_tls(&mut tls)?; // a record each
    /// }
    /// server.read_tls_from(&mut &tls[..])?;
    /// assert_eq!(server.read_buffer().data(), b"get a\r\nget b\r\n"); // both, in one call
    /// # }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn read_buffer(&self) -> &ReadBuffer {
        &self.buffers.make().plain_in
    }

    /// Decrypted application data, to [`consume`](ReadBuffer::consume) what was parsed.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(not(miri))] { // rustls's aws-lc-rs provider runs C and assembly, which Miri cannot
    /// # let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()])?;
    /// # let key = cert.signing_key.serialize_der().try_into()?;
    /// # let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    /// # let config = rustls::ServerConfig::builder_with_provider(provider.clone())
    /// #     .with_safe_default_protocol_versions()?.with_no_client_auth()
    /// #     .with_single_cert(vec![cert.cert.der().clone()], key)?.into();
    /// # let mut roots = rustls::RootCertStore::empty();
    /// # roots.add(cert.cert.der().clone())?;
    /// # let client = rustls::ClientConfig::builder_with_provider(provider)
    /// #     .with_safe_default_protocol_versions()?.with_root_certificates(roots)
    /// #     .with_no_client_auth();
    /// # let mut client = rustls::ClientConnection::new(client.into(), "localhost".try_into()?)?;
    /// # let mut server = sendbuf::TlsSession::new(config)?;
    /// # let mut wire = Vec::new();
    /// # while client.is_handshaking() || client.wants_write() || server.has_pending() {
    /// #     client.write_tls(&mut wire)?;
    /// #     server.read_tls_from(&mut &wire[..])?;
    /// #     wire.clear();
    /// #     server.write_to(&mut wire)?;
    /// #     client.read_tls(&mut &wire[..])?;
    /// #     client.process_new_packets()?;
    /// #     wire.clear();
    /// # }
    /// use std::io::Write;
    ///
    /// // `server` has done its handshake with `client`, rustls's client, over in-memory pipes.
    /// client.writer().write_all(b"get a\r\nget b\r\n")?;
    /// let mut tls = Vec::new();
    /// client.write_tls(&mut tls)?;
    /// server.read_tls_from(&mut &tls[..])?;
    /// server.read_buffer_mut().consume(7); // the first request was parsed
    /// assert_eq!(server.read_buffer().data(), b"get b\r\n");
    /// # }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn read_buffer_mut(&mut self) -> &mut ReadBuffer {
        &mut self.buffers.make_mut().plain_in
    }

    /// Both sides at once, as a request handler needs them: decrypted requests to parse and the
    /// queue its responses go to.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(not(miri))] { // rustls's aws-lc-rs provider runs C and assembly, which Miri cannot
    /// # let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()])?;
    /// # let key = cert.signing_key.serialize_der().try_into()?;
    /// # let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    /// # let config = rustls::ServerConfig::builder_with_provider(provider.clone())
    /// #     .with_safe_default_protocol_versions()?.with_no_client_auth()
    /// #     .with_single_cert(vec![cert.cert.der().clone()], key)?.into();
    /// # let mut roots = rustls::RootCertStore::empty();
    /// # roots.add(cert.cert.der().clone())?;
    /// # let client = rustls::ClientConfig::builder_with_provider(provider)
    /// #     .with_safe_default_protocol_versions()?.with_root_certificates(roots)
    /// #     .with_no_client_auth();
    /// # let mut client = rustls::ClientConnection::new(client.into(), "localhost".try_into()?)?;
    /// # let mut server = sendbuf::TlsSession::new(config)?;
    /// # let mut wire = Vec::new();
    /// # while client.is_handshaking() || client.wants_write() || server.has_pending() {
    /// #     client.write_tls(&mut wire)?;
    /// #     server.read_tls_from(&mut &wire[..])?;
    /// #     wire.clear();
    /// #     server.write_to(&mut wire)?;
    /// #     client.read_tls(&mut &wire[..])?;
    /// #     client.process_new_packets()?;
    /// #     wire.clear();
    /// # }
    /// use std::io::Write;
    ///
    /// // `server` has done its handshake with `client`, rustls's client, over in-memory pipes.
    /// client.writer().write_all(b"get a\r\nget b\r\n")?;
    /// let mut tls = Vec::new();
    /// client.write_tls(&mut tls)?;
    /// server.read_tls_from(&mut &tls[..])?;
    /// let (requests, responses) = server.buffers();
    /// while let Some(end) = requests.data().iter().position(|&b| b == b'\n') {
    ///     responses.put_slice(b"END\r\n"); // no such key
    ///     requests.consume(end + 1);
    /// }
    /// assert!(server.read_buffer().is_empty());
    /// assert_eq!(server.write_buffer().pending_len(), 10);
    /// # }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn buffers(&mut self) -> (&mut ReadBuffer, &mut WriteBuffer) {
        let b = self.buffers.make_mut();
        (&mut b.plain_in, &mut b.plain_out)
    }

    /// True until the handshake is complete.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(not(miri))] { // rustls's aws-lc-rs provider runs C and assembly, which Miri cannot
    /// # let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()])?;
    /// # let key = cert.signing_key.serialize_der().try_into()?;
    /// # let provider = rustls::crypto::aws_lc_rs::default_provider().into();
    /// # let config = std::sync::Arc::new(rustls::ServerConfig::builder_with_provider(provider)
    /// #     .with_safe_default_protocol_versions()?.with_no_client_auth()
    /// #     .with_single_cert(vec![cert.cert.der().clone()], key)?);
    /// let server = sendbuf::TlsSession::new(config)?;
    /// assert!(server.is_handshaking()); // until the ClientHello is answered
    /// # }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn is_handshaking(&self) -> bool {
        self.phase == Phase::Handshaking
    }

    /// True once the session seals and opens its records itself: after the handshake, when the
    /// configuration allows secret extraction and aws-lc-rs implements the suite negotiated.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(not(miri))] { // rustls's aws-lc-rs provider runs C and assembly, which Miri cannot
    /// # let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()])?;
    /// # let key = cert.signing_key.serialize_der().try_into()?;
    /// # let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    /// # let mut config = rustls::ServerConfig::builder_with_provider(provider.clone())
    /// #     .with_safe_default_protocol_versions()?.with_no_client_auth()
    /// #     .with_single_cert(vec![cert.cert.der().clone()], key)?;
    /// # config.enable_secret_extraction = true;
    /// # let config = std::sync::Arc::new(config);
    /// # let mut roots = rustls::RootCertStore::empty();
    /// # roots.add(cert.cert.der().clone())?;
    /// # let client = rustls::ClientConfig::builder_with_provider(provider)
    /// #     .with_safe_default_protocol_versions()?.with_root_certificates(roots)
    /// #     .with_no_client_auth();
    /// # let mut client = rustls::ClientConnection::new(client.into(), "localhost".try_into()?)?;
    /// // `config` allows secret extraction.
    /// let mut server = sendbuf::TlsSession::new(config)?;
    /// assert!(!server.seals_records()); // rustls runs the handshake
    /// # let mut wire = Vec::new();
    /// # while client.is_handshaking() || client.wants_write() || server.has_pending() {
    /// #     client.write_tls(&mut wire)?;
    /// #     server.read_tls_from(&mut &wire[..])?;
    /// #     wire.clear();
    /// #     server.write_to(&mut wire)?;
    /// #     client.read_tls(&mut &wire[..])?;
    /// #     client.process_new_packets()?;
    /// #     wire.clear();
    /// # }
    /// // ... the handshake with `client`, rustls's client, over in-memory pipes ...
    /// server.write_buffer().put_slice(b"END\r\n");
    /// server.write_to(&mut wire)?;
    /// assert!(server.seals_records());
    /// client.read_tls(&mut &wire[..])?;
    /// client.process_new_packets()?;
    /// let mut got = [0u8; 5];
    /// std::io::Read::read_exact(&mut client.reader(), &mut got)?;
    /// assert_eq!(&got, b"END\r\n");
    /// # }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn seals_records(&self) -> bool {
        matches!(self.conn, Conn::Own(_))
    }

    /// True once the peer has sent `close_notify`: everything it sent has been received.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(not(miri))] { // rustls's aws-lc-rs provider runs C and assembly, which Miri cannot
    /// # let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()])?;
    /// # let key = cert.signing_key.serialize_der().try_into()?;
    /// # let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    /// # let config = rustls::ServerConfig::builder_with_provider(provider.clone())
    /// #     .with_safe_default_protocol_versions()?.with_no_client_auth()
    /// #     .with_single_cert(vec![cert.cert.der().clone()], key)?.into();
    /// # let mut roots = rustls::RootCertStore::empty();
    /// # roots.add(cert.cert.der().clone())?;
    /// # let client = rustls::ClientConfig::builder_with_provider(provider)
    /// #     .with_safe_default_protocol_versions()?.with_root_certificates(roots)
    /// #     .with_no_client_auth();
    /// # let mut client = rustls::ClientConnection::new(client.into(), "localhost".try_into()?)?;
    /// # let mut server = sendbuf::TlsSession::new(config)?;
    /// # let mut wire = Vec::new();
    /// # while client.is_handshaking() || client.wants_write() || server.has_pending() {
    /// #     client.write_tls(&mut wire)?;
    /// #     server.read_tls_from(&mut &wire[..])?;
    /// #     wire.clear();
    /// #     server.write_to(&mut wire)?;
    /// #     client.read_tls(&mut &wire[..])?;
    /// #     client.process_new_packets()?;
    /// #     wire.clear();
    /// # }
    /// // `server` has done its handshake with `client`, rustls's client, over in-memory pipes.
    /// assert!(!server.peer_closed());
    /// client.send_close_notify();
    /// let mut tls = Vec::new();
    /// client.write_tls(&mut tls)?;
    /// server.read_tls_from(&mut &tls[..])?;
    /// assert!(server.peer_closed()); // no request will follow: answer, then close
    /// # }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn peer_closed(&self) -> bool {
        self.peer_closed
    }

    /// What the session did so far.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(not(miri))] { // rustls's aws-lc-rs provider runs C and assembly, which Miri cannot
    /// # let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()])?;
    /// # let key = cert.signing_key.serialize_der().try_into()?;
    /// # let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    /// # let config = rustls::ServerConfig::builder_with_provider(provider.clone())
    /// #     .with_safe_default_protocol_versions()?.with_no_client_auth()
    /// #     .with_single_cert(vec![cert.cert.der().clone()], key)?.into();
    /// # let mut roots = rustls::RootCertStore::empty();
    /// # roots.add(cert.cert.der().clone())?;
    /// # let client = rustls::ClientConfig::builder_with_provider(provider)
    /// #     .with_safe_default_protocol_versions()?.with_root_certificates(roots)
    /// #     .with_no_client_auth();
    /// # let mut client = rustls::ClientConnection::new(client.into(), "localhost".try_into()?)?;
    /// # let mut server = sendbuf::TlsSession::new(config)?;
    /// # let mut wire = Vec::new();
    /// # while client.is_handshaking() || client.wants_write() || server.has_pending() {
    /// #     client.write_tls(&mut wire)?;
    /// #     server.read_tls_from(&mut &wire[..])?;
    /// #     wire.clear();
    /// #     server.write_to(&mut wire)?;
    /// #     client.read_tls(&mut &wire[..])?;
    /// #     client.process_new_packets()?;
    /// #     wire.clear();
    /// # }
    /// // `server` has done its handshake with `client`, rustls's client, over in-memory pipes.
    /// assert!(server.stats().tls_out > 0); // the handshake's messages
    /// assert_eq!(server.stats().plaintext_out, 0);
    /// server.write_buffer().put_slice(b"END\r\n");
    /// server.write_to(&mut Vec::new())?;
    /// assert_eq!(server.stats().plaintext_out, 5);
    /// # }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn stats(&self) -> TlsStats {
        self.stats
    }

    /// Asks for a `close_notify` to the peer after everything already queued; the next
    /// [`send_to`](Self::send_to) encrypts and sends it. Nothing queued after it is sent.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(not(miri))] { // rustls's aws-lc-rs provider runs C and assembly, which Miri cannot
    /// # let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()])?;
    /// # let key = cert.signing_key.serialize_der().try_into()?;
    /// # let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    /// # let config = rustls::ServerConfig::builder_with_provider(provider.clone())
    /// #     .with_safe_default_protocol_versions()?.with_no_client_auth()
    /// #     .with_single_cert(vec![cert.cert.der().clone()], key)?.into();
    /// # let mut roots = rustls::RootCertStore::empty();
    /// # roots.add(cert.cert.der().clone())?;
    /// # let client = rustls::ClientConfig::builder_with_provider(provider)
    /// #     .with_safe_default_protocol_versions()?.with_root_certificates(roots)
    /// #     .with_no_client_auth();
    /// # let mut client = rustls::ClientConnection::new(client.into(), "localhost".try_into()?)?;
    /// # let mut server = sendbuf::TlsSession::new(config)?;
    /// # let mut wire = Vec::new();
    /// # while client.is_handshaking() || client.wants_write() || server.has_pending() {
    /// #     client.write_tls(&mut wire)?;
    /// #     server.read_tls_from(&mut &wire[..])?;
    /// #     wire.clear();
    /// #     server.write_to(&mut wire)?;
    /// #     client.read_tls(&mut &wire[..])?;
    /// #     client.process_new_packets()?;
    /// #     wire.clear();
    /// # }
    /// use std::io::Read;
    ///
    /// // `server` has done its handshake with `client`, rustls's client, over in-memory pipes.
    /// server.write_buffer().put_slice(b"END\r\n");
    /// server.queue_close_notify(); // after the response
    /// let mut tls = Vec::new();
    /// server.write_to(&mut tls)?;
    /// client.read_tls(&mut &tls[..])?;
    /// client.process_new_packets()?;
    /// let mut got = String::new();
    /// client.reader().read_to_string(&mut got)?; // ends cleanly, at the close_notify
    /// assert_eq!(got, "END\r\n");
    /// # }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn queue_close_notify(&mut self) {
        if !self.close_queued && self.close_after.is_none() {
            self.close_after = Some(self.buffers.get().map_or(0, |b| b.plain_out.pending_len()));
        }
    }

    /// True while anything is to be sent: plaintext, records, or bytes rustls has for the
    /// peer (handshake messages, alerts, a `close_notify` asked for). The condition of a send
    /// loop, with one exception: plaintext queued while the handshake runs waits for its end,
    /// which only bytes from the peer bring ([`send_to`](Self::send_to) returns `Ok(0)` then).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(not(miri))] { // rustls's aws-lc-rs provider runs C and assembly, which Miri cannot
    /// # let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()])?;
    /// # let key = cert.signing_key.serialize_der().try_into()?;
    /// # let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    /// # let config = rustls::ServerConfig::builder_with_provider(provider.clone())
    /// #     .with_safe_default_protocol_versions()?.with_no_client_auth()
    /// #     .with_single_cert(vec![cert.cert.der().clone()], key)?.into();
    /// # let mut roots = rustls::RootCertStore::empty();
    /// # roots.add(cert.cert.der().clone())?;
    /// # let client = rustls::ClientConfig::builder_with_provider(provider)
    /// #     .with_safe_default_protocol_versions()?.with_root_certificates(roots)
    /// #     .with_no_client_auth();
    /// # let mut client = rustls::ClientConnection::new(client.into(), "localhost".try_into()?)?;
    /// # let mut server = sendbuf::TlsSession::new(config)?;
    /// # let mut wire = Vec::new();
    /// # while client.is_handshaking() || client.wants_write() || server.has_pending() {
    /// #     client.write_tls(&mut wire)?;
    /// #     server.read_tls_from(&mut &wire[..])?;
    /// #     wire.clear();
    /// #     server.write_to(&mut wire)?;
    /// #     client.read_tls(&mut &wire[..])?;
    /// #     client.process_new_packets()?;
    /// #     wire.clear();
    /// # }
    /// // `server` has done its handshake with `client`, rustls's client, over in-memory pipes.
    /// server.write_buffer().put_slice(b"END\r\n");
    /// let mut socket = Vec::new();
    /// while server.has_pending() {
    ///     server.write_to(&mut socket)?; // a socket's `send_to`, when it is writable
    /// }
    /// assert_eq!(socket.len(), 5 + 22); // one TLS 1.3 record
    /// # }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn has_pending(&self) -> bool {
        self.buffers
            .get()
            .is_some_and(|b| b.plain_out.has_pending() || b.records.has_pending())
            || self.conn.wants_write()
            || self.close_after.is_some()
    }

    /// Bytes of records (and handshake messages) encrypted and not yet sent.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(not(miri))] { // rustls's aws-lc-rs provider runs C and assembly, which Miri cannot
    /// # let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()])?;
    /// # let key = cert.signing_key.serialize_der().try_into()?;
    /// # let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    /// # let config = rustls::ServerConfig::builder_with_provider(provider.clone())
    /// #     .with_safe_default_protocol_versions()?.with_no_client_auth()
    /// #     .with_single_cert(vec![cert.cert.der().clone()], key)?.into();
    /// # let mut roots = rustls::RootCertStore::empty();
    /// # roots.add(cert.cert.der().clone())?;
    /// # let client = rustls::ClientConfig::builder_with_provider(provider)
    /// #     .with_safe_default_protocol_versions()?.with_root_certificates(roots)
    /// #     .with_no_client_auth();
    /// # let mut client = rustls::ClientConnection::new(client.into(), "localhost".try_into()?)?;
    /// # let mut server = sendbuf::TlsSession::new(config)?;
    /// # let mut wire = Vec::new();
    /// # while client.is_handshaking() || client.wants_write() || server.has_pending() {
    /// #     client.write_tls(&mut wire)?;
    /// #     server.read_tls_from(&mut &wire[..])?;
    /// #     wire.clear();
    /// #     server.write_to(&mut wire)?;
    /// #     client.read_tls(&mut &wire[..])?;
    /// #     client.process_new_packets()?;
    /// #     wire.clear();
    /// # }
    /// // `server` has done its handshake with `client`, rustls's client, over in-memory pipes.
    /// server.write_buffer().put_slice(&[0u8; 3000]);
    /// let mut socket = [0u8; 100]; // a socket that takes 100 bytes, then is full
    /// server.write_to(&mut &mut socket[..])?;
    /// assert_eq!(server.write_buffer().pending_len(), 0); // all encrypted: one record
    /// assert_eq!(server.unsent_tls_len(), 3000 + 22 - 100);
    /// # }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn unsent_tls_len(&self) -> usize {
        self.buffers.get().map_or(0, |b| b.records.pending_len())
    }

    /// Bytes still to reach the peer: plaintext pending plus records unsent.
    pub fn pending_len(&self) -> usize {
        self.buffers
            .get()
            .map_or(0, |b| b.plain_out.pending_len() + b.records.pending_len())
    }

    /// True only when the session holds nothing: no plaintext pending, no record unsent,
    /// nothing rustls has for the peer, no received bytes unprocessed or unread. Only then is
    /// it [stolen](Stealable::steal).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(not(miri))] { // rustls's aws-lc-rs provider runs C and assembly, which Miri cannot
    /// # let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()])?;
    /// # let key = cert.signing_key.serialize_der().try_into()?;
    /// # let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    /// # let config = rustls::ServerConfig::builder_with_provider(provider.clone())
    /// #     .with_safe_default_protocol_versions()?.with_no_client_auth()
    /// #     .with_single_cert(vec![cert.cert.der().clone()], key)?.into();
    /// # let mut roots = rustls::RootCertStore::empty();
    /// # roots.add(cert.cert.der().clone())?;
    /// # let client = rustls::ClientConfig::builder_with_provider(provider)
    /// #     .with_safe_default_protocol_versions()?.with_root_certificates(roots)
    /// #     .with_no_client_auth();
    /// # let mut client = rustls::ClientConnection::new(client.into(), "localhost".try_into()?)?;
    /// # let mut server = sendbuf::TlsSession::new(config)?;
    /// # let mut wire = Vec::new();
    /// # while client.is_handshaking() || client.wants_write() || server.has_pending() {
    /// #     client.write_tls(&mut wire)?;
    /// #     server.read_tls_from(&mut &wire[..])?;
    /// #     wire.clear();
    /// #     server.write_to(&mut wire)?;
    /// #     client.read_tls(&mut &wire[..])?;
    /// #     client.process_new_packets()?;
    /// #     wire.clear();
    /// # }
    /// use std::io::Write;
    ///
    /// // `server` has done its handshake with `client`, rustls's client, over in-memory pipes.
    /// assert!(server.is_empty());
    /// client.writer().write_all(b"get k\r\n")?;
    /// let mut tls = Vec::new();
    /// client.write_tls(&mut tls)?;
    /// server.read_tls_from(&mut &tls[..])?;
    /// assert!(!server.is_empty()); // a request waits to be read
    /// server.read_buffer_mut().consume(7);
    /// assert!(server.is_empty());
    /// # }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn is_empty(&self) -> bool {
        !self.conn.wants_write()
            && self.close_after.is_none()
            && self.buffers.get().is_none_or(|b| {
                b.plain_out.is_empty()
                    && b.records.is_empty()
                    && b.tls_in.is_empty()
                    && b.plain_in.is_empty()
            })
    }

    /// Reads TLS bytes from `src` (one `read`) and processes every complete record. Returns the
    /// bytes read; `Ok(0)` is the end of the stream.
    ///
    /// # Errors
    ///
    /// * The reader's error (`WouldBlock` included), with nothing lost.
    /// * [`OutOfMemory`](io::ErrorKind::OutOfMemory) if decrypted requests already fill the
    ///   read bound ([`set_max_read_len`](Self::set_max_read_len)): nothing is read.
    /// * [`InvalidData`](io::ErrorKind::InvalidData) wrapping a [`TlsError`] when the peer
    ///   broke the protocol: send what is pending (the alert), then close.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(not(miri))] { // rustls's aws-lc-rs provider runs C and assembly, which Miri cannot
    /// # let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()])?;
    /// # let key = cert.signing_key.serialize_der().try_into()?;
    /// # let provider = rustls::crypto::aws_lc_rs::default_provider().into();
    /// # let config = std::sync::Arc::new(rustls::ServerConfig::builder_with_provider(provider)
    /// #     .with_safe_default_protocol_versions()?.with_no_client_auth()
    /// #     .with_single_cert(vec![cert.cert.der().clone()], key)?);
    /// use std::io::ErrorKind;
    ///
    /// let mut server = sendbuf::TlsSession::new(config)?;
    /// assert_eq!(server.read_tls_from(&mut std::io::empty())?, 0); // end of stream
    /// // A client speaking plain HTTP to the TLS port:
    /// let err = server.read_tls_from(&mut &b"GET / HTTP/1.1\r\n\r\n"[..]).unwrap_err();
    /// assert_eq!(err.kind(), ErrorKind::InvalidData);
    /// assert!(server.has_pending()); // rustls's alert: send it, then close
    /// # }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn read_tls_from<R: Read + ?Sized>(&mut self, src: &mut R) -> io::Result<usize> {
        if self.phase == Phase::Failed {
            // Nothing more is read once the session failed: its input was dropped with it.
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "cannot read into a failed TLS session",
            ));
        }
        let b = self.buffers.make_mut();
        if b.plain_in.len() >= self.max_plain_in {
            return Err(ReadLimitError {
                requested: 1,
                buffered: b.plain_in.len(),
                max_len: self.max_plain_in,
            }
            .into());
        }
        let n = b.tls_in.read_from(src)?;
        if self.close_queued {
            // After our close_notify the session says nothing more, so what the peer sends is
            // read and dropped unprocessed. (rustls 0.23 would also try a fatal alert after
            // close_notify on bad input, which its debug builds assert against.)
            b.tls_in.clear();
            return Ok(n);
        }
        if n > 0 {
            self.process()?;
        } else if !b.tls_in.is_empty() {
            // The stream ended inside a record.
            self.abandon();
            return Err(TlsError::Protocol(rustls::Error::InvalidMessage(
                rustls::InvalidMessage::MessageTooShort,
            ))
            .into());
        }
        Ok(n)
    }

    /// Processes every complete record received so far: answers handshake messages, appends
    /// application data to the read buffer.
    fn process(&mut self) -> Result<(), TlsError> {
        self.pump(false)
    }

    /// Encrypts pending plaintext (at most [`ENCRYPT_AHEAD`] bytes of records ahead) and sends
    /// records with `sendmsg`, gathered, until everything is sent or the socket takes less
    /// than it was offered. Returns the bytes of TLS sent.
    ///
    /// # Errors
    ///
    /// The socket's error (`WouldBlock` when it took nothing), or [`InvalidData`] wrapping a
    /// [`TlsError`]. Nothing is lost either way: what was not sent stays pending.
    ///
    /// [`InvalidData`]: io::ErrorKind::InvalidData
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(all(unix, not(miri)))] { // rustls's aws-lc-rs provider runs C and assembly, which Miri cannot
    /// # let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()])?;
    /// # let key = cert.signing_key.serialize_der().try_into()?;
    /// # let provider = rustls::crypto::aws_lc_rs::default_provider().into();
    /// # let config = std::sync::Arc::new(rustls::ServerConfig::builder_with_provider(provider)
    /// #     .with_safe_default_protocol_versions()?.with_no_client_auth()
    /// #     .with_single_cert(vec![cert.cert.der().clone()], key)?);
    /// use std::io::Read;
    /// use std::os::unix::net::UnixStream;
    ///
    /// let (socket, mut peer) = UnixStream::pair()?;
    /// let mut server = sendbuf::TlsSession::new(config)?;
    /// // Plain HTTP to the TLS port: the request fails, rustls queues an alert.
    /// assert!(server.read_tls_from(&mut &b"GET / HTTP/1.1\r\n\r\n"[..]).is_err());
    /// while server.has_pending() {
    ///     server.send_to(&socket)?;
    /// }
    /// let mut alert = [0u8; 7];
    /// peer.read_exact(&mut alert)?;
    /// assert_eq!(alert[0], 21); // a TLS alert record
    /// # }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[cfg(unix)]
    pub fn send_to(&mut self, fd: impl std::os::fd::AsFd) -> io::Result<usize> {
        let fd = fd.as_fd();
        self.flush_with(|records| records.send_to_with(fd, GatherLimits::new()))
    }

    /// [`send_to`](Self::send_to) over any writer (a `Vec`, a test pipe, a blocking stream):
    /// `write_vectored` instead of `sendmsg`.
    ///
    /// # Errors
    ///
    /// As [`send_to`](Self::send_to).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(not(miri))] { // rustls's aws-lc-rs provider runs C and assembly, which Miri cannot
    /// # let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()])?;
    /// # let key = cert.signing_key.serialize_der().try_into()?;
    /// # let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    /// # let config = rustls::ServerConfig::builder_with_provider(provider.clone())
    /// #     .with_safe_default_protocol_versions()?.with_no_client_auth()
    /// #     .with_single_cert(vec![cert.cert.der().clone()], key)?.into();
    /// # let mut roots = rustls::RootCertStore::empty();
    /// # roots.add(cert.cert.der().clone())?;
    /// # let client = rustls::ClientConfig::builder_with_provider(provider)
    /// #     .with_safe_default_protocol_versions()?.with_root_certificates(roots)
    /// #     .with_no_client_auth();
    /// # let mut client = rustls::ClientConnection::new(client.into(), "localhost".try_into()?)?;
    /// # let mut server = sendbuf::TlsSession::new(config)?;
    /// # let mut wire = Vec::new();
    /// # while client.is_handshaking() || client.wants_write() || server.has_pending() {
    /// #     client.write_tls(&mut wire)?;
    /// #     server.read_tls_from(&mut &wire[..])?;
    /// #     wire.clear();
    /// #     server.write_to(&mut wire)?;
    /// #     client.read_tls(&mut &wire[..])?;
    /// #     client.process_new_packets()?;
    /// #     wire.clear();
    /// # }
    /// use std::io::Read;
    ///
    /// // `server` has done its handshake with `client`, rustls's client, over in-memory pipes.
    /// server.write_buffer().put_slice(b"END\r\n");
    /// let mut tls = Vec::new();
    /// let sent = server.write_to(&mut tls)?;
    /// assert_eq!(sent, tls.len());
    /// client.read_tls(&mut &tls[..])?;
    /// client.process_new_packets()?;
    /// let mut got = [0u8; 5];
    /// client.reader().read_exact(&mut got)?;
    /// assert_eq!(&got, b"END\r\n");
    /// # }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn write_to<W: Write + ?Sized>(&mut self, writer: &mut W) -> io::Result<usize> {
        self.flush_with(|records| records.write_to(writer))
    }

    /// Encrypts and sends with `send` (one call per round) until everything is sent or a send
    /// takes less than offered.
    fn flush_with(
        &mut self,
        mut send: impl FnMut(&mut WriteBuffer) -> io::Result<usize>,
    ) -> io::Result<usize> {
        if !self.has_pending() {
            // Nothing to encrypt or send: an idle session stays without buffers.
            return Ok(0);
        }
        let mut total = 0;
        loop {
            if self.phase == Phase::Failed {
                if let Some(b) = self.buffers.get_mut() {
                    b.plain_out.clear(); // queued after the failure: never sent
                }
            } else {
                self.pump(true)?;
            }
            let b = self.buffers.make_mut();
            if !b.records.has_pending() {
                return Ok(total);
            }
            let offered = b.records.pending_len();
            let sent = match send(&mut b.records) {
                Ok(sent) => sent,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && total > 0 => return Ok(total),
                Err(e) => return Err(e),
            };
            // Every record byte is counted by the plaintext queue (see `hold_outside`).
            b.plain_out.release_outside(sent);
            self.stats.tls_out += sent as u64;
            total += sent;
            if sent == 0 || sent < offered {
                return Ok(total);
            }
            let closing = self.close_after.is_some();
            if !b.plain_out.has_pending() && !b.records.has_pending() && !closing {
                return Ok(total);
            }
        }
    }

    /// Processes the received bytes until more are needed; with `encrypt`, also encrypts
    /// pending plaintext (and a wanted `close_notify`) once it may.
    fn pump(&mut self, encrypt: bool) -> Result<(), TlsError> {
        if self.phase == Phase::Failed {
            return Ok(());
        }
        if self.close_queued {
            // Nothing goes out after close_notify: what was queued since is dropped.
            if let Some(b) = self.buffers.get_mut() {
                b.plain_out.clear();
            }
        }
        if let Conn::Rustls(_) = self.conn {
            if !self.pump_rustls(encrypt)? {
                return Ok(());
            }
            self.take_over()?;
        }
        self.pump_own(encrypt)
    }

    /// Drives rustls over the received bytes until it waits for more; with `encrypt`, also
    /// encrypts through rustls. Returns true, with nothing encrypted, where the session takes
    /// the records over now.
    fn pump_rustls(&mut self, encrypt: bool) -> Result<bool, TlsError> {
        let mut rechecked = false;
        loop {
            let Conn::Rustls(conn) = &mut self.conn else {
                return Ok(false);
            };
            let b = self.buffers.make_mut();
            let status = conn.process_tls_records(b.tls_in.data_mut());
            let mut discard = status.discard;
            let state = match status.state {
                Ok(state) => state,
                Err(e) => {
                    b.tls_in.consume(discard);
                    return Err(self.fail(e));
                }
            };
            let mut done = false;
            let mut recheck = false;
            let mut failure = None;
            match state {
                ConnectionState::ReadTraffic(mut traffic) => {
                    while let Some(record) = traffic.next_record() {
                        let delivered = deliver(record, &mut b.plain_in, &mut self.stats);
                        match delivered {
                            Ok(more) => discard += more,
                            Err(e) => {
                                failure = Some(e);
                                break;
                            }
                        }
                    }
                }
                // Only with `max_early_data_size` set in the server's configuration.
                ConnectionState::ReadEarlyData(mut early) => {
                    while let Some(record) = early.next_record() {
                        let delivered = deliver(record, &mut b.plain_in, &mut self.stats);
                        if let Err(e) = delivered.map(|more| discard += more) {
                            failure = Some(e);
                            break;
                        }
                    }
                }
                ConnectionState::EncodeTlsData(mut encode) => {
                    let n = encode_into(&mut b.records, |out| encode.encode(out));
                    b.plain_out.hold_outside(n);
                }
                ConnectionState::TransmitTlsData(transmit) => {
                    // The bytes are in `records`, which `send_to` sends in order: rustls only
                    // needs them taken.
                    transmit.done();
                }
                ConnectionState::BlockedHandshake => done = true,
                ConnectionState::WriteTraffic(mut traffic) => {
                    if self.phase == Phase::Handshaking {
                        self.phase = Phase::Open;
                    }
                    if self.take_over && !rechecked {
                        // Whether the records become the session's now is asked of rustls
                        // once `traffic` lets go of it; if not, rustls encrypts on the next
                        // turn.
                        recheck = true;
                    } else if encrypt {
                        let out = Outgoing {
                            plain: &mut b.plain_out,
                            records: &mut b.records,
                            stats: &mut self.stats,
                            close_after: &mut self.close_after,
                            close_queued: &mut self.close_queued,
                        };
                        if let Err(e) = out.encrypt(&mut traffic) {
                            failure = Some(e);
                        }
                    }
                    done = !recheck;
                }
                ConnectionState::PeerClosed => self.peer_closed = true,
                ConnectionState::Closed => {
                    self.peer_closed = true;
                    self.phase = Phase::Closed;
                    done = true;
                }
                _ => done = true, // a state this rustls version added: nothing to do here
            }
            b.tls_in.consume(discard);
            if let Some(e) = failure {
                self.abandon();
                return Err(e);
            }
            if recheck {
                rechecked = true;
                // Records become the session's at the first chance after the handshake: rustls
                // has handed over every byte it had for the peer, and aws-lc-rs has the suite's
                // AEAD.
                if let Conn::Rustls(conn) = &self.conn {
                    if !conn.is_handshaking()
                        && !conn.wants_write()
                        && conn.negotiated_cipher_suite().is_some_and(record::supports)
                    {
                        return Ok(true);
                    }
                }
            }
            if done {
                return Ok(false);
            }
        }
    }

    /// Takes the records over from rustls, which keeps only what derives the next keys.
    fn take_over(&mut self) -> Result<(), TlsError> {
        let Conn::Rustls(conn) = core::mem::replace(&mut self.conn, Conn::Gone) else {
            return Ok(());
        };
        match RecordLayer::new(*conn) {
            Ok(layer) => {
                self.conn = Conn::Own(Box::new(layer));
                Ok(())
            }
            Err(e) => {
                self.abandon();
                Err(TlsError::Protocol(e))
            }
        }
    }

    /// [`pump`](Self::pump) over the session's own records: opens every complete record
    /// received, answers what asks for an answer, and with `encrypt` seals pending plaintext.
    fn pump_own(&mut self, encrypt: bool) -> Result<(), TlsError> {
        let Conn::Own(layer) = &mut self.conn else {
            return Ok(());
        };
        let b = self.buffers.make_mut();
        let mut answer = Answer::default();
        let received = receive(
            layer,
            b,
            &mut self.stats,
            &mut self.peer_closed,
            &mut answer,
        );
        let closing = self.close_queued;
        let mut out = OwnOutgoing {
            layer,
            plain: &mut b.plain_out,
            records: &mut b.records,
        };
        if !closing {
            if answer.key_update {
                out.key_update()?;
            }
            if answer.no_renegotiation {
                out.control(
                    record::ALERT,
                    &record::alert(rustls::AlertDescription::NoRenegotiation),
                );
            }
        }
        if let Err(e) = received {
            if let RecvError::Refused(Refused {
                alert: Some(alert), ..
            }) = &e
            {
                if !closing {
                    out.control(record::ALERT, &record::alert(*alert));
                }
            }
            self.abandon();
            return Err(match e {
                RecvError::Refused(r) => TlsError::Protocol(r.error),
                RecvError::Limit(e) => e,
            });
        }
        if encrypt {
            let encrypted = out.encrypt(
                &mut self.stats,
                &mut self.close_after,
                &mut self.close_queued,
            );
            if let Err(e) = encrypted {
                self.abandon();
                return Err(e);
            }
        }
        if self.peer_closed && self.close_queued {
            self.phase = Phase::Closed;
        }
        Ok(())
    }

    /// Ends the session on rustls's error `e`: one more turn lets rustls encode the alert it
    /// queued for the peer (sent by the next `send_to`), and nothing else happens after.
    fn fail(&mut self, e: rustls::Error) -> TlsError {
        // The alert, if rustls queued one, comes out of one more turn before any record is
        // looked at again. Without one, no turn: it would parse the bad record again.
        if let Conn::Rustls(conn) = &mut self.conn {
            if conn.wants_write() {
                let b = self.buffers.make_mut();
                let status = conn.process_tls_records(b.tls_in.data_mut());
                if let Ok(ConnectionState::EncodeTlsData(mut encode)) = status.state {
                    let n = encode_into(&mut b.records, |out| encode.encode(out));
                    b.plain_out.hold_outside(n);
                }
            }
        }
        self.abandon();
        TlsError::Protocol(e)
    }

    /// The session failed: nothing but what `records` holds (an alert) goes out any more, and
    /// nothing more comes in. The plaintext queued (its pinned values released) and the input
    /// are dropped, so the session can still become empty and give its storage back.
    fn abandon(&mut self) {
        self.phase = Phase::Failed;
        if let Some(b) = self.buffers.get_mut() {
            b.plain_out.clear();
            b.plain_in.clear();
            b.tls_in.clear();
        }
        self.close_after = None;
    }
}

/// The send side of a session, borrowed apart from its rustls connection.
struct Outgoing<'a> {
    plain: &'a mut WriteBuffer,
    records: &'a mut WriteBuffer,
    stats: &'a mut TlsStats,
    close_after: &'a mut Option<usize>,
    close_queued: &'a mut bool,
}

impl Outgoing<'_> {
    /// Encrypts pending plaintext into records, front first, until the records reach
    /// [`ENCRYPT_AHEAD`]; then a wanted `close_notify`.
    fn encrypt(self, traffic: &mut WriteTraffic<'_, ServerConnectionData>) -> Result<(), TlsError> {
        if *self.close_queued {
            // Nothing goes out after close_notify: what was queued since is dropped.
            self.plain.clear();
            return Ok(());
        }
        // Plaintext up to a `close_notify` asked for, all of it otherwise.
        let mut left = self.close_after.unwrap_or(usize::MAX);
        while left > 0 && self.plain.has_pending() && self.records.pending_len() < ENCRYPT_AHEAD {
            let chunk = self.plain.chunk();
            // Three records per call at most: they fit one block of `records`.
            let take = chunk.len().min(3 * MAX_RECORD_PLAINTEXT).min(left);
            let plaintext = &chunk[..take];
            let written = encrypt_into(self.records, take, |out| traffic.encrypt(plaintext, out))?;
            self.stats.encrypt_calls += 1;
            self.stats.records += take.div_ceil(MAX_RECORD_PLAINTEXT) as u64;
            self.stats.plaintext_out += take as u64;
            // The records replace the plaintext in what the queue answers for.
            self.plain
                .advance_into_outside(take, written)
                .expect("advancing past a pending chunk");
            left -= take;
        }
        if let Some(after) = self.close_after.as_mut() {
            *after = left;
            if left == 0 {
                let n = encrypt_into(self.records, 0, |out| traffic.queue_close_notify(out))?;
                self.plain.hold_outside(n);
                *self.close_after = None;
                *self.close_queued = true;
                self.plain.clear(); // queued after close_notify was asked for: never sent
            }
        }
        Ok(())
    }
}

/// Why the session's own records stopped being read.
enum RecvError {
    /// A record the peer should not have sent (or its fatal alert).
    Refused(Refused),
    /// Decrypted requests past the read bound.
    Limit(TlsError),
}

/// Opens every complete record in `b.tls_in`, appends application data to `b.plain_in`, and
/// notes in `answer` what the send side owes the peer.
fn receive(
    layer: &mut RecordLayer,
    b: &mut Buffers,
    stats: &mut TlsStats,
    peer_closed: &mut bool,
    answer: &mut Answer,
) -> Result<(), RecvError> {
    loop {
        if *peer_closed {
            // Nothing the peer sends after its close_notify counts.
            b.tls_in.clear();
            return Ok(());
        }
        let Some(len) = layer
            .next_record(b.tls_in.data())
            .map_err(RecvError::Refused)?
        else {
            return Ok(());
        };
        let record = &mut b.tls_in.data_mut()[..len];
        let (typ, range) = layer.open(record).map_err(RecvError::Refused)?;
        let opened = layer
            .interpret(typ, &record[range.clone()], range, answer)
            .map_err(RecvError::Refused)?;
        match opened {
            Opened::Data(range) => {
                let payload = &record[range];
                b.plain_in
                    .append(payload)
                    .map_err(|e| RecvError::Limit(TlsError::Limit(e)))?;
                stats.plaintext_in += payload.len() as u64;
            }
            Opened::CloseNotify => *peer_closed = true,
            Opened::Nothing => {}
        }
        b.tls_in.consume(len);
    }
}

/// The send side of a session that seals its own records.
struct OwnOutgoing<'a> {
    layer: &'a mut RecordLayer,
    plain: &'a mut WriteBuffer,
    records: &'a mut WriteBuffer,
}

impl OwnOutgoing<'_> {
    /// Seals a record of type `typ` carrying `payload` (an alert, a handshake message) behind
    /// the records already made.
    fn control(&mut self, typ: u8, payload: &[u8]) {
        let (prefix, suffix) = self.layer.overhead();
        let n = prefix + payload.len() + suffix;
        let mut f = self.records.format();
        self.layer.seal(typ, payload, f.put_uninit(n));
        f.commit();
        self.plain.hold_outside(n);
    }

    /// Sends a `KeyUpdate` under the current key, then switches to the next (TLS 1.3).
    fn key_update(&mut self) -> Result<(), TlsError> {
        self.control(record::HANDSHAKE, &RecordLayer::KEY_UPDATE_NOT_REQUESTED);
        self.layer.update_tx().map_err(TlsError::Protocol)
    }

    /// Seals pending plaintext into records of up to [`MAX_RECORD_PLAINTEXT`] bytes, front
    /// first, until the records reach [`ENCRYPT_AHEAD`]; then a wanted `close_notify`. A record
    /// never spans two segments: the cipher reads its plaintext where it lies, a run of scratch
    /// or a pinned value, and writes the record, so no payload byte is copied here.
    fn encrypt(
        mut self,
        stats: &mut TlsStats,
        close_after: &mut Option<usize>,
        close_queued: &mut bool,
    ) -> Result<(), TlsError> {
        if *close_queued {
            // Nothing goes out after close_notify: what was queued since is dropped.
            self.plain.clear();
            return Ok(());
        }
        let mut left = close_after.unwrap_or(usize::MAX);
        let (prefix, suffix) = self.layer.overhead();
        while left > 0 && self.plain.has_pending() && self.records.pending_len() < ENCRYPT_AHEAD {
            if self.layer.tx_exhausted() {
                if !self.layer.can_update() {
                    // TLS 1.2 cannot renew its key: the record left under the limit is a
                    // close_notify, as rustls sends, and the session ends.
                    let close = record::alert(rustls::AlertDescription::CloseNotify);
                    self.control(record::ALERT, &close);
                    *close_queued = true;
                    return Err(TlsError::KeysExhausted);
                }
                self.key_update()?;
            }
            let chunk = self.plain.chunk();
            let take = chunk.len().min(MAX_RECORD_PLAINTEXT).min(left);
            let n = prefix + take + suffix;
            let mut f = self.records.format();
            self.layer
                .seal(record::APPLICATION_DATA, &chunk[..take], f.put_uninit(n));
            f.commit();
            stats.encrypt_calls += 1;
            stats.records += 1;
            stats.plaintext_out += take as u64;
            // The record replaces the plaintext in what the queue answers for; a pinned value
            // whose last byte is in it is released here.
            self.plain
                .advance_into_outside(take, n)
                .expect("advancing past a pending chunk");
            left -= take;
        }
        if let Some(after) = close_after.as_mut() {
            *after = left;
            if left == 0 {
                let close = record::alert(rustls::AlertDescription::CloseNotify);
                self.control(record::ALERT, &close);
                *close_after = None;
                *close_queued = true;
                self.plain.clear(); // queued after close_notify was asked for: never sent
            }
        }
        Ok(())
    }
}

/// Appends a decrypted record's payload to `plain_in`; returns the bytes rustls asks to discard
/// with it.
fn deliver(
    record: Result<AppDataRecord<'_>, rustls::Error>,
    plain_in: &mut ReadBuffer,
    stats: &mut TlsStats,
) -> Result<usize, TlsError> {
    let record = record.map_err(TlsError::Protocol)?;
    plain_in.append(record.payload).map_err(TlsError::Limit)?;
    stats.plaintext_in += record.payload.len() as u64;
    Ok(record.discard)
}

/// Appends what rustls encodes (a handshake message or alert) to `records`: asks for the size
/// with an empty buffer, then encodes into that much scratch. Returns the bytes appended.
fn encode_into(
    records: &mut WriteBuffer,
    mut encode: impl FnMut(&mut [u8]) -> Result<usize, EncodeError>,
) -> usize {
    let need = match encode(&mut []) {
        Ok(n) => return n,
        Err(EncodeError::InsufficientSize(e)) => e.required_size,
        Err(EncodeError::AlreadyEncoded) => return 0,
    };
    let mut f = records.format();
    let out = f.put_uninit(need);
    let written = encode(out).unwrap_or(0);
    f.truncate(written);
    f.commit();
    written
}

/// Appends what rustls encrypts to `records`, as [`encode_into`] does; returns the bytes.
fn encrypt_into(
    records: &mut WriteBuffer,
    plaintext_len: usize,
    mut encrypt: impl FnMut(&mut [u8]) -> Result<usize, EncryptError>,
) -> Result<usize, TlsError> {
    // Room for the usual case without asking rustls first: each record's header, content
    // type, tag and TLS 1.2 nonce, plus a `KeyUpdate` rustls may put in front. Should rustls
    // need more, it says how much and writes nothing, and the call is made again.
    let mut room = plaintext_len + plaintext_len.div_ceil(MAX_RECORD_PLAINTEXT) * 40 + 64;
    let mut f = records.format();
    loop {
        let out = f.put_uninit(room);
        match encrypt(out) {
            Ok(written) => {
                f.truncate(written);
                f.commit();
                return Ok(written);
            }
            Err(EncryptError::InsufficientSize(e)) if e.required_size > room => {
                f.truncate(0);
                room = e.required_size;
            }
            Err(_) => return Err(TlsError::KeysExhausted),
        }
    }
}

impl Stealable for TlsSession {
    /// Gives every buffer's storage back if the session [is empty](TlsSession::is_empty), and
    /// drops the buffers themselves; refused while plaintext is pending, a record is unsent,
    /// rustls has bytes for the peer, or received bytes wait. The buffers are made again, as
    /// they were set, by the next call that needs them ([`read_tls_from`], [`write_buffer`],
    /// [`read_buffer`], [`buffers`], a send with something to send); the other questions
    /// ([`is_empty`], [`has_pending`], [`storage_bytes`](Stealable::storage_bytes)...) are
    /// answered without them.
    ///
    /// [`read_tls_from`]: TlsSession::read_tls_from
    /// [`write_buffer`]: TlsSession::write_buffer
    /// [`read_buffer`]: TlsSession::read_buffer
    /// [`buffers`]: TlsSession::buffers
    /// [`is_empty`]: TlsSession::is_empty
    /// [`has_pending`]: TlsSession::has_pending
    ///
    /// # Errors
    ///
    /// [`StealError`] with `pending` everything the session still holds (plaintext, records,
    /// received bytes).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(not(miri))] { // rustls's aws-lc-rs provider runs C and assembly, which Miri cannot
    /// # let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()])?;
    /// # let key = cert.signing_key.serialize_der().try_into()?;
    /// # let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    /// # let config = rustls::ServerConfig::builder_with_provider(provider.clone())
    /// #     .with_safe_default_protocol_versions()?.with_no_client_auth()
    /// #     .with_single_cert(vec![cert.cert.der().clone()], key)?.into();
    /// # let mut roots = rustls::RootCertStore::empty();
    /// # roots.add(cert.cert.der().clone())?;
    /// # let client = rustls::ClientConfig::builder_with_provider(provider)
    /// #     .with_safe_default_protocol_versions()?.with_root_certificates(roots)
    /// #     .with_no_client_auth();
    /// # let mut client = rustls::ClientConnection::new(client.into(), "localhost".try_into()?)?;
    /// # let mut server = sendbuf::TlsSession::new(config)?;
    /// # let mut wire = Vec::new();
    /// # while client.is_handshaking() || client.wants_write() || server.has_pending() {
    /// #     client.write_tls(&mut wire)?;
    /// #     server.read_tls_from(&mut &wire[..])?;
    /// #     wire.clear();
    /// #     server.write_to(&mut wire)?;
    /// #     client.read_tls(&mut &wire[..])?;
    /// #     client.process_new_packets()?;
    /// #     wire.clear();
    /// # }
    /// use sendbuf::Stealable;
    ///
    /// // `server` has done its handshake with `client`, rustls's client, over in-memory pipes.
    /// server.write_buffer().put_slice(b"END\r\n");
    /// assert_eq!(server.steal().unwrap_err().pending, 5); // refused: nothing lost
    /// server.write_to(&mut Vec::new())?;
    /// assert!(server.steal()? > 0); // sent: the storage is given back
    /// assert_eq!(server.storage_bytes(), 0);
    /// # }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    fn steal(&mut self) -> Result<usize, StealError> {
        if !self.is_empty() {
            let (pending, held) = self.buffers.get().map_or((0, 0), |b| {
                (
                    b.plain_out.pending_len()
                        + b.records.pending_len()
                        + b.tls_in.len()
                        + b.plain_in.len(),
                    b.plain_out.held_len() + b.records.held_len(),
                )
            });
            return Err(StealError {
                pending: pending
                    + usize::from(self.conn.wants_write() || self.close_after.is_some()),
                held,
            });
        }
        // The buffers go too, not only their storage: made again when work comes. So do
        // aws-lc-rs's expanded keys: the secrets stay.
        if let Conn::Own(layer) = &mut self.conn {
            layer.shrink();
        }
        self.buffers.steal()
    }

    fn storage_bytes(&self) -> usize {
        self.buffers.get().map_or(0, |b| {
            b.plain_out.storage_bytes()
                + b.records.storage_bytes()
                + b.tls_in.storage_bytes()
                + b.plain_in.storage_bytes()
        })
    }
}

impl fmt::Debug for TlsSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.buffers.get();
        f.debug_struct("TlsSession")
            .field("phase", &self.phase)
            .field("buffers", &b.is_some())
            .field(
                "plaintext_pending",
                &b.map_or(0, |b| b.plain_out.pending_len()),
            )
            .field("tls_unsent", &b.map_or(0, |b| b.records.pending_len()))
            .field("tls_received", &b.map_or(0, |b| b.tls_in.len()))
            .field("plaintext_received", &b.map_or(0, |b| b.plain_in.len()))
            .field("peer_closed", &self.peer_closed)
            .finish()
    }
}

/// Whether this kernel offers TLS for TCP sockets (`setsockopt(TCP_ULP, "tls")`; Linux with
/// the `tls` module). Checked once on a fresh socket; `Ok(false)` where the module is missing
/// (`ENOENT`) or the platform has none.
///
/// A session does not use kernel TLS: this says whether a deployment could (see the crate
/// docs, "TLS").
///
/// # Errors
///
/// The socket could not be created, or the kernel refused for another reason.
///
/// # Examples
///
/// ```
/// # #[cfg(not(miri))] { // FFI
/// let available = sendbuf::tls::kernel_tls_available()?;
/// println!("kernel TLS: {}", if available { "available" } else { "not available" });
/// # }
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn kernel_tls_available() -> io::Result<bool> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    return crate::sys::kernel_tls_available();
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    return Ok(false);
}
