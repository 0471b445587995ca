//! The command line: the usage text, the settings ([`Args`]) and their parsing and checks.

use std::net::SocketAddr;

/// Upper bound on `--duration`, `--warmup` and `--hold`.
const MAX_SECS: f64 = 3600.0;

pub(crate) fn usage() -> &'static str {
    "usage: loadgen --server 127.0.0.1:PORT [--threads T] [--conns C (total)] [--depth D]\n\
     \x20              [--value-size B] [--keys K] [--get-ratio R] [--duration S] [--warmup S]\n\
     \x20              [--seed N] [--no-populate | --populate | --populate-only] [--cpu-pid PID]\n\
     \x20              [--tls]\n\
     \x20      loadgen --stream-ceiling [--streams N] [--chunk B] [--duration S] [--warmup S]\n\
     \x20      loadgen --server ADDR --idle-conns N [--value-size B] [--hold S] [--no-populate]\n\
     \x20              [--tls]\n\
     --tls: every connection speaks TLS (server name localhost, certificate not checked)"
}

/// Command-line settings.
#[derive(Debug, Clone)]
pub(crate) struct Args {
    pub(crate) server: SocketAddr,
    pub(crate) threads: usize,
    pub(crate) conns: usize,
    pub(crate) depth: usize,
    pub(crate) value_size: usize,
    pub(crate) keys: usize,
    pub(crate) get_ratio: f64,
    pub(crate) duration: f64,
    pub(crate) warmup: f64,
    pub(crate) seed: u64,
    pub(crate) populate: bool,
    pub(crate) populate_only: bool,
    pub(crate) stream_ceiling: bool,
    pub(crate) streams: usize,
    pub(crate) idle_conns: usize,
    pub(crate) hold: f64,
    pub(crate) cpu_pid: Option<u32>,
    pub(crate) chunk: usize,
    pub(crate) tls: bool,
}

pub(crate) fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        server: "127.0.0.1:11211".parse().expect("literal address"),
        threads: 1,
        conns: 16,
        depth: 1,
        value_size: 100,
        keys: 1000,
        get_ratio: 0.9,
        duration: 3.0,
        warmup: 1.0,
        seed: 0x5eed_1234_abcd_ef01,
        populate: true,
        populate_only: false,
        stream_ceiling: false,
        streams: 2,
        idle_conns: 0,
        hold: 5.0,
        cpu_pid: None,
        chunk: 1 << 20,
        tls: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) => (n.to_string(), Some(v.to_string())),
            None => (arg.clone(), None),
        };
        let mut value = |what: &str| -> Result<String, String> {
            inline
                .clone()
                .or_else(|| it.next())
                .ok_or_else(|| format!("{what} needs a value"))
        };
        fn num<T: std::str::FromStr>(name: &str, s: String) -> Result<T, String> {
            s.parse().map_err(|_| format!("{name}: bad number {s:?}"))
        }
        match name.as_str() {
            "--server" => {
                let v = value(&name)?;
                a.server = v
                    .parse()
                    .map_err(|_| format!("--server: bad address {v:?}"))?;
            }
            "--threads" => a.threads = num(&name, value(&name)?)?,
            "--conns" => a.conns = num(&name, value(&name)?)?,
            "--depth" => a.depth = num(&name, value(&name)?)?,
            "--value-size" => a.value_size = num(&name, value(&name)?)?,
            "--keys" => a.keys = num(&name, value(&name)?)?,
            "--get-ratio" => a.get_ratio = num(&name, value(&name)?)?,
            "--duration" => a.duration = num(&name, value(&name)?)?,
            "--warmup" => a.warmup = num(&name, value(&name)?)?,
            "--seed" => a.seed = num(&name, value(&name)?)?,
            "--populate" => a.populate = true,
            "--no-populate" => a.populate = false,
            "--populate-only" => a.populate_only = true,
            "--stream-ceiling" => a.stream_ceiling = true,
            "--streams" => a.streams = num(&name, value(&name)?)?,
            "--idle-conns" => a.idle_conns = num(&name, value(&name)?)?,
            "--hold" => a.hold = num(&name, value(&name)?)?,
            "--chunk" => a.chunk = num(&name, value(&name)?)?,
            "--cpu-pid" => a.cpu_pid = Some(num(&name, value(&name)?)?),
            "--tls" => a.tls = true,
            "-h" | "--help" => return Err(String::new()),
            _ => return Err(format!("unknown argument {arg:?}")),
        }
    }
    if !a.server.ip().is_loopback() {
        return Err(format!(
            "--server {}: only loopback addresses are allowed",
            a.server
        ));
    }
    if a.threads == 0 || a.threads > 64 {
        return Err("--threads must be 1..=64".into());
    }
    if a.conns < a.threads || a.conns > 100_000 {
        return Err("--conns must be at least --threads and at most 100000".into());
    }
    if a.depth == 0 || a.depth > 1024 {
        return Err("--depth must be 1..=1024".into());
    }
    if a.value_size > 64 << 20 {
        return Err("--value-size must be at most 64 MiB".into());
    }
    if a.keys == 0 || a.keys > 10_000_000 {
        return Err("--keys must be 1..=10000000".into());
    }
    if !(0.0..=1.0).contains(&a.get_ratio) {
        return Err("--get-ratio must be within 0..=1".into());
    }
    for (n, v) in [
        ("--duration", a.duration),
        ("--warmup", a.warmup),
        ("--hold", a.hold),
    ] {
        if !(0.0..=MAX_SECS).contains(&v) {
            return Err(format!("{n} must be within 0..={MAX_SECS} seconds"));
        }
    }
    if a.duration <= 0.0 {
        return Err("--duration must be positive".into());
    }
    if a.streams == 0 || a.streams > 64 {
        return Err("--streams must be 1..=64".into());
    }
    if a.chunk == 0 || a.chunk > 64 << 20 {
        return Err("--chunk must be 1..=64 MiB".into());
    }
    if a.tls && a.stream_ceiling {
        return Err("--stream-ceiling measures plain TCP; it does not take --tls".into());
    }
    if a.idle_conns > 1_000_000 {
        return Err("--idle-conns must be at most 1000000".into());
    }
    Ok(a)
}
