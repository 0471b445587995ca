//! One worker thread: an edge-triggered `mio` loop over the connections the acceptor gave it.
//!
//! Per connection the loop keeps a [`ReadBuffer`] and a [`WriteBuffer`] whose storage comes from
//! this thread's [`LocalPool`]. One pass over a connection ([`Worker::drive`]):
//!
//! 1. let the protocol [`Session`] handle every complete request in the read buffer, queueing
//!    headers (formatted into scratch) and values (pinned by reference) in the write buffer;
//! 2. send everything queued with **one** `sendmsg` ([`WriteBuffer::send_to`]); if the kernel took
//!    only part of it, the socket is full: wait for the writable edge instead of retrying into
//!    an `EAGAIN`;
//! 3. read again only if the last read filled all the space it was offered (a shorter read means
//!    the socket was drained, and edge-triggered epoll reports the next data), and only while
//!    the write buffer is below its high water mark.
//!
//! Steps 1 and 2 repeat without a read when a send took the write buffer below its low water
//! mark while requests still wait in the read buffer (the session stops at the high mark):
//! with no unread bytes and a socket that took everything, no event would come for them.
//!
//! A connection over its high water mark is not read from (the peer's requests wait in its own
//! socket buffers, so a client that pipelines and never reads costs the server a bounded amount
//! of memory). When it drains below the low mark, the loop handles what is left in the read
//! buffer and reads again. Such a connection, and one that is to close once its output is
//! sent, waits on its peer: if the peer takes none of that output (counting the kernel's send
//! queue) for `Config::stall_timeout`, the connection is closed (stat `closed_stalled`).
//!
//! Connections idle (both buffers empty, nothing read) for a whole [`SWEEP_INTERVAL`] give
//! their storage back through [`Stealable`] at the next sweep and hand their (now empty)
//! buffer pair to a per-worker spare list, so an idle connection holds only its socket, its
//! protocol session and a few words; when more than [`KEEP_ACTIVE`] connections of a worker
//! hold buffers, one gives them back as soon as it goes idle. Freed memory is returned to the
//! kernel with `malloc_trim` after a sweep that freed much (glibc keeps freed heap memory).
//!
//! With [`SendPath::ZeroCopy`] each connection also has a [`ZeroCopy`] (`SO_ZEROCOPY` set on its
//! socket) and sends through it: large sends go out with `MSG_ZEROCOPY` and their bytes stay
//! *held* (pinned values alive, scratch not reused) until the kernel's completion, which the
//! loop reads from the socket's error queue when epoll reports an error condition (mio's
//! `is_error()`). Held bytes count towards the water marks, and a connection is idle (its
//! buffers stealable) only when [`WriteBuffer::is_empty`]: nothing pending and nothing held. A
//! connection closed while the kernel still holds bytes keeps its socket and buffers on a
//! draining list until the completions arrive ([`DRAIN_TIMEOUT`] at most; then the held
//! memory is leaked, never freed). The copy path pays one branch per send for all this. A
//! peer whose receive window is tiny when accepted gets copying sends even on this path
//! ([`DEFAULT_ZEROCOPY_MIN_WINDOW`](crate::config::DEFAULT_ZEROCOPY_MIN_WINDOW) says why).
//!
//! With `SendPath::Uring` (feature `io-uring`) step 2 only queues the connection: after
//! handling every event of a turn, the worker submits one send per queued connection to its
//! [`sendbuf::UringSender`] and enters the kernel **once** for all of them; most complete
//! inside that call and are reaped at once (advance, release, drive the connection again:
//! resume its requests below the low mark, send the rest of a partial send, close on an
//! error). While its send is in flight a connection's buffer only grows (nothing queued
//! moves), is never idle, stolen or freed. Reads stay on epoll. A send to a full socket waits
//! in the kernel (no `EAGAIN`) until the peer reads, so a never-reading peer keeps its one send
//! in flight: that costs the worker nothing (the other connections' sends are separate
//! requests, and the loop never waits for a completion), the connection stops being read at
//! its high mark as on the other paths, and sends completed later wake the loop through an
//! eventfd registered with the ring and with the `Poll`. A peer's reset fails its waiting send,
//! which closes the connection. A connection closed by the server with its send in flight (a
//! read error, or the server shutting down) cancels it (`IORING_OP_ASYNC_CANCEL`) and waits
//! on the draining list for its result before its buffers are recycled (leaked after
//! [`DRAIN_TIMEOUT`], or [`SHUTDOWN_DRAIN`] when shutting down, never freed); the slot is not
//! reused before.

use std::io::{self, Read};
use std::net::Shutdown;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use sendbuf::{
    GatherLimits, LocalPool, Pool, PoolLimits, ReadBuffer, Stealable, Watermarks, WriteBuffer,
    ZeroCopy,
};
#[cfg(feature = "io-uring")]
use sendbuf::{UringCompletion, UringEvent, UringSender};

use crate::config::SendPath;
use crate::protocol::{Limits, Session};
use crate::stats::{bump, Stats, UringTotals, ZeroCopyTotals};
use crate::store::Store;
use crate::sys;

/// The token of a worker's `mio::Waker` (connections use their slot index).
pub const WAKE: Token = Token(usize::MAX);
/// The token of the eventfd the worker's io_uring signals for completions posted later.
#[cfg(feature = "io-uring")]
const URING: Token = Token(usize::MAX - 1);
/// Submission queue slots of a worker's io_uring (more sends than that enter it in several
/// calls).
#[cfg(feature = "io-uring")]
const URING_ENTRIES: u32 = 512;

/// A connection's write buffer stops its reading at this many bytes queued...
pub const HIGH_WATER: usize = 4 * 1024 * 1024;
/// ...until it drains to this many.
pub const LOW_WATER: usize = 1024 * 1024;

/// How often idle connections give their buffers back.
pub const SWEEP_INTERVAL: Duration = Duration::from_millis(100);

/// Read buffer storage taken on the first read after activation.
const READ_CAPACITY: usize = 16 * 1024;
/// Scratch chunk size of the write buffers.
const SCRATCH_CHUNK: usize = 16 * 1024;
/// Buffers a worker's pool keeps (read buffers and scratch chunks share it): enough to turn
/// over the buffers of connections going idle and active, small enough (128 KiB) to cost
/// idle connections nothing measurable.
const POOL_BUFFERS: usize = 8;
/// Empty buffer pairs kept for connections that become active again.
const SPARE_PAIRS: usize = 64;
/// Connections of a worker that keep their buffers while idle until the next sweep; beyond
/// that many holding buffers, a connection gives them back as soon as it goes idle, so a burst
/// of thousands of short-lived requests between two sweeps does not hold thousands of buffers.
pub const KEEP_ACTIVE: usize = 64;
/// How long a connection closed with bytes still held by the kernel waits for their
/// completions before its buffers are leaked rather than freed.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a worker shutting down waits for each connection's outstanding completions.
const SHUTDOWN_DRAIN: Duration = Duration::from_millis(200);

/// How a worker sends (from the server's configuration).
#[derive(Debug, Clone, Copy)]
pub struct SendOptions {
    /// Copying `sendmsg` or `MSG_ZEROCOPY`.
    pub path: SendPath,
    /// See `Config::zerocopy_stop_when_copied`.
    pub stop_when_copied: bool,
    /// See `Config::zerocopy_min_window`.
    pub min_window: usize,
    /// See `Config::stall_timeout`.
    pub stall_timeout: Duration,
}

/// Reads one pass over a connection makes before the worker turns to the others; a connection
/// with more to read is driven again after the current batch of events (memcached's
/// `reqs_per_event`).
const READ_BUDGET: usize = 16;

/// The bytes a request may need in the read buffer at once: a value of the largest size plus
/// the binary header (24), the longest key (250) and extras or an ASCII command line (64). The
/// protocol promises never to ask for more.
pub fn need_bound(max_item_size: usize) -> usize {
    max_item_size.saturating_add(24 + 250 + 64)
}

/// A connection's buffers, present only while it is active.
struct Buffers {
    rb: ReadBuffer,
    wb: WriteBuffer,
    /// Bytes the next request needs from the start of `rb.data()` (0: unknown). The session is
    /// not called again until that many have arrived.
    need: usize,
}

/// The connection may have unread bytes (an edge came and no read has found it drained since).
const MAY_READ: u8 = 1;
/// A send was partial: the socket is full until the next writable edge.
const WAIT_WRITABLE: u8 = 2;
/// Close once everything queued is sent (quit, a fatal protocol error, or the peer's EOF).
const CLOSING: u8 = 4;
/// On the worker's idle list.
const LISTED_IDLE: u8 = 8;
/// The peer has shut down its side (`EPOLLRDHUP`): a short read no longer proves the socket
/// drained, since the end of stream may wait behind the data; read until it shows.
const PEER_DONE: u8 = 16;
/// Read from since the last idle sweep.
const USED: u8 = 32;
/// Closed, but the kernel still holds bytes of its zero-copy sends, or has its io_uring send
/// in flight: on the draining list.
const DRAINING: u8 = 64;
/// io_uring path: queued for this turn's submission, or its send is in flight; cleared by the
/// send's result.
const SENDING: u8 = 128;

struct Conn {
    stream: TcpStream,
    session: Session,
    /// `None` while idle: the pair went back to the spare list.
    bufs: Option<Box<Buffers>>,
    /// The zero-copy sender of this socket (`None` on the copy path). It stays with the socket
    /// while buffer pairs come and go: a pair is given back only when nothing is held, so no
    /// outstanding send refers to an old pair's offsets.
    zc: Option<Box<ZeroCopy>>,
    flags: u8,
    /// Waiting on the peer to read (see `Worker::watch`): the bytes it had yet to take (ours
    /// and the kernel's, [`owed`]) when last seen, and when that last changed (the
    /// `stall_timeout` runs from there). Set while on the stalled list.
    linger: Option<(usize, Instant)>,
}

enum Outcome {
    Open,
    Close,
}

/// A reader that remembers how many bytes it was offered, so the loop knows whether a read
/// drained the socket without making the extra `read` that would return `EAGAIN`.
struct Offered<'a> {
    stream: &'a TcpStream,
    offered: usize,
}

impl Read for Offered<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.offered = buf.len();
        (&*self.stream).read(buf)
    }
}

/// A worker thread's state. Created by `server::start`, consumed by [`run`](Self::run).
pub struct Worker {
    poll: Poll,
    incoming: Receiver<TcpStream>,
    stop: Arc<AtomicBool>,
    store: Arc<Store>,
    stats: Arc<Stats>,
    max_item_size: usize,
    conns: Vec<Option<Conn>>,
    free_slots: Vec<usize>,
    ctx: Ctx,
    send: SendOptions,
    zerocopy: Arc<ZeroCopyTotals>,
    /// Closed connections waiting for zero-copy completions or io_uring results, with their
    /// deadlines.
    draining: Vec<(usize, Instant)>,
    /// Connections waiting on their peers to read (their `linger` is set; see
    /// [`watch`](Self::watch)), checked for progress each turn; may list a slot twice or list
    /// one since closed (both skipped).
    stalled: Vec<usize>,
    /// When `stalled` is next checked (at most once per [`SWEEP_INTERVAL`]: one `ioctl` per
    /// listed connection).
    stall_check_at: Instant,
    /// The io_uring send path's state (`None` on the other paths).
    #[cfg(feature = "io-uring")]
    uring: Option<UringLoop>,
    uring_totals: Arc<UringTotals>,
}

/// A worker's io_uring: one sender for all its connections (token: the slot index).
#[cfg(feature = "io-uring")]
struct UringLoop {
    sender: UringSender,
    /// Registered with the ring and with the `Poll` (token [`URING`]): the kernel signals it
    /// for completions posted outside the worker's own `io_uring_enter`. Never read: epoll is
    /// edge-triggered, and each signal is a new edge.
    _eventfd: std::os::fd::OwnedFd,
    /// Sends or cancels queued since the last enter.
    unsubmitted: bool,
    /// Completions reaped, kept for its capacity.
    done: Vec<UringCompletion>,
    /// Buffer pairs leaked (see [`DRAIN_TIMEOUT`]).
    leaked: u64,
}

/// What `drive` needs besides the connection.
struct Ctx {
    pool: Arc<dyn Pool>,
    /// Boxed so a pair moves between a connection and this list as one pointer.
    #[allow(clippy::vec_box)]
    spare: Vec<Box<Buffers>>,
    idle: Vec<usize>,
    /// Connections that used up their read budget with more to read.
    yielded: Vec<usize>,
    /// Connections of this worker holding a buffer pair...
    active: usize,
    /// ...and of the whole server (for tests and monitoring; touched only when a connection
    /// takes or gives back its buffers, not per request).
    buffered: Arc<AtomicUsize>,
    stats: Arc<Stats>,
    read_max: usize,
    iov_max: usize,
    /// The io_uring path: step 2 of `drive` queues the connection on `to_send`.
    uring: bool,
    /// Connections (slots) whose output waits for this turn's io_uring submission.
    to_send: Vec<usize>,
}

impl Worker {
    /// A worker that will serve the connections arriving on `incoming`.
    ///
    /// # Errors
    ///
    /// On the io_uring path: the ring or its eventfd could not be set up.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        poll: Poll,
        incoming: Receiver<TcpStream>,
        stop: Arc<AtomicBool>,
        store: Arc<Store>,
        stats: Arc<Stats>,
        limits: Limits,
        buffered: Arc<AtomicUsize>,
        send: SendOptions,
        zerocopy: Arc<ZeroCopyTotals>,
        uring_totals: Arc<UringTotals>,
    ) -> io::Result<Worker> {
        let pool: Arc<dyn Pool> = LocalPool::new(
            PoolLimits::new()
                .with_max_buffers(POOL_BUFFERS)
                .with_max_buffer_size(64 * 1024),
        );
        #[cfg(feature = "io-uring")]
        let uring = match send.path {
            SendPath::Uring => Some(UringLoop::new(&poll)?),
            _ => None,
        };
        #[cfg(feature = "io-uring")]
        let on_uring = uring.is_some();
        #[cfg(not(feature = "io-uring"))]
        let on_uring = false;
        Ok(Worker {
            poll,
            incoming,
            stop,
            store,
            stats: stats.clone(),
            max_item_size: limits.max_item_size,
            conns: Vec::new(),
            free_slots: Vec::new(),
            ctx: Ctx {
                pool,
                spare: Vec::new(),
                idle: Vec::new(),
                yielded: Vec::new(),
                active: 0,
                buffered,
                stats,
                read_max: need_bound(limits.max_item_size).max(READ_CAPACITY),
                iov_max: GatherLimits::new().max_iovecs(),
                uring: on_uring,
                to_send: Vec::new(),
            },
            send,
            zerocopy,
            draining: Vec::new(),
            stalled: Vec::new(),
            stall_check_at: Instant::now(),
            #[cfg(feature = "io-uring")]
            uring,
            uring_totals,
        })
    }

    /// The event loop; returns when the server's stop flag is set.
    pub fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        // When the listed idle connections are swept: one interval after the first was listed,
        // so a connection is swept after being idle for one to two intervals. One clock read per
        // wake-up, and none while no connection is listed.
        let mut sweep_at: Option<Instant> = None;
        let mut trim = TrimTracker::default();
        while !self.stop.load(Ordering::Relaxed) {
            let timeout = if !self.ctx.yielded.is_empty() || self.uring_pending() {
                Some(Duration::ZERO)
            } else if self.ctx.idle.is_empty()
                && self.draining.is_empty()
                && self.stalled.is_empty()
                && !self.uring_in_flight()
            {
                None
            } else {
                Some(SWEEP_INTERVAL)
            };
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                eprintln!("memcached_server: worker poll failed: {e}");
                break;
            }
            for event in events.iter() {
                if event.token() == WAKE {
                    self.register_new();
                    continue;
                }
                #[cfg(feature = "io-uring")]
                if event.token() == URING {
                    continue; // completions posted later: reaped by `uring_round` below
                }
                let i = event.token().0;
                // Errors and hang-ups: the next read or send reports them and closes. On the
                // zero-copy path the error condition usually means completions are queued.
                let mut failed = event.is_error();
                if failed && self.send.path == SendPath::ZeroCopy {
                    match self.completions(i, &mut trim) {
                        Some(true) => failed = false,
                        Some(false) => {}
                        None => continue, // closed, or still draining
                    }
                }
                let mut flags = 0;
                if event.is_readable() || failed {
                    flags |= MAY_READ;
                }
                if event.is_read_closed() {
                    flags |= MAY_READ | PEER_DONE;
                }
                let writable = event.is_writable() || event.is_write_closed() || failed;
                self.ready(i, flags, writable, &mut trim);
            }
            let yielded = std::mem::take(&mut self.ctx.yielded);
            for &i in &yielded {
                self.ready(i, 0, false, &mut trim);
            }
            self.uring_round(&mut trim);
            if !self.draining.is_empty() {
                self.check_draining(&mut trim);
            }
            if !self.stalled.is_empty() {
                self.check_stalled(&mut trim);
            }
            if self.ctx.idle.is_empty() {
                continue;
            }
            let now = Instant::now();
            match sweep_at {
                None => sweep_at = Some(now + SWEEP_INTERVAL),
                Some(at) if now >= at => {
                    self.sweep(&mut trim);
                    sweep_at = None;
                }
                Some(_) => {}
            }
        }
        // Shutdown: dropping the connections closes their sockets, once the kernel holds
        // nothing of their buffers (a buffer dropped while it does leaks those bytes instead).
        self.uring_shutdown(&mut trim);
        for conn in self.conns.iter_mut().flatten() {
            if let (Some(zc), Some(bufs)) = (conn.zc.as_deref_mut(), conn.bufs.as_deref_mut()) {
                if bufs.wb.held_len() > 0 {
                    let _ = zc.drain_blocking(&mut bufs.wb, &conn.stream, SHUTDOWN_DRAIN);
                }
                self.zerocopy.add(zc.stats());
            }
            // Every connection left goes now, draining ones too (`close` counts those only
            // when their bytes complete, in `finish_close`).
            self.stats.connection_closed();
        }
    }

    /// Reads the completions of connection `i` after an error event. `Some(true)`: the event
    /// brought completions (or other error-queue messages); `Some(false)`: none, so it reports
    /// a real error; `None`: the connection is gone or draining (nothing more to do).
    fn completions(&mut self, i: usize, trim: &mut TrimTracker) -> Option<bool> {
        let conn = self.conns.get_mut(i)?.as_mut()?;
        let (Some(zc), Some(bufs)) = (conn.zc.as_deref_mut(), conn.bufs.as_deref_mut()) else {
            return Some(false); // no buffers, so nothing held: a real error
        };
        let before = zc.stats();
        let result = zc.poll_completions(&mut bufs.wb, &conn.stream);
        let after = zc.stats();
        if conn.flags & DRAINING != 0 {
            if result.is_err() || bufs.wb.held_len() == 0 {
                self.finish_close(i, trim);
            }
            return None;
        }
        match result {
            Ok(_) => Some(after.completions + after.ignored > before.completions + before.ignored),
            Err(_) => {
                self.close(i, trim);
                None
            }
        }
    }

    /// Polls the draining connections (their completions may have come without a new edge) and
    /// gives up on those past their deadline.
    fn check_draining(&mut self, trim: &mut TrimTracker) {
        let now = Instant::now();
        let mut draining = std::mem::take(&mut self.draining);
        draining.retain(|&(i, deadline)| {
            if self.ctx.uring {
                // Finished (and unlisted) by its send's result, or given up on here.
                if now >= deadline {
                    self.uring_give_up(i, trim);
                    return false;
                }
                return true;
            }
            let Some(Some(conn)) = self.conns.get_mut(i) else {
                return false;
            };
            let (Some(zc), Some(bufs)) = (conn.zc.as_deref_mut(), conn.bufs.as_deref_mut()) else {
                self.finish_close(i, trim);
                return false;
            };
            let failed = zc.poll_completions(&mut bufs.wb, &conn.stream).is_err();
            if failed || bufs.wb.held_len() == 0 || now >= deadline {
                if bufs.wb.held_len() > 0 {
                    eprintln!(
                        "memcached_server: a closed connection's {} bytes were not completed \
                         in {DRAIN_TIMEOUT:?}; leaking them",
                        bufs.wb.held_len()
                    );
                }
                self.finish_close(i, trim);
                return false;
            }
            true
        });
        // finish_close may not add to the list, so nothing is lost by replacing it.
        self.draining = draining;
    }

    fn register_new(&mut self) {
        loop {
            let mut stream = match self.incoming.try_recv() {
                Ok(stream) => stream,
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => return,
            };
            let slot = self.free_slots.pop().unwrap_or_else(|| {
                self.conns.push(None);
                self.conns.len() - 1
            });
            // Registered once for both directions, edge-triggered: no epoll_ctl per request.
            // io_uring sends wait for room in the kernel: no writable edges needed (nor the
            // wake-ups they cost).
            let interest = if self.ctx.uring {
                Interest::READABLE
            } else {
                Interest::READABLE | Interest::WRITABLE
            };
            if let Err(e) = self
                .poll
                .registry()
                .register(&mut stream, Token(slot), interest)
            {
                eprintln!("memcached_server: cannot register a connection: {e}");
                self.free_slots.push(slot);
                continue;
            }
            let session = Session::new(
                self.store.clone(),
                self.stats.clone(),
                Limits {
                    max_item_size: self.max_item_size,
                },
            );
            let zc = match self.send.path {
                SendPath::Copy => None,
                #[cfg(feature = "io-uring")]
                SendPath::Uring => None,
                SendPath::ZeroCopy => {
                    let mut zc = ZeroCopy::new();
                    zc.set_stop_when_copied(self.send.stop_when_copied);
                    let window = sys::peer_window(stream.as_fd());
                    if window.is_some_and(|w| w < self.send.min_window) {
                        // Not enabled: every send through it copies (DEFAULT_ZEROCOPY_MIN_WINDOW).
                    } else if let Err(e) = zc.enable(&stream) {
                        // If SO_ZEROCOPY is refused, the ZeroCopy simply makes copying sends.
                        eprintln!("memcached_server: SO_ZEROCOPY refused ({e}); copying");
                    }
                    Some(Box::new(zc))
                }
            };
            self.conns[slot] = Some(Conn {
                stream,
                session,
                bufs: None,
                zc,
                flags: 0,
                linger: None,
            });
            self.stats.connection_opened();
        }
    }

    fn ready(&mut self, i: usize, flags: u8, writable: bool, trim: &mut TrimTracker) {
        let Some(Some(conn)) = self.conns.get_mut(i) else {
            return; // closed earlier in this batch of events
        };
        if conn.flags & DRAINING != 0 {
            return; // closed; only its completions matter (see `completions`)
        }
        conn.flags |= flags;
        if writable {
            conn.flags &= !WAIT_WRITABLE;
        }
        match drive(conn, i, &mut self.ctx) {
            Outcome::Close => self.close(i, trim),
            Outcome::Open => self.watch(i),
        }
    }

    /// After a pass over connection `i` that left it open: if it waits on its peer to read
    /// (closing once its output is sent, or not read from until that output drains below the
    /// low water mark), puts it on the stalled list, from where [`check_stalled`] closes it if
    /// the peer takes none of that output for `stall_timeout`.
    ///
    /// [`check_stalled`]: Self::check_stalled
    fn watch(&mut self, i: usize) {
        let Some(Some(conn)) = self.conns.get_mut(i) else {
            return;
        };
        let Some(bufs) = conn.bufs.as_deref() else {
            return;
        };
        if conn.linger.is_none() && waits_on_peer(conn.flags, &bufs.wb) {
            conn.linger = Some((owed(&bufs.wb, &conn.stream), Instant::now()));
            self.stalled.push(i);
        }
    }

    /// Closes the connections on the stalled list whose peers took none of their output for
    /// `stall_timeout`; drops from the list those that closed or no longer wait.
    fn check_stalled(&mut self, trim: &mut TrimTracker) {
        let now = Instant::now();
        if now < self.stall_check_at {
            return;
        }
        self.stall_check_at = now + SWEEP_INTERVAL;
        let mut stalled = std::mem::take(&mut self.stalled);
        let mut expired = Vec::new();
        stalled.retain(|&i| {
            let Some(Some(conn)) = self.conns.get_mut(i) else {
                return false;
            };
            let Some((seen, since)) = conn.linger else {
                return false; // a new connection in a closed one's slot
            };
            if conn.flags & DRAINING != 0 {
                return false; // closed; the draining list has it
            }
            let Some(bufs) = conn
                .bufs
                .as_deref()
                .filter(|b| waits_on_peer(conn.flags, &b.wb) && unsent(&b.wb) > 0)
            else {
                conn.linger = None; // sent, or drained below the low water mark
                return false;
            };
            let left = owed(&bufs.wb, &conn.stream);
            // Fewer left: the peer took some. More: it took enough for the output to drain
            // below the low water mark, so that later requests were answered.
            if left != seen {
                conn.linger = Some((left, now));
            } else if now.duration_since(since) >= self.send.stall_timeout {
                conn.linger = None;
                expired.push(i);
                return false;
            }
            true
        });
        // `close` may not add to the list, so nothing is lost by replacing it.
        self.stalled = stalled;
        for i in expired {
            bump(&self.stats.local().closed_stalled);
            self.close(i, trim);
        }
    }

    fn close(&mut self, i: usize, trim: &mut TrimTracker) {
        if self.uring_close(i) {
            return; // draining until its send's result
        }
        let Some(Some(conn)) = self.conns.get_mut(i) else {
            return;
        };
        if let (Some(zc), Some(bufs)) = (conn.zc.as_deref_mut(), conn.bufs.as_deref_mut()) {
            bufs.rb.clear();
            bufs.wb.clear(); // releases pinned values not sent; keeps what the kernel holds
            if bufs.wb.held_len() > 0 {
                let _ = zc.poll_completions(&mut bufs.wb, &conn.stream);
            }
            if bufs.wb.held_len() > 0 {
                // The kernel still reads these bytes: keep the socket (its error queue brings
                // the completions) and the buffers until then. The peer sees the end of stream.
                let _ = conn.stream.shutdown(Shutdown::Write);
                conn.flags = DRAINING;
                self.draining.push((i, Instant::now() + DRAIN_TIMEOUT));
                return;
            }
        }
        self.finish_close(i, trim);
    }

    /// Drops connection `i` and recycles its buffers (nothing of them is held by the kernel).
    fn finish_close(&mut self, i: usize, trim: &mut TrimTracker) {
        if let Some(conn) = self.conns[i].take() {
            // Closing the socket removes it from the epoll set: no deregister call needed.
            if let Some(zc) = &conn.zc {
                self.zerocopy.add(zc.stats());
            }
            if let Some(mut bufs) = conn.bufs {
                bufs.rb.clear();
                bufs.wb.clear(); // releases pinned values not sent
                if bufs.wb.held_len() > 0 {
                    // Given up on (DRAIN_TIMEOUT): dropping the buffer leaks the held bytes
                    // rather than free memory the kernel may still read.
                    self.ctx.active -= 1;
                    self.ctx.buffered.fetch_sub(1, Ordering::Relaxed);
                    drop(bufs);
                } else {
                    self.ctx.recycle(bufs);
                }
            }
            self.free_slots.push(i);
            trim.closed += 1;
            self.stats.connection_closed();
        }
    }

    /// Takes the buffers of every listed connection that is still idle.
    fn sweep(&mut self, trim: &mut TrimTracker) {
        let mut idle = std::mem::take(&mut self.ctx.idle);
        let (conns, ctx) = (&mut self.conns, &mut self.ctx);
        idle.retain(|&i| {
            let Some(Some(conn)) = conns.get_mut(i) else {
                return false; // closed since
            };
            if conn.flags & LISTED_IDLE == 0 {
                return false; // the slot's connection was replaced
            }
            if conn.flags & USED != 0 {
                // Read from since the last sweep: busy at depth 1 rather than idle. Look again
                // at the next sweep instead of making it take storage again right away.
                conn.flags &= !USED;
                return true;
            }
            conn.flags &= !LISTED_IDLE;
            let quiet = conn.flags & (WAIT_WRITABLE | CLOSING | SENDING) == 0;
            if let (true, Some(bufs)) = (quiet, conn.bufs.as_ref()) {
                if bufs.rb.is_empty() && bufs.wb.is_empty() {
                    let bufs = conn.bufs.take().expect("checked above");
                    ctx.recycle(bufs);
                }
            }
            false
        });
        self.ctx.idle = idle;
        trim.maybe_trim(&*self.ctx.pool);
    }
}

#[cfg(feature = "io-uring")]
impl UringLoop {
    fn new(poll: &Poll) -> io::Result<UringLoop> {
        use std::os::fd::{AsFd, AsRawFd};
        let unavailable = |e: io::Error| io::Error::new(e.kind(), format!("io_uring: {e}"));
        let mut sender = UringSender::new(URING_ENTRIES).map_err(unavailable)?;
        let eventfd = crate::sys::eventfd()?;
        sender
            .register_eventfd(eventfd.as_fd())
            .map_err(unavailable)?;
        poll.registry().register(
            &mut mio::unix::SourceFd(&eventfd.as_raw_fd()),
            URING,
            Interest::READABLE,
        )?;
        Ok(UringLoop {
            sender,
            _eventfd: eventfd,
            unsubmitted: false,
            done: Vec::new(),
            leaked: 0,
        })
    }
}

/// The io_uring send path (see the module docs).
#[cfg(feature = "io-uring")]
impl Worker {
    /// Sends or cancels wait for an `io_uring_enter`: poll without blocking.
    fn uring_pending(&self) -> bool {
        !self.ctx.to_send.is_empty() || self.uring.as_ref().is_some_and(|u| u.unsubmitted)
    }

    /// Sends are in flight: poll with a timeout, so that a completion whose eventfd signal was
    /// missed (see `UringSender::register_eventfd`) is reaped by the next turn anyway.
    fn uring_in_flight(&self) -> bool {
        self.uring
            .as_ref()
            .is_some_and(|u| u.sender.in_flight() > 0)
    }

    /// One turn's sends: submits every queued connection's pending bytes, enters the kernel
    /// once, and applies every completion ready (those of this enter and any posted since the
    /// last turn).
    fn uring_round(&mut self, trim: &mut TrimTracker) {
        let Some(u) = self.uring.as_mut() else {
            return;
        };
        let mut failed = Vec::new();
        for i in self.ctx.to_send.drain(..) {
            let Some(Some(conn)) = self.conns.get_mut(i) else {
                continue;
            };
            // A slot closed and taken by a new connection since it was queued may be listed
            // twice: submit once.
            if conn.flags & SENDING == 0 || u.sender.outstanding(i as u64) > 0 {
                continue;
            }
            let Some(bufs) = conn.bufs.as_deref() else {
                conn.flags &= !SENDING;
                continue;
            };
            use std::os::fd::AsFd;
            match u
                .sender
                .submit(i as u64, &bufs.wb, conn.stream.as_fd(), false)
            {
                Ok(0) => conn.flags &= !SENDING,
                Ok(_) => u.unsubmitted = true,
                Err(e) => {
                    eprintln!("memcached_server: io_uring submit failed: {e}");
                    conn.flags &= !SENDING;
                    failed.push(i);
                }
            }
        }
        if u.unsubmitted {
            match u.sender.flush() {
                Ok(_) => u.unsubmitted = false,
                // EBUSY: the completion queue overflowed; reaping below makes room, and the
                // zero poll timeout brings the next try at once.
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {}
                Err(e) => {
                    eprintln!("memcached_server: io_uring_enter failed: {e}");
                    u.unsubmitted = false;
                }
            }
        }
        let mut done = std::mem::take(&mut u.done);
        u.sender.reap(&mut done);
        for c in done.drain(..) {
            self.uring_completion(c, trim);
        }
        if let Some(u) = self.uring.as_mut() {
            u.done = done;
        }
        for i in failed {
            self.close(i, trim);
        }
    }

    /// Applies one completion to its connection's buffer, then drives the connection on.
    fn uring_completion(&mut self, c: UringCompletion, trim: &mut TrimTracker) {
        let Some(u) = self.uring.as_mut() else {
            return;
        };
        let i = c.token() as usize;
        // Gone only if given up on (its buffers leaked, so nothing is left to apply this to).
        let Some(Some(conn)) = self.conns.get_mut(i) else {
            return;
        };
        let Some(bufs) = conn.bufs.as_deref_mut() else {
            return; // unreachable: a connection keeps its buffers while a send is in flight
        };
        let result = u.sender.finish(c, &mut bufs.wb);
        if conn.flags & DRAINING != 0 {
            if u.sender.outstanding(i as u64) == 0 {
                self.draining.retain(|&(j, _)| j != i);
                self.finish_close(i, trim);
            }
            return;
        }
        conn.flags &= !SENDING;
        match result {
            Ok(UringEvent::Sent { bytes, .. }) => {
                self.ctx.stats.written(bytes);
                // Sends the rest of a partial send, resumes requests held back at the high
                // mark, reads on, or closes once everything is sent.
                match drive(conn, i, &mut self.ctx) {
                    Outcome::Close => self.close(i, trim),
                    Outcome::Open => self.watch(i),
                }
            }
            Ok(UringEvent::Released { .. }) => {} // zero-copy only; this path sends copying
            // The kernel waits for room rather than say EAGAIN; should it say so, try again.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                conn.flags |= SENDING;
                self.ctx.to_send.push(i);
            }
            Err(e) => {
                if e.kind() == io::ErrorKind::InvalidInput {
                    eprintln!("memcached_server: io_uring bookkeeping refused a result: {e}");
                }
                self.close(i, trim); // nothing in flight any more: closes at once
            }
        }
    }

    /// Closing connection `i` while its send is in flight: cancels the send and keeps the
    /// connection (socket, buffers, slot) on the draining list until its result. Returns false
    /// if nothing is in flight (close as usual).
    fn uring_close(&mut self, i: usize) -> bool {
        let Some(u) = self.uring.as_mut() else {
            return false;
        };
        let Some(Some(conn)) = self.conns.get_mut(i) else {
            return false;
        };
        if conn.flags & DRAINING != 0 {
            return true;
        }
        if u.sender.outstanding(i as u64) == 0 {
            return false;
        }
        if let Some(bufs) = conn.bufs.as_deref_mut() {
            bufs.rb.clear(); // the write buffer stays whole: the kernel reads its pending bytes
        }
        match u.sender.cancel(i as u64) {
            Ok(_) => u.unsubmitted = true,
            // The send still completes when the peer reads or resets; or it is given up on.
            Err(e) => eprintln!("memcached_server: io_uring cancel failed: {e}"),
        }
        conn.flags = DRAINING;
        self.draining.push((i, Instant::now() + DRAIN_TIMEOUT));
        true
    }

    /// A closed connection's send did not come back within [`DRAIN_TIMEOUT`]: close its socket
    /// but leak its buffers (the kernel may still read them) and never reuse its slot (its
    /// token may still complete).
    fn uring_give_up(&mut self, i: usize, trim: &mut TrimTracker) {
        let Some(conn) = self.conns.get_mut(i).and_then(Option::take) else {
            return;
        };
        eprintln!(
            "memcached_server: a closed connection's io_uring send did not end in \
             {DRAIN_TIMEOUT:?}; leaking its buffers"
        );
        if let Some(bufs) = conn.bufs {
            std::mem::forget(bufs);
            self.ctx.active -= 1;
            self.ctx.buffered.fetch_sub(1, Ordering::Relaxed);
            if let Some(u) = self.uring.as_mut() {
                u.leaked += 1;
            }
        }
        trim.closed += 1;
        self.stats.connection_closed();
    }

    /// Shutdown: closes every connection with a send in flight as [`close`](Self::close)
    /// does (cancel, drain), and waits (at most [`SHUTDOWN_DRAIN`]) for their results, so
    /// that no buffer is dropped while the kernel reads it; the buffers of connections whose
    /// send still did not come back are leaked.
    fn uring_shutdown(&mut self, trim: &mut TrimTracker) {
        let Some(u) = self.uring.as_ref() else {
            return;
        };
        self.ctx.to_send.clear(); // nothing new goes out
        let busy = |u: &UringLoop, conns: &[Option<Conn>]| -> Vec<usize> {
            (0..conns.len())
                .filter(|&i| conns[i].is_some() && u.sender.outstanding(i as u64) > 0)
                .collect()
        };
        for i in busy(u, &self.conns) {
            self.uring_close(i);
        }
        let deadline = Instant::now() + SHUTDOWN_DRAIN;
        loop {
            self.uring_round(trim);
            let Some(u) = self.uring.as_ref() else {
                return;
            };
            if busy(u, &self.conns).is_empty() || Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let Some(u) = self.uring.as_mut() else {
            return;
        };
        for i in busy(u, &self.conns) {
            if let Some(bufs) = self.conns[i].as_mut().and_then(|c| c.bufs.take()) {
                std::mem::forget(bufs); // the kernel may still read them
                u.leaked += 1;
            }
        }
        self.uring_totals.add(u.sender.stats(), u.leaked);
    }
}

/// Without the `io-uring` feature there is no io_uring path: these do nothing.
#[cfg(not(feature = "io-uring"))]
impl Worker {
    fn uring_pending(&self) -> bool {
        false
    }

    fn uring_in_flight(&self) -> bool {
        false
    }

    fn uring_round(&mut self, _trim: &mut TrimTracker) {}

    fn uring_close(&mut self, _i: usize) -> bool {
        false
    }

    fn uring_give_up(&mut self, _i: usize, _trim: &mut TrimTracker) {}

    fn uring_shutdown(&mut self, _trim: &mut TrimTracker) {
        let _ = &self.uring_totals;
    }
}

impl Ctx {
    /// An empty buffer pair for a connection that becomes active.
    fn buffers(&mut self) -> Box<Buffers> {
        self.active += 1;
        self.buffered.fetch_add(1, Ordering::Relaxed);
        self.spare.pop().unwrap_or_else(|| {
            let mut rb = ReadBuffer::with_block_size(READ_CAPACITY).with_pool(self.pool.clone());
            rb.set_max_len(self.read_max);
            let mut wb = WriteBuffer::with_block_size(SCRATCH_CHUNK).with_pool(self.pool.clone());
            wb.set_watermarks(Some(Watermarks::new(LOW_WATER, HIGH_WATER)));
            Box::new(Buffers { rb, wb, need: 0 })
        })
    }

    /// Gives an empty pair's storage back to the pool and keeps the pair for reuse.
    fn recycle(&mut self, mut bufs: Box<Buffers>) {
        self.active -= 1;
        self.buffered.fetch_sub(1, Ordering::Relaxed);
        // Both are empty here (checked by the caller, or cleared at close), so neither steal
        // refuses; if one did, the pair is simply dropped with its storage.
        let ok = bufs.rb.steal().is_ok() && bufs.wb.steal().is_ok();
        bufs.need = 0;
        if ok && self.spare.len() < SPARE_PAIRS {
            self.spare.push(bufs);
        }
    }
}

/// Counts what was freed since the last `malloc_trim`.
#[derive(Default)]
struct TrimTracker {
    closed: u64,
    freed_at_trim: u64,
}

/// Connections closed since the last `malloc_trim` that make another worth it on their own.
const TRIM_AFTER_CLOSES: u64 = 256;

impl TrimTracker {
    /// glibc keeps freed heap memory in its arenas (only the top of a heap shrinks on its own),
    /// so the storage of thousands of connections that went idle would stay resident. After a
    /// sweep that freed buffers (the pool was full; busy connections are not swept, so a
    /// steady load frees none), or after many connections closed, give whole free pages back
    /// to the kernel. A trim costs tens of microseconds; this runs at most once per sweep.
    fn maybe_trim(&mut self, pool: &dyn Pool) {
        let freed = pool.stats().freed;
        if freed == self.freed_at_trim && self.closed < TRIM_AFTER_CLOSES {
            return;
        }
        self.freed_at_trim = freed;
        self.closed = 0;
        sys::malloc_trim();
    }
}

/// Whether a connection with these flags and this write buffer waits on its peer to read: it is
/// to close once its output is sent, or it is not read from until that output drains below
/// the low water mark.
fn waits_on_peer(flags: u8, wb: &WriteBuffer) -> bool {
    flags & CLOSING != 0 || wb.is_backed_up()
}

/// What the peer has yet to take: our unsent bytes and the kernel's (a peer that reads drains
/// the kernel's first, and ours only move when that has room).
fn owed(wb: &WriteBuffer, stream: &TcpStream) -> usize {
    unsent(wb) + sys::kernel_unsent(stream.as_fd())
}

/// One pass over a connection after an event; see the module docs.
fn drive(conn: &mut Conn, slot: usize, ctx: &mut Ctx) -> Outcome {
    if conn.bufs.is_none() {
        if conn.flags & MAY_READ == 0 {
            return Outcome::Open; // a writable edge on an idle connection: nothing to send
        }
        conn.bufs = Some(ctx.buffers());
    }
    let bufs = conn.bufs.as_mut().expect("just ensured");
    let mut reads = 0;
    loop {
        // 1. Every complete request already buffered (unless the output is backed up).
        if conn.flags & CLOSING == 0
            && !bufs.wb.is_backed_up()
            && !bufs.rb.is_empty()
            && bufs.rb.len() >= bufs.need
        {
            let done = conn.session.process(bufs.rb.data(), &mut bufs.wb);
            if bufs.rb.try_consume(done.consumed).is_err() {
                return Outcome::Close; // the session claimed more than it was given
            }
            if done.close {
                conn.flags = (conn.flags | CLOSING) & !MAY_READ;
                bufs.rb.clear();
            } else {
                bufs.need = done.need.min(ctx.read_max);
                let len = bufs.rb.len();
                if bufs.need > len && bufs.rb.reserve(bufs.need - len).is_err() {
                    return Outcome::Close;
                }
            }
        }
        // Requests left in the read buffer because the output is over its high water mark.
        let waiting = conn.flags & CLOSING == 0 && bufs.wb.is_backed_up() && !bufs.rb.is_empty();
        // 2. Everything queued, in one sendmsg.
        if unsent(&bufs.wb) > 0 && conn.flags & (WAIT_WRITABLE | SENDING) == 0 && ctx.uring {
            // Sent with every other queued connection's output in this turn's one
            // io_uring_enter (`Worker::uring_round`).
            conn.flags |= SENDING;
            ctx.to_send.push(slot);
        } else if unsent(&bufs.wb) > 0 && conn.flags & (WAIT_WRITABLE | SENDING) == 0 {
            let sent = match conn.zc.as_deref_mut() {
                None => flush(&mut bufs.wb, &conn.stream, ctx),
                Some(zc) => flush_zero_copy(&mut bufs.wb, zc, &conn.stream, ctx),
            };
            match sent {
                Ok(true) => {}
                Ok(false) => conn.flags |= WAIT_WRITABLE,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => conn.flags |= WAIT_WRITABLE,
                Err(_) => return Outcome::Close,
            }
        }
        if conn.flags & CLOSING != 0 {
            return if unsent(&bufs.wb) == 0 {
                Outcome::Close
            } else {
                Outcome::Open
            };
        }
        // 3. Read more, unless backed up (the writable edge resumes) or drained. If this pass's
        // send took the output below its low mark while requests wait in the read buffer, go
        // back to 1 for them: that send may have left the socket with room, and then no
        // writable edge (nor any other event, once the socket is drained) would ever resume
        // them.
        let resume = waiting && !bufs.wb.is_backed_up();
        if bufs.wb.is_backed_up() || (conn.flags & MAY_READ == 0 && !resume) {
            break;
        }
        if reads == READ_BUDGET {
            ctx.yielded.push(slot); // fairness: come back after the others
            break;
        }
        reads += 1;
        if resume {
            continue; // each such turn sent at least the span between the marks
        }
        let mut src = Offered {
            stream: &conn.stream,
            offered: 0,
        };
        match bufs.rb.read_from(&mut src) {
            Ok(0) => conn.flags = (conn.flags | CLOSING) & !MAY_READ, // the peer's EOF
            Ok(n) => {
                conn.flags |= USED;
                ctx.stats.read(n);
                if n < src.offered && conn.flags & PEER_DONE == 0 {
                    conn.flags &= !MAY_READ;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                conn.flags &= !MAY_READ;
                break;
            }
            // Reset, or a full buffer the session cannot make progress on.
            Err(_) => return Outcome::Close,
        }
    }
    if bufs.rb.is_empty() && bufs.wb.is_empty() {
        if ctx.active > KEEP_ACTIVE {
            let bufs = conn.bufs.take().expect("held above");
            ctx.recycle(bufs);
        } else if conn.flags & LISTED_IDLE == 0 {
            conn.flags |= LISTED_IDLE;
            ctx.idle.push(slot);
        }
    }
    Outcome::Open
}

/// Sends what is queued: one `sendmsg`, or more only when the queue holds more iovecs than one
/// call takes. `Ok(false)`: the kernel took less than offered, so the socket is full.
fn flush(wb: &mut WriteBuffer, stream: &TcpStream, ctx: &Ctx) -> io::Result<bool> {
    loop {
        let slices = wb.io_slices();
        let offered = if slices.len() <= ctx.iov_max {
            wb.pending_len()
        } else {
            slices[..ctx.iov_max].iter().map(|s| s.len()).sum()
        };
        let sent = wb.send_to(stream)?;
        ctx.stats.written(sent);
        if unsent(wb) == 0 {
            return Ok(true);
        }
        if sent < offered {
            return Ok(false);
        }
    }
}

/// [`flush`] through the connection's [`ZeroCopy`]: large sends are made with `MSG_ZEROCOPY`
/// and held until their completion.
fn flush_zero_copy(
    wb: &mut WriteBuffer,
    zc: &mut ZeroCopy,
    stream: &TcpStream,
    ctx: &Ctx,
) -> io::Result<bool> {
    loop {
        let slices = wb.io_slices();
        let offered = if slices.len() <= ctx.iov_max {
            wb.pending_len()
        } else {
            slices[..ctx.iov_max].iter().map(|s| s.len()).sum()
        };
        let sent = zc.send(wb, stream)?;
        ctx.stats.written(sent);
        if unsent(wb) == 0 {
            return Ok(true);
        }
        if sent < offered {
            return Ok(false);
        }
    }
}

/// Bytes queued and not yet sent. (`WriteBuffer::is_empty` is stricter: it also needs every
/// byte released, which is what stealing waits for; sending only cares about this.)
fn unsent(wb: &WriteBuffer) -> usize {
    wb.pending_len()
}
