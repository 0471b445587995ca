//! [`UringSender`]: many connections' sends in one io_uring submission, with the same
//! pending → sent → released states as the other send paths.
//!
//! The caller keeps its [`WriteBuffer`]s (in a slab keyed by a token of its choice, say) and
//! hands each to [`UringSender::submit`], which queues one `IORING_OP_SENDMSG` (or
//! `IORING_OP_SENDMSG_ZC`) whose iovecs point at the buffer's pending bytes. One
//! [`flush`](UringSender::flush) (or [`submit_and_wait`](UringSender::submit_and_wait)) enters
//! the kernel once for every queued send. [`reap`](UringSender::reap) collects completions
//! without a system call; the caller passes each back with the token's buffer to
//! [`finish`](UringSender::finish), which advances it by the result, or, for a zero-copy
//! send's notification (`IORING_CQE_F_NOTIF`), releases what the kernel no longer reads.
//!
//! The bookkeeping ([`Book`]: which send a completion belongs to, which stream offset a
//! notification releases through) is plain Rust without system calls, tested on its own.

#![allow(unsafe_code)]

use std::collections::{HashMap, VecDeque};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

use io_uring::{cqueue, opcode, types, IoUring};

use crate::segment::Release;
use crate::write_buffer::WriteBuffer;

/// `IORING_SEND_ZC_REPORT_USAGE` (sqe `ioprio` of a zero-copy send, Linux 6.2): the notification
/// says whether the kernel copied the data after all.
const IORING_SEND_ZC_REPORT_USAGE: u16 = 1 << 3;
/// `IORING_NOTIF_USAGE_ZC_COPIED`: set in a notification's result when the data was copied.
const IORING_NOTIF_USAGE_ZC_COPIED: i32 = 1 << 31;
/// The `user_data` of `IORING_OP_ASYNC_CANCEL` requests: sends' serials start at 1, so no send
/// has it, and the cancel's own completion is recognised and dropped by `reap`.
const CANCEL_USER_DATA: u64 = 0;

/// One completion taken from the ring, for the connection [`token`](Self::token): pass it with
/// that connection's buffer to [`UringSender::finish`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UringCompletion {
    token: u64,
    serial: u64,
    kind: CqeKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CqeKind {
    /// A send's result: bytes sent or `-errno`; `more` if a notification will follow.
    Result { res: i32, more: bool },
    /// A zero-copy send's notification: the kernel no longer reads its memory.
    Notification { copied: bool },
}

impl UringCompletion {
    /// The token given to [`submit`](UringSender::submit) for the send this completes.
    ///
    /// # Examples
    ///
    /// See [`UringSender`].
    pub fn token(&self) -> u64 {
        self.token
    }

    /// True for a zero-copy send's notification (the kernel released the send's memory), false
    /// for a send's result.
    ///
    /// # Examples
    ///
    /// See [`UringSender`].
    pub fn is_notification(&self) -> bool {
        matches!(self.kind, CqeKind::Notification { .. })
    }
}

/// What [`UringSender::finish`] did to the buffer.
///
/// # Examples
///
/// ```
/// let e = sendbuf::UringEvent::Sent { bytes: 100, held: false };
/// assert!(matches!(e, sendbuf::UringEvent::Sent { held: false, .. }));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UringEvent {
    /// A send's result: the buffer advanced past `bytes` (fewer than offered on a partial send:
    /// submit again for the rest). With `held`, they were sent zero-copy and stay held (counted
    /// in [`WriteBuffer::held_len`], values alive, scratch not reused) until the notification.
    Sent {
        /// Bytes the kernel accepted.
        bytes: usize,
        /// Whether the bytes stay held until a notification.
        held: bool,
    },
    /// A zero-copy notification: `bytes` were released (0 if an older send of the same
    /// connection still waits for its own notification, or if the send took nothing).
    Released {
        /// Bytes released from the buffer.
        bytes: usize,
    },
}

/// Counters of what a [`UringSender`] did, for metrics, tests and benchmarks.
///
/// # Examples
///
/// ```
/// let stats = sendbuf::UringStats::default();
/// assert_eq!(stats.enters, 0);
/// ```
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct UringStats {
    /// `io_uring_enter` system calls made by [`flush`](UringSender::flush),
    /// [`submit_and_wait`](UringSender::submit_and_wait) and by `submit` on a full queue.
    pub enters: u64,
    /// Sends queued (SQEs).
    pub sends: u64,
    /// Of those, zero-copy sends.
    pub zero_copy_sends: u64,
    /// Result completions reaped.
    pub results: u64,
    /// Notification completions reaped.
    pub notifications: u64,
    /// Of those, notifications saying the kernel copied the data anyway (always on loopback).
    pub copied: u64,
    /// Completions that matched no send (never expected; counted rather than trusted).
    pub ignored: u64,
    /// Cancellations queued by [`cancel`](UringSender::cancel).
    pub cancels: u64,
}

/// One send the kernel has not finished with.
#[derive(Debug, Clone, Copy)]
struct SendRec {
    token: u64,
    /// The buffer's stream offset ([`WriteBuffer::sent_total`]) when the send was queued.
    start: u64,
    offered: usize,
    zero_copy: bool,
    /// `None` until the result is finished; then the stream offset just past the bytes sent,
    /// held until the notification.
    end: Option<u64>,
}

/// Sends of one connection: at most one awaiting its result, any number awaiting notifications.
#[derive(Debug, Default)]
struct TokenState {
    in_flight: Option<u64>,
    /// Zero-copy sends finished but not yet notified, oldest first: (serial, notified).
    held: VecDeque<(u64, bool)>,
}

/// Pure bookkeeping of a [`UringSender`]: sends by serial (the SQE's `user_data`) and
/// connections by token. No system calls; the sender feeds it SQEs queued and CQEs reaped.
#[derive(Debug, Default)]
pub(crate) struct Book {
    next_serial: u64,
    sends: HashMap<u64, SendRec>,
    tokens: HashMap<u64, TokenState>,
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

impl Book {
    /// Registers a send of `offered` bytes from `buf` for `token`; returns its serial (never 0).
    fn begin(
        &mut self,
        token: u64,
        buf: &WriteBuffer,
        offered: usize,
        zero_copy: bool,
    ) -> io::Result<u64> {
        let state = self.tokens.entry(token).or_default();
        if let Some(serial) = state.in_flight {
            return Err(io::Error::new(
                io::ErrorKind::ResourceBusy,
                format!("token {token} already has a send in flight (serial {serial})"),
            ));
        }
        self.next_serial += 1;
        let serial = self.next_serial;
        state.in_flight = Some(serial);
        self.sends.insert(
            serial,
            SendRec {
                token,
                start: buf.sent_total(),
                offered,
                zero_copy,
                end: None,
            },
        );
        Ok(serial)
    }

    /// Forgets a send that was registered but never reached the ring.
    fn abandon(&mut self, serial: u64) {
        if let Some(rec) = self.sends.remove(&serial) {
            if let Some(state) = self.tokens.get_mut(&rec.token) {
                state.in_flight = None;
            }
            self.tidy(rec.token);
        }
    }

    /// Turns a CQE into a completion for the caller; `None` if it matches no send.
    fn cqe(&self, user_data: u64, res: i32, flags: u32) -> Option<UringCompletion> {
        let rec = self.sends.get(&user_data)?;
        let kind = if cqueue::notif(flags) {
            CqeKind::Notification {
                copied: res & IORING_NOTIF_USAGE_ZC_COPIED != 0,
            }
        } else {
            CqeKind::Result {
                res,
                more: cqueue::more(flags),
            }
        };
        Some(UringCompletion {
            token: rec.token,
            serial: user_data,
            kind,
        })
    }

    fn tidy(&mut self, token: u64) {
        if let Some(state) = self.tokens.get(&token) {
            if state.in_flight.is_none() && state.held.is_empty() {
                self.tokens.remove(&token);
            }
        }
    }

    /// Applies `c` to `buf` (see [`UringSender::finish`]).
    fn finish(&mut self, c: UringCompletion, buf: &mut WriteBuffer) -> io::Result<UringEvent> {
        let Some(rec) = self.sends.get(&c.serial).copied() else {
            return Err(invalid(format!(
                "completion {} of token {} is not outstanding (finished twice?)",
                c.serial, c.token
            )));
        };
        match c.kind {
            CqeKind::Result { res, more } => {
                if rec.end.is_some() {
                    return Err(invalid(format!(
                        "result of send {} finished twice",
                        c.serial
                    )));
                }
                let sent = usize::try_from(res).unwrap_or(0);
                if res >= 0
                    && (buf.sent_total() != rec.start
                        || sent > rec.offered
                        || sent > buf.pending_len())
                {
                    return Err(invalid(format!(
                        "token {}: the buffer is not the one submitted or changed while the \
                         send was in flight (sent {} bytes from offset {}; buffer at offset {} \
                         with {} pending)",
                        c.token,
                        sent,
                        rec.start,
                        buf.sent_total(),
                        buf.pending_len()
                    )));
                }
                let held = more && rec.zero_copy;
                let mode = if held {
                    Release::OnCompletion
                } else {
                    Release::OnSend
                };
                // Checked above: `sent` bytes are pending.
                buf.advance_with(sent, mode).map_err(io::Error::other)?;
                let state = self.tokens.entry(rec.token).or_default();
                state.in_flight = None;
                if more {
                    state.held.push_back((c.serial, false));
                    if let Some(r) = self.sends.get_mut(&c.serial) {
                        r.end = Some(rec.start + sent as u64);
                    }
                } else {
                    self.sends.remove(&c.serial);
                    self.tidy(rec.token);
                }
                if res < 0 {
                    return Err(io::Error::from_raw_os_error(-res));
                }
                Ok(UringEvent::Sent { bytes: sent, held })
            }
            CqeKind::Notification { .. } => {
                let Some(end) = rec.end else {
                    return Err(invalid(format!(
                        "notification of send {} before its result was finished",
                        c.serial
                    )));
                };
                if buf.sent_total() < end {
                    return Err(invalid(format!(
                        "token {}: the buffer is not the one submitted (it sent {} bytes, the \
                         send ended at {})",
                        c.token,
                        buf.sent_total(),
                        end
                    )));
                }
                let state = self.tokens.entry(rec.token).or_default();
                if let Some(slot) = state.held.iter_mut().find(|(s, _)| *s == c.serial) {
                    slot.1 = true;
                }
                // Release through the newest send with no older one still waiting: releasing
                // past an older held send would free memory the kernel still reads.
                let mut through = None;
                while let Some(&(serial, true)) = state.held.front() {
                    state.held.pop_front();
                    if let Some(done) = self.sends.remove(&serial) {
                        through = done.end;
                    }
                }
                self.tidy(rec.token);
                let bytes = through.map_or(0, |offset| buf.release_through(offset));
                Ok(UringEvent::Released { bytes })
            }
        }
    }

    /// The serial of `token`'s send awaiting its result, if any.
    fn in_flight(&self, token: u64) -> Option<u64> {
        self.tokens.get(&token).and_then(|s| s.in_flight)
    }

    /// Sends (results or notifications) the kernel still owes for `token`.
    fn outstanding(&self, token: u64) -> usize {
        self.tokens
            .get(&token)
            .map_or(0, |s| usize::from(s.in_flight.is_some()) + s.held.len())
    }
}

/// The `msghdr` and iovec array of one in-flight send: boxed so their addresses stay put until
/// the result completion, whatever happens to the sender's tables.
struct Msg {
    hdr: libc::msghdr,
    iov: Vec<libc::iovec>,
}

// SAFETY: the raw pointers in a `Msg` point into its own `iov` vector and at bytes of a
// `WriteBuffer` (which is `Send`); the sender only hands them to the kernel.
unsafe impl Send for Msg {}

impl Msg {
    fn new() -> Box<Msg> {
        Box::new(Msg {
            // SAFETY: all-zero is a valid `msghdr`: no name, no control data, no iovecs.
            hdr: unsafe { std::mem::zeroed() },
            iov: Vec::new(),
        })
    }
}

/// Sends many connections' [`WriteBuffer`]s through one io_uring: one system call submits every
/// queued send, and zero-copy sends are released on their notification.
///
/// # The contract while a send is in flight
///
/// From [`submit`](Self::submit) until its result has been passed to
/// [`finish`](Self::finish), the kernel reads the buffer's pending bytes at any moment. So for
/// that token:
///
/// * do not advance, send from ([`WriteBuffer::send_to`]...), [`clear`](WriteBuffer::clear),
///   steal or drop the buffer; *appending* (format, pin) is fine, it moves no queued byte;
/// * keep the socket open;
/// * only one send per token is in flight at a time: a second `submit` is refused with
///   [`io::ErrorKind::ResourceBusy`]; submit the rest after the result.
///
/// Breaking it cannot corrupt this process's memory (a send only *reads* memory), but it can
/// put wrong bytes on the wire; [`finish`](Self::finish) notices a buffer that moved or is
/// not the one submitted and refuses it. After the result, bytes of a zero-copy send stay
/// *held* by the buffer (it is not empty, steals are refused, a drop leaks rather than frees
/// them) until their notification is finished.
///
/// Dropping the sender while sends are in flight leaks their iovec arrays (the kernel may
/// still read them) and the buffers' held bytes are never released: drain first, reaping and
/// finishing until [`in_flight`](Self::in_flight) is 0.
///
/// # Examples
///
/// ```
/// # #[cfg(not(miri))] { // io_uring is FFI
/// use std::io::Read;
/// use std::os::fd::AsFd;
/// use std::os::unix::net::UnixStream;
/// use sendbuf::{UringSender, WriteBuffer};
///
/// let mut sender = UringSender::new(64).unwrap();
/// let mut conns: Vec<(UnixStream, UnixStream, WriteBuffer)> = (0..3)
///     .map(|i| {
///         let (a, b) = UnixStream::pair().unwrap();
///         let mut buf = WriteBuffer::new();
///         buf.put_slice(format!("response {i}\n").as_bytes());
///         (a, b, buf)
///     })
///     .collect();
/// for (token, (a, _, buf)) in conns.iter().enumerate() {
///     sender.submit(token as u64, buf, a.as_fd(), false).unwrap();
/// }
/// sender.submit_and_wait(3).unwrap(); // one system call for three sends
/// let mut done = Vec::new();
/// sender.reap(&mut done);
/// for c in done {
///     let (_, _, buf) = &mut conns[c.token() as usize];
///     sender.finish(c, buf).unwrap();
/// }
/// for (i, (_, b, buf)) in conns.iter_mut().enumerate() {
///     assert!(buf.is_empty());
///     let mut line = vec![0u8; 11];
///     b.read_exact(&mut line).unwrap();
///     assert_eq!(line, format!("response {i}\n").as_bytes());
/// }
/// # }
/// ```
pub struct UringSender {
    ring: IoUring,
    book: Book,
    /// `msghdr`s of sends whose result has not been reaped, by serial.
    msgs: HashMap<u64, Box<Msg>>,
    /// Reaped ones, for reuse (their iovec vectors keep their capacity).
    #[allow(clippy::vec_box)] // boxes move between `msgs` and here without moving the msghdr
    spare: Vec<Box<Msg>>,
    stats: UringStats,
    /// Whether an eventfd is registered (see [`register_eventfd`](Self::register_eventfd)).
    eventfd: bool,
}

impl std::fmt::Debug for UringSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UringSender")
            .field("entries", &self.ring.params().sq_entries())
            .field("in_flight", &self.in_flight())
            .field("stats", &self.stats)
            .finish()
    }
}

impl UringSender {
    /// A sender with a submission queue of `entries` slots (rounded up to a power of two by the
    /// kernel). More sends than that may be queued: `submit` enters the kernel when the queue
    /// is full.
    ///
    /// # Errors
    ///
    /// The `io_uring_setup` error: `ENOSYS` on kernels without io_uring, `EPERM` where it is
    /// disabled (`kernel.io_uring_disabled`, seccomp), `ENOMEM` over the locked-memory limit.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(not(miri))] { // io_uring_setup is FFI
    /// let sender = sendbuf::UringSender::new(256).unwrap();
    /// assert_eq!(sender.in_flight(), 0);
    /// # }
    /// ```
    pub fn new(entries: u32) -> io::Result<UringSender> {
        Ok(UringSender {
            ring: IoUring::new(entries)?,
            book: Book::default(),
            msgs: HashMap::new(),
            spare: Vec::new(),
            stats: UringStats::default(),
            eventfd: false,
        })
    }

    /// What this sender did so far.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(not(miri))] { // io_uring_setup is FFI
    /// let sender = sendbuf::UringSender::new(8).unwrap();
    /// assert_eq!(sender.stats(), sendbuf::UringStats::default());
    /// # }
    /// ```
    pub fn stats(&self) -> UringStats {
        self.stats
    }

    /// Sends whose result or notification the kernel still owes, over all tokens.
    ///
    /// # Examples
    ///
    /// See [`UringSender`].
    pub fn in_flight(&self) -> usize {
        self.book.sends.len()
    }

    /// Results and notifications the kernel still owes for `token` (0: nothing of its buffer is
    /// in the kernel's hands through this sender).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(not(miri))] { // io_uring_setup is FFI
    /// let sender = sendbuf::UringSender::new(8).unwrap();
    /// assert_eq!(sender.outstanding(42), 0);
    /// # }
    /// ```
    pub fn outstanding(&self, token: u64) -> usize {
        self.book.outstanding(token)
    }

    /// Has the kernel signal `eventfd` (an `eventfd(2)`, kept open while the sender lives) when
    /// it posts completions, so a caller that waits in `epoll` learns of sends that finish
    /// later: a send to a full socket waits in the kernel and completes when the peer reads.
    /// Completions posted during this sender's own `io_uring_enter` ([`flush`](Self::flush),
    /// [`submit_and_wait`](Self::submit_and_wait), [`submit`](Self::submit) on a full queue)
    /// do not signal: reap after each of those calls and after each signal.
    ///
    /// The kernel may, rarely, post a completion just as the signal is re-enabled after an
    /// enter without signalling it; a caller that must not miss one also reaps now and then
    /// while [`in_flight`](Self::in_flight) is not 0.
    ///
    /// # Errors
    ///
    /// The `io_uring_register` error (`EBUSY`: an eventfd is already registered).
    ///
    /// # Examples
    ///
    /// See [`cancel`](Self::cancel).
    pub fn register_eventfd(&mut self, eventfd: BorrowedFd<'_>) -> io::Result<()> {
        self.ring
            .submitter()
            .register_eventfd(eventfd.as_raw_fd())?;
        self.eventfd = true;
        Ok(())
    }

    /// Queues an `IORING_OP_ASYNC_CANCEL` for `token`'s send awaiting its result (submitted by
    /// the next [`flush`](Self::flush)). Returns false, queueing nothing, if it has none.
    ///
    /// The send's result still comes, and must still be reaped and
    /// [`finish`](Self::finish)ed before the buffer is cleared, dropped or stolen: usually
    /// `ECANCELED` (the buffer unchanged), or the bytes sent if the kernel got there first.
    /// This is how to close a connection whose peer never reads: its send waits in the kernel
    /// for room that never comes, and the socket's iovecs point into the buffer until then.
    ///
    /// # Errors
    ///
    /// An `io_uring_enter` error if the submission queue was full and could not be submitted.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(not(miri))] { // io_uring is FFI
    /// use std::os::fd::{AsFd, FromRawFd, OwnedFd};
    /// use std::os::unix::net::UnixStream;
    /// use sendbuf::{UringSender, WriteBuffer};
    ///
    /// let mut sender = UringSender::new(8).unwrap();
    /// // SAFETY: eventfd returns a new descriptor (checked), owned from here on.
    /// let efd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
    /// assert!(efd >= 0);
    /// let efd = unsafe { OwnedFd::from_raw_fd(efd) };
    /// sender.register_eventfd(efd.as_fd()).unwrap();
    ///
    /// let (a, _peer) = UnixStream::pair().unwrap(); // a peer that never reads
    /// a.set_nonblocking(true).unwrap();
    /// let mut buf = WriteBuffer::new();
    /// buf.put_slice(&vec![7u8; 8 << 20]); // far more than the socket holds
    /// let mut done = Vec::new();
    /// // The first send takes what fits; the next one waits in the kernel for room.
    /// while sender.outstanding(1) == 0 || !done.is_empty() {
    ///     for c in done.drain(..) {
    ///         sender.finish(c, &mut buf).unwrap();
    ///     }
    ///     sender.submit(1, &buf, a.as_fd(), false).unwrap();
    ///     sender.flush().unwrap();
    ///     std::thread::sleep(std::time::Duration::from_millis(10));
    ///     sender.reap(&mut done);
    /// }
    /// assert!(sender.cancel(1).unwrap());
    /// sender.submit_and_wait(1).unwrap();
    /// sender.reap(&mut done);
    /// let err = sender.finish(done[0], &mut buf).unwrap_err();
    /// assert_eq!(err.raw_os_error(), Some(libc::ECANCELED));
    /// assert_eq!(sender.in_flight(), 0); // now the buffer may go
    /// assert!(!sender.cancel(1).unwrap(), "nothing left to cancel");
    /// # }
    /// ```
    pub fn cancel(&mut self, token: u64) -> io::Result<bool> {
        let Some(serial) = self.book.in_flight(token) else {
            return Ok(false);
        };
        let entry = opcode::AsyncCancel::new(serial)
            .build()
            .user_data(CANCEL_USER_DATA);
        if self.ring.submission().is_full() {
            self.enter(0)?;
        }
        // SAFETY: a cancel SQE points at no memory: it names the send by its user_data.
        if unsafe { self.ring.submission().push(&entry) }.is_err() {
            return Err(io::Error::other("io_uring submission queue full"));
        }
        self.stats.cancels += 1;
        Ok(true)
    }

    /// Queues one send of `buf`'s pending bytes (at most `IOV_MAX` iovecs) on `fd` for `token`:
    /// `IORING_OP_SENDMSG`, or `IORING_OP_SENDMSG_ZC` if `zero_copy` (Linux 6.1), both with
    /// `MSG_NOSIGNAL`. Nothing enters the kernel until [`flush`](Self::flush) or
    /// [`submit_and_wait`](Self::submit_and_wait), unless the submission queue is full. Returns
    /// the bytes offered; 0 (and nothing queued) when nothing is pending.
    ///
    /// See the [contract](Self#the-contract-while-a-send-is-in-flight) until the result.
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::ResourceBusy`] if `token` has a send awaiting its result; an
    /// `io_uring_enter` error if the queue was full and could not be submitted. Nothing is
    /// queued then.
    ///
    /// # Examples
    ///
    /// See [`UringSender`] and `tests/uring.rs`.
    pub fn submit(
        &mut self,
        token: u64,
        buf: &WriteBuffer,
        fd: BorrowedFd<'_>,
        zero_copy: bool,
    ) -> io::Result<usize> {
        if !buf.has_pending() {
            return Ok(0);
        }
        let all = buf.io_slices();
        let slices = &all[..all.len().min(crate::sys::iov_max())];
        let offered: usize = slices.iter().map(|s| s.len()).sum();
        let serial = self.book.begin(token, buf, offered, zero_copy)?;

        let mut msg = self.spare.pop().unwrap_or_else(Msg::new);
        msg.iov.clear();
        msg.iov.extend(slices.iter().map(|s| libc::iovec {
            iov_base: s.as_ptr() as *mut libc::c_void,
            iov_len: s.len(),
        }));
        msg.hdr.msg_iov = msg.iov.as_mut_ptr();
        msg.hdr.msg_iovlen = msg.iov.len() as _;
        let hdr: *const libc::msghdr = &msg.hdr;
        let target = types::Fd(fd.as_raw_fd());
        let flags = libc::MSG_NOSIGNAL as u32;
        let entry = if zero_copy {
            opcode::SendMsgZc::new(target, hdr)
                .flags(flags)
                .ioprio(IORING_SEND_ZC_REPORT_USAGE)
                .build()
        } else {
            opcode::SendMsg::new(target, hdr).flags(flags).build()
        }
        .user_data(serial);

        if self.ring.submission().is_full() {
            if let Err(e) = self.enter(0) {
                self.book.abandon(serial);
                self.spare.push(msg);
                return Err(e);
            }
        }
        // SAFETY: the SQE names `msg.hdr`, whose `msg_iov` points at `msg.iov`: both live in
        // `msg`, a box kept in `self.msgs` (never moved, never freed) until this send's result
        // CQE is reaped, and leaked if the sender is dropped first. The iovecs point at the
        // buffer's pending bytes; a send only reads them, and the caller keeps them in place
        // until the result (the contract above), or the wire gets wrong bytes, no more.
        let pushed = unsafe { self.ring.submission().push(&entry) };
        if pushed.is_err() {
            // Unreachable after a successful enter emptied the queue; stay honest anyway.
            self.book.abandon(serial);
            self.spare.push(msg);
            return Err(io::Error::other("io_uring submission queue full"));
        }
        self.msgs.insert(serial, msg);
        self.stats.sends += 1;
        if zero_copy {
            self.stats.zero_copy_sends += 1;
        }
        Ok(offered)
    }

    fn enter(&mut self, want: usize) -> io::Result<usize> {
        // Completions posted while this thread is inside io_uring_enter (most sends complete
        // there) are reaped by the caller right after it: an eventfd signal for them would only
        // wake the caller's poll for nothing. Re-enabled before returning, so a completion
        // posted from now on signals, and one posted meanwhile is in the queue the caller reaps.
        if self.eventfd {
            self.ring.completion().disable_eventfd();
        }
        let result = loop {
            self.stats.enters += 1;
            match self.ring.submit_and_wait(want) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => break other,
            }
        };
        if self.eventfd {
            self.ring.completion().enable_eventfd();
        }
        result
    }

    /// Submits every queued send with one `io_uring_enter`, without waiting. Returns how many
    /// the kernel took.
    ///
    /// # Errors
    ///
    /// The `io_uring_enter` error (`EBUSY` when the completion queue overflowed: reap first).
    ///
    /// # Examples
    ///
    /// See [`UringSender`] and `tests/uring.rs`.
    pub fn flush(&mut self) -> io::Result<usize> {
        self.enter(0)
    }

    /// Submits every queued send and waits until at least `want` completions are ready, in one
    /// `io_uring_enter`. Returns how many sends were submitted.
    ///
    /// # Errors
    ///
    /// As [`flush`](Self::flush).
    ///
    /// # Examples
    ///
    /// See [`UringSender`] and `tests/uring.rs`.
    pub fn submit_and_wait(&mut self, want: usize) -> io::Result<usize> {
        self.enter(want)
    }

    /// Moves every ready completion into `out` (no system call), in the kernel's order; pass
    /// each, in that order, with its token's buffer to [`finish`](Self::finish). Returns how
    /// many were added.
    ///
    /// # Examples
    ///
    /// See [`UringSender`] and `tests/uring.rs`.
    pub fn reap(&mut self, out: &mut Vec<UringCompletion>) -> usize {
        let before = out.len();
        let mut cq = self.ring.completion();
        cq.sync();
        for cqe in &mut cq {
            let (user_data, res, flags) = (cqe.user_data(), cqe.result(), cqe.flags());
            if user_data == CANCEL_USER_DATA {
                continue; // a cancel's own result; the cancelled send's result says what happened
            }
            match self.book.cqe(user_data, res, flags) {
                Some(c) => {
                    match c.kind {
                        CqeKind::Result { .. } => {
                            self.stats.results += 1;
                            // The kernel is done with this send's msghdr and iovec array.
                            if let Some(msg) = self.msgs.remove(&user_data) {
                                self.spare.push(msg);
                            }
                        }
                        CqeKind::Notification { copied } => {
                            self.stats.notifications += 1;
                            self.stats.copied += u64::from(copied);
                        }
                    }
                    out.push(c);
                }
                None => self.stats.ignored += 1,
            }
        }
        out.len() - before
    }

    /// Applies a completion to its token's buffer:
    ///
    /// * a result of `n` bytes advances `buf` past them: released at once after a copying send;
    ///   *held* after a zero-copy one until its notification
    ///   ([`UringEvent::Sent`]); a partial send leaves the rest pending: submit again;
    /// * a notification releases the held bytes of that send and of every later send of the
    ///   token already notified, never past an older one still held ([`UringEvent::Released`]).
    ///
    /// # Errors
    ///
    /// A failed send's error (`-res`: `EPIPE`, `ECONNRESET`...; an `EAGAIN` would come back
    /// as [`WouldBlock`](io::ErrorKind::WouldBlock), though the kernel normally waits for room
    /// instead, even on a non-blocking socket, so a send to a peer that does not read stays
    /// in flight until it does): the buffer is
    /// unchanged and the token may submit again. [`io::ErrorKind::InvalidInput`], with nothing
    /// changed, if `buf` is not the buffer submitted (or was advanced meanwhile), or `c` was
    /// already finished, or a notification comes before its result.
    ///
    /// # Examples
    ///
    /// See [`UringSender`] and `tests/uring.rs`.
    pub fn finish(&mut self, c: UringCompletion, buf: &mut WriteBuffer) -> io::Result<UringEvent> {
        self.book.finish(c, buf)
    }
}

impl Drop for UringSender {
    fn drop(&mut self) {
        // The kernel may still read the msghdrs and iovecs of sends not yet reaped: leak them.
        for (_, msg) in self.msgs.drain() {
            std::mem::forget(msg);
        }
    }
}

#[cfg(test)]
mod tests {
    //! The bookkeeping alone, with completions made up: no ring, no system call.
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    const F_MORE: u32 = 1 << 1; // IORING_CQE_F_MORE
    const F_NOTIF: u32 = 1 << 3; // IORING_CQE_F_NOTIF

    struct Counted(Vec<u8>, Arc<AtomicUsize>);
    impl AsRef<[u8]> for Counted {
        fn as_ref(&self) -> &[u8] {
            &self.0
        }
    }
    impl Drop for Counted {
        fn drop(&mut self) {
            self.1.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn buffer(drops: &Arc<AtomicUsize>) -> WriteBuffer {
        let mut buf = WriteBuffer::with_block_size(64);
        buf.set_flatten_threshold(0);
        buf.put_slice(b"head");
        buf.pin(Counted(vec![7; 100], drops.clone()));
        buf.put_slice(b"tail");
        buf
    }

    fn send(book: &mut Book, token: u64, buf: &WriteBuffer, zc: bool) -> u64 {
        book.begin(token, buf, buf.pending_len(), zc).unwrap()
    }

    #[test]
    fn copying_send_partial_then_rest() {
        let drops = Arc::new(AtomicUsize::new(0));
        let mut buf = buffer(&drops);
        let mut book = Book::default();
        let s = send(&mut book, 7, &buf, false);
        assert_eq!(
            book.begin(7, &buf, 1, false).unwrap_err().kind(),
            io::ErrorKind::ResourceBusy
        );
        let c = book.cqe(s, 50, 0).unwrap();
        assert_eq!((c.token(), c.is_notification()), (7, false));
        assert_eq!(
            book.finish(c, &mut buf).unwrap(),
            UringEvent::Sent {
                bytes: 50,
                held: false
            }
        );
        assert!(book.finish(c, &mut buf).is_err(), "finished twice");
        let s = send(&mut book, 7, &buf, false);
        let c = book.cqe(s, 58, 0).unwrap();
        book.finish(c, &mut buf).unwrap();
        assert_eq!(drops.load(Ordering::SeqCst), 1);
        assert!(buf.is_empty());
        assert!(book.sends.is_empty() && book.tokens.is_empty());
    }

    #[test]
    fn zero_copy_holds_until_the_notification() {
        let drops = Arc::new(AtomicUsize::new(0));
        let mut buf = buffer(&drops);
        let mut book = Book::default();
        let s = send(&mut book, 1, &buf, true);
        let r = book.cqe(s, 108, F_MORE).unwrap();
        let n = book.cqe(s, 0, F_NOTIF).unwrap();
        assert!(n.is_notification());
        assert!(book.finish(n, &mut buf).is_err(), "notification first");
        assert_eq!(
            book.finish(r, &mut buf).unwrap(),
            UringEvent::Sent {
                bytes: 108,
                held: true
            }
        );
        assert_eq!((buf.pending_len(), buf.held_len()), (0, 108));
        assert_eq!(drops.load(Ordering::SeqCst), 0, "released before notif");
        assert!(crate::Stealable::steal(&mut buf).is_err());
        assert_eq!(book.outstanding(1), 1);
        assert_eq!(
            book.finish(n, &mut buf).unwrap(),
            UringEvent::Released { bytes: 108 }
        );
        assert_eq!(drops.load(Ordering::SeqCst), 1);
        assert!(book.finish(n, &mut buf).is_err(), "notified twice");
        assert_eq!(drops.load(Ordering::SeqCst), 1);
        assert!(buf.is_empty());
        assert_eq!(book.outstanding(1), 0);
    }

    #[test]
    fn notifications_out_of_order_release_only_a_complete_prefix() {
        let drops = Arc::new(AtomicUsize::new(0));
        let mut buf = buffer(&drops);
        let mut book = Book::default();
        // Three zero-copy sends of the same buffer: 4 + 6, 94, 4 bytes.
        let mut notifs = Vec::new();
        for n in [10, 94, 4] {
            let s = send(&mut book, 3, &buf, true);
            let r = book.cqe(s, n, F_MORE).unwrap();
            book.finish(r, &mut buf).unwrap();
            notifs.push(book.cqe(s, 0, F_NOTIF).unwrap());
        }
        assert_eq!(buf.held_len(), 108);
        let released = |e| match e {
            UringEvent::Released { bytes } => bytes,
            other => panic!("{other:?}"),
        };
        assert_eq!(released(book.finish(notifs[2], &mut buf).unwrap()), 0);
        assert_eq!(released(book.finish(notifs[1], &mut buf).unwrap()), 0);
        assert_eq!(
            drops.load(Ordering::SeqCst),
            0,
            "the first send still holds it"
        );
        assert_eq!(released(book.finish(notifs[0], &mut buf).unwrap()), 108);
        assert_eq!(drops.load(Ordering::SeqCst), 1);
        assert!(buf.is_empty());
    }

    #[test]
    fn errors_leave_the_buffer_unchanged_and_the_token_free() {
        let drops = Arc::new(AtomicUsize::new(0));
        let mut buf = buffer(&drops);
        let mut book = Book::default();
        let s = send(&mut book, 9, &buf, false);
        let c = book.cqe(s, -libc::EAGAIN, 0).unwrap();
        let err = book.finish(c, &mut buf).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        assert_eq!(buf.pending_len(), 108);
        // A failed zero-copy send still gets its notification, which releases nothing.
        let s = send(&mut book, 9, &buf, true);
        let r = book.cqe(s, -libc::EPIPE, F_MORE).unwrap();
        assert_eq!(
            book.finish(r, &mut buf).unwrap_err().raw_os_error(),
            Some(libc::EPIPE)
        );
        let n = book.cqe(s, 0, F_NOTIF).unwrap();
        assert_eq!(
            book.finish(n, &mut buf).unwrap(),
            UringEvent::Released { bytes: 0 }
        );
        assert_eq!(buf.pending_len(), 108);
        assert!(book.sends.is_empty() && book.tokens.is_empty());
        assert_eq!(book.cqe(s, 0, 0), None, "stale completions match nothing");
    }

    #[test]
    fn a_wrong_or_moved_buffer_is_refused() {
        let drops = Arc::new(AtomicUsize::new(0));
        let mut buf = buffer(&drops);
        let mut other = buffer(&drops);
        let mut book = Book::default();
        let s = send(&mut book, 1, &buf, true);
        other.advance(3);
        let r = book.cqe(s, 20, F_MORE).unwrap();
        assert!(book.finish(r, &mut other).is_err(), "another buffer");
        let r2 = book.cqe(s, 200, F_MORE).unwrap();
        assert!(book.finish(r2, &mut buf).is_err(), "more than offered");
        book.finish(r, &mut buf).unwrap();
        let n = book.cqe(s, 0, F_NOTIF).unwrap();
        let mut fresh = WriteBuffer::new();
        assert!(
            book.finish(n, &mut fresh).is_err(),
            "a buffer that never sent"
        );
        assert_eq!(buf.held_len(), 20);
        // "head" and the value's first 16 bytes are released: the kernel holds nothing now. The
        // value itself lives until its last byte is sent.
        assert_eq!(
            book.finish(n, &mut buf).unwrap(),
            UringEvent::Released { bytes: 20 }
        );
        assert_eq!(buf.held_len(), 0);
        assert_eq!(drops.load(Ordering::SeqCst), 0);
        buf.advance(buf.pending_len());
        assert_eq!(drops.load(Ordering::SeqCst), 1);
        assert!(buf.is_empty());
    }
}
