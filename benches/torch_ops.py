"""The reference rows of `kiln bench --target cuda:...`: the same ops and shapes in PyTorch
eager (cuBLAS for matmul, TF32 off so both sides do f32 arithmetic), timed the way kiln
times its kernels (device events, fastest of many runs).

    python3 benches/torch_ops.py out.json [--quick]

Run by scripts/gpu-check.sh on the GPU machine, where PyTorch is installed.
"""
import json
import sys

import torch

torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False
# Half matmuls accumulate in f32 on both sides.
torch.backends.cuda.matmul.allow_fp16_reduced_precision_reduction = False
torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction = False
dev = "cuda"


def fastest(fn, reps=50):
    fn()
    torch.cuda.synchronize()
    best = float("inf")
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        best = min(best, a.elapsed_time(b) / 1e3)
    return best


def rnd(*shape):
    return torch.rand(*shape, device=dev, dtype=torch.float32) * 2 - 1


def cases(quick):
    sizes = [1024] if quick else [1024, 4096]
    for n in sizes:
        a, b = rnd(n, n), rnd(n, n)
        yield "matmul f32", f"{n}x{n}x{n}", lambda a=a, b=b: a @ b, ("flops", 2 * n**3)
    halves = [(1024, 1024, 1024, torch.float16)]
    if not quick:
        halves += [(4096, 4096, 4096, torch.float16), (4096, 4096, 4096, torch.bfloat16),
                   (512, 2048, 5632, torch.float16)]
    for m, k, n, dt in halves:
        a = rnd(m, k).to(dt)
        b = rnd(n, k).to(dt)
        name = "matmul bf16 nt" if dt == torch.bfloat16 else "matmul f16 nt"
        yield name, f"{m}x{k}x{n}", lambda a=a, b=b: a @ b.T, ("flops", 2 * m * k * n)
    for n, k in [(4096, 4096), (8192, 8192)]:
        w, x = rnd(n, k), rnd(1, k)
        yield "matvec f32", f"{n}x{k}", lambda w=w, x=x: x @ w.T, ("bytes", 4 * (n * k + k + n))
    x = rnd(4096, 4096)
    yield "softmax f32", "4096x4096", lambda x=x: torch.softmax(x, dim=1), ("bytes", 8 * x.numel())
    g = rnd(4096)
    yield "rms_norm f32", "4096x4096", (
        lambda x=x, g=g: torch.nn.functional.rms_norm(x, (4096,), g, 1e-5)
    ), ("bytes", 8 * x.numel())
    x, w, bias = rnd(1024, 8192), rnd(8192), rnd(8192)
    yield "fused chain f32", "1024x8192", (
        lambda x=x, w=w, bias=bias: torch.nn.functional.silu(x * w + bias) * x
    ), ("bytes", 8 * x.numel())


def main():
    out, quick = sys.argv[1], "--quick" in sys.argv
    rows = []
    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}")
    for op, shape, fn, (kind, work) in cases(quick):
        t = fastest(fn)
        rate = work / t / 1e9
        unit = "GFLOP/s" if kind == "flops" else "GB/s"
        rows.append({"op": op, "shape": shape, "seconds": t, "rate": rate, "unit": unit})
        print(f"| {op} | {shape} | torch | {t * 1e3:.3f} ms | {rate:.1f} {unit} |")
    with open(out, "w") as f:
        json.dump({"torch": torch.__version__, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
