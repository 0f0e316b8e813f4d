//! Lowering tests: `.kir` graphs in, kernels out. They pin down what fuses into what and
//! which buffers each kernel reads; numerics are the conformance suite's job.

use super::{lower, BufferKind, Lowered};
use crate::kernel::{RedOp, Stmt};
use crate::schedule::Schedule;

fn lowered(src: &str) -> Lowered {
    let g = kiln_ir::text::parse(src).unwrap_or_else(|e| panic!("{e}"));
    lower(&g, Schedule::for_vector_bits(256)).unwrap()
}

/// `g` lowered with the schedule of `target` (`cuda:sm_90`, `vulkan:spv1.3`, `cpu:...`).
fn lowered_for(g: &kiln_ir::Graph, target: &str) -> Lowered {
    let t: crate::Target = target.parse().unwrap();
    lower(
        g,
        crate::pipeline::schedule_for(&t, &Default::default()).unwrap(),
    )
    .unwrap()
}

/// The launch of the kernel whose name ends with `suffix` (`_concat`).
fn launch_named<'l>(l: &'l Lowered, suffix: &str) -> &'l super::KernelLaunch {
    l.launches
        .iter()
        .find(|x| l.kernels[x.kernel].name.ends_with(suffix))
        .unwrap_or_else(|| panic!("no {suffix} kernel: {:?}", names(l)))
}

/// The launches writing the buffer the last launch writes (a matmul's forms).
fn launches_of_last(l: &Lowered) -> Vec<&super::KernelLaunch> {
    let out = l.launches.last().unwrap().args[0];
    l.launches.iter().filter(|x| x.args[0] == out).collect()
}

/// A target of each kind, and whether it is a GPU's.
const TARGETS: [(&str, bool); 3] = [
    ("cuda:sm_90", true),
    ("vulkan:spv1.3", true),
    ("cpu:x86-64-v3", false),
];

fn names(l: &Lowered) -> Vec<&str> {
    l.kernels.iter().map(|k| k.name.as_str()).collect()
}

#[test]
fn elementwise_chain_with_broadcasts_is_one_kernel() {
    let l = lowered(
        "kir 1
%x = input \"x\" f32[rows,37]
%w = input \"w\" f32[37]
%b = input \"b\" f32[1]
%m = mul %x, %w
%a = add %m, %b
%s = silu %a
output \"y\" = %s
",
    );
    assert_eq!(names(&l), vec!["k0_silu"]);
    let k = &l.kernels[0];
    assert_eq!(k.args.len(), 4, "output and three inputs:\n{k}");
    assert_eq!(
        l.launches[0].grid.len(),
        1,
        "grid over rows, loop over the last axis"
    );
    let text = k.to_string();
    assert!(
        text.contains("Map x8"),
        "the last axis is a vectorisable map at 8 lanes:\n{text}"
    );
}

#[test]
fn matmul_bias_activation_fuse_into_the_consumer_not_the_matmul() {
    let l = lowered(include_str!("../../../examples/mlp.kir"));
    // matmul, then bias+gelu fused (the next matmul's operand), matmul, then bias into the output.
    assert_eq!(
        names(&l),
        vec!["k0_matmul", "k1_gelu_tanh", "k2_matmul", "k3_add"]
    );
    let outputs: Vec<_> = l
        .buffers
        .iter()
        .filter(|b| matches!(b.kind, BufferKind::Output(_)))
        .collect();
    assert_eq!(outputs.len(), 1);
    // The tiled schedule: one grid point per 16-column panel, a packed local panel.
    assert_eq!(l.launches[0].grid[0].ceil_div, 16);
    assert_eq!(l.kernels[0].locals.len(), 1);
}

#[test]
fn transposed_weights_with_one_row_use_the_dot_product_schedule() {
    let l = lowered(
        "kir 1
%x = input \"x\" f32[1,64]
%w = input \"w\" f32[96,64]
%y = matmul %x, %w transpose_a=false transpose_b=true
output \"y\" = %y
",
    );
    let k = &l.kernels[0];
    assert!(k.locals.is_empty(), "no packing for a matvec:\n{k}");
    assert!(k.to_string().contains("reduce_Sum x8"), "{k}");
}

#[test]
fn views_are_inlined_and_multi_use_values_get_buffers() {
    let l = lowered(
        "kir 1
%x = input \"x\" f32[4,6]
%t = permute %x perm=[1,0]
%e = exp %t
%a = add %e, %e
%b = mul %e, %t
output \"a\" = %a
output \"b\" = %b
",
    );
    // exp is read twice, so it is materialised once; the permute is index math everywhere.
    assert_eq!(names(&l), vec!["k0_exp", "k1_add", "k2_mul"]);
    assert!(!l.kernels.iter().any(|k| k.name.contains("permute")));
}

#[test]
fn an_output_that_is_an_input_is_copied() {
    let l = lowered("kir 1\n%x = input \"x\" f32[3]\noutput \"x\" = %x\noutput \"y\" = %x\n");
    assert_eq!(names(&l), vec!["k0_copy", "k1_copy"]);
}

#[test]
fn integer_reductions_are_a_typed_error() {
    let g = kiln_ir::text::parse("kir 1\n%x = input \"x\" i32[3,4]\n%r = reduce_sum %x axes=[1] keep_dims=false\noutput \"r\" = %r\n").unwrap();
    let e = lower(&g, Schedule::for_vector_bits(256))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("node %1 (reduce_sum)") && e.contains("integer reductions"),
        "{e}"
    );
}

#[test]
fn symbolic_rows_with_transposed_weights_get_both_matmul_forms() {
    let l = lowered(
        "kir 1
%x = input \"x\" f32[seq,64]
%w = input \"w\" f32[40,64]
%y = matmul %x, %w transpose_a=false transpose_b=true
output \"y\" = %y
",
    );
    let guards: Vec<_> = l.launches.iter().map(|g| g.guard.clone()).collect();
    assert_eq!(guards.len(), 2, "{guards:?}");
    let g0 = guards[0].clone().expect("guarded");
    let g1 = guards[1].clone().expect("guarded");
    assert_eq!((g0.max, g0.above, g1.above), (4, false, true));
    assert_eq!(g0.dim, kiln_ir::Dim::sym("seq"));
    // The decode form is the dot product (a Reduce); the other is the tiled kernel.
    assert!(
        l.kernels[0].to_string().contains("reduce"),
        "{}",
        l.kernels[0]
    );
    assert!(
        !l.kernels[1].locals.is_empty(),
        "packs B:\n{}",
        l.kernels[1]
    );
}

/// With quantized activations over quantized weights, the CPU's many-row form multiplies
/// bytes too: a tile of rows (tokens) per grid point, their sums gathered a token per lane
/// (`lane_sums`), no packed f32 panel. The K-quants read q8_k activations, whose one scale
/// per block lets the runs' multipliers scale the byte products themselves, in decode and
/// in prefill.
#[test]
fn quantized_prefill_multiplies_bytes_in_tiles_of_tokens() {
    for (format, row, k_quant) in [
        ("q8_0", 68, false),
        ("q4_k", 144, true),
        ("q6_k", 210, true),
    ] {
        let k = if format == "q8_0" { 64 } else { 256 };
        let text = format!(
            "kir 1
%x = input \"x\" f32[seq,{k}]
%w = input \"w\" u8[40,{row}]
%d = dequant %w format={format}
%y = matmul %x, %d transpose_a=false transpose_b=true
output \"y\" = %y
"
        );
        let g = kiln_ir::text::parse(&text).unwrap();
        let g =
            crate::activations::quantize_activations(&g, &Schedule::for_vector_bits(256)).unwrap();
        let t: crate::Target = "cpu:x86-64-v3".parse().unwrap();
        let opts = crate::pipeline::Options {
            quantize_activations: true,
            ..Default::default()
        };
        let l = lower(&g, crate::pipeline::schedule_for(&t, &opts).unwrap()).unwrap();
        let shown: Vec<String> = l.kernels.iter().map(|k| k.to_string()).collect();
        let (decode, prefill) = (&shown[1], &shown[2]);
        assert!(
            shown[0].contains("292") == k_quant,
            "q8_k blocks:\n{}",
            shown[0]
        );
        assert!(decode.contains("dot_bytes"), "{decode}");
        assert!(prefill.contains("lane_sums<1>"), "{prefill}");
        for kernel in [decode, prefill] {
            assert_eq!(kernel.contains("scaled"), k_quant, "{kernel}");
        }
        assert!(l.kernels[2].locals.is_empty(), "{prefill}");
        // Four tokens: rows past `seq` read the last one and are not stored.
        assert!(
            prefill.contains("min(((g1 * 4) + 3), (dim0 - 1))"),
            "{prefill}"
        );
    }
}

#[test]
fn widened_half_weights_are_read_in_place_not_copied() {
    let l = lowered(
        "kir 1
%x = input \"x\" f32[1,64]
%ids = input \"ids\" i64[2]
%w = param \"w\" f16[32,64]
%wf = cast %w dtype=f32
%y = matmul %x, %wf transpose_a=false transpose_b=true
%e = gather %wf, %ids
output \"y\" = %y
output \"e\" = %e
",
    );
    // The cast has two users and feeds a matmul, yet gets no f32 buffer: each consumer
    // reads the f16 weights and widens them itself.
    assert_eq!(names(&l), vec!["k0_matmul", "k1_gather"]);
    let matmul = &l.kernels[0];
    assert!(matmul.args.iter().any(|a| a.dtype == kiln_ir::DType::F16));
}

/// A q8_0 matvec on GPU targets: each of the block's threads takes a run of eight
/// neighbouring elements per step (a reduction over 8 steps), sharing their scale. Where
/// bytes load natively (CUDA, HIP) the run is one vector load of bytes and one of
/// activations; SPIR-V, which reads bytes out of 32-bit words, loads element by element.
#[test]
fn gpu_quantized_matvecs_follow_how_the_target_loads_bytes() {
    let g = kiln_ir::text::parse(
        "kir 1
%x = input \"x\" f32[1,64]
%w = input \"w\" u8[96,68]
%d = dequant %w format=q8_0
%y = matmul %x, %d transpose_a=false transpose_b=true
output \"y\" = %y
",
    )
    .unwrap();
    let kernel = |target: &str| {
        let t: crate::Target = target.parse().unwrap();
        let s = crate::pipeline::schedule_for(&t, &Default::default()).unwrap();
        lower(&g, s).unwrap().kernels[0].to_string()
    };
    let cuda = kernel("cuda:sm_90");
    assert!(cuda.contains("in 0..8"), "{cuda}");
    assert_eq!(cuda.matches("]x8").count(), 2, "{cuda}");
    // SPIR-V's vectors hold four: two runs of four bytes (and of activations) a step.
    let vulkan = kernel("vulkan:spv1.3");
    assert!(vulkan.contains("in 0..8"), "{vulkan}");
    assert_eq!(vulkan.matches("]x4").count(), 4, "{vulkan}");
}

/// Half matmuls with B transposed go to the matrix unit where the target has one (a warp per
/// point, 64 x 64 outputs each); f32 matmuls, and targets without one, keep their kernels.
#[test]
fn half_matmuls_use_the_targets_matrix_unit() {
    let text = |d: &str| {
        format!(
            "kir 1
%a = input \"a\" {d}[100,64]
%b = input \"b\" {d}[72,64]
%y = matmul %a, %b transpose_a=false transpose_b=true
output \"y\" = %y
"
        )
    };
    let kernel = |d: &str, target: &str| {
        let g = kiln_ir::text::parse(&text(d)).unwrap();
        let t: crate::Target = target.parse().unwrap();
        let s = crate::pipeline::schedule_for(&t, &Default::default()).unwrap();
        lower(&g, s).unwrap().kernels.remove(0)
    };
    let k = kernel("f16", "cuda:sm_90");
    let shown = k.to_string();
    assert!(shown.contains("mma<MmaM16N8K16 f16>"), "{shown}");
    assert_eq!(crate::kernel::gpu::matrix_warp(&k.body), Some(32));
    assert!(crate::kernel::gpu::explicit_threads(&k.body));
    // ceil(100 / 128) x ceil(72 / 64) blocks of four warps (64 x 32 outputs each).
    assert_eq!(k.grid.len(), 2);
    assert!(kernel("bf16", "hip:gfx90a")
        .to_string()
        .contains("mma<Mfma16x16x16 bf16>"));
    // f32 activations against f16 weights (a cast of an f16 buffer) round to f16; against
    // bf16 weights they do not (bf16 keeps 8 bits).
    let mixed = |w: &str, target: &str| {
        let g = kiln_ir::text::parse(&format!(
            "kir 1
%a = input \"a\" f32[100,64]
%h = input \"b\" {w}[72,64]
%b = cast %h dtype=f32
%y = matmul %a, %b transpose_a=false transpose_b=true
output \"y\" = %y
"
        ))
        .unwrap();
        let t: crate::Target = target.parse().unwrap();
        let s = crate::pipeline::schedule_for(&t, &Default::default()).unwrap();
        lower(&g, s).unwrap().kernels.remove(0).to_string()
    };
    assert!(mixed("f16", "cuda:sm_80").contains("mma<MmaM16N8K16 f16>"));
    assert!(!mixed("bf16", "cuda:sm_80").contains("mma<"));
    assert!(kernel("f16", "hip:gfx1100")
        .to_string()
        .contains("mma<WmmaGfx11 f16>"));
    for (d, target) in [
        ("f32", "cuda:sm_90"),
        ("f16", "cuda:sm_75"),
        ("bf16", "hip:gfx908"),
        ("f16", "vulkan:spv1.3"),
        ("f16", "cpu:x86-64-v3"),
    ] {
        let shown = kernel(d, target).to_string();
        assert!(!shown.contains("mma<"), "{d} on {target}: {shown}");
    }
}

/// Attention reads its key cache through a permute and a reshape that only inserts a unit
/// dim (`[h, all, d] -> [h, 1, all, d]`, `all` symbolic): the index maps straight through,
/// with no division by a symbol per element read (that cost 30x at 512 cached tokens).
#[test]
fn reshapes_that_only_add_unit_dims_index_without_dividing() {
    let g = kiln_ir::text::parse(
        "kir 1
%q = input \"q\" f32[4,8,seq,64]
%c = input \"c\" f32[all,4,64]
%p = permute %c perm=[1,0,2]
%k = reshape %p shape=[4,1,all,64]
%s = matmul %q, %k transpose_a=false transpose_b=true
output \"s\" = %s
",
    )
    .unwrap();
    let t: crate::Target = "cpu:x86-64-v3".parse().unwrap();
    let s = crate::pipeline::schedule_for(&t, &Default::default()).unwrap();
    for k in lower(&g, s).unwrap().kernels {
        let shown = k.to_string();
        assert!(
            !shown.contains(" / dim") && !shown.contains(" % dim"),
            "{shown}"
        );
    }
}

/// A decode matvec on CUDA: each step of the block's shared reduction reads eight
/// consecutive elements of both rows (16 bytes of halves), on Vulkan four (SPIR-V vectors
/// have at most four lanes), and a block computes four outputs, fewer when that would
/// leave fewer than 256 blocks. Many rows (the prefill form of a symbolic row count) and
/// rows not contiguous along K read one element per step.
#[test]
fn gpu_dot_products_read_runs_of_both_rows() {
    let kernels = |src: &str, target: &str| {
        let g = kiln_ir::text::parse(src).unwrap();
        let t: crate::Target = target.parse().unwrap();
        let s = crate::pipeline::schedule_for(&t, &Default::default()).unwrap();
        let shown: Vec<String> = lower(&g, s)
            .unwrap()
            .kernels
            .iter()
            .map(|k| k.to_string())
            .collect();
        shown
    };
    let matvec = |rows: &str, b: &str| {
        format!(
            "kir 1
%x = input \"x\" f32[{rows},64]
{b}
%y = matmul %x, %w transpose_a=false transpose_b=true
output \"y\" = %y
"
        )
    };
    let half = "%h = input \"w\" f16[1024,64]\n%w = cast %h dtype=f32";
    let cuda = kernels(&matvec("1", half), "cuda:sm_90").remove(0);
    // A step is one run of each row, multiplied and summed lane by lane in one FMA chain.
    assert!(cuda.contains("in 0..8: (let v"), "{cuda}");
    assert_eq!(cuda.matches("]x8 in ").count(), 8, "{cuda}");
    assert_eq!(cuda.matches("fma(").count(), 4 * 7, "{cuda}");
    assert_eq!(cuda.matches("reduce_Sum").count(), 4, "{cuda}");
    let vulkan = kernels(&matvec("1", half), "vulkan:spv1.3").remove(0);
    // Vulkan's vectors hold four: a step is two runs of four, 16 bytes of halves as on CUDA.
    assert!(vulkan.contains("in 0..8: (let v"), "{vulkan}");
    assert_eq!(vulkan.matches("]x4 in ").count(), 16, "{vulkan}");
    assert_eq!(vulkan.matches("fma(").count(), 4 * 7, "{vulkan}");
    assert_eq!(vulkan.matches("reduce_Sum").count(), 4, "{vulkan}");
    // 512 outputs: two per block (256 blocks); 40: one.
    for (n, cols) in [(512, 2), (40, 1)] {
        let narrow = format!("%h = input \"w\" f16[{n},64]\n%w = cast %h dtype=f32");
        let k = kernels(&matvec("1", &narrow), "cuda:sm_90").remove(0);
        assert_eq!(k.matches("reduce_Sum").count(), cols, "{n}: {k}");
    }
    // A symbolic row count gets both forms; only the few-rows one reads runs.
    let both = kernels(&matvec("seq", half), "cuda:sm_75");
    assert_eq!(both.len(), 2);
    assert!(both[0].contains("]x8 in "), "{}", both[0]);
    assert!(!both[1].contains("]x"), "{}", both[1]);
    let strided = "%h = input \"w\" f32[64,40]\n%w = permute %h perm=[1,0]";
    let strided = kernels(&matvec("1", strided), "cuda:sm_90").remove(0);
    assert!(!strided.contains("]x"), "{strided}");
}

#[test]
fn gpu_few_row_products_with_b_untransposed_share_k_across_a_block() {
    // Decode attention's probabilities times V: B is not transposed, N is small (a
    // head's width), the batch (heads) makes 512 blocks of four outputs.
    let src = "kir 1
%p = input \"p\" f32[32,seq,40]
%v = input \"v\" f32[32,40,64]
%y = matmul %p, %v transpose_a=false transpose_b=false
output \"y\" = %y
";
    let g = kiln_ir::text::parse(src).unwrap();
    let lowered = |target: &str| {
        let t: crate::Target = target.parse().unwrap();
        let s = crate::pipeline::schedule_for(&t, &Default::default()).unwrap();
        lower(&g, s).unwrap()
    };
    let gpu = lowered("cuda:sm_90");
    assert_eq!(gpu.kernels.len(), 2, "a guarded form per row count");
    let few = gpu.kernels[0].to_string();
    assert_eq!(few.matches("reduce_Sum").count(), 4, "{few}");
    assert!(crate::kernel::gpu::launch_shape(&gpu.kernels[0]).block_per_point());
    let many = &gpu.kernels[1];
    assert!(
        !crate::kernel::gpu::launch_shape(many).block_per_point(),
        "{many}"
    );
    // CPUs keep one register-tiled kernel for every row count.
    assert_eq!(lowered("cpu:x86-64-v3").kernels.len(), 1);
}

/// The byte dot product kernel (`cpu:x86-64-v3`) of a one-row matmul by 96 rows of
/// `format` weights, `k` wide, as text: with the activations quantized in `x_format`, or
/// (`None`) as `--quantize-activations` chooses.
fn byte_dot_kernel(
    format: kiln_ir::QuantFormat,
    k: usize,
    x_format: Option<kiln_ir::QuantFormat>,
) -> String {
    let row = k / format.block_elems() * format.block_bytes();
    let x = match x_format {
        Some(xf) => format!("%x0 = input \"x\" f32[1,{k}]\n%q = quantize %x0 format={xf}\n%x = dequant %q format={xf}"),
        None => format!("%x = input \"x\" f32[1,{k}]"),
    };
    let text = format!(
        "kir 1
{x}
%w = input \"w\" u8[96,{row}]
%d = dequant %w format={format}
%y = matmul %x, %d transpose_a=false transpose_b=true
output \"y\" = %y
"
    );
    let g = kiln_ir::text::parse(&text).unwrap();
    let g = if x_format.is_some() {
        g
    } else {
        crate::activations::quantize_activations(&g, &Schedule::for_vector_bits(256)).unwrap()
    };
    let t: crate::Target = "cpu:x86-64-v3".parse().unwrap();
    let opts = crate::pipeline::Options {
        quantize_activations: true,
        ..Default::default()
    };
    let s = crate::pipeline::schedule_for(&t, &opts).unwrap();
    lower(&g, s)
        .unwrap()
        .kernels
        .iter()
        .map(|k| k.to_string())
        .find(|k| k.contains("dot_bytes"))
        .expect("a byte dot kernel")
}

/// A CPU byte dot product over q8_0 weights (no activation sums needed) reads its four
/// rows one after another, each in a block loop of its own, and fetches each row's stream
/// 2 KiB ahead: one prefetch per 34-byte block.
#[test]
fn cpu_byte_dot_products_over_q8_0_read_rows_one_after_another() {
    let shown = byte_dot_kernel(kiln_ir::QuantFormat::Q8_0, 64, None);
    assert_eq!(
        shown.matches("Serial").count(),
        4,
        "a block loop per row:\n{shown}"
    );
    assert_eq!(shown.matches("prefetch").count(), 4, "{shown}");
    assert!(shown.contains(" + 2048))]"), "2 KiB ahead:\n{shown}");
}

/// K-quant rows by q8_k activations (what `--quantize-activations` makes of them) read
/// their rows one after another too: the activations' sums come with their blocks, so the
/// rows share nothing. Each row's stream is fetched 2 KiB ahead, every line of a 144-byte
/// block.
#[test]
fn cpu_k_quant_dot_products_read_rows_one_after_another() {
    let shown = byte_dot_kernel(kiln_ir::QuantFormat::Q4K, 256, None);
    assert!(shown.contains("scaled"), "{shown}");
    assert_eq!(
        shown.matches("Serial").count(),
        4,
        "a block loop per row:\n{shown}"
    );
    assert_eq!(shown.matches("prefetch").count(), 12, "{shown}");
    for line in ["2048", "2112", "2176"] {
        assert!(
            shown.contains(&format!(" + {line}))]")),
            "{line} in\n{shown}"
        );
    }
}

/// Over q8_0 activations, formats whose dot products need the activations' sums (here
/// Q4_K) read a point's rows together, sharing each activation block's sum, and prefetch
/// the next point's, block by block and line by line: three prefetches per 144-byte block
/// and row, 64 bytes apart.
#[test]
fn cpu_byte_dot_products_prefetch_every_line_of_long_blocks() {
    let q8_0 = Some(kiln_ir::QuantFormat::Q8_0);
    let shown = byte_dot_kernel(kiln_ir::QuantFormat::Q4K, 256, q8_0);
    assert_eq!(shown.matches("prefetch").count(), 12, "{shown}");
    for block in ["(v4 * 144)", "((v4 * 144) + 64)", "((v4 * 144) + 128)"] {
        let want = format!("prefetch a2[((min(((g1 * 4) + 4), 95) * 144) + {block})]");
        assert!(shown.contains(&want), "{want} in\n{shown}");
    }
}

/// A CPU dot product over half rows prefetches nothing (its rows are read one after
/// another: one stream the hardware follows) and reads each of its four rows in a loop of
/// its own.
#[test]
fn cpu_half_dot_products_read_rows_one_after_another() {
    let text = "kir 1
%x = input \"x\" f32[1,768]
%h = input \"w\" f16[64,768]
%w = cast %h dtype=f32
%y = matmul %x, %w transpose_a=false transpose_b=true
output \"y\" = %y
";
    let g = kiln_ir::text::parse(text).unwrap();
    let t: crate::Target = "cpu:x86-64-v3".parse().unwrap();
    let s = crate::pipeline::schedule_for(&t, &Default::default()).unwrap();
    let mut k = lower(&g, s).unwrap().kernels.remove(0);
    crate::pipeline::finish_kernel(&mut k);
    let shown = k.to_string();
    assert!(!shown.contains("prefetch"), "{shown}");
    assert_eq!(
        shown.matches("Serial").count(),
        8,
        "a vector loop and a tail per row:\n{shown}"
    );
}

/// Rope writes every head of a token from one grid point, so the heads share the angle's
/// cosine and sine; a symbolic head count keeps a grid point per head.
#[test]
fn rope_rotates_all_heads_of_a_token_together() {
    for (heads, per_token) in [("4", true), ("heads", false)] {
        let l = lowered(&format!(
            "kir 1
%x = input \"x\" f32[seq,{heads},8]
%p = input \"p\" i32[seq]
%r = rope %x, %p rot_dims=8 theta=10000 layout=neox
output \"y\" = %r
"
        ));
        let k = &l.kernels[0];
        let text = k.to_string();
        assert_eq!(
            l.launches[0].grid.len(),
            if per_token { 1 } else { 2 },
            "{text}"
        );
        let stores = text.matches("a0[").count();
        assert!(
            if per_token { stores >= 4 } else { stores < 4 },
            "{heads} heads: {stores} stores\n{text}"
        );
    }
}

#[test]
fn a_residual_add_is_stored_by_the_matmul_it_follows() {
    let src = |rows: &str| {
        format!(
            "kir 1
%x = input \"x\" f32[{rows},64]
%h = input \"h\" f32[{rows},64]
%w = input \"w\" f32[64,64]
%y = matmul %x, %w transpose_a=false transpose_b=true
%r = add %h, %y
%z = mul %r, %r
output \"r\" = %r
output \"z\" = %z
"
        )
    };
    for (rows, target) in [
        ("1", "cpu:x86-64-v3"),
        ("37", "cpu:x86-64-v3"),
        ("seq", "cpu:x86-64-v3"),
        ("seq", "cuda:sm_90"),
        ("seq", "vulkan:spv1.3"),
    ] {
        let g = kiln_ir::text::parse(&src(rows)).unwrap();
        let l = lowered_for(&g, target);
        let shown: Vec<String> = l.kernels.iter().map(|k| k.to_string()).collect();
        // No kernel of its own for the sum: every matmul form writes it, adding `h`.
        assert!(
            !names(&l).iter().any(|n| n.ends_with("_add")),
            "{rows} {target}: {:?}",
            names(&l)
        );
        let matmuls: Vec<&String> = shown.iter().filter(|k| k.contains("_matmul(")).collect();
        assert_eq!(
            matmuls.len(),
            if rows == "seq" { 2 } else { 1 },
            "{rows} {target}"
        );
        for k in matmuls {
            let reads_h = k
                .lines()
                .next()
                .is_some_and(|sig| sig.matches("f32*").count() == 4);
            assert!(
                reads_h,
                "{rows} {target}: the matmul reads x, w and h:\n{k}"
            );
        }
    }
    // A matmul read by anything else keeps its buffer, and the sum its kernel.
    let shared = src("1").replace("%z = mul %r, %r", "%z = mul %r, %y");
    let l = lowered(&shared);
    assert!(
        names(&l).iter().any(|n| n.ends_with("_add")),
        "{:?}",
        names(&l)
    );
}

#[test]
fn gpu_dot_products_read_heads_folded_into_rows_as_runs() {
    // Attention's output read back as rows: the row index is split into (kv head, group)
    // and joined again, and K crosses head boundaries every 64 elements.
    let g = kiln_ir::text::parse(
        "kir 1
%a = input \"a\" f32[4,8,1,64]
%p = permute %a perm=[2,0,1,3]
%x = reshape %p shape=[1,2048]
%h = input \"w\" f16[256,2048]
%w = cast %h dtype=f32
%y = matmul %x, %w transpose_a=false transpose_b=true
output \"y\" = %y
",
    )
    .unwrap();
    let k = lowered_for(&g, "cuda:sm_90").kernels.remove(0).to_string();
    assert!(k.contains("fma("), "{k}");
    assert_eq!(
        k.matches("]x8 in ").count(),
        2 * k.matches("reduce_Sum").count(),
        "{k}"
    );
}

#[test]
fn gpu_decode_attention_reads_the_cache_and_the_new_rows_in_place() {
    // Attention's keys: the cached rows and this step's, a matmul operand. On GPUs the
    // few-row (decode) form reads both where they are, and the copy into one buffer runs
    // only when the many-row (prefill) form, which reads it, does. CPUs always copy (their
    // dot products would gather otherwise). A reshaped projection returned as an output is
    // written by the projection itself.
    let src = "kir 1
%q = input \"q\" f32[seq,64]
%c = input \"c\" f32[past,64]
%x = input \"x\" f32[seq,64]
%w = input \"w\" f32[64,64]
%k = matmul %x, %w transpose_a=false transpose_b=true
%all = concat %c, %k axis=0
%s = matmul %q, %all transpose_a=false transpose_b=true
%heads = reshape %k shape=[seq,4,16]
output \"s\" = %s
output \"k_new\" = %heads
";
    let g = kiln_ir::text::parse(src).unwrap();
    for (target, gpu) in TARGETS {
        let l = lowered_for(&g, target);
        let n = names(&l);
        assert!(
            !n.iter().any(|k| k.ends_with("_reshape")),
            "{target}: {n:?}"
        );
        // The projection's kernels write the output buffer.
        let projection = &l.launches[0];
        assert!(
            matches!(l.buffers[projection.args[0]].kind, BufferKind::Output(1)),
            "{target}: {:?}",
            l.buffers[projection.args[0]].kind
        );
        let copy = launch_named(&l, "_concat");
        let copied = copy.args[0];
        assert_eq!(
            copy.guard.as_ref().map(|g| g.above),
            gpu.then_some(true),
            "{target}"
        );
        // The scores' two forms write the last launch's buffer.
        let scores = launches_of_last(&l);
        assert_eq!(scores.len(), 2, "{target}: {n:?}");
        for launch in scores {
            let few_rows = launch.guard.as_ref().is_some_and(|g| !g.above);
            assert_eq!(
                launch.args.contains(&copied),
                !(gpu && few_rows),
                "{target}: {}",
                l.kernels[launch.kernel]
            );
        }
    }
}

#[test]
fn gpu_decode_down_projection_computes_swiglu_where_it_reads_it() {
    let src = "kir 1
%x = input \"x\" f32[seq,64]
%wg = input \"wg\" f16[128,64]
%wu = input \"wu\" f16[128,64]
%wd = input \"wd\" f16[64,128]
%g = cast %wg dtype=f32
%u = cast %wu dtype=f32
%d = cast %wd dtype=f32
%gate = matmul %x, %g transpose_a=false transpose_b=true
%up = matmul %x, %u transpose_a=false transpose_b=true
%s = silu %gate
%h = mul %s, %up
%y = matmul %h, %d transpose_a=false transpose_b=true
output \"y\" = %y
";
    let g = kiln_ir::text::parse(src).unwrap();
    let l = lowered_for(&g, "cuda:sm_90");
    let mul = launch_named(&l, "_mul");
    assert_eq!(mul.guard.as_ref().map(|g| g.above), Some(true));
    let product = mul.args[0];
    let down = launches_of_last(&l);
    assert_eq!(down.len(), 2);
    for launch in down {
        let k = l.kernels[launch.kernel].to_string();
        let decode = launch.guard.as_ref().is_some_and(|g| !g.above);
        assert_eq!(launch.args.contains(&product), !decode, "{k}");
        if decode {
            // Still runs of weights, the activations computed lane by lane.
            assert!(k.contains("(let v"), "{k}");
            assert!(k.contains(" = <("), "{k}");
            assert!(k.contains("]x8 in "), "{k}");
        }
    }
}

#[test]
fn a_value_returned_through_a_reshape_is_not_computed_in_place() {
    // The concatenation is also an output (as heads): its kernel must run every step.
    let g = kiln_ir::text::parse(
        "kir 1
%q = input \"q\" f32[seq,64]
%c = input \"c\" f32[past,64]
%k = input \"k\" f32[seq,64]
%all = concat %c, %k axis=0
%s = matmul %q, %all transpose_a=false transpose_b=true
%heads = reshape %all shape=[past+seq,4,16]
output \"s\" = %s
output \"all\" = %heads
",
    )
    .unwrap();
    let l = lowered_for(&g, "cuda:sm_90");
    let copy = launch_named(&l, "_concat");
    assert!(copy.guard.is_none(), "{:?}", copy.guard);
}

/// A norm read as a projection's A, and a softmax read as attention's probabilities: GPU
/// decode forms sum the unscaled row and scale their sums (`normalised`); the normalising
/// kernel runs for prefill only. CPUs keep it.
#[test]
fn gpu_decode_dot_products_normalise_their_rows_themselves() {
    let norm = "kir 1
%x = input \"x\" f32[seq,64]
%g = input \"g\" f32[64]
%n = rms_norm %x, %g eps=0.00001
%h = input \"w\" f16[1024,64]
%w = cast %h dtype=f32
%y = matmul %n, %w transpose_a=false transpose_b=true
output \"y\" = %y
";
    let softmax = "kir 1
%s = input \"s\" f32[4,seq,past]
%m = input \"m\" f32[seq,past]
%c = const f32[] [0.125]
%scaled = mul %s, %c
%masked = add %scaled, %m
%p = softmax %masked axis=2
%v = input \"v\" f32[4,past,64]
%y = matmul %p, %v transpose_a=false transpose_b=false
output \"y\" = %y
";
    let quantized = norm.replace(
        "%h = input \"w\" f16[1024,64]\n%w = cast %h dtype=f32",
        "%h = input \"w\" u8[1024,68]\n%w = dequant %h format=q8_0",
    );
    assert!(quantized.contains("dequant"));
    // (graph, its normalising kernel, reductions in the decode form, how it scales): the
    // norm's sum of squares and a block's four dot products; the softmax's maximum, its sum
    // of exponentials and one dot product (too few outputs to give a block more). Over q8_0
    // rows, how many outputs a block takes depends on the target (`matmul::columns`).
    let cases = [
        (norm, "_rms_norm", Some(5), "(1.0f / sqrt("),
        (&quantized, "_rms_norm", None, "(1.0f / sqrt("),
        (softmax, "_softmax", Some(3), "reduce_Max"),
    ];
    for (src, kernel, reductions, scaling) in cases {
        let g = kiln_ir::text::parse(src).unwrap();
        for (target, gpu) in TARGETS {
            let l = lowered_for(&g, target);
            let own = launch_named(&l, kernel);
            assert_eq!(
                own.guard.as_ref().map(|g| g.above),
                gpu.then_some(true),
                "{target}"
            );
            let normed = own.args[0];
            for launch in launches_of_last(&l) {
                let k = l.kernels[launch.kernel].to_string();
                let decode = launch.guard.as_ref().is_some_and(|g| !g.above);
                assert_eq!(
                    launch.args.contains(&normed),
                    !(gpu && decode),
                    "{target}: {k}"
                );
                if gpu && decode {
                    // The factor's sum joins the dot products' reductions; the sums are
                    // scaled after.
                    let found = k.matches(" = reduce_").count();
                    assert_eq!(Some(found), reductions.or(Some(found)), "{k}");
                    // The sums in one pass over K: the factor steps as the dot products do.
                    let body = &l.kernels[launch.kernel].body;
                    let sum = |s: &Stmt| matches!(s, Stmt::Reduce { op: RedOp::Sum, .. });
                    let first_sum = body.iter().position(sum).unwrap();
                    assert_eq!(
                        crate::kernel::gpu::reduction_group(&body[first_sum..]),
                        body.iter().filter(|s| sum(s)).count(),
                        "{target}: {k}"
                    );
                    assert!(k.contains(scaling) && k.contains("(1.0f / "), "{k}");
                }
            }
        }
    }
}

/// A projection read only by a rope of its heads (llama's queries and keys, adjacent
/// pairs): the few-row form stores the rope's buffer, pairs rotated, and reads no buffer
/// of the rope's; the rope's kernel runs with the many-row form. Neox pairs are a head
/// apart, never in one block: they keep the rope's kernel in decode.
#[test]
fn decode_projections_store_their_heads_rotated() {
    for (layout, folds) in [("interleaved", true), ("neox", false)] {
        let g = kiln_ir::text::parse(&format!(
            "kir 1
%x = input \"x\" f32[seq,32]
%w = input \"w\" f32[1024,32]
%p = input \"pos\" i32[seq]
%y = matmul %x, %w transpose_a=false transpose_b=true
%h = reshape %y shape=[seq,16,64]
%r = rope %h, %p rot_dims=48 theta=10000 layout={layout}
output \"r\" = %r
"
        ))
        .unwrap();
        for (target, _) in TARGETS {
            let l = lowered_for(&g, target);
            let rope = launch_named(&l, "_rope");
            let rotated = rope.args[0];
            let decode = l
                .launches
                .iter()
                .find(|x| {
                    l.kernels[x.kernel].name.ends_with("_matmul")
                        && x.guard.as_ref().is_some_and(|g| !g.above)
                })
                .expect("the few-row form");
            let k = l.kernels[decode.kernel].to_string();
            assert_eq!(decode.args[0] == rotated, folds, "{layout} {target}: {k}");
            assert_eq!(
                rope.guard.as_ref().map(|g| g.above),
                folds.then_some(true),
                "{layout} {target}"
            );
            if folds {
                assert!(k.contains("cos") || k.contains("0.63661975f"), "{k}");
            }
        }
    }
}

/// CUDA's decode dot products run 128-thread blocks (K = 2048 gives 256 threads one step
/// each), Q4_K's over 8192 inputs keep 256 and 64-long reductions (attention's scores)
/// take 64; Vulkan's run 128 only where their steps take nibble partners (4-bit rows,
/// whatever the activations), not 8-bit or half rows.
#[test]
fn gpu_decode_dot_products_choose_their_block_size() {
    // `operands` defines %x (the activations) and %w (the weights).
    let block_of = |operands: &str, target: &str| {
        let src = format!(
            "kir 1
{operands}
%y = matmul %x, %w transpose_a=false transpose_b=true
output \"y\" = %y
"
        );
        let g = kiln_ir::text::parse(&src).unwrap();
        let t: crate::Target = target.parse().unwrap();
        let s = crate::pipeline::schedule_for(&t, &Default::default()).unwrap();
        let lowered = lower(&g, s).unwrap();
        let k = &lowered.kernels[0];
        assert!(k.to_string().contains("reduce_Sum"), "{k}");
        crate::kernel::gpu::launch_shape(k).threads
    };
    let block = |weights: &str, k: usize, target: &str| {
        block_of(&format!("%x = input \"x\" f32[1,{k}]\n{weights}"), target)
    };
    let half = |k: usize| format!("%h = input \"w\" f16[1024,{k}]\n%w = cast %h dtype=f32");
    let quant = |k: usize, format: &str, block_bytes: usize, run: usize| {
        format!(
            "%r = input \"r\" u8[1024,{}]\n%w = dequant %r format={format}",
            k / run * block_bytes
        )
    };
    assert_eq!(block(&half(2048), 2048, "cuda:sm_90"), 128);
    assert_eq!(block(&quant(2048, "q8_0", 34, 32), 2048, "cuda:sm_90"), 128);
    assert_eq!(
        block(&quant(2048, "q4_k", 144, 256), 2048, "cuda:sm_90"),
        128
    );
    assert_eq!(
        block(&quant(8192, "q4_k", 144, 256), 8192, "cuda:sm_90"),
        256
    );
    assert_eq!(block(&quant(8192, "q8_0", 34, 32), 8192, "cuda:sm_90"), 128);
    assert_eq!(block(&half(64), 64, "cuda:sm_90"), 64);
    assert_eq!(block(&half(2048), 2048, "vulkan"), 256);
    assert_eq!(block(&quant(2048, "q8_0", 34, 32), 2048, "vulkan"), 256);
    assert_eq!(block(&quant(2048, "q4_k", 144, 256), 2048, "vulkan"), 128);
    assert_eq!(block(&quant(2048, "q6_k", 210, 256), 2048, "vulkan"), 128);
    let q8_x = format!(
        "%xa = input \"xa\" u8[1,2176]\n%x = dequant %xa format=q8_0\n{}",
        quant(2048, "q6_k", 210, 256)
    );
    assert_eq!(block_of(&q8_x, "vulkan"), 128);
    assert_eq!(block_of(&q8_x, "cuda:sm_90"), 128);
}
