# `nix develop`: kiln's build inputs (through inputsFrom), the Rust tools,
# LLVM 19 and lld, the Vulkan and SPIR-V tools the Vulkan tests use, and the
# Nix formatter the flake's `formatter` runs.
{
  lib,
  mkShell,
  kiln,
  llvmPackages_19,
  cargo,
  rustc,
  clippy,
  rustfmt,
  rust-analyzer,
  vulkan-tools,
  vulkan-loader,
  spirv-tools,
  nixfmt,
}:
mkShell {
  inputsFrom = [ kiln ];
  packages = [
    cargo
    rustc
    clippy
    rustfmt
    rust-analyzer
    llvmPackages_19.llvm
    llvmPackages_19.lld
    vulkan-tools
    spirv-tools
    nixfmt
  ];
  env = {
    LLVM_SYS_191_PREFIX = "${llvmPackages_19.llvm.dev}";
    # ash dlopens libvulkan.so.1; outside a wrapped kiln (cargo test, cargo
    # run) it has to be found through the environment.
    LD_LIBRARY_PATH = lib.makeLibraryPath [ vulkan-loader ];
  };
}
