//! Subnormal floats flushed to zero on the threads that run CPU kernels.
//!
//! An x86 core takes a microcode assist for every multiply or add with a subnormal operand
//! or result, some hundred cycles where the instruction takes a few. LLM attention makes
//! such values: softmax probabilities of positions far below the row's maximum are
//! `exp(-100)` and smaller, below f32's smallest normal (1.2e-38). On the 1B llama's
//! 128-token prefill, probabilities x V took 10.8 ms per layer with them and 0.25-0.36 ms
//! with every one of them zero (docs/perf.md). Flushing them changes a result by less than
//! 1.2e-38 per term, far under any bound kiln's outputs are held to, so the CPU runtime's
//! threads run with flush-to-zero and denormals-are-zero set (x86 MXCSR FTZ and DAZ; the
//! FZ bit of AArch64's FPCR, which covers both), as inference libraries commonly do.

/// Sets this thread's floating-point control to flush subnormal inputs and results to zero.
pub fn flush_to_zero() {
    #[cfg(target_arch = "x86_64")]
    {
        // FTZ (bit 15): subnormal results become zero; DAZ (bit 6): subnormal inputs read
        // as zero.
        const FTZ_DAZ: u32 = (1 << 15) | (1 << 6);
        let mut csr: u32 = 0;
        // SAFETY: stmxcsr/ldmxcsr read and write this thread's SSE control register only;
        // the bits set change how subnormals round, nothing about memory.
        unsafe {
            std::arch::asm!("stmxcsr [{}]", in(reg) &mut csr, options(nostack));
            csr |= FTZ_DAZ;
            std::arch::asm!("ldmxcsr [{}]", in(reg) &csr, options(nostack, readonly));
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        // FZ (bit 24): subnormal inputs and results are zero.
        let mut fpcr: u64;
        // SAFETY: reads and writes this thread's floating-point control register only.
        unsafe {
            std::arch::asm!("mrs {}, fpcr", out(reg) fpcr, options(nomem, nostack));
            fpcr |= 1 << 24;
            std::arch::asm!("msr fpcr, {}", in(reg) fpcr, options(nomem, nostack));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether this thread flushes subnormals: a subnormal times one is zero.
    fn flushes() -> bool {
        let tiny = std::hint::black_box(1e-40f32);
        std::hint::black_box(tiny * std::hint::black_box(1.0f32)) == 0.0
    }

    #[test]
    fn a_flushing_thread_reads_subnormals_as_zero() {
        let before = std::thread::spawn(flushes).join().unwrap();
        assert!(!before, "a fresh thread already flushes subnormals");
        let after = std::thread::spawn(|| {
            flush_to_zero();
            flushes()
        })
        .join()
        .unwrap();
        assert!(after || !cfg!(any(target_arch = "x86_64", target_arch = "aarch64")));
    }
}
