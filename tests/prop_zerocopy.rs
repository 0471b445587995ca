//! Model-based property test of `ZeroCopy`'s bookkeeping, with no system call (so it also runs
//! under Miri): the fake kernel of `sendbuf_testkit::kernel` accepts random prefixes of each send
//! (or `EAGAIN`, or `ENOBUFS` for a zero-copy attempt), gives each zero-copy send the next value
//! of its 32-bit counter (starting anywhere, wrapping at `u32::MAX`) and reports completions as
//! the real one does: in order and coalesced into ranges, flagged copied or not; and, beyond
//! what TCP does, out of order, overlapping and duplicated.
//!
//! After every step the buffer's invariants hold, the bytes offered to the kernel are exactly
//! the next bytes of the stream, zero copy is asked for exactly when it should be, the
//! `ZeroCopy`'s counter and statistics match the kernel's, steals are refused while anything is
//! pending or held, and each pinned value has been dropped at most once and *exactly* when the
//! model says: once its last byte is sent and the zero-copy sends that read it, and all older
//! ones, have completed (never before a send that read it completed, and not later either). At
//! the end the kernel completes everything: every value is dropped, the buffer is empty and
//! nothing leaked.
//!
//! A few ops over a simple buffer; `tests/prop_model.rs` runs the same kernel interleaved with
//! every other `WriteBuffer` operation. The seed is fixed and nothing is persisted: every run
//! checks the same cases.
// `len() == 0` is meant: pending bytes. `is_empty()` also counts bytes the kernel holds.
// The kernel derives `Arbitrary` under `cfg(fuzzing)`, which only the fuzz crate declares.

use sendbuf_testkit::kernel;
use sendbuf_testkit::util;

use kernel::{Answer, Kernel, Report};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use sendbuf::{Stealable, WriteBuffer, ZeroCopy};
use util::{Counted, DropCount};

const CASES: u32 = if cfg!(miri) { 6 } else { 512 };
const MAX_OPS: usize = if cfg!(miri) { 24 } else { 80 };

#[derive(Debug, Clone)]
enum Op {
    /// Format `len` bytes into scratch.
    Format(u16),
    /// Pin a value of `len` bytes (copied into scratch below the flatten threshold).
    Pin(u16),
    /// One `send_with`; the kernel answers with `answer`.
    Send(Answer),
    /// The kernel reports a completion.
    Complete(Report),
    /// Try to steal the buffer.
    Steal,
}

#[derive(Debug, Clone)]
struct Input {
    start_id: u32,
    threshold: usize,
    stop_when_copied: bool,
    flatten: usize,
    chunk: usize,
    ops: Vec<Op>,
}

fn op() -> impl Strategy<Value = Op> {
    let answer = prop_oneof![
        6 => any::<u32>().prop_map(Answer::Accept),
        1 => Just(Answer::All),
        1 => Just(Answer::WouldBlock),
        1 => any::<u32>().prop_map(Answer::NoBufs),
        1 => Just(Answer::OverReport),
    ];
    let report = prop_oneof![
        4 => (any::<u8>(), any::<bool>()).prop_map(|(k, copied)| Report::InOrder { k, copied }),
        1 => (any::<u8>(), any::<u8>(), any::<bool>())
            .prop_map(|(back, k, copied)| Report::Overlapping { back, k, copied }),
        2 => (any::<u8>(), any::<u8>(), any::<bool>())
            .prop_map(|(pick, len, copied)| Report::Early { pick, len, copied }),
        1 => any::<u8>().prop_map(|back| Report::Stale { back, copied: false }),
    ];
    prop_oneof![
        3 => (0..200u16).prop_map(Op::Format),
        3 => prop_oneof![0..64u16, 0..3000u16].prop_map(Op::Pin),
        5 => answer.prop_map(Op::Send),
        3 => report.prop_map(Op::Complete),
        1 => Just(Op::Steal),
    ]
}

fn input() -> impl Strategy<Value = Input> {
    let start_id = prop_oneof![Just(0u32), (u32::MAX - 8)..=u32::MAX, any::<u32>()];
    (
        start_id,
        prop_oneof![Just(0usize), Just(1), Just(100), Just(1000)],
        any::<bool>(),
        prop_oneof![Just(0usize), Just(1024)],
        prop_oneof![Just(64usize), Just(256), Just(4096)],
        vec(op(), 1..MAX_OPS),
    )
        .prop_map(
            |(start_id, threshold, stop_when_copied, flatten, chunk, ops)| Input {
                start_id,
                threshold,
                stop_when_copied,
                flatten,
                chunk,
                ops,
            },
        )
}

/// A pinned value in the model: its place in the stream and its drop counter.
struct Value {
    start: u64,
    end: u64,
    drops: DropCount,
}

struct Model {
    /// Every byte queued, in order.
    wire: Vec<u8>,
    /// Bytes the kernel accepted so far.
    sent: u64,
    values: Vec<Value>,
    kernel: Kernel,
    /// Bytes of values and scratch generated (deterministic filler).
    fill: u8,
}

impl Model {
    /// Whether value `v` must be released by now: its last byte is sent and, if zero-copy sends
    /// read any of it, the last of those and every older zero-copy send have been reported
    /// complete (the buffer releases completed sends in order).
    fn must_be_released(&self, v: &Value) -> bool {
        v.end <= self.sent
            && self
                .kernel
                .last_reader_end(v.start, v.end)
                .is_none_or(|end| end <= self.kernel.through())
    }

    /// Whether value `v` may be released: no zero-copy send that read any of its bytes is
    /// still unreported.
    fn may_be_released(&self, v: &Value) -> bool {
        v.end <= self.sent && !self.kernel.reads(v.start, v.end)
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len)
            .map(|_| {
                self.fill = self.fill.wrapping_mul(31).wrapping_add(7);
                self.fill
            })
            .collect()
    }

    fn send(&mut self, buf: &mut WriteBuffer, zc: &mut ZeroCopy, answer: Answer) {
        let pending = &self.wire[self.sent as usize..];
        if let Some(sent) = self.kernel.send(zc, buf, self.sent, pending, answer) {
            self.sent += sent.n as u64;
        }
    }
}

fn check(model: &Model, buf: &WriteBuffer, zc: &ZeroCopy) {
    buf.check_invariants();
    model.kernel.check(zc);
    for (i, v) in model.values.iter().enumerate() {
        let drops = v.drops.get();
        assert!(drops <= 1, "value {i} dropped {drops} times");
        if drops == 1 {
            assert!(
                model.may_be_released(v),
                "value {i} [{}, {}) released while the kernel may still read it",
                v.start,
                v.end
            );
        }
        assert_eq!(
            drops == 1,
            model.must_be_released(v),
            "value {i} [{}, {}): released {} but the model says {}",
            v.start,
            v.end,
            drops == 1,
            model.must_be_released(v)
        );
    }
    let pending = model.wire.len() as u64 - model.sent;
    assert_eq!(buf.pending_len() as u64, pending);
}

fn run(input: &Input) {
    let mut buf = WriteBuffer::with_block_size(input.chunk);
    buf.set_flatten_threshold(input.flatten);
    let (kernel, mut zc) = Kernel::new(
        true,
        input.start_id,
        input.threshold,
        input.stop_when_copied,
    );
    let mut m = Model {
        wire: Vec::new(),
        sent: 0,
        values: Vec::new(),
        kernel,
        fill: 1,
    };

    for op in &input.ops {
        match *op {
            Op::Format(len) => {
                let bytes = m.bytes(len as usize);
                buf.put_slice(&bytes);
                m.wire.extend_from_slice(&bytes);
            }
            Op::Pin(len) => {
                let bytes = m.bytes(len as usize);
                let start = m.wire.len() as u64;
                m.wire.extend_from_slice(&bytes);
                let (value, drops) = Counted::new(bytes);
                buf.pin(value);
                if (len as usize) < input.flatten || len == 0 {
                    assert_eq!(drops.get(), 1, "a copied or empty value is dropped at once");
                } else {
                    m.values.push(Value {
                        start,
                        end: m.wire.len() as u64,
                        drops,
                    });
                }
            }
            Op::Send(answer) => m.send(&mut buf, &mut zc, answer),
            Op::Complete(report) => {
                m.kernel.complete(&mut zc, &mut buf, report);
            }
            Op::Steal => {
                let empty = !buf.has_pending() && buf.held_len() == 0;
                match buf.steal() {
                    Ok(_) => {
                        assert!(empty, "stolen while pending or held");
                        assert_eq!(buf.storage_bytes(), 0);
                    }
                    Err(err) => {
                        assert!(!empty, "steal refused on an idle buffer");
                        assert_eq!((err.pending, err.held), (buf.pending_len(), buf.held_len()));
                    }
                }
            }
        }
        check(&m, &buf, &zc);
    }

    // The connection winds down: everything is sent, then the kernel completes every send.
    while buf.has_pending() {
        m.send(&mut buf, &mut zc, Answer::All);
        check(&m, &buf, &zc);
    }
    while m.kernel.complete(&mut zc, &mut buf, Report::ALL).is_some() {
        check(&m, &buf, &zc);
    }
    assert_eq!(zc.outstanding(), 0);
    assert_eq!(buf.held_len(), 0);
    assert!(buf.is_empty());
    for (i, v) in m.values.iter().enumerate() {
        assert_eq!(v.drops.get(), 1, "value {i} leaked");
    }
    assert!(buf.steal().is_ok());
}

#[test]
fn zero_copy_bookkeeping_matches_the_model() {
    let config = Config {
        cases: CASES,
        failure_persistence: None,
        ..Config::default()
    };
    let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &[0x2c; 32]);
    let mut runner = TestRunner::new_with_rng(config, rng);
    runner
        .run(&input(), |input| {
            run(&input);
            Ok(())
        })
        .unwrap();
}
