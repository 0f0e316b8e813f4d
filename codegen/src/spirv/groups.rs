//! Which narrow reads of a read-only binding share one 16-byte load.
//!
//! A binding is an array of words, so a scalar f32 or a word of bytes is one 4-byte load,
//! and drivers do not merge neighbouring loads into wider ones: nothing tells them the
//! first is 16-byte aligned. Where `kernel::align` places two or more distinct words of a
//! kernel's reads in one aligned 16-byte group (`Alignment::in_group`: the same start
//! expression, different literal offsets), each of those reads loads the whole group and
//! takes its word out, and the loads of one group are one instruction (the builder numbers
//! loads of read-only bindings, `Spv::load_invariant`). A Q4_K block's 16-byte header and
//! each lane's four words of quants are then one load each; so are the four neighbouring
//! activations a fused down projection reads lane by lane around its `exp`.
//!
//! A word alone in its group keeps its own 4-byte load (a 16-byte one would hold three
//! registers for nothing).

use kiln_compiler::kernel::align::{all_loads, Alignment};
use kiln_compiler::kernel::{Buf, Expr, Kernel};
use kiln_ir::DType;
use std::collections::{HashMap, HashSet};

/// Bytes of one group, the widest load of a binding's views.
pub const GROUP_BYTES: u64 = 16;

/// The groups of each argument that two or more distinct words of the kernel's reads fall in.
#[derive(Default)]
pub struct Groups {
    shared: HashSet<(u32, String)>,
}

impl Groups {
    pub fn of(k: &Kernel, align: &Alignment) -> Groups {
        let mut words: HashMap<(u32, String), HashSet<u64>> = HashMap::new();
        for (buf, lanes, index) in all_loads(k) {
            let Buf::Arg(a) = buf else { continue };
            let arg = &k.args[a as usize];
            if arg.writes {
                continue;
            }
            let Some((start, byte)) = in_group(align, arg.dtype, index, lanes) else {
                continue;
            };
            words.entry((a, key(&start))).or_default().insert(byte / 4);
        }
        let shared = words
            .into_iter()
            .filter(|(_, w)| w.len() > 1)
            .map(|(g, _)| g)
            .collect();
        Groups { shared }
    }

    /// Whether argument `arg` reads any group through 16-byte loads (its binding then needs
    /// the 4-word view).
    pub fn any(&self, arg: u32) -> bool {
        self.shared.iter().any(|(a, _)| *a == arg)
    }

    /// The start of the shared group of argument `arg` (of `dtype`) that element `index`
    /// lies in, and the element's first byte in the group; `None` where it takes its own
    /// load.
    pub fn find(
        &self,
        align: &Alignment,
        arg: u32,
        dtype: DType,
        index: &Expr,
    ) -> Option<(Expr, u64)> {
        let (start, byte) = in_group(align, dtype, index, 1)?;
        self.shared
            .contains(&(arg, key(&start)))
            .then_some((start, byte))
    }
}

/// For a read that fits one word (an f32 or i32, or up to four bytes of a byte buffer not
/// straddling two words) in an aligned group: the group's start (an element index) and the
/// read's first byte in it.
fn in_group(align: &Alignment, dtype: DType, index: &Expr, lanes: u8) -> Option<(Expr, u64)> {
    let size = dtype.size_bytes() as u64;
    let per_group = match dtype {
        DType::U8 if lanes <= 4 => GROUP_BYTES,
        DType::F32 | DType::I32 if lanes == 1 => GROUP_BYTES / size,
        _ => return None,
    };
    let (start, offset) = align.in_group(index, per_group)?;
    let byte = offset * size;
    (byte % 4 + lanes as u64 * size <= 4).then_some((start, byte))
}

/// Group starts are compared as written: the loads of one group build the same expression
/// (`Alignment::in_group`).
fn key(start: &Expr) -> String {
    format!("{start:?}")
}
