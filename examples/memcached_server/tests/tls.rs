//! The server's TLS listener (`--tls-cert`, `--tls-key`), against rustls's client: requests and
//! responses of every size decrypt byte-exactly, a peer that sends garbage is closed while
//! others are served, idle TLS connections give their buffers back, `quit` ends with
//! `close_notify`, and bad certificate files are refused at start-up with the file named.
#![cfg(unix)]

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use memcached_server::config::{self, Config, SendPath};
use memcached_server::server::{self, ServerHandle};
use memcached_server::tls::TlsFiles;
use memcached_server::worker::SWEEP_INTERVAL;
use rustls::{ClientConfig, ClientConnection, StreamOwned};

/// A certificate and key for `localhost` in PEM files of a fresh directory (made now; no key is
/// committed), and the client configuration that trusts it.
struct Pki {
    dir: PathBuf,
    files: TlsFiles,
    client: Arc<ClientConfig>,
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn pki(name: &str) -> Pki {
    let dir = std::env::temp_dir().join(format!("mc-tls-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let made = sendbuf_testkit::tls::pki();
    let files = TlsFiles {
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
    };
    std::fs::write(&files.cert, &made.cert_pem).unwrap();
    std::fs::write(&files.key, &made.key_pem).unwrap();
    Pki {
        dir,
        files,
        client: made.client,
    }
}

fn start(pki: &Pki) -> ServerHandle {
    server::start(Config {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        threads: 2,
        stall_timeout: config::STALL_TIMEOUT,
        tls: Some(pki.files.clone()),
        ..Config::default()
    })
    .expect("the TLS server starts")
}

type Tls = StreamOwned<ClientConnection, TcpStream>;

fn connect(server: &ServerHandle, pki: &Pki) -> Tls {
    let tcp = TcpStream::connect(server.local_addr()).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let conn = ClientConnection::new(pki.client.clone(), "localhost".try_into().unwrap()).unwrap();
    StreamOwned::new(conn, tcp)
}

/// Reads exactly `n` bytes.
fn read_n(tls: &mut Tls, n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    tls.read_exact(&mut buf).unwrap();
    buf
}

fn set(tls: &mut Tls, key: &str, value: &[u8]) {
    let mut req = format!("set {key} 0 0 {}\r\n", value.len()).into_bytes();
    req.extend_from_slice(value);
    req.extend_from_slice(b"\r\n");
    tls.write_all(&req).unwrap();
    assert_eq!(read_n(tls, 8), b"STORED\r\n");
}

fn expected_get(key: &str, value: &[u8]) -> Vec<u8> {
    let mut want = format!("VALUE {key} 0 {}\r\n", value.len()).into_bytes();
    want.extend_from_slice(value);
    want.extend_from_slice(b"\r\nEND\r\n");
    want
}

#[test]
fn tls_clients_get_what_they_set_at_every_size() {
    let pki = pki("sizes");
    let server = start(&pki);
    let mut tls = connect(&server, &pki);
    let sizes = [
        0usize,
        1,
        100,
        1023,
        1024,
        4096,
        16 * 1024,
        16 * 1024 + 1,
        200_000,
    ];
    for (i, &size) in sizes.iter().enumerate() {
        let value: Vec<u8> = (0..size).map(|b| (b * 7 + i) as u8).collect();
        let key = format!("k{i}");
        set(&mut tls, &key, &value);
        tls.write_all(format!("get {key}\r\n").as_bytes()).unwrap();
        let want = expected_get(&key, &value);
        assert_eq!(read_n(&mut tls, want.len()), want, "size {size}");
    }
    // A pipeline of gets in one write: many responses, few records.
    let mut req = Vec::new();
    let mut want = Vec::new();
    for round in 0..50 {
        let i = round % sizes.len();
        req.extend_from_slice(format!("get k{i}\r\n").as_bytes());
        let value: Vec<u8> = (0..sizes[i]).map(|b| (b * 7 + i) as u8).collect();
        want.extend(expected_get(&format!("k{i}"), &value));
    }
    tls.write_all(&req).unwrap();
    assert!(
        read_n(&mut tls, want.len()) == want,
        "pipelined responses differ"
    );

    // quit: the server says close_notify, then closes.
    tls.write_all(b"quit\r\n").unwrap();
    let mut rest = Vec::new();
    tls.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
    server.shutdown();
}

#[test]
fn shutting_down_says_close_notify() {
    let pki = pki("shutdown");
    let server = start(&pki);
    let mut tls = connect(&server, &pki);
    set(&mut tls, "k", b"v");
    server.shutdown();
    // A clean end of the TLS stream: rustls reports a missing close_notify as an error.
    let mut rest = Vec::new();
    tls.read_to_end(&mut rest)
        .expect("close_notify before the end of the stream");
    assert!(rest.is_empty());
}

#[test]
fn a_peer_sending_garbage_is_closed_and_others_are_served() {
    let pki = pki("garbage");
    let server = start(&pki);
    let mut good = connect(&server, &pki);
    set(&mut good, "a", b"alpha");

    let mut bad = TcpStream::connect(server.local_addr()).unwrap();
    bad.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    bad.write_all(&[0x16, 0x03, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5])
        .unwrap();
    bad.write_all(b"get a\r\n this is not TLS at all").unwrap();
    // The server answers with an alert at most, then closes.
    let mut answer = Vec::new();
    match bad.read_to_end(&mut answer) {
        Ok(_) => assert!(answer.len() < 64, "{} bytes", answer.len()),
        Err(e) => assert_eq!(e.kind(), io::ErrorKind::ConnectionReset, "{e}"),
    }

    good.write_all(b"get a\r\n").unwrap();
    let want = expected_get("a", b"alpha");
    assert_eq!(read_n(&mut good, want.len()), want);
    server.shutdown();
}

#[test]
fn idle_tls_connections_give_their_buffers_back() {
    let pki = pki("idle");
    let server = start(&pki);
    let value = vec![b'v'; 64 * 1024];
    let mut clients: Vec<Tls> = (0..8).map(|_| connect(&server, &pki)).collect();
    set(&mut clients[0], "big", &value);
    let want = expected_get("big", &value);
    for tls in &mut clients {
        tls.write_all(b"get big\r\n").unwrap();
        assert_eq!(read_n(tls, want.len()), want);
    }
    assert!(server.buffered_connections() > 0);
    // Idle for a whole sweep interval: swept at the next one.
    let deadline = Instant::now() + 20 * SWEEP_INTERVAL;
    while server.buffered_connections() > 0 && Instant::now() < deadline {
        std::thread::sleep(SWEEP_INTERVAL / 2);
    }
    assert_eq!(
        server.buffered_connections(),
        0,
        "idle sessions keep buffers"
    );
    // They still work: storage is taken again on the next request.
    for tls in &mut clients {
        tls.write_all(b"get big\r\n").unwrap();
        assert_eq!(read_n(tls, want.len()), want);
    }
    server.shutdown();
}

#[test]
fn bad_certificate_files_are_refused_at_start() {
    let pki = pki("bad");
    let start_with = |files: TlsFiles| {
        server::start(Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            threads: 1,
            tls: Some(files),
            ..Config::default()
        })
    };
    let missing = TlsFiles {
        cert: pki.dir.join("nothing.pem"),
        key: pki.files.key.clone(),
    };
    let err = start_with(missing)
        .err()
        .expect("a missing certificate is refused");
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    assert!(err.to_string().contains("--tls-cert"), "{err}");
    assert!(err.to_string().contains("nothing.pem"), "{err}");

    let garbage = pki.dir.join("garbage.pem");
    std::fs::write(&garbage, "not a key\n").unwrap();
    let bad_key = TlsFiles {
        cert: pki.files.cert.clone(),
        key: garbage,
    };
    let err = start_with(bad_key).err().expect("a bad key is refused");
    assert!(err.to_string().contains("--tls-key"), "{err}");

    // A key that is not the certificate's.
    let other_key = pki.dir.join("other.pem");
    std::fs::write(&other_key, sendbuf_testkit::tls::pki().key_pem).unwrap();
    let mismatched = TlsFiles {
        cert: pki.files.cert.clone(),
        key: other_key,
    };
    let err = start_with(mismatched)
        .err()
        .expect("a key of another certificate is refused");
    assert!(err.to_string().contains("--tls-key"), "{err}");

    let err = server::start(Config {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        threads: 1,
        send_path: SendPath::ZeroCopy,
        tls: Some(pki.files.clone()),
        ..Config::default()
    })
    .err()
    .expect("TLS on the zero-copy path is refused");
    assert!(err.to_string().contains("copy send path only"), "{err}");
}
