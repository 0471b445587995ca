//! The memcached example's meta commands: `memcached_requests`' harness on a stream whose lines
//! start with `mg`, `ms`, `md`, `ma`, `mn` or `me` (see `run_meta` in `src/lib.rs`), read in
//! arbitrary pieces; the output must not depend on how the stream was split.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    sendbuf_fuzz::run_meta(data);
});
