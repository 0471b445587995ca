//! One connection: its state, its buffers, and [`drive`], the pass over it after an event.

use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Instant;

use mio::net::TcpStream;
use sendbuf::{Pool, ReadBuffer, WriteBuffer};

use super::send::{Flushed, Sender};
use super::tls::TlsPipe;
use super::{KEEP_ACTIVE, READ_BUDGET};
use crate::protocol::Session;
use crate::stats::{bump, Activity, ConnTable, Stats};

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
    /// The TLS session of a TLS listener's connection (its buffers are the session's, and
    /// `bufs` stays `None`).
    pub(super) tls: Option<Box<TlsPipe>>,
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
    /// What `stats conns` shows of it (`None`: not listed, its addresses were unknown).
    pub(super) activity: Option<Arc<Activity>>,
}

impl Conn {
    pub(super) fn new(stream: TcpStream, session: Session, sender: Sender) -> Conn {
        Conn {
            stream,
            session,
            bufs: None,
            sender,
            tls: None,
            phase: Phase::Open,
            input: Input::Drained,
            output: Output::Ready,
            listed_idle: false,
            read_since_sweep: false,
            linger: None,
            activity: None,
        }
    }

    /// Closes once what is queued is sent.
    pub(super) fn closing(&mut self) {
        self.phase = Phase::Closing;
        if let Some(activity) = &self.activity {
            activity.closing();
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

    /// If it waits on its peer to read (it is to close once its output is sent, or it is not
    /// read from until that output drains below the low water mark), the bytes of that output
    /// not yet sent; `None` when it does not wait, or holds no buffers.
    pub(super) fn waiting_output(&self) -> Option<usize> {
        let (unsent, backed_up) = match (&self.tls, &self.bufs) {
            (Some(tls), _) => (tls.unsent(), tls.is_backed_up()),
            (None, Some(bufs)) => (unsent(&bufs.wb), bufs.wb.is_backed_up()),
            (None, None) => return None,
        };
        (self.phase == Phase::Closing || backed_up).then_some(unsent)
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
pub(super) struct Offered<'a> {
    pub(super) stream: &'a TcpStream,
    pub(super) offered: usize,
}

impl Read for Offered<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.offered = buf.len();
        (&*self.stream).read(buf)
    }
}

/// Where a [`Pipe::flush`] sends: the connection's sender, its socket and its slot.
pub(super) struct Dest<'a> {
    pub(super) sender: &'a mut Sender,
    pub(super) stream: &'a TcpStream,
    pub(super) slot: usize,
}

/// A connection's buffers as a pass over it sees them: requests in, responses out, and how
/// bytes cross the socket (straight, or through a TLS session, `tls.rs`).
pub(super) trait Pipe {
    /// The requests read so far, the response queue, and the bytes the next request needs from
    /// the start of the requests (0: unknown).
    fn parts(&mut self) -> (&mut ReadBuffer, &mut WriteBuffer, &mut usize);
    /// The response queue is over its high water mark (until it drains to the low one).
    fn is_backed_up(&self) -> bool;
    /// Bytes are still to go to the socket.
    fn has_unsent(&self) -> bool;
    /// One read from the socket; the bytes read from it.
    fn read(&mut self, src: &mut Offered<'_>) -> io::Result<usize>;
    /// Sends what is queued (see [`Sender::flush`]).
    fn flush(&mut self, to: Dest<'_>, ctx: &mut Ctx) -> io::Result<Flushed>;
    /// The connection is to close once its output is sent.
    fn closing(&mut self) {}
    /// Nothing read, queued, or held: the buffers may be given back.
    fn is_idle(&self) -> bool;
}

impl Pipe for Buffers {
    fn parts(&mut self) -> (&mut ReadBuffer, &mut WriteBuffer, &mut usize) {
        (&mut self.rb, &mut self.wb, &mut self.need)
    }

    fn is_backed_up(&self) -> bool {
        self.wb.is_backed_up()
    }

    fn has_unsent(&self) -> bool {
        unsent(&self.wb) > 0
    }

    fn read(&mut self, src: &mut Offered<'_>) -> io::Result<usize> {
        self.rb.read_from(src)
    }

    fn flush(&mut self, to: Dest<'_>, ctx: &mut Ctx) -> io::Result<Flushed> {
        to.sender.flush(&mut self.wb, to.stream, to.slot, ctx)
    }

    fn is_idle(&self) -> bool {
        self.rb.is_empty() && self.wb.is_empty()
    }
}

/// One pass over a connection after an event; see the `worker` module docs.
pub(super) fn drive(conn: &mut Conn, slot: usize, ctx: &mut Ctx) -> Outcome {
    // The pipe is taken out for the pass (one pointer each way) and put back after it.
    if let Some(mut tls) = conn.tls.take() {
        tls.activate(ctx);
        let outcome = pass(&mut *tls, conn, slot, ctx);
        if matches!(outcome, Outcome::Open) && tls.is_idle() && !conn.listed_idle {
            // A TLS session stays with its connection; the sweep takes its storage.
            conn.listed_idle = true;
            ctx.idle.push(slot);
        }
        conn.tls = Some(tls);
        return outcome;
    }
    let mut bufs = match conn.bufs.take() {
        Some(bufs) => bufs,
        // A writable edge on an idle connection: nothing to send.
        None if conn.input == Input::Drained => return Outcome::Open,
        None => ctx.buffers(),
    };
    let outcome = pass(&mut *bufs, conn, slot, ctx);
    if matches!(outcome, Outcome::Open) && bufs.is_idle() {
        if ctx.active > KEEP_ACTIVE {
            ctx.recycle(bufs);
            return outcome;
        }
        if !conn.listed_idle {
            conn.listed_idle = true;
            ctx.idle.push(slot);
        }
    }
    conn.bufs = Some(bufs);
    outcome
}

/// The pass itself, over `pipe` (taken out of `conn`).
fn pass<P: Pipe>(pipe: &mut P, conn: &mut Conn, slot: usize, ctx: &mut Ctx) -> Outcome {
    let mut reads = 0;
    loop {
        // 1. Every complete request already buffered (unless the output is backed up).
        let (rb, wb, need) = pipe.parts();
        if conn.phase == Phase::Open && !wb.is_backed_up() && !rb.is_empty() && rb.len() >= *need {
            ConnTable::serving(Some(conn.stream.as_raw_fd()));
            let done = conn.session.process(rb.data(), wb);
            ConnTable::serving(None);
            if rb.try_consume(done.consumed).is_err() {
                return Outcome::Close; // the session claimed more than it was given
            }
            if done.close {
                conn.closing();
                conn.input = Input::Drained;
                rb.clear();
                pipe.closing();
            } else {
                *need = done.need.min(ctx.read_max);
                let len = rb.len();
                if *need > len && rb.reserve(*need - len).is_err() {
                    return Outcome::Close;
                }
            }
        }
        // Requests left in the read buffer because the output is over its high water mark.
        let (rb, wb, _) = pipe.parts();
        let waiting = conn.phase == Phase::Open && wb.is_backed_up() && !rb.is_empty();
        // 2. Everything queued, in one sendmsg (or queued for this turn's io_uring_enter).
        if pipe.has_unsent() && conn.output == Output::Ready {
            let to = Dest {
                sender: &mut conn.sender,
                stream: &conn.stream,
                slot,
            };
            match pipe.flush(to, ctx) {
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
            return if pipe.has_unsent() {
                Outcome::Open
            } else {
                Outcome::Close
            };
        }
        // 3. Read more, unless backed up (the writable edge resumes) or drained. If this pass's
        // send took the output below its low mark while requests wait in the read buffer, go
        // back to 1 for them: that send may have left the socket with room, and then no
        // writable edge (nor any other event, once the socket is drained) would ever resume
        // them.
        let backed_up = pipe.is_backed_up();
        let resume = waiting && !backed_up;
        if backed_up || (conn.input == Input::Drained && !resume) {
            break;
        }
        if reads == READ_BUDGET {
            bump(&ctx.stats.local().conn_yields);
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
        match pipe.read(&mut src) {
            Ok(0) => {
                // The peer's end of stream.
                conn.closing();
                conn.input = Input::Drained;
                pipe.closing();
            }
            Ok(n) => {
                conn.read_since_sweep = true;
                ctx.stats.read(n);
                if let Some(activity) = &conn.activity {
                    activity.read_at(ctx.stats.uptime());
                }
                if n < src.offered && conn.input != Input::UntilEof {
                    conn.input = Input::Drained;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                conn.input = Input::Drained;
                break;
            }
            // Reset, bad TLS, or a full buffer the session cannot make progress on.
            Err(_) => return Outcome::Close,
        }
    }
    Outcome::Open
}

/// Bytes queued and not yet sent. (`WriteBuffer::is_empty` is stricter: it also needs every
/// byte released, which is what stealing waits for; sending only cares about this.)
pub(super) fn unsent(wb: &WriteBuffer) -> usize {
    wb.pending_len()
}
