//! Advancing and writing out: the panic and the checked twin, their error and its conversion,
//! misbehaving writers, and the gather limits of `IoVecBuilder` and `write_to_with`.

use sendbuf_testkit::util;

use std::error::Error as _;
use std::io::{self, IoSlice, Write};

use sendbuf::{AdvanceError, GatherLimits, IoVecBuilder, WriteBuffer, INLINE_IOVECS};
use util::{assert_pending, chunk_list, drain, pending, Counted, PrefixWriter, XorShift};

/// Header | pinned 1000 (drop-counted) | trailer: 3 + 1000 + 2 bytes, three segments.
fn three_segments() -> (WriteBuffer, util::DropCount, Vec<u8>) {
    let mut buf = WriteBuffer::new();
    let value: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
    let (counted, drops) = Counted::new(value.clone());
    buf.set_flatten_threshold(512); // the value is pinned, whatever the default
    buf.put_slice(b"hdr");
    buf.pin(counted);
    buf.put_slice(b"\r\n");
    let mut model = b"hdr".to_vec();
    model.extend_from_slice(&value);
    model.extend_from_slice(b"\r\n");
    assert_eq!(buf.segments(), 3);
    (buf, drops, model)
}

// ---------------------------------------------------------------------------------------------
// advance / try_advance.
// ---------------------------------------------------------------------------------------------

#[test]
#[should_panic(expected = "cannot advance past 4 bytes: only 3 bytes are pending")]
fn advance_past_the_end_panics_naming_both_numbers() {
    let mut buf = WriteBuffer::new();
    buf.put_slice(b"abc");
    buf.advance(4);
}

#[test]
#[should_panic(expected = "cannot advance past 1 bytes: only 0 bytes are pending")]
fn advance_on_an_empty_buffer_panics() {
    WriteBuffer::new().advance(1);
}

#[test]
#[should_panic(expected = "cannot advance past 1006 bytes: only 1005 bytes are pending")]
fn advance_past_the_end_of_several_segments_panics() {
    let (mut buf, _drops, _model) = three_segments();
    buf.advance(1006);
}

#[test]
fn advance_by_zero_and_by_everything() {
    let mut buf = WriteBuffer::new();
    buf.advance(0);
    assert_pending(&buf, b"");
    buf.put_slice(b"abc");
    buf.advance(0);
    assert_pending(&buf, b"abc");
    buf.advance(3);
    assert_pending(&buf, b"");
    buf.advance(0);
    assert_pending(&buf, b"");
}

#[test]
fn try_advance_refuses_and_leaves_the_buffer_unchanged() {
    let (mut buf, drops, model) = three_segments();
    buf.advance(500);
    let chunks = chunk_list(&buf);
    for requested in [506, 507, 1000, usize::MAX] {
        let err = buf.try_advance(requested).unwrap_err();
        assert_eq!(
            err,
            AdvanceError {
                requested,
                available: 505
            }
        );
        assert_eq!(chunk_list(&buf), chunks);
        assert_eq!(buf.segments(), 2);
        assert_pending(&buf, &model[500..]);
        assert_eq!(drops.get(), 0, "a refused advance released the value");
    }
    assert_eq!(buf.try_advance(505), Ok(()));
    assert_pending(&buf, b"");
    assert_eq!(drops.get(), 1);
    assert_eq!(
        buf.try_advance(1),
        Err(AdvanceError {
            requested: 1,
            available: 0
        })
    );
}

#[test]
fn advance_error_displays_converts_and_downcasts() {
    let err = AdvanceError {
        requested: 4,
        available: 3,
    };
    assert_eq!(
        err.to_string(),
        "cannot advance past 4 bytes: only 3 bytes are pending"
    );
    assert!(err.source().is_none());
    let boxed: Box<dyn std::error::Error + Send + Sync> = Box::new(err);
    assert_eq!(boxed.downcast_ref::<AdvanceError>(), Some(&err));

    let io: io::Error = err.into();
    assert_eq!(io.kind(), io::ErrorKind::InvalidInput);
    assert_eq!(io.to_string(), err.to_string());
    let inner = io.into_inner().expect("the AdvanceError is kept inside");
    assert_eq!(inner.downcast_ref::<AdvanceError>(), Some(&err));
}

#[test]
fn try_advance_composes_with_question_mark_in_io_code() {
    fn send(buf: &mut WriteBuffer, n: usize) -> io::Result<()> {
        buf.try_advance(n)?;
        Ok(())
    }
    let mut buf = WriteBuffer::new();
    buf.put_slice(b"abc");
    let err = send(&mut buf, 9).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    assert_pending(&buf, b"abc");
    send(&mut buf, 3).unwrap();
    assert_pending(&buf, b"");
}

// ---------------------------------------------------------------------------------------------
// Misbehaving writers.
// ---------------------------------------------------------------------------------------------

/// A writer that reports whatever it is told, and records what it was offered.
struct Liar {
    reply: io::Result<usize>,
    calls: usize,
}

impl Write for Liar {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[IoSlice::new(buf)])
    }
    fn write_vectored(&mut self, _bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.calls += 1;
        match &self.reply {
            Ok(n) => Ok(*n),
            Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_writer_that_accepts_nothing_gives_write_zero() {
    let (mut buf, drops, model) = three_segments();
    let mut w = Liar {
        reply: Ok(0),
        calls: 0,
    };
    let err = buf.write_to(&mut w).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::WriteZero);
    assert_eq!(w.calls, 1);
    assert_pending(&buf, &model);
    assert_eq!(drops.get(), 0);
}

#[test]
fn a_writer_that_claims_more_than_offered_gives_invalid_data() {
    let (mut buf, drops, model) = three_segments();
    buf.advance(10);
    let before = chunk_list(&buf);
    for claimed in [996, 2000, usize::MAX] {
        let mut w = Liar {
            reply: Ok(claimed),
            calls: 0,
        };
        let err = buf.write_to(&mut w).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        let msg = err.to_string();
        assert!(
            msg.contains(&claimed.to_string()) && msg.contains("995"),
            "{msg}"
        );
        assert_eq!(chunk_list(&buf), before);
        assert_pending(&buf, &model[10..]);
        assert_eq!(drops.get(), 0);
    }

    // With a byte budget, "offered" is the budget, not everything pending.
    let mut w = Liar {
        reply: Ok(101),
        calls: 0,
    };
    let err = buf
        .write_to_with(&mut w, GatherLimits::new().with_max_bytes(100))
        .unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    assert_pending(&buf, &model[10..]);
}

#[test]
fn a_writer_error_is_returned_and_changes_nothing() {
    let (mut buf, drops, model) = three_segments();
    for kind in [
        io::ErrorKind::WouldBlock,
        io::ErrorKind::Interrupted,
        io::ErrorKind::BrokenPipe,
    ] {
        let mut w = Liar {
            reply: Err(io::Error::from(kind)),
            calls: 0,
        };
        assert_eq!(buf.write_to(&mut w).unwrap_err().kind(), kind);
        assert_pending(&buf, &model);
        assert_eq!(drops.get(), 0);
    }
}

#[test]
fn write_to_on_an_empty_buffer_does_not_call_the_writer() {
    let mut buf = WriteBuffer::new();
    let mut w = Liar {
        reply: Ok(0),
        calls: 0,
    };
    assert_eq!(buf.write_to(&mut w).unwrap(), 0);
    assert_eq!(
        buf.write_to_with(&mut w, GatherLimits::new().with_max_bytes(1))
            .unwrap(),
        0
    );
    assert_eq!(w.calls, 0);
}

#[test]
fn write_to_reports_what_was_accepted() {
    let (mut buf, drops, model) = three_segments();
    let mut w = PrefixWriter::fixed(300);
    let mut sent = 0;
    while sent < model.len() {
        let n = buf.write_to(&mut w).unwrap();
        assert_eq!(n, 300.min(model.len() - sent));
        sent += n;
        assert_pending(&buf, &model[sent..]);
        assert_eq!(drops.get(), usize::from(sent >= 1003));
    }
    assert_eq!(w.out, model);
    assert_eq!(w.short, 3);
}

// ---------------------------------------------------------------------------------------------
// Gather limits.
// ---------------------------------------------------------------------------------------------

/// `n` segments alternating scratch and pinned: segment `i` is `i % 7 + 1` bytes of `i`.
fn many_segments(n: usize) -> (WriteBuffer, Vec<usize>, Vec<u8>) {
    let mut buf = WriteBuffer::new();
    buf.set_flatten_threshold(0);
    let mut lens = Vec::new();
    let mut model = Vec::new();
    for i in 0..n {
        let seg = vec![i as u8; i % 7 + 1];
        if i % 2 == 0 {
            buf.put_slice(&seg);
        } else {
            buf.pin(seg.clone());
        }
        lens.push(seg.len());
        model.extend_from_slice(&seg);
    }
    assert_eq!(buf.segments(), n);
    (buf, lens, model)
}

#[test]
fn gather_limit_clamps_its_arguments() {
    let default = GatherLimits::new();
    assert_eq!(default.max_bytes(), usize::MAX);
    assert!(default.max_iovecs() >= 16);
    #[cfg(target_os = "linux")]
    assert_eq!(default.max_iovecs(), 1024);
    assert_eq!(default.with_max_iovecs(0).max_iovecs(), 1);
    assert_eq!(
        default.with_max_iovecs(usize::MAX).max_iovecs(),
        default.max_iovecs()
    );
    assert_eq!(default.with_max_iovecs(7).max_iovecs(), 7);
    assert_eq!(default.with_max_bytes(0).max_bytes(), 1);
    assert_eq!(default.with_max_bytes(12345).max_bytes(), 12345);
    assert_eq!(IoVecBuilder::new().limits(), default);
    assert_eq!(IoVecBuilder::default().limits(), default);
}

#[test]
fn io_vec_builder_respects_max_bytes() {
    let (buf, _lens, model) = many_segments(20);
    for max in 1..=model.len() + 2 {
        let mut iov = IoVecBuilder::with_limits(GatherLimits::new().with_max_bytes(max));
        let n = iov.gather(&buf);
        let want = max.min(model.len());
        assert_eq!(n, want, "max_bytes({max})");
        assert_eq!(iov.bytes(), want);
        let got: Vec<u8> = iov.as_slices().iter().flat_map(|s| s.to_vec()).collect();
        assert_eq!(got, model[..want]);
        assert!(iov.as_slices().iter().all(|s| !s.is_empty()));
    }
}

#[test]
fn io_vec_builder_respects_max_iovecs() {
    let (buf, lens, model) = many_segments(20);
    for max in 1..=25 {
        let mut iov = IoVecBuilder::with_limits(GatherLimits::new().with_max_iovecs(max));
        let n = iov.gather(&buf);
        let k = max.min(20);
        assert_eq!(iov.as_slices().len(), k, "max_iovecs({max})");
        let want: usize = lens[..k].iter().sum();
        assert_eq!(n, want);
        for (slice, chunk) in iov.as_slices().iter().zip(buf.chunks()) {
            assert_eq!(&**slice, chunk, "whole segments");
        }
        let got: Vec<u8> = iov.as_slices().iter().flat_map(|s| s.to_vec()).collect();
        assert_eq!(got, model[..want]);
    }
}

#[test]
fn io_vec_builder_applies_both_limits_and_can_be_reused() {
    let (buf, _lens, model) = many_segments(20);
    let mut other = WriteBuffer::new();
    other.put_slice(b"xyz");
    let empty = WriteBuffer::new();
    let limit = GatherLimits::new().with_max_iovecs(3).with_max_bytes(5);
    let mut iov = IoVecBuilder::with_limits(limit);
    // Segments are 1, 2, 3... bytes: 3 iovecs hold 6 bytes, the budget cuts the third.
    assert_eq!(iov.gather(&buf), 5);
    let lens: Vec<usize> = iov.as_slices().iter().map(|s| s.len()).collect();
    assert_eq!(lens, [1, 2, 2]);
    let limit = GatherLimits::new().with_max_iovecs(2).with_max_bytes(100);
    let mut iov2 = IoVecBuilder::with_limits(limit);
    assert_eq!(iov2.gather(&buf), 3);

    // Gathering again replaces the contents; clear empties them.
    assert_eq!(iov.gather(&other), 3);
    assert_eq!(iov.as_slices().len(), 1);
    iov.clear();
    assert_eq!((iov.bytes(), iov.as_slices().len()), (0, 0));
    assert_eq!(iov.gather(&empty), 0);
    assert!(iov.as_slices().is_empty());
    drop(iov);
    assert_eq!(pending(&buf), model);
}

#[test]
fn gather_is_capped_at_iov_max_and_beyond_the_inline_storage() {
    let max = GatherLimits::new().max_iovecs();
    let n = max + 50;
    let (mut buf, lens, model) = many_segments(n);
    let mut iov = IoVecBuilder::new();
    let got = iov.gather(&buf);
    assert!(max > INLINE_IOVECS);
    assert_eq!(iov.as_slices().len(), max);
    assert_eq!(got, lens[..max].iter().sum::<usize>());
    drop(iov);

    // `write_to` sends one gather's worth per call, and the rest on the next.
    let mut out = Vec::new();
    assert_eq!(buf.write_to(&mut out).unwrap(), got);
    assert_eq!(buf.segments(), 50);
    buf.write_to(&mut out).unwrap();
    assert_eq!(out, model);
    assert_pending(&buf, b"");
}

/// Records the shape of every `write_vectored` call and accepts everything.
#[derive(Default)]
struct Recorder {
    out: Vec<u8>,
    /// (iovecs, bytes) per call.
    calls: Vec<(usize, usize)>,
}

impl Write for Recorder {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[IoSlice::new(buf)])
    }
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let bytes: usize = bufs.iter().map(|b| b.len()).sum();
        self.calls.push((bufs.len(), bytes));
        for b in bufs {
            self.out.extend_from_slice(b);
        }
        Ok(bytes)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn write_to_with_respects_the_limits() {
    let mut rng = XorShift::new(0x5EED_AD01);
    for _ in 0..if cfg!(miri) { 5 } else { 50 } {
        let (mut buf, _lens, model) = many_segments(rng.range(1, 60));
        let max_iovecs = rng.range(1, 8);
        let max_bytes = rng.range(1, 40);
        let limit = GatherLimits::new()
            .with_max_iovecs(max_iovecs)
            .with_max_bytes(max_bytes);
        let mut w = Recorder::default();
        while !buf.is_empty() {
            let before = buf.pending_len();
            let n = buf.write_to_with(&mut w, limit).unwrap();
            assert_eq!(buf.pending_len(), before - n);
            buf.check_invariants();
        }
        assert_eq!(w.out, model);
        for &(iovecs, bytes) in &w.calls {
            assert!(
                iovecs <= max_iovecs && bytes <= max_bytes,
                "{iovecs} iovecs, {bytes} bytes"
            );
        }
        // Every call but the last is full in one of the two dimensions.
        for &(iovecs, bytes) in &w.calls[..w.calls.len() - 1] {
            assert!(iovecs == max_iovecs || bytes == max_bytes);
        }
    }
}

#[test]
fn chunks_vectored_fills_at_most_dst() {
    let (buf, _lens, model) = many_segments(10);
    for cap in 0..12 {
        let mut dst = vec![IoSlice::new(&[]); cap];
        let n = buf.chunks_vectored(&mut dst);
        assert_eq!(n, cap.min(10));
        for (slice, chunk) in dst[..n].iter().zip(buf.chunks()) {
            assert_eq!(&**slice, chunk);
        }
    }
    let mut copy = buf;
    assert_eq!(drain(&mut copy), model);
}

// ---------------------------------------------------------------------------------------------
// A pinned value whose drop panics.
// ---------------------------------------------------------------------------------------------

/// Panics when dropped (once: the flag is cleared first so a second drop would not panic and
/// would show up in the counter instead).
struct PanicOnDrop {
    bytes: Vec<u8>,
    drops: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl AsRef<[u8]> for PanicOnDrop {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

impl Drop for PanicOnDrop {
    fn drop(&mut self) {
        let n = self.drops.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if n == 0 {
            panic!("PanicOnDrop dropped");
        }
    }
}

#[test]
fn a_panicking_drop_leaves_the_buffer_consistent() {
    use std::sync::atomic::{AtomicUsize, Ordering};

    let drops = std::sync::Arc::new(AtomicUsize::new(0));
    let mut buf = WriteBuffer::new();
    buf.set_flatten_threshold(512); // the value is pinned, whatever the default
    buf.put_slice(b"hdr");
    buf.pin(PanicOnDrop {
        bytes: vec![b'p'; 1000],
        drops: drops.clone(),
    });
    buf.put_slice(b"\r\n");
    let mut model = b"hdr".to_vec();
    model.extend_from_slice(&[b'p'; 1000]);
    model.extend_from_slice(b"\r\n");

    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| buf.advance(1005)));
    assert!(result.is_err(), "the value's drop panicked inside advance");
    assert_eq!(drops.load(Ordering::SeqCst), 1);

    // Whatever is still pending is a consistent suffix of the stream, past the value.
    buf.check_invariants();
    let rest = pending(&buf);
    assert!(
        rest.len() <= 2,
        "the value was counted as sent: {} left",
        rest.len()
    );
    assert!(model.ends_with(&rest));
    buf.advance(rest.len());
    assert_pending(&buf, b"");

    buf.put_slice(b"next");
    assert_eq!(drain(&mut buf), b"next");
    drop(buf);
    assert_eq!(drops.load(Ordering::SeqCst), 1, "dropped twice");
}

/// The value whose `Drop` panics is the last one pending: the queue is then drained but its
/// arrays are not yet reset (the reset comes after the release). The buffer must still be
/// exactly empty, and reuse its arrays from where they are.
#[test]
fn a_panicking_drop_of_the_last_value_leaves_the_buffer_empty_and_usable() {
    use std::sync::atomic::{AtomicUsize, Ordering};

    let drops = std::sync::Arc::new(AtomicUsize::new(0));
    let mut buf = WriteBuffer::new();
    buf.set_flatten_threshold(512);
    buf.put_slice(b"hdr");
    buf.pin(PanicOnDrop {
        bytes: vec![b'p'; 1000],
        drops: drops.clone(),
    });
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| buf.advance(1003)));
    assert!(result.is_err(), "the value's drop panicked inside advance");
    assert_eq!(drops.load(Ordering::SeqCst), 1);
    buf.check_invariants();
    assert!(buf.is_empty());
    assert_eq!((buf.pending_len(), buf.segments()), (0, 0));

    for round in 0..3u8 {
        buf.put_slice(&[round; 5]);
        buf.pin(vec![b'v'; 2000]);
        buf.put_slice(b"end");
        buf.check_invariants();
        let mut want = vec![round; 5];
        want.extend_from_slice(&[b'v'; 2000]);
        want.extend_from_slice(b"end");
        assert_eq!(drain(&mut buf), want);
        assert!(buf.is_empty());
    }
    drop(buf);
    assert_eq!(drops.load(Ordering::SeqCst), 1, "dropped twice");
}

/// Headers in two scratch chunks around pinned values, all passed by one advance: the scratch
/// bytes of each chunk are handed back once per chunk, and the cursors must agree with the
/// queue after every split point, including when a value's `Drop` panics after headers of both
/// chunks were passed.
#[test]
fn one_advance_across_headers_in_two_chunks_hands_back_each_chunk_exactly() {
    use std::sync::atomic::{AtomicUsize, Ordering};

    let queue = |panicky: Option<&std::sync::Arc<AtomicUsize>>| {
        // 16-byte chunks: three 6-byte headers fill one, the fourth goes to the next.
        let mut buf = WriteBuffer::with_block_size(16);
        buf.set_flatten_threshold(0);
        let mut model = Vec::new();
        for i in 0..4u8 {
            let header = [b'h', i, i, i, i, b':'];
            buf.put_slice(&header);
            model.extend_from_slice(&header);
            let value = vec![b'a' + i; 40];
            model.extend_from_slice(&value);
            match (i, panicky) {
                (3, Some(drops)) => buf.pin(PanicOnDrop {
                    bytes: value,
                    drops: drops.clone(),
                }),
                // `Arc`s: released inline, without handing the scratch passed so far back
                // first, so the chunk change itself must hand back the first chunk's bytes.
                _ => buf.pin(std::sync::Arc::<[u8]>::from(value)),
            }
        }
        buf.put_slice(b"end");
        model.extend_from_slice(b"end");
        (buf, model)
    };
    let (buf, model) = queue(None);
    assert!(buf.capacity() >= 32, "the headers sit in two chunks");
    drop(buf);
    for first in 0..=model.len() {
        let (mut buf, _) = queue(None);
        buf.advance(first);
        buf.check_invariants();
        assert_pending(&buf, &model[first..]);
        buf.advance(buf.pending_len());
        buf.check_invariants();
        assert!(buf.is_empty(), "split at {first}");
    }

    // The last value panics when released: every header before it was handed back.
    let drops = std::sync::Arc::new(AtomicUsize::new(0));
    let (mut buf, model) = queue(Some(&drops));
    let upto = model.len() - 3;
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| buf.advance(upto)));
    assert!(result.is_err(), "the value's drop panicked inside advance");
    assert_eq!(drops.load(Ordering::SeqCst), 1);
    buf.check_invariants();
    let rest = pending(&buf);
    assert!(model.ends_with(&rest) && rest.len() <= 3, "{rest:?}");
    buf.advance(rest.len());
    assert!(buf.is_empty());
    buf.put_slice(b"next");
    assert_eq!(drain(&mut buf), b"next");
}

#[test]
fn write_buffer_is_send() {
    fn assert_send<T: Send>(_: &T) {}
    let mut buf = WriteBuffer::new();
    buf.pin(std::borrow::Cow::<'static, [u8]>::Owned(vec![0; 1000]));
    assert_send(&buf);
    // ...so a connection's queue can move to another thread with its pinned values.
    let buf = std::thread::spawn(move || {
        buf.advance(500);
        buf
    })
    .join()
    .unwrap();
    assert_eq!(buf.pending_len(), 500);
}

/// A queue that never fully drains, with a pinned value in every message: the segment arrays
/// (iovecs, and metas holding the pinned owners) compact instead of growing, the bytes come
/// out in order, and each value is dropped exactly once.
#[test]
fn segment_arrays_stay_bounded_while_never_fully_drained() {
    use sendbuf::Stealable as _;

    let messages = if cfg!(miri) { 200 } else { 5_000 };
    let mut buf = WriteBuffer::new();
    buf.set_flatten_threshold(64);
    let values: Vec<std::sync::Arc<[u8]>> = (0..4u8)
        .map(|i| std::sync::Arc::from(&[i; 100][..]))
        .collect();
    let mut want = Vec::new();
    let mut got = Vec::new();
    let mut bounded = 0;
    for i in 0..messages {
        let header = [b'h', i as u8];
        buf.put_slice(&header);
        buf.pin_cloned(&values[i % 4]);
        want.extend_from_slice(&header);
        want.extend_from_slice(&values[i % 4]);
        // Keep about three messages pending: write out all but the last 306 bytes.
        if buf.pending_len() > 306 {
            let n = buf.pending_len() - 306;
            got.extend(pending(&buf).into_iter().take(n));
            buf.advance(n);
        }
        buf.check_invariants();
        if i == 100 {
            bounded = buf.storage_bytes();
        } else if i > 100 {
            assert!(
                buf.storage_bytes() <= bounded,
                "grew to {} bytes (was {bounded}) with 3 messages pending",
                buf.storage_bytes()
            );
        }
    }
    got.extend(drain(&mut buf));
    assert_eq!(got, want);
    for v in &values {
        assert_eq!(
            std::sync::Arc::strong_count(v),
            1,
            "a value not dropped once"
        );
    }
}
