//! Which kernel arguments take an offset from the runtime ([`BufferParam::offset`]): a
//! session may carry a model output (a decode's new keys and values land right after the
//! rows held so far), and a GPU runtime that replays its launches passes such an output as
//! its storage and the rows held as an offset, so the launch's arguments stay the same
//! from step to step (`kiln_runtime::buffer_offsets`). Every other argument's offset is
//! zero, and its kernel need not read it: each read is latency at the kernel's start.
//!
//! [`BufferParam::offset`]: crate::kernel::BufferParam::offset

use crate::lower::{BufferKind, Lowered};

/// Marks each kernel argument that some launch binds to a model output. Runs after
/// kernels are shared (`share::share_identical_kernels`), so a kernel that several launches
/// run is marked for all of them.
pub fn mark_offset_buffers(l: &mut Lowered) {
    for launch in &l.launches {
        for (i, &b) in launch.args.iter().enumerate() {
            if matches!(l.buffers[b].kind, BufferKind::Output(_)) {
                l.kernels[launch.kernel].args[i].offset = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kernel writing an output, and one reading it back, mark that argument; the
    /// kernels between temporaries mark none.
    #[test]
    fn arguments_bound_to_outputs_are_marked() {
        let mut l = crate::pipeline::finished_kernels(
            "kir 1
%x = input \"x\" f32[4,64]
%w = input \"w\" f32[64,64]
%a = matmul %x, %w transpose_a=false transpose_b=false
%b = silu %a
%c = matmul %b, %w transpose_a=false transpose_b=false
output \"h\" = %b
output \"y\" = %c
",
            "cuda:sm_90",
        );
        mark_offset_buffers(&mut l);
        let output = |b: usize| matches!(l.buffers[b].kind, BufferKind::Output(_));
        let mut marked = 0;
        for launch in &l.launches {
            let k = &l.kernels[launch.kernel];
            for (i, &b) in launch.args.iter().enumerate() {
                assert!(!output(b) || k.args[i].offset, "{}: argument {i}", k.name);
                marked += usize::from(k.args[i].offset);
            }
        }
        // `h` is written by one kernel and read by the next; `y` is written.
        assert!(marked >= 3, "{marked}");
        let unmarked = l.launches.iter().flat_map(|launch| {
            let k = &l.kernels[launch.kernel];
            launch.args.iter().zip(&k.args).filter(|(_, a)| !a.offset)
        });
        assert!(unmarked.into_iter().all(|(&b, _)| !output(b)));
        assert!(l.kernels.iter().any(|k| k.args.iter().any(|a| !a.offset)));
    }
}
