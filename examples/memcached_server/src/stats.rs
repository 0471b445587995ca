//! Server-wide counters for `stats` (ASCII) and `stat` (binary), shared by every worker as
//! `Arc<Stats>`. The loop bumps the connection and byte counters; the protocols bump the command
//! counters; item counts come from the [`Store`]. What the send machinery did (zero-copy and
//! io_uring counts) is summed here too, when connections close and workers exit.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use sendbuf::ZeroCopyStats;

use crate::store::{Mode, Store, StoreResult};

/// The version both protocols report.
pub const VERSION: &str = "1.6.18-sendbuf";

/// Per-thread slots of [`Counters`]; threads beyond this share slots (still correct, only
/// contended).
const SLOTS: usize = 32;

/// The command and byte counters. Each thread bumps its own copy (see [`Stats::local`]), so two
/// workers never write the same cache line per request; a report sums the copies.
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct Counters {
    /// Retrieval requests (one per key).
    pub cmd_get: AtomicU64,
    /// Storage requests.
    pub cmd_set: AtomicU64,
    /// Flush requests.
    pub cmd_flush: AtomicU64,
    /// Touch requests.
    pub cmd_touch: AtomicU64,
    /// Keys found.
    pub get_hits: AtomicU64,
    /// Keys not found.
    pub get_misses: AtomicU64,
    /// `delete` of a missing key.
    pub delete_misses: AtomicU64,
    /// `delete` of a present key.
    pub delete_hits: AtomicU64,
    /// `incr` of a missing key.
    pub incr_misses: AtomicU64,
    /// `incr` of a present key.
    pub incr_hits: AtomicU64,
    /// `decr` of a missing key.
    pub decr_misses: AtomicU64,
    /// `decr` of a present key.
    pub decr_hits: AtomicU64,
    /// `cas` of a missing key.
    pub cas_misses: AtomicU64,
    /// `cas` that stored.
    pub cas_hits: AtomicU64,
    /// `cas` refused because the item changed.
    pub cas_badval: AtomicU64,
    /// `touch` of a present key.
    pub touch_hits: AtomicU64,
    /// `touch` of a missing key.
    pub touch_misses: AtomicU64,
    /// Bytes read from the network.
    pub bytes_read: AtomicU64,
    /// Bytes written to the network.
    pub bytes_written: AtomicU64,
    /// Connections closed with responses unsent because the peer took none of them for
    /// `Config::stall_timeout` while the server waited on it to read.
    pub closed_stalled: AtomicU64,
}

impl Counters {
    /// Counts the outcome of a store command in `mode`: only a [`Mode::Cas`] one counts, as a
    /// CAS hit, mismatch or miss.
    pub fn count_cas(&self, mode: Mode, result: StoreResult) {
        if mode != Mode::Cas {
            return;
        }
        match result {
            StoreResult::Stored(_) => bump(&self.cas_hits),
            StoreResult::Exists => bump(&self.cas_badval),
            StoreResult::NotFound => bump(&self.cas_misses),
            _ => {}
        }
    }
}

/// Server-wide statistics, shared by every worker as `Arc<Stats>`. Every counter is a relaxed
/// atomic: the numbers are statistics, not synchronisation.
#[derive(Debug)]
pub struct Stats {
    started: Instant,
    /// Worker threads serving connections.
    pub threads: AtomicU64,
    /// Connections open now.
    pub curr_connections: AtomicU64,
    /// Connections accepted since start.
    pub total_connections: AtomicU64,
    slots: Box<[Counters]>,
}

impl Default for Stats {
    fn default() -> Self {
        Stats::new(1)
    }
}

/// Adds one to a counter.
#[inline]
pub fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// This thread's slot number, assigned on first use.
fn slot() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SLOT: Cell<usize> = const { Cell::new(usize::MAX) };
    }
    SLOT.with(|s| {
        if s.get() == usize::MAX {
            s.set(NEXT.fetch_add(1, Ordering::Relaxed) % SLOTS);
        }
        s.get()
    })
}

impl Stats {
    /// Counters at zero for a server with `threads` workers; uptime counts from now.
    pub fn new(threads: usize) -> Stats {
        Stats {
            started: Instant::now(),
            threads: AtomicU64::new(threads as u64),
            curr_connections: AtomicU64::new(0),
            total_connections: AtomicU64::new(0),
            slots: (0..SLOTS).map(|_| Counters::default()).collect(),
        }
    }

    /// The calling thread's counters.
    #[inline]
    pub fn local(&self) -> &Counters {
        &self.slots[slot()]
    }

    /// The sum of one counter over all threads.
    pub fn sum(&self, counter: impl Fn(&Counters) -> &AtomicU64) -> u64 {
        self.slots
            .iter()
            .map(|c| counter(c).load(Ordering::Relaxed))
            .sum()
    }

    /// A connection was accepted.
    pub fn connection_opened(&self) {
        bump(&self.curr_connections);
        bump(&self.total_connections);
    }

    /// A connection was closed.
    pub fn connection_closed(&self) {
        self.curr_connections.fetch_sub(1, Ordering::Relaxed);
    }

    /// `n` bytes were read from a connection.
    pub fn read(&self, n: usize) {
        self.local()
            .bytes_read
            .fetch_add(n as u64, Ordering::Relaxed);
    }

    /// `n` bytes were written to a connection.
    pub fn written(&self, n: usize) {
        self.local()
            .bytes_written
            .fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Seconds since the counters were created.
    pub fn uptime(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    /// The general statistics as (name, value) pairs, in memcached's order, for `stats` and
    /// binary `stat` without a key.
    pub fn report(&self, store: &Store) -> Vec<(&'static str, String)> {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed).to_string();
        let sum = |f: fn(&Counters) -> &AtomicU64| self.sum(f).to_string();
        let unix = crate::store::unix_now();
        vec![
            ("pid", std::process::id().to_string()),
            ("uptime", self.uptime().to_string()),
            ("time", unix.to_string()),
            ("version", VERSION.to_string()),
            ("pointer_size", (usize::BITS).to_string()),
            ("curr_connections", get(&self.curr_connections)),
            ("total_connections", get(&self.total_connections)),
            ("cmd_get", sum(|c| &c.cmd_get)),
            ("cmd_set", sum(|c| &c.cmd_set)),
            ("cmd_flush", sum(|c| &c.cmd_flush)),
            ("cmd_touch", sum(|c| &c.cmd_touch)),
            ("get_hits", sum(|c| &c.get_hits)),
            ("get_misses", sum(|c| &c.get_misses)),
            ("delete_misses", sum(|c| &c.delete_misses)),
            ("delete_hits", sum(|c| &c.delete_hits)),
            ("incr_misses", sum(|c| &c.incr_misses)),
            ("incr_hits", sum(|c| &c.incr_hits)),
            ("decr_misses", sum(|c| &c.decr_misses)),
            ("decr_hits", sum(|c| &c.decr_hits)),
            ("cas_misses", sum(|c| &c.cas_misses)),
            ("cas_hits", sum(|c| &c.cas_hits)),
            ("cas_badval", sum(|c| &c.cas_badval)),
            ("touch_hits", sum(|c| &c.touch_hits)),
            ("touch_misses", sum(|c| &c.touch_misses)),
            ("bytes_read", sum(|c| &c.bytes_read)),
            ("bytes_written", sum(|c| &c.bytes_written)),
            ("closed_stalled", sum(|c| &c.closed_stalled)),
            ("limit_maxbytes", store.memory_limit().to_string()),
            ("threads", get(&self.threads)),
            ("bytes", store.bytes().to_string()),
            ("curr_items", store.len().to_string()),
            ("total_items", store.total_items().to_string()),
            (
                "evictions",
                store.counters.evictions.load(Ordering::Relaxed).to_string(),
            ),
        ]
    }
    /// The settings group (`stats settings`).
    pub fn settings(&self, store: &Store) -> Vec<(&'static str, String)> {
        vec![
            ("maxbytes", store.memory_limit().to_string()),
            ("item_size_max", store.max_item_size().to_string()),
            (
                "num_threads",
                self.threads.load(Ordering::Relaxed).to_string(),
            ),
            ("evictions", "on".to_string()),
            ("cas_enabled", "yes".to_string()),
        ]
    }
}

/// What the workers' send machinery did, summed over the server (see
/// [`ServerHandle::shutdown`](crate::server::ServerHandle::shutdown)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SendTotals {
    /// The connections' zero-copy senders (all zero unless the send path is zerocopy).
    pub zero_copy: ZeroCopyStats,
    /// The workers' io_uring senders (all zero unless the send path is uring).
    pub uring: UringCounts,
}

/// What the connections' [`ZeroCopy`](sendbuf::ZeroCopy) senders did, summed over the server; a connection adds
/// its counts when it closes (not per request).
#[derive(Debug, Default)]
pub struct ZeroCopyTotals {
    zero_copy_sends: AtomicU64,
    copying_sends: AtomicU64,
    enobufs: AtomicU64,
    completions: AtomicU64,
    copied: AtomicU64,
    ignored: AtomicU64,
}

impl ZeroCopyTotals {
    pub(crate) fn add(&self, s: ZeroCopyStats) {
        let r = Ordering::Relaxed;
        self.zero_copy_sends.fetch_add(s.zero_copy_sends, r);
        self.copying_sends.fetch_add(s.copying_sends, r);
        self.enobufs.fetch_add(s.enobufs, r);
        self.completions.fetch_add(s.completions, r);
        self.copied.fetch_add(s.copied, r);
        self.ignored.fetch_add(s.ignored, r);
    }

    /// The sums of every connection closed so far.
    pub fn snapshot(&self) -> ZeroCopyStats {
        let r = Ordering::Relaxed;
        ZeroCopyStats {
            zero_copy_sends: self.zero_copy_sends.load(r),
            copying_sends: self.copying_sends.load(r),
            enobufs: self.enobufs.load(r),
            completions: self.completions.load(r),
            copied: self.copied.load(r),
            ignored: self.ignored.load(r),
        }
    }
}

/// What the workers' io_uring senders (`sendbuf::UringSender`) did, summed over the server; a worker adds its
/// counts when it exits.
#[derive(Debug, Default)]
pub struct UringTotals {
    enters: AtomicU64,
    sends: AtomicU64,
    results: AtomicU64,
    cancels: AtomicU64,
    ignored: AtomicU64,
    leaked_buffers: AtomicU64,
}

/// A snapshot of [`UringTotals`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct UringCounts {
    /// `io_uring_enter` calls.
    pub enters: u64,
    /// Sends submitted.
    pub sends: u64,
    /// Send results reaped.
    pub results: u64,
    /// Cancellations of sends in flight (closing or shutting down with a send in flight).
    pub cancels: u64,
    /// Completions matching no send.
    pub ignored: u64,
    /// Buffer pairs leaked because the kernel did not give a send back in time.
    pub leaked_buffers: u64,
}

impl UringTotals {
    #[cfg(feature = "io-uring")]
    pub(crate) fn add(&self, s: sendbuf::UringStats, leaked_buffers: u64) {
        let r = Ordering::Relaxed;
        self.enters.fetch_add(s.enters, r);
        self.sends.fetch_add(s.sends, r);
        self.results.fetch_add(s.results, r);
        self.cancels.fetch_add(s.cancels, r);
        self.ignored.fetch_add(s.ignored, r);
        self.leaked_buffers.fetch_add(leaked_buffers, r);
    }

    /// The sums of every worker exited so far.
    pub fn snapshot(&self) -> UringCounts {
        let r = Ordering::Relaxed;
        UringCounts {
            enters: self.enters.load(r),
            sends: self.sends.load(r),
            results: self.results.load(r),
            cancels: self.cancels.load(r),
            ignored: self.ignored.load(r),
            leaked_buffers: self.leaked_buffers.load(r),
        }
    }
}
