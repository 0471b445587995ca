//! Model-based property test: random sequences of every `WriteBuffer` operation (format and
//! commit or roll back, reserved length fields, pins of every owner kind, flatten threshold
//! changes, gathers with limits and writes into a writer that takes a random prefix, advances,
//! over-advances, clears, steals with and without a pool, water marks and their events, hard
//! limits with the `try_` methods, and zero-copy sends into a fake kernel with their completions:
//! in order and coalesced, early, stale, flagged copied, `ENOBUFS`, the counter wrapping),
//! checked against a simple model after each operation.
//!
//! The model and the operations are the fuzz target's (`sendbuf_testkit::model`), so
//! `cargo test` alone runs the same checks as `cargo fuzz run partial_writes`; this file only
//! generates the inputs. The seed is fixed and nothing is persisted: every run checks the same
//! cases, and a failure prints the shrunk input to paste into `tests/fuzz_regressions.rs`.

use sendbuf_testkit::model;

use model::{
    Amount, Answer, FrameEnd, Header, Input, Item, Op, Order, Owner, PoolChoice, Report, Width,
    Writer, ZeroCopyChoice,
};
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

/// Sizes of the generated inputs: Miri runs a few small cases, natively the full range.
struct Sizes {
    cases: u32,
    ops: usize,
    /// Raw `chunk_size` (the buffer's chunk is `1 + raw`).
    chunk: u16,
    /// Raw lengths of `put_bytes` / `put_uninit` items.
    block: u16,
    /// Raw pinned value lengths.
    pin: u16,
}

const SIZES: Sizes = if cfg!(miri) {
    Sizes {
        cases: 4,
        ops: 24,
        chunk: 256,
        block: 600,
        pin: 700,
    }
} else {
    Sizes {
        cases: 256,
        ops: 64,
        chunk: model::MAX_CHUNK_SIZE as u16,
        block: model::MAX_BLOCK as u16,
        pin: model::MAX_PIN as u16,
    }
};

fn order() -> impl Strategy<Value = Order> {
    prop_oneof![Just(Order::Big), Just(Order::Little), Just(Order::Native)]
}

fn int_item() -> impl Strategy<Value = Item> {
    prop_oneof![
        any::<u8>().prop_map(Item::U8),
        any::<i8>().prop_map(Item::I8),
        (any::<u16>(), order()).prop_map(|(v, o)| Item::U16(v, o)),
        (any::<i16>(), order()).prop_map(|(v, o)| Item::I16(v, o)),
        (any::<u32>(), order()).prop_map(|(v, o)| Item::U32(v, o)),
        (any::<i32>(), order()).prop_map(|(v, o)| Item::I32(v, o)),
        (any::<u64>(), order()).prop_map(|(v, o)| Item::U64(v, o)),
        (any::<i64>(), order()).prop_map(|(v, o)| Item::I64(v, o)),
    ]
}

/// Mostly small, sometimes as large as a format gets (larger than any chunk).
fn block_len() -> impl Strategy<Value = u16> {
    prop_oneof![3 => 0..64u16, 1 => 0..=SIZES.block]
}

fn item() -> impl Strategy<Value = Item> {
    prop_oneof![
        4 => int_item(),
        2 => vec(any::<u8>(), 0..48).prop_map(Item::Slice),
        1 => (any::<u8>(), block_len()).prop_map(|(byte, len)| Item::Repeat { byte, len }),
        1 => (any::<u8>(), block_len()).prop_map(|(byte, len)| Item::Uninit { byte, len }),
        1 => (vec(any::<char>(), 0..8), any::<u64>())
            .prop_map(|(key, n)| Item::Text { key: key.into_iter().collect(), n }),
        1 => vec(any::<u8>(), 0..48).prop_map(Item::Io),
        1 => (any::<u8>(), any::<u16>(), any::<u32>(), any::<u32>(), any::<u64>()).prop_map(
            |(opcode, status, body_len, opaque, cas)| Item::Header(Header {
                opcode,
                status,
                body_len,
                opaque,
                cas,
            })
        ),
    ]
}

fn owner() -> impl Strategy<Value = Owner> {
    prop_oneof![
        Just(Owner::Vec),
        Just(Owner::Boxed),
        Just(Owner::Arc),
        Just(Owner::Static),
        Just(Owner::String),
        Just(Owner::Counted),
    ]
}

/// Small (flattened by default), around 512, or anything.
fn pin_len() -> impl Strategy<Value = u16> {
    prop_oneof![0..64u16, 500..530u16, 0..=SIZES.pin]
}

fn writer() -> impl Strategy<Value = Writer> {
    prop_oneof![
        6 => any::<u16>().prop_map(Writer::Accept),
        2 => Just(Writer::AcceptAll),
        1 => Just(Writer::Fail),
        1 => Just(Writer::OverReport),
    ]
}

fn amount() -> impl Strategy<Value = Amount> {
    prop_oneof![
        1 => Just(Amount::Zero),
        1 => Just(Amount::All),
        4 => any::<u16>().prop_map(Amount::Some),
    ]
}

fn answer() -> impl Strategy<Value = Answer> {
    prop_oneof![
        6 => any::<u32>().prop_map(Answer::Accept),
        2 => Just(Answer::All),
        1 => Just(Answer::WouldBlock),
        1 => any::<u32>().prop_map(Answer::NoBufs),
        1 => Just(Answer::OverReport),
    ]
}

fn report() -> impl Strategy<Value = Report> {
    // Mostly not copied: a copied completion turns zero copy off for the rest of the case.
    let copied = || prop::bool::weighted(0.1);
    prop_oneof![
        4 => (any::<u8>(), copied()).prop_map(|(k, copied)| Report::InOrder { k, copied }),
        1 => (any::<u8>(), any::<u8>(), copied())
            .prop_map(|(back, k, copied)| Report::Overlapping { back, k, copied }),
        2 => (any::<u8>(), any::<u8>(), copied())
            .prop_map(|(pick, len, copied)| Report::Early { pick, len, copied }),
        1 => (any::<u8>(), copied()).prop_map(|(back, copied)| Report::Stale { back, copied }),
    ]
}

/// Thresholds that the pending bytes are often above and often below.
fn zero_copy_threshold() -> impl Strategy<Value = u16> {
    prop_oneof![Just(0u16), Just(1), 0..2048u16, Just(16 * 1024)]
}

fn op() -> impl Strategy<Value = Op> {
    let width = prop_oneof![Just(Width::U16), Just(Width::U32), Just(Width::U64)];
    let end = prop_oneof![
        3 => Just(FrameEnd::Commit),
        1 => Just(FrameEnd::Rollback),
        1 => Just(FrameEnd::RollbackUnfilled),
    ];
    prop_oneof![
        4 => (vec(item(), 0..6), prop::bool::weighted(0.8))
            .prop_map(|(items, commit)| Op::Format { items, commit }),
        2 => (vec(item(), 0..3), width, any::<bool>(), vec(item(), 0..4), end).prop_map(
            |(head, width, little_endian, body, end)| Op::Framed {
                head,
                width,
                little_endian,
                body,
                end,
            }
        ),
        2 => vec(any::<u8>(), 0..48).prop_map(Op::PutSlice),
        4 => (owner(), pin_len(), any::<u8>())
            .prop_map(|(kind, len, offset)| Op::Pin { kind, len, offset }),
        1 => prop_oneof![Just(0u16), 0..=model::MAX_THRESHOLD as u16]
            .prop_map(Op::SetFlattenThreshold),
        4 => (
            option::of(0..8u8),
            option::of(prop_oneof![1..16u16, any::<u16>()]),
            writer()
        )
            .prop_map(|(max_iovecs, max_bytes, writer)| Op::Write {
                max_iovecs,
                max_bytes,
                writer,
            }),
        3 => amount().prop_map(Op::Advance),
        1 => any::<u16>().prop_map(Op::TryAdvancePast),
        1 => Just(Op::Clear),
        1 => Just(Op::Steal),
        1 => option::of(prop_oneof![
            // Equal marks, small marks that the ops cross often, anything.
            (0..4096u16).prop_map(|m| (m, m)),
            (0..2048u16, 0..4096u16),
            (any::<u16>(), any::<u16>()),
        ])
        .prop_map(Op::SetWatermarks),
        1 => Just(Op::TakePressureEvent),
        1 => option::of(prop_oneof![0..64u16, 0..16384u16, any::<u16>()]).prop_map(Op::SetHardLimit),
        4 => answer().prop_map(Op::ZeroCopySend),
        1 => (any::<u16>(), prop::bool::weighted(0.7))
            .prop_map(|(n, zero_copy)| Op::RecordSend { n, zero_copy }),
        4 => report().prop_map(Op::Complete),
        1 => zero_copy_threshold().prop_map(Op::SetZeroCopyThreshold),
    ]
}

fn zero_copy() -> impl Strategy<Value = ZeroCopyChoice> {
    (
        prop::bool::weighted(0.9),
        any::<u8>(),
        zero_copy_threshold(),
        any::<bool>(),
    )
        .prop_map(
            |(enabled, first_id, threshold, stop_when_copied)| ZeroCopyChoice {
                enabled,
                first_id,
                threshold,
                stop_when_copied,
            },
        )
}

fn pool() -> impl Strategy<Value = PoolChoice> {
    prop_oneof![
        Just(PoolChoice::None),
        Just(PoolChoice::Local),
        Just(PoolChoice::Shared)
    ]
}

fn input() -> impl Strategy<Value = Input> {
    let chunk = prop_oneof![0..16u16, 0..SIZES.chunk];
    (chunk, pool(), zero_copy(), vec(op(), 1..SIZES.ops)).prop_map(
        |(chunk_size, pool, zero_copy, ops)| Input {
            chunk_size,
            pool,
            zero_copy,
            ops,
        },
    )
}

#[test]
fn operation_sequences_match_the_model() {
    let config = Config {
        cases: SIZES.cases,
        failure_persistence: None,
        ..Config::default()
    };
    let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &[0x5e; 32]);
    let mut runner = TestRunner::new_with_rng(config, rng);
    runner
        .run(&input(), |input| {
            model::run(&input);
            Ok(())
        })
        .unwrap();
}
