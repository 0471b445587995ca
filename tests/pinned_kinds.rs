//! One suite per kind of pinned owner (as bytes' `buf_tests!`): `Vec<u8>`, `Box<[u8]>`,
//! `Arc<[u8]>`, `&'static [u8]`, `String`, an owned `Cow<'static, [u8]>` and a drop-counting
//! type of our own (the last two take the crate's boxed path).
//!
//! Each suite proves, for its kind:
//! * no copy: above the flatten threshold the pending chunk *is* the value's memory;
//! * release exactly once: on the advance that passes the last byte, on `clear`, on drop of the
//!   buffer, and not before;
//! * below the threshold the value is copied into scratch and dropped at once.
//!
//! # Why this file has a global allocator
//!
//! A `Vec<u8>`, `Box<[u8]>` or `String` has no drop hook we could count, and wrapping it in one
//! would change its kind (the crate special-cases these types). Instead a pass-through allocator
//! watches the value's heap address: the value is released when that block is freed. It only
//! observes; every call goes to `System`. Watches are per thread, so tests running in parallel
//! do not see each other's frees.

use sendbuf_testkit::util;

use std::alloc::{GlobalAlloc, Layout, System};
use std::borrow::Cow;
use std::cell::Cell;
use std::sync::Arc;

use sendbuf::{WriteBuffer, DEFAULT_FLATTEN_THRESHOLD};
use util::{assert_pending, DropCount, PrefixWriter, XorShift};

// ---------------------------------------------------------------------------------------------
// Watching frees.
// ---------------------------------------------------------------------------------------------

const SLOTS: usize = 256;

thread_local! {
    /// Heap addresses being watched on this thread (0: slot unused or already freed).
    static WATCHED: [Cell<usize>; SLOTS] = const {
        #[allow(clippy::declare_interior_mutable_const)]
        const EMPTY: Cell<usize> = Cell::new(0);
        [EMPTY; SLOTS]
    };
    /// Frees seen per slot.
    static FREED: [Cell<usize>; SLOTS] = const {
        #[allow(clippy::declare_interior_mutable_const)]
        const ZERO: Cell<usize> = Cell::new(0);
        [ZERO; SLOTS]
    };
    /// Slots handed out on this thread; slots are never reused.
    static NEXT: Cell<usize> = const { Cell::new(0) };
}

/// Records a free of `ptr` if this thread watches it, then stops watching it (so a later,
/// unrelated block at the same address is not counted).
fn note_free(ptr: *mut u8) {
    let addr = ptr as usize;
    let _ = NEXT.try_with(|next| {
        let used = next.get();
        let _ = WATCHED.try_with(|watched| {
            for (slot, w) in watched[..used].iter().enumerate() {
                if w.get() == addr {
                    w.set(0);
                    let _ = FREED.try_with(|freed| freed[slot].set(freed[slot].get() + 1));
                }
            }
        });
    });
}

struct WatchFrees;

// SAFETY: every call is forwarded unchanged to `System`; the bookkeeping reads thread-locals
// with const initialisers (no allocation, no re-entry).
unsafe impl GlobalAlloc for WatchFrees {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        note_free(ptr);
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded with the caller's guarantees.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() && new != ptr {
            note_free(ptr);
        }
        new
    }
}

#[global_allocator]
static ALLOC: WatchFrees = WatchFrees;

/// How a test observes that a pinned value was released.
enum Probe {
    /// A drop counter (our own owner type).
    Drops(DropCount),
    /// Our clone of a pinned `Arc`: released when we hold the only reference again.
    Arc(Arc<[u8]>),
    /// A watched heap block (slot index): released when it is freed.
    Freed(usize),
    /// Dropping a `&'static [u8]` (or an empty `Vec`) does nothing we could see.
    Unobservable,
}

impl Probe {
    /// Watches the heap block at `ptr` if it is one (`len > 0`).
    fn freed(ptr: *const u8, len: usize) -> Probe {
        if len == 0 {
            return Probe::Unobservable;
        }
        let slot = NEXT.with(|next| {
            let slot = next.get();
            assert!(slot < SLOTS, "out of watch slots");
            next.set(slot + 1);
            slot
        });
        WATCHED.with(|w| w[slot].set(ptr as usize));
        Probe::Freed(slot)
    }

    /// Times the value has been released, if that can be observed.
    fn released(&self) -> Option<usize> {
        match self {
            Probe::Drops(d) => Some(d.get()),
            Probe::Arc(a) => Some(2 - Arc::strong_count(a)),
            Probe::Freed(slot) => Some(FREED.with(|f| f[*slot].get())),
            Probe::Unobservable => None,
        }
    }
}

#[track_caller]
fn assert_released(probe: &Probe, times: usize, when: &str) {
    if let Some(n) = probe.released() {
        assert_eq!(n, times, "release count {when}");
    }
}

// ---------------------------------------------------------------------------------------------
// Value contents.
// ---------------------------------------------------------------------------------------------

const PATTERN_LEN: usize = 8192;

/// Printable ASCII (so `String` can hold it) that does not repeat with a short period.
static PATTERN: [u8; PATTERN_LEN] = {
    let mut p = [0u8; PATTERN_LEN];
    let mut i = 0;
    while i < PATTERN_LEN {
        p[i] = b' ' + ((i * 7 + i / 95) % 95) as u8;
        i += 1;
    }
    p
};

fn content(offset: usize, len: usize) -> &'static [u8] {
    &PATTERN[offset..offset + len]
}

/// Above the default flatten threshold.
const BIG: usize = 4096;
/// Below it.
const SMALL: usize = 100;
const _: () = assert!(SMALL < DEFAULT_FLATTEN_THRESHOLD && BIG > DEFAULT_FLATTEN_THRESHOLD);

// ---------------------------------------------------------------------------------------------
// The suite.
// ---------------------------------------------------------------------------------------------

macro_rules! pinned_kind_tests {
    ($($kind:ident (observable: $observable:expr) => $make:expr;)*) => {$(
        mod $kind {
            use super::*;

            /// A value of this kind holding `bytes`, and how to see it released.
            fn make(bytes: &'static [u8]) -> (impl AsRef<[u8]> + Send + 'static, Probe) {
                let make: fn(&'static [u8]) -> (_, Probe) = $make;
                let (value, probe) = make(bytes);
                assert_eq!(AsRef::<[u8]>::as_ref(&value), bytes, "the value holds the wrong bytes");
                (value, probe)
            }

            #[test]
            fn release_is_observable_where_expected() {
                let (_value, probe) = make(content(0, BIG));
                assert_eq!(probe.released(), $observable.then_some(0));
            }

            #[test]
            fn pinned_value_is_not_copied() {
                let bytes = content(1, BIG);
                let (value, probe) = make(bytes);
                let ptr = AsRef::<[u8]>::as_ref(&value).as_ptr();

                let mut buf = WriteBuffer::new();
                buf.pin(value);
                assert_eq!(buf.chunk().as_ptr(), ptr, "the pending chunk is the value itself");
                assert_eq!(buf.capacity(), 0, "no scratch memory was needed");
                assert_pending(&buf, bytes);

                buf.advance(100);
                assert_eq!(buf.chunk().as_ptr(), ptr.wrapping_add(100));
                assert_pending(&buf, &bytes[100..]);
                assert_released(&probe, 0, "after a partial advance");

                // Between scratch segments it is still referenced, not copied.
                let mut buf = WriteBuffer::new();
                let (value, _probe) = make(bytes);
                let ptr = AsRef::<[u8]>::as_ref(&value).as_ptr();
                buf.put_slice(b"head");
                buf.pin(value);
                buf.put_slice(b"tail");
                let chunks: Vec<&[u8]> = buf.chunks().collect();
                assert_eq!(chunks.len(), 3);
                assert_eq!(chunks[1].as_ptr(), ptr);
                assert_eq!(chunks[1].len(), BIG);
            }

            #[test]
            fn released_exactly_when_its_last_byte_is_sent() {
                let bytes = content(2, BIG);
                let (value, probe) = make(bytes);
                let mut buf = WriteBuffer::new();
                buf.put_slice(b"hdr");
                buf.pin(value);
                buf.put_slice(b"trl");

                for step in [3, 1, 1000, BIG - 1002] {
                    buf.advance(step);
                    buf.check_invariants();
                    assert_released(&probe, 0, "before the last byte");
                }
                assert_eq!(buf.chunk(), &bytes[BIG - 1..]);
                buf.advance(1);
                assert_released(&probe, 1, "on the advance past the last byte");
                assert_pending(&buf, b"trl");
                buf.advance(3);
                assert_pending(&buf, b"");
                assert_released(&probe, 1, "after the buffer emptied");
                drop(buf);
                assert_released(&probe, 1, "after the buffer was dropped");
            }

            #[test]
            fn released_once_when_the_final_advance_spans_it() {
                let (value, probe) = make(content(3, BIG));
                let mut buf = WriteBuffer::new();
                buf.put_slice(b"hdr");
                buf.pin(value);
                buf.put_slice(b"trl");
                buf.advance(3 + BIG + 3);
                assert_pending(&buf, b"");
                assert_released(&probe, 1, "after one advance over everything");
                drop(buf);
                assert_released(&probe, 1, "after drop");
            }

            #[test]
            fn released_once_on_clear() {
                let (value, probe) = make(content(4, BIG));
                let mut buf = WriteBuffer::new();
                buf.put_slice(b"hdr");
                buf.pin(value);
                buf.advance(10);
                buf.clear();
                assert_released(&probe, 1, "on clear");
                assert_pending(&buf, b"");

                // The buffer is usable again and does not touch the released value.
                buf.put_slice(b"again");
                buf.advance(5);
                assert_pending(&buf, b"");
                drop(buf);
                assert_released(&probe, 1, "after drop");
            }

            #[test]
            fn released_once_when_the_buffer_is_dropped() {
                let (unsent, unsent_probe) = make(content(5, BIG));
                let (partial, partial_probe) = make(content(6, BIG));
                let mut buf = WriteBuffer::new();
                buf.pin(partial);
                buf.pin(unsent);
                buf.advance(BIG - 1);
                assert_released(&partial_probe, 0, "one byte left");
                drop(buf);
                assert_released(&partial_probe, 1, "partly sent, buffer dropped");
                assert_released(&unsent_probe, 1, "unsent, buffer dropped");
            }

            #[test]
            fn below_the_threshold_it_is_copied_and_released_at_once() {
                let bytes = content(7, SMALL);
                let (value, probe) = make(bytes);
                let ptr = AsRef::<[u8]>::as_ref(&value).as_ptr();
                let mut buf = WriteBuffer::new();
                buf.put_slice(b"h");
                buf.pin(value);
                assert_released(&probe, 1, "right after a flattening pin");

                let mut expected = b"h".to_vec();
                expected.extend_from_slice(bytes);
                assert_pending(&buf, &expected);
                assert_eq!(buf.segments(), 1, "copied next to the header: one iovec");
                assert_ne!(buf.chunk()[1..].as_ptr(), ptr, "the bytes were copied");
                assert!(buf.capacity() > 0);
                drop(buf);
                assert_released(&probe, 1, "after drop");
            }

            #[test]
            fn the_threshold_is_exclusive() {
                let threshold = 64;
                let mut buf = WriteBuffer::new();
                buf.set_flatten_threshold(threshold);

                let (below, below_probe) = make(content(8, threshold - 1));
                buf.pin(below);
                assert_released(&below_probe, 1, "one byte under the threshold: copied");
                assert_eq!(buf.segments(), 1);
                assert!(buf.capacity() > 0);

                let (at, at_probe) = make(content(9, threshold));
                let ptr = AsRef::<[u8]>::as_ref(&at).as_ptr();
                buf.pin(at);
                assert_released(&at_probe, 0, "exactly the threshold: pinned");
                assert_eq!(buf.segments(), 2);
                assert_eq!(buf.chunks().nth(1).unwrap().as_ptr(), ptr);

                let mut expected = content(8, threshold - 1).to_vec();
                expected.extend_from_slice(content(9, threshold));
                assert_pending(&buf, &expected);
                buf.clear();
                assert_released(&at_probe, 1, "on clear");
            }

            #[test]
            fn threshold_zero_pins_even_one_byte() {
                let (value, probe) = make(content(10, 1));
                let ptr = AsRef::<[u8]>::as_ref(&value).as_ptr();
                let mut buf = WriteBuffer::new();
                buf.set_flatten_threshold(0);
                buf.pin(value);
                assert_eq!(buf.capacity(), 0);
                assert_eq!(buf.chunk().as_ptr(), ptr);
                assert_released(&probe, 0, "pinned");
                buf.advance(1);
                assert_released(&probe, 1, "sent");
                assert_pending(&buf, b"");
            }

            #[test]
            fn an_empty_value_queues_nothing_and_is_released() {
                for threshold in [0, DEFAULT_FLATTEN_THRESHOLD] {
                    let (value, probe) = make(content(0, 0));
                    let mut buf = WriteBuffer::new();
                    buf.set_flatten_threshold(threshold);
                    buf.pin(value);
                    assert_released(&probe, 1, "an empty value is not kept");
                    assert_pending(&buf, b"");
                    assert_eq!(buf.segments(), 0);
                }
            }

            #[test]
            fn many_values_each_released_when_passed() {
                let mut rng = XorShift::new(0x5EED_0001);
                let mut buf = WriteBuffer::with_block_size(64);
                buf.set_flatten_threshold(16);
                let mut model = Vec::new();
                // (end offset, probe, pinned by reference)
                let mut values = Vec::new();
                for i in 0..24 {
                    let header = [b'H', i as u8];
                    buf.put_slice(&header);
                    model.extend_from_slice(&header);
                    let len = [0, 1, 15, 16, 17, 300][rng.below(6)];
                    let bytes = content(rng.below(PATTERN_LEN - len), len);
                    let (value, probe) = make(bytes);
                    buf.pin(value);
                    model.extend_from_slice(bytes);
                    values.push((model.len(), probe, len >= 16));
                }
                assert_pending(&buf, &model);

                let mut pos = 0;
                while pos < model.len() {
                    let step = rng.range(0, 40).min(model.len() - pos);
                    buf.advance(step);
                    pos += step;
                    assert_pending(&buf, &model[pos..]);
                    for (end, probe, pinned) in &values {
                        let want = usize::from(!*pinned || pos >= *end);
                        assert_released(probe, want, &format!("at {pos}, value ending at {end}"));
                    }
                }
                drop(buf);
                for (_, probe, _) in &values {
                    assert_released(probe, 1, "at the end");
                }
            }

            #[test]
            fn written_out_through_random_prefixes() {
                let mut buf = WriteBuffer::new();
                let mut model = Vec::new();
                let mut probes = Vec::new();
                for (i, len) in [BIG, SMALL, BIG, 1, 513].into_iter().enumerate() {
                    let line = format!("VALUE {i} {len}\r\n");
                    buf.put_slice(line.as_bytes());
                    model.extend_from_slice(line.as_bytes());
                    let bytes = content(i * 11, len);
                    let (value, probe) = make(bytes);
                    buf.pin(value);
                    model.extend_from_slice(bytes);
                    probes.push(probe);
                }
                let mut w = PrefixWriter::random(0x5EED_0002, 700);
                while !buf.is_empty() {
                    buf.write_to(&mut w).unwrap();
                    buf.check_invariants();
                }
                assert_eq!(w.out, model);
                assert!(w.short > 0);
                for probe in &probes {
                    assert_released(probe, 1, "after everything was written");
                }
            }
        }
    )*};
}

pinned_kind_tests! {
    vec (observable: true) => |s| {
        let v = s.to_vec();
        let probe = Probe::freed(v.as_ptr(), v.len());
        (v, probe)
    };
    boxed_slice (observable: true) => |s| {
        let b: Box<[u8]> = s.into();
        let probe = Probe::freed(b.as_ptr(), b.len());
        (b, probe)
    };
    arc_slice (observable: true) => |s| {
        let a: Arc<[u8]> = s.into();
        (a.clone(), Probe::Arc(a))
    };
    static_slice (observable: false) => |s| (s, Probe::Unobservable);
    string (observable: true) => |s| {
        let st = String::from_utf8(s.to_vec()).unwrap();
        let probe = Probe::freed(st.as_ptr(), st.len());
        (st, probe)
    };
    cow_owned (observable: true) => |s| {
        let v = s.to_vec();
        let probe = Probe::freed(v.as_ptr(), v.len());
        (Cow::<'static, [u8]>::Owned(v), probe)
    };
    drop_counted (observable: true) => |s| {
        let (value, drops) = util::Counted::new(s);
        (value, Probe::Drops(drops))
    };
}
