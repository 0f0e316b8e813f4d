//! The compiler's front door: graph + target -> kernels ready for a code generator, the
//! launch list, and the arena plan. `kiln compile` calls this once per target.

use crate::kernel::{math, vectorize, Kernel};
use crate::lower::{self, LowerError, Lowered};
use crate::memory::{self, ArenaPlan};
use crate::rewrite::{self, RewriteLimits, RewriteReport};
use crate::schedule::Schedule;
use crate::target::Target;
use kiln_ir::Graph;

#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    #[error(transparent)]
    Ir(#[from] kiln_ir::IrError),
    #[error(transparent)]
    Lower(#[from] LowerError),
    #[error("rewrite: {0}")]
    Rewrite(String),
    #[error("target {0} has no schedule in this compiler")]
    NoSchedule(String),
}

#[derive(Clone, Debug)]
pub struct Compiled {
    pub graph: Graph,
    pub lowered: Lowered,
    pub arena: ArenaPlan,
    /// What the e-graph pass did (`None` when it was turned off).
    pub rewrite: Option<RewriteReport>,
}

impl Compiled {
    pub fn kernels(&self) -> &[Kernel] {
        &self.lowered.kernels
    }
}

#[derive(Clone, Debug)]
pub struct Options {
    /// Run the e-graph rewrite pass (on by default; off compiles the graph as written).
    pub rewrite: bool,
    pub limits: RewriteLimits,
    /// For `cpu:` targets: the widest vector register in bits (from the target, or the
    /// backend's own limit, e.g. Cranelift's 128).
    pub vector_bits: Option<u32>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            rewrite: true,
            limits: RewriteLimits::default(),
            vector_bits: None,
        }
    }
}

pub fn schedule_for(target: &Target, opts: &Options) -> Result<Schedule, CompileError> {
    if matches!(target, Target::Cuda(_) | Target::Hip(_) | Target::Vulkan(_)) {
        return Ok(Schedule::gpu());
    }
    let desc = target
        .cpu_desc(None)
        .ok_or_else(|| CompileError::NoSchedule(target.to_string()))?;
    let bits = opts
        .vector_bits
        .map_or(desc.vector_bits, |b| b.min(desc.vector_bits));
    Ok(Schedule::for_vector_bits(bits))
}

pub fn compile(graph: &Graph, target: &Target, opts: &Options) -> Result<Compiled, CompileError> {
    kiln_ir::verify(graph)?;
    let schedule = schedule_for(target, opts)?;
    let (graph, report) = if opts.rewrite {
        let (g, r) = rewrite::rewrite(graph, &opts.limits)
            .map_err(|e| CompileError::Rewrite(e.to_string()))?;
        (g, Some(r))
    } else {
        (graph.clone(), None)
    };
    let mut lowered = lower::lower(&graph, schedule)?;
    for k in &mut lowered.kernels {
        finish_kernel(k);
    }
    let arena = memory::plan(&lowered);
    Ok(Compiled {
        graph,
        lowered,
        arena,
        rewrite: report,
    })
}

/// Target-independent kernel passes run before any code generator sees a kernel.
pub fn finish_kernel(k: &mut Kernel) {
    math::expand_kernel(k);
    vectorize::vectorize_kernel(k);
}
