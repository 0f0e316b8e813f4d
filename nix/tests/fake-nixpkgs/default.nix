# A stand-in for the nixpkgs flake input: `lib` and `legacyPackages.<system>`,
# the only two things kiln's flake may use. It has no `outPath`, so an output
# that tried to `import nixpkgs { ... }` (a second nixpkgs instance) fails to
# evaluate in the tests instead of passing unnoticed.
{
  lib ? import ./lib.nix,
}:
{
  inherit lib;
  legacyPackages = lib.genAttrs [ "x86_64-linux" "aarch64-linux" ] (
    system:
    import ./pkgs.nix {
      inherit lib system;
      instance = "legacyPackages.${system}";
    }
  );
}
