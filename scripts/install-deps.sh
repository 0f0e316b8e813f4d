#!/usr/bin/env bash
# Installs the Debian 12 packages kiln needs to build and test, if any are missing:
# LLVM 19 (the CPU code generator), lld (links kernel objects), a C toolchain (Rust's
# linker and the runtime's test kernels), and Python with venv for the reference tests
# (their `gguf` and `numpy` come from PyPI into target/pyref), and Vulkan for the SPIR-V
# backend's tests: the loader, Mesa's CPU driver (llvmpipe) and the Khronos validator
# (spirv-val). Safe to run again; prints what it installs.
set -euo pipefail

packages=(llvm-19-dev libpolly-19-dev lld-19 libzstd-dev zlib1g-dev libxml2-dev libffi-dev build-essential python3 python3-venv libvulkan1 mesa-vulkan-drivers spirv-tools)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  echo "installing: ${missing[*]}"
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "error: cargo not found; kiln needs a Rust toolchain (stable, 1.95 or newer: Cranelift 0.135 needs it) on PATH" >&2
  exit 1
fi

# The reference implementations the tests compare against (GGUF dequantization, and the
# NumPy model references of the LLM work), pinned, in a venv of their own.
cd "$(dirname "$0")/.."
pyref=target/pyref
if ! "$pyref/bin/python" -c "import gguf, numpy, regex" 2>/dev/null; then
  echo "installing the Python reference packages into $pyref"
  [ -x "$pyref/bin/pip" ] || python3 -m venv "$pyref"
  # regex: the \p{L} classes of the byte-level BPE pre-tokenizers (tests/reference/bpe_ref.py).
  "$pyref/bin/pip" install -q --disable-pip-version-check "gguf==0.19.0" "numpy>=1.26,<3" \
    "regex==2026.11.19"
fi
