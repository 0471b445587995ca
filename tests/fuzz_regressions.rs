//! Inputs the `partial_writes` fuzz target found, replayed through the same model
//! (`sendbuf_testkit::model`) by `cargo test`.
//!
//! Each test is the `cargo fuzz fmt` output of a minimised crash (see `fuzz/README.md`), with the
//! commit it was found on and what was wrong. A test for a bug not fixed yet is `#[ignore]`d with
//! the reason, so the suite stays green; fixing the bug means removing the `#[ignore]`.

use sendbuf_testkit::model;
use sendbuf_testkit::util;

use model::{Input, Op, PoolChoice, ZeroCopyChoice};

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
        pool: PoolChoice::None,
        zero_copy: ZeroCopyChoice::default(),
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

/// Found while adding water marks to the `partial_writes` fuzz model (crate at `2a6455d`): with equal marks (`Watermarks::new(5, 5)`, which
/// `new` accepts), a buffer that drained to exactly the mark was made backed up (with a `High`
/// event) by committing an empty format, and not backed up again (`Low`) by `advance(0)`: two
/// crossings without a byte changing. Fixed in `Backpressure::grew` / `drained`, which now do
/// nothing when nothing was added or removed.
#[test]
fn equal_water_marks_raise_no_event_without_a_change() {
    use sendbuf::{Pressure, Watermarks, WriteBuffer};

    let mut buf = WriteBuffer::new();
    buf.set_watermarks(Some(Watermarks::new(5, 5)));
    buf.put_slice(&[1; 10]);
    assert_eq!(buf.take_pressure_event(), Some(Pressure::High));
    buf.advance(5);
    assert_eq!(buf.take_pressure_event(), Some(Pressure::Low));
    assert!(!buf.is_backed_up());

    buf.format().commit(); // adds nothing
    assert!(!buf.is_backed_up(), "an empty commit backed the buffer up");
    assert_eq!(buf.take_pressure_event(), None);
    buf.advance(0);
    assert_eq!(buf.take_pressure_event(), None);
}

/// Setting equal marks on a buffer holding exactly the mark backs it up once (reaching the high
/// mark wins), and setting them again changes nothing: the old code evaluated the high mark
/// and then the low mark, ending not backed up with a `Low` event that no `High` preceded.
#[test]
fn equal_water_marks_set_at_the_mark_back_up_once() {
    use sendbuf::{Pressure, Watermarks, WriteBuffer};

    let mut buf = WriteBuffer::new();
    buf.put_slice(&[1; 5]);
    buf.set_watermarks(Some(Watermarks::new(5, 5)));
    assert!(buf.is_backed_up());
    assert_eq!(buf.take_pressure_event(), Some(Pressure::High));
    buf.set_watermarks(Some(Watermarks::new(5, 5)));
    assert!(buf.is_backed_up());
    assert_eq!(buf.take_pressure_event(), None);
    buf.advance(1);
    assert!(!buf.is_backed_up());
    assert_eq!(buf.take_pressure_event(), Some(Pressure::Low));
}

/// Found by the `partial_writes` model once it had zero-copy sends (crate at `0827dc5`; proptest
/// shrank it to `SetFlattenThreshold(0), Pin { kind: Vec, len: 4 }, RecordSend { n: 1,
/// zero_copy: true }`, then the model's wind-down: complete everything, drop). A zero-copy send
/// took the first byte of a pinned value and completed while the other 3 bytes were still
/// pending. The kernel then holds nothing, but `held_len()` stays 1 until the value's last byte
/// is sent, so:
///
/// * the buffer, dropped (a connection closed mid-value), *leaks* the value and its scratch
///   area, and `ZeroCopy::leaked_bytes` grows, although every completion arrived;
/// * `ZeroCopy::drain_blocking`, which waits for `held_len() == 0`, times out;
/// * water marks and the hard limit count the byte as held.
///
/// Root cause, `src/segment.rs`: a pinned front segment partly sent zero-copy keeps those bytes
/// in `front_sent_held` (ending at `front_held_end`), and `release_through(offset)` only walked
/// the `held` queue, so `front_sent_held` was cleared only by the value's final `finish`. Fixed
/// there: `release_through` also stops counting the front value's completed prefix.
#[test]
fn a_completed_zero_copy_prefix_of_a_pending_value_is_not_held() {
    use sendbuf::{WriteBuffer, ZeroCopy};
    use util::Counted;

    let mut buf = WriteBuffer::new();
    buf.set_flatten_threshold(0);
    let (value, drops) = Counted::new(vec![7; 4]);
    buf.pin(value);
    let mut zc = ZeroCopy::assume_enabled(0);
    zc.record_send(&mut buf, 1, true).unwrap(); // counter value 0: the value's first byte
    assert_eq!((buf.pending_len(), buf.held_len()), (3, 1));

    assert_eq!(zc.complete(&mut buf, 0, 0, false), 1, "bytes released");
    assert_eq!(zc.outstanding(), 0);
    assert_eq!(buf.held_len(), 0, "the kernel holds nothing");
    buf.check_invariants();

    let leaked = ZeroCopy::leaked_bytes();
    drop(buf); // a connection closed mid-value, after every completion
    assert_eq!(ZeroCopy::leaked_bytes(), leaked, "leaked on drop");
    assert_eq!(drops.get(), 1, "the pending value is dropped");
}
