//! [`Stealable`]: reclaiming an idle connection's buffer storage, safely.

use crate::error::StealError;

/// The way a server reclaims an idle connection's buffer storage into a pool, and how the
/// buffer gets storage back when the connection becomes active again.
///
/// A server with many mostly idle connections calls [`steal`](Self::steal) on a connection's
/// buffers when it looks idle (nothing left to send, no partial request): the storage goes to
/// the buffer's [`Pool`](crate::Pool) (or is freed when it has none), and the buffer takes
/// storage from the pool again the first time it is used. A steal is *refused* while the buffer
/// holds anything that still needs its memory, so a server may attempt it at any point it
/// likes; a refusal only means "not idle yet".
///
/// # Implementer notes
///
/// `steal` **must refuse** while anything is pending: bytes not yet sent or consumed, bytes the
/// kernel still reads (zero-copy sends not yet completed), a partially sent or partially
/// consumed segment of any kind, an open format guard. The decision must rest on the buffer's
/// own checked emptiness (the same `is_empty` that proves every count agrees), never on a
/// separate "idle" flag or a counter kept elsewhere: a flag that some formatting path forgets
/// to update is exactly how a buffer with unsent bytes gets taken from a busy connection and
/// its data corrupted.
///
/// When it refuses, `steal` changes nothing and reports what is pending. When it accepts, the
/// buffer afterwards holds no storage ([`storage_bytes`](Self::storage_bytes) is 0) and is
/// still fully usable. Either way it calls [`Pool::record_steal`](crate::Pool::record_steal)
/// on its pool, if it has one.
///
/// # Examples
///
/// A server sweeping its idle connections:
///
/// ```
/// use std::sync::Arc;
/// use sendbuf::{Stealable, LocalPool, Pool, PoolLimits, ReadBuffer};
///
/// let pool: Arc<dyn Pool> = LocalPool::new(PoolLimits::new());
/// let mut conns: Vec<ReadBuffer> = (0..3).map(|_| ReadBuffer::new().with_pool(pool.clone())).collect();
/// for (i, conn) in conns.iter_mut().enumerate() {
///     conn.read_from(&mut &b"GET /\r\n"[..i + 1]).unwrap();
///     conn.consume(1); // the first connection is now idle, the others hold a partial request
/// }
///
/// let reclaimed: usize = conns
///     .iter_mut()
///     .map(|c| c as &mut dyn Stealable)
///     .filter_map(|c| c.steal().ok())
///     .sum();
/// assert_eq!(reclaimed, 16 * 1024);
/// assert_eq!((pool.stats().stolen, pool.stats().refused), (1, 2));
/// ```
pub trait Stealable {
    /// Hands all the buffer's storage to its pool (or frees it when it has none) if nothing is
    /// pending. Returns the bytes of storage reclaimed (0 if it held none).
    ///
    /// # Errors
    ///
    /// [`StealError`] with the bytes pending and held, if anything is; the buffer is unchanged.
    ///
    /// # Examples
    ///
    /// ```
    /// use sendbuf::{Stealable, ReadBuffer};
    ///
    /// let mut buf = ReadBuffer::with_block_size(4096);
    /// buf.read_from(&mut &b"PING\r\n"[..]).unwrap();
    /// assert_eq!(buf.steal().unwrap_err().pending, 6);
    /// buf.consume(6);
    /// assert_eq!(buf.steal(), Ok(4096));
    /// assert_eq!(buf.capacity(), 0);
    /// ```
    fn steal(&mut self) -> Result<usize, StealError>;

    /// Bytes of storage the buffer holds now (what a successful [`steal`](Self::steal) would
    /// reclaim).
    ///
    /// # Examples
    ///
    /// ```
    /// use sendbuf::{Stealable, ReadBuffer};
    ///
    /// let mut buf = ReadBuffer::with_block_size(1024);
    /// assert_eq!(buf.storage_bytes(), 0); // nothing until the first read
    /// buf.read_from(&mut &b"x"[..]).unwrap();
    /// assert_eq!(buf.storage_bytes(), 1024);
    /// ```
    fn storage_bytes(&self) -> usize;
}
