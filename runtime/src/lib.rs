//! kiln's runtime: the last stage of the data flow (artifact -> variant -> execution).
//!
//! It reads the `.kiln` artifact the compiler wrote ([`artifact`], [`manifest`], [`plan`]),
//! picks the variant this host runs best ([`variant`], [`cpu::features`]), loads its code
//! ([`cpu::module`]) and executes its launch plan ([`cpu::executor`], [`session`]). It
//! depends on kiln-ir only: a deployed runtime needs neither LLVM nor the compiler.

pub mod artifact;
pub mod buffer_offsets;
pub mod cache_dir;
pub mod carry;
pub mod cpu;
pub mod cuda;
pub mod device;
pub mod error;
pub mod hazards;
pub mod hip;
pub mod host_times;
pub mod launch_sizes;
pub mod manifest;
pub mod plan;
pub mod session;
pub mod variant;
pub mod vulkan;

/// Revision of the kernel ABI (how a backend's code takes its arguments and parameters).
/// Raised when one changes, so that artifacts cached by `kiln run model.gguf` are compiled
/// again rather than refused: 2 since Vulkan launch parameters moved to binding 0, 3 since
/// GPU kernels take the address of their buffers' offsets where they took a point count
/// (older artifacts still run, `Variant::buffer_offsets`; a cache is rebuilt to get it).
pub const CODE_ABI: u32 = 3;

pub use artifact::{write_artifact, Artifact, ArtifactError, SectionData, SectionKind};
pub use cpu::executor::LaunchTiming;
pub use cpu::features::{HostArch, HostCpu};
pub use error::RuntimeError;
pub use manifest::{Manifest, TensorSpec, Variant};
pub use plan::{BufferRef, Launch, Plan, SizeExpr};
pub use session::{HostBuffer, Session};
pub use variant::{choose_target, choose_variant, choose_variant_with};
