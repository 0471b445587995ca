//! The memcached example's request handling (`Session::process` with its parsers, store and
//! counters) fed an arbitrary byte stream in arbitrary reads, with the output drained by partial
//! writes, as its worker loop drives it. See `src/memcached.rs` for the input layout and checks.
#![no_main]

// The example's modules, at the crate root where they expect each other (`crate::store`...).
// The harness uses a part of their API only.
#[allow(dead_code)]
#[path = "../../examples/memcached_server/ascii.rs"]
mod ascii;
#[allow(dead_code)]
#[path = "../../examples/memcached_server/binary.rs"]
mod binary;
#[allow(dead_code)]
#[path = "../../examples/memcached_server/protocol.rs"]
mod protocol;
#[allow(dead_code)]
#[path = "../../examples/memcached_server/stats.rs"]
mod stats;
#[allow(dead_code)]
#[path = "../../examples/memcached_server/store.rs"]
mod store;

#[path = "../src/memcached.rs"]
mod memcached;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    memcached::run(data);
});
