//! Command-line arguments the tools share (feature `cli`).

/// `--subsample-threshold T`, as `subllm-cli` and `subllm-perplexity` take
/// it (`subllm-bench` takes a comma list of its own).
#[derive(clap::Args, Debug, Clone, Copy)]
pub struct SubsampleArgs {
    /// SUBLLM: keep a token at a level iff its score is above T (0: the
    /// trained behaviour; lower keeps more, higher fewer).
    #[arg(
        long = "subsample-threshold",
        value_name = "T",
        default_value_t = 0.0,
        allow_negative_numbers = true
    )]
    pub subsample_threshold: f32,
}

impl SubsampleArgs {
    /// The threshold, refused unless it is a finite number.
    pub fn threshold(&self) -> Result<f32, String> {
        let t = self.subsample_threshold;
        if t.is_finite() {
            Ok(t)
        } else {
            Err(format!(
                "--subsample-threshold must be a finite number, got {t}"
            ))
        }
    }
}
