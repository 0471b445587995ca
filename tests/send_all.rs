//! `send_all`, the blocking convenience: everything pending goes out through a socket whose
//! kernel buffers are tiny, on blocking and non-blocking sockets alike; a timeout is honoured
//! on both and loses nothing; a closed peer is an error, not a panic or a `SIGPIPE`.
//!
//! Every test here makes system calls Miri cannot run: `#[cfg_attr(miri, ignore)]`.

use sendbuf_testkit::util;

use std::io::{self, Read};
use std::net::TcpStream;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use sendbuf::WriteBuffer;
use util::{tcp_pair, XorShift};

/// Kernel buffer sizes asked for: a few KiB, so a megabyte takes hundreds of partial sends.
const SNDBUF: usize = 4096;
const RCVBUF: usize = 4096;

/// Queues `count` responses (a text header formatted into scratch, then a value that is
/// copied or pinned depending on its size) and returns the bytes they make on the wire and
/// the values, so the test can check each was released.
fn queue_responses(buf: &mut WriteBuffer, count: usize, seed: u64) -> (Vec<u8>, Vec<Arc<[u8]>>) {
    let mut rng = XorShift::new(seed);
    let mut wire = Vec::new();
    let mut values = Vec::new();
    for i in 0..count {
        let len = match i % 4 {
            0 => rng.range(0, 200),
            1 | 2 => rng.range(1024, 16 * 1024),
            _ => rng.range(64 * 1024, 192 * 1024),
        };
        let value: Arc<[u8]> = rng.bytes(len).into();
        let header = format!("VALUE k{i} 0 {len}\r\n");
        let mut f = buf.format();
        f.put_slice(header.as_bytes());
        f.commit();
        buf.pin(value.clone());
        buf.put_slice(b"\r\n");
        wire.extend_from_slice(header.as_bytes());
        wire.extend_from_slice(&value);
        wire.extend_from_slice(b"\r\n");
        values.push(value);
    }
    assert_eq!(buf.pending_len(), wire.len());
    (wire, values)
}

/// Reads until end of stream, pausing now and then so the sender finds the socket full.
fn slow_reader(mut sock: TcpStream, seed: u64) -> thread::JoinHandle<io::Result<Vec<u8>>> {
    thread::spawn(move || {
        let mut rng = XorShift::new(seed);
        let mut got = Vec::new();
        let mut chunk = vec![0u8; 16 * 1024];
        loop {
            if rng.one_in(16) {
                thread::sleep(Duration::from_micros(rng.range(0, 2000) as u64));
            }
            let want = rng.range(1, chunk.len());
            match sock.read(&mut chunk[..want]) {
                Ok(0) => return Ok(got),
                Ok(n) => got.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    })
}

fn assert_released(values: &[Arc<[u8]>]) {
    for (i, v) in values.iter().enumerate() {
        assert_eq!(Arc::strong_count(v), 1, "value {i} was not released");
    }
}

fn delivers_everything(nonblocking: bool) {
    let (sender, receiver) = tcp_pair(SNDBUF, RCVBUF);
    sender.set_nonblocking(nonblocking).unwrap();
    let mut buf = WriteBuffer::new();
    let (wire, values) = queue_responses(&mut buf, 64, 0x05E4_DA11);
    assert!(
        wire.len() > 2 << 20,
        "the stream must dwarf the socket buffers"
    );

    let reader = slow_reader(receiver, 7);
    let sent = buf.send_all(&sender, None);
    drop(sender); // end of stream for the reader, even if the send failed
    let got = reader.join().unwrap().unwrap();

    assert_eq!(sent.unwrap(), wire.len());
    assert!(
        got == wire,
        "the bytes on the wire differ from what was queued"
    );
    assert!(!buf.has_pending());
    assert!(buf.is_empty());
    assert_released(&values);
}

#[test]
#[cfg_attr(miri, ignore)] // real sockets
fn send_all_delivers_everything_on_a_blocking_socket() {
    delivers_everything(false);
}

#[test]
#[cfg_attr(miri, ignore)] // real sockets
fn send_all_delivers_everything_on_a_non_blocking_socket() {
    delivers_everything(true);
}

/// Nobody reads, so the socket fills and stays full: `send_all` gives up after the timeout
/// with `TimedOut`, having advanced past exactly what the kernel took. A second `send_all`,
/// once a reader drains the socket, sends the rest: the peer sees the whole stream once.
fn times_out_and_loses_nothing(nonblocking: bool) {
    let (sender, receiver) = tcp_pair(SNDBUF, RCVBUF);
    sender.set_nonblocking(nonblocking).unwrap();
    let mut buf = WriteBuffer::new();
    let (wire, values) = queue_responses(&mut buf, 16, 0x0007_1370);

    let timeout = Duration::from_millis(150);
    let started = Instant::now();
    let err = buf.send_all(&sender, Some(timeout)).unwrap_err();
    let waited = started.elapsed();

    assert_eq!(err.kind(), io::ErrorKind::TimedOut, "{err}");
    assert!(
        waited >= timeout,
        "gave up after {waited:?}, before the timeout"
    );
    let left = buf.pending_len();
    assert!(
        left > 0 && left < wire.len(),
        "{left} of {} left",
        wire.len()
    );
    let sent = wire.len() - left;
    assert_eq!(
        err.to_string(),
        format!(
            "cannot send everything within {timeout:?}: sent {sent} bytes, {left} bytes still pending"
        )
    );

    let reader = slow_reader(receiver, 11);
    let rest = buf.send_all(&sender, Some(Duration::from_secs(60)));
    drop(sender);
    let got = reader.join().unwrap().unwrap();
    assert_eq!(rest.unwrap(), left);
    assert!(
        got == wire,
        "the bytes on the wire differ from what was queued"
    );
    assert!(buf.is_empty());
    assert_released(&values);
}

#[test]
#[cfg_attr(miri, ignore)] // real sockets
fn send_all_times_out_on_a_blocking_socket_and_loses_nothing() {
    // A blocking socket would block in `sendmsg` forever; `send_all` must not.
    times_out_and_loses_nothing(false);
}

#[test]
#[cfg_attr(miri, ignore)] // real sockets
fn send_all_times_out_on_a_non_blocking_socket_and_loses_nothing() {
    times_out_and_loses_nothing(true);
}

#[test]
#[cfg_attr(miri, ignore)] // real sockets
fn a_zero_timeout_still_sends_what_fits_at_once() {
    let (sender, mut receiver) = tcp_pair(SNDBUF, RCVBUF);
    let mut buf = WriteBuffer::new();
    buf.put_slice(b"STORED\r\n");
    assert_eq!(buf.send_all(&sender, Some(Duration::ZERO)).unwrap(), 8);
    let mut got = [0u8; 8];
    receiver.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"STORED\r\n");

    // Nothing pending: nothing to do, whatever the timeout.
    assert_eq!(buf.send_all(&sender, Some(Duration::ZERO)).unwrap(), 0);
}

#[test]
#[cfg_attr(miri, ignore)] // real sockets
fn a_closed_peer_is_an_error_and_the_buffer_stays_exact() {
    let (sender, receiver) = tcp_pair(SNDBUF, RCVBUF);
    drop(receiver);
    let mut buf = WriteBuffer::new();
    let (wire, values) = queue_responses(&mut buf, 8, 0x00C1_05ED);

    let err = buf
        .send_all(&sender, Some(Duration::from_secs(10)))
        .unwrap_err();
    assert!(
        matches!(
            err.kind(),
            io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
        ),
        "{err}"
    );
    // Whatever the kernel took before the reset was advanced past; the rest is still queued
    // and its values still pinned, until the buffer is cleared.
    assert!(buf.has_pending() && buf.pending_len() <= wire.len());
    buf.check_invariants();
    buf.clear();
    assert!(buf.is_empty());
    assert_released(&values);
}
