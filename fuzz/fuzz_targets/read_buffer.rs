//! `ReadBuffer`, the side that takes untrusted bytes: reads of fuzz-chosen pieces of what the
//! peer sent (with end of stream, errors, interruptions and a lying reader), reserves of any size
//! (far past the limit too), consumes and over-consumes, limit changes, clears and steals, applied
//! to the buffer and to a model; after each one the two must agree on the bytes received and not
//! consumed, and storage must stay under the limit.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: sendbuf_testkit::read_model::ReadInput| {
    sendbuf_testkit::read_model::run(&input);
});
