#!/usr/bin/env bash
# From a fresh Debian 12 machine with Rust: install what is missing, build kiln, compile
# the built-in model for this host's CPU and run it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
source scripts/env.sh

echo "==> building kiln (release)"
cargo build --release --locked
kiln=target/release/kiln

echo "==> what this build emits and this host runs"
$kiln targets

echo "==> compiling the built-in model for this host, plus portable x86-64-v2/v3 variants"
targets=(-t cpu:native)
[ "$(uname -m)" = x86_64 ] && targets+=(-t cpu:x86-64-v2 -t cpu:x86-64-v3)
$kiln compile builtin:mlp "${targets[@]}" -o target/demo.kiln
$kiln inspect target/demo.kiln

echo "==> running it on a batch of 8 deterministic inputs"
$kiln run target/demo.kiln --random-inputs batch=8 --output-dir target/demo-out --profile
echo "outputs written to target/demo-out/"
