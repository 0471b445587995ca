//! `ZeroCopy` on real loopback TCP sockets: `MSG_ZEROCOPY` sends, completions read from the
//! error queue, values released exactly once and only by a completion, steals refused while
//! the kernel holds bytes, a byte-exact stream under a tiny `SO_SNDBUF` and partial writes.
//!
//! On loopback the kernel delivers completions flagged `SO_EE_CODE_ZEROCOPY_COPIED` (it copies
//! when the data reaches the local receiver). Every test here makes system calls: not under Miri.
#![cfg(all(target_os = "linux", not(miri)))]
// `len() > 0` is meant: pending bytes. `!is_empty()` is also true while the kernel holds bytes.

use sendbuf_testkit::util;

use std::io::{self, Read};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd};
use std::thread;
use std::time::Duration;

use sendbuf::{Stealable, WriteBuffer, ZeroCopy};
use socket2::SockRef;
use util::{Counted, DropCount, XorShift};

/// A connected loopback pair: (sender, receiver).
fn pair() -> (TcpStream, TcpStream) {
    pair_on("127.0.0.1:0")
}

fn pair_on(addr: &str) -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind(addr).unwrap();
    let tx = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (rx, _) = listener.accept().unwrap();
    (tx, rx)
}

/// Waits up to 10 ms for `fd` to be writable or to report an error-queue message.
fn wait(fd: &TcpStream) {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLOUT,
        revents: 0,
    };
    // SAFETY: one live pollfd for the duration of the call.
    unsafe { libc::poll(&mut pfd, 1, 10) };
}

/// Reads exactly `expected.len()` bytes in random-sized pieces with random pauses and compares
/// them with `expected`, returning the first mismatch offset if any.
fn spawn_checker(
    mut rx: TcpStream,
    expected: Vec<u8>,
    seed: u64,
) -> thread::JoinHandle<Option<usize>> {
    thread::spawn(move || {
        let mut rng = XorShift::new(seed);
        let mut at = 0;
        let mut piece = vec![0u8; 64 * 1024];
        while at < expected.len() {
            let want = rng.range(1, piece.len()).min(expected.len() - at);
            let n = rx.read(&mut piece[..want]).unwrap();
            assert!(n > 0, "sender closed early at {at}");
            if piece[..n] != expected[at..at + n] {
                let off = piece[..n]
                    .iter()
                    .zip(&expected[at..at + n])
                    .position(|(a, b)| a != b)
                    .unwrap();
                return Some(at + off);
            }
            at += n;
            if rng.one_in(8) {
                thread::sleep(Duration::from_micros(rng.range(50, 2000) as u64));
            }
        }
        None
    })
}

/// `count` responses (header, value, trailer), the bytes they make on the wire in order, and
/// each value's drop counter. Values under 1000 bytes are copied into scratch when queued,
/// larger ones pinned.
fn responses(
    rng: &mut XorShift,
    count: usize,
) -> (Vec<(String, Counted)>, Vec<u8>, Vec<DropCount>) {
    let mut items = Vec::new();
    let mut wire = Vec::new();
    let mut drops = Vec::new();
    for i in 0..count {
        let len = if rng.one_in(4) {
            rng.range(1, 1000)
        } else {
            rng.range(1024, 150_000)
        };
        let bytes = rng.bytes(len);
        let header = format!("VALUE key{i} 0 {len}\r\n");
        wire.extend_from_slice(header.as_bytes());
        wire.extend_from_slice(&bytes);
        wire.extend_from_slice(b"\r\n");
        let (value, count) = Counted::new(bytes);
        items.push((header, value));
        drops.push(count);
    }
    (items, wire, drops)
}

fn queue(buf: &mut WriteBuffer, header: &str, value: Counted) {
    buf.put_slice(header.as_bytes());
    buf.pin(value);
    buf.put_slice(b"\r\n");
}

fn counts(drops: &[DropCount]) -> Vec<usize> {
    drops.iter().map(DropCount::get).collect()
}

/// The whole life on a real socket: every send zero-copy (threshold 0, kept on after copied
/// completions), a tiny send buffer so most sends are partial or `EAGAIN`, a reader checking
/// every byte. Values are dropped only inside `poll_completions` (never by a send), exactly
/// once; steals are refused whenever the kernel holds bytes; at the end nothing is held or
/// leaked.
#[test]
fn zero_copy_sends_release_values_only_on_their_completion() {
    let (tx, rx) = pair();
    SockRef::from(&tx).set_send_buffer_size(4096).unwrap();
    tx.set_nonblocking(true).unwrap();

    let mut rng = XorShift::new(0x5eed_2c0c);
    let mut buf = WriteBuffer::with_block_size(4096);
    let (items, wire, drops) = responses(&mut rng, 150);
    let total = wire.len();
    let checker = spawn_checker(rx, wire, 7);

    let mut zc = ZeroCopy::new();
    zc.enable(&tx).unwrap();
    zc.set_threshold(0);
    zc.set_stop_when_copied(false);

    let mut items = items.into_iter();
    let mut more = true;
    let mut sent = 0;
    let mut refused_steals = 0;
    while more || buf.has_pending() {
        // Responses keep arriving while earlier ones are sent and held.
        if more && (!buf.has_pending() || rng.one_in(3)) {
            for _ in 0..rng.range(1, 4) {
                match items.next() {
                    Some((header, value)) => queue(&mut buf, &header, value),
                    None => more = false,
                }
            }
            continue;
        }
        let before = counts(&drops);
        let zero_copy_before = zc.stats().zero_copy_sends;
        match zc.send(&mut buf, &tx) {
            Ok(n) => {
                sent += n;
                if zc.stats().zero_copy_sends > zero_copy_before {
                    assert_eq!(
                        counts(&drops),
                        before,
                        "a zero-copy send released a value before its completion"
                    );
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => wait(&tx),
            Err(e) => panic!("send: {e}"),
        }
        buf.check_invariants();
        if buf.held_len() > 0 {
            let err = buf.steal().unwrap_err();
            assert_eq!(err.held, buf.held_len());
            refused_steals += 1;
        }
        let after_send = counts(&drops);
        let released = zc.poll_completions(&mut buf, &tx).unwrap();
        buf.check_invariants();
        let now = counts(&drops);
        assert!(now.iter().all(|&d| d <= 1), "a value dropped twice");
        if released == 0 {
            assert_eq!(now, after_send, "values dropped without a completion");
        }
    }
    assert_eq!(sent, total);
    assert_eq!(
        checker.join().unwrap(),
        None,
        "the receiver saw wrong bytes"
    );

    let leaked = ZeroCopy::leaked_bytes();
    zc.drain_blocking(&mut buf, &tx, Duration::from_secs(10))
        .unwrap();
    buf.check_invariants();
    assert!(buf.is_empty());
    assert_eq!(
        counts(&drops),
        vec![1; drops.len()],
        "every value released once"
    );
    assert_eq!(zc.outstanding(), 0);

    let stats = zc.stats();
    assert!(stats.zero_copy_sends > 10, "{stats:?}");
    assert!(stats.completions > 0, "{stats:?}");
    // Every completed counter value matched a send: the counter kept step with the kernel's
    // (including across `EAGAIN`, which consumes no value).
    assert_eq!(stats.ignored, 0, "{stats:?}");
    assert!(zc.was_copied(), "loopback completions are flagged copied");
    assert!(refused_steals > 0);
    assert!(buf.steal().is_ok());
    drop(buf);
    assert_eq!(ZeroCopy::leaked_bytes(), leaked);
}

/// Each value's drop happens during `poll_completions`, never during the send of its last
/// byte: the drop counter is read right after the send and right after the poll.
#[test]
fn a_fully_sent_value_lives_until_poll_completions() {
    fully_sent_value_lives_until_poll_completions(pair());
}

/// The same over IPv6, whose completions come as `SOL_IPV6` / `IPV6_RECVERR` control messages.
#[test]
fn ipv6_completions_are_read_too() {
    fully_sent_value_lives_until_poll_completions(pair_on("[::1]:0"));
}

fn fully_sent_value_lives_until_poll_completions((tx, mut rx): (TcpStream, TcpStream)) {
    let mut zc = ZeroCopy::new();
    zc.enable(&tx).unwrap();
    let mut buf = WriteBuffer::new();
    let (value, drops) = Counted::new(vec![0xab; 64 * 1024]);
    buf.put_slice(b"header\r\n");
    buf.pin(value);
    let reader = thread::spawn(move || {
        let mut got = vec![0u8; 8 + 64 * 1024];
        rx.read_exact(&mut got).unwrap();
        got
    });
    while buf.has_pending() {
        zc.send(&mut buf, &tx).unwrap(); // blocking socket
    }
    assert_eq!(drops.get(), 0, "released when sent, before the completion");
    assert_eq!(buf.held_len(), 8 + 64 * 1024);
    assert!(!buf.is_empty());
    let got = reader.join().unwrap();
    assert!(got[8..].iter().all(|&b| b == 0xab));

    // The receiver has everything, so the completion comes soon.
    let mut released = 0;
    for _ in 0..1000 {
        released += zc.poll_completions(&mut buf, &tx).unwrap();
        if buf.held_len() == 0 {
            break;
        }
        thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(released, 8 + 64 * 1024);
    assert_eq!(drops.get(), 1);
    assert!(buf.is_empty());
}

/// With the defaults, the first completion flagged copied (loopback) turns zero copy off:
/// later large sends copy and hold nothing. Small sends never use zero copy.
#[test]
fn copied_completion_turns_zero_copy_off_and_small_sends_copy() {
    let (tx, mut rx) = pair();
    let mut zc = ZeroCopy::new();
    zc.enable(&tx).unwrap();
    let mut buf = WriteBuffer::new();
    let reader = thread::spawn(move || {
        let mut sink = Vec::new();
        rx.read_to_end(&mut sink).unwrap();
        sink.len()
    });

    buf.put_slice(&[1u8; 100]);
    zc.send(&mut buf, &tx).unwrap();
    assert_eq!(buf.held_len(), 0, "a small send is copied");
    assert_eq!(zc.stats().copying_sends, 1);

    buf.pin(vec![2u8; 256 * 1024]);
    while buf.has_pending() {
        zc.send(&mut buf, &tx).unwrap();
    }
    assert!(zc.stats().zero_copy_sends >= 1);
    zc.drain_blocking(&mut buf, &tx, Duration::from_secs(10))
        .unwrap();
    assert!(zc.was_copied());
    assert!(!zc.would_zero_copy(1 << 20));

    let copying = zc.stats().copying_sends;
    buf.pin(vec![3u8; 256 * 1024]);
    while buf.has_pending() {
        zc.send(&mut buf, &tx).unwrap();
        assert_eq!(buf.held_len(), 0, "zero copy is off: nothing held");
    }
    assert!(zc.stats().copying_sends > copying);
    assert!(buf.is_empty());
    drop(tx);
    assert_eq!(reader.join().unwrap(), 100 + 2 * 256 * 1024);
}

/// A socket where `SO_ZEROCOPY` cannot be set copies every send.
#[test]
fn unix_sockets_cannot_enable_zero_copy_and_copy() {
    let (a, mut b) = std::os::unix::net::UnixStream::pair().unwrap();
    let mut zc = ZeroCopy::new();
    assert!(zc.enable(&a).is_err());
    let mut buf = WriteBuffer::new();
    buf.pin(vec![9u8; 32 * 1024]);
    let reader = thread::spawn(move || {
        let mut got = vec![0u8; 32 * 1024];
        b.read_exact(&mut got).unwrap();
        got
    });
    while buf.has_pending() {
        zc.send(&mut buf, a.as_fd()).unwrap();
    }
    assert!(buf.is_empty());
    assert_eq!(zc.stats().zero_copy_sends, 0);
    assert!(reader.join().unwrap().iter().all(|&x| x == 9));
}

/// Dropping a buffer while the kernel holds its bytes leaks them (the value is never dropped),
/// and says so in `leaked_bytes`.
#[test]
fn dropping_before_completion_leaks_instead_of_freeing() {
    let (tx, rx) = pair();
    let mut zc = ZeroCopy::new();
    zc.enable(&tx).unwrap();
    let mut buf = WriteBuffer::new();
    let (value, drops) = Counted::new(vec![5u8; 40 * 1024]);
    buf.pin(value);
    // No `poll_completions`: whatever the kernel reported, the buffer still holds the bytes.
    let n = zc.send(&mut buf, &tx).unwrap();
    assert!(n > 0);
    let held = buf.held_len();
    assert_eq!(held, n);
    let before = ZeroCopy::leaked_bytes();
    drop(buf);
    assert!(ZeroCopy::leaked_bytes() >= before + held as u64);
    assert_eq!(drops.get(), 0, "a value the kernel may read was dropped");
    drop(rx);
}
