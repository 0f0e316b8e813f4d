use super::*;

/// <unk>, <s>, </s>, 256 byte tokens, then pieces with descending scores.
fn vocab(pieces: &[&str]) -> Vocab {
    let mut tokens = vec!["<unk>".to_string(), "<s>".into(), "</s>".into()];
    let mut types = vec![2, TYPE_CONTROL, TYPE_CONTROL];
    let mut scores = vec![0.0, 0.0, 0.0];
    for b in 0..=255u8 {
        tokens.push(format!("<0x{b:02X}>"));
        types.push(TYPE_BYTE);
        scores.push(0.0);
    }
    for (i, p) in pieces.iter().enumerate() {
        tokens.push(p.replace(' ', SPACE));
        types.push(1);
        scores.push(-(i as f32));
    }
    Vocab {
        model: "llama".into(),
        tokens,
        scores,
        types,
        bos: Some(1),
        eos: Some(2),
        add_bos: true,
        add_space_prefix: true,
    }
}

const PIECES: [&str; 12] = [
    " ", "h", "e", "l", "o", "w", "r", "d", "ll", " he", " hell", " hello",
];

fn id(v: &Vocab, piece: &str) -> u32 {
    v.tokens
        .iter()
        .position(|t| *t == piece.replace(' ', SPACE))
        .unwrap() as u32
}

#[test]
fn best_scoring_merges_win() {
    let v = vocab(&PIECES);
    let t = Tokenizer::new(v.clone()).unwrap();
    // " hello" is in the vocabulary, but merging only joins adjacent pairs that are
    // themselves pieces: without " h" or "he" the only merge is "l" + "l".
    let ids = t.encode("hello").unwrap();
    let want = vec![
        1,
        id(&v, " "),
        id(&v, "h"),
        id(&v, "e"),
        id(&v, "ll"),
        id(&v, "o"),
    ];
    assert_eq!(ids, want);

    // With " h" available, the merges chain up to " hello".
    let mut pieces = PIECES.to_vec();
    pieces.push(" h");
    pieces.push("he");
    let v = vocab(&pieces);
    let t = Tokenizer::new(v.clone()).unwrap();
    assert_eq!(t.encode("hello").unwrap(), vec![1, id(&v, " hello")]);
    assert_eq!(
        t.encode("hello world").unwrap(),
        vec![
            1,
            id(&v, " hello"),
            id(&v, " "),
            id(&v, "w"),
            id(&v, "o"),
            id(&v, "r"),
            id(&v, "l"),
            id(&v, "d")
        ]
    );
}

#[test]
fn unknown_characters_fall_back_to_bytes_and_round_trip() {
    let v = vocab(&PIECES);
    let t = Tokenizer::new(v.clone()).unwrap();
    let text = "héllo wörld 🌍, ok";
    let ids = t.encode(text).unwrap();
    // 'é' is two bytes: <0xC3> <0xA9>.
    assert!(ids.windows(2).any(|w| w == [3 + 0xC3, 3 + 0xA9]), "{ids:?}");
    assert_eq!(t.decode(&ids), text);
    let mut stream = TextStream::default();
    let mut streamed = String::new();
    for (i, &id) in ids.iter().enumerate() {
        streamed.push_str(&stream.push(&t.piece(id, i <= 1)));
    }
    assert_eq!(streamed, text, "streaming holds partial characters back");
}

#[test]
fn bos_and_space_prefix_follow_the_vocabulary() {
    let mut v = vocab(&PIECES);
    v.add_bos = false;
    v.add_space_prefix = false;
    let t = Tokenizer::new(v.clone()).unwrap();
    assert_eq!(t.encode("he").unwrap(), vec![id(&v, "h"), id(&v, "e")]);
    assert_eq!(t.encode("").unwrap(), Vec::<u32>::new());
}

#[test]
fn other_tokenizer_models_are_named() {
    let mut v = vocab(&PIECES);
    v.model = "gpt2".into();
    let e = Tokenizer::new(v).err().unwrap();
    assert!(e.contains("`gpt2`"), "{e}");
}
