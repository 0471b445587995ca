//! The crate's error types, in one place. Each carries the numbers that explain it, says
//! "cannot ...: ..." in its `Display`, implements [`std::error::Error`] and converts into an
//! [`io::Error`] of a fitting kind, so `?` works in I/O code.

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
/// assert_eq!(buf.pending_len(), 3);
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

/// Returned by [`ReadBuffer::try_consume`](crate::ReadBuffer::try_consume) when asked to consume more bytes than are buffered.
///
/// The buffer is left unchanged when this is returned.
///
/// # Examples
///
/// ```
/// let mut buf = sendbuf::ReadBuffer::new();
/// buf.read_from(&mut &b"abc"[..]).unwrap();
/// let err = buf.try_consume(5).unwrap_err();
/// assert_eq!((err.requested, err.available), (5, 3));
/// assert_eq!(err.to_string(), "cannot consume 5 bytes: only 3 bytes are buffered");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConsumeError {
    /// Bytes the caller asked to consume.
    pub requested: usize,
    /// Bytes that were buffered.
    pub available: usize,
}

impl fmt::Display for ConsumeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cannot consume {} bytes: only {} bytes are buffered",
            self.requested, self.available
        )
    }
}

impl std::error::Error for ConsumeError {}

impl From<ConsumeError> for io::Error {
    fn from(err: ConsumeError) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidInput, err)
    }
}

/// `consume` past the end: a programming error, reported with both numbers.
#[cold]
#[inline(never)]
#[track_caller]
pub(crate) fn panic_consume(err: &ConsumeError) -> ! {
    panic!("{err}")
}

/// Returned when a [`ReadBuffer`](crate::ReadBuffer) would have to hold more than its
/// [`max_len`](crate::ReadBuffer::max_len): by [`reserve`](crate::ReadBuffer::reserve), and inside the
/// [`OutOfMemory`](io::ErrorKind::OutOfMemory) error of [`read_from`](crate::ReadBuffer::read_from).
///
/// # Examples
///
/// ```
/// let mut buf = sendbuf::ReadBuffer::new();
/// buf.set_max_len(1000);
/// buf.read_from(&mut &b"set k 0 0 999\r\n"[..]).unwrap();
/// let err = buf.reserve(999).unwrap_err();
/// assert_eq!((err.requested, err.buffered, err.max_len), (999, 15, 1000));
/// assert_eq!(
///     err.to_string(),
///     "cannot buffer 999 more bytes: the read buffer holds 15 bytes and its limit is 1000 bytes"
/// );
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadLimitError {
    /// Bytes of room asked for beyond what is buffered (1 for a read).
    pub requested: usize,
    /// Bytes the buffer held.
    pub buffered: usize,
    /// The buffer's limit.
    pub max_len: usize,
}

impl fmt::Display for ReadLimitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cannot buffer {} more bytes: the read buffer holds {} bytes and its limit is {} bytes",
            self.requested, self.buffered, self.max_len
        )
    }
}

impl std::error::Error for ReadLimitError {}

impl From<ReadLimitError> for io::Error {
    fn from(err: ReadLimitError) -> io::Error {
        io::Error::new(io::ErrorKind::OutOfMemory, err)
    }
}

/// Returned by the `try_` commit and pin methods when the bytes would take the buffer past its
/// hard limit. The buffer is unchanged (a guard's bytes are rolled back) and stays usable.
///
/// # Examples
///
/// ```
/// let mut buf = sendbuf::WriteBuffer::new();
/// buf.set_hard_limit(Some(8));
/// let err = buf.try_put_slice(b"0123456789").unwrap_err();
/// assert_eq!((err.requested, err.held, err.limit), (10, 0, 8));
/// assert_eq!(
///     err.to_string(),
///     "cannot queue 10 more bytes: the buffer holds 0 bytes and its hard limit is 8 bytes"
/// );
/// assert!(buf.is_empty());
/// ```
///
/// New fields may be added (what a buffer holds can grow by new kinds of bytes), so the struct
/// is `#[non_exhaustive]`: read its fields, do not build it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct HardLimitError {
    /// Bytes the commit or pin would have added.
    pub requested: usize,
    /// Bytes the buffer held (pending plus held by the kernel).
    pub held: usize,
    /// The hard limit.
    pub limit: usize,
}

impl fmt::Display for HardLimitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cannot queue {} more bytes: the buffer holds {} bytes and its hard limit is {} bytes",
            self.requested, self.held, self.limit
        )
    }
}

impl std::error::Error for HardLimitError {}

impl From<HardLimitError> for io::Error {
    fn from(err: HardLimitError) -> io::Error {
        io::Error::new(io::ErrorKind::OutOfMemory, err)
    }
}

/// A commit or pin past the hard limit through an infallible method: a programming error.
#[cold]
#[inline(never)]
#[track_caller]
pub(crate) fn panic_limit(err: &HardLimitError) -> ! {
    panic!("{err} (use the try_ methods on a buffer with a hard limit)")
}

/// Returned by [`Stealable::steal`](crate::Stealable::steal) when the buffer still holds data; the buffer is left
/// unchanged.
///
/// # Examples
///
/// ```
/// use sendbuf::{Stealable, ReadBuffer};
///
/// let mut buf = ReadBuffer::new();
/// buf.read_from(&mut &b"abc"[..]).unwrap();
/// let err = buf.steal().unwrap_err();
/// assert_eq!((err.pending, err.held), (3, 0));
/// assert_eq!(
///     err.to_string(),
///     "cannot steal the buffer: 3 bytes are pending and 0 bytes held by the kernel"
/// );
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct StealError {
    /// Bytes not yet sent (write side) or not yet consumed (read side).
    pub pending: usize,
    /// Bytes already sent whose memory the kernel still reads (zero-copy sends).
    pub held: usize,
}

impl fmt::Display for StealError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cannot steal the buffer: {} bytes are pending and {} bytes held by the kernel",
            self.pending, self.held
        )
    }
}

impl std::error::Error for StealError {}

impl From<StealError> for io::Error {
    fn from(err: StealError) -> io::Error {
        io::Error::other(err)
    }
}

/// Why a [`TlsSession`](crate::TlsSession) cannot go on (feature `rustls`).
///
/// The session is finished once this is returned: send what it still has pending (usually an
/// alert that tells the peer why), then close the connection. Nothing panics on bad input from
/// the network; it all ends here.
///
/// # Examples
///
/// ```
/// use std::io;
/// use sendbuf::TlsError;
///
/// let err = TlsError::Protocol(rustls::Error::DecryptError);
/// assert!(err.to_string().starts_with("cannot continue the TLS session: "));
/// assert_eq!(io::Error::from(err).kind(), io::ErrorKind::InvalidData);
/// ```
#[cfg(feature = "rustls")]
#[derive(Debug)]
#[non_exhaustive]
pub enum TlsError {
    /// The peer broke the protocol (a bad or truncated record, a failed handshake, a bad
    /// certificate...): rustls's reason.
    Protocol(rustls::Error),
    /// The peer sent more than the session buffers: decrypted requests nobody consumed.
    Limit(ReadLimitError),
    /// The connection's traffic keys are used up and cannot be renewed: rustls refuses to
    /// encrypt more (TLS 1.2 after 2^64 records or a cipher's limit).
    KeysExhausted,
}

#[cfg(feature = "rustls")]
impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("cannot continue the TLS session: ")?;
        match self {
            TlsError::Protocol(e) => write!(f, "{e}"),
            TlsError::Limit(e) => write!(f, "{e}"),
            TlsError::KeysExhausted => f.write_str("the traffic keys are exhausted"),
        }
    }
}

#[cfg(feature = "rustls")]
impl std::error::Error for TlsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TlsError::Protocol(e) => Some(e),
            TlsError::Limit(e) => Some(e),
            TlsError::KeysExhausted => None,
        }
    }
}

#[cfg(feature = "rustls")]
impl From<TlsError> for io::Error {
    fn from(err: TlsError) -> io::Error {
        let kind = match err {
            TlsError::Protocol(_) => io::ErrorKind::InvalidData,
            TlsError::Limit(_) => io::ErrorKind::OutOfMemory,
            TlsError::KeysExhausted => io::ErrorKind::Other,
        };
        io::Error::new(kind, err)
    }
}
