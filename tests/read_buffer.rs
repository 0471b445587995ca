//! `ReadBuffer`: data arriving in arbitrary pieces is parsed byte-exact whatever the split, the
//! storage moves and grows without losing a byte, `max_len` bounds memory with an error (never a
//! panic), and stealing follows emptiness.

use std::io::{self, ErrorKind, Read};

use sendbuf::{ConsumeError, ReadBuffer, ReadLimitError, Stealable};

/// Fixed-seed xorshift64: reproducible "random" splits without a dependency.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// Uniform-ish in `0..n` (`n > 0`).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Iterations scaled down under Miri.
fn rounds(native: usize) -> usize {
    if cfg!(miri) {
        native / 20 + 1
    } else {
        native
    }
}

/// A socket stand-in: returns `src` in chunks of random size, sometimes `Interrupted` (which
/// `read_from` must retry) or `WouldBlock` (which it must return).
struct ChunkedReader<'a> {
    src: &'a [u8],
    rng: XorShift,
    max_chunk: usize,
    reads: usize,
}

impl<'a> ChunkedReader<'a> {
    fn new(src: &'a [u8], seed: u64, max_chunk: usize) -> Self {
        ChunkedReader {
            src,
            rng: XorShift(seed),
            max_chunk,
            reads: 0,
        }
    }
}

impl Read for ChunkedReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.reads += 1;
        assert!(!buf.is_empty(), "read_from must offer at least one byte");
        match self.rng.below(10) {
            0 => return Err(ErrorKind::Interrupted.into()),
            1 if !self.src.is_empty() => return Err(ErrorKind::WouldBlock.into()),
            _ => {}
        }
        let n = (1 + self.rng.below(self.max_chunk))
            .min(buf.len())
            .min(self.src.len());
        buf[..n].copy_from_slice(&self.src[..n]);
        self.src = &self.src[n..];
        Ok(n)
    }
}

fn stream(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = XorShift(seed);
    (0..len).map(|_| rng.next() as u8).collect()
}

#[test]
fn random_chunks_and_random_consumes_are_byte_exact() {
    let src = stream(rounds(20_000), 0x9E37_79B9_7F4A_7C15);
    for (seed, initial, max_chunk) in [
        (1u64, 1usize, 7usize),
        (2, 8, 3),
        (3, 16, 64),
        (4, 100, 1000),
        (5, 16 * 1024, 5000),
    ] {
        let mut rng = XorShift(seed.wrapping_mul(0x2545_F491_4F6C_DD1D));
        let mut reader = ChunkedReader::new(&src, seed, max_chunk);
        let mut buf = ReadBuffer::with_block_size(initial);
        let mut out = Vec::with_capacity(src.len());
        loop {
            match buf.read_from(&mut reader) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) => panic!("unexpected error: {e}"),
            }
            buf.check_invariants();
            // Consume a random amount, sometimes nothing, sometimes all.
            let n = match rng.below(4) {
                0 => 0,
                1 => buf.len(),
                _ => rng.below(buf.len() + 1),
            };
            out.extend_from_slice(&buf.data()[..n]);
            buf.consume(n);
            buf.check_invariants();
        }
        out.extend_from_slice(buf.data());
        assert_eq!(out, src, "seed {seed}: bytes lost or reordered");
        assert!(reader.reads > 1);
    }
}

/// A binary protocol: a big-endian `u16` length, then that many bytes.
fn frames(count: usize, seed: u64) -> (Vec<u8>, Vec<Vec<u8>>) {
    let mut rng = XorShift(seed);
    let mut wire = Vec::new();
    let mut bodies = Vec::new();
    for _ in 0..count {
        let len = rng.below(300);
        let body: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        wire.extend_from_slice(&(len as u16).to_be_bytes());
        wire.extend_from_slice(&body);
        bodies.push(body);
    }
    (wire, bodies)
}

/// Parses every complete frame at the front of `buf`.
fn parse(buf: &mut ReadBuffer, out: &mut Vec<Vec<u8>>) {
    loop {
        let data = buf.data();
        if data.len() < 2 {
            return;
        }
        let len = u16::from_be_bytes([data[0], data[1]]) as usize;
        if data.len() < 2 + len {
            return;
        }
        out.push(data[2..2 + len].to_vec());
        buf.consume(2 + len);
    }
}

#[test]
fn length_prefixed_frames_parse_whatever_the_chunking() {
    let (wire, bodies) = frames(rounds(400), 77);
    for seed in 1..=rounds(8) as u64 {
        let mut reader = ChunkedReader::new(&wire, seed, 1 + (seed as usize * 37) % 700);
        let mut buf = ReadBuffer::with_block_size(16);
        let mut parsed = Vec::new();
        loop {
            match buf.read_from(&mut reader) {
                Ok(0) => break,
                Ok(_) => parse(&mut buf, &mut parsed),
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) => panic!("unexpected error: {e}"),
            }
        }
        assert!(buf.is_empty(), "seed {seed}: a frame was left unparsed");
        assert_eq!(parsed, bodies, "seed {seed}");
        // Leftovers are shorter than one frame (301 bytes), so doubling stops at 1024.
        assert!(
            buf.capacity() <= 1024,
            "grew further than the largest frame needs: {}",
            buf.capacity()
        );
    }
}

#[test]
fn every_split_point_of_a_frame_stream() {
    let (wire, bodies) = frames(6, 5);
    for split in 0..=wire.len() {
        let mut buf = ReadBuffer::with_block_size(4);
        let mut parsed = Vec::new();
        for mut piece in [&wire[..split], &wire[split..]] {
            while !piece.is_empty() {
                buf.read_from(&mut piece).unwrap();
                parse(&mut buf, &mut parsed);
                buf.check_invariants();
            }
        }
        assert!(buf.is_empty());
        assert_eq!(parsed, bodies, "split at {split}");
    }
}

#[test]
fn consume_at_every_point_then_read_more() {
    let src = stream(64, 9);
    for k in 0..=src.len() {
        let mut buf = ReadBuffer::with_block_size(64);
        buf.read_from(&mut &src[..]).unwrap();
        buf.consume(k);
        assert_eq!(buf.data(), &src[k..]);
        // Full storage: the next read must move or grow, keeping the bytes.
        buf.read_from(&mut &b"next"[..]).unwrap();
        assert_eq!(&buf.data()[..src.len() - k], &src[k..]);
        assert_eq!(&buf.data()[src.len() - k..], b"next");
        buf.check_invariants();
    }
}

/// An endless peer: the buffer must stop it with an error, not by growing or panicking.
struct Flood;

impl Read for Flood {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        buf.fill(b'f');
        Ok(buf.len())
    }
}

fn limit_of(err: &io::Error) -> ReadLimitError {
    *err.get_ref()
        .and_then(|e| e.downcast_ref::<ReadLimitError>())
        .expect("a ReadLimitError inside")
}

#[test]
fn max_len_bounds_a_flooding_peer_with_an_error() {
    let mut buf = ReadBuffer::with_block_size(1000);
    buf.set_max_len(10_000);
    let mut total = 0;
    let err = loop {
        match buf.read_from(&mut Flood) {
            Ok(n) => total += n,
            Err(e) => break e,
        }
    };
    assert_eq!(err.kind(), ErrorKind::OutOfMemory);
    assert_eq!(
        limit_of(&err),
        ReadLimitError {
            requested: 1,
            buffered: 10_000,
            max_len: 10_000
        }
    );
    assert_eq!(total, 10_000);
    assert_eq!(buf.len(), 10_000);
    assert!(buf.capacity() <= 10_000, "grew past max_len");

    // Still usable: refuses again, then reads once space is consumed.
    assert_eq!(
        buf.read_from(&mut Flood).unwrap_err().kind(),
        ErrorKind::OutOfMemory
    );
    buf.consume(10);
    assert_eq!(buf.read_from(&mut Flood).unwrap(), 10);
    buf.check_invariants();
}

#[test]
fn max_len_holds_even_when_storage_is_larger() {
    let mut buf = ReadBuffer::with_block_size(4096);
    buf.read_from(&mut &b"x"[..]).unwrap();
    buf.set_max_len(100);
    assert_eq!(buf.read_from(&mut Flood).unwrap(), 99);
    assert_eq!(buf.len(), 100);
    assert!(buf.read_from(&mut Flood).is_err());
    assert_eq!(buf.capacity(), 4096);
}

#[test]
fn zero_max_len_reads_nothing() {
    let mut buf = ReadBuffer::new();
    buf.set_max_len(0);
    let err = buf.read_from(&mut Flood).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::OutOfMemory);
    assert_eq!(buf.capacity(), 0);
}

#[test]
fn reserve_errs_past_max_len_and_leaves_the_buffer_alone() {
    let mut buf = ReadBuffer::with_block_size(64);
    buf.set_max_len(1000);
    buf.read_from(&mut &b"header"[..]).unwrap();
    assert_eq!(
        buf.reserve(995),
        Err(ReadLimitError {
            requested: 995,
            buffered: 6,
            max_len: 1000
        })
    );
    assert_eq!(
        buf.reserve(usize::MAX),
        Err(ReadLimitError {
            requested: usize::MAX,
            buffered: 6,
            max_len: 1000
        })
    );
    assert_eq!(buf.data(), b"header");
    assert_eq!(buf.capacity(), 64);
    let io_err: io::Error = buf.reserve(2000).unwrap_err().into();
    assert_eq!(io_err.kind(), ErrorKind::OutOfMemory);
}

#[test]
fn reserve_makes_contiguous_room_for_a_body() {
    let mut buf = ReadBuffer::with_block_size(64);
    buf.read_from(&mut &b"set k 0 0 5000\r\n"[..]).unwrap();
    buf.consume(16);
    buf.read_from(&mut &b"ab"[..]).unwrap();
    buf.reserve(5000).unwrap();
    assert!(buf.capacity() >= 5002);
    assert_eq!(buf.data(), b"ab");

    // The body then arrives without another move or allocation.
    let base = buf.data().as_ptr();
    let body = vec![b'v'; 4998];
    let mut peer = &body[..];
    while !peer.is_empty() {
        buf.read_from(&mut peer).unwrap();
    }
    assert_eq!(buf.data().as_ptr(), base);
    assert_eq!(buf.len(), 5000);
}

#[test]
fn interrupted_is_retried_within_one_call() {
    struct InterruptedThrice(usize);
    impl Read for InterruptedThrice {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.0 < 3 {
                self.0 += 1;
                return Err(ErrorKind::Interrupted.into());
            }
            buf[..2].copy_from_slice(b"ok");
            Ok(2)
        }
    }
    let mut buf = ReadBuffer::new();
    assert_eq!(buf.read_from(&mut InterruptedThrice(0)).unwrap(), 2);
    assert_eq!(buf.data(), b"ok");
}

#[test]
fn would_block_is_returned_and_changes_no_data() {
    struct Blocked;
    impl Read for Blocked {
        fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
            Err(ErrorKind::WouldBlock.into())
        }
    }
    let mut buf = ReadBuffer::new();
    buf.read_from(&mut &b"abc"[..]).unwrap();
    assert_eq!(
        buf.read_from(&mut Blocked).unwrap_err().kind(),
        ErrorKind::WouldBlock
    );
    assert_eq!(buf.data(), b"abc");
}

#[test]
fn end_of_stream_is_ok_zero() {
    let mut buf = ReadBuffer::new();
    assert_eq!(buf.read_from(&mut io::empty()).unwrap(), 0);
    assert!(buf.is_empty());
}

#[test]
fn a_reader_that_overreports_is_an_error_not_a_panic() {
    struct Liar;
    impl Read for Liar {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            Ok(buf.len() + 1)
        }
    }
    let mut buf = ReadBuffer::with_block_size(8);
    let err = buf.read_from(&mut Liar).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidData);
    assert!(buf.is_empty());
    buf.check_invariants();
}

#[test]
fn try_consume_reports_both_numbers_and_changes_nothing() {
    let mut buf = ReadBuffer::new();
    buf.read_from(&mut &b"abc"[..]).unwrap();
    assert_eq!(
        buf.try_consume(4),
        Err(ConsumeError {
            requested: 4,
            available: 3
        })
    );
    assert_eq!(buf.data(), b"abc");
    let io_err: io::Error = buf.try_consume(9).unwrap_err().into();
    assert_eq!(io_err.kind(), ErrorKind::InvalidInput);
    assert_eq!(buf.try_consume(0), Ok(()));
    assert_eq!(ReadBuffer::new().try_consume(0), Ok(()));
}

#[test]
#[should_panic(expected = "cannot consume 4 bytes: only 3 bytes are buffered")]
fn consume_past_the_end_panics_with_both_numbers() {
    let mut buf = ReadBuffer::new();
    buf.read_from(&mut &b"abc"[..]).unwrap();
    buf.consume(4);
}

#[test]
fn clear_discards_data_and_keeps_storage() {
    let mut buf = ReadBuffer::with_block_size(32);
    buf.read_from(&mut &b"abc"[..]).unwrap();
    buf.clear();
    assert!(buf.is_empty());
    assert_eq!(buf.capacity(), 32);
    assert_eq!(buf.steal(), Ok(32));
}

#[test]
fn steal_is_refused_while_any_byte_is_unconsumed() {
    let src = stream(50, 3);
    let mut buf = ReadBuffer::with_block_size(64);
    buf.read_from(&mut &src[..]).unwrap();
    for left in (1..=50).rev() {
        let refused = buf.steal().unwrap_err();
        assert_eq!((refused.pending, refused.held), (left, 0));
        assert_eq!(
            buf.data(),
            &src[50 - left..],
            "a refused steal changed the data"
        );
        assert_eq!(buf.storage_bytes(), 64);
        buf.consume(1);
    }
    assert_eq!(buf.steal(), Ok(64));
    assert_eq!(buf.capacity(), 0);
    assert_eq!(buf.storage_bytes(), 0);
    assert_eq!(buf.steal(), Ok(0), "nothing left to steal");

    // Usable again: the next read takes fresh storage of the initial size.
    buf.read_from(&mut &b"again"[..]).unwrap();
    assert_eq!((buf.data(), buf.capacity()), (&b"again"[..], 64));
}

#[test]
fn steal_refused_error_converts_to_io_error() {
    let mut buf = ReadBuffer::new();
    buf.read_from(&mut &b"abc"[..]).unwrap();
    let err: io::Error = buf.steal().unwrap_err().into();
    assert_eq!(
        err.to_string(),
        "cannot steal the buffer: 3 bytes are pending and 0 bytes held by the kernel"
    );
}

#[test]
fn a_fresh_buffer_holds_no_storage_until_it_reads() {
    let mut buf = ReadBuffer::new();
    assert_eq!(buf.storage_bytes(), 0);
    assert!(buf.data().is_empty());
    assert_eq!(buf.steal(), Ok(0));
    assert_eq!(buf.read_from(&mut io::empty()).unwrap(), 0);
    assert!(buf.is_empty());
}
