//! The `.kir` text form of a [`Graph`](crate::Graph): what tests, pass filetests and the
//! command line read and write instead of building graphs in Rust (like Cranelift's `.clif`).
//! `parse(print(g))` gives back `g` node for node, so a pass test can be written as
//! text in, text out.
//!
//! ```text
//! # an MLP layer
//! kir 1
//! %0 = input "x" f32[batch,64]
//! %1 = param "w1" f32[64,128]
//! %2 = matmul %0, %1 transpose_a=false transpose_b=false
//! %3 = const f32[2] [1.0, -2.5]
//! %4 = gelu_tanh %2
//! %5 = reduce_sum %4 axes=[1] keep_dims=true
//! output "y" = %5
//! ```
//!
//! One statement per line; `#` starts a comment. The first statement is the header
//! `kir 1`. A node is `%name = op operands attributes`: operands are `%name`s separated by
//! commas, attributes are `key=value` in any order, and every attribute of the op must be
//! given (a default that the reader cannot see is a bug waiting in a filetest). Node names
//! in the text are any identifiers, numbered in order of definition; `print` writes
//! `%<index>`. Types are `dtype[dims]` where a dim is an affine expression (`seq`,
//! `2*seq+1`, `past+seq`). Floats print in their shortest exact form and spell
//! infinities and NaN `inf`, `-inf` and `nan`.

mod lex;
mod ops;
mod parse;
mod print;
mod values;

#[cfg(test)]
mod error_tests;
#[cfg(test)]
mod roundtrip_tests;
#[cfg(test)]
mod tests;

pub use parse::parse;
pub use print::{print, type_to_string};
pub use values::{parse_dim, parse_type};

/// The version `print` writes in the header and the only one `parse` reads.
pub const VERSION: u32 = 1;
