#!/usr/bin/env bash
# Runs on the GPU machine, from the repository root, with .gpu/ from scripts/gpu-prepare.sh:
# the device's facts, `ptxas` on the PTX of every capability, the op conformance suite and
# the tiny-model tests on the GPU through CUDA and through Vulkan, kernel benchmarks next to
# PyTorch, and whole-model benchmarks on both APIs. Writes report.md and logs under $OUT.
#
# Knobs (environment): SKIP_CUDA_TESTS=1, SKIP_KERNEL_BENCH=1 leave parts out; MODELS
# (size:type pairs, or none), MODEL_TARGETS and TORCH_MODELS=0 choose the model runs;
# GRAPH_AB=0 drops each model's second run without replay (CUDA graphs, Vulkan's recorded
# command buffer); MODEL_AB="VAR=VALUE ..." benchmarks each model again under each setting
# (VAR=V,VAR2=W: several at once)
# (e.g. KILN_GPU_ORDER=serial, KILN_VULKAN_DISPATCH=direct); NCU=1 profiles one CUDA decode
# step under Nsight Compute (and each MODEL_AB setting's; NCU_KERNEL=<regex> one kernel's
# first launch under the full set of sections); PROFILE_PAST="64 1024" the cached lengths one decode step is
# profiled at, kernel by kernel; QUICK=1 leaves out sm_75, carry and Vulkan kernel runs;
# SKIP_VULKAN_TESTS=1 the Vulkan suites; SKIP_CONFORMANCE=1 the op suites of both APIs;
# MODEL_AB_TARGETS the targets MODEL_AB applies to; MATVEC_PROFILE=1 profiles the 8192 x 8192 matvecs;
# MATMUL_KNOBS="VAR=VALUE ..." benchmarks the half matmuls under other blockings;
# MATMUL_PROFILE=1 profiles the f16 matmul at 4096^3; CUDA_ARCH=sm_90a compiles the kernel
# benchmarks, matmul runs and profile for that capability instead of the GPU's own;
# CUDA_VARIANTS / VULKAN_VARIANTS run suites again under settings (see below). With
# .gpu/kiln-base (BASE=<rev> scripts/gpu-prepare.sh) the quantized matvecs and every model
# are benchmarked with that binary too.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu-report}
# At most a few files come back from the GPU machine: the report, the benchmark JSON, and
# every log in one archive.
LOGS=$(mktemp -d)
mkdir -p "$OUT"
report=$OUT/report.md
trap 'tar czf "$OUT/logs.tgz" -C "$LOGS" . 2>/dev/null' EXIT
bin=/tmp/kiln-gpu
mkdir -p $bin
status=0
note() { echo "$*" | tee -a "$report"; }

: >"$report"
note "# kiln gpu-check, $(date -u +%Y-%m-%dT%H:%MZ)"
note '```'
nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv 2>&1 | tee -a "$report"
(nvcc --version | tail -2) 2>&1 | tee -a "$report"
note '```'

if [ ! -d .gpu ]; then
  note "no .gpu/: run scripts/gpu-prepare.sh first and carry .gpu"
  exit 1
fi

# SKIP_CUDA_TESTS=1 leaves out ptxas and the CUDA test suites (to re-run the rest within
# one call's time after they passed earlier in the session).
note "## ptxas per capability"
[ "${SKIP_CUDA_TESTS:-0}" = 1 ] && note "(skipped: SKIP_CUDA_TESTS=1)"
for f in .gpu/ptx/*.ptx; do
  [ "${SKIP_CUDA_TESTS:-0}" = 1 ] && break
  sm=$(basename "$f" .ptx)
  if [ "${sm#half-}" != "$sm" ]; then
    # The half matmuls on the matrix unit (half-large-*: the large matmuls' plan): registers
    # and spills per kernel.
    ptxas -v -arch="${sm##*-}" -o /tmp/$sm.cubin "$f" 2>&1 |
      grep -E "Compiling|registers|spill|wgmma|warning|error" |
      sed 's/^ptxas info *: /    /' >"$LOGS/ptxas-$sm.log"
    note "- $sm (half matmuls): $(grep -c 'Used' "$LOGS/ptxas-$sm.log") kernels; $(grep -A2 '_matmul' "$LOGS/ptxas-$sm.log" | tail -3 | tr '\n' ' ')"
    # ptxas serialises warpgroup instructions it cannot prove safe to overlap, and says so.
    grep -iE "wgmma|warning|error" "$LOGS/ptxas-$sm.log" | head -5 | sed 's/^/    /' | tee -a "$report"
    continue
  fi
  if msg=$(ptxas -arch="$sm" -o /tmp/$sm.cubin "$f" 2>&1); then
    note "- $sm: assembled ($(stat -c %s /tmp/$sm.cubin) bytes of SASS)"
  else
    note "- $sm: ptxas failed: $(echo "$msg" | head -2 | tr '\n' ' ')"
  fi
done

for t in conformance llama_reference kiln kiln-base; do
  [ -f .gpu/$t.xz ] || continue
  python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' \
    .gpu/$t.xz $bin/$t
  chmod +x $bin/$t
done
# The baseline binary (BASE=<rev> scripts/gpu-prepare.sh), benchmarked beside this tree's.
base=
[ -x $bin/kiln-base ] && base="baseline $(cat .gpu/base-rev 2>/dev/null)"
python3 -m pip install -q --no-index --no-deps --target /tmp/site .gpu/whl/*.whl 2>&1 | tail -1
export PYTHONPATH=/tmp/site KILN_PYTHON=python3 KILN_SOURCE_DIR=$PWD
export KILN_REQUIRE_CUDA=1 KILN_REQUIRE_PYTHON_REFERENCE=1
# The CPU side of the model tests links kernels with ld.lld; this image has GNU ld, which
# takes the same arguments for x86-64 objects.
if ! command -v ld.lld >/dev/null && ! command -v ld.lld-19 >/dev/null; then
  export KILN_LLD=$(command -v ld)
fi

run_test() { # name binary filter
  local name=$1 b=$2 filter=$3
  if [ ! -x $bin/$b ]; then
    note "- $name: skipped (no $b binary: .gpu was carried without it)"
    return
  fi
  # A hung kernel must not take the whole call: TEST_TIMEOUT seconds a suite.
  if timeout "${TEST_TIMEOUT:-300}" $bin/$b "$filter" --nocapture --test-threads=1 >"$LOGS/$name.log" 2>&1; then
    note "- $name: passed"
  else
    note "- $name: FAILED (see $name.log)"
    status=1
  fi
  grep -E "CUDA device|Vulkan device|conformance cases|NMSE|identical|failed|panicked" "$LOGS/$name.log" | head -20 | sed 's/^/    /' | tee -a "$report"
}
# One decode step (past=64) of artifact $1 under Nsight Compute, clocks left alone: each
# kernel's time and DRAM bytes, summed by kernel name ($2 names the logs, $3 more VAR=VALUE
# settings).
# NCU_KERNEL=<regex>: that kernel's first launch also under the full set of sections.
ncu_step() {
  local art=$1 tag=$2 settings=$3
  note "  one decode step under Nsight Compute (clocks left alone)${settings:+, $settings}:"
  if env $settings KILN_CUDA_GRAPHS=0 timeout 300 ncu --clock-control none --csv --print-units base \
      --metrics gpu__time_duration.sum,dram__bytes_read.sum,dram__bytes_write.sum \
      --log-file "$OUT/ncu-$tag.csv" \
      $bin/kiln run $art --random-inputs seq=1,past=64,picked=1 >"$LOGS/ncu-$tag.log" 2>&1; then
    python3 scripts/ncu_summary.py "$OUT/ncu-$tag.csv" 2>&1 | tee -a "$report"
  else
    note "  ncu failed (see ncu-$tag.log)"; tail -3 "$LOGS/ncu-$tag.log" | tee -a "$report"
  fi
  if [ -n "${NCU_KERNEL:-}" ]; then
    env $settings KILN_CUDA_GRAPHS=0 timeout 200 ncu --clock-control none --set full --import-source no \
      -k "regex:${NCU_KERNEL}" --launch-count 1 -f -o "$LOGS/ncu-full-$tag" \
      $bin/kiln run $art --random-inputs seq=1,past=64,picked=1 >"$LOGS/ncu-full-$tag.log" 2>&1
    ncu -i "$LOGS/ncu-full-$tag.ncu-rep" --page details >"$OUT/ncu-full-$tag.txt" 2>&1
    note "  $NCU_KERNEL: $(grep -E ' Duration|DRAM Throughput|Registers Per|Achieved Occupancy|Block Size|Grid Size' "$OUT/ncu-full-$tag.txt" | tr -s ' ' | tr '\n' ';')"
    rm -f "$LOGS/ncu-full-$tag.ncu-rep"
  fi
}
# ONLY_MODELS=1 runs just the model benchmarks (MODELS, on MODEL_TARGETS). QUICK=1 leaves
# out what a short lease can spare: CUDA conformance on sm_75 PTX, the carry tests and the
# Vulkan kernel benchmarks.
only_models=${ONLY_MODELS:-0}
quick=${QUICK:-0}
note "## tests on the GPU"
if [ "$only_models" = 1 ]; then
  note "(skipped: ONLY_MODELS=1)"
elif [ "${SKIP_CUDA_TESTS:-0}" = 1 ]; then
  note "(CUDA suites skipped: SKIP_CUDA_TESTS=1)"
else
  # SKIP_CONFORMANCE=1 leaves out the op suites (a short lease about the models' kernels).
  [ "${SKIP_CONFORMANCE:-0}" = 1 ] || run_test conformance-cuda conformance conformance_cuda
  # SKIP_MODEL_TESTS=1 leaves out the tiny-model tests (a short lease about kernels).
  if [ "${SKIP_MODEL_TESTS:-0}" != 1 ]; then
    run_test llama-cuda llama_reference cuda_matches_the_cpu_backend
    run_test llama-cuda-q8-activations llama_reference cuda_quantized_activations_match
  fi
  # CUDA_VARIANTS="VAR=VAL ...": the CUDA conformance suite again under each setting (the
  # compile-time knobs of the lowering, e.g. KILN_GPU_DOT_THREADS=64; several at once
  # joined by commas). By default the large matmuls' plan (lower/matrix.rs), which the
  # suite's shapes are too small to take.
  for v in ${CUDA_VARIANTS-KILN_GPU_MMA_LARGE=1}; do
    (export ${v//,/ }; status=0
     run_test "conformance-cuda-$v" conformance conformance_cuda; exit $status) || status=1
  done
  if [ "$quick" != 1 ]; then
    # Older PTX, compiled by the driver for this GPU at load time.
    KILN_CUDA_TARGET=cuda:sm_75 run_test conformance-cuda-sm_75 conformance conformance_cuda
    run_test carry-cuda llama_reference carried_inputs_grow_and_keep_their_rows_on_cuda
  fi
fi

cap=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1 | tr -d .)
# CUDA_ARCH (e.g. sm_90a) compiles the kernel benchmarks and matmul runs for that
# capability instead of the GPU's own (sm_90a has Hopper's warpgroup matrix instructions).
arch=${CUDA_ARCH:-sm_$cap}
note "## Vulkan on the same GPU"
# The loader and the GL dispatch libraries NVIDIA's Vulkan driver (libGLX_nvidia) needs are
# carried in .gpu/gl when the image lacks them; the driver and its ICD file come with the GPU.
if ! ldconfig -p | grep -q libvulkan.so.1 || ! ldconfig -p | grep -q libGLdispatch.so.0; then
  for f in .gpu/gl/*.deb; do dpkg -x "$f" /; done
  ldconfig
fi
nv=/usr/local/nvidia/share
[ -z "${VK_DRIVER_FILES:-}" ] && [ -f $nv/vulkan/icd.d/nvidia_icd.json ] &&
  export VK_DRIVER_FILES=$nv/vulkan/icd.d/nvidia_icd.json
[ -f $nv/glvnd/egl_vendor.d/10_nvidia.json ] &&
  export __EGL_VENDOR_LIBRARY_FILENAMES=$nv/glvnd/egl_vendor.d/10_nvidia.json
$bin/kiln targets 2>&1 | grep '^vulkan' | sed 's/^/    /' | tee -a "$report"
export KILN_REQUIRE_VULKAN=1
if [ "$only_models" != 1 ]; then
# SKIP_VULKAN_TESTS=1 leaves out the Vulkan suites (a call about CUDA kernels).
if [ "${SKIP_VULKAN_TESTS:-0}" = 1 ]; then
  note "(Vulkan suites skipped: SKIP_VULKAN_TESTS=1)"
else
[ "${SKIP_CONFORMANCE:-0}" = 1 ] || run_test conformance-vulkan conformance conformance_vulkan
run_test llama-vulkan llama_reference vulkan_matches_the_cpu_backend
[ "$quick" = 1 ] || run_test carry-vulkan llama_reference carried_inputs_grow_and_keep_their_rows_on_vulkan
fi
# VULKAN_VARIANTS="VAR=VAL ...": the Vulkan conformance suite and model tests again under
# each setting (several at once joined by commas): the lowering's compile-time knobs
# (KILN_GPU_SPLIT_STEPS=1), or to tell which part of the driver's path a failure depends
# on (KILN_VULKAN_SUBGROUPS=0, KILN_GPU_ORDER=serial, KILN_VULKAN_REPLAY=0).
for v in ${VULKAN_VARIANTS:-}; do
  (export ${v//,/ }; status=0
   run_test "conformance-vulkan-$v" conformance conformance_vulkan
   run_test "llama-vulkan-$v" llama_reference vulkan_matches_the_cpu_backend; exit $status) || status=1
done
# SKIP_KERNEL_BENCH=1 leaves out the kernel benchmarks (for runs about the models).
if [ "${SKIP_KERNEL_BENCH:-0}" = 1 ]; then
  note "## kernel benchmarks skipped (SKIP_KERNEL_BENCH=1)"
else
note "## kernels: kiln next to PyTorch eager (one run)"
if $bin/kiln bench --target "cuda:$arch" --seconds "${BENCH_SECONDS:-0.5}" \
    --json "$OUT/kiln-bench.json" >"$LOGS/kiln-bench.log" 2>&1 &&
  python3 benches/torch_ops.py "$OUT/torch-bench.json" >"$LOGS/torch-bench.log" 2>&1; then
  python3 benches/gpu_table.py "$OUT/kiln-bench.json" "$OUT/torch-bench.json" | tee -a "$report"
else
  note "benchmarks failed:"; tail -5 "$LOGS/kiln-bench.log" "$LOGS/torch-bench.log" | tee -a "$report"
  status=1
fi
note "## kernels on Vulkan (SPIR-V), same GPU"
if [ "$quick" = 1 ]; then
  note "(skipped: QUICK=1)"
elif $bin/kiln bench --target vulkan:spv1.3 --seconds "${BENCH_SECONDS:-0.5}" \
    --json "$OUT/vulkan-bench.json" >"$LOGS/vulkan-bench.log" 2>&1; then
  grep -E '^\||^device' "$LOGS/vulkan-bench.log" | tee -a "$report"
else
  note "vulkan benchmarks failed:"; tail -5 "$LOGS/vulkan-bench.log" | tee -a "$report"
  status=1
fi
fi
fi
# VULKAN_MATVEC_KNOBS="VAR=VAL ...": Vulkan's quantized matvecs under each compile-time
# setting (several at once joined by commas), next to the defaults (and the baseline's,
# with .gpu/kiln-base), even with QUICK=1 or SKIP_KERNEL_BENCH=1.
[ -z "${VULKAN_MATVEC_KNOBS:-}" ] || note "## Vulkan's quantized matvecs under other settings"
for knob in ${VULKAN_MATVEC_KNOBS:+default ${base:+baseline} $VULKAN_MATVEC_KNOBS}; do
  note "### $knob"
  who=kiln settings=$knob
  [ "$knob" = baseline ] && who=kiln-base settings=default
  env $([ "$settings" = default ] || echo "$settings" | tr , ' ') $bin/$who bench --target vulkan:spv1.3 \
    --only "matvec q" --seconds "${BENCH_SECONDS:-0.5}" >"$LOGS/vulkan-matvec-$knob.log" 2>&1
  grep -E '^\| matvec|copy' "$LOGS/vulkan-matvec-$knob.log" | tee -a "$report"
done
# MATMUL_KNOBS: the half matmuls again under each compile-time setting of the tiled
# matrix-unit kernel (KILN_GPU_MMA_WARPS_M/_N, KILN_GPU_MMA_STAGES, KILN_GPU_MMA_WARP_COLS;
# several at once joined by commas), next to the default.
if [ -n "${MATMUL_KNOBS:-}" ]; then
  note "## half matmuls under other blockings (cuda:$arch)"
  for knob in default ${MATMUL_KNOBS}; do
    note "### $knob"
    env $([ "$knob" = default ] || echo "$knob" | tr , ' ') $bin/kiln bench --target "cuda:$arch" \
      --only '16 nt' --seconds "${BENCH_SECONDS:-0.5}" >"$LOGS/matmul-$knob.log" 2>&1
    grep -E '^\| matmul' "$LOGS/matmul-$knob.log" | tee -a "$report"
  done
fi
if [ -n "$base" ]; then
  # Interleaved, this tree / baseline / this tree, so a drift of the GPU's clocks shows.
  note "## matvecs on cuda:sm_$cap: this tree next to the $base"
  for who in kiln kiln-base kiln; do
    note "### $who"
    $bin/$who bench --target "cuda:sm_$cap" --only matvec --seconds "${BENCH_SECONDS:-0.5}" \
      >"$LOGS/matvec-$who.log" 2>&1
    grep -E '^\| matvec|copy' "$LOGS/matvec-$who.log" | tee -a "$report"
  done
fi
# MATVEC_PROFILE=1: decode's largest matvec shape (8192 x 8192; a 1B llama's down
# projection) in q8_0 and q4_k under Nsight Compute's full set of sections, with the SASS
# of the kernel, and the matvec benchmark under each setting of the knobs below.
if [ "${MATVEC_PROFILE:-0}" = 1 ]; then
  note "## matvec profile (cuda:sm_$cap)"
  # Each compile-time knob of the decode matvecs against the defaults: the f32 form's step
  # cap, columns per block (every block reads the activation row through L1), and a
  # register cap that leaves room for 1024 threads a multiprocessor (nvptx.rs).
  # MATVEC_KNOBS overrides the list; MATVEC_NCU=0 leaves out the Nsight Compute runs.
  for knob in ${MATVEC_KNOBS:-KILN_GPU_STEP_BYTES=8 KILN_GPU_STEP_BYTES=32 KILN_GPU_DOT_COLUMNS=2 KILN_CUDA_RESIDENT_THREADS=1024}; do
    note "### $knob"
    env $knob $bin/kiln bench --target "cuda:sm_$cap" --only matvec \
      --seconds "${BENCH_SECONDS:-0.5}" >"$LOGS/matvec-$knob.log" 2>&1
    grep -E '^\| matvec|copy' "$LOGS/matvec-$knob.log" | tee -a "$report"
  done
  for spec in q8_0:8704 q4_k:4608; do
    [ "${MATVEC_NCU:-1}" = 1 ] || break
    fmt=${spec%:*} row=${spec#*:}
    printf 'kir 1\n%%x = input "x" f32[1,8192]\n%%r = param "w" u8[8192,%s]\n%%w = dequant %%r format=%s\n%%y = matmul %%x, %%w transpose_a=false transpose_b=true\noutput "y" = %%y\n' \
      "$row" "$fmt" >/tmp/mv-$fmt.kir
    $bin/kiln compile /tmp/mv-$fmt.kir -t "cuda:sm_$cap" -o /tmp/mv-$fmt.kiln -q --seed 1 &&
      timeout 240 ncu --set full -k regex:matmul --launch-count 1 -f -o "$OUT/ncu-mv-$fmt" \
        $bin/kiln run /tmp/mv-$fmt.kiln --random-inputs >"$LOGS/ncu-mv-$fmt.log" 2>&1
    ncu -i "$OUT/ncu-mv-$fmt.ncu-rep" --page details >"$OUT/ncu-mv-$fmt.txt" 2>&1
    ncu -i "$OUT/ncu-mv-$fmt.ncu-rep" --page source --print-source sass --csv >"$OUT/sass-mv-$fmt.csv" 2>&1
    note "### $fmt: $(grep -E 'Duration|DRAM Throughput|Memory Throughput' "$OUT/ncu-mv-$fmt.txt" | head -3 | tr -s ' ' | tr '\n' ';')"
  done
fi
# MATMUL_PROFILE=1: the f16 matmul at 4096^3 (C = A B^T) under Nsight Compute's full set of
# sections, with the SASS and the stall reasons of each instruction; MATMUL_PROFILE_KNOBS
# ("VAR=V,VAR=V ...", each item one compile) profiles other blockings too.
if [ "${MATMUL_PROFILE:-0}" = 1 ]; then
  note "## matmul profile (cuda:$arch)"
  printf 'kir 1\n%%a = input "a" f16[4096,4096]\n%%b = param "b" f16[4096,4096]\n%%c = matmul %%a, %%b transpose_a=false transpose_b=true\noutput "c" = %%c\n' >/tmp/mm.kir
  for knobs in default ${MATMUL_PROFILE_KNOBS:-}; do
    tag=mm-${knobs//[=,]/-}
    settings=${knobs//,/ }
    [ "$knobs" = default ] && settings=
    env $settings $bin/kiln compile /tmp/mm.kir -t "cuda:$arch" -o /tmp/$tag.kiln -q --seed 1 &&
      timeout 240 ncu --set full --import-source no -k regex:matmul --launch-count 1 -f -o "$OUT/ncu-$tag" \
        $bin/kiln run /tmp/$tag.kiln --random-inputs >"$LOGS/ncu-$tag.log" 2>&1
    ncu -i "$OUT/ncu-$tag.ncu-rep" --page details >"$OUT/ncu-$tag.txt" 2>&1
    ncu -i "$OUT/ncu-$tag.ncu-rep" --page source --print-source sass --csv >"$OUT/sass-$tag.csv" 2>&1
    ncu -i "$OUT/ncu-$tag.ncu-rep" --page raw | grep -E 'warp_issue_stalled.*per_warp_active|pipe_tensor|inst_executed_pipe|l1tex__data_bank|shared_op' >"$OUT/raw-$tag.txt" 2>&1
    rm -f "$OUT/ncu-$tag.ncu-rep"
    note "### $knobs: $(grep -E ' Duration|Compute \(SM\) Throughput|Achieved Occupancy|No Eligible|Registers Per' "$OUT/ncu-$tag.txt" | tr -s ' ' | tr '\n' ';')"
  done
fi
note "## models: kiln bench (pp512, tg128) on the GPU"
mkdir -p /tmp/models
note "| model | size | params | target | threads | test | t/s |"
note "| --- | ---: | ---: | --- | ---: | ---: | ---: |"
# MODELS: size:type pairs, comma-separated (none: skip the models).
models=${MODELS:-125m:F16,125m:Q8_0,1b:Q8_0,1b:F16}
[ "$models" = none ] && models=
for spec in $(echo "$models" | tr ',' ' '); do
  set -- ${spec/:/ }
  m=/tmp/models/llama-$1-$2
  if ! timeout 300 python3 benches/make_llama.py $m.gguf $1 $2 >"$LOGS/make-$1-$2.log" 2>&1; then
    note "- llama-$1 $2: could not write the model (see make-$1-$2.log)"
    status=1
    continue
  fi
  # Both GPU targets of one GGUF, each benchmarked on its own.
  for target in ${MODEL_TARGETS:-cuda:sm_$cap vulkan:spv1.3}; do
    tag=$1-$2-${target%%:*}
    if timeout 400 $bin/kiln compile $m.gguf -t "$target" -o $m.kiln -q >"$LOGS/compile-$tag.log" 2>&1 &&
      timeout 300 $bin/kiln bench $m.kiln -p 512 -n 128 -r 3 --json "$LOGS/model-$tag.json" >"$LOGS/model-$tag.log" 2>&1; then
      tail -2 "$LOGS/model-$tag.log" | tee -a "$report"
      # One decode step's kernels, timed one by one: the GPU time a step cannot go below.
      # PROFILE_PAST: the cached lengths to profile at (attention's kernels grow with it).
      for past in ${PROFILE_PAST:-64}; do
        prof="$LOGS/profile-$tag-$past.log"
        if timeout 120 $bin/kiln run $m.kiln --random-inputs seq=1,past=$past,picked=1 --profile \
            >/dev/null 2>"$prof"; then
          awk -v past=$past '/^  [^ ]+ +[0-9.]+ us$/ { n++; t += $2 } END {
            printf "    decode step at past=%d, kernels timed one by one: %d launches, %.1f us in kernels\n", past, n, t }' "$prof" | tee -a "$report"
          awk '/^  [^ ]+ +[0-9.]+ us$/ { op = $1; sub(/^k[0-9]+_/, "", op); k[op] += $2; c[op]++ } END {
            for (x in k) printf "%12.1f us %4d x %s\n", k[x], c[x], x }' "$prof" |
            sort -rn | head -10 | sed 's/^/    /' | tee -a "$report"
        fi
      done
      # What NVIDIA's Vulkan compiler made of each kernel (registers, spills; Nsight Compute
      # does not profile Vulkan compute): KILN_VULKAN_STATS=1 prints the driver's pipeline
      # statistics as each pipeline is built.
      if [ "${target%%:*}" = vulkan ]; then
        KILN_VULKAN_STATS=1 timeout 120 $bin/kiln run $m.kiln --random-inputs seq=1,past=64,picked=1 \
          >/dev/null 2>"$LOGS/stats-$tag.log"
        note "    driver's statistics of the decode kernels (all in stats-$tag.log):"
        grep -E '^vulkan: k[0-9]+_' "$LOGS/stats-$tag.log" | head -12 | cut -c1-240 | sed 's/^/    /' | tee -a "$report"
      fi
      # One decode step's kernels under Nsight Compute (hardware counters where the
      # machine's runtime allows them): each kernel's time and DRAM bytes.
      if [ "${NCU:-0}" = 1 ] && [ "${target%%:*}" = cuda ]; then
        ncu_step $m.kiln "$tag" ""
      fi
      # The same without replaying recorded launches (CUDA: kernel by kernel; Vulkan: the
      # command buffer recorded every run), for the replay's share of the figure.
      if [ "${GRAPH_AB:-1}" = 1 ]; then
        case ${target%%:*} in
          cuda) knob=KILN_CUDA_GRAPHS ;;
          vulkan) knob=KILN_VULKAN_REPLAY ;;
          *) knob= ;;
        esac
        if [ -n "$knob" ]; then
          note "  without replay ($knob=0):"
          env $knob=0 timeout 300 $bin/kiln bench $m.kiln -p 512 -n 128 -r 3 \
            >"$LOGS/model-$tag-noreplay.log" 2>&1 && tail -2 "$LOGS/model-$tag-noreplay.log" | tee -a "$report"
        fi
      fi
      # The baseline binary on the same model and target.
      if [ -n "$base" ]; then
        note "  $base:"
        timeout 400 $bin/kiln-base compile $m.gguf -t "$target" -o $m-base.kiln -q >"$LOGS/compile-$tag-base.log" 2>&1 &&
          timeout 300 $bin/kiln-base bench $m-base.kiln -p 512 -n 128 -r 3 >"$LOGS/model-$tag-base.log" 2>&1 &&
          tail -2 "$LOGS/model-$tag-base.log" | tee -a "$report"
        rm -f $m-base.kiln
      fi
      # MODEL_AB: more settings to compare, each a VAR=VALUE run again on its own
      # (KILN_CUDA_* on CUDA only, KILN_VULKAN_* on Vulkan only, others on both; a
      # `cuda/` or `vulkan/` prefix keeps any setting to that API).
      for ab in ${MODEL_AB:-}; do
        # MODEL_AB_TARGETS: the targets the settings apply to (default: every one).
        case " ${MODEL_AB_TARGETS:-$target} " in *" $target "*) ;; *) continue ;; esac
        case "$ab" in
          cuda/* | vulkan/*) [ "${target%%:*}" = "${ab%%/*}" ] || continue; ab=${ab#*/} ;;
        esac
        case "$ab" in
          KILN_CUDA_*) [ "${target%%:*}" = cuda ] || continue ;;
          KILN_VULKAN_*) [ "${target%%:*}" = vulkan ] || continue ;;
        esac
        note "  with $ab:"
        abtag=${ab//[=,]/-}
        # Compiled again under the setting too, for the compiler's (KILN_NORMS_IN_PLACE).
        env ${ab//,/ } timeout 400 $bin/kiln compile $m.gguf -t "$target" -o $m-ab.kiln -q \
          >"$LOGS/compile-$tag-$abtag.log" 2>&1 &&
          env ${ab//,/ } timeout 300 $bin/kiln bench $m-ab.kiln -p 512 -n 128 -r 3 \
            >"$LOGS/model-$tag-$abtag.log" 2>&1 && tail -2 "$LOGS/model-$tag-$abtag.log" | tee -a "$report"
        # NCU=1: the setting's decode step under Nsight Compute too.
        if [ "${NCU:-0}" = 1 ] && [ "${target%%:*}" = cuda ] && [ -f $m-ab.kiln ] &&
          [ "${ab#KILN_CUDA_SKIP}" = "$ab" ]; then
          ncu_step $m-ab.kiln "$tag-$abtag" "${ab//,/ }"
        fi
        rm -f $m-ab.kiln
      done
    else
      rc=$?
      why="rc $rc"
      [ $rc = 124 ] && why="timed out; KILN_VULKAN_TRACE=1 names slow pipeline builds"
      note "- llama-$1 $2 on $target: failed, $why (see compile/model-$tag.log)"
      tail -3 "$LOGS/model-$tag.log" "$LOGS/compile-$tag.log" 2>/dev/null | tee -a "$report"
      status=1
    fi
    rm -f $m.kiln
  done
  # PyTorch eager on the same weights (f16; quantized files dequantized), for the side by side.
  if [ "${TORCH_MODELS:-1}" = 1 ]; then
    if timeout 300 python3 benches/torch_llama.py $m.gguf >"$LOGS/torch-$1-$2.log" 2>&1; then
      grep '^|' "$LOGS/torch-$1-$2.log" | tee -a "$report"
    else
      note "- llama-$1 $2 in PyTorch: failed (see torch-$1-$2.log)"; tail -3 "$LOGS/torch-$1-$2.log" | tee -a "$report"
    fi
  fi
  rm -f $m.gguf
done
exit $status
