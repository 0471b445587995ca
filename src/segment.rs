//! The private segment queue: the only place the buffer's byte counts change.
//!
//! Every segment goes through three steps:
//!
//! 1. *pending*: in `pending`, not yet accepted by the kernel;
//! 2. *sent*: advanced past;
//! 3. *released*: the pinned owner dropped, the scratch bytes reusable.
//!
//! With copying sends steps 2 and 3 happen together ([`Release::OnSend`]). With sends the kernel
//! completes later ([`Release::OnCompletion`]) a sent segment moves to `held`, tagged with the
//! stream offset of its last byte, until [`SegmentQueue::release_through`] says the kernel is done
//! with everything before an offset.

use std::collections::VecDeque;

use crate::pinned::Owner;
use crate::scratch::{ChunkId, Scratch};

/// What advancing past bytes means for their memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Release {
    /// The kernel copied the bytes: release them now.
    OnSend,
    /// The kernel still reads them: hold them until `release_through` covers them.
    #[allow(dead_code)] // used by zero-copy send paths and the core's tests
    OnCompletion,
}

#[derive(Debug)]
pub(crate) enum Segment {
    /// `chunk[start..end]` of scratch.
    Scratch {
        chunk: ChunkId,
        start: usize,
        end: usize,
    },
    /// `owner.bytes()[start..end]`.
    Pinned {
        owner: Owner,
        start: usize,
        end: usize,
    },
}

impl Segment {
    #[inline]
    fn len(&self) -> usize {
        match *self {
            Segment::Scratch { start, end, .. } | Segment::Pinned { start, end, .. } => end - start,
        }
    }

    /// The segment's unsent bytes.
    #[inline]
    pub(crate) fn bytes<'a>(&'a self, scratch: &'a Scratch) -> &'a [u8] {
        match self {
            Segment::Scratch { chunk, start, end } => scratch.bytes(*chunk, *start, *end),
            Segment::Pinned { owner, start, end } => &owner.bytes()[*start..*end],
        }
    }
}

/// A sent segment the kernel may still read, and the stream offset just past its last byte.
#[derive(Debug)]
struct Held {
    segment: Segment,
    /// For scratch: bytes of the chunk to release. For pinned values: the owner to drop.
    len: usize,
    end_offset: u64,
}

#[derive(Debug, Default)]
pub(crate) struct SegmentQueue {
    pending: VecDeque<Segment>,
    held: VecDeque<Held>,
    /// Σ len of `pending`.
    pending_len: usize,
    /// Bytes sent but not released.
    held_len: usize,
    /// Bytes ever committed or pinned.
    bytes_in: u64,
    /// Bytes ever advanced past.
    bytes_out: u64,
    /// Bytes ever released.
    bytes_released: u64,
    /// Bytes of the front pinned segment already sent in `OnCompletion` mode (its owner cannot be
    /// split, so it stays pending until its last byte is sent)...
    front_sent_held: usize,
    /// ...and the stream offset just past the last of them.
    front_held_end: u64,
}

impl SegmentQueue {
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.pending_len
    }

    #[inline]
    pub(crate) fn held_len(&self) -> usize {
        self.held_len
    }

    pub(crate) fn segments(&self) -> usize {
        self.pending.len()
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &Segment> {
        self.pending.iter()
    }

    pub(crate) fn front(&self) -> Option<&Segment> {
        self.pending.front()
    }

    /// Totals: (bytes in, bytes out, bytes released).
    pub(crate) fn totals(&self) -> (u64, u64, u64) {
        (self.bytes_in, self.bytes_out, self.bytes_released)
    }

    /// Appends committed scratch bytes, merging with the last segment when contiguous.
    #[inline]
    pub(crate) fn push_scratch(&mut self, chunk: ChunkId, start: usize, end: usize) {
        let n = end - start;
        if n == 0 {
            return;
        }
        self.count_in(n);
        if let Some(Segment::Scratch {
            chunk: c, end: e, ..
        }) = self.pending.back_mut()
        {
            if *c == chunk && *e == start {
                *e = end;
                return;
            }
        }
        self.pending
            .push_back(Segment::Scratch { chunk, start, end });
    }

    /// Appends a pinned value of `len > 0` bytes.
    #[inline]
    pub(crate) fn push_pinned(&mut self, owner: Owner, len: usize) {
        debug_assert!(len > 0 && owner.bytes().len() == len);
        self.count_in(len);
        self.pending.push_back(Segment::Pinned {
            owner,
            start: 0,
            end: len,
        });
    }

    #[inline]
    fn count_in(&mut self, n: usize) {
        self.pending_len += n;
        self.bytes_in += n as u64;
        debug_assert_eq!(self.bytes_in - self.bytes_out, self.pending_len as u64);
    }

    /// Moves past exactly `n <= len()` pending bytes.
    ///
    /// Each segment is counted out before it is released, so a panicking `Drop` of a pinned value
    /// leaves the counts consistent with the queue.
    pub(crate) fn advance(&mut self, mut n: usize, scratch: &mut Scratch, mode: Release) {
        debug_assert!(n <= self.pending_len);
        while n > 0 {
            let front = self
                .pending
                .front_mut()
                .expect("pending_len > 0 with no segment");
            let rem = front.len();
            let step = n.min(rem);
            self.pending_len -= step;
            self.bytes_out += step as u64;
            n -= step;
            debug_assert_eq!(self.bytes_in - self.bytes_out, self.pending_len as u64);
            if step < rem {
                // Stops inside this segment.
                match front {
                    Segment::Scratch { chunk, start, .. } => {
                        let (chunk, from) = (*chunk, *start);
                        *start += step;
                        scratch.mark_sent(chunk, step);
                        match mode {
                            Release::OnSend => self.release_scratch(scratch, chunk, step),
                            Release::OnCompletion => self.hold(
                                Segment::Scratch {
                                    chunk,
                                    start: from,
                                    end: from + step,
                                },
                                step,
                                self.bytes_out,
                            ),
                        }
                    }
                    Segment::Pinned { start, .. } => {
                        *start += step;
                        match mode {
                            Release::OnSend => self.bytes_released += step as u64,
                            Release::OnCompletion => {
                                self.front_sent_held += step;
                                self.front_held_end = self.bytes_out;
                                self.held_len += step;
                            }
                        }
                    }
                }
                return;
            }
            let seg = self.pending.pop_front().expect("front exists");
            let earlier = std::mem::take(&mut self.front_sent_held);
            match (seg, mode) {
                (Segment::Scratch { chunk, .. }, Release::OnSend) => {
                    scratch.mark_sent(chunk, step);
                    self.release_scratch(scratch, chunk, step);
                }
                (seg @ Segment::Pinned { .. }, Release::OnSend) => {
                    self.bytes_released += step as u64;
                    if earlier == 0 {
                        drop(seg);
                    } else {
                        // An earlier zero-copy send still reads this value's first bytes: the
                        // owner lives until that send's completion.
                        self.held_len -= earlier;
                        self.hold(seg, earlier, self.front_held_end);
                    }
                }
                (seg @ Segment::Scratch { chunk, .. }, Release::OnCompletion) => {
                    scratch.mark_sent(chunk, step);
                    self.hold(seg, step, self.bytes_out);
                }
                (seg @ Segment::Pinned { .. }, Release::OnCompletion) => {
                    self.held_len -= earlier;
                    self.hold(seg, step + earlier, self.bytes_out);
                }
            }
        }
    }

    #[inline]
    fn release_scratch(&mut self, scratch: &mut Scratch, chunk: ChunkId, n: usize) {
        scratch.mark_released(chunk, n);
        self.bytes_released += n as u64;
    }

    fn hold(&mut self, segment: Segment, len: usize, end_offset: u64) {
        self.held_len += len;
        self.held.push_back(Held {
            segment,
            len,
            end_offset,
        });
    }

    /// The kernel no longer reads any stream byte before `offset`: releases every held segment
    /// that ends at or before it. Returns the bytes released.
    #[allow(dead_code)] // used by zero-copy send paths and the core's tests
    pub(crate) fn release_through(&mut self, offset: u64, scratch: &mut Scratch) -> usize {
        let mut released = 0;
        while self.held.front().is_some_and(|h| h.end_offset <= offset) {
            let h = self.held.pop_front().expect("front exists");
            self.held_len -= h.len;
            self.bytes_released += h.len as u64;
            released += h.len;
            match h.segment {
                Segment::Scratch { chunk, .. } => scratch.mark_released(chunk, h.len),
                Segment::Pinned { owner, .. } => drop(owner),
            }
        }
        released
    }

    /// Drops every pending segment as if its bytes had been copied out. Held segments stay until
    /// their completion: the kernel may still be reading them.
    pub(crate) fn clear(&mut self, scratch: &mut Scratch) {
        self.advance(self.pending_len, scratch, Release::OnSend);
    }

    /// O(1) emptiness, or `Err` when the counts and the queues disagree.
    #[inline]
    pub(crate) fn quick_empty(&self) -> Result<bool, String> {
        let counted = self.pending_len == 0 && self.held_len == 0;
        let queued = self.pending.is_empty() && self.held.is_empty();
        let balanced = self.bytes_in == self.bytes_out && self.bytes_out == self.bytes_released;
        if counted == queued && counted == balanced {
            Ok(counted)
        } else {
            Err(format!(
                "segment queue disagrees: counted empty {counted}, queues empty {queued}, totals balanced {balanced}"
            ))
        }
    }

    /// Full O(segments) audit of the counts against the queue.
    pub(crate) fn audit(&self) -> Result<(), String> {
        let sum: usize = self.pending.iter().map(Segment::len).sum();
        if sum != self.pending_len {
            return Err(format!(
                "pending_len {} but segments hold {sum} bytes",
                self.pending_len
            ));
        }
        if self.pending.iter().any(|s| s.len() == 0) {
            return Err("a zero-length segment is queued".into());
        }
        let held: usize = self.held.iter().map(|h| h.len).sum::<usize>() + self.front_sent_held;
        if held != self.held_len {
            return Err(format!(
                "held_len {} but held segments hold {held} bytes",
                self.held_len
            ));
        }
        if self.bytes_in - self.bytes_out != self.pending_len as u64 {
            return Err(format!(
                "bytes in {} − bytes out {} ≠ pending {}",
                self.bytes_in, self.bytes_out, self.pending_len
            ));
        }
        if self.bytes_out - self.bytes_released != self.held_len as u64 {
            return Err(format!(
                "bytes out {} − bytes released {} ≠ held {}",
                self.bytes_out, self.bytes_released, self.held_len
            ));
        }
        self.quick_empty().map(|_| ())
    }
}
