//! Per-target schedule parameters: the choices lowering makes differently per target.
//!
//! For CPUs: f32 lanes of vectorised loops, and the register tile (`mr` x `nr`) and
//! k-block (`kc`) of matmul. `nr` is two vectors wide and `mr` rows, so the `mr * 2`
//! accumulators plus two B vectors and one broadcast A value fit the vector registers
//! (16 on x86-64 up to AVX2, 32 with AVX-512 and on AArch64).

use crate::target::CpuDesc;

const PACKED_B_BYTES: u32 = 128 << 10;

/// See `Schedule::narrow_dot_blocks`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NarrowBlocks {
    Never,
    Always,
    /// Only dot products whose steps take nibble partners (`SplitSteps`).
    WhereSplit,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Schedule {
    pub lanes: u8,
    pub mr: u32,
    pub nr: u32,
    /// `nr`-wide panels per matmul grid point: the `mr x kc` slice of A a micro-kernel
    /// reads stays in L1 across this many panels, cutting A's traffic from L2/L3.
    pub panels: u32,
    pub kc: u32,
    /// GPU targets: elementwise kernels put every axis in the grid (one thread per
    /// element) instead of a vectorised loop over the last axis.
    pub gpu: bool,
    /// The code generator compiles byte dot products (`Expr::DotBytes`) over vectors of
    /// `4 * lanes` bytes (LLVM's CPU targets; not Cranelift, whose vectors are 128 bits),
    /// or, with `gpu`, as `dp4a` (CUDA: `lower::gpu_byte_dot`).
    pub byte_dot: bool,
    /// The target converts halves in hardware and the code generator emits that
    /// (`UOp::HalfBits`): the f16 scales inside quantized blocks cost one instruction.
    pub half_bits: bool,
    /// GPU code loads single bytes natively (LLVM's GPU targets), so a quantized matvec can
    /// give consecutive threads consecutive elements. SPIR-V reads a byte as a shift of a
    /// 32-bit word, where each thread decoding a run of neighbouring bytes shares words.
    pub byte_loads: bool,
    /// The target's matrix instructions, which the GPU matmul of half matrices uses
    /// (`lower::matrix`); `None` on CPUs, Vulkan and GPUs without one.
    pub matrix: Option<crate::kernel::matrix::MatrixUnit>,
    /// The matrix unit also multiplies bf16 (not every one does: gfx908).
    pub matrix_bf16: bool,
    /// The target has Hopper's warpgroup matrix instruction (`Stmt::GroupMma`:
    /// `cuda:sm_90a` only), which the matmul of half matrices prefers to `matrix`.
    pub group_mma: bool,
    /// GPU dot products along contiguous rows (the decode matvec) read this many elements
    /// of each row per step of a thread (`lower::matmul::gpu_dot_lanes`); 1 reads one.
    pub gpu_dot_lanes: u8,
    /// Integers of known small range convert to f32 through the exponent field
    /// (`kernel::small_ints`): NVIDIA's conversion unit runs at a quarter of the FMA rate,
    /// and quantized dot products convert every weight.
    pub int_to_float_by_exponent: bool,
    /// Which GPU decode dot products may run blocks of fewer than `BLOCK_THREADS` threads
    /// (`lower::gpu_dot::block_threads`). Every GPU code generator takes a kernel's own
    /// block size; where narrow blocks were faster depends on the driver (pipeline.rs).
    pub narrow_dot_blocks: NarrowBlocks,
    /// Whether GPU decode steps over 4-bit quants take nibble partners
    /// (`lower::gpu_dot::Step`).
    pub split_steps: bool,
    /// Bytes of shared memory a GPU block may use (`lower::matrix` plans its staging
    /// within it); 0 on CPUs.
    pub shared_bytes: u32,
}

impl Schedule {
    pub fn for_cpu(desc: &CpuDesc) -> Schedule {
        Schedule::for_vector_bits(desc.vector_bits)
    }

    pub fn for_vector_bits(bits: u32) -> Schedule {
        let lanes = (bits / 32).clamp(1, 16) as u8;
        let (nr, kc) = (2 * lanes as u32, 256);
        Schedule {
            lanes,
            mr: 6,
            nr,
            // The packed panels of B (on the stack) stay within 128 KiB: half of a
            // typical L2, and small for a worker thread's stack.
            panels: (PACKED_B_BYTES / (kc * nr * 4)).clamp(1, 8),
            kc,
            gpu: false,
            byte_dot: true,
            half_bits: false,
            byte_loads: true,
            matrix: None,
            matrix_bf16: false,
            group_mma: false,
            gpu_dot_lanes: 1,
            int_to_float_by_exponent: false,
            narrow_dot_blocks: NarrowBlocks::Never,
            split_steps: false,
            shared_bytes: 0,
        }
    }

    /// Lanes of a map loop whose result is `dtype`. 64-bit results stay scalar: in these
    /// graphs they are index arithmetic (never hot), and a loop of f32 lanes cannot
    /// keep as many 64-bit lanes in the same registers — Cranelift's 128-bit vectors
    /// hold only two, while the loop's f32 operands would want four.
    pub fn lanes_for(&self, dtype: kiln_ir::DType) -> u8 {
        if dtype.size_bytes() > 4 {
            1
        } else {
            self.lanes
        }
    }

    /// The scalar schedule: no vector lanes, a 4x4 tile.
    pub fn scalar() -> Schedule {
        Schedule {
            lanes: 1,
            mr: 4,
            nr: 4,
            panels: 1,
            kc: 256,
            gpu: false,
            byte_dot: false,
            half_bits: false,
            byte_loads: true,
            matrix: None,
            matrix_bf16: false,
            group_mma: false,
            gpu_dot_lanes: 1,
            int_to_float_by_exponent: false,
            narrow_dot_blocks: NarrowBlocks::Never,
            split_steps: false,
            shared_bytes: 0,
        }
    }

    /// GPU targets (CUDA, HIP, Vulkan): scalar code, elementwise grids over every axis.
    /// How grid points map to blocks and threads is `kernel::gpu`'s decision.
    pub fn gpu() -> Schedule {
        Schedule {
            gpu: true,
            // Eight halves: one 16-byte load per thread and step.
            gpu_dot_lanes: 8,
            // What every GPU kiln targets allows a block without asking (CUDA's static
            // limit; AMD's LDS holds 64 KiB; Vulkan guarantees less, but its kernels
            // declare no shared locals).
            shared_bytes: 48 << 10,
            split_steps: true,
            ..Schedule::scalar()
        }
    }
}
