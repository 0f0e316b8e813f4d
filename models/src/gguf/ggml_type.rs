//! ggml tensor types: their ids in GGUF files and their block geometry.

/// The tensor types kiln reads. Ids are ggml's (`enum ggml_type`); types ggml has removed
/// or that kiln does not read yet are reported by id and, where known, by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GgmlType {
    F32,
    F16,
    BF16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q4K,
    Q5K,
    Q6K,
}

/// Names of ggml types kiln does not read, so an error can say what the file holds.
const OTHER_NAMES: &[(u32, &str)] = &[
    (9, "Q8_1"),
    (10, "Q2_K"),
    (11, "Q3_K"),
    (15, "Q8_K"),
    (16, "IQ2_XXS"),
    (17, "IQ2_XS"),
    (18, "IQ3_XXS"),
    (19, "IQ1_S"),
    (20, "IQ4_NL"),
    (21, "IQ3_S"),
    (22, "IQ2_S"),
    (23, "IQ4_XS"),
    (24, "I8"),
    (25, "I16"),
    (26, "I32"),
    (27, "I64"),
    (28, "F64"),
    (29, "IQ1_M"),
    (34, "TQ1_0"),
    (35, "TQ2_0"),
];

/// Elements per block of the k-quants.
pub const QK_K: usize = 256;

impl GgmlType {
    pub const ALL: [GgmlType; 11] = [
        GgmlType::F32,
        GgmlType::F16,
        GgmlType::BF16,
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::Q8_0,
        GgmlType::Q4K,
        GgmlType::Q5K,
        GgmlType::Q6K,
    ];

    pub fn from_id(id: u32) -> Result<GgmlType, String> {
        GgmlType::ALL
            .into_iter()
            .find(|t| t.id() == id)
            .ok_or_else(|| match OTHER_NAMES.iter().find(|(i, _)| *i == id) {
                Some((_, name)) => format!("tensor type {name} (ggml type {id}) is not supported"),
                None => format!("unknown ggml tensor type {id}"),
            })
    }

    pub fn id(self) -> u32 {
        match self {
            GgmlType::F32 => 0,
            GgmlType::F16 => 1,
            GgmlType::Q4_0 => 2,
            GgmlType::Q4_1 => 3,
            GgmlType::Q5_0 => 6,
            GgmlType::Q5_1 => 7,
            GgmlType::Q8_0 => 8,
            GgmlType::Q4K => 12,
            GgmlType::Q5K => 13,
            GgmlType::Q6K => 14,
            GgmlType::BF16 => 30,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            GgmlType::F32 => "F32",
            GgmlType::F16 => "F16",
            GgmlType::BF16 => "BF16",
            GgmlType::Q4_0 => "Q4_0",
            GgmlType::Q4_1 => "Q4_1",
            GgmlType::Q5_0 => "Q5_0",
            GgmlType::Q5_1 => "Q5_1",
            GgmlType::Q8_0 => "Q8_0",
            GgmlType::Q4K => "Q4_K",
            GgmlType::Q5K => "Q5_K",
            GgmlType::Q6K => "Q6_K",
        }
    }

    /// The block format the compiler decodes in place, for the types kernels read directly
    /// (the others are converted to f32 when a model is loaded).
    pub fn quant_format(self) -> Option<kiln_ir::QuantFormat> {
        use kiln_ir::QuantFormat as Q;
        match self {
            GgmlType::Q8_0 => Some(Q::Q8_0),
            GgmlType::Q4_0 => Some(Q::Q4_0),
            GgmlType::Q4_1 => Some(Q::Q4_1),
            GgmlType::Q5_0 => Some(Q::Q5_0),
            GgmlType::Q5_1 => Some(Q::Q5_1),
            GgmlType::Q4K => Some(Q::Q4K),
            GgmlType::Q5K => Some(Q::Q5K),
            GgmlType::Q6K => Some(Q::Q6K),
            GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 => None,
        }
    }

    /// Elements per block (1 for plain floats).
    pub fn block_elems(self) -> usize {
        match self {
            GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 => 1,
            GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q5_0 | GgmlType::Q5_1 | GgmlType::Q8_0 => {
                32
            }
            GgmlType::Q4K | GgmlType::Q5K | GgmlType::Q6K => QK_K,
        }
    }

    /// Bytes per block.
    pub fn block_bytes(self) -> usize {
        match self {
            GgmlType::F32 => 4,
            GgmlType::F16 | GgmlType::BF16 => 2,
            GgmlType::Q4_0 => 18,
            GgmlType::Q4_1 => 20,
            GgmlType::Q5_0 => 22,
            GgmlType::Q5_1 => 24,
            GgmlType::Q8_0 => 34,
            GgmlType::Q4K => 144,
            GgmlType::Q5K => 176,
            GgmlType::Q6K => 210,
        }
    }

    /// Bytes of a row of `n` elements, if `n` is a whole number of blocks and the bytes
    /// fit in a u64.
    pub fn row_bytes(self, n: u64) -> Option<u64> {
        let b = self.block_elems() as u64;
        n.is_multiple_of(b)
            .then(|| (n / b).checked_mul(self.block_bytes() as u64))
            .flatten()
    }
}

impl std::fmt::Display for GgmlType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
