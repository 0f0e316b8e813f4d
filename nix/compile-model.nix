# compileModel: a model compiled by kiln is a derivation like any other, so
# artifacts are built once, cached and deployed with the system that uses them.
#
#   kilnPackages.compileModel {
#     model = ./models/mlp.kir;               # a path, or a derivation (fetchurl of a .gguf)
#     targets = [ "cpu:x86-64-v3" "cuda:sm_89" ];   # kiln's spelling; default: kiln's defaults
#   }
#   => $out/mlp.kiln
#
# Compiling for a target needs no device, so this builds on any machine; any
# kiln variant can compile for any target (the variants differ in runtime
# libraries and defaults), and the scope's kiln is used unless one is given.
let
  targetLogic = import ./targets.nix;
in
{
  lib,
  runCommand,
  kiln,
}@deps:
{
  model,
  targets ? null,
  name ? null,
  kiln ? deps.kiln,
}:
let
  # cpu:native would tie the artifact to whatever CPU the builder has.
  chosen = targetLogic.checkTargets (
    if targets != null then
      targets
    else
      builtins.filter (t: t != "cpu:native") (
        kiln.kilnTargets or (throw "kiln: compileModel needs targets: the given kiln has no kilnTargets")
      )
  );
  artifact = targetLogic.artifactName (if name != null then name else model);
  # Checked spellings contain only [A-Za-z0-9:._+-]: safe unquoted.
  targetFlags = lib.concatMapStringsSep " " (t: "--target ${t}") chosen;
in
runCommand "kiln-model-${artifact}"
  {
    nativeBuildInputs = [ kiln ];
    passthru = {
      inherit model;
      kilnTargets = chosen;
      artifact = "${artifact}.kiln";
    };
    meta.description = "${artifact} compiled by kiln for ${builtins.concatStringsSep ", " chosen}";
  }
  ''
    export HOME=$TMPDIR
    mkdir -p $out
    kiln compile "${model}" ${targetFlags} -o $out/${artifact}.kiln
    # A corrupt or incomplete artifact fails here, not on the machine it is deployed to.
    kiln inspect $out/${artifact}.kiln
  ''
