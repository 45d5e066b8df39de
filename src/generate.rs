//! Text generation over a session: prompt, sampling, streaming output and
//! the stopping rules (end of generation token, stop strings, a token
//! budget, the end of the context).

use crate::error::{Error, Result};
use crate::sampler::{Sampler, SamplerParams};
use crate::session::{Logits, Session};
use crate::tokenizer::Tokenizer;

#[derive(Clone, Debug)]
pub struct GenerateParams {
    /// Tokens to generate at most.
    pub n_predict: usize,
    pub sampler: SamplerParams,
    /// Generation stops when the text contains one of these (not included).
    pub stop: Vec<String>,
    /// Never sample end-of-generation tokens (llama.cpp's `--ignore-eos`),
    /// so only `n_predict`, a stop string or the context ends generation.
    pub ignore_eos: bool,
    /// When the context fills: `Some(n_keep)` shifts it (keeps the first
    /// `n_keep` tokens, forgets half of the rest, see [`Session::shift`]) and
    /// goes on; `None` stops with [`StopReason::ContextFull`].
    pub context_shift: Option<usize>,
}

impl Default for GenerateParams {
    fn default() -> Self {
        GenerateParams {
            n_predict: 256,
            sampler: SamplerParams::default(),
            stop: Vec::new(),
            ignore_eos: false,
            context_shift: None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// An end-of-generation token (EOS or end of turn).
    EndOfGeneration,
    StopString,
    /// `n_predict` tokens were generated.
    Length,
    /// The context is full (and no context shift was asked for).
    ContextFull,
    /// `on_text` returned an error of kind `Interrupted` (Ctrl-C, a
    /// callback that wants no more): what was generated so far is returned.
    Interrupted,
}

#[derive(Clone, Debug)]
pub struct Generated {
    pub tokens: Vec<u32>,
    pub text: String,
    pub stop: StopReason,
}

/// Turns token bytes into text pieces, holding back incomplete UTF-8 and
/// anything that may be the start of a stop string.
struct Streamer<'a> {
    bytes: Vec<u8>,
    pending: String,
    stops: &'a [String],
    text: String,
}

impl Streamer<'_> {
    /// Adds bytes; returns (text safe to show now, whether a stop string appeared).
    fn push(&mut self, b: &[u8]) -> (String, bool) {
        self.bytes.extend_from_slice(b);
        let valid = match std::str::from_utf8(&self.bytes) {
            Ok(s) => s.len(),
            Err(e) if e.error_len().is_some() => self.bytes.len(), // invalid, not merely incomplete
            Err(e) => e.valid_up_to(),
        };
        let done: Vec<u8> = self.bytes.drain(..valid).collect();
        self.pending.push_str(&String::from_utf8_lossy(&done));
        if let Some(p) = self
            .stops
            .iter()
            .filter_map(|s| self.pending.find(s.as_str()))
            .min()
        {
            let out = self.pending[..p].to_string();
            self.pending.clear();
            self.text.push_str(&out);
            return (out, true);
        }
        // keep the longest tail that could still grow into a stop string
        let mut keep = 0;
        for s in self.stops {
            for k in (1..s.len().min(self.pending.len() + 1)).rev() {
                if self.pending.is_char_boundary(self.pending.len() - k)
                    && s.starts_with(&self.pending[self.pending.len() - k..])
                {
                    keep = keep.max(k);
                    break;
                }
            }
        }
        let cut = self.pending.len() - keep;
        let out: String = self.pending.drain(..cut).collect();
        self.text.push_str(&out);
        (out, false)
    }

    fn finish(&mut self) -> String {
        let mut out = std::mem::take(&mut self.pending);
        out.push_str(&String::from_utf8_lossy(&std::mem::take(&mut self.bytes)));
        self.text.push_str(&out);
        out
    }
}

/// Evaluates `prompt` and generates after it, calling `on_text` with each
/// piece of text as it becomes final. An error from `on_text` (a closed
/// pipe, a full disk) stops generation at once and is returned as
/// [`Error::Io`]: nothing more is computed for a reader that is gone; an
/// error of kind `Interrupted` stops it too, but as a result
/// ([`StopReason::Interrupted`]) with what was generated.
pub fn generate(
    session: &mut Session,
    tokenizer: Option<&Tokenizer>,
    prompt: &[u32],
    params: &GenerateParams,
    on_text: &mut dyn FnMut(&str) -> std::io::Result<()>,
) -> Result<Generated> {
    if prompt.is_empty() {
        return Err(Error::Params("the prompt has no tokens".into()));
    }
    params.sampler.validate().map_err(Error::Params)?;
    let mut sampler = Sampler::new(params.sampler.clone());
    for &t in prompt {
        sampler.accept(t);
    }
    let mut logits = session.eval(prompt, Logits::Last)?;
    let mut streamer = Streamer {
        bytes: Vec::new(),
        pending: String::new(),
        stops: &params.stop,
        text: String::new(),
    };
    let mut tokens = Vec::new();
    let stop = loop {
        if tokens.len() >= params.n_predict {
            break StopReason::Length;
        }
        if params.ignore_eos {
            if let Some(tk) = tokenizer {
                for id in [tk.eos, tk.eot].into_iter().flatten() {
                    if let Some(l) = logits.get_mut(id as usize) {
                        *l = f32::NEG_INFINITY;
                    }
                }
            }
        }
        let t = sampler.sample(&mut logits);
        if tokenizer.is_some_and(|tk| tk.is_eog(t)) {
            break StopReason::EndOfGeneration;
        }
        tokens.push(t);
        sampler.accept(t);
        if let Some(tk) = tokenizer {
            let (piece, hit) = streamer.push(&tk.token_bytes(t, false));
            if !piece.is_empty() {
                match on_text(&piece) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {
                        break StopReason::Interrupted
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            if hit {
                break StopReason::StopString;
            }
        }
        if tokens.len() >= params.n_predict {
            break StopReason::Length;
        }
        if session.n_past() >= session.n_ctx() {
            match params.context_shift {
                // room for at least the next token after the shift
                Some(keep) if keep.min(session.n_past()) + 1 < session.n_ctx() => {
                    let keep = keep.min(session.n_past());
                    session.shift(keep, (session.n_past() - keep).div_ceil(2))?;
                }
                _ => break StopReason::ContextFull,
            }
        }
        logits = session.eval(&[t], Logits::Last)?;
    };
    let mut stop = stop;
    if stop != StopReason::StopString && stop != StopReason::Interrupted {
        let rest = streamer.finish();
        if !rest.is_empty() {
            match on_text(&rest) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {
                    stop = StopReason::Interrupted
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(Generated {
        tokens,
        text: streamer.text,
        stop,
    })
}

#[cfg(test)]
mod tests {
    use super::Streamer;

    #[test]
    fn streamer_holds_back_partial_utf8_and_stop_prefixes() {
        let stops = vec!["\nUser:".to_string()];
        let mut s = Streamer {
            bytes: vec![],
            pending: String::new(),
            stops: &stops,
            text: String::new(),
        };
        assert_eq!(s.push("é".as_bytes().split_at(1).0), (String::new(), false));
        assert_eq!(s.push(&"é".as_bytes()[1..]), ("é".to_string(), false));
        assert_eq!(s.push(b"ok\nUs"), ("ok".to_string(), false));
        assert_eq!(s.push(b"er: hi"), (String::new(), true));
        assert_eq!(s.text, "éok");
        let mut s = Streamer {
            bytes: vec![],
            pending: String::new(),
            stops: &stops,
            text: String::new(),
        };
        assert_eq!(s.push(b"a\nU"), ("a".to_string(), false));
        assert_eq!(s.push(b"x"), ("\nUx".to_string(), false));
    }
}
