//! Hand-written cases for what the `.kir` reader accepts: float and dim spellings,
//! attribute order, and every file under `examples/` (parsed, verified, round-tripped).

use super::{parse, parse_dim, parse_type, print};
use crate::dim::Dim;
use crate::dtype::DType;
use crate::op::{Op, RopeLayout};
use crate::verify;

#[test]
fn odd_floats_are_spelled_and_read_back() {
    let src = "kir 1\n%x = input \"x\" f32[2,8]\n%w = param \"w\" f32[8]\n\
               %c = const f32[5] [inf, -inf, nan, -0.0, 1e-45]\n\
               %n = rms_norm %x, %w eps=-inf\n%m = rms_norm %x, %w eps=nan\n%k = rms_norm %x, %w eps=5e-324\n";
    let g = parse(src).expect("parses");
    let ops: Vec<&Op> = g.node_ids().map(|i| &g.node(i).op).collect();
    let Op::Const(t) = ops[2] else {
        panic!("const expected")
    };
    assert_eq!(t.data[..2], [f64::INFINITY, f64::NEG_INFINITY]);
    assert!(t.data[2].is_nan() && t.data[3] == 0.0 && t.data[3].is_sign_negative());
    assert_eq!(t.data[4], f64::from(f32::from_bits(1)));
    assert!(matches!(ops[3], Op::RmsNorm { eps } if *eps == f64::NEG_INFINITY));
    assert!(matches!(ops[4], Op::RmsNorm { eps } if eps.is_nan()));
    assert!(matches!(ops[5], Op::RmsNorm { eps } if *eps == 5e-324));
    let text = print(&g);
    assert!(
        text.contains("[inf, -inf, nan, -0.0, 1e-45]") && text.contains("eps=nan"),
        "{text}"
    );
    assert_eq!(print(&parse(&text).expect("reparses")), text);
}

#[test]
fn rope_and_slice_attributes() {
    let src = "kir 1\n%x = input \"x\" f32[seq,2,8]\n%p = input \"p\" i32[seq]\n\
               %r = rope %x, %p rot_dims=4 theta=10000 layout=neox\n%s = slice %r axis=2 start=0 end=8 step=3\n";
    let g = parse(src).expect("parses");
    let ids: Vec<_> = g.node_ids().collect();
    assert_eq!(
        g.node(ids[2]).op,
        Op::Rope {
            layout: RopeLayout::Neox,
            theta: 10000.0,
            rot_dims: 4
        }
    );
    assert_eq!(
        g.node(ids[3]).shape,
        vec![Dim::sym("seq"), Dim::known(2), Dim::known(3)]
    );
    assert!(print(&g).contains("%2 = rope %0, %1 layout=neox theta=10000.0 rot_dims=4"));
}

#[test]
fn dims_and_types_parse_as_affine_expressions() {
    let seq = Dim::sym("seq");
    assert_eq!(parse_dim("2*seq+1"), Ok(seq.scale(2).add(&Dim::known(1))));
    assert_eq!(
        parse_dim("seq*2 - 1"),
        Ok(seq.scale(2).add(&Dim::known(-1)))
    );
    assert_eq!(parse_dim("-seq+past"), Ok(Dim::sym("past").sub(&seq)));
    assert_eq!(parse_dim("seq-seq+3"), Ok(Dim::known(3)));
    for text in ["past+seq", "2*seq-1", "-2*a+b-7", "0", "n_1"] {
        assert_eq!(parse_dim(text).map(|d| d.to_string()), Ok(text.to_string()));
    }
    assert!(parse_dim("2*").is_err() && parse_dim("seq seq").is_err() && parse_dim("").is_err());
    assert_eq!(
        parse_type("bf16[batch, 2*seq]"),
        Ok((DType::BF16, vec![Dim::sym("batch"), seq.scale(2)]))
    );
}

#[test]
fn examples_parse_verify_and_round_trip() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).expect("examples/ exists") {
        let path = entry.expect("readable entry").path();
        if path.extension().is_none_or(|e| e != "kir") {
            continue;
        }
        let src = std::fs::read_to_string(&path).expect("readable example");
        let g = parse(&src).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        verify(&g).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let text = print(&g);
        assert_eq!(print(&parse(&text).expect("printed example parses")), text);
        seen += 1;
    }
    assert!(seen >= 3, "expected the example files in {}", dir.display());
}

#[test]
fn dequant_round_trips_and_checks_its_operand() {
    let src = "kir 1\n%w = param \"w\" u8[4,68]\n%d = dequant %w format=q8_0\noutput \"y\" = %d\n";
    let g = parse(src).unwrap();
    let out = g.outputs[0].1;
    assert_eq!(
        g.node(out).shape,
        crate::Shape::from(vec![crate::Dim::from(4usize), crate::Dim::from(64usize)])
    );
    assert_eq!(parse(&print(&g)).unwrap().len(), g.len());
    let bad = "kir 1\n%w = param \"w\" u8[4,67]\n%d = dequant %w format=q8_0\noutput \"y\" = %d\n";
    let e = parse(bad).unwrap_err().to_string();
    assert!(e.contains("not whole blocks"), "{e}");
    let bad = "kir 1\n%w = param \"w\" f32[4,68]\n%d = dequant %w format=q4_0\noutput \"y\" = %d\n";
    assert!(parse(bad).unwrap_err().to_string().contains("u8"));
    let bad = "kir 1\n%w = param \"w\" u8[4,68]\n%d = dequant %w format=q3_k\noutput \"y\" = %d\n";
    assert!(parse(bad).unwrap_err().to_string().contains("q8_0"));
}
