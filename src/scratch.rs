//! Owned scratch storage: the memory headers and small values are formatted into.
//!
//! Scratch is a slab of fixed chunks. Only the *tail* chunk is written to, always past its
//! `filled` cursor, so committed bytes never move: a segment names its chunk and a byte range, and
//! that range stays valid until the segment is released. Each chunk keeps three cursors:
//!
//! ```text
//!  0        released        sent          filled          capacity
//!  |--------|---------------|-------------|---------------|
//!   reusable  held by kernel   pending      free for the next guard
//! ```
//!
//! With copying sends `released == sent`; zero-copy sends keep bytes between the two until the
//! kernel's completion. A chunk whose bytes are all released is reused: the tail in place (its
//! cursors go back to zero), any other chunk through the free list. A steady-state connection
//! therefore never allocates.

use core::fmt;

/// Index of a chunk in the slab.
pub(crate) type ChunkId = u32;

/// Default size of one scratch chunk.
///
/// Big enough for the headers of a large pipelined batch (64 binary-protocol headers are
/// 1.5 KiB) plus small values copied in under the flatten threshold, small enough that an
/// active connection does not pin much memory.
pub(crate) const DEFAULT_CHUNK_SIZE: usize = 16 * 1024;

struct Chunk {
    buf: Box<[u8]>,
    filled: usize,
    sent: usize,
    released: usize,
}

impl Chunk {
    fn with_capacity(cap: usize) -> Chunk {
        Chunk {
            buf: vec![0u8; cap].into_boxed_slice(),
            filled: 0,
            sent: 0,
            released: 0,
        }
    }
}

/// Where an open format guard writes: `chunk[start..pos]` holds its uncommitted bytes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Cursor {
    pub(crate) chunk: ChunkId,
    pub(crate) start: usize,
    pub(crate) pos: usize,
}

pub(crate) struct Scratch {
    chunks: Vec<Chunk>,
    /// Chunks no segment references, ready for reuse. Never contains `tail`.
    free: Vec<ChunkId>,
    tail: Option<ChunkId>,
    chunk_size: usize,
    /// Σ (filled − sent) over all chunks.
    unsent: usize,
    /// Σ (sent − released) over all chunks.
    held: usize,
}

impl Scratch {
    pub(crate) fn new(chunk_size: usize) -> Scratch {
        Scratch {
            chunks: Vec::new(),
            free: Vec::new(),
            tail: None,
            chunk_size: chunk_size.max(1),
            unsent: 0,
            held: 0,
        }
    }

    pub(crate) fn chunk_size(&self) -> usize {
        self.chunk_size
    }

    /// Bytes of heap memory held by this scratch area.
    pub(crate) fn capacity(&self) -> usize {
        self.chunks.iter().map(|c| c.buf.len()).sum()
    }

    /// True when no committed byte is unsent or unreleased and the tail's cursors are at rest.
    pub(crate) fn is_idle(&self) -> bool {
        let tail_at_rest = match self.tail {
            Some(t) => {
                let c = &self.chunks[t as usize];
                c.filled == 0 && c.sent == 0 && c.released == 0
            }
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

    /// Starts a guard at the end of the tail chunk, creating the tail if there is none.
    #[inline]
    pub(crate) fn open(&mut self) -> Cursor {
        let chunk = match self.tail {
            Some(t) => t,
            None => {
                let t = self.acquire(self.chunk_size);
                self.tail = Some(t);
                t
            }
        };
        let start = self.chunks[chunk as usize].filled;
        Cursor {
            chunk,
            start,
            pos: start,
        }
    }

    /// The writable bytes `cur.pos .. cur.pos + n`, moving the guard's uncommitted bytes to a larger
    /// chunk first if they do not fit. Committed bytes are never moved.
    #[inline]
    pub(crate) fn reserve(&mut self, cur: &mut Cursor, n: usize) -> &mut [u8] {
        if self.chunks[cur.chunk as usize].buf.len() - cur.pos < n {
            self.relocate(cur, n);
        }
        let end = cur.pos + n;
        let out = &mut self.chunks[cur.chunk as usize].buf[cur.pos..end];
        cur.pos = end;
        out
    }

    /// Mutable access to bytes already written by an open guard (to fill a reserved field).
    pub(crate) fn written_mut(&mut self, cur: &Cursor, from: usize, len: usize) -> &mut [u8] {
        debug_assert!(cur.start + from + len <= cur.pos);
        let at = cur.start + from;
        &mut self.chunks[cur.chunk as usize].buf[at..at + len]
    }

    #[cold]
    #[inline(never)]
    fn relocate(&mut self, cur: &mut Cursor, n: usize) {
        let used = cur.pos - cur.start;
        let need = used
            .checked_add(n)
            .expect("format guard length overflows usize");
        let cap = if need <= self.chunk_size {
            self.chunk_size
        } else {
            need.next_power_of_two()
        };
        let new = self.acquire(cap);
        let (from, to) = self.pair_mut(cur.chunk, new);
        to.buf[..used].copy_from_slice(&from.buf[cur.start..cur.pos]);
        let old = cur.chunk;
        *cur = Cursor {
            chunk: new,
            start: 0,
            pos: used,
        };
        if Some(old) != self.tail {
            // An earlier relocation's chunk: only this guard used it.
            self.recycle(old);
        }
    }

    /// Makes the guard's bytes committed; returns the committed range in `cur.chunk`.
    pub(crate) fn commit(&mut self, cur: Cursor) {
        if Some(cur.chunk) != self.tail {
            if let Some(old) = self.tail.replace(cur.chunk) {
                let c = &self.chunks[old as usize];
                if c.released == c.filled {
                    self.recycle(old);
                }
                // Otherwise the old tail is recycled when its last byte is released.
            }
        }
        let c = &mut self.chunks[cur.chunk as usize];
        debug_assert_eq!(c.filled, cur.start, "tail moved under an open guard");
        c.filled = cur.pos;
        self.unsent += cur.pos - cur.start;
    }

    /// Drops an open guard's bytes.
    pub(crate) fn abandon(&mut self, cur: Cursor) {
        if Some(cur.chunk) != self.tail {
            self.recycle(cur.chunk);
        }
    }

    /// Committed bytes of a segment.
    #[inline]
    pub(crate) fn bytes(&self, chunk: ChunkId, start: usize, end: usize) -> &[u8] {
        &self.chunks[chunk as usize].buf[start..end]
    }

    /// `n` bytes of `chunk` were accepted by the kernel and it keeps reading them until released.
    pub(crate) fn mark_sent(&mut self, chunk: ChunkId, n: usize) {
        let c = &mut self.chunks[chunk as usize];
        c.sent += n;
        debug_assert!(
            c.sent <= c.filled,
            "scratch chunk sent past its filled cursor"
        );
        self.unsent -= n;
        self.held += n;
    }

    /// `n` sent bytes of `chunk` are no longer read by anyone; reuses the chunk once all are.
    pub(crate) fn mark_released(&mut self, chunk: ChunkId, n: usize) {
        let c = &mut self.chunks[chunk as usize];
        c.released += n;
        debug_assert!(
            c.released <= c.sent,
            "scratch chunk released past its sent cursor"
        );
        self.held -= n;
        if c.released == c.filled {
            if Some(chunk) == self.tail {
                c.filled = 0;
                c.sent = 0;
                c.released = 0;
            } else {
                self.recycle(chunk);
            }
        }
    }

    /// Checks the cursors against the running totals; returns what disagrees.
    pub(crate) fn audit(&self) -> Result<(), String> {
        let mut unsent = 0;
        let mut held = 0;
        for (i, c) in self.chunks.iter().enumerate() {
            if !(c.released <= c.sent && c.sent <= c.filled && c.filled <= c.buf.len()) {
                return Err(format!(
                    "scratch chunk {i}: cursors out of order (released {}, sent {}, filled {}, capacity {})",
                    c.released, c.sent, c.filled, c.buf.len()
                ));
            }
            unsent += c.filled - c.sent;
            held += c.sent - c.released;
        }
        if unsent != self.unsent || held != self.held {
            return Err(format!(
                "scratch totals disagree with chunk cursors: unsent {} vs {unsent}, held {} vs {held}",
                self.unsent, self.held
            ));
        }
        if let Some(t) = self.tail {
            if self.free.contains(&t) {
                return Err(format!("tail chunk {t} is on the free list"));
            }
        }
        Ok(())
    }

    fn acquire(&mut self, cap: usize) -> ChunkId {
        if let Some(id) = self.free.pop() {
            let c = &mut self.chunks[id as usize];
            if c.buf.len() < cap {
                *c = Chunk::with_capacity(cap);
            }
            return id;
        }
        let id = ChunkId::try_from(self.chunks.len()).expect("more than u32::MAX scratch chunks");
        self.chunks.push(Chunk::with_capacity(cap));
        id
    }

    fn recycle(&mut self, id: ChunkId) {
        let c = &mut self.chunks[id as usize];
        c.filled = 0;
        c.sent = 0;
        c.released = 0;
        if c.buf.len() > self.chunk_size {
            // An oversized chunk from one large format: free it rather than keep it idle.
            c.buf = Box::default();
        }
        self.free.push(id);
    }

    fn pair_mut(&mut self, a: ChunkId, b: ChunkId) -> (&Chunk, &mut Chunk) {
        let (a, b) = (a as usize, b as usize);
        assert_ne!(a, b);
        if a < b {
            let (lo, hi) = self.chunks.split_at_mut(b);
            (&lo[a], &mut hi[0])
        } else {
            let (lo, hi) = self.chunks.split_at_mut(a);
            (&hi[0], &mut lo[b])
        }
    }
}

impl fmt::Debug for Scratch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cursors: Vec<_> = self
            .chunks
            .iter()
            .map(|c| (c.released, c.sent, c.filled, c.buf.len()))
            .collect();
        f.debug_struct("Scratch")
            .field("tail", &self.tail)
            .field("free", &self.free)
            .field("unsent", &self.unsent)
            .field("held", &self.held)
            .field("chunks(released, sent, filled, cap)", &cursors)
            .finish()
    }
}
