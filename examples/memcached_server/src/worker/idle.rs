//! Connections that wait: idle ones give their buffers back at the sweep, and peers that stop
//! reading their responses are closed after `stall_timeout`.
//!
//! Connections idle (both buffers empty, nothing read) for a whole [`SWEEP_INTERVAL`] give
//! their storage back through [`Stealable`] at the next sweep and hand their (now empty)
//! buffer pair to a per-worker spare list, so an idle connection holds only its socket, its
//! protocol session and a few words; when more than [`KEEP_ACTIVE`](super::KEEP_ACTIVE) connections of a worker
//! hold buffers, one gives them back as soon as it goes idle. Freed memory is returned to the
//! kernel with `malloc_trim` after a sweep that freed much (glibc keeps freed heap memory).
//!
//! A connection over its high water mark is not read from, and one that is to close once its
//! output is sent has nothing more to read: both wait on their peer. If the peer takes none of
//! that output (counting the kernel's send queue) for `Config::stall_timeout`, the connection
//! is closed (stat `closed_stalled`).

use std::os::fd::AsFd;
use std::sync::atomic::Ordering;
use std::time::Instant;

use mio::net::TcpStream;
use sendbuf::{Pool, ReadBuffer, Stealable, Watermarks, WriteBuffer};

use super::conn::{Buffers, Ctx, Output, Phase};
use super::{
    Worker, HIGH_WATER, LOW_WATER, READ_CAPACITY, SCRATCH_CHUNK, SPARE_PAIRS, SWEEP_INTERVAL,
};
use crate::stats::bump;
use crate::sys;

impl Worker {
    /// After a pass over connection `i` that left it open: if it waits on its peer to read
    /// (closing once its output is sent, or not read from until that output drains below the
    /// low water mark), puts it on the stalled list, from where [`check_stalled`] closes it if
    /// the peer takes none of that output for `stall_timeout`.
    ///
    /// [`check_stalled`]: Self::check_stalled
    pub(super) fn watch(&mut self, i: usize) {
        let Some(Some(conn)) = self.conns.get_mut(i) else {
            return;
        };
        if conn.linger.is_some() {
            return;
        }
        if let Some(unsent) = conn.waiting_output() {
            conn.linger = Some((owed(unsent, &conn.stream), Instant::now()));
            self.stalled.push(i);
        }
    }

    /// Closes the connections on the stalled list whose peers took none of their output for
    /// `stall_timeout`; drops from the list those that closed or no longer wait.
    pub(super) fn check_stalled(&mut self, trim: &mut TrimTracker) {
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
            if conn.phase == Phase::Draining {
                return false; // closed; the draining list has it
            }
            let Some(unsent) = conn.waiting_output().filter(|&unsent| unsent > 0) else {
                conn.linger = None; // sent, or drained below the low water mark
                return false;
            };
            let left = owed(unsent, &conn.stream);
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

    /// Takes the buffers of every listed connection that is still idle.
    pub(super) fn sweep(&mut self, trim: &mut TrimTracker) {
        let mut idle = std::mem::take(&mut self.ctx.idle);
        let (conns, ctx) = (&mut self.conns, &mut self.ctx);
        idle.retain(|&i| {
            let Some(Some(conn)) = conns.get_mut(i) else {
                return false; // closed since
            };
            if !conn.listed_idle {
                return false; // the slot's connection was replaced
            }
            if conn.read_since_sweep {
                // Read from since the last sweep: busy at depth 1 rather than idle. Look again
                // at the next sweep instead of making it take storage again right away.
                conn.read_since_sweep = false;
                return true;
            }
            conn.listed_idle = false;
            let quiet = conn.phase == Phase::Open && conn.output == Output::Ready;
            if let (true, Some(bufs)) = (quiet, conn.bufs.as_ref()) {
                if bufs.rb.is_empty() && bufs.wb.is_empty() {
                    let bufs = conn.bufs.take().expect("checked above");
                    ctx.recycle(bufs);
                }
            }
            if let (true, Some(tls)) = (quiet, conn.tls.as_deref_mut()) {
                tls.give_back(ctx); // refused (and kept) unless the session holds nothing
            }
            false
        });
        self.ctx.idle = idle;
        trim.maybe_trim(&*self.ctx.pool);
    }
}

impl Ctx {
    /// An empty buffer pair for a connection that becomes active.
    pub(super) fn buffers(&mut self) -> Box<Buffers> {
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
    pub(super) fn recycle(&mut self, mut bufs: Box<Buffers>) {
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
pub(super) struct TrimTracker {
    /// Connections closed since the last trim.
    pub(super) closed: u64,
    /// The pool's count of freed buffers at the last trim.
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

/// What the peer has yet to take: our unsent bytes and the kernel's (a peer that reads drains
/// the kernel's first, and ours only move when that has room).
fn owed(unsent: usize, stream: &TcpStream) -> usize {
    unsent + sys::kernel_unsent(stream.as_fd())
}
