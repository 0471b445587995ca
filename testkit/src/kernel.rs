//! A fake kernel for `MSG_ZEROCOPY` sends, with no system call (so it runs under Miri): it
//! answers [`ZeroCopy::send_with`], gives each zero-copy send the next value of its 32-bit
//! counter (starting anywhere, wrapping at `u32::MAX`), keeps "reading" each such send's memory
//! until it reports the send complete, and reports completions as the real one does (in order,
//! coalesced into ranges, flagged copied or not) and beyond (early, stale, overlapping values
//! already reported).
//!
//! It copies nothing it is given: it keeps the iovecs' addresses, and when it reports a send
//! complete it compares the memory there with the bytes it accepted. A buffer that reused held
//! scratch or dropped a held value before that fails the comparison (or, under AddressSanitizer
//! in the fuzzer, the read itself; under Miri, a read through an invalidated pointer).
//!
//! It also keeps what the [`ZeroCopy`] driven by it must say ([`Kernel::check`]): the counter,
//! the outstanding sends, whether zero copy was asked for, and every statistic. It knows
//! nothing of the buffer's segments: a caller's model learns from each [`Sent`] which stream
//! bytes are held, and from [`Kernel::through`] which are released.
//!
//! Shared by the `partial_writes` model (`model.rs`) and `tests/prop_zerocopy.rs`.

use std::io::{self, IoSlice};

use sendbuf::{WriteBuffer, ZeroCopy, ZeroCopyStats};

/// The most iovecs `ZeroCopy::send_with` offers in one call (Linux's `IOV_MAX`).
const IOV_MAX: usize = 1024;

/// How the fake kernel answers one `sendmsg`.
#[derive(Debug, Clone, Copy)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum Answer {
    /// Accepts `n % (offered + 1)` bytes (so sometimes none, sometimes all).
    Accept(u32),
    /// Accepts everything offered.
    All,
    /// `EAGAIN`.
    WouldBlock,
    /// `ENOBUFS` to a zero-copy attempt, then accepts `n % (offered + 1)` bytes copying.
    NoBufs(u32),
    /// Accepts everything but claims one byte more (`InvalidData`, nothing changes).
    OverReport,
}

/// Which completion the fake kernel reports.
#[derive(Debug, Clone, Copy)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum Report {
    /// The oldest `1 + k % unreported` unreported sends with consecutive counter values, as one
    /// range: what TCP does.
    InOrder { k: u8, copied: bool },
    /// As `InOrder`, but the range starts `1 + back % 4` values earlier, at values already
    /// reported (or never used): those must be ignored, the rest applied.
    Overlapping { back: u8, k: u8, copied: bool },
    /// A run of `1 + len % 3` unreported sends starting at a random one: out of order.
    Early { pick: u8, len: u8, copied: bool },
    /// One value already reported, or never handed out: must release nothing.
    Stale { back: u8, copied: bool },
}

impl Report {
    /// Everything outstanding, in order, not copied: how a connection winds down.
    pub const ALL: Report = Report::InOrder {
        k: u8::MAX,
        copied: false,
    };
}

/// What one send did, for the caller's model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    /// Bytes the kernel accepted (advanced past).
    pub n: usize,
    /// They were sent zero-copy (and `n > 0`): held under the next counter value until its
    /// completion. Otherwise they were copied, and are released on sending.
    pub zero_copy: bool,
}

/// A zero-copy send the fake kernel accepted.
#[derive(Debug)]
pub struct ZcSend {
    pub id: u32,
    /// Stream offsets of its first byte and just past its last.
    pub start: u64,
    pub end: u64,
    pub reported: bool,
    /// The memory it reads until its completion: the accepted prefix of the iovecs.
    spans: Vec<(*const u8, usize)>,
    /// What that memory held when the send was made.
    bytes: Vec<u8>,
}

/// The fake kernel of one socket, and what its [`ZeroCopy`] must look like.
#[derive(Debug)]
pub struct Kernel {
    /// Zero-copy sends, oldest first.
    sends: Vec<ZcSend>,
    /// `sends[..done]` are all reported.
    done: usize,
    /// Stream offset just past the last of `sends[..done]`: the kernel reads nothing before it.
    through: u64,
    next_id: u32,
    enabled: bool,
    threshold: usize,
    stop_when_copied: bool,
    copied: bool,
    stats: ZeroCopyStats,
}

impl Kernel {
    /// A socket whose next zero-copy send gets counter value `next_id`, and its [`ZeroCopy`]:
    /// `assume_enabled(next_id)` when `enabled`, else `ZeroCopy::new()` (whose `send_with`
    /// always copies; `record_send` may still claim zero copy).
    pub fn new(
        enabled: bool,
        next_id: u32,
        threshold: usize,
        stop_when_copied: bool,
    ) -> (Kernel, ZeroCopy) {
        let mut zc = if enabled {
            ZeroCopy::assume_enabled(next_id)
        } else {
            ZeroCopy::new()
        };
        zc.set_threshold(threshold);
        zc.set_stop_when_copied(stop_when_copied);
        let kernel = Kernel {
            sends: Vec::new(),
            done: 0,
            through: 0,
            // `ZeroCopy::new()` counts from 0.
            next_id: if enabled { next_id } else { 0 },
            enabled,
            threshold,
            stop_when_copied,
            copied: false,
            stats: ZeroCopyStats::default(),
        };
        (kernel, zc)
    }

    /// `zc.set_threshold(bytes)`, mirrored.
    pub fn set_threshold(&mut self, zc: &mut ZeroCopy, bytes: usize) {
        zc.set_threshold(bytes);
        self.threshold = bytes;
    }

    /// The stream offset before which the kernel reads nothing: every zero-copy send ending
    /// there or earlier, and every older one, is reported. The buffer releases in that order.
    pub fn through(&self) -> u64 {
        self.through
    }

    /// Zero-copy sends not yet reported complete.
    pub fn unreported(&self) -> usize {
        self.sends[self.done..]
            .iter()
            .filter(|s| !s.reported)
            .count()
    }

    /// Whether an unreported zero-copy send reads any of the stream bytes `start..end`.
    pub fn reads(&self, start: u64, end: u64) -> bool {
        self.sends[self.done..]
            .iter()
            .any(|s| !s.reported && s.start < end && start < s.end)
    }

    /// The end of the last zero-copy send that read any of the stream bytes `start..end`.
    pub fn last_reader_end(&self, start: u64, end: u64) -> Option<u64> {
        self.sends
            .iter()
            .rfind(|s| s.start < end && start < s.end)
            .map(|s| s.end)
    }

    fn would_zero_copy(&self, offered: usize) -> bool {
        self.enabled && offered >= self.threshold && !(self.copied && self.stop_when_copied)
    }

    /// One `zc.send_with(buf, ..)`, answered as `answer` says. `sent` is the stream offset of
    /// the first pending byte and `pending` the pending bytes, as the caller's model has them:
    /// the iovecs offered must be exactly their front. Checks that zero copy is asked for
    /// exactly when it should be (and retried copying after `ENOBUFS`), and what `send_with`
    /// returns. `None` if the send failed (`EAGAIN`, a send claiming too much): nothing changed.
    pub fn send(
        &mut self,
        zc: &mut ZeroCopy,
        buf: &mut WriteBuffer,
        sent: u64,
        pending: &[u8],
        answer: Answer,
    ) -> Option<Sent> {
        let len = buf.pending_len();
        let segments = buf.segments();
        let mut calls = Vec::new();
        let mut offered = 0;
        let mut spans = Vec::new();
        let result = zc.send_with(buf, |iov, zero_copy| {
            assert_eq!(iov.len(), segments.min(IOV_MAX), "iovecs offered");
            offered = iov.iter().map(|s| s.len()).sum();
            let mut at = 0;
            for (i, s) in iov.iter().enumerate() {
                assert!(
                    at + s.len() <= pending.len() && **s == pending[at..at + s.len()],
                    "iovec {i} offered is not the pending bytes {at}..{}",
                    at + s.len()
                );
                at += s.len();
            }
            calls.push(zero_copy);
            let take = match answer {
                Answer::WouldBlock => return Err(io::ErrorKind::WouldBlock.into()),
                Answer::NoBufs(_) if zero_copy => {
                    return Err(io::Error::from_raw_os_error(libc::ENOBUFS))
                }
                Answer::All => offered,
                Answer::OverReport => return Ok(offered + 1),
                Answer::Accept(n) | Answer::NoBufs(n) => n as usize % (offered + 1),
            };
            spans = prefix(iov, take);
            Ok(take)
        });
        if len == 0 {
            assert!(calls.is_empty(), "a send with nothing pending made a call");
            assert_eq!(result.ok(), Some(0), "send_with with nothing pending");
            return Some(Sent {
                n: 0,
                zero_copy: false,
            });
        }
        let expect_zc = self.would_zero_copy(offered);
        match answer {
            Answer::NoBufs(_) if expect_zc => {
                assert_eq!(calls, [true, false], "ENOBUFS is retried as a copying send");
                self.stats.enobufs += 1;
            }
            _ => assert_eq!(calls, [expect_zc], "zero copy asked for wrongly"),
        }
        match (result, answer) {
            (Ok(n), _) => {
                let expected = match answer {
                    Answer::All => offered,
                    Answer::Accept(k) | Answer::NoBufs(k) => k as usize % (offered + 1),
                    Answer::WouldBlock | Answer::OverReport => unreachable!("these fail"),
                };
                assert_eq!(n, expected, "send_with's return");
                let zero_copy = *calls.last().expect("one call at least");
                Some(self.account(sent, pending, n, zero_copy, spans))
            }
            (Err(e), Answer::WouldBlock) => {
                assert_eq!(e.kind(), io::ErrorKind::WouldBlock, "send_with: {e}");
                None
            }
            (Err(e), Answer::OverReport) => {
                assert_eq!(e.kind(), io::ErrorKind::InvalidData, "send_with: {e}");
                None
            }
            (Err(e), _) => panic!("send_with failed: {e}"),
        }
    }

    /// `zc.record_send(buf, n, zero_copy)` for a send the caller made itself (`n <= len`).
    pub fn record(
        &mut self,
        zc: &mut ZeroCopy,
        buf: &mut WriteBuffer,
        sent: u64,
        pending: &[u8],
        n: usize,
        zero_copy: bool,
    ) -> Sent {
        let spans = prefix(buf.io_slices(), n);
        assert_eq!(
            zc.record_send(buf, n, zero_copy),
            Ok(()),
            "record_send({n})"
        );
        self.account(sent, pending, n, zero_copy, spans)
    }

    fn account(
        &mut self,
        sent: u64,
        pending: &[u8],
        n: usize,
        zero_copy: bool,
        spans: Vec<(*const u8, usize)>,
    ) -> Sent {
        if zero_copy && n > 0 {
            self.sends.push(ZcSend {
                id: self.next_id,
                start: sent,
                end: sent + n as u64,
                reported: false,
                spans,
                bytes: pending[..n].to_vec(),
            });
            self.next_id = self.next_id.wrapping_add(1);
            self.stats.zero_copy_sends += 1;
            Sent { n, zero_copy: true }
        } else {
            self.stats.copying_sends += 1;
            Sent {
                n,
                zero_copy: false,
            }
        }
    }

    /// Reports the completion `report` says (after reading the memory of the sends it newly
    /// covers a last time) with `zc.complete`, and checks what was ignored. Returns the bytes
    /// `complete` says it released, for the caller's model to check; `None` when there was
    /// nothing to report (no unreported send for `InOrder`, `Overlapping`, `Early`).
    pub fn complete(
        &mut self,
        zc: &mut ZeroCopy,
        buf: &mut WriteBuffer,
        report: Report,
    ) -> Option<usize> {
        let unreported: Vec<usize> = (self.done..self.sends.len())
            .filter(|&i| !self.sends[i].reported)
            .collect();
        // Indices of the consecutive unreported sends from `first`, at most `take`.
        let run = |first: usize, take: usize| -> Vec<usize> {
            (first..self.sends.len())
                .take_while(|&i| !self.sends[i].reported)
                .take(take)
                .collect()
        };
        let (lo, hi, copied, covered) = match report {
            Report::InOrder { k, copied } | Report::Overlapping { k, copied, .. } => {
                let &first = unreported.first()?;
                let covered = run(first, 1 + k as usize % unreported.len());
                let back = match report {
                    Report::Overlapping { back, .. } => 1 + u32::from(back) % 4,
                    _ => 0,
                };
                let last = *covered.last().expect("a run of one at least");
                let lo = self.sends[first].id.wrapping_sub(back);
                (lo, self.sends[last].id, copied, covered)
            }
            Report::Early { pick, len, copied } => {
                let first = *unreported.get(pick as usize % unreported.len().max(1))?;
                let covered = run(first, 1 + len as usize % 3);
                let last = *covered.last().expect("a run of one at least");
                (self.sends[first].id, self.sends[last].id, copied, covered)
            }
            Report::Stale { back, copied } => {
                let reported: Vec<u32> = self
                    .sends
                    .iter()
                    .filter(|s| s.reported)
                    .map(|s| s.id)
                    .collect();
                let id = if reported.is_empty() || back % 2 == 0 {
                    self.next_id.wrapping_add(u32::from(back))
                } else {
                    reported[back as usize % reported.len()]
                };
                (id, id, copied, Vec::new())
            }
        };
        for &i in &covered {
            let s = &mut self.sends[i];
            kernel_reads(s);
            s.reported = true;
        }
        while self.sends.get(self.done).is_some_and(|s| s.reported) {
            self.through = self.sends[self.done].end;
            self.done += 1;
        }
        let count = u64::from(hi.wrapping_sub(lo)) + 1;
        self.stats.completions += 1;
        self.stats.ignored += count - covered.len() as u64;
        if copied {
            self.stats.copied += 1;
            self.copied = true;
        }
        Some(zc.complete(buf, lo, hi, copied))
    }

    /// Compares `zc` with what the kernel saw: counter, outstanding sends, settings, statistics.
    pub fn check(&self, zc: &ZeroCopy) {
        assert_eq!(
            zc.next_id(),
            self.next_id,
            "counter out of step with the kernel"
        );
        assert_eq!(
            zc.outstanding(),
            self.sends.len() - self.done,
            "outstanding sends (an early completion stays counted until the older ones)"
        );
        assert_eq!(zc.is_enabled(), self.enabled, "is_enabled");
        assert_eq!(zc.threshold(), self.threshold, "threshold");
        assert_eq!(zc.was_copied(), self.copied, "was_copied");
        assert_eq!(zc.stats(), self.stats, "stats");
    }
}

/// The memory of the first `n` bytes of `iov`, as the kernel keeps it.
fn prefix(iov: &[IoSlice<'_>], mut n: usize) -> Vec<(*const u8, usize)> {
    let mut spans = Vec::new();
    for s in iov {
        if n == 0 {
            break;
        }
        let len = n.min(s.len());
        spans.push((s.as_ptr(), len));
        n -= len;
    }
    spans
}

/// The kernel's last read of a zero-copy send's memory, at its completion.
///
/// Natively, AddressSanitizer in the fuzzer reports a read of freed memory, and the comparison
/// catches reused scratch; under Miri (Stacked Borrows) the read also proves that nothing the
/// buffer did since the send (moving owners between its queues among others) invalidated the
/// pointer the kernel kept. (It once did, for `Box<[u8]>` owners: a `Box` is retagged as unique
/// when moved; the crate now keeps them as `Vec`s.)
fn kernel_reads(s: &ZcSend) {
    let mut at = 0;
    for &(ptr, len) in &s.spans {
        // SAFETY: this is the read the kernel makes of a zero-copy send's memory until its
        // completion, which is not reported yet: the buffer promises that the memory stays
        // allocated and unchanged until then (held scratch is not reused, held values are not
        // dropped). If it broke that promise, this is the use after free AddressSanitizer
        // reports, or the comparison below fails: either way the test fails, as it should.
        let now = unsafe { std::slice::from_raw_parts(ptr, len) };
        assert!(
            *now == s.bytes[at..at + len],
            "the memory of zero-copy send {} (stream bytes {}..{}) changed before its \
             completion, at send offset {at}..{}",
            s.id,
            s.start,
            s.end,
            at + len
        );
        at += len;
    }
}
