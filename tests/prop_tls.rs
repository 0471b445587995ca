//! Model-based property test of `TlsSession`: random sequences of plaintext queued and pinned,
//! sends that take any prefix (or nothing), requests read in any pieces, the client's key
//! updates, `close_notify` and garbage from the peer, every byte sent decrypted by rustls's
//! client and checked against what was queued (`sendbuf_testkit::tls_model`, which the
//! `tls_session` fuzz target drives too), with records made by the session or by rustls, under
//! each suite of TLS 1.3 and 1.2. The seed is fixed and nothing is persisted.
//!
//! Not under Miri: rustls's `aws-lc-rs` provider runs C and assembly.
#![cfg(all(feature = "rustls", not(miri), target_endian = "little"))]

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use sendbuf_testkit::tls_model::{run, TlsInput, TlsOp, MAX_VALUE, VARIANTS};

fn op() -> impl Strategy<Value = TlsOp> {
    prop_oneof![
        4 => (0..300u16, any::<u8>()).prop_map(|(len, byte)| TlsOp::Put { len, byte }),
        3 => (prop_oneof![0..2048u32, 0..=MAX_VALUE as u32], any::<u8>())
            .prop_map(|(len, byte)| TlsOp::Pin { len, byte }),
        4 => (prop_oneof![Just(0u16), 1..64u16, 1..u16::MAX], any::<u8>())
            .prop_map(|(take, rounds)| TlsOp::Send { take, rounds }),
        2 => (1..3000u16, 1..400u16).prop_map(|(len, piece)| TlsOp::Request { len, piece }),
        1 => Just(TlsOp::Close),
        1 => Just(TlsOp::KeyUpdate),
    ]
}

/// Operations, then (half the time) garbage from the peer, which ends the session.
fn ops() -> impl Strategy<Value = Vec<TlsOp>> {
    (
        vec(op(), 0..40),
        proptest::option::of(vec(any::<u8>(), 1..64)),
    )
        .prop_map(|(mut ops, garbage)| {
            ops.extend(garbage.map(TlsOp::Garbage));
            ops
        })
}

#[test]
fn tls_sessions_agree_with_the_model() {
    let config = Config {
        cases: 128,
        failure_persistence: None,
        ..Config::default()
    };
    let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &[7; 32]);
    let mut runner = TestRunner::new_with_rng(config, rng);
    runner
        .run(&(0..VARIANTS, ops()), |(variant, ops)| {
            run(&TlsInput { variant, ops });
            Ok(())
        })
        .unwrap();
}
