//! How a connection's bytes reach the kernel: [`Sender`], one variant per way of sending, and
//! the zero-copy completions that end what the kernel holds.
//!
//! With [`SendPath::ZeroCopy`] each connection has a [`ZeroCopy`] (`SO_ZEROCOPY` set on its
//! socket) and sends through it: large sends go out with `MSG_ZEROCOPY` and their bytes stay
//! *held* (pinned values alive, scratch not reused) until the kernel's completion, which the
//! loop reads from the socket's error queue when epoll reports an error condition (mio's
//! `is_error()`). Held bytes count towards the water marks, and a connection is idle (its
//! buffers stealable) only when [`WriteBuffer::is_empty`]: nothing pending and nothing held. A
//! connection closed while the kernel still holds bytes keeps its socket and buffers on a
//! draining list until the completions arrive ([`DRAIN_TIMEOUT`] at most; then the held
//! memory is leaked, never freed). The copy path pays one branch per send for all this. A
//! peer whose receive window is tiny when accepted gets copying sends even on this path
//! ([`DEFAULT_ZEROCOPY_MIN_WINDOW`] says why).

use std::io;
use std::os::fd::AsFd;
use std::time::Instant;

use mio::net::TcpStream;
use sendbuf::{WriteBuffer, ZeroCopy};

use super::conn::{unsent, Ctx, Phase};
use super::{SendOptions, TrimTracker, Worker, DRAIN_TIMEOUT};
use crate::config::SendPath;
#[cfg(doc)]
use crate::config::DEFAULT_ZEROCOPY_MIN_WINDOW;
use crate::sys;

/// How one connection sends.
pub(super) enum Sender {
    /// Copying `sendmsg`: a pinned value is released as soon as its last byte is sent.
    Copy,
    /// `MSG_ZEROCOPY` through the socket's own [`ZeroCopy`] (boxed: only this path has one).
    ZeroCopy(Box<ZeroCopy>),
    /// io_uring: the worker's one sender submits the sends of every connection queued in a
    /// turn with one `io_uring_enter` (see `uring.rs`).
    #[cfg(feature = "io-uring")]
    Uring,
}

/// What [`Sender::flush`] did.
pub(super) enum Flushed {
    /// The kernel took everything queued.
    All,
    /// The kernel took less than offered: the socket is full until its next writable edge.
    Partial,
    /// Queued for this turn's io_uring submission.
    #[cfg(feature = "io-uring")]
    Queued,
}

impl Sender {
    /// The sender for a connection just accepted on `stream`.
    pub(super) fn new(send: &SendOptions, stream: &TcpStream) -> Sender {
        match send.path {
            SendPath::Copy => Sender::Copy,
            #[cfg(feature = "io-uring")]
            SendPath::Uring => Sender::Uring,
            SendPath::ZeroCopy => {
                let mut zc = ZeroCopy::new();
                zc.set_stop_when_copied(send.stop_when_copied);
                let window = sys::peer_window(stream.as_fd());
                if window.is_some_and(|w| w < send.min_window) {
                    // Not enabled: every send through it copies (DEFAULT_ZEROCOPY_MIN_WINDOW).
                } else if let Err(e) = zc.enable(stream) {
                    // If SO_ZEROCOPY is refused, the ZeroCopy simply makes copying sends.
                    eprintln!("memcached_server: SO_ZEROCOPY refused ({e}); copying");
                }
                Sender::ZeroCopy(Box::new(zc))
            }
        }
    }

    /// The zero-copy sender, on that path.
    pub(super) fn zero_copy(&mut self) -> Option<&mut ZeroCopy> {
        match self {
            Sender::ZeroCopy(zc) => Some(zc),
            _ => None,
        }
    }

    /// Sends what `wb` has queued: one `sendmsg`, or more only when the queue holds more iovecs
    /// than one call takes. On the io_uring path, queues connection `slot` for this turn's
    /// submission instead.
    #[cfg_attr(not(feature = "io-uring"), allow(unused_variables))]
    pub(super) fn flush(
        &mut self,
        wb: &mut WriteBuffer,
        stream: &TcpStream,
        slot: usize,
        ctx: &mut Ctx,
    ) -> io::Result<Flushed> {
        let mut zc = match self {
            Sender::Copy => None,
            Sender::ZeroCopy(zc) => Some(zc),
            #[cfg(feature = "io-uring")]
            Sender::Uring => {
                // Sent with every other queued connection's output in this turn's one
                // io_uring_enter (`Worker::uring_round`).
                ctx.to_send.push(slot);
                return Ok(Flushed::Queued);
            }
        };
        loop {
            let slices = wb.io_slices();
            let offered = if slices.len() <= ctx.iov_max {
                wb.pending_len()
            } else {
                slices[..ctx.iov_max].iter().map(|s| s.len()).sum()
            };
            let sent = match zc.as_deref_mut() {
                None => wb.send_to(stream)?,
                Some(zc) => zc.send(wb, stream)?,
            };
            ctx.stats.written(sent);
            if unsent(wb) == 0 {
                return Ok(Flushed::All);
            }
            if sent < offered {
                return Ok(Flushed::Partial);
            }
        }
    }
}

impl Worker {
    /// Reads the completions of connection `i` after an error event. `Some(true)`: the event
    /// brought completions (or other error-queue messages); `Some(false)`: none, so it reports
    /// a real error; `None`: the connection is gone or draining (nothing more to do).
    pub(super) fn completions(&mut self, i: usize, trim: &mut TrimTracker) -> Option<bool> {
        let conn = self.conns.get_mut(i)?.as_mut()?;
        let (Some(zc), Some(bufs)) = (conn.sender.zero_copy(), conn.bufs.as_deref_mut()) else {
            return Some(false); // no buffers, so nothing held: a real error
        };
        let before = zc.stats();
        let result = zc.poll_completions(&mut bufs.wb, &conn.stream);
        let after = zc.stats();
        if conn.phase == Phase::Draining {
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
    pub(super) fn check_draining(&mut self, trim: &mut TrimTracker) {
        let now = Instant::now();
        let mut draining = std::mem::take(&mut self.draining);
        let on_uring = self.on_uring();
        draining.retain(|&(i, deadline)| {
            if on_uring {
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
            let (Some(zc), Some(bufs)) = (conn.sender.zero_copy(), conn.bufs.as_deref_mut()) else {
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
}
