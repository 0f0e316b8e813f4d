# programs.kiln: one line per machine picks the kiln variant for its hardware.
#
#   programs.kiln = { enable = true; backend = "cuda"; cudaCapabilities = [ "8.9" ]; };
#
# The module builds nothing of its own: it overrides the kiln of the system's
# nixpkgs (the overlay's kilnPackages when the overlay is applied, else the same
# scope called from the system's pkgs), so a fleet keeps one nixpkgs and one
# binary cache, and the lists mean exactly what they mean for the flake's
# packages.
{
  config,
  lib,
  pkgs,
  ...
}:
let
  targets = import ./targets.nix;
  cfg = config.programs.kiln;
  kilnPackages = pkgs.kilnPackages or (pkgs.callPackage ./scope.nix { });
  base = kilnPackages.kiln;
  inherit (lib) mkOption types;
in
{
  options.programs.kiln = {
    enable = lib.mkEnableOption "kiln, the ahead-of-time neural-network compiler";

    backend = mkOption {
      type = types.enum targets.backendNames;
      default = "cpu";
      example = "cuda";
      description = ''
        The accelerator of this machine. Selects which list below, besides
        `cpuTargets`, becomes kiln's default targets and which runtime
        libraries kiln is built to find: libcuda from the driver ("cuda"),
        vulkan-loader ("vulkan"), ROCm's clr and lld ("rocm").
      '';
    };

    cpuTargets = mkOption {
      type = types.listOf types.str;
      default = base.cpuTargets;
      defaultText = lib.literalMD "`nixpkgs.hostPlatform.gcc.arch` when set, else every x86-64 level (`x86-64-v2`, `-v3`, `-v4`) or `aarch64` and `neoverse-v1`";
      example = [ "znver4" ];
      description = ''
        CPU targets, named as in nixpkgs' `lib.systems.architectures`. The
        artifact carries one variant per entry and the runtime picks the best
        one for the CPU it runs on. Used with every backend, so models still
        run where the GPU is missing.
      '';
    };

    cudaCapabilities = mkOption {
      type = types.listOf types.str;
      default = targets.cuda.defaultsFrom pkgs.config;
      defaultText = lib.literalMD "`nixpkgs.config.cudaCapabilities`, else the capabilities nixpkgs builds by default";
      example = [ "8.9" ];
      description = "CUDA capabilities in nixpkgs' spelling (\"8.9\", \"9.0a\"), used when `backend = \"cuda\"`.";
    };

    rocmGpuTargets = mkOption {
      type = types.listOf types.str;
      default = targets.rocm.defaultsFrom {
        inherit (pkgs) config;
        inherit (pkgs.rocmPackages) clr;
      };
      defaultText = lib.literalMD "the ROCm package set's GPU targets that kiln supports";
      example = [ "gfx1100" ];
      description = "AMD gfx targets (\"gfx1100\"), used when `backend = \"rocm\"`.";
    };

    package = mkOption {
      type = types.package;
      default = base.override (
        targets.backendArgs {
          inherit (cfg)
            backend
            cpuTargets
            cudaCapabilities
            rocmGpuTargets
            ;
        }
      );
      defaultText = lib.literalMD "the kiln variant that `backend` and the lists select";
      description = ''
        The kiln installed. Read it to compile models with the same build
        (`compileModel { kiln = config.programs.kiln.package; ... }`); setting
        it replaces the variant the options above would select.
      '';
    };
  };

  config = lib.mkIf cfg.enable {
    environment.systemPackages = [ cfg.package ];

    # libcuda, the Vulkan ICDs and the AMD user-space driver are found under
    # /run/opengl-driver, which NixOS provides only with hardware.graphics.
    hardware.graphics.enable = lib.mkIf (cfg.backend != "cpu") (lib.mkDefault true);
  };
}
