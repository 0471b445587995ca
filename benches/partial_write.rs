//! The buffer job of a server, without the syscall: 64 responses (a 24-byte binary header plus a
//! cached value) queued, then drained through partial writes.
//!
//! One criterion group per value size, five contenders on the same scenario:
//!
//! * `sendbuf`: format the header, `pin_cloned` the value (the crate copies it from the borrow
//!   below its flatten threshold and clones the `Arc` only to pin it), gather at most 64 iovecs
//!   with `IoVecBuilder`, `advance`;
//! * `naive_copy`: header and value copied into a reused `Vec<u8>`, written from a cursor;
//! * `bytes_queue`: headers split off a `BytesMut` (`split().freeze()`), values as `Bytes`
//!   (a clone of a `Bytes` made once per value), a `VecDeque<Bytes>` gathered with
//!   `Buf::chunks_vectored` and advanced per chunk;
//! * `std_advance_slices`: a `Vec<IoSlice>` over headers formatted into an array and the values,
//!   advanced with `IoSlice::advance_slices`: the lower bound (it owns nothing and releases
//!   nothing);
//! * `std_owned`: `std_advance_slices` plus the least a queue that **owns** its values pays: one
//!   `Arc` clone per value as it is queued, dropped once the batch is written (two atomic
//!   read-modify-writes per message). Not a target in itself; it shows how much of the gap
//!   between `sendbuf` pinning a value and `std` is the reference count itself.
//!
//! Every contender writes through the same [`PartialWriter`], which only counts bytes, with the
//! same split points for the same batch. Times are the thread's CPU time ([`iter_cpu`]).

use std::collections::VecDeque;
use std::hint::black_box;
use std::io::IoSlice;
use std::sync::Arc;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput};
use sendbuf::{GatherLimits, IoVecBuilder, WriteBuffer};

use crate::util::{
    allocations, in_copy_trap, iter_cpu, thread_cpu, values, Header, PartialWriter, BATCH,
    MAX_IOVECS, VALUE_SIZES,
};

/// One value size: the values, and the same values as `Bytes` (sharing their memory).
pub struct Scenario {
    pub size: usize,
    pub values: Vec<Arc<[u8]>>,
    bytes_values: Vec<Bytes>,
}

impl Scenario {
    pub fn new(size: usize) -> Scenario {
        let values = values(size, BATCH);
        // The same memory, not a copy: a `Bytes` owning a clone of each `Arc`.
        let bytes_values = values
            .iter()
            .map(|v| Bytes::from_owner(Arc::clone(v)))
            .collect();
        Scenario {
            size,
            values,
            bytes_values,
        }
    }

    pub fn batch_bytes(&self) -> usize {
        BATCH * (24 + self.size)
    }

    pub fn writer(&self) -> PartialWriter {
        PartialWriter::for_batch_bytes(self.batch_bytes())
    }
}

/// The crate: format, pin, gather, advance.
pub fn sendbuf_batch(buf: &mut WriteBuffer, sc: &Scenario, w: &mut PartialWriter) {
    for (i, v) in sc.values.iter().enumerate() {
        let mut f = buf.format();
        f.put(&Header::response(i as u32, v.len()));
        f.commit();
        buf.pin_cloned(v);
    }
    let limit = GatherLimits::new().with_max_iovecs(MAX_IOVECS);
    while !buf.is_empty() {
        let n = {
            let mut iov = IoVecBuilder::with_limits(limit);
            iov.gather(buf);
            w.write(iov.as_slices())
        };
        buf.advance(n);
    }
}

/// Copy everything into one reused `Vec<u8>` and write it from a cursor.
pub fn naive_batch(out: &mut Vec<u8>, sc: &Scenario, w: &mut PartialWriter) {
    out.clear();
    for (i, v) in sc.values.iter().enumerate() {
        out.extend_from_slice(&Header::response(i as u32, v.len()).to_bytes());
        out.extend_from_slice(v);
    }
    let mut pos = 0;
    while pos < out.len() {
        pos += w.write(&[IoSlice::new(&out[pos..])]);
    }
}

/// `BytesMut` for headers, `Bytes` for values, a `VecDeque<Bytes>` as the queue.
pub struct BytesQueue {
    headers: BytesMut,
    queue: VecDeque<Bytes>,
}

impl BytesQueue {
    pub fn new() -> BytesQueue {
        BytesQueue {
            // The crate's default scratch chunk size.
            headers: BytesMut::with_capacity(16 << 10),
            queue: VecDeque::new(),
        }
    }
}

pub fn bytes_batch(q: &mut BytesQueue, sc: &Scenario, w: &mut PartialWriter) {
    for (i, v) in sc.bytes_values.iter().enumerate() {
        q.headers
            .put_slice(&Header::response(i as u32, v.len()).to_bytes());
        q.queue.push_back(q.headers.split().freeze());
        if !v.is_empty() {
            q.queue.push_back(v.clone());
        }
    }
    while !q.queue.is_empty() {
        let mut n = {
            let mut iov = [IoSlice::new(&[]); MAX_IOVECS];
            let mut filled = 0;
            for b in &q.queue {
                if filled == MAX_IOVECS {
                    break;
                }
                filled += b.chunks_vectored(&mut iov[filled..]);
            }
            w.write(&iov[..filled])
        };
        while n > 0 {
            let front = q.queue.front_mut().expect("written bytes are queued");
            if n >= front.len() {
                n -= front.len();
                q.queue.pop_front();
            } else {
                front.advance(n);
                n = 0;
            }
        }
    }
}

/// Headers formatted into an array, a `Vec<IoSlice>` over them and the values.
pub struct StdSlices {
    headers: Vec<[u8; 24]>,
    slices: Vec<IoSlice<'static>>,
}

impl StdSlices {
    pub fn new() -> StdSlices {
        StdSlices {
            headers: vec![[0; 24]; BATCH],
            slices: Vec::with_capacity(2 * BATCH),
        }
    }
}

/// Empties `v` and gives its allocation back with a new lifetime (an in-place collect: no
/// allocation), so the `Vec<IoSlice>` is reused from batch to batch as a server would.
fn recycle<'b>(mut v: Vec<IoSlice<'_>>) -> Vec<IoSlice<'b>> {
    v.clear();
    v.into_iter().map(|_| unreachable!()).collect()
}

pub fn std_batch(st: &mut StdSlices, sc: &Scenario, w: &mut PartialWriter) {
    for (i, (h, v)) in st.headers.iter_mut().zip(&sc.values).enumerate() {
        *h = Header::response(i as u32, v.len()).to_bytes();
    }
    let mut slices = recycle(std::mem::take(&mut st.slices));
    for (h, v) in st.headers.iter().zip(&sc.values) {
        slices.push(IoSlice::new(h));
        if !v.is_empty() {
            slices.push(IoSlice::new(v));
        }
    }
    let mut rest = &mut slices[..];
    while !rest.is_empty() {
        let n = w.write(rest);
        IoSlice::advance_slices(&mut rest, n);
    }
    st.slices = recycle(slices);
}

/// [`StdSlices`] and the values' clones it holds while they are queued.
pub struct StdOwned {
    slices: StdSlices,
    owned: Vec<Arc<[u8]>>,
}

impl StdOwned {
    pub fn new() -> StdOwned {
        StdOwned {
            slices: StdSlices::new(),
            owned: Vec::with_capacity(BATCH),
        }
    }
}

pub fn std_owned_batch(st: &mut StdOwned, sc: &Scenario, w: &mut PartialWriter) {
    st.owned.extend(sc.values.iter().cloned());
    std_batch(&mut st.slices, sc, w);
    st.owned.clear();
}

/// The contenders by name, each with its own state, so that a loop can run them in turn.
#[allow(clippy::large_enum_variant)] // built once per benchmark, never moved in the loop
pub enum Contender {
    Sendbuf(WriteBuffer),
    NaiveCopy(Vec<u8>),
    BytesQueue(BytesQueue),
    StdAdvanceSlices(StdSlices),
    StdOwned(StdOwned),
}

impl Contender {
    pub fn all() -> [Contender; 5] {
        [
            Contender::Sendbuf(WriteBuffer::new()),
            Contender::NaiveCopy(Vec::new()),
            Contender::BytesQueue(BytesQueue::new()),
            Contender::StdAdvanceSlices(StdSlices::new()),
            Contender::StdOwned(StdOwned::new()),
        ]
    }

    pub fn name(&self) -> &'static str {
        match self {
            Contender::Sendbuf(_) => "sendbuf",
            Contender::NaiveCopy(_) => "naive_copy",
            Contender::BytesQueue(_) => "bytes_queue",
            Contender::StdAdvanceSlices(_) => "std_advance_slices",
            Contender::StdOwned(_) => "std_owned",
        }
    }

    #[inline]
    pub fn run(&mut self, sc: &Scenario, w: &mut PartialWriter) {
        w.next_batch();
        match self {
            Contender::Sendbuf(buf) => sendbuf_batch(buf, sc, w),
            Contender::NaiveCopy(out) => naive_batch(out, sc, w),
            Contender::BytesQueue(q) => bytes_batch(q, sc, w),
            Contender::StdAdvanceSlices(st) => std_batch(st, sc, w),
            Contender::StdOwned(st) => std_owned_batch(st, sc, w),
        }
    }
}

pub fn register(c: &mut Criterion) {
    for size in VALUE_SIZES {
        let sc = Scenario::new(size);
        let mut group = c.benchmark_group(format!("partial_write/{}", size_name(size)));
        group.throughput(Throughput::Elements(BATCH as u64));
        if size >= 64 << 10 {
            // The naive copy takes milliseconds per batch: a fixed iteration count per sample.
            group.sampling_mode(SamplingMode::Flat);
        }
        for mut contender in Contender::all() {
            let mut w = sc.writer();
            group.bench_function(BenchmarkId::from_parameter(contender.name()), |b| {
                iter_cpu(b, || {
                    contender.run(&sc, &mut w);
                    black_box(&contender);
                })
            });
        }
        group.finish();
    }
}

pub fn size_name(size: usize) -> String {
    match size {
        0 => "0B".into(),
        s if s >= 1 << 20 && s % (1 << 20) == 0 => format!("{}MiB", s >> 20),
        s if s >= 1 << 10 && s % (1 << 10) == 0 => format!("{}KiB", s >> 10),
        s => format!("{s}B"),
    }
}

/// Not a timing: allocations per message in steady state, writes per batch, and how many of the
/// naive contender's value copies land in the 4K-aliasing trap. Printed before the timings.
pub fn report_steady_state() {
    println!("steady state, after 4 warm-up batches, over 16 batches of {BATCH} messages:");
    println!(
        "{:>6}  {:>20}  {:>12}  {:>12}",
        "value", "contender", "allocs/msg", "writes/batch"
    );
    for size in VALUE_SIZES {
        let sc = Scenario::new(size);
        for mut contender in Contender::all() {
            let mut w = sc.writer();
            for _ in 0..4 {
                contender.run(&sc, &mut w);
            }
            let (a0, w0) = (allocations(), w.writes);
            for _ in 0..16 {
                contender.run(&sc, &mut w);
            }
            let allocs = (allocations() - a0) as f64 / (16 * BATCH) as f64;
            let writes = (w.writes - w0) as f64 / 16.0;
            println!(
                "{:>6}  {:>20}  {:>12.3}  {:>12.1}",
                size_name(size),
                contender.name(),
                allocs,
                writes
            );
            if let Contender::NaiveCopy(out) = &contender {
                if size >= 2048 {
                    let trapped = sc
                        .values
                        .iter()
                        .enumerate()
                        .filter(|(i, v)| {
                            let dst = out[i * (24 + size) + 24..].as_ptr();
                            in_copy_trap(dst, v.as_ptr())
                        })
                        .count();
                    println!(
                        "{:>6}  {:>20}  {trapped} of {BATCH} value copies in the 4K-aliasing trap",
                        "", "naive_copy"
                    );
                }
            }
        }
    }
}

/// Runs one contender on one value size for `batches` batches, without criterion: the entry
/// point for `valgrind --tool=callgrind` (see `BENCHMARKS.md`). `spec` is
/// `contender:size:batches`, e.g. `sendbuf:4096:1000`; besides the contenders,
/// `sendbuf_copy` and `sendbuf_pin` force the flatten decision.
pub fn profile(spec: &str) {
    let mut parts = spec.split(':');
    let (Some(name), Some(size), Some(batches)) = (parts.next(), parts.next(), parts.next()) else {
        panic!("SENDBUF_BENCH_PROFILE wants contender:size:batches, got {spec:?}");
    };
    let size: usize = size.parse().expect("size in bytes");
    let batches: u64 = batches.parse().expect("batch count");
    let sc = Scenario::new(size);
    // `sendbuf_copy` / `sendbuf_pin`: the crate with every value copied / pinned (flatten
    // threshold above every size / 0), for the flatten-threshold comparison.
    let forced = match name {
        "sendbuf_copy" => Some(usize::MAX),
        "sendbuf_pin" => Some(0),
        _ => None,
    };
    let mut contender = match forced {
        Some(threshold) => {
            let mut buf = WriteBuffer::new();
            buf.set_flatten_threshold(threshold);
            Contender::Sendbuf(buf)
        }
        None => Contender::all()
            .into_iter()
            .find(|c| c.name() == name)
            .unwrap_or_else(|| panic!("no contender {name:?}")),
    };
    let mut w = sc.writer();
    // Warm up outside the measured function, so steady state is what callgrind sees.
    for _ in 0..4 {
        contender.run(&sc, &mut w);
    }
    let a0 = allocations();
    profile_loop(&mut contender, &sc, &mut w, batches);
    println!(
        "{name} {}: {batches} batches, {} writes, {:.3} allocations/message",
        size_name(size),
        w.writes,
        (allocations() - a0) as f64 / (batches as f64 * BATCH as f64)
    );
}

/// The measured loop of [`profile`]: `--toggle-collect=*profile_loop*` counts only this.
#[inline(never)]
fn profile_loop(contender: &mut Contender, sc: &Scenario, w: &mut PartialWriter, batches: u64) {
    for _ in 0..batches {
        contender.run(sc, w);
        black_box(&*contender);
    }
}

/// The contenders **interleaved**: `rounds` rounds per value size, each round timing every
/// contender once (thread CPU time, a fixed number of batches calibrated to about 2 ms per
/// sample), in an order that rotates from round to round. Ratios are taken within a round, so
/// drift of the shared machine between rounds cancels, and reported as the median (min–max)
/// over the rounds, beside each contender's median ns per message. Printed as a Markdown table.
///
/// Run with `cargo bench --bench bench -- --interleaved [ROUNDS]` (default 201 rounds, about
/// 8 s).
pub fn interleaved(rounds: usize) {
    println!(
        "interleaved: {rounds} rounds per value size, every contender timed once per round \
         (thread CPU time, order rotated); ns per message median, ratios median (min-max) of \
         the per-round ratios"
    );
    println!();
    println!(
        "| value | sendbuf | naive copy | bytes queue | std advance_slices | std owned | \
         sendbuf / std | bytes / sendbuf | sendbuf / naive | sendbuf / std owned |"
    );
    println!("|---|---:|---:|---:|---:|---:|---|---|---|---|");
    for size in VALUE_SIZES {
        let sc = Scenario::new(size);
        let mut contenders = Contender::all();
        let mut writers: Vec<PartialWriter> = contenders.iter().map(|_| sc.writer()).collect();
        // Warm up, then find each contender's batch count for a ~2 ms sample.
        let n = contenders.len();
        let mut batches = vec![0u32; n];
        for (i, c) in contenders.iter_mut().enumerate() {
            for _ in 0..4 {
                c.run(&sc, &mut writers[i]);
            }
            let start = thread_cpu();
            c.run(&sc, &mut writers[i]);
            let one = (thread_cpu() - start).as_nanos().max(1);
            batches[i] = (2_000_000 / one).clamp(1, 10_000) as u32;
        }
        // ns per message, [contender][round].
        let mut ns: Vec<Vec<f64>> = (0..n).map(|_| Vec::with_capacity(rounds)).collect();
        for round in 0..rounds {
            for k in 0..n {
                let i = (round + k) % n;
                let (c, w) = (&mut contenders[i], &mut writers[i]);
                let start = thread_cpu();
                for _ in 0..batches[i] {
                    c.run(&sc, w);
                    black_box(&*c);
                }
                let elapsed = (thread_cpu() - start).as_nanos() as f64;
                ns[i].push(elapsed / (batches[i] as f64 * BATCH as f64));
            }
        }
        let at = |name: &str| {
            contenders
                .iter()
                .position(|c| c.name() == name)
                .expect("a contender of that name")
        };
        let (sb, naive, bytes, std, owned) = (
            at("sendbuf"),
            at("naive_copy"),
            at("bytes_queue"),
            at("std_advance_slices"),
            at("std_owned"),
        );
        // `a / b` in each round.
        let per_round =
            |a: usize, b: usize| -> Vec<f64> { (0..rounds).map(|r| ns[a][r] / ns[b][r]).collect() };
        let cell = |v: &[f64]| {
            let (lo, hi) = min_max(v);
            format!("{} ({}-{})", ratio(median(v)), ratio(lo), ratio(hi))
        };
        println!(
            "| {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {} | {} | {} | {} |",
            size_name(size),
            median(&ns[sb]),
            median(&ns[naive]),
            median(&ns[bytes]),
            median(&ns[std]),
            median(&ns[owned]),
            cell(&per_round(sb, std)),
            cell(&per_round(bytes, sb)),
            cell(&per_round(sb, naive)),
            cell(&per_round(sb, owned)),
        );
    }
}

/// `1.52x`, or `1/195x` for ratios under a tenth.
fn ratio(r: f64) -> String {
    if r >= 0.1 {
        format!("{r:.2}x")
    } else {
        format!("1/{:.0}x", 1.0 / r)
    }
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

fn min_max(v: &[f64]) -> (f64, f64) {
    v.iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &x| {
            (lo.min(x), hi.max(x))
        })
}
