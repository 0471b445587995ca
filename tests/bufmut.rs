//! `bytes::BufMut` for `FormatGuard` (feature `bytes`): an encoder generic over `BufMut` writes
//! the same bytes into a guard as into a `Vec<u8>`, across scratch block boundaries (through
//! its own writers and through `chunk_mut` / `advance_mut`), and those bytes go out over a real
//! socket unchanged; the guard still rolls back on drop and still answers to the hard limit at
//! commit.
#![cfg(feature = "bytes")]

use bytes::{Buf, BufMut};
use sendbuf::{HardLimitError, WriteBuffer};

/// Writes `src` in place through `chunk_mut` / `advance_mut`, as an encoder's copy loop does:
/// as much as the current chunk takes, then the next chunk.
fn put_in_place(dst: &mut impl BufMut, mut src: &[u8]) {
    while !src.is_empty() {
        let chunk = dst.chunk_mut();
        assert!(
            chunk.len() > 0,
            "chunk_mut is never empty while remaining_mut > 0"
        );
        let n = chunk.len().min(src.len());
        chunk[..n].copy_from_slice(&src[..n]);
        // SAFETY: the first `n` bytes of the chunk were just written.
        unsafe { dst.advance_mut(n) };
        src = &src[n..];
    }
}

/// A base-128 varint written a byte at a time, as `prost` encodes integers.
fn put_varint(dst: &mut impl BufMut, mut v: u64) {
    while v >= 0x80 {
        dst.put_u8(v as u8 | 0x80);
        v >>= 7;
    }
    dst.put_u8(v as u8);
}

/// A record encoder generic over `BufMut`, as protocol crates write them: integers of every
/// width in both byte orders, floats, a variable-width integer, slices, runs of one byte, a
/// multi-chunk `Buf`, and bytes written in place.
fn encode(dst: &mut impl BufMut, records: usize) {
    for i in 0..records {
        let name: Vec<u8> = (0..i % 41).map(|j| b'a' + ((i + j) % 26) as u8).collect();
        dst.put_u8(0xA0 | (i % 16) as u8);
        dst.put_i8((i as i8).wrapping_neg());
        dst.put_u16(i as u16);
        dst.put_u16_le(!(i as u16));
        dst.put_u32_le((i as u32).wrapping_mul(2_654_435_761));
        dst.put_i64(-(i as i64) << 20);
        dst.put_u128_le(u128::MAX / (i as u128 + 1));
        dst.put_f32(i as f32 / 3.0);
        dst.put_uint(i as u64 * 1001, 3);
        put_varint(dst, (i as u64) << (i % 57));
        dst.put_u16(name.len() as u16);
        dst.put_slice(&name);
        dst.put_bytes(b'.', i % 7);
        dst.put((&b"two "[..]).chain(&b"chunks"[..]));
        put_in_place(dst, &name.repeat(3));
    }
}

fn encoded(records: usize) -> Vec<u8> {
    let mut v = Vec::new();
    encode(&mut v, records);
    v
}

/// Everything pending, in order, drained through `write_to`.
fn drain(buf: &mut WriteBuffer) -> Vec<u8> {
    let mut out = Vec::new();
    while buf.has_pending() {
        buf.write_to(&mut out).unwrap();
    }
    out
}

#[test]
fn encoder_writes_what_it_writes_into_a_vec_at_every_block_size() {
    for block in [1, 7, 64, 16 * 1024] {
        for records in [0, 1, 5, 60] {
            let expected = encoded(records);
            let mut buf = WriteBuffer::with_block_size(block);
            buf.put_slice(b"lead"); // the guard starts mid-block
            let mut f = buf.format();
            encode(&mut f, records);
            assert_eq!(f.written(), expected, "block {block}, {records} records");
            assert_eq!(f.len(), expected.len());
            f.commit();
            buf.check_invariants();
            assert_eq!(buf.pending_len(), 4 + expected.len());
            let out = drain(&mut buf);
            assert_eq!(&out[..4], b"lead");
            assert_eq!(&out[4..], expected, "block {block}, {records} records");
            assert!(buf.is_empty());
        }
    }
}

/// The guard's bytes outgrow a 64-byte block many times over (through its writers and through
/// `chunk_mut`), are committed between other data, and are sent over a Unix socket with
/// `send_all`; the peer receives exactly the bytes the encoder writes into a `Vec<u8>`.
#[test]
#[cfg_attr(miri, ignore)] // sockets
fn encoder_output_sent_over_a_socket_byte_for_byte() {
    use std::io::Read;
    use std::os::unix::net::UnixStream;
    use std::time::Duration;

    let records = 300;
    let body = encoded(records);
    assert!(body.len() > 100 * 64, "crosses many 64-byte blocks");
    let value = vec![b'v'; 200_000];

    let mut buf = WriteBuffer::with_block_size(64);
    buf.put_slice(b"FRAME\r\n");
    let mut f = buf.format();
    encode(&mut f, records);
    f.commit();
    buf.pin(value.clone());
    let mut f = buf.format();
    put_in_place(&mut f, b"\r\nEND\r\n");
    f.commit();
    buf.check_invariants();

    let mut expected = b"FRAME\r\n".to_vec();
    expected.extend_from_slice(&body);
    expected.extend_from_slice(&value);
    expected.extend_from_slice(b"\r\nEND\r\n");
    assert_eq!(buf.pending_len(), expected.len());

    let (a, mut b) = UnixStream::pair().unwrap();
    let reader = std::thread::spawn(move || {
        let mut got = Vec::new();
        b.read_to_end(&mut got).unwrap();
        got
    });
    let sent = buf.send_all(&a, Some(Duration::from_secs(30))).unwrap();
    drop(a);
    let got = reader.join().unwrap();
    assert_eq!(sent, expected.len());
    assert_eq!(got.len(), expected.len());
    assert!(got == expected, "the peer received other bytes");
    assert!(buf.is_empty());
    buf.check_invariants();
}

#[test]
fn dropped_guard_rolls_back_bytes_written_through_bufmut() {
    let mut buf = WriteBuffer::with_block_size(64);
    buf.put_slice(b"keep");
    let capacity = buf.capacity();
    {
        let mut f = buf.format();
        encode(&mut f, 40); // moves to larger blocks several times
        assert!(f.len() > 64);
    } // dropped: rolled back
    buf.check_invariants();
    assert_eq!(buf.pending_len(), 4);
    assert_eq!(buf.chunk(), b"keep");
    assert_eq!(buf.segments(), 1);

    // The larger blocks the guard moved into are not kept (only block-sized ones are reused).
    assert!(buf.capacity() <= capacity + 64, "{}", buf.capacity());

    // The buffer goes on as if the guard had never been opened.
    let mut f = buf.format();
    encode(&mut f, 3);
    f.commit();
    let mut expected = b"keep".to_vec();
    expected.extend_from_slice(&encoded(3));
    assert_eq!(drain(&mut buf), expected);
    assert!(buf.is_empty());
}

#[test]
fn hard_limit_applies_at_commit() {
    let mut buf = WriteBuffer::with_block_size(64);
    buf.set_hard_limit(Some(256));
    buf.put_slice(&[1; 100]);

    let mut f = buf.format();
    encode(&mut f, 10); // written freely: the limit is not checked while writing
    let n = f.len();
    assert!(n > 156);
    let err = f.try_commit().unwrap_err();
    let HardLimitError {
        requested,
        held,
        limit,
        ..
    } = err;
    assert_eq!((requested, held, limit), (n, 100, 256));
    buf.check_invariants();
    assert_eq!(buf.pending_len(), 100, "refused bytes are rolled back");

    // What fits is committed.
    let mut f = buf.format();
    encode(&mut f, 1);
    let n = f.len();
    f.try_commit().unwrap();
    assert_eq!(buf.pending_len(), 100 + n);
}

#[test]
fn chunk_mut_is_the_rest_of_the_block_and_never_empty() {
    let mut buf = WriteBuffer::with_block_size(8);
    buf.put_slice(b"abc");
    let mut f = buf.format();
    assert_eq!(f.chunk_mut().len(), 5, "the rest of the tail block");
    f.put_slice(b"defgh"); // the block is full now
    let chunk = f.chunk_mut();
    assert!(
        chunk.len() >= 1,
        "a full block moves the guard's bytes to a new one"
    );
    chunk[..1].copy_from_slice(b"i");
    // SAFETY: the byte was just written.
    unsafe { f.advance_mut(1) };
    // SAFETY: advancing by 0 writes nothing.
    unsafe { f.advance_mut(0) };
    assert_eq!(f.written(), b"defghi");
    assert_eq!(f.remaining_mut(), isize::MAX as usize - 6);
    assert!(f.has_remaining_mut());
    f.commit();
    assert_eq!(drain(&mut buf), b"abcdefghi");
}

#[test]
#[should_panic(
    expected = "cannot advance a format guard by 65 bytes: its current chunk has 64 bytes"
)]
fn advance_mut_past_the_chunk_panics_with_both_numbers() {
    let mut buf = WriteBuffer::with_block_size(64);
    let mut f = buf.format();
    assert_eq!(f.chunk_mut().len(), 64);
    // SAFETY: not sound to rely on, but it panics before counting a byte.
    unsafe { f.advance_mut(65) };
}

#[test]
fn inherent_methods_and_bufmut_write_the_same_bytes() {
    let mut buf = WriteBuffer::with_block_size(16);
    let mut f = buf.format();
    // With `BufMut` in scope a method call still means the inherent method.
    f.put_u8(1);
    f.put_u16(0x0203);
    f.put_u32_le(0x0706_0504);
    f.put_i64_ne(-2);
    f.put_slice(b"ab");
    f.put_bytes(b'-', 3);
    let inherent = f.written().to_vec();
    drop(f);

    let mut f = buf.format();
    BufMut::put_u8(&mut f, 1);
    BufMut::put_u16(&mut f, 0x0203);
    BufMut::put_u32_le(&mut f, 0x0706_0504);
    BufMut::put_i64_ne(&mut f, -2);
    BufMut::put_slice(&mut f, b"ab");
    BufMut::put_bytes(&mut f, b'-', 3);
    assert_eq!(f.written(), inherent);

    // `BufMut::put` takes any `Buf`, here one of three chunks crossing a block boundary.
    let src = (&b"0123456789"[..])
        .chain(&b"abcdef"[..])
        .chain(&b"ghij"[..]);
    BufMut::put(&mut f, src);
    assert_eq!(&f.written()[inherent.len()..], b"0123456789abcdefghij");
    f.commit();
    buf.check_invariants();
}
