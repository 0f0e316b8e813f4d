#!/usr/bin/env python3
"""Summarises an Nsight Compute CSV (`ncu --csv --print-units base --metrics
gpu__time_duration.sum,dram__bytes_read.sum,dram__bytes_write.sum`) of one kiln run: the
kernels' summed time and DRAM traffic, and per kernel (a layer's kernels are shared, so a
name covers every layer's launch) the time, launches, bytes and achieved bandwidth,
largest first."""

import csv
import re
import sys
from collections import defaultdict


def number(text: str) -> float:
    return float(text.replace(",", "")) if text.strip() else 0.0


def main(path: str) -> None:
    kernels: dict[str, dict] = {}
    with open(path, newline="") as f:
        # ncu writes its own notes (==PROF== ...) before the table.
        lines = [l for l in f if l.startswith('"')]
    for row in csv.DictReader(lines):
        k = kernels.setdefault(row["ID"], {"name": row["Kernel Name"]})
        k[row["Metric Name"]] = number(row["Metric Value"])
    if not kernels:
        sys.exit(f"{path}: no kernels in the profile")
    per_kernel = defaultdict(lambda: [0.0, 0, 0.0])
    total_ns = total_bytes = 0.0
    for k in kernels.values():
        ns = k.get("gpu__time_duration.sum", 0.0)
        b = k.get("dram__bytes_read.sum", 0.0) + k.get("dram__bytes_write.sum", 0.0)
        name = re.sub(r"^kiln_", "", k["name"])
        per_kernel[name][0] += ns
        per_kernel[name][1] += 1
        per_kernel[name][2] += b
        total_ns += ns
        total_bytes += b
    print(
        f"    {len(kernels)} kernels, {total_ns / 1e3:.1f} us in kernels, "
        f"{total_bytes / 1e6:.1f} MB of DRAM traffic, {total_bytes / total_ns:.0f} GB/s over their time"
    )
    print("    | kernel | launches | us | MB | GB/s |")
    print("    | --- | ---: | ---: | ---: | ---: |")
    for name, (ns, n, b) in sorted(per_kernel.items(), key=lambda kv: -kv[1][0])[:14]:
        print(f"    | {name} | {n} | {ns / 1e3:.1f} | {b / 1e6:.2f} | {b / ns if ns else 0:.0f} |")


if __name__ == "__main__":
    main(sys.argv[1])
