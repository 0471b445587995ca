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
/// Built like [`PoolLimits`](crate::PoolLimits): start from [`new`](Self::new) (the
/// platform's `IOV_MAX` iovecs, no byte budget) and narrow it with the `with_` methods.
///
/// # Examples
///
/// ```
/// use sendbuf::{GatherLimits, IoVecBuilder, WriteBuffer};
///
/// let mut buf = WriteBuffer::new();
/// buf.put_slice(b"0123456789");
///
/// // Send at most 4 bytes per call, for fairness between connections.
/// let limits = GatherLimits::new().with_max_bytes(4);
/// let mut iov = IoVecBuilder::with_limits(limits);
/// iov.gather(&buf);
/// assert_eq!(iov.bytes(), 4);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GatherLimits {
    max_iovecs: usize,
    max_bytes: usize,
}

impl Default for GatherLimits {
    /// The same as [`GatherLimits::new`].
    fn default() -> Self {
        Self::new()
    }
}

impl GatherLimits {
    /// The platform's `IOV_MAX` iovecs and no byte budget.
    ///
    /// # Examples
    ///
    /// ```
    /// let limits = sendbuf::GatherLimits::new();
    /// assert!(limits.max_iovecs() >= 16);
    /// assert_eq!(limits.max_bytes(), usize::MAX);
    /// ```
    #[inline]
    pub fn new() -> GatherLimits {
        GatherLimits {
            max_iovecs: sys::iov_max(),
            max_bytes: usize::MAX,
        }
    }

    /// At most `n` iovecs (clamped to `1..=IOV_MAX`).
    ///
    /// # Examples
    ///
    /// ```
    /// let limits = sendbuf::GatherLimits::new().with_max_iovecs(16);
    /// assert_eq!(limits.max_iovecs(), 16);
    /// ```
    #[inline]
    pub fn with_max_iovecs(mut self, n: usize) -> GatherLimits {
        self.max_iovecs = n.clamp(1, sys::iov_max());
        self
    }

    /// At most `n` bytes (at least 1).
    ///
    /// # Examples
    ///
    /// ```
    /// let limits = sendbuf::GatherLimits::new().with_max_bytes(64 * 1024);
    /// assert_eq!(limits.max_bytes(), 64 * 1024);
    /// ```
    #[inline]
    pub const fn with_max_bytes(mut self, n: usize) -> GatherLimits {
        self.max_bytes = if n == 0 { 1 } else { n };
        self
    }

    /// The iovec cap.
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(sendbuf::GatherLimits::new().max_iovecs() >= 16);
    /// ```
    #[inline]
    pub const fn max_iovecs(&self) -> usize {
        self.max_iovecs
    }

    /// The byte budget.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(sendbuf::GatherLimits::new().max_bytes(), usize::MAX);
    /// ```
    #[inline]
    pub const fn max_bytes(&self) -> usize {
        self.max_bytes
    }
}

/// Pending bytes of a [`WriteBuffer`](crate::WriteBuffer) as an array of `IoSlice`s, ready for
/// `sendmsg`, `writev` or [`Write::write_vectored`](std::io::Write::write_vectored).
///
/// Without a byte budget the builder borrows the buffer's own iovec array (the queue keeps its
/// pending segments in iovec form), so gathering copies nothing and allocates nothing, however
/// many iovecs are taken. With a [byte budget](GatherLimits::max_bytes) the last iovec may have
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
    limit: GatherLimits,
}

impl Default for IoVecBuilder<'_> {
    #[inline]
    fn default() -> Self {
        Self::new()
    }
}

impl<'a> IoVecBuilder<'a> {
    /// A builder with the default [`GatherLimits`].
    ///
    /// # Examples
    ///
    /// ```
    /// let iov = sendbuf::IoVecBuilder::new();
    /// assert!(iov.as_slices().is_empty());
    /// ```
    #[inline]
    pub fn new() -> Self {
        Self::with_limits(GatherLimits::new())
    }

    /// A builder with the given limits.
    ///
    /// # Examples
    ///
    /// ```
    /// use sendbuf::{GatherLimits, IoVecBuilder};
    /// let iov = IoVecBuilder::with_limits(GatherLimits::new().with_max_iovecs(8));
    /// assert_eq!(iov.limits().max_iovecs(), 8);
    /// ```
    #[inline]
    pub fn with_limits(limits: GatherLimits) -> Self {
        IoVecBuilder {
            slices: SmallVec::new(),
            borrowed: &[],
            limit: limits,
        }
    }

    /// The limits this builder applies.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(sendbuf::IoVecBuilder::new().limits(), sendbuf::GatherLimits::new());
    /// ```
    #[inline]
    pub fn limits(&self) -> GatherLimits {
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
                buf.pending_len()
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
