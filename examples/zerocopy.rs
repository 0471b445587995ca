//! `MSG_ZEROCOPY` with sendbuf: how a mio server learns of completions, and what a zero-copy
//! send costs against a copying one on loopback TCP (to choose `DEFAULT_ZEROCOPY_THRESHOLD`).
//!
//! ```text
//! cargo run --release --example zerocopy              # mio demo, then the measurement
//! cargo run --release --example zerocopy -- 200 4096 16384 65536   # rounds, then sizes
//! ```
//!
//! On loopback the kernel copies zero-copy data anyway when it reaches the local receiver (and
//! flags the completion as copied), so the measurement shows only what zero copy *adds*:
//! pinning pages, the completion, the error-queue read. The copy it saves shows only on a
//! real NIC.

#[cfg(target_os = "linux")]
fn main() {
    linux::main();
}

#[cfg(not(target_os = "linux"))]
fn main() {
    eprintln!("MSG_ZEROCOPY is Linux-only");
}

#[cfg(target_os = "linux")]
mod linux {
    use std::io::{self, Read};
    use std::net::{TcpListener, TcpStream};
    use std::sync::Arc;
    use std::thread;
    use std::time::{Duration, Instant};

    use mio::net::TcpStream as MioStream;
    use mio::{Events, Interest, Poll, Token};
    use sendbuf::{WriteBuffer, ZeroCopy};

    pub fn main() {
        let args: Vec<usize> = std::env::args()
            .skip(1)
            .map(|a| a.parse().expect("numbers: rounds, then sizes"))
            .collect();
        let rounds = args.first().copied().unwrap_or(100);
        let sizes = if args.len() > 1 {
            args[1..].to_vec()
        } else {
            vec![1024, 4096, 8192, 16384, 32768, 65536, 262_144]
        };
        mio_demo().unwrap();
        measure(rounds, &sizes);
    }

    /// A loopback pair and a reader thread draining the receiving end into a page-aligned
    /// buffer (a misaligned one would measure the reader's `copy_to_user`, not the sender).
    fn pair() -> (TcpStream, thread::JoinHandle<u64>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let tx = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut rx, _) = listener.accept().unwrap();
        tx.set_nodelay(true).unwrap();
        let reader = thread::spawn(move || {
            let mut storage = vec![0u8; 512 * 1024 + 4096];
            let skip = storage.as_ptr().align_offset(4096);
            let page = &mut storage[skip..skip + 512 * 1024];
            let mut total = 0u64;
            loop {
                match rx.read(page) {
                    Ok(0) | Err(_) => return total,
                    Ok(n) => total += n as u64,
                }
            }
        });
        (tx, reader)
    }

    /// A non-blocking sender driven by mio: writable events send, error events (epoll always
    /// reports `EPOLLERR`, which is how the error queue announces completions) read them.
    fn mio_demo() -> io::Result<()> {
        let (tx, reader) = pair();
        tx.set_nonblocking(true)?;
        let mut stream = MioStream::from_std(tx);
        let mut poll = Poll::new()?;
        poll.registry()
            .register(&mut stream, Token(0), Interest::WRITABLE)?;
        let mut events = Events::with_capacity(16);

        let mut zc = ZeroCopy::new();
        zc.enable(&stream)?;
        zc.set_stop_when_copied(false); // loopback always copies; keep going for the demo
        let value: Arc<[u8]> = vec![b'v'; 256 * 1024].into();
        let mut buf = WriteBuffer::new();
        for i in 0..16 {
            buf.put_slice(format!("VALUE {i} 0 {}\r\n", value.len()).as_bytes());
            buf.pin(value.clone());
        }
        let total = buf.pending_len();
        let mut error_events = 0;
        while !buf.is_empty() {
            poll.poll(&mut events, Some(Duration::from_millis(100)))?;
            for event in events.iter() {
                if event.is_error() {
                    error_events += 1;
                    zc.poll_completions(&mut buf, &stream)?;
                }
                if event.is_writable() {
                    while buf.has_pending() {
                        match zc.send(&mut buf, &stream) {
                            Ok(_) => {}
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                            Err(e) => return Err(e),
                        }
                    }
                }
            }
            // Completions may already be queued without a new edge: read them now and then.
            zc.poll_completions(&mut buf, &stream)?;
        }
        assert_eq!(Arc::strong_count(&value), 1, "every pin released");
        drop(stream);
        assert_eq!(reader.join().unwrap(), total as u64);
        println!(
            "mio demo: {total} bytes, {error_events} error events, {:?}",
            zc.stats()
        );
        Ok(())
    }

    /// Median nanoseconds per message of `size` bytes (pinned), sent on a blocking socket
    /// copying or zero-copy, completions read after each message.
    fn measure(rounds: usize, sizes: &[usize]) {
        println!("loopback TCP, one pinned value per send, median of {rounds} rounds (ns/message)");
        println!(
            "{:>8} {:>10} {:>10} {:>7}",
            "size", "copy", "zerocopy", "zc/copy"
        );
        for &size in sizes {
            let value: Arc<[u8]> = vec![b'x'; size].into();
            let per_round = (4 * 1024 * 1024 / size).clamp(8, 256);
            let mut copy = Vec::new();
            let mut zero = Vec::new();
            let (ctx, creader) = pair();
            let (ztx, zreader) = pair();
            let mut cbuf = WriteBuffer::new();
            let mut zbuf = WriteBuffer::new();
            let mut czc = ZeroCopy::new(); // never enabled: copying sends, same code path
            let mut zzc = ZeroCopy::new();
            zzc.enable(&ztx).unwrap();
            zzc.set_threshold(0);
            zzc.set_stop_when_copied(false);
            for _ in 0..rounds {
                // Interleaved: one round of each, so drift hits both alike.
                copy.push(round(&mut czc, &mut cbuf, &ctx, &value, per_round));
                zero.push(round(&mut zzc, &mut zbuf, &ztx, &value, per_round));
            }
            zzc.drain_blocking(&mut zbuf, &ztx, Duration::from_secs(10))
                .unwrap();
            drop((ctx, ztx));
            creader.join().unwrap();
            zreader.join().unwrap();
            let (c, z) = (median(&mut copy), median(&mut zero));
            println!(
                "{size:>8} {c:>10.0} {z:>10.0} {:>7.2}   zc sends {} copied {}",
                z / c,
                zzc.stats().zero_copy_sends,
                zzc.stats().copied
            );
        }
    }

    fn round(
        zc: &mut ZeroCopy,
        buf: &mut WriteBuffer,
        tx: &TcpStream,
        value: &Arc<[u8]>,
        messages: usize,
    ) -> f64 {
        buf.set_flatten_threshold(0);
        let start = Instant::now();
        for _ in 0..messages {
            buf.pin(value.clone());
            while buf.has_pending() {
                zc.send(buf, tx).unwrap();
            }
            zc.poll_completions(buf, tx).unwrap();
        }
        start.elapsed().as_nanos() as f64 / messages as f64
    }

    fn median(v: &mut [f64]) -> f64 {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    }
}
