//! The `memcached_requests` harness: the memcached example's request handling
//! (`examples/memcached_server/{protocol,binary,ascii,store,stats}.rs`) driven the way its worker
//! loop drives it, by a peer that sends arbitrary bytes.
//!
//! Not part of the fuzz crate's library: it uses `crate::protocol`, `crate::store` and
//! `crate::stats`, so the including crate declares those modules at its root (by path), as
//! `fuzz_targets/memcached_requests.rs` does.
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

use std::io;
use std::sync::Arc;

use sendbuf::{ReadBuffer, Watermarks, WriteBuffer, DEFAULT_FLATTEN_THRESHOLD};

use crate::protocol::{Limits, Session, KEY_MAX, MAX_GET_LINE};
use crate::stats::Stats;
use crate::store::Store;

/// Bytes of the input before the stream.
pub const HEADER: usize = 4;

/// `--max-item-size` choices: the default first, then small ones that make the refusal of
/// oversized values (and the swallowing of their bytes) easy to reach.
pub const ITEM_SIZES: [usize; 8] = [
    1024 * 1024,
    1,
    16,
    100,
    1024,
    4096,
    64 * 1024,
    300,
];

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

/// Runs one input (see the module docs); panics on a broken check.
pub fn run(data: &[u8]) {
    if data.len() < HEADER {
        return;
    }
    let (header, mut peer) = data.split_at(HEADER);
    let max_item_size = ITEM_SIZES[usize::from(header[0] & 0x7f) % ITEM_SIZES.len()];
    let high = 64 * (1 + usize::from(header[1]));
    let hard_limit = (header[0] & 0x80 != 0).then_some(2 * high + 4096);
    let mut rng = Rng(0x9e37_79b9 ^ u32::from(u16::from_le_bytes([header[2], header[3]])));

    let limits = Limits { max_item_size };
    // What `Processed::need` promises, and what the worker bounds its read buffer by.
    let need_bound = max_item_size + 24 + KEY_MAX + 64;
    assert_eq!(limits.max_request(), need_bound, "Limits::max_request");
    let read_max = need_bound.max(READ_CAPACITY);
    // One request's response in scratch: a multi-get line of one-byte keys, each hit a header
    // and a value just under the flatten threshold, on top of a buffer at its high mark.
    let scratch_bound = high
        + hard_limit.unwrap_or(0)
        + (MAX_GET_LINE / 2 + 1) * (KEY_MAX + 64 + DEFAULT_FLATTEN_THRESHOLD)
        + 64 * 1024;

    let store = Arc::new(Store::new(MEMORY_LIMIT, max_item_size));
    let mut session = Session::new(store.clone(), Arc::new(Stats::new(1)), limits);
    let mut rb = ReadBuffer::with_capacity(READ_CAPACITY);
    rb.set_max_len(read_max);
    let mut wb = WriteBuffer::with_capacity(1 + rng.upto(16 * 1024));
    wb.set_watermarks(Some(Watermarks::new(high / 4, high)));
    wb.set_hard_limit(hard_limit);

    let mut need = 0;
    let mut closed = false;
    loop {
        // 1. Every complete request buffered, unless the output is backed up.
        let mut progressed = false;
        if !closed && !wb.is_backed_up() && !rb.is_empty() && rb.len() >= need {
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
            let mut n = rng.upto(wb.len());
            if closed || wb.is_backed_up() {
                n = n.max(1);
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
            if progressed {
                continue;
            }
            break;
        }
        let size = rng.read_size().min(peer.len());
        let mut piece = &peer[..size];
        match rb.read_from(&mut piece) {
            Ok(n) => {
                assert!(n > 0, "a read of a non-empty piece returned 0");
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
}
