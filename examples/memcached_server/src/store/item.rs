//! What the store deals in: items, the part of one a response takes, commands and outcomes.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

/// Bytes an item costs beyond its key and value: the `Item`, its `Arc`, the map entry (with a
/// second copy of the key's pointer) and the LRU node. Counted against the memory limit.
pub const ITEM_OVERHEAD: usize = 112;

/// One cached entry. Immutable once stored: every change stores a new `Item`, except the
/// meta protocol's notes on its use ([`Item::meta`]).
#[derive(Debug)]
pub struct Item {
    /// The key (at most 250 bytes, checked by the protocols), shared with the map and with
    /// later versions of the item.
    pub key: Arc<[u8]>,
    /// The value, shared with every response that still sends it.
    pub value: Arc<[u8]>,
    /// Opaque client flags.
    pub flags: u32,
    /// The CAS unique of this version of the item.
    pub cas: u64,
    /// Server time (seconds, see [`Store::now`]) at which it expires; 0 = never.
    ///
    /// [`Store::now`]: super::Store::now
    pub exptime: u32,
    /// Server time at which it was stored (for a delayed `flush_all`).
    pub time: u32,
    /// Marked stale by a meta delete with `I` (or stored with `ms ... I` under an older CAS):
    /// meta gets report `X` and hand the first of them a recache win.
    pub stale: bool,
    /// What the meta protocol notes on a stored item.
    pub meta: MetaNotes,
}

/// What the meta protocol notes on a stored item, changed in place (under the shard's lock).
#[derive(Debug, Default)]
pub struct MetaNotes {
    /// A get or touch of any kind has fetched it (meta `h`; `expired_unfetched` and
    /// `evicted_unfetched` count the items that go without).
    pub fetched: AtomicBool,
    /// A meta get has been handed the recache win (`W`); later ones see `Z`.
    pub win_sent: AtomicBool,
    /// Server time of its last meta access (`l`), initially when it was stored.
    pub atime: AtomicU32,
}

impl MetaNotes {
    /// Notes on an item stored at server time `now`.
    fn new(now: u32) -> MetaNotes {
        MetaNotes {
            atime: AtomicU32::new(now),
            ..MetaNotes::default()
        }
    }
}

impl Clone for MetaNotes {
    fn clone(&self) -> MetaNotes {
        let copy = |b: &AtomicBool| AtomicBool::new(b.load(Ordering::Relaxed));
        MetaNotes {
            fetched: copy(&self.fetched),
            win_sent: copy(&self.win_sent),
            atime: AtomicU32::new(self.atime.load(Ordering::Relaxed)),
        }
    }
}

/// What a response needs of an item ([`Store::hit`], [`Store::touch`]).
///
/// [`Store::hit`]: super::Store::hit
/// [`Store::touch`]: super::Store::touch
#[derive(Debug, Clone)]
pub struct Hit {
    /// The value, shared with the item.
    pub value: Arc<[u8]>,
    /// Opaque client flags.
    pub flags: u32,
    /// The CAS unique.
    pub cas: u64,
}

impl Hit {
    /// The response's part of `item`.
    pub fn of(item: &Item) -> Hit {
        Hit {
            value: item.value.clone(),
            flags: item.flags,
            cas: item.cas,
        }
    }
}

impl Item {
    /// A fresh item stored at server time `time`: not stale, never fetched.
    pub fn new(
        key: Arc<[u8]>,
        value: Arc<[u8]>,
        flags: u32,
        cas: u64,
        exptime: u32,
        time: u32,
    ) -> Item {
        Item {
            key,
            value,
            flags,
            cas,
            exptime,
            time,
            stale: false,
            meta: MetaNotes::new(time),
        }
    }

    /// The next version of this item, equal to it until the caller changes a field: what a
    /// change that memcached makes in place (touch, incr, invalidate) stores.
    pub fn successor(&self) -> Item {
        Item {
            key: self.key.clone(),
            value: self.value.clone(),
            meta: self.meta.clone(),
            ..*self
        }
    }

    /// Bytes memcached's item of this key, value and flags takes, which decides its slab
    /// class (`ITEM_ntotal`).
    pub fn total(&self) -> usize {
        super::slabs::item_total(self.key.len(), self.value.len(), self.flags)
    }

    /// Bytes this item counts against the memory limit.
    pub fn size(&self) -> usize {
        self.key.len() + self.value.len() + ITEM_OVERHEAD
    }
}

/// Which store command, with memcached's semantics for each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Store unconditionally.
    Set,
    /// Store only if absent.
    Add,
    /// Store only if present.
    Replace,
    /// Append the data to the existing value (flags and expiry unchanged).
    Append,
    /// Prepend the data to the existing value (flags and expiry unchanged).
    Prepend,
    /// Store only if present with the given CAS unique (ASCII `cas`, binary set/add/replace
    /// with a CAS in the header).
    Cas,
}

/// Outcome of a store command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreResult {
    /// Stored, with the new CAS unique.
    Stored(u64),
    /// Condition not met (add on present, replace/append/prepend on absent).
    NotStored,
    /// CAS given and the item changed since.
    Exists,
    /// CAS given and the item is absent.
    NotFound,
    /// Value above the maximum item size.
    TooLarge,
    /// Not enough memory even after evicting.
    NoMemory,
}

/// Outcome of `delete`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteResult {
    /// Removed.
    Deleted,
    /// No such (live) item.
    NotFound,
    /// CAS given and the item changed since.
    Exists,
}

/// Outcome of `incr`/`decr`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeltaResult {
    /// The new value and the item's new CAS unique.
    Value(u64, u64),
    /// No such item.
    NotFound,
    /// The stored value is not a decimal 64-bit unsigned number.
    NonNumeric,
    /// CAS given and the item changed since.
    Exists,
    /// Not enough memory for the new value.
    NoMemory,
}

/// Counters the store keeps for `stats` and `stats items`, named as memcached's. `stats
/// reset` zeroes them all ([`StoreCounters::reset`]).
#[derive(Debug, Default)]
pub struct StoreCounters {
    /// Live items evicted to make room.
    pub evictions: AtomicU64,
    /// ...of which had an expiry time.
    pub evicted_nonzero: AtomicU64,
    /// ...of which had never been read or touched.
    pub evicted_unfetched: AtomicU64,
    /// Seconds since the last use of the last item evicted.
    pub evicted_time: AtomicU64,
    /// Expired or flushed items at the least recently used end taken to make room.
    pub reclaimed: AtomicU64,
    /// ...of which had never been read or touched.
    pub expired_unfetched: AtomicU64,
    /// Stores refused because evicting could not make room.
    pub outofmemory: AtomicU64,
    /// Lookups (of any command) that found the key expired.
    pub get_expired: AtomicU64,
    /// Lookups (of any command) that found the key invalidated by a delayed `flush_all`.
    pub get_flushed: AtomicU64,
}

impl StoreCounters {
    /// Zeroes every counter (`stats reset`).
    pub fn reset(&self) {
        for counter in [
            &self.evictions,
            &self.evicted_nonzero,
            &self.evicted_unfetched,
            &self.evicted_time,
            &self.reclaimed,
            &self.expired_unfetched,
            &self.outofmemory,
            &self.get_expired,
            &self.get_flushed,
        ] {
            counter.store(0, Ordering::Relaxed);
        }
    }
}

/// Parses a stored counter as memcached's `safe_strtoull`: optional leading whitespace, decimal
/// digits, then only whitespace (or the end); no sign.
pub fn parse_counter(value: &[u8]) -> Option<u64> {
    let s = value.trim_ascii_start();
    let digits = s.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || !s[digits..].iter().all(|b| b.is_ascii_whitespace()) {
        return None;
    }
    let mut n: u64 = 0;
    for &d in &s[..digits] {
        n = n.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
    }
    Some(n)
}
