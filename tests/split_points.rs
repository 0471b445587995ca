//! Partial writes at every split point.
//!
//! One queue of headers, pinned values and flattened small values is advanced by every possible
//! `n` and by every pair `(n1, n2)`; after each step the exact bytes that would be sent next, the
//! iovec boundaries, the counts and which pinned values have been released are compared with a
//! model. A pinned value must be released exactly when its last byte is passed, never twice,
//! and all of them on `clear` or drop of the buffer.
//!
//! Under Miri, where one case costs about a third of a second, the first stops are those next
//! to an iovec boundary (and the ends), and the second advance goes 0, 1, to the next boundary
//! or to the end.

use sendbuf_testkit::util;

use core::fmt::Write as _;

use sendbuf::WriteBuffer;
use util::{assert_pending, chunk_list, drain, pending, Counted, DropCount, PrefixWriter};

/// Values shorter than this are copied into scratch in these tests.
const THRESHOLD: usize = 8;

/// Scratch chunk sizes to run every scenario with: the default (everything fits in one chunk),
/// small (commits spill into new chunks, so adjacent commits do not always merge) and 1 (every
/// format outgrows its chunk and lands in an oversized one).
const CHUNK_SIZES: [Option<usize>; 3] = [None, Some(8), Some(1)];

/// Chunk sizes for the heaviest tests: under Miri (where one case costs about a third of a second)
/// only the one with most chunk crossings.
fn heavy_chunk_sizes() -> &'static [Option<usize>] {
    if cfg!(miri) {
        &CHUNK_SIZES[1..2]
    } else {
        &CHUNK_SIZES
    }
}

/// Where to stop first: every position, or under Miri those next to an iovec boundary.
fn stops(q: &Queue) -> Vec<usize> {
    let len = q.len();
    if !cfg!(miri) {
        return (0..=len).collect();
    }
    let mut at = vec![0, 1, len - 1, len];
    for &b in &q.boundaries {
        at.extend([b - 1, b, b + 1]);
    }
    at.retain(|&p| p <= len);
    at.sort_unstable();
    at.dedup();
    at
}

/// How far to go next from `from`: every length, or under Miri 0, 1, to the next boundary and
/// to the end.
fn second_stops(q: &Queue, from: usize) -> Vec<usize> {
    let left = q.len() - from;
    if !cfg!(miri) {
        return (0..=left).collect();
    }
    let next = q
        .boundaries
        .iter()
        .find(|&&b| b > from)
        .map_or(left, |b| b - from);
    let mut at = vec![0, 1.min(left), next, left];
    at.sort_unstable();
    at.dedup();
    at
}

/// A built queue and everything the model knows about it.
struct Queue {
    buf: WriteBuffer,
    /// Every byte committed or pinned, in order.
    model: Vec<u8>,
    /// Each value pinned by reference: the stream offset just past its last byte, and its drop
    /// counter.
    pinned: Vec<(usize, DropCount)>,
    /// Values copied into scratch: dropped at once by `pin`.
    flattened: Vec<DropCount>,
    /// Stream offsets where the initial chunks (iovecs) end.
    boundaries: Vec<usize>,
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| seed.wrapping_add((i as u8).wrapping_mul(7)))
        .collect()
}

impl Queue {
    fn pin(&mut self, len: usize, seed: u8) {
        let bytes = pattern(len, seed);
        self.model.extend_from_slice(&bytes);
        let (value, drops) = Counted::new(bytes);
        self.buf.pin(value);
        if len < THRESHOLD {
            assert_eq!(drops.get(), 1, "a flattened value is dropped by pin");
            self.flattened.push(drops);
        } else {
            assert_eq!(
                drops.get(),
                0,
                "a pinned value is dropped before it is sent"
            );
            self.pinned.push((self.model.len(), drops));
        }
    }

    /// Header (5) | pinned 16 | flattened 3 + header (4) | pinned 9 | pinned 8 (= threshold) |
    /// trailer (2) + flattened 7: 54 bytes.
    fn build(chunk_size: Option<usize>) -> Queue {
        let mut buf = match chunk_size {
            Some(n) => WriteBuffer::with_block_size(n),
            None => WriteBuffer::new(),
        };
        buf.set_flatten_threshold(THRESHOLD);
        let mut q = Queue {
            buf,
            model: Vec::new(),
            pinned: Vec::new(),
            flattened: Vec::new(),
            boundaries: Vec::new(),
        };

        let mut f = q.buf.format();
        f.put_u8(0x81);
        f.put_u16(0x0102);
        f.put_u16_le(0x0304);
        f.commit();
        q.model.extend_from_slice(&[0x81, 1, 2, 4, 3]);

        q.pin(16, 0x10);
        q.pin(3, 0x20);

        let mut f = q.buf.format();
        write!(f, "k={}", 7).unwrap();
        f.put_u8(b';');
        f.commit();
        q.model.extend_from_slice(b"k=7;");

        q.pin(9, 0x30);
        q.pin(THRESHOLD, 0x40);

        q.buf.put_slice(b"\r\n");
        q.model.extend_from_slice(b"\r\n");
        q.pin(7, 0x50);

        let mut end = 0;
        for chunk in q.buf.chunks() {
            end += chunk.len();
            q.boundaries.push(end);
        }
        q.check(0);
        q
    }

    /// Everything observable after `pos` bytes have been advanced past in total.
    #[track_caller]
    fn check(&self, pos: usize) {
        assert_pending(&self.buf, &self.model[pos..]);

        // The iovecs are the initial ones with the first cut at `pos`: advancing never merges,
        // splits or reorders segments.
        let expected: Vec<Vec<u8>> = self
            .boundaries
            .iter()
            .scan(0, |start, &end| {
                let chunk = (end > pos).then(|| self.model[(*start).max(pos)..end].to_vec());
                *start = end;
                Some(chunk)
            })
            .flatten()
            .collect();
        assert_eq!(chunk_list(&self.buf), expected, "iovec boundaries at {pos}");

        for (i, (end, drops)) in self.pinned.iter().enumerate() {
            let want = usize::from(pos >= *end);
            assert_eq!(
                drops.get(),
                want,
                "pinned value {i} (ends at {end}) after advancing {pos} bytes"
            );
        }
        for drops in &self.flattened {
            assert_eq!(drops.get(), 1, "flattened value dropped more than once");
        }
    }

    /// Every value dropped exactly once.
    #[track_caller]
    fn check_all_released(pinned: &[(usize, DropCount)], flattened: &[DropCount]) {
        for (i, (_, drops)) in pinned.iter().enumerate() {
            assert_eq!(drops.get(), 1, "pinned value {i} drop count");
        }
        for drops in flattened {
            assert_eq!(drops.get(), 1, "flattened value drop count");
        }
    }

    fn len(&self) -> usize {
        self.model.len()
    }
}

#[test]
fn the_queue_has_the_expected_iovecs() {
    let q = Queue::build(None);
    assert_eq!(q.len(), 54);
    // Header | A | B flattened and the next header merged | C | D | trailer and G merged.
    assert_eq!(q.boundaries, [5, 21, 28, 37, 45, 54]);
    assert_eq!(q.pinned.len(), 3);
    assert_eq!(q.flattened.len(), 2);

    // With 8-byte chunks the second header and the last flattened value each move to a new
    // chunk, so they cannot merge with the scratch bytes before them; the bytes are the same.
    let small = Queue::build(Some(8));
    assert_eq!(small.model, q.model);
    assert_eq!(small.boundaries, [5, 21, 24, 28, 37, 45, 47, 54]);
    let tiny = Queue::build(Some(1));
    assert_eq!(tiny.model, q.model);
    assert!(tiny.boundaries.len() >= q.boundaries.len());
}

#[test]
fn every_single_advance() {
    for size in CHUNK_SIZES {
        let shape = Queue::build(size);
        let len = shape.len();
        for n in stops(&shape) {
            let mut q = Queue::build(size);
            q.buf.advance(n);
            q.check(n);
            let rest = q.len() - n;
            q.buf.advance(rest);
            q.check(len);
            assert!(q.buf.is_empty());
            let Queue {
                buf,
                pinned,
                flattened,
                ..
            } = q;
            drop(buf);
            Queue::check_all_released(&pinned, &flattened);
        }
    }
}

#[test]
fn every_pair_of_advances() {
    for &size in heavy_chunk_sizes() {
        let shape = Queue::build(size);
        for n1 in stops(&shape) {
            for n2 in second_stops(&shape, n1) {
                let mut q = Queue::build(size);
                q.buf.advance(n1);
                q.check(n1);
                q.buf.advance(n2);
                q.check(n1 + n2);
                q.buf.clear();
                assert_pending(&q.buf, &[]);
                Queue::check_all_released(&q.pinned, &q.flattened);
                let Queue {
                    buf,
                    pinned,
                    flattened,
                    ..
                } = q;
                drop(buf);
                Queue::check_all_released(&pinned, &flattened);
            }
        }
    }
}

#[test]
fn every_pair_of_try_advances_and_a_refused_third() {
    for &size in heavy_chunk_sizes() {
        let shape = Queue::build(size);
        let len = shape.len();
        for n1 in stops(&shape) {
            for n2 in second_stops(&shape, n1) {
                let mut q = Queue::build(size);
                assert_eq!(q.buf.try_advance(n1), Ok(()));
                q.check(n1);
                assert_eq!(q.buf.try_advance(n2), Ok(()));
                q.check(n1 + n2);
                let available = len - n1 - n2;
                let err = q.buf.try_advance(available + 1).unwrap_err();
                assert_eq!((err.requested, err.available), (available + 1, available));
                q.check(n1 + n2);
            }
        }
    }
}

#[test]
fn dropping_the_buffer_at_every_split_releases_everything_once() {
    for size in CHUNK_SIZES {
        let shape = Queue::build(size);
        for n in stops(&shape) {
            let mut q = Queue::build(size);
            q.buf.advance(n);
            q.check(n);
            let Queue {
                buf,
                pinned,
                flattened,
                ..
            } = q;
            drop(buf);
            Queue::check_all_released(&pinned, &flattened);
        }
    }
}

#[test]
fn appending_after_every_split_keeps_the_stream_exact() {
    for size in CHUNK_SIZES {
        let shape = Queue::build(size);
        for n in stops(&shape) {
            let mut q = Queue::build(size);
            q.buf.advance(n);
            q.check(n);

            // Scratch freed by the advance may be reused now; pending bytes must not move.
            let mut f = q.buf.format();
            f.put_u32(0xA1A2_A3A4);
            f.commit();
            q.model.extend_from_slice(&[0xA1, 0xA2, 0xA3, 0xA4]);
            q.pin(12, 0x60);
            q.pin(5, 0x70);
            q.buf.put_slice(b"END");
            q.model.extend_from_slice(b"END");
            assert_pending(&q.buf, &q.model[n..]);

            let mut w = PrefixWriter::fixed(5);
            while !q.buf.is_empty() {
                q.buf.write_to(&mut w).unwrap();
                q.buf.check_invariants();
            }
            assert_eq!(w.out, q.model[n..]);
            Queue::check_all_released(&q.pinned, &q.flattened);
        }
    }
}

#[test]
fn clear_at_every_split_then_reuse() {
    for size in CHUNK_SIZES {
        let shape = Queue::build(size);
        for n in stops(&shape) {
            let mut q = Queue::build(size);
            q.buf.advance(n);
            q.buf.clear();
            assert_pending(&q.buf, &[]);
            Queue::check_all_released(&q.pinned, &q.flattened);

            q.buf.put_slice(b"after clear");
            let (value, drops) = Counted::new(pattern(20, 0x80));
            q.buf.pin(value);
            let mut expected = b"after clear".to_vec();
            expected.extend_from_slice(&pattern(20, 0x80));
            assert_pending(&q.buf, &expected);
            assert_eq!(drain(&mut q.buf), expected);
            assert_eq!(drops.get(), 1);
        }
    }
}

#[test]
fn write_to_with_every_fixed_prefix() {
    for &size in heavy_chunk_sizes() {
        let shape = Queue::build(size);
        let len = shape.len();
        for k in stops(&shape).into_iter().map(|k| k + 1) {
            let mut q = Queue::build(size);
            let mut w = PrefixWriter::fixed(k);
            let mut sent = 0;
            while sent < len {
                let n = q.buf.write_to(&mut w).unwrap();
                assert_eq!(n, k.min(len - sent), "accepted bytes with limit {k}");
                sent += n;
                q.check(sent);
            }
            assert_eq!(q.buf.write_to(&mut w).unwrap(), 0, "nothing pending");
            assert_eq!(w.out, q.model);
            assert_eq!(w.short, len.div_ceil(k) - 1, "short writes with limit {k}");
        }
    }
}

#[test]
fn every_split_of_a_single_pinned_value() {
    // The simplest queue, so a failure here points straight at the pinned path.
    let len = if cfg!(miri) { 64 } else { 1024 };
    for n in 0..=len {
        let bytes = pattern(len, 3);
        let (value, drops) = Counted::new(bytes.clone());
        let mut buf = WriteBuffer::new();
        buf.set_flatten_threshold(0);
        buf.pin(value);
        buf.advance(n);
        assert_pending(&buf, &bytes[n..]);
        assert_eq!(drops.get(), usize::from(n == len));
        assert_eq!(pending(&buf), &bytes[n..]);
        drop(buf);
        assert_eq!(drops.get(), 1);
    }
}
