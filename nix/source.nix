# The source kiln is built from: the repository minus what would change the
# store path without changing the program. Build outputs (target/, *.kiln) are
# large and change constantly; the Nix files only describe packaging, so editing
# them must not rebuild kiln on every machine of a fleet.
#
# builtins only, so the filter can be tested without nixpkgs.
let
  root = toString ../.;

  excludedTop = [
    ".git"
    "target"
    "out"
    "nix"
    "flake.nix"
    "flake.lock"
  ];

  filter =
    path: type:
    let
      rel = builtins.substring (builtins.stringLength root + 1) (-1) (toString path);
      top = builtins.head (builtins.split "/" rel);
      base = baseNameOf (toString path);
    in
    !(
      builtins.elem top excludedTop
      || builtins.match "result(-.*)?" top != null
      || builtins.match ".*\\.kiln" base != null
    );
in
{
  inherit filter;

  src = builtins.path {
    path = ../.;
    name = "kiln-source";
    inherit filter;
  };
}
