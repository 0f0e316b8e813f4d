//! Two CPU modules loaded at the same time whose kernels share a name must each run their
//! own code. (glibc's dlopen recognises loaded objects by path; the memfd path of a closed
//! file is reused, which once made a second module silently get the first one's code.)

use kiln_runtime::cpu::module::CpuModule;
use std::process::Command;

fn build(dir: &std::path::Path, name: &str, value: i32) -> Option<Vec<u8>> {
    if Command::new("cc").arg("--version").output().is_err() {
        eprintln!("skipped: no C compiler (cc) to build test kernels");
        return None;
    }
    let src = dir.join(format!("{name}.c"));
    let so = dir.join(format!("{name}.so"));
    let code = format!(
        "#include <stdint.h>\nvoid kiln_k(void **args, const int64_t *dims, int64_t b, int64_t e) {{ (void)dims; for (int64_t i = b; i < e; i++) ((int32_t *)args[0])[i] = {value}; }}\n"
    );
    std::fs::write(&src, code).unwrap();
    let ok = Command::new("cc")
        .args(["-shared", "-fPIC", "-O1", "-o"])
        .arg(&so)
        .arg(&src)
        .status()
        .unwrap()
        .success();
    assert!(ok, "cc failed");
    Some(std::fs::read(&so).unwrap())
}

#[test]
fn simultaneously_loaded_modules_keep_their_own_code() {
    let dir = tempfile::tempdir().unwrap();
    let (Some(a), Some(b)) = (build(dir.path(), "a", 11), build(dir.path(), "b", 22)) else {
        return;
    };
    let target = "cpu:x86-64";
    let kernels = vec!["k".to_string()];
    // Load and drop a first module so its descriptor number is free, then load two.
    drop(CpuModule::load(target, &a, &kernels).unwrap());
    let ma = CpuModule::load(target, &a, &kernels).unwrap();
    let mb = CpuModule::load(target, &b, &kernels).unwrap();
    let run = |m: &CpuModule| {
        let mut out = [0i32; 4];
        let args = [out.as_mut_ptr().cast::<u8>()];
        // SAFETY: the test kernel writes `end - begin` i32s into args[0], which has 4.
        unsafe { m.kernel("k").unwrap()(args.as_ptr(), std::ptr::null(), 0, 4) };
        out
    };
    assert_eq!(run(&ma), [11; 4]);
    assert_eq!(run(&mb), [22; 4]);
}
