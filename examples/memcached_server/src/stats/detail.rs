//! `stats detail on|off|dump`: memcached's per-prefix counters (`stats_prefix.c`). The prefix
//! of a key is what comes before its first `:` (memcached's default delimiter, `-D`); a key
//! without one (before a NUL, as memcached reads keys as C strings) is not counted. While
//! detail is off, a command pays one relaxed load; while on, the counters live behind one
//! mutex, as memcached keeps them behind its stats lock.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// Memcached's default prefix delimiter.
pub const DELIMITER: u8 = b':';

/// What memcached counts per prefix, in the order `stats detail dump` prints it.
#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    gets: u64,
    hits: u64,
    sets: u64,
    deletes: u64,
}

/// The prefixes seen, in the order first seen.
#[derive(Debug, Default)]
struct Prefixes {
    index: HashMap<Box<[u8]>, usize>,
    list: Vec<(Box<[u8]>, Counts)>,
}

/// The per-prefix counters and whether they are being kept.
#[derive(Debug, Default)]
pub struct Detail {
    on: AtomicBool,
    prefixes: Mutex<Prefixes>,
}

/// The prefix of `key`, if it has one.
fn prefix(key: &[u8]) -> Option<&[u8]> {
    let key = key.split(|&b| b == 0).next().unwrap_or_default();
    let end = key.iter().position(|&b| b == DELIMITER)?;
    Some(&key[..end])
}

impl Detail {
    /// True while the counters are being kept (`stats detail on`).
    #[inline]
    pub fn on(&self) -> bool {
        self.on.load(Ordering::Relaxed)
    }

    /// `stats detail on` / `off`. Turning it off keeps the counts for `dump`.
    pub fn set_on(&self, on: bool) {
        self.on.store(on, Ordering::Relaxed);
    }

    /// Adds to the counts of `key`'s prefix, if it has one.
    fn count(&self, key: &[u8], f: impl FnOnce(&mut Counts)) {
        let Some(prefix) = prefix(key) else { return };
        let mut p = self.prefixes.lock().unwrap_or_else(|e| e.into_inner());
        let i = match p.index.get(prefix) {
            Some(&i) => i,
            None => {
                let i = p.list.len();
                p.list.push((prefix.into(), Counts::default()));
                p.index.insert(prefix.into(), i);
                i
            }
        };
        f(&mut p.list[i].1);
    }

    /// A retrieval of `key` (get, gets, gat, gats; binary get and touch), found or not.
    #[inline]
    pub fn get(&self, key: &[u8], hit: bool) {
        if self.on() {
            self.count(key, |c| {
                c.gets += 1;
                c.hits += u64::from(hit);
            });
        }
    }

    /// A storage command for `key` (counted whether it stores or not, as memcached counts it).
    #[inline]
    pub fn set(&self, key: &[u8]) {
        if self.on() {
            self.count(key, |c| c.sets += 1);
        }
    }

    /// A `delete` of `key`, found or not.
    #[inline]
    pub fn delete(&self, key: &[u8]) {
        if self.on() {
            self.count(key, |c| c.deletes += 1);
        }
    }

    /// Forgets every prefix (`stats reset`), leaving detail on or off.
    pub fn clear(&self) {
        *self.prefixes.lock().unwrap_or_else(|e| e.into_inner()) = Prefixes::default();
    }

    /// `stats detail dump`: a `PREFIX` line per prefix, then `END`.
    pub fn dump(&self) -> Vec<u8> {
        let p = self.prefixes.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = Vec::new();
        for (prefix, c) in &p.list {
            out.extend_from_slice(b"PREFIX ");
            out.extend_from_slice(prefix);
            let line = format!(
                " get {} hit {} set {} del {}\r\n",
                c.gets, c.hits, c.sets, c.deletes
            );
            out.extend_from_slice(line.as_bytes());
        }
        out.extend_from_slice(b"END\r\n");
        out
    }
}
