//! [`ReadBuffer`]: the incoming side of one connection.
//!
//! One contiguous storage block with two cursors:
//!
//! ```text
//!  0          start            end             capacity
//!  |----------|----------------|---------------|
//!    consumed    data()           spare: the next read lands here
//! ```
//!
//! Reads append at `end`; [`consume`](ReadBuffer::consume) moves `start`. When everything is
//! consumed both cursors go back to 0 at no cost. Only when a read finds no spare space are the
//! unconsumed bytes moved to the front (if that frees at least half the storage) or the storage
//! doubled, up to [`max_len`](ReadBuffer::max_len); each byte is therefore moved a bounded number
//! of times on average.

use core::fmt;
use core::mem;
use std::io::{self, Read};
use std::sync::Arc;

use crate::error::{panic_consume, ConsumeError, ReadLimitError, StealError};
use crate::pool::Pool;
use crate::steal::Stealable;

/// Storage, in bytes, a [`ReadBuffer::new`] takes on its first read.
const DEFAULT_BLOCK_SIZE: usize = 16 * 1024;

/// Default bound on the bytes a [`ReadBuffer`] holds: a 1 MiB value plus room for its request
/// line and the next request's start.
const DEFAULT_MAX_LEN: usize = 1024 * 1024 + 64 * 1024;

/// The incoming buffer of one connection: read from a socket into it, parse from the front,
/// [`consume`](Self::consume) what was parsed.
///
/// * Storage is allocated (or taken from its [pool](Self::with_pool)) on the first read, grows
///   geometrically as needed, and never beyond [`max_len`](Self::max_len) bytes of data, so a
///   peer cannot make the server buffer without bound.
/// * [`read_from`](Self::read_from) makes one `read` call into the spare space; data from the
///   network never makes it panic.
/// * It implements [`Stealable`]: an idle connection (everything consumed) gives its storage
///   back, and takes storage again on its next read.
///
/// # Examples
///
/// Parsing `\r\n`-terminated lines that arrive in arbitrary pieces:
///
/// ```
/// use sendbuf::ReadBuffer;
///
/// let mut socket: &[u8] = b"get a\r\nget b\r\nge";
/// let mut buf = ReadBuffer::new();
/// let mut lines = Vec::new();
/// while buf.read_from(&mut socket)? > 0 {
///     while let Some(end) = buf.data().windows(2).position(|w| w == b"\r\n") {
///         lines.push(String::from_utf8_lossy(&buf.data()[..end]).into_owned());
///         buf.consume(end + 2);
///     }
/// }
/// assert_eq!(lines, ["get a", "get b"]);
/// assert_eq!(buf.data(), b"ge"); // an incomplete request waits for more bytes
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct ReadBuffer {
    storage: Box<[u8]>,
    /// First unconsumed byte.
    start: usize,
    /// One past the last byte read.
    end: usize,
    /// Storage size taken on the first read (after creation or a steal).
    block_size: usize,
    max_len: usize,
    pool: Option<Arc<dyn Pool>>,
}

impl Default for ReadBuffer {
    fn default() -> Self {
        Self::new()
    }
}

impl ReadBuffer {
    /// An empty buffer. It allocates nothing until the first read, which takes 16 KiB.
    ///
    /// # Examples
    ///
    /// ```
    /// let buf = sendbuf::ReadBuffer::new();
    /// assert!(buf.is_empty());
    /// assert_eq!(buf.capacity(), 0);
    /// ```
    pub fn new() -> Self {
        Self::with_block_size(DEFAULT_BLOCK_SIZE)
    }

    /// An empty buffer whose first read (after creation or after a steal) takes a block of
    /// `block_size` bytes of storage (at least 1; the default is 16 KiB). Like
    /// [`new`](Self::new), it allocates nothing now; use [`reserve`](Self::reserve) to allocate
    /// at once.
    ///
    /// # Examples
    ///
    /// ```
    /// let mut buf = sendbuf::ReadBuffer::with_block_size(4096);
    /// assert_eq!(buf.capacity(), 0);
    /// buf.read_from(&mut &b"hello"[..]).unwrap();
    /// assert_eq!(buf.capacity(), 4096);
    /// ```
    pub fn with_block_size(block_size: usize) -> Self {
        ReadBuffer {
            storage: Box::default(),
            start: 0,
            end: 0,
            block_size: block_size.max(1),
            max_len: DEFAULT_MAX_LEN,
            pool: None,
        }
    }

    /// Makes the buffer take its storage from `pool` (on the first read after creation or after
    /// a steal, and when it grows) and give storage back to it (when stolen, when it grows out
    /// of a smaller block, and when dropped).
    ///
    /// Without a pool, storage is allocated and freed.
    ///
    /// # Examples
    ///
    /// ```
    /// use sendbuf::{Stealable, LocalPool, Pool, PoolLimits, ReadBuffer};
    ///
    /// let pool = LocalPool::new(PoolLimits::new());
    /// let mut buf = ReadBuffer::with_block_size(4096).with_pool(pool.clone());
    /// buf.read_from(&mut &b"hi"[..]).unwrap();
    /// buf.consume(2);
    /// buf.steal().unwrap();
    /// assert_eq!(pool.stats().pooled, 1);
    ///
    /// buf.read_from(&mut &b"again"[..]).unwrap(); // storage comes back from the pool
    /// assert_eq!(pool.stats().taken, 1);
    /// ```
    #[must_use]
    pub fn with_pool(mut self, pool: Arc<dyn Pool>) -> Self {
        self.pool = Some(pool);
        self
    }

    /// The most bytes the buffer holds at once; 1 MiB + 64 KiB unless set.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(sendbuf::ReadBuffer::new().max_len(), 1024 * 1024 + 64 * 1024);
    /// ```
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// Sets the most bytes the buffer holds at once. Reading or reserving beyond it fails
    /// with [`ReadLimitError`]. Storage already held is kept even if larger, and storage taken
    /// from a [pool](Self::with_pool) may be larger (the pool bounds its buffers' size); the
    /// buffer never *allocates* or grows storage beyond `max_len`, and never reads more than
    /// `max_len` bytes into whatever storage it has.
    ///
    /// # Examples
    ///
    /// ```
    /// let mut buf = sendbuf::ReadBuffer::new();
    /// buf.set_max_len(4);
    /// buf.read_from(&mut &b"abcdef"[..]).unwrap();
    /// assert_eq!(buf.data(), b"abcd");
    /// assert!(buf.read_from(&mut &b"ef"[..]).is_err());
    /// ```
    pub fn set_max_len(&mut self, max_len: usize) {
        self.max_len = max_len;
    }

    /// Bytes read and not yet consumed.
    ///
    /// # Examples
    ///
    /// ```
    /// let mut buf = sendbuf::ReadBuffer::new();
    /// buf.read_from(&mut &b"abc"[..]).unwrap();
    /// buf.consume(1);
    /// assert_eq!(buf.len(), 2);
    /// ```
    #[inline]
    pub fn len(&self) -> usize {
        self.end - self.start
    }

    /// True when every byte read has been consumed.
    ///
    /// The cursors are checked: if they ever disagree (a bug in this crate), debug builds panic
    /// and release builds answer `false`, so a buffer is never stolen unless it is provably
    /// empty.
    ///
    /// # Examples
    ///
    /// ```
    /// let mut buf = sendbuf::ReadBuffer::new();
    /// buf.read_from(&mut &b"abc"[..]).unwrap();
    /// assert!(!buf.is_empty());
    /// buf.consume(3);
    /// assert!(buf.is_empty());
    /// ```
    #[inline]
    pub fn is_empty(&self) -> bool {
        if self.start <= self.end && self.end <= self.storage.len() {
            self.start == self.end
        } else {
            self.inconsistent()
        }
    }

    #[cold]
    #[inline(never)]
    fn inconsistent(&self) -> bool {
        if cfg!(debug_assertions) {
            panic!("sendbuf: ReadBuffer cursors disagree: {self:?}");
        }
        false
    }

    /// Checks the cursors against the storage. Tests call it after each step.
    ///
    /// # Panics
    ///
    /// If `start <= end <= capacity` does not hold, with the buffer's state.
    ///
    /// # Examples
    ///
    /// ```
    /// let mut buf = sendbuf::ReadBuffer::new();
    /// buf.read_from(&mut &b"abc"[..]).unwrap();
    /// buf.check_invariants();
    /// ```
    pub fn check_invariants(&self) {
        assert!(
            self.start <= self.end && self.end <= self.storage.len(),
            "sendbuf: ReadBuffer invariant broken: {self:?}"
        );
    }

    /// Bytes of storage held now (0 before the first read and after a steal).
    ///
    /// # Examples
    ///
    /// ```
    /// let mut buf = sendbuf::ReadBuffer::with_block_size(512);
    /// assert_eq!(buf.capacity(), 0);
    /// buf.read_from(&mut &b"x"[..]).unwrap();
    /// assert_eq!(buf.capacity(), 512);
    /// ```
    #[inline]
    pub fn capacity(&self) -> usize {
        self.storage.len()
    }

    /// The bytes read and not yet consumed, oldest first.
    ///
    /// # Examples
    ///
    /// ```
    /// let mut buf = sendbuf::ReadBuffer::new();
    /// buf.read_from(&mut &b"abc"[..]).unwrap();
    /// assert_eq!(buf.data(), b"abc");
    /// ```
    #[inline]
    pub fn data(&self) -> &[u8] {
        &self.storage[self.start..self.end]
    }

    /// The bytes read and not yet consumed, writable in place (a TLS session hands them to
    /// rustls, which decrypts records where they lie).
    #[cfg(feature = "rustls")]
    #[inline]
    pub(crate) fn data_mut(&mut self) -> &mut [u8] {
        &mut self.storage[self.start..self.end]
    }

    /// Appends `src` after the data, making room as a read would.
    #[cfg(feature = "rustls")]
    pub(crate) fn append(&mut self, src: &[u8]) -> Result<(), ReadLimitError> {
        self.make_room(src.len())?;
        self.storage[self.end..self.end + src.len()].copy_from_slice(src);
        self.end += src.len();
        Ok(())
    }

    /// Marks the first `n` bytes of [`data`](Self::data) as parsed.
    ///
    /// # Panics
    ///
    /// If `n > self.len()`, naming both numbers. [`try_consume`](Self::try_consume) returns an
    /// error instead.
    ///
    /// # Examples
    ///
    /// ```
    /// let mut buf = sendbuf::ReadBuffer::new();
    /// buf.read_from(&mut &b"abc"[..]).unwrap();
    /// buf.consume(2);
    /// assert_eq!(buf.data(), b"c");
    /// ```
    ///
    /// ```should_panic
    /// let mut buf = sendbuf::ReadBuffer::new();
    /// buf.read_from(&mut &b"abc"[..]).unwrap();
    /// buf.consume(4); // panics: cannot consume 4 bytes: only 3 bytes are buffered
    /// ```
    #[inline]
    #[track_caller]
    pub fn consume(&mut self, n: usize) {
        if let Err(err) = self.try_consume(n) {
            panic_consume(&err);
        }
    }

    /// Like [`consume`](Self::consume), but returns an error and leaves the buffer unchanged if
    /// `n` exceeds what is buffered.
    ///
    /// # Errors
    ///
    /// [`ConsumeError`] with the requested and available byte counts.
    ///
    /// # Examples
    ///
    /// ```
    /// let mut buf = sendbuf::ReadBuffer::new();
    /// buf.read_from(&mut &b"abc"[..]).unwrap();
    /// assert!(buf.try_consume(4).is_err());
    /// assert_eq!(buf.try_consume(3), Ok(()));
    /// ```
    #[inline]
    pub fn try_consume(&mut self, n: usize) -> Result<(), ConsumeError> {
        let available = self.len();
        if n > available {
            return Err(ConsumeError {
                requested: n,
                available,
            });
        }
        self.start += n;
        if self.start == self.end {
            // Everything parsed: the next read starts at the front, no move needed.
            self.start = 0;
            self.end = 0;
        }
        debug_assert!(self.start <= self.end && self.end <= self.storage.len());
        Ok(())
    }

    /// Discards every unconsumed byte. The buffer keeps its storage.
    ///
    /// # Examples
    ///
    /// ```
    /// let mut buf = sendbuf::ReadBuffer::new();
    /// buf.read_from(&mut &b"abc"[..]).unwrap();
    /// buf.clear();
    /// assert!(buf.is_empty());
    /// assert_eq!(buf.capacity(), 16 * 1024);
    /// ```
    pub fn clear(&mut self) {
        self.start = 0;
        self.end = 0;
    }

    /// Makes room for `additional` more bytes after [`data`](Self::data), contiguous, so a
    /// body whose length is known arrives without further growth. Moves or grows the storage
    /// now if needed.
    ///
    /// # Errors
    ///
    /// [`ReadLimitError`] if `len() + additional` exceeds [`max_len`](Self::max_len); the buffer
    /// is unchanged. The length usually comes from the peer, so this never panics.
    ///
    /// # Examples
    ///
    /// ```
    /// let mut buf = sendbuf::ReadBuffer::with_block_size(1024);
    /// buf.read_from(&mut &b"set k 0 0 100000\r\n"[..]).unwrap();
    /// buf.reserve(100_002)?;
    /// assert!(buf.capacity() >= buf.len() + 100_002);
    ///
    /// let err = buf.reserve(usize::MAX).unwrap_err();
    /// assert_eq!(err.max_len, buf.max_len());
    /// # Ok::<(), sendbuf::ReadLimitError>(())
    /// ```
    pub fn reserve(&mut self, additional: usize) -> Result<(), ReadLimitError> {
        self.make_room(additional)
    }

    /// Makes one `read` call into the spare space after [`data`](Self::data), first making
    /// room if there is none (moving unconsumed bytes to the front or growing the storage).
    /// Returns the bytes read; `Ok(0)` means end of stream. Retries
    /// [`Interrupted`](io::ErrorKind::Interrupted); every other error, including
    /// [`WouldBlock`](io::ErrorKind::WouldBlock), is returned with the buffer's data unchanged.
    ///
    /// # Errors
    ///
    /// * The reader's error.
    /// * An error of kind [`OutOfMemory`](io::ErrorKind::OutOfMemory) wrapping a
    ///   [`ReadLimitError`] if the buffer already holds [`max_len`](Self::max_len) bytes: the
    ///   peer sent more than the server will buffer. Nothing is read; the buffer stays usable.
    /// * An error of kind [`InvalidData`](io::ErrorKind::InvalidData) if the reader claims to
    ///   have read more bytes than it was given room for.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::io::ErrorKind;
    /// use sendbuf::{ReadBuffer, ReadLimitError};
    ///
    /// let mut buf = ReadBuffer::new();
    /// buf.set_max_len(3);
    /// let mut peer: &[u8] = b"abcdef";
    /// assert_eq!(buf.read_from(&mut peer).unwrap(), 3);
    /// let err = buf.read_from(&mut peer).unwrap_err();
    /// assert_eq!(err.kind(), ErrorKind::OutOfMemory);
    /// let limit = err.get_ref().unwrap().downcast_ref::<ReadLimitError>().unwrap();
    /// assert_eq!((limit.requested, limit.buffered, limit.max_len), (1, 3, 3));
    ///
    /// buf.consume(3);
    /// assert_eq!(buf.read_from(&mut peer).unwrap(), 3);
    /// assert_eq!(buf.data(), b"def");
    /// buf.consume(3);
    /// assert_eq!(buf.read_from(&mut peer).unwrap(), 0); // end of stream
    /// ```
    pub fn read_from<R: Read + ?Sized>(&mut self, reader: &mut R) -> io::Result<usize> {
        let spare = self.read_room()?;
        let room = spare.len();
        loop {
            match reader.read(spare) {
                Ok(n) => return self.commit_read(n, room),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// The spare space one read may fill, made first if there is none (moving unconsumed bytes
    /// to the front or growing the storage); never longer than what keeps the buffer within
    /// [`max_len`](Self::max_len). Storage is initialised when allocated, so no read zeroes it
    /// again. Shared by [`read_from`](Self::read_from) and the `tokio` reads.
    pub(crate) fn read_room(&mut self) -> Result<&mut [u8], ReadLimitError> {
        self.make_room(1)?;
        let room = (self.storage.len() - self.end).min(self.max_len - self.len());
        Ok(&mut self.storage[self.end..self.end + room])
    }

    /// Counts `n` bytes a reader put at the start of the [`read_room`](Self::read_room) of
    /// `room` bytes as read, or reports a reader that claims more than it was given.
    pub(crate) fn commit_read(&mut self, n: usize, room: usize) -> io::Result<usize> {
        if n > room {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("reader reported {n} bytes read into {room} bytes of space"),
            ));
        }
        self.end += n;
        debug_assert!(self.end <= self.storage.len());
        Ok(n)
    }

    /// Ensures `capacity - end >= additional` and `len + additional <= max_len`.
    fn make_room(&mut self, additional: usize) -> Result<(), ReadLimitError> {
        let len = self.len();
        let needed = match len.checked_add(additional) {
            Some(needed) if needed <= self.max_len => needed,
            _ => {
                return Err(ReadLimitError {
                    requested: additional,
                    buffered: len,
                    max_len: self.max_len,
                })
            }
        };
        let cap = self.storage.len();
        if cap - self.end >= additional {
            return Ok(());
        }
        // Moving is worth it when it frees at least half the storage, or when growing is not
        // allowed; otherwise double. Either way each byte is moved O(1) times on average.
        if needed <= cap && (len <= cap / 2 || cap >= self.max_len) {
            self.storage.copy_within(self.start..self.end, 0);
        } else {
            let new_cap = needed
                .max(cap.saturating_mul(2))
                .max(self.block_size)
                .min(self.max_len)
                .max(needed);
            let mut storage = self.acquire(new_cap);
            storage[..len].copy_from_slice(&self.storage[self.start..self.end]);
            let old = mem::replace(&mut self.storage, storage);
            self.release(old);
        }
        self.start = 0;
        self.end = len;
        debug_assert!(self.storage.len() - self.end >= additional);
        Ok(())
    }

    /// Storage of at least `len` bytes: from the pool if it has some, else newly allocated.
    fn acquire(&self, len: usize) -> Box<[u8]> {
        self.pool
            .as_ref()
            .and_then(|pool| pool.take(len))
            .unwrap_or_else(|| vec![0u8; len].into_boxed_slice())
    }

    /// Gives storage the buffer no longer uses to the pool, or frees it.
    fn release(&self, storage: Box<[u8]>) {
        if let (Some(pool), false) = (&self.pool, storage.is_empty()) {
            pool.give(storage);
        }
    }
}

impl Stealable for ReadBuffer {
    /// Gives the storage to the pool (or frees it) if every byte read has been consumed.
    ///
    /// # Errors
    ///
    /// [`StealError`] with `pending` the unconsumed bytes (`held` is always 0 on the read
    /// side).
    ///
    /// # Examples
    ///
    /// ```
    /// use sendbuf::{Stealable, ReadBuffer};
    ///
    /// let mut buf = ReadBuffer::with_block_size(64);
    /// buf.read_from(&mut &b"ab"[..]).unwrap();
    /// buf.consume(1);
    /// assert!(buf.steal().is_err()); // one byte of a partial request left
    /// buf.consume(1);
    /// assert_eq!(buf.steal(), Ok(64));
    /// ```
    fn steal(&mut self) -> Result<usize, StealError> {
        let empty = self.is_empty();
        if let Some(pool) = &self.pool {
            pool.record_steal(empty);
        }
        if !empty {
            return Err(StealError {
                pending: self.end.saturating_sub(self.start),
                held: 0,
            });
        }
        let storage = mem::take(&mut self.storage);
        self.start = 0;
        self.end = 0;
        let bytes = storage.len();
        self.release(storage);
        Ok(bytes)
    }

    fn storage_bytes(&self) -> usize {
        self.storage.len()
    }
}

impl Drop for ReadBuffer {
    /// A closed connection's storage goes back to the pool.
    fn drop(&mut self) {
        let storage = mem::take(&mut self.storage);
        self.release(storage);
    }
}

impl fmt::Debug for ReadBuffer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReadBuffer")
            .field("start", &self.start)
            .field("end", &self.end)
            .field("capacity", &self.storage.len())
            .field("block_size", &self.block_size)
            .field("max_len", &self.max_len)
            .field("pool", &self.pool)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filled(cap: usize, bytes: &[u8]) -> ReadBuffer {
        let mut buf = ReadBuffer::with_block_size(cap);
        buf.read_from(&mut &bytes[..]).unwrap();
        buf
    }

    #[test]
    fn full_buffer_moves_data_to_the_front_when_that_frees_half() {
        let mut buf = filled(8, b"abcdefgh");
        buf.consume(5);
        let ptr = buf.data().as_ptr();
        buf.read_from(&mut &b"ij"[..]).unwrap();
        assert_eq!(buf.capacity(), 8, "moved, not grown");
        assert_eq!((buf.start, buf.end), (0, 5));
        assert_ne!(buf.data().as_ptr(), ptr);
        assert_eq!(buf.data(), b"fghij");
    }

    #[test]
    fn full_buffer_doubles_when_moving_frees_little() {
        let mut buf = filled(8, b"abcdefgh");
        buf.consume(1);
        buf.read_from(&mut &b"ij"[..]).unwrap();
        assert_eq!(buf.capacity(), 16);
        assert_eq!(buf.data(), b"bcdefghij");
        buf.check_invariants();
    }

    #[test]
    fn growth_stops_at_max_len_then_moves() {
        let mut buf = filled(8, b"abcdefgh");
        buf.set_max_len(12);
        buf.consume(1);
        buf.read_from(&mut &b"ijklmnopq"[..]).unwrap();
        assert_eq!(buf.capacity(), 12);
        assert_eq!(buf.data(), b"bcdefghijklm");
        buf.consume(1);
        buf.read_from(&mut &b"n"[..]).unwrap(); // at max_len: moves 11 bytes to gain 1
        assert_eq!(buf.capacity(), 12);
        assert_eq!(buf.data(), b"cdefghijklmn");
    }

    #[test]
    fn consuming_everything_rewinds_the_cursors() {
        let mut buf = filled(8, b"abc");
        buf.consume(3);
        assert_eq!((buf.start, buf.end), (0, 0));
    }

    #[test]
    fn reserve_zero_allocates_nothing() {
        let mut buf = ReadBuffer::new();
        buf.reserve(0).unwrap();
        assert_eq!(buf.capacity(), 0);
    }

    #[test]
    #[should_panic(expected = "cannot consume 4 bytes: only 3 bytes are buffered")]
    fn consume_past_the_end_names_both_numbers() {
        filled(8, b"abc").consume(4);
    }

    #[test]
    fn read_buffer_is_send_and_sync() {
        static_assertions::assert_impl_all!(ReadBuffer: Send, Sync);
    }
}
