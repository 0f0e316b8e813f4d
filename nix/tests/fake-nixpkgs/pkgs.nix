# A stand-in package set with the attributes kiln's Nix files ask for. Each
# builder (buildRustPackage, mkDerivation, runCommand, mkShell) returns a real
# but trivial derivation (it only writes "fake") carrying every argument it was
# called with as attributes, plus `calledWith` and `fakeInstance`, so tests can
# assert on features, environment, phases and inputs, and see which package
# set a package came from. Nothing here is nixpkgs code.
{
  lib ? import ./lib.nix,
  system ? "x86_64-linux",
  config ? { },
  # nixpkgs.hostPlatform.gcc.arch, when a test wants one.
  gccArch ? null,
  overlays ? [ ],
  # A label identifying this package set, recorded in every derivation.
  instance ? "test",
}:
let
  trivial =
    name: attrs:
    derivation {
      inherit name system;
      builder = "/bin/sh";
      args = [
        "-c"
        "echo fake > $out"
      ];
    }
    // attrs;

  # A leaf package: a trivial derivation plus the attributes given.
  leaf = name: extra: trivial name ({ fakeInstance = instance; } // extra);

  mkDerivation =
    args:
    trivial (args.name or "${args.pname}-${args.version}") (
      args
      // (args.passthru or { })
      // {
        calledWith = args;
        fakeInstance = instance;
        meta = args.meta or { };
      }
    );

  base = self: {
    inherit lib config system;
    pkgs = self;

    callPackage = lib.callPackageWith self;
    newScope = extra: lib.callPackageWith (self // extra);

    stdenv = {
      # nixpkgs' own platform description when the lib has it (the real lib),
      # else the two attributes kiln reads, with nixpkgs' aarch64 default.
      hostPlatform =
        if lib ? systems then
          lib.systems.elaborate ({ inherit system; } // (if gccArch == null then { } else { gcc.arch = gccArch; }))
        else
          {
            inherit system;
            gcc =
              if gccArch != null then
                { arch = gccArch; }
              else if system == "aarch64-linux" then
                { arch = "armv8-a"; }
              else
                { };
          };
      inherit mkDerivation;
    };

    rustPlatform.buildRustPackage = args: mkDerivation (args // { fakeBuilder = "buildRustPackage"; });
    runCommand =
      name: env: buildCommand:
      mkDerivation (
        env
        // {
          inherit name buildCommand;
          fakeBuilder = "runCommand";
        }
      );
    mkShell =
      args:
      mkDerivation (
        {
          name = "nix-shell";
        }
        // args
        // {
          fakeBuilder = "mkShell";
        }
      );

    llvmPackages_19 = {
      llvm = leaf "llvm-19.1.7" { dev = leaf "llvm-19.1.7-dev" { }; };
      lld = leaf "lld-19.1.7" { };
    };

    # ROCm's runtime, with the passthru kiln reads (a list like nixpkgs',
    # including gfx names kiln does not support).
    rocmPackages.clr = leaf "clr-6.3.3" {
      gpuTargets = [
        "gfx803"
        "gfx900"
        "gfx906"
        "gfx908"
        "gfx90a"
        "gfx942"
        "gfx1010"
        "gfx1030"
        "gfx1100"
        "gfx1101"
        "gfx1102"
        "gfx1200"
        "gfx1201"
      ];
    };

    libffi = leaf "libffi-3.4.8" { };
    libxml2 = leaf "libxml2-2.14.4" { };
    zlib = leaf "zlib-1.3.1" { };
    ncurses = leaf "ncurses-6.5" { };
    zstd = leaf "zstd-1.5.7" { };
    makeWrapper = leaf "make-wrapper-hook" { };
    autoAddDriverRunpath = leaf "auto-add-driver-runpath-hook" { };
    vulkan-loader = leaf "vulkan-loader-1.4.313.0" { };
    vulkan-tools = leaf "vulkan-tools-1.4.313.0" { };
    spirv-tools = leaf "spirv-tools-1.4.313.0" { };
    cargo = leaf "cargo-1.89.0" { };
    rustc = leaf "rustc-1.89.0" { };
    clippy = leaf "clippy-1.89.0" { };
    rustfmt = leaf "rustfmt-1.89.0" { };
    rust-analyzer = leaf "rust-analyzer-2025-08-25" { };
    nixfmt = leaf "nixfmt-1.0.0" { meta.mainProgram = "nixfmt"; };
    nixfmt-tree = leaf "nixfmt-tree" { meta.mainProgram = "treefmt"; };
  };
in
lib.fix (builtins.foldl' (f: overlay: lib.extends overlay f) base overlays)
