//! The io_uring backend on real loopback sockets: many connections submitted together, partial
//! sends, every byte checked by reader threads, pinned values released exactly once and, for
//! zero-copy sends, only after their notification.
#![cfg(all(feature = "io-uring", target_os = "linux", not(miri)))]

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::thread::JoinHandle;

use sendbuf::{Stealable, UringCompletion, UringEvent, UringSender, WriteBuffer};

use sendbuf_testkit::util;

use util::{Counted, DropCount};

/// A ring, or a loud failure naming why the kernel refused one.
fn sender(entries: u32) -> UringSender {
    UringSender::new(entries).unwrap_or_else(|e| {
        panic!(
            "io_uring_setup failed here ({e}): the kernel or sandbox refuses io_uring \
             (ENOSYS: no io_uring; EPERM: kernel.io_uring_disabled or seccomp). These tests \
             cannot check the io_uring backend on this machine."
        )
    })
}

struct Conn {
    tx: TcpStream,
    buf: WriteBuffer,
    expected: Vec<u8>,
    reader: Option<JoinHandle<Vec<u8>>>,
}

/// `n` loopback connections with small socket buffers (so sends are partial), each with a
/// queue of scratch headers and pinned values (sizes vary per connection) and a reader thread.
fn connections(n: usize, rounds: usize, drops: &DropCount) -> (Vec<Conn>, usize) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut pinned = 0;
    let mut conns = Vec::new();
    for c in 0..n {
        let tx = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (rx, _) = listener.accept().unwrap();
        socket2::SockRef::from(&tx)
            .set_send_buffer_size(4096)
            .unwrap();
        socket2::SockRef::from(&rx)
            .set_recv_buffer_size(4096)
            .unwrap();
        let mut buf = WriteBuffer::with_block_size(512);
        buf.set_flatten_threshold(1024);
        let mut expected = Vec::new();
        for r in 0..rounds {
            let header = format!("VALUE c{c} r{r}\r\n");
            buf.put_slice(header.as_bytes());
            expected.extend_from_slice(header.as_bytes());
            // 100 B values are copied into scratch; the others are pinned.
            let len = [100, 2000, 9000, 30_000][(c + r) % 4] + c;
            let value: Vec<u8> = (0..len).map(|i| (i * 7 + c + r) as u8).collect();
            expected.extend_from_slice(&value);
            if len >= 1024 {
                pinned += 1;
            }
            buf.pin(Counted::counting(value, drops));
            buf.put_slice(b"\r\n");
            expected.extend_from_slice(b"\r\n");
        }
        let want = expected.len();
        let reader = std::thread::spawn(move || {
            let mut rx = rx;
            let mut got = vec![0u8; want];
            rx.read_exact(&mut got).unwrap();
            got
        });
        conns.push(Conn {
            tx,
            buf,
            expected,
            reader: Some(reader),
        });
    }
    // Values below the flatten threshold were copied and dropped at once.
    (conns, pinned)
}

#[derive(Default)]
struct Seen {
    partial: usize,
    sent_events: usize,
    released_events: usize,
    max_batch: usize,
}

/// Drives every connection until all is sent (and released), submitting every idle
/// connection's pending bytes together. Checks, at each step, that no value is dropped except
/// by a copying result or a notification, and that a buffer holding bytes refuses a steal.
fn drive(sender: &mut UringSender, conns: &mut [Conn], zero_copy: bool, drops: &DropCount) -> Seen {
    let mut seen = Seen::default();
    let mut done: Vec<UringCompletion> = Vec::new();
    loop {
        let mut queued = 0;
        for (token, conn) in conns.iter_mut().enumerate() {
            if conn.buf.has_pending() && sender.outstanding(token as u64) == 0 {
                let offered = sender
                    .submit(token as u64, &conn.buf, conn.tx.as_fd(), zero_copy)
                    .unwrap();
                assert!(offered > 0);
                queued += 1;
                // A second send for the same buffer is refused while one is in flight.
                let err = sender
                    .submit(token as u64, &conn.buf, conn.tx.as_fd(), zero_copy)
                    .unwrap_err();
                assert_eq!(err.kind(), std::io::ErrorKind::ResourceBusy);
            }
        }
        seen.max_batch = seen.max_batch.max(queued);
        if sender.in_flight() == 0 {
            break;
        }
        sender.submit_and_wait(1).unwrap();
        done.clear();
        sender.reap(&mut done);
        for &c in &done {
            let conn = &mut conns[c.token() as usize];
            let before_len = conn.buf.pending_len();
            let drops_before = drops.get();
            match sender.finish(c, &mut conn.buf).unwrap() {
                UringEvent::Sent { bytes, held } => {
                    seen.sent_events += 1;
                    assert_eq!(held, zero_copy);
                    assert!(bytes > 0);
                    if bytes < before_len {
                        seen.partial += 1;
                    }
                    if held {
                        assert_eq!(
                            drops.get(),
                            drops_before,
                            "a value was released by a zero-copy result, before its notification"
                        );
                        let err = conn.buf.steal().unwrap_err();
                        assert!(
                            err.held >= bytes,
                            "steal refused while the kernel holds bytes"
                        );
                    }
                }
                UringEvent::Released { .. } => {
                    assert!(zero_copy, "a notification for a copying send");
                    seen.released_events += 1;
                }
            }
            conn.buf.check_invariants();
        }
    }
    seen
}

fn check_wire(conns: &mut [Conn]) {
    for (i, conn) in conns.iter_mut().enumerate() {
        let got = conn.reader.take().unwrap().join().unwrap();
        assert!(
            got == conn.expected,
            "connection {i}: wrong bytes on the wire"
        );
        assert!(conn.buf.is_empty());
        assert_eq!(conn.buf.held_len(), 0);
        assert!(conn.buf.steal().is_ok());
    }
}

#[test]
fn io_uring_is_available() {
    let s = sender(8);
    assert_eq!(s.in_flight(), 0);
}

#[test]
fn many_connections_copying_sends_in_shared_submissions() {
    let drops = DropCount::new();
    let (mut conns, pinned) = connections(24, 12, &drops);
    let mut s = sender(64);
    let seen = drive(&mut s, &mut conns, false, &drops);
    check_wire(&mut conns);
    let stats = s.stats();
    assert!(seen.partial > 0, "small socket buffers must split sends");
    assert_eq!(seen.released_events, 0);
    assert_eq!(seen.max_batch, 24, "all connections went in one submission");
    assert!(
        stats.enters < stats.sends,
        "batched: {} enters for {} sends",
        stats.enters,
        stats.sends
    );
    assert_eq!(stats.results, stats.sends);
    // Every value (pinned or flattened) dropped exactly once.
    assert_eq!(drops.get(), 24 * 12);
    assert!(pinned > 0);
    assert_eq!(s.in_flight(), 0);
}

#[test]
fn many_connections_zero_copy_released_on_notification() {
    let drops = DropCount::new();
    let (mut conns, _) = connections(16, 10, &drops);
    let mut s = sender(32);
    let seen = drive(&mut s, &mut conns, true, &drops);
    check_wire(&mut conns);
    let stats = s.stats();
    assert!(seen.partial > 0, "small socket buffers must split sends");
    assert_eq!(stats.zero_copy_sends, stats.sends);
    assert_eq!(
        stats.notifications, stats.sends,
        "one notification per send"
    );
    assert_eq!(seen.released_events as u64, stats.notifications);
    assert_eq!(drops.get(), 16 * 10);
    assert_eq!(s.in_flight(), 0);
    // On loopback the kernel copies anyway and says so (Linux 6.2+ reports usage).
    eprintln!(
        "zero-copy notifications flagged as copied: {} of {}",
        stats.copied, stats.notifications
    );
}

#[test]
fn a_held_value_lives_until_its_notification_is_finished() {
    let drops = DropCount::new();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let tx = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (mut rx, _) = listener.accept().unwrap();
    let mut buf = WriteBuffer::new();
    buf.put_slice(b"head ");
    buf.pin(Counted::counting(vec![b'v'; 50_000], &drops));
    let total = buf.pending_len();
    let mut s = sender(8);
    let mut done = Vec::new();
    let mut notes = Vec::new();
    let reader = std::thread::spawn(move || {
        let mut got = vec![0u8; total];
        rx.read_exact(&mut got).unwrap();
        got
    });
    while buf.has_pending() {
        s.submit(1, &buf, tx.as_fd(), true).unwrap();
        s.submit_and_wait(1).unwrap();
        done.clear();
        s.reap(&mut done);
        for &c in &done {
            if c.is_notification() {
                notes.push(c); // held back on purpose
            } else {
                s.finish(c, &mut buf).unwrap();
            }
        }
    }
    // Wait for every notification, keeping them unfinished.
    while s.outstanding(1) > notes.len() {
        s.submit_and_wait(1).unwrap();
        done.clear();
        s.reap(&mut done);
        notes.extend(done.iter().filter(|c| c.is_notification()));
    }
    assert_eq!(reader.join().unwrap().len(), total);
    assert_eq!((buf.pending_len(), buf.held_len()), (0, total));
    assert_eq!(drops.get(), 0, "released before its notification");
    assert!(buf.steal().is_err());
    for c in &notes {
        s.finish(*c, &mut buf).unwrap();
    }
    assert_eq!(drops.get(), 1);
    assert!(buf.is_empty());
    // Never twice: a notification finished again is refused and releases nothing.
    assert!(s.finish(notes[0], &mut buf).is_err());
    assert_eq!(drops.get(), 1);
}

#[test]
fn errors_are_reported_per_token() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let good = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (mut good_rx, _) = listener.accept().unwrap();
    let bad = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (bad_rx, _) = listener.accept().unwrap();
    // The peer closes with unread data: the next sends get a reset or EPIPE.
    socket2::SockRef::from(&bad_rx)
        .set_linger(Some(std::time::Duration::ZERO))
        .unwrap();
    drop(bad_rx);
    std::thread::sleep(std::time::Duration::from_millis(50));
    let mut bufs = [WriteBuffer::new(), WriteBuffer::new()];
    let mut s = sender(8);
    let mut errors = 0;
    let mut done = Vec::new();
    for _ in 0..3 {
        bufs[0].put_slice(b"ok\n");
        bufs[1].put_slice(b"lost\n");
        s.submit(0, &bufs[0], good.as_fd(), false).unwrap();
        s.submit(1, &bufs[1], bad.as_fd(), false).unwrap();
        s.submit_and_wait(2).unwrap();
        done.clear();
        s.reap(&mut done);
        for &c in &done {
            let result = s.finish(c, &mut bufs[c.token() as usize]);
            match c.token() {
                0 => assert!(result.is_ok()),
                _ => {
                    if let Err(e) = result {
                        let code = e.raw_os_error();
                        assert!(
                            code == Some(libc::EPIPE) || code == Some(libc::ECONNRESET),
                            "{e}"
                        );
                        errors += 1;
                    }
                }
            }
        }
    }
    assert!(errors >= 1, "sends to a reset peer must fail");
    assert!(bufs[0].is_empty());
    assert!(
        bufs[1].has_pending(),
        "a failed send leaves the bytes pending"
    );
    let mut got = [0u8; 9];
    good_rx.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"ok\nok\nok\n");
}

#[test]
fn a_send_to_a_full_socket_waits_in_the_kernel_until_the_peer_reads() {
    // Even on a non-blocking socket, io_uring waits for room (it polls the socket) rather than
    // complete with EAGAIN: a peer that never reads keeps the send in flight.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let tx = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (mut rx, _) = listener.accept().unwrap();
    socket2::SockRef::from(&tx)
        .set_send_buffer_size(4096)
        .unwrap();
    socket2::SockRef::from(&rx)
        .set_recv_buffer_size(4096)
        .unwrap();
    tx.set_nonblocking(true).unwrap();
    let total = 256 << 10;
    let mut buf = WriteBuffer::new();
    buf.pin(vec![b'x'; total]); // far more than the socket buffers hold
    let mut s = sender(8);
    let mut done = Vec::new();
    let mut sent = 0;
    let mut stalled = false;
    while !stalled {
        s.submit(1, &buf, tx.as_fd(), false).unwrap();
        s.flush().unwrap();
        let t = std::time::Instant::now();
        done.clear();
        while done.is_empty() && t.elapsed() < std::time::Duration::from_millis(300) {
            std::thread::sleep(std::time::Duration::from_millis(5));
            s.reap(&mut done);
        }
        match done.first() {
            Some(&c) => match s.finish(c, &mut buf).unwrap() {
                UringEvent::Sent { bytes, .. } => sent += bytes,
                other => panic!("{other:?}"),
            },
            None => stalled = true,
        }
        assert!(sent < total, "the socket took everything without a reader");
    }
    assert_eq!(s.outstanding(1), 1, "the send waits in the kernel");
    assert_eq!(buf.pending_len(), total - sent);
    let reader = std::thread::spawn(move || {
        let mut got = vec![0u8; total];
        rx.read_exact(&mut got).unwrap();
        got.iter().all(|&b| b == b'x')
    });
    while s.in_flight() > 0 || buf.has_pending() {
        if s.outstanding(1) == 0 {
            s.submit(1, &buf, tx.as_fd(), false).unwrap();
        }
        s.submit_and_wait(1).unwrap();
        done.clear();
        s.reap(&mut done);
        for &c in &done {
            s.finish(c, &mut buf).unwrap();
        }
    }
    assert!(reader.join().unwrap());
    assert!(buf.is_empty());
}
