# nix/package.nix and the flake's packages, evaluated against the stand-in
# package set: what each variant was built with (features, default targets,
# runtime inputs, install check), and that every package comes from the
# flake's one nixpkgs instance.
{
  lib ? import ./fake-nixpkgs/lib.nix,
}:
let
  h = import ./helpers.nix;
  inherit (h) eq that contains lacks throws;
  t = import ../targets.nix;

  nixpkgs = import ./fake-nixpkgs { inherit lib; };
  flake = import ../flake-outputs.nix {
    self = flake;
    inherit nixpkgs;
  };
  x86 = flake.packages.x86_64-linux;
  arm = flake.packages.aarch64-linux;
  fakes = nixpkgs.legacyPackages.x86_64-linux;

  targetsOf = p: p.env.KILN_DEFAULT_TARGETS;
  hasInput = p: dep: builtins.any (d: d.outPath == dep.outPath) p.nativeBuildInputs;

  # A package set whose nixpkgs configuration enables CUDA / ROCm, and one
  # built for a particular CPU (nixpkgs.hostPlatform.gcc.arch).
  pkgsWith = args: import ./fake-nixpkgs/pkgs.nix ({ inherit lib; } // args);
  kilnIn = pkgs: (pkgs.callPackage ../scope.nix { }).kiln;
  cudaConfigured = kilnIn (pkgsWith {
    config = {
      cudaSupport = true;
      cudaCapabilities = [ "8.6" ];
    };
  });
  rocmConfigured = kilnIn (pkgsWith { config.rocmSupport = true; });
  znver4Machine = kilnIn (pkgsWith { gccArch = "znver4"; });

  cargoVersion = (builtins.fromTOML (builtins.readFile ../../Cargo.toml)).workspace.package.version;
  allPackages = builtins.attrValues x86 ++ builtins.attrValues arm;
in
h.run {
  # --- the acceptance variants ---------------------------------------------
  rocm-gfx1100-list = eq x86.rocm-gfx1100.rocmGpuTargets [ "gfx1100" ];
  rocm-gfx1100-default-targets = eq (targetsOf x86.rocm-gfx1100) "cpu:x86-64-v2,cpu:x86-64-v3,cpu:x86-64-v4,hip:gfx1100";
  rocm-gfx1100-check-phase = contains "check_target hip:gfx1100\n" x86.rocm-gfx1100.installCheckPhase;
  rocm-gfx1100-check-phase-cpu = contains "check_target cpu:x86-64-v3\n" x86.rocm-gfx1100.installCheckPhase;
  rocm-gfx1100-features = eq x86.rocm-gfx1100.buildFeatures [ "hip" ];
  rocm-gfx1100-clr-on-rpath = contains "${fakes.rocmPackages.clr}/lib" x86.rocm-gfx1100.postFixup;
  rocm-gfx1100-lld-on-path = contains "--prefix PATH : ${fakes.llvmPackages_19.lld}/bin" x86.rocm-gfx1100.postInstall;
  rocm-gfx1100-no-cuda-hook = that (!hasInput x86.rocm-gfx1100 fakes.autoAddDriverRunpath) "ROCm variant has the CUDA driver hook";
  rocm-gfx1100-not-on-aarch64 = eq x86.rocm-gfx1100.meta.badPlatforms [ "aarch64-linux" ];
  rocm-gfx1100-description = contains "hip:gfx1100" x86.rocm-gfx1100.meta.description;

  cuda-sm90-list = eq x86.cuda-sm90.cudaCapabilities [ "9.0" ];
  cuda-sm90-default-targets = eq (targetsOf x86.cuda-sm90) "cpu:x86-64-v2,cpu:x86-64-v3,cpu:x86-64-v4,cuda:sm_90";
  cuda-sm90-check-phase = contains "check_target cuda:sm_90\n" x86.cuda-sm90.installCheckPhase;
  cuda-sm90-features = eq x86.cuda-sm90.buildFeatures [ "cuda" ];
  cuda-sm90-driver-runpath-hook = that (hasInput x86.cuda-sm90 fakes.autoAddDriverRunpath) "CUDA variant lacks autoAddDriverRunpath";
  cuda-sm90-no-extra-rpath = eq x86.cuda-sm90.postFixup "";
  cuda-sm90-no-hip = lacks "hip:" (targetsOf x86.cuda-sm90);

  cpu-x86-64-v4-list = eq x86.cpu-x86-64-v4.cpuTargets [ "x86-64-v4" ];
  cpu-x86-64-v4-default-targets = eq (targetsOf x86.cpu-x86-64-v4) "cpu:x86-64-v4";
  cpu-x86-64-v4-check-phase = contains "check_target cpu:x86-64-v4\n" x86.cpu-x86-64-v4.installCheckPhase;
  cpu-x86-64-v4-only-target-checked = lacks "check_target cpu:x86-64-v3" x86.cpu-x86-64-v4.installCheckPhase;
  cpu-x86-64-v4-features = eq x86.cpu-x86-64-v4.buildFeatures [ ];

  # --- the other variants ---------------------------------------------------
  default-targets = eq (targetsOf x86.default) "cpu:x86-64-v2,cpu:x86-64-v3,cpu:x86-64-v4";
  default-aarch64-targets = eq (targetsOf arm.default) "cpu:aarch64,cpu:neoverse-v1";
  neoverse-v1-targets = eq (targetsOf arm.cpu-neoverse-v1) "cpu:neoverse-v1";
  cuda-all-default-capabilities = eq x86.cuda.passthru.kilnTargets (
    [ "cpu:x86-64-v2" "cpu:x86-64-v3" "cpu:x86-64-v4" ] ++ map t.cuda.toTarget t.cuda.nixpkgsDefault
  );
  rocm-every-gfx = eq x86.rocm.rocmGpuTargets t.rocm.gpuTargets;
  vulkan-features = eq x86.vulkan.buildFeatures [ "vulkan" ];
  vulkan-loader-on-rpath = contains "${fakes.vulkan-loader}/lib" x86.vulkan.postFixup;
  vulkan-target = contains "vulkan:spv1.3" (targetsOf x86.vulkan);
  vulkan-runs-on-aarch64 = eq arm.vulkan.meta.badPlatforms [ ];
  variants-all-differ = eq (builtins.length (builtins.attrNames (builtins.listToAttrs (
    map (p: {
      name = targetsOf p;
      value = null;
    }) (builtins.attrValues x86)
  )))) (builtins.length (builtins.attrValues x86));

  # --- what every variant shares -------------------------------------------
  built-with-buildRustPackage = that (builtins.all (p: p.fakeBuilder == "buildRustPackage") allPackages) "a package is not built by buildRustPackage";
  cargo-lock = eq (toString x86.default.cargoLock.lockFile) (toString ../../Cargo.lock);
  llvm-19-prefix = eq x86.default.env.LLVM_SYS_191_PREFIX "${fakes.llvmPackages_19.llvm.dev}";
  llvm-link-deps = eq (map (d: d.name) x86.default.buildInputs) [
    "llvm-19.1.7"
    "libffi-3.4.8"
    "libxml2-2.14.4"
    "zlib-1.3.1"
    "ncurses-6.5"
    "zstd-1.5.7"
  ];
  lld-for-cargo-test = eq (map (d: d.name) x86.default.nativeCheckInputs) [ "lld-19.1.7" ];
  wrapper-always-has-lld = that (builtins.all (p: h.hasInfix "lld-19.1.7/bin" p.postInstall) allPackages) "a variant's wrapper lacks lld";
  install-check-enabled = that (builtins.all (p: p.doInstallCheck) allPackages) "a variant skips the install check";
  install-check-uses-installed-kiln = contains "$out/bin/kiln compile examples/mlp.kir --target \"$1\" -o \"$artifact\"" x86.default.installCheckPhase;
  install-check-inspects = contains "$out/bin/kiln inspect \"$artifact\"" x86.default.installCheckPhase;
  install-check-default-targets = contains "$out/bin/kiln compile examples/mlp.kir -o" x86.default.installCheckPhase;
  version-from-cargo = eq x86.default.version cargoVersion;
  pname = eq x86.default.pname "kiln";
  meta-license = eq x86.default.meta.license.spdxId "Apache-2.0";
  meta-main-program = eq x86.default.meta.mainProgram "kiln";
  meta-platforms = eq x86.default.meta.platforms [ "x86_64-linux" "aarch64-linux" ];
  meta-description-names-targets = eq x86.cpu-x86-64-v4.meta.description "Ahead-of-time neural-network compiler with default targets cpu:x86-64-v4";
  meta-long-description = contains "cpu:x86-64-v4" x86.cpu-x86-64-v4.meta.longDescription;
  passthru-backends = eq x86.rocm-gfx1100.backends {
    cuda = false;
    vulkan = false;
    hip = true;
  };

  # --- one nixpkgs instance -----------------------------------------------------
  stand-in-nixpkgs-cannot-be-imported = that (!(nixpkgs ? outPath)) "the stand-in nixpkgs must not be importable";
  x86-packages-from-flake-instance = that (builtins.all (p: p.fakeInstance == "legacyPackages.x86_64-linux") (builtins.attrValues x86)) "an x86_64 package comes from another package set";
  aarch64-packages-from-flake-instance = that (builtins.all (p: p.fakeInstance == "legacyPackages.aarch64-linux") (builtins.attrValues arm)) "an aarch64 package comes from another package set";

  # --- defaults from the nixpkgs configuration, and overrides ----------------
  config-cuda-default = eq cudaConfigured.passthru.kilnTargets [ "cpu:x86-64-v2" "cpu:x86-64-v3" "cpu:x86-64-v4" "cuda:sm_86" ];
  config-cuda-feature = eq cudaConfigured.buildFeatures [ "cuda" ];
  config-rocm-default-from-clr = eq rocmConfigured.rocmGpuTargets [
    "gfx906"
    "gfx908"
    "gfx90a"
    "gfx942"
    "gfx1030"
    "gfx1100"
    "gfx1101"
    "gfx1200"
    "gfx1201"
  ];
  gcc-arch-default = eq (targetsOf znver4Machine) "cpu:znver4";
  override-cuda-86 = eq (targetsOf (x86.default.override { cudaCapabilities = [ "8.6" ]; })) "cpu:x86-64-v2,cpu:x86-64-v3,cpu:x86-64-v4,cuda:sm_86";
  override-keeps-other-lists = eq (x86.rocm-gfx1100.override { cpuTargets = [ "znver4" ]; }).passthru.kilnTargets [
    "cpu:znver4"
    "hip:gfx1100"
  ];
  override-bad-gfx-throws = throws (targetsOf (x86.default.override { rocmGpuTargets = [ "gfx1337" ]; }));

  # --- source ----------------------------------------------------------------
  source-filter =
    let
      f = (import ../source.nix).filter;
      root = toString ../..;
      keep = p: type: f "${root}/${p}" type;
    in
    eq
      (map (x: keep x.p x.t) [
        { p = "Cargo.toml"; t = "regular"; }
        { p = "compiler/src/lib.rs"; t = "regular"; }
        { p = "examples/mlp.kir"; t = "regular"; }
        { p = "target"; t = "directory"; }
        { p = "result-rocm"; t = "symlink"; }
        { p = "nix"; t = "directory"; }
        { p = "flake.lock"; t = "regular"; }
        { p = "tests/out/model.kiln"; t = "regular"; }
        { p = ".git"; t = "directory"; }
      ])
      [ true true true false false false false false false ];
}
