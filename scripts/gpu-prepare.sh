#!/usr/bin/env bash
# Builds what scripts/gpu-check.sh runs on the GPU machine, into .gpu/ (ignored by git;
# pass it to the device tool's `carry`). The GPU machine has CUDA but no Rust toolchain, so
# the test binaries are built here (CUDA is loaded at run time, so they build without it),
# stripped and xz-compressed to fit the transfer limit.
#
#   bash scripts/gpu-prepare.sh      # then, on the GPU machine: bash scripts/gpu-check.sh
#   BASE=HEAD bash scripts/gpu-prepare.sh   # and the committed code's binary, for an A/B
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
out=.gpu
rm -rf "$out" && mkdir -p "$out/ptx" "$out/whl" "$out/gl"
exclude=$(git rev-parse --git-path info/exclude)
mkdir -p "$(dirname "$exclude")"
grep -qx '/.gpu/' "$exclude" 2>/dev/null || echo '/.gpu/' >>"$exclude"

echo "== PTX for every capability"
# With the kernels' grid-dependency instructions (off by default), so ptxas checks them too.
KILN_CUDA_EARLY_LAUNCH=1 KILN_PTX_DIR="$PWD/$out/ptx" cargo test -q --release --locked -p kiln-codegen --lib \
  -- every_capability_gets_its_target_and_isa_version half_matmuls_use_the_matrix_unit
ls "$out/ptx"

echo "== test binaries"
json=$(cargo test --release --locked --no-run --message-format=json \
  --test conformance --test llama_reference 2>/dev/null)
for t in conformance llama_reference; do
  bin=$(printf '%s\n' "$json" | python3 -c '
import json, sys
name = sys.argv[1]
for line in sys.stdin:
    try: m = json.loads(line)
    except ValueError: continue
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == name:
        print(m["executable"])' "$t" | tail -1)
  [ -n "$bin" ] || { echo "no test binary for $t" >&2; exit 1; }
  strip -o "$out/$t" "$bin"
  xz -T2 -6 -f "$out/$t"
done

echo "== the kiln binary (for kiln bench on the GPU)"
cargo build -q --release --locked --bin kiln
strip -o "$out/kiln" target/release/kiln
xz -T2 -6 -f "$out/kiln"

# BASE=<git revision>: also the kiln binary of that revision, as .gpu/kiln-base, which
# gpu-check.sh benchmarks beside this tree's in the same call (an A/B on one GPU).
if [ -n "${BASE:-}" ]; then
  echo "== the kiln binary of $BASE (the baseline)"
  base=$(mktemp -d)
  git worktree add -q --detach "$base" "$BASE"
  # Its own target directory: cargo names a workspace crate's outputs without its path, so
  # building the worktree into this tree's target/ overwrote this tree's libraries, and
  # cargo then linked them into later builds here as if they were fresh.
  cargo build -q --release --locked --bin kiln --manifest-path "$base/Cargo.toml" \
    --target-dir "$PWD/target/baseline"
  strip -o "$out/kiln-base" target/baseline/release/kiln
  xz -T2 -6 -f "$out/kiln-base"
  git worktree remove --force "$base"
  git -C . rev-parse --short "$BASE" >"$out/base-rev"
fi

echo "== the gguf package (pure Python) for the tiny test models"
"${KILN_PYTHON:-python3}" -m pip download -q --no-deps --only-binary=:all: -d "$out/whl" gguf==0.19.0
echo "== the Vulkan loader and GL dispatch libraries (NVIDIA's Vulkan driver needs them; the GPU image may lack them)"
lists=$(mktemp -d) && mkdir -p "$lists/partial"
apt_amd64=(-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 "-oDir::State::Lists=$lists")
apt-get "${apt_amd64[@]}" update -q >/dev/null 2>&1 || true
(cd "$out/gl" && apt-get "${apt_amd64[@]}" download libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2 2>&1 | grep -v '^W: Download is performed unsandboxed' || true)
ls "$out/gl"
du -sh "$out"
