//! Water marks fire once per crossing; the hard limit errs (never panics through the `try_`
//! methods) and leaves the buffer usable.

use sendbuf_testkit::util;

use sendbuf::{Pressure, Watermarks, WriteBuffer};
use util::{pending, Counted};

fn marked(low: usize, high: usize) -> WriteBuffer {
    let mut buf = WriteBuffer::new();
    buf.set_watermarks(Some(Watermarks::new(low, high)));
    buf
}

#[test]
fn each_crossing_is_reported_once() {
    let mut buf = marked(100, 1000);
    for round in 0..3 {
        buf.put_slice(&[1; 999]);
        assert!(!buf.is_backed_up(), "round {round}: below high");
        assert_eq!(buf.take_pressure_event(), None);
        buf.put_slice(&[2; 1]); // reaches 1000
        assert!(buf.is_backed_up());
        assert_eq!(buf.take_pressure_event(), Some(Pressure::High));
        buf.pin(vec![3u8; 5000]); // further growth: no new event
        assert_eq!(buf.take_pressure_event(), None);
        buf.advance(5000); // 1000 left: still above low
        assert!(buf.is_backed_up());
        assert_eq!(buf.take_pressure_event(), None);
        buf.advance(899); // 101 left
        assert!(buf.is_backed_up());
        buf.advance(1); // 100 == low: resume
        assert!(!buf.is_backed_up());
        assert_eq!(buf.take_pressure_event(), Some(Pressure::Low));
        assert_eq!(buf.take_pressure_event(), None);
        buf.advance(100);
        assert_eq!(buf.take_pressure_event(), None, "no event below low");
        buf.check_invariants();
    }
}

#[test]
fn an_untaken_event_is_replaced_by_the_latest_crossing() {
    let mut buf = marked(0, 10);
    buf.put_slice(&[0; 10]);
    buf.advance(10);
    // High then Low happened; the state is not backed up and the event says so.
    assert!(!buf.is_backed_up());
    assert_eq!(buf.take_pressure_event(), Some(Pressure::Low));
}

#[test]
fn setting_or_removing_marks_evaluates_the_current_length() {
    let mut buf = WriteBuffer::new();
    buf.put_slice(&[0; 50]);
    buf.set_watermarks(Some(Watermarks::new(10, 40)));
    assert!(buf.is_backed_up());
    assert_eq!(buf.take_pressure_event(), Some(Pressure::High));
    buf.set_watermarks(None);
    assert!(!buf.is_backed_up());
    assert_eq!(buf.take_pressure_event(), Some(Pressure::Low));
    buf.put_slice(&[0; 1000]);
    assert!(!buf.is_backed_up(), "no marks, no back-pressure");
}

#[test]
fn clear_resumes() {
    let mut buf = marked(0, 10);
    buf.put_slice(&[0; 20]);
    assert!(buf.is_backed_up());
    buf.clear();
    assert!(!buf.is_backed_up());
}

#[test]
#[should_panic(expected = "water marks need 0 < high and low <= high (low 5, high 4)")]
fn inverted_marks_panic() {
    let _ = Watermarks::new(5, 4);
}

#[test]
fn the_hard_limit_errs_and_leaves_the_buffer_usable() {
    let mut buf = WriteBuffer::new();
    buf.set_hard_limit(Some(100));
    buf.put_slice(&[b'a'; 60]);
    let err = buf.try_put_slice(&[b'b'; 41]).unwrap_err();
    assert_eq!((err.requested, err.held, err.limit), (41, 60, 100));
    assert_eq!(
        err.to_string(),
        "cannot queue 41 more bytes: the buffer holds 60 bytes and its hard limit is 100 bytes"
    );
    assert_eq!(
        std::io::Error::from(err).kind(),
        std::io::ErrorKind::OutOfMemory
    );

    // A guard over the limit rolls back.
    let mut f = buf.format();
    f.put_slice(&[b'c'; 50]);
    assert!(f.try_commit().is_err());
    // A pinned value over the limit is dropped, not queued.
    let (value, drops) = Counted::new(vec![b'd'; 1000]);
    assert!(buf.try_pin(value).is_err());
    assert_eq!(drops.get(), 1);
    // A small value is copied, so the same limit applies.
    assert!(buf.try_pin(vec![b'e'; 41]).is_err());
    assert_eq!(pending(&buf), vec![b'a'; 60]);
    buf.check_invariants();

    // Exactly up to the limit fits; after draining, everything fits again.
    buf.try_put_slice(&[b'f'; 40]).unwrap();
    assert_eq!(buf.pending_len(), 100);
    buf.advance(100);
    buf.try_pin(vec![b'g'; 100]).unwrap();
    assert_eq!(pending(&buf), vec![b'g'; 100]);
}

#[test]
fn the_hard_limit_and_the_high_mark_are_each_checked_whichever_comes_first() {
    // Every way bytes arrive: a guard's commit, `put_slice` (copied straight into the tail),
    // a small value copied by `pin`, a pinned value.
    let mut buf = marked(10, 2000);
    buf.set_hard_limit(Some(1500));
    buf.put_slice(&[1; 400]);
    let mut f = buf.format();
    f.put_slice(&[2; 99]);
    f.commit();
    buf.pin(vec![3u8; 1000]); // pinned: 1499
    buf.pin(vec![4u8; 1]); // copied: 1500, exactly the limit
    assert_eq!(buf.pending_len(), 1500);
    assert_eq!(buf.take_pressure_event(), None, "below the high mark");
    assert!(buf.try_put_slice(&[5; 1]).is_err());
    assert!(buf.try_pin(vec![5u8; 1]).is_err());
    assert!(buf.try_pin(vec![5u8; 2000]).is_err());
    let mut f = buf.format();
    f.put_u8(5);
    assert!(f.try_commit().is_err());
    assert_eq!(buf.pending_len(), 1500);

    // The limit raised above the mark: reaching the mark raises `High`, and the limit still
    // holds while backed up.
    buf.set_hard_limit(Some(3000));
    buf.put_slice(&[6; 499]);
    assert_eq!(buf.take_pressure_event(), None);
    buf.put_slice(&[6; 1]); // 2000
    assert_eq!(buf.take_pressure_event(), Some(Pressure::High));
    buf.pin(vec![7u8; 1000]); // 3000
    assert_eq!(buf.take_pressure_event(), None);
    assert!(buf.try_put_slice(&[8; 1]).is_err());

    // Drained to the low mark: `Low`, and the high mark is armed again.
    buf.advance(2990);
    assert_eq!(buf.take_pressure_event(), Some(Pressure::Low));
    buf.put_slice(&[9; 1989]); // 1999
    assert_eq!(buf.take_pressure_event(), None);
    let mut f = buf.format();
    f.put_u8(9); // 2000
    f.commit();
    assert_eq!(buf.take_pressure_event(), Some(Pressure::High));

    // Without a limit and marks, anything fits and nothing is reported.
    buf.set_hard_limit(None);
    buf.set_watermarks(None);
    assert_eq!(buf.take_pressure_event(), Some(Pressure::Low));
    buf.pin(vec![0u8; 100_000]);
    buf.put_slice(&[0; 10_000]);
    assert_eq!(buf.take_pressure_event(), None);
    assert_eq!(buf.pending_len(), 112_000);
    buf.check_invariants();
}

#[test]
fn a_refused_guard_that_moved_to_a_larger_chunk_gives_that_chunk_back() {
    // 64-byte chunks: the guard's bytes do not fit behind the 40 pending ones, move to a new
    // chunk, then to a 128-byte one; the hard limit refuses the commit.
    let mut buf = WriteBuffer::with_block_size(64);
    buf.set_hard_limit(Some(100));
    buf.put_slice(&[b'a'; 40]);
    let mut f = buf.format();
    f.put_slice(&[b'b'; 30]);
    f.put_slice(&[b'c'; 80]);
    assert_eq!(f.len(), 110);
    let err = f.try_commit().unwrap_err();
    assert_eq!((err.requested, err.held), (110, 40));
    assert_eq!(pending(&buf), vec![b'a'; 40]);
    buf.check_invariants();
    assert!(
        buf.capacity() < 64 + 128,
        "the oversized chunk the guard moved to is kept: {} bytes of scratch",
        buf.capacity()
    );

    // The tail is still the one the pending bytes are in: the next commit extends them.
    buf.put_slice(&[b'd'; 20]);
    assert_eq!(buf.segments(), 1);
    let mut expected = vec![b'a'; 40];
    expected.extend_from_slice(&[b'd'; 20]);
    assert_eq!(pending(&buf), expected);
    buf.advance(60);
    assert!(buf.is_empty());
    buf.check_invariants();
}

#[test]
#[should_panic(expected = "its hard limit is 8 bytes (use the try_ methods")]
fn infallible_commit_past_the_hard_limit_panics() {
    let mut buf = WriteBuffer::new();
    buf.set_hard_limit(Some(8));
    let mut f = buf.format();
    f.put_u64(1);
    f.put_u8(2);
    f.commit();
}

/// The limits are checked against what the buffer holds now, however many bytes went through
/// it before: the bound moves with every advance, to the byte, for scratch and pinned bytes.
#[test]
fn the_limits_follow_what_the_buffer_holds_as_bytes_go_out() {
    let mut buf = marked(10, 60);
    buf.set_hard_limit(Some(100));
    buf.set_flatten_threshold(16); // the 40-byte values are pinned
    for round in 0..200usize {
        let left = buf.pending_len();
        assert!(left < 10, "round {round}: {left} left");
        let err = buf.try_put_slice(&vec![0; 101 - left]).unwrap_err();
        assert_eq!((err.held, err.limit), (left, 100), "round {round}");
        assert_eq!(buf.pending_len(), left, "a refused slice queues nothing");

        buf.put_slice(&vec![1; 59 - left]);
        assert!(!buf.is_backed_up(), "round {round}: 59 held, below high");
        buf.put_slice(&[2]);
        assert_eq!(
            buf.take_pressure_event(),
            Some(Pressure::High),
            "round {round}"
        );
        assert!(
            buf.try_pin(vec![3u8; 40]).is_ok(),
            "round {round}: 100 fits"
        );
        assert_eq!(buf.pending_len(), 100);
        assert!(
            buf.try_pin(vec![4u8; 1]).is_err(),
            "round {round}: 101 does not"
        );
        assert!(
            buf.try_put_slice(&[4]).is_err(),
            "round {round}: 101 does not"
        );

        // Out in uneven steps, keeping `round % 7` bytes for the next round.
        let keep = round % 7;
        let mut out = 100 - keep;
        let mut step = 1 + round % 13;
        while out > 0 {
            let n = step.min(out);
            buf.advance(n);
            out -= n;
            step = step * 2 + 1;
        }
        assert!(!buf.is_backed_up());
        assert_eq!(
            buf.take_pressure_event(),
            Some(Pressure::Low),
            "round {round}"
        );
        buf.check_invariants();
    }
}
