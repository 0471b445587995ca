//! Helpers shared by the integration tests: drop-counting owners, writers that take a prefix,
//! a seeded generator, views of what a buffer holds, and real socket pairs.

use std::io::{self, IoSlice, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use sendbuf::WriteBuffer;

// ---------------------------------------------------------------------------------------------
// Drop-counting pinned owner (hashbrown's `Droppable`).
// ---------------------------------------------------------------------------------------------

/// A pinned owner that counts its drops: the buffer must drop it exactly once, when its last
/// byte has been advanced past (or on `clear` / drop of the buffer).
///
/// Not one of the owner kinds the crate stores inline, so it also exercises the boxed path.
#[derive(Debug)]
pub struct Counted {
    bytes: Vec<u8>,
    drops: Arc<AtomicUsize>,
}

impl Counted {
    /// A value holding `bytes` and the counter its drop increments.
    pub fn new(bytes: impl Into<Vec<u8>>) -> (Counted, DropCount) {
        let drops = Arc::new(AtomicUsize::new(0));
        let value = Counted {
            bytes: bytes.into(),
            drops: drops.clone(),
        };
        (value, DropCount(drops))
    }

    /// A value holding `bytes` whose drop increments `drops`, a counter shared by many values.
    pub fn counting(bytes: impl Into<Vec<u8>>, drops: &DropCount) -> Counted {
        Counted {
            bytes: bytes.into(),
            drops: drops.0.clone(),
        }
    }
}

impl AsRef<[u8]> for Counted {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.drops.fetch_add(1, Ordering::SeqCst);
    }
}

/// The observer side of a [`Counted`].
#[derive(Debug, Clone, Default)]
pub struct DropCount(Arc<AtomicUsize>);

impl DropCount {
    /// A counter for [`Counted::counting`] values, at 0.
    pub fn new() -> DropCount {
        DropCount(Arc::new(AtomicUsize::new(0)))
    }

    /// How many times the value (or the values sharing the counter) has been dropped so far.
    pub fn get(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

// ---------------------------------------------------------------------------------------------
// A writer that accepts only a prefix of what it is offered.
// ---------------------------------------------------------------------------------------------

/// How many bytes a [`PrefixWriter`] accepts per call.
#[derive(Debug, Clone)]
pub enum Accept {
    /// At most this many bytes per call.
    Fixed(usize),
    /// A fresh random limit in `1..=max` per call.
    Random(XorShift, usize),
}

/// A `Write` that takes at most a limited prefix of each call's bytes, across all slices of a
/// `write_vectored` (as a socket with a nearly full send buffer does), and records them.
#[derive(Debug)]
pub struct PrefixWriter {
    accept: Accept,
    /// Everything accepted, in order.
    pub out: Vec<u8>,
    /// Calls that accepted at least one byte.
    pub calls: usize,
    /// Calls that accepted fewer bytes than offered.
    pub short: usize,
}

impl PrefixWriter {
    pub fn new(accept: Accept) -> PrefixWriter {
        PrefixWriter {
            accept,
            out: Vec::new(),
            calls: 0,
            short: 0,
        }
    }

    /// At most `n` bytes per call.
    pub fn fixed(n: usize) -> PrefixWriter {
        PrefixWriter::new(Accept::Fixed(n))
    }

    /// A random `1..=max` bytes per call, from a fixed seed.
    pub fn random(seed: u64, max: usize) -> PrefixWriter {
        PrefixWriter::new(Accept::Random(XorShift::new(seed), max))
    }

    fn limit(&mut self) -> usize {
        match &mut self.accept {
            Accept::Fixed(n) => *n,
            Accept::Random(rng, max) => 1 + rng.below(*max),
        }
    }
}

impl Write for PrefixWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[IoSlice::new(buf)])
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let offered: usize = bufs.iter().map(|b| b.len()).sum();
        let mut budget = self.limit().min(offered);
        let taken = budget;
        for b in bufs {
            if budget == 0 {
                break;
            }
            let n = b.len().min(budget);
            self.out.extend_from_slice(&b[..n]);
            budget -= n;
        }
        if taken > 0 {
            self.calls += 1;
        }
        if taken < offered {
            self.short += 1;
        }
        Ok(taken)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Deterministic randomness.
// ---------------------------------------------------------------------------------------------

/// Marsaglia's xorshift64: tiny, deterministic, good enough to pick split points and sizes.
#[derive(Debug, Clone)]
pub struct XorShift(u64);

impl XorShift {
    /// Seeds of 0 are replaced (xorshift never leaves 0).
    pub fn new(seed: u64) -> XorShift {
        XorShift(if seed == 0 {
            0x9E37_79B9_7F4A_7C15
        } else {
            seed
        })
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// Uniform-ish in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        assert!(n > 0, "XorShift::below(0)");
        (self.next_u64() % n as u64) as usize
    }

    /// Uniform-ish in `lo..=hi`.
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi - lo + 1)
    }

    /// True with probability `1 / n`.
    pub fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }

    /// `len` pseudo-random bytes.
    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next_u64() as u8).collect()
    }
}

/// FNV-1a over a byte stream, to compare long streams without keeping them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fnv(pub u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    pub fn update(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Reading a buffer out.
// ---------------------------------------------------------------------------------------------

/// The bytes that would be sent next: every pending chunk, concatenated. Does not advance.
pub fn pending(buf: &WriteBuffer) -> Vec<u8> {
    let mut out = Vec::with_capacity(buf.pending_len());
    for chunk in buf.chunks() {
        out.extend_from_slice(chunk);
    }
    out
}

/// The pending chunks one by one (their boundaries are the iovec boundaries).
pub fn chunk_list(buf: &WriteBuffer) -> Vec<Vec<u8>> {
    buf.chunks().map(<[u8]>::to_vec).collect()
}

/// Takes everything pending out of `buf` through `chunks()`, then advances past it.
pub fn drain(buf: &mut WriteBuffer) -> Vec<u8> {
    let out = pending(buf);
    buf.advance(out.len());
    buf.check_invariants();
    assert!(buf.is_empty(), "drained buffer is not empty: {buf:?}");
    out
}

/// Asserts that everything observable about `buf` says exactly `expected` is pending:
/// concatenated chunks, `chunk`, `chunks_vectored`, `len`, `is_empty`, `segments` and the
/// buffer's own invariant check.
#[track_caller]
pub fn assert_pending(buf: &WriteBuffer, expected: &[u8]) {
    buf.check_invariants();
    let chunks = chunk_list(buf);
    let joined: Vec<u8> = chunks.concat();
    assert!(
        joined == expected,
        "pending bytes differ from the model:\n got      {joined:?}\n expected {expected:?}"
    );
    assert_eq!(buf.pending_len(), expected.len(), "len()");
    assert_eq!(buf.is_empty(), expected.is_empty(), "is_empty()");
    assert_eq!(buf.segments(), chunks.len(), "segments() vs chunks()");
    assert!(
        chunks.iter().all(|c| !c.is_empty()),
        "an empty chunk is pending"
    );
    assert_eq!(
        buf.chunk(),
        chunks.first().map_or(&[][..], Vec::as_slice),
        "chunk()"
    );
    let mut dst = [IoSlice::new(&[]); 8];
    let n = buf.chunks_vectored(&mut dst);
    assert_eq!(n, chunks.len().min(dst.len()), "chunks_vectored() count");
    for (slice, chunk) in dst[..n].iter().zip(&chunks) {
        assert_eq!(&**slice, chunk.as_slice(), "chunks_vectored() slice");
    }
}

// ---------------------------------------------------------------------------------------------
// Real sockets.
// ---------------------------------------------------------------------------------------------

/// A connected loopback TCP pair `(sender, receiver)` whose kernel buffers are asked to be
/// `sndbuf` and `rcvbuf` bytes (Linux doubles them and enforces a minimum of a few KiB), so
/// that nearly every send is partial. Both are blocking, the sender has `TCP_NODELAY`.
pub fn tcp_pair(sndbuf: usize, rcvbuf: usize) -> (std::net::TcpStream, std::net::TcpStream) {
    use socket2::{Domain, Socket, Type};
    let listener = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    // Accepted sockets inherit the small receive buffer (set before the handshake, so the
    // advertised window is small from the start).
    listener.set_recv_buffer_size(rcvbuf).unwrap();
    let any: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
    listener.bind(&any.into()).unwrap();
    listener.listen(1).unwrap();
    let addr = listener.local_addr().unwrap();

    let sender = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    sender.set_send_buffer_size(sndbuf).unwrap();
    sender.connect(&addr).unwrap();
    let (receiver, _) = listener.accept().unwrap();
    drop(listener);
    let sender: std::net::TcpStream = sender.into();
    sender.set_nodelay(true).unwrap();
    (sender, receiver.into())
}
