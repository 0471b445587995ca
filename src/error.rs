//! Error types. Each carries the numbers that explain it.

use core::fmt;
use std::io;

/// Returned by [`WriteBuffer::try_advance`](crate::WriteBuffer::try_advance) when asked to move
/// past more bytes than are pending.
///
/// The buffer is left unchanged when this is returned.
///
/// # Examples
///
/// ```
/// use sendbuf::WriteBuffer;
///
/// let mut buf = WriteBuffer::new();
/// buf.put_slice(b"abc");
/// let err = buf.try_advance(5).unwrap_err();
/// assert_eq!((err.requested, err.available), (5, 3));
/// assert_eq!(buf.len(), 3);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdvanceError {
    /// Bytes the caller asked to advance past.
    pub requested: usize,
    /// Bytes that were pending.
    pub available: usize,
}

impl fmt::Display for AdvanceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cannot advance past {} bytes: only {} bytes are pending",
            self.requested, self.available
        )
    }
}

impl std::error::Error for AdvanceError {}

impl From<AdvanceError> for io::Error {
    fn from(err: AdvanceError) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidInput, err)
    }
}

/// `advance` past the end: a programming error, reported with both numbers.
#[cold]
#[inline(never)]
#[track_caller]
pub(crate) fn panic_advance(err: &AdvanceError) -> ! {
    panic!("{err}")
}
