//! The benchmark suite: the crate side by side with what a server would otherwise write.
//!
//! * `partial_write/<size>`: 64 responses (24-byte header + value) drained through random
//!   partial writes, against a copy into `Vec<u8>`, a `BytesMut` + `VecDeque<Bytes>` queue and
//!   `IoSlice::advance_slices` (`partial_write.rs`);
//! * `flatten_cpu`, `flatten_tcp_b1`, `flatten_tcp_b16`: copy versus pin for values of 64..2048
//!   bytes, with and without a real `sendmsg` (`flatten.rs`), the evidence for
//!   `DEFAULT_FLATTEN_THRESHOLD`.
//!
//! Before the timings the binary prints allocations per message in steady state and the
//! naive copy's exposure to the 4K-aliasing trap. Results and method: `BENCHMARKS.md`.
//!
//! ```text
//! cargo bench --bench bench                       # everything
//! cargo bench --bench bench -- partial_write/4KiB # one group
//! cargo bench --bench bench -- --interleaved 101  # contenders interleaved, ratio table
//! ```
//!
//! `cargo bench --bench bench -- --interleaved [ROUNDS]` runs no criterion group: it times the
//! partial-write contenders in turn, round after round, and prints the per-round ratios'
//! median (min-max) per value size, the side-by-side comparison that drift on a shared machine
//! cannot skew (`partial_write::interleaved`).
//!
//! With `SENDBUF_BENCH_PROFILE=contender:size:batches` set, the binary runs only that loop (no
//! criterion), for `valgrind --tool=callgrind --toggle-collect='*profile_loop*'`.

// `IoSlice::advance_slices` (1.81) is newer than the crate's `rust-version`; the benchmarks need
// a newer toolchain anyway (criterion's dependencies).
#![allow(clippy::incompatible_msrv)]

mod flatten;
mod partial_write;
mod util;

use criterion::Criterion;

#[global_allocator]
static ALLOC: util::CountingAlloc = util::CountingAlloc;

fn main() {
    if let Ok(spec) = std::env::var("SENDBUF_BENCH_PROFILE") {
        partial_write::profile(&spec);
        return;
    }
    let mut args = std::env::args().skip_while(|a| a != "--interleaved");
    if args.next().is_some() {
        // `cargo bench` appends `--bench`: a following flag is not a round count.
        let rounds = args
            .next()
            .filter(|r| !r.starts_with("--"))
            .map_or(201, |r| {
                r.parse()
                    .unwrap_or_else(|_| panic!("--interleaved wants a round count, got {r:?}"))
            });
        partial_write::interleaved(rounds);
        return;
    }
    let mut c = Criterion::default().configure_from_args();
    partial_write::report_steady_state();
    partial_write::register(&mut c);
    flatten::register_cpu(&mut c);
    flatten::register_tcp(&mut c);
    c.final_summary();
}
