//! Pools of buffer storage: where a stolen buffer's memory goes, and where a buffer that becomes
//! active again gets memory from.
//!
//! The unit of storage is a `Box<[u8]>`. A pool keeps a bounded free list of them:
//!
//! * at most [`max_buffers`](PoolLimits::max_buffers) buffers; storage given back to a full pool
//!   is freed;
//! * none larger than [`max_buffer_size`](PoolLimits::max_buffer_size) bytes; a buffer that grew
//!   past it (a connection that once received a large request) is freed, not pooled, so one
//!   burst does not pin its peak memory forever.
//!
//! The free list is a stack: the most recently returned buffer, still warm in cache, is handed
//! out first. [`take`](Pool::take) looks at the top few entries only, so its cost does not grow
//! with the pool; buffers in one pool are normally all the same size.
//!
//! Two pools ship: [`LocalPool`], one free list per thread with no lock, for thread-per-core
//! servers; and [`SharedPool`], one free list behind a mutex, for buffers that move between
//! threads.

use core::cell::{Cell, RefCell};
use core::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// How many entries from the top of a free list [`Pool::take`] examines before giving up.
const TAKE_SCAN: usize = 4;

/// A bounded store of buffer storage that buffers take memory from and give it back to.
///
/// Buffers hold a pool as an `Arc<dyn Pool>`: [`ReadBuffer::with_pool`](crate::ReadBuffer::with_pool)
/// takes storage from it on the first read after creation or after a steal, and
/// [`Stealable::steal`](crate::Stealable::steal) gives the storage back.
///
/// # Implementer notes
///
/// * [`take`](Self::take) must return storage of at least `min_len` bytes or `None`, and must
///   never hand the same storage out twice. It is called on the I/O path: keep it short (no
///   scan of the whole pool, no blocking beyond a short critical section).
/// * [`give`](Self::give) must keep the pool bounded: free storage it does not keep.
/// * The bytes in pooled storage are whatever its previous user left there. Buffers must never
///   expose bytes they did not write themselves (the crate's buffers do not).
/// * Counters are for reporting; keep them exact (each call counts once, in exactly one
///   counter) so a server can reconcile them.
///
/// # Examples
///
/// ```
/// use sendbuf::{Pool, PoolLimits, SharedPool};
///
/// let pool = SharedPool::new(PoolLimits::new());
/// assert!(pool.take(4096).is_none()); // empty: the caller allocates
/// pool.give(vec![0u8; 4096].into_boxed_slice());
/// let storage = pool.take(4096).unwrap();
/// assert_eq!(storage.len(), 4096);
/// assert_eq!(pool.stats().taken, 1);
/// ```
pub trait Pool: Send + Sync + fmt::Debug {
    /// Storage of at least `min_len` bytes, if the pool has one (counts
    /// [`taken`](PoolStats::taken)); `None` means the caller allocates.
    ///
    /// # Examples
    ///
    /// ```
    /// use sendbuf::{Pool, PoolLimits, SharedPool};
    ///
    /// let pool = SharedPool::new(PoolLimits::new());
    /// pool.give(vec![0u8; 1024].into_boxed_slice());
    /// assert!(pool.take(2048).is_none()); // too small
    /// assert_eq!(pool.take(512).unwrap().len(), 1024);
    /// ```
    fn take(&self, min_len: usize) -> Option<Box<[u8]>>;

    /// Takes storage back from a buffer: keeps it (counts [`returned`](PoolStats::returned))
    /// or, if the pool is full, the storage is larger than
    /// [`max_buffer_size`](PoolLimits::max_buffer_size) or it is empty, frees it (counts
    /// [`freed`](PoolStats::freed)).
    ///
    /// # Examples
    ///
    /// ```
    /// use sendbuf::{Pool, PoolLimits, SharedPool};
    ///
    /// let pool = SharedPool::new(PoolLimits::new().with_max_buffer_size(4096));
    /// pool.give(vec![0u8; 4096].into_boxed_slice());
    /// pool.give(vec![0u8; 4097].into_boxed_slice()); // oversized: freed
    /// let stats = pool.stats();
    /// assert_eq!((stats.returned, stats.freed, stats.pooled), (1, 1, 1));
    /// ```
    fn give(&self, storage: Box<[u8]>);

    /// Records a steal attempted on a buffer that uses this pool: accepted (counts
    /// [`stolen`](PoolStats::stolen)) or refused because data was pending (counts
    /// [`refused`](PoolStats::refused)). Buffers call it from
    /// [`Stealable::steal`](crate::Stealable::steal).
    ///
    /// # Examples
    ///
    /// ```
    /// use sendbuf::{Pool, PoolLimits, SharedPool};
    ///
    /// let pool = SharedPool::new(PoolLimits::new());
    /// pool.record_steal(true);
    /// pool.record_steal(false);
    /// assert_eq!((pool.stats().stolen, pool.stats().refused), (1, 1));
    /// ```
    fn record_steal(&self, accepted: bool);

    /// The pool's counters and the number of buffers it holds now.
    ///
    /// # Examples
    ///
    /// ```
    /// use sendbuf::{Pool, PoolLimits, PoolStats, SharedPool};
    ///
    /// let pool = SharedPool::new(PoolLimits::new());
    /// assert_eq!(pool.stats(), PoolStats::default());
    /// ```
    fn stats(&self) -> PoolStats;
}

/// Bounds on what a pool keeps: how many buffers, and how large a buffer it takes back.
///
/// The default keeps up to 1024 buffers of up to 64 KiB each (64 MiB at most).
///
/// # Examples
///
/// ```
/// use sendbuf::PoolLimits;
///
/// let limits = PoolLimits::new().with_max_buffers(256).with_max_buffer_size(16 * 1024);
/// assert_eq!(limits.max_buffers(), 256);
/// assert_eq!(limits.max_buffer_size(), 16 * 1024);
/// assert_eq!(PoolLimits::default().max_buffers(), 1024);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolLimits {
    max_buffers: usize,
    max_buffer_size: usize,
}

impl PoolLimits {
    /// The default limits: 1024 buffers of up to 64 KiB.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(sendbuf::PoolLimits::new(), sendbuf::PoolLimits::default());
    /// ```
    pub const fn new() -> PoolLimits {
        PoolLimits {
            max_buffers: 1024,
            max_buffer_size: 64 * 1024,
        }
    }

    /// Keep at most `n` buffers; 0 makes a pool that frees everything given to it.
    ///
    /// # Examples
    ///
    /// ```
    /// let limits = sendbuf::PoolLimits::new().with_max_buffers(8);
    /// assert_eq!(limits.max_buffers(), 8);
    /// ```
    #[must_use]
    pub const fn with_max_buffers(self, n: usize) -> PoolLimits {
        PoolLimits {
            max_buffers: n,
            ..self
        }
    }

    /// Free, rather than keep, any buffer larger than `bytes`.
    ///
    /// # Examples
    ///
    /// ```
    /// let limits = sendbuf::PoolLimits::new().with_max_buffer_size(4096);
    /// assert_eq!(limits.max_buffer_size(), 4096);
    /// ```
    #[must_use]
    pub const fn with_max_buffer_size(self, bytes: usize) -> PoolLimits {
        PoolLimits {
            max_buffer_size: bytes,
            ..self
        }
    }

    /// The most buffers a pool keeps.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(sendbuf::PoolLimits::new().max_buffers(), 1024);
    /// ```
    pub const fn max_buffers(&self) -> usize {
        self.max_buffers
    }

    /// The largest buffer, in bytes, a pool keeps.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(sendbuf::PoolLimits::new().max_buffer_size(), 64 * 1024);
    /// ```
    pub const fn max_buffer_size(&self) -> usize {
        self.max_buffer_size
    }

    /// Whether storage of `len` bytes given to a free list holding `pooled` buffers is kept.
    #[inline]
    fn keeps(&self, pooled: usize, len: usize) -> bool {
        len != 0 && len <= self.max_buffer_size && pooled < self.max_buffers
    }
}

impl Default for PoolLimits {
    fn default() -> PoolLimits {
        PoolLimits::new()
    }
}

/// What a pool has done, for a server to report.
///
/// Every [`take`](Pool::take) that returns storage counts in `taken`; every
/// [`give`](Pool::give) counts in exactly one of `returned` and `freed`; every
/// [`record_steal`](Pool::record_steal) in exactly one of `stolen` and `refused`.
///
/// # Examples
///
/// ```
/// use sendbuf::{Pool, PoolLimits, SharedPool};
///
/// let pool = SharedPool::new(PoolLimits::new().with_max_buffers(1));
/// pool.give(vec![0u8; 64].into_boxed_slice());
/// pool.give(vec![0u8; 64].into_boxed_slice()); // full: freed
/// let s = pool.stats();
/// assert_eq!((s.returned, s.freed, s.pooled), (1, 1, 1));
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Storage handed out by `take`.
    pub taken: u64,
    /// Storage given back and kept.
    pub returned: u64,
    /// Steals accepted on buffers using this pool.
    pub stolen: u64,
    /// Steals refused because the buffer had data pending.
    pub refused: u64,
    /// Storage given back and freed: the pool was full, or the storage was oversized or empty.
    pub freed: u64,
    /// Buffers held in the pool now.
    pub pooled: usize,
}

/// Removes and returns storage of at least `min_len` bytes from the top [`TAKE_SCAN`] entries.
#[inline]
fn take_from(free: &mut Vec<Box<[u8]>>, min_len: usize) -> Option<Box<[u8]>> {
    let top = free.len();
    let found = (top.saturating_sub(TAKE_SCAN)..top)
        .rev()
        .find(|&i| free[i].len() >= min_len)?;
    Some(free.swap_remove(found))
}

/// A pool shared between threads: one free list behind a mutex held only to push or pop.
///
/// # Examples
///
/// ```
/// use std::thread;
/// use sendbuf::{Pool, PoolLimits, SharedPool};
///
/// let pool = SharedPool::new(PoolLimits::new());
/// let p = pool.clone();
/// thread::spawn(move || p.give(vec![0u8; 4096].into_boxed_slice()))
///     .join()
///     .unwrap();
/// assert_eq!(pool.take(4096).map(|s| s.len()), Some(4096)); // given on another thread
/// ```
pub struct SharedPool {
    limits: PoolLimits,
    free: Mutex<Vec<Box<[u8]>>>,
    taken: AtomicU64,
    returned: AtomicU64,
    stolen: AtomicU64,
    refused: AtomicU64,
    freed: AtomicU64,
}

impl SharedPool {
    /// An empty pool with the given limits, ready to share.
    ///
    /// # Examples
    ///
    /// ```
    /// use sendbuf::{Pool, PoolLimits, SharedPool};
    ///
    /// let pool = SharedPool::new(PoolLimits::new().with_max_buffers(64));
    /// assert_eq!(pool.limits().max_buffers(), 64);
    /// assert_eq!(pool.stats().pooled, 0);
    /// ```
    pub fn new(limits: PoolLimits) -> Arc<SharedPool> {
        Arc::new(SharedPool {
            limits,
            free: Mutex::new(Vec::new()),
            taken: AtomicU64::new(0),
            returned: AtomicU64::new(0),
            stolen: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            freed: AtomicU64::new(0),
        })
    }

    /// The limits the pool was created with.
    ///
    /// # Examples
    ///
    /// ```
    /// use sendbuf::{PoolLimits, SharedPool};
    /// assert_eq!(SharedPool::new(PoolLimits::new()).limits(), PoolLimits::new());
    /// ```
    pub fn limits(&self) -> PoolLimits {
        self.limits
    }

    fn free_list(&self) -> MutexGuard<'_, Vec<Box<[u8]>>> {
        // Nothing panics while the lock is held, and a free list is valid in any state anyway.
        self.free.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Pool for SharedPool {
    fn take(&self, min_len: usize) -> Option<Box<[u8]>> {
        let storage = take_from(&mut self.free_list(), min_len)?;
        self.taken.fetch_add(1, Ordering::Relaxed);
        Some(storage)
    }

    fn give(&self, storage: Box<[u8]>) {
        if self.limits.keeps(0, storage.len()) {
            let mut free = self.free_list();
            if self.limits.keeps(free.len(), storage.len()) {
                free.push(storage);
                drop(free);
                self.returned.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
        // The lock is released by now: free the memory outside it.
        drop(storage);
        self.freed.fetch_add(1, Ordering::Relaxed);
    }

    fn record_steal(&self, accepted: bool) {
        let counter = if accepted {
            &self.stolen
        } else {
            &self.refused
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn stats(&self) -> PoolStats {
        PoolStats {
            taken: self.taken.load(Ordering::Relaxed),
            returned: self.returned.load(Ordering::Relaxed),
            stolen: self.stolen.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
            freed: self.freed.load(Ordering::Relaxed),
            pooled: self.free_list().len(),
        }
    }
}

impl fmt::Debug for SharedPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedPool")
            .field("limits", &self.limits)
            .field("stats", &self.stats())
            .finish()
    }
}

/// One thread's free list and counters, shared by every [`LocalPool`] handle used on it.
struct LocalFree {
    free: RefCell<Vec<Box<[u8]>>>,
    taken: Cell<u64>,
    returned: Cell<u64>,
    stolen: Cell<u64>,
    refused: Cell<u64>,
    freed: Cell<u64>,
}

impl LocalFree {
    const fn new() -> LocalFree {
        LocalFree {
            free: RefCell::new(Vec::new()),
            taken: Cell::new(0),
            returned: Cell::new(0),
            stolen: Cell::new(0),
            refused: Cell::new(0),
            freed: Cell::new(0),
        }
    }
}

fn bump(counter: &Cell<u64>) {
    counter.set(counter.get() + 1);
}

thread_local! {
    static LOCAL: LocalFree = const { LocalFree::new() };
}

/// A per-thread pool that needs no lock, for servers that keep each connection on one thread.
///
/// The free list and the counters live in thread-local storage; a `LocalPool` value is only a
/// small handle carrying the [limits](PoolLimits), so it is `Send + Sync` and fits in an
/// `Arc<dyn Pool>` like any other pool. Consequences to keep in mind:
///
/// * **All `LocalPool` handles on one thread share that thread's free list and counters.**
///   Two handles with different limits each apply their own limits to what they take and give;
///   [`stats`](Pool::stats) reports the calling thread's totals whichever handle asks.
/// * Storage given back on another thread goes to *that* thread's free list (still bounded by
///   the handle's limits), and a buffer used on another thread takes from that thread's list.
///   Nothing is lost or shared unsafely; memory just stays where it was given back.
/// * A thread's pooled storage is freed when the thread exits. During thread exit (after its
///   thread-local storage is gone) `take` returns `None` and `give` frees without counting.
///
/// # Examples
///
/// ```
/// use std::thread;
/// use sendbuf::{LocalPool, Pool, PoolLimits};
///
/// let pool = LocalPool::new(PoolLimits::new());
/// pool.give(vec![0u8; 4096].into_boxed_slice());
/// assert_eq!(pool.stats().pooled, 1);
///
/// // Another thread has its own, empty, free list.
/// let p = pool.clone();
/// thread::spawn(move || assert!(p.take(4096).is_none())).join().unwrap();
///
/// assert!(pool.take(4096).is_some());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalPool {
    limits: PoolLimits,
}

impl LocalPool {
    /// A handle to the calling thread's free list (and to each thread's own free list when used
    /// there), applying `limits`.
    ///
    /// # Examples
    ///
    /// ```
    /// use sendbuf::{LocalPool, Pool, PoolLimits};
    ///
    /// let pool = LocalPool::new(PoolLimits::new().with_max_buffers(16));
    /// assert_eq!(pool.limits().max_buffers(), 16);
    /// assert_eq!(pool.stats().pooled, 0);
    /// ```
    pub fn new(limits: PoolLimits) -> Arc<LocalPool> {
        Arc::new(LocalPool { limits })
    }

    /// The limits this handle applies.
    ///
    /// # Examples
    ///
    /// ```
    /// use sendbuf::{LocalPool, PoolLimits};
    /// assert_eq!(LocalPool::new(PoolLimits::new()).limits(), PoolLimits::new());
    /// ```
    pub fn limits(&self) -> PoolLimits {
        self.limits
    }
}

impl Pool for LocalPool {
    fn take(&self, min_len: usize) -> Option<Box<[u8]>> {
        LOCAL
            .try_with(|local| {
                let storage = take_from(&mut local.free.borrow_mut(), min_len)?;
                bump(&local.taken);
                Some(storage)
            })
            .ok()
            .flatten()
    }

    fn give(&self, storage: Box<[u8]>) {
        let _ = LOCAL.try_with(move |local| {
            let mut free = local.free.borrow_mut();
            if self.limits.keeps(free.len(), storage.len()) {
                free.push(storage);
                bump(&local.returned);
            } else {
                drop(free);
                drop(storage);
                bump(&local.freed);
            }
        });
    }

    fn record_steal(&self, accepted: bool) {
        let _ = LOCAL.try_with(|local| {
            bump(if accepted {
                &local.stolen
            } else {
                &local.refused
            });
        });
    }

    fn stats(&self) -> PoolStats {
        LOCAL
            .try_with(|local| PoolStats {
                taken: local.taken.get(),
                returned: local.returned.get(),
                stolen: local.stolen.get(),
                refused: local.refused.get(),
                freed: local.freed.get(),
                pooled: local.free.borrow().len(),
            })
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::thread;

    fn storage(len: usize) -> Box<[u8]> {
        vec![0u8; len].into_boxed_slice()
    }

    /// Runs `f` on a new thread, so the thread-local free list starts empty whatever the test
    /// harness does with its own threads.
    fn on_fresh_thread(f: impl FnOnce() + Send + 'static) {
        thread::spawn(f).join().unwrap();
    }

    /// The same checks for both pools: bounds, reuse by pointer, exact counters.
    fn bounds_and_reuse(pool: &dyn Pool) {
        let a = storage(100);
        let a_ptr = a.as_ptr();
        pool.give(a);
        pool.give(storage(100));
        pool.give(storage(100)); // third: the pool is full
        pool.give(storage(101)); // oversized
        pool.give(storage(0)); // nothing worth keeping
        assert_eq!(
            pool.stats(),
            PoolStats {
                returned: 2,
                freed: 3,
                pooled: 2,
                ..PoolStats::default()
            }
        );

        assert!(pool.take(101).is_none(), "no buffer is that large");
        let b = pool.take(10).unwrap();
        assert_eq!(b.len(), 100);
        let c = pool.take(100).unwrap();
        assert_ne!(b.as_ptr(), c.as_ptr());
        assert!(
            b.as_ptr() == a_ptr || c.as_ptr() == a_ptr,
            "the pooled allocation is handed out again"
        );
        assert!(pool.take(0).is_none(), "empty");
        pool.record_steal(true);
        pool.record_steal(false);
        pool.record_steal(false);
        assert_eq!(
            pool.stats(),
            PoolStats {
                taken: 2,
                returned: 2,
                stolen: 1,
                refused: 2,
                freed: 3,
                pooled: 0,
            }
        );
    }

    fn limits() -> PoolLimits {
        PoolLimits::new()
            .with_max_buffers(2)
            .with_max_buffer_size(100)
    }

    #[test]
    fn shared_pool_bounds_reuse_and_counters() {
        bounds_and_reuse(&*SharedPool::new(limits()));
    }

    #[test]
    fn local_pool_bounds_reuse_and_counters() {
        on_fresh_thread(|| bounds_and_reuse(&*LocalPool::new(limits())));
    }

    #[test]
    fn take_returns_the_most_recently_given() {
        let pool = SharedPool::new(PoolLimits::new());
        let first = storage(64);
        let second = storage(64);
        let second_ptr = second.as_ptr();
        pool.give(first);
        pool.give(second);
        let back = pool.take(64).unwrap();
        assert_eq!(back.as_ptr(), second_ptr);
    }

    #[test]
    fn take_scans_only_the_top_of_the_free_list() {
        let pool = SharedPool::new(PoolLimits::new());
        pool.give(storage(1000));
        for _ in 0..TAKE_SCAN {
            pool.give(storage(10));
        }
        assert!(
            pool.take(1000).is_none(),
            "the large buffer is below the scan window"
        );
        pool.take(10).unwrap();
        assert_eq!(pool.take(1000).unwrap().len(), 1000);
    }

    #[test]
    fn zero_max_buffers_keeps_nothing() {
        let pool = SharedPool::new(PoolLimits::new().with_max_buffers(0));
        pool.give(storage(8));
        assert_eq!((pool.stats().freed, pool.stats().pooled), (1, 0));
    }

    #[test]
    fn local_pool_handles_on_one_thread_share_the_free_list() {
        on_fresh_thread(|| {
            let a = LocalPool::new(PoolLimits::new());
            let b = LocalPool::new(PoolLimits::new().with_max_buffers(1));
            a.give(storage(32));
            assert_eq!(b.stats().pooled, 1);
            b.give(storage(32)); // b's own limit: one buffer
            assert_eq!(b.stats().freed, 1);
            a.give(storage(32)); // a's limit allows more
            assert_eq!(a.stats().pooled, 2);
            assert!(b.take(32).is_some());
            assert_eq!(a.stats().taken, 1);
        });
    }

    #[test]
    fn pools_are_send_and_sync() {
        static_assertions::assert_impl_all!(SharedPool: Send, Sync);
        static_assertions::assert_impl_all!(LocalPool: Send, Sync);
        static_assertions::assert_obj_safe!(Pool);
    }
}
