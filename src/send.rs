//! Sending what is pending: [`WriteBuffer::send_to`] and [`WriteBuffer::send_all`] on a socket,
//! [`WriteBuffer::write_to`] on any `std::io::Write`.

use std::io::{self, IoSlice, Write};
#[cfg(unix)]
use std::time::{Duration, Instant};

use crate::iovec::{GatherLimits, IoVecBuilder};
use crate::write_buffer::WriteBuffer;

impl WriteBuffer {
    /// Sends pending bytes on a socket with one `sendmsg` (`MSG_NOSIGNAL`, retried on `EINTR`)
    /// and advances past what the kernel accepted. Returns that byte count; 0 only when nothing
    /// was pending.
    ///
    /// Call it again while it returns `Ok` and [`has_pending`](Self::has_pending) is true; stop
    /// on `WouldBlock` and wait for the socket to become writable (or call
    /// [`send_all`](Self::send_all), which waits for you).
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
    /// while buf.has_pending() {
    ///     buf.send_to(&a).unwrap();
    /// }
    /// let mut got = [0u8; 12];
    /// b.read_exact(&mut got).unwrap();
    /// assert_eq!(&got, b"hello, world");
    /// # }
    /// ```
    #[cfg(unix)]
    pub fn send_to(&mut self, fd: impl std::os::fd::AsFd) -> io::Result<usize> {
        self.send_to_with(fd, GatherLimits::new())
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
    /// use sendbuf::{GatherLimits, WriteBuffer};
    ///
    /// let (a, _b) = UnixStream::pair().unwrap();
    /// let mut buf = WriteBuffer::new();
    /// buf.put_slice(&[0u8; 100]);
    /// assert_eq!(buf.send_to_with(&a, GatherLimits::new().with_max_bytes(10)).unwrap(), 10);
    /// assert_eq!(buf.pending_len(), 90);
    /// # }
    /// ```
    #[cfg(unix)]
    pub fn send_to_with(
        &mut self,
        fd: impl std::os::fd::AsFd,
        limit: GatherLimits,
    ) -> io::Result<usize> {
        self.send_flags(fd.as_fd(), limit, 0)
    }

    /// One `sendmsg` with `flags` (besides `MSG_NOSIGNAL`), advanced past what it took.
    #[cfg(unix)]
    #[inline]
    fn send_flags(
        &mut self,
        fd: std::os::fd::BorrowedFd<'_>,
        limit: GatherLimits,
        flags: libc::c_int,
    ) -> io::Result<usize> {
        // Pending bytes, not `is_empty`: bytes the kernel still holds need no sending.
        if !self.has_pending() {
            return Ok(0);
        }
        let (sent, _) = self.with_gathered(limit, |iov| crate::sys::sendmsg(fd, iov, flags));
        let sent = sent?;
        self.try_advance(sent)?;
        Ok(sent)
    }

    /// Sends everything pending on a socket, waiting for it to become writable whenever it is
    /// full, for at most `timeout` in all (`None`: as long as it takes). Returns the bytes sent.
    ///
    /// The blocking convenience, as [`Write::write_all`] is for `write`: it works on blocking
    /// and non-blocking sockets alike (each `sendmsg` is made with `MSG_DONTWAIT` and the wait is
    /// a `poll` for `POLLOUT`, so the timeout holds either way). An event loop does not call it:
    /// it calls [`send_to`](Self::send_to) when the socket is writable and keeps the rest.
    ///
    /// When it returns `Ok`, nothing is pending; bytes of zero-copy sends that the kernel still
    /// holds ([`held_len`](Self::held_len)) are not waited for.
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::TimedOut`] when `timeout` passes with bytes still pending, with both
    /// numbers in the message; any `sendmsg` or `poll` error (`EPIPE`, `ECONNRESET`...). In
    /// every case the buffer has advanced past exactly the bytes the kernel accepted, and what
    /// is left is still pending: [`pending_len`](Self::pending_len) tells how much.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(all(unix, not(miri)))] { // sendmsg and poll are FFI, which Miri cannot run
    /// use std::io::{ErrorKind, Read};
    /// use std::os::unix::net::UnixStream;
    /// use std::time::Duration;
    ///
    /// let (a, mut b) = UnixStream::pair()?;
    /// let mut buf = sendbuf::WriteBuffer::new();
    /// buf.put_slice(b"VALUE big 0 1048576\r\n");
    /// buf.pin(vec![b'v'; 1 << 20]); // far more than the socket buffers
    ///
    /// // Nobody reads: the socket fills up and the timeout passes.
    /// let err = buf.send_all(&a, Some(Duration::from_millis(50))).unwrap_err();
    /// assert_eq!(err.kind(), ErrorKind::TimedOut);
    /// assert!(buf.has_pending()); // nothing lost: the rest is still queued
    ///
    /// // With a reader on the other end, everything goes out.
    /// let reader = std::thread::spawn(move || {
    ///     let mut got = Vec::new();
    ///     b.read_to_end(&mut got).map(|_| got.len())
    /// });
    /// buf.send_all(&a, None)?;
    /// drop(a);
    /// assert_eq!(reader.join().unwrap()?, 21 + (1 << 20));
    /// assert!(buf.is_empty());
    /// # }
    /// # Ok::<(), std::io::Error>(())
    /// ```
    #[cfg(unix)]
    pub fn send_all(
        &mut self,
        fd: impl std::os::fd::AsFd,
        timeout: Option<Duration>,
    ) -> io::Result<usize> {
        let fd = fd.as_fd();
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        let mut sent = 0;
        while self.has_pending() {
            match self.send_flags(fd, GatherLimits::new(), crate::sys::MSG_DONTWAIT) {
                Ok(n) => sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let wait_ms = match (timeout, deadline) {
                        (None, _) | (Some(_), None) => -1,
                        (Some(t), Some(deadline)) => {
                            let left = deadline.saturating_duration_since(Instant::now());
                            if left.is_zero() {
                                return Err(self.timed_out(t, sent));
                            }
                            // Round up, so the last wait does not end just short of the deadline.
                            let ms = left.as_nanos().div_ceil(1_000_000);
                            libc::c_int::try_from(ms).unwrap_or(libc::c_int::MAX)
                        }
                    };
                    crate::sys::wait_writable(fd, wait_ms)?;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(sent)
    }

    #[cfg(unix)]
    #[cold]
    fn timed_out(&self, timeout: Duration, sent: usize) -> io::Error {
        io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "cannot send everything within {timeout:?}: sent {sent} bytes, {} bytes still pending",
                self.pending_len()
            ),
        )
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
    /// while buf.has_pending() {
    ///     buf.write_to(&mut out).unwrap();
    /// }
    /// assert_eq!(out.len(), 1007);
    /// ```
    pub fn write_to<W: Write + ?Sized>(&mut self, writer: &mut W) -> io::Result<usize> {
        self.write_to_with(writer, GatherLimits::new())
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
    /// use sendbuf::GatherLimits;
    ///
    /// let mut buf = sendbuf::WriteBuffer::new();
    /// buf.put_slice(&[1u8; 100]);
    /// let mut out = Vec::new();
    /// buf.write_to_with(&mut out, GatherLimits::new().with_max_bytes(30)).unwrap();
    /// assert_eq!((out.len(), buf.pending_len()), (30, 70));
    /// ```
    pub fn write_to_with<W: Write + ?Sized>(
        &mut self,
        writer: &mut W,
        limit: GatherLimits,
    ) -> io::Result<usize> {
        // Pending bytes, not `is_empty`: bytes the kernel still holds need no sending.
        if !self.has_pending() {
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
        limit: GatherLimits,
        f: impl FnOnce(&[IoSlice<'_>]) -> R,
    ) -> (R, usize) {
        let mut builder = IoVecBuilder::with_limits(limit);
        let offered = builder.gather(self);
        (f(builder.as_slices()), offered)
    }
}
