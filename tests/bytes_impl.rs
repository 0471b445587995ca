//! The `bytes` integration (feature `bytes`): `Buf` for `WriteBuffer` against `Bytes`' own
//! `Buf` at every split point, and zero-copy pinning of `Bytes` / `BytesMut`, released exactly
//! once.
#![cfg(feature = "bytes")]

use sendbuf_testkit::util;

use std::io::IoSlice;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::{Buf, Bytes, BytesMut};
use sendbuf::WriteBuffer;
use util::XorShift;

const BODY: usize = 4096; // above the flatten threshold: pinned, not copied

/// A header, a pinned `Bytes`, a small trailer (copied), a pinned frozen `BytesMut`.
fn build() -> (WriteBuffer, Vec<u8>) {
    let mut buf = WriteBuffer::new();
    let mut expected = Vec::new();

    buf.put_slice(b"HEADER 1\r\n");
    expected.extend_from_slice(b"HEADER 1\r\n");

    let body: Vec<u8> = (0..BODY).map(|i| i as u8).collect();
    expected.extend_from_slice(&body);
    buf.pin(Bytes::from(body));

    buf.put_slice(b"\r\nEND\r\n");
    expected.extend_from_slice(b"\r\nEND\r\n");

    let mut m = BytesMut::with_capacity(BODY);
    m.extend((0..BODY).map(|i| (i * 7) as u8));
    expected.extend_from_slice(&m);
    buf.pin(m.freeze());

    (buf, expected)
}

fn vectored(buf: &impl Buf, slots: usize) -> Vec<u8> {
    let mut dst = vec![IoSlice::new(&[]); slots];
    let n = buf.chunks_vectored(&mut dst);
    dst[..n].iter().flat_map(|s| s.iter().copied()).collect()
}

#[test]
fn buf_matches_bytes_at_every_split() {
    let (_, expected) = build();
    for k in 0..=expected.len() {
        let (mut buf, _) = build();
        let mut reference = Bytes::from(expected.clone());
        Buf::advance(&mut buf, k);
        Buf::advance(&mut reference, k);
        buf.check_invariants();

        assert_eq!(Buf::remaining(&buf), reference.remaining(), "split {k}");
        assert_eq!(Buf::has_remaining(&buf), reference.has_remaining());
        // A chunk may be shorter than the reference's (one contiguous `Bytes`) but is a prefix.
        let chunk = Buf::chunk(&buf);
        assert!(reference.chunk().starts_with(chunk), "split {k}");
        assert_eq!(chunk.is_empty(), reference.chunk().is_empty(), "split {k}");
        // Enough slots: the whole rest, and the same iovecs the buffer sends.
        assert_eq!(vectored(&buf, 16), reference.chunk(), "split {k}");
        let iov: Vec<&[u8]> = buf.io_slices().iter().map(|s| &**s).collect();
        let mut dst = [IoSlice::new(&[]); 16];
        let n = Buf::chunks_vectored(&buf, &mut dst);
        let got: Vec<&[u8]> = dst[..n].iter().map(|s| &**s).collect();
        assert_eq!(got, iov, "split {k}");
        // Fewer slots: a prefix.
        assert!(reference.chunk().starts_with(&vectored(&buf, 1)));
        assert_eq!(Buf::chunks_vectored(&buf, &mut []), 0);
    }
}

#[test]
fn buf_consumers_read_everything_in_random_steps() {
    let mut rng = XorShift::new(7);
    for _ in 0..50 {
        let (mut buf, expected) = build();
        let mut got = Vec::new();
        while buf.has_remaining() {
            let n = 1 + rng.below(buf.remaining().min(600));
            got.extend_from_slice(&buf.copy_to_bytes(n));
            buf.check_invariants();
        }
        assert_eq!(got, expected);
        assert!(buf.is_empty());
    }
}

#[test]
fn buf_reader_get_u16_across_segments() {
    let mut buf = WriteBuffer::new();
    buf.put_slice(&[0x12]);
    buf.pin(Bytes::from(vec![0x34; BODY]));
    buf.advance(0);
    // The u16 straddles scratch and the pinned value.
    assert_eq!(buf.get_u16(), 0x1234);
    assert_eq!(buf.remaining(), BODY - 1);
}

#[test]
#[should_panic(expected = "only 3 bytes are pending")]
fn buf_advance_past_end_panics_with_both_numbers() {
    let mut buf = WriteBuffer::new();
    buf.put_slice(b"abc");
    Buf::advance(&mut buf, 4);
}

// ---------------------------------------------------------------------------------------------
// Pinning `Bytes`.
// ---------------------------------------------------------------------------------------------

/// An owner for `Bytes::from_owner` that counts its drops.
struct Owner(Vec<u8>, Arc<AtomicUsize>);

impl AsRef<[u8]> for Owner {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for Owner {
    fn drop(&mut self) {
        self.1.fetch_add(1, Ordering::SeqCst);
    }
}

fn counted(len: usize) -> (Bytes, Arc<AtomicUsize>) {
    let drops = Arc::new(AtomicUsize::new(0));
    (Bytes::from_owner(Owner(vec![9; len], drops.clone())), drops)
}

#[test]
fn pinned_bytes_are_not_copied() {
    let (bytes, _) = counted(BODY);
    let mut buf = WriteBuffer::new();
    buf.pin(bytes.clone());
    assert_eq!(buf.chunk().as_ptr(), bytes.as_ptr());
    assert_eq!(buf.chunk().len(), BODY);

    let static_bytes = Bytes::from_static(&[1; BODY]);
    buf.pin(static_bytes.clone());
    assert_eq!(buf.io_slices()[1].as_ptr(), static_bytes.as_ptr());

    let mut m = BytesMut::with_capacity(BODY);
    m.extend_from_slice(&[3; BODY]);
    let ptr = m.as_ptr();
    buf.pin(m); // frozen on the way in
    assert_eq!(buf.io_slices()[2].as_ptr(), ptr);
    assert_eq!(buf.pending_len(), 3 * BODY);
}

#[test]
fn pinned_bytes_released_with_the_last_clone() {
    let (bytes, drops) = counted(BODY);
    let mut buf = WriteBuffer::new();
    buf.put_slice(b"head");
    buf.pin(bytes.clone());
    buf.pin(bytes.slice(10..BODY)); // a second clone of the same owner, pinned too
    drop(bytes);

    buf.advance(4 + BODY - 1);
    assert_eq!(
        drops.load(Ordering::SeqCst),
        0,
        "one byte of the first clone still pending"
    );
    buf.advance(1);
    assert_eq!(
        drops.load(Ordering::SeqCst),
        0,
        "the second clone still pins the owner"
    );
    buf.advance(BODY - 11);
    assert_eq!(drops.load(Ordering::SeqCst), 0);
    buf.advance(1);
    assert_eq!(
        drops.load(Ordering::SeqCst),
        1,
        "released exactly once, with the last byte"
    );
    assert!(buf.is_empty());
}

#[test]
fn pinned_bytes_handle_becomes_unique_again_after_send() {
    let bytes = Bytes::from(vec![5u8; BODY]);
    let mut buf = WriteBuffer::new();
    buf.pin(bytes.clone());
    assert!(!bytes.is_unique());
    let mut out = Vec::new();
    while !buf.is_empty() {
        buf.write_to(&mut out).unwrap();
    }
    assert!(bytes.is_unique());
    assert_eq!(out, &bytes[..]);
}

#[test]
fn pinned_bytes_released_on_clear_and_drop() {
    let (bytes, drops) = counted(BODY);
    let mut buf = WriteBuffer::new();
    buf.pin(bytes);
    buf.advance(100);
    buf.clear();
    assert_eq!(drops.load(Ordering::SeqCst), 1);

    let (bytes, drops) = counted(BODY);
    let mut buf = WriteBuffer::new();
    buf.pin(bytes);
    drop(buf);
    assert_eq!(drops.load(Ordering::SeqCst), 1);
}

#[test]
fn small_bytes_are_copied_and_released_at_once() {
    let (bytes, drops) = counted(16);
    let mut buf = WriteBuffer::new();
    buf.pin(bytes);
    assert_eq!(drops.load(Ordering::SeqCst), 1);
    assert_eq!(buf.chunk(), &[9; 16]);
}
