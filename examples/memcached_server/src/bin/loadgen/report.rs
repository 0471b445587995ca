//! What a run measured and how it is printed: latencies, counts, CPU time, the result lines.

use std::io;
use std::process::ExitCode;
use std::time::Duration;

use crate::args::Args;

/// Latency histogram in nanoseconds: 64 sub-buckets per power of two (about 1.5% resolution).
#[derive(Clone)]
pub(crate) struct Histogram {
    counts: Vec<u64>,
    total: u64,
}

impl Histogram {
    fn new() -> Histogram {
        Histogram {
            counts: vec![0; 128 + 58 * 64],
            total: 0,
        }
    }

    fn bucket(ns: u64) -> usize {
        if ns < 128 {
            return ns as usize;
        }
        let msb = 63 - ns.leading_zeros() as usize; // >= 7
        let shift = msb - 6;
        128 + (shift - 1) * 64 + ((ns >> shift) & 63) as usize
    }

    /// The midpoint of bucket `b`, in nanoseconds.
    fn value(b: usize) -> f64 {
        if b < 128 {
            return b as f64;
        }
        let shift = (b - 128) / 64 + 1;
        let sub = ((b - 128) % 64) as u64;
        (((64 + sub) << shift) as f64) + ((1u64 << shift) as f64) / 2.0
    }

    pub(crate) fn record(&mut self, d: Duration) {
        let ns = d.as_nanos().min(u64::MAX as u128) as u64;
        self.counts[Self::bucket(ns)] += 1;
        self.total += 1;
    }

    fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.total += other.total;
    }

    /// The `q` quantile (0..=1) in microseconds; 0 when empty.
    fn quantile_us(&self, q: f64) -> f64 {
        if self.total == 0 {
            return 0.0;
        }
        let rank = ((self.total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (b, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Self::value(b) / 1000.0;
            }
        }
        0.0
    }
}

/// What went wrong, counted per kind.
#[derive(Default, Clone, Copy)]
pub(crate) struct Errors {
    pub(crate) status: u64,
    pub(crate) protocol: u64,
    pub(crate) closed: u64,
    pub(crate) stalled: u64,
}

impl Errors {
    pub(crate) fn total(&self) -> u64 {
        self.status + self.protocol + self.closed + self.stalled
    }

    fn add(&mut self, o: &Errors) {
        self.status += o.status;
        self.protocol += o.protocol;
        self.closed += o.closed;
        self.stalled += o.stalled;
    }
}

/// Counters for the counted window (or the populate step).
#[derive(Clone)]
pub(crate) struct Counts {
    pub(crate) gets: u64,
    pub(crate) sets: u64,
    pub(crate) misses: u64,
    pub(crate) value_bytes: u64,
    pub(crate) errors: Errors,
    pub(crate) latency: Histogram,
}

impl Counts {
    pub(crate) fn new() -> Counts {
        Counts {
            gets: 0,
            sets: 0,
            misses: 0,
            value_bytes: 0,
            errors: Errors::default(),
            latency: Histogram::new(),
        }
    }

    fn ops(&self) -> u64 {
        self.gets + self.sets
    }

    pub(crate) fn merge(&mut self, o: &Counts) {
        self.gets += o.gets;
        self.sets += o.sets;
        self.misses += o.misses;
        self.value_bytes += o.value_bytes;
        self.errors.add(&o.errors);
        self.latency.merge(&o.latency);
    }
}

/// CPU time of process `pid` so far (all threads), from `/proc/PID/stat`.
#[derive(Clone, Copy)]
pub(crate) struct CpuTime {
    user: Duration,
    system: Duration,
}

impl CpuTime {
    fn total(self) -> Duration {
        self.user + self.system
    }

    /// The time spent between `earlier` and `self`.
    pub(crate) fn since(self, earlier: CpuTime) -> CpuTime {
        CpuTime {
            user: self.user.saturating_sub(earlier.user),
            system: self.system.saturating_sub(earlier.system),
        }
    }
}

pub(crate) fn process_cpu(pid: u32) -> io::Result<CpuTime> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name (field 2) may contain spaces; fields after its closing ')' are plain.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no ')' in stat"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, i.e. 11 and 12 after the ')'.
    let ticks = |i: usize| -> io::Result<u64> {
        fields
            .get(i)
            .and_then(|f| f.parse().ok())
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "short stat line"))
    };
    // SAFETY: `sysconf` only reads a configuration value; no pointers are involved.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = if hz > 0 { hz as u64 } else { 100 };
    let time = |t: u64| Duration::from_nanos(t * 1_000_000_000 / hz);
    Ok(CpuTime {
        user: time(ticks(11)?),
        system: time(ticks(12)?),
    })
}

/// Prints the load run's two result lines (for machines, then for people) and returns the exit
/// status: 1 if any error was counted, 2 if no operation completed.
pub(crate) fn print_run(args: &Args, total: &Counts, cpu: Option<(CpuTime, CpuTime)>) -> ExitCode {
    let ops = total.ops();
    let secs = args.duration;
    let e = total.errors;
    // Each side's CPU time over the window, as a fraction of one CPU: a side near 1.0 (or
    // near its thread count) is what limits the run.
    let cpu_field = match cpu {
        Some((server, client)) if ops > 0 => {
            let per_op = |d: Duration| d.as_secs_f64() * 1e6 / ops as f64;
            format!(
                " server_cpu_us_per_op={:.3} server_user_us_per_op={:.3} \
                 server_sys_us_per_op={:.3} server_cpu_util={:.2} client_cpu_util={:.2}",
                per_op(server.total()),
                per_op(server.user),
                per_op(server.system),
                server.total().as_secs_f64() / secs,
                client.total().as_secs_f64() / secs
            )
        }
        _ => String::new(),
    };
    println!(
        "ops={ops} ops_per_sec={:.0} gets={} sets={} misses={} errors={} p50_us={:.1} p99_us={:.1} \
         value_mb_per_sec={:.1} secs={secs} threads={} conns={} depth={} value_size={} \
         keys={}{cpu_field}",
        ops as f64 / secs,
        total.gets,
        total.sets,
        total.misses,
        e.total(),
        total.latency.quantile_us(0.50),
        total.latency.quantile_us(0.99),
        total.value_bytes as f64 / secs / 1e6,
        args.threads,
        args.conns,
        args.depth,
        args.value_size,
        args.keys,
    );
    println!(
        "loadgen {}: {:.0} ops/s ({} B values, {} conns x depth {}, {} thread(s), {:.0}% gets), \
         p50 {:.1} us, p99 {:.1} us; {} misses, {} errors (status {}, protocol {}, closed {}, \
         stalled {})",
        args.server,
        ops as f64 / secs,
        args.value_size,
        args.conns,
        args.depth,
        args.threads,
        args.get_ratio * 100.0,
        total.latency.quantile_us(0.50),
        total.latency.quantile_us(0.99),
        total.misses,
        e.total(),
        e.status,
        e.protocol,
        e.closed,
        e.stalled,
    );
    if e.total() > 0 {
        ExitCode::from(1)
    } else if ops == 0 {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    }
}
