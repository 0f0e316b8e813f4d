#!/usr/bin/env bash
# Every check of kiln's Nix side that runs without nixpkgs and without network:
#
#   1. every .nix file parses (nix-instantiate --parse);
#   2. the Nix test files in nix/tests/ (the pure target logic, then package.nix,
#      the module, compileModel and the flake's outputs against a stand-in
#      package set that records what it was called with);
#   3. wrong lists and targets throw, with the message a user would read;
#   4. the shell the Nix files generate (install check, compileModel, module
#      check) runs against a stand-in kiln, and fails when kiln misbehaves;
#   5. the flake itself through the nix CLI: `nix flake check --no-build` and
#      `nix flake show` with nixpkgs overridden by the stand-in, and
#      `nix flake metadata --offline` reading flake.lock.
#
# Usage: bash scripts/nix-tests.sh
#   KILN_NIXPKGS_LIB=/path/to/nixpkgs   also evaluate everything against that
#       nixpkgs' real lib/ (a nixpkgs checkout or nix-community/nixpkgs.lib),
#       which checks the stand-in lib and the module against the real ones.
#
# Prints one line per check and ends with "N passed, M failed"; exits non-zero
# when anything failed. Installs nix-bin, jq and git with apt-get if missing.
set -uo pipefail
cd "$(dirname "$0")/.."
root=$PWD

# --- what this script needs ------------------------------------------------------
missing=()
command -v nix-instantiate >/dev/null || missing+=(nix-bin)
command -v jq >/dev/null || missing+=(jq)
command -v git >/dev/null || missing+=(git)
if [ ${#missing[@]} -gt 0 ]; then
  sudo=
  [ "$(id -u)" -ne 0 ] && sudo=sudo
  echo "installing ${missing[*]} with apt-get"
  $sudo apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
nix_cli=(nix --extra-experimental-features 'nix-command flakes')

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

passed=0
failed=0
pass() {
  passed=$((passed + 1))
  echo "ok   $1"
}
fail() {
  failed=$((failed + 1))
  echo "FAIL $1"
  if [ $# -gt 1 ]; then sed 's/^/       /' <<<"$2"; fi
}

# The lib variants every evaluation runs with: the stub, and nixpkgs' real lib
# when one is given.
lib_names=(stub)
lib_args=("")
if [ -n "${KILN_NIXPKGS_LIB:-}" ]; then
  if [ -f "$KILN_NIXPKGS_LIB/lib/default.nix" ]; then
    lib_names+=(nixpkgs-lib)
    lib_args+=("lib = import $(realpath "$KILN_NIXPKGS_LIB")/lib;")
  else
    fail "KILN_NIXPKGS_LIB=$KILN_NIXPKGS_LIB has no lib/default.nix"
  fi
fi

# The flake's outputs, called as Nix calls them, with the stand-in nixpkgs.
flake_expr() { # lib-arg
  echo "let nixpkgs = import $root/nix/tests/fake-nixpkgs { $1 }; flake = (import $root/flake.nix).outputs { self = flake; inherit nixpkgs; }; in flake"
}

# --- 1. every .nix file parses -------------------------------------------------
mapfile -t nix_files < <(git ls-files -co --exclude-standard -- '*.nix' 2>/dev/null | while read -r f; do [ -e "$f" ] && echo "$f"; done | sort)
[ ${#nix_files[@]} -gt 0 ] || mapfile -t nix_files < <(find . -name '*.nix' -not -path './target/*' -not -path './.git/*' | sed 's|^\./||' | sort)
for f in "${nix_files[@]}"; do
  if err=$(nix-instantiate --parse "$f" 2>&1 >/dev/null); then pass "parse $f"; else fail "parse $f" "$err"; fi
done

# --- 2. the Nix test files -------------------------------------------------------
eval_tests() { # label expression
  local out
  if ! out=$(nix-instantiate --eval --strict --json -E "$2" 2>"$work/err"); then
    fail "$1: evaluation failed" "$(tail -n 25 "$work/err")"
    return
  fi
  while IFS=$'\t' read -r name result; do
    if [ "$result" = true ]; then pass "$1: $name"; else fail "$1: $name" "$result"; fi
  done < <(jq -r 'to_entries[] | [.key, (if .value == true then "true" else (.value | tostring) end)] | @tsv' <<<"$out")
}

eval_tests targets "import $root/nix/tests/targets.nix"
for i in "${!lib_names[@]}"; do
  for t in package module compile-model flake-outputs; do
    eval_tests "${lib_names[$i]}/$t" "import $root/nix/tests/$t.nix { ${lib_args[$i]} }"
  done
  if [ "${lib_names[$i]}" = nixpkgs-lib ]; then
    eval_tests "nixpkgs-lib/names" "import $root/nix/tests/nixpkgs-lib.nix { ${lib_args[$i]} }"
  fi
done

# --- 3. wrong input throws a clear message ------------------------------------------
expect_throw() { # label expected-text expression
  local out
  if out=$(nix-instantiate --eval --strict -E "$3" 2>&1); then
    fail "$1" "evaluated instead of throwing: $out"
  elif grep -qF -- "$2" <<<"$out"; then
    pass "$1"
  else
    fail "$1" "expected the message to contain: $2"$'\n'"got: $(grep -m1 error <<<"$out")"
  fi
}
targets="import $root/nix/targets.nix"
expect_throw "throws: unknown gfx" \
  'kiln: unknown ROCm GPU target "gfx1337" in rocmGpuTargets; kiln supports "gfx906", "gfx908", "gfx90a", "gfx942", "gfx1030", "gfx1100", "gfx1101", "gfx1200", "gfx1201"' \
  "($targets).rocm.check [ \"gfx1100\" \"gfx1337\" ]"
expect_throw "throws: gfx feature" \
  'kiln: unknown feature "xnack" of "gfx90a:xnack" in rocmGpuTargets; features are xnack+, xnack-, sramecc+ or sramecc-' \
  "($targets).rocm.check [ \"gfx90a:xnack\" ]"
expect_throw "throws: capability without dot" \
  'kiln: malformed CUDA capability "89" in cudaCapabilities; write capabilities as nixpkgs does, "<major>.<minor>" with an optional "a" suffix, e.g. "8.9" or "9.0a"' \
  "($targets).cuda.check [ \"89\" ]"
expect_throw "throws: capability in kiln spelling" \
  'kiln: malformed CUDA capability "sm_89" in cudaCapabilities' \
  "($targets).cuda.check [ \"sm_89\" ]"
expect_throw "throws: unsupported capability" \
  'kiln: CUDA capability "6.1" in cudaCapabilities is not supported; kiln emits PTX for "7.0", "7.2", "7.5", "8.0", "8.6", "8.7", "8.9", "9.0", "9.0a", "10.0", "12.0"' \
  "($targets).cuda.check [ \"8.9\" \"6.1\" ]"
expect_throw "throws: unknown cpu" \
  'kiln: unknown CPU target "x86-64-v5" in cpuTargets; known x86-64 names (as in nixpkgs lib.systems.architectures)' \
  "($targets).cpu.check [ \"x86-64-v5\" ]"
expect_throw "throws: string instead of list" \
  'kiln: cpuTargets must be a list of strings such as [ "x86-64-v3" ], not a string' \
  "($targets).cpu.check \"x86-64-v3\""
expect_throw "throws: number in list" \
  'kiln: cudaCapabilities must contain only strings such as "8.9"' \
  "($targets).cuda.check [ 8.9 ]"
expect_throw "throws: no targets" \
  'kiln: no targets: give at least one of cpuTargets, cudaCapabilities, rocmGpuTargets or enableVulkan = true' \
  "($targets).check { cpuTargets = [ ]; cudaCapabilities = [ ]; rocmGpuTargets = [ ]; enableVulkan = false; }"
expect_throw "throws: enableVulkan not a bool" \
  'kiln: enableVulkan must be true or false, not a string' \
  "($targets).check { cpuTargets = [ \"x86-64\" ]; cudaCapabilities = [ ]; rocmGpuTargets = [ ]; enableVulkan = \"yes\"; }"
expect_throw "throws: unknown backend" \
  'kiln: unknown backend "tpu"; choose one of "cpu", "cuda", "vulkan", "rocm"' \
  "($targets).backendArgs { backend = \"tpu\"; }"
expect_throw "throws: compileModel cpu:native" \
  "kiln: target \"cpu:native\" would make the artifact depend on the build machine's CPU" \
  "($targets).checkTargets [ \"cpu:native\" ]"
expect_throw "throws: compileModel nixpkgs spelling" \
  'kiln: target "8.9" is not spelled <family>:<arch>' \
  "($targets).checkTargets [ \"8.9\" ]"
expect_throw "throws: compileModel unknown sm" \
  'kiln: unknown CUDA target "cuda:sm_61"; kiln emits "cuda:sm_70"' \
  "($targets).checkTargets [ \"cuda:sm_61\" ]"
expect_throw "throws: compileModel unknown family" \
  'kiln: unknown target family in "tpu:v5"; families are cpu, cuda, vulkan and hip' \
  "($targets).checkTargets [ \"tpu:v5\" ]"
for i in "${!lib_names[@]}"; do
  l=${lib_names[$i]}
  flake=$(flake_expr "${lib_args[$i]}")
  expect_throw "$l/throws: package override with unknown gfx" \
    'kiln: unknown ROCm GPU target "gfx1337" in rocmGpuTargets' \
    "($flake).packages.x86_64-linux.default.override { rocmGpuTargets = [ \"gfx1337\" ]; }"
  expect_throw "$l/throws: package override with malformed capability" \
    'kiln: malformed CUDA capability "9" in cudaCapabilities' \
    "(($flake).packages.x86_64-linux.cuda.override { cudaCapabilities = [ \"9\" ]; }).env.KILN_DEFAULT_TARGETS"
  expect_throw "$l/throws: overlay override with unknown cpu" \
    'kiln: unknown CPU target "zen4" in cpuTargets' \
    "((import $root/nix/tests/fake-nixpkgs/pkgs.nix { ${lib_args[$i]} overlays = [ ($flake).overlays.default ]; }).kilnPackages.kiln.override { cpuTargets = [ \"zen4\" ]; }).name"
  module_lib="(import $root/nix/tests/fake-nixpkgs/lib.nix)"
  [ "$l" = nixpkgs-lib ] && module_lib="(import $(realpath "${KILN_NIXPKGS_LIB:-.}")/lib)"
  nixos_options='({ lib, ... }: { options.environment.systemPackages = lib.mkOption { default = [ ]; type = lib.types.listOf lib.types.package; }; options.hardware.graphics.enable = lib.mkOption { default = false; type = lib.types.bool; }; })'
  module_cfg="(settings: ($module_lib.evalModules { specialArgs.pkgs = import $root/nix/tests/fake-nixpkgs/pkgs.nix { ${lib_args[$i]} }; modules = [ ($flake).nixosModules.default $nixos_options { programs.kiln = settings; } ]; }).config)"
  expect_throw "$l/throws: module with unknown backend" \
    'programs.kiln.backend' \
    "($module_cfg { enable = true; backend = \"tpu\"; }).environment.systemPackages"
  expect_throw "$l/throws: module with bad gfx" \
    'kiln: unknown ROCm GPU target "gfx1102" in rocmGpuTargets' \
    "(builtins.head ($module_cfg { enable = true; backend = \"rocm\"; rocmGpuTargets = [ \"gfx1102\" ]; }).environment.systemPackages).env.KILN_DEFAULT_TARGETS"
  expect_throw "$l/throws: compileModel unknown gfx" \
    'kiln: unknown ROCm GPU target "gfx1337" in rocmGpuTargets' \
    "(($flake).lib.compileModel { pkgs = import $root/nix/tests/fake-nixpkgs/pkgs.nix { ${lib_args[$i]} }; model = \"/m.kir\"; targets = [ \"hip:gfx1337\" ]; }).buildCommand"
done

# --- 4. the generated shell, run against a stand-in kiln -------------------------------
flake=$(flake_expr "")
attr() { # expression -> raw string
  nix-instantiate --eval --strict --json -E "$1" | jq -r 'if type == "array" then .[] else . end'
}

# Runs a variant's installCheckPhase the way stdenv would (set -eu, pipefail)
# in a fresh directory holding examples/mlp.kir, with $out/bin/kiln the
# stand-in and KILN_DEFAULT_TARGETS what the build compiled in.
run_install_check() { # variant dir [VAR=value ...]
  local variant=$1 dir=$2
  shift 2
  mkdir -p "$dir/out/bin" "$dir/tmp" "$dir/src/examples"
  ln -sf "$root/nix/tests/fake-kiln" "$dir/out/bin/kiln"
  echo "# stand-in model" >"$dir/src/examples/mlp.kir"
  : >"$dir/log"
  local phase defaults
  phase=$(attr "($flake).packages.x86_64-linux.$variant.installCheckPhase")
  defaults=$(attr "($flake).packages.x86_64-linux.$variant.env.KILN_DEFAULT_TARGETS")
  (cd "$dir/src" && env out="$dir/out" TMPDIR="$dir/tmp" KILN_DEFAULT_TARGETS="$defaults" \
    KILN_FAKE_LOG="$dir/log" "$@" bash -euo pipefail -c "runHook() { :; }; $phase") >"$dir/output" 2>&1
}

for variant in rocm-gfx1100 cuda-sm90 cpu-x86-64-v4 default cuda vulkan rocm; do
  dir="$work/check-$variant"
  if ! run_install_check "$variant" "$dir"; then
    fail "install check runs: $variant" "$(tail -n 15 "$dir/output")"
    continue
  fi
  problems=
  mapfile -t defaults < <(attr "($flake).packages.x86_64-linux.$variant.passthru.kilnTargets")
  for t in "${defaults[@]}"; do
    grep -qxF "kiln compile examples/mlp.kir --target $t -o $dir/tmp/mlp-$t.kiln" "$dir/log" || problems+="not compiled for $t"$'\n'
    grep -qxF "kiln inspect $dir/tmp/mlp-$t.kiln" "$dir/log" || problems+="not inspected for $t"$'\n'
  done
  grep -qxF "kiln compile examples/mlp.kir -o $dir/tmp/mlp-defaults.kiln" "$dir/log" || problems+="no compile without --target"$'\n'
  grep -qxF "kiln targets" "$dir/log" || problems+="kiln targets not run"$'\n'
  compiles=$(grep -c '^kiln compile .* --target ' "$dir/log")
  [ "$compiles" -eq "${#defaults[@]}" ] || problems+="$compiles compiles with --target for ${#defaults[@]} default targets"$'\n'
  if [ -z "$problems" ]; then
    pass "install check runs: $variant compiles and inspects ${defaults[*]}"
  else
    fail "install check runs: $variant" "$problems$(cat "$dir/log")"
  fi
done

# The install check must fail when kiln does: a target that does not compile,
# and a default target that `kiln targets` does not report.
if run_install_check rocm-gfx1100 "$work/fail-compile" KILN_FAKE_FAIL_TARGET=hip:gfx1100; then
  fail "install check fails when compiling hip:gfx1100 fails"
else
  pass "install check fails when compiling hip:gfx1100 fails"
fi
if run_install_check rocm-gfx1100 "$work/fail-targets" KILN_FAKE_HIDE_TARGET=hip:gfx1100; then
  fail "install check fails when kiln targets lacks hip:gfx1100"
elif grep -qF "kiln targets does not list default target hip:gfx1100" "$work/fail-targets/output"; then
  pass "install check fails when kiln targets lacks hip:gfx1100"
else
  fail "install check fails when kiln targets lacks hip:gfx1100" "$(cat "$work/fail-targets/output")"
fi
if run_install_check cuda-sm90 "$work/fail-defaults" KILN_DEFAULT_TARGETS=cpu:x86-64-v2; then
  fail "install check fails when the compiled-in defaults are wrong"
else
  pass "install check fails when the compiled-in defaults are wrong"
fi

# Every variant's other phases are valid shell.
for system in x86_64-linux aarch64-linux; do
  mapfile -t variants < <(attr "builtins.attrNames ($(flake_expr "")).packages.$system")
  bad=
  for v in "${variants[@]}"; do
    for p in postInstall postFixup installCheckPhase; do
      attr "($flake).packages.$system.$v.$p" >"$work/phase.sh"
      bash -n "$work/phase.sh" 2>/dev/null || bad+="$v.$p "
    done
  done
  if [ -z "$bad" ]; then pass "shell syntax of every $system variant's phases"; else fail "shell syntax ($system)" "$bad"; fi
done

# compileModel's build command, with the stand-in as `kiln` on PATH.
dir="$work/compile-model"
mkdir -p "$dir/bin" "$dir/tmp"
ln -sf "$root/nix/tests/fake-kiln" "$dir/bin/kiln"
echo "# stand-in weights" >"$dir/llama-3.2-1b.gguf"
: >"$dir/log"
cmd=$(attr "(($flake).lib.compileModel { pkgs = import $root/nix/tests/fake-nixpkgs/pkgs.nix { }; model = \"$dir/llama-3.2-1b.gguf\"; targets = [ \"cpu:znver4\" \"cuda:sm_89\" \"hip:gfx1100\" ]; }).buildCommand")
if (env PATH="$dir/bin:$PATH" out="$dir/out" TMPDIR="$dir/tmp" KILN_FAKE_LOG="$dir/log" bash -euo pipefail -c "$cmd") >"$dir/output" 2>&1 &&
  [ "$(grep -c '^target ' "$dir/out/llama-3.2-1b.kiln")" -eq 3 ] &&
  grep -qxF "target hip:gfx1100" "$dir/out/llama-3.2-1b.kiln" &&
  grep -qxF "kiln inspect $dir/out/llama-3.2-1b.kiln" "$dir/log"; then
  pass "compileModel build command writes and inspects \$out/llama-3.2-1b.kiln"
else
  fail "compileModel build command" "$(cat "$dir/output" "$dir/log" 2>/dev/null)"
fi
if (env PATH="$dir/bin:$PATH" out="$dir/out2" TMPDIR="$dir/tmp" KILN_FAKE_LOG="$dir/log" KILN_FAKE_FAIL_TARGET=cuda:sm_89 bash -euo pipefail -c "$cmd") >/dev/null 2>&1; then
  fail "compileModel build fails when kiln compile fails"
else
  pass "compileModel build fails when kiln compile fails"
fi

# The module check's build command records each backend's selection.
dir="$work/module-check"
mkdir -p "$dir"
cmd=$(attr "($flake).checks.x86_64-linux.module.buildCommand")
summary=$(attr "($flake).checks.x86_64-linux.module.summary")
if (env out="$dir/out" summary="$summary" bash -euo pipefail -c "$cmd") >"$dir/output" 2>&1 &&
  [ "$(wc -l <"$dir/out")" -eq 4 ] && grep -qxF "backend rocm: cpu:x86-64-v2,cpu:x86-64-v3,cpu:x86-64-v4,hip:gfx1100" "$dir/out"; then
  pass "module check build command writes one line per backend"
else
  fail "module check build command" "$(cat "$dir/output" "$dir/out" 2>/dev/null)"
fi

# --- 5. the flake through the nix CLI ----------------------------------------------------
# Flakes see only files git tracks, so this needs the Nix files added to git.
if git ls-files --error-unmatch flake.nix flake.lock nix/flake-outputs.nix nix/tests/fake-nixpkgs/flake.nix >/dev/null 2>&1; then
  override=(--override-input nixpkgs "path:$root/nix/tests/fake-nixpkgs" --no-write-lock-file)
  for i in "${!lib_names[@]}"; do
    l=${lib_names[$i]}
    impure=()
    [ "$l" = nixpkgs-lib ] && impure=(--impure)
    if out=$("${nix_cli[@]}" flake check --no-build "${impure[@]}" "${override[@]}" 2>&1); then
      pass "$l/nix flake check --no-build (stand-in nixpkgs)"
    else
      fail "$l/nix flake check --no-build" "$(grep -v '^warning' <<<"$out" | tail -n 15)"
    fi
    if show=$("${nix_cli[@]}" flake show --json "${impure[@]}" "${override[@]}" 2>"$work/err"); then
      names=$(jq -r '.packages["x86_64-linux"] | keys | join(" ")' <<<"$show")
      want=$(attr "builtins.attrNames (($targets).variants \"x86_64-linux\")" | sort | tr '\n' ' ' | sed 's/ $//')
      got=$(tr ' ' '\n' <<<"$names" | sort | tr '\n' ' ' | sed 's/ $//')
      if [ "$got" = "$want" ] && jq -e '.nixosModules.default and .overlays.default and .apps["x86_64-linux"].kiln and .devShells["aarch64-linux"].default' <<<"$show" >/dev/null; then
        pass "$l/nix flake show lists every generated package, the module, overlay, apps and shells"
      else
        fail "$l/nix flake show" "packages: $got"$'\n'"expected: $want"
      fi
    else
      fail "$l/nix flake show" "$(tail -n 15 "$work/err")"
    fi
  done
  # Reading flake.lock offline proves it matches flake.nix's input (a stale
  # lock would make Nix re-lock, which needs the network).
  if meta=$("${nix_cli[@]}" flake metadata --offline --json 2>"$work/err") &&
    [ "$(jq -r '.locks.nodes.nixpkgs.locked.rev' <<<"$meta")" = "$(jq -r '.nodes.nixpkgs.locked.rev' flake.lock)" ]; then
    pass "nix flake metadata --offline reads the pinned nixpkgs $(jq -r '.nodes.nixpkgs.locked.rev' flake.lock)"
  else
    fail "nix flake metadata --offline" "$(tail -n 10 "$work/err")"
  fi
else
  fail "nix flake CLI checks" "flake.nix, flake.lock or nix/ are not tracked by git, and flakes only see tracked files: git add them first"
fi

echo
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
