//! `send_to` on real sockets: loopback TCP and a Unix stream pair with tiny kernel buffers, so
//! that nearly every `sendmsg` is partial or `EAGAIN`, while a reader that pauses at random
//! checks every byte; and a peer that went away (`EPIPE` / `ECONNRESET`, never `SIGPIPE`).
//!
//! Every test here makes system calls Miri cannot run: `#[cfg_attr(miri, ignore)]`.

use sendbuf_testkit::util;

use std::io::{self, Read};
use std::net::TcpStream;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use sendbuf::{Encode, GatherLimits, WriteBuffer};
use socket2::SockRef;
use util::{pending, Counted, XorShift};

/// Kernel buffer sizes asked for (Linux doubles them and enforces a minimum of a few KiB).
const SNDBUF: usize = 4096;
const RCVBUF: usize = 4096;

// ---------------------------------------------------------------------------------------------
// The message stream, generated identically by the sender and the checking reader.
// ---------------------------------------------------------------------------------------------

/// A 24-byte binary header carrying the message number and body length.
struct Header {
    seq: u32,
    body_len: u32,
}

impl Encode for Header {
    const SIZE: usize = 24;

    fn encode(&self, out: &mut [u8]) {
        out[..4].copy_from_slice(&[0x81, 0x00, 0x00, 0x00]);
        out[4..8].copy_from_slice(&self.seq.to_be_bytes());
        out[8..12].copy_from_slice(&self.body_len.to_be_bytes());
        out[12..24].copy_from_slice(b"sendbuf-test");
    }
}

/// One response: a binary header, sometimes a text line, a value, a trailer.
struct Message {
    seq: u32,
    text: bool,
    value: Arc<[u8]>,
}

impl Message {
    fn header(&self) -> Header {
        Header {
            seq: self.seq,
            body_len: self.value.len() as u32,
        }
    }

    fn text_line(&self) -> String {
        format!("VALUE {} 0 {}\r\n", self.seq, self.value.len())
    }

    /// What the message looks like on the wire.
    fn render(&self, out: &mut Vec<u8>) {
        let mut header = [0u8; 24];
        self.header().encode(&mut header);
        out.extend_from_slice(&header);
        if self.text {
            out.extend_from_slice(self.text_line().as_bytes());
        }
        out.extend_from_slice(&self.value);
        out.extend_from_slice(b"\r\n");
    }

    /// Queues the message: header and text formatted into scratch, the value pinned (or copied
    /// if small), the trailer copied.
    fn queue(self, buf: &mut WriteBuffer) {
        let mut f = buf.format();
        f.put(&self.header());
        if self.text {
            core::fmt::Write::write_fmt(
                &mut f,
                format_args!("VALUE {} 0 {}\r\n", self.seq, self.value.len()),
            )
            .unwrap();
        }
        f.commit();
        buf.pin(self.value);
        buf.put_slice(b"\r\n");
    }
}

/// A deterministic stream of messages of about `total` bytes.
struct Stream {
    rng: XorShift,
    values: Arc<Vec<Arc<[u8]>>>,
    seq: u32,
    emitted: usize,
    total: usize,
}

impl Stream {
    fn new(seed: u64, values: Arc<Vec<Arc<[u8]>>>, total: usize) -> Stream {
        Stream {
            rng: XorShift::new(seed),
            values,
            seq: 0,
            emitted: 0,
            total,
        }
    }

    fn next(&mut self) -> Option<Message> {
        if self.emitted >= self.total {
            return None;
        }
        self.seq += 1;
        let value = self.values[self.rng.below(self.values.len())].clone();
        self.emitted += value.len() + 24;
        Some(Message {
            seq: self.seq,
            text: self.rng.one_in(3),
            value,
        })
    }
}

/// Values of every size class: copied (below the flatten threshold), pinned medium, pinned large.
fn value_pool(seed: u64) -> Arc<Vec<Arc<[u8]>>> {
    let mut rng = XorShift::new(seed);
    let values = (0..48)
        .map(|i| {
            let len = match i % 10 {
                0..=2 => rng.range(0, 511),
                3..=7 => rng.range(512, 16 * 1024),
                _ => rng.range(16 * 1024, 256 * 1024),
            };
            rng.bytes(len).into()
        })
        .collect();
    Arc::new(values)
}

// ---------------------------------------------------------------------------------------------
// Pumping a stream through a socket.
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Default)]
struct SendStats {
    sends: usize,
    /// Sends that took fewer bytes than were offered.
    partial: usize,
    would_block: usize,
    bytes: usize,
}

/// Queue at most this much before sending (keeps the iovec count well under `IOV_MAX`).
const HIGH_WATER: usize = 128 * 1024;

/// Waits until `fd` is writable (or a short timeout passes).
fn wait_writable(fd: &impl AsFd) {
    use std::os::fd::AsRawFd;
    let mut pfd = libc::pollfd {
        fd: fd.as_fd().as_raw_fd(),
        events: libc::POLLOUT,
        revents: 0,
    };
    // SAFETY: `pfd` is a valid, exclusively borrowed pollfd for the duration of the call, and
    // the count passed is 1.
    let rc = unsafe { libc::poll(&mut pfd, 1, 100) };
    assert!(rc >= 0, "poll: {}", io::Error::last_os_error());
}

/// Sends the whole stream on a non-blocking socket, `send_to` until `WouldBlock`, then waits.
fn send_stream(sock: &impl AsFd, mut stream: Stream, seed: u64) -> io::Result<SendStats> {
    let mut rng = XorShift::new(seed);
    let mut buf = WriteBuffer::new();
    let mut stats = SendStats::default();
    let mut done = false;
    loop {
        while !done && buf.pending_len() < HIGH_WATER {
            match stream.next() {
                Some(m) => m.queue(&mut buf),
                None => done = true,
            }
        }
        if done && buf.is_empty() {
            break;
        }
        let before = buf.pending_len();
        let limited = rng.one_in(8);
        let result = if limited {
            let limit = GatherLimits::new()
                .with_max_iovecs(rng.range(1, 4))
                .with_max_bytes(rng.range(1, 64 * 1024));
            buf.send_to_with(sock, limit)
        } else {
            buf.send_to(sock)
        };
        match result {
            Ok(n) => {
                assert!(n > 0 && n <= before, "sent {n} of {before}");
                assert_eq!(buf.pending_len(), before - n);
                stats.sends += 1;
                stats.bytes += n;
                if !limited && n < before {
                    stats.partial += 1;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                assert_eq!(buf.pending_len(), before, "WouldBlock changed the buffer");
                stats.would_block += 1;
                wait_writable(sock);
            }
            Err(e) => return Err(e),
        }
    }
    buf.check_invariants();
    Ok(stats)
}

/// Reads until EOF, pausing at random, and compares every byte with the regenerated stream.
/// Returns the bytes and messages read.
fn check_stream(mut sock: impl Read, mut stream: Stream, seed: u64) -> (usize, u32) {
    let mut rng = XorShift::new(seed);
    let mut read_buf = vec![0u8; 64 * 1024];
    let mut expected = Vec::new();
    let mut at = 0;
    let mut offset = 0;
    let mut messages = 0;
    loop {
        if rng.one_in(32) {
            thread::sleep(Duration::from_micros(rng.range(0, 2000) as u64));
        }
        let want = rng.range(1, read_buf.len());
        let n = match sock.read(&mut read_buf[..want]) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => panic!("read at offset {offset}: {e}"),
        };
        let mut got = &read_buf[..n];
        while !got.is_empty() {
            if at == expected.len() {
                expected.clear();
                at = 0;
                let m = stream
                    .next()
                    .unwrap_or_else(|| panic!("bytes past the end of the stream at {offset}"));
                m.render(&mut expected);
                messages += 1;
            }
            let k = got.len().min(expected.len() - at);
            if got[..k] != expected[at..at + k] {
                let i = (0..k).find(|&i| got[i] != expected[at + i]).unwrap();
                panic!(
                    "stream differs at offset {} (message {messages}, byte {})",
                    offset + i,
                    at + i
                );
            }
            at += k;
            offset += k;
            got = &got[k..];
        }
    }
    assert_eq!(
        at,
        expected.len(),
        "the stream ended inside message {messages}"
    );
    assert!(
        stream.next().is_none(),
        "the stream ended after {messages} messages"
    );
    (offset, messages)
}

/// Runs a whole stream from `sender` to `receiver`; joins the reader before returning.
fn run<S, R>(sender: S, receiver: R, total: usize, seed: u64)
where
    S: AsFd,
    R: Read + Send + 'static,
{
    let values = value_pool(seed);
    let reader = {
        let stream = Stream::new(seed, values.clone(), total);
        thread::spawn(move || check_stream(receiver, stream, seed ^ 0xAAAA))
    };
    let started = Instant::now();
    // Catch a failing assertion so the reader is still joined before the test fails.
    let sent = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        send_stream(
            &sender,
            Stream::new(seed, values.clone(), total),
            seed ^ 0x5555,
        )
    }));
    drop(sender); // EOF for the reader (and wakes it if the sender failed)
    let read = reader.join();
    // The first failure explains the others: a sender assertion, else the reader's (a
    // mismatch it found makes the sender's next send fail), else the sender's send error.
    let sent = match sent {
        Ok(sent) => sent,
        Err(panic) => std::panic::resume_unwind(panic),
    };
    let read = match read {
        Ok(read) => read,
        Err(panic) => std::panic::resume_unwind(panic),
    };
    let stats = sent.expect("send_to failed");
    let elapsed = started.elapsed();

    assert_eq!(read.0, stats.bytes, "bytes read vs bytes sent");
    assert!(read.0 >= total);
    assert!(read.1 > 100, "only {} messages", read.1);
    assert!(stats.partial > 0, "no partial sends: {stats:?}");
    assert!(stats.would_block > 0, "never WouldBlock: {stats:?}");
    for v in values.iter() {
        assert_eq!(Arc::strong_count(v), 1, "a pinned value was not released");
    }
    eprintln!(
        "{} bytes, {} messages in {elapsed:?}: {stats:?}",
        read.0, read.1
    );
}

/// Bytes per stream test: large enough for thousands of partial writes, small enough for a
/// debug build to finish in a few seconds.
const TOTAL: usize = 64 << 20;

fn tcp_pair() -> (TcpStream, TcpStream) {
    util::tcp_pair(SNDBUF, RCVBUF)
}

#[test]
#[cfg_attr(miri, ignore)] // real sockets
fn tcp_loopback_with_tiny_buffers_is_byte_exact() {
    let (sender, receiver) = tcp_pair();
    sender.set_nonblocking(true).unwrap();
    run(sender, receiver, TOTAL, 0x5EED_7C70);
}

#[test]
#[cfg_attr(miri, ignore)] // real sockets
fn unix_stream_pair_with_tiny_buffers_is_byte_exact() {
    let (sender, receiver) = UnixStream::pair().unwrap();
    SockRef::from(&sender).set_send_buffer_size(SNDBUF).unwrap();
    SockRef::from(&receiver)
        .set_recv_buffer_size(RCVBUF)
        .unwrap();
    sender.set_nonblocking(true).unwrap();
    run(sender, receiver, TOTAL / 2, 0x5EED_0415);
}

// ---------------------------------------------------------------------------------------------
// Smaller cases.
// ---------------------------------------------------------------------------------------------

#[test]
#[cfg_attr(miri, ignore)] // real sockets
fn send_to_with_limits_sends_at_most_the_limit() {
    let (a, mut b) = UnixStream::pair().unwrap();
    let mut buf = WriteBuffer::new();
    buf.set_flatten_threshold(0);
    buf.put_slice(b"0123456789");
    buf.pin(b"abcdef" as &'static [u8]);
    buf.put_slice(b"XYZ");
    let all = pending(&buf);

    assert_eq!(
        buf.send_to_with(&a, GatherLimits::new().with_max_bytes(4))
            .unwrap(),
        4
    );
    assert_eq!(
        buf.send_to_with(&a, GatherLimits::new().with_max_iovecs(1))
            .unwrap(),
        6
    );
    assert_eq!(
        buf.send_to_with(&a, GatherLimits::new().with_max_iovecs(1))
            .unwrap(),
        6
    );
    assert_eq!(buf.send_to(&a).unwrap(), 3);
    assert!(buf.is_empty());
    assert_eq!(buf.send_to(&a).unwrap(), 0, "nothing pending");

    let mut got = vec![0u8; all.len()];
    b.read_exact(&mut got).unwrap();
    assert_eq!(got, all);
}

#[test]
#[cfg_attr(miri, ignore)] // real sockets
fn would_block_leaves_the_buffer_and_its_values_alone() {
    let (a, mut b) = UnixStream::pair().unwrap();
    SockRef::from(&a).set_send_buffer_size(SNDBUF).unwrap();
    a.set_nonblocking(true).unwrap();

    let mut buf = WriteBuffer::new();
    let (value, drops) = Counted::new(vec![b'v'; 1 << 20]);
    buf.put_slice(b"head");
    buf.pin(value);
    let mut sent = 0;
    let err = loop {
        match buf.send_to(&a) {
            Ok(n) => sent += n,
            Err(e) => break e,
        }
    };
    assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
    assert!(sent > 0 && sent < (1 << 20), "sent {sent}");
    assert_eq!(buf.pending_len(), 4 + (1 << 20) - sent);
    assert_eq!(drops.get(), 0);
    let left = pending(&buf);
    assert_eq!(
        buf.send_to(&a).unwrap_err().kind(),
        io::ErrorKind::WouldBlock
    );
    assert_eq!(pending(&buf), left);

    // Drain the peer and finish.
    let reader = thread::spawn(move || {
        let mut all = Vec::new();
        b.read_to_end(&mut all).unwrap();
        all
    });
    while !buf.is_empty() {
        match buf.send_to(&a) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => wait_writable(&a),
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(drops.get(), 1);
    drop(a);
    let all = reader.join().unwrap();
    assert_eq!(all.len(), 4 + (1 << 20));
    assert_eq!(&all[..4], b"head");
    assert!(all[4..].iter().all(|&b| b == b'v'));
}

#[test]
#[cfg_attr(miri, ignore)] // real file descriptor
fn send_to_a_file_fails_with_enotsock_and_changes_nothing() {
    let file = std::fs::File::open("/dev/null").unwrap();
    let mut buf = WriteBuffer::new();
    buf.put_slice(b"abc");
    let err = buf.send_to(&file).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENOTSOCK));
    assert_eq!(pending(&buf), b"abc");
    buf.check_invariants();
}

// ---------------------------------------------------------------------------------------------
// A peer that went away.
// ---------------------------------------------------------------------------------------------

/// Set in the child processes the test below starts.
const CHILD_ENV: &str = "SENDBUF_SOCKET_TEST_CHILD";
const CHILD_OK: &str = "sendbuf child: ok";

/// Runs this test binary again, only `test`, in `mode`, with `SIGPIPE` at its default action.
fn run_child(test: &str, mode: &str) -> std::process::Output {
    std::process::Command::new(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, mode)
        .output()
        .unwrap()
}

/// Restores the default action of `SIGPIPE` (kill the process), which Rust's runtime replaces
/// with "ignore" at start-up: with it ignored, a missing `MSG_NOSIGNAL` would go unnoticed.
fn default_sigpipe() {
    // SAFETY: `signal` with a valid signal number and `SIG_DFL` installs no Rust code as a
    // handler; this child process runs a single test on one thread.
    let old = unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    assert_ne!(old, libc::SIG_ERR);
}

/// Child: `send_to` on peers that closed, with `SIGPIPE` able to kill us.
fn child_send_to_closed_peers() {
    default_sigpipe();

    // Unix stream: the peer is gone, the first send fails with EPIPE.
    let (a, b) = UnixStream::pair().unwrap();
    drop(b);
    let mut buf = WriteBuffer::new();
    let (value, drops) = Counted::new(vec![7u8; 4096]);
    buf.put_slice(b"head");
    buf.pin(value);
    let err = buf.send_to(&a).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EPIPE), "{err}");
    assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
    assert_eq!(buf.pending_len(), 4100, "a failed send changed the buffer");
    assert_eq!(drops.get(), 0);
    drop(buf);
    assert_eq!(drops.get(), 1);

    // TCP: the peer resets the connection (linger 0); sends fail with ECONNRESET or EPIPE.
    let (sender, receiver) = tcp_pair();
    SockRef::from(&receiver)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(receiver);
    let mut buf = WriteBuffer::new();
    let mut failed = None;
    for _ in 0..400 {
        buf.put_slice(&[1u8; 1000]);
        let before = buf.pending_len();
        match buf.send_to(&sender) {
            Ok(_) => thread::sleep(Duration::from_millis(5)),
            Err(e) => {
                assert_eq!(
                    buf.pending_len(),
                    before,
                    "a failed send changed the buffer"
                );
                failed = Some(e);
                break;
            }
        }
    }
    let err = failed.expect("sending to a reset connection never failed");
    assert!(
        matches!(err.raw_os_error(), Some(libc::EPIPE | libc::ECONNRESET)),
        "{err}"
    );
    // And once more after the error: still an error, still alive.
    assert!(buf.send_to(&sender).is_err());
    drop(sender);
    println!("{CHILD_OK}");
}

/// Child, the control: `send` without `MSG_NOSIGNAL` to a closed peer, which `SIGPIPE` must
/// kill. If it does not, the test above could not have caught a missing `MSG_NOSIGNAL`.
fn child_send_without_nosignal_to_closed_peer() {
    use std::os::fd::AsRawFd;

    default_sigpipe();
    let (a, b) = UnixStream::pair().unwrap();
    drop(b);
    // SAFETY: `a` is an open socket and the pointer and length describe a live 1-byte buffer.
    let rc = unsafe { libc::send(a.as_raw_fd(), b"x".as_ptr().cast(), 1, 0) };
    println!(
        "{CHILD_OK}: send returned {rc}: {}",
        io::Error::last_os_error()
    );
}

#[test]
#[cfg_attr(miri, ignore)] // real sockets and child processes
fn a_closed_peer_gives_epipe_or_econnreset_and_no_sigpipe() {
    use std::os::unix::process::ExitStatusExt;

    const NAME: &str = "a_closed_peer_gives_epipe_or_econnreset_and_no_sigpipe";
    match std::env::var(CHILD_ENV).as_deref() {
        Ok("send_to") => return child_send_to_closed_peers(),
        Ok("no_nosignal") => return child_send_without_nosignal_to_closed_peer(),
        _ => {}
    }

    let control = run_child(NAME, "no_nosignal");
    assert_eq!(
        control.status.signal(),
        Some(libc::SIGPIPE),
        "the control child was not killed by SIGPIPE: {:?}\n{}",
        control.status,
        String::from_utf8_lossy(&control.stderr)
    );

    let child = run_child(NAME, "send_to");
    let stdout = String::from_utf8_lossy(&child.stdout);
    assert!(
        child.status.success() && stdout.contains(CHILD_OK),
        "child: {:?}\nstdout:\n{stdout}\nstderr:\n{}",
        child.status,
        String::from_utf8_lossy(&child.stderr)
    );
}
