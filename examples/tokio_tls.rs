//! A TLS server on tokio without tokio-rustls: tokio says when the socket is ready, a
//! `TlsSession` does the rest. Received TLS bytes go through `read_tls_from`; requests are
//! parsed from its decrypted `read_buffer`; responses are queued in its `write_buffer`, values
//! pinned (never copied into an output buffer), and `send_to` encrypts them into records and
//! sends them gathered, straight on the socket's file descriptor.
//!
//! Protocol (memcached's text `get`): the client sends `get <key>\r\n`; the server answers
//! `VALUE <key> 0 <len>\r\n`, the value's bytes and `\r\nEND\r\n`, or `END\r\n` for a miss.
//!
//! Run with `cargo run --example tokio_tls --features rustls`: it makes a self-signed
//! certificate, starts the server on 127.0.0.1 (any free port), connects a blocking rustls
//! client of its own that pipelines requests in one write, checks every response byte for
//! byte, closes with `close_notify` both ways and prints one line.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::sync::Arc;

use rustls::pki_types::PrivateKeyDer;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use sendbuf::{TlsSession, TlsStats, WriteBuffer};
use tokio::io::Interest;
use tokio::net::{TcpListener, TcpStream};

type Store = Arc<HashMap<&'static str, Arc<[u8]>>>;

/// tokio's non-blocking `try_read` as a `std::io::Read`. `try_read` reports "no data yet" as
/// `WouldBlock` and clears the socket's readiness, so the next `readable().await` really waits;
/// `read_tls_from` passes the error on with nothing lost.
struct TryRead<'a>(&'a TcpStream);

impl Read for TryRead<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.try_read(buf)
    }
}

/// What one connection did.
struct Served {
    requests: usize,
    would_block: usize,
    stats: TlsStats,
}

/// Serves one connection until the client sends `close_notify` (or closes the socket).
async fn serve(stream: TcpStream, config: Arc<ServerConfig>, store: Store) -> io::Result<Served> {
    let mut session = TlsSession::new(config).map_err(io::Error::other)?;
    let (mut requests, mut would_block) = (0, 0);
    loop {
        stream.readable().await?;
        match session.read_tls_from(&mut TryRead(&stream)) {
            Ok(0) => break, // the socket closed without close_notify: nobody to answer
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue, // a spurious wake-up
            Err(e) => {
                // The client broke the protocol: send rustls's alert, then close.
                let _ = flush(&stream, &mut session).await;
                return Err(e);
            }
        }
        // Every complete request received so far; a partial line waits for more bytes.
        let (input, out) = session.buffers();
        while let Some(end) = input.data().windows(2).position(|w| w == b"\r\n") {
            respond(&store, &input.data()[..end], out)?;
            input.consume(end + 2);
            requests += 1;
        }
        // The client sent close_notify after its last request: answer it after the responses.
        let closing = session.peer_closed();
        if closing {
            session.queue_close_notify();
        }
        // Handshake messages too: whatever the session has for the client goes out now.
        would_block += flush(&stream, &mut session).await?;
        if closing {
            break;
        }
    }
    let stats = session.stats();
    Ok(Served {
        requests,
        would_block,
        stats,
    })
}

/// Sends everything pending; returns how often the socket was full.
async fn flush(stream: &TcpStream, session: &mut TlsSession) -> io::Result<usize> {
    let mut would_block = 0;
    while session.has_pending() {
        stream.writable().await?;
        // `send_to` calls `sendmsg` on the descriptor itself, behind tokio's back: `try_io`
        // clears tokio's write readiness when it reports `WouldBlock`, so the next
        // `writable().await` waits for the kernel instead of spinning.
        match stream.try_io(Interest::WRITABLE, || session.send_to(stream)) {
            // Nothing could go out: what is queued waits for the peer (plaintext or a
            // close_notify queued before the handshake is done, or anything after an error).
            Ok(0) => break,
            Ok(_) => {} // all sent, or part: `has_pending` says which
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => would_block += 1,
            Err(e) => return Err(e),
        }
    }
    Ok(would_block)
}

/// Queues the response to one request line (without its `\r\n`).
fn respond(store: &Store, line: &[u8], out: &mut WriteBuffer) -> io::Result<()> {
    let key = line
        .strip_prefix(b"get ")
        .and_then(|k| std::str::from_utf8(k).ok());
    match key.map(|key| (key, store.get(key))) {
        Some((key, Some(value))) => {
            // The header is formatted straight into the session's scratch (this never fails).
            let mut f = out.format();
            write!(f, "VALUE {key} 0 {}\r\n", value.len())?;
            f.commit();
            // A reference count, not a copy: encrypted from the store's memory, and released
            // as soon as its last byte is encrypted.
            out.pin(value.clone());
            out.put_slice(b"\r\nEND\r\n");
        }
        Some((_, None)) => out.put_slice(b"END\r\n"),
        None => out.put_slice(b"ERROR\r\n"),
    }
    Ok(())
}

/// A certificate for `localhost` made now (no key on disk), and both sides' configurations.
fn configs() -> Result<(Arc<ServerConfig>, Arc<ClientConfig>), Box<dyn std::error::Error>> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()])?;
    let key = PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
    let mut server = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(vec![cert.cert.der().clone()], key)?;
    // The session seals and opens records itself after the handshake (see `TlsSession::new`).
    server.enable_secret_extraction = true;
    let mut roots = RootCertStore::empty();
    roots.add(cert.cert.der().clone())?;
    let client = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok((Arc::new(server), Arc::new(client)))
}

/// The client, blocking (it runs on tokio's blocking pool): pipelines `keys` in one write,
/// reads and checks every response, then closes cleanly. Returns the bytes of responses.
fn client(
    addr: std::net::SocketAddr,
    config: Arc<ClientConfig>,
    store: Store,
    keys: &[&str],
) -> io::Result<usize> {
    let conn = rustls::ClientConnection::new(config, "localhost".try_into().unwrap())
        .map_err(io::Error::other)?;
    let mut tls = rustls::StreamOwned::new(conn, std::net::TcpStream::connect(addr)?);
    let batch: String = keys.iter().map(|key| format!("get {key}\r\n")).collect();
    tls.write_all(batch.as_bytes())?; // the handshake, then every request at once
    let mut total = 0;
    for key in keys {
        let mut expected = Vec::new();
        if let Some(value) = store.get(key) {
            expected.extend_from_slice(format!("VALUE {key} 0 {}\r\n", value.len()).as_bytes());
            expected.extend_from_slice(value);
            expected.extend_from_slice(b"\r\n");
        }
        expected.extend_from_slice(b"END\r\n");
        let mut got = vec![0; expected.len()];
        tls.read_exact(&mut got)?;
        assert!(got == expected, "the response to `get {key}` differs");
        total += got.len();
    }
    tls.conn.send_close_notify();
    tls.flush()?;
    let mut rest = Vec::new();
    tls.read_to_end(&mut rest)?; // ends cleanly at the server's close_notify
    assert!(rest.is_empty(), "nothing after the last response");
    Ok(total)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (server_config, client_config) = configs()?;
    let store: Store = Arc::new(HashMap::from([
        ("greeting", Arc::from(&b"hello over TLS"[..])),
        ("page", vec![b'p'; 64 * 1024].into()), // four full records
        ("blob", vec![b'b'; 4 << 20].into()),   // more than the socket holds: partial sends
    ]));

    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server_store = store.clone();
    let server = tokio::spawn(async move {
        let (stream, _) = listener.accept().await?;
        serve(stream, server_config, server_store).await
    });

    let keys = ["greeting", "page", "missing", "blob", "greeting", "page"];
    let bytes =
        tokio::task::spawn_blocking(move || client(addr, client_config, store, &keys)).await??;
    let served = server.await??;
    assert_eq!(served.requests, keys.len(), "every request answered");
    println!(
        "tokio_tls: {} pipelined requests answered over TLS, {bytes} response bytes checked, \
         {} records in {} encrypt calls, {} TLS bytes sent, {} sends found the socket full, closed cleanly",
        served.requests,
        served.stats.records,
        served.stats.encrypt_calls,
        served.stats.tls_out,
        served.would_block,
    );
    Ok(())
}
