//! Stealing a `WriteBuffer`'s storage: refused in every state that holds pending data, accepted
//! the moment the last byte is advanced past, and the production failure this crate exists to
//! prevent (a buffer with unsent bytes taken away under write load) reproduced on a real socket.

use sendbuf_testkit::util;

use std::io::{self, Read};
use std::net::{TcpListener, TcpStream};
use std::thread;
use std::time::Duration;

use sendbuf::{LocalPool, Pool, PoolLimits, SharedPool, Stealable, WriteBuffer};
use util::{pending, Counted, XorShift};

/// A mixed queue: headers, a pinned value, a flattened value, a trailer.
fn mixed(buf: &mut WriteBuffer) -> (Vec<u8>, util::DropCount) {
    let mut f = buf.format();
    f.put_u32(0xDEAD_BEEF);
    f.put_slice(b"VALUE k 0 600\r\n");
    f.commit();
    let (value, drops) = Counted::new(vec![b'v'; 600]);
    buf.pin(value);
    buf.pin(vec![b's'; 20]); // flattened
    buf.put_slice(b"\r\nEND\r\n");
    (pending(buf), drops)
}

#[test]
fn refused_after_every_partial_advance_of_a_mixed_queue() {
    let pool = SharedPool::new(PoolLimits::new());
    let probe = {
        let mut buf = WriteBuffer::new();
        mixed(&mut buf).0.len()
    };
    for n in 0..probe {
        let mut buf = WriteBuffer::with_block_size(64).with_pool(pool.clone());
        let (bytes, drops) = mixed(&mut buf);
        buf.advance(n);
        let err = buf.steal().expect_err("stole a buffer with pending bytes");
        assert_eq!(
            (err.pending, err.held),
            (bytes.len() - n, 0),
            "after advance({n})"
        );
        // Refusal changes nothing.
        assert_eq!(pending(&buf), &bytes[n..]);
        buf.check_invariants();
        buf.advance(buf.pending_len());
        assert_eq!(drops.get(), 1);
        assert!(
            buf.steal().is_ok(),
            "drained after advance({n}) but still refused"
        );
        assert_eq!(buf.storage_bytes(), 0);
    }
    let stats = pool.stats();
    assert_eq!((stats.refused, stats.stolen), (probe as u64, probe as u64));
}

#[test]
fn refused_with_only_a_pinned_value_pending() {
    let mut buf = WriteBuffer::new();
    buf.set_flatten_threshold(0);
    let (value, drops) = Counted::new(vec![1u8; 10]);
    buf.pin(value);
    assert_eq!(buf.capacity(), 0, "no scratch at all");
    assert_eq!(buf.steal().unwrap_err().pending, 10);
    buf.advance(9);
    assert_eq!(buf.steal().unwrap_err().pending, 1);
    assert_eq!(drops.get(), 0);
    buf.advance(1);
    assert_eq!(drops.get(), 1);
    assert!(buf.steal().is_ok());
}

#[test]
fn refused_with_only_scratch_pending_then_accepted() {
    let mut buf = WriteBuffer::new();
    buf.put_slice(b"a");
    assert_eq!(buf.steal().unwrap_err().pending, 1);
    buf.advance(1);
    assert!(buf.steal().unwrap() >= 16 * 1024);
    assert_eq!(buf.capacity(), 0);
    // Usable again: storage comes back on the next format.
    buf.put_slice(b"again");
    assert_eq!(pending(&buf), b"again");
    buf.check_invariants();
}

#[test]
fn a_rolled_back_guard_leaves_the_buffer_stealable() {
    let mut buf = WriteBuffer::new();
    buf.put_slice(b"x");
    buf.advance(1);
    {
        let mut f = buf.format();
        f.put_slice(&[0u8; 100_000]); // outgrows the chunk, then rolled back
    }
    assert!(buf.is_empty());
    assert!(buf.steal().is_ok());
}

#[test]
fn stolen_storage_is_reused_from_the_pool() {
    let pool = LocalPool::new(PoolLimits::new());
    let before = pool.stats();
    let mut a = WriteBuffer::new().with_pool(pool.clone());
    a.put_slice(b"first");
    let storage = a.chunk().as_ptr();
    a.advance(5);
    a.steal().unwrap();
    // Another connection formats next and gets the very same memory, without allocating.
    let mut b = WriteBuffer::new().with_pool(pool.clone());
    b.put_slice(b"second");
    assert_eq!(b.chunk().as_ptr(), storage);
    let after = pool.stats();
    assert_eq!(after.taken - before.taken, 1);
    assert_eq!(after.stolen - before.stolen, 1);
}

/// The founding bug, reproduced: a server under heavy write load considers a connection idle at
/// every turn of its event loop and tries to steal its buffer, and the stolen storage is handed
/// at once to another connection that formats over it. If a steal were ever accepted with bytes
/// pending, the other connection's bytes would overwrite them and the reader would see it.
#[test]
#[cfg_attr(miri, ignore)] // real sockets
fn steal_attempts_under_write_load_never_corrupt_the_stream() -> io::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    socket.set_mss(1460)?; // see examples/partial_writes.rs: avoids delayed-ACK stalls
    socket.set_send_buffer_size(4096)?;
    socket.connect(&addr.into())?;
    let sender: TcpStream = socket.into();
    let (receiver, _) = listener.accept()?;
    drop(listener);
    sender.set_nonblocking(true)?;
    sender.set_nodelay(true)?;

    const MESSAGES: u32 = 3_000;
    let reader = thread::spawn(move || -> io::Result<u32> {
        let mut r = io::BufReader::new(receiver);
        let mut rng = XorShift::new(7);
        let mut head = [0u8; 8];
        let mut body = Vec::new();
        let mut seen = 0;
        loop {
            if rng.one_in(64) {
                thread::sleep(Duration::from_millis(1)); // a reader that pauses
            }
            match r.read_exact(&mut head) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(seen),
                Err(e) => return Err(e),
            }
            let seq = u32::from_be_bytes(head[..4].try_into().unwrap());
            let len = u32::from_be_bytes(head[4..].try_into().unwrap()) as usize;
            assert_eq!(seq, seen, "messages out of order or corrupt header");
            body.resize(len, 0);
            r.read_exact(&mut body)?;
            assert!(
                body.iter().all(|&b| b == seq as u8),
                "message {seq}: body corrupted"
            );
            seen += 1;
        }
    });

    let pool = LocalPool::new(PoolLimits::new());
    let mut conn = WriteBuffer::with_block_size(2048).with_pool(pool.clone());
    let mut other = WriteBuffer::with_block_size(2048).with_pool(pool.clone());
    let mut rng = XorShift::new(11);
    let (mut refused, mut stolen, mut seq) = (0u64, 0u64, 0u32);
    // Every point at which a server might think the connection idle: try to steal, and let
    // another connection format over whatever the pool hands out.
    let mut try_steal = |conn: &mut WriteBuffer, other: &mut WriteBuffer| {
        match conn.steal() {
            Ok(_) => stolen += 1,
            Err(_) => refused += 1,
        }
        other.put_slice(&[0xEE; 1500]);
        other.advance(other.pending_len());
        other.steal().expect("the other connection is drained");
    };
    while seq < MESSAGES || !conn.is_empty() {
        if seq < MESSAGES {
            // A response: a header in scratch, a body copied (small) or pinned (large).
            let len = [10usize, 200, 700, 3000, 20_000][rng.below(5)];
            let mut f = conn.format();
            f.put_u32(seq);
            f.put_u32(len as u32);
            f.commit();
            try_steal(&mut conn, &mut other);
            conn.pin(vec![seq as u8; len]);
            seq += 1;
        }
        try_steal(&mut conn, &mut other);
        match conn.send_to(&sender) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                thread::sleep(Duration::from_micros(20))
            }
            Err(e) => return Err(e),
        }
        try_steal(&mut conn, &mut other);
        conn.check_invariants();
    }
    drop(sender);
    let seen = reader.join().expect("reader panicked")?;
    assert_eq!(seen, MESSAGES);
    assert!(
        refused > 1000,
        "the load never left bytes pending ({refused} refusals)"
    );
    assert!(stolen > 0, "the buffer was never idle ({stolen} steals)");
    Ok(())
}
