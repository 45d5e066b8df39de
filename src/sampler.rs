//! Token sampling: repetition / presence / frequency penalties over a window
//! of recent tokens, then temperature with top-k, top-p and min-p, or greedy
//! (temperature 0). Seeded: the same seed gives the same tokens.

#[derive(Clone, Debug)]
pub struct SamplerParams {
    /// 0 means greedy.
    pub temperature: f32,
    /// 0 disables.
    pub top_k: usize,
    /// 1 disables.
    pub top_p: f32,
    /// 0 disables.
    pub min_p: f32,
    /// 1 disables.
    pub repeat_penalty: f32,
    pub presence_penalty: f32,
    pub frequency_penalty: f32,
    /// How many recent tokens the penalties look at.
    pub penalty_last_n: usize,
    pub seed: u64,
}

impl Default for SamplerParams {
    fn default() -> Self {
        SamplerParams {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            repeat_penalty: 1.0,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            penalty_last_n: 64,
            seed: 0x5eed,
        }
    }
}

impl SamplerParams {
    /// Checks every value against the range it means something in; the
    /// error names the flag's range (NaN and infinities are never valid).
    pub fn validate(&self) -> Result<(), String> {
        let check = |name: &str, v: f32, lo: f32, hi: f32, range: &str| {
            if v.is_finite() && v >= lo && v <= hi {
                Ok(())
            } else {
                Err(format!("{name} must be {range}, got {v}"))
            }
        };
        check(
            "temperature",
            self.temperature,
            0.0,
            1e6,
            "a number >= 0 (0: greedy)",
        )?;
        check("top-p", self.top_p, 0.0, 1.0, "in [0, 1] (1: off)")?;
        check("min-p", self.min_p, 0.0, 1.0, "in [0, 1] (0: off)")?;
        if !(self.repeat_penalty.is_finite()
            && self.repeat_penalty > 0.0
            && self.repeat_penalty <= 1e6)
        {
            return Err(format!(
                "repeat-penalty must be a number > 0 (1: off), got {}",
                self.repeat_penalty
            ));
        }
        check(
            "presence-penalty",
            self.presence_penalty,
            -1e6,
            1e6,
            "a finite number (0: off)",
        )?;
        check(
            "frequency-penalty",
            self.frequency_penalty,
            -1e6,
            1e6,
            "a finite number (0: off)",
        )?;
        Ok(())
    }

    pub fn greedy() -> Self {
        SamplerParams {
            temperature: 0.0,
            ..Default::default()
        }
    }
}

pub struct Sampler {
    pub params: SamplerParams,
    state: u64,
    history: Vec<u32>,
}

impl Sampler {
    pub fn new(params: SamplerParams) -> Sampler {
        // splitmix64 seeding so that nearby seeds give unrelated streams
        let state = crate::rng::SplitMix64::new(params.seed).next_u64() | 1;
        Sampler {
            params,
            state,
            history: Vec::new(),
        }
    }

    /// Records tokens that count for the penalties (prompt or generated).
    pub fn accept(&mut self, token: u32) {
        self.history.push(token);
    }

    fn uniform(&mut self) -> f64 {
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        (self.state >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Picks the next token from `logits` (which it may modify).
    pub fn sample(&mut self, logits: &mut [f32]) -> u32 {
        let p = self.params.clone();
        let window = &self.history[self.history.len().saturating_sub(p.penalty_last_n)..];
        if !window.is_empty()
            && (p.repeat_penalty != 1.0 || p.presence_penalty != 0.0 || p.frequency_penalty != 0.0)
        {
            let mut counts: std::collections::HashMap<u32, u32> = std::collections::HashMap::new();
            for &t in window {
                *counts.entry(t).or_default() += 1;
            }
            for (&t, &c) in &counts {
                if let Some(l) = logits.get_mut(t as usize) {
                    // as llama.cpp: divide positive logits, multiply negative ones
                    *l = if *l > 0.0 {
                        *l / p.repeat_penalty
                    } else {
                        *l * p.repeat_penalty
                    };
                    *l -= c as f32 * p.frequency_penalty + p.presence_penalty;
                }
            }
        }
        if p.temperature <= 0.0 {
            return argmax(logits);
        }
        // candidates sorted by logit, best first
        let mut cand: Vec<(u32, f32)> = logits
            .iter()
            .enumerate()
            .map(|(i, &l)| (i as u32, l))
            .collect();
        let k = if p.top_k == 0 {
            cand.len()
        } else {
            p.top_k.min(cand.len())
        };
        if k < cand.len() {
            cand.select_nth_unstable_by(k - 1, |a, b| b.1.total_cmp(&a.1));
            cand.truncate(k);
        }
        cand.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        let max = cand[0].1;
        let mut probs: Vec<f64> = cand
            .iter()
            .map(|c| (((c.1 - max) / p.temperature) as f64).exp())
            .collect();
        let sum: f64 = probs.iter().sum();
        probs.iter_mut().for_each(|x| *x /= sum);
        // min-p: drop tokens below min_p times the best probability
        let mut n = probs.len();
        if p.min_p > 0.0 {
            let cut = probs[0] * p.min_p as f64;
            n = probs.iter().take_while(|&&x| x >= cut).count().max(1);
        }
        // top-p: the smallest prefix whose mass reaches top_p
        if p.top_p < 1.0 {
            let mut acc = 0.0;
            let mut m = 0;
            for &x in &probs[..n] {
                acc += x;
                m += 1;
                if acc >= p.top_p as f64 {
                    break;
                }
            }
            n = m.max(1);
        }
        let total: f64 = probs[..n].iter().sum();
        let mut r = self.uniform() * total;
        for i in 0..n {
            r -= probs[i];
            if r <= 0.0 {
                return cand[i].0;
            }
        }
        cand[n - 1].0
    }
}

/// Index of the largest logit (the first at a tie).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &l) in logits.iter().enumerate() {
        if l > logits[best] {
            best = i;
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logits() -> Vec<f32> {
        vec![1.0, 3.0, 2.0, 0.5, 2.9]
    }

    #[test]
    fn greedy_takes_the_largest() {
        let mut s = Sampler::new(SamplerParams::greedy());
        assert_eq!(s.sample(&mut logits()), 1);
    }

    #[test]
    fn same_seed_same_tokens_and_filters_hold() {
        let params = SamplerParams {
            temperature: 1.0,
            top_k: 3,
            top_p: 1.0,
            min_p: 0.0,
            ..Default::default()
        };
        let run = |seed| {
            let mut s = Sampler::new(SamplerParams {
                seed,
                ..params.clone()
            });
            (0..200)
                .map(|_| s.sample(&mut logits()))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(1), run(1));
        assert_ne!(run(1), run(2));
        // top-k 3 keeps tokens 1, 4, 2 only, and each of them appears
        let r = run(3);
        assert!(r.iter().all(|t| [1, 4, 2].contains(t)));
        assert!([1, 4, 2].iter().all(|t| r.contains(t)));
        // frequencies follow softmax: token 1 (e^3) more often than 2 (e^2)
        let c = |t| r.iter().filter(|&&x| x == t).count();
        assert!(c(1) > c(2));
    }

    #[test]
    fn min_p_and_top_p_cut_the_tail() {
        // probabilities ~ e^3, e^2.9 dominate; min_p 0.5 keeps just those two
        let mut s = Sampler::new(SamplerParams {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.5,
            ..Default::default()
        });
        assert!((0..100).all(|_| [1, 4].contains(&s.sample(&mut logits()))));
        let mut s = Sampler::new(SamplerParams {
            temperature: 1.0,
            top_k: 0,
            top_p: 0.3,
            min_p: 0.0,
            ..Default::default()
        });
        assert!((0..100).all(|_| s.sample(&mut logits()) == 1));
    }

    #[test]
    fn penalties_push_repeated_tokens_down() {
        let mut s = Sampler::new(SamplerParams {
            repeat_penalty: 2.0,
            ..SamplerParams::greedy()
        });
        s.accept(1);
        // 3.0 / 2 = 1.5 < 2.9
        assert_eq!(s.sample(&mut logits()), 4);
        let mut s = Sampler::new(SamplerParams {
            presence_penalty: 0.5,
            frequency_penalty: 0.1,
            ..SamplerParams::greedy()
        });
        s.accept(1);
        s.accept(1);
        // 3.0 - 0.2 - 0.5 = 2.3 < 2.9
        assert_eq!(s.sample(&mut logits()), 4);
    }

    #[test]
    fn validate_rejects_nan_and_out_of_range_values() {
        assert!(SamplerParams::default().validate().is_ok());
        assert!(SamplerParams::greedy().validate().is_ok());
        let bad = [
            SamplerParams {
                temperature: f32::NAN,
                ..Default::default()
            },
            SamplerParams {
                temperature: -1.0,
                ..Default::default()
            },
            SamplerParams {
                top_p: f32::NAN,
                ..Default::default()
            },
            SamplerParams {
                top_p: 1.5,
                ..Default::default()
            },
            SamplerParams {
                min_p: f32::NAN,
                ..Default::default()
            },
            SamplerParams {
                repeat_penalty: 0.0,
                ..Default::default()
            },
            SamplerParams {
                repeat_penalty: -1.0,
                ..Default::default()
            },
            SamplerParams {
                repeat_penalty: f32::NAN,
                ..Default::default()
            },
            SamplerParams {
                presence_penalty: f32::NAN,
                ..Default::default()
            },
            SamplerParams {
                frequency_penalty: f32::INFINITY,
                ..Default::default()
            },
        ];
        for p in bad {
            let e = p.validate().unwrap_err();
            assert!(e.contains("must be"), "{e}");
        }
    }
}
