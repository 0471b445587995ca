//! `bytes` integration (feature `bytes`): [`bytes::Buf`] for [`WriteBuffer`].
//!
//! Pinning `Bytes` and `BytesMut` without a copy or an allocation lives with the other owner
//! kinds in `pinned.rs`.

use std::io::IoSlice;

use bytes::Buf;

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
