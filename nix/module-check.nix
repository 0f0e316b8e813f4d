# checks.<system>.module: the NixOS module evaluated once per backend, with the
# expectations checked at evaluation time (a failure is an evaluation error
# naming the backend). Only the two NixOS options the module writes are
# declared here, so this needs lib.evalModules and the system's pkgs, not a
# whole NixOS system; the output records what each backend selected.
{
  lib,
  pkgs,
  runCommand,
}:
let
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

  evaluate =
    settings:
    (lib.evalModules {
      specialArgs = { inherit pkgs; };
      modules = [
        ./module.nix
        nixosOptions
        { programs.kiln = settings; }
      ];
    }).config;

  cases = [
    {
      settings.backend = "cpu";
      settings.cpuTargets = [ "znver4" ];
      expect = [ "cpu:znver4" ];
      graphics = false;
    }
    {
      settings.backend = "cuda";
      settings.cudaCapabilities = [ "8.9" ];
      expect = [ "cuda:sm_89" ];
      graphics = true;
    }
    {
      settings.backend = "vulkan";
      expect = [ "vulkan:spv1.3" ];
      graphics = true;
    }
    {
      settings.backend = "rocm";
      settings.rocmGpuTargets = [ "gfx1100" ];
      expect = [ "hip:gfx1100" ];
      graphics = true;
    }
  ];

  run =
    case:
    let
      config = evaluate (case.settings // { enable = true; });
      installed = config.environment.systemPackages;
      kiln = builtins.head installed;
      missing = builtins.filter (t: !builtins.elem t kiln.kilnTargets) case.expect;
      label = "backend ${case.settings.backend}";
    in
    if builtins.length installed != 1 then
      throw "kiln module check: ${label} installed ${toString (builtins.length installed)} packages, expected 1"
    else if missing != [ ] then
      throw "kiln module check: ${label} selected targets ${toString kiln.kilnTargets}, missing ${toString missing}"
    else if config.hardware.graphics.enable != case.graphics then
      throw "kiln module check: ${label} set hardware.graphics.enable = ${lib.boolToString config.hardware.graphics.enable}"
    else
      "${label}: ${builtins.concatStringsSep "," kiln.kilnTargets}";

  disabled = evaluate { backend = "cuda"; };

  summary =
    if disabled.environment.systemPackages != [ ] then
      throw "kiln module check: a disabled programs.kiln installed packages"
    else
      builtins.concatStringsSep "\n" (map run cases);
in
runCommand "kiln-module-check" { inherit summary; } ''
  printf '%s\n' "$summary" > $out
''
