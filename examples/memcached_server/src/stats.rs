//! Server-wide counters for `stats` (ASCII) and `stat` (binary), shared by every worker as
//! `Arc<Stats>`. The loop bumps the connection and byte counters; the protocols bump the command
//! counters; item counts come from the [`Store`]. What the send machinery did (zero-copy and
//! io_uring counts) is summed here too, when connections close and workers exit.
//!
//! The groups of `stats <group>` are here too, in memcached's names and order: `items` and
//! `slabs` count each item in the slab class memcached would put it in (the server has no
//! slab allocator; the store counts by memcached's class table, see `store::slabs`); a figure
//! of a mechanism the server does not have (tail repairs, the LRU crawler) is 0, or left out
//! where memcached itself leaves it out with that mechanism turned off. `settings` is in `settings.rs`, the connection table of `conns`
//! in `conns.rs`.

mod conns;
mod detail;
mod settings;

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use sendbuf::ZeroCopyStats;

use crate::store::{Mode, Store, StoreResult};

pub use conns::{Activity, ConnTable};
pub use detail::Detail;
pub use settings::{Settings, DEFAULT_MAX_CONNECTIONS};

/// A statistics group as (name, value) pairs, in memcached's order.
pub type Group = Vec<(String, String)>;

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
    /// Passes over a connection that stopped at the read budget with more to read, so that the
    /// worker served its other connections first (memcached's `conn_yields`).
    pub conn_yields: AtomicU64,
}

impl Counters {
    /// Every counter, for [`Stats::reset`].
    fn all(&self) -> [&AtomicU64; 21] {
        [
            &self.cmd_get,
            &self.cmd_set,
            &self.cmd_flush,
            &self.cmd_touch,
            &self.get_hits,
            &self.get_misses,
            &self.delete_misses,
            &self.delete_hits,
            &self.incr_misses,
            &self.incr_hits,
            &self.decr_misses,
            &self.decr_hits,
            &self.cas_misses,
            &self.cas_hits,
            &self.cas_badval,
            &self.touch_hits,
            &self.touch_misses,
            &self.bytes_read,
            &self.bytes_written,
            &self.closed_stalled,
            &self.conn_yields,
        ]
    }
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
    /// How the server was started (`stats settings`).
    pub settings: Settings,
    /// Worker threads serving connections.
    pub threads: AtomicU64,
    /// Connections open now (counted by the acceptor when it takes one, so that the limit of
    /// [`Settings::max_connections`] holds however fast they come).
    pub curr_connections: AtomicU64,
    /// Connections accepted since start.
    pub total_connections: AtomicU64,
    /// Connections refused with `ERROR Too many open connections`: over
    /// [`Settings::max_connections`], or accepted on the descriptor kept for it while the
    /// process was out of file descriptors.
    pub rejected_connections: AtomicU64,
    /// Connection slots the workers have made (a closed connection's slot is reused).
    pub connection_structures: AtomicU64,
    /// False while the acceptor has stopped accepting (out of file descriptors and unable to
    /// refuse connections with a reply).
    pub accepting_conns: AtomicBool,
    /// Times the acceptor stopped accepting.
    pub listen_disabled_num: AtomicU64,
    /// Microseconds the acceptor spent not accepting.
    pub time_in_listen_disabled_us: AtomicU64,
    /// The open connections, for `stats conns`.
    pub conns: ConnTable,
    /// The per-prefix counters of `stats detail`.
    pub detail: Detail,
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
    /// Counters at zero for a server with `threads` workers and otherwise default settings;
    /// uptime counts from now.
    pub fn new(threads: usize) -> Stats {
        Stats::with_settings(Settings {
            threads,
            ..Settings::default()
        })
    }

    /// Counters at zero for a server started with `settings`; uptime counts from now.
    pub fn with_settings(settings: Settings) -> Stats {
        Stats {
            started: Instant::now(),
            threads: AtomicU64::new(settings.threads as u64),
            settings,
            curr_connections: AtomicU64::new(0),
            total_connections: AtomicU64::new(0),
            rejected_connections: AtomicU64::new(0),
            connection_structures: AtomicU64::new(0),
            accepting_conns: AtomicBool::new(true),
            listen_disabled_num: AtomicU64::new(0),
            time_in_listen_disabled_us: AtomicU64::new(0),
            conns: ConnTable::default(),
            detail: Detail::default(),
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

    /// Seconds since the counters were created (what [`Activity`] stamps count in).
    pub fn uptime(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    /// The acceptor stopped accepting, for `pause` (out of file descriptors).
    pub fn listen_disabled(&self, pause: Duration) {
        bump(&self.listen_disabled_num);
        let us = u64::try_from(pause.as_micros()).unwrap_or(u64::MAX);
        self.time_in_listen_disabled_us
            .fetch_add(us, Ordering::Relaxed);
    }

    /// `stats reset`: zeroes what memcached zeroes: the command, byte and connection counters,
    /// the items stored since start, the item statistics and the per-prefix counters of
    /// `stats detail`; not what describes the present (items, bytes and connections held,
    /// `connection_structures`, whether detail is on).
    pub fn reset(&self, store: &Store) {
        for counters in self.slots.iter() {
            for counter in counters.all() {
                counter.store(0, Ordering::Relaxed);
            }
        }
        for counter in [
            &self.total_connections,
            &self.rejected_connections,
            &self.listen_disabled_num,
            &self.time_in_listen_disabled_us,
        ] {
            counter.store(0, Ordering::Relaxed);
        }
        store.reset_counters();
        self.detail.clear();
    }

    /// The general statistics (`stats`, binary `stat` without a key) in memcached's order:
    /// every name of memcached's general-purpose list the server has a figure for. Left out:
    /// `libevent` (there is none), memcached's internal buffer, hash table, slab mover, LRU
    /// crawler and logger figures, and `cmd_meta`, `store_too_large`, `store_no_memory`,
    /// `auth_*` (not counted).
    pub fn report(&self, store: &Store) -> Group {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed).to_string();
        let sum = |f: fn(&Counters) -> &AtomicU64| self.sum(f).to_string();
        let items = |c: &AtomicU64| c.load(Ordering::Relaxed).to_string();
        let unix = crate::store::unix_now();
        let (user, system) = crate::sys::rusage();
        let seconds = |d: Duration| format!("{}.{:06}", d.as_secs(), d.subsec_micros());
        let c = &store.counters;
        let list: Vec<(&str, String)> = vec![
            ("pid", std::process::id().to_string()),
            ("uptime", self.uptime().to_string()),
            ("time", unix.to_string()),
            ("version", VERSION.to_string()),
            ("pointer_size", (usize::BITS).to_string()),
            ("rusage_user", seconds(user)),
            ("rusage_system", seconds(system)),
            ("max_connections", self.settings.max_connections.to_string()),
            ("curr_connections", get(&self.curr_connections)),
            ("total_connections", get(&self.total_connections)),
            ("rejected_connections", get(&self.rejected_connections)),
            ("connection_structures", get(&self.connection_structures)),
            ("cmd_get", sum(|c| &c.cmd_get)),
            ("cmd_set", sum(|c| &c.cmd_set)),
            ("cmd_flush", sum(|c| &c.cmd_flush)),
            ("cmd_touch", sum(|c| &c.cmd_touch)),
            ("get_hits", sum(|c| &c.get_hits)),
            ("get_misses", sum(|c| &c.get_misses)),
            ("get_expired", items(&c.get_expired)),
            ("get_flushed", items(&c.get_flushed)),
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
            (
                "accepting_conns",
                u8::from(self.accepting_conns.load(Ordering::Relaxed)).to_string(),
            ),
            ("listen_disabled_num", get(&self.listen_disabled_num)),
            (
                "time_in_listen_disabled_us",
                get(&self.time_in_listen_disabled_us),
            ),
            ("threads", get(&self.threads)),
            ("conn_yields", sum(|c| &c.conn_yields)),
            ("bytes", store.bytes().to_string()),
            ("curr_items", store.len().to_string()),
            ("total_items", store.total_items().to_string()),
            ("expired_unfetched", items(&c.expired_unfetched)),
            ("evicted_unfetched", items(&c.evicted_unfetched)),
            ("evictions", items(&c.evictions)),
            ("reclaimed", items(&c.reclaimed)),
            // No LRU crawler, no tail locking: memcached prints these whatever its settings.
            ("crawler_reclaimed", "0".to_string()),
            ("crawler_items_checked", "0".to_string()),
            ("lrutail_reflocked", "0".to_string()),
        ];
        named(list)
    }

    /// `stats settings`: see [`Settings::report`].
    pub fn settings(&self, store: &Store) -> Group {
        named(self.settings.report(store, self.detail.on()))
    }

    /// `stats items`: per slab class holding items, in id order (memcached prints no class
    /// without items), each item counted in the class memcached would put it in (see
    /// `store::slabs`). Real figures: `number`, `age` (of the class's least recently used
    /// item), `mem_requested` (memcached's sizes of its items, summed), `evicted`,
    /// `evicted_nonzero`, `evicted_time`, `outofmemory`, `reclaimed`, `expired_unfetched`,
    /// `evicted_unfetched`. Always 0: `tailrepairs`, `crawler_reclaimed`,
    /// `crawler_items_checked`, `lrutail_reflocked` (no such mechanism). Memcached's
    /// segmented-LRU figures (`number_hot`, `hits_to_warm`, ...) are left out, as memcached
    /// leaves them out without its LRU maintainer: the store has one LRU a shard.
    pub fn items(&self, store: &Store) -> Group {
        let slabs = store.slabs();
        let n = |a: &AtomicU64| a.load(Ordering::Relaxed).to_string();
        let mut group = Group::new();
        for id in slabs.ids() {
            let c = slabs.class(id);
            let number = c.number.load(Ordering::Relaxed);
            if number == 0 {
                continue;
            }
            let list: Vec<(&str, String)> = vec![
                ("number", number.to_string()),
                ("age", store.class_age(id).to_string()),
                ("mem_requested", n(&c.requested)),
                ("evicted", n(&c.evicted)),
                ("evicted_nonzero", n(&c.evicted_nonzero)),
                ("evicted_time", n(&c.evicted_time)),
                ("outofmemory", n(&c.outofmemory)),
                ("tailrepairs", "0".to_string()),
                ("reclaimed", n(&c.reclaimed)),
                ("expired_unfetched", n(&c.expired_unfetched)),
                ("evicted_unfetched", n(&c.evicted_unfetched)),
                ("crawler_reclaimed", "0".to_string()),
                ("crawler_items_checked", "0".to_string()),
                ("lrutail_reflocked", "0".to_string()),
            ];
            group.extend(
                list.into_iter()
                    .map(|(name, value)| (format!("items:{id}:{name}"), value)),
            );
        }
        group
    }

    /// `stats slabs`: per slab class holding items, in id order, memcached's page and chunk
    /// figures for them: `chunk_size` and `chunks_per_page` of memcached's default class
    /// table, `total_pages` as the pages memcached's allocator would need for the chunks
    /// held (`ceil(used_chunks / chunks_per_page)`; unlike memcached's, pages are given back
    /// when the items go), `total_chunks` of those pages, `used_chunks` (one an item, several
    /// for one larger than the largest chunk), `free_chunks` (the rest of the pages) and
    /// `free_chunks_end` (0: no page is carved lazily). Then `active_slabs` (classes holding
    /// items) and `total_malloced` (their pages, in bytes). Memcached's per-class command
    /// counts (`get_hits`, `cmd_set`, ...) are left out: they would have to be counted per
    /// class on the get path; the server's totals are in `stats`.
    pub fn slabs(&self, store: &Store) -> Group {
        let slabs = store.slabs();
        let mut group = Group::new();
        let mut active = 0;
        for id in slabs.ids() {
            let used = slabs.class(id).chunks.load(Ordering::Relaxed);
            if used == 0 {
                continue;
            }
            active += 1;
            let per_page = slabs.table.per_page(id) as u64;
            // From the same load as `used`, so that a store or removal in between cannot
            // make the free count negative.
            let pages = used.div_ceil(per_page);
            let list: Vec<(&str, String)> = vec![
                ("chunk_size", slabs.table.chunk_size(id).to_string()),
                ("chunks_per_page", per_page.to_string()),
                ("total_pages", pages.to_string()),
                ("total_chunks", (pages * per_page).to_string()),
                ("used_chunks", used.to_string()),
                ("free_chunks", (pages * per_page - used).to_string()),
                ("free_chunks_end", "0".to_string()),
            ];
            group.extend(
                list.into_iter()
                    .map(|(name, value)| (format!("{id}:{name}"), value)),
            );
        }
        group.push(("active_slabs".into(), active.to_string()));
        group.push(("total_malloced".into(), slabs.malloced().to_string()));
        group
    }

    /// `stats conns`: see [`ConnTable::report`].
    pub fn conns(&self) -> Group {
        self.conns.report(self.uptime())
    }
}

/// A list of static names as a [`Group`].
fn named(list: Vec<(&str, String)>) -> Group {
    list.into_iter()
        .map(|(name, value)| (name.to_string(), value))
        .collect()
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
