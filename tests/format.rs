//! Typed formatting through `FormatGuard`: byte order of every writer, `Encode`, text through
//! `fmt::Write` and `io::Write`, reserved length fields, commit / rollback / `mem::forget`, merging
//! of adjacent commits and reuse of scratch memory.

use sendbuf_testkit::util;

use core::fmt::Write as _;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use sendbuf::{Encode, WriteBuffer, DEFAULT_FLATTEN_THRESHOLD};
use util::{assert_pending, chunk_list, drain, pending, Counted, PrefixWriter, XorShift};

/// Everything observable from outside, to compare a buffer before and after a rollback.
#[derive(Debug, PartialEq, Eq)]
struct Snapshot {
    len: usize,
    chunks: Vec<Vec<u8>>,
    segments: usize,
    is_empty: bool,
}

fn snapshot(buf: &WriteBuffer) -> Snapshot {
    buf.check_invariants();
    Snapshot {
        len: buf.pending_len(),
        chunks: chunk_list(buf),
        segments: buf.segments(),
        is_empty: buf.is_empty(),
    }
}

/// A buffer with a bit of everything pending: a partly sent header, a pinned value, a trailer.
fn busy_buffer(chunk_size: usize) -> WriteBuffer {
    let mut buf = WriteBuffer::with_block_size(chunk_size);
    buf.put_slice(b"HEADER:");
    buf.pin(vec![b'v'; 600]);
    buf.put_slice(b"\r\n");
    buf.advance(3);
    buf
}

// ---------------------------------------------------------------------------------------------
// Byte order.
// ---------------------------------------------------------------------------------------------

#[test]
fn unsigned_writers_in_every_byte_order() {
    let mut buf = WriteBuffer::new();
    let mut f = buf.format();
    f.put_u8(0x01);
    f.put_u16(0x0203);
    f.put_u16_le(0x0405);
    f.put_u32(0x0607_0809);
    f.put_u32_le(0x0A0B_0C0D);
    f.put_u64(0x1011_1213_1415_1617);
    f.put_u64_le(0x2021_2223_2425_2627);
    assert_eq!(f.len(), 1 + 2 + 2 + 4 + 4 + 8 + 8);
    f.commit();
    #[rustfmt::skip]
    let expected = [
        0x01,
        0x02, 0x03,
        0x05, 0x04,
        0x06, 0x07, 0x08, 0x09,
        0x0D, 0x0C, 0x0B, 0x0A,
        0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17,
        0x27, 0x26, 0x25, 0x24, 0x23, 0x22, 0x21, 0x20,
    ];
    assert_pending(&buf, &expected);
}

#[test]
fn signed_writers_in_every_byte_order() {
    let mut buf = WriteBuffer::new();
    let mut f = buf.format();
    f.put_i8(-2);
    f.put_i16(-2);
    f.put_i16_le(-2);
    f.put_i32(-0x0102_0304);
    f.put_i32_le(-0x0102_0304);
    f.put_i64(i64::MIN + 1);
    f.put_i64_le(i64::MIN + 1);
    f.commit();
    #[rustfmt::skip]
    let expected = [
        0xFE,
        0xFF, 0xFE,
        0xFE, 0xFF,
        0xFE, 0xFD, 0xFC, 0xFC,
        0xFC, 0xFC, 0xFD, 0xFE,
        0x80, 0, 0, 0, 0, 0, 0, 0x01,
        0x01, 0, 0, 0, 0, 0, 0, 0x80,
    ];
    assert_pending(&buf, &expected);
}

#[test]
fn native_order_writers_match_the_target() {
    let mut buf = WriteBuffer::new();
    let mut f = buf.format();
    f.put_u16_ne(0x0102);
    f.put_i16_ne(0x0304);
    f.put_u32_ne(0x0506_0708);
    f.put_i32_ne(0x090A_0B0C);
    f.put_u64_ne(0x1011_1213_1415_1617);
    f.put_i64_ne(0x2021_2223_2425_2627);
    f.commit();
    #[rustfmt::skip]
    let big = [
        0x01, 0x02,
        0x03, 0x04,
        0x05, 0x06, 0x07, 0x08,
        0x09, 0x0A, 0x0B, 0x0C,
        0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17,
        0x20, 0x21, 0x22, 0x23, 0x24, 0x25, 0x26, 0x27,
    ];
    let little: Vec<u8> = [2usize, 2, 4, 4, 8, 8]
        .iter()
        .scan(0, |at, &n| {
            let field = big[*at..*at + n].iter().rev().copied().collect::<Vec<_>>();
            *at += n;
            Some(field)
        })
        .flatten()
        .collect();
    if cfg!(target_endian = "big") {
        assert_pending(&buf, &big);
    } else {
        assert_pending(&buf, &little);
    }
}

#[test]
fn slices_repeated_bytes_and_uninit_space() {
    let mut buf = WriteBuffer::new();
    let mut f = buf.format();
    assert!(f.is_empty());
    f.put_slice(b"ab");
    f.put_slice(b"");
    f.put_bytes(b'-', 3);
    f.put_bytes(b'x', 0);
    f.put_uninit(2).copy_from_slice(b"yz");
    assert_eq!(f.put_uninit(0).len(), 0);
    assert_eq!(f.written(), b"ab---yz");
    assert_eq!(f.len(), 7);
    assert!(!f.is_empty());
    f.commit();
    assert_pending(&buf, b"ab---yz");
}

// ---------------------------------------------------------------------------------------------
// Encode.
// ---------------------------------------------------------------------------------------------

/// A memcached binary-protocol response header: 24 bytes, all fields big-endian.
struct BinaryHeader {
    opcode: u8,
    key_len: u16,
    extras_len: u8,
    status: u16,
    body_len: u32,
    opaque: u32,
    cas: u64,
}

impl Encode for BinaryHeader {
    const SIZE: usize = 24;

    fn encode(&self, out: &mut [u8]) {
        assert_eq!(out.len(), Self::SIZE, "encode is given exactly SIZE bytes");
        out[0] = 0x81;
        out[1] = self.opcode;
        out[2..4].copy_from_slice(&self.key_len.to_be_bytes());
        out[4] = self.extras_len;
        out[5] = 0; // data type
        out[6..8].copy_from_slice(&self.status.to_be_bytes());
        out[8..12].copy_from_slice(&self.body_len.to_be_bytes());
        out[12..16].copy_from_slice(&self.opaque.to_be_bytes());
        out[16..24].copy_from_slice(&self.cas.to_be_bytes());
    }
}

const HEADER: BinaryHeader = BinaryHeader {
    opcode: 0x0C,
    key_len: 0x0003,
    extras_len: 4,
    status: 0x0001,
    body_len: 0x0000_0107,
    opaque: 0xDEAD_BEEF,
    cas: 0x0102_0304_0506_0708,
};

#[rustfmt::skip]
const HEADER_BYTES: [u8; 24] = [
    0x81, 0x0C, 0x00, 0x03, 0x04, 0x00, 0x00, 0x01,
    0x00, 0x00, 0x01, 0x07, 0xDE, 0xAD, 0xBE, 0xEF,
    0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08,
];

#[test]
fn encode_writes_a_24_byte_header() {
    let mut buf = WriteBuffer::new();
    let mut f = buf.format();
    f.put(&HEADER);
    assert_eq!(f.len(), 24);
    f.commit();
    assert_pending(&buf, &HEADER_BYTES);
}

#[test]
fn encode_into_reused_scratch_overwrites_every_byte() {
    // Scratch is not zeroed on reuse: encode must see (and overwrite) whatever was there.
    let mut buf = WriteBuffer::with_block_size(64);
    for _ in 0..3 {
        buf.put_slice(&[0xAA; 64]);
        assert_eq!(drain(&mut buf), [0xAA; 64]);
    }
    let mut f = buf.format();
    f.put(&HEADER);
    f.commit();
    assert_eq!(drain(&mut buf), HEADER_BYTES);
}

#[test]
fn headers_that_cross_a_chunk_stay_whole() {
    // 30-byte chunks: every second header does not fit behind the first and moves.
    let mut buf = WriteBuffer::with_block_size(30);
    let mut expected = Vec::new();
    for i in 0..10u8 {
        let mut f = buf.format();
        f.put_u8(i);
        f.put(&HEADER);
        f.put_slice(b"body");
        f.commit();
        expected.push(i);
        expected.extend_from_slice(&HEADER_BYTES);
        expected.extend_from_slice(b"body");
        assert_pending(&buf, &expected);
    }
    for chunk in buf.chunks() {
        assert_eq!(chunk.len() % 29, 0, "a header was split across iovecs");
    }
}

#[test]
fn put_slice_extends_the_pending_run_until_the_chunk_is_full_then_moves_on() {
    let mut buf = WriteBuffer::with_block_size(64);
    buf.put_slice(&[1; 40]);
    buf.put_slice(&[2; 24]); // fills the chunk exactly: the same iovec
    assert_eq!(chunk_list(&buf), [[[1; 40].as_slice(), &[2; 24]].concat()]);
    buf.put_slice(&[3; 10]); // does not fit behind: a new chunk, a new iovec
    assert_eq!(buf.segments(), 2);
    buf.put_slice(&[4; 5]); // behind it
    assert_eq!(chunk_list(&buf)[1], [[3; 10].as_slice(), &[4; 5]].concat());
    buf.check_invariants();

    // A pinned value ends the run: what follows is a new iovec even in the same chunk.
    buf.pin(vec![5u8; 2000]); // above the flatten threshold
    buf.put_slice(&[6; 3]);
    assert_eq!(buf.segments(), 4);
    assert_eq!(chunk_list(&buf)[3], [6; 3]);

    // After a partial write the run's rest is still extended in place.
    buf.advance(64 + 15 + 2000 + 1);
    buf.put_slice(&[7; 2]);
    assert_eq!(chunk_list(&buf), [vec![6, 6, 7, 7]]);
    buf.advance(4);
    assert!(buf.is_empty());
    buf.check_invariants();

    // A slice larger than a chunk gets a chunk of its own size.
    buf.put_slice(&[8; 200]);
    assert_eq!(pending(&buf), [8; 200]);
    assert_eq!(drain(&mut buf), [8; 200]);
    assert!(buf.is_empty());
}

// ---------------------------------------------------------------------------------------------
// Text.
// ---------------------------------------------------------------------------------------------

#[test]
fn fmt_write_formats_text() {
    let mut buf = WriteBuffer::new();
    let mut f = buf.format();
    let key = "key";
    write!(f, "VALUE {key} {} {}\r\n", 0u32, 5usize).unwrap();
    f.write_char('é').unwrap();
    f.write_str("\r\n").unwrap();
    write!(f, "{:>5}|{:<4}|{:08.3}", 42, "ab", -1.5f64).unwrap();
    f.commit();
    assert_pending(&buf, "VALUE key 0 5\r\né\r\n   42|ab  |-001.500".as_bytes());
}

#[test]
fn io_write_formats_bytes_and_never_writes_short() {
    use std::io::Write;

    let mut buf = WriteBuffer::new();
    let mut f = buf.format();
    assert_eq!(Write::write(&mut f, b"abc").unwrap(), 3);
    Write::write_all(&mut f, b"def").unwrap();
    Write::write_fmt(&mut f, format_args!("{}", 123)).unwrap();
    let big = vec![b'z'; 70_000];
    assert_eq!(Write::write(&mut f, &big).unwrap(), big.len());
    Write::flush(&mut f).unwrap();
    assert_eq!(f.len(), 9 + big.len());
    f.commit();
    let mut expected = b"abcdef123".to_vec();
    expected.extend_from_slice(&big);
    assert_pending(&buf, &expected);
}

// ---------------------------------------------------------------------------------------------
// Rollback.
// ---------------------------------------------------------------------------------------------

#[test]
fn dropping_a_guard_leaves_no_trace() {
    let mut buf = busy_buffer(1024);
    let before = snapshot(&buf);
    {
        let mut f = buf.format();
        f.put_u32(7);
        f.put_slice(b"never sent");
        write!(f, "{}", 99).unwrap();
    }
    assert_eq!(snapshot(&buf), before);

    // The next commit lands right after what was there before.
    buf.put_slice(b"next");
    let mut expected = pending(&buf);
    expected.truncate(before.len);
    expected.extend_from_slice(b"next");
    assert_pending(&buf, &expected);
    assert_eq!(&drain(&mut buf)[before.len..], b"next");
}

#[test]
fn dropping_a_guard_on_an_empty_buffer_leaves_it_empty() {
    let mut buf = WriteBuffer::new();
    buf.format().put_slice(b"gone");
    assert_pending(&buf, b"");
    let mut f = buf.format();
    f.put(&HEADER);
    drop(f);
    assert_pending(&buf, b"");
}

#[test]
fn dropping_a_guard_that_outgrew_its_chunk_leaves_no_trace() {
    let mut buf = busy_buffer(64);
    let before = snapshot(&buf);
    let capacity = buf.capacity();
    {
        let mut f = buf.format();
        for i in 0..1000u32 {
            f.put_u8(i as u8);
        }
        assert_eq!(f.len(), 1000);
        assert_eq!(f.written()[999], (999u32 as u8));
    }
    assert_eq!(snapshot(&buf), before);
    // The oversized chunk the guard moved to is given back, not kept idle (one regular chunk
    // may be kept for reuse).
    assert!(
        buf.capacity() <= capacity + buf.block_size(),
        "{}",
        buf.capacity()
    );

    buf.put_slice(b"after");
    let all = drain(&mut buf);
    assert_eq!(all.len(), before.len + 5);
    assert!(all.ends_with(b"\r\nafter"));
}

#[test]
fn repeated_rollbacks_do_not_grow_the_buffer() {
    let mut buf = busy_buffer(64);
    let before = snapshot(&buf);
    // Guards that outgrow the tail move to a regular chunk (kept for reuse afterwards) or an
    // oversized one (given back): memory stays bounded by one extra regular chunk.
    let bound = buf.capacity() + buf.block_size();
    for round in 0..if cfg!(miri) { 60 } else { 1000 } {
        let mut f = buf.format();
        f.put_bytes(round as u8, 10 + round % 300);
        drop(f);
        assert!(buf.capacity() <= bound, "round {round}: {}", buf.capacity());
    }
    assert_eq!(snapshot(&buf), before);
}

#[test]
fn forgetting_a_guard_leaves_no_trace() {
    for size in [200, 1000] {
        let mut buf = busy_buffer(64);
        let before = snapshot(&buf);
        let mut f = buf.format();
        f.put_bytes(b'!', size);
        std::mem::forget(f);
        assert_eq!(
            snapshot(&buf),
            before,
            "after forgetting a {size}-byte guard"
        );

        let mut f = buf.format();
        f.put_slice(b"after");
        f.commit();
        let all = drain(&mut buf);
        assert_eq!(all.len(), before.len + 5);
        assert!(all.ends_with(b"\r\nafter"));
    }
}

#[test]
fn a_guard_can_be_rolled_back_with_reserved_fields_unfilled() {
    let mut buf = busy_buffer(64);
    let before = snapshot(&buf);
    {
        let mut f = buf.format();
        let _len = f.reserve_u32();
        f.put_slice(b"body");
    }
    assert_eq!(snapshot(&buf), before);
}

#[test]
fn a_failed_commit_rolls_back() {
    let mut buf = busy_buffer(64);
    let before = snapshot(&buf);
    let result = catch_unwind(AssertUnwindSafe(|| {
        let mut f = buf.format();
        let _len = f.reserve_u16();
        f.put_bytes(b'x', 500);
        f.commit();
    }));
    assert!(result.is_err(), "commit with an unfilled field must panic");
    assert_eq!(snapshot(&buf), before);
    buf.put_slice(b"ok");
    assert!(drain(&mut buf).ends_with(b"\r\nok"));
}

// ---------------------------------------------------------------------------------------------
// Reserved fields.
// ---------------------------------------------------------------------------------------------

#[test]
fn reserved_length_is_filled_after_the_body() {
    let mut buf = WriteBuffer::new();
    buf.put_slice(b"pre");
    let mut f = buf.format();
    f.put_u8(0x81);
    let len = f.reserve_u32();
    assert_eq!(len.offset(), 1);
    assert_eq!(
        f.written(),
        [0x81, 0, 0, 0, 0],
        "a reserved field starts zeroed"
    );
    f.put_slice(b"hello, world");
    let body = f.written_after(&len);
    assert_eq!(body, 12);
    f.fill_u32(len, body as u32);
    f.commit();
    assert_pending(&buf, b"pre\x81\x00\x00\x00\x0chello, world");
}

#[test]
fn every_reserved_width_and_order() {
    let mut buf = WriteBuffer::new();
    let mut f = buf.format();
    let a = f.reserve_u16();
    let b = f.reserve_u32();
    let c = f.reserve_u64();
    let d = f.reserve::<3>();
    let e = f.reserve_u16();
    let g = f.reserve_u32();
    let h = f.reserve_u64();
    assert_eq!(
        [a.offset(), b.offset(), c.offset(), d.offset()],
        [0, 2, 6, 14]
    );
    assert_eq!(f.written_after(&h), 0);
    assert_eq!(f.written_after(&d), 14);
    // Filled in an order other than reserved.
    f.fill_u64_le(h, 0x0102_0304_0506_0708);
    f.fill(d, *b"xyz");
    f.fill_u16(a, 0x0A0B);
    f.fill_u32_le(g, 0x0C0D_0E0F);
    f.fill_u64(c, 0x1112_1314_1516_1718);
    f.fill_u16_le(e, 0x1A1B);
    f.fill_u32(b, 0x2122_2324);
    f.commit();
    #[rustfmt::skip]
    let expected = [
        0x0A, 0x0B,
        0x21, 0x22, 0x23, 0x24,
        0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18,
        b'x', b'y', b'z',
        0x1B, 0x1A,
        0x0F, 0x0E, 0x0D, 0x0C,
        0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01,
    ];
    assert_pending(&buf, &expected);
}

#[test]
fn a_reserved_field_survives_the_guard_outgrowing_its_chunk() {
    let mut buf = busy_buffer(64);
    let prefix = pending(&buf);
    let mut f = buf.format();
    f.put_slice(b"frame");
    let len = f.reserve_u32();
    for i in 0..1000u32 {
        f.put_u8(i as u8);
    }
    let body = f.written_after(&len);
    f.fill_u32(len, body as u32);
    f.commit();

    let mut expected = prefix;
    expected.extend_from_slice(b"frame");
    expected.extend_from_slice(&1000u32.to_be_bytes());
    expected.extend((0..1000u32).map(|i| i as u8));
    assert_pending(&buf, &expected);
}

#[test]
#[should_panic(expected = "format guard committed with 1 reserved field(s) never filled")]
fn committing_with_an_unfilled_field_panics() {
    let mut buf = WriteBuffer::new();
    let mut f = buf.format();
    let _len = f.reserve_u32();
    f.put_slice(b"body");
    f.commit();
}

#[test]
#[should_panic(expected = "format guard committed with 2 reserved field(s) never filled")]
fn the_panic_counts_the_unfilled_fields() {
    let mut buf = WriteBuffer::new();
    let mut f = buf.format();
    let a = f.reserve_u16();
    let _b = f.reserve_u32();
    let _c = f.reserve_u64();
    f.fill_u16(a, 1);
    f.commit();
}

#[test]
#[should_panic(expected = "reserved field at offset 10 belongs to another format guard")]
fn filling_a_field_of_another_guard_panics() {
    let mut buf = WriteBuffer::new();
    let stale = {
        let mut f = buf.format();
        f.put_bytes(0, 10);
        f.reserve_u32()
    }; // rolled back
    let mut f = buf.format();
    f.put_u16(1);
    f.fill_u32(stale, 5);
}

/// Regression: a field from a rolled-back guard used to be accepted by the next guard if its
/// offset was in range, overwriting that guard's body and using up its unfilled count, so the
/// guard's own length field was committed as zeros. Fields now carry their guard's id.
#[test]
#[should_panic(expected = "reserved field")]
fn a_stale_reserved_field_cannot_hide_an_unfilled_one() {
    let mut buf = WriteBuffer::new();
    let stale = {
        let mut f = buf.format();
        f.put_bytes(0, 8);
        f.reserve_u32()
    }; // rolled back
    let mut f = buf.format();
    let _len = f.reserve_u32(); // never filled
    f.put_bytes(b'x', 20);
    f.fill_u32(stale, 0xFFFF_FFFF); // writes over body bytes 4..8 of this guard
    f.commit(); // commits `00 00 00 00 xxxx FF FF FF FF xxxx...` without a panic
}

// ---------------------------------------------------------------------------------------------
// Segments and memory.
// ---------------------------------------------------------------------------------------------

#[test]
fn adjacent_commits_merge_into_one_segment() {
    let mut buf = WriteBuffer::new();
    let mut f = buf.format();
    f.put_slice(b"one ");
    f.commit();
    let mut f = buf.format();
    write!(f, "two ").unwrap();
    f.commit();
    buf.put_slice(b"three ");
    buf.pin(vec![b'4'; 10]); // below the threshold: copied, merged
    buf.format().commit(); // an empty commit adds nothing
    buf.put_slice(b"");
    assert_eq!(buf.segments(), 1);
    assert_pending(&buf, b"one two three 4444444444");

    // A pinned value ends the run; the next commit starts a new segment.
    buf.pin(vec![b'P'; 1000 + DEFAULT_FLATTEN_THRESHOLD]);
    buf.put_slice(b"five");
    buf.put_slice(b"six");
    assert_eq!(buf.segments(), 3);
    let chunks = chunk_list(&buf);
    assert_eq!(chunks[0], b"one two three 4444444444");
    assert_eq!(chunks[1], vec![b'P'; 1000 + DEFAULT_FLATTEN_THRESHOLD]);
    assert_eq!(chunks[2], b"fivesix");
}

#[test]
fn a_commit_after_a_partial_send_still_merges() {
    let mut buf = WriteBuffer::new();
    buf.put_slice(b"abcdef");
    buf.advance(4);
    buf.put_slice(b"gh");
    assert_eq!(buf.segments(), 1);
    assert_pending(&buf, b"efgh");
}

#[test]
fn scratch_is_reused_after_draining() {
    let messages = if cfg!(miri) { 200 } else { 10_000 };
    let mut rng = XorShift::new(0x5EED_F0F0);
    let value: Arc<[u8]> = vec![b'v'; 2048].into();
    let mut buf = WriteBuffer::with_block_size(4096);
    let mut w = PrefixWriter::random(0x5EED_F0F1, 3000);
    let mut capacity = None;
    for i in 0..messages {
        let mut f = buf.format();
        f.put(&HEADER);
        write!(f, "msg {i}\r\n").unwrap();
        f.commit();
        let small_len = rng.range(1, 300);
        let (small, drops) = Counted::new(vec![b's'; small_len]);
        buf.pin(small);
        assert_eq!(drops.get(), 1);
        buf.pin(value.clone());
        let line = format!("msg {i}\r\n");
        while !buf.is_empty() {
            buf.write_to(&mut w).unwrap();
        }
        buf.check_invariants();
        assert_eq!(w.out.len(), 24 + line.len() + small_len + 2048);
        assert_eq!(w.out[..24], HEADER_BYTES);
        assert_eq!(&w.out[24..24 + line.len()], line.as_bytes());
        assert_eq!(Arc::strong_count(&value), 1);
        let cap = *capacity.get_or_insert(buf.capacity());
        assert_eq!(buf.capacity(), cap, "capacity changed at message {i}");
        w.out.clear();
    }
    assert_eq!(capacity, Some(4096));
}

/// Regression: an oversized chunk (made for a single format larger than the chunk size) used to
/// be kept for good once it had become the tail, so one 1 MB response left an idle connection
/// holding 1 MB of scratch. It is now freed when drained, like any other oversized chunk.
#[test]
fn an_oversized_chunk_is_not_kept_once_drained() {
    let mut buf = WriteBuffer::with_block_size(64);
    buf.put_slice(b"small");
    buf.put_slice(&vec![1u8; 100_000]);
    buf.advance(buf.pending_len());
    assert_pending(&buf, b"");
    assert!(
        buf.capacity() <= 2 * buf.block_size(),
        "an idle buffer holds {} bytes of scratch",
        buf.capacity()
    );
}

#[test]
fn scratch_stays_bounded_while_never_fully_drained() {
    // One message always stays pending, so the tail chunk is never idle and chunks must be
    // recycled through the free list.
    let messages = if cfg!(miri) { 300 } else { 10_000 };
    let mut buf = WriteBuffer::with_block_size(256);
    let mut sizes = std::collections::VecDeque::new();
    let mut max_capacity = 0;
    for i in 0..messages {
        let mut f = buf.format();
        f.put(&HEADER);
        f.put_bytes(i as u8, 40);
        f.commit();
        sizes.push_back(64);
        if sizes.len() > 2 {
            let n = sizes.pop_front().unwrap();
            buf.advance(n);
        }
        buf.check_invariants();
        max_capacity = max_capacity.max(buf.capacity());
    }
    assert_eq!(buf.pending_len(), 128);
    assert!(
        max_capacity <= 3 * 256,
        "scratch grew to {max_capacity} bytes for 128 pending"
    );
    buf.advance(128);
    assert_pending(&buf, b"");
}
