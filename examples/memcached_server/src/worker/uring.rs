//! The io_uring send path: one `UringSender` per worker, entered once per event-loop turn.
//!
//! With `SendPath::Uring` (feature `io-uring`) step 2 of `drive` only queues the connection: after
//! handling every event of a turn, the worker submits one send per queued connection to its
//! `sendbuf::UringSender` and enters the kernel **once** for all of them; most complete
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
//! `DRAIN_TIMEOUT`, or `SHUTDOWN_DRAIN` when shutting down, never freed); the slot is not
//! reused before.

use super::{TrimTracker, Worker};
// Without the feature, only the stubs at the end of the file are compiled.
#[cfg(feature = "io-uring")]
use {
    super::conn::{drive, Conn, Outcome, Output, Phase},
    super::{DRAIN_TIMEOUT, SHUTDOWN_DRAIN},
    mio::{Interest, Poll, Token},
    sendbuf::{UringCompletion, UringEvent, UringSender},
    std::io,
    std::os::fd::{AsFd, AsRawFd},
    std::sync::atomic::Ordering,
    std::time::{Duration, Instant},
};

/// The token of the eventfd the worker's io_uring signals for completions posted later.
#[cfg(feature = "io-uring")]
pub(super) const URING: Token = Token(usize::MAX - 1);
/// Submission queue slots of a worker's io_uring (more sends than that enter it in several
/// calls).
#[cfg(feature = "io-uring")]
const URING_ENTRIES: u32 = 512;

/// A worker's io_uring: one sender for all its connections (token: the slot index).
#[cfg(feature = "io-uring")]
pub(super) struct UringLoop {
    sender: UringSender,
    /// Registered with the ring and with the `Poll` (token [`URING`]): the kernel signals it
    /// for completions posted outside the worker's own `io_uring_enter`. Never read: epoll is
    /// edge-triggered, and each signal is a new edge.
    _eventfd: std::os::fd::OwnedFd,
    /// Sends or cancels queued since the last enter.
    unsubmitted: bool,
    /// Completions reaped, kept for its capacity.
    done: Vec<UringCompletion>,
    /// Buffer pairs leaked (see `DRAIN_TIMEOUT`).
    leaked: u64,
}

#[cfg(feature = "io-uring")]
impl UringLoop {
    pub(super) fn new(poll: &Poll) -> io::Result<UringLoop> {
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

#[cfg(feature = "io-uring")]
impl Worker {
    /// Whether this worker sends through io_uring.
    pub(super) fn on_uring(&self) -> bool {
        self.uring.is_some()
    }

    /// Sends or cancels wait for an `io_uring_enter`: poll without blocking.
    pub(super) fn uring_pending(&self) -> bool {
        !self.ctx.to_send.is_empty() || self.uring.as_ref().is_some_and(|u| u.unsubmitted)
    }

    /// Sends are in flight: poll with a timeout, so that a completion whose eventfd signal was
    /// missed (see `UringSender::register_eventfd`) is reaped by the next turn anyway.
    pub(super) fn uring_in_flight(&self) -> bool {
        self.uring
            .as_ref()
            .is_some_and(|u| u.sender.in_flight() > 0)
    }

    /// One turn's sends: submits every queued connection's pending bytes, enters the kernel
    /// once, and applies every completion ready (those of this enter and any posted since the
    /// last turn).
    pub(super) fn uring_round(&mut self, trim: &mut TrimTracker) {
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
            if conn.output != Output::InFlight || u.sender.outstanding(i as u64) > 0 {
                continue;
            }
            let Some(bufs) = conn.bufs.as_deref() else {
                conn.output = Output::Ready;
                continue;
            };
            match u
                .sender
                .submit(i as u64, &bufs.wb, conn.stream.as_fd(), false)
            {
                Ok(0) => conn.output = Output::Ready,
                Ok(_) => u.unsubmitted = true,
                Err(e) => {
                    eprintln!("memcached_server: io_uring submit failed: {e}");
                    conn.output = Output::Ready;
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
        if conn.phase == Phase::Draining {
            if u.sender.outstanding(i as u64) == 0 {
                self.draining.retain(|&(j, _)| j != i);
                self.finish_close(i, trim);
            }
            return;
        }
        conn.output = Output::Ready;
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
                conn.output = Output::InFlight;
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
    pub(super) fn uring_close(&mut self, i: usize) -> bool {
        let Some(u) = self.uring.as_mut() else {
            return false;
        };
        let Some(Some(conn)) = self.conns.get_mut(i) else {
            return false;
        };
        if conn.phase == Phase::Draining {
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
        conn.start_draining();
        self.draining.push((i, Instant::now() + DRAIN_TIMEOUT));
        true
    }

    /// A closed connection's send did not come back within [`DRAIN_TIMEOUT`]: close its socket
    /// but leak its buffers (the kernel may still read them) and never reuse its slot (its
    /// token may still complete).
    pub(super) fn uring_give_up(&mut self, i: usize, trim: &mut TrimTracker) {
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
    pub(super) fn uring_shutdown(&mut self, trim: &mut TrimTracker) {
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
    pub(super) fn on_uring(&self) -> bool {
        false
    }

    pub(super) fn uring_pending(&self) -> bool {
        false
    }

    pub(super) fn uring_in_flight(&self) -> bool {
        false
    }

    pub(super) fn uring_round(&mut self, _trim: &mut TrimTracker) {}

    pub(super) fn uring_close(&mut self, _i: usize) -> bool {
        false
    }

    pub(super) fn uring_give_up(&mut self, _i: usize, _trim: &mut TrimTracker) {}

    pub(super) fn uring_shutdown(&mut self, _trim: &mut TrimTracker) {
        let _ = &self.uring_totals;
    }
}
