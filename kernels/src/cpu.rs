//! Which SIMD level this CPU runs, detected once at run time.
//!
//! One binary runs on any x86-64 (no global `target-cpu`): each SIMD kernel
//! carries `#[target_feature]` and is called only when [`level`] says the
//! CPU has those features. `SUBLLM_CPU=scalar|avx2|avx512` lowers the level
//! (for tests and comparisons); asking for a level the CPU lacks falls back
//! to the best one it has.

use std::sync::OnceLock;

/// A kernel level, ordered: a higher level may use everything below it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Portable Rust, the reference every SIMD kernel is tested against.
    Scalar,
    /// x86-64 AVX2 + FMA + F16C.
    Avx2,
    /// x86-64 AVX-512 F/BW/VL/DQ with VNNI (on top of AVX2).
    Avx512,
}

impl Level {
    pub fn name(self) -> &'static str {
        match self {
            Level::Scalar => "scalar",
            Level::Avx2 => "avx2",
            Level::Avx512 => "avx512",
        }
    }

    pub fn parse(s: &str) -> Option<Level> {
        match s.trim().to_ascii_lowercase().as_str() {
            "scalar" => Some(Level::Scalar),
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
            Some(Some(asked)) => asked.min(best),
            _ => best,
        }
    })
}

/// Every level this machine can run, lowest first (what tests compare).
pub fn available() -> Vec<Level> {
    [Level::Scalar, Level::Avx2, Level::Avx512]
        .into_iter()
        .filter(|&l| l <= detected())
        .collect()
}
