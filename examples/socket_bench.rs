//! Real sockets: the same responses over loopback TCP, sent three ways.
//!
//! * `sendbuf`: 64 responses (24-byte binary header + value) queued in a `WriteBuffer` (header
//!   formatted, value pinned), then `send_to` until drained: one `sendmsg` for many messages;
//! * `write_per_msg`: each response copied into a reused `Vec<u8>` and sent with one `write`;
//! * `writev_per_msg`: each response sent with one `writev` of header and value (no copy, no
//!   batching), to separate what batching saves from what copying costs.
//!
//! A thread reads the far end into a **page-aligned** buffer until EOF, out of the 4K-aliasing
//! trap (on the benchmark machine's Zen 3, copies with (dst − src) mod 4096 in 1..31 run about
//! 27x slower); throughput is bytes received over the time from the first send to the last byte
//! read.
//! The harness counts the sender's syscalls (every `sendmsg`/`write`/`writev` call, partial ones
//! included), the sender thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`) and heap allocations.
//!
//! Rounds alternate the order of the modes (A B C, then C B A) so drift cancels; the report gives
//! medians and the median (min–max) of the per-round ratios.
//!
//! ```text
//! cargo run --release --example socket_bench -- [--secs 1] [--rounds 5] [--sizes 0,100,4096]
//! cargo run --release --example socket_bench -- --flatten --secs 0.01 --rounds 41
//! ```
//!
//! With `--flatten` it measures instead what the flatten threshold trades: each value copied into
//! scratch versus pinned as its own iovec, through real `sendmsg` calls (`--secs` is then the
//! length of one block, `--rounds` the number of A B / B A rounds).

// `IoSlice::advance_slices` (1.81) is newer than the crate's `rust-version`; examples are built
// with a current toolchain.
#![allow(clippy::incompatible_msrv)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{IoSlice, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use sendbuf::{Encode, WriteBuffer};

const BATCH: usize = 64;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

/// The system allocator, counting allocation calls.
struct CountingAlloc;

// SAFETY: every method forwards to `System` with the caller's arguments unchanged.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded; the caller upholds `GlobalAlloc::alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded; `ptr` came from `System` through this allocator with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded; `ptr` came from `System` through this allocator with `layout`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

/// A memcached binary-protocol response header (24 bytes).
struct Header {
    body_len: u32,
    opaque: u32,
}

impl Encode for Header {
    const SIZE: usize = 24;

    fn encode(&self, out: &mut [u8]) {
        out.fill(0);
        out[0] = 0x81;
        out[8..12].copy_from_slice(&self.body_len.to_be_bytes());
        out[12..16].copy_from_slice(&self.opaque.to_be_bytes());
    }
}

impl Header {
    fn bytes(opaque: usize, len: usize) -> [u8; 24] {
        let mut out = [0u8; 24];
        Header {
            body_len: len as u32,
            opaque: opaque as u32,
        }
        .encode(&mut out);
        out
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Sendbuf,
    WritePerMsg,
    WritevPerMsg,
}

const MODES: [Mode; 3] = [Mode::Sendbuf, Mode::WritePerMsg, Mode::WritevPerMsg];

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Sendbuf => "sendbuf",
            Mode::WritePerMsg => "write_per_msg",
            Mode::WritevPerMsg => "writev_per_msg",
        }
    }
}

/// One measured run of one mode.
#[derive(Debug, Clone, Copy)]
struct Run {
    msgs_per_sec: f64,
    gbytes_per_sec: f64,
    syscalls_per_msg: f64,
    cpu_ns_per_msg: f64,
    allocs_per_msg: f64,
}

/// CPU time (user + system) of the calling thread, in nanoseconds (`CLOCK_THREAD_CPUTIME_ID`:
/// exact, and blind to the time the thread spends preempted by other work on the machine).
fn thread_cpu() -> Duration {
    // SAFETY: `timespec` is plain integers; all-zero is a valid value.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: `ts` is a valid, writable `timespec` for the duration of the call.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Reads `rx` to EOF into a page-aligned buffer; returns the bytes read and when the last arrived.
fn drain(mut rx: TcpStream) -> (u64, Instant) {
    let mut storage = vec![0u8; (256 << 10) + 4096];
    let at = storage.as_ptr().align_offset(4096);
    let buf = &mut storage[at..at + (256 << 10)];
    let mut total = 0u64;
    let mut last = Instant::now();
    loop {
        match rx.read(buf) {
            Ok(0) => return (total, last),
            Ok(n) => {
                total += n as u64;
                last = Instant::now();
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => panic!("reader: {e}"),
        }
    }
}

fn run(listener: &TcpListener, mode: Mode, values: &[Arc<[u8]>], secs: f64) -> Run {
    let tx = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
    tx.set_nodelay(true).expect("TCP_NODELAY");
    let (rx, _) = listener.accept().expect("accept");
    let reader = thread::spawn(move || drain(rx));

    let mut buf = WriteBuffer::new();
    let mut copy = Vec::new();
    let mut syscalls = 0u64;
    let mut msgs = 0u64;
    let deadline = Duration::from_secs_f64(secs);
    let (a0, cpu0, t0) = (
        ALLOCATIONS.load(Ordering::Relaxed),
        thread_cpu(),
        Instant::now(),
    );
    while t0.elapsed() < deadline {
        match mode {
            Mode::Sendbuf => {
                for (i, v) in values.iter().enumerate() {
                    let mut f = buf.format();
                    f.put(&Header {
                        body_len: v.len() as u32,
                        opaque: i as u32,
                    });
                    f.commit();
                    buf.pin(Arc::clone(v));
                }
                while buf.has_pending() {
                    buf.send_to(&tx).expect("sendmsg");
                    syscalls += 1;
                }
            }
            Mode::WritePerMsg => {
                for (i, v) in values.iter().enumerate() {
                    copy.clear();
                    copy.extend_from_slice(&Header::bytes(i, v.len()));
                    copy.extend_from_slice(v);
                    let mut pos = 0;
                    while pos < copy.len() {
                        pos += (&tx).write(&copy[pos..]).expect("write");
                        syscalls += 1;
                    }
                }
            }
            Mode::WritevPerMsg => {
                for (i, v) in values.iter().enumerate() {
                    let header = Header::bytes(i, v.len());
                    let mut iov = [IoSlice::new(&header), IoSlice::new(v)];
                    let mut rest = &mut iov[..];
                    while !rest.is_empty() {
                        let n = (&tx).write_vectored(rest).expect("writev");
                        syscalls += 1;
                        IoSlice::advance_slices(&mut rest, n);
                    }
                }
            }
        }
        msgs += BATCH as u64;
    }
    let (cpu, allocs) = (
        thread_cpu() - cpu0,
        ALLOCATIONS.load(Ordering::Relaxed) - a0,
    );
    tx.shutdown(Shutdown::Write).expect("shutdown");
    let (bytes, last) = reader.join().expect("reader thread");
    let expected: u64 = values.iter().map(|v| 24 + v.len() as u64).sum::<u64>() / BATCH as u64;
    assert_eq!(bytes, msgs * expected, "{}: bytes lost", mode.name());
    let secs = last.duration_since(t0).as_secs_f64();
    let m = msgs as f64;
    Run {
        msgs_per_sec: m / secs,
        gbytes_per_sec: bytes as f64 / secs / 1e9,
        syscalls_per_msg: syscalls as f64 / m,
        cpu_ns_per_msg: cpu.as_nanos() as f64 / m,
        allocs_per_msg: allocs as f64 / m,
    }
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

fn size_name(size: usize) -> String {
    match size {
        0 => "0B".into(),
        s if s >= 1 << 20 && s % (1 << 20) == 0 => format!("{}MiB", s >> 20),
        s if s >= 1 << 10 && s % (1 << 10) == 0 => format!("{}KiB", s >> 10),
        s => format!("{s}B"),
    }
}

/// `--flatten`: copy versus pin through real `sendmsg` calls, for the flatten threshold.
///
/// For each value size and batch shape (1 message per `sendmsg`, as at depth 1; 16 per
/// `sendmsg`, as for pipelined requests) two `WriteBuffer`s, one copying every value into scratch
/// (threshold above the size), one pinning every value (threshold 0), alternate in short blocks
/// (A B, then B A) on one connection; the report gives the median sender CPU time per message
/// of each (the `sendmsg` included: on loopback it also runs the receiver's TCP input) and the
/// median and range of the per-round difference and ratio. CPU time, not wall time, because
/// wall time on a shared 2-vCPU machine mostly measures who else was running.
fn flatten_report(rounds: usize, block: Duration) {
    const SIZES: [usize; 9] = [64, 128, 256, 384, 512, 768, 1024, 1536, 2048];
    println!(
        "copy vs pin over loopback TCP: {rounds} rounds of {} ms blocks per mode, A B / B A",
        block.as_millis()
    );
    println!(
        "{:>5} {:>6} {:>9} {:>9} {:>9} {:>9} {:>22} {:>22}",
        "batch",
        "value",
        "copy iov",
        "pin iov",
        "copy ns",
        "pin ns",
        "pin - copy ns/msg",
        "pin / copy"
    );
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    for batch in [1usize, 16] {
        let tx = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        tx.set_nodelay(true).expect("TCP_NODELAY");
        let (rx, _) = listener.accept().expect("accept");
        let reader = thread::spawn(move || drain(rx));
        for size in SIZES {
            let values: Vec<Arc<[u8]>> = (0..batch)
                .map(|i| (0..size).map(|j| (i + j) as u8).collect::<Vec<u8>>().into())
                .collect();
            let mut bufs = [WriteBuffer::new(), WriteBuffer::new()];
            bufs[0].set_flatten_threshold(usize::MAX);
            bufs[1].set_flatten_threshold(0);
            let mut iovecs = [0usize; 2];
            let mut one_batch = |m: usize, bufs: &mut [WriteBuffer; 2]| {
                let buf = &mut bufs[m];
                for (i, v) in values.iter().enumerate() {
                    let mut f = buf.format();
                    f.put(&Header {
                        body_len: v.len() as u32,
                        opaque: i as u32,
                    });
                    f.commit();
                    buf.pin(Arc::clone(v));
                }
                iovecs[m] = buf.segments();
                while buf.has_pending() {
                    buf.send_to(&tx).expect("sendmsg");
                }
            };
            // Calibrate the block length on the copying buffer (also the warm-up).
            let t = Instant::now();
            let mut per_block = 0usize;
            while t.elapsed() < block {
                one_batch(0, &mut bufs);
                one_batch(1, &mut bufs);
                per_block += 1;
            }
            let mut ns = [Vec::new(), Vec::new()];
            for round in 0..rounds {
                let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
                for m in order {
                    let t = thread_cpu();
                    for _ in 0..per_block {
                        one_batch(m, &mut bufs);
                    }
                    let spent = thread_cpu() - t;
                    ns[m].push(spent.as_nanos() as f64 / (per_block * batch) as f64);
                }
            }
            let diffs: Vec<f64> = ns[1].iter().zip(&ns[0]).map(|(p, c)| p - c).collect();
            let ratios: Vec<f64> = ns[1].iter().zip(&ns[0]).map(|(p, c)| p / c).collect();
            let range = |xs: &[f64]| {
                let lo = xs.iter().copied().fold(f64::INFINITY, f64::min);
                let hi = xs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                (lo, hi)
            };
            let (dlo, dhi) = range(&diffs);
            let (rlo, rhi) = range(&ratios);
            println!(
                "{:>5} {:>6} {:>9} {:>9} {:>9.0} {:>9.0} {:>22} {:>22}",
                batch,
                size,
                iovecs[0],
                iovecs[1],
                median(ns[0].clone()),
                median(ns[1].clone()),
                format!("{:+.0} ({:+.0}..{:+.0})", median(diffs), dlo, dhi),
                format!("{:.3} ({:.2}-{:.2})", median(ratios), rlo, rhi)
            );
        }
        drop(tx);
        reader.join().expect("reader thread");
    }
}

fn main() {
    let mut secs: f64 = 1.0;
    let mut rounds = 5;
    let mut flatten = false;
    let mut sizes = vec![0, 100, 4 << 10, 64 << 10, 1 << 20];
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| panic!("{arg} needs a value"));
        match arg.as_str() {
            "--secs" => secs = value().parse().expect("--secs: seconds"),
            "--rounds" => rounds = value().parse().expect("--rounds: count"),
            "--flatten" => flatten = true,
            "--sizes" => {
                sizes = value()
                    .split(',')
                    .map(|s| s.parse().expect("--sizes: bytes,bytes,..."))
                    .collect()
            }
            other => panic!("unknown argument {other:?}; see the file's docs"),
        }
    }
    if flatten {
        flatten_report(rounds, Duration::from_secs_f64(secs));
        return;
    }
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    println!(
        "{BATCH} messages per batch, 24-byte header + value; {rounds} rounds of {secs} s per mode, \
         order alternating; medians over rounds"
    );
    println!(
        "{:>6} {:>15} {:>12} {:>8} {:>12} {:>12} {:>11} {:>24}",
        "value",
        "mode",
        "msgs/s",
        "GB/s",
        "syscalls/msg",
        "cpu ns/msg",
        "allocs/msg",
        "sendbuf msgs/s ratio"
    );
    for &size in &sizes {
        let values: Vec<Arc<[u8]>> = (0..BATCH)
            .map(|i| (0..size).map(|j| (i + j) as u8).collect::<Vec<u8>>().into())
            .collect();
        // Warm-up: one short run of each mode.
        for mode in MODES {
            run(&listener, mode, &values, secs.min(0.2));
        }
        let mut runs: Vec<Vec<Run>> = vec![Vec::new(); MODES.len()];
        for round in 0..rounds {
            let order: Vec<usize> = if round % 2 == 0 {
                (0..MODES.len()).collect()
            } else {
                (0..MODES.len()).rev().collect()
            };
            for m in order {
                runs[m].push(run(&listener, MODES[m], &values, secs));
            }
        }
        for (m, mode) in MODES.iter().enumerate() {
            let pick = |f: fn(&Run) -> f64| median(runs[m].iter().map(f).collect());
            let ratio = if m == 0 {
                String::from("-")
            } else {
                let ratios: Vec<f64> = runs[0]
                    .iter()
                    .zip(&runs[m])
                    .map(|(s, o)| s.msgs_per_sec / o.msgs_per_sec)
                    .collect();
                let lo = ratios.iter().copied().fold(f64::INFINITY, f64::min);
                let hi = ratios.iter().copied().fold(0.0, f64::max);
                format!("{:.2}x ({:.2}-{:.2})", median(ratios), lo, hi)
            };
            println!(
                "{:>6} {:>15} {:>12.0} {:>8.2} {:>12.3} {:>12.0} {:>11.3} {:>24}",
                size_name(size),
                mode.name(),
                pick(|r| r.msgs_per_sec),
                pick(|r| r.gbytes_per_sec),
                pick(|r| r.syscalls_per_msg),
                pick(|r| r.cpu_ns_per_msg),
                pick(|r| r.allocs_per_msg),
                ratio
            );
        }
    }
}
