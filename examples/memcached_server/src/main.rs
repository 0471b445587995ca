//! The `memcached_server` binary: the command line, signals, and the server of the
//! `memcached_server` library until SIGINT or SIGTERM.
//!
//! ```text
//! cargo run --release -p memcached-server -- --listen 127.0.0.1:11211 --threads 2
//! ```

use std::io::{Read, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

use memcached_server::server::{self, Config, SendPath};

const USAGE: &str = "\
usage: memcached_server [OPTIONS]

A memcached-compatible cache (binary and ASCII protocols) built on sendbuf.

options:
  --listen ADDR            address to listen on (default 127.0.0.1:11211; port 0 picks a free port)
  --threads N              worker threads (default: the number of cores)
  --memory-limit MIB       cache memory limit in MiB, least recently used items are evicted
                           (default 64)
  --max-item-size BYTES    largest value accepted (default 1048576)
  --send-path PATH         how responses are sent: copy (copying sendmsg, the default),
                           zerocopy (MSG_ZEROCOPY, values held until the kernel's completion)
                           or uring (one io_uring_enter per event-loop turn for every
                           connection's sends; builds with --features io-uring only)
  --zerocopy-always        with zerocopy: keep sending zero-copy even after the kernel reports
                           that it copied (it always does on loopback; for tests and measurement)
  --zerocopy-min-window BYTES
                           with zerocopy: a connection whose peer's receive window is smaller
                           than this when it is accepted gets copying sends (Linux TCP can stall
                           zero-copy sends to a tiny window); 0 makes every connection
                           zero-copy (default 65536)
  --stall-timeout SECS     close a connection whose peer takes none of its responses for this
                           long while the server waits on it to read (after quit or its end of
                           stream, or with output over the high water mark) (default 30)
  --help                   print this help
";

/// What the command line asks for.
#[derive(Debug)]
enum Command {
    Run(Config),
    Help,
}

fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Command, String> {
    let mut cfg = Config::default();
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        if name == "--help" || name == "-h" {
            return Ok(Command::Help);
        }
        if arg == "--zerocopy-always" {
            cfg.zerocopy_stop_when_copied = false;
            continue;
        }
        if !matches!(
            name.as_str(),
            "--listen"
                | "--threads"
                | "--memory-limit"
                | "--max-item-size"
                | "--send-path"
                | "--stall-timeout"
                | "--zerocopy-min-window"
        ) {
            return Err(format!("unknown argument '{arg}'"));
        }
        let value = match inline.or_else(|| args.next()) {
            Some(v) => v,
            None => return Err(format!("{name} needs a value")),
        };
        match name.as_str() {
            "--listen" => cfg.listen = parse_addr(&value)?,
            "--threads" => cfg.threads = parse_number(&name, &value, 1, 1024)?,
            "--memory-limit" => {
                let mib = parse_number(&name, &value, 1, (usize::MAX >> 20) as u64)?;
                cfg.memory_limit = mib << 20;
            }
            "--send-path" => cfg.send_path = SendPath::parse(&value)?,
            "--stall-timeout" => {
                let secs = parse_number(&name, &value, 1, 24 * 60 * 60)?;
                cfg.stall_timeout = std::time::Duration::from_secs(secs as u64);
            }
            "--zerocopy-min-window" => {
                cfg.zerocopy_min_window = parse_number(&name, &value, 0, 1 << 30)?;
            }
            _ => cfg.max_item_size = parse_number(&name, &value, 1, 1 << 30)?,
        }
    }
    Ok(Command::Run(cfg))
}

fn parse_addr(value: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = value.parse() {
        return Ok(addr);
    }
    value
        .to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .ok_or_else(|| format!("--listen: '{value}' is not an address such as 127.0.0.1:11211"))
}

fn parse_number(name: &str, value: &str, min: u64, max: u64) -> Result<usize, String> {
    match value.parse::<u64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n as usize),
        _ => Err(format!(
            "{name}: '{value}' is not a whole number from {min} to {max}"
        )),
    }
}

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
        (SendPath::Copy, _) => "copy",
        (SendPath::ZeroCopy, true) => "zerocopy",
        (SendPath::ZeroCopy, false) => "zerocopy (always)",
        #[cfg(feature = "io-uring")]
        (SendPath::Uring, _) => "uring",
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
         max item size {max_item} bytes, send path {send_path}, stall timeout {stall} s)",
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Command, String> {
        parse_args(args.iter().map(|a| a.to_string()))
    }

    fn config(args: &[&str]) -> Config {
        match parse(args) {
            Ok(Command::Run(cfg)) => cfg,
            other => panic!("{args:?}: {other:?}"),
        }
    }

    #[test]
    fn defaults_are_those_the_help_states() {
        let cfg = config(&[]);
        assert_eq!(cfg.listen, "127.0.0.1:11211".parse().unwrap());
        assert_eq!(cfg.memory_limit, 64 << 20);
        assert_eq!(cfg.max_item_size, 1 << 20);
        assert_eq!(cfg.send_path, SendPath::Copy);
        assert_eq!(cfg.stall_timeout, std::time::Duration::from_secs(30));
        assert_eq!(cfg.zerocopy_min_window, 65536);
        assert!(cfg.zerocopy_stop_when_copied);
    }

    #[test]
    fn every_option_is_read_in_both_spellings() {
        let cfg = config(&[
            "--listen=127.0.0.1:0",
            "--threads",
            "3",
            "--memory-limit=8",
            "--max-item-size",
            "4096",
            "--send-path=zerocopy",
            "--zerocopy-always",
            "--stall-timeout",
            "5",
            "--zerocopy-min-window=0",
        ]);
        assert_eq!(cfg.listen, "127.0.0.1:0".parse().unwrap());
        assert_eq!(cfg.threads, 3);
        assert_eq!(cfg.memory_limit, 8 << 20);
        assert_eq!(cfg.max_item_size, 4096);
        assert_eq!(cfg.send_path, SendPath::ZeroCopy);
        assert!(!cfg.zerocopy_stop_when_copied);
        assert_eq!(cfg.stall_timeout, std::time::Duration::from_secs(5));
        assert_eq!(cfg.zerocopy_min_window, 0);
        assert_eq!(
            config(&["--zerocopy-min-window", "1024"]).zerocopy_min_window,
            1024
        );
    }

    #[test]
    fn bad_arguments_are_refused_with_a_reason() {
        for (args, says) in [
            (&["--frobnicate"][..], "unknown argument '--frobnicate'"),
            (&["--threads"], "--threads needs a value"),
            (
                &["--threads", "0"],
                "--threads: '0' is not a whole number from 1",
            ),
            (
                &["--stall-timeout=-1"],
                "--stall-timeout: '-1' is not a whole number",
            ),
            (
                &["--zerocopy-min-window", "64k"],
                "--zerocopy-min-window: '64k'",
            ),
            (
                &["--listen", "nowhere"],
                "--listen: 'nowhere' is not an address",
            ),
            (&["--send-path", "pigeon"], "pigeon"),
        ] {
            match parse(args) {
                Err(e) => assert!(e.contains(says), "{args:?}: {e:?} lacks {says:?}"),
                Ok(c) => panic!("{args:?} accepted: {c:?}"),
            }
        }
        assert!(matches!(
            parse(&["--threads", "2", "--help"]),
            Ok(Command::Help)
        ));
    }
}
