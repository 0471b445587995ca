//! [`IoVecBuilder`]: pending segments gathered as `IoSlice`s for one vectored write.

use std::io::IoSlice;

use smallvec::SmallVec;

use crate::sys;

// `sys::sendmsg` hands an `&[IoSlice]` to the kernel as `*const iovec`. std documents `IoSlice`
// as ABI-compatible with `iovec` on Unix; prove the part the cast relies on here.
#[cfg(unix)]
static_assertions::assert_eq_size!(IoSlice<'static>, libc::iovec);
#[cfg(unix)]
static_assertions::assert_eq_align!(IoSlice<'static>, libc::iovec);

/// Iovecs kept inline before the builder spills to the heap.
///
/// 64 covers a pipelined batch of 32 header + value pairs; beyond that one allocation per
/// vectored write is small next to the syscall it feeds (about 5 µs on loopback).
pub const INLINE_IOVECS: usize = 64;

/// Limits on one gather: how many iovecs and how many bytes.
///
/// # Examples
///
/// ```
/// use sendbuf::{GatherLimit, IoVecBuilder, WriteBuffer};
///
/// let mut buf = WriteBuffer::new();
/// buf.put_slice(b"0123456789");
///
/// // Send at most 4 bytes per call, for fairness between connections.
/// let limit = GatherLimit::default().max_bytes(4);
/// let mut iov = IoVecBuilder::with_limit(limit);
/// iov.gather(&buf);
/// assert_eq!(iov.bytes(), 4);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GatherLimit {
    max_iovecs: usize,
    max_bytes: usize,
}

impl Default for GatherLimit {
    /// The platform's `IOV_MAX` iovecs and no byte budget.
    fn default() -> Self {
        GatherLimit {
            max_iovecs: sys::iov_max(),
            max_bytes: usize::MAX,
        }
    }
}

impl GatherLimit {
    /// At most `n` iovecs (clamped to `1..=IOV_MAX`).
    ///
    /// # Examples
    ///
    /// ```
    /// let limit = sendbuf::GatherLimit::default().max_iovecs(16);
    /// assert_eq!(limit.iovecs(), 16);
    /// ```
    #[inline]
    pub fn max_iovecs(mut self, n: usize) -> Self {
        self.max_iovecs = n.clamp(1, sys::iov_max());
        self
    }

    /// At most `n` bytes (at least 1).
    ///
    /// # Examples
    ///
    /// ```
    /// let limit = sendbuf::GatherLimit::default().max_bytes(64 * 1024);
    /// assert_eq!(limit.bytes(), 64 * 1024);
    /// ```
    #[inline]
    pub fn max_bytes(mut self, n: usize) -> Self {
        self.max_bytes = n.max(1);
        self
    }

    /// The iovec cap.
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(sendbuf::GatherLimit::default().iovecs() >= 16);
    /// ```
    #[inline]
    pub fn iovecs(&self) -> usize {
        self.max_iovecs
    }

    /// The byte budget.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(sendbuf::GatherLimit::default().bytes(), usize::MAX);
    /// ```
    pub fn bytes(&self) -> usize {
        self.max_bytes
    }
}

/// Pending bytes of a [`WriteBuffer`](crate::WriteBuffer) as an array of `IoSlice`s, ready for
/// `sendmsg`, `writev` or [`Write::write_vectored`](std::io::Write::write_vectored).
///
/// Without a byte budget the builder borrows the buffer's own iovec array (the queue keeps its
/// pending segments in iovec form), so gathering copies nothing and allocates nothing, however
/// many iovecs are taken. With a [byte budget](GatherLimit::max_bytes) the last iovec may have
/// to be shortened: the builder copies the ones within the budget, up to [`INLINE_IOVECS`]
/// inline. The builder borrows the buffer; drop it before advancing by what the write accepted.
///
/// # Examples
///
/// ```
/// use std::io::Write;
/// use sendbuf::{IoVecBuilder, WriteBuffer};
///
/// let mut buf = WriteBuffer::new();
/// buf.put_slice(b"VALUE k 0 5\r\n");
/// buf.pin(vec![b'x'; 4096]);
/// buf.put_slice(b"\r\nEND\r\n");
///
/// let mut out = Vec::new();
/// let n = {
///     let mut iov = IoVecBuilder::new();
///     iov.gather(&buf);
///     assert_eq!(iov.as_slices().len(), 3);
///     out.write_vectored(iov.as_slices()).unwrap()
/// };
/// buf.advance(n);
/// assert!(buf.is_empty());
/// ```
#[derive(Debug)]
pub struct IoVecBuilder<'a> {
    /// The gathered iovecs when they had to be copied (a byte budget); empty otherwise.
    slices: SmallVec<[IoSlice<'a>; INLINE_IOVECS]>,
    /// The gathered iovecs when they are a prefix of the buffer's own array; empty otherwise.
    borrowed: &'a [IoSlice<'a>],
    limit: GatherLimit,
}

impl Default for IoVecBuilder<'_> {
    #[inline]
    fn default() -> Self {
        Self::new()
    }
}

impl<'a> IoVecBuilder<'a> {
    /// A builder with the default [`GatherLimit`].
    ///
    /// # Examples
    ///
    /// ```
    /// let iov = sendbuf::IoVecBuilder::new();
    /// assert!(iov.as_slices().is_empty());
    /// ```
    #[inline]
    pub fn new() -> Self {
        Self::with_limit(GatherLimit::default())
    }

    /// A builder with the given limits.
    ///
    /// # Examples
    ///
    /// ```
    /// use sendbuf::{GatherLimit, IoVecBuilder};
    /// let iov = IoVecBuilder::with_limit(GatherLimit::default().max_iovecs(8));
    /// assert_eq!(iov.limit().iovecs(), 8);
    /// ```
    #[inline]
    pub fn with_limit(limit: GatherLimit) -> Self {
        IoVecBuilder {
            slices: SmallVec::new(),
            borrowed: &[],
            limit,
        }
    }

    /// The limits this builder applies.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(sendbuf::IoVecBuilder::new().limit(), sendbuf::GatherLimit::default());
    /// ```
    #[inline]
    pub fn limit(&self) -> GatherLimit {
        self.limit
    }

    /// Replaces the contents with `buf`'s pending bytes, from the front, within the limits.
    /// Returns the number of bytes gathered.
    ///
    /// # Examples
    ///
    /// ```
    /// let mut buf = sendbuf::WriteBuffer::new();
    /// buf.put_slice(b"abc");
    /// let mut iov = sendbuf::IoVecBuilder::new();
    /// assert_eq!(iov.gather(&buf), 3);
    /// ```
    #[inline]
    pub fn gather(&mut self, buf: &'a crate::WriteBuffer) -> usize {
        self.clear();
        let pending = buf.io_slices();
        let all = &pending[..pending.len().min(self.limit.max_iovecs)];
        if self.limit.max_bytes == usize::MAX {
            self.borrowed = all;
            // Computed for the caller only (not stored), so a caller that ignores it pays
            // nothing once this is inlined.
            return if all.len() == pending.len() {
                buf.len()
            } else {
                all.iter().map(|s| s.len()).sum()
            };
        }
        self.gather_budget(all)
    }

    /// Copies the iovecs within the byte budget, shortening the last one.
    fn gather_budget(&mut self, all: &'a [IoSlice<'a>]) -> usize {
        let mut budget = self.limit.max_bytes;
        for iov in all {
            if budget == 0 {
                break;
            }
            let take = iov.len().min(budget);
            self.slices.push(IoSlice::new(&iov[..take]));
            budget -= take;
        }
        self.limit.max_bytes - budget
    }

    /// Empties the builder.
    ///
    /// # Examples
    ///
    /// ```
    /// let mut buf = sendbuf::WriteBuffer::new();
    /// buf.put_slice(b"abc");
    /// let mut iov = sendbuf::IoVecBuilder::new();
    /// iov.gather(&buf);
    /// iov.clear();
    /// assert_eq!(iov.bytes(), 0);
    /// ```
    #[inline]
    pub fn clear(&mut self) {
        self.slices.clear();
        self.borrowed = &[];
    }

    /// The gathered slices.
    ///
    /// # Examples
    ///
    /// ```
    /// let mut buf = sendbuf::WriteBuffer::new();
    /// buf.put_slice(b"abc");
    /// let mut iov = sendbuf::IoVecBuilder::new();
    /// iov.gather(&buf);
    /// assert_eq!(&*iov.as_slices()[0], b"abc");
    /// ```
    #[inline]
    pub fn as_slices(&self) -> &[IoSlice<'a>] {
        if self.slices.is_empty() {
            self.borrowed
        } else {
            &self.slices
        }
    }

    /// Total bytes in the gathered slices (summed on each call; [`gather`](Self::gather) returns
    /// the same figure).
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(sendbuf::IoVecBuilder::new().bytes(), 0);
    /// ```
    pub fn bytes(&self) -> usize {
        self.as_slices().iter().map(|s| s.len()).sum()
    }
}
