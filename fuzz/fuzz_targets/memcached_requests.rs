//! The memcached example's request handling (`Session::process` with its parsers, store and
//! counters) fed an arbitrary byte stream in arbitrary reads, with the output drained by partial
//! writes, as its worker loop drives it. See `src/lib.rs` for the input layout and checks.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    sendbuf_fuzz::run(data);
});
