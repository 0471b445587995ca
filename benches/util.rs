//! What every group shares: the message, the values, the fake partial writer, the counting
//! allocator and a page-aligned receive buffer.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::io::IoSlice;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use criterion::Bencher;
use sendbuf::Encode;

/// Messages per batch: the responses one read of pipelined requests produces.
pub const BATCH: usize = 64;

/// Iovecs one fake write looks at (and the crate's gather limit): a pipelined batch.
pub const MAX_IOVECS: usize = 64;

/// Value sizes of the partial-write scenario.
pub const VALUE_SIZES: [usize; 5] = [0, 100, 4 << 10, 64 << 10, 1 << 20];

/// A memcached binary-protocol response header (24 bytes on the wire).
#[derive(Debug, Clone, Copy)]
pub struct Header {
    pub opcode: u8,
    pub key_len: u16,
    pub extras_len: u8,
    pub status: u16,
    pub body_len: u32,
    pub opaque: u32,
    pub cas: u64,
}

impl Header {
    /// The response header for a value of `len` bytes to request number `opaque`.
    #[inline]
    pub fn response(opaque: u32, len: usize) -> Header {
        Header {
            opcode: 0x00, // GET
            key_len: 0,
            extras_len: 0,
            status: 0,
            body_len: len as u32,
            opaque,
            cas: 0,
        }
    }

    /// The wire form, for the contenders that keep headers outside a `WriteBuffer`.
    #[inline]
    pub fn to_bytes(self) -> [u8; 24] {
        let mut out = [0u8; 24];
        self.encode(&mut out);
        out
    }
}

impl Encode for Header {
    const SIZE: usize = 24;

    #[inline]
    fn encode(&self, out: &mut [u8]) {
        let out: &mut [u8; 24] = out.try_into().expect("Encode::SIZE bytes");
        out[0] = 0x81;
        out[1] = self.opcode;
        out[2..4].copy_from_slice(&self.key_len.to_be_bytes());
        out[4] = self.extras_len;
        out[5] = 0; // data type
        out[6..8].copy_from_slice(&self.status.to_be_bytes());
        out[8..12].copy_from_slice(&self.body_len.to_be_bytes());
        out[12..16].copy_from_slice(&self.opaque.to_be_bytes());
        out[16..24].copy_from_slice(&self.cas.to_be_bytes());
    }
}

/// `n` distinct values of `size` bytes, as a cache holds them (`Arc<[u8]>`, one allocation each).
pub fn values(size: usize, n: usize) -> Vec<Arc<[u8]>> {
    (0..n)
        .map(|i| {
            let v: Vec<u8> = (0..size).map(|j| (i + j) as u8).collect();
            Arc::from(v)
        })
        .collect()
}

/// A small, fast, deterministic generator (xorshift64*, seeded through splitmix64).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// The generator for batch number `batch`: every contender sees the same split points for
    /// the same batch, and the split points differ from one batch to the next.
    pub fn for_batch(batch: u64) -> Rng {
        let mut z = batch.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Rng((z ^ (z >> 31)) | 1)
    }

    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// A socket that never blocks and never copies: each write accepts a random prefix of what it
/// is offered (at most the first [`MAX_IOVECS`] iovecs) and only counts bytes.
///
/// The byte count a write *wants* comes from the batch's [`Rng`], uniform in `1..=2 * mean`,
/// independent of how a contender lays out its iovecs; a write accepts that many bytes or all
/// it was offered, whichever is less. So all contenders see the same split points, except where
/// one offers fewer bytes in its 64 iovecs than another.
#[derive(Debug)]
pub struct PartialWriter {
    rng: Rng,
    span: u64,
    /// Writes so far (the syscalls a real socket would have cost).
    pub writes: u64,
    batch: u64,
}

impl PartialWriter {
    /// A writer whose writes want `mean` bytes on average.
    pub fn new(mean: usize) -> PartialWriter {
        PartialWriter {
            rng: Rng::for_batch(0),
            span: 2 * mean.max(1) as u64,
            writes: 0,
            batch: 0,
        }
    }

    /// A writer that accepts everything it is offered (within [`MAX_IOVECS`]).
    pub fn full() -> PartialWriter {
        PartialWriter::new(usize::MAX / 4)
    }

    /// The writer for a scenario with `batch_bytes` per batch: about eight partial writes per
    /// batch at every value size.
    pub fn for_batch_bytes(batch_bytes: usize) -> PartialWriter {
        PartialWriter::new(batch_bytes / 8)
    }

    /// Starts the next batch: reseeds so batch `k` splits the same way for every contender.
    #[inline]
    pub fn next_batch(&mut self) {
        self.batch += 1;
        self.rng = Rng::for_batch(self.batch);
    }

    /// One write of `iov`: returns how many bytes the "socket" accepted (at least 1 when `iov`
    /// holds any byte). Reads the slices' lengths, never their bytes.
    #[inline(never)]
    pub fn write(&mut self, iov: &[IoSlice<'_>]) -> usize {
        let iov = black_box(iov);
        self.writes += 1;
        let want = 1 + (self.rng.next_u64() % self.span) as usize;
        let mut offered = 0;
        for s in iov.iter().take(MAX_IOVECS) {
            offered += s.len();
            if offered >= want {
                return want;
            }
        }
        offered
    }
}

/// Heap allocations (alloc, alloc_zeroed and realloc calls) since the start of the process.
pub static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

/// The system allocator, counting calls into [`ALLOCATIONS`] (one relaxed add per call; free is
/// not counted).
#[derive(Debug)]
pub struct CountingAlloc;

// SAFETY: every method forwards to `System` with the caller's arguments unchanged, so `System`'s
// guarantees are ours; the counter is a side effect that touches no allocation.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded; the caller upholds `GlobalAlloc::alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded; the caller upholds `GlobalAlloc::alloc_zeroed`'s contract.
        unsafe { System.alloc_zeroed(layout) }
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

/// Heap allocations so far.
pub fn allocations() -> u64 {
    ALLOCATIONS.load(Ordering::Relaxed)
}

/// A receive buffer that starts on a page boundary, so the kernel's copy into it never hits the
/// 4K-aliasing trap: on this machine's CPU a `rep movsb` copy (glibc's `memcpy` from about
/// 2 KiB) runs about 27x slower when `(dst − src) mod 4096` is in `1..=31`.
#[derive(Debug)]
pub struct PageAligned {
    buf: Vec<u8>,
    offset: usize,
    len: usize,
}

impl PageAligned {
    pub fn new(len: usize) -> PageAligned {
        // Over-allocate by a page and start at the first page boundary: no unsafe needed.
        let buf = vec![0u8; len + 4096];
        let offset = buf.as_ptr().align_offset(4096);
        PageAligned { buf, offset, len }
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.buf[self.offset..self.offset + self.len]
    }
}

/// Whether a `rep movsb` copy from `src` to `dst` lands in the 4K-aliasing trap:
/// `(dst − src) mod 4096` in `1..=31`.
pub fn in_copy_trap(dst: *const u8, src: *const u8) -> bool {
    let d = (dst as usize).wrapping_sub(src as usize) % 4096;
    (1..32).contains(&d)
}

/// CPU time (user + system) of the calling thread (`CLOCK_THREAD_CPUTIME_ID`).
pub fn thread_cpu() -> Duration {
    // SAFETY: `timespec` is plain integers; all-zero is a valid value.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: `ts` is a valid, writable `timespec` for the duration of the call.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// `b.iter(f)`, timed in the benchmark thread's CPU time instead of wall time.
///
/// On a shared 2-vCPU machine wall time also counts the time the thread waits while other
/// processes run; CPU time counts only its own work (for a `sendmsg` on loopback that includes
/// the receiver's TCP input, which the kernel runs in the sender's context).
pub fn iter_cpu(b: &mut Bencher<'_>, mut f: impl FnMut()) {
    b.iter_custom(|iters| {
        let start = thread_cpu();
        for _ in 0..iters {
            f();
        }
        thread_cpu() - start
    });
}
