#!/usr/bin/env bash
# The ~1B llama (TinyLlama-1.1B's shape, random weights from a fixed seed) on this CPU:
# compiles it, generates 32 tokens greedily with `kiln run` and compares them with the
# NumPy reference's (tests/reference/llama_ref.py), and reports tokens/s and the run's
# peak resident memory next to the file size plus the KV cache it held.
#
#   bash benches/check-1b.sh [TYPE=Q4_K_M] [TARGET=cpu:x86-64-v3]
# Writes into ${WORK:-target/check-1b}; nothing is committed.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
type=${1:-Q4_K_M}
target=${2:-cpu:x86-64-v3}
work=${WORK:-target/check-1b}
mkdir -p "$work"
gguf=$work/llama-1b-$type.gguf
art=$work/llama-1b-$type.kiln
prompt=1,450,1000,20000,5,777,31999,42
n=32
cargo build -q --release --locked --bin kiln
kiln=target/release/kiln
[ -f "$gguf" ] || "$KILN_PYTHON" benches/make_llama.py "$gguf" 1b "$type"
echo "== compile ($target)"
/usr/bin/time -f "compile: %e s, peak RSS %M KiB" "$kiln" compile "$gguf" -t "$target" -o "$art" -q
echo "== kiln run: $n greedy tokens after $prompt"
/usr/bin/time -f "run: %e s, peak RSS %M KiB" -o "$work/time.txt" \
  "$kiln" run "$art" --tokens "$prompt" -n $n --temp 0 >"$work/kiln.txt" 2>"$work/kiln.err"
cat "$work/kiln.err" "$work/time.txt"
echo "== NumPy reference"
"$KILN_PYTHON" tests/reference/llama_ref.py "$gguf" --greedy $n ${prompt//,/ } >"$work/ref.txt"
read -r -a got <"$work/kiln.txt"
read -r -a want <"$work/ref.txt"
same=0
while [ $same -lt $n ] && [ "${got[$same]:-}" = "${want[$same]:-}" ]; do same=$((same + 1)); done
echo "kiln:      ${got[*]}"
echo "reference: ${want[*]}"
echo "greedy tokens identical: $same of $n"
# The KV cache held at the end: 22 layers x (K and V) x 4 kv heads x 64 x f32 per position.
positions=$(( $(echo "$prompt" | tr ',' ' ' | wc -w) + n ))
kv=$(( 22 * 2 * 4 * 64 * 4 * positions ))
size=$(stat -c %s "$gguf")
rss=$(( $(grep -o 'peak RSS [0-9]*' "$work/time.txt" | grep -o '[0-9]*$') * 1024 ))
python3 - "$size" "$kv" "$rss" <<'PY'
import sys
size, kv, rss = map(int, sys.argv[1:])
budget = (size + kv) * 1.15
print(f"file {size / 2**20:.1f} MiB + KV cache {kv / 2**20:.2f} MiB -> budget {budget / 2**20:.1f} MiB; "
      f"peak RSS {rss / 2**20:.1f} MiB ({rss / (size + kv):.2f}x file + KV): "
      f"{'within' if rss <= budget else 'OVER'} the 15% allowance")
PY
[ $same -eq $n ]
