//! The TLS send side per memcached-style GET response (a 19–21-byte header, a pinned value of
//! 100 B, 4 KiB or 64 KiB, a 7-byte trailer; 16 pipelined responses per send, or one), after an
//! in-memory handshake with rustls's client, in three designs:
//!
//! * `own`: [`TlsSession`] with secret extraction allowed, so that it seals its own records
//!   after the handshake (header and trailer into scratch, the value pinned, copied under the
//!   session's 16 KiB flatten threshold, or `SENDBUF_TLS_FLATTEN` bytes): aws-lc-rs seals
//!   each record from one run of the queue, where it lies, into scratch the session owns,
//!   written gathered.
//! * `unbuffered`: [`TlsSession`] without it (the same threshold); rustls's unbuffered API
//!   encrypts into records in scratch the session owns.
//! * `buffered`: rustls's `ServerConnection`: the same pieces as `IoSlice`s to
//!   `writer().write_vectored` (records packed across pieces, queued as `Vec`s inside rustls,
//!   64 KiB of plaintext at a time by default), then `write_tls` until it wants no more.
//!
//! The socket is `io::sink()`; times are thread CPU time. Not timed: one batch of each design
//! decrypted by the client and compared; TLS bytes, records and allocations per response.
//!
//! ```text
//! cargo bench --bench tls --features rustls                        # own, unbuffered, buffered
//! SENDBUF_TLS_FIRST=buffered cargo bench --bench tls --features rustls   # the other way round
//! cargo bench --bench tls --features rustls -- --interleaved 101   # no criterion: all in turn
//! SENDBUF_TLS_PROFILE=unbuffered:4096:16:1000 valgrind --tool=callgrind \
//!     --toggle-collect='*send_loop*' <bench executable>            # 1000 batches, nothing else
//! ```
//!
//! Results, and the copies each design makes: `BENCHMARKS.md`, "TLS".

// `IoSlice::advance_slices` (1.81) is newer than the crate's `rust-version`.
#![allow(clippy::incompatible_msrv)]

#[allow(dead_code)] // the counting allocator, the values and the CPU clock; not the rest
mod util;

use std::hint::black_box;
use std::io::{self, IoSlice, Read, Write};
use std::sync::Arc;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput};
use rustls::pki_types::PrivateKeyDer;
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection};
use sendbuf::TlsSession;

#[global_allocator]
static ALLOC: util::CountingAlloc = util::CountingAlloc;

const SIZES: [(usize, &str); 3] = [(100, "100B"), (4 << 10, "4KiB"), (64 << 10, "64KiB")];
const BATCHES: [usize; 2] = [16, 1];
const MAX_BATCH: usize = 16;
const TRAILER: &[u8] = b"\r\nEND\r\n";

/// One send's worth of GET responses: headers formatted once, distinct values as a cache
/// holds them.
struct Responses {
    headers: Vec<Vec<u8>>,
    values: Vec<Arc<[u8]>>,
}

impl Responses {
    fn new(size: usize, batch: usize) -> Responses {
        assert!(batch <= MAX_BATCH);
        let headers = (0..batch).map(|i| format!("VALUE key{i:02} 0 {size}\r\n"));
        Responses {
            headers: headers.map(String::into_bytes).collect(),
            values: util::values(size, batch),
        }
    }

    /// Header, value and trailer of each response.
    fn pieces(&self) -> impl Iterator<Item = [&[u8]; 3]> {
        let values = self.values.iter().map(|v| &v[..]);
        self.headers
            .iter()
            .zip(values)
            .map(|(h, v)| [&h[..], v, TRAILER])
    }

    fn plaintext(&self) -> Vec<u8> {
        self.pieces().flatten().flatten().copied().collect()
    }
}

/// A server side after its handshake, of either design (two live at a time: unboxed).
#[allow(clippy::large_enum_variant)]
enum Server {
    Unbuffered(TlsSession),
    Buffered(ServerConnection),
}

impl Server {
    /// Queues, encrypts and writes one batch of responses to `out`, everything.
    fn send(&mut self, r: &Responses, out: &mut dyn Write) {
        match self {
            Server::Unbuffered(session) => {
                let queue = session.write_buffer();
                for (header, value) in r.headers.iter().zip(&r.values) {
                    queue.put_slice(header);
                    queue.pin_cloned(value);
                    queue.put_slice(TRAILER);
                }
                while session.has_pending() {
                    session.write_to(out).unwrap();
                }
            }
            Server::Buffered(conn) => {
                let mut iov = [IoSlice::new(&[]); 3 * MAX_BATCH];
                for (slice, piece) in iov.iter_mut().zip(r.pieces().flatten()) {
                    *slice = IoSlice::new(piece);
                }
                let mut rest = &mut iov[..3 * r.headers.len()];
                while !rest.is_empty() {
                    let n = conn.writer().write_vectored(rest).unwrap();
                    assert!(n > 0, "rustls took nothing with its queue empty");
                    IoSlice::advance_slices(&mut rest, n);
                    while conn.wants_write() {
                        conn.write_tls(out).unwrap();
                    }
                }
            }
        }
    }

    /// Takes the client's TLS bytes, returns the server's answer (the handshake only).
    fn exchange(&mut self, mut tls: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            Server::Unbuffered(session) => {
                while !tls.is_empty() {
                    session.read_tls_from(&mut tls).unwrap();
                }
                while session.has_pending() {
                    session.write_to(&mut out).unwrap();
                }
            }
            Server::Buffered(conn) => {
                while !tls.is_empty() {
                    conn.read_tls(&mut tls).unwrap();
                    conn.process_new_packets().unwrap();
                }
                while conn.wants_write() {
                    conn.write_tls(&mut out).unwrap();
                }
            }
        }
        out
    }
}

/// The server's configurations (records left to rustls, taken over by the session) and the
/// client's.
type Pki = (Arc<ServerConfig>, Arc<ServerConfig>, Arc<ClientConfig>);

/// The designs, in their default order.
const DESIGNS: [&str; 3] = ["own", "unbuffered", "buffered"];

/// Both sides' configurations over a self-signed certificate made now (no key is committed).
fn configs() -> Pki {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let mut roots = RootCertStore::empty();
    roots.add(cert.cert.der().clone()).unwrap();
    let key = PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
    let server = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .and_then(|b| {
            b.with_no_client_auth()
                .with_single_cert(vec![cert.cert.into()], key)
        });
    let client = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map(|b| b.with_root_certificates(roots).with_no_client_auth());
    let server = server.unwrap();
    let mut own = server.clone();
    own.enable_secret_extraction = true;
    (Arc::new(server), Arc::new(own), Arc::new(client.unwrap()))
}

/// A server of the design named and its client, handshake done and session tickets delivered.
fn connect(design: &str, pki: &Pki) -> (Server, ClientConnection) {
    let mut server = match design {
        "own" => {
            let mut session = TlsSession::new(pki.1.clone()).unwrap();
            // SENDBUF_TLS_FLATTEN: the session's flatten threshold, to compare settings.
            if let Some(t) = std::env::var("SENDBUF_TLS_FLATTEN")
                .ok()
                .and_then(|t| t.parse().ok())
            {
                session.write_buffer().set_flatten_threshold(t);
            }
            Server::Unbuffered(session)
        }
        "unbuffered" => Server::Unbuffered(TlsSession::new(pki.0.clone()).unwrap()),
        "buffered" => Server::Buffered(ServerConnection::new(pki.0.clone()).unwrap()),
        _ => panic!("the designs are {DESIGNS:?}, not {design:?}"),
    };
    let mut client = ClientConnection::new(pki.2.clone(), "localhost".try_into().unwrap()).unwrap();
    for _ in 0..10 {
        let mut to_server = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut to_server).unwrap();
        }
        let to_client = server.exchange(&to_server);
        assert!(decrypt(&mut client, &to_client).is_empty());
        if !client.is_handshaking() && to_server.is_empty() && to_client.is_empty() {
            return (server, client);
        }
    }
    panic!("no handshake after 10 rounds");
}

/// The plaintext in `tls`, decrypted by `client`.
fn decrypt(client: &mut ClientConnection, mut tls: &[u8]) -> Vec<u8> {
    let mut plain = Vec::new();
    while !tls.is_empty() {
        client.read_tls(&mut tls).unwrap();
        client.process_new_packets().unwrap();
        // Stops at `WouldBlock` (no more decrypted yet), keeping what it read.
        let err = client.reader().read_to_end(&mut plain).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
    }
    plain
}

/// The TLS records in `wire`, counted from their 5-byte headers.
fn records(mut wire: &[u8]) -> usize {
    let mut n = 0;
    while wire.len() >= 5 {
        wire = &wire[5 + usize::from(u16::from_be_bytes([wire[3], wire[4]]))..];
        n += 1;
    }
    assert!(wire.is_empty(), "the output ends inside a record");
    n
}

/// Not a timing: one batch of each design decrypted by the client and compared with the
/// plaintext; TLS bytes, records and allocations per response (steady state).
fn report(pki: &Pki) {
    println!("size  batch design      TLS B/resp overhead records/resp allocs/resp");
    for (size, name) in SIZES {
        for batch in BATCHES {
            let r = Responses::new(size, batch);
            for design in DESIGNS {
                let (mut server, mut client) = connect(design, pki);
                let mut wire = Vec::new();
                server.send(&r, &mut wire);
                let same = decrypt(&mut client, &wire) == r.plaintext();
                assert!(
                    same,
                    "{design} {name} b{batch}: the client decrypts other bytes"
                );
                let rounds = 64;
                let before = util::allocations();
                for _ in 0..rounds {
                    server.send(&r, &mut io::sink());
                }
                let per = |n: f64| n / batch as f64;
                let tls = per(wire.len() as f64);
                println!(
                    "{name:5} {batch:5} {design:11} {tls:10.1} {:8.1} {:12.3} {:11.2}",
                    tls - per(r.plaintext().len() as f64),
                    per(records(&wire) as f64),
                    per((util::allocations() - before) as f64 / rounds as f64),
                );
            }
        }
    }
}

fn register(c: &mut Criterion, pki: &Pki) {
    let mut order = DESIGNS;
    if std::env::var("SENDBUF_TLS_FIRST").as_deref() == Ok("buffered") {
        order.reverse();
    }
    for (size, name) in SIZES {
        for batch in BATCHES {
            let r = Responses::new(size, batch);
            let mut group = c.benchmark_group(format!("tls/{name}/b{batch}"));
            group.throughput(Throughput::Elements(batch as u64));
            for design in order {
                let (mut server, _client) = connect(design, pki);
                let mut sink = io::sink();
                group.bench_function(BenchmarkId::from_parameter(design), |b| {
                    util::iter_cpu(b, || server.send(black_box(&r), &mut sink))
                });
            }
            group.finish();
        }
    }
}

/// `rounds` batches and nothing else (callgrind's `--toggle-collect`); its thread CPU time.
#[inline(never)]
fn send_loop(server: &mut Server, r: &Responses, rounds: usize) -> Duration {
    let start = util::thread_cpu();
    for _ in 0..rounds {
        server.send(black_box(r), &mut io::sink());
    }
    util::thread_cpu() - start
}

/// `--interleaved ROUNDS`: per cell the three designs in turn, about 2 ms of sends each, the
/// order rotating (own first, then unbuffered, then buffered, ...); ns per response (median)
/// and the per-round ratios to the buffered design, median (min-max).
fn interleaved(pki: &Pki, rounds: usize) {
    println!("| value | batch | own ns | unbuffered ns | buffered ns | own / buffered | unbuffered / buffered |");
    println!("|---|---:|---:|---:|---:|---|---|");
    for (size, name) in SIZES {
        for batch in BATCHES {
            let r = Responses::new(size, batch);
            let mut servers = DESIGNS.map(|d| connect(d, pki).0);
            send_loop(&mut servers[0], &r, 8);
            let one = send_loop(&mut servers[0], &r, 8).as_nanos() as f64 / 8.0;
            let n = (2e6 / one).clamp(1.0, 1e4) as usize;
            let mut ns = [vec![], vec![], vec![]];
            for round in 0..rounds {
                for i in 0..3 {
                    let k = (round + i) % 3;
                    let t = send_loop(&mut servers[k], &r, n).as_nanos() as f64;
                    ns[k].push(t / (n * batch) as f64);
                }
            }
            let median = |mut v: Vec<f64>| {
                v.sort_by(f64::total_cmp);
                (v[v.len() / 2], v[0], v[v.len() - 1])
            };
            let ratio = |k: usize| median((0..rounds).map(|i| ns[k][i] / ns[2][i]).collect());
            let (o, u) = (ratio(0), ratio(1));
            println!(
                "| {name} | {batch} | {:.1} | {:.1} | {:.1} | {:.2}x ({:.2}-{:.2}) | {:.2}x ({:.2}-{:.2}) |",
                median(ns[0].clone()).0,
                median(ns[1].clone()).0,
                median(ns[2].clone()).0,
                o.0, o.1, o.2, u.0, u.1, u.2
            );
        }
    }
}

fn main() {
    let pki = configs();
    if let Ok(spec) = std::env::var("SENDBUF_TLS_PROFILE") {
        let f: Vec<&str> = spec.split(':').collect();
        let [design, size, batch, rounds] = f[..] else {
            panic!("SENDBUF_TLS_PROFILE is design:size:batch:rounds, not {spec:?}");
        };
        let r = Responses::new(size.parse().unwrap(), batch.parse().unwrap());
        let (mut server, _client) = connect(design, &pki);
        send_loop(&mut server, &r, rounds.parse().unwrap());
        return;
    }
    let mut args = std::env::args().skip_while(|a| a != "--interleaved");
    if args.next().is_some() {
        // `cargo bench` appends `--bench`: a following flag is not a round count.
        let rounds = args.next().and_then(|r| r.parse().ok()).unwrap_or(101);
        return interleaved(&pki, rounds);
    }
    report(&pki);
    let mut c = Criterion::default().configure_from_args();
    register(&mut c, &pki);
    c.final_summary();
}
