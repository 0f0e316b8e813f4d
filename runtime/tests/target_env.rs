//! `KILN_TARGET` read from the environment. Alone in its own test binary, so setting the
//! variable cannot race with other tests.

mod common;

use kiln_runtime::choose_variant;

#[test]
fn kiln_target_overrides_the_choice() {
    let m = common::manifest(vec![
        common::variant("cpu:x86-64", 0),
        common::variant("cpu:x86-64-v99", 1),
    ]);
    std::env::set_var("KILN_TARGET", "cpu:x86-64-v99");
    let err = choose_variant(&m).unwrap_err().to_string();
    assert!(
        err.starts_with(
            "KILN_TARGET=cpu:x86-64-v99: cpu:x86-64-v99 is a CPU this kiln does not know"
        ),
        "{err}"
    );
    std::env::set_var("KILN_TARGET", "cuda:sm_90");
    let err = choose_variant(&m).unwrap_err().to_string();
    assert!(err.contains("has no such variant"), "{err}");
    if cfg!(target_arch = "x86_64") {
        std::env::set_var("KILN_TARGET", "cpu:x86-64");
        let (i, why) = choose_variant(&m).unwrap();
        assert_eq!((i, why.as_str()), (0, "cpu:x86-64: chosen by KILN_TARGET"));
    }
    std::env::remove_var("KILN_TARGET");
}
