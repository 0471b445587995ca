//! The store operations the meta protocol adds to the classic ones: a get that can create the
//! item, change its expiry and hand out the recache win; a delete that can invalidate the item or clear its value instead; an incr/decr that can
//! create the item. (The store that can keep a stale value, [`Store::meta_store`], is the
//! classic store's core.) Each holds its shard's lock from the lookup to the answer, so what it
//! reports is what it did.
//!
//! Expiry times here are server times (see [`Store::expiry`]), worked out by the protocol when
//! it parses the request.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::shard::{lock, Shard};
use super::{DeleteResult, DeltaResult, Item, Store, StoreResult};

/// What a meta get found (or made), and what it did to it.
#[derive(Debug)]
pub struct MetaHit {
    /// The item as the request left it.
    pub item: Arc<Item>,
    /// Its expiry before the request changed it (0 if the request created it).
    pub exptime: u32,
    /// The request created it (vivify on miss).
    pub created: bool,
    /// A recache win had been handed out before this request (`Z`).
    pub win_sent: bool,
    /// This request won the recache (`W`).
    pub won: bool,
    /// A meta get had fetched it before this request (`h`).
    pub fetched: bool,
    /// Server time of its last meta access before this request (`l`).
    pub atime: u32,
}

/// What a meta delete does to the item it finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removal {
    /// Removes it.
    Delete,
    /// Keeps it, marked stale with a new CAS unique and no win handed out; with the new
    /// expiry if given.
    Invalidate(Option<u32>),
    /// Keeps it with an empty value and these client flags, its expiry unchanged.
    ClearValue(u32),
}

/// Outcome of a meta incr/decr.
#[derive(Debug)]
pub enum MetaDelta {
    /// The new value (or the initial one, if the request created the item).
    Value {
        /// The number the item now holds.
        value: u64,
        /// The item as the request left it.
        item: Arc<Item>,
        /// Its expiry before the request changed it (0 if the request created it).
        exptime: u32,
        /// The request created it.
        created: bool,
    },
    /// No such item, and none was to be created.
    NotFound,
    /// The stored value is not a decimal 64-bit unsigned number.
    NonNumeric,
    /// CAS given and the item changed since.
    Exists,
    /// Not enough memory for the new value.
    NoMemory,
    /// Not enough memory to create the item.
    NotCreated,
}

impl Store {
    /// Looks up a live item without marking it used (`me`).
    pub fn peek(&self, key: &[u8]) -> Option<Arc<Item>> {
        let now = self.now();
        let mut shard = lock(self.shard(key));
        self.find(&mut shard, key, now).map(|(_, it)| it.clone())
    }

    /// Looks up a live item for a meta get; on a miss, creates an empty one if `vivify` (flags
    /// 0, never expiring until `decide` says otherwise). `decide(exptime, created, win_sent)`
    /// returns the item's new expiry and whether the request's flags won the recache; a stale
    /// item whose win was not handed out yet wins too. With `bump`, the item is marked fetched,
    /// accessed now and recently used.
    pub fn meta_get(
        &self,
        key: &[u8],
        vivify: bool,
        bump: bool,
        decide: impl FnOnce(u32, bool, bool) -> (u32, bool),
    ) -> Option<MetaHit> {
        let (now, used) = self.clock.read();
        let own = self.shard_of(key);
        let mut shard = lock(&self.shards[own]);
        let (i, created) = match self.find(&mut shard, key, now) {
            Some((i, _)) => (i, false),
            None if vivify => {
                let cas = shard.next_cas(own);
                let item = Item::new(key.into(), Arc::from(&[][..]), 0, cas, 0, now);
                (self.create(&mut shard, own, used, key, item)?, true)
            }
            None => return None,
        };
        let mut item = shard.nodes[i as usize].item.clone()?;
        let exptime = item.exptime;
        let fetched = item.meta.fetched.load(Ordering::Relaxed);
        let win_sent = item.meta.win_sent.load(Ordering::Relaxed);
        let atime = item.meta.atime.load(Ordering::Relaxed);
        let (new_exptime, won) = decide(exptime, created, win_sent);
        item = retime(&mut shard, i, item, new_exptime);
        let won = won || (item.stale && !win_sent);
        if won {
            item.meta.win_sent.store(true, Ordering::Relaxed);
        }
        if bump {
            item.meta.fetched.store(true, Ordering::Relaxed);
            item.meta.atime.store(now, Ordering::Relaxed);
            shard.bump(i, used);
        }
        Some(MetaHit {
            item,
            exptime,
            created,
            win_sent,
            won,
            fetched,
            atime,
        })
    }

    /// A meta delete: does `how` to a live item, if `cas` (when given) is its CAS unique.
    pub fn meta_delete(&self, key: &[u8], cas: Option<u64>, how: Removal) -> DeleteResult {
        let (now, used) = self.clock.read();
        let own = self.shard_of(key);
        let mut shard = lock(&self.shards[own]);
        let Some((i, item)) = self.find(&mut shard, key, now) else {
            return DeleteResult::NotFound;
        };
        if cas.is_some_and(|cas| cas != item.cas) {
            return DeleteResult::Exists;
        }
        let mut next = item.successor();
        let old = Some((i, item.size()));
        next.cas = shard.next_cas(own);
        match how {
            Removal::Delete => self.unaccount(shard.remove(i)),
            Removal::Invalidate(exptime) => {
                next.stale = true;
                next.meta.win_sent.store(false, Ordering::Relaxed);
                next.exptime = exptime.unwrap_or(next.exptime);
                shard.replace(i, Arc::new(next));
            }
            Removal::ClearValue(flags) => {
                next.value = Arc::from(&[][..]);
                next.flags = flags;
                // Never short of memory: the item shrinks.
                self.put(&mut shard, own, used, old, next);
            }
        }
        DeleteResult::Deleted
    }

    /// A meta incr/decr ([`Store::delta`]); on a miss, creates the item holding `initial` if
    /// given (flags 0). `retime(exptime, created)` returns the item's new expiry.
    #[allow(clippy::too_many_arguments)] // the command's fields, as the protocol gives them
    pub fn meta_delta(
        &self,
        key: &[u8],
        incr: bool,
        delta: u64,
        cas: u64,
        initial: Option<u64>,
        retime_to: impl FnOnce(u32, bool) -> u32,
    ) -> MetaDelta {
        let (now, used) = self.clock.read();
        let own = self.shard_of(key);
        let mut shard = lock(&self.shards[own]);
        let (value, i, created) = match self.delta_in(&mut shard, own, key, incr, delta, cas) {
            DeltaResult::Value(n, _) => match shard.lookup(key) {
                Some((i, _)) => (n, i, false),
                None => return MetaDelta::NoMemory,
            },
            DeltaResult::NotFound => {
                let Some(initial) = initial else {
                    return MetaDelta::NotFound;
                };
                let cas = shard.next_cas(own);
                let digits: Arc<[u8]> = initial.to_string().into_bytes().into();
                let item = Item::new(key.into(), digits, 0, cas, 0, now);
                match self.create(&mut shard, own, used, key, item) {
                    Some(i) => (initial, i, true),
                    None => return MetaDelta::NotCreated,
                }
            }
            DeltaResult::NonNumeric => return MetaDelta::NonNumeric,
            DeltaResult::Exists => return MetaDelta::Exists,
            DeltaResult::NoMemory => return MetaDelta::NoMemory,
        };
        let Some(item) = shard.nodes[i as usize].item.clone() else {
            return MetaDelta::NoMemory;
        };
        let exptime = item.exptime;
        let new_exptime = retime_to(exptime, created);
        let item = retime(&mut shard, i, item, new_exptime);
        MetaDelta::Value {
            value,
            item,
            exptime,
            created,
        }
    }

    /// Stores a new item for an absent `key` in shard number `own`; its node, or `None` if
    /// there is no room.
    fn create(
        &self,
        shard: &mut Shard,
        own: usize,
        used: u64,
        key: &[u8],
        item: Item,
    ) -> Option<u32> {
        match self.put(shard, own, used, None, item) {
            StoreResult::Stored(_) => shard.lookup(key).map(|(i, _)| i),
            _ => None,
        }
    }
}

/// Gives the item in node `i` a new expiry (a new version in its place, as `touch` does) if
/// `exptime` differs from its own; returns the item now in the node.
fn retime(shard: &mut Shard, i: u32, item: Arc<Item>, exptime: u32) -> Arc<Item> {
    if exptime == item.exptime {
        return item;
    }
    let next = Arc::new(Item {
        exptime,
        ..item.successor()
    });
    shard.replace(i, next.clone());
    next
}
