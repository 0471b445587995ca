//! The fuzz crate's library: the `memcached_requests` harness (and `meta_requests`, the same
//! on streams of meta commands, see [`run_meta`]), the memcached example server's
//! request handling (the `memcached_server` library's protocol, store and stats) driven the way
//! its worker loop drives it, by a peer that sends arbitrary bytes. The other targets check
//! against the models of `sendbuf-testkit`.
//!
//! The input is a 4-byte header and the byte stream the peer sends:
//!
//! * `header[0]`: the server's `--max-item-size` (one of [`ITEM_SIZES`]); bit 7 also sets a
//!   hard limit on the write buffer (which makes the session close the connection on a refused
//!   response);
//! * `header[1]`: the write buffer's high water mark (`64 * (1 + header[1])` bytes, the low mark
//!   a quarter of it), small so that the session's stop at the high mark is exercised;
//! * `header[2..4]`: the seed of the generator that splits the stream into reads and chooses
//!   how much of the output each `sendmsg` takes.
//!
//! As the worker does: read a piece into a `ReadBuffer` bounded by the largest request, call
//! `Session::process` on everything buffered (unless the output is backed up or fewer bytes are
//! buffered than the session said it needs), consume what it consumed, reserve what it needs,
//! then advance the output by a random amount (a partial write). Checked on every call: no
//! panic, `consumed <= input.len()`, `need <= max_item_size + 24 + 250 + 64`, the reserve of
//! `need` succeeds; and throughout: read buffer storage within its bound, write buffer scratch
//! within a bound derived from the protocol's limits, the store within its memory limit, and the
//! buffers' invariants.
//!
//! Then the same stream goes to a fresh server in one read, its output sent whole each time: the
//! bytes sent and whether the connection was closed must not depend on how the stream was split
//! or how the output drained. (Not compared when a hard limit is set, which refuses responses
//! depending on what is still unsent, or when the output holds `stats`, which report times.)

use std::io;
use std::sync::Arc;

use sendbuf::{ReadBuffer, Watermarks, WriteBuffer, DEFAULT_FLATTEN_THRESHOLD};

use memcached_server::handler::{Limits, KEY_MAX, MAX_LINE};
use memcached_server::protocol::Session;
use memcached_server::stats::Stats;
use memcached_server::store::Store;

/// Bytes of the input before the stream.
pub const HEADER: usize = 4;

/// `--max-item-size` choices: the default first, then small ones that make the refusal of
/// oversized values (and the swallowing of their bytes) easy to reach.
pub const ITEM_SIZES: [usize; 8] = [1024 * 1024, 1, 16, 100, 1024, 4096, 64 * 1024, 300];

/// The store's memory limit.
pub const MEMORY_LIMIT: usize = 4 * 1024 * 1024;

/// The worker's read buffer storage on first use, also the least `max_len` it sets.
const READ_CAPACITY: usize = 16 * 1024;

/// A small xorshift generator: the splits and partial writes are a function of the input.
struct Rng(u32);

impl Rng {
    fn next(&mut self) -> u32 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.0 = x;
        x
    }

    /// Uniform enough in `0..=n`.
    fn upto(&mut self, n: usize) -> usize {
        (self.next() as usize) % (n + 1)
    }

    /// A read size: mostly a few bytes (requests split everywhere), sometimes a lot.
    fn read_size(&mut self) -> usize {
        match self.next() % 8 {
            0..=3 => 1 + self.upto(7),
            4..=5 => 1 + self.upto(63),
            6 => 1 + self.upto(1023),
            _ => usize::MAX,
        }
    }
}

/// What one connection sent and how it ended.
#[derive(Debug, PartialEq, Eq)]
struct Sent {
    /// FNV-1a of the bytes sent, and their number.
    hash: u64,
    len: u64,
    /// The session closed the connection.
    closed: bool,
    /// The output contained `uptime` (a `stats` response).
    stats: bool,
}

/// With `SENDBUF_FUZZ_DEBUG` set (when replaying a crash), each run prints what it read and
/// sent.
fn debug() -> bool {
    static DEBUG: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *DEBUG.get_or_init(|| std::env::var_os("SENDBUF_FUZZ_DEBUG").is_some())
}

impl Sent {
    fn record(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.hash = (self.hash ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
        self.len += bytes.len() as u64;
        self.stats |= bytes.windows(6).any(|w| w == b"uptime");
    }
}

/// Runs one input (see the module docs); panics on a broken check.
pub fn run(data: &[u8]) {
    if data.len() < HEADER {
        return;
    }
    let (header, peer) = data.split_at(HEADER);
    let max_item_size = ITEM_SIZES[usize::from(header[0] & 0x7f) % ITEM_SIZES.len()];
    let high = 64 * (1 + usize::from(header[1]));
    let hard_limit = (header[0] & 0x80 != 0).then_some(2 * high + 4096);
    let seed = 0x9e37_79b9 ^ u32::from(u16::from_le_bytes([header[2], header[3]]));

    let split = serve(peer, max_item_size, high, hard_limit, Some(Rng(seed)));
    if hard_limit.is_none() {
        let whole = serve(peer, max_item_size, high, None, None);
        if !whole.stats && !split.stats {
            assert_eq!(
                split, whole,
                "the output depends on how the input was split (left) or not (right)"
            );
        }
    }
}

/// The meta commands `meta_requests` starts the stream's lines with.
const META_COMMANDS: [&[u8]; 6] = [b"mg ", b"ms ", b"md ", b"ma ", b"mn", b"me "];

/// Runs one input of `meta_requests`: as [`run`], on a stream whose lines mostly start with a
/// meta command. The stream after the header is cut after each `\n`; a piece whose first byte
/// has bit 7 clear has that byte replaced by the command it picks ([`META_COMMANDS`]), a piece
/// whose first byte has bit 7 set is sent without it (a data block, or anything else).
pub fn run_meta(data: &[u8]) {
    if data.len() < HEADER {
        return;
    }
    let (header, rest) = data.split_at(HEADER);
    let mut input = header.to_vec();
    for piece in rest.split_inclusive(|&b| b == b'\n') {
        match piece.split_first() {
            Some((&pick, line)) if pick & 0x80 == 0 => {
                input.extend_from_slice(META_COMMANDS[usize::from(pick) % META_COMMANDS.len()]);
                input.extend_from_slice(line);
            }
            Some((_, verbatim)) => input.extend_from_slice(verbatim),
            None => {}
        }
    }
    run(&input);
}

/// One connection of a fresh server receiving `peer`: in reads and partial writes chosen by
/// `rng`, or, without one, in reads as large as the buffer takes and whole writes.
fn serve(
    mut peer: &[u8],
    max_item_size: usize,
    high: usize,
    hard_limit: Option<usize>,
    mut rng: Option<Rng>,
) -> Sent {
    let mut sent = Sent {
        hash: 0xcbf2_9ce4_8422_2325,
        len: 0,
        closed: false,
        stats: false,
    };
    let limits = Limits { max_item_size };
    // What `Processed::need` promises, and what the worker bounds its read buffer by.
    let need_bound = max_item_size + 24 + KEY_MAX + 64;
    assert_eq!(limits.max_request(), need_bound, "Limits::max_request");
    let read_max = need_bound.max(READ_CAPACITY);
    // One request's response in scratch: a multi-get line answered whole (at most MAX_LINE
    // bytes: a longer one stops at the high mark between two keys) of one-byte keys, each hit a
    // header and a value just under the flatten threshold, on top of a buffer at its high mark.
    let scratch_bound = high
        + hard_limit.unwrap_or(0)
        + (MAX_LINE / 2 + 1) * (KEY_MAX + 64 + DEFAULT_FLATTEN_THRESHOLD)
        + 64 * 1024;

    let store = Arc::new(Store::new(MEMORY_LIMIT, max_item_size));
    let mut session = Session::new(store.clone(), Arc::new(Stats::new(1)), limits);
    let mut rb = ReadBuffer::with_block_size(READ_CAPACITY);
    rb.set_max_len(read_max);
    let chunk = rng.as_mut().map_or(16 * 1024, |r| 1 + r.upto(16 * 1024));
    let mut wb = WriteBuffer::with_block_size(chunk);
    wb.set_watermarks(Some(Watermarks::new(high / 4, high)));
    wb.set_hard_limit(hard_limit);

    let mut need = 0;
    let mut closed = false;
    loop {
        // 1. Every complete request buffered, unless the output is backed up.
        let mut progressed = false;
        let ready = |rb: &ReadBuffer, wb: &WriteBuffer, need: usize| {
            !wb.is_backed_up() && !rb.is_empty() && rb.len() >= need
        };
        let attempted = !closed && ready(&rb, &wb, need);
        if attempted {
            let input = rb.len();
            let done = session.process(rb.data(), &mut wb);
            assert!(
                done.consumed <= input,
                "consumed {} of {input} bytes",
                done.consumed
            );
            assert!(
                done.need <= need_bound,
                "need {} over the bound {need_bound}",
                done.need
            );
            rb.consume(done.consumed);
            progressed = done.consumed > 0;
            if done.close {
                closed = true;
                sent.closed = true;
                rb.clear();
            } else {
                need = done.need.min(read_max);
                let len = rb.len();
                if need > len {
                    rb.reserve(need - len)
                        .expect("the read buffer takes what the session needs");
                }
            }
        }
        wb.check_invariants();

        // 2. A partial write: the kernel takes some of the output (at least a byte when the
        //    loop would otherwise wait for it).
        if !wb.is_empty() {
            let mut n = rng.as_mut().map_or(wb.pending_len(), |r| r.upto(wb.pending_len()));
            if closed || wb.is_backed_up() {
                n = n.max(1);
            }
            let mut left = n;
            for chunk in wb.chunks() {
                let take = left.min(chunk.len());
                sent.record(&chunk[..take]);
                if debug() {
                    eprintln!("sent {:?}", String::from_utf8_lossy(&chunk[..take]));
                }
                left -= take;
                if left == 0 {
                    break;
                }
            }
            wb.advance(n);
        }
        assert!(
            wb.capacity() <= scratch_bound,
            "{} bytes of scratch, over {scratch_bound}",
            wb.capacity()
        );
        assert!(rb.capacity() <= read_max, "read buffer over its limit");
        assert!(
            store.bytes() <= MEMORY_LIMIT,
            "store holds {} bytes, over its limit",
            store.bytes()
        );

        // 3. Read more (unless closing or backed up: the write side must drain first).
        if closed {
            if wb.is_empty() {
                break;
            }
            continue;
        }
        if wb.is_backed_up() {
            continue;
        }
        if peer.is_empty() {
            // Done once the session can take nothing more of what is buffered (after the
            // output drained below the low mark, it gets another try).
            if progressed || (!attempted && ready(&rb, &wb, need)) {
                continue;
            }
            break;
        }
        let size = rng
            .as_mut()
            .map_or(usize::MAX, Rng::read_size)
            .min(peer.len());
        let mut piece = &peer[..size];
        match rb.read_from(&mut piece) {
            Ok(n) => {
                assert!(n > 0, "a read of a non-empty piece returned 0");
                if debug() {
                    eprintln!("read {:?}", String::from_utf8_lossy(&peer[..n]));
                }
                peer = &peer[n..];
            }
            Err(e) => {
                // Only a full buffer refuses: the worker closes the connection then.
                assert_eq!(e.kind(), io::ErrorKind::OutOfMemory, "{e}");
                assert_eq!(rb.len(), read_max, "refused a read below the limit");
                break;
            }
        }
    }
    rb.check_invariants();
    wb.check_invariants();
    // The peer stopped sending: the rest of the output goes out.
    for chunk in wb.chunks() {
        sent.record(chunk);
    }
    wb.clear();
    sent
}
