//! The crate's main demonstration: a queue of text headers and zero-copy values sent through a
//! real loopback TCP socket whose send buffer is tiny, so nearly every `sendmsg` is partial.
//!
//! A reader thread that pauses at random parses every message and checks each byte. The sender
//! prints how many sends were partial, how often the socket was full, and that every value was
//! released exactly once.
//!
//! ```text
//! cargo run --release --example partial_writes
//! ```

use std::fmt::Write as _;
use std::io::{self, BufRead, BufReader, Read};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use sendbuf::WriteBuffer;
use socket2::{Domain, SockRef, Socket, Type};

const MESSAGES: u64 = 20_000;
/// Requested `SO_SNDBUF`; Linux doubles it for bookkeeping.
const SEND_BUFFER: usize = 4096;
/// Value sizes: small ones are copied into scratch, the rest pinned by reference.
const SIZES: [usize; 6] = [0, 40, 300, 4096, 20_000, 65_536];

/// A cached value that counts how often it is dropped.
struct Item {
    bytes: Vec<u8>,
    drops: Arc<AtomicUsize>,
}

impl AsRef<[u8]> for Item {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

impl Drop for Item {
    fn drop(&mut self) {
        self.drops.fetch_add(1, Ordering::Relaxed);
    }
}

fn value_byte(seq: u64, i: usize) -> u8 {
    (seq as usize).wrapping_mul(31).wrapping_add(i) as u8
}

fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

fn main() -> io::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    // An Ethernet-sized MSS: with loopback's 64 KiB segments a small send buffer holds a single
    // segment and every send waits for the receiver's delayed ACK, which measures TCP, not us.
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    socket.set_mss(1460)?;
    socket.set_send_buffer_size(SEND_BUFFER)?;
    socket.connect(&addr.into())?;
    let sender: TcpStream = socket.into();
    let (receiver, _) = listener.accept()?;
    drop(listener);
    sender.set_nonblocking(true)?;
    // A server sends each batch at once; Nagle would hold partial tails for the peer's ACK.
    sender.set_nodelay(true)?;
    println!(
        "sending {MESSAGES} messages to {addr} with SO_SNDBUF = {} bytes",
        SockRef::from(&sender).send_buffer_size()?
    );

    let reader = thread::spawn(move || read_and_verify(receiver));

    let drops = Arc::new(AtomicUsize::new(0));
    let mut buf = WriteBuffer::new();
    let mut rng = 0x9E37_79B9_7F4A_7C15u64;
    let (mut sends, mut partial, mut would_block, mut pinned) = (0u64, 0u64, 0u64, 0usize);
    let (mut bytes, mut max_pending) = (0u64, 0usize);
    let start = Instant::now();
    let mut seq = 0;
    while seq < MESSAGES || buf.has_pending() {
        // Queue a burst of responses, as a server does for one read's worth of requests.
        let burst = 1 + xorshift(&mut rng) % 16;
        for _ in 0..burst {
            if seq == MESSAGES {
                break;
            }
            let size = SIZES[(xorshift(&mut rng) % SIZES.len() as u64) as usize];
            let value: Vec<u8> = (0..size).map(|i| value_byte(seq, i)).collect();
            let mut f = buf.format();
            write!(f, "VALUE {seq} {size}\r\n").expect("formatting into scratch cannot fail");
            f.commit();
            if size >= buf.flatten_threshold() {
                pinned += 1;
            }
            buf.pin(Item {
                bytes: value,
                drops: drops.clone(),
            });
            buf.put_slice(b"\r\n");
            seq += 1;
        }
        max_pending = max_pending.max(buf.pending_len());
        // Send the burst out before producing more, waiting whenever the socket is full.
        while buf.has_pending() {
            let offered = buf.pending_len();
            match buf.send_to(&sender) {
                Ok(n) => {
                    sends += 1;
                    bytes += n as u64;
                    if n < offered {
                        partial += 1;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // A server would wait for writability in its event loop; sleep stands in.
                    would_block += 1;
                    thread::sleep(Duration::from_micros(20));
                }
                Err(e) => return Err(e),
            }
        }
    }
    buf.check_invariants();
    drop(sender);
    let verified = reader.join().expect("reader thread panicked")?;
    let elapsed = start.elapsed();

    println!(
        "sent {bytes} bytes in {sends} sendmsg calls: {partial} partial, {would_block} WouldBlock, \
         peak queue {max_pending} bytes, {:.1} MB/s",
        bytes as f64 / elapsed.as_secs_f64() / 1e6
    );
    println!(
        "reader verified {verified} messages byte for byte; {} values released, every one exactly \
         once ({pinned} pinned zero-copy, {} copied into scratch)",
        drops.load(Ordering::Relaxed),
        MESSAGES as usize - pinned
    );
    assert_eq!(verified, MESSAGES);
    assert_eq!(drops.load(Ordering::Relaxed), MESSAGES as usize);
    assert!(buf.is_empty());
    Ok(())
}

/// Parses `VALUE <seq> <len>\r\n<value>\r\n` until EOF, checking every byte; pauses at random.
fn read_and_verify(stream: TcpStream) -> io::Result<u64> {
    let mut r = BufReader::with_capacity(8192, stream);
    let mut rng = 0x2545_F491_4F6C_DD1Du64;
    let mut line = String::new();
    let mut value = Vec::new();
    let mut expected_seq = 0u64;
    loop {
        if xorshift(&mut rng) % 512 == 0 {
            thread::sleep(Duration::from_millis(1));
        }
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Ok(expected_seq);
        }
        let bad =
            |what: &str| io::Error::new(io::ErrorKind::InvalidData, format!("{what}: {line:?}"));
        let mut parts = line.trim_end().split(' ');
        let (Some("VALUE"), Some(seq), Some(len), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad("malformed header"));
        };
        let seq: u64 = seq.parse().map_err(|_| bad("bad sequence number"))?;
        let len: usize = len.parse().map_err(|_| bad("bad length"))?;
        if seq != expected_seq {
            return Err(bad("out of order"));
        }
        value.resize(len + 2, 0);
        r.read_exact(&mut value)?;
        if value[..len]
            .iter()
            .enumerate()
            .any(|(i, &b)| b != value_byte(seq, i))
            || &value[len..] != b"\r\n"
        {
            return Err(bad("corrupt value"));
        }
        expected_seq += 1;
    }
}
