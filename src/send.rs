//! Sending what is pending: [`WriteBuffer::send_to`] on a socket, [`WriteBuffer::write_to`] on
//! any `std::io::Write`.

use std::io::{self, IoSlice, Write};

use crate::iovec::{GatherLimit, IoVecBuilder};
use crate::write_buffer::WriteBuffer;

impl WriteBuffer {
    /// Sends pending bytes on a socket with one `sendmsg` (`MSG_NOSIGNAL`, retried on `EINTR`)
    /// and advances past what the kernel accepted. Returns that byte count; 0 only when nothing
    /// was pending.
    ///
    /// Call it again while it returns `Ok` and [`is_empty`](Self::is_empty) is false; stop on
    /// `WouldBlock` and wait for the socket to become writable.
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::WouldBlock`] when a non-blocking socket is full (`EAGAIN`), and any
    /// other `sendmsg` error (`EPIPE`, `ECONNRESET`, `ENOTSOCK`...). The buffer is unchanged.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(all(unix, not(miri)))] { // sendmsg is FFI, which Miri cannot run
    /// use std::io::Read;
    /// use std::os::unix::net::UnixStream;
    ///
    /// let (a, mut b) = UnixStream::pair().unwrap();
    /// let mut buf = sendbuf::WriteBuffer::new();
    /// buf.put_slice(b"hello, ");
    /// buf.pin(b"world" as &'static [u8]);
    /// while !buf.is_empty() {
    ///     buf.send_to(&a).unwrap();
    /// }
    /// let mut got = [0u8; 12];
    /// b.read_exact(&mut got).unwrap();
    /// assert_eq!(&got, b"hello, world");
    /// # }
    /// ```
    #[cfg(unix)]
    pub fn send_to(&mut self, fd: impl std::os::fd::AsFd) -> io::Result<usize> {
        self.send_to_with(fd, GatherLimit::default())
    }

    /// [`send_to`](Self::send_to) with limits on iovecs and bytes per call (for fairness
    /// between connections).
    ///
    /// # Errors
    ///
    /// As [`send_to`](Self::send_to).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(all(unix, not(miri)))] { // sendmsg is FFI, which Miri cannot run
    /// use std::os::unix::net::UnixStream;
    /// use sendbuf::{GatherLimit, WriteBuffer};
    ///
    /// let (a, _b) = UnixStream::pair().unwrap();
    /// let mut buf = WriteBuffer::new();
    /// buf.put_slice(&[0u8; 100]);
    /// assert_eq!(buf.send_to_with(&a, GatherLimit::default().max_bytes(10)).unwrap(), 10);
    /// assert_eq!(buf.len(), 90);
    /// # }
    /// ```
    #[cfg(unix)]
    pub fn send_to_with(
        &mut self,
        fd: impl std::os::fd::AsFd,
        limit: GatherLimit,
    ) -> io::Result<usize> {
        // Pending bytes, not `is_empty`: bytes the kernel still holds need no sending.
        #[allow(clippy::len_zero)]
        if self.len() == 0 {
            return Ok(0);
        }
        let (sent, _) = self.with_gathered(limit, |iov| crate::sys::sendmsg(fd.as_fd(), iov, 0));
        let sent = sent?;
        self.try_advance(sent)?;
        Ok(sent)
    }

    /// Writes pending bytes with one [`Write::write_vectored`] call and advances past what the
    /// writer accepted. Returns that byte count; 0 only when nothing was pending.
    ///
    /// # Errors
    ///
    /// Whatever the writer returns (the buffer is then unchanged);
    /// [`io::ErrorKind::WriteZero`] if the writer accepts nothing while bytes are pending; and
    /// [`io::ErrorKind::InvalidData`] if it claims more bytes than it was given.
    ///
    /// # Examples
    ///
    /// ```
    /// let mut buf = sendbuf::WriteBuffer::new();
    /// buf.put_slice(b"hello, ");
    /// buf.pin(vec![b'w'; 1000]);
    /// let mut out = Vec::new();
    /// while !buf.is_empty() {
    ///     buf.write_to(&mut out).unwrap();
    /// }
    /// assert_eq!(out.len(), 1007);
    /// ```
    pub fn write_to<W: Write + ?Sized>(&mut self, writer: &mut W) -> io::Result<usize> {
        self.write_to_with(writer, GatherLimit::default())
    }

    /// [`write_to`](Self::write_to) with limits on iovecs and bytes per call.
    ///
    /// # Errors
    ///
    /// As [`write_to`](Self::write_to).
    ///
    /// # Examples
    ///
    /// ```
    /// use sendbuf::GatherLimit;
    ///
    /// let mut buf = sendbuf::WriteBuffer::new();
    /// buf.put_slice(&[1u8; 100]);
    /// let mut out = Vec::new();
    /// buf.write_to_with(&mut out, GatherLimit::default().max_bytes(30)).unwrap();
    /// assert_eq!((out.len(), buf.len()), (30, 70));
    /// ```
    pub fn write_to_with<W: Write + ?Sized>(
        &mut self,
        writer: &mut W,
        limit: GatherLimit,
    ) -> io::Result<usize> {
        // Pending bytes, not `is_empty`: bytes the kernel still holds need no sending.
        #[allow(clippy::len_zero)]
        if self.len() == 0 {
            return Ok(0);
        }
        let (written, offered) = self.with_gathered(limit, |iov| writer.write_vectored(iov));
        let written = written?;
        if written == 0 {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "writer accepted no bytes while bytes were pending",
            ));
        }
        if written > offered {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("writer reported {written} bytes written of {offered} offered"),
            ));
        }
        self.try_advance(written)?;
        Ok(written)
    }

    /// Calls `f` with the pending iovecs within `limit` and returns its result and the bytes
    /// offered. Without a byte budget the builder passes the buffer's own iovec array as it is:
    /// no copy.
    fn with_gathered<R>(
        &self,
        limit: GatherLimit,
        f: impl FnOnce(&[IoSlice<'_>]) -> R,
    ) -> (R, usize) {
        let mut builder = IoVecBuilder::with_limit(limit);
        let offered = builder.gather(self);
        (f(builder.as_slices()), offered)
    }
}
