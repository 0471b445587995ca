//! `tokio` integration (feature `tokio`): sending what is pending on any
//! [`tokio::io::AsyncWrite`].

use core::future::poll_fn;
use core::pin::Pin;
use core::task::{ready, Context, Poll};
use std::io;

use tokio::io::AsyncWrite;

use crate::iovec::GatherLimits;
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
