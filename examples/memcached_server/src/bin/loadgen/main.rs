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
//!     [--get-ratio 0.9] [--duration 3] [--warmup 1] [--no-populate] [--populate-only]
//! cargo run --release -p memcached-server --bin loadgen -- --stream-ceiling [--streams 2] [--chunk 1048576] \
//!     [--duration 3]
//! cargo run --release -p memcached-server --bin loadgen -- --server ADDR --idle-conns 5000 --value-size 65536 \
//!     --keys 1 [--hold 5]
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
//! Two helper modes for `benches/vs_memcached.sh`:
//! * `--stream-ceiling`: the loopback TCP ceiling of this machine, `--streams` senders writing
//!   `--chunk` bytes (default 1 MiB) per `write`, read in 256 KiB `read`s (as the load run reads)
//!   into page-aligned receivers (prints `stream_gbps=…`, 10^9 bytes per second);
//! * `--idle-conns N`: opens N connections, each GETs key 0 (expects a hit of `--value-size`
//!   bytes), prints `idle_ready conns=N`, then holds them open and idle for `--hold` seconds.

use std::collections::VecDeque;
use std::io::{self, IoSlice, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use mio::net::TcpStream as MioStream;
use mio::{Events, Interest, Poll, Token};

const HEADER: usize = 24;
const KEY_LEN: usize = 16;
const SET_EXTRAS: usize = 8;
const REQ_MAGIC: u8 = 0x80;
const RES_MAGIC: u8 = 0x81;
const OP_GET: u8 = 0x00;
const OP_SET: u8 = 0x01;
const STATUS_OK: u16 = 0x0000;
const STATUS_KEY_NOT_FOUND: u16 = 0x0001;
/// Size of each thread's page-aligned receive buffer.
const RECV_BUF: usize = 256 << 10;
/// At most this many iovecs per `writev`; more go in the next call.
const MAX_IOV: usize = 64;
/// A request still unanswered this long after it was sent, when the run ends, counts as an error.
const STALL: Duration = Duration::from_secs(1);
/// The populate step gives up (an error) after this long.
const POPULATE_LIMIT: Duration = Duration::from_secs(60);
/// Upper bound on `--duration`, `--warmup` and `--hold`.
const MAX_SECS: f64 = 3600.0;

fn usage() -> &'static str {
    "usage: loadgen --server 127.0.0.1:PORT [--threads T] [--conns C (total)] [--depth D]\n\
     \x20              [--value-size B] [--keys K] [--get-ratio R] [--duration S] [--warmup S]\n\
     \x20              [--seed N] [--no-populate | --populate | --populate-only] [--cpu-pid PID]\n\
     \x20      loadgen --stream-ceiling [--streams N] [--chunk B] [--duration S] [--warmup S]\n\
     \x20      loadgen --server ADDR --idle-conns N [--value-size B] [--hold S] [--no-populate]"
}

/// Command-line settings.
#[derive(Debug, Clone)]
struct Args {
    server: SocketAddr,
    threads: usize,
    conns: usize,
    depth: usize,
    value_size: usize,
    keys: usize,
    get_ratio: f64,
    duration: f64,
    warmup: f64,
    seed: u64,
    populate: bool,
    populate_only: bool,
    stream_ceiling: bool,
    streams: usize,
    idle_conns: usize,
    hold: f64,
    cpu_pid: Option<u32>,
    chunk: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        server: "127.0.0.1:11211".parse().expect("literal address"),
        threads: 1,
        conns: 16,
        depth: 1,
        value_size: 100,
        keys: 1000,
        get_ratio: 0.9,
        duration: 3.0,
        warmup: 1.0,
        seed: 0x5eed_1234_abcd_ef01,
        populate: true,
        populate_only: false,
        stream_ceiling: false,
        streams: 2,
        idle_conns: 0,
        hold: 5.0,
        cpu_pid: None,
        chunk: 1 << 20,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) => (n.to_string(), Some(v.to_string())),
            None => (arg.clone(), None),
        };
        let mut value = |what: &str| -> Result<String, String> {
            inline
                .clone()
                .or_else(|| it.next())
                .ok_or_else(|| format!("{what} needs a value"))
        };
        fn num<T: std::str::FromStr>(name: &str, s: String) -> Result<T, String> {
            s.parse().map_err(|_| format!("{name}: bad number {s:?}"))
        }
        match name.as_str() {
            "--server" => {
                let v = value(&name)?;
                a.server = v
                    .parse()
                    .map_err(|_| format!("--server: bad address {v:?}"))?;
            }
            "--threads" => a.threads = num(&name, value(&name)?)?,
            "--conns" => a.conns = num(&name, value(&name)?)?,
            "--depth" => a.depth = num(&name, value(&name)?)?,
            "--value-size" => a.value_size = num(&name, value(&name)?)?,
            "--keys" => a.keys = num(&name, value(&name)?)?,
            "--get-ratio" => a.get_ratio = num(&name, value(&name)?)?,
            "--duration" => a.duration = num(&name, value(&name)?)?,
            "--warmup" => a.warmup = num(&name, value(&name)?)?,
            "--seed" => a.seed = num(&name, value(&name)?)?,
            "--populate" => a.populate = true,
            "--no-populate" => a.populate = false,
            "--populate-only" => a.populate_only = true,
            "--stream-ceiling" => a.stream_ceiling = true,
            "--streams" => a.streams = num(&name, value(&name)?)?,
            "--idle-conns" => a.idle_conns = num(&name, value(&name)?)?,
            "--hold" => a.hold = num(&name, value(&name)?)?,
            "--chunk" => a.chunk = num(&name, value(&name)?)?,
            "--cpu-pid" => a.cpu_pid = Some(num(&name, value(&name)?)?),
            "-h" | "--help" => return Err(String::new()),
            _ => return Err(format!("unknown argument {arg:?}")),
        }
    }
    if !a.server.ip().is_loopback() {
        return Err(format!(
            "--server {}: only loopback addresses are allowed",
            a.server
        ));
    }
    if a.threads == 0 || a.threads > 64 {
        return Err("--threads must be 1..=64".into());
    }
    if a.conns < a.threads || a.conns > 100_000 {
        return Err("--conns must be at least --threads and at most 100000".into());
    }
    if a.depth == 0 || a.depth > 1024 {
        return Err("--depth must be 1..=1024".into());
    }
    if a.value_size > 64 << 20 {
        return Err("--value-size must be at most 64 MiB".into());
    }
    if a.keys == 0 || a.keys > 10_000_000 {
        return Err("--keys must be 1..=10000000".into());
    }
    if !(0.0..=1.0).contains(&a.get_ratio) {
        return Err("--get-ratio must be within 0..=1".into());
    }
    for (n, v) in [
        ("--duration", a.duration),
        ("--warmup", a.warmup),
        ("--hold", a.hold),
    ] {
        if !(0.0..=MAX_SECS).contains(&v) {
            return Err(format!("{n} must be within 0..={MAX_SECS} seconds"));
        }
    }
    if a.duration <= 0.0 {
        return Err("--duration must be positive".into());
    }
    if a.streams == 0 || a.streams > 64 {
        return Err("--streams must be 1..=64".into());
    }
    if a.chunk == 0 || a.chunk > 64 << 20 {
        return Err("--chunk must be 1..=64 MiB".into());
    }
    if a.idle_conns > 1_000_000 {
        return Err("--idle-conns must be at most 1000000".into());
    }
    Ok(a)
}

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
// Small helpers

/// A zeroed buffer of `len` bytes starting on a 4096-byte boundary, out of the 4K-aliasing trap.
struct AlignedBuf {
    storage: Vec<u8>,
    at: usize,
    len: usize,
}

impl AlignedBuf {
    fn new(len: usize) -> AlignedBuf {
        let storage = vec![0u8; len + 4096];
        let at = storage.as_ptr().align_offset(4096);
        assert!(at < 4096, "cannot page-align the receive buffer");
        AlignedBuf { storage, at, len }
    }

    fn as_mut(&mut self) -> &mut [u8] {
        &mut self.storage[self.at..self.at + self.len]
    }
}

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

/// The 16-byte key for index `i`: `lg:` and 13 decimal digits.
fn key(i: usize) -> [u8; KEY_LEN] {
    let mut k = *b"lg:0000000000000";
    let mut n = i;
    for slot in k[3..].iter_mut().rev() {
        *slot = b'0' + (n % 10) as u8;
        n /= 10;
    }
    k
}

/// Appends one binary request header to `out`.
fn put_header(out: &mut Vec<u8>, opcode: u8, extras: usize, body: usize, opaque: u32) {
    out.push(REQ_MAGIC);
    out.push(opcode);
    out.extend_from_slice(&(KEY_LEN as u16).to_be_bytes());
    out.push(extras as u8);
    out.push(0); // data type
    out.extend_from_slice(&0u16.to_be_bytes()); // vbucket
    out.extend_from_slice(&(body as u32).to_be_bytes());
    out.extend_from_slice(&opaque.to_be_bytes());
    out.extend_from_slice(&0u64.to_be_bytes()); // cas
}

/// Latency histogram in nanoseconds: 64 sub-buckets per power of two (about 1.5% resolution).
#[derive(Clone)]
struct Histogram {
    counts: Vec<u64>,
    total: u64,
}

impl Histogram {
    fn new() -> Histogram {
        Histogram {
            counts: vec![0; 128 + 58 * 64],
            total: 0,
        }
    }

    fn bucket(ns: u64) -> usize {
        if ns < 128 {
            return ns as usize;
        }
        let msb = 63 - ns.leading_zeros() as usize; // >= 7
        let shift = msb - 6;
        128 + (shift - 1) * 64 + ((ns >> shift) & 63) as usize
    }

    /// The midpoint of bucket `b`, in nanoseconds.
    fn value(b: usize) -> f64 {
        if b < 128 {
            return b as f64;
        }
        let shift = (b - 128) / 64 + 1;
        let sub = ((b - 128) % 64) as u64;
        (((64 + sub) << shift) as f64) + ((1u64 << shift) as f64) / 2.0
    }

    fn record(&mut self, d: Duration) {
        let ns = d.as_nanos().min(u64::MAX as u128) as u64;
        self.counts[Self::bucket(ns)] += 1;
        self.total += 1;
    }

    fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.total += other.total;
    }

    /// The `q` quantile (0..=1) in microseconds; 0 when empty.
    fn quantile_us(&self, q: f64) -> f64 {
        if self.total == 0 {
            return 0.0;
        }
        let rank = ((self.total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (b, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Self::value(b) / 1000.0;
            }
        }
        0.0
    }
}

// ---------------------------------------------------------------------------------------------
// One connection of the event loop

/// One queued piece of outgoing bytes: a range of the connection's header buffer, or the shared
/// value.
#[derive(Clone, Copy)]
enum Seg {
    Head { start: usize, end: usize },
    Value,
}

/// A request sent and not yet answered.
struct Pending {
    at: Instant,
    opcode: u8,
    opaque: u32,
}

/// What went wrong, counted per kind.
#[derive(Default, Clone, Copy)]
struct Errors {
    status: u64,
    protocol: u64,
    closed: u64,
    stalled: u64,
}

impl Errors {
    fn total(&self) -> u64 {
        self.status + self.protocol + self.closed + self.stalled
    }

    fn add(&mut self, o: &Errors) {
        self.status += o.status;
        self.protocol += o.protocol;
        self.closed += o.closed;
        self.stalled += o.stalled;
    }
}

/// Counters for the counted window (or the populate step).
#[derive(Clone)]
struct Counts {
    gets: u64,
    sets: u64,
    misses: u64,
    value_bytes: u64,
    errors: Errors,
    latency: Histogram,
}

impl Counts {
    fn new() -> Counts {
        Counts {
            gets: 0,
            sets: 0,
            misses: 0,
            value_bytes: 0,
            errors: Errors::default(),
            latency: Histogram::new(),
        }
    }

    fn ops(&self) -> u64 {
        self.gets + self.sets
    }

    fn merge(&mut self, o: &Counts) {
        self.gets += o.gets;
        self.sets += o.sets;
        self.misses += o.misses;
        self.value_bytes += o.value_bytes;
        self.errors.add(&o.errors);
        self.latency.merge(&o.latency);
    }
}

struct Conn {
    stream: MioStream,
    alive: bool,
    /// Formatted request headers and keys not yet fully sent.
    head: Vec<u8>,
    segs: Vec<Seg>,
    /// First unsent segment, and bytes of it already sent.
    seg_pos: usize,
    seg_off: usize,
    pending: VecDeque<Pending>,
    next_opaque: u32,
    /// Response parsing: the header bytes gathered so far, then the body bytes left to skip.
    rhead: [u8; HEADER],
    rhave: usize,
    body_left: usize,
    /// Whether the response being skipped was already counted (counted when its header is
    /// complete; the body is skipped afterwards).
    in_body: bool,
}

impl Conn {
    fn new(stream: MioStream, depth: usize) -> Conn {
        Conn {
            stream,
            alive: true,
            head: Vec::with_capacity(depth * (HEADER + SET_EXTRAS + KEY_LEN)),
            segs: Vec::with_capacity(depth * 2),
            seg_pos: 0,
            seg_off: 0,
            pending: VecDeque::with_capacity(depth),
            next_opaque: 0,
            rhead: [0; HEADER],
            rhave: 0,
            body_left: 0,
            in_body: false,
        }
    }

    fn push_head(&mut self, start: usize) {
        let end = self.head.len();
        if let Some(Seg::Head { end: e, .. }) = self.segs.last_mut() {
            if *e == start {
                *e = end;
                return;
            }
        }
        self.segs.push(Seg::Head { start, end });
    }

    /// Queues one request (GET, or SET of `value_len` bytes) for key `k`.
    fn queue(&mut self, opcode: u8, k: &[u8; KEY_LEN], value_len: usize, now: Instant) {
        let start = self.head.len();
        let opaque = self.next_opaque;
        self.next_opaque = self.next_opaque.wrapping_add(1);
        if opcode == OP_SET {
            put_header(
                &mut self.head,
                OP_SET,
                SET_EXTRAS,
                SET_EXTRAS + KEY_LEN + value_len,
                opaque,
            );
            self.head.extend_from_slice(&[0u8; SET_EXTRAS]); // flags, exptime
            self.head.extend_from_slice(k);
            self.push_head(start);
            if value_len > 0 {
                self.segs.push(Seg::Value);
            }
        } else {
            put_header(&mut self.head, OP_GET, 0, KEY_LEN, opaque);
            self.head.extend_from_slice(k);
            self.push_head(start);
        }
        self.pending.push_back(Pending {
            at: now,
            opcode,
            opaque,
        });
    }

    /// Writes queued requests until done or the socket is full. `Err` means the connection is
    /// unusable.
    fn flush(&mut self, value: &[u8]) -> io::Result<()> {
        while self.seg_pos < self.segs.len() {
            let mut iov = [IoSlice::new(&[]); MAX_IOV];
            let mut n_iov = 0;
            for (i, seg) in self.segs[self.seg_pos..].iter().take(MAX_IOV).enumerate() {
                let bytes = match *seg {
                    Seg::Head { start, end } => &self.head[start..end],
                    Seg::Value => value,
                };
                let skip = if i == 0 { self.seg_off } else { 0 };
                iov[n_iov] = IoSlice::new(&bytes[skip..]);
                n_iov += 1;
            }
            match self.stream.write_vectored(&iov[..n_iov]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(mut n) => {
                    while n > 0 {
                        let len = match self.segs[self.seg_pos] {
                            Seg::Head { start, end } => end - start,
                            Seg::Value => value.len(),
                        } - self.seg_off;
                        if n >= len {
                            n -= len;
                            self.seg_pos += 1;
                            self.seg_off = 0;
                        } else {
                            self.seg_off += n;
                            n = 0;
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.head.clear();
        self.segs.clear();
        self.seg_pos = 0;
        self.seg_off = 0;
        Ok(())
    }

    /// Parses `input` (responses, possibly split anywhere). Counts completed responses into
    /// `counts` when `counting`. Returns `Err` on a malformed stream (the connection must close).
    fn parse(
        &mut self,
        mut input: &[u8],
        now: Instant,
        counting: bool,
        value_size: usize,
        counts: &mut Counts,
    ) -> Result<(), ()> {
        while !input.is_empty() {
            if self.in_body {
                let n = self.body_left.min(input.len());
                self.body_left -= n;
                input = &input[n..];
                if self.body_left == 0 {
                    self.in_body = false;
                }
                continue;
            }
            let n = (HEADER - self.rhave).min(input.len());
            self.rhead[self.rhave..self.rhave + n].copy_from_slice(&input[..n]);
            self.rhave += n;
            input = &input[n..];
            if self.rhave < HEADER {
                break;
            }
            self.rhave = 0;
            let h = &self.rhead;
            let opcode = h[1];
            let key_len = u16::from_be_bytes([h[2], h[3]]) as usize;
            let extras = h[4] as usize;
            let status = u16::from_be_bytes([h[6], h[7]]);
            let body = u32::from_be_bytes([h[8], h[9], h[10], h[11]]) as usize;
            let opaque = u32::from_be_bytes([h[12], h[13], h[14], h[15]]);
            let Some(p) = self.pending.pop_front() else {
                counts.errors.protocol += 1; // a response nobody asked for
                return Err(());
            };
            if h[0] != RES_MAGIC || opcode != p.opcode || opaque != p.opaque {
                counts.errors.protocol += 1;
                return Err(());
            }
            if body < key_len + extras {
                counts.errors.protocol += 1;
                return Err(());
            }
            if counting {
                counts.latency.record(now.saturating_duration_since(p.at));
                match (opcode, status) {
                    (OP_GET, STATUS_OK) => {
                        counts.gets += 1;
                        let len = body - key_len - extras;
                        if len != value_size {
                            counts.errors.protocol += 1;
                        }
                        counts.value_bytes += len as u64;
                    }
                    (OP_GET, STATUS_KEY_NOT_FOUND) => {
                        counts.gets += 1;
                        counts.misses += 1;
                    }
                    (_, STATUS_OK) => {
                        counts.sets += 1;
                        counts.value_bytes += value_size as u64;
                    }
                    _ => counts.errors.status += 1,
                }
            } else if status != STATUS_OK && !(opcode == OP_GET && status == STATUS_KEY_NOT_FOUND) {
                counts.errors.status += 1;
            }
            self.body_left = body;
            self.in_body = body > 0;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// The load run

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
    barrier: Barrier,
    populate_failed: AtomicU64,
}

fn connect(addr: SocketAddr) -> io::Result<MioStream> {
    let s = TcpStream::connect(addr)?;
    s.set_nodelay(true)?;
    s.set_nonblocking(true)?;
    Ok(MioStream::from_std(s))
}

/// One thread: connects its share of connections, populates its share of keys, waits for the
/// others, runs the workload. Returns the populate counts and the run's counts.
fn worker(shared: Arc<Shared>, index: usize) -> io::Result<(Counts, Counts)> {
    let args = &shared.args;
    let n_conns = args.conns / args.threads + usize::from(index < args.conns % args.threads);
    let mut poll = Poll::new()?;
    let mut conns = Vec::with_capacity(n_conns);
    let connected: io::Result<()> = (|| {
        for i in 0..n_conns {
            let mut s = connect(args.server)?;
            poll.registry()
                .register(&mut s, Token(i), Interest::READABLE | Interest::WRITABLE)?;
            conns.push(Conn::new(s, args.depth));
        }
        Ok(())
    })();
    let mut rbuf = AlignedBuf::new(RECV_BUF);
    let mut events = Events::with_capacity(1024);
    let mut rng = Rng::new(args.seed ^ (index as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));

    let mut populate = Counts::new();
    if let Err(e) = connected {
        // Let the other threads go on past the barriers, then report.
        shared.populate_failed.fetch_add(1, Ordering::Relaxed);
        shared.barrier.wait();
        shared.barrier.wait();
        return Err(e);
    }
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
            || conns.iter().any(|c| !c.alive || !c.pending.is_empty())
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
        return Ok((populate, counts));
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
        if let Some(p) = c.pending.front() {
            if stop.saturating_duration_since(p.at) >= STALL {
                counts.errors.stalled += c.pending.len() as u64;
            }
        }
    }
    Ok((populate, counts))
}

/// Tops `conn` up to `depth` requests in flight, as far as the phase has requests to send.
fn refill(conn: &mut Conn, shared: &Shared, phase: &mut Phase, rng: &mut Rng, now: Instant) {
    let args = &shared.args;
    while conn.pending.len() < args.depth {
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
            if next >= end && conns.iter().all(|c| !c.alive || c.pending.is_empty()) {
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
                let buf = rbuf.as_mut();
                loop {
                    match c.stream.read(buf) {
                        Ok(0) => {
                            ok = false;
                            break;
                        }
                        Ok(n) => {
                            let now = Instant::now();
                            let counting = match phase {
                                Phase::Run { count_from, stop } => {
                                    now >= *count_from && now < *stop
                                }
                                Phase::Populate { .. } => true,
                            };
                            if c.parse(&buf[..n], now, counting, value_size, counts)
                                .is_err()
                            {
                                ok = false;
                                break;
                            }
                            if n < buf.len() {
                                // Short read: drained; epoll reports the next arrival.
                                break;
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(_) => {
                            ok = false;
                            break;
                        }
                    }
                }
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
    let mut first_err = None;
    for h in handles {
        match h.join() {
            Ok(Ok((p, c))) => {
                pop.merge(&p);
                total.merge(&c);
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
    let ops = total.ops();
    let secs = args.duration;
    let e = total.errors;
    // Each side's CPU time over the window, as a fraction of one CPU: a side near 1.0 (or
    // near its thread count) is what limits the run.
    let cpu_field = match cpu {
        Some((server, client)) if ops > 0 => {
            let per_op = |d: Duration| d.as_secs_f64() * 1e6 / ops as f64;
            format!(
                " server_cpu_us_per_op={:.3} server_user_us_per_op={:.3} \
                 server_sys_us_per_op={:.3} server_cpu_util={:.2} client_cpu_util={:.2}",
                per_op(server.total()),
                per_op(server.user),
                per_op(server.system),
                server.total().as_secs_f64() / secs,
                client.total().as_secs_f64() / secs
            )
        }
        _ => String::new(),
    };
    println!(
        "ops={ops} ops_per_sec={:.0} gets={} sets={} misses={} errors={} p50_us={:.1} p99_us={:.1} \
         value_mb_per_sec={:.1} secs={secs} threads={} conns={} depth={} value_size={} \
         keys={}{cpu_field}",
        ops as f64 / secs,
        total.gets,
        total.sets,
        total.misses,
        e.total(),
        total.latency.quantile_us(0.50),
        total.latency.quantile_us(0.99),
        total.value_bytes as f64 / secs / 1e6,
        args.threads,
        args.conns,
        args.depth,
        args.value_size,
        args.keys,
    );
    println!(
        "loadgen {}: {:.0} ops/s ({} B values, {} conns x depth {}, {} thread(s), {:.0}% gets), \
         p50 {:.1} us, p99 {:.1} us; {} misses, {} errors (status {}, protocol {}, closed {}, \
         stalled {})",
        args.server,
        ops as f64 / secs,
        args.value_size,
        args.conns,
        args.depth,
        args.threads,
        args.get_ratio * 100.0,
        total.latency.quantile_us(0.50),
        total.latency.quantile_us(0.99),
        total.misses,
        e.total(),
        e.status,
        e.protocol,
        e.closed,
        e.stalled,
    );
    Ok(if e.total() > 0 {
        ExitCode::from(1)
    } else if ops == 0 {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}

/// CPU time of process `pid` so far (all threads), from `/proc/PID/stat`.
#[derive(Clone, Copy)]
struct CpuTime {
    user: Duration,
    system: Duration,
}

impl CpuTime {
    fn total(self) -> Duration {
        self.user + self.system
    }

    /// The time spent between `earlier` and `self`.
    fn since(self, earlier: CpuTime) -> CpuTime {
        CpuTime {
            user: self.user.saturating_sub(earlier.user),
            system: self.system.saturating_sub(earlier.system),
        }
    }
}

fn process_cpu(pid: u32) -> io::Result<CpuTime> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name (field 2) may contain spaces; fields after its closing ')' are plain.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no ')' in stat"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, i.e. 11 and 12 after the ')'.
    let ticks = |i: usize| -> io::Result<u64> {
        fields
            .get(i)
            .and_then(|f| f.parse().ok())
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "short stat line"))
    };
    // SAFETY: `sysconf` only reads a configuration value; no pointers are involved.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = if hz > 0 { hz as u64 } else { 100 };
    let time = |t: u64| Duration::from_nanos(t * 1_000_000_000 / hz);
    Ok(CpuTime {
        user: time(ticks(11)?),
        system: time(ticks(12)?),
    })
}

// ---------------------------------------------------------------------------------------------
// --stream-ceiling

fn stream_ceiling(args: &Args) -> io::Result<ExitCode> {
    let chunk = args.chunk;
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let start = Instant::now();
    let count_from = start + Duration::from_secs_f64(args.warmup);
    let stop = count_from + Duration::from_secs_f64(args.duration);
    let mut senders = Vec::new();
    let mut receivers = Vec::new();
    for _ in 0..args.streams {
        let mut tx = TcpStream::connect(addr)?;
        let (mut rx, _) = listener.accept()?;
        senders.push(thread::spawn(move || -> io::Result<()> {
            let mut src = AlignedBuf::new(chunk);
            src.as_mut().fill(0x5a);
            let src = src.as_mut();
            while Instant::now() < stop {
                tx.write_all(src)?;
            }
            tx.shutdown(Shutdown::Write)
        }));
        receivers.push(thread::spawn(move || -> io::Result<u64> {
            let mut buf = AlignedBuf::new(RECV_BUF);
            let buf = buf.as_mut();
            let mut counted = 0u64;
            loop {
                match rx.read(buf) {
                    Ok(0) => return Ok(counted),
                    Ok(n) => {
                        let now = Instant::now();
                        if now >= count_from && now < stop {
                            counted += n as u64;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
        }));
    }
    let mut bytes = 0;
    for r in receivers {
        bytes += r
            .join()
            .map_err(|_| io::Error::other("receiver panicked"))??;
    }
    for s in senders {
        s.join()
            .map_err(|_| io::Error::other("sender panicked"))??;
    }
    let gbps = bytes as f64 / args.duration / 1e9;
    println!(
        "stream_gbps={gbps:.2} streams={} secs={}",
        args.streams, args.duration
    );
    println!(
        "loadgen: loopback TCP ceiling {gbps:.2} GB/s with {} stream(s) of {} KiB writes into \
         page-aligned receivers",
        args.streams,
        args.chunk >> 10
    );
    Ok(ExitCode::SUCCESS)
}

// ---------------------------------------------------------------------------------------------
// --idle-conns

/// Reads one binary response from a blocking stream; returns (status, value length).
fn read_response(s: &mut TcpStream, buf: &mut [u8]) -> io::Result<(u16, usize)> {
    let mut h = [0u8; HEADER];
    s.read_exact(&mut h)?;
    if h[0] != RES_MAGIC {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "bad magic"));
    }
    let key_len = u16::from_be_bytes([h[2], h[3]]) as usize;
    let extras = h[4] as usize;
    let status = u16::from_be_bytes([h[6], h[7]]);
    let body = u32::from_be_bytes([h[8], h[9], h[10], h[11]]) as usize;
    if body < key_len + extras {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "short body"));
    }
    let mut left = body;
    while left > 0 {
        let n = left.min(buf.len());
        s.read_exact(&mut buf[..n])?;
        left -= n;
    }
    Ok((status, body - key_len - extras))
}

fn idle_conns(args: &Args) -> io::Result<ExitCode> {
    let mut value = vec![0u8; args.value_size];
    value.fill(b'v');
    let k = key(0);
    let mut buf = AlignedBuf::new(RECV_BUF);
    let buf = buf.as_mut();
    if args.populate {
        let mut s = TcpStream::connect(args.server)?;
        let mut req = Vec::new();
        put_header(
            &mut req,
            OP_SET,
            SET_EXTRAS,
            SET_EXTRAS + KEY_LEN + value.len(),
            0,
        );
        req.extend_from_slice(&[0u8; SET_EXTRAS]);
        req.extend_from_slice(&k);
        req.extend_from_slice(&value);
        s.write_all(&req)?;
        let (status, _) = read_response(&mut s, buf)?;
        if status != STATUS_OK {
            eprintln!("loadgen: populate SET failed with status {status:#06x}");
            return Ok(ExitCode::from(1));
        }
    }
    let mut get = Vec::new();
    put_header(&mut get, OP_GET, 0, KEY_LEN, 0);
    get.extend_from_slice(&k);
    let mut held = Vec::with_capacity(args.idle_conns);
    let (mut misses, mut errors) = (0u64, 0u64);
    for _ in 0..args.idle_conns {
        let mut s = TcpStream::connect(args.server)?;
        s.set_nodelay(true)?;
        s.write_all(&get)?;
        match read_response(&mut s, buf) {
            Ok((STATUS_OK, len)) if len == args.value_size => {}
            Ok((STATUS_KEY_NOT_FOUND, _)) => misses += 1,
            _ => errors += 1,
        }
        held.push(s);
    }
    println!(
        "idle_ready conns={} misses={misses} errors={errors}",
        held.len()
    );
    io::stdout().flush()?;
    thread::sleep(Duration::from_secs_f64(args.hold));
    drop(held);
    Ok(if errors > 0 || misses > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
