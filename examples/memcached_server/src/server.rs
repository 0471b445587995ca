//! Starting and stopping the server: one acceptor thread and N worker threads.
//!
//! The acceptor owns the listening socket and a `mio::Poll`; it accepts every pending connection,
//! sets `TCP_NODELAY`, and hands each one to the next worker round-robin through that worker's
//! channel, then wakes the worker's `Poll` with its `mio::Waker`. A connection stays on its worker
//! for life (see [`worker`](crate::worker)), so nothing on the request path is shared between
//! threads except the store and the statistics.

use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};

use crate::config::{Config, SendPath};
use crate::handler::Limits;
use crate::stats::{bump, SendTotals, Settings, Stats, UringTotals, ZeroCopyTotals};
use crate::store::Store;
use crate::worker::{SendOptions, Worker};

const LISTENER: Token = Token(0);
const WAKE: Token = Token(1);

/// What a connection over the limit is told before it is closed (memcached's words).
pub const TOO_MANY_CONNECTIONS: &[u8] = b"ERROR Too many open connections\r\n";

/// How long the acceptor waits before accepting again after a failure it could not answer
/// (out of file descriptors with none kept in reserve, or another error).
const ACCEPT_RETRY: Duration = Duration::from_millis(50);

/// A running server. [`shutdown`](Self::shutdown) (or dropping it) stops every thread.
pub struct ServerHandle {
    local_addr: SocketAddr,
    stop: Arc<AtomicBool>,
    acceptor_waker: Arc<Waker>,
    worker_wakers: Vec<Arc<Waker>>,
    threads: Vec<JoinHandle<()>>,
    stats: Arc<Stats>,
    store: Arc<Store>,
    buffered: Arc<AtomicUsize>,
    zerocopy: Arc<ZeroCopyTotals>,
    uring: Arc<UringTotals>,
}

/// Binds `cfg.listen` and starts the acceptor and `cfg.threads` workers.
///
/// # Errors
///
/// Binding the listener or creating a `Poll`/`Waker` or a thread failed.
pub fn start(cfg: Config) -> io::Result<ServerHandle> {
    let threads = cfg.threads.max(1);
    let store = Arc::new(Store::new(cfg.memory_limit, cfg.max_item_size));
    let stop = Arc::new(AtomicBool::new(false));
    let buffered = Arc::new(AtomicUsize::new(0));
    let zerocopy = Arc::new(ZeroCopyTotals::default());
    let uring = Arc::new(UringTotals::default());
    let tls = match &cfg.tls {
        Some(_) if cfg.send_path != SendPath::Copy => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "--send-path {}: TLS is served on the copy send path only",
                    cfg.send_path.name()
                ),
            ))
        }
        Some(files) => Some(files.server_config()?),
        None => None,
    };
    let send = SendOptions {
        path: cfg.send_path,
        stop_when_copied: cfg.zerocopy_stop_when_copied,
        min_window: cfg.zerocopy_min_window,
        stall_timeout: cfg.stall_timeout,
        tls,
    };

    let mut listener = TcpListener::bind(cfg.listen)?;
    let local_addr = listener.local_addr()?;
    let stats = Arc::new(Stats::with_settings(Settings {
        listen: local_addr,
        ..Settings::of(&cfg)
    }));
    stats.conns.listening(listener.as_raw_fd(), local_addr);
    let acceptor_poll = Poll::new()?;
    acceptor_poll
        .registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    let acceptor_waker = Arc::new(Waker::new(acceptor_poll.registry(), WAKE)?);

    let mut handle = ServerHandle {
        local_addr,
        stop: stop.clone(),
        acceptor_waker: acceptor_waker.clone(),
        worker_wakers: Vec::with_capacity(threads),
        threads: Vec::with_capacity(threads + 1),
        stats: stats.clone(),
        store: store.clone(),
        buffered: buffered.clone(),
        zerocopy: zerocopy.clone(),
        uring: uring.clone(),
    };
    // On any error below, dropping `handle` stops the threads already started.
    let mut to_workers = Vec::with_capacity(threads);
    for i in 0..threads {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), crate::worker::WAKE)?);
        let (tx, rx) = mpsc::channel();
        let worker = Worker::new(
            poll,
            rx,
            stop.clone(),
            store.clone(),
            stats.clone(),
            Limits {
                max_item_size: cfg.max_item_size,
            },
            buffered.clone(),
            send.clone(),
            zerocopy.clone(),
            uring.clone(),
        )?;
        handle.worker_wakers.push(waker.clone());
        handle.threads.push(
            thread::Builder::new()
                .name(format!("mc-worker-{i}"))
                .spawn(move || worker.run())?,
        );
        to_workers.push((tx, waker));
    }
    let acceptor = Acceptor {
        poll: acceptor_poll,
        listener,
        workers: to_workers,
        next: 0,
        stop,
        stats: stats.clone(),
        spare: File::open("/dev/null").ok(),
        disabled_since: None,
    };
    handle.threads.push(
        thread::Builder::new()
            .name("mc-acceptor".into())
            .spawn(move || acceptor.run())?,
    );
    Ok(handle)
}

impl ServerHandle {
    /// The address the server listens on (the real port when `listen` had port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The server's statistics (what the `stats` command reports).
    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }

    /// The cache.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Connections holding read and write buffers now (the others are idle and gave their
    /// buffers back).
    pub fn buffered_connections(&self) -> usize {
        self.buffered.load(Ordering::Relaxed)
    }

    /// Stops accepting, closes every connection and joins every thread. Returns what the
    /// zero-copy and io_uring senders did, summed (all zero on the copy path).
    pub fn shutdown(mut self) -> SendTotals {
        self.stop_and_join();
        SendTotals {
            zero_copy: self.zerocopy.snapshot(),
            uring: self.uring.snapshot(),
        }
    }

    fn stop_and_join(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // A failed wake can only mean the Poll is gone, i.e. the thread already ended.
        let _ = self.acceptor_waker.wake();
        for waker in &self.worker_wakers {
            let _ = waker.wake();
        }
        for t in self.threads.drain(..) {
            if t.join().is_err() {
                eprintln!("memcached_server: a server thread panicked");
            }
        }
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

/// The acceptor thread's state.
///
/// Over [`Settings::max_connections`] a new connection is refused as memcached refuses it
/// (the [`TOO_MANY_CONNECTIONS`] line, then closed). Out of file descriptors (`EMFILE`,
/// `ENFILE`) it does the same: it keeps one descriptor in reserve (`/dev/null`), frees it to
/// accept the waiting connection, refuses that, and takes the reserve again, so each waiting
/// client gets an answer instead of hanging in the listen queue, and no accept is retried in
/// a busy loop. Only if the reserve cannot be taken back (another thread took the descriptor)
/// does it stop accepting for [`ACCEPT_RETRY`] at a time, counted as memcached counts it
/// (`accepting_conns 0`, `listen_disabled_num`, `time_in_listen_disabled_us`).
struct Acceptor {
    poll: Poll,
    listener: TcpListener,
    workers: Vec<(Sender<TcpStream>, Arc<Waker>)>,
    next: usize,
    stop: Arc<AtomicBool>,
    stats: Arc<Stats>,
    /// The descriptor kept to refuse connections with when the process has no other.
    spare: Option<File>,
    /// Since when accepting has been paused (reported once per pause, not every retry).
    disabled_since: Option<Instant>,
}

/// What [`Acceptor::refuse_with_spare`] did.
enum WithSpare {
    /// It refused a waiting connection.
    Refused,
    /// No connection was waiting.
    NoneWaiting,
    /// There was no spare descriptor, or accepting on it failed.
    Unavailable,
}

impl Acceptor {
    fn run(mut self) {
        let mut events = Events::with_capacity(16);
        // Set after an accept error that could not be answered: the pending connection stays
        // in the backlog and no new edge will come for it, so try again after a pause.
        let mut retry: Option<Duration> = None;
        while !self.stop.load(Ordering::SeqCst) {
            if let Err(e) = self.poll.poll(&mut events, retry) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                eprintln!("memcached_server: acceptor poll failed: {e}");
                return;
            }
            if self.stop.load(Ordering::SeqCst) {
                break;
            }
            retry = self.accept_all();
        }
        self.resume();
    }

    /// Accepts until the backlog is empty; returns a retry delay if accepting failed.
    fn accept_all(&mut self) -> Option<Duration> {
        loop {
            match self.listener.accept() {
                Ok((stream, _peer)) => {
                    self.resume();
                    let stats = &self.stats;
                    let open = stats.curr_connections.load(Ordering::Relaxed);
                    if open >= stats.settings.max_connections as u64 {
                        self.refuse(stream);
                        continue;
                    }
                    // Counted here, not by the worker, so a burst cannot pass the limit.
                    stats.connection_opened();
                    // Responses are written whole by one sendmsg: Nagle only adds latency.
                    if let Err(e) = stream.set_nodelay(true) {
                        eprintln!("memcached_server: TCP_NODELAY failed: {e}");
                    }
                    self.hand_off(stream);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.resume();
                    return None;
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted
                    ) => {}
                // Linux reports a full descriptor table before it looks at the queue: this
                // may come with no connection waiting.
                Err(e) if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) => {
                    match self.refuse_with_spare() {
                        WithSpare::Refused => {}
                        WithSpare::NoneWaiting => {
                            self.resume();
                            return None;
                        }
                        WithSpare::Unavailable => {
                            self.pause(&e);
                            return Some(ACCEPT_RETRY);
                        }
                    }
                }
                Err(e) => {
                    self.pause(&e);
                    return Some(ACCEPT_RETRY);
                }
            }
        }
    }

    /// Out of descriptors: frees the spare one, accepts the waiting connection on it, refuses
    /// it and takes the spare again.
    fn refuse_with_spare(&mut self) -> WithSpare {
        // A spare lost earlier (another thread took the freed descriptor) is tried again
        // here, so that it is not lost for good.
        if self.spare.take().is_none() && File::open("/dev/null").is_err() {
            return WithSpare::Unavailable;
        }
        let outcome = match self.listener.accept() {
            Ok((stream, _peer)) => {
                self.refuse(stream);
                WithSpare::Refused
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => WithSpare::NoneWaiting,
            Err(_) => WithSpare::Unavailable,
        };
        self.spare = File::open("/dev/null").ok();
        outcome
    }

    /// Tells a connection the server has too many and closes it.
    fn refuse(&self, stream: TcpStream) {
        bump(&self.stats.rejected_connections);
        // A new socket's send buffer is empty: the line fits, and nothing here blocks.
        let _ = (&stream).write(TOO_MANY_CONNECTIONS);
        let _ = stream.shutdown(Shutdown::Write);
        // Closing with unread bytes would send a reset, which can discard the line before the
        // client reads it: take what has already arrived (a client may have sent a request).
        let mut sink = [0u8; 4096];
        for _ in 0..16 {
            if !matches!((&stream).read(&mut sink), Ok(n) if n > 0) {
                break;
            }
        }
    }

    /// Accepting failed in a way it cannot answer: stop for a while (reported once a pause).
    fn pause(&mut self, e: &io::Error) {
        if self.disabled_since.is_none() {
            eprintln!(
                "memcached_server: accept failed: {e} (retrying every {} ms)",
                ACCEPT_RETRY.as_millis()
            );
            self.disabled_since = Some(Instant::now());
            self.stats.accepting_conns.store(false, Ordering::Relaxed);
        }
    }

    /// Accepting works again: ends a pause, counting it.
    fn resume(&mut self) {
        if let Some(since) = self.disabled_since.take() {
            self.stats.listen_disabled(since.elapsed());
            self.stats.accepting_conns.store(true, Ordering::Relaxed);
        }
    }

    fn hand_off(&mut self, stream: TcpStream) {
        let n = self.workers.len();
        let mut stream = stream;
        // A worker whose channel is closed has exited (only at shutdown); try the others.
        for _ in 0..n {
            let (tx, waker) = &self.workers[self.next];
            self.next = (self.next + 1) % n;
            match tx.send(stream) {
                Ok(()) => {
                    let _ = waker.wake();
                    return;
                }
                Err(mpsc::SendError(s)) => stream = s,
            }
        }
        self.stats.connection_closed(); // no worker took it: dropped, so closed
    }
}
