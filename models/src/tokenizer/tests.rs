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
        add_eos: false,
        add_space_prefix: true,
        merges: Vec::new(),
        pre: None,
        hf_json: None,
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
    v.model = "t5".into();
    let e = Tokenizer::new(v).err().unwrap();
    assert!(e.contains("`t5`"), "{e}");
}

/// A byte-level vocabulary: the 256 byte characters (GPT-2's table), the merges' results,
/// then `<|endoftext|>` (control) and `<|im_start|>` (user-defined).
fn byte_vocab(pre: &str, merges: &[&str]) -> Vocab {
    let printable = |b: u8| matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
    let mut next = 256u32;
    let mut tokens: Vec<String> = (0..=255u8)
        .map(|b| {
            if printable(b) {
                char::from(b).to_string()
            } else {
                next += 1;
                char::from_u32(next - 1).unwrap().to_string()
            }
        })
        .collect();
    tokens.extend(merges.iter().map(|m| m.replace(' ', "")));
    tokens.push("<|endoftext|>".into());
    tokens.push("<|im_start|>".into());
    let n = tokens.len();
    let mut types = vec![1; n];
    types[n - 2] = TYPE_CONTROL;
    types[n - 1] = TYPE_USER_DEFINED;
    Vocab {
        model: "gpt2".into(),
        scores: vec![0.0; n],
        types,
        bos: Some(n as u32 - 2),
        eos: Some(n as u32 - 2),
        add_bos: false,
        add_eos: false,
        add_space_prefix: false,
        merges: merges.iter().map(|m| m.to_string()).collect(),
        pre: Some(pre.into()),
        hf_json: None,
        tokens,
    }
}

const MERGES: [&str; 7] = ["h e", "l l", "he ll", "hell o", "\u{120} w", "1 2", "12 3"];

fn bpe_id(v: &Vocab, token: &str) -> u32 {
    v.tokens.iter().position(|t| t == token).unwrap() as u32
}

#[test]
fn byte_level_bpe_merges_by_rank_and_spells_spaces_as_bytes() {
    let v = byte_vocab("qwen2", &MERGES);
    let t = Tokenizer::new(v.clone()).unwrap();
    let ids = t.encode("hello world").unwrap();
    let want: Vec<u32> = ["hello", "\u{120}w", "o", "r", "l", "d"]
        .iter()
        .map(|p| bpe_id(&v, p))
        .collect();
    assert_eq!(ids, want);
    assert_eq!(t.decode(&ids), "hello world");
    // Any text round-trips: bytes without merges are their own tokens.
    for text in ["naïve 日本語 😀\n\ttabs", "  two  spaces ", "it's 3.14!"] {
        assert_eq!(t.decode(&t.encode(text).unwrap()), text);
    }
}

#[test]
fn special_tokens_in_the_text_are_single_tokens() {
    let v = byte_vocab("gpt2", &MERGES);
    let t = Tokenizer::new(v.clone()).unwrap();
    let ids = t.encode("<|im_start|>hello<|endoftext|>").unwrap();
    let want: Vec<u32> = ["<|im_start|>", "hello", "<|endoftext|>"]
        .iter()
        .map(|p| bpe_id(&v, p))
        .collect();
    assert_eq!(ids, want);
    // User-defined tokens print as their text, control tokens as nothing.
    assert_eq!(t.decode(&ids), "<|im_start|>hello");
}

/// Llama 3 keeps up to three digits in one piece, qwen2 splits every digit.
#[test]
fn the_pre_tokenizer_follows_the_model_family() {
    let llama3 = byte_vocab("llama-bpe", &MERGES);
    let qwen2 = byte_vocab("qwen2", &MERGES);
    let ids = |v: &Vocab| Tokenizer::new(v.clone()).unwrap().encode("12345").unwrap();
    let pieces = |v: &Vocab, p: &[&str]| p.iter().map(|p| bpe_id(v, p)).collect::<Vec<_>>();
    assert_eq!(ids(&llama3), pieces(&llama3, &["123", "4", "5"]));
    assert_eq!(ids(&qwen2), pieces(&qwen2, &["1", "2", "3", "4", "5"]));

    let e = Tokenizer::new(byte_vocab("made-up", &MERGES))
        .err()
        .unwrap();
    assert!(e.contains("`made-up`"), "{e}");
}
