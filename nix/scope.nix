# kilnPackages: kiln's package set, as a nixpkgs scope.
#
# A scope (lib.makeScope) rather than loose attributes so that overriding one
# member reaches the others: `kilnPackages.overrideScope (final: prev: { kiln =
# ...; })` also changes the kiln that compileModel and the variants use. It is
# built from whichever nixpkgs calls it (the flake's own, or a fleet's through
# the overlay or the module) and never imports a nixpkgs of its own.
{
  lib,
  newScope,
  stdenv,
}:
let
  targets = import ./targets.nix;
in
lib.makeScope newScope (self: {
  kiln = self.callPackage ./package.nix { };

  # compileModel { model; targets ? kiln's defaults; name ? from the model; kiln ? this kiln; }
  compileModel = self.callPackage ./compile-model.nix { };

  # Every flake package of this platform, each an override of the one kiln
  # above: the names and lists come from targets.nix.
  variants = builtins.mapAttrs (_: args: self.kiln.override args) (
    targets.variants stdenv.hostPlatform.system
  );
})
