//! The `tokio` integration (feature `tokio`): `poll_write_to` / `flush_to` through writers that
//! accept a few bytes at a time and return `Pending` at random, the non-vectored fallback, the
//! error cases, and a request/response server on loopback.
#![cfg(feature = "tokio")]

use sendbuf_testkit::util;

use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use sendbuf::WriteBuffer;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
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

fn poll_once(buf: &mut WriteBuffer, w: &mut Fixed) -> Poll<io::Result<usize>> {
    let waker = Waker::from(Arc::new(NoopWaker));
    let mut cx = Context::from_waker(&waker);
    buf.poll_write_to(&mut cx, Pin::new(w))
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
