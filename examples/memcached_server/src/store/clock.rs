//! Server time: a coarse clock each thread reads once per batch, and the wall clock's unix time.

use std::cell::Cell;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Relative expiry times up to this many seconds are offsets from now; larger ones are absolute
/// unix times (memcached's `REALTIME_MAXDELTA`).
pub(super) const REALTIME_MAXDELTA: i64 = 60 * 60 * 24 * 30;

/// This thread's last tick ([`Store::tick`]): the time its requests see.
///
/// [`Store::tick`]: super::Store::tick
#[derive(Debug, Clone, Copy)]
struct Tick {
    /// When it was read.
    at: Instant,
    /// The [`Clock::started`] of the store that read it, and what [`Clock::read`] then
    /// returns for that store, worked out once per tick instead of once per request.
    started: Instant,
    read: (u32, u64),
}

thread_local! {
    static TICK: Cell<Option<Tick>> = const { Cell::new(None) };
}

/// The server's clock, coarse as memcached's: the system clock is read once per
/// [`Store::tick`] (the protocol ticks once per batch of requests) into a thread-local, so a
/// request costs no clock call and the workers share no clock cache line. Seconds since start
/// plus 2 (so that 1 is always in the past, as in memcached); a test can move it forward.
///
/// [`Store::tick`]: super::Store::tick
#[derive(Debug)]
pub(super) struct Clock {
    started: Instant,
    /// Unix time at which server time 0 was.
    pub(super) epoch: i64,
    /// Seconds added by [`Store::advance_clock`].
    ///
    /// [`Store::advance_clock`]: super::Store::advance_clock
    pub(super) skew: AtomicU32,
}

/// Seconds since the Unix epoch, from the wall clock.
///
/// Under Miri, whose isolation has no wall clock, a fixed date: only the monotonic clock moves
/// time forward there, which is all expiry needs.
pub fn unix_now() -> u64 {
    if cfg!(miri) {
        return 1_700_000_000;
    }
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Clock {
    pub(super) fn new() -> Clock {
        let unix = unix_now() as i64;
        Clock {
            started: Instant::now(),
            epoch: unix - 2,
            skew: AtomicU32::new(0),
        }
    }

    pub(super) fn tick(&self) {
        let at = Instant::now();
        let read = self.read_at(at);
        let started = self.started;
        TICK.with(|t| t.set(Some(Tick { at, started, read })));
    }

    pub(super) fn now(&self) -> u32 {
        self.read().0
    }

    /// Server time in seconds and the LRU stamp (nanoseconds since start), as of this
    /// thread's last tick: the figures the tick worked out, if this store ticked last (as in
    /// the server, one store per process), else worked out again from its time.
    #[inline]
    pub(super) fn read(&self) -> (u32, u64) {
        match TICK.with(Cell::get) {
            Some(t) if t.started == self.started && self.skew.load(Ordering::Relaxed) == 0 => {
                t.read
            }
            Some(t) => self.read_at(t.at),
            None => self.read_at(self.started),
        }
    }

    fn read_at(&self, at: Instant) -> (u32, u64) {
        let elapsed = at.saturating_duration_since(self.started);
        let secs = u32::try_from(elapsed.as_secs()).unwrap_or(u32::MAX - 2) + 2;
        let now = secs.saturating_add(self.skew.load(Ordering::Relaxed));
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        (now, nanos)
    }
}
