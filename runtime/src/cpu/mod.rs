//! The CPU device: which `cpu:` variants this host runs ([`features`]), loading their code
//! ([`module`]) and running plans on threads ([`executor`]).

pub mod executor;
pub mod features;
pub mod module;
pub mod subnormals;
mod team;
