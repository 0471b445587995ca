//! What the session and the two protocol handlers ([`binary`](crate::binary),
//! [`ascii`](crate::ascii)) share: the limits, the environment a request runs in, the step a
//! handler reports, and the two ways a response is queued.

use std::sync::Arc;

use sendbuf::{HardLimitError, WriteBuffer};

use crate::stats::Stats;
use crate::store::Store;

/// Longest key either protocol accepts (memcached's `KEY_MAX_LENGTH`).
pub const KEY_MAX: usize = 250;

/// Longest ASCII command line without a newline before the connection is closed (memcached's
/// 2048). `get`, `gets`, `gat` and `gats` lines may be of any length: they are answered key
/// by key as they arrive.
pub const MAX_LINE: usize = 2048;

/// Limits of a server, from its command line.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The longest value a client may store (`--max-item-size`).
    pub max_item_size: usize,
}

impl Limits {
    /// The most input bytes one request can need before it can be executed: a binary header,
    /// the longest extras a stored command has, a key and a value.
    /// [`Processed::need`](crate::protocol::Processed::need) never exceeds it.
    pub fn max_request(&self) -> usize {
        self.max_item_size.saturating_add(24 + KEY_MAX + 64)
    }
}

/// The result of looking at the start of the input for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// A request of this many bytes was handled (its response is queued).
    Done(usize),
    /// A request of this many bytes was handled and the next `swallow` bytes of input belong
    /// to its (refused) value and are to be discarded.
    Swallow(usize, u64),
    /// The request is incomplete; it needs this many bytes in total (0 = unknown yet).
    Need(usize),
    /// Close after sending what is queued; `usize` bytes were consumed.
    Close(usize),
    /// A request of which this many bytes were handled goes on later: with more input, or once
    /// the output has drained below its low water mark (a long multi-get).
    Pause(usize),
}

/// What the protocol handlers share: the cache, the counters, the limits.
#[derive(Debug)]
pub struct Env {
    /// The cache.
    pub store: Arc<Store>,
    /// Server counters.
    pub stats: Arc<Stats>,
    /// Server limits.
    pub limits: Limits,
}

/// Queues `bytes` in scratch.
#[inline]
pub fn put(out: &mut WriteBuffer, bytes: &[u8]) -> Result<(), HardLimitError> {
    out.try_put_slice(bytes)
}

/// Queues a value by reference (copied if short).
#[inline]
pub fn pin(out: &mut WriteBuffer, value: Arc<[u8]>) -> Result<(), HardLimitError> {
    out.try_pin(value)
}
