//! Inputs the `partial_writes` fuzz target found, replayed through the same model
//! (`fuzz/src/model.rs`) by `cargo test`.
//!
//! Each test is the `cargo fuzz fmt` output of a minimised crash (see `fuzz/README.md`), with the
//! commit it was found on and what was wrong. A test for a bug not fixed yet is `#[ignore]`d with
//! the reason, so the suite stays green; fixing the bug means removing the `#[ignore]`.

// The model derives `Arbitrary` under `cfg(fuzzing)`, which only the fuzz crate declares.
#![allow(unexpected_cfgs)]

#[path = "../fuzz/src/model.rs"]
mod model;

use model::{Input, Op};

/// Found on `ffb7c10` within four minutes (`crash-5f7741a3…`); fixed by `0e84b4d`, whose
/// `acquire` takes a free chunk that is big enough. After a format that outgrew its chunk was
/// drained, the next format into the empty buffer allocated a new chunk although a chunk-sized
/// one was idle on the free list. With `with_capacity(64)`:
///
/// ```text
/// buf.put_slice(&[0; 65]);  // relocates to an oversized chunk, which becomes the tail
/// buf.clear();              // capacity() == 64: the first chunk, idle on the free list
/// buf.put_slice(b"x");      // capacity() was 128: a new 64-byte chunk was allocated
/// ```
///
/// `Scratch::recycle` emptied the oversized chunk's slot and pushed it on the free list last, so
/// `Scratch::acquire` popped that slot (capacity 0) and allocated, while the idle chunk stayed
/// unused. Every drained oversized format thus cost the next small one an allocation.
#[test]
fn a_drained_buffer_reuses_its_idle_chunk_after_an_oversized_format() {
    model::run(&Input {
        chunk_size: 0,
        ops: vec![
            Op::PutSlice(vec![173, 255]),
            Op::Clear,
            Op::Format {
                items: vec![],
                commit: false,
            },
        ],
    });
}
