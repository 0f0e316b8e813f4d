# The target-list logic of kiln's Nix side, with builtins only.
#
# Everything that decides names lives here: which CPU, CUDA and ROCm names kiln
# accepts, how nixpkgs' spellings ("8.9", "gfx1100", "x86-64-v3") become kiln's
# (`cuda:sm_89`, `hip:gfx1100`, `cpu:x86-64-v3`), which backends a set of lists
# turns on, which defaults apply, and which flake packages exist. It needs no
# nixpkgs, so CI checks it with `nix-instantiate --eval --strict` alone, and the
# package, the module, compileModel and the flake all read the same definitions
# instead of repeating them.
#
# Wrong input throws "kiln: ..." naming the list, the bad entry and what is
# accepted: a typo in a fleet's configuration should fail at evaluation, with a
# message, never as a kiln that silently lacks the target.
let
  inherit (builtins)
    all
    concatLists
    concatStringsSep
    elem
    filter
    foldl'
    head
    isBool
    isList
    isString
    listToAttrs
    match
    replaceStrings
    split
    typeOf
    ;

  fail = msg: throw "kiln: ${msg}";

  quoted = l: concatStringsSep ", " (map (x: ''"${x}"'') l);

  # First occurrence wins, order kept: the order of a list is the order of the
  # default targets, which `kiln targets` prints.
  unique = foldl' (acc: x: if elem x acc then acc else acc ++ [ x ]) [ ];

  optional = cond: x: if cond then [ x ] else [ ];

  # A list of strings, or a message that says what was given instead.
  requireStrings =
    field: example: value:
    if !isList value then
      fail "${field} must be a list of strings such as [ ${example} ], not a ${typeOf value}"
    else if !all isString value then
      fail "${field} must contain only strings such as ${example}"
    else
      value;

  # "gfx90a:xnack+" -> { base = "gfx90a"; features = [ "xnack+" ]; }
  splitGfx =
    name:
    let
      parts = filter isString (split ":" name);
    in
    {
      base = head parts;
      features = builtins.tail parts;
    };
in
rec {
  # The systems the flake builds for. kiln's CPU code generator cross-compiles,
  # so this is about where the kiln binary itself runs.
  systems = [
    "x86_64-linux"
    "aarch64-linux"
  ];

  cpu = rec {
    # x86 names as nixpkgs spells them in `lib.systems.architectures` (the
    # names `nixpkgs.hostPlatform.gcc.arch` takes), which are also LLVM CPU
    # names; the tests check the first list against nixpkgs' lib when one is
    # at hand.
    x86_64 = [
      "x86-64"
      "x86-64-v2"
      "x86-64-v3"
      "x86-64-v4"
      "nehalem"
      "westmere"
      "sandybridge"
      "ivybridge"
      "haswell"
      "broadwell"
      "skylake"
      "skylake-avx512"
      "cannonlake"
      "icelake-client"
      "icelake-server"
      "cascadelake"
      "cooperlake"
      "tigerlake"
      "alderlake"
      "sapphirerapids"
      "emeraldrapids"
      "sierraforest"
      "silvermont"
      "btver1"
      "btver2"
      "bdver1"
      "bdver2"
      "bdver3"
      "bdver4"
      "znver1"
      "znver2"
      "znver3"
      "znver4"
      "znver5"
    ];

    # nixpkgs has no AArch64 core names (only "armv8-a"), so these are LLVM's:
    # "aarch64" is kiln's generic AArch64 target.
    aarch64 = [
      "aarch64"
      "neoverse-n1"
      "neoverse-n2"
      "neoverse-v1"
      "neoverse-v2"
      "cortex-a53"
      "cortex-a72"
      "cortex-a76"
      "apple-m1"
    ];

    # "native" is resolved by `kiln compile` on the machine that runs it, so it
    # is a valid default for an installed kiln (never for compileModel, whose
    # output would depend on the builder's CPU).
    known = x86_64 ++ aarch64 ++ [ "native" ];

    # One flake package per name (cpu-x86-64-v4, cpu-neoverse-v1, ...).
    packaged = {
      x86_64-linux = [
        "x86-64-v2"
        "x86-64-v3"
        "x86-64-v4"
      ];
      aarch64-linux = [
        "aarch64"
        "neoverse-n1"
        "neoverse-v1"
        "neoverse-v2"
      ];
    };

    # Without a choice, an x86 kiln compiles every microarchitecture level and
    # the runtime picks the best one by cpuid: one cached kiln serves any x86
    # machine. A system built with `gcc.arch` set to a CPU kiln knows gets
    # exactly that CPU. nixpkgs sets "armv8-a" on every aarch64-linux system,
    # which is no choice and so falls through to the platform's list.
    byDefault = {
      x86_64-linux = [
        "x86-64-v2"
        "x86-64-v3"
        "x86-64-v4"
      ];
      aarch64-linux = [
        "aarch64"
        "neoverse-v1"
      ];
    };

    defaultsFor =
      {
        system,
        gccArch ? null,
      }:
      if gccArch != null && elem gccArch known then
        [ gccArch ]
      else
        byDefault.${system} or (fail "no default CPU targets for system ${system}; set cpuTargets");

    check =
      list:
      let
        names = requireStrings "cpuTargets" ''"x86-64-v3"'' list;
        bad = filter (a: !elem a known) names;
      in
      if bad != [ ] then
        fail "unknown CPU target ${quoted bad} in cpuTargets; known x86-64 names (as in nixpkgs lib.systems.architectures): ${quoted x86_64}; AArch64: ${quoted aarch64}; or \"native\""
      else
        unique names;

    toTarget = arch: "cpu:${arch}";
    packageName = arch: "cpu-${arch}";
  };

  cuda = rec {
    # Capabilities kiln emits PTX for (LLVM NVPTX), in nixpkgs' spelling.
    supported = [
      "7.0"
      "7.2"
      "7.5"
      "8.0"
      "8.6"
      "8.7"
      "8.9"
      "9.0"
      "9.0a"
      "10.0"
      "12.0"
    ];

    # What nixpkgs builds when `config.cudaCapabilities` is unset: the baseline
    # (no "a"/"f"), non-Jetson capabilities of its default CUDA release (12.8 in
    # 2025; nixpkgs' cuda-modules capability table). Copied rather than read from
    # `cudaPackages` so that kiln, which needs no CUDA toolkit, never evaluates
    # one. PTX is kept for every capability, so newer GPUs still run it through
    # the driver's JIT: that is what nixpkgs' `cudaForwardCompat` asks for.
    nixpkgsDefault = [
      "7.5"
      "8.0"
      "8.6"
      "8.9"
      "9.0"
      "10.0"
      "12.0"
    ];

    # One flake package per entry: the data-centre and desktop generations a
    # fleet most often has. Any other list is one `.override` away.
    packaged = [
      "8.0"
      "8.9"
      "9.0"
    ];

    parse =
      cap:
      let
        m = match "([0-9]+)\\.([0-9])([af]?)" cap;
      in
      if m == null then
        fail "malformed CUDA capability \"${cap}\" in cudaCapabilities; write capabilities as nixpkgs does, \"<major>.<minor>\" with an optional \"a\" suffix, e.g. \"8.9\" or \"9.0a\""
      else
        {
          major = builtins.elemAt m 0;
          minor = builtins.elemAt m 1;
          suffix = builtins.elemAt m 2;
        };

    check =
      list:
      let
        caps = requireStrings "cudaCapabilities" ''"8.9"'' list;
        # Parse first, so a malformed entry gets the spelling message.
        parsed = map parse caps;
        bad = filter (c: !elem c supported) caps;
      in
      builtins.seq (builtins.deepSeq parsed null) (
        if bad != [ ] then
          fail "CUDA capability ${quoted bad} in cudaCapabilities is not supported; kiln emits PTX for ${quoted supported}"
        else
          unique caps
      );

    # "8.9" -> "sm_89", "9.0a" -> "sm_90a", "12.0" -> "sm_120"
    smName =
      cap:
      let
        p = parse cap;
      in
      "sm_${p.major}${p.minor}${p.suffix}";

    toTarget = cap: "cuda:${smName cap}";
    packageName = cap: "cuda-${replaceStrings [ "_" ] [ "" ] (smName cap)}";

    # The list a package gets when the nixpkgs configuration asks for CUDA:
    # the configuration's own list, else nixpkgs' default. Entries kiln does not
    # support are dropped here (they may be meant for other packages); the same
    # entries given to kiln directly throw.
    defaultsFrom = config: filter (c: elem c supported) (config.cudaCapabilities or nixpkgsDefault);
  };

  rocm = rec {
    # The gfx targets of kiln's AMD backend, spelled as in
    # `rocmPackages.clr.gpuTargets`.
    gpuTargets = [
      "gfx906"
      "gfx908"
      "gfx90a"
      "gfx942"
      "gfx1030"
      "gfx1100"
      "gfx1101"
      "gfx1200"
      "gfx1201"
    ];

    # Feature suffixes as ROCm writes them ("gfx90a:xnack+").
    checkOne =
      name:
      let
        g = splitGfx name;
        badFeatures = filter (f: match "(xnack|sramecc)[+-]" f == null) g.features;
      in
      if !elem g.base gpuTargets then
        fail "unknown ROCm GPU target \"${name}\" in rocmGpuTargets; kiln supports ${quoted gpuTargets}"
      else if badFeatures != [ ] then
        fail "unknown feature ${quoted badFeatures} of \"${name}\" in rocmGpuTargets; features are xnack+, xnack-, sramecc+ or sramecc-"
      else
        name;

    check = list: unique (map checkOne (requireStrings "rocmGpuTargets" ''"gfx1100"'' list));

    toTarget = gfx: "hip:${gfx}";
    packageName = gfx: "rocm-${gfx}";

    # The ROCm package set's list, as nixpkgs' ROCm libraries read it:
    # `clr.localGpuTargets` when the user narrowed it (e.g. through
    # `rocmPackages.gfx1100`), else `clr.gpuTargets`; keeping the ones kiln
    # supports. `clr` is only read when ROCm is asked for, so it stays
    # unevaluated everywhere else. (`config` is taken for symmetry with
    # cuda.defaultsFrom; nixpkgs has no configuration list for ROCm.)
    defaultsFrom =
      { config, clr }:
      let
        local = clr.localGpuTargets or null;
        given = if local != null then local else clr.gpuTargets or gpuTargets;
      in
      filter (t: elem (splitGfx t).base gpuTargets) given;
  };

  vulkan = {
    target = "vulkan:spv1.3";
  };

  # Validates the four package arguments and returns them normalised
  # (duplicates dropped). Everything below takes this record.
  check =
    {
      cpuTargets,
      cudaCapabilities,
      rocmGpuTargets,
      enableVulkan,
    }:
    let
      result = {
        cpuTargets = cpu.check cpuTargets;
        cudaCapabilities = cuda.check cudaCapabilities;
        rocmGpuTargets = rocm.check rocmGpuTargets;
        enableVulkan =
          if isBool enableVulkan then
            enableVulkan
          else
            fail "enableVulkan must be true or false, not a ${typeOf enableVulkan}";
      };
    in
    if
      result.cpuTargets == [ ]
      && result.cudaCapabilities == [ ]
      && result.rocmGpuTargets == [ ]
      && !result.enableVulkan
    then
      fail "no targets: give at least one of cpuTargets, cudaCapabilities, rocmGpuTargets or enableVulkan = true"
    else
      result;

  # Which optional backends a checked record turns on. The CPU backends
  # (llvm, cranelift) are always built: they are cargo's default features.
  backends = c: {
    cuda = c.cudaCapabilities != [ ];
    vulkan = c.enableVulkan;
    hip = c.rocmGpuTargets != [ ];
  };

  # Cargo features of the root crate, beyond the defaults.
  features =
    c:
    let
      b = backends c;
    in
    optional b.cuda "cuda" ++ optional b.vulkan "vulkan" ++ optional b.hip "hip";

  # The compiled-in default targets (KILN_DEFAULT_TARGETS), in kiln's spelling:
  # CPU first, so a host without the GPU still has a variant it can run.
  defaultTargets =
    c:
    map cpu.toTarget c.cpuTargets
    ++ map cuda.toTarget c.cudaCapabilities
    ++ optional c.enableVulkan vulkan.target
    ++ map rocm.toTarget c.rocmGpuTargets;

  # What a machine that chose `backend` needs, as package arguments. The lists
  # of the other backends are set empty, not left to the nixpkgs configuration,
  # so that `cpu-x86-64-v4` means a CPU-only kiln even in a CUDA-enabled
  # nixpkgs. `cpuTargets = null` keeps the package's platform default.
  backendNames = [
    "cpu"
    "cuda"
    "vulkan"
    "rocm"
  ];

  backendArgs =
    {
      backend,
      cpuTargets ? null,
      cudaCapabilities ? cuda.nixpkgsDefault,
      rocmGpuTargets ? rocm.gpuTargets,
    }:
    if !elem backend backendNames then
      fail "unknown backend \"${toString backend}\"; choose one of ${quoted backendNames}"
    else
      {
        cudaCapabilities = if backend == "cuda" then cudaCapabilities else [ ];
        rocmGpuTargets = if backend == "rocm" then rocmGpuTargets else [ ];
        enableVulkan = backend == "vulkan";
      }
      // (if cpuTargets == null then { } else { inherit cpuTargets; });

  # The flake's packages for one system, as package arguments: name -> args.
  # Generated from the lists above; no variant is written out by hand.
  variants =
    system:
    let
      entry = name: args: { inherit name; value = args; };
      x86 = system == "x86_64-linux";
    in
    listToAttrs (
      [
        (entry "default" (backendArgs { backend = "cpu"; }))
        (entry "cuda" (backendArgs { backend = "cuda"; }))
        (entry "vulkan" (backendArgs { backend = "vulkan"; }))
      ]
      ++ map (a: entry (cpu.packageName a) (backendArgs {
        backend = "cpu";
        cpuTargets = [ a ];
      })) (cpu.packaged.${system} or [ ])
      ++ map (c: entry (cuda.packageName c) (backendArgs {
        backend = "cuda";
        cudaCapabilities = [ c ];
      })) cuda.packaged
      # ROCm's runtime (clr) is packaged for x86_64 only.
      ++ optional x86 (entry "rocm" (backendArgs { backend = "rocm"; }))
      ++ concatLists (
        map (g: optional x86 (entry (rocm.packageName g) (backendArgs {
          backend = "rocm";
          rocmGpuTargets = [ g ];
        }))) rocm.gpuTargets
      )
    );

  # Targets given to compileModel, in kiln's spelling ("cuda:sm_89"). Checked
  # here so a typo fails at evaluation instead of inside the build.
  checkTargets =
    list:
    let
      names = requireStrings "targets" ''"cpu:x86-64-v3"'' list;
      smNames = map cuda.smName cuda.supported;
      one =
        t:
        let
          m = match "([a-z]+):(.+)" t;
          family = head m;
          arch = builtins.elemAt m 1;
        in
        if m == null then
          fail "target \"${t}\" is not spelled <family>:<arch>, e.g. \"cpu:x86-64-v3\", \"cuda:sm_89\", \"vulkan:spv1.3\", \"hip:gfx1100\""
        else if family == "cpu" then
          (
            if arch == "native" then
              fail "target \"cpu:native\" would make the artifact depend on the build machine's CPU; name the CPU, e.g. \"cpu:znver4\""
            else if elem arch cpu.known then
              t
            else
              fail "unknown CPU target \"${t}\"; known: ${quoted (map cpu.toTarget (filter (a: a != "native") cpu.known))}"
          )
        else if family == "cuda" then
          (
            if elem arch smNames then
              t
            else
              fail "unknown CUDA target \"${t}\"; kiln emits ${quoted (map (s: "cuda:${s}") smNames)}"
          )
        else if family == "vulkan" then
          (
            if match "spv1\\.[3-6]" arch != null then
              t
            else
              fail "unknown Vulkan target \"${t}\"; use \"vulkan:spv1.3\" .. \"vulkan:spv1.6\""
          )
        else if family == "hip" then
          rocm.toTarget (rocm.checkOne arch)
        else
          fail "unknown target family in \"${t}\"; families are cpu, cuda, vulkan and hip";
    in
    if names == [ ] then fail "targets is empty; name at least one target" else unique (map one names);

  # The artifact name compileModel uses: the model's file or derivation name
  # without its extension ("llama-3.2-1b.gguf" -> "llama-3.2-1b").
  artifactName =
    model:
    let
      # The name only labels the output; the model itself reaches the build
      # through its own string context.
      full = builtins.unsafeDiscardStringContext (
        if builtins.isAttrs model && model ? name then model.name else baseNameOf (toString model)
      );
      m = match "(.+)\\.(kir|gguf|safetensors)" full;
      name = if m == null then full else head m;
    in
    if match "[A-Za-z0-9+._?=-]+" name == null then
      fail "cannot make an artifact name from \"${full}\"; pass name = \"...\" to compileModel"
    else
      name;

  # "Ahead-of-time ... for cpu:x86-64-v3, cuda:sm_89": meta.description.
  describe = c: "Ahead-of-time neural-network compiler with default targets ${concatStringsSep ", " (defaultTargets c)}";
}
