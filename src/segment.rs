//! The private segment queue: the only place the buffer's byte counts change.
//!
//! Pending segments are kept in iovec form: `iovs[head..]` is exactly the array a vectored write
//! takes, so gathering costs nothing and a partial write only shortens the front entry (as
//! `IoSlice::advance_slices` does). `metas` runs parallel to `iovs` and says what each iovec
//! points into: a scratch chunk, or a pinned value whose owner waits in `owners` (pinned values
//! are sent, and so released, in queue order, so their owners form a FIFO of their own and
//! `metas` stays a plain `Copy` array that is cleared and compacted without running any drop).
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
use crate::scratch::{ChunkId, Cursor, Scratch};

/// What advancing past bytes means for their memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Release {
    /// The kernel copied the bytes: release them now.
    OnSend,
    /// The kernel still reads them: hold them until `release_through` covers them.
    OnCompletion,
}

/// What a pending iovec points into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Meta {
    Scratch(ChunkId),
    /// A pinned value, owned by the front of `owners` when this segment is the first pinned
    /// one pending.
    Pinned,
}

/// What a held segment keeps alive.
#[derive(Debug)]
enum Kept {
    Scratch(ChunkId),
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

#[derive(Debug)]
pub(crate) struct SegmentQueue {
    /// `iovs[head..]` are the pending bytes, in order.
    ///
    /// Invariant: each pending iovec points into what `metas` at the same index names —
    /// committed, unreleased bytes of a live scratch chunk, or the bytes of a live pinned owner
    /// (the k-th pending `Meta::Pinned` is `owners[k]`) — and is never empty. The `'static` is a lie the queue keeps honest: iovecs leave only through
    /// [`io_slices`](Self::io_slices), which shortens it to the queue's borrow, and the memory
    /// they point to outlives that borrow (pinned owners are dropped, scratch reused, only
    /// through `&mut self`).
    iovs: Vec<IoSlice<'static>>,
    /// What each iovec points into. Invariant: as long as `iovs`, with at least its capacity
    /// (segments are pushed only through [`push_segment`](Self::push_segment)).
    metas: Vec<Meta>,
    /// Owners of the pending pinned segments, in queue order.
    owners: OwnerFifo,
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
    /// `(chunk, end)` when the last pending segment is the scratch run `chunk[..end]`, so the
    /// next commit at `chunk[end]` extends it; `NO_RUN` otherwise.
    run: (ChunkId, usize),
}

const NO_RUN: (ChunkId, usize) = (ChunkId::MAX, usize::MAX);

impl Default for SegmentQueue {
    fn default() -> Self {
        SegmentQueue {
            iovs: Vec::new(),
            metas: Vec::new(),
            owners: OwnerFifo::default(),
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
        debug_assert!(n > 0);
        self.count_in(n);
        if self.run == (cur.chunk, cur.start) {
            let last = self.iovs.last_mut().expect("a scratch run is pending");
            // Where the run starts now (its front may have been sent since).
            let from = last.as_ptr().addr().wrapping_sub(cur.base_addr());
            // SAFETY: the last pending iovec is the scratch run `cur.chunk[from..cur.start]`
            // (`self.run`), committed and unreleased; `cur` was just committed right after it.
            *last = unsafe { scratch.committed_iovec(cur, from) };
            self.run.1 = cur.pos;
            return;
        }
        // SAFETY: `cur` was just committed; its bytes are released only after this segment.
        let iov = unsafe { scratch.committed_iovec(cur, cur.start) };
        self.push_segment(iov, Meta::Scratch(cur.chunk));
        self.run = (cur.chunk, cur.pos);
    }

    /// Appends a pinned value of `len > 0` bytes.
    #[inline]
    pub(crate) fn push_pinned(&mut self, owner: Owner, len: usize) {
        debug_assert!(len > 0 && owner.bytes().len() == len);
        self.count_in(len);
        self.run = NO_RUN;
        let bytes = if owner.bytes_stay_put() {
            // Shared or static bytes: moving the owner into `owners` neither moves nor
            // invalidates them, so the pointer can be taken now (`bytes_stay_put` is known at
            // compile time when `pin` is inlined, which skips a `match` on the stored owner).
            let bytes = owner.bytes();
            let raw = (bytes.as_ptr(), bytes.len());
            self.owners.push(owner);
            raw
        } else {
            // Take the pointer only once the owner sits where it stays until released.
            self.owners.push(owner);
            let bytes = self.owners.back().bytes();
            (bytes.as_ptr(), bytes.len())
        };
        // SAFETY: the bytes are owned by (or `'static` for) `owner`, which stays in `owners`
        // until this iovec is advanced past; moving an `Owner` never moves the bytes it owns
        // (they live on the heap or are static), and the pointer was taken after the last move
        // that could invalidate it (`Owner::bytes_stay_put`).
        let iov = IoSlice::new(unsafe { core::slice::from_raw_parts(bytes.0, bytes.1) });
        self.push_segment(iov, Meta::Pinned);
    }

    /// Appends a pending segment: its iovec and, at the same index, its meta.
    ///
    /// The two arrays have one length and `metas` at least the capacity of `iovs` (only
    /// [`make_room`](Self::make_room) grows them), so one capacity test covers both pushes.
    #[inline(always)]
    fn push_segment(&mut self, iov: IoSlice<'static>, meta: Meta) {
        if self.iovs.len() == self.iovs.capacity() {
            self.make_room();
        }
        let len = self.iovs.len();
        debug_assert!(self.metas.len() == len && self.metas.capacity() > len);
        // SAFETY: `len < iovs.capacity() <= metas.capacity()` (`make_room` ensured the first,
        // the arrays' invariant the second) and both arrays are `len` long, so slot `len` of
        // each is allocated and unused; it is written before the length covers it. Both are
        // `Copy` types, so no drop is skipped or doubled.
        unsafe {
            self.iovs.as_mut_ptr().add(len).write(iov);
            self.iovs.set_len(len + 1);
            self.metas.as_mut_ptr().add(len).write(meta);
            self.metas.set_len(len + 1);
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
    pub(crate) fn advance(&mut self, mut n: usize, scratch: &mut Scratch, mode: Release) {
        debug_assert!(n <= self.len());
        if mode == Release::OnSend && self.front_sent_held == 0 {
            // The copying case: every segment passed is released now, and nothing in this
            // loop can make a later one partly held.
            self.advance_copied(n, scratch);
            return;
        }
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
            // `Drop` leaves the queue consistent. (Each arm takes its owner itself: an
            // `Option<Owner>` carried across cost a discriminant test per segment.)
            let meta = self.metas[h];
            match (meta, now) {
                (Meta::Scratch(chunk), true) => {
                    scratch.consume(chunk, rem);
                    self.reset_if_drained();
                }
                (Meta::Pinned, true) => {
                    // Released where it sits (no move through the stack); the arrays are
                    // reset after, and a panicking `Drop` leaves them consistent, if unreset.
                    self.owners.release_front();
                    self.reset_if_drained();
                }
                (Meta::Scratch(_), false) => {
                    self.reset_if_drained();
                    self.finish(meta, None, rem, scratch, mode);
                }
                (Meta::Pinned, false) => {
                    let owner = self.pop_owner();
                    self.reset_if_drained();
                    self.finish(meta, Some(owner), rem, scratch, mode);
                }
            }
        }
    }

    /// [`advance`](Self::advance) with copying sends and no pinned front value partly held:
    /// each segment passed is counted out, moved past and released at once. One pass over
    /// the pending slices (no per-segment bounds checks or mode tests); the arrays are reset
    /// once, at the end.
    ///
    /// Scratch bytes passed are handed back to `scratch` once per run of segments in one chunk
    /// (the headers between the pinned values of a batch all sit in the tail) rather than
    /// once per segment. That is the same as consuming them one by one: a chunk is reused
    /// only once every committed byte of it is consumed, and the bytes of one chunk are queued,
    /// so passed, in order. They are handed back before any value whose `Drop` may panic is
    /// released, so a panic leaves the scratch cursors agreeing with the queue.
    #[inline]
    fn advance_copied(&mut self, mut n: usize, scratch: &mut Scratch) {
        debug_assert!(self.front_sent_held == 0);
        if n == 0 {
            return;
        }
        // Bytes of `spent_chunk` passed and not yet consumed (0: none).
        let mut spent_chunk = ChunkId::MAX;
        let mut spent = 0usize;
        let start = self.head;
        let iovs = &mut self.iovs[start..];
        let metas = &self.metas[start..start + iovs.len()];
        if let (Some(iov), Some(meta)) = (iovs.first_mut(), metas.first()) {
            if n < iov.len() {
                // Inside the front segment: the usual case for a long scratch run.
                self.bytes_out += n as u64;
                iov.advance(n);
                if let Meta::Scratch(chunk) = *meta {
                    scratch.consume(chunk, n);
                }
                return;
            }
        }
        for (iov, meta) in iovs.iter_mut().zip(metas) {
            let rem = iov.len();
            if n < rem {
                // `n > 0`: the loop stops once `n` reaches 0, and it did not start at 0.
                self.bytes_out += n as u64;
                iov.advance(n);
                if let Meta::Scratch(chunk) = *meta {
                    if chunk == spent_chunk {
                        spent += n;
                    } else {
                        scratch.consume(chunk, n);
                    }
                }
                consume_spent(scratch, spent_chunk, spent);
                return;
            }
            // Counted out and off the queue before a pinned value's `Drop` runs, so a
            // panicking `Drop` leaves the queue consistent (if not yet reset).
            self.bytes_out += rem as u64;
            self.head += 1;
            n -= rem;
            match *meta {
                Meta::Scratch(chunk) => {
                    if chunk != spent_chunk {
                        consume_spent(scratch, spent_chunk, spent);
                        spent_chunk = chunk;
                        spent = 0;
                    }
                    spent += rem;
                }
                Meta::Pinned => {
                    if self.owners.front_drop_may_panic() {
                        consume_spent(scratch, spent_chunk, spent);
                        spent = 0;
                    }
                    self.owners.release_front();
                }
            }
            if n == 0 {
                break;
            }
        }
        debug_assert_eq!(n, 0, "advanced past what is pending");
        consume_spent(scratch, spent_chunk, spent);
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
            // Every pending pinned segment is advanced past, so every owner was popped.
            self.owners.reset();
        }
    }

    /// The owner of the pinned segment just advanced past: the front of `owners`.
    #[inline]
    fn pop_owner(&mut self) -> Owner {
        self.owners.pop()
    }

    /// Accounts for `step` bytes sent from inside the front segment `h`.
    #[inline]
    fn advance_inside(&mut self, h: usize, step: usize, scratch: &mut Scratch, mode: Release) {
        match (self.metas[h], mode) {
            (Meta::Scratch(chunk), Release::OnSend) => scratch.consume(chunk, step),
            (Meta::Scratch(chunk), Release::OnCompletion) => {
                scratch.mark_sent(chunk, step);
                self.hold(Kept::Scratch(chunk), step, self.bytes_out);
            }
            (Meta::Pinned, Release::OnSend) => {}
            (Meta::Pinned, Release::OnCompletion) => {
                self.front_sent_held += step;
                self.front_held_end = self.bytes_out;
                self.held_len += step;
            }
        }
    }

    /// Accounts for the last `step` bytes of a segment, now fully sent, outside the copying
    /// fast path; `owner` is the pinned segment's owner, already taken off `owners`.
    fn finish(
        &mut self,
        meta: Meta,
        owner: Option<Owner>,
        step: usize,
        scratch: &mut Scratch,
        mode: Release,
    ) {
        let earlier = std::mem::take(&mut self.front_sent_held);
        match (meta, owner, mode) {
            (Meta::Scratch(chunk), None, Release::OnSend) => scratch.consume(chunk, step),
            (Meta::Pinned, Some(owner), Release::OnSend) => {
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
            (Meta::Scratch(chunk), None, Release::OnCompletion) => {
                scratch.mark_sent(chunk, step);
                self.hold(Kept::Scratch(chunk), step, self.bytes_out);
            }
            (Meta::Pinned, Some(owner), Release::OnCompletion) => {
                self.held_len -= earlier;
                self.hold(Kept::Pinned(owner), step + earlier, self.bytes_out);
            }
            _ => unreachable!("a pinned segment without its owner, or a scratch run with one"),
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
                Kept::Scratch(chunk) => scratch.mark_released(chunk, h.len),
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
            // The partly sent front segment is pinned, so its owner is the first one.
            debug_assert_eq!(self.metas[self.head], Meta::Pinned);
            core::mem::forget(self.owners.pop());
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
        self.owners = OwnerFifo::default();
        self.head = 0;
        self.run = NO_RUN;
        self.held = VecDeque::new();
    }

    /// Bytes of memory the queue's own arrays hold.
    pub(crate) fn memory(&self) -> usize {
        self.iovs.capacity() * core::mem::size_of::<IoSlice<'static>>()
            + self.metas.capacity() * core::mem::size_of::<Meta>()
            + self.owners.capacity() * core::mem::size_of::<Owner>()
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
                "iovecs ({}) and owners ({}) out of step, head {}",
                self.iovs.len(),
                self.metas.len(),
                self.head
            ));
        }
        if self.run != NO_RUN {
            match (self.metas[self.head..].last(), self.io_slices().last()) {
                (Some(Meta::Scratch(c)), Some(_)) if *c == self.run.0 => {}
                _ => {
                    return Err(format!(
                        "scratch run hint {:?} but the last segment is not that run",
                        self.run
                    ))
                }
            }
        }
        let pinned = self.metas[self.head..]
            .iter()
            .filter(|m| **m == Meta::Pinned)
            .count();
        if pinned != self.owners.len() {
            return Err(format!(
                "{pinned} pinned segments pending but {} owners queued",
                self.owners.len()
            ));
        }
        let owned = self.metas[self.head..]
            .iter()
            .zip(self.io_slices())
            .filter(|(m, _)| **m == Meta::Pinned)
            .zip(self.owners.iter())
            .all(|((_, iov), owner)| {
                let bytes = owner.bytes();
                let (start, end) = (bytes.as_ptr().addr(), bytes.as_ptr().addr() + bytes.len());
                let at = iov.as_ptr().addr();
                start <= at && at + iov.len() == end
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

/// Hands `n` bytes of `chunk` passed by [`SegmentQueue::advance_copied`] back to `scratch`
/// (nothing if `n == 0`).
#[inline(always)]
fn consume_spent(scratch: &mut Scratch, chunk: ChunkId, n: usize) {
    if n > 0 {
        scratch.consume(chunk, n);
    }
}

/// The owners of the pending pinned values, first in, first out: a `Vec` and the index of its
/// front, so a push is a `Vec::push` and a pop a read and an increment (a `VecDeque` wraps its
/// index on both). Spent slots are reclaimed when the queue drains ([`reset`](Self::reset)) or,
/// on a queue that never drains, by compaction when the `Vec` is full, as for the iovecs.
///
/// Invariant: `slots[head..]` are live owners; `slots[..head]` were moved out by
/// [`pop`](Self::pop) and are never read or dropped again (hence `ManuallyDrop`).
#[derive(Default)]
struct OwnerFifo {
    slots: Vec<ManuallyDrop<Owner>>,
    head: usize,
}

impl OwnerFifo {
    #[inline]
    fn len(&self) -> usize {
        self.slots.len() - self.head
    }

    #[inline]
    fn capacity(&self) -> usize {
        self.slots.capacity()
    }

    /// Appends `owner`.
    #[inline]
    fn push(&mut self, owner: Owner) {
        if self.slots.len() == self.slots.capacity() && self.head * 2 >= self.slots.len() {
            self.compact();
        }
        self.slots.push(ManuallyDrop::new(owner));
    }

    /// The owner pushed last.
    #[inline]
    fn back(&self) -> &Owner {
        self.slots.last().expect("an owner is queued")
    }

    /// Drops the spent front slots (owners already moved out: nothing runs) instead of growing.
    #[cold]
    #[inline(never)]
    fn compact(&mut self) {
        self.slots.drain(..self.head);
        self.head = 0;
    }

    /// Takes the front owner.
    ///
    /// # Panics
    ///
    /// If no owner is queued (a bug of the segment queue: a pinned segment without its owner).
    #[inline]
    fn pop(&mut self) -> Owner {
        let slot = &mut self.slots[self.head];
        // SAFETY: `slots[head]` is live (the invariant, and the index is in bounds); moving
        // `head` past it right after marks it spent, so it is never read or dropped again.
        let owner = unsafe { ManuallyDrop::take(slot) };
        self.head += 1;
        owner
    }

    /// Releases the front owner where it sits, after marking its slot spent: a panicking
    /// `Drop` leaves the FIFO consistent.
    ///
    /// # Panics
    ///
    /// If no owner is queued (a bug of the segment queue), or if the value's `Drop` panics.
    #[inline]
    fn release_front(&mut self) {
        let h = self.head;
        let slot = &mut self.slots[h];
        self.head = h + 1;
        match &mut **slot {
            Owner::Static(_) => {}
            // SAFETY (both arms): `slots[h]` was live (the invariant, and the index is in
            // bounds) and is spent now that `head` is past it, so it is dropped exactly once
            // and never read again. (The `Arc` arm drops inline, as `Owner::release` does.)
            Owner::Arc(arc) => unsafe { core::ptr::drop_in_place(arc) },
            _ => unsafe { ManuallyDrop::drop(slot) },
        }
    }

    /// False when releasing the front owner cannot panic: its `Drop` is the allocator's
    /// (which must not unwind) or nothing.
    #[inline]
    fn front_drop_may_panic(&self) -> bool {
        debug_assert!(self.len() > 0, "no owner queued");
        // SAFETY: `slots[head]` is live (the invariant; the caller has a pinned segment
        // pending, so an owner is queued), hence in bounds.
        let front = unsafe { self.slots.get_unchecked(self.head) };
        !matches!(**front, Owner::Static(_) | Owner::Arc(_) | Owner::Vec(_))
    }

    /// Forgets the spent slots once every owner is popped, so the `Vec` is reused from the start.
    #[inline]
    fn reset(&mut self) {
        debug_assert_eq!(self.len(), 0, "owners left in a drained queue");
        // `ManuallyDrop` slots: clearing runs no drop (and every slot is spent anyway).
        self.slots.clear();
        self.head = 0;
    }

    /// The live owners, front first.
    fn iter(&self) -> impl Iterator<Item = &Owner> + '_ {
        self.slots[self.head..].iter().map(|o| &**o)
    }
}

/// Lists the live owners only: a spent slot's owner was moved out (and possibly dropped), so it
/// must not be read, which a derived `Debug` would do.
impl fmt::Debug for OwnerFifo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl Drop for OwnerFifo {
    fn drop(&mut self) {
        for slot in &mut self.slots[self.head..] {
            // SAFETY: `slots[head..]` are live and, being dropped with the queue, never used
            // again; `slots[..head]` (moved out) are not touched.
            unsafe { ManuallyDrop::drop(slot) };
        }
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
    fn owner_fifo_is_first_in_first_out_and_drops_each_owner_once() {
        let values: Vec<Arc<[u8]>> = (0..5).map(arc).collect();
        let mut fifo = OwnerFifo::default();
        for v in &values {
            fifo.push(Owner::new(Arc::clone(v)));
        }
        assert_eq!(fifo.back().bytes(), &values[4][..]);
        assert_eq!(fifo.pop().bytes(), &values[0][..]);
        fifo.release_front();
        assert_eq!(Arc::strong_count(&values[1]), 1, "released in place");
        assert_eq!(fifo.len(), 3);
        let live: Vec<&[u8]> = fifo.iter().map(Owner::bytes).collect();
        assert_eq!(live, [&values[2][..], &values[3][..], &values[4][..]]);
        // `Debug` shows the live owners only, never a spent slot.
        let shown = format!("{fifo:?}");
        assert_eq!(shown.matches("Owner").count(), 3, "{shown}");
        // Dropping the FIFO drops the live owners only (the popped one was dropped by the test).
        drop(fifo);
        for v in &values {
            assert_eq!(Arc::strong_count(v), 1, "every owner dropped exactly once");
        }
    }

    #[test]
    fn owner_fifo_compacts_instead_of_growing_when_it_never_drains() {
        let value = arc(7);
        let mut fifo = OwnerFifo::default();
        for _ in 0..4 {
            fifo.push(Owner::new(Arc::clone(&value)));
        }
        let capacity = fifo.capacity();
        let mut next = 4usize;
        for _ in 0..10 * capacity {
            fifo.release_front();
            fifo.push(Owner::Static(if next % 2 == 0 { b"even" } else { b"odd" }));
            next += 1;
        }
        // Compaction waits until the spent slots are half the `Vec`: at most one doubling.
        let bounded = fifo.capacity();
        assert!(
            bounded <= 2 * capacity,
            "grew to {bounded} for 4 live owners"
        );
        assert_eq!(fifo.len(), 4);
        let live: Vec<&[u8]> = fifo.iter().map(Owner::bytes).collect();
        let want: Vec<&[u8]> = (next - 4..next)
            .map(|i| {
                if i % 2 == 0 {
                    &b"even"[..]
                } else {
                    &b"odd"[..]
                }
            })
            .collect();
        assert_eq!(live, want, "order kept across compactions");
        assert_eq!(Arc::strong_count(&value), 1, "the first four released");
        for _ in 0..4 {
            fifo.release_front();
        }
        fifo.reset();
        assert_eq!((fifo.len(), fifo.capacity()), (0, bounded));
    }
}
