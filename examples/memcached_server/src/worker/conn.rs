//! One connection: its state, its buffers, and [`drive`], the pass over it after an event.

use std::io::{self, Read};
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Instant;

use mio::net::TcpStream;
use sendbuf::{Pool, ReadBuffer, WriteBuffer};

use super::send::{Flushed, Sender};
use super::{KEEP_ACTIVE, READ_BUDGET};
use crate::protocol::Session;
use crate::stats::Stats;

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    /// Reading requests and answering them.
    Open,
    /// Closes once everything queued is sent (after `quit`, a fatal protocol error, or the
    /// peer's end of stream); reads nothing more.
    Closing,
    /// Closed, but the kernel still holds bytes of its zero-copy sends, or has its io_uring send
    /// in flight: on the worker's draining list, and nothing but that matters any more.
    Draining,
}

/// What the loop knows of the socket's unread bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Input {
    /// The last read found the socket drained: the next readable edge says when there is more.
    Drained,
    /// An edge came, and no read has found the socket drained since.
    Unread,
    /// The peer has shut down its side (`EPOLLRDHUP`): a short read no longer proves the socket
    /// drained, since the end of stream may wait behind the data; read until it shows.
    UntilEof,
}

/// Whether the connection's next send may go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Output {
    /// Nothing holds it back.
    Ready,
    /// A send was partial: the socket is full until the next writable edge.
    WaitWritable,
    /// io_uring path: queued for this turn's submission, or its send is in flight; the send's
    /// result ends it.
    #[cfg(feature = "io-uring")]
    InFlight,
}

/// A connection's buffers, present only while it is active.
pub(super) struct Buffers {
    pub(super) rb: ReadBuffer,
    pub(super) wb: WriteBuffer,
    /// Bytes the next request needs from the start of `rb.data()` (0: unknown). The session is
    /// not called again until that many have arrived.
    pub(super) need: usize,
}

pub(super) struct Conn {
    pub(super) stream: TcpStream,
    pub(super) session: Session,
    /// `None` while idle: the pair went back to the spare list.
    pub(super) bufs: Option<Box<Buffers>>,
    /// How this socket's bytes go out. A zero-copy sender stays with the socket while buffer
    /// pairs come and go: a pair is given back only when nothing is held, so no outstanding
    /// send refers to an old pair's offsets.
    pub(super) sender: Sender,
    pub(super) phase: Phase,
    pub(super) input: Input,
    pub(super) output: Output,
    /// On the worker's idle list.
    pub(super) listed_idle: bool,
    /// Read from since the last idle sweep.
    pub(super) read_since_sweep: bool,
    /// Waiting on the peer to read (see `Worker::watch`): the bytes it had yet to take (ours
    /// and the kernel's, `owed`) when last seen, and when that last changed (the
    /// `stall_timeout` runs from there). Set while on the stalled list.
    pub(super) linger: Option<(usize, Instant)>,
}

impl Conn {
    pub(super) fn new(stream: TcpStream, session: Session, sender: Sender) -> Conn {
        Conn {
            stream,
            session,
            bufs: None,
            sender,
            phase: Phase::Open,
            input: Input::Drained,
            output: Output::Ready,
            listed_idle: false,
            read_since_sweep: false,
            linger: None,
        }
    }

    /// Closed with bytes the kernel still holds: only their end matters from now on.
    pub(super) fn start_draining(&mut self) {
        self.phase = Phase::Draining;
        self.input = Input::Drained;
        self.output = Output::Ready;
        self.listed_idle = false;
        self.read_since_sweep = false;
    }

    /// Whether it waits on its peer to read: it is to close once its output is sent, or it is
    /// not read from until that output drains below the low water mark.
    pub(super) fn waits_on_peer(&self, wb: &WriteBuffer) -> bool {
        self.phase == Phase::Closing || wb.is_backed_up()
    }
}

/// What the pass over a connection decided.
pub(super) enum Outcome {
    Open,
    Close,
}

/// What [`drive`] needs besides the connection.
pub(super) struct Ctx {
    pub(super) pool: Arc<dyn Pool>,
    /// Boxed so a pair moves between a connection and this list as one pointer.
    #[allow(clippy::vec_box)]
    pub(super) spare: Vec<Box<Buffers>>,
    pub(super) idle: Vec<usize>,
    /// Connections that used up their read budget with more to read.
    pub(super) yielded: Vec<usize>,
    /// Connections of this worker holding a buffer pair...
    pub(super) active: usize,
    /// ...and of the whole server (for tests and monitoring; touched only when a connection
    /// takes or gives back its buffers, not per request).
    pub(super) buffered: Arc<AtomicUsize>,
    pub(super) stats: Arc<Stats>,
    pub(super) read_max: usize,
    pub(super) iov_max: usize,
    /// Connections (slots) whose output waits for this turn's io_uring submission.
    #[cfg(feature = "io-uring")]
    pub(super) to_send: Vec<usize>,
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

/// One pass over a connection after an event; see the `worker` module docs.
pub(super) fn drive(conn: &mut Conn, slot: usize, ctx: &mut Ctx) -> Outcome {
    if conn.bufs.is_none() {
        if conn.input == Input::Drained {
            return Outcome::Open; // a writable edge on an idle connection: nothing to send
        }
        conn.bufs = Some(ctx.buffers());
    }
    let bufs = conn.bufs.as_mut().expect("just ensured");
    let mut reads = 0;
    loop {
        // 1. Every complete request already buffered (unless the output is backed up).
        if conn.phase == Phase::Open
            && !bufs.wb.is_backed_up()
            && !bufs.rb.is_empty()
            && bufs.rb.len() >= bufs.need
        {
            let done = conn.session.process(bufs.rb.data(), &mut bufs.wb);
            if bufs.rb.try_consume(done.consumed).is_err() {
                return Outcome::Close; // the session claimed more than it was given
            }
            if done.close {
                conn.phase = Phase::Closing;
                conn.input = Input::Drained;
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
        let waiting = conn.phase == Phase::Open && bufs.wb.is_backed_up() && !bufs.rb.is_empty();
        // 2. Everything queued, in one sendmsg (or queued for this turn's io_uring_enter).
        if unsent(&bufs.wb) > 0 && conn.output == Output::Ready {
            match conn.sender.flush(&mut bufs.wb, &conn.stream, slot, ctx) {
                Ok(Flushed::All) => {}
                Ok(Flushed::Partial) => conn.output = Output::WaitWritable,
                #[cfg(feature = "io-uring")]
                Ok(Flushed::Queued) => conn.output = Output::InFlight,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    conn.output = Output::WaitWritable;
                }
                Err(_) => return Outcome::Close,
            }
        }
        if conn.phase == Phase::Closing {
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
        if bufs.wb.is_backed_up() || (conn.input == Input::Drained && !resume) {
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
            Ok(0) => {
                // The peer's end of stream.
                conn.phase = Phase::Closing;
                conn.input = Input::Drained;
            }
            Ok(n) => {
                conn.read_since_sweep = true;
                ctx.stats.read(n);
                if n < src.offered && conn.input != Input::UntilEof {
                    conn.input = Input::Drained;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                conn.input = Input::Drained;
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
        } else if !conn.listed_idle {
            conn.listed_idle = true;
            ctx.idle.push(slot);
        }
    }
    Outcome::Open
}

/// Bytes queued and not yet sent. (`WriteBuffer::is_empty` is stricter: it also needs every
/// byte released, which is what stealing waits for; sending only cares about this.)
pub(super) fn unsent(wb: &WriteBuffer) -> usize {
    wb.pending_len()
}
