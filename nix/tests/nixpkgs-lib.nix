# Checks that need nixpkgs' real lib (run when KILN_NIXPKGS_LIB is set): kiln's
# names against nixpkgs' own tables, and the platform defaults against
# nixpkgs' own platform descriptions.
{ lib }:
let
  h = import ./helpers.nix;
  inherit (h) eq that;
  t = import ../targets.nix;
  nixpkgsArchs = builtins.attrNames lib.systems.architectures.features;
  kilnFor =
    args: ((import ./fake-nixpkgs/pkgs.nix ({ inherit lib; } // args)).callPackage ../scope.nix { }).kiln;
in
h.run {
  x86-names-are-nixpkgs-names = eq (builtins.filter (a: !builtins.elem a nixpkgsArchs) t.cpu.x86_64) [ ];
  # docs/nix.md tells Zen 4 and Tiger Lake machines to take cpu-x86-64-v4.
  znver4-runs-v4 = that (builtins.elem "x86-64-v4" lib.systems.architectures.inferiors.znver4) "nixpkgs does not count x86-64-v4 as an inferior of znver4";
  tigerlake-runs-v4 = that (builtins.elem "x86-64-v4" lib.systems.architectures.inferiors.tigerlake) "nixpkgs does not count x86-64-v4 as an inferior of tigerlake";
  aarch64-default-platform = eq (kilnFor { system = "aarch64-linux"; }).passthru.kilnTargets [
    "cpu:aarch64"
    "cpu:neoverse-v1"
  ];
  x86-default-platform = eq (kilnFor { system = "x86_64-linux"; }).passthru.cpuTargets [
    "x86-64-v2"
    "x86-64-v3"
    "x86-64-v4"
  ];
  gcc-arch-platform = eq (kilnFor {
    system = "x86_64-linux";
    gccArch = "znver4";
  }).passthru.cpuTargets [ "znver4" ];
  asl20-is-nixpkgs-license = eq lib.licenses.asl20.spdxId "Apache-2.0";
  stub-agrees-on-licenses = eq (import ./fake-nixpkgs/lib.nix).licenses.asl20.spdxId lib.licenses.asl20.spdxId;
}
