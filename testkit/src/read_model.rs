//! A model of [`ReadBuffer`], the side that takes bytes from the network, and the operations
//! both are driven by.
//!
//! The peer is a queue of bytes it has sent ([`ReadOp::Deliver`]); a read takes a fuzz-chosen
//! prefix of it, or ends the stream, fails, is interrupted first, or lies about what it read. The
//! model is the queue of bytes received and not yet consumed, the limit, and a lower bound on the
//! room after [`data`](ReadBuffer::data) that [`reserve`](ReadBuffer::reserve) promised.
//! [`Harness::check`] compares the buffer with it after every operation: the unconsumed bytes,
//! `len`, `is_empty`, `check_invariants`, and that storage never grows past the largest limit
//! the buffer had (or the pool's largest buffer): a peer cannot make it grow without bound.
//!
//! The fuzz target `read_buffer`, `tests/prop_read_buffer.rs` and `tests/fuzz_regressions.rs`
//! all drive this one model. With the feature `arbitrary` the inputs derive
//! `arbitrary::Arbitrary`; proptest builds them with its own strategies.

use std::collections::VecDeque;
use std::io::{self, Read};
use std::sync::Arc;

use sendbuf::{
    ConsumeError, LocalPool, Pool, PoolLimits, ReadBuffer, ReadLimitError, SharedPool, Stealable,
};

/// Largest first-read storage an input selects: `with_capacity(1..=MAX_CAPACITY)`.
pub const MAX_CAPACITY: usize = 4096;
/// Largest limit an input sets: the default limit (1 MiB + 64 KiB).
pub const MAX_MAX_LEN: usize = 1024 * 1024 + 64 * 1024;
/// Largest buffer the pools keep, so a pooled buffer (possibly from an earlier input on the same
/// thread) bounds storage too.
pub const POOL_MAX_BUFFER: usize = 64 * 1024;

/// A whole test case: the buffer's first-read capacity, its pool, then the operations.
#[derive(Debug, Clone)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct ReadInput {
    /// `with_capacity(1 + capacity % MAX_CAPACITY)`.
    pub capacity: u16,
    pub pool: ReadPool,
    /// Applied in order, each followed by [`Harness::check`].
    pub ops: Vec<ReadOp>,
}

/// Where the buffer's storage comes from (`ReadBuffer::with_pool`).
#[derive(Debug, Clone, Copy)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum ReadPool {
    None,
    /// A `LocalPool` keeping buffers of up to [`POOL_MAX_BUFFER`].
    Local,
    /// A `SharedPool` keeping one buffer of up to 4 KiB.
    Shared,
}

/// One operation. Numbers are raw and reduced into range by [`Harness::apply`], so every value
/// of every field is a valid operation.
#[derive(Debug, Clone)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum ReadOp {
    /// The peer sends these bytes (they wait in the socket until read).
    Deliver(Vec<u8>),
    /// One `read_from`. The reader first fails with `Interrupted` `interrupts % 4` times (which
    /// `read_from` retries), then hands over up to `1 + max` of the bytes waiting, or, if none
    /// wait, answers as `idle` says.
    Read {
        interrupts: u8,
        max: u16,
        idle: Idle,
    },
    /// `reserve` of some size.
    Reserve(Size),
    /// `consume(n % (len + 1))`.
    Consume(u16),
    /// `try_consume(len + 1 + n)`: must fail with both numbers and change nothing.
    TryConsumePast(u16),
    /// `set_max_len(n % (MAX_MAX_LEN + 1))`.
    SetMaxLen(u32),
    /// `clear`.
    Clear,
    /// `Stealable::steal`: must succeed exactly when everything read was consumed.
    Steal,
}

/// What the reader answers when no bytes wait.
#[derive(Debug, Clone, Copy)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum Idle {
    /// `Ok(0)`: end of stream.
    Eof,
    /// `WouldBlock`.
    WouldBlock,
    /// `ConnectionReset`.
    Reset,
    /// Fills the room it was given with junk and claims one byte more (`InvalidData`).
    OverReport,
}

/// The argument of [`ReadOp::Reserve`].
#[derive(Debug, Clone, Copy)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum Size {
    /// `n % (max_len - len + 1)`: always fits.
    Fits(u32),
    /// `max_len - len + 1 + n`: just too much.
    Over(u16),
    /// Any size, as a peer's length field would give (`u64` cut to `usize`).
    Raw(u64),
    /// `usize::MAX`: `len + additional` overflows.
    Max,
}

/// The expected state.
struct Model {
    /// Received and not consumed.
    data: VecDeque<u8>,
    /// Sent by the peer and not yet read.
    peer: VecDeque<u8>,
    max_len: usize,
    /// The largest `max_len` the buffer has had.
    max_len_seen: usize,
    /// Room after the data that `reserve` guaranteed and reads have not used since.
    room: usize,
    stolen: u64,
    refused: u64,
}

/// A buffer and its model, stepped together.
pub struct Harness {
    buf: ReadBuffer,
    pool: Option<Arc<dyn Pool>>,
    /// The pool's `(stolen, refused)` when the harness started (a `LocalPool` counts for its
    /// whole thread).
    pool_base: (u64, u64),
    model: Model,
}

/// Runs a whole input: every op, a check after each.
pub fn run(input: &ReadInput) {
    let mut h = Harness::new(1 + input.capacity as usize % MAX_CAPACITY, input.pool);
    h.check();
    for op in &input.ops {
        h.apply(op);
        h.check();
    }
}

impl Harness {
    pub fn new(capacity: usize, pool: ReadPool) -> Harness {
        let pool: Option<Arc<dyn Pool>> = match pool {
            ReadPool::None => None,
            ReadPool::Local => Some(LocalPool::new(
                PoolLimits::new().with_max_buffer_size(POOL_MAX_BUFFER),
            )),
            ReadPool::Shared => Some(SharedPool::new(
                PoolLimits::new()
                    .with_max_buffers(1)
                    .with_max_buffer_size(4096),
            )),
        };
        let mut buf = ReadBuffer::with_block_size(capacity);
        if let Some(pool) = &pool {
            buf = buf.with_pool(pool.clone());
        }
        let pool_base = pool.as_ref().map_or((0, 0), |p| {
            let stats = p.stats();
            (stats.stolen, stats.refused)
        });
        let max_len = buf.max_len();
        Harness {
            buf,
            pool,
            pool_base,
            model: Model {
                data: VecDeque::new(),
                peer: VecDeque::new(),
                max_len,
                max_len_seen: max_len,
                room: 0,
                stolen: 0,
                refused: 0,
            },
        }
    }

    /// Applies `op` to the buffer and to the model, checking what the op itself returns.
    pub fn apply(&mut self, op: &ReadOp) {
        let (buf, model) = (&mut self.buf, &mut self.model);
        match op {
            ReadOp::Deliver(bytes) => model.peer.extend(bytes),
            ReadOp::Read {
                interrupts,
                max,
                idle,
            } => read(buf, model, usize::from(*interrupts % 4), *max, *idle),
            ReadOp::Reserve(size) => {
                let len = model.data.len();
                let fits = model.max_len.saturating_sub(len);
                let additional = match *size {
                    Size::Fits(n) => usize::try_from(n).expect("u32 fits") % (fits + 1),
                    Size::Over(n) => fits.saturating_add(1).saturating_add(usize::from(n)),
                    Size::Raw(n) => n as usize,
                    Size::Max => usize::MAX,
                };
                let capacity = buf.capacity();
                let ptr = buf.data().as_ptr();
                let result = buf.reserve(additional);
                if len
                    .checked_add(additional)
                    .is_some_and(|n| n <= model.max_len)
                {
                    assert_eq!(result, Ok(()), "reserve({additional}) within the limit");
                    assert!(
                        buf.capacity() >= len + additional,
                        "reserve({additional}) left {} bytes of storage for {len} bytes",
                        buf.capacity()
                    );
                    model.room = model.room.max(additional);
                } else {
                    assert_eq!(
                        result,
                        Err(ReadLimitError {
                            requested: additional,
                            buffered: len,
                            max_len: model.max_len,
                        }),
                        "reserve({additional}) past the limit"
                    );
                    assert_eq!(
                        buf.capacity(),
                        capacity,
                        "a refused reserve changed storage"
                    );
                    assert_eq!(buf.data().as_ptr(), ptr, "a refused reserve moved the data");
                }
            }
            ReadOp::Consume(n) => {
                let n = usize::from(*n) % (model.data.len() + 1);
                buf.consume(n);
                model.data.drain(..n);
            }
            ReadOp::TryConsumePast(n) => {
                let available = model.data.len();
                let requested = available + 1 + usize::from(*n);
                assert_eq!(
                    buf.try_consume(requested),
                    Err(ConsumeError {
                        requested,
                        available
                    })
                );
            }
            ReadOp::SetMaxLen(n) => {
                let n = usize::try_from(*n).expect("u32 fits") % (MAX_MAX_LEN + 1);
                buf.set_max_len(n);
                assert_eq!(buf.max_len(), n);
                model.max_len = n;
                model.max_len_seen = model.max_len_seen.max(n);
            }
            ReadOp::Clear => {
                buf.clear();
                model.data.clear();
            }
            ReadOp::Steal => {
                let storage = buf.storage_bytes();
                let result = buf.steal();
                if model.data.is_empty() {
                    assert_eq!(result, Ok(storage), "steal of an idle buffer");
                    assert_eq!(buf.capacity(), 0, "storage left after a steal");
                    model.room = 0;
                    model.stolen += 1;
                } else {
                    assert_eq!(
                        result.map_err(|e| (e.pending, e.held)),
                        Err((model.data.len(), 0)),
                        "steal of a buffer with unconsumed bytes"
                    );
                    assert_eq!(buf.capacity(), storage, "a refused steal took storage");
                    model.refused += 1;
                }
            }
        }
    }

    /// Compares the buffer with the model.
    pub fn check(&mut self) {
        let (buf, model) = (&self.buf, &mut self.model);
        buf.check_invariants();
        assert_eq!(buf.len(), model.data.len(), "len");
        assert_eq!(buf.is_empty(), model.data.is_empty(), "is_empty");
        assert!(
            buf.data() == model.data.make_contiguous(),
            "data() differs from the bytes received and not consumed"
        );
        assert_eq!(buf.max_len(), model.max_len, "max_len");
        assert_eq!(buf.storage_bytes(), buf.capacity(), "storage_bytes");
        let bound = if self.pool.is_some() {
            model.max_len_seen.max(POOL_MAX_BUFFER)
        } else {
            model.max_len_seen
        };
        assert!(
            buf.capacity() <= bound,
            "{} bytes of storage, over every limit the buffer had ({})",
            buf.capacity(),
            model.max_len_seen
        );
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
    }
}

/// One `read_from` through a [`FakeReader`], checked against the model.
fn read(buf: &mut ReadBuffer, model: &mut Model, interrupts: usize, max: u16, idle: Idle) {
    let len = model.data.len();
    let mut r = FakeReader {
        interrupts,
        max: 1 + usize::from(max),
        idle,
        peer: &mut model.peer,
        room: None,
        calls: 0,
        taken: Vec::new(),
    };
    let result = buf.read_from(&mut r);
    let (room, calls, taken) = (r.room, r.calls, r.taken);

    if len >= model.max_len {
        // Full: nothing is read, the reader is not even called.
        let err = result.expect_err("read_from into a full buffer");
        assert_eq!(err.kind(), io::ErrorKind::OutOfMemory, "{err}");
        let limit = err
            .get_ref()
            .and_then(|e| e.downcast_ref::<ReadLimitError>())
            .expect("a full buffer's error wraps a ReadLimitError");
        assert_eq!(
            *limit,
            ReadLimitError {
                requested: 1,
                buffered: len,
                max_len: model.max_len,
            }
        );
        assert_eq!(
            calls, 0,
            "the reader was called with no room under the limit"
        );
        return;
    }

    assert_eq!(
        calls,
        interrupts + 1,
        "Interrupted is retried, nothing else"
    );
    let room = room.expect("the reader was called");
    assert!(room >= 1, "read_from offered no room");
    assert!(
        room <= model.max_len - len,
        "{room} bytes of room with {len} of {} buffered",
        model.max_len
    );
    assert!(
        room >= model.room.min(model.max_len - len),
        "{room} bytes of room after reserving {}",
        model.room
    );
    match result {
        Ok(n) => {
            assert_eq!(n, taken.len(), "read_from's count");
            assert!(
                n > 0 || matches!(idle, Idle::Eof),
                "Ok(0) from a reader that did not end the stream"
            );
            model.data.extend(&taken);
            model.room = model.room.max(room) - n;
        }
        Err(e) => {
            assert!(taken.is_empty(), "an error after bytes were handed over");
            let expected = match idle {
                Idle::Eof => panic!("end of stream became {e}"),
                Idle::WouldBlock => io::ErrorKind::WouldBlock,
                Idle::Reset => io::ErrorKind::ConnectionReset,
                Idle::OverReport => io::ErrorKind::InvalidData,
            };
            assert_eq!(e.kind(), expected, "{e}");
            model.room = model.room.max(room);
        }
    }
}

/// A socket as `read_from` sees it.
struct FakeReader<'a> {
    interrupts: usize,
    max: usize,
    idle: Idle,
    peer: &'a mut VecDeque<u8>,
    /// The room offered (the same on every call).
    room: Option<usize>,
    calls: usize,
    /// The bytes handed over.
    taken: Vec<u8>,
}

impl Read for FakeReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.calls += 1;
        if let Some(room) = self.room {
            assert_eq!(room, buf.len(), "the room changed on a retry");
        }
        self.room = Some(buf.len());
        assert!(self.taken.is_empty(), "read again after handing bytes over");
        if self.interrupts > 0 {
            self.interrupts -= 1;
            return Err(io::ErrorKind::Interrupted.into());
        }
        if self.peer.is_empty() {
            return match self.idle {
                Idle::Eof => Ok(0),
                Idle::WouldBlock => Err(io::ErrorKind::WouldBlock.into()),
                Idle::Reset => Err(io::ErrorKind::ConnectionReset.into()),
                Idle::OverReport => {
                    buf.fill(0xee);
                    Ok(buf.len() + 1)
                }
            };
        }
        let n = buf.len().min(self.max).min(self.peer.len());
        for (dst, src) in buf.iter_mut().zip(self.peer.drain(..n)) {
            *dst = src;
        }
        self.taken.extend_from_slice(&buf[..n]);
        Ok(n)
    }
}
