//! The kernel argument block a `hip:` launch passes (`HIP_LAUNCH_PARAM_BUFFER_POINTER`): the
//! GPU ABI's explicit arguments, 8 bytes each, little-endian, in order: each buffer's device
//! address, the address of the symbol values, and the address of the buffers' offsets (the
//! grid's point count for artifacts without `Variant::buffer_offsets`). The code objects'
//! metadata says the same (`.kernarg_segment_size` = 8 x (buffers + 2); the codegen tests
//! check it), and the kernels read no hidden arguments.

/// The argument block for `buffers` (device addresses), `dims` (device address) and `last`
/// (the offsets' address, or the point count).
pub fn pack(buffers: &[u64], dims: u64, last: i64) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 * (buffers.len() + 2));
    for b in buffers {
        out.extend_from_slice(&b.to_le_bytes());
    }
    out.extend_from_slice(&dims.to_le_bytes());
    out.extend_from_slice(&last.to_le_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_are_eight_byte_slots_in_abi_order() {
        let block = pack(&[0x1000, 0x2000_0000_0000], 0xdead_beef, 42);
        assert_eq!(block.len(), 8 * 4);
        let slot = |i: usize| u64::from_le_bytes(block[8 * i..8 * i + 8].try_into().unwrap());
        assert_eq!(slot(0), 0x1000);
        assert_eq!(slot(1), 0x2000_0000_0000);
        assert_eq!(slot(2), 0xdead_beef);
        assert_eq!(slot(3), 42);
        assert_eq!(pack(&[], 8, -1).len(), 16);
    }
}
