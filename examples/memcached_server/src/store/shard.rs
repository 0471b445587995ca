//! One shard of the store: its key map and its least-recently-used list over a slab of nodes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use super::hash::KeyHash;
use super::slabs::Slabs;
use super::{Item, SHARDS};

/// No LRU neighbour.
pub(super) const NIL: u32 = u32::MAX;

/// A node of a shard's LRU list, holding one item.
#[derive(Debug)]
pub(super) struct Node {
    pub(super) item: Option<Arc<Item>>,
    pub(super) prev: u32,
    next: u32,
    /// When it was last used ([`Clock::read`] nanoseconds): compares LRU tails across shards.
    ///
    /// [`Clock::read`]: super::clock::Clock::read
    pub(super) used: u64,
}

/// One shard: a map from key to node index, and a doubly linked LRU list over a node slab
/// (head = most recently used).
#[derive(Debug)]
pub(super) struct Shard {
    pub(super) map: HashMap<Arc<[u8]>, u32, KeyHash>,
    pub(super) nodes: Vec<Node>,
    free: Vec<u32>,
    head: u32,
    pub(super) tail: u32,
    pub(super) bytes: usize,
    /// CAS uniques handed out by this shard (see [`Shard::next_cas`]).
    cas_count: u64,
    /// Items stored since start.
    pub(super) total_items: u64,
    /// The per-class figures, which linking and unlinking an item keep.
    slabs: Arc<Slabs>,
}

impl Shard {
    pub(super) fn new(hash: KeyHash, slabs: Arc<Slabs>) -> Shard {
        Shard {
            map: HashMap::with_hasher(hash),
            nodes: Vec::new(),
            free: Vec::new(),
            head: NIL,
            tail: NIL,
            bytes: 0,
            cas_count: 0,
            total_items: 0,
            slabs,
        }
    }

    /// A CAS unique no other item of any shard has had: the shard's count times the number
    /// of shards plus its index (never 0). No atomic shared between shards is touched.
    pub(super) fn next_cas(&mut self, index: usize) -> u64 {
        self.cas_count += 1;
        self.cas_count * SHARDS as u64 + index as u64
    }

    /// Drops every item, keeping the counters.
    pub(super) fn clear(&mut self) -> Shard {
        let mut fresh = Shard::new(*self.map.hasher(), self.slabs.clone());
        fresh.cas_count = self.cas_count;
        fresh.total_items = self.total_items;
        for item in self.items() {
            self.slabs.unlink(item.total());
        }
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

    pub(super) fn bump(&mut self, i: u32, used: u64) {
        if self.head != i {
            self.unlink(i);
            self.push_front(i, used);
        } else {
            self.nodes[i as usize].used = used;
        }
    }

    /// When the least recently used item was last used, if there is one.
    pub(super) fn oldest(&self) -> Option<u64> {
        (self.tail != NIL).then(|| self.nodes[self.tail as usize].used)
    }

    /// The items from the most recently used to the least.
    pub(super) fn items(&self) -> impl Iterator<Item = &Arc<Item>> {
        let mut i = self.head;
        std::iter::from_fn(move || {
            let node = self.nodes.get(i as usize)?;
            i = node.next;
            node.item.as_ref()
        })
    }

    pub(super) fn lookup(&self, key: &[u8]) -> Option<(u32, &Arc<Item>)> {
        let &i = self.map.get(key)?;
        self.nodes[i as usize].item.as_ref().map(|it| (i, it))
    }

    /// Removes node `i`; returns its item.
    pub(super) fn remove(&mut self, i: u32) -> Option<Arc<Item>> {
        let item = self.nodes[i as usize].item.take()?;
        self.unlink(i);
        self.map.remove(&item.key);
        self.free.push(i);
        self.bytes -= item.size();
        self.slabs.unlink(item.total());
        Some(item)
    }

    /// Puts `item` in node `i` in place of its item, leaving the LRU order as it is.
    pub(super) fn replace(&mut self, i: u32, item: Arc<Item>) {
        self.bytes += item.size();
        let total = item.total();
        match self.nodes[i as usize].item.replace(item) {
            Some(prev) => {
                self.bytes -= prev.size();
                // A touch or a meta note keeps the size: nothing to count.
                let old = prev.total();
                if old != total {
                    self.slabs.unlink(old);
                    self.slabs.link(total);
                }
            }
            None => self.slabs.link(total),
        }
    }

    /// Puts `item` in (replacing node `old` if given), at the front of the LRU.
    pub(super) fn insert(&mut self, old: Option<u32>, item: Arc<Item>, used: u64) {
        if let Some(i) = old {
            self.replace(i, item);
            self.bump(i, used);
            return;
        }
        self.bytes += item.size();
        self.slabs.link(item.total());
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

/// Locks a shard; a panic in another thread holding it cannot leave the data inconsistent in a
/// way that matters more than losing the server, so poisoning is ignored.
pub(super) fn lock(m: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
