//! The server's configuration: [`Config`], its defaults, and the command line that sets it.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::thread;
use std::time::Duration;

pub use crate::stats::DEFAULT_MAX_CONNECTIONS;
use crate::tls::TlsFiles;

/// What the command line configures.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address to listen on (port 0: any free port; see
    /// [`ServerHandle::local_addr`](crate::server::ServerHandle::local_addr)).
    pub listen: SocketAddr,
    /// Worker threads (at least 1).
    pub threads: usize,
    /// Cache memory limit in bytes (values, keys and item overhead), as memcached's `-m`.
    pub memory_limit: usize,
    /// Largest value accepted, in bytes.
    pub max_item_size: usize,
    /// Most client connections open at once (memcached's `-c`): one more is told
    /// `ERROR Too many open connections` and closed. Default [`DEFAULT_MAX_CONNECTIONS`].
    pub max_connections: usize,
    /// How responses are sent.
    pub send_path: SendPath,
    /// Zero-copy path only: stop asking for zero copy on a socket once the kernel reports a
    /// send as copied (as it always does on loopback), as the kernel documentation advises.
    /// `false` keeps every large send zero-copy (to exercise or measure the path on loopback).
    pub zerocopy_stop_when_copied: bool,
    /// Zero-copy path only: a connection whose peer advertises a receive window smaller than
    /// this many bytes when it is accepted gets copying sends (see
    /// [`DEFAULT_ZEROCOPY_MIN_WINDOW`] for why); 0 makes every connection zero-copy.
    pub zerocopy_min_window: usize,
    /// A connection that waits on its peer to read is closed if the peer takes none of its
    /// responses for this long: one that is to close once they are sent (after `quit`, the
    /// peer's end of stream or a fatal protocol error), or one not read from because its
    /// output is over the high water mark. So a peer that never reads cannot hold a
    /// connection and its buffers for ever. Default [`STALL_TIMEOUT`].
    pub stall_timeout: Duration,
    /// Serve TLS with this certificate chain and key (`--tls-cert`, `--tls-key`), as
    /// `memcached -Z` does; `None`: plaintext. TLS is served on the copy send path.
    pub tls: Option<TlsFiles>,
}

/// How a worker sends its connections' responses (`--send-path`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendPath {
    /// Copying `sendmsg`: a pinned value is released as soon as its last byte is sent.
    Copy,
    /// `MSG_ZEROCOPY` through [`sendbuf::ZeroCopy`]: large sends are held until the kernel's
    /// completion (read on the socket's error readiness) says it no longer reads them.
    ZeroCopy,
    /// io_uring through one [`sendbuf::UringSender`] per worker: the sends of every connection
    /// that produced output in an event-loop turn enter the kernel in one `io_uring_enter`.
    #[cfg(feature = "io-uring")]
    Uring,
}

impl SendPath {
    /// Parses a `--send-path` value.
    pub fn parse(value: &str) -> Result<SendPath, String> {
        match value {
            "copy" => Ok(SendPath::Copy),
            "zerocopy" => Ok(SendPath::ZeroCopy),
            #[cfg(feature = "io-uring")]
            "uring" => Ok(SendPath::Uring),
            #[cfg(not(feature = "io-uring"))]
            "uring" => Err("--send-path uring: this build has no io_uring backend \
                            (build with --features io-uring)"
                .to_string()),
            _ => Err(format!(
                "--send-path: unknown send path '{value}' (this build knows {})",
                SendPath::KNOWN
            )),
        }
    }

    /// The `--send-path` value naming this path.
    pub fn name(self) -> &'static str {
        match self {
            SendPath::Copy => "copy",
            SendPath::ZeroCopy => "zerocopy",
            #[cfg(feature = "io-uring")]
            SendPath::Uring => "uring",
        }
    }

    /// The values [`parse`](Self::parse) accepts in this build.
    #[cfg(feature = "io-uring")]
    pub const KNOWN: &'static str = "copy, zerocopy, uring";
    /// The values [`parse`](Self::parse) accepts in this build.
    #[cfg(not(feature = "io-uring"))]
    pub const KNOWN: &'static str = "copy, zerocopy";
}

impl Default for Config {
    fn default() -> Config {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 11211)),
            threads: thread::available_parallelism().map_or(1, |n| n.get()),
            memory_limit: 64 * 1024 * 1024,
            max_item_size: 1024 * 1024,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            send_path: SendPath::Copy,
            zerocopy_stop_when_copied: true,
            zerocopy_min_window: DEFAULT_ZEROCOPY_MIN_WINDOW,
            stall_timeout: STALL_TIMEOUT,
            tls: None,
        }
    }
}

/// Default `Config::stall_timeout`: how long a peer that the server waits on to read may take
/// none of its responses before its connection is closed.
pub const STALL_TIMEOUT: Duration = Duration::from_secs(30);
/// A peer whose receive window is below this when its connection is accepted gets copying
/// sends on the zero-copy path.
///
/// Two reasons. Zero copy cannot pay on such a connection: each send moves at most a window,
/// far below the [`sendbuf::DEFAULT_ZEROCOPY_THRESHOLD`] a zero-copy send needs to be worth
/// its page pinning and completion. And on Linux (seen on 6.18, loopback) `MSG_ZEROCOPY`
/// sends to a peer on the same host with a window of a few segments can wedge the connection:
/// the sender's MSS is cut to half the peer's small window, the peer's window then settles
/// just below that MSS (e.g. 1856 against 2048 for a 4 KiB `SO_RCVBUF`, 8168 against 8192 for
/// 16 KiB), and TCP's sender-side silly-window avoidance sends only on its persist timer,
/// about 2 KB per 200-400 ms, for good. Copying sends to the same peer never show it. A
/// window is small from the start only when the peer fixed its `SO_RCVBUF` before connecting
/// (a default Linux client starts at 64 KiB and grows), so one check at accept time decides.
pub const DEFAULT_ZEROCOPY_MIN_WINDOW: usize = 64 * 1024;

/// The help text (`--help`).
pub const USAGE: &str = "\
usage: memcached_server [OPTIONS]

A memcached-compatible cache (binary and ASCII protocols) built on sendbuf.

options:
  --listen ADDR            address to listen on (default 127.0.0.1:11211; port 0 picks a free port)
  --threads N              worker threads (default: the number of cores)
  --memory-limit MIB       cache memory limit in MiB, least recently used items are evicted
                           (default 64)
  --max-item-size BYTES    largest value accepted (default 1048576)
  --max-connections N      most client connections open at once, as memcached -c; one more
                           is sent ERROR Too many open connections and closed (default 1024)
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
  --tls-cert FILE          serve TLS (as memcached -Z) with this PEM certificate chain; needs
                           --tls-key, and the copy send path
  --tls-key FILE           the PEM private key of --tls-cert's first certificate
  --help                   print this help
";

/// What the command line asks for.
#[derive(Debug)]
pub enum Command {
    /// Run a server so configured.
    Run(Config),
    /// Print [`USAGE`] and exit.
    Help,
}

/// Reads the arguments after the program name.
///
/// # Errors
///
/// An unknown option, a missing value or a value out of range, with the reason.
pub fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Command, String> {
    let mut cfg = Config::default();
    let (mut tls_cert, mut tls_key) = (None, None);
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
                | "--max-connections"
                | "--send-path"
                | "--stall-timeout"
                | "--zerocopy-min-window"
                | "--tls-cert"
                | "--tls-key"
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
            "--max-connections" => {
                cfg.max_connections = parse_number(&name, &value, 1, 1 << 20)?;
            }
            "--send-path" => cfg.send_path = SendPath::parse(&value)?,
            "--stall-timeout" => {
                let secs = parse_number(&name, &value, 1, 24 * 60 * 60)?;
                cfg.stall_timeout = std::time::Duration::from_secs(secs as u64);
            }
            "--zerocopy-min-window" => {
                cfg.zerocopy_min_window = parse_number(&name, &value, 0, 1 << 30)?;
            }
            "--tls-cert" => tls_cert = Some(PathBuf::from(value)),
            "--tls-key" => tls_key = Some(PathBuf::from(value)),
            _ => cfg.max_item_size = parse_number(&name, &value, 1, 1 << 30)?,
        }
    }
    cfg.tls = match (tls_cert, tls_key) {
        (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
        (None, None) => None,
        (Some(_), None) => return Err("--tls-cert needs --tls-key".to_string()),
        (None, Some(_)) => return Err("--tls-key needs --tls-cert".to_string()),
    };
    if cfg.tls.is_some() && cfg.send_path != SendPath::Copy {
        return Err(format!(
            "--send-path {}: TLS is served on the copy send path only",
            cfg.send_path.name()
        ));
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
        assert_eq!(cfg.max_connections, 1024);
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
            "--max-connections=10",
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
        assert_eq!(cfg.max_connections, 10);
        assert_eq!(config(&["--max-connections", "3"]).max_connections, 3);
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
    fn tls_takes_a_certificate_and_a_key_on_the_copy_path() {
        let cfg = config(&["--tls-cert", "c.pem", "--tls-key=k.pem"]);
        let files = cfg.tls.expect("TLS configured");
        assert_eq!(files.cert, PathBuf::from("c.pem"));
        assert_eq!(files.key, PathBuf::from("k.pem"));
        assert_eq!(config(&[]).tls, None);
        for (args, says) in [
            (&["--tls-cert", "c.pem"][..], "--tls-cert needs --tls-key"),
            (&["--tls-key", "k.pem"], "--tls-key needs --tls-cert"),
            (
                &["--tls-cert=c", "--tls-key=k", "--send-path=zerocopy"],
                "copy send path only",
            ),
        ] {
            match parse(args) {
                Err(e) => assert!(e.contains(says), "{args:?}: {e:?} lacks {says:?}"),
                Ok(c) => panic!("{args:?} accepted: {c:?}"),
            }
        }
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
                &["--max-connections", "0"],
                "--max-connections: '0' is not a whole number from 1",
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
