# nix/module.nix through lib.evalModules (the stand-in's small one, or the
# real one when KILN_NIXPKGS_LIB is set): what `programs.kiln` installs for
# each backend and list, its defaults, and that it uses the overlay's scope
# when the system's pkgs has one.
{
  lib ? import ./fake-nixpkgs/lib.nix,
}:
let
  h = import ./helpers.nix;
  inherit (h) eq that throws;
  t = import ../targets.nix;

  # The two NixOS options the module writes, as module-check.nix declares them.
  nixosOptions =
    { lib, ... }:
    {
      options.environment.systemPackages = lib.mkOption {
        type = lib.types.listOf lib.types.package;
        default = [ ];
      };
      options.hardware.graphics.enable = lib.mkOption {
        type = lib.types.bool;
        default = false;
      };
    };

  pkgsWith = args: import ./fake-nixpkgs/pkgs.nix ({ inherit lib; } // args);
  defaultPkgs = pkgsWith { };

  flake = import ../flake-outputs.nix {
    self = flake;
    nixpkgs = import ./fake-nixpkgs { inherit lib; };
  };

  evalIn =
    pkgs: settings:
    (lib.evalModules {
      specialArgs = { inherit pkgs; };
      modules = [
        flake.nixosModules.default
        nixosOptions
        { programs.kiln = settings; }
      ];
    }).config;
  eval = evalIn defaultPkgs;

  installed = config: map (p: p.passthru.kilnTargets) config.environment.systemPackages;
  selected = settings: (eval (settings // { enable = true; })).programs.kiln.package.passthru.kilnTargets;

  cpuLevels = [ "cpu:x86-64-v2" "cpu:x86-64-v3" "cpu:x86-64-v4" ];

  # A fleet that applied the overlay and then narrowed kiln in its own scope:
  # the module must build on that kiln, not on a fresh scope.
  overlaid = pkgsWith {
    overlays = [
      flake.overlays.default
      (final: prev: {
        kilnPackages = prev.kilnPackages.overrideScope (
          kfinal: kprev: { kiln = kprev.kiln.override { cpuTargets = [ "tigerlake" ]; }; }
        );
      })
    ];
  };
in
h.run {
  disabled-installs-nothing = eq (eval { backend = "cuda"; }).environment.systemPackages [ ];
  disabled-leaves-graphics = eq (eval { backend = "cuda"; }).hardware.graphics.enable false;

  cpu-laptop = eq (installed (eval {
    enable = true;
    cpuTargets = [ "znver4" ];
  })) [ [ "cpu:znver4" ] ];
  cpu-is-default-backend = eq (eval { }).programs.kiln.backend "cpu";
  cpu-leaves-graphics = eq (eval { enable = true; }).hardware.graphics.enable false;
  cpu-default-targets = eq (selected { }) cpuLevels;
  cpu-default-from-gcc-arch = eq (evalIn (pkgsWith { gccArch = "tigerlake"; }) { enable = true; }).programs.kiln.cpuTargets [ "tigerlake" ];

  cuda-laptop = eq (selected {
    backend = "cuda";
    cpuTargets = [ "tigerlake" ];
    cudaCapabilities = [ "8.9" ];
  }) [ "cpu:tigerlake" "cuda:sm_89" ];
  cuda-enables-graphics = eq (eval {
    enable = true;
    backend = "cuda";
  }).hardware.graphics.enable true;
  cuda-default-capabilities = eq (selected { backend = "cuda"; }) (cpuLevels ++ map t.cuda.toTarget t.cuda.nixpkgsDefault);
  cuda-capabilities-from-nixpkgs-config = eq (evalIn (pkgsWith { config.cudaCapabilities = [ "8.6" ]; }) { }).programs.kiln.cudaCapabilities [ "8.6" ];
  cuda-variant-has-driver-hook = eq (eval {
    enable = true;
    backend = "cuda";
  }).programs.kiln.package.buildFeatures [ "cuda" ];

  rocm-desktop = eq (selected {
    backend = "rocm";
    rocmGpuTargets = [ "gfx1100" ];
  }) (cpuLevels ++ [ "hip:gfx1100" ]);
  rocm-default-from-clr = eq (eval { }).programs.kiln.rocmGpuTargets t.rocm.gpuTargets;

  vulkan-box = eq (selected { backend = "vulkan"; }) (cpuLevels ++ [ "vulkan:spv1.3" ]);
  vulkan-ignores-other-lists = eq (selected {
    backend = "vulkan";
    cudaCapabilities = [ "8.9" ];
    rocmGpuTargets = [ "gfx1100" ];
  }) (cpuLevels ++ [ "vulkan:spv1.3" ]);

  installs-the-selected-package = that (
    let
      c = eval {
        enable = true;
        backend = "rocm";
      };
    in
    builtins.head c.environment.systemPackages == c.programs.kiln.package
  ) "systemPackages does not hold programs.kiln.package";

  same-package-as-flake = eq (selected {
    backend = "rocm";
    rocmGpuTargets = [ "gfx1100" ];
  }) flake.packages.x86_64-linux.rocm-gfx1100.passthru.kilnTargets;

  uses-overlay-scope = eq (evalIn overlaid { enable = true; }).programs.kiln.cpuTargets [ "tigerlake" ];
  overlay-package-from-users-pkgs = eq (evalIn overlaid { enable = true; }).programs.kiln.package.fakeInstance "test";

  unknown-backend-throws = throws (eval { backend = "tpu"; }).programs.kiln.backend;
  bad-capability-throws = throws (selected {
    backend = "cuda";
    cudaCapabilities = [ "8.9x" ];
  });
  undeclared-option-throws = throws (eval { gpus = 2; }).programs.kiln.backend;

  module-check-summary = eq flake.checks.x86_64-linux.module.summary (builtins.concatStringsSep "\n" [
    "backend cpu: cpu:znver4"
    "backend cuda: cpu:x86-64-v2,cpu:x86-64-v3,cpu:x86-64-v4,cuda:sm_89"
    "backend vulkan: cpu:x86-64-v2,cpu:x86-64-v3,cpu:x86-64-v4,vulkan:spv1.3"
    "backend rocm: cpu:x86-64-v2,cpu:x86-64-v3,cpu:x86-64-v4,hip:gfx1100"
  ]);
  module-check-aarch64 = h.contains "backend cuda: cpu:aarch64,cpu:neoverse-v1,cuda:sm_89" flake.checks.aarch64-linux.module.summary;
}
