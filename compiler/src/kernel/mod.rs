//! Kernel IR: the target-independent form every backend lowers.
//!
//! A kernel is a *grid* of independent points (`grid` extents, read in the body as
//! [`Expr::GridIdx`]) and a body run once per point. The body is a short list of statements:
//! data-parallel `Map` loops, `Reduce` statements, ordered `Serial` loops, stores. That split
//! is what lets one kernel run on every target: a CPU backend splits the grid over threads
//! and vectorises `Map`/`Reduce` loops (the `vectorize` pass makes lanes explicit); a GPU
//! backend maps the grid to blocks and spreads `Map`/`Reduce` loops over a block's threads.
//!
//! Storage types are [`kiln_ir::DType`]s; values are 32-bit floats, 32/64-bit integers or
//! booleans, possibly vectors (`lanes > 1`). A load from an f16/bf16 buffer yields f32
//! and a store converts back, so half types never reach arithmetic.

pub mod align;
mod display;
pub mod gpu;
pub mod half;
mod ir;
#[cfg(test)]
pub(crate) mod lockstep;
pub mod math;
pub mod matrix;
pub mod ranges;
pub mod simplify;
pub mod small_ints;
pub mod vectorize;
pub mod warpgroup;

pub use ir::*;

#[cfg(test)]
mod tests;
