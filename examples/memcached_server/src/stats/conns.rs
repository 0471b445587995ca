//! The table of open connections that `stats conns` lists, kept by descriptor.
//!
//! A worker enters a connection when it takes it and removes it when it closes it (one lock
//! each: nothing per request). What changes per request is the connection's [`Activity`],
//! which only its worker writes, with relaxed stores.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// What a connection's worker records for `stats conns`.
#[derive(Debug, Default)]
pub struct Activity {
    /// Server uptime (seconds) when it last sent a request.
    last_read: AtomicU64,
    /// It is closing: it sends what is queued and reads nothing more.
    closing: AtomicBool,
}

impl Activity {
    /// The connection sent bytes at `uptime` seconds.
    pub fn read_at(&self, uptime: u64) {
        self.last_read.store(uptime, Ordering::Relaxed);
    }

    /// The connection is closing.
    pub fn closing(&self) {
        self.closing.store(true, Ordering::Relaxed);
    }
}

/// One open connection of the table.
#[derive(Debug)]
struct Entry {
    peer: SocketAddr,
    local: SocketAddr,
    activity: Arc<Activity>,
}

thread_local! {
    /// The connection whose requests this thread is handling now (see [`ConnTable::serving`]).
    static SERVING: Cell<Option<i32>> = const { Cell::new(None) };
}

/// The listening socket and the open connections, by descriptor.
#[derive(Debug, Default)]
pub struct ConnTable {
    listener: Mutex<Option<(i32, SocketAddr)>>,
    open: Mutex<BTreeMap<i32, Entry>>,
}

/// An address as memcached writes it: `tcp:127.0.0.1:11211`, `tcp6:[::1]:11211`.
fn text(addr: SocketAddr) -> String {
    let proto = if addr.is_ipv4() { "tcp" } else { "tcp6" };
    format!("{proto}:{addr}")
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl ConnTable {
    /// Records the listening socket.
    pub fn listening(&self, fd: i32, addr: SocketAddr) {
        *lock(&self.listener) = Some((fd, addr));
    }

    /// Enters connection `fd` (`uptime`: seconds since start); returns the activity its worker
    /// keeps up to date.
    pub fn opened(
        &self,
        fd: i32,
        peer: SocketAddr,
        local: SocketAddr,
        uptime: u64,
    ) -> Arc<Activity> {
        let activity = Arc::new(Activity::default());
        activity.read_at(uptime);
        let entry = Entry {
            peer,
            local,
            activity: activity.clone(),
        };
        lock(&self.open).insert(fd, entry);
        activity
    }

    /// Removes connection `fd`.
    pub fn closed(&self, fd: i32) {
        lock(&self.open).remove(&fd);
    }

    /// Marks connection `fd` (or none) as the one whose requests this thread handles now:
    /// `stats conns` shows it in memcached's `conn_parse_cmd` state.
    pub fn serving(fd: Option<i32>) {
        SERVING.with(|s| s.set(fd));
    }

    /// `stats conns` as memcached prints it: per descriptor `addr`, `listen_addr` (not for the
    /// listener), `state` and `secs_since_last_cmd`. States: `conn_listening` for the
    /// listener, `conn_parse_cmd` for the connection asking, `conn_closing` for one closing,
    /// and `conn_waiting` for the others (the server does not track memcached's finer
    /// states of a connection between requests).
    pub fn report(&self, uptime: u64) -> super::Group {
        let serving = SERVING.with(Cell::get);
        let mut group = super::Group::new();
        let mut add = |fd: i32, name: &str, value: String| {
            group.push((format!("{fd}:{name}"), value));
        };
        let listener = *lock(&self.listener);
        let open = lock(&self.open);
        let mut listed = false;
        let list_listener = |add: &mut dyn FnMut(i32, &str, String)| {
            if let Some((fd, addr)) = listener {
                add(fd, "addr", text(addr));
                add(fd, "state", "conn_listening".to_string());
                add(fd, "secs_since_last_cmd", uptime.to_string());
            }
        };
        for (&fd, entry) in open.iter() {
            if !listed && listener.is_some_and(|(l, _)| l < fd) {
                list_listener(&mut add);
                listed = true;
            }
            let state = if Some(fd) == serving {
                "conn_parse_cmd"
            } else if entry.activity.closing.load(Ordering::Relaxed) {
                "conn_closing"
            } else {
                "conn_waiting"
            };
            let idle = uptime.saturating_sub(entry.activity.last_read.load(Ordering::Relaxed));
            add(fd, "addr", text(entry.peer));
            add(fd, "listen_addr", text(entry.local));
            add(fd, "state", state.to_string());
            add(fd, "secs_since_last_cmd", idle.to_string());
        }
        if !listed {
            list_listener(&mut add);
        }
        group
    }
}
