//! A loaded model ready to run: the entry point of `kiln run` and `kiln bench`.
//!
//! [`Session::new`] opens and checks the artifact, chooses the variant for this host and
//! loads its code; [`Session::run`] checks the inputs against the manifest, binds the
//! symbols (`batch`, `seq`) from their extents, allocates the outputs and runs the plan.

use crate::artifact::Artifact;
use crate::carry::{CarriedRun, Carry};
use crate::cpu::executor::{AlignedBuf, CpuExecutor, LaunchTiming, RunBuffers};
use crate::cpu::module::CpuModule;
use crate::device::DeviceExecutor;
use crate::error::RuntimeError;
use crate::manifest::{Manifest, TensorSpec, Variant};
use crate::plan::eval_extent;
use crate::variant::choose_variant;
use kiln_ir::dim::shape_to_string;
use kiln_ir::{Bindings, DType, Tensor};
use std::path::Path;

/// A tensor in host memory: little-endian elements, row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct HostBuffer {
    pub dtype: DType,
    pub shape: Vec<usize>,
    pub bytes: Vec<u8>,
}

impl HostBuffer {
    pub fn new(dtype: DType, shape: Vec<usize>, bytes: Vec<u8>) -> HostBuffer {
        HostBuffer {
            dtype,
            shape,
            bytes,
        }
    }

    pub fn from_f32(shape: Vec<usize>, values: &[f32]) -> HostBuffer {
        let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        HostBuffer {
            dtype: DType::F32,
            shape,
            bytes,
        }
    }

    /// The elements as f32, for `f32` buffers (`None` for other dtypes).
    pub fn to_f32(&self) -> Option<Vec<f32>> {
        (self.dtype == DType::F32).then(|| {
            self.bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
                .collect()
        })
    }

    pub fn to_tensor(&self) -> Result<Tensor, String> {
        Tensor::from_bytes(self.dtype, self.shape.clone(), &self.bytes)
    }
}

impl From<&Tensor> for HostBuffer {
    fn from(t: &Tensor) -> HostBuffer {
        HostBuffer {
            dtype: t.dtype,
            shape: t.shape.clone(),
            bytes: t.to_bytes(),
        }
    }
}

/// An artifact with its chosen variant's code loaded.
#[derive(Debug)]
pub struct Session {
    artifact: Artifact,
    variant: usize,
    why: String,
    executor: Executor,
    /// Inputs kept on the executor between runs (see [`Session::carry`]).
    carries: Vec<Carry>,
    /// Output storage handed back by [`Session::recycle`], for later runs' outputs.
    spare: Vec<Vec<u8>>,
}

/// The device a session runs on. Each executor evaluates the same plan types.
#[derive(Debug)]
enum Executor {
    Cpu(CpuExecutor),
    /// CUDA, HIP or Vulkan.
    Device(Box<dyn DeviceExecutor>),
}

impl Session {
    /// Opens `path`, chooses the best variant for this host (or `KILN_TARGET`'s) and loads it.
    /// `threads`: CPU threads for kernels; `None` = available parallelism.
    pub fn new(path: impl AsRef<Path>, threads: Option<usize>) -> Result<Session, RuntimeError> {
        let artifact = Artifact::open(path)?;
        let (variant, why) = choose_variant(artifact.manifest())?;
        Session::with_variant(artifact, variant, why, threads)
    }

    /// Loads variant `variant` of an opened artifact; `why` is kept for [`Session::why`].
    pub fn with_variant(
        artifact: Artifact,
        variant: usize,
        why: String,
        threads: Option<usize>,
    ) -> Result<Session, RuntimeError> {
        let v =
            artifact
                .manifest()
                .variants
                .get(variant)
                .ok_or_else(|| RuntimeError::Override {
                    requested: format!("variant {variant}"),
                    why: "the artifact has no such variant".into(),
                })?;
        artifact.weights()?; // check its hash now, not in the middle of a run
        let executor = match v.target.split_once(':').map(|(f, _)| f) {
            Some("cpu") => {
                let module = CpuModule::load(&v.target, artifact.code(variant)?, &v.kernels)?;
                Executor::Cpu(CpuExecutor::new(module, threads)?)
            }
            #[cfg(feature = "cuda")]
            Some("cuda") => Executor::Device(Box::new(crate::cuda::executor::CudaExecutor::new(
                &v.target,
                artifact.code(variant)?,
                &v.kernels,
                artifact.weights()?,
                v.waits_for_prior_grids,
                v.counts_own_points,
                v.buffer_offsets,
            )?)),
            #[cfg(feature = "vulkan")]
            Some("vulkan") => {
                Executor::Device(Box::new(crate::vulkan::executor::VulkanExecutor::new(
                    &v.target,
                    artifact.code(variant)?,
                    &v.plan,
                    artifact.weights()?,
                )?))
            }
            Some("hip") => Executor::Device(Box::new(crate::hip::executor::HipExecutor::new(
                &v.target,
                artifact.code(variant)?,
                &v.kernels,
                artifact.weights()?,
                v.buffer_offsets,
            )?)),
            _ => {
                return Err(RuntimeError::NoExecutor {
                    target: v.target.clone(),
                })
            }
        };
        Ok(Session {
            artifact,
            variant,
            why,
            executor,
            carries: Vec::new(),
            spare: Vec::new(),
        })
    }

    pub fn manifest(&self) -> &Manifest {
        self.artifact.manifest()
    }

    pub fn artifact(&self) -> &Artifact {
        &self.artifact
    }

    pub fn variant(&self) -> &Variant {
        &self.manifest().variants[self.variant]
    }

    /// Why this variant was chosen (printed by `kiln run -v`).
    pub fn why(&self) -> &str {
        &self.why
    }

    /// CPU threads running kernels (1 for GPU variants: the host thread that launches).
    pub fn threads(&self) -> usize {
        match &self.executor {
            Executor::Cpu(e) => e.threads(),
            Executor::Device(_) => 1,
        }
    }

    /// The device kernels run on, for messages (`cpu`, or the GPU's name).
    pub fn device(&self) -> String {
        match &self.executor {
            Executor::Cpu(_) => "cpu".into(),
            Executor::Device(e) => e.device_name().into(),
        }
    }

    /// How many runs replayed recorded launches (a CUDA graph, a Vulkan command buffer)
    /// rather than recording them anew; `None` where the executor records nothing.
    pub fn recordings(&self) -> Option<crate::device::Recordings> {
        match &self.executor {
            Executor::Cpu(_) => None,
            Executor::Device(e) => e.recordings(),
        }
    }

    pub fn run(&mut self, inputs: &[HostBuffer]) -> Result<Vec<HostBuffer>, RuntimeError> {
        self.run_profiled_if(inputs, false).map(|(out, _)| out)
    }

    /// Like [`Session::run`], also timing each launch.
    pub fn run_profiled(
        &mut self,
        inputs: &[HostBuffer],
    ) -> Result<(Vec<HostBuffer>, Vec<LaunchTiming>), RuntimeError> {
        self.run_profiled_if(inputs, true)
    }

    fn run_profiled_if(
        &mut self,
        inputs: &[HostBuffer],
        profile: bool,
    ) -> Result<(Vec<HostBuffer>, Vec<LaunchTiming>), RuntimeError> {
        let given: Vec<Option<&HostBuffer>> = inputs.iter().map(Some).collect();
        let (outputs, timings) = self.run_inner(&given, profile)?;
        // With nothing carried every output is the caller's; with carries, some inputs were
        // given that the session holds and run_inner has already refused them.
        let outputs = outputs
            .into_iter()
            .map(|o| o.expect("no carried outputs"))
            .collect();
        Ok((outputs, timings))
    }

    /// Keeps each `(input, output)` pair on the executor from now on: the input starts empty
    /// and every run appends the output's rows to it (see [`crate::carry`]). Replaces the
    /// pairs of an earlier call.
    pub fn carry(&mut self, pairs: &[(&str, &str)]) -> Result<(), RuntimeError> {
        let mut carries: Vec<Carry> = Vec::with_capacity(pairs.len());
        for &(input, output) in pairs {
            let c = Carry::new(self.manifest(), input, output)?;
            if carries
                .iter()
                .any(|o| o.input == c.input || o.output == c.output)
            {
                return Err(RuntimeError::Carry {
                    input: input.into(),
                    output: output.into(),
                    why: "the input or output is already in another pair".into(),
                });
            }
            carries.push(c);
        }
        self.carries = carries;
        Ok(())
    }

    /// Empties every carried input (a new sequence); their storage is kept for reuse.
    pub fn reset_carried(&mut self) {
        for c in &mut self.carries {
            c.rows = 0;
        }
    }

    /// Hands outputs of an earlier run back, so later runs fill their storage instead of
    /// allocating: a decode step's logits are a fresh 128 KiB or more each token
    /// otherwise, and on a host whose page faults are slow (a sandboxed one) first
    /// touching that memory costs tens of microseconds a step.
    pub fn recycle(&mut self, outputs: impl IntoIterator<Item = HostBuffer>) {
        for b in outputs {
            if self.spare.len() < MAX_SPARE && b.bytes.capacity() > 0 {
                self.spare.push(b.bytes);
            }
        }
    }

    /// Runs with carried inputs: `inputs` has `None` exactly where an input is carried, and
    /// the outputs are `None` where they are carried (they stay with the executor).
    pub fn run_carrying(
        &mut self,
        inputs: &[Option<HostBuffer>],
        profile: bool,
    ) -> Result<(Vec<Option<HostBuffer>>, Vec<LaunchTiming>), RuntimeError> {
        let given: Vec<Option<&HostBuffer>> = inputs.iter().map(Option::as_ref).collect();
        self.run_inner(&given, profile)
    }

    /// The shape each input has in this run: the caller's, or for a carried input its rows
    /// so far and the spec's trailing dims.
    fn input_shapes(
        &self,
        inputs: &[Option<&HostBuffer>],
    ) -> Result<Vec<Vec<usize>>, RuntimeError> {
        let specs = &self.manifest().inputs;
        if inputs.len() != specs.len() {
            return Err(RuntimeError::InputCount {
                expected: specs.len(),
                got: inputs.len(),
            });
        }
        let mut shapes = Vec::with_capacity(specs.len());
        for (index, (spec, given)) in specs.iter().zip(inputs).enumerate() {
            let carried = self.carries.iter().find(|c| c.input == index);
            let err = |expected: &str, got: &str| RuntimeError::Input {
                index,
                name: spec.name.clone(),
                expected: expected.into(),
                got: got.into(),
            };
            shapes.push(match (given, carried) {
                (Some(b), None) => b.shape.clone(),
                (None, Some(c)) => std::iter::once(c.rows)
                    .chain(
                        spec.shape[1..]
                            .iter()
                            .map(|d| d.as_known().unwrap_or(0) as usize),
                    )
                    .collect(),
                (None, None) => return Err(err("a buffer", "none")),
                (Some(_), Some(_)) => {
                    return Err(err("none: the session carries this input", "a buffer"))
                }
            });
        }
        Ok(shapes)
    }

    /// The symbol values implied by the inputs' extents (a carried input's by the rows it
    /// holds), after checking them against the spec.
    pub fn bind(&self, inputs: &[Option<&HostBuffer>]) -> Result<Bindings, RuntimeError> {
        let specs = &self.manifest().inputs;
        let shapes = self.input_shapes(inputs)?;
        let mut env = Bindings::new();
        solve_symbols(specs, &shapes, &mut env);
        for (index, ((spec, shape), given)) in specs.iter().zip(&shapes).zip(inputs).enumerate() {
            let (dtype, bytes) = match given {
                Some(b) => (b.dtype, Some(b.bytes.len())),
                None => (spec.dtype, None),
            };
            check_input(index, spec, dtype, shape, bytes, &env)?;
        }
        let target = &self.variant().target;
        let unbound = self
            .variant()
            .plan
            .symbols
            .iter()
            .find(|s| !env.contains_key(*s));
        if let Some(s) = unbound {
            let msg = format!("symbol `{s}` is not determined by the inputs' shapes");
            return Err(RuntimeError::Plan {
                target: target.clone(),
                msg,
            });
        }
        Ok(env)
    }

    #[allow(clippy::type_complexity)]
    fn run_inner(
        &mut self,
        inputs: &[Option<&HostBuffer>],
        profile: bool,
    ) -> Result<(Vec<Option<HostBuffer>>, Vec<LaunchTiming>), RuntimeError> {
        let env = self.bind(inputs)?;
        let target = self.variant().target.clone();
        let mut outputs = Vec::with_capacity(self.manifest().outputs.len());
        for spec in &self.manifest().outputs {
            let msg = |m: String| RuntimeError::Plan {
                target: target.clone(),
                msg: format!("output `{}`: {m}", spec.name),
            };
            let shape = spec
                .shape
                .iter()
                .map(|d| {
                    eval_extent(d, &env).and_then(|n| {
                        usize::try_from(n).map_err(|_| format!("dim {d} is too large"))
                    })
                })
                .collect::<Result<Vec<usize>, String>>()
                .map_err(msg)?;
            let bytes = shape
                .iter()
                .try_fold(spec.dtype.size_bytes(), |acc, &d| acc.checked_mul(d))
                .ok_or_else(|| msg("size overflows".into()))?;
            outputs.push((shape, bytes));
        }
        let carried: Vec<CarriedRun> = self
            .carries
            .iter()
            .map(|c| CarriedRun {
                input: c.input,
                output: c.output,
                held: c.rows * c.row_bytes,
                appended: outputs[c.output].1,
            })
            .collect();
        let specs = &self.artifact.manifest().outputs;
        // A device's outputs come down whole, over whatever the storage held; kernels on
        // the CPU write outputs in place and get them zeroed.
        let on_cpu = matches!(self.executor, Executor::Cpu(_));
        let mut host = Vec::with_capacity(outputs.len());
        for (o, ((shape, bytes), spec)) in outputs.into_iter().zip(specs).enumerate() {
            let kept = carried.iter().any(|c| c.output == o);
            let storage = if kept {
                None
            } else {
                Some(output_storage(&mut self.spare, bytes, &spec.name, on_cpu)?)
            };
            host.push((shape, storage));
        }
        let plan = &self.artifact.manifest().variants[self.variant].plan;
        let (outputs, timings) = match &mut self.executor {
            Executor::Cpu(executor) => {
                let mut staged_outputs = Vec::with_capacity(host.len());
                for ((shape, storage), spec) in host.into_iter().zip(specs) {
                    let staged = storage.map(|v| Staged::output(v, &spec.name)).transpose()?;
                    staged_outputs.push((shape, staged));
                }
                let mut staged_inputs: Vec<Option<Staged>> = inputs
                    .iter()
                    .map(|b| b.map(Staged::input).transpose())
                    .collect::<Result<_, _>>()?;
                let mut input_ptrs: Vec<*mut u8> = staged_inputs
                    .iter_mut()
                    .map(|s| s.as_mut().map_or(std::ptr::null_mut(), Staged::ptr))
                    .collect();
                let mut output_ptrs: Vec<*mut u8> = staged_outputs
                    .iter_mut()
                    .map(|(_, s)| s.as_mut().map_or(std::ptr::null_mut(), Staged::ptr))
                    .collect();
                for (c, base) in carried.iter().zip(executor.carried_storage(&carried)?) {
                    input_ptrs[c.input] = base;
                    // SAFETY: carried_storage holds at least `held + appended` bytes.
                    output_ptrs[c.output] = unsafe { base.add(c.held) };
                }
                let weights = self
                    .artifact
                    .weights()?
                    .map_or(std::ptr::null(), |w| w.as_ptr());
                let buffers = RunBuffers {
                    inputs: &input_ptrs,
                    outputs: &output_ptrs,
                    weights,
                };
                // SAFETY: inputs were checked to hold exactly their spec's bytes (carried
                // ones are the executor's storage, holding what earlier runs appended),
                // outputs were sized from their specs under the same bindings (carried ones
                // are the storage right after the held rows, sized by carried_storage),
                // weights are the hash-checked section whose ranges the manifest check
                // bounded, and the plan is the module's own.
                let timings = unsafe { executor.execute(plan, &env, &buffers, profile)? };
                let outputs: Vec<(Vec<usize>, Option<Vec<u8>>)> = staged_outputs
                    .into_iter()
                    .map(|(shape, s)| (shape, s.map(Staged::into_vec)))
                    .collect();
                (outputs, timings)
            }
            Executor::Device(executor) => on_device(inputs, host, &carried, |io| {
                executor.execute(plan, &env, io, profile)
            })?,
        };
        for c in &mut self.carries {
            c.rows += outputs[c.output].0.first().copied().unwrap_or(0);
        }
        let results = self
            .manifest()
            .outputs
            .iter()
            .zip(outputs)
            .map(|(spec, (shape, bytes))| {
                bytes.map(|bytes| HostBuffer {
                    dtype: spec.dtype,
                    shape,
                    bytes,
                })
            })
            .collect();
        Ok((results, timings))
    }
}

/// Binds symbols from input extents: a dim with exactly one unbound symbol is solved for
/// it (`2*seq+1` of extent 7 gives `seq = 3`), repeating until nothing changes. Dims that
/// do not solve stay unbound; `check_input` reports them.
fn solve_symbols(specs: &[TensorSpec], shapes: &[Vec<usize>], env: &mut Bindings) {
    loop {
        let mut progress = false;
        for (spec, shape) in specs.iter().zip(shapes) {
            if spec.shape.len() != shape.len() {
                continue;
            }
            for (dim, &extent) in spec.shape.iter().zip(shape) {
                let mut unbound = dim.terms.iter().filter(|(s, _)| !env.contains_key(s));
                let (Some((sym, coeff)), None) = (unbound.next(), unbound.next()) else {
                    continue;
                };
                // Checked: the manifest's coefficients are untrusted.
                let rest = dim.terms.iter().filter(|(s, _)| s != sym).try_fold(
                    i64::try_from(extent)
                        .ok()
                        .and_then(|e| e.checked_sub(dim.constant)),
                    |acc, (s, c)| Some(acc.and_then(|a| a.checked_sub(c.checked_mul(env[s])?))),
                );
                if let Some(Some(rest)) = rest {
                    if *coeff != 0 && rest.checked_rem(*coeff) == Some(0) && rest / coeff >= 0 {
                        env.insert(sym.clone(), rest / coeff);
                        progress = true;
                    }
                }
            }
        }
        if !progress {
            return;
        }
    }
}

/// `bytes`: the buffer's length (`None` for a carried input, whose storage the executor
/// sized).
fn check_input(
    index: usize,
    spec: &TensorSpec,
    dtype: DType,
    shape: &[usize],
    bytes: Option<usize>,
    env: &Bindings,
) -> Result<(), RuntimeError> {
    let err = |expected: String, got: String| RuntimeError::Input {
        index,
        name: spec.name.clone(),
        expected,
        got,
    };
    if dtype != spec.dtype {
        return Err(err(
            format!("dtype {}", spec.dtype),
            format!("dtype {dtype}"),
        ));
    }
    // Formatted only for an error: every input of every decode step passes through here.
    let want = || shape_to_string(&spec.shape);
    if shape.len() != spec.shape.len() {
        let got = format!("rank {} {shape:?}", shape.len());
        return Err(err(format!("rank {} {}", spec.shape.len(), want()), got));
    }
    let matches = spec
        .shape
        .iter()
        .zip(shape)
        .all(|(d, &n)| eval_extent(d, env).is_ok_and(|v| v as u128 == n as u128));
    if !matches {
        let bound: Vec<String> = spec
            .shape
            .iter()
            .flat_map(|d| d.symbols())
            .filter_map(|s| env.get(s).map(|v| format!("{s}={v}")))
            .collect();
        let with = if bound.is_empty() {
            String::new()
        } else {
            format!(" with {}", bound.join(", "))
        };
        return Err(err(
            format!("shape {}{with}", want()),
            format!("shape {shape:?}"),
        ));
    }
    let Some(got) = bytes else { return Ok(()) };
    let elems = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
    let want = elems.and_then(|n| n.checked_mul(spec.dtype.size_bytes()));
    if want != Some(got) {
        let want = want.map_or("a size that fits in memory".into(), |b| {
            format!("{b} bytes")
        });
        return Err(err(want, format!("{got} bytes")));
    }
    Ok(())
}

/// Outputs and timings of a run on a device with its own memory: `run` gets the inputs and
/// the host storage of `outputs` to fill whole (`None`, passed empty, for carried ones,
/// which stay on the device, as do carried inputs).
#[allow(clippy::type_complexity)]
fn on_device(
    inputs: &[Option<&HostBuffer>],
    mut host: Vec<(Vec<usize>, Option<Vec<u8>>)>,
    carried: &[CarriedRun],
    run: impl FnOnce(crate::plan::HostIo<'_>) -> Result<Vec<LaunchTiming>, RuntimeError>,
) -> Result<(Vec<(Vec<usize>, Option<Vec<u8>>)>, Vec<LaunchTiming>), RuntimeError> {
    let ins: Vec<&[u8]> = inputs
        .iter()
        .map(|b| b.map_or(&[][..], |b| b.bytes.as_slice()))
        .collect();
    let mut outs: Vec<&mut [u8]> = host
        .iter_mut()
        .map(|(_, v)| v.as_mut().map_or(&mut [][..], |v| v.as_mut_slice()))
        .collect();
    let timings = run(crate::plan::HostIo {
        inputs: &ins,
        outputs: &mut outs,
        carried,
    })?;
    Ok((host, timings))
}

/// Spare output buffers a session keeps at most (a decoder hands back one, its logits).
const MAX_SPARE: usize = 8;

/// Storage of `bytes` for output `name`: the smallest spare buffer that holds it, else a
/// new one; zeroed where `zeroed` (else a reused buffer keeps its old bytes, for a device
/// download to overwrite). A size too large for memory is an error, not an abort.
fn output_storage(
    spare: &mut Vec<Vec<u8>>,
    bytes: usize,
    name: &str,
    zeroed: bool,
) -> Result<Vec<u8>, RuntimeError> {
    if bytes == 0 {
        return Ok(Vec::new());
    }
    let fit = spare
        .iter()
        .enumerate()
        .filter(|(_, v)| v.capacity() >= bytes)
        .min_by_key(|(_, v)| v.capacity())
        .map(|(i, _)| i);
    let mut v = match fit {
        Some(i) => spare.swap_remove(i),
        None => {
            let mut v = Vec::new();
            v.try_reserve_exact(bytes)
                .map_err(|_| RuntimeError::Alloc {
                    bytes: bytes as u64,
                    what: format!("output `{name}`"),
                })?;
            v
        }
    };
    if zeroed {
        v.clear();
    }
    v.resize(bytes, 0);
    Ok(v)
}

/// A buffer handed to kernels: the caller's own when it is aligned, else an aligned copy.
enum Staged {
    /// An input used in place; kernels only read it and the caller keeps it alive.
    Borrowed(*mut u8),
    Owned(Vec<u8>),
    Aligned(AlignedBuf),
}

/// Alignment kernels may rely on for inputs and outputs (the system allocator's);
/// slots and weights are 64-byte aligned.
pub const IO_ALIGN: usize = 16;

/// Zeroed bytes an empty input is bound to. Kernels read index 0 of an empty operand of a
/// concatenation and discard it (vector code evaluates both sides of the select: a
/// decoder's first run, its cache empty), so an empty input must be readable for a row;
/// a cache row is a few KiB.
const EMPTY_READABLE: usize = 64 << 10;

impl Staged {
    fn input(buf: &HostBuffer) -> Result<Staged, RuntimeError> {
        if buf.bytes.is_empty() {
            return Ok(Staged::Aligned(AlignedBuf::zeroed(
                EMPTY_READABLE,
                "an empty input",
            )?));
        }
        if (buf.bytes.as_ptr() as usize).is_multiple_of(IO_ALIGN) {
            return Ok(Staged::Borrowed(buf.bytes.as_ptr().cast_mut()));
        }
        let mut a = AlignedBuf::zeroed(buf.bytes.len(), "an input")?;
        // SAFETY: `a` holds `len` bytes; source and destination do not overlap.
        unsafe {
            std::ptr::copy_nonoverlapping(buf.bytes.as_ptr(), a.as_mut_ptr(), buf.bytes.len())
        };
        Ok(Staged::Aligned(a))
    }

    /// An output's zeroed storage `v`, used in place where it is aligned as kernels need.
    fn output(v: Vec<u8>, name: &str) -> Result<Staged, RuntimeError> {
        if (v.as_ptr() as usize).is_multiple_of(IO_ALIGN) || v.is_empty() {
            return Ok(Staged::Owned(v));
        }
        let bytes = v.len();
        drop(v);
        Ok(Staged::Aligned(AlignedBuf::zeroed(
            bytes,
            &format!("output `{name}`"),
        )?))
    }

    fn ptr(&mut self) -> *mut u8 {
        match self {
            Staged::Borrowed(p) => *p,
            Staged::Owned(v) => v.as_mut_ptr(),
            Staged::Aligned(a) => a.as_mut_ptr(),
        }
    }

    fn into_vec(self) -> Vec<u8> {
        match self {
            Staged::Borrowed(_) => Vec::new(),
            Staged::Owned(v) => v,
            Staged::Aligned(a) => a.as_slice().to_vec(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A recycled buffer is reused, the smallest that fits first, zeroed where asked (else
    /// as it was, for a download to overwrite); one too small stays spare; an empty output
    /// takes none.
    #[test]
    fn outputs_reuse_the_smallest_spare_that_fits() {
        let (big, small) = (vec![7u8; 4096], vec![7u8; 512]);
        let small_at = small.as_ptr();
        let mut spare = vec![big, small];
        assert!(output_storage(&mut spare, 0, "o", true).unwrap().is_empty());
        assert_eq!(spare.len(), 2);
        let got = output_storage(&mut spare, 300, "o", true).unwrap();
        assert_eq!(got.as_ptr(), small_at);
        assert_eq!(got, vec![0u8; 300]);
        let fresh = output_storage(&mut spare, 8192, "o", true).unwrap();
        assert_eq!((fresh.len(), spare.len()), (8192, 1));
        assert!(fresh.iter().all(|&b| b == 0));
        let kept = output_storage(&mut spare, 1000, "o", false).unwrap();
        assert_eq!(kept, vec![7u8; 1000]);
    }

    /// An empty input (a cache before the first token) is bound to zeroed memory kernels
    /// may read a row of: index 0 of an empty concatenation operand is read and discarded.
    #[test]
    fn empty_inputs_are_readable_for_a_row() {
        let empty = HostBuffer {
            dtype: kiln_ir::DType::F32,
            shape: vec![0, 8, 64],
            bytes: Vec::new(),
        };
        let mut staged = Staged::input(&empty).unwrap();
        // SAFETY: `Staged::input` binds an empty input to EMPTY_READABLE zeroed bytes.
        let bytes = unsafe { std::slice::from_raw_parts(staged.ptr(), EMPTY_READABLE) };
        assert!(bytes.iter().all(|&b| b == 0));
    }
}
