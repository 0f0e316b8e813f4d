//! PTX for every capability, from graphs compiled by the real pipeline. Whether the PTX
//! also assembles and runs is `scripts/gpu-check.sh`'s job on a machine with `ptxas` and a GPU.

use crate::Backend;
use kiln_compiler::pipeline::{compile, Options};
use kiln_compiler::Target;

const MODEL: &str = "kir 1
%x = input \"x\" f32[rows,300]
%w = input \"w\" f32[300]
%h = input \"m\" f16[300,64]
%m = cast %h dtype=f32
%n = rms_norm %x, %w eps=1e-5
%s = softmax %n axis=1
%y = matmul %s, %m transpose_a=false transpose_b=false
%g = silu %y
output \"y\" = %g
";

fn ptx_for(target: &str) -> (String, Vec<String>) {
    let g = kiln_ir::text::parse(MODEL).unwrap();
    let t: Target = target.parse().unwrap();
    let c = compile(&g, &t, &Options::default()).unwrap();
    let ptx = crate::llvm::LlvmBackend
        .compile(c.kernels(), &t)
        .unwrap_or_else(|e| panic!("{e}"));
    let names = c.kernels().iter().map(|k| k.name.clone()).collect();
    (String::from_utf8(ptx).unwrap(), names)
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
