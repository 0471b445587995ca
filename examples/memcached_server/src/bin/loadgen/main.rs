//! A lean memcached **binary-protocol** load generator for side-by-side runs on loopback.
//!
//! What a client that measures the server and not itself must do:
//!
//! * one `mio` (epoll) loop per thread over its connections, `--depth` requests pipelined per
//!   connection;
//! * requests written with one `writev` per connection and wake-up: headers and keys formatted
//!   into a per-connection buffer, SET values referenced from one shared buffer (never copied);
//! * responses read into a **page-aligned** buffer, out of the 4K-aliasing trap (on the
//!   benchmark machine's Zen 3, copies with (dst − src) mod 4096 in 1..31 run about 27x
//!   slower), and parsed just enough to count them: magic, opcode, status, opaque (responses
//!   must come back in order) and, for GET hits, the value length; bodies are skipped;
//! * a populate step (SET of every key) first, so every GET should hit; a 1 s warm-up that is not
//!   counted; a bounded run; p50/p99 latency (send to response) over the counted window;
//! * loopback addresses only.
//!
//! ```text
//! cargo run --release -p memcached-server --bin loadgen -- --server 127.0.0.1:11211 \
//!     [--threads 1] [--conns 16] [--depth 1] [--value-size 100] [--keys 1000] \
//!     [--get-ratio 0.9] [--duration 3] [--warmup 1] [--no-populate] [--populate-only] [--tls]
//! cargo run --release -p memcached-server --bin loadgen -- --stream-ceiling [--streams 2] [--chunk 1048576] \
//!     [--duration 3]
//! cargo run --release -p memcached-server --bin loadgen -- --server ADDR --idle-conns 5000 --value-size 65536 \
//!     --keys 1 [--hold 5] [--tls]
//! ```
//!
//! `--conns` is the **total** number of connections, spread evenly over `--threads` (so
//! `--threads 2 --conns 16` is 8 connections per thread). Keys are 16 bytes (`lg:` and 13
//! digits), chosen uniformly; each request is a GET with probability `--get-ratio`, else a SET.
//!
//! Output: one machine-readable line (`ops=… ops_per_sec=… p50_us=… p99_us=… misses=… errors=…`)
//! and one line for people. The exit status is 1 if any error was counted (error status, wrong
//! opaque or value length, malformed response, connection closed or reset, a request still
//! unanswered a second after it was sent when the run ended), 2 if no operation completed.
//!
//! With `--cpu-pid PID` it also reads the server's user and system CPU time from `/proc/PID/stat`
//! at the start and end of the counted window and prints `server_cpu_us_per_op=…` (their sum) and
//! `server_user_us_per_op=…` / `server_sys_us_per_op=…` (the kernel's tick-sampled split; tick
//! resolution 10 ms: use runs of a few seconds), and the CPU time of the server and of the load generator
//! itself over the window as fractions of one CPU (`server_cpu_util=…`, `client_cpu_util=…`):
//! the side near 1.0 per thread is the one that limits the run.
//!
//! With `--tls` every connection speaks TLS (rustls, server name `localhost`, any certificate
//! accepted; [`tls`]): requests are encrypted from the same segments (one pass, no copy into a
//! buffer first) and the records written with one `writev`; responses are read 256 KiB per `read`
//! into the page-aligned buffer, decrypted by rustls and parsed where it holds the plaintext. The
//! handshakes run on the same loop before the populate step and are reported on a line of their
//! own (`tls_handshakes=… tls_handshake_secs=… tls_version=… tls_suite=…`), outside the counted
//! window. `--populate-only`, `--cpu-pid` and `--idle-conns` work with it; `--stream-ceiling`
//! does not (it measures plain TCP). Without `--tls` no byte takes another path: one branch per
//! read and per flush picks the plaintext loop.
//!
//! Two helper modes for `benches/vs_memcached.sh`:
//! * `--stream-ceiling`: the loopback TCP ceiling of this machine, `--streams` senders writing
//!   `--chunk` bytes (default 1 MiB) per `write`, read in 256 KiB `read`s (as the load run reads)
//!   into page-aligned receivers (prints `stream_gbps=…`, 10^9 bytes per second);
//! * `--idle-conns N`: opens N connections, each GETs key 0 (expects a hit of `--value-size`
//!   bytes), prints `idle_ready conns=N`, then holds them open and idle for `--hold` seconds.

mod args;
mod buf;
mod conn;
mod modes;
mod protocol;
mod report;
mod tls;

use std::io;
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use mio::net::TcpStream as MioStream;
use mio::{Events, Interest, Poll, Token};

use crate::args::{parse_args, usage, Args};
use crate::buf::{AlignedBuf, RECV_BUF};
use crate::conn::{Conn, Window};
use crate::modes::{idle_conns, stream_ceiling};
use crate::protocol::{key, KEY_LEN, OP_GET, OP_SET};
use crate::report::{print_run, process_cpu, Counts};
use crate::tls::Handshakes;

/// A request still unanswered this long after it was sent, when the run ends, counts as an error.
const STALL: Duration = Duration::from_secs(1);
/// The populate step gives up (an error) after this long.
const POPULATE_LIMIT: Duration = Duration::from_secs(60);

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("loadgen: {e}");
            }
            eprintln!("{}", usage());
            return ExitCode::from(if e.is_empty() { 0 } else { 64 });
        }
    };
    let result = if args.stream_ceiling {
        stream_ceiling(&args)
    } else if args.idle_conns > 0 {
        idle_conns(&args)
    } else {
        load(&args)
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("loadgen: {e}");
            ExitCode::from(1)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The load run

/// xorshift64*: fast, good enough to pick keys and operations.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (((self.next() >> 32) * n as u64) >> 32) as usize
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// What one thread does with each connection's free slots.
enum Phase {
    /// SET keys `next..end` once each.
    Populate { next: usize, end: usize },
    /// The mixed workload until `stop`; responses from `count_from` on are counted.
    Run { count_from: Instant, stop: Instant },
}

struct Shared {
    args: Args,
    keys: Vec<[u8; KEY_LEN]>,
    value: Vec<u8>,
    /// The client configuration every connection shares (`--tls`).
    tls: Option<Arc<rustls::ClientConfig>>,
    barrier: Barrier,
    populate_failed: AtomicU64,
}

fn connect(addr: SocketAddr) -> io::Result<MioStream> {
    let s = TcpStream::connect(addr)?;
    s.set_nodelay(true)?;
    s.set_nonblocking(true)?;
    Ok(MioStream::from_std(s))
}

/// What one thread reports: the populate counts, the run's counts, its TLS handshakes.
type Outcome = (Counts, Counts, Handshakes);

/// One thread: connects its share of connections (and completes their TLS handshakes), populates
/// its share of keys, waits for the others, runs the workload.
fn worker(shared: Arc<Shared>, index: usize) -> io::Result<Outcome> {
    let args = &shared.args;
    let n_conns = args.conns / args.threads + usize::from(index < args.conns % args.threads);
    let mut poll = Poll::new()?;
    let mut conns = Vec::with_capacity(n_conns);
    let mut events = Events::with_capacity(1024);
    let connected: io::Result<Handshakes> = (|| {
        for i in 0..n_conns {
            let mut s = connect(args.server)?;
            poll.registry()
                .register(&mut s, Token(i), Interest::READABLE | Interest::WRITABLE)?;
            let tls = shared.tls.as_ref().map(tls::session).transpose()?;
            conns.push(Conn::new(s, args.depth, tls));
        }
        if shared.tls.is_none() {
            return Ok(Handshakes::default());
        }
        let limit = Instant::now() + POPULATE_LIMIT;
        tls::handshake(&mut poll, &mut events, &mut conns, limit)
    })();
    let mut rbuf = AlignedBuf::new(RECV_BUF);
    let mut rng = Rng::new(args.seed ^ (index as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));

    let mut populate = Counts::new();
    let handshakes = match connected {
        Ok(h) => h,
        Err(e) => {
            // Let the other threads go on past the barriers, then report.
            shared.populate_failed.fetch_add(1, Ordering::Relaxed);
            shared.barrier.wait();
            shared.barrier.wait();
            return Err(e);
        }
    };
    if args.populate {
        let per = args.keys / args.threads;
        let start = index * per;
        let end = if index + 1 == args.threads {
            args.keys
        } else {
            start + per
        };
        let mut phase = Phase::Populate { next: start, end };
        let limit = Instant::now() + POPULATE_LIMIT;
        let driven = drive(
            &shared,
            &mut poll,
            &mut events,
            &mut conns,
            &mut phase,
            &mut rng,
            &mut rbuf,
            &mut populate,
            limit,
        );
        if driven.is_err()
            || populate.errors.total() > 0
            || conns.iter().any(|c| !c.alive || !c.rx.pending.is_empty())
        {
            shared.populate_failed.fetch_add(1, Ordering::Relaxed);
        }
        if let Err(e) = driven {
            shared.barrier.wait();
            shared.barrier.wait();
            return Err(e);
        }
    }
    shared.barrier.wait();
    shared.barrier.wait(); // main checked populate_failed in between
    let mut counts = Counts::new();
    if shared.populate_failed.load(Ordering::Relaxed) > 0 || args.populate_only {
        return Ok((populate, counts, handshakes));
    }
    let start = Instant::now();
    let count_from = start + Duration::from_secs_f64(args.warmup);
    let stop = count_from + Duration::from_secs_f64(args.duration);
    let mut phase = Phase::Run { count_from, stop };
    drive(
        &shared,
        &mut poll,
        &mut events,
        &mut conns,
        &mut phase,
        &mut rng,
        &mut rbuf,
        &mut counts,
        stop,
    )?;
    for c in &conns {
        if let Some(p) = c.rx.pending.front() {
            if stop.saturating_duration_since(p.at) >= STALL {
                counts.errors.stalled += c.rx.pending.len() as u64;
            }
        }
    }
    Ok((populate, counts, handshakes))
}

/// Tops `conn` up to `depth` requests in flight, as far as the phase has requests to send.
fn refill(conn: &mut Conn, shared: &Shared, phase: &mut Phase, rng: &mut Rng, now: Instant) {
    let args = &shared.args;
    while conn.rx.pending.len() < args.depth {
        match phase {
            Phase::Populate { next, end } => {
                if *next >= *end {
                    return;
                }
                conn.queue(OP_SET, &shared.keys[*next], shared.value.len(), now);
                *next += 1;
            }
            Phase::Run { stop, .. } => {
                if now >= *stop {
                    return;
                }
                let k = &shared.keys[rng.below(shared.keys.len())];
                if rng.unit() < args.get_ratio {
                    conn.queue(OP_GET, k, 0, now);
                } else {
                    conn.queue(OP_SET, k, shared.value.len(), now);
                }
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn drive(
    shared: &Shared,
    poll: &mut Poll,
    events: &mut Events,
    conns: &mut [Conn],
    phase: &mut Phase,
    rng: &mut Rng,
    rbuf: &mut AlignedBuf,
    counts: &mut Counts,
    deadline: Instant,
) -> io::Result<()> {
    let value_size = shared.args.value_size;
    let window = match phase {
        Phase::Run { count_from, stop } => Window::Between(*count_from, *stop),
        Phase::Populate { .. } => Window::Always,
    };
    let now = Instant::now();
    for c in conns.iter_mut() {
        refill(c, shared, phase, rng, now);
        if c.flush(&shared.value).is_err() {
            c.alive = false;
            counts.errors.closed += 1;
        }
    }
    loop {
        let now = Instant::now();
        if now >= deadline {
            return Ok(());
        }
        if let Phase::Populate { next, end } = phase {
            if next >= end && conns.iter().all(|c| !c.alive || c.rx.pending.is_empty()) {
                return Ok(());
            }
        }
        if conns.iter().all(|c| !c.alive) {
            return Ok(());
        }
        let wait = (deadline - now).min(Duration::from_millis(100));
        match poll.poll(events, Some(wait)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        for ev in events.iter() {
            let c = &mut conns[ev.token().0];
            if !c.alive {
                continue;
            }
            let mut ok = true;
            if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                ok = c.receive(rbuf.as_mut(), window, value_size, counts).is_ok();
            }
            if ok {
                refill(c, shared, phase, rng, Instant::now());
                ok = c.flush(&shared.value).is_ok();
            }
            if !ok {
                c.alive = false;
                counts.errors.closed += 1;
                let _ = poll.registry().deregister(&mut c.stream);
                let _ = c.stream.shutdown(Shutdown::Both);
            }
        }
    }
}

fn load(args: &Args) -> io::Result<ExitCode> {
    let mut value = vec![0u8; args.value_size];
    for (i, b) in value.iter_mut().enumerate() {
        *b = b'a' + (i % 26) as u8;
    }
    let shared = Arc::new(Shared {
        args: args.clone(),
        keys: (0..args.keys).map(key).collect(),
        value,
        tls: if args.tls {
            Some(tls::client_config()?)
        } else {
            None
        },
        barrier: Barrier::new(args.threads + 1),
        populate_failed: AtomicU64::new(0),
    });
    let handles: Vec<_> = (0..args.threads)
        .map(|i| {
            let s = Arc::clone(&shared);
            thread::spawn(move || worker(s, i))
        })
        .collect();
    let t_pop = Instant::now();
    shared.barrier.wait(); // every thread populated (or failed)
    let populate_secs = t_pop.elapsed().as_secs_f64();
    let failed = shared.populate_failed.load(Ordering::Relaxed) > 0;
    shared.barrier.wait();
    // The workers start their clocks now; sample the server's CPU time over the counted window.
    let cpu = match args.cpu_pid {
        Some(pid) if !failed && !args.populate_only => {
            let start = Instant::now();
            let count_from = start + Duration::from_secs_f64(args.warmup);
            let stop = count_from + Duration::from_secs_f64(args.duration);
            thread::sleep(count_from.saturating_duration_since(Instant::now()));
            let me = std::process::id();
            let (before, mine_before) = (process_cpu(pid), process_cpu(me));
            thread::sleep(stop.saturating_duration_since(Instant::now()));
            let (after, mine_after) = (process_cpu(pid), process_cpu(me));
            match (before, after, mine_before, mine_after) {
                (Ok(b), Ok(a), Ok(mb), Ok(ma)) => Some((a.since(b), ma.since(mb))),
                (Err(e), ..) | (_, Err(e), ..) | (.., Err(e), _) | (.., Err(e)) => {
                    eprintln!("loadgen: --cpu-pid {pid}: {e}");
                    None
                }
            }
        }
        _ => None,
    };
    let mut total = Counts::new();
    let mut pop = Counts::new();
    let mut handshakes = Handshakes::default();
    let mut first_err = None;
    for h in handles {
        match h.join() {
            Ok(Ok((p, c, hs))) => {
                pop.merge(&p);
                total.merge(&c);
                handshakes.merge(hs);
            }
            Ok(Err(e)) => {
                first_err.get_or_insert(e);
            }
            Err(_) => {
                first_err.get_or_insert(io::Error::other("a worker thread panicked"));
            }
        }
    }
    if let Some(e) = first_err {
        return Err(io::Error::new(e.kind(), format!("{}: {e}", args.server)));
    }
    if args.tls {
        handshakes.print();
    }
    if failed {
        eprintln!(
            "loadgen: populate failed: {} sets ok, {} errors (status {}, protocol {}, closed {})",
            pop.sets,
            pop.errors.total(),
            pop.errors.status,
            pop.errors.protocol,
            pop.errors.closed
        );
        return Ok(ExitCode::from(1));
    }
    if args.populate_only {
        println!(
            "populated keys={} value_size={} secs={populate_secs:.3}",
            args.keys, args.value_size
        );
        return Ok(ExitCode::SUCCESS);
    }
    Ok(print_run(args, &total, cpu))
}
