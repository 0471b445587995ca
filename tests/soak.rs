//! Soak test: a large volume of messages through a real loopback TCP socket with a tiny send
//! buffer, sent with `send_to`, read by a thread that reads in random sizes and pauses at random,
//! and checked byte for byte.
//!
//! Each message is a header formatted into scratch (magic, sequence number, value index, length,
//! checksum of the value), the value (pinned as an `Arc<[u8]>`, `Vec<u8>`, `Box<[u8]>`, a
//! drop-counting owner, or copied with `put_slice`; small ones flattened by the threshold, which
//! changes as the test runs) and a two-byte trailer; rolled-back formats go between them. The
//! reader recomputes each value's checksum and checks the sequence, length and trailer. With the
//! tiny send buffer, nearly every `sendmsg` is partial and many hit `EAGAIN`.
//!
//! The default volume runs in about ten seconds in a debug build. `SENDBUF_SOAK_BYTES` sets
//! another, such as `40G` or `512M`:
//!
//! ```text
//! SENDBUF_SOAK_BYTES=40G cargo test --release --test soak -- --nocapture
//! ```
//!
//! A one-line summary goes to stderr in any case.
#![cfg(unix)]

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use sendbuf::{GatherLimits, IoVecBuilder, WriteBuffer};
use socket2::SockRef;

/// Default volume: about ten seconds of a debug build on the project's 2-core machine.
const DEFAULT_BYTES: u64 = 512 << 20;

const MAGIC: u32 = 0x5342_5546; // "SBUF"
/// Magic (4), sequence number (8), value index (2), value length (4), value checksum (4).
const HEADER: usize = 22;
const TRAILER: &[u8] = b"\r\n";

/// Queue messages up to this many pending bytes, then send down to `LOW_MARK`.
const HIGH_MARK: usize = 512 * 1024;
const LOW_MARK: usize = 64 * 1024;

#[test]
#[cfg_attr(miri, ignore)] // real sockets
fn soak_loopback_tcp_tiny_send_buffer() {
    let target = match std::env::var("SENDBUF_SOAK_BYTES") {
        Ok(s) => parse_size(&s).unwrap_or_else(|| {
            panic!("SENDBUF_SOAK_BYTES={s:?}: expected a byte count such as 40G, 512M or 1000000")
        }),
        Err(_) => DEFAULT_BYTES,
    };
    let values = Arc::new(Values::new());

    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    // Inherited by the accepted socket: a small receive window keeps the sender's queue full.
    SockRef::from(&listener)
        .set_recv_buffer_size(16 * 1024)
        .unwrap();
    let tx = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (rx, _) = listener.accept().unwrap();
    drop(listener);
    SockRef::from(&tx).set_send_buffer_size(4096).unwrap();
    tx.set_nodelay(true).unwrap();
    tx.set_nonblocking(true).unwrap();

    let start = Instant::now();
    let reader = {
        let values = values.clone();
        thread::spawn(move || read_all(rx, &values))
    };
    let sent = send_all(&tx, &values, target);
    tx.shutdown(Shutdown::Write).unwrap();
    let received = reader.join().expect("reader thread panicked");
    let elapsed = start.elapsed();
    drop(tx);

    assert_eq!(received.messages, sent.messages, "messages received");
    assert_eq!(received.bytes, sent.bytes, "bytes received");
    for (i, v) in values.arcs.iter().enumerate() {
        assert_eq!(
            Arc::strong_count(v),
            1,
            "value {i} still pinned after the run"
        );
    }

    let secs = elapsed.as_secs_f64();
    // Straight to stderr: shown even when the test harness captures output.
    let _ = writeln!(
        io::stderr(),
        "soak: {} bytes ({:.1} MiB) in {} messages, {} partial writes of {} sends, {} WouldBlocks, \
         {:.1} s, {:.1} MB/s",
        sent.bytes,
        sent.bytes as f64 / (1 << 20) as f64,
        sent.messages,
        sent.partial,
        sent.sends,
        sent.would_block,
        secs,
        sent.bytes as f64 / secs / 1e6,
    );
}

/// `40G`, `512M`, `64k`, `1000000`, `2GiB`: binary multiples.
fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let lower = s.to_ascii_lowercase();
    let digits = lower.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let shift = match &lower[digits.len()..] {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => return None,
    };
    digits.parse::<u64>().ok()?.checked_mul(1 << shift)
}

#[test]
fn soak_size_parsing() {
    assert_eq!(parse_size("40G"), Some(40 << 30));
    assert_eq!(parse_size("512M"), Some(512 << 20));
    assert_eq!(parse_size("64kiB"), Some(64 << 10));
    assert_eq!(parse_size("1000"), Some(1000));
    assert_eq!(parse_size("12Q"), None);
    assert_eq!(parse_size("G"), None);
}

/// The values messages carry, with their checksums, shared by writer and reader.
struct Values {
    arcs: Vec<Arc<[u8]>>,
    sums: Vec<u32>,
}

impl Values {
    fn new() -> Values {
        let mut rng = XorShift(0x2545_f491_4f6c_dd1d);
        // Empty, tiny, around the default flatten threshold and chunk sizes, large.
        let mut lens = vec![0, 1, 7, 24, 100, 511, 512, 513, 1000, 4095, 4096, 4097];
        lens.extend([16 << 10, (16 << 10) + 1, 64 << 10, 200_000, 1 << 20]);
        while lens.len() < 48 {
            lens.push(match rng.below(4) {
                0 => rng.below(600),
                1 => rng.below(8192),
                _ => rng.below(128 << 10),
            });
        }
        let arcs: Vec<Arc<[u8]>> = lens
            .iter()
            .map(|&len| (0..len).map(|_| rng.next() as u8).collect())
            .collect();
        let sums = arcs.iter().map(|v| checksum(v)).collect();
        Values { arcs, sums }
    }
}

/// FNV-1a over 64-bit words: order-sensitive and cheap enough in a debug build.
fn checksum(bytes: &[u8]) -> u32 {
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = 0xcbf2_9ce4_8422_2325 ^ bytes.len() as u64;
    let mut words = bytes.chunks_exact(8);
    for w in &mut words {
        h = (h ^ u64::from_le_bytes(w.try_into().unwrap())).wrapping_mul(PRIME);
    }
    for &b in words.remainder() {
        h = (h ^ u64::from(b)).wrapping_mul(PRIME);
    }
    (h ^ (h >> 32)) as u32
}

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// A pinned owner that counts its drops; holds its bytes by `Arc`, so it is still zero-copy.
struct Counted(Arc<[u8]>, Arc<AtomicUsize>);

impl AsRef<[u8]> for Counted {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.1.fetch_add(1, Ordering::SeqCst);
    }
}

#[derive(Default)]
struct Sent {
    bytes: u64,
    messages: u64,
    sends: u64,
    partial: u64,
    would_block: u64,
}

/// Queues `target` bytes of messages and sends them all on the non-blocking `tx`.
fn send_all(tx: &TcpStream, values: &Values, target: u64) -> Sent {
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let mut buf = WriteBuffer::with_block_size(4096);
    let mut st = Sent::default();
    let counted_drops = Arc::new(AtomicUsize::new(0));
    let mut counted = 0;

    while st.bytes < target || !buf.is_empty() {
        while buf.pending_len() < HIGH_MARK && st.bytes < target {
            if st.messages % 1024 == 0 {
                buf.set_flatten_threshold([0, 64, 512, 4096][rng.below(4)]);
            }
            let idx = rng.below(values.arcs.len());
            let value = &values.arcs[idx];
            let mut f = buf.format();
            f.put_u32(MAGIC);
            f.put_u64(st.messages);
            f.put_u16_le(idx as u16);
            f.put_u32_le(value.len() as u32);
            f.put_u32(values.sums[idx]);
            f.commit();
            match rng.below(6) {
                0 => buf.pin(value.clone()),
                1 => buf.pin(value.to_vec()),
                2 => buf.pin(Box::<[u8]>::from(&value[..])),
                3 => {
                    buf.pin(Counted(value.clone(), counted_drops.clone()));
                    counted += 1;
                }
                4 => buf.put_slice(value),
                _ => {
                    // A trailer-less rollback first: it must leave nothing on the wire.
                    let mut f = buf.format();
                    f.put_bytes(0xEE, rng.below(10_000));
                    drop(f);
                    buf.pin(value.clone());
                }
            }
            buf.put_slice(TRAILER);
            st.messages += 1;
            st.bytes += (HEADER + value.len() + TRAILER.len()) as u64;
        }

        // Send down to the low mark (or everything, at the end).
        let low = if st.bytes < target { LOW_MARK } else { 0 };
        while buf.pending_len() > low {
            let limit = match rng.below(8) {
                0 => GatherLimits::new().with_max_iovecs(1 + rng.below(8)),
                1 => GatherLimits::new().with_max_bytes(1 + rng.below(64 << 10)),
                _ => GatherLimits::new(),
            };
            let offered = IoVecBuilder::with_limits(limit).gather(&buf);
            match buf.send_to_with(tx, limit) {
                Ok(n) => {
                    assert!(n > 0 && n <= offered, "sent {n} of {offered}");
                    st.sends += 1;
                    if n < offered {
                        st.partial += 1;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // No poller here: yield, and now and then sleep, until the reader makes room.
                    st.would_block += 1;
                    if st.would_block % 4 == 0 {
                        thread::sleep(Duration::from_micros(20));
                    } else {
                        thread::yield_now();
                    }
                }
                Err(e) => panic!("send_to failed after {} messages: {e}", st.messages),
            }
            buf.check_invariants();
        }
        assert!(counted_drops.load(Ordering::SeqCst) <= counted);
    }
    assert!(buf.is_empty());
    drop(buf);
    assert_eq!(
        counted_drops.load(Ordering::SeqCst),
        counted,
        "drop-counting values released"
    );
    st
}

struct Received {
    bytes: u64,
    messages: u64,
}

/// Reads and checks messages until end of stream.
fn read_all(rx: TcpStream, values: &Values) -> Received {
    let mut r = Jittery {
        stream: rx,
        rng: XorShift(0xdead_beef_cafe_f00d),
    };
    let mut got = Received {
        bytes: 0,
        messages: 0,
    };
    let mut header = [0u8; HEADER];
    let mut value = Vec::new();
    let mut trailer = [0u8; 2];
    loop {
        // End of stream is allowed only between messages.
        let first = r.read(&mut header[..1]).unwrap();
        if first == 0 {
            break;
        }
        r.read_exact(&mut header[1..]).unwrap();
        let at = got.messages;
        let word = |range: std::ops::Range<usize>| -> Vec<u8> { header[range].to_vec() };
        let magic = u32::from_be_bytes(word(0..4).try_into().unwrap());
        let seq = u64::from_be_bytes(word(4..12).try_into().unwrap());
        let idx = usize::from(u16::from_le_bytes(word(12..14).try_into().unwrap()));
        let len = u32::from_le_bytes(word(14..18).try_into().unwrap()) as usize;
        let sum = u32::from_be_bytes(word(18..22).try_into().unwrap());
        assert_eq!(magic, MAGIC, "message {at}: bad magic (stream out of step)");
        assert_eq!(seq, at, "message {at}: out of sequence");
        assert!(idx < values.arcs.len(), "message {at}: value index {idx}");
        assert_eq!(len, values.arcs[idx].len(), "message {at}: length");
        assert_eq!(sum, values.sums[idx], "message {at}: header checksum");
        value.resize(len, 0);
        r.read_exact(&mut value).unwrap();
        assert_eq!(checksum(&value), sum, "message {at}: value checksum");
        r.read_exact(&mut trailer).unwrap();
        assert_eq!(trailer, TRAILER, "message {at}: trailer");
        got.messages += 1;
        got.bytes += (HEADER + len + TRAILER.len()) as u64;
    }
    got
}

/// Reads in random sizes, from one byte to 64 KiB, and now and then pauses for up to 2 ms.
struct Jittery {
    stream: TcpStream,
    rng: XorShift,
}

impl Read for Jittery {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.rng.below(64) == 0 {
            thread::sleep(Duration::from_micros(self.rng.below(2000) as u64));
        }
        let cap = match self.rng.below(4) {
            0 => 1 + self.rng.below(64),
            1 => 1 + self.rng.below(4096),
            _ => 1 + self.rng.below(64 << 10),
        };
        let n = buf.len().min(cap);
        self.stream.read(&mut buf[..n])
    }
}
