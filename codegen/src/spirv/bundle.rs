//! The code section of a `vulkan:` variant: SPIR-V modules of the same kernels, each tagged
//! with the device features it needs, richest first (the executor loads the first its
//! device has everything for: `kiln_runtime::vulkan::bundle` reads this format).
//!
//! Layout, little-endian: `b"KSPV"`, `u32` count, then per module `u32` needs (bit set of
//! the constants below) and `u32` length in bytes, then the modules one after another.

/// The device runs subgroup arithmetic (`OpGroupNonUniformFAdd` ...) in compute shaders.
pub const SUBGROUP_ARITHMETIC: u32 = 1;

pub const MAGIC: &[u8; 4] = b"KSPV";

/// The bundle of `modules` (`(needs, words)`, richest first).
pub fn write(modules: &[(u32, Vec<u32>)]) -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    out.extend((modules.len() as u32).to_le_bytes());
    for (needs, words) in modules {
        out.extend(needs.to_le_bytes());
        out.extend((4 * words.len() as u32).to_le_bytes());
    }
    for (_, words) in modules {
        out.extend(words.iter().flat_map(|w| w.to_le_bytes()));
    }
    out
}

/// The modules of a bundle `write` made (tests read them back; the runtime has its own,
/// checking reader).
#[cfg(test)]
pub fn read(bytes: &[u8]) -> Vec<(u32, Vec<u8>)> {
    let word = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap());
    assert_eq!(&bytes[..4], MAGIC);
    let n = word(4) as usize;
    let mut at = 8 + 8 * n;
    (0..n)
        .map(|i| {
            let len = word(12 + 8 * i) as usize;
            let m = bytes[at..at + len].to_vec();
            at += len;
            (word(8 + 8 * i), m)
        })
        .collect()
}
