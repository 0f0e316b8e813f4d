# flake.nix and nix/flake-outputs.nix with the stand-in nixpkgs: the output
# set, its per-system attributes, apps, devShell, formatter, checks and lib.
{
  lib ? import ./fake-nixpkgs/lib.nix,
}:
let
  h = import ./helpers.nix;
  inherit (h) eq that contains;

  nixpkgs = import ./fake-nixpkgs { inherit lib; };
  flakeFile = import ../../flake.nix;
  # Called the way Nix calls it: through flake.nix, with self being the result.
  flake = flakeFile.outputs {
    self = flake;
    inherit nixpkgs;
  };
  lock = builtins.fromJSON (builtins.readFile ../../flake.lock);
  locked = lock.nodes.nixpkgs.locked;
  sorted = builtins.sort builtins.lessThan;
  systems = [ "aarch64-linux" "x86_64-linux" ];
  perSystem = [ "packages" "apps" "devShells" "formatter" "checks" ];
  shell = flake.devShells.x86_64-linux.default;
  fakes = nixpkgs.legacyPackages.x86_64-linux;
in
h.run {
  one-input = eq (builtins.attrNames flakeFile.inputs) [ "nixpkgs" ];
  input-url = eq flakeFile.inputs.nixpkgs.url "github:NixOS/nixpkgs/nixos-unstable";
  outputs = eq (sorted (builtins.attrNames flake)) (sorted [
    "apps"
    "checks"
    "devShells"
    "formatter"
    "lib"
    "nixosModules"
    "overlays"
    "packages"
  ]);
  per-system-outputs-cover-systems = that (builtins.all (o: sorted (builtins.attrNames flake.${o}) == systems) perSystem) "a per-system output does not cover x86_64-linux and aarch64-linux";

  lock-version = eq lock.version 7;
  lock-root-input = eq lock.nodes.root.inputs { nixpkgs = "nixpkgs"; };
  lock-original-matches-input = eq lock.nodes.nixpkgs.original {
    owner = "NixOS";
    repo = "nixpkgs";
    ref = "nixos-unstable";
    type = "github";
  };
  lock-rev = that (builtins.match "[0-9a-f]{40}" locked.rev != null) "rev is not 40 hex digits";
  lock-nar-hash = that (builtins.match "sha256-[A-Za-z0-9+/]{43}=" locked.narHash != null) "narHash is not an SRI sha256";
  lock-last-modified = that (builtins.isInt locked.lastModified && locked.lastModified > 1700000000) "lastModified missing or too old";
  lock-github = eq [ locked.type locked.owner locked.repo ] [ "github" "NixOS" "nixpkgs" ];

  app-kiln = eq flake.apps.x86_64-linux.kiln.program "${flake.packages.x86_64-linux.default}/bin/kiln";
  app-type = eq flake.apps.x86_64-linux.default.type "app";
  app-aarch64-kiln = eq flake.apps.aarch64-linux.kiln.program "${flake.packages.aarch64-linux.default}/bin/kiln";
  formatter = eq flake.formatter.x86_64-linux.name "nixfmt-tree";
  dev-shell-tools = eq (map (p: p.name) shell.packages) [
    "cargo-1.89.0"
    "rustc-1.89.0"
    "clippy-1.89.0"
    "rustfmt-1.89.0"
    "rust-analyzer-2025-08-25"
    "llvm-19.1.7"
    "lld-19.1.7"
    "vulkan-tools-1.4.313.0"
    "spirv-tools-1.4.313.0"
    "nixfmt-1.0.0"
  ];
  dev-shell-build-inputs = eq (map (p: p.name) shell.inputsFrom) [ "kiln-0.1.0" ];
  dev-shell-llvm = eq shell.env.LLVM_SYS_191_PREFIX "${fakes.llvmPackages_19.llvm.dev}";
  dev-shell-vulkan-loader = eq shell.env.LD_LIBRARY_PATH "${fakes.vulkan-loader}/lib";
  checks = eq (sorted (builtins.attrNames flake.checks.x86_64-linux)) [ "compile-model" "kiln" "module" ];
  check-kiln-is-default-package = eq flake.checks.x86_64-linux.kiln.outPath flake.packages.x86_64-linux.default.outPath;
  check-kiln-runs-tests = that (flake.checks.x86_64-linux.kiln.doCheck or true && flake.checks.x86_64-linux.kiln.doInstallCheck) "the kiln check skips tests";
  overlay-adds-only-kilnPackages = eq (builtins.attrNames (flake.overlays.default fakes fakes)) [ "kilnPackages" ];
  overlay-override-works = eq ((import ./fake-nixpkgs/pkgs.nix {
    inherit lib;
    overlays = [ flake.overlays.default ];
  }).kilnPackages.kiln.override { cudaCapabilities = [ "8.6" ]; }).env.KILN_DEFAULT_TARGETS "cpu:x86-64-v2,cpu:x86-64-v3,cpu:x86-64-v4,cuda:sm_86";
  overlay-scope-variants = eq (builtins.attrNames (import ./fake-nixpkgs/pkgs.nix {
    inherit lib;
    overlays = [ flake.overlays.default ];
  }).kilnPackages.variants) (builtins.attrNames flake.packages.x86_64-linux);
  module-imports-file = eq flake.nixosModules.default.imports [ ../module.nix ];
  lib-targets = eq flake.lib.targets.cuda.supported (import ../targets.nix).cuda.supported;
}
