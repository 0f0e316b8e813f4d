//! Reading a `vulkan:` variant's code section: SPIR-V modules of the same kernels, each
//! tagged with the device features it needs, richest first (written by
//! `kiln_codegen::spirv::bundle`). A bare module is refused: artifacts held those before
//! launch parameters moved from push constants to binding 0, so its bindings would not match.
//!
//! Layout, little-endian: `b"KSPV"`, `u32` count, then per module `u32` needs and `u32`
//! length in bytes, then the modules one after another.

/// The device runs subgroup arithmetic in compute shaders.
pub const SUBGROUP_ARITHMETIC: u32 = 1;

const MAGIC: &[u8; 4] = b"KSPV";
const SPIRV_MAGIC: u32 = 0x0723_0203;
/// More modules than this is a corrupt section, not a bundle.
const MAX_MODULES: usize = 16;

/// Every module of `code` with what it needs, in the bundle's order.
pub fn modules(code: &[u8]) -> Result<Vec<(u32, &[u8])>, String> {
    let word = |at: usize| -> Option<u32> {
        code.get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    if word(0) == Some(SPIRV_MAGIC) {
        return Err(
            "a bare SPIR-V module: this artifact was compiled by an older kiln, \
                    whose Vulkan kernels take their parameters as push constants; \
                    compile the model again"
                .into(),
        );
    }
    if code.get(..4) != Some(&MAGIC[..]) {
        return Err(
            "the Vulkan code section is neither a SPIR-V module nor a bundle of them".into(),
        );
    }
    let n = word(4).ok_or("truncated bundle header")? as usize;
    if n == 0 || n > MAX_MODULES {
        return Err(format!("a bundle of {n} SPIR-V modules"));
    }
    let mut at = 8 + 8 * n;
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let (needs, len) = (word(8 + 8 * i), word(12 + 8 * i));
        let (needs, len) = needs.zip(len).ok_or("truncated bundle header")?;
        let len = len as usize;
        let module = at
            .checked_add(len)
            .and_then(|end| code.get(at..end))
            .filter(|m| len.is_multiple_of(4) && !m.is_empty())
            .ok_or_else(|| format!("module {i} of the bundle lies outside the section"))?;
        out.push((needs, module));
        at += len;
    }
    Ok(out)
}

/// The first module of `code` that a device with the features `has` can run, and what
/// it needs.
pub fn pick(code: &[u8], has: u32) -> Result<(u32, &[u8]), String> {
    let all = modules(code)?;
    let needs: Vec<u32> = all.iter().map(|(n, _)| *n).collect();
    all.into_iter().find(|(n, _)| n & !has == 0).ok_or_else(|| {
        format!("every module of the bundle needs device features it lacks ({needs:?})")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bundle(modules: &[(u32, &[u8])]) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        out.extend((modules.len() as u32).to_le_bytes());
        for (needs, m) in modules {
            out.extend(needs.to_le_bytes());
            out.extend((m.len() as u32).to_le_bytes());
        }
        for (_, m) in modules {
            out.extend(*m);
        }
        out
    }

    #[test]
    fn the_richest_module_the_device_can_run_is_picked() {
        let (rich, plain) = ([1u8; 8], [2u8; 4]);
        let code = bundle(&[(SUBGROUP_ARITHMETIC, &rich), (0, &plain)]);
        assert_eq!(pick(&code, SUBGROUP_ARITHMETIC).unwrap(), (1, &rich[..]));
        assert_eq!(pick(&code, 0).unwrap(), (0, &plain[..]));
        let only_rich = bundle(&[(SUBGROUP_ARITHMETIC, &rich)]);
        assert!(pick(&only_rich, 0).unwrap_err().contains("lacks"));
        // A bare module comes from an older kiln, whose kernels bind differently.
        let bare = SPIRV_MAGIC.to_le_bytes();
        assert!(pick(&bare, 0).unwrap_err().contains("older kiln"));
    }

    #[test]
    fn corrupt_bundles_are_refused() {
        let good = bundle(&[(0, &[7u8; 8])]);
        assert!(modules(&good[..good.len() - 4])
            .unwrap_err()
            .contains("outside"));
        assert!(modules(&good[..10]).unwrap_err().contains("truncated"));
        assert!(modules(b"nope").unwrap_err().contains("neither"));
        let mut huge = good.clone();
        huge[4..8].copy_from_slice(&1000u32.to_le_bytes());
        assert!(modules(&huge).unwrap_err().contains("1000"));
        let mut long = good.clone();
        long[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(modules(&long).unwrap_err().contains("outside"));
    }
}
