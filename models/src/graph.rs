//! The compute graph an architecture builds once per model and the engine's
//! executor runs for every batch of tokens.
//!
//! Values are matrices of a runtime number of rows (the tokens that reach
//! that point), position vectors, and row selections made by subsamplers.
//! Row counts are data-dependent (how many tokens each region keeps), so the
//! graph fixes only widths; the executor handles whatever rows arrive,
//! including none.

/// A value slot in the executor's environment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct V(pub usize);

/// One operation. Weight operands are GGUF tensor names.
#[derive(Clone, Debug, PartialEq)]
pub enum Node {
    /// `out[t] = table[tokens[t]]` (the graph's token input). `table` is [n_embd, n_vocab].
    Embed {
        out: V,
        table: String,
        n_embd: usize,
    },
    /// `out = x / sqrt(mean(x^2) + eps) * gain`.
    RmsNorm {
        out: V,
        x: V,
        gain: String,
        width: usize,
    },
    /// `out = x W^T (+ bias)`; W is [n_in, n_out] in ggml order.
    Linear {
        out: V,
        x: V,
        w: String,
        bias: Option<String>,
        n_in: usize,
        n_out: usize,
    },
    /// Rotates adjacent pairs of each head of `x` in place by position `pos`.
    Rope { x: V, pos: V, head_dim: usize },
    /// Causal attention of the rows of q over block `layer`'s cache, after
    /// appending k and v (whose rows are at positions `pos`) to it.
    Attention {
        out: V,
        q: V,
        k: V,
        v: V,
        pos: V,
        layer: usize,
    },
    /// `out = silu(gate) * up`.
    SwiGlu { out: V, gate: V, up: V },
    /// `out = a + b`.
    Add { out: V, a: V, b: V },
    /// Scores `x` with `score` ([n_embd]); keeps rows scoring > 0 (weights
    /// clamp(s, 0, 1)); gathers them and their positions.
    Subsample {
        region: usize,
        level: usize,
        x: V,
        pos: V,
        rope_pos: V,
        score: String,
        width: usize,
        out_x: V,
        out_pos: V,
        out_rope_pos: V,
        sel: V,
    },
    /// `z = outer`, and for kept row t = sel[j]:
    /// `z[t] = outer[t] + a_j * bypass * (inner[j] - outer[t])`.
    Upsample {
        out: V,
        outer: V,
        inner: V,
        sel: V,
        bypass: String,
        width: usize,
    },
    /// Final norm and output projection of the rows asked for.
    Logits {
        out: V,
        x: V,
        norm: String,
        w: String,
        n_embd: usize,
        n_vocab: usize,
    },
}

impl Node {
    /// The weights this node reads, by name: its matrix and its vector
    /// (each node reads at most one of each).
    pub fn weight_names(&self) -> (Option<&str>, Option<&str>) {
        match self {
            Node::Embed { table, .. } => (Some(table), None),
            Node::RmsNorm { gain, .. } => (None, Some(gain)),
            Node::Linear { w, bias, .. } => (Some(w), bias.as_deref()),
            Node::Subsample { score, .. } => (None, Some(score)),
            Node::Upsample { bypass, .. } => (None, Some(bypass)),
            Node::Logits { norm, w, .. } => (Some(w), Some(norm)),
            Node::Rope { .. } | Node::Attention { .. } | Node::SwiGlu { .. } | Node::Add { .. } => {
                (None, None)
            }
        }
    }
}

/// A whole forward pass.
#[derive(Clone, Debug)]
pub struct Graph {
    pub nodes: Vec<Node>,
    pub n_values: usize,
    /// Absolute positions of the input tokens (set by the executor).
    pub input_pos: V,
    /// Positions RoPE uses for the input tokens (equal to `input_pos`).
    pub input_rope_pos: V,
    pub logits: V,
}

/// Allocates value slots while building.
#[derive(Default)]
pub struct Builder {
    pub nodes: Vec<Node>,
    n: usize,
}

impl Builder {
    pub fn value(&mut self) -> V {
        self.n += 1;
        V(self.n - 1)
    }
    pub fn push(&mut self, n: Node) {
        self.nodes.push(n);
    }
    pub fn finish(self, input_pos: V, input_rope_pos: V, logits: V) -> Graph {
        Graph {
            nodes: self.nodes,
            n_values: self.n,
            input_pos,
            input_rope_pos,
            logits,
        }
    }
}

impl Graph {
    /// Every weight the graph reads, with its shape in ggml order
    /// (`usize::MAX` where any size is accepted: the embedding's row count).
    pub fn weights(&self) -> Vec<(String, Vec<usize>)> {
        let mut out: Vec<(String, Vec<usize>)> = Vec::new();
        let mut add = |name: &String, dims: Vec<usize>| {
            if !out.iter().any(|(n, _)| n == name) {
                out.push((name.clone(), dims));
            }
        };
        for n in &self.nodes {
            match n {
                Node::Embed { table, n_embd, .. } => add(table, vec![*n_embd, usize::MAX]),
                Node::RmsNorm { gain, width, .. } => add(gain, vec![*width]),
                Node::Linear {
                    w,
                    bias,
                    n_in,
                    n_out,
                    ..
                } => {
                    add(w, vec![*n_in, *n_out]);
                    if let Some(b) = bias {
                        add(b, vec![*n_out]);
                    }
                }
                Node::Subsample { score, width, .. } => add(score, vec![*width]),
                Node::Upsample { bypass, width, .. } => add(bypass, vec![*width]),
                Node::Logits {
                    norm,
                    w,
                    n_embd,
                    n_vocab,
                    ..
                } => {
                    add(norm, vec![*n_embd]);
                    add(w, vec![*n_embd, *n_vocab]);
                }
                _ => {}
            }
        }
        out
    }
}
