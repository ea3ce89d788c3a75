//! The arithmetic ceilings of one core, from register-only loops: AVX-512 FMA,
//! AVX-512-BF16's `VDPBF16PS`, and AMX's `TDPBF16PS`, each with enough
//! independent accumulators to hide its latency. They say what the kernels
//! could reach on this CPU, and which bf16 instruction is worth using:
//!
//! `cargo run --release -p tessera-kernels --example ceilings`
//!
//! Prints one line per instruction this CPU has (nothing else on x86-64 CPUs
//! without AVX-512, or on other architectures).

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
mod x86 {
    use std::arch::asm;
    use std::arch::x86_64::*;
    use std::time::Instant;

    /// Independent accumulators per loop (of 32 vector registers).
    const CHAINS: usize = 16;
    const ROUNDS: usize = 20_000_000;

    /// Times `work` and prints its rate of `flops`.
    fn measure(name: &str, flops: usize, work: impl FnOnce()) {
        let started = Instant::now();
        work();
        let seconds = started.elapsed().as_secs_f64();
        println!(
            "{name}: {:.1} GFLOP/s on one core",
            flops as f64 / seconds / 1e9
        );
    }

    /// The sum of every lane of every chain, folded in order (a closure here
    /// made the compiler shuffle the chains between registers every round).
    #[target_feature(enable = "avx512f")]
    fn total(sums: [__m512; CHAINS]) -> f32 {
        let mut total = _mm512_setzero_ps();
        for sum in sums {
            total = _mm512_add_ps(total, sum);
        }
        _mm512_reduce_add_ps(total)
    }

    /// `CHAINS` chains of `_mm512_fmadd_ps`: 32 flops per instruction.
    #[target_feature(enable = "avx512f")]
    fn fma(value: f32) -> f32 {
        let value = _mm512_set1_ps(value);
        let mut sums = [_mm512_setzero_ps(); CHAINS];
        for _ in 0..ROUNDS {
            for sum in &mut sums {
                *sum = _mm512_fmadd_ps(value, value, *sum);
            }
        }
        total(sums)
    }

    /// `CHAINS` chains of `_mm512_dpbf16_ps`: 64 flops per instruction.
    #[target_feature(enable = "avx512f,avx512bf16")]
    fn dot_bf16(value: f32) -> f32 {
        let value = _mm512_set1_ps(value);
        let pairs = _mm512_cvtne2ps_pbh(value, value);
        let mut sums = [_mm512_setzero_ps(); CHAINS];
        for _ in 0..ROUNDS {
            for sum in &mut sums {
                *sum = _mm512_dpbf16_ps(*sum, pairs, pairs);
            }
        }
        total(sums)
    }

    /// Four independent 16 × 16 tiles of `TDPBF16PS` per round, 16 × 16 × 32
    /// multiply-adds each.
    ///
    /// # Safety
    /// `Kernels::with_amx` returned `Some` (the CPU has AMX-BF16 and Linux
    /// granted this process its tile state); `rounds ≥ 1`.
    unsafe fn amx_bf16(rounds: usize) {
        let mut config = [0u8; 64];
        config[0] = 1;
        for tile in 0..8 {
            config[16 + 2 * tile] = 64;
            config[48 + tile] = 16;
        }
        let operand = vec![0x3F80u16; 16 * 32]; // bf16 1.0
        // SAFETY: AMX runs and its state is granted (the contract); the
        // configuration is valid palette 1; the loads read the 1 KiB operand;
        // the loop runs `rounds ≥ 1` times.
        unsafe {
            asm!(
                "ldtilecfg [{config}]",
                "tileloadd tmm4, [{operand} + {stride}*1]",
                "tileloadd tmm5, [{operand} + {stride}*1]",
                "tileloadd tmm6, [{operand} + {stride}*1]",
                "tileloadd tmm7, [{operand} + {stride}*1]",
                "tilezero tmm0",
                "tilezero tmm1",
                "tilezero tmm2",
                "tilezero tmm3",
                "2:",
                "tdpbf16ps tmm0, tmm4, tmm6",
                "tdpbf16ps tmm1, tmm4, tmm7",
                "tdpbf16ps tmm2, tmm5, tmm6",
                "tdpbf16ps tmm3, tmm5, tmm7",
                "dec {rounds}",
                "jnz 2b",
                "tilerelease",
                config = in(reg) config.as_ptr(),
                operand = in(reg) operand.as_ptr(),
                stride = in(reg) 64usize,
                rounds = inout(reg) rounds => _,
                options(nostack),
            );
        }
    }

    pub fn main() {
        if !std::arch::is_x86_feature_detected!("avx512f") {
            return;
        }
        let value = 1e-9;
        measure("avx512f vfmadd231ps (f32)", ROUNDS * CHAINS * 32, || {
            // SAFETY: AVX-512F was detected above.
            std::hint::black_box(unsafe { fma(value) });
        });
        if std::arch::is_x86_feature_detected!("avx512bf16") {
            measure("avx512bf16 vdpbf16ps (bf16)", ROUNDS * CHAINS * 64, || {
                // SAFETY: AVX-512-BF16 was detected above.
                std::hint::black_box(unsafe { dot_bf16(value) });
            });
        }
        if tessera_kernels::Kernels::detect().with_amx().is_some() {
            let rounds = ROUNDS / 4;
            measure(
                "amx-bf16 tdpbf16ps (bf16)",
                rounds * 4 * 16 * 16 * 32 * 2,
                // SAFETY: with_amx said AMX runs here; rounds is 5,000,000.
                || unsafe { amx_bf16(rounds) },
            );
        }
    }
}

fn main() {
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    x86::main();
}
