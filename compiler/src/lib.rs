//! kiln's compiler: `Graph` -> rewritten `Graph` -> fused kernels in kernel IR ->
//! scheduled for a `Target` -> memory plan. Every stage is a function between plain data
//! types, so each can be tested by building its input by hand.

pub mod activations;
pub mod cpu_names;
pub mod kernel;
pub mod target;

pub use target::{CpuDesc, Target, TargetError};
pub mod lower;
pub mod memory;
pub mod offsets;
pub mod pipeline;
pub mod relayout;
pub mod rewrite;
pub mod schedule;
pub mod share;
pub mod siblings;
