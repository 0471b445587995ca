//! A TLS listener's connection: its [`TlsSession`] as the pipe a pass reads and sends through.
//!
//! The session owns the connection's buffers (decrypted requests, the plaintext response
//! queue, the records and the TLS bytes received), all taken from the worker's pool. A pass
//! works on them as on a plaintext connection's pair: requests are parsed from the decrypted
//! bytes, responses formatted and pinned into the plaintext queue, and a send encrypts and
//! sends the records with one `sendmsg`. Every complete record a read brings is decrypted by
//! that read, so no request waits in the TLS layer for another readable edge. The session stays
//! with its connection for life; when idle, the sweep gives its storage back
//! ([`Stealable`]), as a plaintext connection's pair.

use std::io;
use std::os::fd::AsFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use mio::net::TcpStream;
use sendbuf::{Pool, ReadBuffer, Stealable, TlsSession, Watermarks, WriteBuffer};

use super::conn::{Ctx, Dest, Offered, Pipe};
use super::send::Flushed;
use super::{HIGH_WATER, LOW_WATER};

/// A connection's TLS session and what the pass keeps beside it.
pub(crate) struct TlsPipe {
    session: TlsSession,
    /// As `Buffers::need`.
    need: usize,
    /// Counted in the server's buffered connections: driven since its last sweep.
    counted: bool,
}

impl TlsPipe {
    /// The session of a connection just accepted.
    pub(super) fn new(
        config: Arc<rustls::ServerConfig>,
        pool: Arc<dyn Pool>,
        read_max: usize,
    ) -> Result<TlsPipe, rustls::Error> {
        let mut session = TlsSession::new(config)?.with_pool(pool);
        session.set_max_read_len(read_max);
        session.set_watermarks(Some(Watermarks::new(LOW_WATER, HIGH_WATER)));
        Ok(TlsPipe {
            session,
            need: 0,
            counted: false,
        })
    }

    /// Before a pass: counts the session among the server's connections holding buffers.
    pub(super) fn activate(&mut self, ctx: &Ctx) {
        if !self.counted {
            self.counted = true;
            ctx.buffered.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Gives the session's storage back if it holds nothing (the idle sweep); it then stops
    /// counting among the connections holding buffers.
    pub(super) fn give_back(&mut self, ctx: &Ctx) {
        if self.session.steal().is_ok() {
            self.need = 0;
            self.uncount(ctx);
        }
    }

    /// Stops counting among the connections holding buffers (given back, or closing).
    pub(super) fn uncount(&mut self, ctx: &Ctx) {
        if self.counted {
            self.counted = false;
            ctx.buffered.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// The server is shutting down: a `close_notify` after what is queued, and one send
    /// (the socket may be full; the connection closes either way).
    pub(super) fn shut_down(&mut self, stream: &TcpStream) {
        self.session.queue_close_notify();
        let _ = self.session.send_to(stream.as_fd());
    }

    /// Bytes the peer has yet to take from us: plaintext and records.
    pub(super) fn unsent(&self) -> usize {
        self.session.pending_len()
    }
}

impl Pipe for TlsPipe {
    fn parts(&mut self) -> (&mut ReadBuffer, &mut WriteBuffer, &mut usize) {
        let (rb, wb) = self.session.buffers();
        (rb, wb, &mut self.need)
    }

    fn is_backed_up(&self) -> bool {
        self.session.is_backed_up()
    }

    fn has_unsent(&self) -> bool {
        self.session.has_pending()
    }

    fn read(&mut self, src: &mut Offered<'_>) -> io::Result<usize> {
        let read = self.session.read_tls_from(src);
        if let Err(e) = &read {
            if e.kind() == io::ErrorKind::InvalidData {
                // The peer broke the protocol: tell it why (rustls's alert), then close.
                let _ = self.session.send_to(src.stream.as_fd());
            }
        }
        read
    }

    fn flush(&mut self, to: Dest<'_>, ctx: &mut Ctx) -> io::Result<Flushed> {
        let sent = self.session.send_to(to.stream.as_fd())?;
        ctx.stats.written(sent);
        // Records left unsent: the socket took less than offered. (Plaintext alone may wait
        // for the handshake to finish; a read brings that, not a writable edge.)
        Ok(if self.session.unsent_tls_len() > 0 {
            Flushed::Partial
        } else {
            Flushed::All
        })
    }

    fn closing(&mut self) {
        self.session.queue_close_notify();
    }

    fn is_idle(&self) -> bool {
        self.session.is_empty()
    }
}
