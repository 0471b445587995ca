//! Back-pressure: high/low water marks and a hard limit on what a [`WriteBuffer`] holds.
//!
//! A client that sends requests but never reads makes a server buffer responses without bound.
//! With water marks the server stops reading from a connection whose buffer rose to the high
//! mark and resumes once it drained to the low mark; a hard limit bounds memory even when the
//! server ignores the marks.

use crate::error::HardLimitError;
use crate::write_buffer::WriteBuffer;

/// High and low water marks, in bytes held by a [`WriteBuffer`] (pending plus held by the
/// kernel).
///
/// # Examples
///
/// ```
/// use sendbuf::{Pressure, Watermarks, WriteBuffer};
///
/// let mut buf = WriteBuffer::new();
/// buf.set_watermarks(Some(Watermarks::new(1024, 4096)));
/// buf.put_slice(&[0u8; 5000]);
/// assert!(buf.is_backed_up()); // stop reading requests from this connection
/// assert_eq!(buf.take_pressure_event(), Some(Pressure::High));
/// buf.advance(4000);
/// assert!(!buf.is_backed_up()); // 1000 <= 1024: resume
/// assert_eq!(buf.take_pressure_event(), Some(Pressure::Low));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Watermarks {
    low: usize,
    high: usize,
}

impl Watermarks {
    /// Marks at `low` and `high` bytes: backed up from `len >= high` until `len <= low`.
    ///
    /// # Panics
    ///
    /// If `low > high` or `high == 0`.
    ///
    /// # Examples
    ///
    /// ```
    /// let marks = sendbuf::Watermarks::new(16 * 1024, 256 * 1024);
    /// assert_eq!((marks.low(), marks.high()), (16 * 1024, 256 * 1024));
    /// ```
    pub fn new(low: usize, high: usize) -> Watermarks {
        assert!(
            low <= high && high > 0,
            "water marks need 0 < high and low <= high (low {low}, high {high})"
        );
        Watermarks { low, high }
    }

    /// The low mark.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(sendbuf::Watermarks::new(1, 2).low(), 1);
    /// ```
    pub fn low(&self) -> usize {
        self.low
    }

    /// The high mark.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(sendbuf::Watermarks::new(1, 2).high(), 2);
    /// ```
    pub fn high(&self) -> usize {
        self.high
    }
}

/// A water-mark crossing, reported once by [`WriteBuffer::take_pressure_event`].
///
/// # Examples
///
/// ```
/// use sendbuf::{Pressure, Watermarks, WriteBuffer};
///
/// let mut buf = WriteBuffer::new();
/// buf.set_watermarks(Some(Watermarks::new(0, 10)));
/// buf.put_slice(&[1; 10]);
/// assert_eq!(buf.take_pressure_event(), Some(Pressure::High));
/// assert_eq!(buf.take_pressure_event(), None); // once per crossing
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pressure {
    /// The buffer rose to the high mark: stop reading requests from this connection.
    High,
    /// The buffer drained to the low mark: resume reading.
    Low,
}

/// Per-buffer back-pressure state.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Backpressure {
    marks: Option<Watermarks>,
    /// The held count at which growth raises `High` now: `marks.high` while not backed up,
    /// `usize::MAX` while backed up or without marks. One compare on the hot path.
    high: usize,
    hard_limit: usize,
    /// `min(high, hard_limit + 1)`: growing to less than this passes the hard limit and reaches
    /// no high mark, so the usual commit or pin is one compare ([`grow`](Self::grow)).
    /// Refreshed wherever `high` or `hard_limit` change.
    quiet_below: usize,
    /// Bytes the buffer answered for and no longer does (sent and released), as last learnt:
    /// from [`drained`](Self::drained) while backed up, otherwise only when a growth leaves the
    /// quiet bound ([`grow`](Self::grow)'s cold path), so a copying send that drains a buffer
    /// that is not backed up updates nothing here. It only grows, so a stale value is too low,
    /// never too high.
    gone: u64,
    /// `gone + quiet_below`: the same quiet bound in the units of the queue's total of bytes
    /// ever queued (`bytes_in`). As `gone` it can be stale only on the low side, which sends a
    /// commit to the exact cold path, never past a limit. Refreshed with `quiet_below`.
    quiet_in: u64,
    backed_up: bool,
    event: Option<Pressure>,
}

impl Default for Backpressure {
    fn default() -> Self {
        Backpressure {
            marks: None,
            high: usize::MAX,
            hard_limit: usize::MAX,
            quiet_below: usize::MAX,
            gone: 0,
            quiet_in: u64::MAX,
            backed_up: false,
            event: None,
        }
    }
}

impl Backpressure {
    /// Admits `n > 0` more bytes into a buffer that holds `held` and has queued `bytes_in`
    /// bytes in all: refuses them if they would pass the hard limit (nothing changes then),
    /// and raises `High` if they reach the high mark. Checks both on every call; below both
    /// (the usual case) that is one add and one compare on the queue's own total, without
    /// computing `held`.
    #[inline(always)]
    pub(crate) fn grow(
        &mut self,
        bytes_in: u64,
        held: usize,
        n: usize,
    ) -> Result<(), HardLimitError> {
        debug_assert!(n > 0, "growing by nothing");
        debug_assert!(bytes_in >= self.gone && bytes_in - self.gone >= held as u64);
        // `held = bytes_in - gone_now` with `gone <= gone_now`, so
        // `bytes_in + n < gone + quiet_below` implies `held + n < quiet_below`. The sum does
        // not overflow: it is the queue's `bytes_in` after this commit, a u64 total of bytes
        // that never wraps (the queue counts it the same way).
        if bytes_in + (n as u64) < self.quiet_in {
            Ok(())
        } else {
            self.grow_near_a_limit(bytes_in, held, n)
        }
    }

    /// The exact checks, and the quiet bound brought up to date: `gone` may be stale (too
    /// low) since [`drained`](Self::drained) keeps it only while backed up, and is exactly
    /// `bytes_in - held` now.
    #[cold]
    #[inline(never)]
    fn grow_near_a_limit(
        &mut self,
        bytes_in: u64,
        held: usize,
        n: usize,
    ) -> Result<(), HardLimitError> {
        let gone = bytes_in - held as u64;
        debug_assert!(gone >= self.gone, "bytes gone only grow");
        self.gone = gone;
        self.quiet_in = gone.saturating_add(self.quiet_below as u64);
        self.admit(held, n)?;
        // Admitted, so `held + n <= hard_limit` does not overflow.
        self.grew(n, held + n);
        Ok(())
    }

    /// Sets the hard limit (`usize::MAX`: none).
    pub(crate) fn set_hard_limit(&mut self, limit: usize) {
        self.hard_limit = limit;
        self.refresh();
    }

    fn refresh(&mut self) {
        self.quiet_below = self.high.min(self.hard_limit.saturating_add(1));
        self.quiet_in = self.gone.saturating_add(self.quiet_below as u64);
    }

    /// `added` bytes arrived; the buffer now holds `held`.
    ///
    /// Nothing happens when nothing was added: a crossing needs a change, so an empty commit
    /// cannot raise an event (with equal marks, `held == high == low` would otherwise flip the
    /// state on every empty commit and zero advance).
    #[inline]
    pub(crate) fn grew(&mut self, added: usize, held: usize) {
        if held >= self.high && added != 0 {
            self.rise();
        }
    }

    /// The quiet bound in units of bytes ever queued (for tests).
    #[cfg(test)]
    pub(crate) fn quiet_in(&self) -> u64 {
        self.quiet_in
    }

    /// True when bytes leaving the buffer can raise an event (it is backed up), so the caller
    /// must report them with [`drained`](Self::drained). Otherwise reporting them may be
    /// skipped: the quiet bound then only goes stale on the low side.
    #[inline]
    pub(crate) fn watches_drain(&self) -> bool {
        self.backed_up
    }

    /// `removed` bytes left (sent or released); the buffer now holds `held`, and `gone` bytes
    /// have left it in all. No event when nothing was removed, as for [`grew`](Self::grew).
    #[inline]
    pub(crate) fn drained(&mut self, removed: usize, held: usize, gone: u64) {
        debug_assert!(gone >= self.gone, "bytes gone only grow");
        self.gone = gone;
        self.quiet_in = gone.saturating_add(self.quiet_below as u64);
        if removed != 0 && self.backed_up {
            if let Some(marks) = self.marks {
                if held <= marks.low {
                    self.backed_up = false;
                    self.high = marks.high;
                    self.refresh();
                    self.event = Some(Pressure::Low);
                }
            }
        }
    }

    #[cold]
    fn rise(&mut self) {
        self.backed_up = true;
        self.high = usize::MAX;
        self.refresh();
        self.event = Some(Pressure::High);
    }

    /// New marks (or none) against what the buffer holds now: at or above the high mark it is
    /// backed up, at or below the low mark it is not, in between it keeps its state. Reaching
    /// the high mark wins when both hold (equal marks).
    fn set_marks(&mut self, marks: Option<Watermarks>, held: usize) {
        self.marks = marks;
        let backed_up = match marks {
            None => false,
            Some(m) if held >= m.high => true,
            Some(m) if held <= m.low => false,
            Some(_) => self.backed_up,
        };
        if backed_up != self.backed_up {
            self.backed_up = backed_up;
            self.event = Some(if backed_up {
                Pressure::High
            } else {
                Pressure::Low
            });
        }
        self.high = match marks {
            Some(m) if !backed_up => m.high,
            _ => usize::MAX,
        };
        self.refresh();
    }

    /// Checks that `n` more bytes fit under the hard limit.
    #[inline]
    pub(crate) fn admit(&self, held: usize, n: usize) -> Result<(), HardLimitError> {
        if n > self.hard_limit.saturating_sub(held) {
            return Err(HardLimitError {
                requested: n,
                held,
                limit: self.hard_limit,
            });
        }
        Ok(())
    }
}

impl WriteBuffer {
    /// Sets (or removes) the water marks. The state is re-evaluated at once against what the
    /// buffer holds now: at or above the high mark it is backed up, at or below the low mark it
    /// is not, in between it keeps its state; a change raises its event. Removing the marks
    /// ends a backed-up state (a `Low` event).
    ///
    /// # Examples
    ///
    /// ```
    /// use sendbuf::{Watermarks, WriteBuffer};
    ///
    /// let mut buf = WriteBuffer::new();
    /// buf.put_slice(&[0; 100]);
    /// buf.set_watermarks(Some(Watermarks::new(10, 50)));
    /// assert!(buf.is_backed_up());
    /// ```
    pub fn set_watermarks(&mut self, marks: Option<Watermarks>) {
        let held = self.held_bytes();
        self.backpressure_mut().set_marks(marks, held);
    }

    /// The water marks, if set.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(sendbuf::WriteBuffer::new().watermarks(), None);
    /// ```
    pub fn watermarks(&self) -> Option<Watermarks> {
        self.backpressure().marks
    }

    /// True from the moment the buffer reaches the high mark until it drains to the low mark:
    /// while true, a server should not read more requests from this connection.
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(!sendbuf::WriteBuffer::new().is_backed_up());
    /// ```
    #[inline]
    pub fn is_backed_up(&self) -> bool {
        self.backpressure().backed_up
    }

    /// The last water-mark crossing not yet taken, if any; each crossing is reported once.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(sendbuf::WriteBuffer::new().take_pressure_event(), None);
    /// ```
    #[inline]
    pub fn take_pressure_event(&mut self) -> Option<Pressure> {
        self.backpressure_mut().event.take()
    }

    /// Puts back an event [taken](Self::take_pressure_event) from an earlier buffer: a
    /// [`TlsSession`](crate::TlsSession) making its plaintext queue again.
    #[cfg(feature = "rustls")]
    pub(crate) fn put_back_pressure_event(&mut self, event: Option<Pressure>) {
        if event.is_some() {
            self.backpressure_mut().event = event;
        }
    }

    /// Sets (or removes) a hard limit on the bytes the buffer holds (pending plus held by the
    /// kernel). Past it, [`try_put_slice`](Self::try_put_slice),
    /// [`try_pin`](Self::try_pin) and [`FormatGuard::try_commit`](crate::FormatGuard::try_commit)
    /// return a [`HardLimitError`], and their infallible twins panic.
    ///
    /// # Examples
    ///
    /// ```
    /// let mut buf = sendbuf::WriteBuffer::new();
    /// buf.set_hard_limit(Some(1 << 20));
    /// assert_eq!(buf.hard_limit(), Some(1 << 20));
    /// ```
    pub fn set_hard_limit(&mut self, limit: Option<usize>) {
        self.backpressure_mut()
            .set_hard_limit(limit.unwrap_or(usize::MAX));
    }

    /// The hard limit, if set.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(sendbuf::WriteBuffer::new().hard_limit(), None);
    /// ```
    pub fn hard_limit(&self) -> Option<usize> {
        Some(self.backpressure().hard_limit).filter(|&l| l != usize::MAX)
    }
}
