//! The cache: items in 16 hash-map shards, each behind its own mutex with its own
//! least-recently-used list, under one memory limit (memcached's `-m`; keys, values and a fixed
//! per-item overhead count). A store that would pass the limit evicts until it fits, each time
//! the least recently used item of all shards (their LRU tails compared by last-use stamp,
//! without waiting on another shard's lock). Expiry, CAS and `flush_all` follow memcached:
//! expired and flushed items are reclaimed lazily, when found or evicted.
//!
//! Values are `Arc<[u8]>`: a response pins a clone, so an item replaced or deleted while a
//! response still references its value keeps the value alive until the last byte is sent.

use std::cell::Cell;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Number of shards; a power of two so a hash picks one with a mask.
const SHARDS: usize = 16;

/// Bytes an item costs beyond its key and value: the `Item`, its `Arc`, the map entry (with a
/// second copy of the key's pointer) and the LRU node. Counted against the memory limit.
pub const ITEM_OVERHEAD: usize = 112;

/// Relative expiry times up to this many seconds are offsets from now; larger ones are absolute
/// unix times (memcached's `REALTIME_MAXDELTA`).
const REALTIME_MAXDELTA: i64 = 60 * 60 * 24 * 30;

/// Seed of the shard choice.
const SHARD_SEED: u64 = 0x243f_6a88_85a3_08d3;

/// Mixes `bytes` into `h`, a word at a time (multiply, rotate).
#[inline]
fn mix(mut h: u64, bytes: &[u8]) -> u64 {
    const K: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        let word = u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        h = (h ^ word).wrapping_mul(K).rotate_left(29);
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut last = [0u8; 8];
        last[..rest.len()].copy_from_slice(rest);
        h = (h ^ u64::from_le_bytes(last))
            .wrapping_mul(K)
            .rotate_left(29);
    }
    h
}

/// Murmur3's finaliser: every input bit affects every output bit.
#[inline]
fn fmix(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// Hashes keys in the shard maps: [`mix`] and [`fmix`], several times cheaper than SipHash on
/// short keys, keyed with a random seed per store so that colliding keys cannot be prepared in
/// advance (memcached hashes keys without any key at all).
#[derive(Debug, Clone, Copy)]
struct KeyHash {
    seed: u64,
}

impl BuildHasher for KeyHash {
    type Hasher = KeyHasher;

    fn build_hasher(&self) -> KeyHasher {
        KeyHasher(self.seed)
    }
}

/// The hasher [`KeyHash`] builds.
#[derive(Debug)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        self.0 = mix(self.0, bytes);
    }

    #[inline]
    fn write_usize(&mut self, n: usize) {
        self.0 = mix(self.0, &(n as u64).to_le_bytes());
    }

    #[inline]
    fn finish(&self) -> u64 {
        fmix(self.0)
    }
}

/// No LRU neighbour.
const NIL: u32 = u32::MAX;

/// One cached entry. Immutable once stored: every change stores a new `Item`.
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
    pub exptime: u32,
    /// Server time at which it was stored (for a delayed `flush_all`).
    pub time: u32,
}

/// What a response needs of an item ([`Store::hit`], [`Store::touch`]).
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

/// Counters the store keeps for `stats`.
#[derive(Debug, Default)]
pub struct StoreCounters {
    /// Items evicted to make room.
    pub evictions: AtomicU64,
}

/// A node of a shard's LRU list, holding one item.
#[derive(Debug)]
struct Node {
    item: Option<Arc<Item>>,
    prev: u32,
    next: u32,
    /// When it was last used ([`Clock::read`] nanoseconds): compares LRU tails across shards.
    used: u64,
}

/// One shard: a map from key to node index, and a doubly linked LRU list over a node slab
/// (head = most recently used).
#[derive(Debug)]
struct Shard {
    map: HashMap<Arc<[u8]>, u32, KeyHash>,
    nodes: Vec<Node>,
    free: Vec<u32>,
    head: u32,
    tail: u32,
    bytes: usize,
    /// CAS uniques handed out by this shard (see [`Shard::next_cas`]).
    cas_count: u64,
    /// Items stored since start.
    total_items: u64,
}

impl Shard {
    fn new(hash: KeyHash) -> Shard {
        Shard {
            map: HashMap::with_hasher(hash),
            nodes: Vec::new(),
            free: Vec::new(),
            head: NIL,
            tail: NIL,
            bytes: 0,
            cas_count: 0,
            total_items: 0,
        }
    }

    /// A CAS unique no other item of any shard has had: the shard's count times the number
    /// of shards plus its index (never 0). No atomic shared between shards is touched.
    fn next_cas(&mut self, index: usize) -> u64 {
        self.cas_count += 1;
        self.cas_count * SHARDS as u64 + index as u64
    }

    /// Drops every item, keeping the counters.
    fn clear(&mut self) -> Shard {
        let mut fresh = Shard::new(*self.map.hasher());
        fresh.cas_count = self.cas_count;
        fresh.total_items = self.total_items;
        std::mem::replace(self, fresh)
    }

    fn unlink(&mut self, i: u32) {
        let (prev, next) = {
            let n = &self.nodes[i as usize];
            (n.prev, n.next)
        };
        match prev {
            NIL => self.head = next,
            p => self.nodes[p as usize].next = next,
        }
        match next {
            NIL => self.tail = prev,
            n => self.nodes[n as usize].prev = prev,
        }
    }

    fn push_front(&mut self, i: u32, used: u64) {
        let old = self.head;
        {
            let n = &mut self.nodes[i as usize];
            n.prev = NIL;
            n.next = old;
            n.used = used;
        }
        match old {
            NIL => self.tail = i,
            o => self.nodes[o as usize].prev = i,
        }
        self.head = i;
    }

    fn bump(&mut self, i: u32, used: u64) {
        if self.head != i {
            self.unlink(i);
            self.push_front(i, used);
        } else {
            self.nodes[i as usize].used = used;
        }
    }

    /// When the least recently used item was last used, if there is one.
    fn oldest(&self) -> Option<u64> {
        (self.tail != NIL).then(|| self.nodes[self.tail as usize].used)
    }

    fn lookup(&self, key: &[u8]) -> Option<(u32, &Arc<Item>)> {
        let &i = self.map.get(key)?;
        self.nodes[i as usize].item.as_ref().map(|it| (i, it))
    }

    /// Removes node `i`; returns its item.
    fn remove(&mut self, i: u32) -> Option<Arc<Item>> {
        let item = self.nodes[i as usize].item.take()?;
        self.unlink(i);
        self.map.remove(&item.key);
        self.free.push(i);
        self.bytes -= item.size();
        Some(item)
    }

    /// Puts `item` in (replacing node `old` if given), at the front of the LRU.
    fn insert(&mut self, old: Option<u32>, item: Arc<Item>, used: u64) {
        self.bytes += item.size();
        if let Some(i) = old {
            let prev = self.nodes[i as usize].item.replace(item);
            if let Some(prev) = prev {
                self.bytes -= prev.size();
            }
            self.bump(i, used);
            return;
        }
        let i = match self.free.pop() {
            Some(i) => {
                self.nodes[i as usize].item = Some(item.clone());
                i
            }
            None => {
                let i = u32::try_from(self.nodes.len()).expect("more than 4G items in a shard");
                self.nodes.push(Node {
                    item: Some(item.clone()),
                    prev: NIL,
                    next: NIL,
                    used,
                });
                i
            }
        };
        self.map.insert(item.key.clone(), i);
        self.push_front(i, used);
    }
}

/// This thread's last tick ([`Store::tick`]): the time its requests see.
#[derive(Debug, Clone, Copy)]
struct Tick {
    /// When it was read.
    at: Instant,
    /// The [`Clock::started`] of the store that read it, and what [`Clock::read`] then
    /// returns for that store, worked out once per tick instead of once per request.
    started: Instant,
    read: (u32, u64),
}

thread_local! {
    static TICK: Cell<Option<Tick>> = const { Cell::new(None) };
}

/// The server's clock, coarse as memcached's: the system clock is read once per
/// [`Store::tick`] (the protocol ticks once per batch of requests) into a thread-local, so a
/// request costs no clock call and the workers share no clock cache line. Seconds since start
/// plus 2 (so that 1 is always in the past, as in memcached); a test can move it forward.
#[derive(Debug)]
struct Clock {
    started: Instant,
    /// Unix time at which server time 0 was.
    epoch: i64,
    /// Seconds added by [`Store::advance_clock`].
    skew: AtomicU32,
}

/// Seconds since the Unix epoch, from the wall clock.
///
/// Under Miri, whose isolation has no wall clock, a fixed date: only the monotonic clock moves
/// time forward there, which is all expiry needs.
pub fn unix_now() -> u64 {
    if cfg!(miri) {
        return 1_700_000_000;
    }
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Clock {
    fn new() -> Clock {
        let unix = unix_now() as i64;
        Clock {
            started: Instant::now(),
            epoch: unix - 2,
            skew: AtomicU32::new(0),
        }
    }

    fn tick(&self) {
        let at = Instant::now();
        let read = self.read_at(at);
        let started = self.started;
        TICK.with(|t| t.set(Some(Tick { at, started, read })));
    }

    fn now(&self) -> u32 {
        self.read().0
    }

    /// Server time in seconds and the LRU stamp (nanoseconds since start), as of this
    /// thread's last tick: the figures the tick worked out, if this store ticked last (as in
    /// the server, one store per process), else worked out again from its time.
    #[inline]
    fn read(&self) -> (u32, u64) {
        match TICK.with(Cell::get) {
            Some(t) if t.started == self.started && self.skew.load(Ordering::Relaxed) == 0 => {
                t.read
            }
            Some(t) => self.read_at(t.at),
            None => self.read_at(self.started),
        }
    }

    fn read_at(&self, at: Instant) -> (u32, u64) {
        let elapsed = at.saturating_duration_since(self.started);
        let secs = u32::try_from(elapsed.as_secs()).unwrap_or(u32::MAX - 2) + 2;
        let now = secs.saturating_add(self.skew.load(Ordering::Relaxed));
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        (now, nanos)
    }
}

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
}

impl Store {
    /// A cache holding at most `memory_limit_bytes` (keys, values and per-item overhead),
    /// refusing values longer than `max_item_size`.
    pub fn new(memory_limit_bytes: usize, max_item_size: usize) -> Store {
        Store {
            shards: {
                // A random key per store for the maps (std's own source of randomness).
                let seed = std::collections::hash_map::RandomState::new().hash_one(SHARD_SEED);
                let hash = KeyHash { seed };
                (0..SHARDS).map(|_| Mutex::new(Shard::new(hash))).collect()
            },
            seed: SHARD_SEED,
            mem_used: AtomicUsize::new(0),
            mem_limit: memory_limit_bytes,
            max_item_size,
            clock: Clock::new(),
            flush_at: AtomicU32::new(0),
            counters: StoreCounters::default(),
        }
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

    /// True if `item` is invalid now: expired or flushed.
    fn dead(&self, item: &Item, now: u32) -> bool {
        if item.exptime != 0 && item.exptime <= now {
            return true;
        }
        let flush_at = self.flush_at.load(Ordering::Relaxed);
        flush_at != 0 && flush_at <= now && item.time < flush_at
    }

    /// Finds a live item; reclaims it if dead.
    fn find<'s>(&self, shard: &'s mut Shard, key: &[u8], now: u32) -> Option<(u32, &'s Arc<Item>)> {
        let (i, dead) = match shard.lookup(key) {
            Some((i, it)) => (i, self.dead(it, now)),
            None => return None,
        };
        if dead {
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

    fn evict(&self, shard: &mut Shard, i: u32) {
        let now = self.now();
        if let Some(item) = shard.remove(i) {
            if !self.dead(&item, now) {
                self.counters.evictions.fetch_add(1, Ordering::Relaxed);
            }
            self.mem_used.fetch_sub(item.size(), Ordering::Relaxed);
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
            key: item.key.clone(),
            value: item.value.clone(),
            flags: item.flags,
            cas: item.cas,
            exptime,
            time: item.time,
        });
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
        if data.len() > self.max_item_size {
            return StoreResult::TooLarge;
        }
        let (now, used) = self.clock.read();
        let exptime = self.expiry(exptime);
        let own = self.shard_of(key);
        let mut shard = lock(&self.shards[own]);
        let old = self
            .find(&mut shard, key, now)
            .map(|(i, it)| (i, it.clone()));
        let (value, flags, exptime): (Arc<[u8]>, u32, u32) = match (mode, &old) {
            (Mode::Add, Some(_)) => return StoreResult::NotStored,
            (Mode::Cas, None) => return StoreResult::NotFound,
            (Mode::Replace | Mode::Append | Mode::Prepend, None) => return StoreResult::NotStored,
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
        let item = Item {
            key: old
                .as_ref()
                .map_or_else(|| key.into(), |(_, it)| it.key.clone()),
            value,
            flags,
            cas: shard.next_cas(own),
            exptime,
            time: now,
        };
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
        if size > freed && !self.make_room(shard, own, size - freed, old.map(|(i, _)| i)) {
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
        let (now, used) = self.clock.read();
        let own = self.shard_of(key);
        let mut shard = lock(&self.shards[own]);
        let Some((i, item)) = self.find(&mut shard, key, now) else {
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
        let (key, flags, exptime, time, size) = (
            item.key.clone(),
            item.flags,
            item.exptime,
            item.time,
            item.size(),
        );
        let new_item = Item {
            key,
            value: digits.into(),
            flags,
            cas: shard.next_cas(own),
            exptime,
            time,
        };
        let old = Some((i, size));
        match self.put(&mut shard, own, used, old, new_item) {
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

/// Locks a shard; a panic in another thread holding it cannot leave the data inconsistent in a
/// way that matters more than losing the server, so poisoning is ignored.
fn lock(m: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
