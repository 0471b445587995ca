//! The memcached example's protocol and store, driven directly: `Session::process` on byte
//! strings with exact expected responses for both protocols, split and pipelined input, bad
//! input, and the store's semantics (expiry, CAS, eviction, values outliving replacement).
#![allow(dead_code)]

#[path = "../examples/memcached_server/ascii.rs"]
mod ascii;
#[path = "../examples/memcached_server/binary.rs"]
mod binary;
#[path = "../examples/memcached_server/protocol.rs"]
mod protocol;
#[path = "../examples/memcached_server/stats.rs"]
mod stats;
#[path = "../examples/memcached_server/store.rs"]
mod store;

use std::sync::Arc;

use protocol::{Limits, Processed, Session};
use sendbuf::WriteBuffer;
use stats::Stats;
use store::Store;

const MAX_ITEM: usize = 1024 * 1024;

fn session() -> Session {
    let store = Arc::new(Store::new(64 << 20, MAX_ITEM));
    Session::new(
        store,
        Arc::new(Stats::new(1)),
        Limits {
            max_item_size: MAX_ITEM,
        },
    )
}

/// Drains everything queued in `out`.
fn drain(out: &mut WriteBuffer) -> Vec<u8> {
    let bytes: Vec<u8> = out.chunks().flatten().copied().collect();
    out.advance(bytes.len());
    bytes
}

/// Feeds `input` in one call; returns what was processed and the response bytes.
fn run(s: &mut Session, input: &[u8]) -> (Processed, Vec<u8>) {
    let mut out = WriteBuffer::new();
    let p = s.process(input, &mut out);
    out.check_invariants();
    (p, drain(&mut out))
}

#[test]
fn ascii_set_get() {
    let mut s = session();
    let (p, r) = run(&mut s, b"set k 5 0 3\r\nabc\r\nget k\r\n");
    assert_eq!(p.consumed, 25);
    assert!(!p.close);
    assert_eq!(r, b"STORED\r\nVALUE k 5 3\r\nabc\r\nEND\r\n");
}
