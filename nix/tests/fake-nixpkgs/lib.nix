# A stand-in for nixpkgs' `lib`, from builtins only: just the functions kiln's
# Nix files and the fakes use, with the same names, arguments and results for
# the cases they exercise. It exists because CI machines have Nix but no
# nixpkgs. scripts/nix-tests.sh runs every test against it, and again against
# a real nixpkgs `lib` when KILN_NIXPKGS_LIB points at one, which is how
# this stub is kept honest.
let
  inherit (builtins)
    all
    attrNames
    concatLists
    concatMap
    concatStringsSep
    elem
    filter
    foldl'
    functionArgs
    head
    intersectAttrs
    isAttrs
    isBool
    isFunction
    isList
    isString
    length
    listToAttrs
    mapAttrs
    tail
    ;
in
rec {
  # --- lists, strings, attrsets -------------------------------------------
  optional = cond: x: if cond then [ x ] else [ ];
  optionals = cond: xs: if cond then xs else [ ];
  optionalString = cond: s: if cond then s else "";
  optionalAttrs = cond: as: if cond then as else { };
  concatMapStrings = f: xs: concatStringsSep "" (map f xs);
  concatMapStringsSep = sep: f: xs: concatStringsSep sep (map f xs);
  boolToString = b: if b then "true" else "false";
  genAttrs =
    names: f:
    listToAttrs (
      map (n: {
        name = n;
        value = f n;
      }) names
    );
  last = xs: builtins.elemAt xs (length xs - 1);
  makeSearchPath = sub: ps: concatStringsSep ":" (map (p: "${p.out or p}/${sub}") ps);
  makeBinPath = makeSearchPath "bin";
  makeLibraryPath = makeSearchPath "lib";
  getExe = drv: "${drv}/bin/${drv.meta.mainProgram}";

  licenses.asl20 = {
    spdxId = "Apache-2.0";
    shortName = "asl20";
    fullName = "Apache License 2.0";
    free = true;
  };

  # --- fixed points and overriding ------------------------------------------
  fix =
    f:
    let
      x = f x;
    in
    x;
  extends =
    overlay: f: self:
    let
      super = f self;
    in
    super // overlay self super;

  makeOverridable =
    f: origArgs:
    let
      result = f origArgs;
      override =
        newArgs: makeOverridable f (origArgs // (if isFunction newArgs then newArgs origArgs else newArgs));
    in
    if isAttrs result then
      result // { inherit override; }
    else if isFunction result then
      {
        inherit override;
        __functor = _: result;
      }
    else
      result;

  callPackageWith =
    autoArgs: fn: args:
    let
      f = if isFunction fn then fn else import fn;
    in
    makeOverridable f (intersectAttrs (functionArgs f) autoArgs // args);

  makeScope =
    newScope: f:
    let
      self = f self // {
        newScope = scope: newScope (self // scope);
        callPackage = self.newScope { };
        overrideScope = g: makeScope newScope (extends g f);
        packages = f;
      };
    in
    self;

  # --- modules: a small evalModules -------------------------------------------
  # Enough of the module system for kiln's module: option declarations with
  # defaults and types (checked), definitions under mkIf / mkDefault / mkForce,
  # list options concatenating, and an error for a definition of an option
  # that nothing declares. No submodules, no mkMerge, no imports of imports.
  mkOption = attrs: attrs // { _type = "option"; };
  mkEnableOption =
    name:
    mkOption {
      type = types.bool;
      default = false;
      description = "Whether to enable ${name}.";
    };
  mkIf = condition: content: {
    _type = "if";
    inherit condition content;
  };
  mkOverride = priority: content: {
    _type = "override";
    inherit priority content;
  };
  mkDefault = mkOverride 1000;
  mkForce = mkOverride 50;
  literalMD = text: {
    _type = "literalMD";
    inherit text;
  };
  literalExpression = text: {
    _type = "literalExpression";
    inherit text;
  };

  types = {
    str = {
      name = "str";
      description = "string";
      check = isString;
    };
    bool = {
      name = "bool";
      description = "boolean";
      check = isBool;
    };
    package = {
      name = "package";
      description = "package";
      check = x: isAttrs x && x.type or null == "derivation";
    };
    enum = values: {
      name = "enum";
      description = "one of ${concatStringsSep ", " (map (v: ''"${v}"'') values)}";
      check = x: elem x values;
    };
    listOf = t: {
      name = "listOf";
      description = "list of ${t.description}";
      check = x: isList x && all t.check x;
    };
  };

  evalModules =
    {
      modules,
      specialArgs ? { },
    }:
    let
      args = {
        inherit lib config options;
      }
      // specialArgs;
      lib = import ./lib.nix;
      load =
        m:
        let
          value = if isAttrs m || isFunction m then m else import m;
        in
        if isFunction value then value args else value;
      # `{ imports = [ ./file.nix ]; }` is how the flake exports the module.
      expand =
        m:
        let
          v = load m;
        in
        [ v ] ++ concatMap expand (v.imports or [ ]);
      loaded = concatMap expand modules;
      hasShape = m: m ? options || m ? config || m ? imports;
      declsOf = m: m.options or { };
      defsOf = m: if hasShape m then m.config or { } else m;

      mergeDecls =
        a: b:
        if a._type or null == "option" || b._type or null == "option" then
          throw "evalModules stub: option declared twice"
        else
          a
          // mapAttrs (n: v: if a ? ${n} then mergeDecls a.${n} v else v) b;
      options = foldl' mergeDecls { } (map declsOf loaded);

      # Every defined path must be declared, as in the real module system.
      checkDefined =
        decl: def: path:
        if decl._type or null == "option" then
          true
        else if isAttrs def && def._type or null == "if" then
          checkDefined decl def.content path
        else if isAttrs def then
          all (
            n:
            if decl ? ${n} then
              checkDefined decl.${n} def.${n} (path ++ [ n ])
            else
              throw "The option `${concatStringsSep "." (path ++ [ n ])}' does not exist."
          ) (attrNames def)
        else
          throw "The option `${concatStringsSep "." path}' is not an option but a set of options.";
      allDefined = all (m: checkDefined options (defsOf m) [ ]) loaded;

      # Definitions of one option path. The real module system pushes mkIf
      # down into attributes; the equivalent here is to look inside the
      # content first and read the condition only for paths the content
      # defines, so `mkIf cfg.enable { ... }` does not need cfg.enable to tell
      # which options it touches (which would be infinite recursion).
      lookup =
        def: path:
        if isAttrs def && def._type or null == "if" then
          (
            let
              inner = lookup def.content path;
            in
            if inner == [ ] then
              [ ]
            else if def.condition then
              inner
            else
              [ ]
          )
        else if path == [ ] then
          [ def ]
        else if isAttrs def && def ? ${head path} then
          lookup def.${head path} (tail path)
        else
          [ ];

      evalOption =
        opt: path:
        let
          name = concatStringsSep "." path;
          prio = d: if isAttrs d && d._type or null == "override" then d.priority else 100;
          strip = d: if isAttrs d && d._type or null == "override" then d.content else d;
          defs =
            concatMap (m: lookup (defsOf m) path) loaded
            ++ optional (opt ? default) (mkOverride 1500 opt.default);
          best = foldl' (a: b: if b < a then b else a) 99999 (map prio defs);
          chosen = map strip (filter (d: prio d == best) defs);
          value =
            if defs == [ ] then
              throw "The option `${name}' is used but not defined."
            else if opt.type.name == "listOf" then
              concatLists chosen
            else if all (v: v == head chosen) chosen then
              head chosen
            else
              throw "The option `${name}' has conflicting definition values.";
        in
        if opt.type.check value then
          value
        else
          throw "A definition for option `${name}' is not of type `${opt.type.description}'.";

      evalTree =
        decl: path:
        if decl._type or null == "option" then
          evalOption decl path
        else
          mapAttrs (n: d: evalTree d (path ++ [ n ])) decl;

      config = builtins.seq allDefined (evalTree options [ ]);
    in
    {
      inherit config options;
    };
}
