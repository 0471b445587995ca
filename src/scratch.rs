//! Owned scratch storage: the memory headers and small values are formatted into.
//!
//! Scratch is a slab of fixed blocks. Only the *tail* block is written to, always past its
//! `filled` cursor, so committed bytes never move: a segment names its block and a byte range, and
//! that range stays valid until the segment is released. Each block keeps three cursors:
//!
//! ```text
//!  0        released        sent          filled          capacity
//!  |--------|---------------|-------------|---------------|
//!   reusable  held by kernel   pending      free for the next guard
//! ```
//!
//! With copying sends `released == sent`; zero-copy sends keep bytes between the two until the
//! kernel's completion. A block whose bytes are all released is reused: the tail in place (its
//! cursors go back to zero), any other block through the free list. A steady-state connection
//! therefore never allocates.
//!
//! Block memory is held as a raw pointer, not a `Box`, because segments keep pointers into the
//! committed part while guards write past it: every access derives from the one raw pointer, so
//! writing the free part never invalidates (under Stacked Borrows) the pointers to the committed
//! part.
#![allow(unsafe_code)]

use core::fmt;
use core::ptr::NonNull;
use std::io::IoSlice;
use std::sync::Arc;

use crate::pool::Pool;

/// Index of a block in the slab.
pub(crate) type BlockId = u32;

/// The tail's id when there is no tail block.
const NO_TAIL: BlockId = BlockId::MAX;

/// `Scratch::window` when there is no tail block: room for nothing.
const NO_WINDOW: Cursor = Cursor {
    block: NO_TAIL,
    start: 0,
    pos: 0,
    base: NonNull::dangling(),
    cap: 0,
};

/// Default size of one scratch block.
///
/// Big enough for the headers of a large pipelined batch (64 binary-protocol headers are
/// 1.5 KiB) plus small values copied in under the flatten threshold, small enough that an
/// active connection does not pin much memory.
pub(crate) const DEFAULT_BLOCK_SIZE: usize = 16 * 1024;

struct Block {
    /// Start of `cap` bytes allocated as a `Box<[u8]>` (dangling when `cap == 0`).
    ptr: NonNull<u8>,
    cap: usize,
    filled: usize,
    sent: usize,
    released: usize,
}

// SAFETY: a block owns its allocation like a `Box<[u8]>`, which is Send and Sync.
unsafe impl Send for Block {}
// SAFETY: as above; shared access only reads.
unsafe impl Sync for Block {}

impl Block {
    fn with_capacity(cap: usize) -> Block {
        Block::from_box(vec![0u8; cap].into_boxed_slice())
    }

    fn from_box(storage: Box<[u8]>) -> Block {
        let cap = storage.len();
        let raw: *mut [u8] = Box::into_raw(storage);
        Block {
            // SAFETY: `Box::into_raw` never returns null.
            ptr: unsafe { NonNull::new_unchecked(raw.cast::<u8>()) },
            cap,
            filled: 0,
            sent: 0,
            released: 0,
        }
    }

    /// Gives the allocation back as a `Box`; the block is left empty.
    fn take_box(&mut self) -> Box<[u8]> {
        let raw = core::ptr::slice_from_raw_parts_mut(self.ptr.as_ptr(), self.cap);
        self.ptr = NonNull::dangling();
        self.cap = 0;
        // SAFETY: `ptr`/`cap` came from `Box::into_raw` of a `Box<[u8]>` of exactly `cap` bytes
        // (`from_box`), and ownership is handed back exactly once: the block now owns nothing.
        unsafe { Box::from_raw(raw) }
    }

    /// Bytes `at .. at + n`, which the caller has checked lie within `cap`.
    #[inline]
    fn bytes(&self, at: usize, n: usize) -> &[u8] {
        assert!(at <= self.cap && n <= self.cap - at);
        // SAFETY: in bounds (checked above) of a live allocation of initialised bytes; no `&mut`
        // to these bytes exists while `&self` is borrowed (writes go through `&mut self`).
        unsafe { core::slice::from_raw_parts(self.ptr.as_ptr().add(at), n) }
    }

    /// Bytes `at .. at + n` for writing.
    #[inline]
    fn bytes_mut(&mut self, at: usize, n: usize) -> &mut [u8] {
        assert!(at <= self.cap && n <= self.cap - at);
        // SAFETY: in bounds of a live allocation (checked above). Callers only write at or past
        // `filled`, or inside an open guard's own uncommitted bytes: no segment points there, and
        // `&mut self` excludes every other reference.
        unsafe { core::slice::from_raw_parts_mut(self.ptr.as_ptr().add(at), n) }
    }
}

impl Drop for Block {
    fn drop(&mut self) {
        drop(self.take_box());
    }
}

/// Where an open format guard writes: `block[start..pos]` holds its uncommitted bytes.
///
/// It also caches the block's base pointer and capacity, so that writing through a guard costs
/// one comparison and no lookup in the slab. Invariant (kept by [`Scratch::set_tail`], which
/// makes the scratch's own window onto its tail, and by [`Scratch::open`],
/// [`Scratch::append`] and [`Scratch::reserve`], which copy that window or move a cursor):
/// `base` and `cap` are those of the live block `block` of the scratch that made the cursor,
/// and `start <= pos <= cap`. The one exception is the window while there is no tail
/// (`NO_WINDOW`: no block, capacity 0), which is never handed out: `open` makes a tail first,
/// and `append` needs room. A cursor is used only with that scratch, and only while its guard
/// is open (or within `append`): the guard borrows the buffer mutably, so no block is freed or
/// reused meanwhile.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Cursor {
    pub(crate) block: BlockId,
    pub(crate) start: usize,
    pub(crate) pos: usize,
    base: NonNull<u8>,
    cap: usize,
}

// SAFETY: a cursor is plain position data into memory its `Scratch` owns (which is Send and
// Sync); it is dereferenced only through `&mut Scratch` / `&Scratch` methods.
unsafe impl Send for Cursor {}
// SAFETY: as above.
unsafe impl Sync for Cursor {}

impl Cursor {
    /// Bytes the cursor's block has left after `pos`.
    #[cfg(feature = "bytes")]
    #[inline]
    pub(crate) fn room(&self) -> usize {
        self.cap - self.pos
    }

    /// The block's base address, to locate a pending iovec inside the block.
    #[inline]
    pub(crate) fn base_addr(&self) -> usize {
        self.base.as_ptr().addr()
    }
}

pub(crate) struct Scratch {
    blocks: Vec<Block>,
    /// Blocks no segment references, ready for reuse. Never contains the tail.
    free: Vec<BlockId>,
    /// The tail, the block guards write to, as the cursor a guard opened now would get:
    /// `window.block` is the tail's id (`NO_TAIL`: none, then the rest is empty), `base` and
    /// `cap` its memory, `pos` its `filled` cursor. `window.start` is not kept (a guard's
    /// cursor starts at `pos`, [`open`](Self::open)): one store less per commit, and a guard's
    /// length is then known from its writes alone, so the compiler drops the empty-guard test
    /// of a fixed-size header. Kept here so that opening and committing a guard touch no slab
    /// entry; while a block is the tail its own `filled`
    /// field is stale (read it with [`filled`](Self::filled)), and it is written back when the
    /// block stops being the tail ([`set_tail`](Self::set_tail)).
    window: Cursor,
    block_size: usize,
    /// Σ (filled − sent) over all blocks.
    unsent: usize,
    /// Σ (sent − released) over all blocks.
    held: usize,
    /// Where block storage comes from and goes back to; `None`: the allocator.
    pool: Option<Arc<dyn Pool>>,
}

impl Scratch {
    pub(crate) fn new(block_size: usize) -> Scratch {
        Scratch {
            blocks: Vec::new(),
            free: Vec::new(),
            window: NO_WINDOW,
            block_size: block_size.max(1),
            unsent: 0,
            held: 0,
            pool: None,
        }
    }

    pub(crate) fn set_pool(&mut self, pool: Option<Arc<dyn Pool>>) {
        self.pool = pool;
    }

    pub(crate) fn pool(&self) -> Option<&Arc<dyn Pool>> {
        self.pool.as_ref()
    }

    /// Hands every block's storage to the pool (or frees it). Only when idle: no segment points
    /// into scratch and no guard is open (`&mut self`).
    pub(crate) fn release_storage(&mut self) -> usize {
        debug_assert!(self.is_idle(), "releasing scratch storage that is in use");
        let bytes = self.capacity();
        for mut c in self.blocks.drain(..) {
            let storage = c.take_box();
            if let Some(pool) = &self.pool {
                pool.give(storage);
            }
        }
        self.free = Vec::new();
        // The blocks are gone: nothing to write the tail's `filled` back to.
        self.window = NO_WINDOW;
        bytes
    }

    pub(crate) fn block_size(&self) -> usize {
        self.block_size
    }

    /// Bytes of heap memory held by this scratch area.
    pub(crate) fn capacity(&self) -> usize {
        self.blocks.iter().map(|c| c.cap).sum()
    }

    /// True when no committed byte is unsent or unreleased and the tail's cursors are at rest.
    pub(crate) fn is_idle(&self) -> bool {
        let tail_at_rest = match self.blocks.get(self.tail() as usize) {
            Some(c) => self.window.pos == 0 && c.sent == 0 && c.released == 0,
            None => true,
        };
        self.unsent == 0 && self.held == 0 && tail_at_rest
    }

    pub(crate) fn unsent(&self) -> usize {
        self.unsent
    }

    pub(crate) fn held(&self) -> usize {
        self.held
    }

    /// Starts a guard at the end of the tail block, creating the tail if there is none.
    #[inline]
    pub(crate) fn open(&mut self) -> Cursor {
        if self.tail() == NO_TAIL {
            self.new_tail();
        }
        let w = &self.window;
        Cursor {
            block: w.block,
            start: w.pos,
            pos: w.pos,
            base: w.base,
            cap: w.cap,
        }
    }

    #[cold]
    #[inline(never)]
    fn new_tail(&mut self) {
        let id = self.acquire(self.block_size);
        self.set_tail(id);
    }

    /// The tail block's id, or `NO_TAIL`.
    #[inline]
    fn tail(&self) -> BlockId {
        self.window.block
    }

    /// Bytes of `block` committed so far (its `filled` cursor).
    #[inline]
    fn filled(&self, block: BlockId) -> usize {
        if block == self.tail() {
            self.window.pos
        } else {
            self.blocks[block as usize].filled
        }
    }

    /// Makes `new` (a live block, or `NO_TAIL`) the tail, writing the old tail's `filled`
    /// cursor back to its block.
    fn set_tail(&mut self, new: BlockId) {
        if let Some(old) = self.blocks.get_mut(self.window.block as usize) {
            old.filled = self.window.pos;
        }
        self.window = match self.blocks.get(new as usize) {
            Some(c) => Cursor {
                block: new,
                start: c.filled,
                pos: c.filled,
                base: c.ptr,
                cap: c.cap,
            },
            None => NO_WINDOW,
        };
    }

    /// The writable bytes `cur.pos .. cur.pos + n`, moving the guard's uncommitted bytes to a larger
    /// block first if they do not fit. Committed bytes are never moved.
    #[inline]
    pub(crate) fn reserve(&mut self, cur: &mut Cursor, n: usize) -> &mut [u8] {
        if cur.cap - cur.pos < n {
            // The position as scalars, not the cursor: a `Cursor` (five words) would be passed
            // through memory, which keeps the caller's guard in a stack slot on the hot path
            // too; this way it lives in registers (`BENCHMARKS.md`, callgrind).
            let used = cur.pos - cur.start;
            let moved = self.relocate(cur.block, cur.start, cur.pos, n);
            debug_assert_eq!((moved.start, moved.pos), (0, used));
            // The guard's bytes now sit at the start of the new block. Rebuilt from `used`
            // rather than taken from `moved`: both paths then give `pos - start` as the same
            // expression, so the compiler knows a guard's length from its writes alone (and
            // drops a fixed-size header's empty-guard test at commit).
            *cur = Cursor {
                start: 0,
                pos: used,
                ..moved
            };
        }
        debug_assert_eq!(
            self.blocks[cur.block as usize].ptr, cur.base,
            "stale cursor"
        );
        let at = cur.pos;
        cur.pos += n;
        // SAFETY: `at + n <= cur.cap` (checked above, or `relocate` made room), and `base`/`cap`
        // are those of the live block `cur.block` (the `Cursor` invariant). Bytes at or past the
        // block's `filled` cursor belong to the open guard alone: no segment points there, and
        // the guard's `&mut` borrow of the buffer (through `&mut self`) excludes every other
        // access. Derived from the block's raw base pointer, so committed bytes that pending
        // iovecs point at are not invalidated.
        unsafe { core::slice::from_raw_parts_mut(cur.base.as_ptr().add(at), n) }
    }

    /// The writable bytes `cur.pos .. cur.cap`, the rest of the guard's block, without moving
    /// `cur.pos`: what `bytes::BufMut::chunk_mut` hands out. Never empty: a full block first
    /// moves the guard's uncommitted bytes to a larger one, as [`reserve`](Self::reserve) does
    /// for one more byte (so a guard that keeps asking grows geometrically).
    #[cfg(feature = "bytes")]
    #[inline]
    pub(crate) fn spare(&mut self, cur: &mut Cursor) -> &mut [u8] {
        if cur.cap == cur.pos {
            let used = cur.pos - cur.start;
            *cur = self.relocate(cur.block, cur.start, cur.pos, 1);
            debug_assert_eq!((cur.start, cur.pos), (0, used));
        }
        debug_assert_eq!(
            self.blocks[cur.block as usize].ptr, cur.base,
            "stale cursor"
        );
        // SAFETY: `cur.pos < cur.cap` (checked above, or `relocate` made room for one byte),
        // and `base`/`cap` are those of the live block `cur.block` (the `Cursor` invariant), so
        // the range is in bounds of initialised memory (blocks are zeroed or come from a pool
        // as a `Box<[u8]>`). Bytes at or past the block's `filled` cursor belong to the open
        // guard alone, as in `reserve`; derived from the block's raw base pointer, so committed
        // bytes that pending iovecs point at are not invalidated.
        unsafe {
            core::slice::from_raw_parts_mut(cur.base.as_ptr().add(cur.pos), cur.cap - cur.pos)
        }
    }

    /// Mutable access to bytes already written by an open guard (to fill a reserved field).
    pub(crate) fn written_mut(&mut self, cur: &Cursor, from: usize, len: usize) -> &mut [u8] {
        debug_assert!(cur.start + from + len <= cur.pos);
        self.blocks[cur.block as usize].bytes_mut(cur.start + from, len)
    }

    #[cold]
    #[inline(never)]
    fn relocate(&mut self, block: BlockId, start: usize, pos: usize, n: usize) -> Cursor {
        let used = pos - start;
        let need = used
            .checked_add(n)
            .expect("format guard length overflows usize");
        let cap = if need <= self.block_size {
            self.block_size
        } else {
            need.next_power_of_two()
        };
        let new = self.acquire(cap);
        let (from, to) = self.pair_mut(block, new);
        to.bytes_mut(0, used)
            .copy_from_slice(from.bytes(start, used));
        let old = block;
        let c = &self.blocks[new as usize];
        let moved = Cursor {
            block: new,
            start: 0,
            pos: used,
            base: c.ptr,
            cap: c.cap,
        };
        if old != self.tail() {
            // An earlier relocation's block: only this guard used it.
            self.recycle(old);
        }
        moved
    }

    /// Makes the guard's bytes `cur.block[cur.start..cur.pos]` committed.
    #[inline(always)]
    pub(crate) fn commit(&mut self, cur: &Cursor) {
        if cur.block != self.tail() {
            self.retire_tail(cur.block);
        }
        debug_assert_eq!(self.window.pos, cur.start, "tail moved under an open guard");
        self.window.pos = cur.pos;
        self.unsent += cur.pos - cur.start;
    }

    /// A guard that relocated to block `new` commits: `new` becomes the tail, and the old tail
    /// is recycled now if nothing in it is pending or held (otherwise when its last byte is
    /// released).
    #[cold]
    #[inline(never)]
    fn retire_tail(&mut self, new: BlockId) {
        let old = self.tail();
        self.set_tail(new);
        if let Some(c) = self.blocks.get(old as usize) {
            if c.released == c.filled {
                self.recycle(old);
            }
        }
    }

    /// True if `n` bytes fit behind the tail's committed bytes (false without a tail).
    #[inline(always)]
    pub(crate) fn fits_in_tail(&self, n: usize) -> bool {
        // Without a tail the window has room for nothing.
        self.window.cap - self.window.pos >= n
    }

    /// Copies `src` (not empty, and it [fits](Self::fits_in_tail)) behind the tail's committed
    /// bytes and commits it, as a guard's `open`, `put_slice` and `commit` would, in one step;
    /// returns the committed cursor.
    #[inline(always)]
    pub(crate) fn append(&mut self, src: &[u8]) -> Cursor {
        debug_assert!(!src.is_empty() && self.fits_in_tail(src.len()));
        // Field by field: a copy of the whole window went through a stack slot here (and
        // the room was checked twice).
        let w = &self.window;
        let mut cur = Cursor {
            block: w.block,
            start: w.pos,
            pos: w.pos,
            base: w.base,
            cap: w.cap,
        };
        self.reserve(&mut cur, src.len()).copy_from_slice(src);
        // `commit` without its test for a relocated guard: the bytes are the tail's. (After the
        // copy the compiler could not reuse the tail id it loaded before.)
        self.window.pos = cur.pos;
        self.unsent += src.len();
        cur
    }

    /// Drops an open guard's bytes.
    #[inline(always)]
    pub(crate) fn abandon(&mut self, cur: &Cursor) {
        if cur.block != self.tail() {
            self.recycle(cur.block);
        }
    }

    /// Committed bytes of a segment.
    #[inline]
    pub(crate) fn bytes(&self, block: BlockId, start: usize, end: usize) -> &[u8] {
        self.blocks[block as usize].bytes(start, end - start)
    }

    /// The bytes `from..cur.pos` of a just-committed cursor's block as an iovec that outlives
    /// this borrow: a new segment (`from == cur.start`) or a pending run of the same block
    /// extended by the cursor's bytes (`from` where that run now starts).
    ///
    /// # Safety
    ///
    /// `cur` must have just been committed by this scratch ([`Self::commit`]), and the bytes
    /// `from..cur.start` must be committed and unreleased. The lifetime obligation is as for
    /// any pending iovec: not used after these bytes are released (reused by a later guard) or
    /// the scratch is dropped or stolen. Committed bytes are never written again until
    /// released, so reading them meanwhile is sound.
    #[inline]
    pub(crate) unsafe fn committed_iovec(&self, cur: &Cursor, from: usize) -> IoSlice<'static> {
        debug_assert!(from <= cur.start && cur.pos <= self.filled(cur.block));
        // SAFETY: `from..cur.pos` lies in the live block `cur.block` (`pos <= cap` by the
        // `Cursor` invariant) and is committed (caller's contract); the pointer derives from the
        // block's raw base pointer, so later writes past `filled` do not invalidate it.
        IoSlice::new(unsafe {
            core::slice::from_raw_parts(cur.base.as_ptr().add(from), cur.pos - from)
        })
    }

    /// The pending run of `run_len` bytes at address `run_addr` in `cur.block`, which ends
    /// where `cur` starts, extended by the cursor's bytes, as an iovec that outlives this
    /// borrow: [`committed_iovec`](Self::committed_iovec) from where the run starts, given
    /// as the run's own address and length (so the new length is one add, and the address
    /// is the one already stored), with the block's provenance.
    ///
    /// # Safety
    ///
    /// As for [`committed_iovec`](Self::committed_iovec), with `from` the offset of
    /// `run_addr` in the block: `cur` just committed by this scratch, and the run's bytes
    /// committed and unreleased, ending at `cur.start`.
    #[inline]
    pub(crate) unsafe fn extended_iovec(
        &self,
        cur: &Cursor,
        run_addr: usize,
        run_len: usize,
    ) -> IoSlice<'static> {
        debug_assert_eq!(run_addr + run_len, cur.base_addr() + cur.start);
        debug_assert!(cur.pos <= self.filled(cur.block));
        // SAFETY: `run_addr..cur.pos` of the block is committed and unreleased (caller's
        // contract) and lies in the live block `cur.block`; the pointer takes the block's raw
        // base pointer's provenance (`with_addr`), as `committed_iovec`'s does, so later writes
        // past `filled` do not invalidate it.
        IoSlice::new(unsafe {
            core::slice::from_raw_parts(
                cur.base.as_ptr().with_addr(run_addr),
                run_len + (cur.pos - cur.start),
            )
        })
    }

    /// `n` bytes of `block` were copied by the kernel: sent and released in one step.
    #[inline]
    pub(crate) fn consume(&mut self, block: BlockId, n: usize) {
        let filled = self.filled(block);
        let c = &mut self.blocks[block as usize];
        c.sent += n;
        c.released += n;
        debug_assert!(
            c.sent <= filled,
            "scratch block sent past its filled cursor"
        );
        self.unsent -= n;
        if c.released == filled {
            self.drained(block);
        }
    }

    /// `n` bytes of `block` were accepted by the kernel and it keeps reading them until released.
    #[inline]
    pub(crate) fn mark_sent(&mut self, block: BlockId, n: usize) {
        let filled = self.filled(block);
        let c = &mut self.blocks[block as usize];
        c.sent += n;
        debug_assert!(
            c.sent <= filled,
            "scratch block sent past its filled cursor"
        );
        self.unsent -= n;
        self.held += n;
    }

    /// `n` sent bytes of `block` are no longer read by anyone; reuses the block once all are.
    #[inline]
    pub(crate) fn mark_released(&mut self, block: BlockId, n: usize) {
        let filled = self.filled(block);
        let c = &mut self.blocks[block as usize];
        c.released += n;
        debug_assert!(
            c.released <= c.sent,
            "scratch block released past its sent cursor"
        );
        self.held -= n;
        if c.released == filled {
            self.drained(block);
        }
    }

    /// Every committed byte of `block` is released: reuse it.
    #[inline]
    fn drained(&mut self, block: BlockId) {
        if block == self.tail() && self.blocks[block as usize].cap <= self.block_size {
            let c = &mut self.blocks[block as usize];
            c.filled = 0;
            c.sent = 0;
            c.released = 0;
            self.window.pos = 0;
        } else {
            if block == self.tail() {
                // An oversized tail (one large format): free it; the next guard opens a new tail.
                self.set_tail(NO_TAIL);
            }
            self.recycle(block);
        }
    }

    /// Checks the cursors against the running totals; returns what disagrees.
    pub(crate) fn audit(&self) -> Result<(), String> {
        let mut unsent = 0;
        let mut held = 0;
        for (i, c) in self.blocks.iter().enumerate() {
            let filled = self.filled(i as BlockId);
            if !(c.released <= c.sent && c.sent <= filled && filled <= c.cap) {
                return Err(format!(
                    "scratch block {i}: cursors out of order (released {}, sent {}, filled {filled}, capacity {})",
                    c.released, c.sent, c.cap
                ));
            }
            unsent += filled - c.sent;
            held += c.sent - c.released;
        }
        if unsent != self.unsent || held != self.held {
            return Err(format!(
                "scratch totals disagree with block cursors: unsent {} vs {unsent}, held {} vs {held}",
                self.unsent, self.held
            ));
        }
        let tail = self.tail();
        if tail != NO_TAIL {
            if self.free.contains(&tail) {
                return Err(format!("tail block {tail} is on the free list"));
            }
            let c = &self.blocks[tail as usize];
            let w = &self.window;
            if (w.base, w.cap) != (c.ptr, c.cap) || w.pos > c.cap {
                return Err(format!(
                    "tail window (base {:p}, capacity {}, filled {}) is not block {tail} (base {:p}, capacity {})",
                    w.base, w.cap, w.pos, c.ptr, c.cap
                ));
            }
        }
        Ok(())
    }

    fn acquire(&mut self, cap: usize) -> BlockId {
        // A free block that is big enough, newest first (usually the last one).
        let blocks = &self.blocks;
        if let Some(i) = self
            .free
            .iter()
            .rposition(|&id| blocks[id as usize].cap >= cap)
        {
            return self.free.swap_remove(i);
        }
        if let Some(id) = self.free.pop() {
            // Too small: trade its storage for a bigger one.
            let small = self.blocks[id as usize].take_box();
            if let Some(pool) = &self.pool {
                pool.give(small);
            }
            self.blocks[id as usize] = self.new_block(cap);
            return id;
        }
        let id = BlockId::try_from(self.blocks.len()).expect("more than u32::MAX scratch blocks");
        let block = self.new_block(cap);
        self.blocks.push(block);
        id
    }

    /// A block of at least `cap` bytes, from the pool if it has one, else from the allocator.
    fn new_block(&self, cap: usize) -> Block {
        match self.pool.as_ref().and_then(|p| p.take(cap)) {
            Some(storage) => Block::from_box(storage),
            None => Block::with_capacity(cap),
        }
    }

    fn recycle(&mut self, id: BlockId) {
        let c = &mut self.blocks[id as usize];
        c.filled = 0;
        c.sent = 0;
        c.released = 0;
        if c.cap > self.block_size {
            // An oversized block from one large format: do not keep it idle here.
            let storage = c.take_box();
            if let Some(pool) = &self.pool {
                pool.give(storage);
            }
        }
        self.free.push(id);
    }

    fn pair_mut(&mut self, a: BlockId, b: BlockId) -> (&Block, &mut Block) {
        let (a, b) = (a as usize, b as usize);
        assert_ne!(a, b);
        if a < b {
            let (lo, hi) = self.blocks.split_at_mut(b);
            (&lo[a], &mut hi[0])
        } else {
            let (lo, hi) = self.blocks.split_at_mut(a);
            (&hi[0], &mut lo[b])
        }
    }
}

impl Drop for Scratch {
    /// Gives idle storage back to the pool; storage still holding bytes (a buffer dropped with
    /// data pending) is freed instead, never handed to another connection.
    fn drop(&mut self) {
        if self.pool.is_some() && self.is_idle() {
            self.release_storage();
        }
    }
}

impl fmt::Debug for Scratch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cursors: Vec<_> = self
            .blocks
            .iter()
            .enumerate()
            .map(|(i, c)| (c.released, c.sent, self.filled(i as BlockId), c.cap))
            .collect();
        f.debug_struct("Scratch")
            .field("tail", &self.tail())
            .field("free", &self.free)
            .field("unsent", &self.unsent)
            .field("held", &self.held)
            .field("blocks(released, sent, filled, cap)", &cursors)
            .finish()
    }
}
