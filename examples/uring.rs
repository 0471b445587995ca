//! System calls per send: a copying `sendmsg` per connection against one io_uring submission
//! for every connection.
//!
//! `N` loopback TCP connections each have one small response pending (as after a round of
//! pipelined requests); a round sends all of them, then the peer sides are read. The copying
//! path makes one `sendmsg` per connection; [`sendbuf::UringSender`] queues one `SendMsg` per
//! connection and enters the kernel once for the round.
//!
//! ```text
//! cargo run --release --features io-uring --example uring -- [connections] [rounds] [bytes]
//! strace -c -f -e trace=sendmsg,io_uring_enter target/release/examples/uring 64 2000 100
//! ```

#[cfg(all(feature = "io-uring", target_os = "linux"))]
mod imp {
    use std::io::Read;
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsFd;
    use std::time::Instant;

    use sendbuf::{UringSender, WriteBuffer};

    struct Conn {
        tx: TcpStream,
        rx: TcpStream,
        buf: WriteBuffer,
    }

    fn arg(n: usize, default: usize) -> usize {
        std::env::args()
            .nth(n)
            .map(|s| s.parse().expect("a number"))
            .unwrap_or(default)
    }

    fn fill(conns: &mut [Conn], response: &[u8]) {
        for c in conns.iter_mut() {
            c.buf.put_slice(response);
        }
    }

    fn drain(conns: &mut [Conn], bytes: usize, scratch: &mut [u8]) {
        for c in conns.iter_mut() {
            c.rx.read_exact(&mut scratch[..bytes]).unwrap();
        }
    }

    pub fn main() {
        let n = arg(1, 64);
        let rounds = arg(2, 2000);
        let bytes = arg(3, 100).max(1);
        let response = vec![b'r'; bytes];
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut conns: Vec<Conn> = (0..n)
            .map(|_| {
                let tx = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
                let (rx, _) = listener.accept().unwrap();
                tx.set_nodelay(true).unwrap();
                Conn {
                    tx,
                    rx,
                    buf: WriteBuffer::new(),
                }
            })
            .collect();
        let mut scratch = vec![0u8; bytes];
        let mut sender = UringSender::new(n.next_power_of_two() as u32).unwrap_or_else(|e| {
            eprintln!("io_uring_setup failed: {e}");
            std::process::exit(1)
        });
        let mut done = Vec::new();

        // Interleaved blocks so both paths see the same machine state.
        let (mut copy_ns, mut copy_calls, mut uring_ns) = (0u128, 0u64, 0u128);
        let block = 100.min(rounds).max(1);
        let mut left = rounds;
        while left > 0 {
            let this = block.min(left);
            left -= this;

            let t = Instant::now();
            for _ in 0..this {
                fill(&mut conns, &response);
                for c in conns.iter_mut() {
                    while c.buf.has_pending() {
                        c.buf.send_to(&c.tx).unwrap();
                        copy_calls += 1;
                    }
                }
                drain(&mut conns, bytes, &mut scratch);
            }
            copy_ns += t.elapsed().as_nanos();

            let t = Instant::now();
            for _ in 0..this {
                fill(&mut conns, &response);
                loop {
                    let mut queued = 0;
                    for (token, c) in conns.iter().enumerate() {
                        if c.buf.has_pending() && sender.outstanding(token as u64) == 0 {
                            sender
                                .submit(token as u64, &c.buf, c.tx.as_fd(), false)
                                .unwrap();
                            queued += 1;
                        }
                    }
                    if queued == 0 && sender.in_flight() == 0 {
                        break;
                    }
                    sender.submit_and_wait(sender.in_flight()).unwrap();
                    done.clear();
                    sender.reap(&mut done);
                    for &c in &done {
                        sender
                            .finish(c, &mut conns[c.token() as usize].buf)
                            .unwrap();
                    }
                }
                drain(&mut conns, bytes, &mut scratch);
            }
            uring_ns += t.elapsed().as_nanos();
        }

        let sends = (n * rounds) as f64;
        let stats = sender.stats();
        println!("{n} connections x {rounds} rounds, one {bytes} B response each per round");
        println!(
            "copying sendmsg : {:.3} sendmsg per send, {:.0} ns per send (incl. the reads)",
            copy_calls as f64 / sends,
            copy_ns as f64 / sends
        );
        println!(
            "io_uring        : {:.4} io_uring_enter per send ({} enters, {} SQEs), {:.0} ns per send (incl. the reads)",
            stats.enters as f64 / sends,
            stats.enters,
            stats.sends,
            uring_ns as f64 / sends
        );
    }
}

fn main() {
    #[cfg(all(feature = "io-uring", target_os = "linux"))]
    imp::main();
    #[cfg(not(all(feature = "io-uring", target_os = "linux")))]
    eprintln!("build with --features io-uring (Linux) to run this example");
}
