//! Typed formatting into scratch: [`FormatGuard`], [`Encode`] and reserved fields.

use core::fmt;
use core::marker::PhantomData;
use core::mem::ManuallyDrop;

use crate::decimal::Decimal;
use crate::scratch::Cursor;
use crate::write_buffer::WriteBuffer;

/// A fixed-size value that knows its wire form, such as a protocol header.
///
/// Written with [`FormatGuard::put`].
///
/// # Implementer notes
///
/// `encode` must write exactly `out.len() == Self::SIZE` bytes; `out` is zeroed beforehand only
/// the first time a scratch block is used, so every byte must be written.
///
/// # Examples
///
/// A memcached binary-protocol response header:
///
/// ```
/// use sendbuf::{Encode, WriteBuffer};
///
/// struct Header { opcode: u8, status: u16, body_len: u32, opaque: u32 }
///
/// impl Encode for Header {
///     const SIZE: usize = 24;
///     fn encode(&self, out: &mut [u8]) {
///         out[0] = 0x81;
///         out[1] = self.opcode;
///         out[2..6].fill(0);
///         out[6..8].copy_from_slice(&self.status.to_be_bytes());
///         out[8..12].copy_from_slice(&self.body_len.to_be_bytes());
///         out[12..16].copy_from_slice(&self.opaque.to_be_bytes());
///         out[16..24].fill(0);
///     }
/// }
///
/// let mut buf = WriteBuffer::new();
/// let mut f = buf.format();
/// f.put(&Header { opcode: 0, status: 0, body_len: 5, opaque: 7 });
/// f.commit();
/// assert_eq!(buf.pending_len(), 24);
/// assert_eq!(buf.chunk()[..2], [0x81, 0]);
/// ```
pub trait Encode {
    /// Encoded size in bytes.
    const SIZE: usize;

    /// Writes the value into `out`, which is exactly [`Self::SIZE`] bytes long.
    fn encode(&self, out: &mut [u8]);
}

/// A field reserved by [`FormatGuard::reserve`], to be filled in after the bytes that follow it.
///
/// Filling consumes it, so a field is filled at most once; committing a guard with a field
/// still unfilled panics.
#[derive(Debug)]
#[must_use = "a reserved field must be filled before the guard commits"]
pub struct Reserved<const N: usize> {
    /// Offset from the start of the guard's bytes.
    offset: usize,
    /// The guard that reserved it.
    guard: u64,
    _not_send: PhantomData<*const ()>,
}

impl<const N: usize> Reserved<N> {
    /// Offset of the field from the start of the guard's bytes.
    ///
    /// # Examples
    ///
    /// ```
    /// use sendbuf::WriteBuffer;
    ///
    /// let mut buf = WriteBuffer::new();
    /// let mut f = buf.format();
    /// f.put_u8(1);
    /// let len = f.reserve_u32();
    /// assert_eq!(len.offset(), 1);
    /// f.fill_u32(len, 0);
    /// f.commit();
    /// ```
    pub fn offset(&self) -> usize {
        self.offset
    }
}

/// Formats bytes into a [`WriteBuffer`]'s scratch memory; [`commit`](Self::commit) appends them
/// to the queue, dropping the guard rolls them back.
///
/// Created by [`WriteBuffer::format`]. Writers follow `bytes::BufMut`'s names: `put_u16` is
/// big-endian (network order), `put_u16_le` little-endian, `put_u16_ne` native. Text protocols
/// use [`put_decimal`](Self::put_decimal) or [`core::fmt::Write`] (`write!`), neither of which
/// allocates; `std::io::Write` producers and, with the feature `bytes`, `bytes::BufMut`
/// encoders write into it too (where a method name is both inherent and `BufMut`'s, a call on
/// a guard means the inherent one).
///
/// Until `commit`, nothing the guard wrote is visible: the buffer's length, iovecs and
/// emptiness are exactly as before. `mem::forget` on a guard is a rollback too.
///
/// # Examples
///
/// ```
/// use core::fmt::Write;
/// use sendbuf::WriteBuffer;
///
/// let mut buf = WriteBuffer::new();
/// let mut f = buf.format();
/// write!(f, "VALUE {} 0 {}\r\n", "key", 5).unwrap();
/// f.commit();
///
/// {
///     let mut f = buf.format();
///     f.put_slice(b"never sent");
/// } // dropped: rolled back
///
/// assert_eq!(buf.chunk(), b"VALUE key 0 5\r\n");
/// ```
///
/// The guard borrows the buffer, so the buffer cannot be sent from while a guard is open:
///
/// ```compile_fail
/// use sendbuf::WriteBuffer;
///
/// let mut buf = WriteBuffer::new();
/// let mut f = buf.format();
/// f.put_u8(1);
/// buf.advance(0); // error: `buf` is still borrowed by the guard
/// f.commit();
/// ```
pub struct FormatGuard<'a> {
    buf: &'a mut WriteBuffer,
    cur: Cursor,
    unfilled: usize,
    /// Tells this guard's reserved fields from other guards': 0 until the first
    /// [`reserve`](Self::reserve), then an id unique within the buffer.
    id: u64,
}

macro_rules! put_int {
    ($($t:ty => $be:ident, $le:ident, $ne:ident;)*) => {$(
        #[doc = concat!("Writes a `", stringify!($t), "` in big-endian (network) byte order.")]
        #[inline]
        pub fn $be(&mut self, v: $t) {
            self.put_slice(&v.to_be_bytes());
        }

        #[doc = concat!("Writes a `", stringify!($t), "` in little-endian byte order.")]
        #[inline]
        pub fn $le(&mut self, v: $t) {
            self.put_slice(&v.to_le_bytes());
        }

        #[doc = concat!("Writes a `", stringify!($t), "` in native byte order.")]
        #[inline]
        pub fn $ne(&mut self, v: $t) {
            self.put_slice(&v.to_ne_bytes());
        }
    )*};
}

macro_rules! reserve_int {
    ($($t:ty, $n:literal => $reserve:ident, $fill:ident, $fill_le:ident;)*) => {$(
        #[doc = concat!("Reserves a `", stringify!($t), "` field (zeroed) to fill in later.")]
        ///
        /// See [`reserve`](Self::reserve).
        #[inline]
        pub fn $reserve(&mut self) -> Reserved<$n> {
            self.reserve::<$n>()
        }

        #[doc = concat!("Fills a reserved `", stringify!($t), "` field in big-endian byte order.")]
        #[inline]
        pub fn $fill(&mut self, field: Reserved<$n>, v: $t) {
            self.fill(field, v.to_be_bytes());
        }

        #[doc = concat!("Fills a reserved `", stringify!($t), "` field in little-endian byte order.")]
        #[inline]
        pub fn $fill_le(&mut self, field: Reserved<$n>, v: $t) {
            self.fill(field, v.to_le_bytes());
        }
    )*};
}

impl<'a> FormatGuard<'a> {
    #[inline]
    pub(crate) fn new(buf: &'a mut WriteBuffer) -> FormatGuard<'a> {
        let cur = buf.scratch_mut().open();
        FormatGuard {
            buf,
            cur,
            unfilled: 0,
            id: 0,
        }
    }

    /// Bytes written through this guard so far.
    ///
    /// # Examples
    ///
    /// ```
    /// let mut buf = sendbuf::WriteBuffer::new();
    /// let mut f = buf.format();
    /// f.put_u32(7);
    /// assert_eq!(f.len(), 4);
    /// ```
    #[inline]
    pub fn len(&self) -> usize {
        self.cur.pos - self.cur.start
    }

    /// True if nothing has been written through this guard.
    ///
    /// # Examples
    ///
    /// ```
    /// let mut buf = sendbuf::WriteBuffer::new();
    /// assert!(buf.format().is_empty());
    /// ```
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes written through this guard so far.
    ///
    /// # Examples
    ///
    /// ```
    /// let mut buf = sendbuf::WriteBuffer::new();
    /// let mut f = buf.format();
    /// f.put_u16(0x0102);
    /// assert_eq!(f.written(), [1, 2]);
    /// ```
    pub fn written(&self) -> &[u8] {
        self.buf
            .scratch()
            .bytes(self.cur.block, self.cur.start, self.cur.pos)
    }

    /// Appends `n` bytes and returns them to be written in place; their content is unspecified
    /// until written.
    ///
    /// # Examples
    ///
    /// ```
    /// let mut buf = sendbuf::WriteBuffer::new();
    /// let mut f = buf.format();
    /// f.put_uninit(3).copy_from_slice(b"abc");
    /// f.commit();
    /// assert_eq!(buf.chunk(), b"abc");
    /// ```
    #[inline]
    pub fn put_uninit(&mut self, n: usize) -> &mut [u8] {
        self.buf.scratch_mut().reserve(&mut self.cur, n)
    }

    /// Writes a byte slice.
    ///
    /// # Examples
    ///
    /// ```
    /// let mut buf = sendbuf::WriteBuffer::new();
    /// let mut f = buf.format();
    /// f.put_slice(b"END\r\n");
    /// f.commit();
    /// assert_eq!(buf.pending_len(), 5);
    /// ```
    #[inline]
    pub fn put_slice(&mut self, src: &[u8]) {
        self.put_uninit(src.len()).copy_from_slice(src);
    }

    /// Writes `n` copies of `byte`.
    ///
    /// # Examples
    ///
    /// ```
    /// let mut buf = sendbuf::WriteBuffer::new();
    /// let mut f = buf.format();
    /// f.put_bytes(0, 4);
    /// assert_eq!(f.written(), [0; 4]);
    /// ```
    #[inline]
    pub fn put_bytes(&mut self, byte: u8, n: usize) {
        self.put_uninit(n).fill(byte);
    }

    /// Writes one byte.
    ///
    /// # Examples
    ///
    /// ```
    /// let mut buf = sendbuf::WriteBuffer::new();
    /// let mut f = buf.format();
    /// f.put_u8(0x81);
    /// assert_eq!(f.written(), [0x81]);
    /// ```
    #[inline]
    pub fn put_u8(&mut self, v: u8) {
        self.put_slice(&[v]);
    }

    /// Writes one signed byte.
    ///
    /// # Examples
    ///
    /// ```
    /// let mut buf = sendbuf::WriteBuffer::new();
    /// let mut f = buf.format();
    /// f.put_i8(-1);
    /// assert_eq!(f.written(), [0xff]);
    /// ```
    #[inline]
    pub fn put_i8(&mut self, v: i8) {
        self.put_slice(&v.to_be_bytes());
    }

    put_int! {
        u16 => put_u16, put_u16_le, put_u16_ne;
        i16 => put_i16, put_i16_le, put_i16_ne;
        u32 => put_u32, put_u32_le, put_u32_ne;
        i32 => put_i32, put_i32_le, put_i32_ne;
        u64 => put_u64, put_u64_le, put_u64_ne;
        i64 => put_i64, put_i64_le, put_i64_ne;
    }

    /// Writes an integer in decimal ASCII, with a leading `-` if negative: what `write!(f,
    /// "{v}")` writes, without the formatting machinery. For text protocols (`VALUE k 0 5`,
    /// `Content-Length: 42`).
    ///
    /// Takes every primitive integer type ([`Decimal`]). With the default feature `itoa` the
    /// digits come from the [`itoa`](https://docs.rs/itoa) crate; without it, from
    /// `core::fmt`. The bytes are the same either way.
    ///
    /// # Examples
    ///
    /// ```
    /// let mut buf = sendbuf::WriteBuffer::new();
    /// let mut f = buf.format();
    /// f.put_slice(b"VALUE k ");
    /// f.put_decimal(0u32);
    /// f.put_u8(b' ');
    /// f.put_decimal(1_048_576usize);
    /// f.put_u8(b' ');
    /// f.put_decimal(i64::MIN);
    /// f.commit();
    /// assert_eq!(buf.chunk(), b"VALUE k 0 1048576 -9223372036854775808");
    /// ```
    #[inline]
    pub fn put_decimal<T: Decimal>(&mut self, v: T) {
        v.put_to(self);
    }

    /// Writes a fixed-size value through its [`Encode`] implementation.
    ///
    /// # Examples
    ///
    /// ```
    /// use sendbuf::{Encode, WriteBuffer};
    ///
    /// struct Magic;
    /// impl Encode for Magic {
    ///     const SIZE: usize = 2;
    ///     fn encode(&self, out: &mut [u8]) { out.copy_from_slice(&[0xCA, 0xFE]); }
    /// }
    ///
    /// let mut buf = WriteBuffer::new();
    /// let mut f = buf.format();
    /// f.put(&Magic);
    /// assert_eq!(f.written(), [0xCA, 0xFE]);
    /// ```
    #[inline]
    pub fn put<E: Encode + ?Sized>(&mut self, value: &E) {
        value.encode(self.put_uninit(E::SIZE));
    }

    /// Reserves an `N`-byte field (zeroed) whose value is known only after what follows it is
    /// written, such as a length prefix. Fill it with [`fill`](Self::fill) before committing.
    ///
    /// # Examples
    ///
    /// A length-prefixed frame:
    ///
    /// ```
    /// use sendbuf::WriteBuffer;
    ///
    /// let mut buf = WriteBuffer::new();
    /// let mut f = buf.format();
    /// let len = f.reserve_u16();
    /// f.put_slice(b"hello");
    /// let body = f.written_after(&len);
    /// f.fill_u16(len, body as u16);
    /// f.commit();
    /// assert_eq!(buf.chunk(), b"\x00\x05hello");
    /// ```
    pub fn reserve<const N: usize>(&mut self) -> Reserved<N> {
        let offset = self.len();
        self.put_bytes(0, N);
        self.unfilled += 1;
        if self.id == 0 {
            self.id = self.buf.next_guard_id();
        }
        Reserved {
            offset,
            guard: self.id,
            _not_send: PhantomData,
        }
    }

    /// Bytes written after the end of a reserved field: the usual value of a length prefix.
    ///
    /// See [`reserve`](Self::reserve).
    pub fn written_after<const N: usize>(&self, field: &Reserved<N>) -> usize {
        self.len() - (field.offset + N)
    }

    /// Writes `bytes` into a reserved field.
    ///
    /// See [`reserve`](Self::reserve).
    ///
    /// # Panics
    ///
    /// If `field` was reserved by another guard.
    pub fn fill<const N: usize>(&mut self, field: Reserved<N>, bytes: [u8; N]) {
        if field.guard != self.id {
            panic_foreign_field(field.offset);
        }
        let cur = self.cur;
        self.buf
            .scratch_mut()
            .written_mut(&cur, field.offset, N)
            .copy_from_slice(&bytes);
        self.unfilled -= 1;
    }

    reserve_int! {
        u16, 2 => reserve_u16, fill_u16, fill_u16_le;
        u32, 4 => reserve_u32, fill_u32, fill_u32_le;
        u64, 8 => reserve_u64, fill_u64, fill_u64_le;
    }

    /// The rest of the guard's current scratch block, for writing in place; never empty (a
    /// full block first moves the guard's bytes to a larger one). Nothing counts as written
    /// until [`advance_spare`](Self::advance_spare).
    #[cfg(feature = "bytes")]
    #[inline]
    pub(crate) fn spare_mut(&mut self) -> &mut [u8] {
        self.buf.scratch_mut().spare(&mut self.cur)
    }

    /// Counts the first `n` bytes of [`spare_mut`](Self::spare_mut) as written.
    ///
    /// # Panics
    ///
    /// If `n` is more than the block has left after the guard's bytes, naming both numbers.
    #[cfg(feature = "bytes")]
    #[inline]
    #[track_caller]
    pub(crate) fn advance_spare(&mut self, n: usize) {
        let room = self.cur.room();
        if n > room {
            panic_advance_spare(n, room);
        }
        self.cur.pos += n;
    }

    /// Keeps only the first `len` bytes written through this guard (a TLS record encrypted into
    /// room reserved for its largest size).
    #[cfg(feature = "rustls")]
    #[inline]
    pub(crate) fn truncate(&mut self, len: usize) {
        debug_assert!(len <= self.len() && self.unfilled == 0);
        self.cur.pos = self.cur.start + len.min(self.len());
    }

    /// Appends the written bytes to the buffer's queue, after everything committed or pinned
    /// before. Adjacent commits share one segment (one iovec).
    ///
    /// # Panics
    ///
    /// If a field reserved with [`reserve`](Self::reserve) has not been filled.
    ///
    /// # Examples
    ///
    /// ```
    /// let mut buf = sendbuf::WriteBuffer::new();
    /// let mut f = buf.format();
    /// f.put_slice(b"STORED\r\n");
    /// f.commit();
    /// assert_eq!(buf.pending_len(), 8);
    /// ```
    ///
    /// If a [hard limit](WriteBuffer::set_hard_limit) is set and the bytes do not fit under it;
    /// use [`try_commit`](Self::try_commit) then.
    #[inline(always)]
    #[track_caller]
    pub fn commit(self) {
        if let Err(err) = self.try_commit() {
            crate::error::panic_limit(&err);
        }
    }

    /// Like [`commit`](Self::commit), but rolls back and fails instead of passing the buffer's
    /// hard limit.
    ///
    /// # Errors
    ///
    /// [`HardLimitError`](crate::HardLimitError) if the bytes do not fit under the
    /// [hard limit](WriteBuffer::set_hard_limit); the buffer is as before the guard.
    ///
    /// # Panics
    ///
    /// If a field reserved with [`reserve`](Self::reserve) has not been filled.
    ///
    /// # Examples
    ///
    /// ```
    /// let mut buf = sendbuf::WriteBuffer::new();
    /// buf.set_hard_limit(Some(4));
    /// let mut f = buf.format();
    /// f.put_slice(b"too long");
    /// assert!(f.try_commit().is_err());
    /// assert!(buf.is_empty());
    /// ```
    #[inline(always)]
    #[track_caller]
    pub fn try_commit(self) -> Result<(), crate::HardLimitError> {
        if self.unfilled != 0 {
            panic_unfilled(self.unfilled);
        }
        let n = self.len();
        // From here on the guard's `Drop` would have nothing left to do: an empty guard never
        // relocated (only a write moves it), and a committed guard's block is the tail.
        // Skipping it saves its tail comparison on every commit.
        let mut guard = ManuallyDrop::new(self);
        if n == 0 {
            return Ok(());
        }
        let cur = guard.cur;
        let buf = &mut *guard.buf;
        let result = buf.commit_scratch(&cur);
        if result.is_err() {
            // Refused by the hard limit: roll the bytes back, as `Drop` would have.
            buf.scratch_mut().abandon(&cur);
        }
        result
    }
}

#[cold]
#[inline(never)]
#[track_caller]
fn panic_foreign_field(offset: usize) -> ! {
    panic!("reserved field at offset {offset} belongs to another format guard")
}

#[cfg(feature = "bytes")]
#[cold]
#[inline(never)]
#[track_caller]
fn panic_advance_spare(n: usize, room: usize) -> ! {
    panic!("cannot advance a format guard by {n} bytes: its current chunk has {room} bytes")
}

#[cold]
#[inline(never)]
#[track_caller]
fn panic_unfilled(n: usize) -> ! {
    panic!("format guard committed with {n} reserved field(s) never filled")
}

impl Drop for FormatGuard<'_> {
    #[inline(always)]
    fn drop(&mut self) {
        let cur = self.cur;
        self.buf.scratch_mut().abandon(&cur);
    }
}

impl fmt::Write for FormatGuard<'_> {
    #[inline]
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.put_slice(s.as_bytes());
        Ok(())
    }
}

/// Any `std::io::Write` producer (`write!`, `serde_json::to_writer`, an encoder) formats
/// straight into scratch, with no intermediate `Vec`.
///
/// Commit works as for every other writer of the guard: what was written becomes part of the
/// queue (counted by [`pending_len`](WriteBuffer::pending_len), sent by [`send_to`](WriteBuffer::send_to))
/// only when [`commit`](FormatGuard::commit) is called. [`flush`](std::io::Write::flush) does
/// *not* commit, and a guard dropped without `commit`, for example when the producer fails
/// halfway, rolls everything back, so a half-serialized message is never sent.
///
/// # Examples
///
/// ```
/// use std::io::Write;
/// use sendbuf::WriteBuffer;
///
/// let mut buf = WriteBuffer::new();
/// let mut f = buf.format();
/// write!(f, "Content-Length: {}\r\n\r\n", 42).unwrap();
/// f.flush().unwrap(); // does not commit
/// f.commit();         // now queued
/// assert_eq!(buf.chunk(), b"Content-Length: 42\r\n\r\n");
/// ```
///
/// A producer that fails halfway leaves nothing behind:
///
/// ```
/// use std::io::{self, Write};
/// use sendbuf::WriteBuffer;
///
/// // Stands for `serde_json::to_writer` or any function generic over `io::Write`.
/// fn to_writer<W: Write>(mut w: W, items: &[u32]) -> io::Result<()> {
///     w.write_all(b"[")?;
///     for (i, item) in items.iter().enumerate() {
///         if *item == 0 {
///             return Err(io::Error::new(io::ErrorKind::InvalidData, "zero"));
///         }
///         write!(w, "{}{item}", if i > 0 { "," } else { "" })?;
///     }
///     w.write_all(b"]")
/// }
///
/// let mut buf = WriteBuffer::new();
/// let mut f = buf.format();
/// to_writer(&mut f, &[1, 2, 3]).unwrap();
/// f.commit();
/// assert_eq!(buf.chunk(), b"[1,2,3]");
///
/// let mut f = buf.format();
/// assert!(to_writer(&mut f, &[4, 0]).is_err());
/// drop(f); // not committed: "[4," is rolled back
/// assert_eq!(buf.pending_len(), 7);
/// ```
impl std::io::Write for FormatGuard<'_> {
    /// Formats into scratch; never fails and never writes short. Nothing is queued until
    /// [`commit`](FormatGuard::commit).
    #[inline]
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.put_slice(buf);
        Ok(buf.len())
    }

    /// Formats every slice; never writes short.
    #[inline]
    fn write_vectored(&mut self, bufs: &[std::io::IoSlice<'_>]) -> std::io::Result<usize> {
        let mut n = 0;
        for b in bufs {
            self.put_slice(b);
            n += b.len();
        }
        Ok(n)
    }

    #[inline]
    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.put_slice(buf);
        Ok(())
    }

    /// Does nothing, and in particular does not commit: bytes become part of the queue only on
    /// [`commit`](FormatGuard::commit).
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl fmt::Debug for FormatGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FormatGuard")
            .field("len", &self.len())
            .field("unfilled", &self.unfilled)
            .finish()
    }
}
