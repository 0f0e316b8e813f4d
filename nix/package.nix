# kiln, parameterised by the targets it compiles for by default.
#
# The four lists below are the whole interface: they decide which optional
# backends are built, which runtime libraries kiln can find, which targets
# `kiln compile` uses without `--target` (and `kiln targets` shows), and which
# targets the install check compiles for. Every flake package, the overlay's
# `kilnPackages.kiln.override { ... }` and the NixOS module are this one
# function with different lists.
#
# The kiln binary itself stays generic (no -march): a target is data passed to
# LLVM at `kiln compile` time, so changing a list changes defaults and the
# backends, never how kiln is compiled.
let
  targets = import ./targets.nix;
  cargoToml = builtins.fromTOML (builtins.readFile ../Cargo.toml);
in
{
  lib,
  config,
  stdenv,
  rustPlatform,
  llvmPackages_19,
  libffi,
  libxml2,
  zlib,
  ncurses,
  zstd,
  makeWrapper,
  autoAddDriverRunpath,
  vulkan-loader,
  rocmPackages,

  # nixpkgs names (lib.systems.architectures), e.g. [ "x86-64-v3" "znver4" ].
  # Defaults to the CPU a system is built for (nixpkgs.hostPlatform.gcc.arch),
  # else to every level of the platform, chosen among at run time.
  cpuTargets ? targets.cpu.defaultsFor {
    system = stdenv.hostPlatform.system;
    gccArch = stdenv.hostPlatform.gcc.arch or null;
  },

  # nixpkgs spelling, e.g. [ "8.9" "9.0" ]. Empty unless the nixpkgs
  # configuration enables CUDA, then the configuration's list.
  cudaCapabilities ?
    if config.cudaSupport or false then targets.cuda.defaultsFrom config else [ ],

  # e.g. [ "gfx1100" ]. Empty unless the nixpkgs configuration enables ROCm,
  # then the ROCm package set's list.
  rocmGpuTargets ?
    if config.rocmSupport or false then
      targets.rocm.defaultsFrom {
        inherit config;
        inherit (rocmPackages) clr;
      }
    else
      [ ],

  enableVulkan ? false,
}:

let
  chosen = targets.check {
    inherit
      cpuTargets
      cudaCapabilities
      rocmGpuTargets
      enableVulkan
      ;
  };
  uses = targets.backends chosen;
  defaultTargets = targets.defaultTargets chosen;

  # ld.lld links every code object kiln makes (CPU shared objects and AMD code
  # objects alike; see codegen/src/link.rs), so it is on the wrapped kiln's
  # PATH in every variant, from the same LLVM release kiln generates code with.
  lld = llvmPackages_19.lld;

  # Libraries kiln dlopens at run time. They are not DT_NEEDED, so the rpath
  # entries are added after fixup's --shrink-rpath, which would drop them.
  # libcuda is not here: it belongs to the driver, found through
  # autoAddDriverRunpath (/run/opengl-driver/lib) on NixOS.
  runtimeLibraries = lib.optional uses.vulkan vulkan-loader ++ lib.optional uses.hip rocmPackages.clr;

  # One shell function call per target, so the build log and the tests show
  # exactly which targets were compiled and inspected. The spellings were
  # checked by targets.nix and contain only [A-Za-z0-9:._+-]: safe unquoted.
  checkCalls = lib.concatMapStrings (t: "check_target ${t}\n") defaultTargets;
in
rustPlatform.buildRustPackage {
  pname = "kiln";
  version = cargoToml.workspace.package.version;

  inherit (import ./source.nix) src;
  cargoLock.lockFile = ../Cargo.lock;

  buildFeatures = targets.features chosen;

  strictDeps = true;

  nativeBuildInputs = [ makeWrapper ] ++ lib.optional uses.cuda autoAddDriverRunpath;

  # LLVM 19 and what its static libraries link against.
  buildInputs = [
    llvmPackages_19.llvm
    libffi
    libxml2
    zlib
    ncurses
    zstd
  ];

  # cargo test links CPU kernels too.
  nativeCheckInputs = [ lld ];

  env = {
    LLVM_SYS_191_PREFIX = "${llvmPackages_19.llvm.dev}";
    # Read by kiln's build: the targets `kiln compile` uses without --target.
    KILN_DEFAULT_TARGETS = builtins.concatStringsSep "," defaultTargets;
  };

  postInstall = ''
    wrapProgram $out/bin/kiln --prefix PATH : ${lib.makeBinPath [ lld ]}
  '';

  postFixup = lib.optionalString (runtimeLibraries != [ ]) ''
    patchelf --add-rpath ${lib.makeLibraryPath runtimeLibraries} $out/bin/.kiln-wrapped
  '';

  # cargo test is the check phase. The install check then uses the installed,
  # wrapped kiln the way a user will: compile the conformance model for every
  # default target and have `kiln inspect` validate each artifact (hashes,
  # sections, targets). Compiling needs no GPU, so this runs on any builder;
  # running on the devices is the GPU suite's job.
  doInstallCheck = true;
  installCheckPhase = ''
    runHook preInstallCheck
    export HOME=$TMPDIR

    check_target() {
      local artifact="$TMPDIR/mlp-$1.kiln"
      echo "kiln install check: compiling examples/mlp.kir for $1"
      $out/bin/kiln compile examples/mlp.kir --target "$1" -o "$artifact"
      $out/bin/kiln inspect "$artifact"
    }
    ${checkCalls}
    # Without --target, kiln compiles for the compiled-in defaults, and both
    # `kiln targets` and the artifact name every one of them.
    $out/bin/kiln targets > "$TMPDIR/kiln-targets.txt"
    $out/bin/kiln compile examples/mlp.kir -o "$TMPDIR/mlp-defaults.kiln"
    $out/bin/kiln inspect "$TMPDIR/mlp-defaults.kiln" > "$TMPDIR/mlp-defaults.txt"
    for t in ${builtins.concatStringsSep " " defaultTargets}; do
      grep -qF -- "$t" "$TMPDIR/kiln-targets.txt" \
        || { echo "kiln targets does not list default target $t"; exit 1; }
      grep -qF -- "$t" "$TMPDIR/mlp-defaults.txt" \
        || { echo "artifact compiled without --target lacks default target $t"; exit 1; }
    done

    runHook postInstallCheck
  '';

  # The lists as given and as kiln spells them, for other Nix code (the
  # module, compileModel, fleet configurations) to read instead of repeating.
  passthru = chosen // {
    kilnTargets = defaultTargets;
    backends = uses;
  };

  meta = {
    description = targets.describe chosen;
    longDescription = ''
      kiln compiles neural-network graphs (GGUF, safetensors, .kir) ahead of
      time into one artifact holding code per target: CPU code per
      instruction-set level, PTX per CUDA capability, SPIR-V for Vulkan and AMD
      code objects per gfx target. This build's default targets are
      ${builtins.concatStringsSep ", " defaultTargets}; any other target can
      still be named with --target.
    '';
    license = lib.licenses.asl20;
    mainProgram = "kiln";
    platforms = targets.systems;
    # nixpkgs packages ROCm's runtime for x86_64 only.
    badPlatforms = lib.optionals uses.hip [ "aarch64-linux" ];
  };
}
