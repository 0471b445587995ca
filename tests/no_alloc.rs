//! A connection in steady state does not allocate per message.
//!
//! # Why this is a separate file
//!
//! Counting allocations needs a `#[global_allocator]`, and a global allocator applies to the
//! whole test binary: every test in the file would run on it. Keeping it in its own file (its
//! own binary, as bytes does with `tests/test_bytes_odd_alloc.rs`) leaves every other test on
//! the normal allocator. Counts are kept per thread and only while a test asks for them, so the
//! harness's own allocations and tests running in parallel on other threads are not counted.

use sendbuf_testkit::util;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::{self, IoSlice, Write};
use std::sync::Arc;

use sendbuf::{Encode, IoVecBuilder, WriteBuffer};
use util::{Fnv, XorShift};

// ---------------------------------------------------------------------------------------------
// The counting allocator.
// ---------------------------------------------------------------------------------------------

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCS: Cell<usize> = const { Cell::new(0) };
    static DEALLOCS: Cell<usize> = const { Cell::new(0) };
}

fn bump(counter: &'static std::thread::LocalKey<Cell<usize>>) {
    // `try_with`: allocations during thread teardown must not panic.
    if COUNTING.try_with(Cell::get).unwrap_or(false) {
        let _ = counter.try_with(|c| c.set(c.get() + 1));
    }
}

struct Counting;

// SAFETY: every call is forwarded unchanged to `System`; counting touches only const-initialised
// thread-locals (no allocation, no re-entry).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        bump(&ALLOCS);
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        bump(&ALLOCS);
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        bump(&DEALLOCS);
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        bump(&ALLOCS);
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Heap calls made by this thread while `f` ran: (allocations and reallocations, frees).
fn heap_calls<R>(f: impl FnOnce() -> R) -> (R, usize, usize) {
    ALLOCS.with(|c| c.set(0));
    DEALLOCS.with(|c| c.set(0));
    COUNTING.with(|c| c.set(true));
    let r = f();
    COUNTING.with(|c| c.set(false));
    (r, ALLOCS.with(Cell::get), DEALLOCS.with(Cell::get))
}

// ---------------------------------------------------------------------------------------------
// A connection.
// ---------------------------------------------------------------------------------------------

/// A 24-byte binary-protocol response header.
struct Header {
    opaque: u32,
    body_len: u32,
}

impl Encode for Header {
    const SIZE: usize = 24;

    fn encode(&self, out: &mut [u8]) {
        out[..8].copy_from_slice(&[0x81, 0, 0, 0, 0, 0, 0, 0]);
        out[8..12].copy_from_slice(&self.body_len.to_be_bytes());
        out[12..16].copy_from_slice(&self.opaque.to_be_bytes());
        out[16..].fill(0);
    }
}

/// A socket stand-in that accepts a random prefix of each write and hashes what it took. It
/// never allocates.
struct Sink {
    rng: XorShift,
    max: usize,
    hash: Fnv,
    bytes: u64,
    short: u64,
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[IoSlice::new(buf)])
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let offered: usize = bufs.iter().map(|b| b.len()).sum();
        let take = (1 + self.rng.below(self.max)).min(offered);
        let mut left = take;
        for b in bufs {
            let n = b.len().min(left);
            // Under Miri, hashing every byte would dominate the run; the bytes on the wire are
            // checked by count there and by content in every native run.
            if !cfg!(miri) {
                self.hash.update(&b[..n]);
            }
            left -= n;
            if left == 0 {
                break;
            }
        }
        self.bytes += take as u64;
        self.short += u64::from(take < offered);
        Ok(take)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

struct Connection {
    buf: WriteBuffer,
    sink: Sink,
    rng: XorShift,
    /// Large values (pinned by reference) and small ones (copied into scratch).
    large: Vec<Arc<[u8]>>,
    small: Vec<Arc<[u8]>>,
    /// Hash and length of every byte queued, in order.
    expected: Fnv,
    queued: u64,
    seq: u32,
}

/// Bytes a connection lets pile up before it writes until below this again.
const BACKLOG: usize = 32 * 1024;

impl Connection {
    fn new(seed: u64) -> Connection {
        let mut rng = XorShift::new(seed);
        let large = (0..16)
            .map(|_| {
                let len = rng.range(512, 6000);
                rng.bytes(len).into()
            })
            .collect();
        let small = (0..16)
            .map(|_| {
                let len = rng.range(1, 200);
                rng.bytes(len).into()
            })
            .collect();
        Connection {
            buf: WriteBuffer::new(),
            sink: Sink {
                rng: XorShift::new(seed ^ 0xFFFF),
                max: 9000,
                hash: Fnv::default(),
                bytes: 0,
                short: 0,
            },
            rng,
            large,
            small,
            expected: Fnv::default(),
            queued: 0,
            seq: 0,
        }
    }

    /// Formats, pins and partly sends one response.
    fn message(&mut self) {
        self.seq += 1;
        let large = self.large[self.rng.below(self.large.len())].clone();
        let small = self.small[self.rng.below(self.small.len())].clone();

        let mut header = [0u8; 24];
        let h = Header {
            opaque: self.seq,
            body_len: (large.len() + small.len()) as u32,
        };
        h.encode(&mut header);

        let mut f = self.buf.format();
        f.put(&h);
        f.commit();
        self.note(&header);

        if self.rng.one_in(4) {
            // A response abandoned half-way (say the key vanished): rolled back.
            let mut f = self.buf.format();
            f.put_slice(b"ABANDONED");
            core::fmt::Write::write_fmt(&mut f, format_args!("{}", self.seq)).unwrap();
        }

        self.note(&large);
        self.buf.pin(large); // an Arc clone: pinned by reference
        self.note(&small);
        self.buf.pin(small); // below the threshold: copied, the clone dropped

        let mut f = self.buf.format();
        let mut line = [0u8; 16];
        let mut cursor = &mut line[..];
        core::fmt::Write::write_fmt(&mut f, format_args!("\r\n{}\r\n", self.seq % 1000)).unwrap();
        write!(cursor, "\r\n{}\r\n", self.seq % 1000).unwrap();
        let used = 16 - cursor.len();
        f.commit();
        self.note(&line[..used]);

        // One write now, then more only while the backlog is too large.
        self.send_once();
        while self.buf.pending_len() > BACKLOG {
            self.send_once();
        }
        debug_assert!(self.buf.pending_len() <= BACKLOG);
    }

    fn note(&mut self, bytes: &[u8]) {
        if !cfg!(miri) {
            self.expected.update(bytes);
        }
        self.queued += bytes.len() as u64;
    }

    /// One write, alternating between `write_to` and a hand-made gather.
    fn send_once(&mut self) {
        if self.rng.one_in(2) {
            self.buf.write_to(&mut self.sink).unwrap();
        } else {
            let n = {
                let mut iov = IoVecBuilder::new();
                iov.gather(&self.buf);
                self.sink.write_vectored(iov.as_slices()).unwrap()
            };
            self.buf.advance(n);
        }
    }

    fn finish(&mut self) {
        while !self.buf.is_empty() {
            self.send_once();
        }
        self.buf.check_invariants();
        assert_eq!(self.sink.bytes, self.queued, "bytes on the wire");
        assert_eq!(
            self.sink.hash, self.expected,
            "the wire differs from what was queued"
        );
    }
}

#[test]
fn a_steady_state_connection_does_not_allocate() {
    // Warm-up covers the segment queue's arrays growing to their steady size: the backlog
    // never drains fully, so they grow until its deepest point has been seen.
    let (warm_up, measured) = if cfg!(miri) {
        (2_000, 100)
    } else {
        (2_000, 10_000)
    };
    let mut conn = Connection::new(0x5EED_A110);
    for _ in 0..warm_up {
        conn.message();
    }
    let ((), allocs, frees) = heap_calls(|| {
        for _ in 0..measured {
            conn.message();
        }
    });
    assert_eq!(
        (allocs, frees),
        (0, 0),
        "heap calls over {measured} messages after warm-up"
    );
    assert!(conn.sink.short > measured as u64 / 2, "few partial writes");
    conn.finish();
    for value in conn.large.iter().chain(&conn.small) {
        assert_eq!(
            Arc::strong_count(value),
            1,
            "a pinned value was not released"
        );
    }
}

#[test]
fn pinning_the_inline_owner_kinds_does_not_allocate() {
    let arc: Arc<[u8]> = vec![1u8; 4096].into();
    static STATIC: [u8; 4096] = [2; 4096];
    let vec = vec![3u8; 4096];
    let boxed: Box<[u8]> = vec![4u8; 4096].into();
    let string = "5".repeat(4096);

    let mut buf = WriteBuffer::new();
    // Warm up: the segment queue grows once.
    for _ in 0..8 {
        buf.pin(arc.clone());
    }
    buf.clear();

    let ((), allocs, _frees) = heap_calls(|| {
        buf.pin(arc.clone());
        buf.pin(&STATIC[..]);
        buf.pin(vec);
        buf.pin(boxed);
        buf.pin(string);
    });
    assert_eq!(
        allocs, 0,
        "pinning Arc, &'static, Vec, Box and String must not allocate"
    );
    assert_eq!(buf.pending_len(), 5 * 4096);

    // The owned kinds are freed when sent; that is a free, not an allocation.
    let ((), allocs, frees) = heap_calls(|| buf.advance(buf.pending_len()));
    assert_eq!((allocs, frees), (0, 3));
    assert_eq!(Arc::strong_count(&arc), 1);
}

/// A write with more iovecs pending than `IoVecBuilder` keeps inline borrows the queue's own
/// array instead of copying it into a heap-allocated one: through `write_to` (which passes the
/// array directly) and through a hand-made `IoVecBuilder::gather` (which copied it, and so
/// allocated once per write with more than 64 segments pending, until it learnt to borrow).
#[test]
fn writing_hundreds_of_segments_does_not_allocate() {
    let values: Vec<Arc<[u8]>> = (0..200u8).map(|i| vec![i; 2048].into()).collect();
    let mut buf = WriteBuffer::new();
    let mut sink = Sink {
        rng: XorShift::new(7),
        max: 64 * 1024,
        hash: Fnv::default(),
        bytes: 0,
        short: 0,
    };
    let run = |buf: &mut WriteBuffer, sink: &mut Sink| {
        for v in &values {
            buf.put_slice(b"VALUE\r\n");
            buf.pin_cloned(v);
        }
        assert_eq!(buf.segments(), 400);
        let mut by_hand = false;
        while !buf.is_empty() {
            if by_hand {
                let n = {
                    let mut iov = IoVecBuilder::new();
                    iov.gather(buf);
                    sink.write_vectored(iov.as_slices()).unwrap()
                };
                buf.advance(n);
            } else {
                buf.write_to(sink).unwrap();
            }
            by_hand = !by_hand;
        }
    };
    run(&mut buf, &mut sink); // warm up: the queue's arrays grow once
    let ((), allocs, _frees) = heap_calls(|| run(&mut buf, &mut sink));
    assert_eq!(allocs, 0, "writing 400 pending segments allocated");
    assert_eq!(sink.bytes, 2 * 200 * (7 + 2048));
    assert!(values.iter().all(|v| Arc::strong_count(v) == 1));
}

#[test]
fn the_counter_sees_allocations() {
    // Without this, a broken counter would make the tests above pass vacuously.
    let (v, allocs, frees) = heap_calls(|| Vec::<u8>::with_capacity(10));
    assert_eq!((allocs, frees), (1, 0));
    let ((), allocs, frees) = heap_calls(|| drop(v));
    assert_eq!((allocs, frees), (0, 1));

    // A new buffer allocates its scratch on first use...
    let (buf, allocs, _) = heap_calls(|| {
        let mut buf = WriteBuffer::new();
        buf.put_slice(b"x");
        buf
    });
    assert!(allocs >= 1);
    drop(buf);

    // ...and an owner of a kind the crate does not store inline is boxed.
    let mut buf = WriteBuffer::new();
    buf.pin(std::borrow::Cow::<'static, [u8]>::Owned(vec![0; 4096]));
    buf.clear();
    let owned = std::borrow::Cow::<'static, [u8]>::Owned(vec![0; 4096]);
    let ((), allocs, _) = heap_calls(|| buf.pin(owned));
    assert_eq!(allocs, 1);
}
