# The stand-in nixpkgs as a flake, for `nix flake check --override-input
# nixpkgs path:nix/tests/fake-nixpkgs` (no network needed). With --impure and
# KILN_NIXPKGS_LIB set, it carries nixpkgs' real lib instead of the stub.
{
  outputs =
    _:
    let
      real = builtins.getEnv "KILN_NIXPKGS_LIB";
    in
    import ./default.nix (if real == "" then { } else { lib = import (real + "/lib"); });
}
