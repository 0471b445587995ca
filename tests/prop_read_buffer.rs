//! Model-based property test of `ReadBuffer`: random sequences of reads (pieces of what the peer
//! sent, end of stream, `WouldBlock`, resets, `Interrupted` retries, a reader that over-reports),
//! reserves of every size (far past the limit too), consumes and over-consumes, limit changes,
//! clears and steals, with and without a pool, checked against a model after each operation.
//!
//! The model and the operations are the `read_buffer` fuzz target's
//! (`sendbuf_testkit::read_model`), so `cargo test` alone runs the same checks as
//! `cargo fuzz run read_buffer`; this file only generates the inputs. The seed is fixed and
//! nothing is persisted; a failure prints the shrunk input to paste into
//! `tests/fuzz_regressions.rs`.

use sendbuf_testkit::read_model;

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use read_model::{Idle, ReadInput, ReadOp, ReadPool, Size};

/// Miri runs a few short cases with small limits, natively the full range.
const CASES: u32 = if cfg!(miri) { 4 } else { 256 };
const OPS: usize = if cfg!(miri) { 24 } else { 64 };
const MAX_LEN: u32 = if cfg!(miri) {
    4096
} else {
    read_model::MAX_MAX_LEN as u32
};

fn idle() -> impl Strategy<Value = Idle> {
    prop_oneof![
        Just(Idle::Eof),
        Just(Idle::WouldBlock),
        Just(Idle::Reset),
        Just(Idle::OverReport),
    ]
}

fn size() -> impl Strategy<Value = Size> {
    prop_oneof![
        // Mostly small; sometimes up to the largest limit (the limit itself bounds it).
        4 => prop_oneof![3 => 0..512u32, 1 => 0..=MAX_LEN].prop_map(Size::Fits),
        2 => any::<u16>().prop_map(Size::Over),
        1 => any::<u64>().prop_map(Size::Raw),
        1 => Just(Size::Max),
    ]
}

fn op() -> impl Strategy<Value = ReadOp> {
    prop_oneof![
        4 => vec(any::<u8>(), 0..600).prop_map(ReadOp::Deliver),
        6 => (0..6u8, prop_oneof![0..32u16, any::<u16>()], idle())
            .prop_map(|(interrupts, max, idle)| ReadOp::Read { interrupts, max, idle }),
        2 => size().prop_map(ReadOp::Reserve),
        4 => any::<u16>().prop_map(ReadOp::Consume),
        1 => any::<u16>().prop_map(ReadOp::TryConsumePast),
        1 => prop_oneof![0..64u32, 0..8192u32, 0..=MAX_LEN].prop_map(ReadOp::SetMaxLen),
        1 => Just(ReadOp::Clear),
        1 => Just(ReadOp::Steal),
    ]
}

fn input() -> impl Strategy<Value = ReadInput> {
    let capacity = prop_oneof![0..16u16, any::<u16>()];
    let pool = prop_oneof![
        Just(ReadPool::None),
        Just(ReadPool::Local),
        Just(ReadPool::Shared)
    ];
    (capacity, pool, vec(op(), 1..OPS)).prop_map(|(capacity, pool, ops)| ReadInput {
        capacity,
        pool,
        ops,
    })
}

#[test]
fn read_sequences_match_the_model() {
    let config = Config {
        cases: CASES,
        failure_persistence: None,
        ..Config::default()
    };
    let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &[0x3d; 32]);
    let mut runner = TestRunner::new_with_rng(config, rng);
    runner
        .run(&input(), |input| {
            read_model::run(&input);
            Ok(())
        })
        .unwrap();
}
