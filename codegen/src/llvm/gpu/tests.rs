//! PTX for every capability, from graphs compiled by the real pipeline. Whether the PTX
//! also assembles and runs is `scripts/gpu-check.sh`'s job on a machine with `ptxas` and a GPU.

use crate::Backend;
use kiln_compiler::kernel::Kernel;
use kiln_compiler::Target;

fn ptx_for(target: &str) -> (String, Vec<String>) {
    let (code, names) = code_for(target);
    (String::from_utf8(code).unwrap(), names)
}

/// The code blob of the test model for `target`, and its kernels' names.
fn code_for(target: &str) -> (Vec<u8>, Vec<String>) {
    crate::test_model::code(&crate::llvm::LlvmBackend, target)
}

#[test]
fn every_capability_gets_its_target_and_isa_version() {
    for sm in super::nvptx::capabilities() {
        let (ptx, names) = ptx_for(&format!("cuda:{sm}"));
        let (_, retarget) = super::nvptx::desc(sm).unwrap();
        let version = format!(
            ".version {}.{}",
            retarget.version / 10,
            retarget.version % 10
        );
        assert!(ptx.contains(&format!("\n.target {sm}\n")), "{sm}:\n{ptx}");
        assert!(
            ptx.contains(&format!("{version}\n")),
            "{sm}: wants {version}"
        );
        assert!(ptx.contains(".address_size 64"));
        for n in names {
            assert!(
                ptx.contains(&format!(".visible .entry kiln_{n}(")),
                "{sm}: no entry for {n}"
            );
        }
        assert!(!ptx.contains(".extern .func"), "{sm}: undefined calls");
        // scripts/gpu-prepare.sh keeps them for `ptxas` on the GPU machine.
        if let Some(dir) = std::env::var_os("KILN_PTX_DIR") {
            std::fs::write(std::path::Path::new(&dir).join(format!("{sm}.ptx")), &ptx).unwrap();
        }
    }
}

#[test]
fn reductions_use_warp_shuffles_and_barriers() {
    let (ptx, _) = ptx_for("cuda:sm_90");
    assert!(ptx.contains("shfl.sync.bfly.b32"), "{ptx}");
    assert!(ptx.contains("bar.sync"), "{ptx}");
    assert!(ptx.contains(".shared"), "{ptx}");
}

#[test]
fn unknown_capabilities_say_which_exist() {
    let t: Target = "cuda:sm_61".parse().unwrap();
    let e = crate::llvm::LlvmBackend.check(&t).unwrap_err().to_string();
    assert!(e.contains("sm_70 and newer") && e.contains("sm_90a"), "{e}");
}

fn arg_counts(target: &str) -> Vec<usize> {
    let kernels = crate::test_model::kernels(target);
    kernels.iter().map(|k| k.args.len()).collect()
}

fn tool(name: &str) -> Option<std::path::PathBuf> {
    let prefix = std::env::var_os("LLVM_SYS_191_PREFIX").unwrap_or("/usr/lib/llvm-19".into());
    let p = std::path::Path::new(&prefix).join("bin").join(name);
    p.is_file().then_some(p)
}

fn run_tool(name: &str, args: &[&std::ffi::OsStr]) -> String {
    let t = tool(name).unwrap_or_else(|| panic!("{name} not found under LLVM 19's prefix"));
    let out = std::process::Command::new(t).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `llvm-objdump -d` of the code object at `path` for `gfx`, which must decode throughout.
fn disassemble(gfx: &str, path: &std::path::Path) -> String {
    let mcpu = format!("--mcpu={gfx}");
    let asm = run_tool(
        "llvm-objdump",
        &["-d".as_ref(), mcpu.as_ref(), path.as_os_str()],
    );
    assert!(
        !asm.contains("<unknown>"),
        "{gfx}: undecodable instructions"
    );
    asm
}

/// Every tested gfx: an AMDGPU ELF for the right machine, a kernel descriptor per kernel,
/// metadata whose wave size and explicit arguments match what the HIP runtime passes, and
/// code that LLVM's disassembler reads without complaint.
#[test]
fn amd_code_objects_are_well_formed() {
    use object::{Object, ObjectSymbol};
    let dir = tempfile::tempdir().unwrap();
    for (gfx, mach) in super::amdgpu::TESTED {
        let (bytes, names) = code_for(&format!("hip:{gfx}"));
        let args = arg_counts(&format!("hip:{gfx}"));
        let threads: Vec<u32> = crate::test_model::kernels(&format!("hip:{gfx}"))
            .iter()
            .map(|k| kiln_compiler::kernel::gpu::launch_shape(k).threads)
            .collect();
        let elf = object::read::elf::ElfFile64::<object::Endianness>::parse(&*bytes)
            .unwrap_or_else(|e| panic!("{gfx}: not an ELF file: {e}"));
        let header = elf.elf_header();
        let e = elf.endian();
        assert_eq!(header.e_machine.get(e), object::elf::EM_AMDGPU, "{gfx}");
        assert_eq!(header.e_flags.get(e) & 0xff, mach, "{gfx}: EF_AMDGPU_MACH");
        let symbols: Vec<String> = elf
            .symbols()
            .filter_map(|s| s.name().ok().map(String::from))
            .collect();
        for n in &names {
            for want in [format!("kiln_{n}"), format!("kiln_{n}.kd")] {
                assert!(symbols.contains(&want), "{gfx}: no symbol {want}");
            }
        }
        let path = dir.path().join(format!("{gfx}.co"));
        std::fs::write(&path, &bytes).unwrap();
        let notes = run_tool("llvm-readelf", &["--notes".as_ref(), path.as_os_str()]);
        let wave = super::amdgpu::wave_size(gfx);
        assert_eq!(
            notes.matches(&format!(".wavefront_size: {wave}")).count(),
            names.len(),
            "{gfx}: every kernel runs with waves of {wave}:\n{notes}"
        );
        assert!(notes.contains("amdhsa.version"), "{gfx}: {notes}");
        // The runtime passes the GPU ABI's explicit arguments only: 8 bytes per buffer,
        // the dims address and the point count, and blocks of the kernel's launch shape.
        for block in notes.split("  - .args:").skip(1) {
            let field = |key: &str| {
                block
                    .lines()
                    .find_map(|l| l.trim().strip_prefix(key).map(|v| v.trim().to_string()))
                    .unwrap_or_else(|| panic!("{gfx}: no {key} in\n{block}"))
            };
            let name = field(".name:");
            let k = name.strip_prefix("kiln_").expect("kiln_ symbol");
            let i = names
                .iter()
                .position(|n| n == k)
                .expect("a compiled kernel");
            let want = 8 * (args[i] + 2);
            assert_eq!(
                field(".kernarg_segment_size:"),
                want.to_string(),
                "{gfx} {name}"
            );
            assert_eq!(
                field(".max_flat_workgroup_size:"),
                threads[i].to_string(),
                "{gfx} {name}"
            );
        }
        let asm = disassemble(gfx, &path);
        assert!(asm.contains("s_endpgm"), "{gfx}: no kernel code:\n{asm}");
    }
}

/// A matmul of 4096^2 outputs, which takes the large matmuls' plan (`lower::matrix::Plan`).
const LARGE_HALF_MATMUL: &str = "kir 1
%a = input \"a\" f16[4096,128]
%b = input \"b\" f16[4096,128]
%y = matmul %a, %b transpose_a=false transpose_b=true
output \"y\" = %y
";

#[test]
fn half_matmuls_use_the_matrix_unit_from_sm_80() {
    for sm in ["sm_80", "sm_86", "sm_90", "sm_90a", "sm_120"] {
        for (model, name) in [
            (crate::test_model::HALF_MATMULS, "half"),
            (LARGE_HALF_MATMUL, "half-large"),
        ] {
            let target = format!("cuda:{sm}");
            let (code, _) = crate::test_model::code_of(&crate::llvm::LlvmBackend, model, &target);
            half_matmul_ptx(&String::from_utf8(code).unwrap(), sm, name);
        }
    }
    let model = crate::test_model::HALF_MATMULS;
    let (code, _) = crate::test_model::code_of(&crate::llvm::LlvmBackend, model, "cuda:sm_75");
    assert!(!String::from_utf8(code).unwrap().contains("mma.sync"));
}

/// What the PTX of a half matmul must show (model `name`, capability `sm`): `mma.sync`, or
/// on sm_90a Hopper's warpgroup instructions (`wgmma`, reading the staged tiles by
/// descriptor: no fragments read by the threads, no `mma.sync`).
fn half_matmul_ptx(ptx: &str, sm: &str, name: &str) {
    let types: &[&str] = if name == "half" {
        &["f16.f16", "bf16.bf16"]
    } else {
        &["f16.f16"]
    };
    let hopper = sm == "sm_90a";
    for ty in types {
        let want = if hopper {
            let n = if name == "half" { 128 } else { 256 };
            format!("wgmma.mma_async.sync.aligned.m64n{n}k16.f32.{ty}")
        } else {
            format!("mma.sync.aligned.m16n8k16.row.col.f32.{ty}.f32")
        };
        assert!(ptx.contains(&want), "{sm} {name}: no {want}");
    }
    let reads: &[&str] = if hopper {
        &[
            "fence.proxy.async.shared::cta",
            "wgmma.fence.sync.aligned",
            "wgmma.commit_group.sync.aligned",
            "wgmma.wait_group.sync.aligned 0",
        ]
    } else {
        &["ldmatrix.sync.aligned.m8n8.x4.shared.b16"]
    };
    if hopper {
        assert!(!ptx.contains("mma.sync"), "{sm} {name}: mma.sync");
        assert!(!ptx.contains("ldmatrix"), "{sm} {name}: ldmatrix");
    }
    // Tiles staged through shared memory by background copies and read back by
    // `ldmatrix`, straight into the instruction's registers (or by the tensor cores, on
    // sm_90a). No 2-byte reads (a read split for want of a proven alignment) and no array
    // of a thread's own (in local memory).
    for want in [
        "cp.async.cg.shared.global",
        "cp.async.wait_group",
        "bar.sync",
    ]
    .iter()
    .chain(reads)
    {
        assert!(ptx.contains(want), "{sm} {name}: no {want}");
    }
    assert!(!ptx.contains("ld.shared.u16"), "{sm} {name}: 2-byte reads");
    assert!(!ptx.contains(".local"), "{sm} {name}: local memory");
    // scripts/gpu-prepare.sh keeps them for `ptxas -v` (registers, spills) there.
    if let Some(dir) = std::env::var_os("KILN_PTX_DIR") {
        let path = std::path::Path::new(&dir).join(format!("{name}-{sm}.ptx"));
        std::fs::write(path, ptx).unwrap();
    }
}

/// CDNA's MFMA and RDNA3/4's WMMA in the half matmuls of the targets that have them (bf16
/// too, except on gfx908, which kiln multiplies in f32 there); the others keep FMAs.
#[test]
fn half_matmuls_use_mfma_and_wmma_where_the_gfx_has_them() {
    use kiln_compiler::kernel::matrix::MatrixUnit;
    let dir = tempfile::tempdir().unwrap();
    for (gfx, _) in super::amdgpu::TESTED {
        let (code, _) = crate::test_model::code_of(
            &crate::llvm::LlvmBackend,
            crate::test_model::HALF_MATMULS,
            &format!("hip:{gfx}"),
        );
        let path = dir.path().join(format!("{gfx}.co"));
        std::fs::write(&path, &code).unwrap();
        let asm = disassemble(gfx, &path);
        let count = |s: &str| asm.matches(s).count();
        match MatrixUnit::for_gpu("hip", gfx) {
            Some(MatrixUnit::Mfma16x16x16) => {
                // 4 x 2 tiles (a warp's 64 x 32 outputs: `lower::matrix::Plan`), two steps
                // along K per loaded run (gfx942 spells it `_f16`).
                let f16 = count("v_mfma_f32_16x16x16f16") + count("v_mfma_f32_16x16x16_f16");
                assert!(f16 >= 16, "{gfx}: f16 MFMA");
                let bf16 = count("v_mfma_f32_16x16x16bf16_1k") + count("v_mfma_f32_16x16x16_bf16");
                assert_eq!(bf16 > 0, gfx != "gfx908", "{gfx}: bf16 MFMA");
            }
            Some(MatrixUnit::WmmaGfx11 | MatrixUnit::WmmaGfx12) => {
                // 4 x 2 tiles of 16 x 16, one step along K per loaded run.
                assert!(count("v_wmma_f32_16x16x16_f16") >= 8, "{gfx}: f16 WMMA");
                assert!(count("v_wmma_f32_16x16x16_bf16") >= 8, "{gfx}: bf16 WMMA");
            }
            _ => assert!(
                count("v_mfma") + count("v_wmma") == 0,
                "{gfx} has no matrix unit kiln uses"
            ),
        }
    }
}

/// A decode matvec of 512 f32 inputs and 1024 rows of `bytes` bytes in `format`.
fn matvec(format: &str, bytes: usize) -> String {
    crate::test_model::matvec(format, 512, bytes)
}

/// A quantized decode matvec's step reads its run of quant bytes in as few loads as the
/// bytes' alignment allows (q8_0's 34-byte blocks: 2-byte loads; Q4_K's quants sit at
/// multiples of 8 bytes: one 8-byte load) and its eight f32 activations in two 16-byte
/// loads, instead of a load per byte and per element.
#[test]
fn quantized_matvecs_load_runs_of_bytes_and_activations() {
    let ptx = |model: &str| {
        let (code, _) = crate::test_model::code_of(&crate::llvm::LlvmBackend, model, "cuda:sm_90");
        String::from_utf8(code).unwrap()
    };
    let q8 = ptx(&matvec("q8_0", 16 * 34));
    assert!(q8.contains(".v4.f32"), "{q8}");
    assert!(q8.contains(".u16"), "{q8}");
    assert!(!q8.contains(".u8 "), "{q8}");
    let q4k = ptx(&matvec("q4_k", 2 * 144));
    assert!(q4k.contains(".v4.f32"), "{q4k}");
    assert!(q4k.contains(".u64") || q4k.contains(".v2.u32"), "{q4k}");
}

/// A Q4_K decode step at K = 8192 (256 threads, a 32-element step each) takes 16
/// elements and their nibble partners (`Step::split`), so each 16-byte load of quants
/// serves 32 weights: one such load per row for every eight 16-byte loads of activations
/// (32 f32, shared by the block's 4 rows), where a step of 32 consecutive elements reads
/// 32 bytes for their low or high nibbles only.
#[test]
fn four_bit_matvec_steps_use_both_nibbles_of_each_byte_they_load() {
    let model = crate::test_model::matvec("q4_k", 8192, 32 * 144);
    let (code, _) = crate::test_model::code_of(&crate::llvm::LlvmBackend, &model, "cuda:sm_90");
    let ptx = String::from_utf8(code).unwrap();
    let (quants, activations) = (
        ptx.matches("ld.global.nc.v4.u32").count(),
        ptx.matches("ld.global.nc.v4.f32").count(),
    );
    assert!(activations >= 8, "{activations} activation loads\n{ptx}");
    assert_eq!(2 * quants, activations, "{quants} quant loads\n{ptx}");
}

/// On NVPTX the decode matvecs' weights reach the exponent form a permute per weight (the
/// byte under the bits of 2^23), their flips, masks and shifts done on packed words,
/// instead of a field extract, a shift, a mask and an or per weight; HIP, which keeps the
/// conversion, has neither.
#[test]
fn quantized_matvec_weights_become_floats_through_byte_permutes() {
    for (format, bytes) in [("q8_0", 16 * 34), ("q4_0", 16 * 18), ("q4_k", 2 * 144)] {
        let (code, _) = crate::test_model::code_of(
            &crate::llvm::LlvmBackend,
            &matvec(format, bytes),
            "cuda:sm_90",
        );
        let ptx = String::from_utf8(code).unwrap();
        let (permutes, extracts) = (
            ptx.matches("prmt.b32").count(),
            ptx.matches("bfe.u32").count(),
        );
        assert!(permutes >= 8, "{format}: {permutes} permutes\n{ptx}");
        // A K-quant run's six-bit scale and min may take a field extract each (a step
        // decodes one or two runs); a weight's would be one per permute.
        assert!(
            8 * extracts <= permutes,
            "{format}: {extracts} byte extracts for {permutes} permutes\n{ptx}"
        );
    }
}

/// With activations quantized (`--quantize-activations`), CUDA's decode matvecs multiply
/// bytes by bytes: `dp4a`, signed by signed for Q8_0 weights, unsigned quant bits by signed
/// activations for the others, the quants packed as they were loaded; Q8_0's 32-byte runs,
/// two bytes into a word, read as whole words (`word_runs.rs`).
#[test]
fn quantized_activations_multiply_bytes_with_dp4a_on_cuda() {
    for (format, bytes, kind) in [("q8_0", 256 * 34, "s32"), ("q4_k", 32 * 144, "u32")] {
        let model = format!(
            "kir 1
%x = input \"x\" f32[1,8192]
%q = quantize %x format=q8_0
%xq = dequant %q format=q8_0
%w = input \"w\" u8[1024,{bytes}]
%d = dequant %w format={format}
%y = matmul %xq, %d transpose_a=false transpose_b=true
output \"y\" = %y
"
        );
        let (code, _) = crate::test_model::code_of(&crate::llvm::LlvmBackend, &model, "cuda:sm_90");
        let ptx = String::from_utf8(code).unwrap();
        if format == "q8_0" {
            assert!(
                ptx.contains("ld.global.nc.u32"),
                "{format}: no word loads\n{ptx}"
            );
        }
        let want = format!("dp4a.{kind}.s32");
        assert!(
            ptx.matches(&want).count() >= 2,
            "{format}: no {want}\n{ptx}"
        );
        // Nibbles masked and shifted a word at a time, not extracted and reinserted.
        assert!(
            !ptx.contains("bfi.b32"),
            "{format}: bytes repacked one by one\n{ptx}"
        );
    }
}

/// No 16-byte load where the run is not 16-aligned: q5_1's quants sit 8 bytes into its
/// 24-byte blocks and the q8_0 activations' 2 bytes into 34-byte ones, so every 16- and
/// 32-byte run of this matvec takes narrower loads. (LLVM 19 lowered a `<16 x i8>` load as
/// one `ld.v4.u32` whatever its alignment: a misaligned-address fault on the H100.)
#[test]
fn byte_runs_load_no_wider_than_their_alignment_on_cuda() {
    let model = "kir 1
%x = input \"x\" f32[1,8192]
%q = quantize %x format=q8_0
%xq = dequant %q format=q8_0
%w = input \"w\" u8[64,6144]
%d = dequant %w format=q5_1
%y = matmul %xq, %d transpose_a=false transpose_b=true
output \"y\" = %y
";
    let (code, _) = crate::test_model::code_of(&crate::llvm::LlvmBackend, model, "cuda:sm_90");
    let ptx = String::from_utf8(code).unwrap();
    let matmul = &ptx[ptx
        .find(".entry kiln_k1_matmul")
        .expect("the matmul kernel")..];
    assert!(matmul.contains("dp4a"), "{matmul}");
    let wide: Vec<&str> = matmul
        .lines()
        .filter(|l| l.contains("ld.global") && (l.contains(".v4.u32") || l.contains(".v4.b32")))
        .collect();
    assert!(wide.is_empty(), "16-byte loads of unaligned runs: {wide:?}");
}

/// On sm_90 and newer every kernel waits for the grids before it ahead of any store and of
/// any load but the symbols' and the buffer offsets' (i64, written by the host before the
/// launch), and then lets
/// the next grid launch; older capabilities lack the instructions and say nothing of them.
#[test]
fn hopper_kernels_wait_for_prior_grids_before_touching_memory() {
    super::nvptx::EARLY_LAUNCH.set(Some(true));
    for (sm, waits) in [("sm_90", true), ("sm_120", true), ("sm_89", false)] {
        let (ptx, names) = ptx_for(&format!("cuda:{sm}"));
        let entries: Vec<&str> = ptx.split(".visible .entry").skip(1).collect();
        assert_eq!(entries.len(), names.len(), "{sm}");
        for body in entries {
            let name = body.split('(').next().unwrap_or("").trim();
            let wait = body.find("griddepcontrol.wait;");
            let trigger = body.find("griddepcontrol.launch_dependents;");
            if !waits {
                assert!(wait.is_none() && trigger.is_none(), "{sm} {name}");
                continue;
            }
            let wait = wait.unwrap_or_else(|| panic!("{sm} {name}: no wait"));
            assert!(
                trigger.is_some_and(|t| t > wait),
                "{sm} {name}: no trigger after the wait"
            );
            for line in body[..wait].lines().map(str::trim) {
                let store = ["st.", "atom.", "red."]
                    .iter()
                    .any(|op| line.starts_with(op));
                let host = ["ld.global.u64", "ld.global.nc.u64"];
                let load =
                    line.starts_with("ld.global") && !host.iter().any(|h| line.starts_with(h));
                assert!(!store && !load, "{sm} {name}: `{line}` before the wait");
            }
        }
    }
}

/// A decode matvec's thread loads the weights of `REDUCE_UNROLL` strided steps in one
/// basic block: a 1B llama's down projection (K = 5632, four rows a block) then has eight
/// 16-byte weight loads in its loop's block, where one step at a time has four (and waits
/// a memory round trip per step).
#[test]
fn decode_matvec_threads_load_several_steps_before_accumulating() {
    let model = "kir 1
%x = input \"x\" f32[1,5632]
%w = input \"w\" f16[2048,5632]
%c = cast %w dtype=f32
%y = matmul %x, %c transpose_a=false transpose_b=true
output \"y\" = %y
";
    let loads_ahead = |unroll: u32| {
        kiln_compiler::kernel::gpu::UNROLL.set(Some(unroll));
        let (code, _) = crate::test_model::code_of(&crate::llvm::LlvmBackend, model, "cuda:sm_90");
        kiln_compiler::kernel::gpu::UNROLL.set(None);
        let ptx = String::from_utf8(code).unwrap();
        // The most 16-byte half loads (the weights') in one basic block: ptxas hoists a
        // block's independent loads ahead of the arithmetic, not across the loop's branch.
        ptx.split("$L__BB")
            .map(|block| {
                block
                    .lines()
                    .filter(|l| l.trim().starts_with("ld.global") && l.contains(".v4.u32"))
                    .count()
            })
            .max()
            .unwrap_or(0)
    };
    assert_eq!(loads_ahead(1), 4);
    assert!(loads_ahead(2) >= 8, "{}", loads_ahead(2));
}

/// A kernel reads, through its last parameter, the offset of each buffer that a launch
/// binds to a model output (`BufferParam::offset`), once each and before its first
/// branch, and nothing when it has none: the runtime may then pass a carried output's storage with the rows held as its
/// offset, and keep a replayed launch's arguments while a decode's rows grow
/// (`Variant::buffer_offsets`).
#[test]
fn kernels_read_the_offsets_of_the_buffers_launches_may_move() {
    let (ptx, _) = ptx_for("cuda:sm_90");
    let kernels = crate::test_model::kernels("cuda:sm_90");
    let moved = |k: &Kernel| k.args.iter().filter(|a| a.offset).count();
    assert!(kernels.iter().any(|k| moved(k) > 0) && kernels.iter().any(|k| moved(k) == 0));
    for k in &kernels {
        let n = crate::symbol_name(&k.name);
        let body = ptx.split(&format!(".visible .entry {n}(")).nth(1);
        let body = body.unwrap_or_else(|| panic!("no {n}"));
        let body = body.split(".visible .entry").next().unwrap_or(body);
        let last = format!("[{n}_param_{}]", k.args.len() + 1);
        let table = body
            .lines()
            .find(|l| l.contains("ld.param") && l.contains(&last))
            .map(|l| {
                l.split(',')
                    .next()
                    .unwrap()
                    .split_whitespace()
                    .last()
                    .unwrap()
                    .to_string()
            });
        // Before the kernel's first branch, beside the symbols' load, not after it.
        let head = body.split("bra").next().unwrap_or(body);
        let loads = table.as_ref().map_or(0, |t| {
            head.lines()
                .filter(|l| l.contains("ld.global.nc") && l.contains(&format!("[{t}+")))
                .count()
        });
        assert_eq!(loads, moved(k), "{n}:\n{body}");
    }
}

/// On a GPU, a choice between two bindings' elements (decode attention's cached row or the
/// step's new one) loads only the chosen one, where `selp` took both loads' values; a
/// choice within one binding stays a `selp`.
#[test]
fn a_choice_between_two_bindings_loads_only_the_chosen_one() {
    let target: Target = "cuda:sm_90".parse().unwrap();
    let ptx = |other: u32| {
        let kernel = crate::test_model::chooser(other);
        let code = crate::llvm::LlvmBackend
            .compile(&[kernel], &target)
            .unwrap();
        String::from_utf8(code).unwrap()
    };
    let two = ptx(2);
    assert!(!two.contains("selp.f32"), "two bindings:\n{two}");
    let one = ptx(1);
    assert!(one.contains("selp.f32"), "one binding:\n{one}");
}
