//! [`ZeroCopy`]: `MSG_ZEROCOPY` sends on plain sockets, released on the kernel's completions.
//!
//! With `MSG_ZEROCOPY` the kernel keeps reading the sent memory after `sendmsg` returns, until it
//! reports on the socket's error queue that it is done. [`ZeroCopy`] sends a [`WriteBuffer`]'s
//! pending bytes that way, holds what was sent (pinned values stay alive, scratch is not reused,
//! [`is_empty`](WriteBuffer::is_empty) and steals say "not empty"), reads the completions and
//! releases exactly the bytes of the sends they cover.
//!
//! The bookkeeping (which counter value each send got, which stream offset it ended at, which
//! completions arrived) is plain Rust with no system call: [`ZeroCopy::send_with`],
//! [`ZeroCopy::record_send`] and [`ZeroCopy::complete`] drive it from any source of sends and
//! completions (tests, a model, another backend). [`ZeroCopy::send`] and
//! [`ZeroCopy::poll_completions`] are the same with `sendmsg` and `recvmsg(MSG_ERRQUEUE)`.

use std::collections::VecDeque;
use std::io::{self, IoSlice};

use crate::error::AdvanceError;
use crate::segment::Release;
use crate::write_buffer::WriteBuffer;

/// Sends with fewer pending bytes than this are copied, not sent zero-copy.
///
/// The kernel documentation says `MSG_ZEROCOPY` "is generally only effective at writes over
/// around 10 KB": below that, pinning pages and handling a completion cost more than the copy
/// saves. On loopback the kernel copies anyway (and flags the completion so), so a measurement
/// here can only show what zero copy *adds*: with `examples/zerocopy.rs` (one pinned value per
/// `sendmsg`, completions read after each, copying and zero-copy rounds interleaved) a
/// zero-copy send took 2.3–2.6× as long as a copying one at 1–4 KiB and 1.0–1.4× from 8 to
/// 64 KiB. 16 KiB stays above the kernel's figure and out of the range where the added cost
/// dominates; the saving itself (a copy of the whole payload per send) shows only on a real
/// NIC, where a server should measure and [`set_threshold`](ZeroCopy::set_threshold).
pub const DEFAULT_ZEROCOPY_THRESHOLD: usize = 16 * 1024;

/// The `ENOBUFS` errno: the socket's option memory (`optmem_max`) cannot track another
/// zero-copy send.
const ENOBUFS: i32 = libc::ENOBUFS;

/// Counters of what a [`ZeroCopy`] did, for metrics and tests.
///
/// # Examples
///
/// ```
/// let zc = sendbuf::ZeroCopy::new();
/// assert_eq!(zc.stats(), sendbuf::ZeroCopyStats::default());
/// ```
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ZeroCopyStats {
    /// Sends made with `MSG_ZEROCOPY` that the kernel accepted bytes from.
    pub zero_copy_sends: u64,
    /// Copying sends (below the threshold, zero copy off, or after `ENOBUFS`).
    pub copying_sends: u64,
    /// Zero-copy attempts refused with `ENOBUFS` and redone as copying sends.
    pub enobufs: u64,
    /// Completion notifications handled (each may cover a range of sends).
    pub completions: u64,
    /// Of those, notifications flagged `SO_EE_CODE_ZEROCOPY_COPIED`.
    pub copied: u64,
    /// Error-queue messages or completed counter values that matched no outstanding send.
    pub ignored: u64,
}

/// One zero-copy send waiting for its completion.
#[derive(Debug, Clone, Copy)]
struct Outstanding {
    /// Stream offset just past the send's last byte.
    end: u64,
    /// Its completion has arrived (possibly before an earlier send's).
    done: bool,
}

/// The kernel's per-socket zero-copy counter and the sends waiting on it. No system calls.
#[derive(Debug, Default)]
struct Tracker {
    /// The counter value the kernel gives the next zero-copy send.
    next_id: u32,
    /// Sends `next_id - len ..= next_id - 1` (wrapping), oldest first.
    outstanding: VecDeque<Outstanding>,
}

impl Tracker {
    fn record(&mut self, end: u64) {
        self.outstanding.push_back(Outstanding { end, done: false });
        self.next_id = self.next_id.wrapping_add(1);
    }

    /// Marks sends `lo..=hi` (wrapping) complete. Returns how many outstanding sends the range
    /// newly completed, how many of its values matched none, and the stream offset the kernel
    /// is now done with, if the oldest sends completed.
    fn complete(&mut self, lo: u32, hi: u32) -> (u64, u64, Option<u64>) {
        let len = self.outstanding.len() as u64;
        let base = self.next_id.wrapping_sub(len as u32);
        let count = u64::from(hi.wrapping_sub(lo)) + 1;
        let start = u64::from(lo.wrapping_sub(base));
        // The range as indices into `outstanding`, modulo 2^32: it may start inside the queue,
        // or start before it (values already completed) and wrap into it.
        let (from, to) = if start < len {
            (start, (start + count).min(len))
        } else if start + count > 1 << 32 {
            (0, (start + count - (1 << 32)).min(len))
        } else {
            (0, 0)
        };
        let mut newly = 0;
        for i in from..to {
            let o = &mut self.outstanding[i as usize];
            if !o.done {
                o.done = true;
                newly += 1;
            }
        }
        let mut through = None;
        while let Some(o) = self.outstanding.front().filter(|o| o.done) {
            through = Some(o.end);
            self.outstanding.pop_front();
        }
        (newly, count - newly, through)
    }
}

/// `MSG_ZEROCOPY` state of one socket: sends a [`WriteBuffer`] zero-copy when that pays, and
/// releases what it sent only when the kernel's completion says it no longer reads it.
///
/// Use one `ZeroCopy` per socket, always with the same buffer (the counter is the socket's, the
/// stream offsets are the buffer's). Copying sends through
/// [`WriteBuffer::send_to`] may be mixed in.
///
/// * [`enable`](Self::enable) sets `SO_ZEROCOPY`; until then (or if it fails: Unix sockets,
///   old kernels) every send is an ordinary copying send.
/// * [`send`](Self::send) uses `MSG_ZEROCOPY` when at least [`threshold`](Self::threshold) bytes
///   go out in the call; the bytes sent are then *held*: [`WriteBuffer::pending_len`] drops,
///   [`WriteBuffer::held_len`] grows, pinned values stay alive and scratch is not reused.
///   `ENOBUFS` (the socket's option memory is full) makes that call a copying send.
/// * [`poll_completions`](Self::poll_completions) reads the error queue (call it when the
///   socket reports an error condition: `POLLERR`, mio's [`is_error`], or simply before each
///   send) and releases the sends it completes. A completion flagged as copied (always the
///   case on loopback) turns zero copy off for the socket, as the kernel documentation
///   advises, unless [`set_stop_when_copied(false)`](Self::set_stop_when_copied).
/// * Before dropping the buffer, [`drain_blocking`](Self::drain_blocking) waits for the
///   outstanding completions: a buffer dropped while the kernel holds bytes leaks them rather
///   than free memory the kernel may still read.
///
/// [`is_error`]: https://docs.rs/mio/1/mio/event/struct.Event.html#method.is_error
///
/// # Examples
///
/// ```
/// # #[cfg(all(target_os = "linux", not(miri)))] { // sockets are FFI, which Miri cannot run
/// use std::io::Read;
/// use std::net::{TcpListener, TcpStream};
/// use std::sync::Arc;
/// use std::time::Duration;
/// use sendbuf::{WriteBuffer, ZeroCopy};
///
/// let listener = TcpListener::bind("127.0.0.1:0").unwrap();
/// let tx = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
/// let (mut rx, _) = listener.accept().unwrap();
///
/// let value: Arc<[u8]> = vec![b'v'; 64 * 1024].into();
/// let mut buf = WriteBuffer::new();
/// let mut zc = ZeroCopy::new();
/// zc.enable(&tx).unwrap();
///
/// buf.put_slice(b"VALUE k 0 65536\r\n");
/// buf.pin(value.clone());
/// let reader = std::thread::spawn(move || {
///     let mut got = vec![0u8; 17 + 64 * 1024];
///     rx.read_exact(&mut got).unwrap();
///     got
/// });
/// while buf.has_pending() {
///     zc.send(&mut buf, &tx).unwrap();
/// }
/// assert_eq!(reader.join().unwrap().len(), 17 + 64 * 1024);
///
/// // The kernel held the bytes until its completion, read here.
/// zc.drain_blocking(&mut buf, &tx, Duration::from_secs(5)).unwrap();
/// assert!(buf.is_empty());
/// assert_eq!(Arc::strong_count(&value), 1);
/// # }
/// ```
#[derive(Debug)]
pub struct ZeroCopy {
    enabled: bool,
    threshold: usize,
    stop_when_copied: bool,
    copied: bool,
    tracker: Tracker,
    stats: ZeroCopyStats,
}

impl Default for ZeroCopy {
    fn default() -> Self {
        Self::new()
    }
}

impl ZeroCopy {
    /// State for a socket with zero copy not (yet) enabled: every send copies until
    /// [`enable`](Self::enable) succeeds.
    ///
    /// # Examples
    ///
    /// ```
    /// let zc = sendbuf::ZeroCopy::new();
    /// assert!(!zc.is_enabled());
    /// assert_eq!(zc.threshold(), sendbuf::DEFAULT_ZEROCOPY_THRESHOLD);
    /// ```
    pub fn new() -> Self {
        ZeroCopy {
            enabled: false,
            threshold: DEFAULT_ZEROCOPY_THRESHOLD,
            stop_when_copied: true,
            copied: false,
            tracker: Tracker::default(),
            stats: ZeroCopyStats::default(),
        }
    }

    /// State for a socket on which the caller enabled `SO_ZEROCOPY` itself (or for driving the
    /// bookkeeping with [`send_with`](Self::send_with) and [`complete`](Self::complete) only),
    /// whose next zero-copy send gets counter value `next_id` (0 on a fresh socket; only a
    /// socket that already made zero-copy sends elsewhere starts later).
    ///
    /// # Examples
    ///
    /// ```
    /// let zc = sendbuf::ZeroCopy::assume_enabled(u32::MAX);
    /// assert!(zc.is_enabled());
    /// assert_eq!(zc.next_id(), u32::MAX);
    /// ```
    pub fn assume_enabled(next_id: u32) -> Self {
        let mut zc = Self::new();
        zc.enabled = true;
        zc.tracker.next_id = next_id;
        zc
    }

    /// Sets `SO_ZEROCOPY` on `fd` so that later sends may use `MSG_ZEROCOPY`. Call it on a fresh
    /// socket, before any zero-copy send was made on it by anyone else.
    ///
    /// # Errors
    ///
    /// The `setsockopt` error (`EOPNOTSUPP` on Unix sockets, `ENOPROTOOPT` before Linux 4.14);
    /// zero copy then stays off and sends copy.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(all(target_os = "linux", not(miri)))] { // setsockopt is FFI
    /// use std::net::{TcpListener, TcpStream};
    /// use std::os::unix::net::UnixStream;
    ///
    /// let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    /// let tcp = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    /// let mut zc = sendbuf::ZeroCopy::new();
    /// zc.enable(&tcp).unwrap();
    /// assert!(zc.is_enabled());
    ///
    /// let (unix, _peer) = UnixStream::pair().unwrap();
    /// let mut zc = sendbuf::ZeroCopy::new();
    /// assert!(zc.enable(&unix).is_err());
    /// assert!(!zc.is_enabled());
    /// # }
    /// ```
    #[cfg(any(target_os = "linux", target_os = "android"))]
    pub fn enable(&mut self, fd: impl std::os::fd::AsFd) -> io::Result<()> {
        crate::sys::zerocopy::enable(fd.as_fd())?;
        self.enabled = true;
        Ok(())
    }

    /// Whether `SO_ZEROCOPY` is on for the socket (zero-copy sends may be made).
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(!sendbuf::ZeroCopy::new().is_enabled());
    /// ```
    pub fn is_enabled(&self) -> bool {
        self.enabled
    }

    /// The smallest number of bytes a send must offer to be made zero-copy.
    ///
    /// # Examples
    ///
    /// ```
    /// let mut zc = sendbuf::ZeroCopy::new();
    /// zc.set_threshold(64 * 1024);
    /// assert_eq!(zc.threshold(), 64 * 1024);
    /// ```
    pub fn threshold(&self) -> usize {
        self.threshold
    }

    /// Sets the smallest send made zero-copy (default [`DEFAULT_ZEROCOPY_THRESHOLD`]); 0 makes
    /// every send zero-copy while zero copy is on.
    ///
    /// # Examples
    ///
    /// ```
    /// let mut zc = sendbuf::ZeroCopy::new();
    /// zc.set_threshold(0);
    /// assert_eq!(zc.threshold(), 0);
    /// ```
    pub fn set_threshold(&mut self, bytes: usize) {
        self.threshold = bytes;
    }

    /// Whether a completion flagged as copied turns zero copy off for this socket (default
    /// `true`, as the kernel documentation advises: the copy was made anyway, and pinning pages
    /// only adds cost). Turn it off to measure, or where copies are known to be transient.
    ///
    /// # Examples
    ///
    /// ```
    /// let mut zc = sendbuf::ZeroCopy::assume_enabled(0);
    /// zc.set_stop_when_copied(false);
    /// ```
    pub fn set_stop_when_copied(&mut self, stop: bool) {
        self.stop_when_copied = stop;
    }

    /// True once the kernel reported a zero-copy send as copied
    /// (`SO_EE_CODE_ZEROCOPY_COPIED`), as it always does on loopback.
    ///
    /// # Examples
    ///
    /// ```
    /// let mut buf = sendbuf::WriteBuffer::new();
    /// let mut zc = sendbuf::ZeroCopy::assume_enabled(0);
    /// zc.complete(&mut buf, 0, 0, true);
    /// assert!(zc.was_copied());
    /// ```
    pub fn was_copied(&self) -> bool {
        self.copied
    }

    /// Whether a send of `bytes` would be made zero-copy now.
    ///
    /// # Examples
    ///
    /// ```
    /// let mut zc = sendbuf::ZeroCopy::assume_enabled(0);
    /// zc.set_threshold(1000);
    /// assert!(!zc.would_zero_copy(999));
    /// assert!(zc.would_zero_copy(1000));
    /// ```
    pub fn would_zero_copy(&self, bytes: usize) -> bool {
        self.enabled && bytes >= self.threshold && !(self.copied && self.stop_when_copied)
    }

    /// The counter value the kernel gives the next zero-copy send on this socket.
    ///
    /// # Examples
    ///
    /// ```
    /// let mut buf = sendbuf::WriteBuffer::new();
    /// buf.put_slice(b"abc");
    /// let mut zc = sendbuf::ZeroCopy::assume_enabled(u32::MAX);
    /// zc.record_send(&mut buf, 3, true).unwrap();
    /// assert_eq!(zc.next_id(), 0); // wrapped
    /// zc.complete(&mut buf, u32::MAX, u32::MAX, false); // released: nothing to leak on drop
    /// assert_eq!(buf.held_len(), 0);
    /// ```
    pub fn next_id(&self) -> u32 {
        self.tracker.next_id
    }

    /// Zero-copy sends whose completion has not been applied yet (a send completed before an
    /// older one stays counted until the older one completes).
    ///
    /// # Examples
    ///
    /// ```
    /// let mut buf = sendbuf::WriteBuffer::new();
    /// buf.put_slice(b"abcdef");
    /// let mut zc = sendbuf::ZeroCopy::assume_enabled(0);
    /// zc.record_send(&mut buf, 2, true).unwrap();
    /// zc.record_send(&mut buf, 4, true).unwrap();
    /// assert_eq!(zc.outstanding(), 2);
    /// zc.complete(&mut buf, 0, 1, false); // one coalesced completion for both
    /// assert_eq!((zc.outstanding(), buf.held_len()), (0, 0));
    /// ```
    pub fn outstanding(&self) -> usize {
        self.tracker.outstanding.len()
    }

    /// What this socket's zero-copy path did so far.
    ///
    /// # Examples
    ///
    /// ```
    /// let mut buf = sendbuf::WriteBuffer::new();
    /// buf.put_slice(b"abc");
    /// let mut zc = sendbuf::ZeroCopy::new();
    /// zc.record_send(&mut buf, 3, false).unwrap();
    /// assert_eq!(zc.stats().copying_sends, 1);
    /// ```
    pub fn stats(&self) -> ZeroCopyStats {
        self.stats
    }

    /// Bytes of zero-copy sends leaked, process-wide, by dropping a [`WriteBuffer`] before the
    /// kernel completed them (see [`drain_blocking`](Self::drain_blocking)). A correct server
    /// keeps this at 0.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(sendbuf::ZeroCopy::leaked_bytes(), 0);
    /// ```
    pub fn leaked_bytes() -> u64 {
        crate::write_buffer::leaked_on_drop()
    }

    /// Accounts for a send made by the caller: advances `buf` past `n` bytes and, if the send
    /// was zero-copy (and took bytes), holds them under the next counter value until
    /// [`complete`](Self::complete) covers it; a copying send releases them at once.
    ///
    /// For callers that make the system call themselves; [`send`](Self::send) and
    /// [`send_with`](Self::send_with) call it.
    ///
    /// # Errors
    ///
    /// [`AdvanceError`] if `n` exceeds the pending bytes; nothing changes.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    ///
    /// let value: Arc<[u8]> = vec![1u8; 4096].into();
    /// let mut buf = sendbuf::WriteBuffer::new();
    /// buf.pin(value.clone());
    /// let mut zc = sendbuf::ZeroCopy::assume_enabled(0);
    /// zc.record_send(&mut buf, 4096, true).unwrap(); // counter value 0
    /// assert_eq!((buf.pending_len(), buf.held_len()), (0, 4096));
    /// assert_eq!(Arc::strong_count(&value), 2); // the kernel may still read it
    /// zc.complete(&mut buf, 0, 0, false);
    /// assert_eq!(Arc::strong_count(&value), 1);
    /// assert!(buf.is_empty());
    /// ```
    pub fn record_send(
        &mut self,
        buf: &mut WriteBuffer,
        n: usize,
        zero_copy: bool,
    ) -> Result<(), AdvanceError> {
        if zero_copy && n > 0 {
            buf.advance_with(n, Release::OnCompletion)?;
            self.tracker.record(buf.sent_total());
            self.stats.zero_copy_sends += 1;
        } else {
            buf.advance_with(n, Release::OnSend)?;
            self.stats.copying_sends += 1;
        }
        Ok(())
    }

    /// Applies a completion notification: zero-copy sends with counter values `lo..=hi`
    /// (inclusive, wrapping at `u32::MAX`) are done. Releases the bytes of every completed send
    /// no older send is still waiting before (for TCP the kernel completes in order; one that
    /// arrives early is remembered). Returns the bytes released.
    ///
    /// Values that match no outstanding send (already completed, never sent) are counted in
    /// [`ZeroCopyStats::ignored`] and change nothing.
    ///
    /// # Examples
    ///
    /// ```
    /// let mut buf = sendbuf::WriteBuffer::new();
    /// buf.put_slice(&[0u8; 300]);
    /// let mut zc = sendbuf::ZeroCopy::assume_enabled(u32::MAX - 1);
    /// for _ in 0..3 {
    ///     zc.record_send(&mut buf, 100, true).unwrap(); // values MAX-1, MAX, 0
    /// }
    /// assert_eq!(zc.complete(&mut buf, u32::MAX, 0, false), 0); // the oldest is still out
    /// assert_eq!(zc.complete(&mut buf, u32::MAX - 1, u32::MAX - 1, false), 300);
    /// assert!(buf.is_empty());
    /// ```
    pub fn complete(&mut self, buf: &mut WriteBuffer, lo: u32, hi: u32, copied: bool) -> usize {
        self.stats.completions += 1;
        if copied {
            self.stats.copied += 1;
            self.copied = true;
        }
        let (_, unmatched, through) = self.tracker.complete(lo, hi);
        self.stats.ignored += unmatched;
        match through {
            Some(offset) => buf.release_through(offset),
            None => 0,
        }
    }

    /// Sends pending bytes of `buf` through `send`, the caller's system call, and accounts for
    /// them as [`send`](Self::send) does. `send` gets the iovecs and whether to send them
    /// zero-copy, and returns the bytes the kernel accepted; an `ENOBUFS` error from a
    /// zero-copy attempt is retried once as a copying send.
    ///
    /// # Errors
    ///
    /// The error `send` returns (the buffer is then unchanged), or
    /// [`io::ErrorKind::InvalidData`] if it claims more bytes than it was given.
    ///
    /// # Examples
    ///
    /// ```
    /// let mut buf = sendbuf::WriteBuffer::new();
    /// buf.put_slice(&[7u8; 20_000]);
    /// let mut zc = sendbuf::ZeroCopy::assume_enabled(0);
    /// let mut wire = Vec::new();
    /// let n = zc
    ///     .send_with(&mut buf, |iov, zero_copy| {
    ///         assert!(zero_copy); // 20 000 bytes offered: above the threshold
    ///         wire.extend_from_slice(&iov[0][..5000]);
    ///         Ok(5000)
    ///     })
    ///     .unwrap();
    /// assert_eq!((n, buf.pending_len(), buf.held_len()), (5000, 15_000, 5000));
    /// zc.complete(&mut buf, 0, 0, false); // the kernel is done with those 5000 bytes
    /// assert_eq!(buf.held_len(), 0);
    /// ```
    pub fn send_with<F>(&mut self, buf: &mut WriteBuffer, mut send: F) -> io::Result<usize>
    where
        F: FnMut(&[IoSlice<'_>], bool) -> io::Result<usize>,
    {
        if !buf.has_pending() {
            return Ok(0);
        }
        let (result, offered, zero_copy) = {
            let all = buf.io_slices();
            let iov = &all[..all.len().min(crate::sys::iov_max())];
            let offered: usize = iov.iter().map(|s| s.len()).sum();
            if self.would_zero_copy(offered) {
                match send(iov, true) {
                    Err(e) if e.raw_os_error() == Some(ENOBUFS) => {
                        self.stats.enobufs += 1;
                        (send(iov, false), offered, false)
                    }
                    result => (result, offered, true),
                }
            } else {
                (send(iov, false), offered, false)
            }
        };
        let n = result?;
        if n > offered {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("send reported {n} bytes of {offered} offered"),
            ));
        }
        self.record_send(buf, n, zero_copy)?;
        Ok(n)
    }

    /// Sends pending bytes of `buf` on `fd` with one `sendmsg` (`MSG_NOSIGNAL`, retried on
    /// `EINTR`), with `MSG_ZEROCOPY` when [`would_zero_copy`](Self::would_zero_copy) says so
    /// for the bytes offered, and advances past what the kernel accepted. Bytes sent zero-copy
    /// are held until [`poll_completions`](Self::poll_completions) reads their completion.
    /// Returns the bytes sent; 0 only when nothing was pending.
    ///
    /// # Errors
    ///
    /// As [`WriteBuffer::send_to`]: [`io::ErrorKind::WouldBlock`] when a non-blocking socket is
    /// full, any other `sendmsg` error; the buffer is then unchanged. `ENOBUFS` from a
    /// zero-copy attempt is not an error: the call sends by copying instead.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(all(target_os = "linux", not(miri)))] { // sendmsg is FFI
    /// use std::net::{TcpListener, TcpStream};
    ///
    /// let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    /// let tx = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    /// let _rx = listener.accept().unwrap();
    /// let mut zc = sendbuf::ZeroCopy::new();
    /// zc.enable(&tx).unwrap();
    ///
    /// let mut buf = sendbuf::WriteBuffer::new();
    /// buf.put_slice(b"small"); // below the threshold: copied
    /// zc.send(&mut buf, &tx).unwrap();
    /// assert!(buf.is_empty());
    /// buf.pin(vec![0u8; 32 * 1024]); // large: zero-copy, held until its completion
    /// zc.send(&mut buf, &tx).unwrap();
    /// assert!(buf.held_len() > 0);
    /// # }
    /// ```
    #[cfg(any(target_os = "linux", target_os = "android"))]
    pub fn send(&mut self, buf: &mut WriteBuffer, fd: impl std::os::fd::AsFd) -> io::Result<usize> {
        let fd = fd.as_fd();
        self.send_with(buf, |iov, zero_copy| {
            let flags = if zero_copy {
                crate::sys::zerocopy::MSG_ZEROCOPY
            } else {
                0
            };
            crate::sys::sendmsg(fd, iov, flags)
        })
    }

    /// Reads every message in `fd`'s error queue (`recvmsg(MSG_ERRQUEUE)` until `EAGAIN`; never
    /// blocks) and applies each zero-copy completion with [`complete`](Self::complete).
    /// Returns the bytes released.
    ///
    /// Call it when the socket reports an error condition (`POLLERR`; with mio, an event whose
    /// `is_error()` is true: epoll always reports it, registered interest or not) and whenever
    /// convenient, e.g. before each send.
    ///
    /// # Errors
    ///
    /// A `recvmsg` error other than `EAGAIN`/`EINTR`; completions applied before it stay
    /// applied.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(all(target_os = "linux", not(miri)))] { // recvmsg is FFI
    /// use std::net::{TcpListener, TcpStream};
    ///
    /// let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    /// let tx = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    /// let mut zc = sendbuf::ZeroCopy::new();
    /// zc.enable(&tx).unwrap();
    /// let mut buf = sendbuf::WriteBuffer::new();
    /// assert_eq!(zc.poll_completions(&mut buf, &tx).unwrap(), 0); // nothing sent yet
    /// # }
    /// ```
    #[cfg(any(target_os = "linux", target_os = "android"))]
    pub fn poll_completions(
        &mut self,
        buf: &mut WriteBuffer,
        fd: impl std::os::fd::AsFd,
    ) -> io::Result<usize> {
        use crate::sys::zerocopy::{recv_errqueue, ErrQueueEntry};
        let fd = fd.as_fd();
        let mut released = 0;
        while let Some(entry) = recv_errqueue(fd)? {
            match entry {
                ErrQueueEntry::ZeroCopy { lo, hi, copied } => {
                    released += self.complete(buf, lo, hi, copied);
                }
                ErrQueueEntry::Other => self.stats.ignored += 1,
            }
        }
        Ok(released)
    }

    /// Waits until the kernel holds nothing of `buf` ([`held_len`](WriteBuffer::held_len) is
    /// 0), reading completions as they arrive, for at most `timeout`. Call it before dropping a
    /// buffer whose socket made zero-copy sends: a buffer dropped while the kernel holds bytes
    /// leaks them (see [`leaked_bytes`](Self::leaked_bytes)).
    ///
    /// Completions come only once the peer has acknowledged the data, so this can wait as long
    /// as the peer does not read.
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::TimedOut`] if bytes are still held after `timeout`; any error of
    /// [`poll_completions`](Self::poll_completions) or of `poll`.
    ///
    /// # Examples
    ///
    /// See [`ZeroCopy`].
    #[cfg(any(target_os = "linux", target_os = "android"))]
    pub fn drain_blocking(
        &mut self,
        buf: &mut WriteBuffer,
        fd: impl std::os::fd::AsFd,
        timeout: std::time::Duration,
    ) -> io::Result<()> {
        let fd = fd.as_fd();
        let deadline = std::time::Instant::now() + timeout;
        loop {
            self.poll_completions(buf, fd)?;
            if buf.held_len() == 0 {
                return Ok(());
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "the kernel still holds {} bytes of zero-copy sends",
                        buf.held_len()
                    ),
                ));
            }
            // Wake on the error condition, but at least every 10 ms: a completion queued on an
            // error queue that was never empty raises no new edge for `poll` to see.
            let ms = left.as_millis().clamp(1, 10) as libc::c_int;
            crate::sys::zerocopy::wait_error(fd, ms)?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracker_completes_in_order_coalesced_and_wrapping() {
        let mut t = Tracker {
            next_id: u32::MAX - 1,
            ..Tracker::default()
        };
        for end in [10, 20, 30, 40] {
            t.record(end); // ids MAX-1, MAX, 0, 1
        }
        assert_eq!(t.complete(u32::MAX - 1, u32::MAX), (2, 0, Some(20)));
        assert_eq!(t.complete(0, 1), (2, 0, Some(40)));
        assert_eq!(t.outstanding.len(), 0);
        assert_eq!(t.complete(0, 1), (0, 2, None), "duplicates match nothing");
    }

    #[test]
    fn tracker_remembers_early_completions() {
        let mut t = Tracker::default();
        for end in [10, 20, 30] {
            t.record(end);
        }
        assert_eq!(t.complete(1, 2), (2, 0, None));
        assert_eq!(t.complete(0, 0), (1, 0, Some(30)));
    }

    #[test]
    fn tracker_clips_ranges_that_start_before_the_window() {
        let mut t = Tracker {
            next_id: 5,
            ..Tracker::default()
        };
        t.record(10); // id 5
        t.record(20); // id 6
                      // 3..=5: values 3 and 4 are long done; 5 is outstanding.
        assert_eq!(t.complete(3, 5), (1, 2, Some(10)));
        // A full-circle range covers everything once.
        assert_eq!(t.complete(7, 6), (1, (1 << 32) - 1, Some(20)));
    }
}
