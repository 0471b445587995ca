//! The `tokio` integration (feature `tokio`): `poll_write_to` / `flush_to` through writers that
//! accept a few bytes at a time and return `Pending` at random, the non-vectored fallback, the
//! error cases, and a request/response server on loopback. On the read side,
//! `poll_read_from` / `read_from_async` against the sync `read_from` step by step, a pipelined
//! stream through a small pipe, requests split across reads, the `max_len` limit, end of stream
//! and a steal once everything is consumed.
#![cfg(feature = "tokio")]

use sendbuf_testkit::util;

use std::collections::VecDeque;
use std::future::poll_fn;
use std::io::{self, IoSlice, Read};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use sendbuf::{LocalPool, Pool, PoolLimits, ReadBuffer, ReadLimitError, Stealable, WriteBuffer};
use tokio::io::{
    AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, ReadBuf,
};
use util::{Counted, XorShift};

/// An `AsyncWrite` that returns `Pending` about one call in three (waking at once, as a socket
/// that becomes writable again would) and otherwise accepts 1..=`max` bytes across the slices
/// it is given; records what it accepted.
struct Trickle {
    out: Vec<u8>,
    rng: XorShift,
    max: usize,
    vectored: bool,
    pendings: usize,
    writes: usize,
}

impl Trickle {
    fn new(seed: u64, max: usize, vectored: bool) -> Trickle {
        Trickle {
            out: Vec::new(),
            rng: XorShift::new(seed),
            max,
            vectored,
            pendings: 0,
            writes: 0,
        }
    }

    fn accept(&mut self, cx: &mut Context<'_>, bufs: &[IoSlice<'_>]) -> Poll<io::Result<usize>> {
        if self.rng.below(3) == 0 {
            self.pendings += 1;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        self.writes += 1;
        let mut budget = 1 + self.rng.below(self.max);
        let mut n = 0;
        for b in bufs {
            let take = b.len().min(budget);
            self.out.extend_from_slice(&b[..take]);
            n += take;
            budget -= take;
            if budget == 0 {
                break;
            }
        }
        Poll::Ready(Ok(n))
    }
}

impl AsyncWrite for Trickle {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().accept(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        assert!(
            self.vectored,
            "poll_write_vectored on a writer that is not vectored"
        );
        self.get_mut().accept(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.vectored
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Headers in scratch and pinned values, some small (copied) and some large (pinned), with
/// drop counters on the large ones. Returns the buffer, the expected bytes and the counters.
fn mixed(seed: u64) -> (WriteBuffer, Vec<u8>, Vec<util::DropCount>) {
    let mut rng = XorShift::new(seed);
    let mut buf = WriteBuffer::new();
    let mut expected = Vec::new();
    let mut counts = Vec::new();
    for i in 0..20 {
        let header = format!("VALUE k{i} 0\r\n");
        buf.put_slice(header.as_bytes());
        expected.extend_from_slice(header.as_bytes());
        let len = 1 + rng.below(3000);
        let value: Vec<u8> = (0..len).map(|j| (i * 31 + j) as u8).collect();
        expected.extend_from_slice(&value);
        if i % 2 == 0 {
            let (v, count) = Counted::new(value);
            buf.pin(v);
            counts.push(count);
        } else {
            buf.pin(value);
        }
    }
    (buf, expected, counts)
}

#[tokio::test]
async fn flush_to_survives_partial_writes_and_pending() {
    for seed in 1..=20 {
        for vectored in [true, false] {
            let (mut buf, expected, counts) = mixed(seed);
            let mut w = Trickle::new(seed * 1000 + 1, 50, vectored);
            let n = buf.flush_to(&mut w).await.unwrap();
            assert_eq!(n, expected.len());
            assert_eq!(w.out, expected, "seed {seed}, vectored {vectored}");
            assert!(w.pendings > 0 && w.writes > 10);
            assert!(buf.is_empty());
            buf.check_invariants();
            for c in &counts {
                assert_eq!(c.get(), 1, "each pinned value released exactly once");
            }
        }
    }
}

#[tokio::test]
async fn poll_write_to_advances_by_exactly_what_was_accepted() {
    let (mut buf, expected, _counts) = mixed(3);
    let mut w = Trickle::new(99, 7, true);
    let mut sent = 0;
    while !buf.is_empty() {
        let before = buf.pending_len();
        let n = poll_fn(|cx| buf.poll_write_to(cx, Pin::new(&mut w)))
            .await
            .unwrap();
        assert!((1..=7).contains(&n));
        assert_eq!(buf.pending_len(), before - n);
        sent += n;
        assert_eq!(w.out.len(), sent);
        buf.check_invariants();
    }
    assert_eq!(w.out, expected);
}

struct NoopWaker;

impl Wake for NoopWaker {
    fn wake(self: Arc<Self>) {}
}

/// Always `Pending`, or always the given result.
struct Fixed(Option<fn() -> io::Result<usize>>);

impl AsyncWrite for Fixed {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, _: &[u8]) -> Poll<io::Result<usize>> {
        match self.0 {
            Some(f) => Poll::Ready(f()),
            None => Poll::Pending,
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Polls `f` once with a waker that does nothing.
fn poll_noop<T>(f: impl FnOnce(&mut Context<'_>) -> Poll<T>) -> Poll<T> {
    let waker = Waker::from(Arc::new(NoopWaker));
    f(&mut Context::from_waker(&waker))
}

fn poll_once(buf: &mut WriteBuffer, w: &mut Fixed) -> Poll<io::Result<usize>> {
    poll_noop(|cx| buf.poll_write_to(cx, Pin::new(w)))
}

#[test]
fn pending_and_errors_leave_the_buffer_unchanged() {
    let mut buf = WriteBuffer::new();
    buf.put_slice(b"abc");
    buf.pin(vec![1u8; 1000]);

    assert!(poll_once(&mut buf, &mut Fixed(None)).is_pending());
    assert_eq!(buf.pending_len(), 1003);

    let err = poll_once(&mut buf, &mut Fixed(Some(|| Ok(0)))).map_err(|e| e.kind());
    assert_eq!(err, Poll::Ready(Err(io::ErrorKind::WriteZero)));
    assert_eq!(buf.pending_len(), 1003);

    let err = poll_once(&mut buf, &mut Fixed(Some(|| Ok(5000)))).map_err(|e| e.kind());
    assert_eq!(err, Poll::Ready(Err(io::ErrorKind::InvalidData)));
    assert_eq!(buf.pending_len(), 1003);

    let err = poll_once(
        &mut buf,
        &mut Fixed(Some(|| Err(io::ErrorKind::BrokenPipe.into()))),
    )
    .map_err(|e| e.kind());
    assert_eq!(err, Poll::Ready(Err(io::ErrorKind::BrokenPipe)));
    assert_eq!(buf.pending_len(), 1003);
    buf.check_invariants();
}

#[test]
fn nothing_pending_is_ready_zero_without_calling_the_writer() {
    let mut buf = WriteBuffer::new();
    // A writer that would fail: it must not be called.
    let mut w = Fixed(Some(|| Err(io::ErrorKind::Other.into())));
    assert!(matches!(poll_once(&mut buf, &mut w), Poll::Ready(Ok(0))));
}

/// `GET <n>\n` answered with `OK <n>\r\n` and a body of `n` bytes: a header formatted into the
/// buffer and the body pinned, through a real socket whose reader is slow.
#[tokio::test]
#[cfg_attr(miri, ignore)] // sockets
async fn loopback_request_response() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let (rd, mut wr) = stream.into_split();
        let mut lines = BufReader::new(rd).lines();
        let mut buf = WriteBuffer::new();
        while let Some(line) = lines.next_line().await.unwrap() {
            let n: usize = line.strip_prefix("GET ").unwrap().parse().unwrap();
            let body: Vec<u8> = (0..n).map(|i| i as u8).collect();
            let mut f = buf.format();
            std::io::Write::write_fmt(&mut f, format_args!("OK {n}\r\n")).unwrap();
            f.commit();
            buf.pin(body);
            buf.flush_to(&mut wr).await.unwrap();
            assert!(buf.is_empty());
        }
    });

    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (rd, mut wr) = stream.into_split();
    let mut rd = BufReader::new(rd);
    for n in [0usize, 1, 511, 512, 70_000, 3 << 20] {
        wr.write_all(format!("GET {n}\n").as_bytes()).await.unwrap();
        let mut header = String::new();
        rd.read_line(&mut header).await.unwrap();
        assert_eq!(header, format!("OK {n}\r\n"));
        let mut body = vec![0u8; n];
        rd.read_exact(&mut body).await.unwrap();
        assert!(body.iter().enumerate().all(|(i, b)| *b == i as u8));
    }
    drop(wr);
    server.await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// The read side: `ReadBuffer::poll_read_from` / `read_from_async`.
// ---------------------------------------------------------------------------------------------

/// A peer that sends a script of chunks, each clipped to the room a read offers (the rest comes
/// with the next read), as `io::Read` and as `AsyncRead`; the async side returns `Pending`
/// (waking at once) before every other chunk, as a socket that is not yet readable would.
struct Script {
    chunks: VecDeque<Vec<u8>>,
    pend: bool,
    pendings: usize,
}

impl Script {
    fn new(chunks: Vec<Vec<u8>>) -> Script {
        Script {
            chunks: chunks.into(),
            pend: false,
            pendings: 0,
        }
    }

    /// The next at most `room` bytes of the script; empty at its end.
    fn take(&mut self, room: usize) -> Vec<u8> {
        let Some(mut chunk) = self.chunks.pop_front() else {
            return Vec::new();
        };
        if chunk.len() > room {
            self.chunks.push_front(chunk.split_off(room));
        }
        chunk
    }
}

impl Read for Script {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let chunk = self.take(buf.len());
        buf[..chunk.len()].copy_from_slice(&chunk);
        Ok(chunk.len())
    }
}

impl AsyncRead for Script {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let me = self.get_mut();
        me.pend = !me.pend;
        if me.pend {
            me.pendings += 1;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        let chunk = me.take(buf.remaining());
        buf.put_slice(&chunk);
        Poll::Ready(Ok(()))
    }
}

/// What a read returned, comparable across the sync and async paths.
fn outcome(r: io::Result<usize>) -> Result<usize, (io::ErrorKind, Option<ReadLimitError>)> {
    r.map_err(|e| {
        let limit = e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<ReadLimitError>())
            .copied();
        (e.kind(), limit)
    })
}

/// The same peer read by `read_from` and by `read_from_async`, with the same consumes after
/// each read: every result, the buffered data and the storage size (growth and compaction)
/// agree at every step, including the limit errors.
#[tokio::test]
async fn read_from_async_mirrors_read_from_step_by_step() {
    let mut all_limits = 0;
    for seed in 1..=30 {
        let mut rng = XorShift::new(seed);
        let chunks: Vec<Vec<u8>> = (0..40)
            .map(|i| (0..rng.range(1, 300)).map(|j| (i * 7 + j) as u8).collect())
            .collect();
        let total: usize = chunks.iter().map(Vec::len).sum();
        let (mut sync_peer, mut async_peer) = (Script::new(chunks.clone()), Script::new(chunks));
        let block = rng.range(1, 64);
        let max_len = rng.range(block, 700);
        let mut sync_buf = ReadBuffer::with_block_size(block);
        let mut async_buf = ReadBuffer::with_block_size(block);
        sync_buf.set_max_len(max_len);
        async_buf.set_max_len(max_len);

        let (mut got, mut steps, mut limits) = (Vec::new(), 0, 0);
        loop {
            let a = outcome(sync_buf.read_from(&mut sync_peer));
            let b = outcome(async_buf.read_from_async(&mut async_peer).await);
            assert_eq!(a, b, "seed {seed}, step {steps}");
            assert_eq!(
                sync_buf.data(),
                async_buf.data(),
                "seed {seed}, step {steps}"
            );
            assert_eq!(sync_buf.capacity(), async_buf.capacity(), "seed {seed}");
            async_buf.check_invariants();
            steps += 1;
            match a {
                Ok(0) => break,
                Ok(_) => {}
                Err((kind, limit)) => {
                    assert_eq!(kind, io::ErrorKind::OutOfMemory);
                    assert_eq!(limit.map(|l| l.buffered), Some(max_len));
                    limits += 1;
                }
            }
            // Parse "some" of what is buffered; all of it once the limit is reached.
            let n = if a.is_err() {
                async_buf.len()
            } else {
                rng.below(async_buf.len() + 1)
            };
            got.extend_from_slice(&async_buf.data()[..n]);
            sync_buf.consume(n);
            async_buf.consume(n);
        }
        got.extend_from_slice(async_buf.data());
        assert_eq!(
            got.len(),
            total,
            "seed {seed}: every byte read exactly once"
        );
        assert!(async_peer.pendings > 0);
        all_limits += limits;
    }
    assert!(
        all_limits > 10,
        "the limit is reached and compared: {all_limits} times"
    );
}

/// Parses every complete `\r\n`-terminated line at the front of `buf`, consuming it.
fn parse_lines(buf: &mut ReadBuffer, lines: &mut Vec<String>) {
    while let Some(end) = buf.data().windows(2).position(|w| w == b"\r\n") {
        lines.push(String::from_utf8(buf.data()[..end].to_vec()).unwrap());
        buf.consume(end + 2);
    }
}

/// A client pipelines 300 requests in one write through a pipe that holds 7 bytes; the server
/// reads what is available, parses every complete request and keeps the incomplete one for
/// the next read. Some keys are longer than the buffer's first block, so it grows.
#[tokio::test]
async fn pipelined_requests_through_a_small_pipe() {
    let key = |i: usize| "k".repeat(1 + (i * 37) % 90) + &i.to_string();
    let requests: String = (0..300).map(|i| format!("GET {}\r\n", key(i))).collect();
    let (mut client, mut server) = tokio::io::duplex(7);
    let writer = tokio::spawn(async move {
        client.write_all(requests.as_bytes()).await.unwrap();
        // Dropped: end of stream.
    });

    let mut buf = ReadBuffer::with_block_size(32);
    let (mut lines, mut reads, mut split) = (Vec::new(), 0, 0);
    while buf.read_from_async(&mut server).await.unwrap() > 0 {
        reads += 1;
        parse_lines(&mut buf, &mut lines);
        buf.check_invariants();
        if !buf.is_empty() {
            split += 1; // a request continues in a later read
        }
    }
    writer.await.unwrap();
    assert_eq!(lines.len(), 300);
    for (i, line) in lines.iter().enumerate() {
        assert_eq!(*line, format!("GET {}", key(i)));
    }
    assert!(buf.is_empty());
    assert!(reads > 100 && split > 50, "{reads} reads, {split} split");
    assert!(buf.capacity() > 32, "a long request grew the storage");
}

#[tokio::test]
async fn partial_request_completes_on_a_later_read() {
    let (mut client, mut server) = tokio::io::duplex(64);
    let mut buf = ReadBuffer::new();
    let mut lines = Vec::new();

    client.write_all(b"GET ab").await.unwrap();
    assert_eq!(buf.read_from_async(&mut server).await.unwrap(), 6);
    parse_lines(&mut buf, &mut lines);
    assert!(lines.is_empty());
    assert_eq!(buf.data(), b"GET ab", "the incomplete request waits");

    client.write_all(b"c\r\nGET").await.unwrap();
    assert_eq!(buf.read_from_async(&mut server).await.unwrap(), 6);
    parse_lines(&mut buf, &mut lines);
    assert_eq!(lines, ["GET abc"]);
    assert_eq!(buf.data(), b"GET");

    client.write_all(b" d\r\n").await.unwrap();
    buf.read_from_async(&mut server).await.unwrap();
    parse_lines(&mut buf, &mut lines);
    assert_eq!(lines, ["GET abc", "GET d"]);
    assert!(buf.is_empty());
}

/// A peer that sends more than `max_len` without a break: the read that finds the buffer full
/// fails with `OutOfMemory` and the numbers; once the parser consumes, reading goes on.
#[tokio::test]
async fn limit_error_then_reading_goes_on() {
    let (mut client, mut server) = tokio::io::duplex(64);
    client.write_all(b"0123456789abcdefghij").await.unwrap();
    drop(client);
    let mut buf = ReadBuffer::with_block_size(4);
    buf.set_max_len(8);

    let mut got = Vec::new();
    let mut errors = 0;
    loop {
        match buf.read_from_async(&mut server).await {
            Ok(0) => break,
            Ok(_) => assert!(buf.len() <= 8),
            Err(e) => {
                assert_eq!(e.kind(), io::ErrorKind::OutOfMemory);
                let limit = e.get_ref().unwrap().downcast_ref::<ReadLimitError>();
                let limit = limit.unwrap();
                assert_eq!((limit.requested, limit.buffered, limit.max_len), (1, 8, 8));
                assert_eq!(buf.len(), 8, "nothing read past the limit");
                errors += 1;
                got.extend_from_slice(buf.data());
                buf.consume(8);
            }
        }
    }
    got.extend_from_slice(buf.data());
    assert_eq!(got, b"0123456789abcdefghij");
    assert_eq!(errors, 2);
    assert!(buf.capacity() <= 8);
}

#[tokio::test]
async fn end_of_stream_keeps_an_incomplete_request() {
    let (mut client, mut server) = tokio::io::duplex(64);
    client.write_all(b"GET a\r\nGE").await.unwrap();
    drop(client);
    let mut buf = ReadBuffer::new();
    let mut lines = Vec::new();
    while buf.read_from_async(&mut server).await.unwrap() > 0 {
        parse_lines(&mut buf, &mut lines);
    }
    assert_eq!(lines, ["GET a"]);
    assert_eq!(buf.data(), b"GE");
    // End of stream again, not an error.
    assert_eq!(buf.read_from_async(&mut server).await.unwrap(), 0);
    assert_eq!(buf.data(), b"GE");
}

/// Once every byte read is consumed, the idle connection's storage goes back to the pool; the
/// next read takes storage from it again.
#[tokio::test]
async fn steal_after_consuming_everything() {
    let pool = LocalPool::new(PoolLimits::new());
    let (mut client, mut server) = tokio::io::duplex(64);
    let mut buf = ReadBuffer::with_block_size(256).with_pool(pool.clone());

    client.write_all(b"GET a\r\nGET").await.unwrap();
    buf.read_from_async(&mut server).await.unwrap();
    let mut lines = Vec::new();
    parse_lines(&mut buf, &mut lines);
    let err = buf.steal().unwrap_err();
    assert_eq!(err.pending, 3, "a partial request is never stolen");
    assert_eq!(buf.capacity(), 256);

    client.write_all(b" b\r\n").await.unwrap();
    buf.read_from_async(&mut server).await.unwrap();
    parse_lines(&mut buf, &mut lines);
    assert_eq!(lines, ["GET a", "GET b"]);
    assert_eq!(buf.steal(), Ok(256));
    assert_eq!(buf.capacity(), 0);
    assert_eq!(pool.stats().pooled, 1);

    client.write_all(b"GET c\r\n").await.unwrap();
    assert_eq!(buf.read_from_async(&mut server).await.unwrap(), 7);
    assert_eq!(buf.data(), b"GET c\r\n");
    assert_eq!(pool.stats().taken, 1, "the storage came back from the pool");
}

/// An `AsyncRead` whose next results are scripted.
enum Step {
    Pending,
    Err(io::ErrorKind),
    Data(&'static [u8]),
    /// Replaces the `ReadBuf` with an empty one of its own.
    Swap,
}

struct Steps(VecDeque<Step>);

impl AsyncRead for Steps {
    fn poll_read(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self
            .get_mut()
            .0
            .pop_front()
            .expect("polled past the script")
        {
            Step::Pending => Poll::Pending,
            Step::Err(kind) => Poll::Ready(Err(kind.into())),
            Step::Data(d) => {
                buf.put_slice(d);
                Poll::Ready(Ok(()))
            }
            Step::Swap => {
                *buf = ReadBuf::new(&mut []);
                Poll::Ready(Ok(()))
            }
        }
    }
}

fn poll_read_once(buf: &mut ReadBuffer, r: &mut Steps) -> Poll<io::Result<usize>> {
    poll_noop(|cx| buf.poll_read_from(cx, Pin::new(r)))
}

#[test]
fn read_pending_and_errors_leave_the_data_unchanged() {
    let mut buf = ReadBuffer::with_block_size(16);
    let mut r = Steps(VecDeque::from([
        Step::Data(b"abc"),
        Step::Pending,
        Step::Err(io::ErrorKind::ConnectionReset),
        Step::Err(io::ErrorKind::Interrupted), // retried within the same poll
        Step::Data(b"de"),
        Step::Swap,
    ]));
    let kind = |p: Poll<io::Result<usize>>| p.map(|r| r.map_err(|e| e.kind()));

    assert_eq!(kind(poll_read_once(&mut buf, &mut r)), Poll::Ready(Ok(3)));
    assert!(poll_read_once(&mut buf, &mut r).is_pending());
    assert_eq!(buf.data(), b"abc");
    assert_eq!(
        kind(poll_read_once(&mut buf, &mut r)),
        Poll::Ready(Err(io::ErrorKind::ConnectionReset))
    );
    assert_eq!(buf.data(), b"abc");
    assert_eq!(kind(poll_read_once(&mut buf, &mut r)), Poll::Ready(Ok(2)));
    assert_eq!(buf.data(), b"abcde");
    assert_eq!(
        kind(poll_read_once(&mut buf, &mut r)),
        Poll::Ready(Err(io::ErrorKind::InvalidData))
    );
    assert_eq!(buf.data(), b"abcde");
    assert!(r.0.is_empty());
    buf.check_invariants();
}

#[test]
fn read_at_the_limit_does_not_poll_the_reader() {
    let mut buf = ReadBuffer::with_block_size(16);
    buf.set_max_len(3);
    let mut r = Steps(VecDeque::from([Step::Data(b"abc")]));
    assert!(matches!(
        poll_read_once(&mut buf, &mut r),
        Poll::Ready(Ok(3))
    ));
    // An empty script: polling the reader again would panic.
    match poll_read_once(&mut buf, &mut r) {
        Poll::Ready(Err(e)) => assert_eq!(e.kind(), io::ErrorKind::OutOfMemory),
        other => panic!("expected the limit error, got {other:?}"),
    }
    assert_eq!(buf.data(), b"abc");
}
