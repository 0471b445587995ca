//! The private segment queue: the only place the buffer's byte counts change.
//!
//! Pending segments are kept in iovec form: `iovs[head..]` is exactly the array a vectored write
//! takes, so gathering costs nothing and a partial write only shortens the front entry (as
//! `IoSlice::advance_slices` does). `metas` runs parallel to `iovs` and says what each iovec
//! points into: a scratch block, or a pinned value, whose owner sits in the meta itself, so a
//! pinned segment is one push and one entry, and passing it needs no second queue. The metas
//! are `ManuallyDrop`: a passed entry's owner is released (or moved out) where it sits, and
//! the array is cleared and compacted without running any drop.
//!
//! Every segment goes through three steps:
//!
//! 1. *pending*: in `iovs[head..]`, not yet accepted by the kernel;
//! 2. *sent*: advanced past;
//! 3. *released*: the pinned owner dropped, the scratch bytes reusable.
//!
//! With copying sends steps 2 and 3 happen together ([`Release::OnSend`]). With sends the kernel
//! completes later ([`Release::OnCompletion`]) a sent segment moves to `held`, tagged with the
//! stream offset of its last byte, until [`SegmentQueue::release_through`] says the kernel is done
//! with everything before an offset.
#![allow(unsafe_code)]

use std::collections::VecDeque;
use std::fmt;
use std::io::IoSlice;
use std::mem::ManuallyDrop;

use crate::pinned::Owner;
use crate::scratch::{BlockId, Cursor, Scratch};

/// What advancing past bytes means for their memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Release {
    /// The kernel copied the bytes: release them now.
    OnSend,
    /// The kernel still reads them: hold them until `release_through` covers them.
    OnCompletion,
}

/// What a pending iovec points into.
#[derive(Debug)]
enum Meta {
    Scratch(BlockId),
    /// A pinned value and its owner.
    Pinned(Owner),
}

// `Meta::Scratch` lives in a niche of `Owner`'s tag byte: a meta is no larger than an owner,
// and telling the kinds apart is one compare of that byte.
static_assertions::assert_eq_size!(Meta, Owner);

/// What a held segment keeps alive.
#[derive(Debug)]
enum Kept {
    Scratch(BlockId),
    Pinned(Owner),
}

/// A sent segment the kernel may still read, and the stream offset just past its last byte.
#[derive(Debug)]
struct Held {
    kept: Kept,
    /// Bytes counted as held for this segment.
    len: usize,
    end_offset: u64,
}

pub(crate) struct SegmentQueue {
    /// `iovs[head..]` are the pending bytes, in order.
    ///
    /// Invariant: each pending iovec points into what `metas` at the same index names —
    /// committed, unreleased bytes of a live scratch block, or the tail of the bytes of the
    /// pinned owner in that meta — and is never empty. The `'static` is a lie the queue keeps honest: iovecs leave only through
    /// [`io_slices`](Self::io_slices), which shortens it to the queue's borrow, and the memory
    /// they point to outlives that borrow (pinned owners are dropped, scratch reused, only
    /// through `&mut self`).
    iovs: Vec<IoSlice<'static>>,
    /// What each iovec points into. Invariant: as long as `iovs`, with at least its capacity
    /// (segments are pushed only through [`push_segment`](Self::push_segment));
    /// `metas[head..]` are live, `metas[..head]` are spent (their owners released or moved
    /// out when passed) and never read or dropped again.
    metas: Vec<ManuallyDrop<Meta>>,
    head: usize,
    held: VecDeque<Held>,
    /// Bytes sent but not released.
    held_len: usize,
    /// Bytes ever committed or pinned.
    bytes_in: u64,
    /// Bytes ever advanced past. `bytes_in - bytes_out` is the pending count, which
    /// [`audit`](Self::audit) checks against the iovecs; bytes released are
    /// `bytes_out - held_len`.
    bytes_out: u64,
    /// Bytes of the front pinned segment already sent in `OnCompletion` mode (its owner cannot be
    /// split, so it stays pending until its last byte is sent)...
    front_sent_held: usize,
    /// ...and the stream offset just past the last of them.
    front_held_end: u64,
    /// The highest offset [`release_through`](Self::release_through) was called with: the kernel
    /// reads nothing before it.
    released_through: u64,
    /// `(block, end)` when the last pending segment is the scratch run `block[..end]`, so the
    /// next commit at `block[end]` extends it; otherwise the block is `NO_RUN.0` (no committed
    /// cursor is in that block, so the end does not matter and is left as it was: ending a
    /// run is one store).
    run: (BlockId, usize),
}

const NO_RUN: (BlockId, usize) = (BlockId::MAX, usize::MAX);

impl Default for SegmentQueue {
    fn default() -> Self {
        SegmentQueue {
            iovs: Vec::new(),
            metas: Vec::new(),
            head: 0,
            held: VecDeque::new(),
            held_len: 0,
            bytes_in: 0,
            bytes_out: 0,
            front_sent_held: 0,
            front_held_end: 0,
            released_through: 0,
            run: NO_RUN,
        }
    }
}

impl SegmentQueue {
    #[inline]
    pub(crate) fn len(&self) -> usize {
        (self.bytes_in - self.bytes_out) as usize
    }

    #[inline]
    pub(crate) fn held_len(&self) -> usize {
        self.held_len
    }

    #[inline]
    pub(crate) fn segments(&self) -> usize {
        self.iovs.len() - self.head
    }

    /// The pending bytes as iovecs, front first.
    #[inline]
    pub(crate) fn io_slices(&self) -> &[IoSlice<'_>] {
        &self.iovs[self.head..]
    }

    /// Bytes ever committed or pinned.
    #[inline]
    pub(crate) fn bytes_in(&self) -> u64 {
        self.bytes_in
    }

    /// Totals: (bytes in, bytes out, bytes released).
    #[inline]
    pub(crate) fn totals(&self) -> (u64, u64, u64) {
        (
            self.bytes_in,
            self.bytes_out,
            self.bytes_out - self.held_len as u64,
        )
    }

    /// Appends the bytes a cursor just committed (`cur.start..cur.pos`, not empty), merging
    /// them with the last segment when it is the scratch run they continue.
    #[inline(always)]
    pub(crate) fn push_scratch(&mut self, scratch: &Scratch, cur: &Cursor) {
        let n = cur.pos - cur.start;
        debug_assert!(n > 0 && cur.block != NO_RUN.0);
        self.count_in(n);
        if self.run == (cur.block, cur.start) {
            debug_assert!(self.segments() > 0, "a scratch run is pending");
            let at = self.iovs.len().wrapping_sub(1);
            // SAFETY: `run` names a block only while the last pending segment is that run
            // (set just after pushing or extending it, ended by every other push and by the
            // reset of a drained queue; `audit` checks it), so `iovs` is not empty and `at`
            // is its last index.
            let last = unsafe { self.iovs.get_unchecked_mut(at) };
            // SAFETY: the last pending iovec is the scratch run of `cur.block` that ends at
            // `cur.start` (`self.run`), committed and unreleased (its front may have been
            // sent since, so it starts where the iovec now starts); `cur` was just committed
            // right after it.
            *last = unsafe { scratch.extended_iovec(cur, last.as_ptr().addr(), last.len()) };
            self.run.1 = cur.pos;
            return;
        }
        // SAFETY: `cur` was just committed; its bytes are released only after this segment.
        let iov = unsafe { scratch.committed_iovec(cur, cur.start) };
        self.push_segment(Meta::Scratch(cur.block), |_| iov);
        self.run = (cur.block, cur.pos);
    }

    /// Appends a pinned value of `len > 0` bytes.
    #[inline]
    pub(crate) fn push_pinned(&mut self, owner: Owner, len: usize) {
        debug_assert!(len > 0 && owner.bytes().len() == len);
        self.count_in(len);
        self.run.0 = NO_RUN.0;
        if owner.bytes_stay_put() {
            // Shared or static bytes: moving the owner into `metas` neither moves nor
            // invalidates them, so the pointer can be taken now (`bytes_stay_put` is known at
            // compile time when `pin` is inlined, which skips a `match` on the stored owner).
            let bytes = owner.bytes();
            let raw = (bytes.as_ptr(), bytes.len());
            // SAFETY: the bytes are owned by (or `'static` for) `owner`, which stays in
            // `metas` until this iovec is advanced past; moving an `Arc`, `Bytes` or static
            // owner neither moves nor invalidates the bytes it points at.
            let iov = IoSlice::new(unsafe { core::slice::from_raw_parts(raw.0, raw.1) });
            self.push_segment(Meta::Pinned(owner), |_| iov);
        } else {
            // Take the pointer only once the owner sits where it stays until released.
            self.push_segment(Meta::Pinned(owner), |meta| {
                let Meta::Pinned(owner) = meta else {
                    unreachable!("a pinned meta was just pushed")
                };
                let bytes = owner.bytes();
                // SAFETY: the bytes are owned by `owner`, which stays in `metas` until this
                // iovec is advanced past; the pointer is taken after the owner's last move
                // (`Owner::bytes_stay_put`: a later move of a `Vec` owner, by compaction,
                // moves neither its bytes nor retags them; a boxed `Other` owner's bytes are
                // behind its box).
                IoSlice::new(unsafe { core::slice::from_raw_parts(bytes.as_ptr(), bytes.len()) })
            });
        }
    }

    /// Appends a pending segment: its meta and, at the same index, the iovec `iov` makes from
    /// the meta where it now sits.
    ///
    /// The two arrays have one length and `metas` at least the capacity of `iovs` (only
    /// [`make_room`](Self::make_room) grows them), so one capacity test covers both pushes.
    #[inline(always)]
    fn push_segment(&mut self, meta: Meta, iov: impl FnOnce(&Meta) -> IoSlice<'static>) {
        // No drop of the meta while `make_room` might unwind (only on a failed allocation):
        // that would keep a pinned owner in a stack slot, written on every push, for the
        // unwinding path. A meta lost that way is leaked, not dropped.
        let meta = ManuallyDrop::new(meta);
        if self.iovs.len() == self.iovs.capacity() {
            self.make_room();
        }
        let len = self.iovs.len();
        debug_assert!(self.metas.len() == len && self.metas.capacity() > len);
        // SAFETY: `len < iovs.capacity() <= metas.capacity()` (`make_room` ensured the first,
        // the arrays' invariant the second) and both arrays are `len` long, so slot `len` of
        // each is allocated and unused; each is written before its length covers it, the meta
        // first, so the iovec can point into the owner where it stays. An `IoSlice` has no
        // drop, and a meta is `ManuallyDrop`, so nothing is dropped twice or skipped (the
        // unused slot held nothing).
        unsafe {
            let slot = self.metas.as_mut_ptr().add(len);
            slot.write(meta);
            self.metas.set_len(len + 1);
            let iov = iov(&*slot);
            self.iovs.as_mut_ptr().add(len).write(iov);
            self.iovs.set_len(len + 1);
        }
    }

    #[inline]
    fn count_in(&mut self, n: usize) {
        self.bytes_in += n as u64;
    }

    /// Makes room for one more segment in full arrays: drops advanced-past entries from the
    /// front instead of growing, once they are at least half of them, so memory stays bounded
    /// on a connection whose queue never fully drains (each compaction moves at most as many
    /// entries as it frees: amortised O(1)); otherwise grows both arrays, `metas` to at least
    /// the capacity of `iovs`.
    #[cold]
    #[inline(never)]
    fn make_room(&mut self) {
        if self.head > 0 && self.head * 2 >= self.iovs.len() {
            self.iovs.drain(..self.head);
            self.metas.drain(..self.head);
            self.head = 0;
        } else {
            self.iovs.reserve(1);
            self.metas.reserve(self.iovs.capacity() - self.metas.len());
        }
        debug_assert!(self.metas.capacity() >= self.iovs.capacity());
    }

    /// Moves past exactly `n <= len()` pending bytes.
    ///
    /// Each segment is counted out before it is released, so a panicking `Drop` of a pinned value
    /// leaves the counts consistent with the queue.
    #[inline]
    pub(crate) fn advance(&mut self, n: usize, scratch: &mut Scratch, mode: Release) {
        debug_assert!(n <= self.len());
        if mode == Release::OnSend && self.front_sent_held == 0 {
            // The copying case: every segment passed is released now, and nothing in this
            // loop can make a later one partly held.
            self.advance_copied(n, scratch);
        } else {
            self.advance_holding(n, scratch, mode);
        }
    }

    /// [`advance`](Self::advance) when passed segments may be held (zero-copy sends) or a
    /// pinned front value is partly held: out of line, so the copying path stays small where
    /// it is inlined.
    #[inline(never)]
    fn advance_holding(&mut self, mut n: usize, scratch: &mut Scratch, mode: Release) {
        while n > 0 {
            let h = self.head;
            let rem = self.iovs[h].len();
            if n < rem {
                self.bytes_out += n as u64;
                self.iovs[h].advance(n);
                self.advance_inside(h, n, scratch, mode);
                return;
            }
            self.bytes_out += rem as u64;
            n -= rem;
            self.head += 1;
            // The copying case releases the segment now, with nothing earlier held for it.
            let now = mode == Release::OnSend && self.front_sent_held == 0;
            // Counted out and off the queue before a pinned value's `Drop` runs, so a panicking
            // `Drop` leaves the queue consistent.
            // SAFETY: `metas[h]` was live (`h` was the head) and is spent now that `head` is
            // past it: it is moved out exactly once and never read or dropped again.
            let meta = unsafe { ManuallyDrop::take(&mut self.metas[h]) };
            match (meta, now) {
                (Meta::Scratch(block), true) => {
                    scratch.consume(block, rem);
                    self.reset_if_drained();
                }
                (Meta::Pinned(owner), true) => {
                    // The arrays are reset after, and a panicking `Drop` leaves them
                    // consistent, if unreset.
                    owner.release();
                    self.reset_if_drained();
                }
                (meta, false) => {
                    self.reset_if_drained();
                    self.finish(meta, rem, scratch, mode);
                }
            }
        }
    }

    /// [`advance`](Self::advance) with copying sends and no pinned front value partly held:
    /// each segment passed is counted out, moved past and released at once. One pass over
    /// the pending slices (no per-segment bounds checks or mode tests); the arrays are reset
    /// once, at the end.
    ///
    /// The head and the bytes out are counted in locals and stored once, at the end, and
    /// before any owner is released whose `Drop` may panic, so a panic leaves the queue
    /// consistent. (Releasing an `Arc<[u8]>` cannot panic: its drop is the allocator's, which
    /// must not unwind.)
    ///
    /// Scratch bytes passed are handed back to `scratch` once per run of segments in one block
    /// (the headers between the pinned values of a batch all sit in the tail) rather than
    /// once per segment. That is the same as consuming them one by one: a block is reused
    /// only once every committed byte of it is consumed, and the bytes of one block are queued,
    /// so passed, in order. They too are handed back before a `Drop` that may panic.
    #[inline]
    fn advance_copied(&mut self, n: usize, scratch: &mut Scratch) {
        debug_assert!(self.front_sent_held == 0);
        if n == 0 {
            return;
        }
        let start = self.head;
        let iovs = &mut self.iovs[start..];
        let metas = &mut self.metas[start..start + iovs.len()];
        if let (Some(iov), Some(meta)) = (iovs.first_mut(), metas.first()) {
            if n < iov.len() {
                // Inside the front segment: the usual case for a long scratch run.
                self.bytes_out += n as u64;
                iov.advance(n);
                if let Meta::Scratch(block) = **meta {
                    scratch.consume(block, n);
                }
                return;
            }
        }
        // Bytes not yet passed; `bytes_out` is stored as `out + (n - left)`.
        let mut left = n;
        let out = self.bytes_out;
        // Bytes of `spent_block` passed and not yet consumed (0: none).
        let mut spent_block = BlockId::MAX;
        let mut spent = 0usize;
        let count = iovs.len();
        debug_assert_eq!(metas.len(), count);
        // One walk over both arrays: the iovecs' iterator ends the loop, and the meta of the
        // iovec in hand is at `meta_at`, which steps with it (no second end test or index).
        let mut meta_at = metas.as_mut_ptr();
        let mut it = iovs.iter_mut();
        // Segments passed: the head is `start + passed`.
        let passed = loop {
            let Some(iov) = it.next() else {
                break count;
            };
            // SAFETY: `metas` and `iovs` have one length (`count`), and `meta_at` has stepped
            // once per iovec taken from `it`: it points at the meta of `iov`, in `metas`, which
            // is borrowed mutably for the whole loop and not otherwise used in it. Stepping
            // past it stays in bounds or one past the end.
            let meta = unsafe { &mut *meta_at };
            // SAFETY: as above.
            meta_at = unsafe { meta_at.add(1) };
            let rem = iov.len();
            if left < rem {
                // The write ends inside this segment (or, `left == 0`, just before it).
                if left > 0 {
                    iov.advance(left);
                    if let Meta::Scratch(block) = **meta {
                        if block == spent_block {
                            spent += left;
                        } else {
                            scratch.consume(block, left);
                        }
                    }
                }
                break count - it.len() - 1;
            }
            left -= rem;
            match &mut **meta {
                Meta::Scratch(block) => {
                    let block = *block;
                    if block != spent_block {
                        consume_spent(scratch, spent_block, spent);
                        spent_block = block;
                        spent = 0;
                    }
                    spent += rem;
                }
                // SAFETY: the meta was live (it was pending) and is passed now, so its owner is
                // dropped exactly once and never read again (the head is stored past it before
                // anything else reads the queue).
                Meta::Pinned(Owner::Arc(arc)) => unsafe { core::ptr::drop_in_place(arc) },
                Meta::Pinned(_) => {
                    // A `Drop` that may panic: counted out and off the queue first, and the
                    // scratch passed so far handed back.
                    self.bytes_out = out + (n - left) as u64;
                    self.head = start + (count - it.len());
                    consume_spent(scratch, spent_block, spent);
                    spent = 0;
                    // SAFETY: as above; the head is already past it.
                    unsafe { release_in_place(meta) };
                }
            }
        };
        // Either the loop stopped inside a pending segment, or it passed them all and `n` too.
        debug_assert!(
            left == 0 || start + passed < self.iovs.len(),
            "advanced past what is pending"
        );
        self.bytes_out = out + n as u64;
        self.head = start + passed;
        consume_spent(scratch, spent_block, spent);
        self.reset_if_drained();
    }

    /// Empties the arrays once every pending segment is advanced past, so they are reused from
    /// the start.
    #[inline]
    fn reset_if_drained(&mut self) {
        if self.head == self.iovs.len() {
            self.iovs.clear();
            self.metas.clear();
            self.head = 0;
            self.run = NO_RUN;
        }
    }

    /// Accounts for `step` bytes sent from inside the front segment `h`.
    #[inline]
    fn advance_inside(&mut self, h: usize, step: usize, scratch: &mut Scratch, mode: Release) {
        let block = match *self.metas[h] {
            Meta::Scratch(block) => Some(block),
            Meta::Pinned(_) => None,
        };
        match (block, mode) {
            (Some(block), Release::OnSend) => scratch.consume(block, step),
            (Some(block), Release::OnCompletion) => {
                scratch.mark_sent(block, step);
                self.hold(Kept::Scratch(block), step, self.bytes_out);
            }
            (None, Release::OnSend) => {}
            (None, Release::OnCompletion) => {
                self.front_sent_held += step;
                self.front_held_end = self.bytes_out;
                self.held_len += step;
            }
        }
    }

    /// Accounts for the last `step` bytes of a segment, now fully sent, outside the copying
    /// fast path; `meta` is the segment's, already taken off the queue.
    fn finish(&mut self, meta: Meta, step: usize, scratch: &mut Scratch, mode: Release) {
        let earlier = std::mem::take(&mut self.front_sent_held);
        match (meta, mode) {
            (Meta::Scratch(block), Release::OnSend) => scratch.consume(block, step),
            (Meta::Pinned(owner), Release::OnSend) => {
                if earlier == 0 {
                    owner.release();
                } else if self.front_held_end <= self.released_through {
                    // The earlier zero-copy send is already complete: release it all now.
                    self.held_len -= earlier;
                    owner.release();
                } else {
                    // An earlier zero-copy send still reads this value's first bytes: the
                    // owner lives until that send's completion.
                    self.held_len -= earlier;
                    self.hold(Kept::Pinned(owner), earlier, self.front_held_end);
                }
            }
            (Meta::Scratch(block), Release::OnCompletion) => {
                scratch.mark_sent(block, step);
                self.hold(Kept::Scratch(block), step, self.bytes_out);
            }
            (Meta::Pinned(owner), Release::OnCompletion) => {
                self.held_len -= earlier;
                self.hold(Kept::Pinned(owner), step + earlier, self.bytes_out);
            }
        }
    }

    fn hold(&mut self, kept: Kept, len: usize, end_offset: u64) {
        self.held_len += len;
        self.held.push_back(Held {
            kept,
            len,
            end_offset,
        });
    }

    /// The kernel no longer reads any stream byte before `offset`: releases every held segment
    /// that ends at or before it. Returns the bytes released.
    pub(crate) fn release_through(&mut self, offset: u64, scratch: &mut Scratch) -> usize {
        self.released_through = self.released_through.max(offset);
        let mut released = 0;
        while self.held.front().is_some_and(|h| h.end_offset <= offset) {
            let h = self.held.pop_front().expect("front exists");
            self.held_len -= h.len;
            released += h.len;
            match h.kept {
                Kept::Scratch(block) => scratch.mark_released(block, h.len),
                Kept::Pinned(owner) => owner.release(),
            }
        }
        if self.front_sent_held > 0 && self.front_held_end <= offset {
            // The pending front value's first bytes went out zero-copy and that send is now
            // complete: the kernel holds nothing of the value any more. It stays pending (its
            // owner is released with its last byte, as for any value), but those bytes are no
            // longer held.
            let n = std::mem::take(&mut self.front_sent_held);
            self.held_len -= n;
            released += n;
        }
        released
    }

    /// Forgets, without dropping, every owner the kernel may still read (held segments and a
    /// pinned front segment partly sent zero-copy), for a buffer dropped before their
    /// completions. Returns the bytes they held. The queue is unusable afterwards.
    pub(crate) fn leak_held(&mut self) -> usize {
        let leaked = self.held_len;
        for h in self.held.drain(..) {
            core::mem::forget(h.kept);
        }
        if self.front_sent_held > 0 {
            // The partly sent front segment is pinned: forget its owner, in place (assigning
            // to a `ManuallyDrop` drops nothing), so the queue's `Drop` skips it.
            debug_assert!(matches!(*self.metas[self.head], Meta::Pinned(_)));
            self.metas[self.head] = ManuallyDrop::new(Meta::Scratch(BlockId::MAX));
            self.front_sent_held = 0;
        }
        self.held_len = 0;
        leaked
    }

    /// Frees the queue's own arrays; only when nothing is pending or held.
    pub(crate) fn release_memory(&mut self) {
        debug_assert!(self.quick_empty() == Ok(true));
        self.iovs = Vec::new();
        self.metas = Vec::new();
        self.head = 0;
        self.run = NO_RUN;
        self.held = VecDeque::new();
    }

    /// Bytes of memory the queue's own arrays hold.
    pub(crate) fn memory(&self) -> usize {
        self.iovs.capacity() * core::mem::size_of::<IoSlice<'static>>()
            + self.metas.capacity() * core::mem::size_of::<Meta>()
            + self.held.capacity() * core::mem::size_of::<Held>()
    }

    /// O(1) emptiness, or `Err` when the counts and the queues disagree.
    #[inline]
    pub(crate) fn quick_empty(&self) -> Result<bool, String> {
        let counted = self.bytes_in == self.bytes_out && self.held_len == 0;
        let queued = self.head == self.iovs.len() && self.held.is_empty();
        let front_held = self.front_sent_held == 0;
        if counted == queued && (front_held || !counted) {
            Ok(counted)
        } else {
            Err(format!(
                "segment queue disagrees: counted empty {counted}, queues empty {queued}, front segment partly held {}",
                !front_held
            ))
        }
    }

    /// Full O(segments) audit of the counts against the queue.
    pub(crate) fn audit(&self) -> Result<(), String> {
        if self.iovs.len() != self.metas.len() || self.head > self.iovs.len() {
            return Err(format!(
                "iovecs ({}) and metas ({}) out of step, head {}",
                self.iovs.len(),
                self.metas.len(),
                self.head
            ));
        }
        if self.run.0 != NO_RUN.0 {
            match (
                self.metas[self.head..].last().map(|m| &**m),
                self.io_slices().last(),
            ) {
                (Some(Meta::Scratch(c)), Some(_)) if *c == self.run.0 => {}
                _ => {
                    return Err(format!(
                        "scratch run hint {:?} but the last segment is not that run",
                        self.run
                    ))
                }
            }
        }
        let owned = self.metas[self.head..]
            .iter()
            .zip(self.io_slices())
            .all(|(meta, iov)| match &**meta {
                Meta::Scratch(_) => true,
                Meta::Pinned(owner) => {
                    let bytes = owner.bytes();
                    let (start, end) = (bytes.as_ptr().addr(), bytes.as_ptr().addr() + bytes.len());
                    let at = iov.as_ptr().addr();
                    start <= at && at + iov.len() == end
                }
            });
        if !owned {
            return Err("a pinned iovec does not point into the tail of its owner's bytes".into());
        }
        let sum: usize = self.io_slices().iter().map(|s| s.len()).sum();
        if sum as u64 != self.bytes_in - self.bytes_out {
            return Err(format!(
                "bytes in {} − bytes out {} but iovecs hold {sum} bytes",
                self.bytes_in, self.bytes_out
            ));
        }
        if self.io_slices().iter().any(|s| s.is_empty()) {
            return Err("a zero-length segment is queued".into());
        }
        let held: usize = self.held.iter().map(|h| h.len).sum::<usize>() + self.front_sent_held;
        if held != self.held_len {
            return Err(format!(
                "held_len {} but held segments hold {held} bytes",
                self.held_len
            ));
        }
        if self.held_len as u64 > self.bytes_out {
            return Err(format!(
                "held {} but only {} bytes were ever sent",
                self.held_len, self.bytes_out
            ));
        }
        self.quick_empty().map(|_| ())
    }
}

/// Drops the owner in a passed pinned meta (any kind but `Arc`, which the caller drops inline).
///
/// # Safety
///
/// `meta` is live and is never read or dropped again (its segment is passed).
#[cold]
#[inline(never)]
unsafe fn release_in_place(meta: &mut ManuallyDrop<Meta>) {
    // SAFETY: the caller's contract.
    unsafe { ManuallyDrop::drop(meta) }
}

/// Hands `n` bytes of `block` passed by [`SegmentQueue::advance_copied`] back to `scratch`
/// (nothing if `n == 0`).
#[inline(always)]
fn consume_spent(scratch: &mut Scratch, block: BlockId, n: usize) {
    if n > 0 {
        scratch.consume(block, n);
    }
}

impl Drop for SegmentQueue {
    fn drop(&mut self) {
        for meta in &mut self.metas[self.head..] {
            // SAFETY: `metas[head..]` are live and, being dropped with the queue, never used
            // again; the spent `metas[..head]` are not touched.
            unsafe { ManuallyDrop::drop(meta) };
        }
    }
}

/// Lists the pending segments' metas only: a spent meta's owner was released or moved out, so
/// it must not be read, which a derived `Debug` would do.
impl fmt::Debug for SegmentQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SegmentQueue")
            .field("iovs", &self.io_slices())
            .field("metas", &&self.metas[self.head..])
            .field("held", &self.held)
            .field("held_len", &self.held_len)
            .field("bytes_in", &self.bytes_in)
            .field("bytes_out", &self.bytes_out)
            .field("front_sent_held", &self.front_sent_held)
            .field("front_held_end", &self.front_held_end)
            .field("released_through", &self.released_through)
            .field("run", &self.run)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn arc(byte: u8) -> Arc<[u8]> {
        Arc::from(&[byte; 8][..])
    }

    #[test]
    fn pinned_owners_are_dropped_once_whether_passed_or_dropped_with_the_queue() {
        let values: Vec<Arc<[u8]>> = (0..5).map(arc).collect();
        let mut scratch = Scratch::new(64);
        let mut q = SegmentQueue::default();
        for v in &values {
            q.push_pinned(Owner::new(Arc::clone(v)), 8);
        }
        q.audit().unwrap();
        q.advance(20, &mut scratch, Release::OnSend); // two values and half of the third
        assert_eq!(Arc::strong_count(&values[0]), 1, "released in place");
        assert_eq!(Arc::strong_count(&values[1]), 1);
        assert_eq!(Arc::strong_count(&values[2]), 2, "still pending");
        q.audit().unwrap();
        // `Debug` shows the pending metas only, never a spent one.
        let shown = format!("{q:?}");
        assert_eq!(shown.matches("Owner").count(), 3, "{shown}");
        drop(q);
        for v in &values {
            assert_eq!(Arc::strong_count(v), 1, "every owner dropped exactly once");
        }
    }
}
