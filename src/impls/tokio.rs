//! `tokio` integration (feature `tokio`): sending what is pending on any
//! [`tokio::io::AsyncWrite`], and reading from any [`tokio::io::AsyncRead`] into a
//! [`ReadBuffer`].

use core::future::poll_fn;
use core::pin::Pin;
use core::task::{ready, Context, Poll};
use std::io;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::iovec::GatherLimits;
use crate::read_buffer::ReadBuffer;
use crate::write_buffer::WriteBuffer;

impl WriteBuffer {
    /// Writes pending bytes with one [`poll_write_vectored`](AsyncWrite::poll_write_vectored)
    /// (at most `IOV_MAX` iovecs) and advances past what the writer accepted; the async twin
    /// of [`write_to`](Self::write_to). Returns `Ready(Ok(n))` with that byte count, 0 only when
    /// nothing was pending.
    ///
    /// A writer whose [`is_write_vectored`](AsyncWrite::is_write_vectored) is false gets
    /// [`chunk`](Self::chunk) through `poll_write` instead: its default vectored write would
    /// take only the first slice anyway.
    ///
    /// On `Pending` the buffer is unchanged and the writer has arranged to wake `cx`. Call it
    /// again while [`has_pending`](Self::has_pending); [`flush_to`](Self::flush_to) does that loop.
    ///
    /// # Errors
    ///
    /// Whatever the writer returns (the buffer is then unchanged);
    /// [`io::ErrorKind::WriteZero`] if the writer accepts nothing while bytes are pending; and
    /// [`io::ErrorKind::InvalidData`] if it claims more bytes than it was given.
    ///
    /// # Examples
    ///
    /// A hand-written future that sends once:
    ///
    /// ```
    /// use std::pin::Pin;
    /// use sendbuf::WriteBuffer;
    ///
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let mut buf = WriteBuffer::new();
    /// buf.put_slice(b"HTTP/1.1 200 OK\r\n\r\n");
    /// let mut out: Vec<u8> = Vec::new();
    /// let n = std::future::poll_fn(|cx| buf.poll_write_to(cx, Pin::new(&mut out)))
    ///     .await
    ///     .unwrap();
    /// assert_eq!(n, 19);
    /// assert!(buf.is_empty());
    /// # });
    /// ```
    pub fn poll_write_to<W: AsyncWrite + ?Sized>(
        &mut self,
        cx: &mut Context<'_>,
        mut writer: Pin<&mut W>,
    ) -> Poll<io::Result<usize>> {
        // Pending bytes, not `is_empty`: bytes the kernel still holds need no sending.
        if !self.has_pending() {
            return Poll::Ready(Ok(0));
        }
        let (written, offered) = if writer.is_write_vectored() {
            let all = self.io_slices();
            let iov = &all[..all.len().min(GatherLimits::new().max_iovecs())];
            let offered: usize = iov.iter().map(|s| s.len()).sum();
            (writer.as_mut().poll_write_vectored(cx, iov), offered)
        } else {
            let chunk = self.chunk();
            (writer.as_mut().poll_write(cx, chunk), chunk.len())
        };
        let written = ready!(written)?;
        if written == 0 {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "writer accepted no bytes while bytes were pending",
            )));
        }
        if written > offered {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("writer reported {written} bytes written of {offered} offered"),
            )));
        }
        self.try_advance(written)?;
        Poll::Ready(Ok(written))
    }

    /// Writes everything pending to `writer`, through as many partial writes and `Pending`s as
    /// it takes, then flushes the writer. Returns the bytes written.
    ///
    /// Cancel-safe: if the future is dropped, the buffer has advanced past exactly what the
    /// writer accepted and the rest is still pending.
    ///
    /// # Errors
    ///
    /// As [`poll_write_to`](Self::poll_write_to), and the writer's `poll_flush` error. The bytes
    /// written before the error have been advanced past; the rest is still pending.
    ///
    /// # Examples
    ///
    /// ```
    /// use sendbuf::WriteBuffer;
    ///
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let mut buf = WriteBuffer::new();
    /// buf.put_slice(b"header\r\n");
    /// buf.pin(vec![b'v'; 100_000]);
    ///
    /// let (mut tx, mut rx) = tokio::io::duplex(4096); // accepts at most 4 KiB at a time
    /// let reader = tokio::spawn(async move {
    ///     let mut got = Vec::new();
    ///     tokio::io::AsyncReadExt::read_to_end(&mut rx, &mut got).await.unwrap();
    ///     got
    /// });
    /// assert_eq!(buf.flush_to(&mut tx).await.unwrap(), 100_008);
    /// drop(tx);
    /// assert_eq!(reader.await.unwrap().len(), 100_008);
    /// assert!(buf.is_empty());
    /// # });
    /// ```
    pub async fn flush_to<W: AsyncWrite + Unpin + ?Sized>(
        &mut self,
        writer: &mut W,
    ) -> io::Result<usize> {
        let mut total = 0;
        // Pending bytes, not `is_empty`, as in `poll_write_to`.
        while self.has_pending() {
            total += poll_fn(|cx| self.poll_write_to(cx, Pin::new(&mut *writer))).await?;
        }
        poll_fn(|cx| Pin::new(&mut *writer).poll_flush(cx)).await?;
        Ok(total)
    }
}

/// The read side on tokio: [`poll_read_from`](ReadBuffer::poll_read_from) and
/// [`read_from_async`](ReadBuffer::read_from_async) are [`read_from`](ReadBuffer::read_from) for
/// an [`AsyncRead`], with the same growth, compaction, pool and
/// [`max_len`](ReadBuffer::max_len) limit.
///
/// # Relation with `BytesMut` and `AsyncReadExt::read_buf`
///
/// `reader.read_buf(&mut bytes_mut)` also reads into spare capacity and lets the parser look
/// at everything buffered. A `ReadBuffer` differs where a server with many connections cares:
/// it never holds more than `max_len` bytes (a peer that sends without end gets an error, not
/// an ever larger allocation; `BytesMut` grows as long as it is asked to), and once everything
/// read has been consumed an idle connection gives its storage back
/// ([`steal`](crate::Stealable::steal), into a [pool](ReadBuffer::with_pool) shared by the
/// connections) and takes storage again on its next read, which a `BytesMut` held by each
/// connection's task cannot do. Reads go into the buffer's initialised spare space, so no read
/// zeroes memory.
impl ReadBuffer {
    /// Makes one [`poll_read`](AsyncRead::poll_read) into the spare space after
    /// [`data`](Self::data), first making room if there is none, as
    /// [`read_from`](Self::read_from) does. Returns `Ready(Ok(n))` with the bytes read;
    /// `Ready(Ok(0))` means end of stream.
    ///
    /// On `Pending` nothing was read and the reader has arranged to wake `cx` (the storage may
    /// have been moved or grown to make room; [`data`](Self::data) is unchanged).
    /// [`Interrupted`](io::ErrorKind::Interrupted) is retried; every other error is returned
    /// with the buffer's data unchanged.
    ///
    /// # Errors
    ///
    /// * The reader's error.
    /// * An error of kind [`OutOfMemory`](io::ErrorKind::OutOfMemory) wrapping a
    ///   [`ReadLimitError`](crate::ReadLimitError) if the buffer already holds
    ///   [`max_len`](Self::max_len) bytes; the reader is not polled, and the buffer stays
    ///   usable.
    /// * An error of kind [`InvalidData`](io::ErrorKind::InvalidData) if the reader replaced
    ///   the [`ReadBuf`] it was given with another one.
    ///
    /// # Examples
    ///
    /// A hand-written future that reads once:
    ///
    /// ```
    /// use std::pin::Pin;
    /// use sendbuf::ReadBuffer;
    ///
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let mut buf = ReadBuffer::new();
    /// let mut peer: &[u8] = b"get k\r\n";
    /// let n = std::future::poll_fn(|cx| buf.poll_read_from(cx, Pin::new(&mut peer)))
    ///     .await
    ///     .unwrap();
    /// assert_eq!(n, 7);
    /// assert_eq!(buf.data(), b"get k\r\n");
    /// # });
    /// ```
    pub fn poll_read_from<R: AsyncRead + ?Sized>(
        &mut self,
        cx: &mut Context<'_>,
        mut reader: Pin<&mut R>,
    ) -> Poll<io::Result<usize>> {
        let spare = self.read_room()?;
        let room = spare.len();
        let start = spare.as_ptr();
        // The spare space is initialised (storage is, from its allocation on), so the reader
        // gets it as initialised: no zeroing per read.
        let mut read = ReadBuf::new(spare);
        loop {
            match ready!(reader.as_mut().poll_read(cx, &mut read)) {
                Ok(()) => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        let filled = read.filled();
        if filled.as_ptr() != start {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "reader replaced the ReadBuf it was given",
            )));
        }
        let n = filled.len();
        Poll::Ready(self.commit_read(n, room))
    }

    /// Reads once from `reader` into the spare space after [`data`](Self::data): the async
    /// twin of [`read_from`](Self::read_from), through
    /// [`poll_read_from`](Self::poll_read_from). Returns the bytes read; `Ok(0)` means end of
    /// stream.
    ///
    /// Read what is available, parse every complete request in [`data`](Self::data),
    /// [`consume`](Self::consume) them, and read again: an incomplete request stays at the
    /// front until the rest arrives.
    ///
    /// Cancel-safe: if the future is dropped before it completes, nothing was read.
    ///
    /// # Errors
    ///
    /// As [`poll_read_from`](Self::poll_read_from): the reader's error; kind
    /// [`OutOfMemory`](io::ErrorKind::OutOfMemory) wrapping a
    /// [`ReadLimitError`](crate::ReadLimitError) if the buffer already holds
    /// [`max_len`](Self::max_len) bytes (the peer sent more than the server will buffer).
    ///
    /// # Examples
    ///
    /// Lines that arrive in pieces through a pipe that holds 4 bytes:
    ///
    /// ```
    /// use sendbuf::ReadBuffer;
    /// use tokio::io::AsyncWriteExt;
    ///
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let (mut client, mut server) = tokio::io::duplex(4);
    /// tokio::spawn(async move { client.write_all(b"get a\r\nget b\r\nge").await });
    ///
    /// let mut buf = ReadBuffer::new();
    /// let mut lines = Vec::new();
    /// while buf.read_from_async(&mut server).await? > 0 {
    ///     while let Some(end) = buf.data().windows(2).position(|w| w == b"\r\n") {
    ///         lines.push(String::from_utf8_lossy(&buf.data()[..end]).into_owned());
    ///         buf.consume(end + 2);
    ///     }
    /// }
    /// assert_eq!(lines, ["get a", "get b"]);
    /// assert_eq!(buf.data(), b"ge"); // the client closed mid-request
    /// # Ok::<(), std::io::Error>(())
    /// # }).unwrap();
    /// ```
    pub async fn read_from_async<R: AsyncRead + Unpin + ?Sized>(
        &mut self,
        reader: &mut R,
    ) -> io::Result<usize> {
        poll_fn(|cx| self.poll_read_from(cx, Pin::new(&mut *reader))).await
    }
}
