//! The `memcached_server` binary: reads the command line, runs the server until SIGINT or
//! SIGTERM, and reports what its send machinery did.
//!
//! ```text
//! cargo run --release -p memcached-server -- --listen 127.0.0.1:11211 --threads 2
//! ```

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

use memcached_server::config::{parse_args, Command, SendPath, USAGE};
use memcached_server::server;

/// Set by the signal handler (for the record; the wake-up goes through [`SIGNAL_FD`]).
static SIGNALLED: AtomicBool = AtomicBool::new(false);
/// The write end of the socket pair the main thread waits on; -1 until installed.
static SIGNAL_FD: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_signal(_signal: libc::c_int) {
    SIGNALLED.store(true, Ordering::SeqCst);
    let fd: RawFd = SIGNAL_FD.load(Ordering::SeqCst);
    if fd >= 0 {
        let byte = 1u8;
        // SAFETY: write(2) is async-signal-safe; `fd` is the write end of a socket pair that
        // main keeps open for the life of the process, and `byte` is valid for 1 byte. The
        // result is ignored: if the pair is full, a wake-up is already pending.
        unsafe {
            libc::write(fd, (&byte as *const u8).cast(), 1);
        }
    }
}

/// Installs `on_signal` for SIGINT and SIGTERM, waking whoever reads the returned stream.
fn install_signal_handlers() -> std::io::Result<UnixStream> {
    let (rx, tx) = UnixStream::pair()?;
    tx.set_nonblocking(true)?; // never block inside the handler
    SIGNAL_FD.store(tx.as_raw_fd(), Ordering::SeqCst);
    std::mem::forget(tx); // the handler may use the fd until the process exits
    for signal in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: `sigaction` is plain data, valid when zeroed; we set a handler that only
        // touches atomics and calls write(2), an empty mask and SA_RESTART, and pass valid
        // pointers (a null old action is allowed).
        let rc = unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
            action.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(signal, &action, std::ptr::null_mut())
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(rx)
}

fn main() -> ExitCode {
    let cfg = match parse_args(std::env::args().skip(1)) {
        Ok(Command::Run(cfg)) => cfg,
        Ok(Command::Help) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(msg) => {
            eprintln!("memcached_server: {msg}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let mut wake = match install_signal_handlers() {
        Ok(rx) => rx,
        Err(e) => {
            eprintln!("memcached_server: cannot install signal handlers: {e}");
            return ExitCode::FAILURE;
        }
    };
    let (threads, memory_mib, max_item) = (cfg.threads, cfg.memory_limit >> 20, cfg.max_item_size);
    let stall = cfg.stall_timeout.as_secs();
    let send_path = match (cfg.send_path, cfg.zerocopy_stop_when_copied) {
        (SendPath::ZeroCopy, false) => "zerocopy (always)",
        (path, _) => path.name(),
    };
    let tls = if cfg.tls.is_some() {
        "TLS"
    } else {
        "plaintext"
    };
    let server = match server::start(cfg) {
        Ok(server) => server,
        Err(e) => {
            eprintln!("memcached_server: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!(
        "memcached_server listening on {} (threads {threads}, memory limit {memory_mib} MiB, \
         max item size {max_item} bytes, send path {send_path}, stall timeout {stall} s, {tls})",
        server.local_addr()
    );
    let _ = std::io::stdout().flush();

    let mut byte = [0u8; 1];
    while !SIGNALLED.load(Ordering::SeqCst) {
        match wake.read(&mut byte) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                eprintln!("memcached_server: waiting for a signal failed: {e}");
                break;
            }
        }
    }
    eprintln!("memcached_server: shutting down");
    let totals = server.shutdown();
    let zc = totals.zero_copy;
    if zc != sendbuf::ZeroCopyStats::default() {
        eprintln!(
            "memcached_server: zero-copy sends {}, copying sends {}, completions {} ({} copied), \
             ENOBUFS {}",
            zc.zero_copy_sends, zc.copying_sends, zc.completions, zc.copied, zc.enobufs
        );
    }
    let u = totals.uring;
    if u.sends > 0 {
        eprintln!(
            "memcached_server: io_uring sends {}, io_uring_enter calls {}, cancels {}",
            u.sends, u.enters, u.cancels
        );
    }
    ExitCode::SUCCESS
}
