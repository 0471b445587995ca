//! Model-based property test of `ZeroCopy`'s bookkeeping, with no system call (so it also runs
//! under Miri): a fake kernel accepts random prefixes of each send (or `EAGAIN`, or `ENOBUFS`
//! for a zero-copy attempt), gives each zero-copy send the next value of its 32-bit counter
//! (starting anywhere, wrapping at `u32::MAX`) and reports completions as the real one does:
//! in order and coalesced into ranges, flagged copied or not; and, beyond what TCP does, out
//! of order and duplicated.
//!
//! After every step the buffer's invariants hold, the bytes offered to the kernel are exactly
//! the next bytes of the stream, zero copy is asked for exactly when it should be, steals are
//! refused while anything is pending or held, and each pinned value has been dropped at most
//! once and *exactly* when the model says: once its last byte is sent and the zero-copy sends
//! that read it, and all older ones, have completed (never before a send that read it
//! completed, and not later either). At the end the kernel completes everything: every value is dropped, the
//! buffer is empty and nothing leaked.
//!
//! The seed is fixed and nothing is persisted: every run checks the same cases.
// `len() == 0` is meant: pending bytes. `is_empty()` also counts bytes the kernel holds.
#![allow(clippy::len_zero)]

mod util;

use std::io;

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use sendbuf::{BufferStealer, WriteBuffer, ZeroCopy};
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

#[derive(Debug, Clone, Copy)]
enum Answer {
    /// Accept `n % (offered + 1)` bytes (so sometimes none, sometimes all).
    Accept(u32),
    /// Accept everything offered.
    All,
    /// `EAGAIN`.
    WouldBlock,
    /// `ENOBUFS` to a zero-copy attempt, then accept `n % (offered + 1)` bytes copying.
    NoBufs(u32),
}

#[derive(Debug, Clone, Copy)]
enum Report {
    /// The oldest `1 + k % unreported` unreported sends, as one range (what TCP does).
    InOrder { k: u8, copied: bool },
    /// A run of `1 + len % 3` sends starting at a random unreported one: out of order.
    Early { pick: u8, len: u8, copied: bool },
    /// A range the kernel already reported, or values never used: must change nothing.
    Stale { back: u8 },
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
    ];
    let report = prop_oneof![
        4 => (any::<u8>(), any::<bool>()).prop_map(|(k, copied)| Report::InOrder { k, copied }),
        2 => (any::<u8>(), any::<u8>(), any::<bool>())
            .prop_map(|(pick, len, copied)| Report::Early { pick, len, copied }),
        1 => any::<u8>().prop_map(|back| Report::Stale { back }),
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

/// A zero-copy send the fake kernel accepted.
struct KernelSend {
    id: u32,
    start: u64,
    end: u64,
    reported: bool,
}

struct Model {
    /// Every byte queued, in order.
    wire: Vec<u8>,
    /// Bytes the kernel accepted so far.
    sent: u64,
    values: Vec<Value>,
    /// Zero-copy sends, oldest first.
    kernel: Vec<KernelSend>,
    next_id: u32,
    copied: bool,
    threshold: usize,
    stop_when_copied: bool,
    /// Bytes of values and scratch generated (deterministic filler).
    fill: u8,
}

impl Model {
    /// Whether value `v` must be released by now: its last byte is sent and, if zero-copy sends
    /// read any of it, the last of those and every older zero-copy send have been reported
    /// complete (the buffer releases completed sends in order).
    fn must_be_released(&self, v: &Value) -> bool {
        let last_reader = self
            .kernel
            .iter()
            .rfind(|s| s.start < v.end && v.start < s.end);
        v.end <= self.sent
            && match last_reader {
                None => true,
                Some(last) => self
                    .kernel
                    .iter()
                    .filter(|s| s.start <= last.start)
                    .all(|s| s.reported),
            }
    }

    /// Whether value `v` may be released: no zero-copy send that read any of its bytes is
    /// still unreported.
    fn may_be_released(&self, v: &Value) -> bool {
        v.end <= self.sent
            && self
                .kernel
                .iter()
                .filter(|s| s.start < v.end && v.start < s.end)
                .all(|s| s.reported)
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len)
            .map(|_| {
                self.fill = self.fill.wrapping_mul(31).wrapping_add(7);
                self.fill
            })
            .collect()
    }
}

fn check(model: &Model, buf: &WriteBuffer, zc: &ZeroCopy) {
    buf.check_invariants();
    assert_eq!(
        zc.next_id(),
        model.next_id,
        "counter out of step with the kernel"
    );
    let unreported = model.kernel.iter().filter(|s| !s.reported).count();
    assert!(zc.outstanding() >= unreported);
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
    assert_eq!(buf.len() as u64, pending);
}

fn run(input: &Input) {
    let mut buf = WriteBuffer::with_capacity(input.chunk);
    buf.set_flatten_threshold(input.flatten);
    let mut zc = ZeroCopy::assume_enabled(input.start_id);
    zc.set_threshold(input.threshold);
    zc.set_stop_when_copied(input.stop_when_copied);
    let mut m = Model {
        wire: Vec::new(),
        sent: 0,
        values: Vec::new(),
        kernel: Vec::new(),
        next_id: input.start_id,
        copied: false,
        threshold: input.threshold,
        stop_when_copied: input.stop_when_copied,
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
            Op::Send(answer) => send(&mut m, &mut buf, &mut zc, answer),
            Op::Complete(report) => complete(&mut m, &mut buf, &mut zc, report),
            Op::Steal => {
                let empty = buf.len() == 0 && buf.held_len() == 0;
                match buf.steal() {
                    Ok(_) => {
                        assert!(empty, "stolen while pending or held");
                        assert_eq!(buf.storage_bytes(), 0);
                    }
                    Err(err) => {
                        assert!(!empty, "steal refused on an idle buffer");
                        assert_eq!((err.pending, err.held), (buf.len(), buf.held_len()));
                    }
                }
            }
        }
        check(&m, &buf, &zc);
    }

    // The connection winds down: everything is sent, then the kernel completes every send.
    while buf.len() > 0 {
        send(&mut m, &mut buf, &mut zc, Answer::All);
        check(&m, &buf, &zc);
    }
    while m.kernel.iter().any(|s| !s.reported) {
        let k = u8::MAX;
        complete(
            &mut m,
            &mut buf,
            &mut zc,
            Report::InOrder { k, copied: false },
        );
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

fn send(m: &mut Model, buf: &mut WriteBuffer, zc: &mut ZeroCopy, answer: Answer) {
    let pending = buf.len();
    let expect_zc = pending >= m.threshold && !(m.copied && m.stop_when_copied);
    let mut calls = Vec::new();
    let sent = m.sent;
    let wire = &m.wire;
    let result = zc.send_with(buf, |iov, zero_copy| {
        let offered: usize = iov.iter().map(|s| s.len()).sum();
        // The iovecs are exactly the next bytes of the stream.
        let mut at = sent as usize;
        for s in iov {
            assert_eq!(&**s, &wire[at..at + s.len()], "offered the wrong bytes");
            at += s.len();
        }
        calls.push(zero_copy);
        match answer {
            Answer::WouldBlock => Err(io::ErrorKind::WouldBlock.into()),
            Answer::NoBufs(_) if zero_copy => Err(io::Error::from_raw_os_error(libc::ENOBUFS)),
            Answer::All => Ok(offered),
            Answer::Accept(n) | Answer::NoBufs(n) => Ok(n as usize % (offered + 1)),
        }
    });
    if pending == 0 {
        assert!(calls.is_empty(), "a send with nothing pending made a call");
        assert_eq!(result.unwrap(), 0);
        return;
    }
    match (expect_zc, answer) {
        (true, Answer::NoBufs(_)) => assert_eq!(calls, [true, false], "ENOBUFS → copying retry"),
        (expect, _) => assert_eq!(calls, [expect], "zero copy asked for wrongly"),
    }
    match result {
        Ok(n) => {
            let zero_copy = *calls.last().unwrap();
            if zero_copy && n > 0 {
                m.kernel.push(KernelSend {
                    id: m.next_id,
                    start: m.sent,
                    end: m.sent + n as u64,
                    reported: false,
                });
                m.next_id = m.next_id.wrapping_add(1);
            }
            m.sent += n as u64;
        }
        Err(e) => assert_eq!(e.kind(), io::ErrorKind::WouldBlock),
    }
}

fn complete(m: &mut Model, buf: &mut WriteBuffer, zc: &mut ZeroCopy, report: Report) {
    let unreported: Vec<usize> = (0..m.kernel.len())
        .filter(|&i| !m.kernel[i].reported)
        .collect();
    let (lo, hi, copied, covered) = match report {
        Report::InOrder { k, copied } => {
            if unreported.is_empty() {
                return;
            }
            // TCP completes in order: the oldest unreported sends, consecutive counter values.
            let take = 1 + k as usize % unreported.len();
            let first = unreported[0];
            let run: Vec<usize> = (first..m.kernel.len())
                .take_while(|&i| !m.kernel[i].reported)
                .take(take)
                .collect();
            let last = *run.last().unwrap();
            (m.kernel[first].id, m.kernel[last].id, copied, run)
        }
        Report::Early { pick, len, copied } => {
            if unreported.is_empty() {
                return;
            }
            let first = unreported[pick as usize % unreported.len()];
            let run: Vec<usize> = (first..m.kernel.len())
                .take_while(|&i| !m.kernel[i].reported)
                .take(1 + len as usize % 3)
                .collect();
            let last = *run.last().unwrap();
            (m.kernel[first].id, m.kernel[last].id, copied, run)
        }
        Report::Stale { back } => {
            // Values already reported, or never handed out: must release nothing new.
            let reported: Vec<u32> = m
                .kernel
                .iter()
                .filter(|s| s.reported)
                .map(|s| s.id)
                .collect();
            let id = if reported.is_empty() || back % 2 == 0 {
                m.next_id.wrapping_add(1 + u32::from(back))
            } else {
                reported[back as usize % reported.len()]
            };
            (id, id, false, Vec::new())
        }
    };
    let before: Vec<usize> = m.values.iter().map(|v| v.drops.get()).collect();
    let ignored = zc.stats().ignored;
    for &i in &covered {
        m.kernel[i].reported = true;
    }
    if copied {
        m.copied = true;
    }
    zc.complete(buf, lo, hi, copied);
    if covered.is_empty() {
        assert_eq!(
            zc.stats().ignored,
            ignored + 1,
            "a stale value was not ignored"
        );
        let after: Vec<usize> = m.values.iter().map(|v| v.drops.get()).collect();
        assert_eq!(before, after, "a stale completion released something");
    }
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
