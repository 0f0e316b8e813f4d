//! One case per error class of the `.kir` reader, asserting on the message and position a
//! user would see, plus the inputs that must be errors rather than panics.

use super::{parse, print};
use crate::error::IrError;
use crate::op::Op;

/// Parses `body` after a `kir 1` header and returns (line, col, message) of the error.
fn error_in(body: &str) -> (usize, usize, String) {
    error_of(&format!("kir 1\n{body}"))
}

fn error_of(src: &str) -> (usize, usize, String) {
    match parse(src) {
        Err(IrError::Parse { line, col, msg }) => (line, col, msg),
        other => panic!("expected a parse error for\n{src}\ngot {other:?}"),
    }
}

#[track_caller]
fn assert_error(body: &str, line: usize, col: usize, needle: &str) {
    let (l, c, msg) = error_in(body);
    assert!(msg.contains(needle), "message `{msg}` lacks `{needle}`");
    assert_eq!((l, c), (line, col), "position of `{msg}`");
}

const X: &str = "%x = input \"x\" f32[4,8]\n";

#[test]
fn header_is_required_and_versioned() {
    let (line, col, msg) = error_of("# no header\n\n%0 = input \"x\" f32[1]\n");
    assert_eq!((line, col), (3, 1));
    assert!(msg.contains("missing `kir 1` header"), "{msg}");
    assert!(error_of("").2.contains("missing `kir 1` header"));
    let (_, col, msg) = error_of("kir 2\n");
    assert_eq!(col, 5);
    assert!(msg.contains("unsupported .kir version 2"), "{msg}");
    assert!(error_of("kir\n").2.contains("expected a version number"));
    assert_error("kir 1\n", 2, 1, "header appears twice");
    assert!(parse("# empty graph\nkir 1 # trailing comment\n").is_ok_and(|g| g.is_empty()));
}

#[test]
fn unknown_op_and_dtype() {
    assert_error("%a = matmull %b", 2, 6, "unknown op `matmull`");
    assert_error(
        "%a = input \"a\" f8[2]",
        2,
        16,
        "unknown dtype `f8` (expected one of f32, f16",
    );
    assert_error(
        &format!("{X}%c = cast %x dtype=u4"),
        3,
        20,
        "unknown dtype `u4`",
    );
}

#[test]
fn node_names() {
    assert_error("%a = relu %b", 2, 11, "undefined node %b");
    assert_error(
        &format!("{X}%x = relu %x"),
        3,
        1,
        "duplicate node name %x (first defined on line 2)",
    );
    assert_error(
        &format!("{X}output \"y\" = %nope"),
        3,
        14,
        "undefined node %nope",
    );
    assert_error("% = relu %b", 2, 1, "expected a node name after `%`");
    // Any identifier names a node; printing renumbers them in order.
    let g = parse(&format!(
        "kir 1\n{X}%relu.1 = relu %x\noutput \"y\" = %relu.1\n"
    ))
    .expect("parses");
    assert_eq!(
        print(&g),
        "kir 1\n%0 = input \"x\" f32[4,8]\n%1 = relu %0\noutput \"y\" = %1\n"
    );
}

#[test]
fn operand_count_and_separators() {
    assert_error(
        &format!("{X}%m = matmul %x transpose_a=false transpose_b=false"),
        3,
        6,
        "matmul takes 2 operands, got 1",
    );
    assert_error(
        &format!("{X}%r = relu %x, %x"),
        3,
        6,
        "relu takes 1 operand, got 2",
    );
    assert_error(
        &format!("{X}%c = concat axis=0"),
        3,
        6,
        "concat takes at least 1 operand, got 0",
    );
    assert_error(
        &format!("{X}%a = add %x %x"),
        3,
        13,
        "expected `,` between operands",
    );
    assert_error(
        &format!("{X}%a = add %x, axis=1"),
        3,
        14,
        "expected an operand `%name`",
    );
}

#[test]
fn attributes_are_checked() {
    let mm = "%m = matmul %x, %x transpose_a=false";
    assert_error(
        &format!("{X}{mm}"),
        3,
        6,
        "matmul is missing attribute `transpose_b`",
    );
    assert_error(
        &format!("{X}{mm} transpose_bb=true"),
        3,
        38,
        "unknown attribute `transpose_bb` for matmul (it takes transpose_a, transpose_b)",
    );
    assert_error(
        &format!("{X}{mm} transpose_b=yes"),
        3,
        50,
        "bad value `yes` for attribute `transpose_b` of matmul: expected true or false",
    );
    assert_error(
        &format!("{X}{mm} transpose_a=true"),
        3,
        38,
        "attribute `transpose_a` of matmul is given twice",
    );
    assert_error(
        &format!("{X}%s = softmax %x axis=-1"),
        3,
        22,
        "bad value `-1` for attribute `axis` of softmax",
    );
    assert_error(
        &format!("{X}%r = reduce_sum %x axes=[0,x] keep_dims=true"),
        3,
        25,
        "bad value `[0,x]` for attribute `axes`",
    );
    assert_error(
        &format!("{X}%r = reduce_sum %x axes=[0 keep_dims=true"),
        3,
        25,
        "unclosed `[` in attribute `axes`",
    );
    assert_error(
        &format!("{X}%r = relu %x alpha=1"),
        3,
        14,
        "unknown attribute `alpha`: relu takes no attributes",
    );
    assert_error(
        &format!("{X}%n = rms_norm %x, %x eps="),
        3,
        26,
        "missing value for attribute `eps`",
    );
    assert_error(
        &format!("{X}%n = rms_norm %x, %x eps=small"),
        3,
        26,
        "expected a number (or inf, -inf, nan)",
    );
    assert_error(
        &format!("{X}%s = slice %x axis=0 start=0 end=99999999999999999999 step=1"),
        3,
        34,
        "expected an integer",
    );
}

#[test]
fn shapes_are_checked() {
    assert_error(
        "%a = input \"a\" f32[2,",
        2,
        22,
        "malformed shape: expected a dim",
    );
    assert_error(
        "%a = input \"a\" f32[2 3]",
        2,
        22,
        "malformed shape: expected `,` between dims",
    );
    assert_error(
        "%a = input \"a\" f32",
        2,
        19,
        "malformed shape: expected `[`",
    );
    assert_error(
        "%a = input \"a\" f32[-1]",
        2,
        20,
        "malformed shape: dim -1 is negative",
    );
    assert_error("%a = input \"a\" f32[2.5]", 2, 20, "`2.5` is not a dim");
    assert_error(
        "%a = input \"a\" f32[9223372036854775807+1]",
        2,
        20,
        "dim overflows",
    );
    assert_error(
        &format!("{X}%r = reshape %x shape=[4,]"),
        3,
        26,
        "malformed shape",
    );
}

#[test]
fn const_data_must_fill_its_shape() {
    assert_error(
        "%c = const f32[2,2] [1, 2, 3]",
        2,
        12,
        "const data has 3 value(s) but shape [2,2] needs 4",
    );
    assert_error(
        "%c = const f32[seq] []",
        2,
        12,
        "a const's shape must be known, got [seq]",
    );
    assert_error(
        "%c = const i32[1] [2.5]",
        2,
        20,
        "bad const value `2.5` for i32: expected an integer in range",
    );
    assert_error(
        "%c = const i32[1] [3000000000]",
        2,
        20,
        "expected an integer in range",
    );
    assert_error(
        "%c = const f32[1] [one]",
        2,
        20,
        "bad const value `one` for f32: expected a number",
    );
    assert_error(
        "%c = const f32[1] [1 2]",
        2,
        22,
        "expected `,` between const values",
    );
    assert_error(
        "%c = const f32[4294967296,4294967296] []",
        2,
        12,
        "element count overflows",
    );
}

#[test]
fn shape_errors_carry_the_line() {
    let body = "%a = input \"a\" f32[2,3]\n%b = input \"b\" f32[4,5]\n\n%p = matmul %a, %b transpose_a=false transpose_b=false";
    assert_error(body, 5, 1, "node %p (matmul): inner dims differ");
    assert_error(
        &format!("{X}  %s = softmax %x axis=2"),
        3,
        3,
        "node %s (softmax): axis 2 out of range",
    );
}

#[test]
fn strings_and_comments() {
    let g = parse(
        "kir 1\n%0 = input \"a \\\"q\\\" # \\u{e9}\\n\" f32[] # comment\noutput \"#\" = %0\n",
    )
    .expect("parses");
    assert!(
        matches!(&g.node(g.node_ids().next().expect("a node")).op, Op::Input { name, .. } if name == "a \"q\" # é\n")
    );
    assert_eq!(g.outputs[0].0, "#");
    assert_error("%0 = input \"abc f32[]", 2, 12, "unterminated string");
    assert_error("%0 = input \"a\\qb\" f32[]", 2, 14, "unknown escape `\\q`");
    assert_error(
        "%0 = input x f32[]",
        2,
        12,
        "expected the input's name in quotes",
    );
    assert_error(
        "%0 = input \"x\" f32[] ; x",
        2,
        22,
        "unexpected character `;`",
    );
    assert_error(
        "%0 = input \"x\" f32[] extra",
        2,
        22,
        "unexpected `extra` after the input node",
    );
    assert_error(
        "output \"y\" %0",
        2,
        12,
        "expected `=` after the output name",
    );
    assert_error("y = relu %0", 2, 1, "expected `%name = op ...`");
}

#[test]
fn overflowing_sizes_are_errors_not_panics() {
    let big = "%a = input \"a\" f32[4294967296,4294967296]\n";
    assert_error(
        &format!("{big}%r = reshape %a shape=[4294967296,4294967296]"),
        3,
        1,
        "overflow",
    );
    let wide = "%a = input \"a\" f32[9223372036854775807]\n";
    assert_error(
        &format!("{wide}%c = concat %a, %a axis=0"),
        3,
        1,
        "overflow",
    );
    assert_error(
        &format!("{wide}%s = slice %a axis=0 start=0 end=9223372036854775807 step=9"),
        3,
        1,
        "overflow",
    );
    let neg = "%a = input \"a\" f32[-9223372036854775807*s]\n";
    assert_error(&format!("{neg}%c = concat %a, %a axis=0"), 3, 1, "overflow");
}
