# lib.compileModel and kilnPackages.compileModel against the stand-in package
# set: the derivation runs `kiln compile` with the targets asked for, names
# the artifact after the model, and rejects targets that would be impure or
# misspelled.
{
  lib ? import ./fake-nixpkgs/lib.nix,
}:
let
  h = import ./helpers.nix;
  inherit (h) eq that contains lacks throws;

  nixpkgs = import ./fake-nixpkgs { inherit lib; };
  flake = import ../flake-outputs.nix {
    self = flake;
    inherit nixpkgs;
  };
  pkgs = import ./fake-nixpkgs/pkgs.nix { inherit lib; };
  kilnPackages = pkgs.callPackage ../scope.nix { };

  # A model as a fleet would fetch it: a derivation named after the file.
  gguf = derivation {
    name = "llama-3.2-1b.gguf";
    system = "x86_64-linux";
    builder = "/bin/sh";
    args = [
      "-c"
      "echo fake > $out"
    ];
  };

  llama = flake.lib.compileModel {
    inherit pkgs;
    model = gguf;
    targets = [
      "cpu:znver4"
      "cuda:sm_89"
    ];
  };
  mlp = flake.lib.compileModel {
    inherit pkgs;
    model = "/srv/models/mlp.kir";
  };
  withKiln = flake.lib.compileModel {
    inherit pkgs;
    model = "/srv/models/mlp.kir";
    name = "mlp-rocm";
    kiln = flake.packages.x86_64-linux.rocm-gfx1100;
  };
  # A kiln whose defaults include cpu:native: compileModel must not inherit it.
  nativeKiln = kilnPackages.kiln.override { cpuTargets = [ "native" "x86-64-v3" ]; };
in
h.run {
  derivation-name = eq llama.name "kiln-model-llama-3.2-1b";
  runs-kiln-compile = contains "kiln compile \"${gguf}\" --target cpu:znver4 --target cuda:sm_89 -o $out/llama-3.2-1b.kiln" llama.buildCommand;
  inspects-the-artifact = contains "kiln inspect $out/llama-3.2-1b.kiln" llama.buildCommand;
  kiln-is-a-build-input = eq (map (p: p.name) llama.nativeBuildInputs) [ "kiln-0.1.0" ];
  kiln-from-users-pkgs = eq (builtins.head llama.nativeBuildInputs).fakeInstance "test";
  passthru-targets = eq llama.kilnTargets [ "cpu:znver4" "cuda:sm_89" ];
  passthru-artifact = eq llama.artifact "llama-3.2-1b.kiln";
  description = eq llama.meta.description "llama-3.2-1b compiled by kiln for cpu:znver4, cuda:sm_89";

  default-targets-are-kilns = eq mlp.kilnTargets [ "cpu:x86-64-v2" "cpu:x86-64-v3" "cpu:x86-64-v4" ];
  name-from-path = eq mlp.name "kiln-model-mlp";
  native-never-default = eq (kilnPackages.compileModel {
    model = "/srv/m.kir";
    kiln = nativeKiln;
  }).kilnTargets [ "cpu:x86-64-v3" ];
  given-kiln-used = eq (map (p: p.passthru.kilnTargets) withKiln.nativeBuildInputs) [
    [ "cpu:x86-64-v2" "cpu:x86-64-v3" "cpu:x86-64-v4" "hip:gfx1100" ]
  ];
  given-kiln-defaults = contains "--target hip:gfx1100" withKiln.buildCommand;
  given-name = contains "-o $out/mlp-rocm.kiln" withKiln.buildCommand;
  scope-compile-model-same = eq (kilnPackages.compileModel { model = "/srv/models/mlp.kir"; }).buildCommand mlp.buildCommand;
  overlay-compile-model = eq ((import ./fake-nixpkgs/pkgs.nix {
    inherit lib;
    overlays = [ flake.overlays.default ];
  }).kilnPackages.compileModel { model = "/srv/models/mlp.kir"; }).buildCommand mlp.buildCommand;

  rejects-native = throws (flake.lib.compileModel {
    inherit pkgs;
    model = "/srv/m.kir";
    targets = [ "cpu:native" ];
  }).buildCommand;
  rejects-nixpkgs-spelling = throws (flake.lib.compileModel {
    inherit pkgs;
    model = "/srv/m.kir";
    targets = [ "8.9" ];
  }).buildCommand;
  rejects-unknown-gfx = throws (flake.lib.compileModel {
    inherit pkgs;
    model = "/srv/m.kir";
    targets = [ "hip:gfx1337" ];
  }).buildCommand;

  flake-check-compiles-example = contains "/examples/mlp.kir\" --target cpu:x86-64-v2 --target cpu:x86-64-v3 --target cpu:x86-64-v4 -o $out/mlp.kiln" flake.checks.x86_64-linux.compile-model.buildCommand;
}
