//! SentencePiece-style vocabularies (`tokenizer.ggml.model = "llama"`), as llama.cpp runs
//! them: spaces become `▁` (and one is put in front), the text starts as single characters,
//! and the adjacent pair whose concatenation is the best-scoring vocabulary entry is merged
//! until none is; characters with no entry fall back to their UTF-8 bytes as `<0xXX>`
//! tokens.

use super::{Vocab, SPACE, TYPE_BYTE};
use std::collections::{BinaryHeap, HashMap};

pub(super) struct SentencePiece {
    ids: HashMap<String, u32>,
    byte_ids: [Option<u32>; 256],
}

/// A candidate merge of two adjacent symbols; the heap pops the best score, then the
/// leftmost pair, as llama.cpp does.
#[derive(PartialEq)]
struct Bigram {
    score: f32,
    left: usize,
    len: usize,
}

impl Eq for Bigram {}

impl Ord for Bigram {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        self.score
            .total_cmp(&o.score)
            .then_with(|| o.left.cmp(&self.left))
    }
}

impl PartialOrd for Bigram {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}

/// A run of the text: `start..start+len` bytes, linked to its neighbours.
#[derive(Clone, Copy)]
struct Symbol {
    start: usize,
    len: usize,
    prev: Option<usize>,
    next: Option<usize>,
}

impl SentencePiece {
    pub(super) fn new(vocab: &Vocab) -> SentencePiece {
        let ids = vocab
            .tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();
        let mut byte_ids = [None; 256];
        for (i, t) in vocab.tokens.iter().enumerate() {
            if vocab.types[i] == TYPE_BYTE {
                if let Some(b) = super::byte_token(t) {
                    byte_ids[b as usize] = Some(i as u32);
                }
            }
        }
        SentencePiece { ids, byte_ids }
    }

    /// Appends the token ids of `text` (not empty) to `out`.
    pub(super) fn encode(
        &self,
        vocab: &Vocab,
        text: &str,
        out: &mut Vec<u32>,
    ) -> Result<(), String> {
        let mut s = String::new();
        if vocab.add_space_prefix {
            s.push_str(SPACE);
        }
        s.push_str(&text.replace(' ', SPACE));
        let n = s.chars().count();
        let mut syms: Vec<Symbol> = s
            .char_indices()
            .enumerate()
            .map(|(i, (start, c))| Symbol {
                start,
                len: c.len_utf8(),
                prev: i.checked_sub(1),
                next: (i + 1 < n).then_some(i + 1),
            })
            .collect();
        let mut heap = BinaryHeap::new();
        let try_pair = |syms: &[Symbol], heap: &mut BinaryHeap<Bigram>, l: usize| {
            let Some(r) = syms[l].next else { return };
            let (a, b) = (syms[l], syms[r]);
            let piece = &s[a.start..b.start + b.len];
            if let Some(&id) = self.ids.get(piece) {
                heap.push(Bigram {
                    score: vocab.scores[id as usize],
                    left: l,
                    len: piece.len(),
                });
            }
        };
        for l in 0..n {
            try_pair(&syms, &mut heap, l);
        }
        while let Some(best) = heap.pop() {
            let l = best.left;
            let Some(r) = syms[l].next else { continue };
            // Stale: one side was merged into something else since this was pushed.
            if syms[l].len == 0 || syms[l].len + syms[r].len != best.len {
                continue;
            }
            syms[l].len += syms[r].len;
            syms[r].len = 0;
            syms[l].next = syms[r].next;
            if let Some(nn) = syms[r].next {
                syms[nn].prev = Some(l);
            }
            if let Some(p) = syms[l].prev {
                try_pair(&syms, &mut heap, p);
            }
            try_pair(&syms, &mut heap, l);
        }
        let mut i = Some(0);
        while let Some(k) = i {
            let sym = syms[k];
            let piece = &s[sym.start..sym.start + sym.len];
            match self.ids.get(piece) {
                Some(&id) => out.push(id),
                None => {
                    for b in piece.bytes() {
                        let id = self.byte_ids[b as usize].ok_or_else(|| {
                            format!("`{piece}` is not in the vocabulary, which has no byte token <0x{b:02X}> to spell it")
                        })?;
                        out.push(id);
                    }
                }
            }
            i = sym.next;
        }
        Ok(())
    }

    /// The bytes token `id` stands for (control tokens stand for none). `first` says the
    /// token starts the text, whose added space prefix is then dropped.
    pub(super) fn piece(&self, vocab: &Vocab, id: u32, first: bool) -> Vec<u8> {
        let Some((t, ty)) = super::shown(vocab, id) else {
            return Vec::new();
        };
        if ty == TYPE_BYTE {
            if let Some(b) = self.byte_ids.iter().position(|&x| x == Some(id)) {
                return vec![b as u8];
            }
        }
        super::spaced(t, first && vocab.add_space_prefix)
    }
}
