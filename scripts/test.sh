#!/usr/bin/env bash
# The whole test suite, as CI runs it: formatting, lints, every crate's tests (the op
# conformance suite included), and the Nix evaluation tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
source scripts/env.sh

step() { printf '\n==> %s\n' "$*"; }

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (all targets, warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "the runtime alone, without the CUDA feature (what a CPU-only deployment builds)"
cargo check -p kiln-runtime --locked

step "cargo test"
# Tests that compare with the Python references fail, rather than skip, without them.
export KILN_REQUIRE_PYTHON_REFERENCE=1
# Vulkan tests run on Mesa's llvmpipe and every SPIR-V module goes through spirv-val:
# install-deps.sh provides both, so their absence is a failure here, not a skip.
export KILN_REQUIRE_VULKAN=1 KILN_REQUIRE_SPIRV_VAL=1
cargo test --workspace --locked 2>&1 | tee target/test.log
grep -q "^test result: ok" target/test.log

step "Vulkan conformance with workgroup-memory reductions (the module flavour for devices without subgroup arithmetic; llvmpipe has it, so the run above used subgroups)"
KILN_VULKAN_SUBGROUPS=0 cargo test --locked --test conformance conformance_vulkan 2>&1 | tee target/test-fallback.log
grep -q "^test result: ok. 1 passed" target/test-fallback.log

step "Nix expressions"
bash scripts/nix-tests.sh
