//! Where should `pin` stop copying? Copying a value into scratch versus pinning it as its own
//! iovec, for values of 64..2048 bytes behind a 24-byte header.
//!
//! * `flatten_cpu/{copy,pin}/S`: the buffer's work only (format, pin, gather, advance), a batch
//!   of 64 messages drained by a writer that accepts everything offered (64 iovecs at most).
//! * `flatten_tcp_b{1,16}/{copy,pin}/S`: the same through real `sendmsg` calls on loopback TCP
//!   (`send_to`), a reader thread draining into a page-aligned buffer. With a batch of 1 message
//!   per `sendmsg` copying means 1 iovec instead of 2; with 16 messages, 1-3 instead of 32.
//!
//! `copy` sets the flatten threshold above the value size, `pin` sets it to 0; everything else is
//! identical. The crossover is the smallest size where `pin` is not slower than `copy`. Times are
//! the sending thread's CPU time ([`iter_cpu`]), which includes the `sendmsg` and the loopback
//! TCP input the kernel runs in its context, but not the reader thread's work.

use std::hint::black_box;
use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::thread::{self, JoinHandle};

use criterion::{BenchmarkId, Criterion, Throughput};
use sendbuf::{GatherLimits, IoVecBuilder, WriteBuffer};

use crate::util::{iter_cpu, values, Header, PageAligned, PartialWriter, MAX_IOVECS};

const SIZES: [usize; 7] = [64, 128, 256, 512, 768, 1024, 2048];

/// Batch sizes of the TCP groups: one response per `sendmsg` (depth 1), and a pipelined batch.
const TCP_BATCHES: [usize; 2] = [1, 16];

fn fill(buf: &mut WriteBuffer, values: &[Arc<[u8]>]) {
    for (i, v) in values.iter().enumerate() {
        let mut f = buf.format();
        f.put(&Header::response(i as u32, v.len()));
        f.commit();
        buf.pin(Arc::clone(v));
    }
}

fn mode(copy: bool) -> (&'static str, usize) {
    if copy {
        ("copy", usize::MAX)
    } else {
        ("pin", 0)
    }
}

pub fn register_cpu(c: &mut Criterion) {
    let mut group = c.benchmark_group("flatten_cpu");
    group.throughput(Throughput::Elements(64));
    let limit = GatherLimits::new().with_max_iovecs(MAX_IOVECS);
    for size in SIZES {
        let vals = values(size, 64);
        for copy in [true, false] {
            let (name, threshold) = mode(copy);
            let mut buf = WriteBuffer::new();
            buf.set_flatten_threshold(threshold);
            let mut w = PartialWriter::full();
            group.bench_function(BenchmarkId::new(name, size), |b| {
                iter_cpu(b, || {
                    fill(&mut buf, &vals);
                    while !buf.is_empty() {
                        let n = {
                            let mut iov = IoVecBuilder::with_limits(limit);
                            iov.gather(&buf);
                            w.write(iov.as_slices())
                        };
                        buf.advance(n);
                    }
                    black_box(&buf);
                })
            });
        }
    }
    group.finish();
}

/// A loopback TCP connection whose far end is drained by a thread into a page-aligned buffer.
struct Loopback {
    tx: Option<TcpStream>,
    reader: Option<JoinHandle<u64>>,
}

impl Loopback {
    fn new() -> Loopback {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let tx = TcpStream::connect(listener.local_addr().expect("local addr")).expect("connect");
        tx.set_nodelay(true).expect("TCP_NODELAY");
        let (mut rx, _) = listener.accept().expect("accept");
        let reader = thread::spawn(move || {
            let mut buf = PageAligned::new(256 << 10);
            let buf = buf.as_mut_slice();
            let mut total = 0u64;
            loop {
                match rx.read(buf) {
                    Ok(0) => return total,
                    Ok(n) => total += n as u64,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => panic!("reader: {e}"),
                }
            }
        });
        Loopback {
            tx: Some(tx),
            reader: Some(reader),
        }
    }

    fn tx(&self) -> &TcpStream {
        self.tx.as_ref().expect("open")
    }
}

impl Drop for Loopback {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

pub fn register_tcp(c: &mut Criterion) {
    for batch in TCP_BATCHES {
        let mut group = c.benchmark_group(format!("flatten_tcp_b{batch}"));
        group.throughput(Throughput::Elements(batch as u64));
        let link = Loopback::new();
        for size in SIZES {
            let vals = values(size, batch);
            for copy in [true, false] {
                let (name, threshold) = mode(copy);
                let mut buf = WriteBuffer::new();
                buf.set_flatten_threshold(threshold);
                group.bench_function(BenchmarkId::new(name, size), |b| {
                    iter_cpu(b, || {
                        fill(&mut buf, &vals);
                        while !buf.is_empty() {
                            buf.send_to(link.tx()).expect("sendmsg on loopback");
                        }
                    })
                });
            }
        }
        group.finish();
    }
}
