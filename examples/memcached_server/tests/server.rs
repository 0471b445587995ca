//! The memcached example server under bad and hostile clients, in process: each test starts a
//! server on 127.0.0.1:0 with 2 workers, talks to it over TCP, checks the protocol's error
//! response or a closed connection, checks that another client is still served promptly, and
//! shuts the server down.
// Real sockets and threads on mio: nothing for Miri to interpret.
#![cfg(not(miri))]

use memcached_server::{config, server, stats, store, worker};
use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::Ordering;
use std::thread;
use std::time::{Duration, Instant};

use config::{Config, SendPath};
use server::ServerHandle;

const MAX_ITEM: usize = 1024 * 1024;

fn start() -> ServerHandle {
    start_with(SendPath::Copy)
}

/// A server sending with `path`. The zero-copy path keeps asking for zero copy after the
/// kernel reports its loopback copies, so that real zero-copy sends and completions happen.
fn start_with(path: SendPath) -> ServerHandle {
    server::start(config(path)).expect("server starts")
}

fn config(path: SendPath) -> Config {
    Config {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        threads: 2,
        memory_limit: 64 * 1024 * 1024,
        max_item_size: MAX_ITEM,
        max_connections: config::DEFAULT_MAX_CONNECTIONS,
        send_path: path,
        zerocopy_stop_when_copied: false,
        zerocopy_min_window: config::DEFAULT_ZEROCOPY_MIN_WINDOW,
        stall_timeout: config::STALL_TIMEOUT,
        tls: None,
    }
}

/// Shuts the server down and checks its send path: on the zero-copy path, large responses
/// were really sent zero-copy and completed, and no buffer was dropped while the kernel held
/// bytes of it; on the io_uring path, responses went through the ring, every send's result
/// came back (none was left in the kernel with its buffers) and no buffer was leaked; on the
/// copy path, neither machinery ran.
fn finish(server: ServerHandle, path: SendPath) -> stats::SendTotals {
    let totals = server.shutdown();
    let (zc, u) = (totals.zero_copy, totals.uring);
    if path != SendPath::ZeroCopy {
        assert_eq!(zc, sendbuf::ZeroCopyStats::default());
    }
    match path {
        SendPath::Copy => assert_eq!(u, stats::UringCounts::default()),
        SendPath::ZeroCopy => {
            assert!(zc.zero_copy_sends > 0, "no zero-copy send: {zc:?}");
            assert!(zc.completions > 0, "no completion: {zc:?}");
            assert_eq!(zc.ignored, 0, "completions matching no send: {zc:?}");
            assert_eq!(u, stats::UringCounts::default());
        }
        #[cfg(feature = "io-uring")]
        SendPath::Uring => {
            assert!(u.sends > 0, "no io_uring send: {u:?}");
            assert_eq!(u.results, u.sends, "sends without a result: {u:?}");
            assert_eq!(u.ignored, 0, "completions matching no send: {u:?}");
            assert_eq!(u.leaked_buffers, 0, "buffers leaked: {u:?}");
        }
    }
    assert_eq!(sendbuf::ZeroCopy::leaked_bytes(), 0, "held bytes leaked");
    totals
}

fn connect(server: &ServerHandle) -> TcpStream {
    let s = TcpStream::connect(server.local_addr()).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

fn read_exactly(s: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    s.read_exact(&mut buf).expect("response bytes");
    buf
}

/// Reads an ASCII line (up to and including `\r\n`).
fn read_line(s: &mut TcpStream) -> String {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while !line.ends_with(b"\r\n") {
        match s.read(&mut byte) {
            Ok(1) => line.push(byte[0]),
            Ok(_) => panic!(
                "connection closed after {:?}",
                String::from_utf8_lossy(&line)
            ),
            Err(e) => panic!(
                "reading a line: {e} after {:?}",
                String::from_utf8_lossy(&line)
            ),
        }
    }
    String::from_utf8_lossy(&line).into_owned()
}

/// True if the server closed the connection (EOF or reset) once any bytes before that are read.
fn closed_by_server(s: &mut TcpStream) -> bool {
    let mut sink = [0u8; 4096];
    loop {
        match s.read(&mut sink) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return true,
            Err(_) => return false, // timeout: still open
        }
    }
}

mod op {
    pub const GET: u8 = 0x00;
    pub const SET: u8 = 0x01;
    pub const NOOP: u8 = 0x0a;
    pub const QUIT: u8 = 0x07;
}

/// A binary request; `body_len` overrides the true body length (to lie about it).
fn bin_request(
    magic: u8,
    opcode: u8,
    key: &[u8],
    extras: &[u8],
    value: &[u8],
    body_len: Option<u32>,
) -> Vec<u8> {
    let body = (extras.len() + key.len() + value.len()) as u32;
    let mut r = Vec::with_capacity(24 + body as usize);
    r.push(magic);
    r.push(opcode);
    r.extend_from_slice(&(key.len() as u16).to_be_bytes());
    r.push(extras.len() as u8);
    r.push(0); // data type
    r.extend_from_slice(&[0, 0]); // vbucket
    r.extend_from_slice(&body_len.unwrap_or(body).to_be_bytes());
    r.extend_from_slice(&0x1234_5678u32.to_be_bytes()); // opaque
    r.extend_from_slice(&[0; 8]); // cas
    r.extend_from_slice(extras);
    r.extend_from_slice(key);
    r.extend_from_slice(value);
    r
}

fn bin_set(key: &[u8], value: &[u8]) -> Vec<u8> {
    bin_request(0x80, op::SET, key, &[0; 8], value, None)
}

fn bin_get(key: &[u8]) -> Vec<u8> {
    bin_request(0x80, op::GET, key, &[], &[], None)
}

struct BinResponse {
    magic: u8,
    opcode: u8,
    status: u16,
    opaque: u32,
    key_len: usize,
    extras_len: usize,
    body: Vec<u8>,
}

impl BinResponse {
    fn value(&self) -> &[u8] {
        &self.body[self.extras_len + self.key_len..]
    }
}

fn read_bin(s: &mut TcpStream) -> BinResponse {
    let h = read_exactly(s, 24);
    let body_len = u32::from_be_bytes(h[8..12].try_into().unwrap()) as usize;
    BinResponse {
        magic: h[0],
        opcode: h[1],
        status: u16::from_be_bytes([h[6], h[7]]),
        opaque: u32::from_be_bytes(h[12..16].try_into().unwrap()),
        key_len: usize::from(u16::from_be_bytes([h[2], h[3]])),
        extras_len: usize::from(h[4]),
        body: read_exactly(s, body_len),
    }
}

/// Two fresh clients (the acceptor deals connections round-robin, so one lands on each of the
/// two workers, including the one serving the misbehaving client) store and read back a value
/// over ASCII; returns the slower `get` round trip. Panics if the server answers wrongly.
fn served(server: &ServerHandle) -> Duration {
    served_once(server).max(served_once(server))
}

fn served_once(server: &ServerHandle) -> Duration {
    let mut c = connect(server);
    c.write_all(b"set probe 0 0 5\r\nhello\r\n").unwrap();
    assert_eq!(read_line(&mut c), "STORED\r\n");
    let t = Instant::now();
    c.write_all(b"get probe\r\n").unwrap();
    assert_eq!(read_line(&mut c), "VALUE probe 0 5\r\n");
    let elapsed = t.elapsed();
    assert_eq!(read_line(&mut c), "hello\r\n");
    assert_eq!(read_line(&mut c), "END\r\n");
    elapsed
}

/// Waits until the server counts `n` open connections (closing is asynchronous).
fn wait_connections(server: &ServerHandle, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let open = server.stats().curr_connections.load(Ordering::Relaxed);
        if open == n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "server still counts {open} connections, expected {n}"
        );
        thread::sleep(Duration::from_millis(5));
    }
}

fn bytes_read(server: &ServerHandle) -> u64 {
    server.stats().sum(|c| &c.bytes_read)
}

#[test]
fn binary_wrong_magic_gets_an_error_and_a_close() {
    let server = start();
    let mut c = connect(&server);
    c.write_all(&bin_request(0x80, op::NOOP, b"", &[], &[], None))
        .unwrap();
    assert_eq!(read_bin(&mut c).status, 0, "a binary connection");
    c.write_all(&bin_request(0x42, op::NOOP, b"", &[], &[], None))
        .unwrap();
    let r = read_bin(&mut c);
    assert_eq!(r.magic, 0x81);
    assert_ne!(r.status, 0, "an error status for magic 0x42");
    assert!(closed_by_server(&mut c));
    served(&server);
    server.shutdown();
}

#[test]
fn binary_body_shorter_than_key_and_extras_is_refused() {
    let server = start();
    let mut c = connect(&server);
    // memcached's CVE-2016-8704 class: key 10 + extras 8 in a body of 5.
    c.write_all(&bin_request(
        0x80,
        op::SET,
        b"0123456789",
        &[0; 8],
        b"",
        Some(5),
    ))
    .unwrap();
    let r = read_bin(&mut c);
    assert_eq!(r.magic, 0x81);
    assert_ne!(r.status, 0);
    assert!(closed_by_server(&mut c));
    served(&server);
    server.shutdown();
}

#[test]
fn binary_body_length_near_u32_max() {
    let server = start();
    // A set claiming a 4 GiB body: refused as too large; the connection swallows what follows
    // without buffering it.
    let mut c = connect(&server);
    c.write_all(&bin_request(
        0x80,
        op::SET,
        b"huge",
        &[0; 8],
        b"",
        Some(u32::MAX),
    ))
    .unwrap();
    let r = read_bin(&mut c);
    assert_eq!(r.status, 0x0003, "E2BIG");
    let before = bytes_read(&server);
    let junk = vec![0xAAu8; 8 * 1024 * 1024];
    c.write_all(&junk).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while bytes_read(&server) < before + junk.len() as u64 {
        assert!(Instant::now() < deadline, "the server stopped reading");
        thread::sleep(Duration::from_millis(5));
    }
    // A get claiming a 4 GiB body has the wrong shape: an error and a close.
    let mut g = connect(&server);
    g.write_all(&bin_request(
        0x80,
        op::GET,
        b"k",
        &[],
        b"",
        Some(u32::MAX - 1),
    ))
    .unwrap();
    assert_ne!(read_bin(&mut g).status, 0);
    assert!(closed_by_server(&mut g));
    served(&server);
    drop(c);
    server.shutdown();
}

#[test]
fn lengths_above_the_item_limit_are_refused_and_swallowed() {
    let server = start();
    // Binary: E2BIG, the value's bytes are discarded, the next request is answered.
    let mut c = connect(&server);
    let big = vec![b'v'; MAX_ITEM + 1];
    let mut req = bin_set(b"big", &big);
    req.extend_from_slice(&bin_get(b"big"));
    c.write_all(&req).unwrap();
    assert_eq!(read_bin(&mut c).status, 0x0003, "E2BIG");
    assert_eq!(read_bin(&mut c).status, 0x0001, "not stored: not found");

    // ASCII: SERVER_ERROR, the data block is discarded, the next command is answered.
    let mut a = connect(&server);
    a.write_all(format!("set big 0 0 {}\r\n", MAX_ITEM + 1).as_bytes())
        .unwrap();
    a.write_all(&big).unwrap();
    a.write_all(b"\r\nget big\r\n").unwrap();
    assert_eq!(
        read_line(&mut a),
        "SERVER_ERROR object too large for cache\r\n"
    );
    assert_eq!(read_line(&mut a), "END\r\n");
    served(&server);
    server.shutdown();
}

#[test]
fn unknown_binary_opcode_gets_unknown_command() {
    let server = start();
    let mut c = connect(&server);
    let mut req = bin_request(0x80, 0xEE, b"key", &[1, 2, 3, 4], b"body", None);
    req.extend_from_slice(&bin_request(0x80, op::NOOP, b"", &[], &[], None));
    c.write_all(&req).unwrap();
    let r = read_bin(&mut c);
    assert_eq!((r.opcode, r.status), (0xEE, 0x0081));
    let noop = read_bin(&mut c);
    assert_eq!((noop.opcode, noop.status), (op::NOOP, 0));
    served(&server);
    server.shutdown();
}

#[test]
fn garbage_ascii_gets_error() {
    let server = start();
    let mut c = connect(&server);
    c.write_all(b"\x01\x02\xff garbage \x00 line\r\nversion\r\n")
        .unwrap();
    assert_eq!(read_line(&mut c), "ERROR\r\n");
    assert!(read_line(&mut c).starts_with("VERSION "));
    served(&server);
    server.shutdown();
}

#[test]
fn overlong_keys_are_refused() {
    let server = start();
    let key = "k".repeat(251);
    let mut a = connect(&server);
    a.write_all(format!("get {key}\r\nset {key} 0 0 1\r\nx\r\n").as_bytes())
        .unwrap();
    assert!(read_line(&mut a).starts_with("CLIENT_ERROR"));
    // Binary: the key length is refused before anything else is looked at.
    let mut b = connect(&server);
    b.write_all(&bin_get(key.as_bytes())).unwrap();
    assert_ne!(read_bin(&mut b).status, 0);
    served(&server);
    server.shutdown();
}

#[test]
fn a_line_without_crlf_is_refused_and_closed() {
    let server = start();
    let mut c = connect(&server);
    // A line that never ends: the writer fails once the server has closed, long before 256 MiB
    // (what the kernel buffers on loopback is a few MiB).
    const LIMIT: usize = 256 * 1024 * 1024;
    let writer = {
        let mut w = c.try_clone().unwrap();
        thread::spawn(move || -> io::Result<usize> {
            let chunk = vec![b'a'; 64 * 1024];
            let mut sent = 0;
            while sent < LIMIT {
                w.write_all(&chunk)?;
                sent += chunk.len();
            }
            Ok(sent)
        })
    };
    assert_eq!(read_line(&mut c), "CLIENT_ERROR line too long\r\n");
    assert!(closed_by_server(&mut c));
    let result = writer.join().unwrap();
    assert!(
        result.is_err(),
        "the server read {result:?} bytes of one line"
    );
    // It read little more than the longest line it accepts before giving up.
    assert!(bytes_read(&server) < 1024 * 1024, "{}", bytes_read(&server));
    served(&server);
    server.shutdown();
}

#[test]
fn a_peer_closing_mid_request_is_dropped() {
    let server = start();
    let _keep = connect(&server);
    for partial in [
        // Half a binary header; a header and half its value; half an ASCII data block.
        bin_set(b"key", b"value")[..12].to_vec(),
        bin_set(b"key", &[7; 1000])[..500].to_vec(),
        b"set key 0 0 100\r\nabc".to_vec(),
        b"get ke".to_vec(),
    ] {
        let mut c = connect(&server);
        c.write_all(&partial).unwrap();
        c.shutdown(Shutdown::Write).unwrap();
        assert!(closed_by_server(&mut c));
        drop(c);
    }
    wait_connections(&server, 1);
    served(&server);
    server.shutdown();
}

#[test]
fn a_peer_closing_mid_response_is_dropped() {
    a_peer_closing_mid_response_is_dropped_on(SendPath::Copy);
}

#[test]
fn a_peer_closing_mid_response_is_dropped_zerocopy() {
    a_peer_closing_mid_response_is_dropped_on(SendPath::ZeroCopy);
}

#[cfg(feature = "io-uring")]
#[test]
fn a_peer_closing_mid_response_is_dropped_uring() {
    a_peer_closing_mid_response_is_dropped_on(SendPath::Uring);
}

fn a_peer_closing_mid_response_is_dropped_on(path: SendPath) {
    let server = start_with(path);
    let value = vec![b'z'; 512 * 1024];
    let mut c = connect(&server);
    c.write_all(&bin_set(b"big", &value)).unwrap();
    assert_eq!(read_bin(&mut c).status, 0);
    // 64 responses of 512 KiB: far more than the socket buffers hold. Read a little, then
    // close with data unread (the kernel sends a reset).
    let mut req = Vec::new();
    for _ in 0..64 {
        req.extend_from_slice(&bin_get(b"big"));
    }
    c.write_all(&req).unwrap();
    read_exactly(&mut c, 100_000);
    drop(c);
    wait_connections(&server, 0);
    served(&server);
    finish(server, path);
}

/// Connects with a receive buffer of `rcvbuf` bytes (set before connecting, so the window is
/// small from the start).
fn connect_small_rcvbuf(server: &ServerHandle, rcvbuf: usize) -> TcpStream {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(rcvbuf).unwrap();
    sock.connect(&server.local_addr().into()).unwrap();
    let s: TcpStream = sock.into();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s
}

#[test]
fn an_18000_key_get_to_a_slow_reader() {
    an_18000_key_get_to_a_slow_reader_on(SendPath::Copy);
}

#[test]
fn an_18000_key_get_to_a_slow_reader_zerocopy() {
    an_18000_key_get_to_a_slow_reader_on(SendPath::ZeroCopy);
}

#[cfg(feature = "io-uring")]
#[test]
fn an_18000_key_get_to_a_slow_reader_uring() {
    an_18000_key_get_to_a_slow_reader_on(SendPath::Uring);
}

/// One `get` line of 18,000 keys (about 200 KB; every 90th key the same 512 KiB value, the
/// others short values or misses): while the client does not read, the server answers only
/// about a high water mark's worth of the keys (4 MiB, plus what the kernel holds), not the
/// 100 MiB of the whole reply; then every byte arrives, in order, thousands of iovecs and pinned
/// values later.
fn an_18000_key_get_to_a_slow_reader_on(path: SendPath) {
    const KEYS: usize = 18_000;
    let server = server::start(Config {
        zerocopy_min_window: 0,
        ..config(path)
    })
    .expect("server starts");
    let store = server.store();
    let big: Vec<u8> = (0..512 * 1024).map(|i| (i % 251) as u8).collect();
    store.store(store::Mode::Set, b"multi-big", &big, 7, 0, 0);
    let mut line = b"get".to_vec();
    let mut expected = Vec::new();
    for i in 0..KEYS {
        let (key, flags, value) = match i % 90 {
            0 => ("multi-big".to_string(), 7, big.clone()),
            n if n % 2 == 0 => {
                let key = format!("multi-{i}");
                let value = format!("value of {key}").into_bytes();
                store.store(store::Mode::Set, key.as_bytes(), &value, i as u32, 0, 0);
                (key, i, value)
            }
            _ => {
                line.extend(format!(" miss-{i}").as_bytes());
                continue;
            }
        };
        line.extend(format!(" {key}").as_bytes());
        expected.extend(format!("VALUE {key} {flags} {}\r\n", value.len()).as_bytes());
        expected.extend(&value);
        expected.extend(b"\r\n");
    }
    line.extend(b"\r\n");
    expected.extend(b"END\r\n");
    assert!(line.len() > 180_000 && expected.len() > 100 << 20);

    let gets_before = server.stats().sum(|c| &c.cmd_get);
    // A default receive buffer: with a tiny window, Linux sends zero-copy data at a trickle.
    let mut c = connect(&server);
    c.write_all(&line).unwrap();
    thread::sleep(Duration::from_millis(300));
    let answered = server.stats().sum(|c| &c.cmd_get) - gets_before;
    // A fixed figure: 32 MiB of the reply is 64 of its large values, 5,760 keys.
    assert!(
        answered < 5760,
        "{answered} of {KEYS} keys answered to a client that reads nothing"
    );
    let reply = read_exactly(&mut c, expected.len());
    assert!(reply == expected, "the reply differs");
    assert_eq!(
        server.stats().sum(|c| &c.cmd_get) - gets_before,
        KEYS as u64
    );
    served(&server);
    drop(c);
    finish(server, path);
}

#[test]
fn a_client_pipelining_large_gets_and_never_reading_is_not_read_from() {
    a_client_pipelining_large_gets_and_never_reading_is_not_read_from_on(SendPath::Copy);
}

#[test]
fn a_client_pipelining_large_gets_and_never_reading_is_not_read_from_zerocopy() {
    a_client_pipelining_large_gets_and_never_reading_is_not_read_from_on(SendPath::ZeroCopy);
}

#[cfg(feature = "io-uring")]
#[test]
fn a_client_pipelining_large_gets_and_never_reading_is_not_read_from_uring() {
    a_client_pipelining_large_gets_and_never_reading_is_not_read_from_on(SendPath::Uring);
}

fn a_client_pipelining_large_gets_and_never_reading_is_not_read_from_on(path: SendPath) {
    // Zero copy even for the hog's 4 KiB window (it never reads, so its window cannot wedge
    // anything), so that bytes held by the kernel count towards its high water mark here.
    let server = server::start(Config {
        zerocopy_min_window: 0,
        ..config(path)
    })
    .expect("server starts");
    let value: Vec<u8> = (0..512 * 1024).map(|i| (i % 251) as u8).collect();
    let mut setup = connect(&server);
    setup.write_all(&bin_set(b"big", &value)).unwrap();
    assert_eq!(read_bin(&mut setup).status, 0);
    let gets_before = server.stats().sum(|c| &c.cmd_get);

    // Send GETs for the 512 KiB value until the socket stops taking them (the server stopped
    // reading), never reading a response.
    let hog = connect_small_rcvbuf(&server, 4096);
    hog.set_write_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    const GET_LEN: usize = 24 + 3;
    let batch: Vec<u8> = (0..1000).flat_map(|_| bin_get(b"big")).collect();
    assert_eq!(batch.len(), 1000 * GET_LEN);
    let mut sent_gets = 0usize;
    let mut w = &hog;
    let blocked = loop {
        match w.write(&batch) {
            Ok(n) => sent_gets += n / GET_LEN,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                break true
            }
            Err(e) => panic!("write failed: {e}"),
        }
        if sent_gets > 2_000_000 {
            break false;
        }
    };
    assert!(blocked, "the server kept reading {sent_gets} GETs");
    assert!(
        sent_gets >= 2000,
        "thousands of GETs pipelined ({sent_gets})"
    );

    // The connection is no longer read from: bytes_read stays put...
    let read_then = bytes_read(&server);
    thread::sleep(Duration::from_millis(300));
    assert_eq!(bytes_read(&server), read_then, "the server still reads");
    // ...and only about a high water mark's worth of GETs was executed, not thousands.
    let executed = server.stats().sum(|c| &c.cmd_get) - gets_before;
    // The 4 MiB high water mark holds 8 responses; the kernel's socket buffers a few more.
    // A fixed figure, not one computed from the mark, so a loop ignoring the mark fails here.
    let bound = 64;
    assert!(
        (executed as usize) < bound,
        "{executed} GETs executed of {sent_gets} sent (bound {bound})"
    );

    // Another client is answered at once meanwhile.
    let rtt = served(&server);
    assert!(rtt < Duration::from_millis(250), "answered in {rtt:?}");
    drop(hog);
    wait_connections(&server, 1);
    drop(setup);
    finish(server, path);
}

#[test]
fn peers_that_never_read_are_closed_after_the_stall_timeout() {
    peers_that_never_read_are_closed_after_the_stall_timeout_on(SendPath::Copy);
}

#[test]
fn peers_that_never_read_are_closed_after_the_stall_timeout_zerocopy() {
    peers_that_never_read_are_closed_after_the_stall_timeout_on(SendPath::ZeroCopy);
}

#[cfg(feature = "io-uring")]
#[test]
fn peers_that_never_read_are_closed_after_the_stall_timeout_uring() {
    peers_that_never_read_are_closed_after_the_stall_timeout_on(SendPath::Uring);
}

/// Peers the server waits on to read, and which never do: one that quits after requests whose
/// responses outgrow the kernel's socket buffer (the connection is to close once they are
/// sent, which never happens), and one that pipelines large GETs (it is not read from once
/// its output passes the high water mark). Each is closed once it has taken none of its
/// output for `stall_timeout`, and not before; a peer that does both and reads slowly, each
/// pause shorter than the timeout, still gets every byte.
fn peers_that_never_read_are_closed_after_the_stall_timeout_on(path: SendPath) {
    const TIMEOUT: Duration = Duration::from_millis(400);
    let server = server::start(Config {
        stall_timeout: TIMEOUT,
        ..config(path)
    })
    .expect("server starts");
    let value: Vec<u8> = (0..1000 * 1024).map(|i| (i % 251) as u8).collect();
    let mut setup = connect(&server);
    setup.write_all(&bin_set(b"big", &value)).unwrap();
    assert_eq!(read_bin(&mut setup).status, 0);
    let closed_stalled = |server: &ServerHandle| server.stats().sum(|c| &c.closed_stalled);
    let gets_then_quit = |gets: usize| {
        let mut r: Vec<u8> = (0..gets).flat_map(|_| bin_get(b"big")).collect();
        r.extend(bin_request(0x80, op::QUIT, &[], &[], &[], None));
        r
    };

    // A slow reader first: ten responses (over the high water mark, then a quit), read with
    // pauses of 100 ms, well under the timeout.
    let mut slow = connect_small_rcvbuf(&server, 4096);
    slow.write_all(&gets_then_quit(10)).unwrap();
    for _ in 0..10 {
        let r = read_slowly(&mut slow, 24 + 4 + value.len());
        assert_eq!(&r[..2], &[0x81, op::GET]);
        assert_eq!(&r[28..], &value[..], "every byte of the value");
    }
    let quit = read_bin(&mut slow);
    assert_eq!((quit.opcode, quit.status), (op::QUIT, 0));
    assert!(closed_by_server(&mut slow));
    assert_eq!(closed_stalled(&server), 0, "a reading peer is not cut off");
    wait_connections(&server, 1);

    // Then the two that never read: four responses (under the high water mark, so the quit
    // is read at once) and quit; forty GETs.
    let mut quitter = connect_small_rcvbuf(&server, 4096);
    quitter.write_all(&gets_then_quit(4)).unwrap();
    let mut hog = connect_small_rcvbuf(&server, 4096);
    let forty: Vec<u8> = (0..40).flat_map(|_| bin_get(b"big")).collect();
    hog.write_all(&forty).unwrap();
    let t = Instant::now();
    let deadline = t + Duration::from_secs(10);
    while closed_stalled(&server) < 2 {
        assert!(
            Instant::now() < deadline,
            "closed {} of the 2 after 10 s",
            closed_stalled(&server)
        );
        thread::sleep(Duration::from_millis(5));
    }
    let waited = t.elapsed();
    assert!(
        waited >= TIMEOUT,
        "closed after {waited:?}, before the timeout"
    );
    wait_connections(&server, 1);
    assert!(closed_by_server(&mut quitter));
    assert!(closed_by_server(&mut hog));
    // The others are served.
    let rtt = served(&server);
    assert!(rtt < Duration::from_millis(250), "answered in {rtt:?}");
    assert_eq!(closed_stalled(&server), 2);
    // And a reader with a normal window gets the large value (zero-copy on that path).
    setup.write_all(&bin_get(b"big")).unwrap();
    assert_eq!(read_bin(&mut setup).value(), &value[..]);
    drop(setup);
    finish(server, path);
}

/// A connection closed while the kernel still holds bytes of its zero-copy sends stays open
/// (draining) until their completions come. One still draining when the server shuts down is
/// counted closed too, so the server ends with no connection counted open.
#[test]
fn a_connection_draining_at_shutdown_is_counted_closed_zerocopy() {
    let server = server::start(Config {
        // The never-reading peer's 4 KiB window gets zero-copy sends too.
        zerocopy_min_window: 0,
        stall_timeout: Duration::from_millis(300),
        ..config(SendPath::ZeroCopy)
    })
    .expect("server starts");
    let stats = std::sync::Arc::clone(server.stats());
    let value = vec![b'd'; 512 * 1024];
    let mut setup = connect(&server);
    setup.write_all(&bin_set(b"big", &value)).unwrap();
    assert_eq!(read_bin(&mut setup).status, 0);
    // Sixteen responses (over the high water mark) to a peer that never reads: closed by the
    // stall timeout with zero-copy bytes still in its socket's send queue.
    let hog = connect_small_rcvbuf(&server, 4096);
    let gets: Vec<u8> = (0..16).flat_map(|_| bin_get(b"big")).collect();
    (&hog).write_all(&gets).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while stats.sum(|c| &c.closed_stalled) < 1 {
        assert!(Instant::now() < deadline, "the hog was never closed");
        thread::sleep(Duration::from_millis(5));
    }
    drop(setup);
    // The setup connection goes; the hog is draining, so it still counts.
    wait_connections(&server, 1);
    thread::sleep(Duration::from_millis(50));
    assert_eq!(
        stats.curr_connections.load(Ordering::Relaxed),
        1,
        "still draining"
    );
    // Shut down while it drains; meanwhile the hog goes too (closing with unread data resets
    // the connection, so the kernel gives its bytes back and nothing leaks).
    let shutdown = thread::spawn(move || finish(server, SendPath::ZeroCopy));
    thread::sleep(Duration::from_millis(50));
    drop(hog);
    shutdown.join().expect("shutdown");
    assert_eq!(
        stats.curr_connections.load(Ordering::Relaxed),
        0,
        "a connection still counted open after shutdown"
    );
}

/// Reads `n` bytes in pieces of at most 512 KiB with a 100 ms pause after each.
fn read_slowly(s: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let piece = (n - out.len()).min(512 * 1024);
        out.extend(read_exactly(s, piece));
        thread::sleep(Duration::from_millis(100));
    }
    out
}

#[test]
fn a_slow_reader_gets_every_byte_while_others_are_served() {
    a_slow_reader_gets_every_byte_while_others_are_served_on(SendPath::Copy);
}

#[test]
fn a_slow_reader_gets_every_byte_while_others_are_served_zerocopy() {
    a_slow_reader_gets_every_byte_while_others_are_served_on(SendPath::ZeroCopy);
}

#[cfg(feature = "io-uring")]
#[test]
fn a_slow_reader_gets_every_byte_while_others_are_served_uring() {
    a_slow_reader_gets_every_byte_while_others_are_served_on(SendPath::Uring);
}

fn a_slow_reader_gets_every_byte_while_others_are_served_on(path: SendPath) {
    let server = start_with(path);
    // Fewer on the zero-copy path, which the copy path's run already covers in size.
    let pairs: usize = if path == SendPath::ZeroCopy { 60 } else { 200 };
    const SIZE: usize = 512 * 1024;
    // Distinct values (the index at both ends, so a response for the wrong request shows).
    let base: Vec<u8> = (0..SIZE).map(|j| (j % 251) as u8).collect();
    let value_of = move |i: usize| -> Vec<u8> {
        let mut v = base.clone();
        v[..8].copy_from_slice(&(i as u64).to_be_bytes());
        v[SIZE - 8..].copy_from_slice(&(i as u64).to_le_bytes());
        v
    };
    let value_of_w = value_of.clone();
    let c = connect_small_rcvbuf(&server, 4096);
    let mut reader = c.try_clone().unwrap();
    let writer = {
        let mut w = c.try_clone().unwrap();
        thread::spawn(move || -> io::Result<()> {
            for i in 0..pairs {
                let key = format!("slow-{i}");
                w.write_all(&bin_set(key.as_bytes(), &value_of_w(i)))?;
                w.write_all(&bin_get(key.as_bytes()))?;
            }
            Ok(())
        })
    };
    let read_at_start = Instant::now();
    let mut worst_rtt = Duration::ZERO;
    for i in 0..pairs {
        let set = read_bin(&mut reader);
        assert_eq!((set.opcode, set.status), (op::SET, 0), "set {i}");
        let get = read_bin(&mut reader);
        assert_eq!((get.opcode, get.status), (op::GET, 0), "get {i}");
        assert!(get.value() == value_of(i).as_slice(), "value {i} differs");
        assert_eq!(get.opaque, 0x1234_5678);
        if i % 50 == 25 {
            worst_rtt = worst_rtt.max(served(&server));
            if path == SendPath::ZeroCopy {
                // A default client beside it: its 512 KiB response goes out zero-copy.
                let mut other = connect(&server);
                other
                    .write_all(&bin_get(format!("slow-{i}").as_bytes()))
                    .unwrap();
                assert!(read_bin(&mut other).value() == value_of(i).as_slice());
            }
        }
    }
    writer.join().unwrap().unwrap();
    assert!(
        worst_rtt < Duration::from_millis(250),
        "another client waited {worst_rtt:?}"
    );
    eprintln!(
        "slow reader ({path:?}): {pairs} × 512 KiB set+get in {:?}, other client's worst get {worst_rtt:?}",
        read_at_start.elapsed()
    );
    drop((c, reader));
    finish(server, path);
}

#[test]
fn pipelined_large_gets_are_all_answered() {
    pipelined_large_gets_are_all_answered_on(SendPath::Copy);
}

#[test]
fn pipelined_large_gets_are_all_answered_zerocopy() {
    pipelined_large_gets_are_all_answered_on(SendPath::ZeroCopy);
}

#[cfg(feature = "io-uring")]
#[test]
fn pipelined_large_gets_are_all_answered_uring() {
    pipelined_large_gets_are_all_answered_on(SendPath::Uring);
}

/// 40 GETs of values from 64 to 512 KiB in one write (about 11 MiB of responses, well past
/// the 4 MiB high water mark while the requests are still buffered), read back in full and
/// checked byte for byte; twice on one connection.
fn pipelined_large_gets_are_all_answered_on(path: SendPath) {
    let server = start_with(path);
    const SIZES: [usize; 5] = [64 << 10, 128 << 10, 200 << 10, 384 << 10, 512 << 10];
    let value_of = |k: usize| -> Vec<u8> {
        (0..SIZES[k])
            .map(|j| (j.wrapping_mul(31) ^ (k * 17)) as u8)
            .collect()
    };
    let values: Vec<Vec<u8>> = (0..SIZES.len()).map(value_of).collect();
    let mut c = connect(&server);
    for (k, v) in values.iter().enumerate() {
        c.write_all(&bin_set(format!("big-{k}").as_bytes(), v))
            .unwrap();
        assert_eq!(read_bin(&mut c).status, 0, "set {k}");
    }
    for round in 0..2 {
        let order: Vec<usize> = (0..40).map(|i| (i * 3 + round) % SIZES.len()).collect();
        let batch: Vec<u8> = order
            .iter()
            .flat_map(|&k| bin_get(format!("big-{k}").as_bytes()))
            .collect();
        c.write_all(&batch).unwrap();
        for (i, &k) in order.iter().enumerate() {
            let r = read_bin(&mut c);
            assert_eq!((r.opcode, r.status), (op::GET, 0), "round {round}, get {i}");
            assert!(
                r.value() == values[k].as_slice(),
                "round {round}, get {i}: value {k} differs"
            );
        }
    }
    drop(c);
    finish(server, path);
}

#[test]
fn idle_connections_give_their_buffers_back() {
    idle_connections_give_their_buffers_back_on(SendPath::Copy);
}

#[test]
fn idle_connections_give_their_buffers_back_zerocopy() {
    idle_connections_give_their_buffers_back_on(SendPath::ZeroCopy);
}

#[cfg(feature = "io-uring")]
#[test]
fn idle_connections_give_their_buffers_back_uring() {
    idle_connections_give_their_buffers_back_on(SendPath::Uring);
}

fn idle_connections_give_their_buffers_back_on(path: SendPath) {
    let server = start_with(path);
    let value: Vec<u8> = (0..64 * 1024).map(|i| (i % 253) as u8).collect();
    let mut setup = connect(&server);
    setup.write_all(&bin_set(b"idle", &value)).unwrap();
    assert_eq!(read_bin(&mut setup).status, 0);
    let fetch = |c: &mut TcpStream| {
        c.write_all(&bin_get(b"idle")).unwrap();
        let r = read_bin(c);
        assert_eq!(r.status, 0);
        assert!(r.value() == value.as_slice(), "value differs");
    };
    const CONNS: usize = 300;
    let mut conns = Vec::new();
    let mut most_buffered = 0;
    for _ in 0..CONNS {
        let mut c = connect(&server);
        fetch(&mut c);
        conns.push(c);
        most_buffered = most_buffered.max(server.buffered_connections());
    }
    // A burst holds at most a bounded number of buffer pairs per worker...
    assert!(
        most_buffered <= 2 * (worker::KEEP_ACTIVE + 1) + 1,
        "{most_buffered} connections held buffers at once"
    );
    // ...and once idle, every connection (still open) has given its buffers back.
    wait_connections(&server, CONNS as u64 + 1);
    let deadline = Instant::now() + Duration::from_secs(5);
    while server.buffered_connections() > 0 {
        assert!(
            Instant::now() < deadline,
            "{} idle connections still hold buffers",
            server.buffered_connections()
        );
        thread::sleep(Duration::from_millis(10));
    }
    // They take buffers again when used, and answer byte-exact.
    for c in &mut conns {
        fetch(c);
    }
    drop(conns);
    finish(server, path);
}

/// Without the `io-uring` feature, `--send-path uring` is refused with a reason (and `main`
/// exits with status 2, as for every argument it refuses).
#[cfg(not(feature = "io-uring"))]
#[test]
fn the_uring_send_path_needs_the_io_uring_feature() {
    let err = SendPath::parse("uring").unwrap_err();
    assert!(err.contains("--features io-uring"), "{err}");
}

#[test]
fn shutdown_closes_connections_and_joins() {
    let server = start();
    let mut c = connect(&server);
    c.write_all(b"version\r\n").unwrap();
    assert!(read_line(&mut c).starts_with("VERSION "));
    server.shutdown();
    assert!(closed_by_server(&mut c));
}

/// A peer that pipelines large GETs and never reads keeps the worker's io_uring send to it
/// waiting in the kernel (no EAGAIN on io_uring). Shutting the server down meanwhile cancels
/// that send and waits for its result before the connection's buffers go: prompt, nothing
/// leaked, every send's result reaped.
#[cfg(feature = "io-uring")]
#[test]
fn shutdown_with_a_send_in_flight_to_a_never_reading_peer_uring() {
    let server = start_with(SendPath::Uring);
    let value = vec![b'q'; 512 * 1024];
    let mut setup = connect(&server);
    setup.write_all(&bin_set(b"big", &value)).unwrap();
    assert_eq!(read_bin(&mut setup).status, 0);
    let mut hog = connect_small_rcvbuf(&server, 4096);
    let batch: Vec<u8> = (0..16).flat_map(|_| bin_get(b"big")).collect();
    hog.write_all(&batch).unwrap();
    // Wait until the server has written what the socket takes and its send waits.
    let written = || server.stats().sum(|c| &c.bytes_written);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = written();
    loop {
        thread::sleep(Duration::from_millis(100));
        let now = written();
        if now == last && now > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the server never settled");
        last = now;
    }
    // Others are still served meanwhile.
    let rtt = served(&server);
    assert!(rtt < Duration::from_millis(250), "answered in {rtt:?}");
    let t = Instant::now();
    let totals = finish(server, SendPath::Uring);
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "shutdown took {:?}",
        t.elapsed()
    );
    assert!(
        totals.uring.cancels >= 1,
        "no send was cancelled: {totals:?}"
    );
    assert!(closed_by_server(&mut hog));
}

/// A peer whose responses wait in the kernel (a 4 KiB window, and less than the high water
/// mark queued, so the server still reads from it) resets the connection: the waiting
/// io_uring send fails, the connection is closed and its buffers freed only after that
/// result. Nothing leaks, every result is reaped, the connection is gone, others are served.
#[cfg(feature = "io-uring")]
#[test]
fn a_peer_resetting_with_a_send_in_flight_is_closed_uring() {
    let server = start_with(SendPath::Uring);
    let value = vec![b'r'; 512 * 1024];
    let mut setup = connect(&server);
    setup.write_all(&bin_set(b"big", &value)).unwrap();
    assert_eq!(read_bin(&mut setup).status, 0);
    for _ in 0..4 {
        let hog = connect_small_rcvbuf(&server, 4096);
        // 7 responses of 512 KiB: more than the socket takes, below the 4 MiB high mark.
        let before = server.stats().sum(|c| &c.bytes_written);
        let batch: Vec<u8> = (0..7).flat_map(|_| bin_get(b"big")).collect();
        (&hog).write_all(&batch).unwrap();
        thread::sleep(Duration::from_millis(100));
        let written = server.stats().sum(|c| &c.bytes_written) - before;
        assert!(
            written < 7 * 512 * 1024,
            "no send left waiting ({written} written)"
        );
        socket2::SockRef::from(&hog)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(hog); // a reset
    }
    wait_connections(&server, 1);
    served(&server);
    drop(setup);
    finish(server, SendPath::Uring);
}

/// Reads to the end of stream; panics on a reset or a timeout.
fn read_to_eof(s: &mut TcpStream) -> Vec<u8> {
    let mut all = Vec::new();
    s.read_to_end(&mut all).expect("the server closes cleanly");
    all
}

#[test]
fn a_connection_over_max_connections_is_told_and_closed() {
    let server = server::start(Config {
        max_connections: 3,
        ..config(SendPath::Copy)
    })
    .expect("server starts");
    let mut open: Vec<TcpStream> = (0..3).map(|_| connect(&server)).collect();
    wait_connections(&server, 3);
    // max + 1: memcached's line, then the end of stream.
    let mut extra = connect(&server);
    assert_eq!(
        read_to_eof(&mut extra),
        server::TOO_MANY_CONNECTIONS,
        "the refused client reads the error line and EOF"
    );
    // The others are served, and `stats` counts the refusal.
    open[0].write_all(b"stats\r\n").unwrap();
    let mut reply = String::new();
    while !reply.ends_with("END\r\n") {
        reply += &read_line(&mut open[0]);
    }
    for line in [
        "STAT max_connections 3\r\n",
        "STAT curr_connections 3\r\n",
        "STAT rejected_connections 1\r\n",
        "STAT accepting_conns 1\r\n",
    ] {
        assert!(reply.contains(line), "no {line:?} in {reply}");
    }
    // One closes: there is room again.
    drop(open.pop());
    wait_connections(&server, 2);
    let mut again = connect(&server);
    again.write_all(b"version\r\n").unwrap();
    assert!(read_line(&mut again).starts_with("VERSION "));
    assert_eq!(
        server.stats().rejected_connections.load(Ordering::Relaxed),
        1
    );
    drop((open, again));
    finish(server, SendPath::Copy);
}

#[test]
fn stats_conns_lists_the_listener_and_each_connection() {
    let server = start();
    let mut idle = connect(&server);
    idle.write_all(b"version\r\n").unwrap();
    read_line(&mut idle);
    let mut asking = connect(&server);
    wait_connections(&server, 2);
    asking.write_all(b"stats conns\r\n").unwrap();
    let mut reply = String::new();
    while !reply.ends_with("END\r\n") {
        reply += &read_line(&mut asking);
    }
    let port = server.local_addr().port();
    let listen = format!("tcp:127.0.0.1:{port}");
    let has = |suffix: &str| {
        reply
            .lines()
            .any(|l| l.starts_with("STAT ") && l.ends_with(suffix))
    };
    assert!(has(&format!(":addr {listen}")), "{reply}");
    assert!(has(":state conn_listening"), "{reply}");
    assert!(has(":state conn_parse_cmd"), "{reply}");
    assert!(has(":state conn_waiting"), "{reply}");
    let peers = [&idle, &asking].map(|s| format!(":addr tcp:{}", s.local_addr().unwrap()));
    for peer in &peers {
        assert!(has(peer), "no {peer} in {reply}");
    }
    assert_eq!(
        reply.matches(&format!(":listen_addr {listen}\r\n")).count(),
        2,
        "{reply}"
    );
    assert_eq!(reply.matches(":secs_since_last_cmd ").count(), 3, "{reply}");
    drop((idle, asking));
    finish(server, SendPath::Copy);
}
