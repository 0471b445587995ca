//! A model of [`WriteBuffer`] and the operations both are driven by.
//!
//! The model is what a correct buffer must look like from outside:
//!
//! * `wire`: the bytes that must still go on the wire, in order;
//! * `pinned`: each value pinned zero-copy and not yet released, with the stream offsets of its
//!   first and last byte, the address of its memory, and how many of its bytes went out in
//!   zero-copy sends (and the end of the last of those);
//! * `held_scratch` and `held`: bytes sent zero-copy that the buffer must still hold (see
//!   below);
//! * `released`: the ids of the values that must have been dropped, each exactly once;
//! * the back-pressure state: the hard limit, the water marks (both count pending plus held
//!   bytes), whether the buffer is backed up and the crossing not yet taken, and the steals
//!   accepted and refused;
//! * `kernel`: the fake kernel of `kernel.rs`, which answers the zero-copy sends, reports their
//!   completions, and knows what the [`ZeroCopy`] must say.
//!
//! Sends come in two kinds. A copying one (`advance`, `write_to_with`, a `ZeroCopy` send below
//! its threshold, after `ENOBUFS` or once the kernel said it copied) releases what it passes at
//! once. A zero-copy one (`ZeroCopy::send_with` or `record_send`) leaves its bytes *held*: not
//! pending any more, but not released until the kernel reports that send complete, and every
//! older zero-copy send too (the buffer releases in send order, as TCP completes). Held scratch
//! bytes are released per send. A pinned value is released as a whole (an owner cannot be
//! split): once its last byte is sent and the last zero-copy send that read any of it is
//! complete; until then every byte of it that went out zero-copy counts as held, even bytes
//! whose own send is already complete. `is_empty` and steals need nothing pending *and* nothing
//! held.
//!
//! [`Harness::check`] compares the buffer with the model after every operation. Values pinned as
//! `Arc<[u8]>` or as a drop-counting owner have observable drops and are checked exactly; the
//! other owner kinds are checked by the sanitizers (AddressSanitizer in the fuzzer, Miri under
//! `.ci/miri.sh`): an early drop is a use after free when the bytes are compared, a double drop a
//! double free, and a missing one a leak when the buffer is dropped at the end.
//!
//! The fuzz target `partial_writes`, `tests/prop_model.rs` and `tests/fuzz_regressions.rs` all
//! drive this one model. With the feature `arbitrary` (the fuzz crate turns it on) the inputs
//! derive `arbitrary::Arbitrary`; proptest builds them with its own strategies.
//!
//! To cover a new operation, add a variant to [`Op`] and its arm to [`Harness::apply`] (and a
//! strategy to `tests/prop_model.rs`); the checks after each operation apply unchanged.

use std::collections::{BTreeSet, VecDeque};
use std::io::{self, IoSlice, Write};
use std::sync::Arc;

use sendbuf::{
    AdvanceError, Encode, FormatGuard, GatherLimits, HardLimitError, IoVecBuilder, LocalPool, Pool,
    PoolLimits, Pressure, SharedPool, Stealable, Watermarks, WriteBuffer, ZeroCopy,
};

pub use crate::kernel::{Answer, Report};
use crate::kernel::{Kernel, Sent};
use crate::util::{Counted, DropCount};

/// Largest scratch chunk an input selects: `with_capacity(1..=MAX_CHUNK_SIZE)`.
pub const MAX_CHUNK_SIZE: usize = 4096;
/// Largest single format item (`put_bytes`, `put_uninit`): over twice the largest chunk, so a
/// format outgrows its chunk, and a chunk of that outgrown size, at any chunk size.
pub const MAX_BLOCK: usize = 9000;
/// Largest pinned value.
pub const MAX_PIN: usize = 8192;
/// Largest flatten threshold an input sets (the default is 1024).
pub const MAX_THRESHOLD: usize = 1100;

/// A whole test case: the buffer's chunk size, then the operations.
#[derive(Debug, Clone)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Input {
    /// `with_capacity(1 + chunk_size % MAX_CHUNK_SIZE)`.
    pub chunk_size: u16,
    /// The pool the buffer takes scratch storage from and steals give it back to.
    pub pool: PoolChoice,
    /// The socket's `ZeroCopy` state.
    pub zero_copy: ZeroCopyChoice,
    /// Applied in order, each followed by [`Harness::check`].
    pub ops: Vec<Op>,
}

/// One operation on the buffer. Numbers are raw and reduced into range by [`Harness::apply`], so
/// every value of every field is a valid operation.
#[derive(Debug, Clone)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum Op {
    /// Formats `items` through one guard, then commits it or drops it (a rollback).
    Format { items: Vec<Item>, commit: bool },
    /// Formats `head`, reserves a length field, formats `body`, fills the field with the bytes
    /// written after it, then ends the guard as `end` says.
    Framed {
        head: Vec<Item>,
        width: Width,
        little_endian: bool,
        body: Vec<Item>,
        end: FrameEnd,
    },
    /// `WriteBuffer::put_slice`.
    PutSlice(Vec<u8>),
    /// Pins `len % (MAX_PIN + 1)` bytes of a fixed table from `offset`, owned as `kind`.
    Pin { kind: Owner, len: u16, offset: u8 },
    /// `set_flatten_threshold(n % (MAX_THRESHOLD + 1))`.
    SetFlattenThreshold(u16),
    /// Gathers with these limits (`None`: the default) and checks the iovecs, then
    /// `write_to_with` the same limits into a writer that behaves as `writer` says.
    Write {
        max_iovecs: Option<u8>,
        max_bytes: Option<u16>,
        writer: Writer,
    },
    /// `advance` (or `try_advance`, which must succeed).
    Advance(Amount),
    /// `try_advance(len + 1 + n)`: must fail with both numbers and change nothing.
    TryAdvancePast(u16),
    /// `clear`.
    Clear,
    /// `Stealable::steal`: must succeed exactly when nothing is pending (or held), and leave
    /// the buffer without storage but usable; a refusal changes nothing.
    Steal,
    /// `set_watermarks`: `None`, or marks at the smaller and the larger number (the high mark at
    /// least 1).
    SetWatermarks(Option<(u16, u16)>),
    /// `take_pressure_event`: the last crossing not yet taken.
    TakePressureEvent,
    /// `set_hard_limit`. While a limit is set, formats, framed formats, `put_slice` and pins go
    /// through `try_commit`, `try_put_slice` and `try_pin`, which must fail exactly when the
    /// bytes do not fit.
    SetHardLimit(Option<u16>),
    /// `ZeroCopy::send_with` into the fake kernel, which answers as `Answer` says; what it takes
    /// zero-copy is held until its completion.
    ZeroCopySend(Answer),
    /// `ZeroCopy::record_send(n % (len + 1), zero_copy)`: a send the caller made itself (zero
    /// copy claimed whatever the threshold says).
    RecordSend { n: u16, zero_copy: bool },
    /// The fake kernel reports a completion (`ZeroCopy::complete`).
    Complete(Report),
    /// `ZeroCopy::set_threshold(n)`.
    SetZeroCopyThreshold(u16),
}

/// The socket's `ZeroCopy` at the start.
#[derive(Debug, Clone, Copy)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct ZeroCopyChoice {
    /// `ZeroCopy::assume_enabled`; else `ZeroCopy::new()`, whose `send_with` always copies.
    pub enabled: bool,
    /// The counter value of the first zero-copy send is `first_id.wrapping_sub(16)`: from
    /// `u32::MAX - 15` to 239, so that a few sends wrap the counter.
    pub first_id: u8,
    /// `set_threshold`.
    pub threshold: u16,
    /// `set_stop_when_copied`.
    pub stop_when_copied: bool,
}

impl Default for ZeroCopyChoice {
    /// Enabled, counting from 0, every send zero-copy, stopping once the kernel copied.
    fn default() -> Self {
        ZeroCopyChoice {
            enabled: true,
            first_id: 16,
            threshold: 0,
            stop_when_copied: true,
        }
    }
}

/// Where the buffer's scratch storage comes from (`WriteBuffer::with_pool`).
#[derive(Debug, Clone, Copy)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum PoolChoice {
    /// The allocator.
    None,
    /// A `LocalPool` with the default limits.
    Local,
    /// A `SharedPool` that keeps one buffer of at most 4 KiB (so it also frees).
    Shared,
}

/// One typed write through a [`FormatGuard`].
#[derive(Debug, Clone)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum Item {
    U8(u8),
    I8(i8),
    U16(u16, Order),
    I16(i16, Order),
    U32(u32, Order),
    I32(i32, Order),
    U64(u64, Order),
    I64(i64, Order),
    Slice(Vec<u8>),
    /// `put_bytes(byte, len % (MAX_BLOCK + 1))`.
    Repeat {
        byte: u8,
        len: u16,
    },
    /// `put_uninit(len % (MAX_BLOCK + 1))`, then filled with `byte`.
    Uninit {
        byte: u8,
        len: u16,
    },
    /// `core::fmt::Write`: `write!(f, "VALUE {key} 0 {n}\r\n")`.
    Text {
        key: String,
        n: u64,
    },
    /// `std::io::Write::write_all`.
    Io(Vec<u8>),
    /// A 24-byte header through `Encode`.
    Header(Header),
}

#[derive(Debug, Clone, Copy)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum Order {
    Big,
    Little,
    Native,
}

#[derive(Debug, Clone, Copy)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum Width {
    U16,
    U32,
    U64,
}

#[derive(Debug, Clone, Copy)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum FrameEnd {
    Commit,
    Rollback,
    /// Dropped with the field never filled.
    RollbackUnfilled,
}

/// The owner kind a value is pinned as.
#[derive(Debug, Clone, Copy)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum Owner {
    Vec,
    Boxed,
    Arc,
    Static,
    String,
    /// A drop-counting owner the crate boxes.
    Counted,
}

/// How the fake writer behind [`Op::Write`] answers `write_vectored`.
#[derive(Debug, Clone, Copy)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum Writer {
    /// Takes `n % (offered + 1)` bytes: anything from none (`WriteZero`) to all.
    Accept(u16),
    AcceptAll,
    /// `WouldBlock`.
    Fail,
    /// Takes everything but claims one byte more (`InvalidData`).
    OverReport,
}

/// How far to advance.
#[derive(Debug, Clone, Copy)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum Amount {
    Zero,
    /// Exactly what is pending.
    All,
    /// `n % (len + 1)`, with `try_advance`.
    Some(u16),
}

/// A memcached binary-protocol style header, written through [`Encode`].
#[derive(Debug, Clone, Copy)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Header {
    pub opcode: u8,
    pub status: u16,
    pub body_len: u32,
    pub opaque: u32,
    pub cas: u64,
}

impl Encode for Header {
    const SIZE: usize = 24;

    fn encode(&self, out: &mut [u8]) {
        out.copy_from_slice(&self.wire());
    }
}

impl Header {
    fn wire(&self) -> [u8; 24] {
        let mut w = [0u8; 24];
        w[0] = 0x81;
        w[1] = self.opcode;
        w[6..8].copy_from_slice(&self.status.to_be_bytes());
        w[8..12].copy_from_slice(&self.body_len.to_be_bytes());
        w[12..16].copy_from_slice(&self.opaque.to_be_bytes());
        w[16..24].copy_from_slice(&self.cas.to_be_bytes());
        w
    }
}

/// Printable ASCII (so any slice is also a `String`) from a fixed pseudo-random sequence, so that
/// values from different offsets differ.
static TABLE: [u8; MAX_PIN + 256] = table();

const fn table() -> [u8; MAX_PIN + 256] {
    let mut t = [0u8; MAX_PIN + 256];
    let mut x: u32 = 0x9e37_79b9;
    let mut i = 0;
    while i < t.len() {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        t[i] = b'!' + (x % 94) as u8;
        i += 1;
    }
    t
}

/// How the model observes a value's drop.
enum Tracker {
    /// A drop-counting owner ([`Counted`]), which also takes the buffer's boxed path.
    Counted(DropCount),
    /// The model's own clone: one strong count more than the buffer's.
    Arc(Arc<[u8]>),
    /// Checked by the sanitizers only.
    Untracked,
}

impl Tracker {
    fn drops(&self) -> Option<usize> {
        match self {
            Tracker::Counted(c) => Some(c.get()),
            Tracker::Arc(a) => {
                let strong = Arc::strong_count(a);
                assert!(
                    strong <= 2,
                    "pinned Arc cloned by the buffer ({strong} strong)"
                );
                Some(2 - strong)
            }
            Tracker::Untracked => None,
        }
    }
}

/// A value pinned zero-copy, not yet released.
struct Pinned {
    id: usize,
    /// Stream offsets of its first byte and just past its last.
    start: u64,
    end: u64,
    /// Its memory: pending bytes of it must be read from here.
    ptr: *const u8,
    /// Bytes of it sent zero-copy, all held until it is released...
    zc_bytes: usize,
    /// ...which waits for the send that sent the last of them: the stream offset it ended at.
    zc_end: Option<u64>,
}

struct Model {
    wire: VecDeque<u8>,
    /// `set_hard_limit`.
    hard_limit: Option<usize>,
    /// `(low, high)` of `set_watermarks`.
    marks: Option<(usize, usize)>,
    /// From reaching the high mark until draining to the low mark.
    backed_up: bool,
    /// The last crossing not yet taken.
    event: Option<Pressure>,
    /// Steals accepted and refused (the pool counts them too).
    stolen: u64,
    refused: u64,
    /// Stream offset of `wire[0]`: bytes advanced past so far.
    sent: u64,
    /// Values not yet released, in stream order: the held ones (`end <= sent`), then the
    /// pending ones.
    pinned: VecDeque<Pinned>,
    /// Indexed by value id.
    values: Vec<Tracker>,
    released: BTreeSet<usize>,
    /// Scratch bytes sent zero-copy, per send: `(end of the send, bytes)`, oldest first.
    held_scratch: VecDeque<(u64, usize)>,
    /// Bytes held: `held_scratch` and the `zc_bytes` of every value in `pinned`.
    held: usize,
    kernel: Kernel,
}

impl Model {
    fn new(kernel: Kernel) -> Model {
        Model {
            wire: VecDeque::new(),
            hard_limit: None,
            marks: None,
            backed_up: false,
            event: None,
            stolen: 0,
            refused: 0,
            sent: 0,
            pinned: VecDeque::new(),
            values: Vec::new(),
            released: BTreeSet::new(),
            held_scratch: VecDeque::new(),
            held: 0,
            kernel,
        }
    }

    fn end(&self) -> u64 {
        self.sent + self.wire.len() as u64
    }

    /// Bytes the buffer answers for, which water marks and the hard limit count: pending plus
    /// held.
    fn total(&self) -> usize {
        self.wire.len() + self.held
    }

    /// Queues `bytes` after a commit or pin the buffer accepted; adding bytes may reach the
    /// high mark (adding nothing changes nothing).
    fn push_bytes(&mut self, bytes: &[u8]) {
        self.wire.extend(bytes);
        if !bytes.is_empty() {
            self.rose();
        }
    }

    /// Whether `n` more bytes fit under the hard limit, checked against what the `try_` method
    /// returned: rejected exactly when `held + n > limit` (adding nothing always fits), with
    /// both numbers and the limit.
    fn admit(&self, n: usize, result: Result<(), HardLimitError>) -> bool {
        let held = self.total();
        match self.hard_limit {
            Some(limit) if n > 0 && held + n > limit => {
                assert_eq!(
                    result.map_err(|e| (e.requested, e.held, e.limit)),
                    Err((n, held, limit)),
                    "{n} bytes over the hard limit"
                );
                false
            }
            _ => {
                assert_eq!(result, Ok(()), "{n} bytes under the hard limit");
                true
            }
        }
    }

    /// After bytes were added: reaching the high mark backs up.
    fn rose(&mut self) {
        if let Some((_, high)) = self.marks {
            if !self.backed_up && self.total() >= high {
                self.backed_up = true;
                self.event = Some(Pressure::High);
            }
        }
    }

    /// After bytes left (sent by copying, or released): draining to the low mark resumes.
    fn fell(&mut self) {
        if let Some((low, _)) = self.marks {
            if self.backed_up && self.total() <= low {
                self.backed_up = false;
                self.event = Some(Pressure::Low);
            }
        }
    }

    /// A copying send of `n` bytes.
    fn advance(&mut self, n: usize) {
        assert!(n <= self.wire.len());
        self.wire.drain(..n);
        self.sent += n as u64;
        let released = self.settle();
        if n + released > 0 {
            self.fell();
        }
    }

    /// A send of `n` bytes, copying or zero-copy as `sent` says.
    fn send(&mut self, sent: Sent) {
        if !sent.zero_copy {
            return self.advance(sent.n);
        }
        let (start, end) = (self.sent, self.sent + sent.n as u64);
        let mut scratch = sent.n;
        for p in self.pinned.iter_mut() {
            if p.start >= end {
                break;
            }
            let overlap = p.end.min(end).saturating_sub(p.start.max(start));
            if overlap > 0 {
                p.zc_bytes += overlap as usize;
                p.zc_end = Some(end);
                scratch -= overlap as usize;
            }
        }
        if scratch > 0 {
            self.held_scratch.push_back((end, scratch));
        }
        self.held += sent.n;
        self.wire.drain(..sent.n);
        self.sent = end;
        // Pending bytes became held: the buffer answers for as many as before.
        assert_eq!(self.settle(), 0, "a zero-copy send released something");
    }

    /// After a completion that `ZeroCopy::complete` says released `released` bytes.
    fn completed(&mut self, released: usize) {
        let ours = self.settle();
        assert_eq!(released, ours, "bytes the completion released");
        if released > 0 {
            self.fell();
        }
    }

    /// Releases what must be released by now: held scratch of the sends the kernel is done
    /// with, and every value whose last byte is sent and whose last zero-copy send is done.
    /// Returns the held bytes released.
    fn settle(&mut self) -> usize {
        let through = self.kernel.through();
        let before = self.held;
        while let Some(&(end, n)) = self.held_scratch.front() {
            if end > through {
                break;
            }
            self.held_scratch.pop_front();
            self.held -= n;
        }
        let sent = self.sent;
        let (held, released) = (&mut self.held, &mut self.released);
        for p in self.pinned.iter_mut() {
            // A pending value whose zero-copy sends are all complete: nothing of it is held.
            if p.end > sent && p.zc_end.is_some_and(|e| e <= through) {
                *held -= p.zc_bytes;
                p.zc_bytes = 0;
                p.zc_end = None;
            }
        }
        self.pinned.retain(|p| {
            let done = p.end <= sent && p.zc_end.is_none_or(|e| e <= through);
            if done {
                *held -= p.zc_bytes;
                released.insert(p.id);
            }
            !done
        });
        before - self.held
    }

    fn clear(&mut self) {
        self.advance(self.wire.len());
    }
}

/// A buffer and its model, stepped together.
pub struct Harness {
    buf: WriteBuffer,
    /// The socket's zero-copy state, driven by the model's fake kernel.
    zc: ZeroCopy,
    pool: Option<Arc<dyn Pool>>,
    /// The pool's `(stolen, refused)` when the harness started: a `LocalPool` counts for its
    /// whole thread.
    pool_base: (u64, u64),
    model: Model,
}

/// Runs a whole input: every op, a check after each, then completes every zero-copy send, drops
/// the buffer and checks that every value was released exactly once and nothing leaked.
pub fn run(input: &Input) {
    let mut h = Harness::new(
        1 + input.chunk_size as usize % MAX_CHUNK_SIZE,
        input.pool,
        input.zero_copy,
    );
    h.check();
    for op in &input.ops {
        h.apply(op);
        h.check();
    }
    h.finish();
}

impl Harness {
    pub fn new(chunk_size: usize, pool: PoolChoice, zero_copy: ZeroCopyChoice) -> Harness {
        let pool: Option<Arc<dyn Pool>> = match pool {
            PoolChoice::None => None,
            PoolChoice::Local => Some(LocalPool::new(PoolLimits::new())),
            PoolChoice::Shared => Some(SharedPool::new(
                PoolLimits::new()
                    .with_max_buffers(1)
                    .with_max_buffer_size(4096),
            )),
        };
        let mut buf = WriteBuffer::with_block_size(chunk_size);
        if let Some(pool) = &pool {
            buf = buf.with_pool(pool.clone());
        }
        let pool_base = pool.as_ref().map_or((0, 0), |p| {
            let stats = p.stats();
            (stats.stolen, stats.refused)
        });
        let (kernel, zc) = Kernel::new(
            zero_copy.enabled,
            u32::from(zero_copy.first_id).wrapping_sub(16),
            usize::from(zero_copy.threshold),
            zero_copy.stop_when_copied,
        );
        Harness {
            buf,
            zc,
            pool,
            pool_base,
            model: Model::new(kernel),
        }
    }

    /// Applies `op` to the buffer and to the model, checking what the op itself returns.
    pub fn apply(&mut self, op: &Op) {
        let (buf, model, zc) = (&mut self.buf, &mut self.model, &mut self.zc);
        match op {
            Op::Format { items, commit } => {
                let reuse = ScratchReuse::before(buf);
                let mut expect = Vec::new();
                let mut f = buf.format();
                for item in items {
                    put(&mut f, item, &mut expect);
                }
                assert_eq!(f.written(), &expect[..], "guard's bytes");
                if !*commit {
                    drop(f);
                } else if model.hard_limit.is_none() {
                    f.commit();
                    model.push_bytes(&expect);
                } else if model.admit(expect.len(), f.try_commit()) {
                    model.push_bytes(&expect);
                }
                reuse.check(buf, expect.len());
            }
            Op::Framed {
                head,
                width,
                little_endian,
                body,
                end,
            } => {
                let reuse = ScratchReuse::before(buf);
                let limited = model.hard_limit.is_some();
                let (expect, result) =
                    framed(buf, head, *width, *little_endian, body, *end, limited);
                if let FrameEnd::Commit = end {
                    if model.admit(expect.len(), result) {
                        model.push_bytes(&expect);
                    }
                }
                reuse.check(buf, expect.len());
            }
            Op::PutSlice(bytes) => {
                let accepted = if model.hard_limit.is_none() {
                    buf.put_slice(bytes);
                    true
                } else {
                    model.admit(bytes.len(), buf.try_put_slice(bytes))
                };
                // Putting nothing commits nothing.
                if accepted && !bytes.is_empty() {
                    model.push_bytes(bytes);
                }
            }
            Op::Pin { kind, len, offset } => {
                let len = *len as usize % (MAX_PIN + 1);
                let bytes: &'static [u8] = &TABLE[*offset as usize..][..len];
                let id = model.values.len();
                let flattened = len == 0 || len < buf.flatten_threshold();
                let limited = model.hard_limit.is_some();
                let (ptr, tracker, result) = pin(buf, *kind, bytes, limited);
                model.values.push(tracker);
                if !model.admit(len, result) {
                    // Refused: the value was dropped at once and nothing was queued.
                    model.released.insert(id);
                } else {
                    if flattened {
                        model.released.insert(id);
                    } else {
                        let start = model.end();
                        model.pinned.push_back(Pinned {
                            id,
                            start,
                            end: start + len as u64,
                            ptr,
                            zc_bytes: 0,
                            zc_end: None,
                        });
                    }
                    // An empty value is not queued at all.
                    if len > 0 {
                        model.push_bytes(bytes);
                    }
                }
            }
            Op::SetFlattenThreshold(n) => {
                let n = *n as usize % (MAX_THRESHOLD + 1);
                buf.set_flatten_threshold(n);
                assert_eq!(buf.flatten_threshold(), n);
            }
            Op::Write {
                max_iovecs,
                max_bytes,
                writer,
            } => {
                let mut limit = GatherLimits::new();
                if let Some(n) = max_iovecs {
                    limit = limit.with_max_iovecs(usize::from(*n));
                }
                if let Some(n) = max_bytes {
                    limit = limit.with_max_bytes(usize::from(*n));
                }
                let offered = gather(buf, model, limit);
                write(buf, model, limit, *writer, offered);
            }
            Op::Advance(amount) => {
                let len = buf.pending_len();
                match *amount {
                    Amount::Zero => {
                        buf.advance(0);
                        model.advance(0);
                    }
                    Amount::All => {
                        buf.advance(len);
                        model.advance(len);
                    }
                    Amount::Some(n) => {
                        let n = usize::from(n) % (len + 1);
                        assert_eq!(buf.try_advance(n), Ok(()));
                        model.advance(n);
                    }
                }
            }
            Op::TryAdvancePast(n) => {
                let available = buf.pending_len();
                let requested = available + 1 + usize::from(*n);
                assert_eq!(
                    buf.try_advance(requested),
                    Err(AdvanceError {
                        requested,
                        available
                    })
                );
            }
            Op::Clear => {
                buf.clear();
                model.clear();
            }
            Op::Steal => {
                let storage = buf.storage_bytes();
                let result = buf.steal();
                if model.wire.is_empty() && model.held == 0 {
                    assert_eq!(result, Ok(storage), "steal of an idle buffer");
                    assert_eq!(buf.storage_bytes(), 0, "storage left after a steal");
                    assert_eq!(buf.capacity(), 0, "scratch left after a steal");
                    model.stolen += 1;
                } else {
                    assert_eq!(
                        result.map_err(|e| (e.pending, e.held)),
                        Err((model.wire.len(), model.held)),
                        "steal of a busy buffer"
                    );
                    assert_eq!(buf.storage_bytes(), storage, "a refused steal took storage");
                    model.refused += 1;
                }
            }
            Op::SetWatermarks(marks) => {
                let marks = marks.map(|(a, b)| {
                    let (a, b) = (usize::from(a), usize::from(b));
                    (a.min(b), a.max(b).max(1))
                });
                buf.set_watermarks(marks.map(|(low, high)| Watermarks::new(low, high)));
                model.marks = marks;
                match marks {
                    None => {
                        if model.backed_up {
                            model.backed_up = false;
                            model.event = Some(Pressure::Low);
                        }
                    }
                    // Re-evaluated at once against what the buffer holds: at or above
                    // high backed up, at or below low not, in between unchanged.
                    Some((low, high)) => {
                        let held = model.total();
                        let backed_up = if held >= high {
                            true
                        } else if held <= low {
                            false
                        } else {
                            model.backed_up
                        };
                        if backed_up != model.backed_up {
                            model.backed_up = backed_up;
                            model.event = Some(if backed_up {
                                Pressure::High
                            } else {
                                Pressure::Low
                            });
                        }
                    }
                }
            }
            Op::TakePressureEvent => {
                assert_eq!(
                    buf.take_pressure_event(),
                    model.event.take(),
                    "take_pressure_event"
                );
                assert_eq!(buf.take_pressure_event(), None, "an event taken twice");
            }
            Op::SetHardLimit(limit) => {
                let limit = limit.map(usize::from);
                buf.set_hard_limit(limit);
                model.hard_limit = limit;
            }
            Op::ZeroCopySend(answer) => {
                let sent = model.sent;
                let pending = model.wire.make_contiguous();
                if let Some(sent) = model.kernel.send(zc, buf, sent, pending, *answer) {
                    model.send(sent);
                }
            }
            Op::RecordSend { n, zero_copy } => {
                let n = usize::from(*n) % (buf.pending_len() + 1);
                let sent = model.sent;
                let pending = model.wire.make_contiguous();
                let sent = model.kernel.record(zc, buf, sent, pending, n, *zero_copy);
                model.send(sent);
            }
            Op::Complete(report) => {
                if let Some(released) = model.kernel.complete(zc, buf, *report) {
                    model.completed(released);
                }
            }
            Op::SetZeroCopyThreshold(n) => model.kernel.set_threshold(zc, usize::from(*n)),
        }
    }

    /// Compares the buffer with the model: pending bytes, length, emptiness, segmentation,
    /// zero-copy pinned values, invariants and drops.
    pub fn check(&mut self) {
        let buf = &self.buf;
        let model = &mut self.model;
        buf.check_invariants();
        assert_eq!(buf.pending_len(), model.wire.len(), "len");
        assert_eq!(buf.held_len(), model.held, "held_len");
        assert_eq!(
            buf.is_empty(),
            model.wire.is_empty() && model.held == 0,
            "is_empty (false while the kernel holds anything)"
        );
        model.kernel.check(&self.zc);
        assert_eq!(buf.hard_limit(), model.hard_limit, "hard_limit");
        assert_eq!(
            buf.watermarks().map(|m| (m.low(), m.high())),
            model.marks,
            "watermarks"
        );
        assert_eq!(buf.is_backed_up(), model.backed_up, "is_backed_up");
        if let Some(pool) = &self.pool {
            let stats = pool.stats();
            assert_eq!(
                (
                    stats.stolen - self.pool_base.0,
                    stats.refused - self.pool_base.1
                ),
                (model.stolen, model.refused),
                "the pool's steal counters"
            );
        }

        let wire = model.wire.make_contiguous();
        let mut off = 0;
        let mut segments = 0;
        // The pending values: the held ones, all sent, come first.
        let mut pins = model
            .pinned
            .iter()
            .filter(|p| p.end > model.sent)
            .peekable();
        for chunk in buf.chunks() {
            assert!(!chunk.is_empty(), "segment {segments} is empty");
            assert!(
                off + chunk.len() <= wire.len(),
                "segments hold more than the {} pending bytes",
                wire.len()
            );
            assert!(
                chunk == &wire[off..off + chunk.len()],
                "bytes of segment {segments} (at pending offset {off}, {} bytes) differ from the model",
                chunk.len()
            );
            let at = model.sent + off as u64;
            let end = at + chunk.len() as u64;
            match pins.peek() {
                Some(p) if p.start <= at => {
                    assert_eq!(
                        end, p.end,
                        "segment {segments} is not the rest of value {}",
                        p.id
                    );
                    let within = usize::try_from(at - p.start).expect("fits");
                    assert!(
                        chunk.as_ptr() == p.ptr.wrapping_add(within),
                        "value {} was copied: segment {segments} is not its memory",
                        p.id
                    );
                    pins.next();
                }
                Some(p) => assert!(
                    end <= p.start,
                    "scratch segment {segments} runs into pinned value {}",
                    p.id
                ),
                None => {}
            }
            off += chunk.len();
            segments += 1;
        }
        assert_eq!(off, wire.len(), "segments hold fewer bytes than pending");
        assert!(pins.next().is_none(), "a pinned value has no segment");
        assert_eq!(buf.segments(), segments, "segments()");
        assert_eq!(buf.chunk(), buf.chunks().next().unwrap_or(&[]), "chunk()");
        let mut dst = [IoSlice::new(&[]); 3];
        let n = buf.chunks_vectored(&mut dst);
        assert_eq!(n, segments.min(dst.len()), "chunks_vectored count");
        for (got, chunk) in dst[..n].iter().zip(buf.chunks()) {
            assert!(**got == *chunk, "chunks_vectored and chunks differ");
        }

        for (id, tracker) in model.values.iter().enumerate() {
            if let Some(drops) = tracker.drops() {
                let expected = usize::from(model.released.contains(&id));
                assert_eq!(drops, expected, "drops of value {id}");
            }
        }
    }

    /// Winds the connection down: the kernel completes every zero-copy send, in order, then the
    /// buffer is dropped. Every value not yet released must be released now, exactly once, and
    /// nothing leaked.
    pub fn finish(mut self) {
        while let Some(released) =
            self.model
                .kernel
                .complete(&mut self.zc, &mut self.buf, Report::ALL)
        {
            self.model.completed(released);
            self.check();
        }
        assert_eq!(self.buf.held_len(), 0, "held after every completion");
        let Harness { buf, mut model, .. } = self;
        let leaked = ZeroCopy::leaked_bytes();
        drop(buf);
        assert_eq!(
            ZeroCopy::leaked_bytes(),
            leaked,
            "the drop leaked held bytes"
        );
        assert!(
            model.pinned.iter().all(|p| p.end > model.sent),
            "a sent value outlived its completions"
        );
        model.released.extend(model.pinned.drain(..).map(|p| p.id));
        for (id, tracker) in model.values.iter().enumerate() {
            if let Some(drops) = tracker.drops() {
                assert_eq!(drops, 1, "drops of value {id} after the buffer was dropped");
            }
        }
    }
}

/// A drained buffer reuses its scratch: a format that fits one chunk allocates nothing.
struct ScratchReuse {
    capacity: Option<usize>,
}

impl ScratchReuse {
    fn before(buf: &WriteBuffer) -> ScratchReuse {
        let capacity = (buf.is_empty() && buf.capacity() > 0).then(|| buf.capacity());
        ScratchReuse { capacity }
    }

    fn check(self, buf: &WriteBuffer, formatted: usize) {
        if let Some(capacity) = self.capacity {
            if formatted <= buf.block_size() {
                assert_eq!(
                    buf.capacity(),
                    capacity,
                    "a drained buffer allocated for a {formatted}-byte format"
                );
            }
        }
    }
}

/// Writes `item` through `f` and its expected bytes into `expect`.
fn put(f: &mut FormatGuard<'_>, item: &Item, expect: &mut Vec<u8>) {
    macro_rules! int {
        ($v:expr, $order:expr, $be:ident, $le:ident, $ne:ident) => {
            match $order {
                Order::Big => {
                    f.$be($v);
                    expect.extend_from_slice(&$v.to_be_bytes());
                }
                Order::Little => {
                    f.$le($v);
                    expect.extend_from_slice(&$v.to_le_bytes());
                }
                Order::Native => {
                    f.$ne($v);
                    expect.extend_from_slice(&$v.to_ne_bytes());
                }
            }
        };
    }

    match item {
        Item::U8(v) => {
            f.put_u8(*v);
            expect.push(*v);
        }
        Item::I8(v) => {
            f.put_i8(*v);
            expect.extend_from_slice(&v.to_be_bytes());
        }
        Item::U16(v, o) => int!(*v, o, put_u16, put_u16_le, put_u16_ne),
        Item::I16(v, o) => int!(*v, o, put_i16, put_i16_le, put_i16_ne),
        Item::U32(v, o) => int!(*v, o, put_u32, put_u32_le, put_u32_ne),
        Item::I32(v, o) => int!(*v, o, put_i32, put_i32_le, put_i32_ne),
        Item::U64(v, o) => int!(*v, o, put_u64, put_u64_le, put_u64_ne),
        Item::I64(v, o) => int!(*v, o, put_i64, put_i64_le, put_i64_ne),
        Item::Slice(bytes) => {
            f.put_slice(bytes);
            expect.extend_from_slice(bytes);
        }
        Item::Repeat { byte, len } => {
            let len = usize::from(*len) % (MAX_BLOCK + 1);
            f.put_bytes(*byte, len);
            expect.resize(expect.len() + len, *byte);
        }
        Item::Uninit { byte, len } => {
            let len = usize::from(*len) % (MAX_BLOCK + 1);
            let out = f.put_uninit(len);
            assert_eq!(out.len(), len, "put_uninit length");
            out.fill(*byte);
            expect.resize(expect.len() + len, *byte);
        }
        Item::Text { key, n } => {
            core::fmt::Write::write_fmt(f, format_args!("VALUE {key} 0 {n}\r\n"))
                .expect("formatting into scratch never fails");
            expect.extend_from_slice(format!("VALUE {key} 0 {n}\r\n").as_bytes());
        }
        Item::Io(bytes) => {
            f.write_all(bytes)
                .expect("writing into scratch never fails");
            expect.extend_from_slice(bytes);
        }
        Item::Header(h) => {
            f.put(h);
            expect.extend_from_slice(&h.wire());
        }
    }
    assert_eq!(f.len(), expect.len(), "guard length after {item:?}");
}

/// The body of [`Op::Framed`]; returns the bytes the guard held at its end, and what
/// `try_commit` returned (when `limited`; else the guard commits or rolls back infallibly).
fn framed(
    buf: &mut WriteBuffer,
    head: &[Item],
    width: Width,
    little_endian: bool,
    body: &[Item],
    end: FrameEnd,
    limited: bool,
) -> (Vec<u8>, Result<(), HardLimitError>) {
    let mut expect = Vec::new();
    let mut f = buf.format();
    for item in head {
        put(&mut f, item, &mut expect);
    }
    let at = expect.len();

    macro_rules! field {
        ($t:ty, $reserve:ident, $fill:ident, $fill_le:ident) => {{
            let field = f.$reserve();
            assert_eq!(field.offset(), at, "reserved field offset");
            expect.extend_from_slice(&[0; core::mem::size_of::<$t>()]);
            assert_eq!(f.written(), &expect[..], "a reserved field is zeroed");
            for item in body {
                put(&mut f, item, &mut expect);
            }
            let n = f.written_after(&field);
            assert_eq!(
                n,
                expect.len() - at - core::mem::size_of::<$t>(),
                "written_after"
            );
            if let FrameEnd::RollbackUnfilled = end {
                drop(field);
            } else {
                let v = n as $t;
                let bytes = if little_endian {
                    f.$fill_le(field, v);
                    v.to_le_bytes()
                } else {
                    f.$fill(field, v);
                    v.to_be_bytes()
                };
                expect[at..at + bytes.len()].copy_from_slice(&bytes);
            }
        }};
    }

    match width {
        Width::U16 => field!(u16, reserve_u16, fill_u16, fill_u16_le),
        Width::U32 => field!(u32, reserve_u32, fill_u32, fill_u32_le),
        Width::U64 => field!(u64, reserve_u64, fill_u64, fill_u64_le),
    }
    assert_eq!(f.written(), &expect[..], "guard's bytes");
    let result = match end {
        FrameEnd::Commit if limited => f.try_commit(),
        FrameEnd::Commit => {
            f.commit();
            Ok(())
        }
        FrameEnd::Rollback | FrameEnd::RollbackUnfilled => {
            drop(f);
            Ok(())
        }
    };
    (expect, result)
}

/// Pins `bytes` owned as `kind` (through `try_pin` when `limited`); returns where the owner
/// keeps them, how to see its drop, and what `try_pin` returned.
fn pin(
    buf: &mut WriteBuffer,
    kind: Owner,
    bytes: &'static [u8],
    limited: bool,
) -> (*const u8, Tracker, Result<(), HardLimitError>) {
    fn put<V: AsRef<[u8]> + Send + 'static>(
        buf: &mut WriteBuffer,
        value: V,
        limited: bool,
    ) -> Result<(), HardLimitError> {
        if limited {
            buf.try_pin(value)
        } else {
            buf.pin(value);
            Ok(())
        }
    }

    match kind {
        Owner::Vec => {
            let v = bytes.to_vec();
            let ptr = v.as_ptr();
            (ptr, Tracker::Untracked, put(buf, v, limited))
        }
        Owner::Boxed => {
            let b: Box<[u8]> = bytes.into();
            let ptr = b.as_ptr();
            (ptr, Tracker::Untracked, put(buf, b, limited))
        }
        Owner::Arc => {
            let a: Arc<[u8]> = bytes.into();
            let result = put(buf, a.clone(), limited);
            (a.as_ptr(), Tracker::Arc(a), result)
        }
        Owner::Static => (bytes.as_ptr(), Tracker::Untracked, put(buf, bytes, limited)),
        Owner::String => {
            let s = String::from_utf8(bytes.to_vec()).expect("the table is ASCII");
            let ptr = s.as_ptr();
            (ptr, Tracker::Untracked, put(buf, s, limited))
        }
        Owner::Counted => {
            let (value, drops) = Counted::new(bytes);
            let ptr = value.as_ref().as_ptr();
            (ptr, Tracker::Counted(drops), put(buf, value, limited))
        }
    }
}

/// Gathers with `limit` and checks the iovecs against the model; returns the bytes gathered.
fn gather(buf: &WriteBuffer, model: &mut Model, limit: GatherLimits) -> usize {
    let len = buf.pending_len();
    let wire = model.wire.make_contiguous();
    let mut iov = IoVecBuilder::with_limits(limit);
    let n = iov.gather(buf);
    let slices = iov.as_slices();
    assert_eq!(n, iov.bytes(), "gather's return and bytes()");
    assert!(
        slices.len() <= limit.max_iovecs(),
        "{} iovecs over a limit of {}",
        slices.len(),
        limit.max_iovecs()
    );
    assert!(
        n <= limit.max_bytes(),
        "{n} bytes over a limit of {}",
        limit.max_bytes()
    );
    let mut off = 0;
    for (i, s) in slices.iter().enumerate() {
        assert!(!s.is_empty(), "iovec {i} is empty");
        assert!(
            off + s.len() <= len && **s == wire[off..off + s.len()],
            "iovec {i} is not the model's bytes {off}..{}",
            off + s.len()
        );
        off += s.len();
    }
    assert_eq!(off, n, "gathered bytes");
    if n < len.min(limit.max_bytes()) {
        assert_eq!(
            slices.len(),
            limit.max_iovecs(),
            "gather stopped short of its limits"
        );
    }
    n
}

/// `write_to_with` into a writer that behaves as `mode` says; checks the result against the
/// model and advances it.
fn write(
    buf: &mut WriteBuffer,
    model: &mut Model,
    limit: GatherLimits,
    mode: Writer,
    offered: usize,
) {
    let len = buf.pending_len();
    let mut w = FakeWriter {
        mode,
        limit,
        offered: None,
        out: Vec::new(),
    };
    let result = buf.write_to_with(&mut w, limit);
    if len == 0 {
        assert_eq!(result.ok(), Some(0), "write_to_with on an empty buffer");
        assert_eq!(
            w.offered, None,
            "the writer was called with nothing to write"
        );
        return;
    }
    assert_eq!(
        w.offered,
        Some(offered),
        "write_to_with offered another gather"
    );
    let wire = model.wire.make_contiguous();
    assert!(
        w.out[..] == wire[..w.out.len()],
        "the writer got other bytes than the model's"
    );
    let expected = match mode {
        Writer::Accept(n) => match usize::from(n) % (offered + 1) {
            0 => Err(io::ErrorKind::WriteZero),
            n => Ok(n),
        },
        Writer::AcceptAll => Ok(offered),
        Writer::Fail => Err(io::ErrorKind::WouldBlock),
        Writer::OverReport => Err(io::ErrorKind::InvalidData),
    };
    assert_eq!(result.map_err(|e| e.kind()), expected, "write_to_with");
    if let Ok(n) = expected {
        model.advance(n);
    }
}

/// A `Write` that takes a prefix of what it is offered, fails, or lies, as told.
struct FakeWriter {
    mode: Writer,
    limit: GatherLimits,
    /// Bytes offered to the one `write_vectored` call.
    offered: Option<usize>,
    out: Vec<u8>,
}

impl Write for FakeWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[IoSlice::new(buf)])
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        assert!(self.offered.is_none(), "write_to_with wrote twice");
        assert!(
            bufs.len() <= self.limit.max_iovecs(),
            "more iovecs than the limit"
        );
        let offered: usize = bufs.iter().map(|b| b.len()).sum();
        self.offered = Some(offered);
        let take = match self.mode {
            Writer::Accept(n) => usize::from(n) % (offered + 1),
            Writer::AcceptAll | Writer::OverReport => offered,
            Writer::Fail => return Err(io::ErrorKind::WouldBlock.into()),
        };
        let mut left = take;
        for b in bufs {
            let n = left.min(b.len());
            self.out.extend_from_slice(&b[..n]);
            left -= n;
        }
        match self.mode {
            Writer::OverReport => Ok(offered + 1),
            _ => Ok(take),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
