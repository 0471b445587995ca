//! The cache: the [`Store`] type and its public API, with eviction across its shards.
//!
//! Items live in 16 hash-map shards, each behind its own mutex with its own least-recently-used
//! list, under one memory limit (memcached's `-m`; keys, values and a fixed per-item overhead
//! count). A store that would pass the limit evicts until it fits, each time the least recently
//! used item of all shards (their LRU tails compared by last-use stamp, without waiting on
//! another shard's lock). Expiry, CAS and `flush_all` follow memcached: expired and flushed
//! items are reclaimed lazily, when found, evicted, or met at an LRU tail by a store: as
//! memcached's allocator looks at the tail of the LRU before it allocates, every store first
//! looks at up to [`TAIL_SEARCH`] items at its shard's tail and reclaims the dead ones, and a
//! store that would need a new slab page for its class (see `slabs`) looks at the other
//! shards' tails too, since memcached's LRU of a class spans the whole cache.
//!
//! Values are `Arc<[u8]>`: a response pins a clone, so an item replaced or deleted while a
//! response still references its value keeps the value alive until the last byte is sent.
//!
//! Child modules: `item` (items, command modes and outcomes), `meta` (what the meta protocol
//! adds), `shard` (one shard's map and LRU list), `slabs` (memcached's slab classes, by which
//! the items are counted), `hash` (the key hash) and `clock` (server time).

mod clock;
mod hash;
mod item;
mod meta;
mod shard;
pub mod slabs;

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

pub use clock::unix_now;
pub use item::{
    parse_counter, DeleteResult, DeltaResult, Hit, Item, MetaNotes, Mode, StoreCounters,
    StoreResult, ITEM_OVERHEAD,
};
pub use meta::{MetaDelta, MetaHit, Removal};

use clock::{Clock, REALTIME_MAXDELTA};
use hash::{fmix, mix, KeyHash};
use shard::{lock, Shard, NIL};
use slabs::Slabs;

/// Most items [`Store::class_age`] looks at from each shard's LRU tail.
const AGE_WALK: usize = 64;

/// Number of shards; a power of two so a hash picks one with a mask.
const SHARDS: usize = 16;

/// Items a store looks at from an LRU tail for dead ones to reclaim (memcached's `tries` in
/// `lru_pull_tail`).
pub const TAIL_SEARCH: usize = 5;

/// Why an item found is no longer valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Death {
    /// Its expiry time has passed.
    Expired,
    /// A delayed `flush_all` has taken effect since it was stored.
    Flushed,
}

/// Adds one to a statistics counter.
fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Marks an item read (a relaxed load first: the store happens once per item, so readers of
/// a hot item do not keep writing its cache line).
fn mark_fetched(item: &Item) {
    if !item.meta.fetched.load(Ordering::Relaxed) {
        item.meta.fetched.store(true, Ordering::Relaxed);
    }
}

/// Seed of the shard choice.
const SHARD_SEED: u64 = 0x243f_6a88_85a3_08d3;

/// The cache, shared by every worker (`Arc<Store>`).
#[derive(Debug)]
pub struct Store {
    shards: Box<[Mutex<Shard>]>,
    /// Seeds the shard choice (fixed: the choice only spreads lock traffic, and a fixed one
    /// keeps CAS uniques reproducible in tests).
    seed: u64,
    mem_used: AtomicUsize,
    mem_limit: usize,
    max_item_size: usize,
    clock: Clock,
    /// A pending or passed delayed flush: items stored before this server time are invalid
    /// from this time on. 0 = none.
    flush_at: AtomicU32,
    /// Counters for `stats`.
    pub counters: StoreCounters,
    /// The items counted by memcached's slab classes.
    slabs: Arc<Slabs>,
}

impl Store {
    /// A cache holding at most `memory_limit_bytes` (keys, values and per-item overhead),
    /// refusing values longer than `max_item_size`.
    pub fn new(memory_limit_bytes: usize, max_item_size: usize) -> Store {
        let slabs = Arc::new(Slabs::default());
        Store {
            shards: {
                // A random key per store for the maps (std's own source of randomness).
                let seed = std::collections::hash_map::RandomState::new().hash_one(SHARD_SEED);
                let hash = KeyHash { seed };
                (0..SHARDS)
                    .map(|_| Mutex::new(Shard::new(hash, slabs.clone())))
                    .collect()
            },
            seed: SHARD_SEED,
            mem_used: AtomicUsize::new(0),
            mem_limit: memory_limit_bytes,
            max_item_size,
            clock: Clock::new(),
            flush_at: AtomicU32::new(0),
            counters: StoreCounters::default(),
            slabs,
        }
    }

    /// The items counted by memcached's slab classes.
    pub fn slabs(&self) -> &Slabs {
        &self.slabs
    }

    /// The maximum value length.
    pub fn max_item_size(&self) -> usize {
        self.max_item_size
    }

    /// The memory limit in bytes.
    pub fn memory_limit(&self) -> usize {
        self.mem_limit
    }

    /// Bytes the items currently count against the limit.
    pub fn bytes(&self) -> usize {
        self.mem_used.load(Ordering::Relaxed)
    }

    /// Number of items held (including expired ones not yet reclaimed).
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(s).map.len()).sum()
    }

    /// True if no item is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Server time: seconds since start, plus 2.
    pub fn now(&self) -> u32 {
        self.clock.now()
    }

    /// The unix time of server time 0.
    pub fn epoch(&self) -> i64 {
        self.clock.epoch
    }

    /// Moves the clock forward (tests of expiry).
    pub fn advance_clock(&self, secs: u32) {
        self.clock.skew.fetch_add(secs, Ordering::Relaxed);
    }

    /// Converts a protocol expiry time to server time, as memcached's `realtime`: 0 = never,
    /// negative = already expired, up to 30 days = relative, larger = absolute unix time.
    pub fn expiry(&self, exptime: i64) -> u32 {
        if exptime == 0 {
            return 0;
        }
        if exptime < 0 {
            return 1;
        }
        if exptime > REALTIME_MAXDELTA {
            if exptime <= self.clock.epoch {
                return 1;
            }
            return u32::try_from(exptime - self.clock.epoch).unwrap_or(u32::MAX);
        }
        // exptime <= 30 days fits in u32.
        (exptime as u32).saturating_add(self.now())
    }

    /// The index of the shard that holds `key`.
    fn shard_of(&self, key: &[u8]) -> usize {
        // Only spreads keys over the locks (with a fixed seed, so CAS uniques are
        // reproducible); the maps inside hash with a random key per store.
        (fmix(mix(self.seed, key)) >> 59) as usize & (SHARDS - 1)
    }

    fn shard(&self, key: &[u8]) -> &Mutex<Shard> {
        &self.shards[self.shard_of(key)]
    }

    /// Reads the system clock once: this thread's requests see that time until its next
    /// tick. The protocol ticks at the start of each batch of requests.
    pub fn tick(&self) {
        self.clock.tick();
    }

    /// Items stored since start.
    pub fn total_items(&self) -> u64 {
        self.shards.iter().map(|s| lock(s).total_items).sum()
    }

    /// Why `item` is invalid now, if it is: flushed (checked first, as memcached does) or
    /// expired.
    fn death(&self, item: &Item, now: u32) -> Option<Death> {
        let flush_at = self.flush_at.load(Ordering::Relaxed);
        if flush_at != 0 && flush_at <= now && item.time < flush_at {
            return Some(Death::Flushed);
        }
        (item.exptime != 0 && item.exptime <= now).then_some(Death::Expired)
    }

    /// Finds a live item; reclaims it if dead, counting why (memcached's `get_expired` and
    /// `get_flushed`, which count the lookups of every command).
    fn find<'s>(&self, shard: &'s mut Shard, key: &[u8], now: u32) -> Option<(u32, &'s Arc<Item>)> {
        let (i, death) = match shard.lookup(key) {
            Some((i, it)) => (i, self.death(it, now)),
            None => return None,
        };
        if let Some(death) = death {
            bump(match death {
                Death::Expired => &self.counters.get_expired,
                Death::Flushed => &self.counters.get_flushed,
            });
            self.unaccount(shard.remove(i));
            return None;
        }
        shard.nodes[i as usize].item.as_ref().map(|it| (i, it))
    }

    fn unaccount(&self, item: Option<Arc<Item>>) {
        if let Some(item) = item {
            self.mem_used.fetch_sub(item.size(), Ordering::Relaxed);
        }
    }

    /// Makes room for `need` more bytes and reserves them (adds them to the count), evicting
    /// least recently used items as needed: each round
    /// compares the LRU tail of this shard with those of the other shards (without waiting on
    /// their locks) and evicts the oldest. False if it cannot. `keep` is the node being
    /// replaced, which is not evicted.
    fn make_room(&self, shard: &mut Shard, own: usize, need: usize, keep: Option<u32>) -> bool {
        if need > self.mem_limit {
            return false;
        }
        let mut retries = 100;
        loop {
            // Reserve the bytes if they fit (atomically, so that concurrent stores on other
            // shards cannot together pass the limit).
            let used = self.mem_used.load(Ordering::Relaxed);
            if used.saturating_add(need) <= self.mem_limit {
                let reserved = self.mem_used.compare_exchange_weak(
                    used,
                    used + need,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                );
                if reserved.is_ok() {
                    return true;
                }
                continue;
            }
            // This shard's least recently used node, passing over the one being replaced.
            let mut mine = shard.tail;
            if mine != NIL && Some(mine) == keep {
                mine = shard.nodes[mine as usize].prev;
            }
            let mut best: Option<(usize, u64)> =
                (mine != NIL).then(|| (own, shard.nodes[mine as usize].used));
            let mut busy = false;
            for (i, other) in self.shards.iter().enumerate() {
                if i == own {
                    continue;
                }
                let Ok(other) = other.try_lock() else {
                    busy = true;
                    continue;
                };
                if let Some(used) = other.oldest() {
                    if best.is_none_or(|(_, b)| used < b) {
                        best = Some((i, used));
                    }
                }
            }
            match best {
                // Items may be behind a lock held by another store; let it finish.
                None if busy && retries > 0 => {
                    retries -= 1;
                    std::thread::yield_now();
                }
                None => return false,
                Some((i, _)) if i == own => self.evict(shard, mine),
                Some((i, _)) => {
                    // Still free unless another thread just took it; then try again.
                    if let Ok(mut other) = self.shards[i].try_lock() {
                        let victim = other.tail;
                        if victim != NIL {
                            self.evict(&mut other, victim);
                        }
                    }
                }
            }
        }
    }

    /// Takes node `i`, the least recently used of its shard, to make room: an eviction if the
    /// item was live, a reclaim if it was expired or flushed (memcached's item statistics).
    fn evict(&self, shard: &mut Shard, i: u32) {
        let (now, nanos) = self.clock.read();
        let last_used = shard.nodes[i as usize].used;
        let Some(item) = shard.remove(i) else {
            return;
        };
        let unfetched = !item.meta.fetched.load(Ordering::Relaxed);
        let c = &self.counters;
        let (_, class) = self.slabs.of(item.total());
        let both = |store: &AtomicU64, class: &AtomicU64| {
            bump(store);
            bump(class);
        };
        if self.death(&item, now).is_some() {
            both(&c.reclaimed, &class.reclaimed);
            if unfetched {
                both(&c.expired_unfetched, &class.expired_unfetched);
            }
        } else {
            both(&c.evictions, &class.evicted);
            if item.exptime != 0 {
                both(&c.evicted_nonzero, &class.evicted_nonzero);
            }
            if unfetched {
                both(&c.evicted_unfetched, &class.evicted_unfetched);
            }
            let idle = nanos.saturating_sub(last_used) / 1_000_000_000;
            c.evicted_time.store(idle, Ordering::Relaxed);
            class.evicted_time.store(idle, Ordering::Relaxed);
        }
        self.mem_used.fetch_sub(item.size(), Ordering::Relaxed);
    }

    /// Memcached's `lru_pull_tail` before an allocation: looks at up to [`TAIL_SEARCH`] items
    /// from the least recently used end of `shard`, reclaims the expired and flushed ones and
    /// stops at the first live one. Returns how many it reclaimed.
    fn reclaim_tail(&self, shard: &mut Shard, now: u32) -> usize {
        let mut reclaimed = 0;
        for _ in 0..TAIL_SEARCH {
            let i = shard.tail;
            let dead = i != NIL
                && shard.nodes[i as usize]
                    .item
                    .as_ref()
                    .is_some_and(|it| self.death(it, now).is_some());
            if !dead {
                break;
            }
            self.evict(shard, i);
            reclaimed += 1;
        }
        reclaimed
    }

    /// [`Store::reclaim_tail`] on every shard but number `own` whose lock is free.
    fn reclaim_other_tails(&self, own: usize, now: u32) {
        for (i, other) in self.shards.iter().enumerate() {
            if i == own {
                continue;
            }
            if let Ok(mut other) = other.try_lock() {
                self.reclaim_tail(&mut other, now);
            }
        }
    }

    /// Seconds since the least recently used item of slab class `id` was last used (its
    /// `age` in `stats items`); 0 when none is found. Each shard's LRU list is walked from its
    /// tail for at most 64 items (`AGE_WALK`), under its lock taken without waiting (a busy shard
    /// is left out): `stats items` is polled by monitors and must not hold gets and sets up,
    /// so a class with no item near a shard's tail is not seen in that shard.
    pub fn class_age(&self, id: usize) -> u64 {
        let (_, nanos) = self.clock.read();
        let oldest = self
            .shards
            .iter()
            .filter_map(|s| {
                let s = s.try_lock().ok()?;
                let mut i = s.tail;
                let mut walked = 0;
                while i != NIL && walked < AGE_WALK {
                    walked += 1;
                    let node = &s.nodes[i as usize];
                    if node
                        .item
                        .as_ref()
                        .is_some_and(|it| self.slabs.table.class_of(it.total()) == id)
                    {
                        return Some(node.used);
                    }
                    i = node.prev;
                }
                None
            })
            .min();
        oldest.map_or(0, |used| nanos.saturating_sub(used) / 1_000_000_000)
    }

    /// Seconds since the least recently used item was last used (memcached's `age` of an LRU
    /// tail); 0 when the store is empty. Tries each shard's lock without waiting: a shard busy
    /// at that moment is left out.
    pub fn tail_age(&self) -> u64 {
        let (_, nanos) = self.clock.read();
        let oldest = self
            .shards
            .iter()
            .filter_map(|s| s.try_lock().ok().and_then(|s| s.oldest()))
            .min();
        oldest.map_or(0, |used| nanos.saturating_sub(used) / 1_000_000_000)
    }

    /// Up to `limit` items (0: no limit) of slab class `class`, shard by shard and most
    /// recently used first in each, as `stats cachedump` lists them: key, value length and
    /// expiry as a unix time (0: never). Dead items not yet reclaimed are listed too, as
    /// memcached lists them.
    pub fn dump(&self, class: usize, limit: usize) -> Vec<(Arc<[u8]>, usize, u64)> {
        let mut list = Vec::new();
        for shard in self.shards.iter() {
            let shard = lock(shard);
            let of_class = shard
                .items()
                .filter(|it| self.slabs.table.class_of(it.total()) == class);
            for item in of_class {
                if limit != 0 && list.len() == limit {
                    return list;
                }
                let exptime = match item.exptime {
                    0 => 0,
                    t => u64::try_from(self.clock.epoch + i64::from(t)).unwrap_or(0),
                };
                list.push((item.key.clone(), item.value.len(), exptime));
            }
        }
        list
    }

    /// Zeroes what `stats reset` resets: the store's counters and the items stored since
    /// start (not the items held, nor their bytes).
    pub fn reset_counters(&self) {
        self.counters.reset();
        self.slabs.reset();
        for shard in self.shards.iter() {
            lock(shard).total_items = 0;
        }
    }

    /// Looks up a live item and marks it recently used.
    pub fn get(&self, key: &[u8]) -> Option<Arc<Item>> {
        self.get_with(key, Arc::clone)
    }

    /// Looks up a live item for a response: what a GET answers with. Cheaper than [`get`]:
    /// it clones only the value (one reference count up, and down when sent), not the item
    /// (two more).
    ///
    /// [`get`]: Store::get
    pub fn hit(&self, key: &[u8]) -> Option<Hit> {
        self.get_with(key, |item| Hit::of(item))
    }

    /// Looks up a live item, marks it recently used and returns what `f` takes of it.
    fn get_with<R>(&self, key: &[u8], f: impl FnOnce(&Arc<Item>) -> R) -> Option<R> {
        let (now, used) = self.clock.read();
        let mut shard = lock(self.shard(key));
        let (i, item) = self.find(&mut shard, key, now)?;
        mark_fetched(item);
        let r = f(item);
        shard.bump(i, used);
        Some(r)
    }

    /// Looks up a live item, sets its expiry, and returns it (binary GAT, ASCII `gat`).
    pub fn touch(&self, key: &[u8], exptime: i64) -> Option<Arc<Item>> {
        let (now, used) = self.clock.read();
        let exptime = self.expiry(exptime);
        let mut shard = lock(self.shard(key));
        let (i, item) = self.find(&mut shard, key, now)?;
        let item = Arc::new(Item {
            exptime,
            ..item.successor()
        });
        mark_fetched(&item);
        shard.insert(Some(i), item.clone(), used);
        Some(item)
    }

    /// Stores `data` under `key` according to `mode`. `cas` is the unique [`Mode::Cas`] compares;
    /// append and prepend compare it too if it is non-zero; the others ignore it.
    pub fn store(
        &self,
        mode: Mode,
        key: &[u8],
        data: &[u8],
        flags: u32,
        exptime: i64,
        cas: u64,
    ) -> StoreResult {
        self.meta_store(mode, key, data, flags, self.expiry(exptime), cas, false)
    }

    /// [`Store::store`] for a meta set: `exptime` in server time; with `stale_ok`, a
    /// [`Mode::Cas`] whose CAS is older than the item's stores the data as a stale item that
    /// keeps the old one's expiry and win (`ms ... I`).
    #[allow(clippy::too_many_arguments)] // the store command's fields, as the protocols give them
    pub fn meta_store(
        &self,
        mode: Mode,
        key: &[u8],
        data: &[u8],
        flags: u32,
        exptime: u32,
        cas: u64,
        stale_ok: bool,
    ) -> StoreResult {
        if data.len() > self.max_item_size {
            return StoreResult::TooLarge;
        }
        let (now, used) = self.clock.read();
        let own = self.shard_of(key);
        let mut shard = lock(&self.shards[own]);
        // As memcached allocates the new item first, pulling the LRU tail: an expired item at
        // the tail is reclaimed, even when it is the one this store replaces.
        self.reclaim_tail(&mut shard, now);
        let old = self
            .find(&mut shard, key, now)
            .map(|(i, it)| (i, it.clone()));
        let mut stale_of = None;
        let (value, flags, exptime): (Arc<[u8]>, u32, u32) = match (mode, &old) {
            (Mode::Add, Some(_)) => return StoreResult::NotStored,
            (Mode::Cas, None) => return StoreResult::NotFound,
            (Mode::Replace | Mode::Append | Mode::Prepend, None) => return StoreResult::NotStored,
            (Mode::Cas, Some((_, it))) if stale_ok && cas != 0 && cas < it.cas => {
                stale_of = Some(it);
                (data.into(), flags, it.exptime)
            }
            // Item CAS uniques start at 1, so a CAS of 0 never matches.
            (Mode::Cas, Some((_, it))) if it.cas != cas => return StoreResult::Exists,
            (Mode::Append | Mode::Prepend, Some((_, it))) if cas != 0 && it.cas != cas => {
                return StoreResult::Exists
            }
            (Mode::Append | Mode::Prepend, Some((_, it))) => {
                let len = it.value.len() + data.len();
                if len > self.max_item_size {
                    return StoreResult::TooLarge;
                }
                let mut v = Vec::with_capacity(len);
                if mode == Mode::Append {
                    v.extend_from_slice(&it.value);
                    v.extend_from_slice(data);
                } else {
                    v.extend_from_slice(data);
                    v.extend_from_slice(&it.value);
                }
                (v.into(), it.flags, it.exptime)
            }
            _ => (data.into(), flags, exptime),
        };
        let mut item = Item::new(
            old.as_ref()
                .map_or_else(|| key.into(), |(_, it)| it.key.clone()),
            value,
            flags,
            shard.next_cas(own),
            exptime,
            now,
        );
        if let Some(prev) = stale_of {
            item.stale = true;
            let won = prev.meta.win_sent.load(Ordering::Relaxed);
            item.meta.win_sent.store(won, Ordering::Relaxed);
        }
        let old = old.map(|(i, it)| (i, it.size()));
        self.put(&mut shard, own, used, old, item)
    }

    /// Accounts and inserts a new version of an item into shard number `own`, used at `used`;
    /// `old` is the node and size it replaces.
    fn put(
        &self,
        shard: &mut Shard,
        own: usize,
        used: u64,
        old: Option<(u32, usize)>,
        item: Item,
    ) -> StoreResult {
        let size = item.size();
        let freed = old.map_or(0, |(_, s)| s);
        let total = item.total();
        let table = &self.slabs.table;
        let old_total =
            old.and_then(|(i, _)| shard.nodes[i as usize].item.as_ref().map(|it| it.total()));
        let same_class = old_total.is_some_and(|t| table.class_of(t) == table.class_of(total));
        if !same_class && self.slabs.needs_page(total) {
            // Memcached would take a new page only after its class's LRU tail had no dead
            // item to reuse: that LRU spans every shard here.
            self.reclaim_other_tails(own, self.now());
        }
        if size > freed && !self.make_room(shard, own, size - freed, old.map(|(i, _)| i)) {
            bump(&self.counters.outofmemory);
            bump(&self.slabs.of(total).1.outofmemory);
            // memcached drops the old item too when a store fails for memory.
            if let Some((i, _)) = old {
                self.unaccount(shard.remove(i));
            }
            return StoreResult::NoMemory;
        }
        // A larger item reserved its growth in `make_room`.
        if size < freed {
            self.mem_used.fetch_sub(freed - size, Ordering::Relaxed);
        }
        let cas = item.cas;
        shard.insert(old.map(|(i, _)| i), Arc::new(item), used);
        shard.total_items += 1;
        StoreResult::Stored(cas)
    }

    /// Removes `key`; if `cas` is non-zero, only if the item's CAS unique equals it.
    pub fn delete(&self, key: &[u8], cas: u64) -> DeleteResult {
        let now = self.now();
        let mut shard = lock(self.shard(key));
        let Some((i, item)) = self.find(&mut shard, key, now) else {
            return DeleteResult::NotFound;
        };
        if cas != 0 && item.cas != cas {
            return DeleteResult::Exists;
        }
        self.unaccount(shard.remove(i));
        DeleteResult::Deleted
    }

    /// Adds `delta` to (or, `incr == false`, subtracts it from) a decimal value: 64-bit
    /// unsigned, wrapping on incr, floored at 0 on decr. A shorter result is padded with spaces
    /// to the old length, as memcached's in-place update leaves it.
    pub fn delta(&self, key: &[u8], incr: bool, delta: u64, cas: u64) -> DeltaResult {
        let own = self.shard_of(key);
        let mut shard = lock(&self.shards[own]);
        self.delta_in(&mut shard, own, key, incr, delta, cas)
    }

    /// [`Store::delta`] in shard number `own`, locked by the caller.
    fn delta_in(
        &self,
        shard: &mut Shard,
        own: usize,
        key: &[u8],
        incr: bool,
        delta: u64,
        cas: u64,
    ) -> DeltaResult {
        let (now, used) = self.clock.read();
        let Some((i, item)) = self.find(shard, key, now) else {
            return DeltaResult::NotFound;
        };
        if cas != 0 && item.cas != cas {
            return DeltaResult::Exists;
        }
        let Some(current) = parse_counter(&item.value) else {
            return DeltaResult::NonNumeric;
        };
        let new = if incr {
            current.wrapping_add(delta)
        } else {
            current.saturating_sub(delta)
        };
        let mut digits = new.to_string().into_bytes();
        if digits.len() < item.value.len() {
            digits.resize(item.value.len(), b' ');
        }
        let old = Some((i, item.size()));
        let mut new_item = Item {
            value: digits.into(),
            ..item.successor()
        };
        new_item.cas = shard.next_cas(own);
        match self.put(shard, own, used, old, new_item) {
            StoreResult::Stored(cas) => DeltaResult::Value(new, cas),
            _ => DeltaResult::NoMemory,
        }
    }

    /// Invalidates every item: now if `delay` is 0 or negative, else at server time
    /// `expiry(delay)` (items stored before then become invalid then).
    pub fn flush_all(&self, delay: i64) {
        if delay > 0 {
            self.flush_at.store(self.expiry(delay), Ordering::Relaxed);
            return;
        }
        self.flush_at.store(0, Ordering::Relaxed);
        for shard in self.shards.iter() {
            let mut shard = lock(shard);
            let old = shard.clear();
            drop(shard);
            self.mem_used.fetch_sub(old.bytes, Ordering::Relaxed);
        }
    }
}
