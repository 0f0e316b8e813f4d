# Assertions for the Nix test files. A test is a name bound to `true` when it
# passes and to a message when it fails; scripts/nix-tests.sh counts them.
# Each test is evaluated under tryEval, so one throwing test fails alone
# instead of taking its whole file down.
rec {
  show = v: if builtins.isString v then ''"${v}"'' else builtins.toJSON v;

  eq = actual: expected: if actual == expected then true else "expected ${show expected}, got ${show actual}";

  that = cond: message: if cond then true else message;

  # Substring test without regular expressions (targets contain '.' and '+').
  hasInfix =
    needle: haystack:
    let
      n = builtins.stringLength needle;
      h = builtins.stringLength haystack;
    in
    n <= h && builtins.any (i: builtins.substring i n haystack == needle) (builtins.genList (i: i) (h - n + 1));

  contains =
    needle: haystack:
    if hasInfix needle haystack then true else "expected to find ${show needle} in ${show haystack}";

  lacks =
    needle: haystack:
    if hasInfix needle haystack then "did not expect ${show needle} in ${show haystack}" else true;

  # Only that it throws; the message text is checked by scripts/nix-tests.sh,
  # which can read it (tryEval cannot).
  throws =
    v:
    if (builtins.tryEval (builtins.deepSeq v v)).success then "expected evaluation to throw" else true;

  run = builtins.mapAttrs (
    _: test:
    let
      r = builtins.tryEval (builtins.deepSeq test test);
    in
    if r.success then r.value else "evaluation threw"
  );
}
