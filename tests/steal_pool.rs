//! Stealing into pools, read side: a `ReadBuffer` gives its storage to its pool when stolen and
//! takes it back on its next read; steals are refused while a byte is unconsumed; the pool's
//! bounds and counters hold under a server-like sweep of many connections.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;

use sendbuf::{LocalPool, Pool, PoolLimits, PoolStats, ReadBuffer, SharedPool, Stealable};

/// Fixed-seed xorshift64.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// A pool that counts the takes it could not serve: each one is an allocation by the buffer.
/// (Also shows that a user-written pool plugs in like the shipped ones.)
#[derive(Debug)]
struct CountingPool {
    inner: Arc<dyn Pool>,
    misses: AtomicU64,
}

impl CountingPool {
    fn new(inner: Arc<dyn Pool>) -> Arc<CountingPool> {
        Arc::new(CountingPool {
            inner,
            misses: AtomicU64::new(0),
        })
    }

    fn misses(&self) -> u64 {
        self.misses.load(Ordering::SeqCst)
    }
}

impl Pool for CountingPool {
    fn take(&self, min_len: usize) -> Option<Box<[u8]>> {
        let storage = self.inner.take(min_len);
        if storage.is_none() {
            self.misses.fetch_add(1, Ordering::SeqCst);
        }
        storage
    }
    fn give(&self, storage: Box<[u8]>) {
        self.inner.give(storage)
    }
    fn record_steal(&self, accepted: bool) {
        self.inner.record_steal(accepted)
    }
    fn stats(&self) -> PoolStats {
        self.inner.stats()
    }
}

fn on_fresh_thread<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    thread::spawn(f).join().unwrap()
}

/// Reads `bytes` into `buf` (all of them, in as many reads as it takes).
fn deliver(buf: &mut ReadBuffer, mut bytes: &[u8]) {
    while !bytes.is_empty() {
        buf.read_from(&mut bytes).unwrap();
    }
}

/// Address of the buffer's storage, read right after it was (re)filled from the front.
fn base(buf: &ReadBuffer) -> *const u8 {
    buf.data().as_ptr()
}

#[test]
fn stolen_storage_is_reused_by_the_next_reader() {
    let pool = SharedPool::new(PoolLimits::new());
    let mut a = ReadBuffer::with_block_size(4096).with_pool(pool.clone());
    deliver(&mut a, b"GET /a\r\n");
    let a_storage = base(&a);
    a.consume(8);
    assert_eq!(a.steal(), Ok(4096));
    assert_eq!(a.capacity(), 0);

    let mut b = ReadBuffer::with_block_size(4096).with_pool(pool.clone());
    deliver(&mut b, b"GET /b\r\n");
    assert_eq!(
        base(&b),
        a_storage,
        "b allocated instead of reusing a's storage"
    );
    assert_eq!(
        pool.stats(),
        PoolStats {
            taken: 1,
            returned: 1,
            stolen: 1,
            pooled: 0,
            ..PoolStats::default()
        }
    );
}

#[test]
fn a_buffer_gets_its_own_storage_back_after_a_steal() {
    on_fresh_thread(|| {
        let pool = LocalPool::new(PoolLimits::new());
        let mut buf = ReadBuffer::with_block_size(2048).with_pool(pool.clone());
        for round in 0..5u8 {
            deliver(&mut buf, &[round; 100]);
            let storage = base(&buf);
            buf.consume(100);
            assert_eq!(buf.steal(), Ok(2048));
            deliver(&mut buf, b"x");
            assert_eq!(base(&buf), storage, "round {round}");
            buf.consume(1);
        }
        let s = pool.stats();
        assert_eq!((s.taken, s.returned, s.stolen, s.pooled), (5, 5, 5, 0));
    });
}

#[test]
fn stale_bytes_in_reused_storage_are_never_visible() {
    let pool = SharedPool::new(PoolLimits::new());
    let mut a = ReadBuffer::with_block_size(64).with_pool(pool.clone());
    deliver(&mut a, b"password=hunter2");
    a.consume(16);
    a.steal().unwrap();

    let mut b = ReadBuffer::with_block_size(64).with_pool(pool.clone());
    assert!(b.data().is_empty());
    deliver(&mut b, b"hi");
    assert_eq!(pool.stats().taken, 1, "b must be on a's old storage");
    assert_eq!(b.data(), b"hi");
}

#[test]
fn refused_steals_change_nothing_and_are_counted() {
    let pool = SharedPool::new(PoolLimits::new());
    let mut buf = ReadBuffer::with_block_size(256).with_pool(pool.clone());
    deliver(&mut buf, b"partial requ");
    for consumed in 0..12 {
        let err = buf.steal().unwrap_err();
        assert_eq!(err.pending, 12 - consumed);
        assert_eq!(buf.data(), &b"partial requ"[consumed..]);
        assert_eq!(buf.storage_bytes(), 256);
        buf.consume(1);
    }
    assert_eq!(buf.steal(), Ok(256));
    let s = pool.stats();
    assert_eq!((s.refused, s.stolen, s.returned, s.pooled), (12, 1, 1, 1));
}

#[test]
fn storage_grown_past_the_pool_limit_is_freed_at_steal() {
    let pool = SharedPool::new(PoolLimits::new().with_max_buffer_size(4096));
    let mut buf = ReadBuffer::with_block_size(4096).with_pool(pool.clone());
    deliver(&mut buf, &vec![b'v'; 20_000]); // one large request
    assert!(buf.capacity() > 4096);
    let grown = buf.capacity();
    let after_growth = pool.stats();
    // Each outgrown block went back to the pool (the first, 4096 bytes, was kept).
    assert_eq!(after_growth.returned, 1);
    assert_eq!(after_growth.returned + after_growth.freed, 3); // 4096 → 8192 → 16384 → 32768

    buf.consume(20_000);
    assert_eq!(buf.steal(), Ok(grown));
    let s = pool.stats();
    assert_eq!(s.freed, after_growth.freed + 1, "the grown block is freed");
    assert_eq!(s.pooled, 1, "only the small block is kept");

    // Back to the normal size, from the pool.
    deliver(&mut buf, b"small");
    assert_eq!(buf.capacity(), 4096);
    assert_eq!(pool.stats().taken, 1);
}

#[test]
fn a_full_pool_frees_stolen_storage() {
    let pool = SharedPool::new(PoolLimits::new().with_max_buffers(2));
    let mut conns: Vec<ReadBuffer> = (0..5)
        .map(|_| ReadBuffer::with_block_size(128).with_pool(pool.clone()))
        .collect();
    for c in &mut conns {
        deliver(c, b"q");
        c.consume(1);
    }
    for c in &mut conns {
        assert_eq!(c.steal(), Ok(128));
    }
    let s = pool.stats();
    assert_eq!((s.stolen, s.returned, s.freed, s.pooled), (5, 2, 3, 2));
}

#[test]
fn dropping_a_buffer_returns_its_storage() {
    let pool = SharedPool::new(PoolLimits::new());
    let mut buf = ReadBuffer::with_block_size(512).with_pool(pool.clone());
    deliver(&mut buf, b"unparsed request on a closed connection");
    drop(buf);
    let s = pool.stats();
    assert_eq!((s.returned, s.pooled, s.stolen), (1, 1, 0));
    // A buffer that never read holds nothing to give.
    drop(ReadBuffer::new().with_pool(pool.clone()));
    assert_eq!(pool.stats().returned, 1);
}

#[test]
fn steal_without_a_pool_frees_the_storage() {
    let mut buf = ReadBuffer::with_block_size(1000);
    deliver(&mut buf, b"abc");
    buf.consume(3);
    assert_eq!(buf.steal(), Ok(1000));
    assert_eq!(buf.storage_bytes(), 0);
}

#[test]
fn pooled_storage_larger_than_max_len_still_bounds_the_data() {
    let pool = SharedPool::new(PoolLimits::new());
    pool.give(vec![0u8; 65536].into_boxed_slice());
    let mut buf = ReadBuffer::with_block_size(64).with_pool(pool.clone());
    buf.set_max_len(100);
    let flood = vec![b'f'; 1000];
    let mut peer = &flood[..];
    assert_eq!(buf.read_from(&mut peer).unwrap(), 100);
    assert_eq!(buf.capacity(), 65536, "took the pooled block");
    assert!(buf.read_from(&mut peer).is_err());
    assert_eq!(buf.len(), 100);
}

/// One connection of the sweep: its request stream, how far it has arrived, what was parsed.
struct Conn {
    buf: ReadBuffer,
    wire: Vec<u8>,
    arrived: usize,
    parsed: Vec<u8>,
}

/// Requests are `\n`-terminated lines of random length.
fn lines(rng: &mut XorShift, count: usize) -> Vec<u8> {
    let mut wire = Vec::new();
    for _ in 0..count {
        for _ in 0..rng.below(120) {
            wire.push(b'a' + rng.below(26) as u8);
        }
        wire.push(b'\n');
    }
    wire
}

fn parse_lines(conn: &mut Conn) {
    while let Some(end) = conn.buf.data().iter().position(|&b| b == b'\n') {
        conn.parsed.extend_from_slice(&conn.buf.data()[..=end]);
        conn.buf.consume(end + 1);
    }
}

#[derive(Default)]
struct Tally {
    attempts: u64,
    accepted: u64,
    reclaimed_blocks: u64,
}

/// A steal attempt, checked: accepted exactly when nothing is unparsed, and a refusal changes
/// nothing. Returns whether it was accepted.
fn attempt_steal(c: &mut Conn, tally: &mut Tally) -> bool {
    let pending = c.buf.len();
    let held = c.buf.storage_bytes();
    let data_before = c.buf.data().to_vec();
    tally.attempts += 1;
    match c.buf.steal() {
        Ok(n) => {
            assert_eq!(pending, 0, "stole a buffer with {pending} bytes unparsed");
            assert_eq!(n, held);
            assert_eq!(c.buf.storage_bytes(), 0);
            tally.accepted += 1;
            tally.reclaimed_blocks += u64::from(n > 0);
            true
        }
        Err(refused) => {
            assert_eq!((refused.pending, refused.held), (pending, 0));
            assert!(pending > 0, "refused an empty buffer");
            assert_eq!(c.buf.storage_bytes(), held);
            assert_eq!(
                c.buf.data(),
                data_before,
                "a refused steal changed the data"
            );
            false
        }
    }
}

/// A server's life over many connections: requests arrive in random pieces and are parsed;
/// between events the server tries to steal from random connections. Checks that a steal is
/// accepted exactly when the connection has nothing unparsed, that no byte is lost, and that
/// the buffers allocate only as many blocks as were ever in use at once.
fn sweep(pool: Arc<dyn Pool>, seed: u64) {
    const CONNS: usize = 24;
    let steps = if cfg!(miri) { 300 } else { 20_000 };
    let counting = CountingPool::new(pool);
    let mut rng = XorShift(seed);
    let mut conns: Vec<Conn> = (0..CONNS)
        .map(|_| Conn {
            buf: ReadBuffer::with_block_size(1024).with_pool(counting.clone()),
            wire: lines(&mut rng, if cfg!(miri) { 20 } else { 400 }),
            arrived: 0,
            parsed: Vec::new(),
        })
        .collect();
    let mut tally = Tally::default();
    let mut peak_holding = 0;

    for _ in 0..steps {
        let i = rng.below(CONNS);
        let c = &mut conns[i];
        if rng.below(3) == 0 {
            // A periodic sweep: any connection, any state.
            attempt_steal(c, &mut tally);
        } else if c.arrived < c.wire.len() {
            let k = 1 + rng.below(150);
            let mut end = (c.arrived + k).min(c.wire.len());
            if rng.below(4) != 0 {
                // Usually a request arrives whole: the piece ends at a line end.
                end += c.wire[end - 1..]
                    .iter()
                    .position(|&b| b == b'\n')
                    .unwrap_or(0);
                end = end.min(c.wire.len());
            }
            let n = c.buf.read_from(&mut &c.wire[c.arrived..end]).unwrap();
            c.arrived += n;
            parse_lines(c);
            c.buf.check_invariants();
            let holding = conns.iter().filter(|c| c.buf.storage_bytes() > 0).count();
            peak_holding = peak_holding.max(holding);
            // The socket would now report WouldBlock: the server tries to reclaim at once.
            attempt_steal(&mut conns[i], &mut tally);
        }
    }

    for i in 0..CONNS {
        let c = &mut conns[i];
        while c.arrived < c.wire.len() {
            let n = c.buf.read_from(&mut &c.wire[c.arrived..]).unwrap();
            c.arrived += n;
            parse_lines(c);
        }
        assert!(c.buf.is_empty());
        assert_eq!(c.parsed, c.wire, "bytes lost or reordered");
        let holding = conns.iter().filter(|c| c.buf.storage_bytes() > 0).count();
        peak_holding = peak_holding.max(holding);
        assert!(attempt_steal(&mut conns[i], &mut tally), "idle at the end");
    }

    let s = counting.stats();
    assert_eq!(s.stolen, tally.accepted);
    assert_eq!(s.stolen + s.refused, tally.attempts);
    assert_eq!(
        s.returned, tally.reclaimed_blocks,
        "every reclaimed block was pooled"
    );
    assert_eq!(s.freed, 0);
    assert_eq!(s.pooled as u64, s.returned - s.taken);
    assert!(
        s.refused > 0 && s.taken > 0,
        "the sweep never refused or never reused"
    );
    // A buffer allocates only when the pool is empty, i.e. when every block is in use.
    assert_eq!(
        counting.misses() as usize,
        peak_holding,
        "allocations beyond the peak number of buffers in use"
    );
    assert!(
        peak_holding < CONNS,
        "every connection was busy at once: a weak test"
    );
}

#[test]
fn server_sweep_with_a_shared_pool() {
    sweep(SharedPool::new(PoolLimits::new()), 0xDEAD_BEEF);
}

#[test]
fn server_sweep_with_a_local_pool() {
    on_fresh_thread(|| sweep(LocalPool::new(PoolLimits::new()), 0x0BAD_CAFE));
}

#[test]
fn read_buffers_on_several_threads_share_one_pool() {
    const THREADS: usize = 4;
    let rounds = if cfg!(miri) { 20 } else { 2_000 };
    let pool = SharedPool::new(PoolLimits::new().with_max_buffers(THREADS));
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let pool = pool.clone();
            thread::spawn(move || {
                let mut buf = ReadBuffer::with_block_size(4096).with_pool(pool);
                let mut steals = 0u64;
                for i in 0..rounds {
                    let msg = format!("thread {t} request {i}\n");
                    deliver(&mut buf, msg.as_bytes());
                    assert!(buf.steal().is_err());
                    assert_eq!(buf.data(), msg.as_bytes(), "another thread's bytes");
                    buf.consume(msg.len());
                    buf.steal().unwrap();
                    steals += 2;
                }
                steals
            })
        })
        .collect();
    let steals: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
    let s = pool.stats();
    assert_eq!(s.stolen + s.refused, steals);
    assert_eq!(s.stolen, s.refused);
    assert_eq!(
        s.returned + s.freed,
        s.stolen,
        "each accepted steal gave one block"
    );
    assert_eq!(s.freed, 0, "never more than THREADS blocks exist");
    assert_eq!(s.pooled as u64, s.returned - s.taken);
    assert!(s.pooled <= THREADS);
}

#[test]
fn local_pool_buffers_on_two_threads_reuse_only_their_own_storage() {
    let pool = LocalPool::new(PoolLimits::new());
    let handles: Vec<_> = (0..2)
        .map(|t| {
            let pool = pool.clone();
            thread::spawn(move || {
                let mut buf = ReadBuffer::with_block_size(1024).with_pool(pool.clone());
                deliver(&mut buf, b"first");
                let storage = base(&buf) as usize;
                buf.consume(5);
                buf.steal().unwrap();
                for i in 0..100 {
                    deliver(&mut buf, format!("t{t} {i}").as_bytes());
                    assert_eq!(base(&buf) as usize, storage);
                    buf.clear();
                    buf.steal().unwrap();
                }
                let s = pool.stats();
                assert_eq!(
                    (s.taken, s.returned, s.stolen, s.pooled),
                    (100, 101, 101, 1)
                );
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
}
