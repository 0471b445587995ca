//! [`WriteBuffer`]: the outgoing queue of one connection.

use core::fmt;
use std::io::IoSlice;

use crate::error::{panic_advance, panic_limit, AdvanceError, HardLimitError, StealError};
use crate::format::FormatGuard;
use crate::pinned::Owner;
use crate::pool::Pool;
use crate::scratch::{Cursor, Scratch, DEFAULT_BLOCK_SIZE};
use crate::segment::{Release, SegmentQueue};
use crate::steal::Stealable;
use crate::watermark::Backpressure;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Pinned values shorter than this are copied into scratch by default.
///
/// Measured (`BENCHMARKS.md`, "The flatten threshold"): in the buffer alone pinning becomes
/// cheaper than copying only between 1 and 2 KiB, and with a real loopback `sendmsg` of 16
/// responses copying stayed cheaper at every size up to 2 KiB (pinning a 1 KiB value cost 76 ns
/// more per message, every round above zero). Copies from about 2.1 KiB up use `rep movsb` and
/// can hit the 4K-aliasing trap, so 1 KiB keeps a margin below that, and bounds the scratch a
/// burst of 64 small responses takes to 64 KiB.
pub const DEFAULT_FLATTEN_THRESHOLD: usize = 1024;

/// The outgoing queue of one connection: scratch bytes it owns and pinned values it references,
/// in commit order.
///
/// * Format headers with [`format`](Self::format) (or [`put_slice`](Self::put_slice)); adjacent
///   commits share one segment, so a run of headers is one iovec.
/// * [`pin`](Self::pin) large values zero-copy; each is dropped exactly once, when its last byte
///   is advanced past, or on [`clear`](Self::clear) or drop of the buffer.
/// * Gather with [`IoVecBuilder`](crate::IoVecBuilder), or send with
///   [`send_to`](Self::send_to) / [`write_to`](Self::write_to); then [`advance`](Self::advance)
///   by what was written, at any split point.
/// * [`is_empty`](Self::is_empty) is checked: true only when every count agrees.
///
/// Scratch memory is allocated on first use and reused once drained: a connection in steady
/// state does not allocate per message.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use sendbuf::WriteBuffer;
///
/// let value: Arc<[u8]> = vec![b'v'; 4096].into();
/// let mut buf = WriteBuffer::new();
///
/// let mut f = buf.format();
/// f.put_slice(b"VALUE key 0 4096\r\n");
/// f.commit();
/// buf.pin(value.clone());          // zero-copy
/// buf.put_slice(b"\r\nEND\r\n");
/// assert_eq!(buf.pending_len(), 18 + 4096 + 7);
///
/// // Suppose the socket took 100 bytes: 18 of header, 82 of the value.
/// buf.advance(100);
/// assert_eq!(buf.chunk().len(), 4096 - 82);
/// assert_eq!(Arc::strong_count(&value), 2); // still pinned
///
/// buf.advance(buf.pending_len());
/// assert!(buf.is_empty());
/// assert_eq!(Arc::strong_count(&value), 1); // released exactly once
/// ```
pub struct WriteBuffer {
    queue: SegmentQueue,
    scratch: Scratch,
    flatten_below: usize,
    guards_opened: u64,
    backpressure: Backpressure,
    /// Bytes the buffer answers for that live elsewhere: a TLS session's records, encrypted
    /// from this buffer's plaintext and not yet sent.
    #[cfg(feature = "rustls")]
    outside: Outside,
}

/// Totals of the bytes a [`WriteBuffer`] answers for outside its own queue (see
/// [`WriteBuffer::hold_outside`]), kept as totals so the limits' quiet bound stays exact.
#[cfg(feature = "rustls")]
#[derive(Debug, Default, Clone, Copy)]
struct Outside {
    added: u64,
    removed: u64,
}

impl Default for WriteBuffer {
    fn default() -> Self {
        Self::new()
    }
}

impl WriteBuffer {
    /// An empty buffer. It allocates nothing until the first format.
    ///
    /// # Examples
    ///
    /// ```
    /// let buf = sendbuf::WriteBuffer::new();
    /// assert!(buf.is_empty());
    /// assert_eq!(buf.capacity(), 0);
    /// ```
    pub fn new() -> Self {
        Self::with_block_size(DEFAULT_BLOCK_SIZE)
    }

    /// An empty buffer whose scratch memory comes in blocks of `block_size` bytes (at least 1).
    ///
    /// Like [`new`](Self::new), it allocates nothing now: the first block is taken on the first
    /// format (from the [pool](Self::with_pool), if the buffer has one). A single format larger
    /// than a block gets a block of its own. The default is 16 KiB.
    ///
    /// # Examples
    ///
    /// ```
    /// let mut buf = sendbuf::WriteBuffer::with_block_size(4096);
    /// assert_eq!(buf.capacity(), 0); // nothing allocated yet
    /// buf.put_slice(b"x");
    /// assert_eq!(buf.capacity(), 4096);
    /// ```
    pub fn with_block_size(block_size: usize) -> Self {
        WriteBuffer {
            queue: SegmentQueue::default(),
            scratch: Scratch::new(block_size),
            flatten_below: DEFAULT_FLATTEN_THRESHOLD,
            guards_opened: 0,
            backpressure: Backpressure::default(),
            #[cfg(feature = "rustls")]
            outside: Outside::default(),
        }
    }

    /// Takes scratch storage from `pool` (and gives it back on [`steal`](Stealable::steal)
    /// and when blocks are trimmed) instead of the allocator.
    ///
    /// # Examples
    ///
    /// ```
    /// use sendbuf::{Stealable, LocalPool, Pool, PoolLimits, WriteBuffer};
    ///
    /// let pool = LocalPool::new(PoolLimits::new());
    /// let mut buf = WriteBuffer::new().with_pool(pool.clone());
    /// buf.put_slice(b"hello");
    /// buf.advance(5);
    /// buf.steal().unwrap(); // idle: the storage goes to the pool
    /// buf.put_slice(b"again"); // and comes back from it
    /// assert_eq!(pool.stats().taken, 1);
    /// ```
    pub fn with_pool(mut self, pool: Arc<dyn Pool>) -> Self {
        self.scratch.set_pool(Some(pool));
        self
    }

    /// Bytes of scratch memory this buffer holds (pinned values are not counted).
    ///
    /// # Examples
    ///
    /// ```
    /// let buf = sendbuf::WriteBuffer::new();
    /// assert_eq!(buf.capacity(), 0);
    /// ```
    pub fn capacity(&self) -> usize {
        self.scratch.capacity()
    }

    /// Size of one scratch block, as given to [`with_block_size`](Self::with_block_size).
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(sendbuf::WriteBuffer::with_block_size(1024).block_size(), 1024);
    /// ```
    pub fn block_size(&self) -> usize {
        self.scratch.block_size()
    }

    /// Pinned values shorter than this many bytes are copied into scratch instead.
    ///
    /// # Examples
    ///
    /// ```
    /// use sendbuf::{WriteBuffer, DEFAULT_FLATTEN_THRESHOLD};
    /// assert_eq!(WriteBuffer::new().flatten_threshold(), DEFAULT_FLATTEN_THRESHOLD);
    /// ```
    pub fn flatten_threshold(&self) -> usize {
        self.flatten_below
    }

    /// Sets the size below which [`pin`](Self::pin) copies a value into scratch; 0 pins every
    /// non-empty value.
    ///
    /// # Examples
    ///
    /// ```
    /// let mut buf = sendbuf::WriteBuffer::new();
    /// buf.set_flatten_threshold(0);
    /// buf.pin(vec![1u8, 2, 3]);
    /// assert_eq!(buf.segments(), 1);
    /// assert_eq!(buf.capacity(), 0); // not copied
    /// ```
    pub fn set_flatten_threshold(&mut self, bytes: usize) {
        self.flatten_below = bytes;
    }

    /// Bytes still to send: committed or pinned, not yet advanced past.
    ///
    /// This is what [`bytes::Buf::remaining`] reports. It is not the opposite of
    /// [`is_empty`](Self::is_empty), which also waits for bytes the kernel still reads after a
    /// zero-copy send ([`held_len`](Self::held_len)): a send loop runs while
    /// [`has_pending`](Self::has_pending), a steal waits for `is_empty`.
    ///
    /// [`bytes::Buf::remaining`]: https://docs.rs/bytes/1/bytes/buf/trait.Buf.html#tymethod.remaining
    ///
    /// # Examples
    ///
    /// ```
    /// let mut buf = sendbuf::WriteBuffer::new();
    /// buf.put_slice(b"abc");
    /// assert_eq!(buf.pending_len(), 3);
    /// buf.advance(2);
    /// assert_eq!(buf.pending_len(), 1);
    /// ```
    #[inline]
    pub fn pending_len(&self) -> usize {
        self.queue.len()
    }

    /// True while bytes are still to send: the condition of a send loop.
    ///
    /// The same as `pending_len() != 0`. Not the same as `!is_empty()`: after a zero-copy send
    /// nothing may be pending while the kernel still holds bytes, and a loop on `!is_empty()`
    /// would spin until the kernel's completion arrives.
    ///
    /// # Examples
    ///
    /// ```
    /// use sendbuf::WriteBuffer;
    ///
    /// let mut buf = WriteBuffer::new();
    /// buf.put_slice(b"VALUE k 0 5\r\nhello\r\nEND\r\n");
    ///
    /// let mut wire = Vec::new();
    /// while buf.has_pending() {
    ///     buf.write_to(&mut wire)?;
    /// }
    /// assert_eq!(wire.len(), 25);
    /// assert!(buf.is_empty()); // copying sends hold nothing back
    /// # Ok::<(), std::io::Error>(())
    /// ```
    #[inline]
    pub fn has_pending(&self) -> bool {
        self.queue.len() != 0
    }

    /// Bytes already sent whose memory the kernel may still read (zero-copy sends); always 0
    /// with copying sends.
    ///
    /// # Examples
    ///
    /// ```
    /// let mut buf = sendbuf::WriteBuffer::new();
    /// buf.put_slice(b"abc");
    /// buf.advance(3);
    /// assert_eq!(buf.held_len(), 0);
    /// ```
    #[inline]
    pub fn held_len(&self) -> usize {
        self.queue.held_len()
    }

    /// Bytes the buffer answers for: pending plus held by the kernel (plus, with a TLS session,
    /// its records not yet sent).
    #[inline]
    pub(crate) fn held_bytes(&self) -> usize {
        let held = self.queue.len() + self.queue.held_len();
        #[cfg(feature = "rustls")]
        let held = held + (self.outside.added - self.outside.removed) as usize;
        held
    }

    /// Bytes ever queued: the unit of the limits' quiet bound (see `Backpressure::grow`).
    #[inline(always)]
    fn bytes_in(&self) -> u64 {
        let bytes_in = self.queue.bytes_in();
        #[cfg(feature = "rustls")]
        let bytes_in = bytes_in + self.outside.added;
        bytes_in
    }

    /// Bytes that no longer count: sent and released (and records sent).
    #[inline]
    fn bytes_gone(&self) -> u64 {
        let gone = self.queue.totals().2;
        #[cfg(feature = "rustls")]
        let gone = gone + self.outside.removed;
        gone
    }

    /// Counts `n` bytes that live elsewhere (a TLS session's records made from this buffer's
    /// plaintext) towards the water marks and the hard limit, until
    /// [`release_outside`](Self::release_outside). Never refused: they replace plaintext the
    /// buffer had already admitted.
    #[cfg(feature = "rustls")]
    pub(crate) fn hold_outside(&mut self, n: usize) {
        if n == 0 {
            return;
        }
        self.outside.added += n as u64;
        let held = self.held_bytes();
        self.backpressure.grew(n, held);
    }

    /// Moves past `n` pending bytes that became `replacement` bytes held elsewhere (a TLS
    /// session's records encrypted from them), as one change: the marks see only the net
    /// difference, never the plaintext and its records twice or neither.
    #[cfg(feature = "rustls")]
    pub(crate) fn advance_into_outside(
        &mut self,
        n: usize,
        replacement: usize,
    ) -> Result<(), AdvanceError> {
        let available = self.queue.len();
        if n > available {
            return Err(AdvanceError {
                requested: n,
                available,
            });
        }
        let before = self.held_bytes();
        self.queue.advance(n, &mut self.scratch, Release::OnSend);
        self.outside.added += replacement as u64;
        let after = self.held_bytes();
        if after > before {
            self.backpressure.grew(after - before, after);
        } else {
            let gone = self.bytes_gone();
            self.backpressure.drained(before - after, after, gone);
        }
        Ok(())
    }

    /// `n` bytes counted by [`hold_outside`](Self::hold_outside) left (were sent).
    #[cfg(feature = "rustls")]
    pub(crate) fn release_outside(&mut self, n: usize) {
        debug_assert!(n as u64 <= self.outside.added - self.outside.removed);
        self.outside.removed += n as u64;
        let (held, gone) = (self.held_bytes(), self.bytes_gone());
        self.backpressure.drained(n, held, gone);
    }

    /// Number of pending segments: the iovecs a full gather needs.
    ///
    /// # Examples
    ///
    /// ```
    /// let mut buf = sendbuf::WriteBuffer::new();
    /// buf.put_slice(b"header ");
    /// buf.put_slice(b"merged");
    /// assert_eq!(buf.segments(), 1);
    /// buf.pin(vec![0u8; 4096]);
    /// buf.put_slice(b"\r\n");
    /// assert_eq!(buf.segments(), 3);
    /// ```
    pub fn segments(&self) -> usize {
        self.queue.segments()
    }

    /// True only when nothing is pending, nothing is held for the kernel, and every count, the
    /// segment queue and the scratch cursors agree.
    ///
    /// A disagreement is a bug in this crate: debug builds panic with the buffer's state, release
    /// builds answer `false` (a buffer is never *claimed* empty unless that is proven), so a
    /// server never hands away memory that still holds unsent bytes.
    ///
    /// # Examples
    ///
    /// ```
    /// let mut buf = sendbuf::WriteBuffer::new();
    /// assert!(buf.is_empty());
    /// buf.put_slice(b"abc");
    /// assert!(!buf.is_empty());
    /// buf.advance(3);
    /// assert!(buf.is_empty());
    /// ```
    #[inline]
    pub fn is_empty(&self) -> bool {
        match self.emptiness() {
            Ok(empty) => empty,
            Err(why) => self.inconsistent(&why),
        }
    }

    #[inline]
    fn emptiness(&self) -> Result<bool, String> {
        let empty = self.queue.quick_empty()?;
        if !empty && !cfg!(debug_assertions) {
            // Answering "not empty" needs no proof: a disagreement found below would answer
            // "not empty" too in a release build, so there the cross-check runs only before
            // claiming emptiness. Debug builds run it always, to report a disagreement, and
            // `check_invariants` always does.
            return Ok(false);
        }
        self.cross_check(empty)
    }

    /// The scratch cursors against the queue's counts, given the queue's answer `empty`.
    #[inline]
    fn cross_check(&self, empty: bool) -> Result<bool, String> {
        if self.scratch.unsent() > self.queue.len() || self.scratch.held() > self.queue.held_len() {
            return Err(format!(
                "scratch has {} unsent / {} held bytes but the queue has {} / {}",
                self.scratch.unsent(),
                self.scratch.held(),
                self.queue.len(),
                self.queue.held_len()
            ));
        }
        if empty && !self.scratch.is_idle() {
            return Err("queue is empty but scratch cursors are not at rest".into());
        }
        Ok(empty)
    }

    #[cold]
    #[inline(never)]
    fn inconsistent(&self, why: &str) -> bool {
        if cfg!(debug_assertions) {
            panic!("sendbuf: WriteBuffer accounting disagrees: {why}\nstate: {self:#?}");
        }
        false
    }

    /// Checks every invariant (O(segments + blocks)): the byte counts against the segment queue
    /// and the scratch cursors. Tests and fuzzers call it after each step.
    ///
    /// # Panics
    ///
    /// If any invariant is broken, with the buffer's full state.
    ///
    /// # Examples
    ///
    /// ```
    /// let mut buf = sendbuf::WriteBuffer::new();
    /// buf.put_slice(b"abc");
    /// buf.advance(1);
    /// buf.check_invariants();
    /// ```
    pub fn check_invariants(&self) {
        let result = self
            .queue
            .audit()
            .and_then(|()| self.scratch.audit())
            .and_then(|()| self.queue.quick_empty())
            .and_then(|empty| self.cross_check(empty).map(|_| ()));
        if let Err(why) = result {
            panic!("sendbuf: WriteBuffer invariant broken: {why}\nstate: {self:#?}");
        }
    }

    /// Opens a [`FormatGuard`] to format bytes into scratch; they are queued on
    /// [`commit`](FormatGuard::commit) and rolled back if the guard is dropped.
    ///
    /// # Examples
    ///
    /// ```
    /// let mut buf = sendbuf::WriteBuffer::new();
    /// let mut f = buf.format();
    /// f.put_u8(0x81);
    /// f.put_u16(0x0102);
    /// f.put_u32_le(7);
    /// f.commit();
    /// assert_eq!(buf.chunk(), [0x81, 1, 2, 7, 0, 0, 0]);
    /// ```
    #[inline]
    #[must_use = "a FormatGuard rolls back unless committed"]
    pub fn format(&mut self) -> FormatGuard<'_> {
        FormatGuard::new(self)
    }

    /// Copies `src` into scratch and queues it: `format`, `put_slice` and `commit` in one call.
    ///
    /// # Examples
    ///
    /// ```
    /// let mut buf = sendbuf::WriteBuffer::new();
    /// buf.put_slice(b"END\r\n");
    /// assert_eq!(buf.chunk(), b"END\r\n");
    /// ```
    ///
    /// # Panics
    ///
    /// If a [hard limit](Self::set_hard_limit) is set and `src` does not fit under it; use
    /// [`try_put_slice`](Self::try_put_slice) then.
    #[inline]
    #[track_caller]
    pub fn put_slice(&mut self, src: &[u8]) {
        if let Err(err) = self.try_put_slice(src) {
            panic_limit(&err);
        }
    }

    /// Like [`put_slice`](Self::put_slice), but fails instead of passing the hard limit.
    ///
    /// # Errors
    ///
    /// [`HardLimitError`] if `src` does not fit under the [hard limit](Self::set_hard_limit); the
    /// buffer is unchanged.
    ///
    /// # Examples
    ///
    /// ```
    /// let mut buf = sendbuf::WriteBuffer::new();
    /// buf.set_hard_limit(Some(4));
    /// assert!(buf.try_put_slice(b"abcd").is_ok());
    /// assert!(buf.try_put_slice(b"e").is_err());
    /// ```
    #[inline]
    pub fn try_put_slice(&mut self, src: &[u8]) -> Result<(), HardLimitError> {
        let n = src.len();
        if n == 0 {
            return Ok(());
        }
        // Straight into the tail, without a guard: this is how every small value that
        // `pin`/`pin_cloned` flattens is copied.
        // Limits first: their rare out-of-line path would otherwise make the compiler check
        // the tail's room twice.
        self.backpressure
            .grow(self.bytes_in(), self.held_bytes(), n)?;
        if !self.scratch.fits_in_tail(n) {
            // Admitted already; the guard's commit admits the same bytes again.
            return self.put_slice_through_guard(src);
        }
        let cur = self.scratch.append(src);
        self.queue.push_scratch(&self.scratch, &cur);
        Ok(())
    }

    /// [`try_put_slice`](Self::try_put_slice) when `src` does not fit in the tail block (or
    /// there is none): a guard moves the bytes to a new block.
    #[inline(never)]
    fn put_slice_through_guard(&mut self, src: &[u8]) -> Result<(), HardLimitError> {
        // The guard's commit checks the hard limit again; on failure it rolls the bytes back.
        let mut f = self.format();
        f.put_slice(src);
        f.try_commit()
    }

    /// Queues `value` by reference, without copying it, and keeps it alive until its last byte
    /// has been advanced past; then drops it, exactly once. Values shorter than
    /// [`flatten_threshold`](Self::flatten_threshold) are copied into scratch and dropped at once.
    ///
    /// The buffer owns `value` until then, so it must be `'static`: pass an owner (`Arc<[u8]>`,
    /// `Vec<u8>`, `Bytes`...), not a borrow. To queue a value you only borrow, such as an item
    /// still in your cache, call [`pin_cloned`](Self::pin_cloned)`(&item)`: it copies a small
    /// value straight from the borrow and clones only a value it pins. (Passing `&item` here
    /// fails to compile with "borrowed data escapes outside of method", E0521.)
    ///
    /// # Which owners cost an allocation
    ///
    /// `Vec<u8>`, `String`, `Box<[u8]>`, `Arc<[u8]>` and `&'static [u8]` are stored in the queue
    /// as they are, with no allocation. So are `bytes::Bytes` and `BytesMut` (frozen) **with the
    /// feature `bytes`**; without it they are "any other owner". Any other
    /// `AsRef<[u8]> + Send + 'static` value is boxed: one small allocation per pinned value,
    /// freed when it is released. Values below the flatten threshold are copied, whatever
    /// their kind, and never boxed.
    ///
    /// `value.as_ref()` must return the same bytes every time it is called.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    ///
    /// let item: Arc<[u8]> = vec![7u8; 100_000].into();
    /// let mut buf = sendbuf::WriteBuffer::new();
    /// buf.pin(item.clone());
    /// assert_eq!(buf.chunk().as_ptr(), item.as_ptr()); // the same memory
    /// buf.clear();
    /// assert_eq!(Arc::strong_count(&item), 1);
    /// ```
    ///
    /// # Panics
    ///
    /// If a [hard limit](Self::set_hard_limit) is set and the value does not fit under it; use
    /// [`try_pin`](Self::try_pin) then.
    #[inline]
    #[track_caller]
    pub fn pin<V>(&mut self, value: V)
    where
        V: AsRef<[u8]> + Send + 'static,
    {
        if let Err(err) = self.try_pin(value) {
            panic_limit(&err);
        }
    }

    /// Like [`pin`](Self::pin), but fails instead of passing the hard limit.
    ///
    /// # Errors
    ///
    /// [`HardLimitError`] if the value does not fit under the [hard limit](Self::set_hard_limit);
    /// the value is dropped and the buffer is unchanged.
    ///
    /// # Examples
    ///
    /// ```
    /// let mut buf = sendbuf::WriteBuffer::new();
    /// buf.set_hard_limit(Some(64 * 1024));
    /// assert!(buf.try_pin(vec![0u8; 100_000]).is_err());
    /// assert!(buf.is_empty());
    /// ```
    #[inline]
    pub fn try_pin<V>(&mut self, value: V) -> Result<(), HardLimitError>
    where
        V: AsRef<[u8]> + Send + 'static,
    {
        let len = value.as_ref().len();
        if len < self.flatten_below {
            return self.try_put_slice(value.as_ref());
        }
        if len == 0 {
            return Ok(());
        }
        self.try_push_pinned(len, || value)
    }

    /// Queues `value` like [`pin`](Self::pin), but from a borrow: a value shorter than the
    /// [`flatten_threshold`](Self::flatten_threshold) is copied into scratch straight from
    /// `value`, and only a value that is pinned is cloned.
    ///
    /// This is the call for a cache that holds its values as `Arc<[u8]>` or `bytes::Bytes`, and
    /// for any value you hold only by reference: [`pin`](Self::pin) takes an owner, so
    /// `pin(&value)` does not compile, and `pin(value.clone())` would pay a reference count
    /// (two atomic operations, more than the rest of queueing a small response) for a value
    /// that is then copied anyway.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    ///
    /// let small: Arc<[u8]> = b"tiny"[..].into();
    /// let large: Arc<[u8]> = vec![0u8; 64 * 1024].into();
    /// let mut buf = sendbuf::WriteBuffer::new();
    /// buf.pin_cloned(&small); // copied, never cloned
    /// buf.pin_cloned(&large); // pinned: one clone, no copy
    /// assert_eq!(Arc::strong_count(&small), 1);
    /// assert_eq!(Arc::strong_count(&large), 2);
    /// assert_eq!(buf.pending_len(), 4 + 64 * 1024);
    /// buf.clear();
    /// assert_eq!(Arc::strong_count(&large), 1);
    /// ```
    ///
    /// # Panics
    ///
    /// If a [hard limit](Self::set_hard_limit) is set and the value does not fit under it; use
    /// [`try_pin_cloned`](Self::try_pin_cloned) then.
    #[inline]
    #[track_caller]
    pub fn pin_cloned<V>(&mut self, value: &V)
    where
        V: AsRef<[u8]> + Clone + Send + 'static,
    {
        if let Err(err) = self.try_pin_cloned(value) {
            panic_limit(&err);
        }
    }

    /// Like [`pin_cloned`](Self::pin_cloned), but fails instead of passing the hard limit.
    ///
    /// # Errors
    ///
    /// [`HardLimitError`] if the value does not fit under the [hard limit](Self::set_hard_limit);
    /// nothing is cloned or queued then.
    ///
    /// # Examples
    ///
    /// ```
    /// let value: std::sync::Arc<[u8]> = vec![0u8; 100_000].into();
    /// let mut buf = sendbuf::WriteBuffer::new();
    /// buf.set_hard_limit(Some(64 * 1024));
    /// assert!(buf.try_pin_cloned(&value).is_err());
    /// assert_eq!(std::sync::Arc::strong_count(&value), 1);
    /// ```
    #[inline]
    pub fn try_pin_cloned<V>(&mut self, value: &V) -> Result<(), HardLimitError>
    where
        V: AsRef<[u8]> + Clone + Send + 'static,
    {
        let len = value.as_ref().len();
        if len == 0 {
            return Ok(());
        }
        if len < self.flatten_below {
            return self.try_put_slice(value.as_ref());
        }
        self.try_push_pinned(len, || value.clone())
    }

    /// Queues by reference the value of `len > 0` bytes that `value` makes, if it fits under
    /// the hard limit (otherwise `value` is never called).
    #[inline]
    fn try_push_pinned<V>(
        &mut self,
        len: usize,
        value: impl FnOnce() -> V,
    ) -> Result<(), HardLimitError>
    where
        V: AsRef<[u8]> + Send + 'static,
    {
        self.backpressure
            .grow(self.bytes_in(), self.held_bytes(), len)?;
        let owner = Owner::new(value());
        debug_assert_eq!(owner.bytes().len(), len, "AsRef<[u8]> changed length");
        self.queue.push_pinned(owner, len);
        Ok(())
    }

    /// The first pending contiguous run of bytes (empty if nothing is pending), as in
    /// `bytes::Buf::chunk`.
    ///
    /// # Examples
    ///
    /// ```
    /// let mut buf = sendbuf::WriteBuffer::new();
    /// buf.put_slice(b"abc");
    /// buf.advance(1);
    /// assert_eq!(buf.chunk(), b"bc");
    /// ```
    #[inline]
    pub fn chunk(&self) -> &[u8] {
        match self.queue.io_slices().first() {
            Some(iov) => iov,
            None => &[],
        }
    }

    /// Every pending run of bytes, in order (one per segment).
    ///
    /// # Examples
    ///
    /// ```
    /// let mut buf = sendbuf::WriteBuffer::new();
    /// buf.put_slice(b"a");
    /// buf.pin(vec![b'b'; 1024]);
    /// let all: Vec<u8> = buf.chunks().flatten().copied().collect();
    /// assert_eq!(all.len(), 1025);
    /// ```
    #[inline]
    pub fn chunks(&self) -> impl Iterator<Item = &[u8]> + '_ {
        self.queue.io_slices().iter().map(|iov| &**iov)
    }

    /// The pending bytes as `IoSlice`s, front first, ready for `writev`/`sendmsg`: the buffer
    /// keeps its segments in this form, so this costs nothing. Cap the length yourself at
    /// `IOV_MAX`, or use [`IoVecBuilder`](crate::IoVecBuilder) for limits.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::io::Write;
    ///
    /// let mut buf = sendbuf::WriteBuffer::new();
    /// buf.put_slice(b"header");
    /// buf.pin(vec![b'v'; 1024]);
    /// let mut out = Vec::new();
    /// let n = out.write_vectored(buf.io_slices()).unwrap();
    /// buf.advance(n);
    /// ```
    #[inline]
    pub fn io_slices(&self) -> &[IoSlice<'_>] {
        self.queue.io_slices()
    }

    /// Fills `dst` with pending runs of bytes from the front and returns how many it filled, as
    /// in `bytes::Buf::chunks_vectored`.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::io::IoSlice;
    ///
    /// let mut buf = sendbuf::WriteBuffer::new();
    /// buf.put_slice(b"a");
    /// buf.pin(vec![b'b'; 1024]);
    /// let mut dst = [IoSlice::new(&[]); 4];
    /// assert_eq!(buf.chunks_vectored(&mut dst), 2);
    /// ```
    pub fn chunks_vectored<'a>(&'a self, dst: &mut [IoSlice<'a>]) -> usize {
        let mut n = 0;
        for (slot, chunk) in dst.iter_mut().zip(self.chunks()) {
            *slot = IoSlice::new(chunk);
            n += 1;
        }
        n
    }

    /// Moves past exactly `n` pending bytes, across any number of segments; releases each pinned
    /// value whose last byte is passed and makes fully sent scratch reusable.
    ///
    /// # Panics
    ///
    /// If `n > self.pending_len()`, naming both numbers. [`try_advance`](Self::try_advance) returns an
    /// error instead.
    ///
    /// # Examples
    ///
    /// ```
    /// let mut buf = sendbuf::WriteBuffer::new();
    /// buf.put_slice(b"head");
    /// buf.pin(vec![0u8; 1000]);
    /// buf.advance(10); // inside the pinned value
    /// assert_eq!(buf.pending_len(), 994);
    /// ```
    ///
    /// ```should_panic
    /// let mut buf = sendbuf::WriteBuffer::new();
    /// buf.put_slice(b"abc");
    /// buf.advance(4); // panics: cannot advance past 4 bytes: only 3 bytes are pending
    /// ```
    #[inline]
    #[track_caller]
    pub fn advance(&mut self, n: usize) {
        if let Err(err) = self.try_advance(n) {
            panic_advance(&err);
        }
    }

    /// Like [`advance`](Self::advance), but returns an error and leaves the buffer unchanged if
    /// `n` exceeds what is pending.
    ///
    /// # Errors
    ///
    /// [`AdvanceError`] with the requested and available byte counts.
    ///
    /// # Examples
    ///
    /// ```
    /// let mut buf = sendbuf::WriteBuffer::new();
    /// buf.put_slice(b"abc");
    /// assert!(buf.try_advance(4).is_err());
    /// assert_eq!(buf.try_advance(3), Ok(()));
    /// ```
    #[inline]
    pub fn try_advance(&mut self, n: usize) -> Result<(), AdvanceError> {
        self.advance_with(n, Release::OnSend)
    }

    #[inline]
    pub(crate) fn advance_with(&mut self, n: usize, mode: Release) -> Result<(), AdvanceError> {
        let available = self.queue.len();
        if n > available {
            return Err(AdvanceError {
                requested: n,
                available,
            });
        }
        // Not backed up, nothing can be lowered, and the limits' quiet bound may go stale on
        // the low side (the next growth past it takes the exact path and refreshes it).
        let watch = self.backpressure.watches_drain();
        let before = if watch { self.held_bytes() } else { 0 };
        self.queue.advance(n, &mut self.scratch, mode);
        if watch {
            let after = self.held_bytes();
            let gone = self.bytes_gone();
            self.backpressure.drained(before - after, after, gone);
        }
        Ok(())
    }

    /// Bytes ever advanced past since the buffer was created: the stream offset of the next
    /// byte to send, the unit [`release_through`](Self::release_through) counts in.
    #[inline]
    pub(crate) fn sent_total(&self) -> u64 {
        self.queue.totals().1
    }

    /// The kernel no longer reads stream bytes before `offset` (counted from the buffer's
    /// creation): releases held segments that end there or earlier. Returns bytes released.
    pub(crate) fn release_through(&mut self, offset: u64) -> usize {
        let released = self.queue.release_through(offset, &mut self.scratch);
        let (held, gone) = (self.held_bytes(), self.bytes_gone());
        self.backpressure.drained(released, held, gone);
        released
    }

    /// Drops everything pending, as if sent: pinned values are released now and scratch becomes
    /// reusable. Bytes the kernel still holds (zero-copy sends) stay held until their
    /// completion. The buffer keeps its memory.
    ///
    /// # Examples
    ///
    /// ```
    /// let mut buf = sendbuf::WriteBuffer::new();
    /// buf.put_slice(b"abc");
    /// buf.pin(vec![0u8; 4096]);
    /// buf.clear();
    /// assert!(buf.is_empty());
    /// ```
    pub fn clear(&mut self) {
        self.advance_with(self.pending_len(), Release::OnSend)
            .expect("advancing by what is pending");
    }

    #[inline]
    pub(crate) fn scratch(&self) -> &Scratch {
        &self.scratch
    }

    #[inline]
    pub(crate) fn scratch_mut(&mut self) -> &mut Scratch {
        &mut self.scratch
    }

    /// A fresh id for a format guard.
    #[inline]
    pub(crate) fn next_guard_id(&mut self) -> u64 {
        self.guards_opened += 1;
        self.guards_opened
    }

    pub(crate) fn backpressure(&self) -> &Backpressure {
        &self.backpressure
    }

    pub(crate) fn backpressure_mut(&mut self) -> &mut Backpressure {
        &mut self.backpressure
    }

    /// Queues the bytes of a committing guard (not empty) if they fit under the hard limit.
    #[inline(always)]
    pub(crate) fn commit_scratch(&mut self, cur: &Cursor) -> Result<(), HardLimitError> {
        self.backpressure
            .grow(self.bytes_in(), self.held_bytes(), cur.pos - cur.start)?;
        self.scratch.commit(cur);
        self.queue.push_scratch(&self.scratch, cur);
        Ok(())
    }
}

impl Stealable for WriteBuffer {
    /// Hands the scratch storage to the buffer's pool (or frees it) and frees the segment
    /// queue's arrays, if [`is_empty`](WriteBuffer::is_empty): nothing pending, nothing held by
    /// the kernel, every count agreeing. The next format takes storage again.
    ///
    /// # Errors
    ///
    /// [`StealError`] while anything is pending or held; the buffer is unchanged.
    ///
    /// # Examples
    ///
    /// ```
    /// use sendbuf::{Stealable, WriteBuffer};
    ///
    /// let mut buf = WriteBuffer::with_block_size(4096);
    /// buf.put_slice(b"response");
    /// assert_eq!(buf.steal().unwrap_err().pending, 8);
    /// buf.advance(8);
    /// assert!(buf.steal().unwrap() >= 4096);
    /// assert_eq!(buf.storage_bytes(), 0);
    /// ```
    ///
    /// A buffer cannot be stolen while a format guard is open on it:
    ///
    /// ```compile_fail
    /// use sendbuf::{Stealable, WriteBuffer};
    ///
    /// let mut buf = WriteBuffer::new();
    /// let mut f = buf.format();
    /// f.put_u8(1);
    /// buf.steal().unwrap(); // error: `buf` is borrowed by the guard
    /// f.commit();
    /// ```
    fn steal(&mut self) -> Result<usize, StealError> {
        let accepted = self.is_empty();
        if let Some(pool) = self.scratch.pool() {
            pool.record_steal(accepted);
        }
        if !accepted {
            return Err(StealError {
                pending: self.queue.len(),
                held: self.queue.held_len(),
            });
        }
        let queue_memory = self.queue.memory();
        self.queue.release_memory();
        Ok(queue_memory + self.scratch.release_storage())
    }

    /// Bytes of memory held: scratch storage plus the segment queue's arrays (what a steal
    /// reclaims).
    ///
    /// # Examples
    ///
    /// ```
    /// use sendbuf::{Stealable, WriteBuffer};
    ///
    /// let mut buf = WriteBuffer::with_block_size(1024);
    /// assert_eq!(buf.storage_bytes(), 0);
    /// buf.put_slice(b"x");
    /// assert!(buf.storage_bytes() >= 1024);
    /// ```
    fn storage_bytes(&self) -> usize {
        self.scratch.capacity() + self.queue.memory()
    }
}

/// Bytes of held segments leaked by dropping a [`WriteBuffer`] before their completions.
static LEAKED_ON_DROP: AtomicU64 = AtomicU64::new(0);

/// Total bytes of kernel-held segments leaked so far by dropping buffers early (process-wide).
pub(crate) fn leaked_on_drop() -> u64 {
    LEAKED_ON_DROP.load(Ordering::Relaxed)
}

impl Drop for WriteBuffer {
    /// Drops pending segments as [`clear`](WriteBuffer::clear) does. Segments a zero-copy send
    /// still holds ([`held_len`](WriteBuffer::held_len) > 0) are *leaked*, never freed: the
    /// kernel may read them until their completion, which can no longer be delivered to this
    /// buffer. Their pinned values are never dropped and the buffer's scratch storage is never
    /// freed or returned to its pool. Drain completions first
    /// ([`ZeroCopy::drain_blocking`](crate::ZeroCopy::drain_blocking)) to avoid the leak.
    fn drop(&mut self) {
        if self.queue.held_len() == 0 {
            return;
        }
        let leaked = self.queue.leak_held();
        LEAKED_ON_DROP.fetch_add(leaked as u64, Ordering::Relaxed);
        // Held scratch bytes live in blocks this buffer owns: forget the whole scratch area
        // (a few blocks), but let go of the pool it would have returned them to.
        self.scratch.set_pool(None);
        core::mem::forget(core::mem::replace(&mut self.scratch, Scratch::new(1)));
        if cfg!(debug_assertions) {
            eprintln!(
                "sendbuf: WriteBuffer dropped while the kernel still holds {leaked} bytes of \
                 zero-copy sends; leaking them (drain completions before dropping)"
            );
        }
    }
}

impl fmt::Debug for WriteBuffer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (bytes_in, bytes_out, bytes_released) = self.queue.totals();
        f.debug_struct("WriteBuffer")
            .field("len", &self.queue.len())
            .field("held_len", &self.queue.held_len())
            .field("segments", &self.queue.segments())
            .field("bytes_in", &bytes_in)
            .field("bytes_out", &bytes_out)
            .field("bytes_released", &bytes_released)
            .field("flatten_threshold", &self.flatten_below)
            .field("scratch", &self.scratch)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    //! The held (zero-copy) path through the core, reached only through crate-private hooks.
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    struct Counted(Vec<u8>, Arc<AtomicUsize>);
    impl AsRef<[u8]> for Counted {
        fn as_ref(&self) -> &[u8] {
            &self.0
        }
    }
    impl Drop for Counted {
        fn drop(&mut self) {
            self.1.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn queue(drops: &Arc<AtomicUsize>) -> WriteBuffer {
        let mut buf = WriteBuffer::with_block_size(64);
        buf.set_flatten_threshold(0);
        buf.put_slice(b"head");
        buf.pin(Counted(vec![7; 100], drops.clone()));
        buf.put_slice(b"tail");
        buf
    }

    #[test]
    fn held_bytes_keep_the_buffer_non_empty_until_released() {
        let drops = Arc::new(AtomicUsize::new(0));
        let mut buf = queue(&drops);
        buf.advance_with(108, Release::OnCompletion).unwrap();
        buf.check_invariants();
        assert_eq!(buf.pending_len(), 0);
        assert_eq!(buf.queue.held_len(), 108);
        assert!(!buf.is_empty(), "the kernel still reads 108 bytes");
        assert_eq!(
            drops.load(Ordering::SeqCst),
            0,
            "released before completion"
        );

        assert_eq!(buf.release_through(50), 4); // only "head" ends by offset 50
        assert_eq!(drops.load(Ordering::SeqCst), 0);
        assert_eq!(buf.release_through(104), 100);
        assert_eq!(drops.load(Ordering::SeqCst), 1);
        assert!(!buf.is_empty());
        assert_eq!(buf.release_through(108), 4);
        buf.check_invariants();
        assert!(buf.is_empty());
    }

    #[test]
    fn held_scratch_is_not_reused_before_release() {
        let drops = Arc::new(AtomicUsize::new(0));
        let mut buf = queue(&drops);
        buf.advance_with(2, Release::OnCompletion).unwrap(); // inside "head"
        buf.advance(buf.pending_len()); // the rest by copying sends
        buf.check_invariants();
        assert_eq!(drops.load(Ordering::SeqCst), 1);
        assert!(!buf.is_empty(), "two bytes of scratch are still held");
        // New formatting must not overwrite the held bytes "he".
        buf.put_slice(b"next");
        assert_eq!(buf.scratch().bytes(0, 0, 2), b"he");
        buf.release_through(2);
        buf.advance(4);
        buf.check_invariants();
        assert!(buf.is_empty());
    }

    #[test]
    fn pinned_value_partly_sent_zero_copy_lives_until_that_completion() {
        let drops = Arc::new(AtomicUsize::new(0));
        let mut buf = queue(&drops);
        buf.advance_with(10, Release::OnCompletion).unwrap(); // head + 6 bytes of the value
        buf.advance(98); // the rest copied
        buf.check_invariants();
        assert_eq!(buf.pending_len(), 0);
        assert_eq!(
            drops.load(Ordering::SeqCst),
            0,
            "the kernel still reads 6 bytes of it"
        );
        assert_eq!(buf.release_through(10), 10);
        assert_eq!(drops.load(Ordering::SeqCst), 1);
        buf.check_invariants();
        assert!(buf.is_empty());
    }

    #[test]
    fn value_finished_by_a_copying_send_after_its_zero_copy_part_completed_is_released() {
        // Found by tests/prop_zerocopy.rs: the zero-copy part's completion came before the
        // copying send of the rest, and no later completion would ever release the value.
        let drops = Arc::new(AtomicUsize::new(0));
        let mut buf = queue(&drops);
        buf.advance_with(10, Release::OnCompletion).unwrap(); // head + 6 bytes of the value
                                                              // The completion releases the header and the value's first 6 bytes (the value itself is
                                                              // still pending, so it lives on) and nothing stays held.
        assert_eq!(buf.release_through(10), 10);
        assert_eq!(buf.held_len(), 0);
        assert_eq!(drops.load(Ordering::SeqCst), 0);
        buf.advance(94); // the rest of the value, copied
        assert_eq!(drops.load(Ordering::SeqCst), 1);
        buf.advance(4);
        buf.check_invariants();
        assert!(buf.is_empty());
    }

    #[test]
    fn steal_is_refused_while_the_kernel_holds_bytes() {
        use crate::Stealable;
        let drops = Arc::new(AtomicUsize::new(0));
        let mut buf = queue(&drops);
        buf.advance_with(108, Release::OnCompletion).unwrap();
        let err = buf.steal().unwrap_err();
        assert_eq!((err.pending, err.held), (0, 108));
        buf.release_through(104);
        assert_eq!(buf.steal().unwrap_err().held, 4);
        buf.release_through(108);
        assert!(buf.steal().is_ok());
        assert_eq!(buf.storage_bytes(), 0);
    }

    #[test]
    fn clear_keeps_held_segments() {
        let drops = Arc::new(AtomicUsize::new(0));
        let mut buf = queue(&drops);
        buf.advance_with(104, Release::OnCompletion).unwrap();
        buf.clear();
        buf.check_invariants();
        assert_eq!(drops.load(Ordering::SeqCst), 0);
        assert!(!buf.is_empty());
        buf.release_through(104);
        assert_eq!(drops.load(Ordering::SeqCst), 1);
        assert!(buf.is_empty());
    }

    #[test]
    fn a_block_with_held_bytes_is_not_recycled_or_given_to_the_pool() {
        use crate::{LocalPool, Pool, PoolLimits, Stealable};
        let pool = LocalPool::new(PoolLimits::new());
        let mut buf = WriteBuffer::with_block_size(16).with_pool(pool.clone());
        buf.put_slice(b"0123456789abcdef"); // fills block 0 exactly
        buf.advance_with(16, Release::OnCompletion).unwrap();
        // The next format cannot go into block 0: it opens another block.
        buf.put_slice(b"next-block");
        buf.advance(10);
        buf.put_slice(b"more");
        buf.advance(4);
        buf.check_invariants();
        assert_eq!(buf.scratch().bytes(0, 0, 16), b"0123456789abcdef");
        assert!(buf.steal().is_err());
        assert_eq!(pool.stats().returned, 0, "no storage went back to the pool");
        assert_eq!(buf.release_through(16), 16);
        buf.check_invariants();
        assert!(buf.steal().is_ok());
        assert!(pool.stats().returned >= 2);
    }

    #[test]
    #[cfg_attr(miri, ignore = "leaks on purpose, which Miri reports")]
    fn dropping_with_held_bytes_leaks_them_instead_of_freeing() {
        use crate::{LocalPool, Pool, PoolLimits};
        let drops = Arc::new(AtomicUsize::new(0));
        let pool = LocalPool::new(PoolLimits::new());
        let mut buf = WriteBuffer::with_block_size(64).with_pool(pool.clone());
        buf.set_flatten_threshold(0);
        buf.put_slice(b"head");
        buf.pin(Counted(vec![7; 100], drops.clone()));
        buf.pin(Counted(vec![8; 100], drops.clone()));
        buf.advance_with(10, Release::OnCompletion).unwrap(); // head + 6 bytes of the first
        buf.advance(94); // rest of the first value copied: its owner is still held
        let leaked_before = leaked_on_drop();
        drop(buf);
        // The pending second value is released; the held first one is never dropped.
        assert_eq!(drops.load(Ordering::SeqCst), 1);
        assert!(leaked_on_drop() >= leaked_before + 10);
        assert_eq!(
            pool.stats().returned,
            0,
            "held scratch went back to the pool"
        );
        assert_eq!(Arc::strong_count(&pool), 1, "the pool itself is not leaked");
    }

    #[test]
    fn dropping_after_release_frees_everything() {
        use crate::{LocalPool, Pool, PoolLimits};
        let drops = Arc::new(AtomicUsize::new(0));
        let pool = LocalPool::new(PoolLimits::new());
        let mut buf = queue(&drops);
        buf = buf.with_pool(pool.clone());
        buf.advance_with(108, Release::OnCompletion).unwrap();
        buf.release_through(108);
        drop(buf);
        assert_eq!(drops.load(Ordering::SeqCst), 1);
        assert!(
            pool.stats().returned >= 1,
            "idle scratch goes back to the pool"
        );
    }

    /// Bytes the kernel still reads count against the limits until released, and the bound
    /// moves to the byte once they are (the quiet bound is kept in units of bytes ever
    /// queued, refreshed on every release and on a growth that leaves it).
    #[test]
    fn held_bytes_count_against_the_limits_until_released() {
        let mut buf = WriteBuffer::new();
        buf.set_hard_limit(Some(100));
        buf.set_flatten_threshold(16);
        for round in 0..50u64 {
            buf.pin(vec![1u8; 60]);
            buf.put_slice(&[2; 40]);
            buf.advance_with(100, Release::OnCompletion).unwrap();
            assert_eq!(
                (buf.pending_len(), buf.held_len()),
                (0, 100),
                "round {round}"
            );
            assert!(
                buf.try_put_slice(&[3]).is_err(),
                "round {round}: held bytes count"
            );
            assert!(buf.try_pin(vec![3u8; 20]).is_err(), "round {round}");
            let sent = buf.sent_total();
            buf.release_through(sent - 40); // the value: 60 bytes held less
            assert_eq!(buf.held_len(), 40, "round {round}");
            assert!(buf.try_put_slice(&[4; 61]).is_err(), "round {round}: 101");
            assert!(
                buf.try_put_slice(&[4; 60]).is_ok(),
                "round {round}: exactly 100"
            );
            assert!(buf.try_put_slice(&[5]).is_err(), "round {round}: 101");
            buf.advance_with(60, Release::OnSend).unwrap();
            buf.release_through(sent);
            assert!(buf.is_empty(), "round {round}");
            buf.check_invariants();
        }
    }

    /// Copying sends from a buffer that is not backed up leave the limits' quiet bound stale
    /// (too low): the hard limit and the high mark still hold to the byte, and the first growth
    /// past the stale bound brings it up to date, so the next ones are quiet again.
    #[test]
    fn a_stale_quiet_bound_keeps_the_limits_exact_and_is_refreshed() {
        use crate::{Pressure, Watermarks};
        let mut buf = WriteBuffer::new();
        buf.set_hard_limit(Some(100));
        buf.set_watermarks(Some(Watermarks::new(10, 80)));
        buf.set_flatten_threshold(16);
        for round in 0..200u64 {
            buf.pin(vec![1u8; 30]);
            buf.put_slice(&[2; 30]);
            // Exactly to the hard limit, past the stale bound after the first round.
            assert!(buf.try_put_slice(&[3; 41]).is_err(), "round {round}: 101");
            assert!(!buf.is_backed_up(), "round {round}: 60 < 80");
            let bp = buf.backpressure;
            assert_eq!(
                bp.quiet_in(),
                buf.queue.totals().2 + 80,
                "round {round}: refreshed by the refused growth"
            );
            buf.advance(60);
            assert_eq!(
                buf.backpressure.quiet_in(),
                bp.quiet_in(),
                "round {round}: no refresh"
            );
            buf.pin(vec![4u8; 50]);
            buf.put_slice(&[5; 30]); // 80: the high mark
            assert!(buf.is_backed_up(), "round {round}: 80 >= 80");
            assert!(buf.try_put_slice(&[6; 21]).is_err(), "round {round}: 101");
            assert!(buf.try_put_slice(&[6; 20]).is_ok(), "round {round}: 100");
            buf.advance(95); // backed up: drained is told, 5 <= 10
            assert!(!buf.is_backed_up(), "round {round}: 5 <= 10");
            assert_eq!(
                buf.take_pressure_event(),
                Some(Pressure::Low),
                "round {round}"
            );
            buf.advance(5);
            assert!(buf.is_empty(), "round {round}");
            buf.check_invariants();
        }
    }

    /// Bytes held outside (a TLS session's records) count towards the marks and the hard
    /// limit exactly: encrypting moves plaintext out as one net change, sends release them,
    /// and the quiet bound stays exact across both.
    #[cfg(feature = "rustls")]
    #[test]
    fn bytes_held_outside_count_towards_the_limits() {
        use crate::{Pressure, Watermarks};
        let mut buf = WriteBuffer::new();
        buf.set_hard_limit(Some(1000));
        buf.set_watermarks(Some(Watermarks::new(100, 800)));
        for round in 0..50 {
            buf.put_slice(&[1; 600]);
            // 600 of plaintext become 622 of records: 622 held, not backed up.
            buf.advance_into_outside(600, 622).unwrap();
            assert!(buf.is_empty(), "round {round}: no plaintext left");
            assert!(!buf.is_backed_up(), "round {round}: 622 < 800");
            assert!(buf.try_put_slice(&[2; 379]).is_err(), "round {round}: 1001");
            buf.put_slice(&[2; 178]); // 800: the high mark
            assert!(buf.is_backed_up(), "round {round}");
            assert_eq!(buf.take_pressure_event(), Some(Pressure::High));
            // More records than plaintext, while backed up: only the net change counts.
            buf.advance_into_outside(178, 200).unwrap();
            assert!(buf.try_put_slice(&[3; 179]).is_err(), "round {round}: 1001");
            buf.release_outside(700); // sent: 122 held
            assert!(buf.is_backed_up(), "round {round}: 122 > 100");
            buf.release_outside(22); // 100: the low mark
            assert!(!buf.is_backed_up(), "round {round}");
            assert_eq!(buf.take_pressure_event(), Some(Pressure::Low));
            buf.release_outside(100);
            assert_eq!(buf.held_bytes(), 0, "round {round}");
            buf.hold_outside(30); // handshake bytes: held, never refused
            buf.release_outside(30);
            assert!(buf.try_put_slice(&[4; 1000]).is_ok(), "round {round}: 1000");
            buf.clear();
            assert!(buf.advance_into_outside(1, 1).is_err(), "round {round}");
            buf.check_invariants();
        }
    }
}
