//! `stats slabs` and `stats items` by memcached's slab classes, and the reclaim of dead items
//! at the LRU tail when storing, checked against figures of a live memcached 1.6.18.

use memcached_server::{handler, protocol, stats, store};
use std::sync::Arc;

use handler::Limits;
use protocol::Session;
use sendbuf::WriteBuffer;
use stats::Stats;
use store::{Mode, Store, StoreResult};

const MAX_ITEM: usize = 1024 * 1024;

fn session() -> (Session, Arc<Store>) {
    let store = Arc::new(Store::new(64 << 20, MAX_ITEM));
    let limits = Limits {
        max_item_size: MAX_ITEM,
    };
    let s = Session::new(store.clone(), Arc::new(Stats::new(1)), limits);
    (s, store)
}

/// Feeds `input`, which must be consumed whole; returns the reply.
fn all(s: &mut Session, input: &[u8]) -> String {
    let mut out = WriteBuffer::new();
    let p = s.process(input, &mut out);
    assert_eq!(p.consumed, input.len());
    let mut bytes = Vec::new();
    for slice in out.io_slices() {
        bytes.extend_from_slice(slice);
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// A `set` of `len` bytes under `key`, expiring in `exptime` seconds (0: never).
fn set(key: &str, len: usize, exptime: u32) -> Vec<u8> {
    let mut cmd = format!("set {key} 0 {exptime} {len}\r\n").into_bytes();
    cmd.extend(std::iter::repeat_n(b'B', len));
    cmd.extend_from_slice(b"\r\n");
    cmd
}

/// The value of `STAT name` in a reply, if there.
fn stat(reply: &str, name: &str) -> Option<String> {
    reply
        .lines()
        .filter_map(|l| l.strip_prefix("STAT "))
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ').map(str::to_string))
}

#[test]
fn items_are_counted_in_memcached_classes() {
    let (mut s, _store) = session();
    for key in 0..10 {
        assert_eq!(all(&mut s, &set(&format!("key{key}"), 10, 0)), "STORED\r\n");
    }
    all(&mut s, &set("k", 66560, 0));
    let slabs = all(&mut s, b"stats slabs\r\n");
    let items = all(&mut s, b"stats items\r\n");
    // Expected figures from memcached 1.6.18 (Debian's, default options) after the same
    // stores: `stats slabs` gives class 1 chunk_size 96, chunks_per_page 10922, and class 31
    // chunk_size 82792, chunks_per_page 12, one page each: total_malloced 2097152.
    // `stats items` gives items:1:mem_requested 730 (10 items of 48 + 5 + 12 + 8 bytes) and
    // items:31:mem_requested 66620 (48 + 2 + 66562 + 8).
    let want_slabs = "STAT 1:chunk_size 96\r\nSTAT 1:chunks_per_page 10922\r\n\
        STAT 1:total_pages 1\r\nSTAT 1:total_chunks 10922\r\nSTAT 1:used_chunks 10\r\n\
        STAT 1:free_chunks 10912\r\nSTAT 1:free_chunks_end 0\r\n\
        STAT 31:chunk_size 82792\r\nSTAT 31:chunks_per_page 12\r\nSTAT 31:total_pages 1\r\n\
        STAT 31:total_chunks 12\r\nSTAT 31:used_chunks 1\r\nSTAT 31:free_chunks 11\r\n\
        STAT 31:free_chunks_end 0\r\nSTAT active_slabs 2\r\nSTAT total_malloced 2097152\r\n\
        END\r\n";
    assert_eq!(slabs, want_slabs);
    assert_eq!(stat(&items, "items:1:number").as_deref(), Some("10"));
    assert_eq!(
        stat(&items, "items:1:mem_requested").as_deref(),
        Some("730")
    );
    assert_eq!(stat(&items, "items:31:number").as_deref(), Some("1"));
    assert_eq!(
        stat(&items, "items:31:mem_requested").as_deref(),
        Some("66620")
    );
    // Flags take 4 bytes more (memcached's suffix): 66570 bytes with flags 5 under "k2" is
    // 66635 (memcached 1.6.18: the two items of class 31 requested 133255).
    let mut cmd = b"set k2 5 0 66570\r\n".to_vec();
    cmd.extend(std::iter::repeat_n(b'B', 66570));
    cmd.extend_from_slice(b"\r\n");
    assert_eq!(all(&mut s, &cmd), "STORED\r\n");
    let items = all(&mut s, b"stats items\r\n");
    assert_eq!(
        stat(&items, "items:31:mem_requested").as_deref(),
        Some("133255")
    );
    // cachedump lists a class's items only.
    assert_eq!(
        all(&mut s, b"stats cachedump 31 0\r\n"),
        "ITEM k2 [66570 b; 0 s]\r\nITEM k [66560 b; 0 s]\r\nEND\r\n"
    );
    // Deleting gives the items' bytes and pages back.
    all(&mut s, b"delete k\r\ndelete k2\r\n");
    let slabs = all(&mut s, b"stats slabs\r\n");
    assert_eq!(stat(&slabs, "31:used_chunks"), None);
    assert_eq!(stat(&slabs, "total_malloced").as_deref(), Some("1048576"));
    assert_eq!(
        stat(&all(&mut s, b"stats items\r\n"), "items:31:number"),
        None
    );
}

#[test]
fn a_store_reclaims_dead_items_at_the_tail_and_memory_does_not_grow() {
    // memcached's t/issue_14.t with the clock moved instead of slept.
    let (mut s, store) = session();
    for key in 0..10 {
        assert_eq!(
            all(&mut s, &set(&format!("key{key}"), 66560, 2)),
            "STORED\r\n"
        );
    }
    let first = all(&mut s, b"stats slabs\r\n");
    assert_eq!(stat(&first, "total_malloced").as_deref(), Some("1048576"));
    store.advance_clock(4);
    for key in 10..20 {
        assert_eq!(
            all(&mut s, &set(&format!("key{key}"), 66560, 2)),
            "STORED\r\n"
        );
    }
    let second = all(&mut s, b"stats slabs\r\n");
    assert_eq!(
        stat(&second, "total_malloced"),
        stat(&first, "total_malloced")
    );
    let items = all(&mut s, b"stats items\r\n");
    let n = |name: &str| -> u64 { stat(&items, name).unwrap().parse().unwrap() };
    // Every item is either held or reclaimed (none evicted), and a page holds 12.
    let (number, reclaimed) = (n("items:31:number"), n("items:31:reclaimed"));
    assert_eq!(number + reclaimed, 20, "{items}");
    assert!(number <= 12, "{items}");
    assert_eq!(n("items:31:expired_unfetched"), reclaimed);
    assert_eq!(n("items:31:evicted"), 0);
    let general = all(&mut s, b"stats\r\n");
    assert_eq!(stat(&general, "reclaimed"), Some(reclaimed.to_string()));
}

#[test]
fn an_expired_item_replaced_is_reclaimed_from_the_tail() {
    // memcached's t/issue_163.t: the store takes the expired item from the LRU tail before
    // it looks the key up, so it counts as reclaimed, not as a lookup of an expired key.
    let (mut s, store) = session();
    assert_eq!(all(&mut s, &set("key", 66560, 1)), "STORED\r\n");
    let requested = stat(&all(&mut s, b"stats items\r\n"), "items:31:mem_requested");
    assert_eq!(requested.as_deref(), Some("66622"));
    store.advance_clock(3);
    assert_eq!(all(&mut s, &set("key", 66570, 0)), "STORED\r\n");
    let items = all(&mut s, b"stats items\r\n");
    assert_eq!(stat(&items, "items:31:reclaimed").as_deref(), Some("1"));
    assert_eq!(
        stat(&items, "items:31:expired_unfetched").as_deref(),
        Some("1")
    );
    assert_eq!(
        stat(&all(&mut s, b"stats\r\n"), "get_expired").as_deref(),
        Some("0")
    );
    assert_eq!(all(&mut s, b"delete key\r\n"), "DELETED\r\n");
    assert_eq!(all(&mut s, &set("key", 66560, 0)), "STORED\r\n");
    let items = all(&mut s, b"stats items\r\n");
    assert_eq!(stat(&items, "items:31:mem_requested"), requested);
}

#[test]
fn eviction_is_counted_in_the_evicted_item_class() {
    // Room for a few large items only: the store evicts, and the class of the evicted ones
    // counts it.
    let store = Store::new(4 * 70_000, MAX_ITEM);
    let value = vec![b'v'; 66560];
    for key in 0..6u8 {
        store.tick();
        assert!(matches!(
            store.store(Mode::Set, &[b'k', key], &value, 0, 0, 0),
            StoreResult::Stored(_)
        ));
    }
    let c = store.slabs().class(31);
    let load = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(load(&c.evicted), 2);
    assert_eq!(load(&c.evicted_unfetched), 2);
    assert_eq!(load(&c.number), 4);
    assert_eq!(load(&c.reclaimed), 0);
}
