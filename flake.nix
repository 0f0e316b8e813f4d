{
  description = "kiln: an ahead-of-time neural-network compiler, packaged per CPU level, CUDA capability, ROCm gfx target and Vulkan";

  # One input. kiln needs no CUDA or ROCm toolkit to build, so no second
  # nixpkgs with cudaSupport/rocmSupport is ever instantiated.
  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  # The outputs live in nix/flake-outputs.nix, a plain function of the inputs,
  # so the tests (scripts/nix-tests.sh) can evaluate them with a stand-in
  # nixpkgs.
  outputs = { self, nixpkgs }: import ./nix/flake-outputs.nix { inherit self nixpkgs; };
}
