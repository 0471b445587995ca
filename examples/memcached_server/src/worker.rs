//! One worker thread: an edge-triggered `mio` loop over the connections the acceptor gave it.
//!
//! Per connection the loop keeps a [`ReadBuffer`](sendbuf::ReadBuffer) and a
//! [`WriteBuffer`](sendbuf::WriteBuffer) whose storage comes from this thread's [`LocalPool`].
//! One pass over a connection (`drive`, in `conn.rs`):
//!
//! 1. let the protocol [`Session`] handle every complete request in the read buffer, queueing
//!    headers (formatted into scratch) and values (pinned by reference) in the write buffer;
//! 2. send everything queued with **one** `sendmsg` (`Sender::flush`, in `send.rs`); if the
//!    kernel took only part of it, the socket is full: wait for the writable edge instead of
//!    retrying into an `EAGAIN`;
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
//! buffer and reads again.
//!
//! The rooms: this file runs the loop and opens and closes connections; `conn.rs` holds one
//! connection's state and the pass over it; `send.rs` the ways of sending (copy,
//! `MSG_ZEROCOPY`) and the zero-copy completions; `uring.rs` the io_uring path; `idle.rs` the
//! idle sweep that takes buffers back and the stall check that closes peers that do not read.

mod conn;
mod idle;
mod send;
mod tls;
mod uring;

use std::io;
use std::net::Shutdown;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use sendbuf::{GatherLimits, LocalPool, Pool, PoolLimits};

use crate::config::SendPath;
use crate::handler::Limits;
use crate::protocol::Session;
use crate::stats::{bump, Stats, UringTotals, ZeroCopyTotals};
use crate::store::Store;
use conn::{drive, Conn, Ctx, Input, Outcome, Output, Phase};
use idle::TrimTracker;
use send::Sender;
use tls::TlsPipe;
#[cfg(feature = "io-uring")]
use uring::{UringLoop, URING};

/// The token of a worker's `mio::Waker` (connections use their slot index).
pub const WAKE: Token = Token(usize::MAX);
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
#[derive(Debug, Clone)]
pub struct SendOptions {
    /// Copying `sendmsg` or `MSG_ZEROCOPY`.
    pub path: SendPath,
    /// See `Config::zerocopy_stop_when_copied`.
    pub stop_when_copied: bool,
    /// See `Config::zerocopy_min_window`.
    pub min_window: usize,
    /// See `Config::stall_timeout`.
    pub stall_timeout: Duration,
    /// Every connection speaks TLS with this configuration (copy path only).
    pub tls: Option<Arc<rustls::ServerConfig>>,
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
                #[cfg(feature = "io-uring")]
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
                let input = if event.is_read_closed() {
                    Input::UntilEof
                } else if event.is_readable() || failed {
                    Input::Unread
                } else {
                    Input::Drained // no news
                };
                let writable = event.is_writable() || event.is_write_closed() || failed;
                self.ready(i, input, writable, &mut trim);
            }
            let yielded = std::mem::take(&mut self.ctx.yielded);
            for &i in &yielded {
                self.ready(i, Input::Drained, false, &mut trim);
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
            if let (Some(zc), Some(bufs)) = (conn.sender.zero_copy(), conn.bufs.as_deref_mut()) {
                if bufs.wb.held_len() > 0 {
                    let _ = zc.drain_blocking(&mut bufs.wb, &conn.stream, SHUTDOWN_DRAIN);
                }
                self.zerocopy.add(zc.stats());
            }
            if let Some(tls) = conn.tls.as_deref_mut() {
                tls.shut_down(&conn.stream);
            }
            // Every connection left goes now, draining ones too (`close` counts those only
            // when their bytes complete, in `finish_close`).
            self.stats.conns.closed(conn.stream.as_raw_fd());
            self.stats.connection_closed();
        }
    }

    /// Registers the connections the acceptor handed over.
    fn register_new(&mut self) {
        loop {
            let mut stream = match self.incoming.try_recv() {
                Ok(stream) => stream,
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => return,
            };
            let slot = self.free_slots.pop().unwrap_or_else(|| {
                self.conns.push(None);
                bump(&self.stats.connection_structures);
                self.conns.len() - 1
            });
            // Registered once for both directions, edge-triggered: no epoll_ctl per request.
            // io_uring sends wait for room in the kernel: no writable edges needed (nor the
            // wake-ups they cost).
            let interest = if self.on_uring() {
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
                self.stats.connection_closed(); // the acceptor counted it open
                continue;
            }
            let session = Session::new(
                self.store.clone(),
                self.stats.clone(),
                Limits {
                    max_item_size: self.max_item_size,
                },
            );
            let sender = Sender::new(&self.send, &stream);
            let fd = stream.as_raw_fd();
            let activity = match (stream.peer_addr(), stream.local_addr()) {
                (Ok(peer), Ok(local)) => {
                    let uptime = self.stats.uptime();
                    Some(self.stats.conns.opened(fd, peer, local, uptime))
                }
                _ => None, // already reset by the peer: not listed
            };
            let mut conn = Conn::new(stream, session, sender);
            conn.activity = activity;
            if let Some(config) = &self.send.tls {
                match TlsPipe::new(config.clone(), self.ctx.pool.clone(), self.ctx.read_max) {
                    Ok(pipe) => conn.tls = Some(Box::new(pipe)),
                    Err(e) => {
                        eprintln!("memcached_server: cannot start a TLS session: {e}");
                        self.free_slots.push(slot);
                        if conn.activity.is_some() {
                            self.stats.conns.closed(fd);
                        }
                        self.stats.connection_closed();
                        continue; // dropping the stream closes it
                    }
                }
            }
            self.conns[slot] = Some(conn);
        }
    }

    /// Drives connection `i` after an event that brought `input` news (or none:
    /// [`Input::Drained`]) and maybe room to write.
    fn ready(&mut self, i: usize, input: Input, writable: bool, trim: &mut TrimTracker) {
        let Some(Some(conn)) = self.conns.get_mut(i) else {
            return; // closed earlier in this batch of events
        };
        if conn.phase == Phase::Draining {
            return; // closed; only its completions matter (see `completions`)
        }
        conn.input = conn.input.max(input);
        if writable && conn.output == Output::WaitWritable {
            conn.output = Output::Ready;
        }
        match drive(conn, i, &mut self.ctx) {
            Outcome::Close => self.close(i, trim),
            Outcome::Open => self.watch(i),
        }
    }

    /// Closes connection `i`, or, if the kernel still holds its bytes, puts it on the draining
    /// list until it does not.
    fn close(&mut self, i: usize, trim: &mut TrimTracker) {
        if self.uring_close(i) {
            return; // draining until its send's result
        }
        let Some(Some(conn)) = self.conns.get_mut(i) else {
            return;
        };
        if let (Some(zc), Some(bufs)) = (conn.sender.zero_copy(), conn.bufs.as_deref_mut()) {
            bufs.rb.clear();
            bufs.wb.clear(); // releases pinned values not sent; keeps what the kernel holds
            if bufs.wb.held_len() > 0 {
                let _ = zc.poll_completions(&mut bufs.wb, &conn.stream);
            }
            if bufs.wb.held_len() > 0 {
                // The kernel still reads these bytes: keep the socket (its error queue brings
                // the completions) and the buffers until then. The peer sees the end of stream.
                let _ = conn.stream.shutdown(Shutdown::Write);
                conn.start_draining();
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
            if let Sender::ZeroCopy(zc) = &conn.sender {
                self.zerocopy.add(zc.stats());
            }
            if let Some(mut tls) = conn.tls {
                tls.uncount(&self.ctx);
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
            self.stats.conns.closed(conn.stream.as_raw_fd());
            self.stats.connection_closed();
        }
    }
}
