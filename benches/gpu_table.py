"""Side-by-side table of `kiln bench --target cuda:... --json` and benches/torch_ops.py
output (both from one gpu-check run): kiln's rate, PyTorch's, and their ratio.

    python3 benches/gpu_table.py kiln.json torch.json
"""
import json
import sys

kiln = json.load(open(sys.argv[1]))
torch = json.load(open(sys.argv[2]))
ref = {(r["op"], r["shape"]): r for r in torch["rows"]}
copy = kiln["copy_bandwidth_gbs_by_threads"]["1"]
print(f"device copy bandwidth {copy:.0f} GB/s (read + write); target {kiln['target']}; torch {torch['torch']}")
print()
print("| op | shape | kiln | PyTorch eager | kiln / PyTorch | kiln vs copy bandwidth |")
print("|---|---|---:|---:|---:|---:|")
for r in kiln["rows"]:
    t = ref.get((r["op"], r["shape"]))
    unit = r["unit"]
    bw = f"{100 * r['rate'] / copy:.0f}%" if unit == "GB/s" else ""
    if t:
        print(f"| {r['op']} | {r['shape']} | {r['rate']:.1f} {unit} | {t['rate']:.1f} {unit} "
              f"| {r['rate'] / t['rate']:.2f}x | {bw} |")
    else:
        print(f"| {r['op']} | {r['shape']} | {r['rate']:.1f} {unit} | | | {bw} |")
