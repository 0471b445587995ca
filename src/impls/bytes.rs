//! `bytes` integration (feature `bytes`): [`bytes::Buf`] for [`WriteBuffer`] and
//! [`bytes::BufMut`] for [`FormatGuard`].
//!
//! Pinning `Bytes` and `BytesMut` without a copy or an allocation lives with the other owner
//! kinds in `pinned.rs`.

use std::io::IoSlice;

use bytes::buf::UninitSlice;
use bytes::{Buf, BufMut};

use crate::format::FormatGuard;
use crate::write_buffer::WriteBuffer;

/// Reads the pending bytes, front first; [`advance`](Buf::advance) releases what it passes, as
/// [`WriteBuffer::advance`] does.
///
/// Every method is the inherent one of the same name: `remaining` is
/// [`pending_len`](WriteBuffer::pending_len), `chunk` is the first iovec of
/// [`io_slices`](WriteBuffer::io_slices), and `chunks_vectored` fills `dst` from the same
/// iovecs, so a `Buf` consumer sees exactly what [`send_to`](WriteBuffer::send_to) would send.
///
/// # Examples
///
/// ```
/// use bytes::Buf;
/// use sendbuf::WriteBuffer;
///
/// let mut buf = WriteBuffer::new();
/// buf.put_slice(b"\x00\x05");
/// buf.pin(bytes::Bytes::from(vec![b'v'; 1024]));
///
/// // Any `Buf` consumer works, here `get_u16` and `copy_to_bytes`.
/// assert_eq!(buf.get_u16(), 5);
/// assert_eq!(Buf::remaining(&buf), 1024);
/// let body = buf.copy_to_bytes(1024);
/// assert_eq!(body.len(), 1024);
/// assert!(buf.is_empty());
/// ```
impl Buf for WriteBuffer {
    #[inline]
    fn remaining(&self) -> usize {
        WriteBuffer::pending_len(self)
    }

    #[inline]
    fn chunk(&self) -> &[u8] {
        WriteBuffer::chunk(self)
    }

    #[inline]
    fn chunks_vectored<'a>(&'a self, dst: &mut [IoSlice<'a>]) -> usize {
        WriteBuffer::chunks_vectored(self, dst)
    }

    /// # Panics
    ///
    /// If `cnt > self.remaining()`, naming both numbers, as [`WriteBuffer::advance`].
    #[inline]
    #[track_caller]
    fn advance(&mut self, cnt: usize) {
        WriteBuffer::advance(self, cnt);
    }
}

/// Encoders that write into any `impl BufMut` (`prost::Message::encode`, protocol crates)
/// write straight into scratch, with no intermediate `BytesMut`.
///
/// The guard's rules hold as for its own writers: nothing is queued until
/// [`commit`](FormatGuard::commit), a guard dropped without it rolls back every byte written
/// through `BufMut` too (an encoder that fails halfway leaves nothing behind), and a
/// [hard limit](WriteBuffer::set_hard_limit) is checked at commit
/// ([`try_commit`](FormatGuard::try_commit) reports it), not while writing.
///
/// * [`remaining_mut`](BufMut::remaining_mut) is `isize::MAX as usize - self.len()`, as for a
///   `Vec<u8>`: a guard is not bounded by its current block, it moves its bytes to a larger
///   one when they outgrow it. The hard limit is not reflected there, so an encoder that
///   checks `remaining_mut` before writing does not see it; the commit does.
/// * [`chunk_mut`](BufMut::chunk_mut) is the rest of the guard's current scratch block (never
///   empty: a full block first moves the guard's bytes to a new one), and
///   [`advance_mut`](BufMut::advance_mut) counts bytes written there.
/// * `put_slice`, `put_bytes`, `put_u8`, `put_i8` and `put` are the guard's own writers, which
///   reserve room for all the bytes at once; the other `put_*` methods go through `put_slice`.
///   Either way the bytes are those `bytes` documents (`put_u16` big-endian and so on).
///
/// Several of `FormatGuard`'s inherent methods share a name with `BufMut`'s (`put_u8`,
/// `put_u16`..`put_i64_ne`, `put_slice`, `put_bytes`, `put`). A method call on a guard picks the
/// inherent one, so code that imports `BufMut` is never ambiguous; the integer writers and
/// `put_slice`/`put_bytes` write the same bytes either way. `put` differs: the inherent one
/// takes an [`Encode`](crate::Encode) value, `BufMut::put` a `Buf`; write
/// `BufMut::put(&mut f, src)` for the latter. Methods only `BufMut` has (`put_u128`,
/// `put_f64`, `put_uint`, `writer`...) are used as usual with the trait imported.
///
/// # Examples
///
/// A function generic over `BufMut`, here a length-prefixed frame, writes into a guard as it
/// would into a `Vec<u8>`:
///
/// ```
/// use bytes::BufMut;
/// use sendbuf::WriteBuffer;
///
/// fn encode_frame(dst: &mut impl BufMut, id: u32, payload: &[u8]) {
///     dst.put_u32(id);
///     dst.put_u16_le(payload.len() as u16);
///     dst.put_slice(payload);
///     dst.put_bytes(0, 2);
/// }
///
/// let mut buf = WriteBuffer::new();
/// let mut f = buf.format();
/// encode_frame(&mut f, 7, b"hello");
/// f.commit();
///
/// let mut expected = Vec::new();
/// encode_frame(&mut expected, 7, b"hello");
/// assert_eq!(buf.chunk(), expected);
///
/// // Dropped without commit: the bytes written through `BufMut` are rolled back.
/// let mut f = buf.format();
/// encode_frame(&mut f, 8, b"never sent");
/// drop(f);
/// assert_eq!(buf.pending_len(), expected.len());
/// ```
///
/// With `BufMut` imported, a method call on a guard still means the inherent method:
///
/// ```
/// use bytes::BufMut;
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
/// f.put(&Magic); // FormatGuard::put (an `Encode`)
/// BufMut::put(&mut f, &b"\x01\x02"[..]); // BufMut::put (a `Buf`)
/// f.put_u128(3); // only `BufMut` has it
/// assert_eq!(f.written()[..4], [0xCA, 0xFE, 1, 2]);
/// assert_eq!(f.len(), 4 + 16);
/// ```
// The trait is `unsafe` to implement and `advance_mut` is an `unsafe fn`: the only unsafe
// code of this file, allowed here rather than for the whole file.
#[allow(unsafe_code)]
// SAFETY: the trait's contract is that `chunk_mut` returns memory that is valid to write for
// its whole length and that `advance_mut(cnt)` then makes the first `cnt` bytes of it part of
// the buffer (reads never see memory that was not initialised). `chunk_mut` returns the bytes
// `cur.pos..cur.cap` of the guard's live scratch block, which belong to the guard alone
// (`Scratch::spare`), and `advance_mut` moves `cur.pos` forward within them after checking
// `cnt` against that room, so `written()` and the commit only ever see bytes of the block.
// Scratch memory is always initialised (blocks are zeroed, or come from a pool as `Box<[u8]>`),
// so the guard's bytes are initialised even if a caller advanced past bytes it did not write.
unsafe impl BufMut for FormatGuard<'_> {
    #[inline]
    fn remaining_mut(&self) -> usize {
        isize::MAX as usize - self.len()
    }

    /// # Panics
    ///
    /// If `cnt` is more than the length of the last [`chunk_mut`](BufMut::chunk_mut), naming
    /// both numbers.
    #[inline]
    #[track_caller]
    unsafe fn advance_mut(&mut self, cnt: usize) {
        self.advance_spare(cnt);
    }

    #[inline]
    fn chunk_mut(&mut self) -> &mut UninitSlice {
        UninitSlice::new(self.spare_mut())
    }

    #[inline]
    fn put<T: Buf>(&mut self, mut src: T)
    where
        Self: Sized,
    {
        // One reservation for the whole source, however many chunks it has.
        let n = src.remaining();
        src.copy_to_slice(self.put_uninit(n));
    }

    #[inline]
    fn put_slice(&mut self, src: &[u8]) {
        FormatGuard::put_slice(self, src);
    }

    #[inline]
    fn put_bytes(&mut self, val: u8, cnt: usize) {
        FormatGuard::put_bytes(self, val, cnt);
    }

    #[inline]
    fn put_u8(&mut self, n: u8) {
        FormatGuard::put_u8(self, n);
    }

    #[inline]
    fn put_i8(&mut self, n: i8) {
        FormatGuard::put_i8(self, n);
    }
}
