#!/usr/bin/env python3
"""Turns criterion's saved estimates into the tables of BENCHMARKS.md.

    python3 benches/summarize.py [target/criterion]

Reads every <group>/<bench>/new/{benchmark,estimates}.json under the criterion directory and
prints, in ns per message (criterion's median of the per-iteration time divided by the
elements of the group's throughput):

* partial_write: each contender per value size, the ratios the crate sets targets for, and
  whether each target is met;
* flatten_*: copy versus pin per value size, pin - copy per message, and the crossover.
"""

import json
import os
import sys

SIZES = ["0B", "100B", "4KiB", "64KiB", "1MiB"]
CONTENDERS = ["sendbuf", "naive_copy", "bytes_queue", "std_advance_slices"]


def load(root):
    """{full_id: ns per element (median)}"""
    out = {}
    for dirpath, _dirs, files in os.walk(root):
        if os.path.basename(dirpath) != "new" or "benchmark.json" not in files:
            continue
        with open(os.path.join(dirpath, "benchmark.json")) as f:
            bench = json.load(f)
        with open(os.path.join(dirpath, "estimates.json")) as f:
            est = json.load(f)
        elements = (bench.get("throughput") or {}).get("Elements", 1)
        out[bench["full_id"]] = est["median"]["point_estimate"] / elements
    return out


def fmt(ns):
    return f"{ns:,.1f}" if ns < 100 else f"{ns:,.0f}"


def verdict(ok):
    return "met" if ok else "**missed**"


def partial_write(res):
    rows = []
    for size in SIZES:
        r = {c: res.get(f"partial_write/{size}/{c}") for c in CONTENDERS}
        if all(v is not None for v in r.values()):
            rows.append((size, r))
    if not rows:
        return
    print("### partial_write: ns per message (median), 64 messages per batch\n")
    print("| value | sendbuf | naive_copy | bytes_queue | std_advance_slices "
          "| sendbuf / std | bytes / sendbuf | sendbuf / naive | naive / sendbuf "
          "| std_owned | sendbuf / std_owned |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for size, r in rows:
        s = r["sendbuf"]
        # std_owned (std plus an Arc clone per value) is a reference, not a target.
        owned = res.get(f"partial_write/{size}/std_owned")
        owned_cells = (f"{fmt(owned)} | {s / owned:.2f}x" if owned else "- | -")
        print(f"| {size} | {fmt(s)} | {fmt(r['naive_copy'])} | {fmt(r['bytes_queue'])} "
              f"| {fmt(r['std_advance_slices'])} | {s / r['std_advance_slices']:.2f}x "
              f"| {r['bytes_queue'] / s:.2f}x | {s / r['naive_copy']:.2f}x "
              f"| {r['naive_copy'] / s:.2f}x | {owned_cells} |")
    print()
    print("| target | per size | verdict |")
    print("|---|---|---|")
    t1 = [(z, r["sendbuf"] / r["std_advance_slices"]) for z, r in rows]
    print("| at most 1.5x std `advance_slices`, every size | "
          + ", ".join(f"{z} {x:.2f}x" for z, x in t1)
          + f" | {verdict(all(x <= 1.5 for _, x in t1))} |")
    t2 = [(z, r["bytes_queue"] / r["sendbuf"]) for z, r in rows]
    print("| at least 3x faster than the `bytes` queue | "
          + ", ".join(f"{z} {x:.2f}x" for z, x in t2)
          + f" | {verdict(all(x >= 3 for _, x in t2))} |")
    t3 = [(z, r["sendbuf"] / r["naive_copy"]) for z, r in rows if z in ("0B", "100B")]
    print("| at most 2x naive copy up to 100 B | "
          + ", ".join(f"{z} {x:.2f}x" for z, x in t3)
          + f" | {verdict(all(x <= 2 for _, x in t3))} |")
    t4 = [(z, r["naive_copy"] / r["sendbuf"]) for z, r in rows if z == "64KiB"]
    print("| at least 20x faster than naive copy at 64 KiB | "
          + ", ".join(f"{z} {x:.1f}x" for z, x in t4)
          + f" | {verdict(all(x >= 20 for _, x in t4))} |")
    print()


def flatten(res, group):
    sizes = sorted({int(k.split("/")[-1]) for k in res if k.startswith(group + "/")})
    if not sizes:
        return
    print(f"### {group}: ns per message (median)\n")
    print("| value | copy | pin | pin - copy | pin / copy |")
    print("|---:|---:|---:|---:|---:|")
    crossover = None
    for size in sizes:
        c, p = res.get(f"{group}/copy/{size}"), res.get(f"{group}/pin/{size}")
        if c is None or p is None:
            continue
        if crossover is None and p <= c:
            crossover = size
        print(f"| {size} | {fmt(c)} | {fmt(p)} | {p - c:+,.1f} | {p / c:.2f}x |")
    print()
    where = f"{crossover} B" if crossover is not None else f"above {sizes[-1]} B"
    print(f"Smallest size where pin is not slower than copy: {where}.\n")


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.environ.get("CARGO_TARGET_DIR", "target"), "criterion")
    res = load(root)
    partial_write(res)
    for group in ("flatten_cpu", "flatten_tcp_b1", "flatten_tcp_b16"):
        flatten(res, group)


if __name__ == "__main__":
    main()
