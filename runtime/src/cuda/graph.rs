//! A plan's launches as one CUDA graph, replayed run after run.
//!
//! A decode step is hundreds of small launches; launched one by one, the host's launch
//! calls and the gaps between kernels cost more than the kernels. The graph is built from
//! the plan's launches once (one kernel node each, with an edge from each launch it must
//! follow: `crate::hazards`) and replayed with one call.
//! A later run with the same launches but other sizes or addresses (the next position of a
//! decode, a grown arena) updates only the nodes whose parameters changed, in place; a run
//! that launches a different set of kernels rebuilds the graph. Correctness never depends
//! on a run resembling the last one, only the cost does.
//!
//! Where the code's kernels wait for their predecessors themselves (sm_90 and newer, see
//! `Variant::waits_for_prior_grids`), the edges are programmatic: a kernel launches once
//! every block of the kernels it follows has started, and its blocks are scheduled as
//! theirs retire, instead of after they have finished and flushed. A decode step is a
//! chain of a few hundred kernels of a few microseconds each; that launch gap is paid once
//! per link of the chain.

use cudarc::driver::{sys, CudaStream, DriverError};
use std::ffi::c_void;

/// One kernel launch as the graph holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelCall {
    /// Index of the launch in the plan (a graph is reused only for the same sequence).
    pub launch: usize,
    pub function: sys::CUfunction,
    pub blocks: u32,
    pub threads: u32,
    /// Dynamic shared memory per block, in bytes.
    pub shared_bytes: u32,
    /// The kernel's parameters, each 8 bytes: buffer addresses, the dims address, the
    /// point count (the GPU ABI of `kiln-codegen`).
    pub params: Vec<u64>,
}

impl KernelCall {
    /// The driver's description of this call. It points into `self` and `slots`, which
    /// must outlive its use.
    fn node_params(&self, slots: &mut Vec<*mut c_void>) -> sys::CUDA_KERNEL_NODE_PARAMS_v2 {
        slots.clear();
        slots.extend(self.params.iter().map(|p| p as *const u64 as *mut c_void));
        sys::CUDA_KERNEL_NODE_PARAMS_v2 {
            func: self.function,
            gridDimX: self.blocks,
            gridDimY: 1,
            gridDimZ: 1,
            blockDimX: self.threads,
            blockDimY: 1,
            blockDimZ: 1,
            sharedMemBytes: self.shared_bytes,
            kernelParams: slots.as_mut_ptr(),
            extra: std::ptr::null_mut(),
            kern: std::ptr::null_mut(),
            ctx: std::ptr::null_mut(),
        }
    }
}

pub struct LaunchGraph {
    graph: sys::CUgraph,
    exec: sys::CUgraphExec,
    nodes: Vec<(sys::CUgraphNode, KernelCall)>,
}

impl std::fmt::Debug for LaunchGraph {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LaunchGraph({} launches)", self.nodes.len())
    }
}

impl LaunchGraph {
    /// A graph running `calls`, each after the calls `deps` names (positions in `calls`,
    /// `crate::hazards::dependencies`): independent calls may run at the same time.
    /// `programmatic`: each call may launch as soon as the calls it follows have all
    /// started (their kernels must wait for their own predecessors). The caller's context
    /// must be current.
    pub fn build(
        calls: &[KernelCall],
        deps: &[Vec<usize>],
        programmatic: bool,
    ) -> Result<LaunchGraph, DriverError> {
        let mut graph = std::ptr::null_mut();
        // SAFETY: an out-pointer for the new graph.
        unsafe { sys::cuGraphCreate(&mut graph, 0) }.result()?;
        let mut this = LaunchGraph {
            graph,
            exec: std::ptr::null_mut(),
            nodes: Vec::with_capacity(calls.len()),
        };
        let mut slots = Vec::new();
        let early = sys::CUgraphEdgeData {
            from_port: sys::CU_GRAPH_KERNEL_NODE_PORT_PROGRAMMATIC as u8,
            to_port: 0,
            type_: sys::CUgraphDependencyType::CU_GRAPH_DEPENDENCY_TYPE_PROGRAMMATIC as u8,
            reserved: [0; 5],
        };
        for (call, waits) in calls.iter().zip(deps) {
            let params = call.node_params(&mut slots);
            let deps: Vec<sys::CUgraphNode> = waits.iter().map(|&w| this.nodes[w].0).collect();
            let mut node = std::ptr::null_mut();
            let (plain, n) = if programmatic {
                (std::ptr::null(), 0)
            } else {
                (deps.as_ptr(), deps.len())
            };
            // SAFETY: `params` points into `call` and `slots`, alive for the call; the
            // driver copies the argument values; `deps` are nodes of this graph.
            unsafe { sys::cuGraphAddKernelNode_v2(&mut node, graph, plain, n, &params) }
                .result()?;
            if programmatic && !deps.is_empty() {
                let to = vec![node; deps.len()];
                let edges = vec![early; deps.len()];
                // SAFETY: `deps`, `to` and `edges` have one entry per edge; all nodes are
                // kernel nodes of this graph.
                unsafe {
                    sys::cuGraphAddDependencies_v2(
                        graph,
                        deps.as_ptr(),
                        to.as_ptr(),
                        edges.as_ptr(),
                        deps.len(),
                    )
                }
                .result()?;
            }
            this.nodes.push((node, call.clone()));
        }
        // SAFETY: a complete graph; the out-pointer is ours.
        unsafe { sys::cuGraphInstantiateWithFlags(&mut this.exec, graph, 0) }.result()?;
        Ok(this)
    }

    /// Sets the graph up to run `calls`, changing only the nodes whose parameters differ.
    /// Returns false, changing nothing, when `calls` are not the graph's launches.
    pub fn update(&mut self, calls: &[KernelCall]) -> Result<bool, DriverError> {
        let same_launches = calls.len() == self.nodes.len()
            && calls
                .iter()
                .zip(&self.nodes)
                .all(|(c, (_, n))| c.launch == n.launch && c.function == n.function);
        if !same_launches {
            return Ok(false);
        }
        let mut slots = Vec::new();
        for (call, (node, held)) in calls.iter().zip(&mut self.nodes) {
            if call == held {
                continue;
            }
            let params = call.node_params(&mut slots);
            // SAFETY: `node` belongs to the graph `exec` was instantiated from; `params`
            // points into `call` and `slots`, alive for the call.
            unsafe { sys::cuGraphExecKernelNodeSetParams_v2(self.exec, *node, &params) }
                .result()?;
            *held = call.clone();
        }
        Ok(true)
    }

    /// Queues the whole graph on `stream`.
    pub fn launch(&self, stream: &CudaStream) -> Result<(), DriverError> {
        // SAFETY: an instantiated graph and a live stream of the same context.
        unsafe { sys::cuGraphLaunch(self.exec, stream.cu_stream()) }.result()
    }
}

impl Drop for LaunchGraph {
    fn drop(&mut self) {
        // SAFETY: both were created by `build` and are destroyed once; a graph that was
        // launched completes before its resources are released (the driver defers that).
        unsafe {
            if !self.exec.is_null() {
                let _ = sys::cuGraphExecDestroy(self.exec);
            }
            let _ = sys::cuGraphDestroy(self.graph);
        }
    }
}
