#!/usr/bin/env bash
# kiln next to llama.cpp on this machine's CPU, side by side in one run, on the same GGUF
# files: llama.cpp's `llama-bench` against `kiln bench`, prefill (ppP) and decode (tgN)
# tokens per second and the ratio kiln / llama.cpp.
#
# llama.cpp comes from the llama-cpp-python source distribution on PyPI (pinned below, its
# sha256 checked), built for this CPU with CPU backends only, under target/llamacpp (not
# committed, built once). The models are written by benches/make_llama.py (random weights,
# fixed seed) unless given.
#
#   benches/compare-llamacpp.sh                      # 125m in F16 and Q8_0, 2 threads
#   MODELS="125m:Q8_0 1b:Q8_0" THREADS=2 benches/compare-llamacpp.sh
#   benches/compare-llamacpp.sh my-model.gguf ...    # your own files
#   KILN_FLAGS=--quantize-activations benches/compare-llamacpp.sh   # kiln compile flags
#
# Writes the table to stdout and, with JSON=path, both tools' raw results.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh

VERSION=0.3.36
SHA256=832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e
PROMPT=${PROMPT:-128}
GEN=${GEN:-64}
REPS=${REPS:-3}
THREADS=${THREADS:-$(nproc)}
TARGET=${TARGET:-cpu:native}
KILN_FLAGS=${KILN_FLAGS:-}
work=target/llamacpp
mkdir -p "$work/models"
py=target/pyref/bin/python
[ -x "$py" ] || bash scripts/install-deps.sh >/dev/null
bench=$work/build/bin/llama-bench

if [ ! -x "$bench" ]; then
  echo "== building llama.cpp $VERSION (from llama-cpp-python's sdist) for this CPU" >&2
  tarball=$work/llama_cpp_python-$VERSION.tar.gz
  if [ ! -f "$tarball" ]; then
    url=$("$py" - "$VERSION" <<'EOF'
import json, sys, urllib.parse, urllib.request
# The simple repository API (PEP 691): what every PyPI mirror serves.
base = "https://pypi.org/simple/llama-cpp-python/"
req = urllib.request.Request(base, headers={"Accept": "application/vnd.pypi.simple.v1+json"})
meta = json.load(urllib.request.urlopen(req, timeout=60))
(u,) = [f["url"] for f in meta["files"] if f["filename"] == f"llama_cpp_python-{sys.argv[1]}.tar.gz"]
print(urllib.parse.urljoin(base, u))
EOF
)
    curl -sSfL --retry 3 -o "$tarball.part" "$url"
    mv "$tarball.part" "$tarball"
  fi
  echo "$SHA256  $tarball" | sha256sum -c --quiet
  rm -rf "$work/src" && mkdir -p "$work/src"
  tar xzf "$tarball" -C "$work/src" --strip-components=1
  # cmake from PyPI if the machine has none.
  if ! command -v cmake >/dev/null; then
    "$py" -m pip install -q --disable-pip-version-check cmake
    export PATH=$PWD/target/pyref/bin:$PATH
  fi
  # On CPUs with AMX (Sapphire Rapids and later) -march=native builds ggml's AMX matmul,
  # which crashed on the VM this was measured on (SIGSEGV in ggml_backend_amx_mul_mat at
  # the first matmul: the guest reports AMX but does not run it); llama.cpp is then built
  # without AMX and uses its AVX-512 VNNI kernels, as kiln does.
  cflags=
  grep -qw amx_tile /proc/cpuinfo 2>/dev/null && cflags="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
  cmake -S "$work/src/vendor/llama.cpp" -B "$work/build" -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_C_FLAGS="$cflags" -DCMAKE_CXX_FLAGS="$cflags" \
    -DGGML_NATIVE=ON -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
    -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_TOOLS=ON -DBUILD_SHARED_LIBS=OFF >"$work/cmake.log" 2>&1 ||
    { tail -20 "$work/cmake.log" >&2; exit 1; }
  cmake --build "$work/build" --target llama-bench -j "$(nproc)" >"$work/build.log" 2>&1 ||
    { tail -20 "$work/build.log" >&2; exit 1; }
fi

cargo build -q --release --locked --bin kiln
kiln=target/release/kiln

files=("$@")
if [ ${#files[@]} -eq 0 ]; then
  for spec in ${MODELS:-125m:F16 125m:Q8_0}; do
    f=$work/models/llama-${spec/:/-}.gguf
    [ -f "$f" ] || "$py" benches/make_llama.py "$f" ${spec/:/ } >&2
    files+=("$f")
  done
fi

echo "machine: $(nproc) hardware threads ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)); $THREADS threads; kiln target $TARGET ${KILN_FLAGS:+($KILN_FLAGS)}; llama.cpp $VERSION (llama-cpp-python sdist)"
echo
echo "| model | test | llama.cpp t/s | kiln t/s | kiln / llama.cpp |"
echo "|---|---|---:|---:|---:|"
raw=()
for f in "${files[@]}"; do
  name=$(basename "$f" .gguf)
  flags_tag=$(echo "$KILN_FLAGS" | tr -c 'a-z0-9\n' '_')
  art=$work/models/$name.${TARGET//:/-}${flags_tag:+.$flags_tag}.kiln
  # shellcheck disable=SC2086 # KILN_FLAGS is a list of flags
  [ "$art" -nt "$f" ] && [ "$art" -nt "$kiln" ] || "$kiln" compile "$f" -t "$TARGET" $KILN_FLAGS -o "$art" -q
  # One model at a time, the two tools one after the other, so they share the machine's state.
  lj=$("$bench" -m "$f" -p "$PROMPT" -n "$GEN" -r "$REPS" -t "$THREADS" -o json 2>/dev/null)
  kj=$(mktemp)
  "$kiln" bench "$art" -p "$PROMPT" -n "$GEN" -r "$REPS" --threads "$THREADS" --json "$kj" >/dev/null
  raw+=("{\"model\": \"$name\", \"llama_cpp\": $lj, \"kiln\": $(cat "$kj")}")
  "$py" - "$name" "$lj" "$kj" "$PROMPT" "$GEN" <<'EOF'
import json, sys
name, lj, kj, p, n = sys.argv[1], json.loads(sys.argv[2]), json.load(open(sys.argv[3])), int(sys.argv[4]), int(sys.argv[5])
def llama(test):
    for r in lj:
        if (test == "pp" and r["n_prompt"] > 0 and r["n_gen"] == 0) or (test == "tg" and r["n_gen"] > 0 and r["n_prompt"] == 0):
            return r["avg_ts"], r["stddev_ts"]
def kiln(test):
    rows = kj["rows"]
    for r in rows:
        if r["test"].startswith(test):
            return r["tokens_per_second"], r["stddev"]
for test, label in (("pp", f"pp{p}"), ("tg", f"tg{n}")):
    (a, sa), (b, sb) = llama(test), kiln(test)
    print(f"| {name} | {label} | {a:.2f} ± {sa:.2f} | {b:.2f} ± {sb:.2f} | {b / a:.2f}x |")
EOF
  rm -f "$kj"
done
if [ -n "${JSON:-}" ]; then
  (IFS=,; echo "[${raw[*]}]") >"$JSON"
fi
