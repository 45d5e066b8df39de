//! Which SIMD level this CPU runs, detected once at run time.
//!
//! One binary runs on any x86-64 (no global `target-cpu`): each SIMD kernel
//! carries `#[target_feature]` and is called only when [`level`] says the
//! CPU has those features. On aarch64 the level is NEON (part of every
//! aarch64 CPU). `SUBLLM_CPU=scalar|neon|avx2|avx512` picks a level (for
//! tests and comparisons); asking for a level this CPU lacks gives the best
//! one it has.

use std::sync::OnceLock;

/// A kernel level, ordered: on x86-64 a higher level may use everything
/// below it (NEON, an aarch64 level, sorts below AVX2 so that no x86 test
/// `level >= Avx2` holds for it; it is never available on x86-64).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Portable Rust, the reference every SIMD kernel is tested against.
    Scalar,
    /// aarch64 Advanced SIMD.
    Neon,
    /// x86-64 AVX2 + FMA + F16C.
    Avx2,
    /// x86-64 AVX-512 F/BW/VL/DQ with VNNI (on top of AVX2).
    Avx512,
}

impl Level {
    pub fn name(self) -> &'static str {
        match self {
            Level::Scalar => "scalar",
            Level::Neon => "neon",
            Level::Avx2 => "avx2",
            Level::Avx512 => "avx512",
        }
    }

    pub fn parse(s: &str) -> Option<Level> {
        match s.trim().to_ascii_lowercase().as_str() {
            "scalar" => Some(Level::Scalar),
            "neon" => Some(Level::Neon),
            "avx2" => Some(Level::Avx2),
            "avx512" => Some(Level::Avx512),
            _ => None,
        }
    }
}

/// The best level this CPU supports.
pub fn detected() -> Level {
    #[cfg(target_arch = "x86_64")]
    {
        let avx2 = std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma")
            && std::arch::is_x86_feature_detected!("f16c");
        let avx512 = avx2
            && std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512vl")
            && std::arch::is_x86_feature_detected!("avx512dq")
            && std::arch::is_x86_feature_detected!("avx512vnni");
        if avx512 {
            return Level::Avx512;
        }
        if avx2 {
            return Level::Avx2;
        }
    }
    #[cfg(target_arch = "aarch64")]
    if std::arch::is_aarch64_feature_detected!("neon") {
        return Level::Neon;
    }
    Level::Scalar
}

/// The level kernels use: the detected one, lowered by `SUBLLM_CPU`.
pub fn level() -> Level {
    static LEVEL: OnceLock<Level> = OnceLock::new();
    *LEVEL.get_or_init(|| {
        let best = detected();
        match std::env::var("SUBLLM_CPU")
            .ok()
            .as_deref()
            .map(Level::parse)
        {
            Some(Some(asked)) if available().contains(&asked) => asked,
            _ => best,
        }
    })
}

/// Every level this machine can run, lowest first (what tests compare).
pub fn available() -> Vec<Level> {
    let arch: &[Level] = if cfg!(target_arch = "x86_64") {
        &[Level::Avx2, Level::Avx512]
    } else if cfg!(target_arch = "aarch64") {
        &[Level::Neon]
    } else {
        &[]
    };
    std::iter::once(Level::Scalar)
        .chain(arch.iter().copied().filter(|&l| l <= detected()))
        .collect()
}
