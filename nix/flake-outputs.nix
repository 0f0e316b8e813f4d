# The flake's outputs, as a function of its inputs, so that tests can call it
# with a stand-in nixpkgs (nix/tests/) where the real one cannot be fetched.
#
# The only nixpkgs instances used are the flake's own `legacyPackages.<system>`
# (for packages, apps, devShells, checks) and whatever nixpkgs a user brings
# (overlay, module, lib.compileModel): nothing here imports nixpkgs with a
# config of its own, because kiln needs no CUDA or ROCm toolkit to build.
{ self, nixpkgs }:
let
  inherit (nixpkgs) lib;
  targets = import ./targets.nix;

  eachSystem = f: lib.genAttrs targets.systems (system: f nixpkgs.legacyPackages.${system});

  # Reuse the overlay's scope when a user's pkgs has it, so their
  # overrideScope applies; otherwise call the same scope from their pkgs.
  kilnPackagesFor = pkgs: pkgs.kilnPackages or (pkgs.callPackage ./scope.nix { });
in
{
  overlays.default = final: prev: { kilnPackages = final.callPackage ./scope.nix { }; };

  # default, cpu-<arch>, cuda, cuda-sm<NN>, vulkan, rocm, rocm-<gfx>: see
  # targets.variants.
  packages = eachSystem (pkgs: (kilnPackagesFor pkgs).variants);

  apps = eachSystem (
    pkgs:
    let
      app = {
        type = "app";
        program = lib.getExe self.packages.${pkgs.stdenv.hostPlatform.system}.default;
        meta.description = "kiln, compiling for this platform's default CPU targets";
      };
    in
    {
      default = app;
      kiln = app;
    }
  );

  devShells = eachSystem (pkgs: {
    default = pkgs.callPackage ./dev-shell.nix {
      kiln = self.packages.${pkgs.stdenv.hostPlatform.system}.default;
    };
  });

  # nixfmt (RFC 166 style) run over the tree: `nix fmt` passes no paths to
  # the formatter, which a bare nixfmt would read as "format stdin".
  formatter = eachSystem (pkgs: pkgs.nixfmt-tree);

  checks = eachSystem (
    pkgs:
    let
      kilnPackages = kilnPackagesFor pkgs;
    in
    {
      # Builds kiln, runs cargo test, and compiles + inspects the conformance
      # model for every default target (package.nix's install check).
      kiln = kilnPackages.kiln;
      module = pkgs.callPackage ./module-check.nix { };
      compile-model = kilnPackages.compileModel {
        model = "${kilnPackages.kiln.src}/examples/mlp.kir";
      };
    }
  );

  # An attribute set importing the file (not the bare path), which every Nix
  # version's `flake check` accepts and which keeps the file name in errors.
  nixosModules.default = {
    imports = [ ./module.nix ];
  };

  lib = {
    # The pure target logic: spellings, defaults, variant names.
    inherit targets;

    # compileModel { pkgs; model; targets ? ...; name ? ...; kiln ? ...; }
    compileModel =
      { pkgs, ... }@args: (kilnPackagesFor pkgs).compileModel (builtins.removeAttrs args [ "pkgs" ]);
  };
}
