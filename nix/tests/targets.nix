# The pure target logic (nix/targets.nix): builtins only, no package set.
let
  t = import ../targets.nix;
  h = import ./helpers.nix;
  inherit (h) eq that throws;
  sorted = builtins.sort builtins.lessThan;
  variantsX86 = t.variants "x86_64-linux";
  variantsArm = t.variants "aarch64-linux";
  none = {
    cpuTargets = [ ];
    cudaCapabilities = [ ];
    rocmGpuTargets = [ ];
    enableVulkan = false;
  };
in
h.run {
  # --- spellings -----------------------------------------------------------
  cuda-8-9-is-sm_89 = eq (t.cuda.toTarget "8.9") "cuda:sm_89";
  cuda-9-0a-is-sm_90a = eq (t.cuda.toTarget "9.0a") "cuda:sm_90a";
  cuda-7-0-is-sm_70 = eq (t.cuda.toTarget "7.0") "cuda:sm_70";
  cuda-10-0-is-sm_100 = eq (t.cuda.toTarget "10.0") "cuda:sm_100";
  cuda-12-0-is-sm_120 = eq (t.cuda.toTarget "12.0") "cuda:sm_120";
  cuda-supported-spellings = eq (map t.cuda.toTarget t.cuda.supported) [
    "cuda:sm_70"
    "cuda:sm_72"
    "cuda:sm_75"
    "cuda:sm_80"
    "cuda:sm_86"
    "cuda:sm_87"
    "cuda:sm_89"
    "cuda:sm_90"
    "cuda:sm_90a"
    "cuda:sm_100"
    "cuda:sm_120"
  ];
  rocm-gfx1100-is-hip = eq (t.rocm.toTarget "gfx1100") "hip:gfx1100";
  cpu-x86-64-v3-is-cpu = eq (t.cpu.toTarget "x86-64-v3") "cpu:x86-64-v3";
  cuda-package-names = eq (map t.cuda.packageName [ "8.0" "8.9" "9.0" "9.0a" "12.0" ]) [
    "cuda-sm80"
    "cuda-sm89"
    "cuda-sm90"
    "cuda-sm90a"
    "cuda-sm120"
  ];
  rocm-package-name = eq (t.rocm.packageName "gfx90a") "rocm-gfx90a";
  cpu-package-name = eq (t.cpu.packageName "neoverse-v1") "cpu-neoverse-v1";

  # --- checking lists --------------------------------------------------------
  duplicates-are-dropped-in-order = eq (t.cpu.check [ "x86-64-v3" "znver4" "x86-64-v3" ]) [
    "x86-64-v3"
    "znver4"
  ];
  gfx-feature-suffix-accepted = eq (t.rocm.check [ "gfx90a:xnack+" "gfx942:sramecc-" ]) [
    "gfx90a:xnack+"
    "gfx942:sramecc-"
  ];
  native-allowed-for-packages = eq (t.cpu.check [ "native" ]) [ "native" ];
  unknown-gfx-throws = throws (t.rocm.check [ "gfx1337" ]);
  gfx-without-prefix-throws = throws (t.rocm.check [ "1100" ]);
  bad-gfx-feature-throws = throws (t.rocm.check [ "gfx90a:xnack" ]);
  malformed-capability-throws = throws (t.cuda.check [ "89" ]);
  sm-spelling-in-capabilities-throws = throws (t.cuda.check [ "sm_89" ]);
  unsupported-capability-throws = throws (t.cuda.check [ "6.1" ]);
  family-specific-capability-throws = throws (t.cuda.check [ "10.0f" ]);
  unknown-cpu-throws = throws (t.cpu.check [ "x86-64-v5" ]);
  string-instead-of-list-throws = throws (t.cpu.check "x86-64-v3");
  non-string-entry-throws = throws (t.cuda.check [ 8.9 ]);
  no-targets-at-all-throws = throws (t.check none);
  vulkan-flag-must-be-bool = throws (t.check (none // { enableVulkan = "yes"; }));
  gpu-only-is-allowed = eq (t.defaultTargets (t.check (none // { cudaCapabilities = [ "9.0" ]; }))) [
    "cuda:sm_90"
  ];

  # --- what a set of lists turns on ---------------------------------------------
  default-targets-in-order = eq (t.defaultTargets (t.check {
    cpuTargets = [ "x86-64-v3" ];
    cudaCapabilities = [ "8.9" "9.0" ];
    rocmGpuTargets = [ "gfx1100" ];
    enableVulkan = true;
  })) [ "cpu:x86-64-v3" "cuda:sm_89" "cuda:sm_90" "vulkan:spv1.3" "hip:gfx1100" ];
  features-cpu-only = eq (t.features (t.check (none // { cpuTargets = [ "x86-64-v3" ]; }))) [ ];
  features-all = eq (t.features (t.check {
    cpuTargets = [ ];
    cudaCapabilities = [ "8.9" ];
    rocmGpuTargets = [ "gfx1100" ];
    enableVulkan = true;
  })) [ "cuda" "vulkan" "hip" ];
  backends-rocm = eq (t.backends (t.check (none // { rocmGpuTargets = [ "gfx1100" ]; }))) {
    cuda = false;
    vulkan = false;
    hip = true;
  };

  # --- defaults ------------------------------------------------------------------
  cpu-default-x86 = eq (t.cpu.defaultsFor { system = "x86_64-linux"; }) [ "x86-64-v2" "x86-64-v3" "x86-64-v4" ];
  cpu-default-aarch64 = eq (t.cpu.defaultsFor { system = "aarch64-linux"; }) [ "aarch64" "neoverse-v1" ];
  cpu-default-follows-gcc-arch = eq (t.cpu.defaultsFor {
    system = "x86_64-linux";
    gccArch = "znver4";
  }) [ "znver4" ];
  cpu-default-armv8-a-is-no-choice = eq (t.cpu.defaultsFor {
    system = "aarch64-linux";
    gccArch = "armv8-a";
  }) [ "aarch64" "neoverse-v1" ];
  cpu-default-ignores-unknown-gcc-arch = eq (t.cpu.defaultsFor {
    system = "x86_64-linux";
    gccArch = "k8";
  }) [ "x86-64-v2" "x86-64-v3" "x86-64-v4" ];
  cuda-default-is-nixpkgs-default = eq (t.cuda.defaultsFrom { }) [ "7.5" "8.0" "8.6" "8.9" "9.0" "10.0" "12.0" ];
  cuda-default-follows-config = eq (t.cuda.defaultsFrom { cudaCapabilities = [ "8.6" ]; }) [ "8.6" ];
  cuda-default-drops-unsupported = eq (t.cuda.defaultsFrom { cudaCapabilities = [ "6.1" "8.6" "10.3" ]; }) [
    "8.6"
  ];
  rocm-default-from-clr = eq (t.rocm.defaultsFrom {
    config = { };
    clr.gpuTargets = [ "gfx803" "gfx906" "gfx1100" "gfx1102" ];
  }) [ "gfx906" "gfx1100" ];
  rocm-default-prefers-local = eq (t.rocm.defaultsFrom {
    config = { };
    clr = {
      gpuTargets = [ "gfx906" "gfx1100" ];
      localGpuTargets = [ "gfx1100" ];
    };
  }) [ "gfx1100" ];
  rocm-default-null-local-falls-back = eq (t.rocm.defaultsFrom {
    config = { };
    clr = {
      gpuTargets = [ "gfx906" ];
      localGpuTargets = null;
    };
  }) [ "gfx906" ];
  nixpkgs-default-capabilities-supported = that (builtins.all (c: builtins.elem c t.cuda.supported) t.cuda.nixpkgsDefault) "a nixpkgs default capability is not supported";
  packaged-capabilities-supported = that (builtins.all (c: builtins.elem c t.cuda.supported) t.cuda.packaged) "a packaged capability is not supported";
  packaged-cpus-known = that (builtins.all (a: builtins.elem a t.cpu.known) (t.cpu.packaged.x86_64-linux ++ t.cpu.packaged.aarch64-linux)) "a packaged CPU name is unknown";

  # --- the flake's package names, generated ---------------------------------------
  x86-package-names = eq (sorted (builtins.attrNames variantsX86)) (sorted [
    "default"
    "cpu-x86-64-v2"
    "cpu-x86-64-v3"
    "cpu-x86-64-v4"
    "cuda"
    "cuda-sm80"
    "cuda-sm89"
    "cuda-sm90"
    "vulkan"
    "rocm"
    "rocm-gfx906"
    "rocm-gfx908"
    "rocm-gfx90a"
    "rocm-gfx942"
    "rocm-gfx1030"
    "rocm-gfx1100"
    "rocm-gfx1101"
    "rocm-gfx1200"
    "rocm-gfx1201"
  ]);
  aarch64-package-names = eq (sorted (builtins.attrNames variantsArm)) (sorted [
    "default"
    "cpu-aarch64"
    "cpu-neoverse-n1"
    "cpu-neoverse-v1"
    "cpu-neoverse-v2"
    "cuda"
    "cuda-sm80"
    "cuda-sm89"
    "cuda-sm90"
    "vulkan"
  ]);
  one-rocm-package-per-gfx = eq (builtins.length (builtins.filter (n: builtins.match "rocm-gfx.*" n != null) (builtins.attrNames variantsX86))) (builtins.length t.rocm.gpuTargets);
  variant-rocm-gfx1100 = eq variantsX86.rocm-gfx1100 {
    cudaCapabilities = [ ];
    rocmGpuTargets = [ "gfx1100" ];
    enableVulkan = false;
  };
  variant-cuda-sm90 = eq variantsX86.cuda-sm90 {
    cudaCapabilities = [ "9.0" ];
    rocmGpuTargets = [ ];
    enableVulkan = false;
  };
  variant-cpu-x86-64-v4 = eq variantsX86.cpu-x86-64-v4 {
    cpuTargets = [ "x86-64-v4" ];
    cudaCapabilities = [ ];
    rocmGpuTargets = [ ];
    enableVulkan = false;
  };
  variant-cuda-is-nixpkgs-default = eq variantsX86.cuda.cudaCapabilities t.cuda.nixpkgsDefault;
  variant-rocm-is-every-gfx = eq variantsX86.rocm.rocmGpuTargets t.rocm.gpuTargets;
  variant-vulkan = eq variantsX86.vulkan.enableVulkan true;
  variant-default-keeps-platform-cpus = that (!(variantsX86.default ? cpuTargets)) "default should leave cpuTargets to the platform";
  unknown-backend-throws = throws (t.backendArgs { backend = "tpu"; });

  # --- compileModel's targets and names ----------------------------------------------
  check-targets-accepts-all-families = eq (t.checkTargets [ "cpu:znver4" "cuda:sm_90a" "vulkan:spv1.3" "hip:gfx1100" "hip:gfx90a:xnack-" ]) [
    "cpu:znver4"
    "cuda:sm_90a"
    "vulkan:spv1.3"
    "hip:gfx1100"
    "hip:gfx90a:xnack-"
  ];
  check-targets-rejects-native = throws (t.checkTargets [ "cpu:native" ]);
  check-targets-rejects-nixpkgs-spelling = throws (t.checkTargets [ "8.9" ]);
  check-targets-rejects-unknown-sm = throws (t.checkTargets [ "cuda:sm_61" ]);
  check-targets-rejects-family = throws (t.checkTargets [ "tpu:v5" ]);
  check-targets-rejects-empty = throws (t.checkTargets [ ]);
  artifact-name-from-gguf = eq (t.artifactName "/models/llama-3.2-1b.gguf") "llama-3.2-1b";
  artifact-name-from-derivation = eq (t.artifactName { name = "bert-base.safetensors"; }) "bert-base";
  artifact-name-from-path = eq (t.artifactName ./helpers.nix) "helpers.nix";
  artifact-name-from-kir = eq (t.artifactName "mlp.kir") "mlp";
  artifact-name-rejects-spaces = throws (t.artifactName "my model.gguf");
}
