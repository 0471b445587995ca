//! Memcached's slab classes, as a way of counting: the store allocates per item, but `stats
//! items` and `stats slabs` report each item in the class memcached 1.6 would put it in, with
//! the class table memcached builds with its defaults (`slabs_init`: `-n 48`, `-f 1.25`, 1 MiB
//! pages, chunks of at most half a page, the largest class exactly that) and memcached's item
//! size (`ITEM_ntotal`: a 48-byte header, the key and a NUL, 4 bytes of client flags when they
//! are not 0, the value with its `\r\n`, and 8 bytes of CAS).
//!
//! Per class the store keeps, in relaxed atomics updated only when an item is linked or
//! unlinked (never on a read): the items, the chunks they take and the bytes memcached would
//! request for them (`mem_requested`); and what happened to items of the class: evictions,
//! reclaims, stores refused for memory. The pages of a class are what memcached's allocator
//! would need for the chunks held: `ceil(chunks / chunks_per_page)`; unlike memcached's pages
//! they are given back when the items go.

use std::sync::atomic::{AtomicU64, Ordering};

/// Bytes of memcached's item header (`sizeof(item)` on a 64-bit build).
pub const ITEM_HEADER: usize = 48;
/// Bytes of the CAS unique memcached stores in each item (CAS is on by default).
pub const CAS_BYTES: usize = 8;
/// Memcached's smallest chunk beyond the header (`-n`, `settings.chunk_size`).
pub const CHUNK_MIN: usize = 48;
/// Memcached's growth factor between classes (`-f`).
pub const FACTOR: f64 = 1.25;
/// Memcached's slab page (`settings.slab_page_size`).
pub const PAGE_SIZE: usize = 1 << 20;
/// Memcached's largest chunk (`settings.slab_chunk_size_max`, half a page): larger items are
/// stored as several chunks of this size.
pub const CHUNK_MAX: usize = PAGE_SIZE / 2;
/// Chunks are aligned to this (`CHUNK_ALIGN_BYTES`).
const CHUNK_ALIGN: usize = 8;
/// Memcached's `MAX_NUMBER_OF_SLAB_CLASSES`: class ids are below it.
pub const MAX_CLASSES: usize = 64;

/// The bytes memcached's item of this key, value and flags takes (`ITEM_ntotal`).
pub fn item_total(key: usize, value: usize, flags: u32) -> usize {
    let suffix = if flags == 0 { 0 } else { 4 };
    ITEM_HEADER + key + 1 + suffix + value + 2 + CAS_BYTES
}

/// Memcached's default class table: `sizes[id]` is the chunk size of class `id` (1-based;
/// `sizes[0]` is unused).
#[derive(Debug)]
pub struct SlabTable {
    sizes: Vec<usize>,
}

impl Default for SlabTable {
    fn default() -> Self {
        SlabTable::new()
    }
}

impl SlabTable {
    /// The table as `slabs_init` builds it with memcached's defaults.
    pub fn new() -> SlabTable {
        let mut sizes = vec![0];
        let mut size = ITEM_HEADER + CHUNK_MIN;
        while sizes.len() < MAX_CLASSES - 1 && (size as f64) < CHUNK_MAX as f64 / FACTOR {
            if size % CHUNK_ALIGN != 0 {
                size += CHUNK_ALIGN - size % CHUNK_ALIGN;
            }
            sizes.push(size);
            // As memcached's `size *= factor` on an unsigned int: truncated.
            size = (size as f64 * FACTOR) as usize;
        }
        sizes.push(CHUNK_MAX);
        SlabTable { sizes }
    }

    /// The largest class id.
    pub fn largest(&self) -> usize {
        self.sizes.len() - 1
    }

    /// The chunk size of class `id`.
    pub fn chunk_size(&self, id: usize) -> usize {
        self.sizes[id]
    }

    /// Chunks of class `id` in a page.
    pub fn per_page(&self, id: usize) -> usize {
        PAGE_SIZE / self.sizes[id]
    }

    /// The class of an item of `total` bytes (memcached's `slabs_clsid`; larger than the
    /// largest chunk: the largest class, whose chunks memcached chains for it).
    pub fn class_of(&self, total: usize) -> usize {
        (1 + self.sizes[1..].partition_point(|&s| s < total)).min(self.largest())
    }

    /// Chunks an item of `total` bytes takes: one, or for an item larger than the largest
    /// chunk, as many largest chunks as it fills (memcached takes the header and the last
    /// piece from smaller classes; they are counted here as whole largest chunks).
    pub fn chunks(total: usize) -> usize {
        if total <= CHUNK_MAX {
            1
        } else {
            total.div_ceil(CHUNK_MAX)
        }
    }
}

/// What the store counts for one class. Cache-line aligned: stores of one class from several
/// threads share its line, not their neighbours'.
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct ClassStats {
    /// Items held.
    pub number: AtomicU64,
    /// Chunks they take.
    pub chunks: AtomicU64,
    /// Their memcached sizes, summed (`mem_requested`).
    pub requested: AtomicU64,
    /// Live items evicted to make room.
    pub evicted: AtomicU64,
    /// ...of which had an expiry time.
    pub evicted_nonzero: AtomicU64,
    /// ...of which had never been fetched.
    pub evicted_unfetched: AtomicU64,
    /// Seconds since the last use of the last item evicted.
    pub evicted_time: AtomicU64,
    /// Expired or flushed items taken from an LRU tail.
    pub reclaimed: AtomicU64,
    /// ...of which had never been fetched.
    pub expired_unfetched: AtomicU64,
    /// Stores refused because evicting could not make room.
    pub outofmemory: AtomicU64,
}

/// The class table and the figures of each class, shared by the store and its shards.
#[derive(Debug)]
pub struct Slabs {
    /// Memcached's class table.
    pub table: SlabTable,
    classes: Box<[ClassStats]>,
}

impl Default for Slabs {
    fn default() -> Self {
        let table = SlabTable::new();
        let classes = (0..=table.largest())
            .map(|_| ClassStats::default())
            .collect();
        Slabs { table, classes }
    }
}

impl Slabs {
    /// The figures of class `id`.
    pub fn class(&self, id: usize) -> &ClassStats {
        &self.classes[id]
    }

    /// The class ids, smallest first.
    pub fn ids(&self) -> std::ops::RangeInclusive<usize> {
        1..=self.table.largest()
    }

    /// The class of an item of memcached size `total`, and its figures.
    pub fn of(&self, total: usize) -> (usize, &ClassStats) {
        let id = self.table.class_of(total);
        (id, &self.classes[id])
    }

    /// An item of memcached size `total` was linked.
    pub fn link(&self, total: usize) {
        self.count(total, |n| n);
    }

    /// An item of memcached size `total` was unlinked.
    pub fn unlink(&self, total: usize) {
        self.count(total, u64::wrapping_neg);
    }

    /// Adds an item's figures, each passed through `sign`, to its class.
    fn count(&self, total: usize, sign: fn(u64) -> u64) {
        let (_, c) = self.of(total);
        let r = Ordering::Relaxed;
        c.number.fetch_add(sign(1), r);
        c.chunks.fetch_add(sign(SlabTable::chunks(total) as u64), r);
        c.requested.fetch_add(sign(total as u64), r);
    }

    /// Pages class `id` needs for the chunks it holds.
    pub fn pages(&self, id: usize) -> u64 {
        let chunks = self.classes[id].chunks.load(Ordering::Relaxed);
        chunks.div_ceil(self.table.per_page(id) as u64)
    }

    /// True if one more item of memcached size `total` would need a page more than its class
    /// holds now.
    pub fn needs_page(&self, total: usize) -> bool {
        let (id, c) = self.of(total);
        let chunks = c.chunks.load(Ordering::Relaxed) + SlabTable::chunks(total) as u64;
        chunks.div_ceil(self.table.per_page(id) as u64) > self.pages(id)
    }

    /// The bytes of all the pages the classes need (`total_malloced`).
    pub fn malloced(&self) -> u64 {
        self.ids().map(|id| self.pages(id)).sum::<u64>() * PAGE_SIZE as u64
    }

    /// Zeroes the event counters (`stats reset`), not what describes the items held.
    pub fn reset(&self) {
        for c in self.classes.iter() {
            for counter in [
                &c.evicted,
                &c.evicted_nonzero,
                &c.evicted_unfetched,
                &c.evicted_time,
                &c.reclaimed,
                &c.expired_unfetched,
                &c.outofmemory,
            ] {
                counter.store(0, Ordering::Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_memcached_1_6_defaults() {
        // From `memcached -vv` 1.6.18 and its `stats slabs`.
        let t = SlabTable::new();
        assert_eq!(t.largest(), 39);
        assert_eq!((t.chunk_size(1), t.per_page(1)), (96, 10922));
        assert_eq!((t.chunk_size(2), t.per_page(2)), (120, 8738));
        assert_eq!((t.chunk_size(31), t.per_page(31)), (82792, 12));
        assert_eq!((t.chunk_size(38), t.per_page(38)), (394840, 2));
        assert_eq!((t.chunk_size(39), t.per_page(39)), (524288, 2));
        assert_eq!(t.class_of(1), 1);
        assert_eq!(t.class_of(96), 1);
        assert_eq!(t.class_of(97), 2);
        assert_eq!(t.class_of(2 << 20), 39);
        assert_eq!(item_total(1, 10, 0), 70);
        assert_eq!(item_total(2, 66570, 5), 66635);
    }
}
