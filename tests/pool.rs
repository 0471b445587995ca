//! Pools: bounds hold, storage is reused (the same allocation comes back), counters are exact,
//! `LocalPool` keeps one free list per thread, `SharedPool` works from many threads at once.

use std::sync::{Arc, Barrier};
use std::thread;

use sendbuf::{LocalPool, Pool, PoolLimits, PoolStats, SharedPool};

fn storage(len: usize) -> Box<[u8]> {
    vec![0u8; len].into_boxed_slice()
}

/// Runs `f` on a new thread: a `LocalPool` there starts with an empty free list and zero
/// counters, whatever threads the test harness reuses.
fn on_fresh_thread<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    thread::spawn(f).join().unwrap()
}

/// Both pools through the trait object a buffer holds.
fn pools(limits: PoolLimits) -> [(&'static str, Arc<dyn Pool>); 2] {
    [
        ("shared", SharedPool::new(limits)),
        ("local", LocalPool::new(limits)),
    ]
}

#[test]
fn max_buffers_holds() {
    on_fresh_thread(|| {
        for (name, pool) in pools(PoolLimits::new().with_max_buffers(3)) {
            for _ in 0..10 {
                pool.give(storage(256));
            }
            let s = pool.stats();
            assert_eq!((s.pooled, s.returned, s.freed), (3, 3, 7), "{name}");
            for _ in 0..3 {
                assert!(pool.take(256).is_some(), "{name}");
            }
            assert!(pool.take(1).is_none(), "{name}");
        }
    });
}

#[test]
fn oversized_storage_is_freed_not_pooled() {
    on_fresh_thread(|| {
        for (name, pool) in pools(PoolLimits::new().with_max_buffer_size(4096)) {
            pool.give(storage(4096)); // at the limit: kept
            pool.give(storage(4097));
            pool.give(storage(1 << 20));
            let s = pool.stats();
            assert_eq!((s.pooled, s.returned, s.freed), (1, 1, 2), "{name}");
            assert!(pool.take(4097).is_none(), "{name}");
        }
    });
}

#[test]
fn reuse_hands_back_the_same_allocation() {
    on_fresh_thread(|| {
        for (name, pool) in pools(PoolLimits::new()) {
            let block = storage(8192);
            let ptr = block.as_ptr();
            pool.give(block);
            let again = pool.take(8192).expect("pooled");
            assert_eq!(again.as_ptr(), ptr, "{name}: a new allocation");
            assert_eq!(again.len(), 8192, "{name}");
        }
    });
}

#[test]
fn take_never_returns_storage_smaller_than_asked() {
    on_fresh_thread(|| {
        for (name, pool) in pools(PoolLimits::new()) {
            for len in [10, 300, 20, 4000, 50] {
                pool.give(storage(len));
            }
            for min in [0, 1, 21, 299, 301, 3999, 4001] {
                if let Some(s) = pool.take(min) {
                    assert!(s.len() >= min, "{name}: asked {min}, got {}", s.len());
                    pool.give(s);
                }
            }
            assert!(pool.take(4001).is_none(), "{name}");
        }
    });
}

#[test]
fn counters_are_exact() {
    on_fresh_thread(|| {
        for (name, pool) in pools(
            PoolLimits::new()
                .with_max_buffers(2)
                .with_max_buffer_size(100),
        ) {
            pool.give(storage(100)); // returned
            pool.give(storage(50)); // returned
            pool.give(storage(50)); // full: freed
            pool.give(storage(101)); // oversized: freed
            pool.give(storage(0)); // empty: freed
            assert!(pool.take(200).is_none()); // a miss counts nothing
            let a = pool.take(50).unwrap(); // taken
            pool.record_steal(true);
            pool.record_steal(true);
            pool.record_steal(false);
            pool.give(a); // returned
            assert_eq!(
                pool.stats(),
                PoolStats {
                    taken: 1,
                    returned: 3,
                    stolen: 2,
                    refused: 1,
                    freed: 3,
                    pooled: 2,
                },
                "{name}"
            );
        }
    });
}

#[test]
fn local_pool_threads_do_not_see_each_other() {
    let pool = LocalPool::new(PoolLimits::new());
    let barrier = Arc::new(Barrier::new(2));
    let handles: Vec<_> = [1024usize, 2048]
        .into_iter()
        .map(|len| {
            let pool = pool.clone();
            let barrier = barrier.clone();
            thread::spawn(move || {
                let block = storage(len);
                let ptr = block.as_ptr();
                pool.give(block);
                pool.record_steal(true);
                barrier.wait(); // both threads have given before either takes
                let stats = pool.stats();
                assert_eq!(
                    (stats.pooled, stats.returned, stats.stolen),
                    (1, 1, 1),
                    "only this thread's own storage and counts"
                );
                let back = pool.take(1).expect("own storage");
                assert_eq!((back.as_ptr(), back.len()), (ptr, len));
                assert!(
                    pool.take(1).is_none(),
                    "the other thread's storage leaked in"
                );
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
}

#[test]
fn local_pool_storage_given_on_another_thread_stays_there() {
    let pool = LocalPool::new(PoolLimits::new());
    let block = on_fresh_thread(|| storage(512));
    let p = pool.clone();
    let stats_there = on_fresh_thread(move || {
        p.give(block);
        p.stats()
    });
    assert_eq!(stats_there.returned, 1);
    // The giving thread has exited and its free list with it; here nothing was given.
    on_fresh_thread(move || {
        assert!(pool.take(1).is_none());
        assert_eq!(pool.stats(), PoolStats::default());
    });
}

#[test]
fn shared_pool_from_several_threads() {
    const THREADS: usize = 4;
    let rounds = if cfg!(miri) { 50 } else { 5_000 };
    let limits = PoolLimits::new()
        .with_max_buffers(8)
        .with_max_buffer_size(4096);
    let pool = SharedPool::new(limits);
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let pool = pool.clone();
            thread::spawn(move || {
                let (mut taken, mut given, mut steals) = (0u64, 0u64, 0u64);
                let mut held: Vec<Box<[u8]>> = Vec::new();
                let mut x = 0x1234_5678_9ABC_DEF1u64 ^ (t as u64 + 1);
                for _ in 0..rounds {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    match x % 4 {
                        0 | 1 => match pool.take(1024) {
                            Some(s) => {
                                assert!(s.len() >= 1024);
                                taken += 1;
                                held.push(s);
                            }
                            None => held.push(storage(if x % 8 == 0 { 8192 } else { 1024 })),
                        },
                        2 => {
                            if let Some(s) = held.pop() {
                                pool.give(s);
                                given += 1;
                            }
                        }
                        _ => {
                            pool.record_steal(x % 3 == 0);
                            steals += 1;
                        }
                    }
                    assert!(pool.stats().pooled <= 8);
                }
                for s in held.drain(..) {
                    pool.give(s);
                    given += 1;
                }
                (taken, given, steals)
            })
        })
        .collect();
    let (mut taken, mut given, mut steals) = (0, 0, 0);
    for h in handles {
        let (t, g, s) = h.join().unwrap();
        taken += t;
        given += g;
        steals += s;
    }
    let stats = pool.stats();
    assert_eq!(stats.taken, taken);
    assert_eq!(stats.returned + stats.freed, given);
    assert_eq!(stats.stolen + stats.refused, steals);
    assert_eq!(stats.pooled as u64, stats.returned - stats.taken);
    assert!(stats.pooled <= 8);
    assert!(taken > 0, "the pool was never reused");
}
