//! SPIR-V modules from graphs compiled by the real pipeline, checked by naga (inside
//! `compile`) and by `spirv-val`, the Khronos validator. Whether they also run is the
//! Vulkan conformance suite's job (`tests/conformance.rs`).

use crate::Backend;
use kiln_compiler::Target;
use rspirv::dr::Operand;
use rspirv::spirv::{ExecutionMode, ExecutionModel, Op, StorageClass};
use std::collections::HashMap;

/// The modules of the test model for `target` (with subgroup reductions, then without),
/// and its kernels' names.
fn modules_for(target: &str) -> (Vec<(u32, Vec<u8>)>, Vec<String>) {
    let (code, names) = crate::test_model::code(&super::SpirvBackend, target);
    let modules = super::bundle::read(&code);
    let needs: Vec<u32> = modules.iter().map(|(n, _)| *n).collect();
    assert_eq!(
        needs,
        [super::bundle::SUBGROUP_ARITHMETIC, 0],
        "flavours, richest first"
    );
    (modules, names)
}

fn words(code: &[u8]) -> Vec<u32> {
    code.chunks(4)
        .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

/// Runs `spirv-val` on `code`; `None` when the tool is missing and not required.
fn spirv_val(code: &[u8], env: &str) -> Option<std::process::Output> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.spv");
    std::fs::write(&path, code).unwrap();
    match std::process::Command::new("spirv-val")
        .args(["--target-env", env])
        .arg(&path)
        .output()
    {
        Ok(out) => Some(out),
        Err(e) if std::env::var_os("KILN_REQUIRE_SPIRV_VAL").is_none() => {
            eprintln!("skipped: spirv-val not runnable ({e}); install spirv-tools");
            None
        }
        Err(e) => panic!("spirv-val is required (KILN_REQUIRE_SPIRV_VAL) but: {e}"),
    }
}

#[test]
fn every_version_passes_the_khronos_validator() {
    for (target, env) in [
        ("vulkan:spv1.3", "vulkan1.1"),
        ("vulkan:spv1.5", "vulkan1.2"),
        ("vulkan:spv1.6", "vulkan1.3"),
    ] {
        for (needs, code) in modules_for(target).0 {
            let w = words(&code);
            assert_eq!(w[0], 0x0723_0203, "magic");
            let minor = target.rsplit('.').next().unwrap().parse::<u32>().unwrap();
            assert_eq!(w[1], (1 << 16) | (minor << 8), "{target}: version word");
            if let Some(out) = spirv_val(&code, env) {
                assert!(
                    out.status.success(),
                    "{target} (needs {needs}): spirv-val:\n{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
    }
}

#[test]
fn every_kernel_is_a_compute_entry_point_with_its_workgroup_size() {
    let (modules, names) = modules_for("vulkan:spv1.3");
    for (needs, code) in modules {
        let m = rspirv::dr::load_words(words(&code)).unwrap();
        let entries: Vec<String> = m
            .entry_points
            .iter()
            .map(|e| {
                assert_eq!(
                    e.operands[0].unwrap_execution_model(),
                    ExecutionModel::GLCompute
                );
                e.operands[2].unwrap_literal_string().to_string()
            })
            .collect();
        for n in &names {
            assert!(entries.contains(&format!("kiln_{n}")), "{n}: {entries:?}");
        }
        assert_eq!(m.execution_modes.len(), names.len());
        let mut declared: Vec<u32> = m
            .execution_modes
            .iter()
            .map(|mode| mode.operands[2].unwrap_literal_bit32())
            .collect();
        let mut launched: Vec<u32> = crate::test_model::kernels("vulkan:spv1.3")
            .iter()
            .map(|k| kiln_compiler::kernel::gpu::launch_shape(k).threads)
            .collect();
        declared.sort_unstable();
        launched.sort_unstable();
        assert_eq!(declared, launched, "workgroup sizes");
        let ops: Vec<Op> = m
            .functions
            .iter()
            .flat_map(|f| &f.blocks)
            .flat_map(|b| &b.instructions)
            .map(|i| i.class.opcode)
            .collect();
        // Reductions (rms_norm, softmax) combine partial results across the workgroup,
        // within subgroups first where the flavour has them, and the bf16 output is merged
        // into its words atomically.
        assert!(ops.contains(&Op::ControlBarrier));
        let subgroups = needs & super::bundle::SUBGROUP_ARITHMETIC != 0;
        assert_eq!(
            ops.contains(&Op::GroupNonUniformFAdd),
            subgroups,
            "needs {needs}"
        );
        assert!(ops.contains(&Op::AtomicOr) && ops.contains(&Op::AtomicAnd));
    }
}

#[test]
fn other_targets_and_versions_are_refused_with_a_reason() {
    let be = super::SpirvBackend;
    let cpu: Target = "cpu:x86-64-v2".parse().unwrap();
    assert!(be.check(&cpu).unwrap_err().to_string().contains("vulkan"));
    let bad = Target::Vulkan("spv1.2".into());
    let e = be.check(&bad).unwrap_err().to_string();
    assert!(e.contains("spv1.3 .. spv1.6"), "{e}");
}

#[test]
fn naga_rejections_name_the_module_problem() {
    // A truncated module: naga's front end must refuse it rather than panic.
    let (modules, _) = modules_for("vulkan:spv1.3");
    let w = words(&modules[1].1);
    let e = super::validate(&w[..w.len() / 2]).unwrap_err();
    assert!(e.1.contains("naga"), "{e:?}");
}

/// A decode matvec (few rows of f32 activations times transposed f16 and bf16 weights):
/// each thread's run of four weights is one load of a 2-word vector element, decoded with
/// UnpackHalf2x16 (f16) or shifts (bf16), and four activations one 4-word element.
#[test]
fn aligned_runs_of_matvec_rows_are_single_vector_loads() {
    let model = "kir 1
%x = input \"x\" f32[t,64]
%h = input \"h\" f16[40,64]
%b = input \"b\" bf16[40,64]
%hf = cast %h dtype=f32
%bf = cast %b dtype=f32
%y = matmul %x, %hf transpose_a=false transpose_b=true
%z = matmul %x, %bf transpose_a=false transpose_b=true
output \"y\" = %y
output \"z\" = %z
";
    let (code, _) = crate::test_model::code_of(&super::SpirvBackend, model, "vulkan:spv1.3");
    for (needs, module) in super::bundle::read(&code) {
        let m = rspirv::dr::load_words(words(&module)).unwrap();
        // Runtime arrays of 2- and 4-component integer vectors: the bindings' wide views.
        let vector_widths: Vec<u32> = m
            .types_global_values
            .iter()
            .filter(|i| i.class.opcode == Op::TypeRuntimeArray)
            .filter_map(|arr| {
                let elem = arr.operands[0].unwrap_id_ref();
                let t = m
                    .types_global_values
                    .iter()
                    .find(|t| t.result_id == Some(elem))?;
                (t.class.opcode == Op::TypeVector).then(|| t.operands[1].unwrap_literal_bit32())
            })
            .collect();
        assert!(
            vector_widths.contains(&2) && vector_widths.contains(&4),
            "{vector_widths:?}"
        );
        let unpacks = half_unpacks(&m);
        assert!(unpacks >= 2, "needs {needs}: {unpacks} half unpacks");
        if let Some(out) = spirv_val(&module, "vulkan1.1") {
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stdout)
            );
        }
    }
}

/// `UnpackHalf2x16` instructions in the module's functions.
fn half_unpacks(m: &rspirv::dr::Module) -> usize {
    instructions(m)
        .filter(|i| {
            i.class.opcode == Op::ExtInst
                && i.operands[1].unwrap_literal_ext_inst_integer()
                    == super::builder::glsl::UNPACK_HALF_2X16
        })
        .count()
}

/// The instructions of the module's functions.
fn instructions(m: &rspirv::dr::Module) -> impl Iterator<Item = &rspirv::dr::Instruction> {
    m.functions
        .iter()
        .flat_map(|f| &f.blocks)
        .flat_map(|b| &b.instructions)
}

/// A quantized block's f16 scale, read out of the quant bytes, converts in one
/// `UnpackHalf2x16` (`UOp::HalfBits`) rather than bit by bit: the decode matvec's only
/// halves are those scales.
#[test]
fn quantized_block_scales_convert_in_one_instruction() {
    let model = crate::test_model::matvec("q8_0", 256, 8 * 34);
    let (code, _) = crate::test_model::code_of(&super::SpirvBackend, &model, "vulkan:spv1.3");
    for (needs, module) in super::bundle::read(&code) {
        let m = rspirv::dr::load_words(words(&module)).unwrap();
        assert!(half_unpacks(&m) >= 1, "needs {needs}: no half unpacks");
    }
}

/// Loads in the module's functions.
fn loads(m: &rspirv::dr::Module) -> usize {
    instructions(m)
        .filter(|i| i.class.opcode == Op::Load)
        .count()
}

/// The richest module `kernel` compiles to for `vulkan:spv1.3`.
fn module_of(kernel: kiln_compiler::kernel::Kernel) -> rspirv::dr::Module {
    let vulkan: Target = "vulkan:spv1.3".parse().unwrap();
    let code = super::SpirvBackend.compile(&[kernel], &vulkan).unwrap();
    let (_, module) = &super::bundle::read(&code)[0];
    rspirv::dr::load_words(words(module)).unwrap()
}

/// A kernel of 8 points storing `value` (an i32 expression over byte buffer argument 1)
/// as f32, to count the loads an expression takes.
fn byte_reader(value: kiln_compiler::kernel::Expr) -> kiln_compiler::kernel::Kernel {
    use kiln_compiler::kernel::{e, BufferParam, Elem, Expr, Kernel, Stmt};
    use kiln_ir::DType;
    let arg = |name: &str, dtype, writes| BufferParam {
        name: name.into(),
        dtype,
        writes,
        offset: false,
    };
    Kernel {
        name: "bytes".into(),
        args: vec![arg("y", DType::F32, true), arg("b", DType::U8, false)],
        locals: vec![],
        grid: vec![e::i(8)],
        min_chunk: 1,
        block_threads: None,
        body: vec![Stmt::Store {
            buf: kiln_compiler::kernel::Buf::Arg(0),
            index: Expr::GridIdx(0),
            value: e::cast(Elem::F32, value),
        }],
        cost: Default::default(),
        next_var: 0,
    }
}

/// Bytes that `kernel::align` proves within one word take that word's one load, whether an
/// `Expr::word_le` (a quantized block's scale word) or a run (its quants); bytes that may
/// straddle two words take both, never one load per byte.
#[test]
fn bytes_proven_within_a_word_take_one_load() {
    use kiln_compiler::kernel::{e, Buf, Expr};
    let loads_of = |value: Expr| loads(&module_of(byte_reader(value)));
    let none = loads_of(e::i32(0));
    // Rows of 16 bytes: byte `row + at` is a multiple of what `at` is.
    let at = |at: i64| e::add(e::mul(Expr::GridIdx(0), e::i(16)), e::i(at));
    let word = |from: i64, count: u8| loads_of(e::word_le(Buf::Arg(1), at(from), count)) - none;
    assert_eq!(word(4, 4), 1, "an aligned word");
    assert_eq!(word(6, 2), 1, "an aligned half word");
    assert_eq!(word(5, 2), 2, "two bytes that may straddle two words");
    assert_eq!(word(1, 4), 2, "a misaligned word");
    let run = |from: i64, lanes: u8, lane: u8| {
        let run = e::load_vec(Buf::Arg(1), at(from), lanes);
        loads_of(Expr::Extract {
            vector: Box::new(run),
            lane,
        }) - none
    };
    assert_eq!(run(8, 4, 3), 1, "an aligned run of four");
    assert_eq!(run(3, 4, 3), 2, "a misaligned run of four");
    assert_eq!(run(2, 2, 1), 1, "an aligned run of two");
}

/// A vector of half bit patterns converts lane by lane (`UnpackHalf2x16` has no vector
/// form), rather than failing to compile.
#[test]
fn vectors_of_half_bits_convert_lane_by_lane() {
    use kiln_compiler::kernel::{e, Buf, Expr, RedOp, UOp};
    let at = |k: i64| e::add(e::mul(Expr::GridIdx(0), e::i(16)), e::i(k));
    let halves = Expr::Lanes(
        (0..3)
            .map(|k| e::word_le(Buf::Arg(1), at(2 * k), 2))
            .collect(),
    );
    let sum = Expr::ReduceLanes(RedOp::Sum, Box::new(e::un(UOp::HalfBits, halves)));
    let m = module_of(byte_reader(e::cast(kiln_compiler::kernel::Elem::I32, sum)));
    assert_eq!(half_unpacks(&m), 3);
}

/// Each kernel declares its own workgroup size (a block-per-point kernel given 128 threads
/// here, as CUDA's decode dot products take); one larger than the module's reduction array
/// serves (or not a power of two) is a compile error naming the kernel, not a module whose
/// reductions would read past that array.
#[test]
fn kernels_declare_their_block_size_and_larger_ones_are_refused() {
    use kiln_compiler::kernel::gpu::launch_shape;
    let vulkan: Target = "vulkan:spv1.3".parse().unwrap();
    let mut kernels = crate::test_model::kernels("vulkan:spv1.3");
    let at = kernels
        .iter()
        .position(|k| launch_shape(k).block_per_point())
        .expect("a block-per-point kernel");
    kernels[at].block_threads = Some(128);
    let code = super::SpirvBackend.compile(&kernels, &vulkan).unwrap();
    for (_, module) in super::bundle::read(&code) {
        let m = rspirv::dr::load_words(words(&module)).unwrap();
        let sizes: Vec<u32> = m
            .execution_modes
            .iter()
            .filter(|i| {
                i.operands[1] == rspirv::dr::Operand::ExecutionMode(ExecutionMode::LocalSize)
            })
            .map(|i| i.operands[2].unwrap_literal_bit32())
            .collect();
        assert!(sizes.contains(&128) && sizes.contains(&256), "{sizes:?}");
    }
    // The same kernel asking for 512 invocations.
    let mut k = kernels.swap_remove(at);
    k.block_threads = Some(512);
    let narrow = k.name.clone();
    let e = match super::SpirvBackend.compile(&[k], &vulkan) {
        Ok(_) => panic!("{narrow}: compiled with 512 invocations"),
        Err(e) => e.to_string(),
    };
    assert!(
        e.contains(&narrow) && e.contains("threads per block"),
        "{e}"
    );
}

/// The module of `model`'s first kernel for `vulkan:spv1.3` (its richest variant).
fn module_of_model(model: &str) -> rspirv::dr::Module {
    let (code, _) = crate::test_model::code_of(&super::SpirvBackend, model, "vulkan:spv1.3");
    let (_, module) = &super::bundle::read(&code)[0];
    rspirv::dr::load_words(words(module)).unwrap()
}

/// How many of the instructions of the module's first function (its first kernel) are
/// `op` with an i64 and with an i32 result.
fn integer_ops(m: &rspirv::dr::Module, op: Op) -> (usize, usize) {
    let int_of = |width: u32| {
        m.types_global_values.iter().find_map(|t| {
            let signed_int = t.class.opcode == Op::TypeInt
                && t.operands[0].unwrap_literal_bit32() == width
                && t.operands[1].unwrap_literal_bit32() == 1;
            signed_int.then_some(t.result_id).flatten()
        })
    };
    let count = |ty: Option<u32>| {
        m.functions[0]
            .blocks
            .iter()
            .flat_map(|b| &b.instructions)
            .filter(|i| i.class.opcode == op && ty.is_some() && i.result_type == ty)
            .count()
    };
    (count(int_of(64)), count(int_of(32)))
}

/// A decode matvec of known shape computes its indices in 32 bits, and divides by powers of
/// two with shifts and masks: its kernel IR writes a Q4_K step's block, sub-block and
/// nibble offsets as i64 divisions and remainders by 4, 32 and 256, which took 673 64-bit
/// signed divisions in this module before.
#[test]
fn known_shape_indices_take_32_bit_arithmetic() {
    let m = module_of_model(&crate::test_model::matvec("q4_k", 8192, 32 * 144));
    assert_eq!(integer_ops(&m, Op::IMul).0, 0, "64-bit multiplies");
    for op in [Op::SDiv, Op::SRem] {
        let (wide, narrow) = integer_ops(&m, op);
        // The grid index's decomposition into the two grid axes (one of each).
        assert!(wide <= 1, "{op:?}: {wide} on i64");
        assert_eq!(narrow, 0, "{op:?} on i32");
    }
}

/// f32 activation rows over `t` (known only at run time) times a 64 x 256 matrix.
const F32_ROWS_OVER_T: &str = "kir 1
%x = input \"x\" f32[t,256]
%w = input \"w\" f32[64,256]
%y = matmul %x, %w transpose_a=false transpose_b=true
output \"y\" = %y
";

/// Over an extent known only at run time, an index of f32 elements takes its low 32 bits
/// (all a binding's elements have: an activation row `g0 * 256 + k` over `t` rows), and one
/// of bytes keeps its 64 (a byte's word is its index shifted, which needs the bits above).
#[test]
fn indices_over_symbolic_extents_keep_the_bits_their_use_needs() {
    let m = module_of_model(F32_ROWS_OVER_T);
    let (wide, narrow) = integer_ops(&m, Op::IMul);
    assert!(
        wide == 0 && narrow > 0,
        "f32 rows: {wide} 64-bit multiplies, {narrow} 32-bit"
    );
    let byte_rows = "kir 1
%x = input \"x\" f32[1,256]
%w = input \"w\" u8[t,272]
%d = dequant %w format=q8_0
%y = matmul %x, %d transpose_a=false transpose_b=true
output \"y\" = %y
";
    let m = module_of_model(byte_rows);
    assert!(
        integer_ops(&m, Op::IMul).0 > 0,
        "byte rows: no 64-bit multiply"
    );
}

/// No block computes one pure value twice: the kernel IR repeats a shared part of an
/// expression at each use (a quantized block's row offset in each of its loads), and the
/// builder numbers instructions by value (`builder::pure`).
#[test]
fn no_block_computes_a_value_twice() {
    let m = module_of_model(&crate::test_model::matvec("q4_k", 8192, 32 * 144));
    for block in m.functions.iter().flat_map(|f| &f.blocks) {
        let mut seen = std::collections::HashSet::new();
        for i in &block.instructions {
            if !super::builder::pure(i.class.opcode) {
                continue;
            }
            let key = (i.class.opcode, i.result_type, format!("{:?}", i.operands));
            assert!(seen.insert(key), "computed twice: {i:?}");
        }
    }
}

/// A block reduction takes one strided step at a time unless `KILN_GPU_UNROLL` says
/// otherwise (`kernel::gpu::UNROLL` here): then a first loop loads two steps' values before
/// accumulating either, and a second takes what is left.
#[test]
fn block_reductions_take_more_steps_a_loop_only_when_asked() {
    let model = crate::test_model::matvec("q8_0", 8192, 256 * 34);
    let loops = |unroll: Option<u32>| {
        kiln_compiler::kernel::gpu::UNROLL.set(unroll);
        let m = module_of_model(&model);
        kiln_compiler::kernel::gpu::UNROLL.set(None);
        instructions(&m)
            .filter(|i| i.class.opcode == Op::LoopMerge)
            .count()
    };
    let one = loops(None);
    assert_eq!(loops(Some(1)), one);
    assert_eq!(loops(Some(2)), one + 1);
}

/// The instructions of module `m` that define each id.
fn definitions(m: &rspirv::dr::Module) -> HashMap<u32, &rspirv::dr::Instruction> {
    m.types_global_values
        .iter()
        .chain(instructions(m))
        .filter_map(|i| Some((i.result_id?, i)))
        .collect()
}

/// The loads of module `m` from storage buffers, by the number of lanes each reads.
fn buffer_loads(m: &rspirv::dr::Module) -> Vec<u32> {
    let def = definitions(m);
    let storage = |ptr_type: u32| {
        def.get(&ptr_type).is_some_and(|t| {
            t.class.opcode == Op::TypePointer
                && t.operands[0] == Operand::StorageClass(StorageClass::StorageBuffer)
        })
    };
    let lanes = |ty: u32| match def.get(&ty) {
        Some(t) if t.class.opcode == Op::TypeVector => t.operands[1].unwrap_literal_bit32(),
        _ => 1,
    };
    instructions(m)
        .filter(|i| i.class.opcode == Op::Load)
        .filter(|i| {
            let ptr = def.get(&i.operands[0].unwrap_id_ref());
            ptr.and_then(|p| p.result_type).is_some_and(storage)
        })
        .map(|i| lanes(i.result_type.unwrap()))
        .collect()
}

/// A Q4_K decode matvec reads each 16-byte group of a block (the scales' header, a lane's
/// quants) and of its activations with one 4-word load, and each group once a block, however
/// many of the block's rows and steps use it: 96 scalar and 64 vector loads before
/// (`spirv::groups`, `Spv::load_invariant`).
#[test]
fn quantized_blocks_and_activations_are_read_a_16_byte_group_at_a_time() {
    let m = module_of_model(&crate::test_model::matvec("q4_k", 8192, 32 * 144));
    let loads = buffer_loads(&m);
    let scalar = loads.iter().filter(|&&l| l == 1).count();
    // One: the launch's point count from the parameter buffer.
    assert_eq!(scalar, 1, "{} loads, {scalar} of one element", loads.len());
    // Four rows a block: a header and two quant groups each, and eight activation groups.
    assert!(loads.len() <= 25, "{} loads", loads.len());
    let def = definitions(&m);
    for block in m.functions.iter().flat_map(|f| &f.blocks) {
        let mut seen = std::collections::HashSet::new();
        for i in block
            .instructions
            .iter()
            .filter(|i| i.class.opcode == Op::Load)
        {
            let ptr = i.operands[0].unwrap_id_ref();
            let counter = def[&ptr].class.opcode == Op::Variable;
            assert!(counter || seen.insert(ptr), "loaded twice: {i:?}");
        }
    }
}

/// The 64-bit comparisons of module `m`'s first function (a loop's test is one).
fn wide_compares(m: &rspirv::dr::Module) -> usize {
    let def = definitions(m);
    let is_i64 = |id: u32| {
        let ty = def.get(&id).and_then(|i| i.result_type);
        ty.and_then(|t| def.get(&t)).is_some_and(|t| {
            t.class.opcode == Op::TypeInt && t.operands[0].unwrap_literal_bit32() == 64
        })
    };
    m.functions[0]
        .blocks
        .iter()
        .flat_map(|b| &b.instructions)
        .filter(|i| i.class.opcode == Op::SLessThan && is_i64(i.operands[0].unwrap_id_ref()))
        .count()
}

/// Loops whose ranges fit i32 count in i32 (a 64-bit compare and add are several
/// instructions each on GPUs): all of a known-shape matvec's, and over rows known only at
/// run time all but the loop over the grid's points, whose row index then splits off by a
/// shift rather than a signed 64-bit division.
#[test]
fn loops_count_in_32_bits_where_their_ranges_allow() {
    let m = module_of_model(&crate::test_model::matvec("q8_0", 8192, 256 * 34));
    assert_eq!(wide_compares(&m), 0, "64-bit loop tests");
    let m = module_of_model(F32_ROWS_OVER_T);
    assert_eq!(wide_compares(&m), 1, "64-bit loop tests over t rows");
    for op in [Op::SDiv, Op::SRem, Op::UDiv, Op::UMod] {
        assert_eq!(integer_ops(&m, op), (0, 0), "{op:?}");
    }
}

/// A choice between two bindings' elements (decode attention's cached row or the step's new
/// one) is a branch that loads one of them; a choice within one binding stays an `OpSelect`
/// of loads the arms share.
#[test]
fn a_choice_between_two_bindings_loads_only_the_chosen_one() {
    let count =
        |m: &rspirv::dr::Module, op: Op| instructions(m).filter(|i| i.class.opcode == op).count();
    let two = module_of(crate::test_model::chooser(2));
    assert_eq!(count(&two, Op::Select), 0, "two bindings: an OpSelect");
    assert_eq!(
        count(&two, Op::SelectionMerge),
        1,
        "two bindings: no branch"
    );
    let one = module_of(crate::test_model::chooser(1));
    assert_eq!(count(&one, Op::Select), 1, "one binding: no OpSelect");
    assert_eq!(count(&one, Op::SelectionMerge), 0, "one binding: a branch");
}
