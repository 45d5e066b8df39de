//! The decoder graph shared by Llama and SUBLLM: pre-norm blocks with RoPE
//! attention (GQA allowed) and SwiGLU, plus SUBLLM's subsample / upsample +
//! bypass around regions (inference doc, section 12). A Llama is the case
//! with no regions.

use crate::graph::{Builder, Graph, Node, V};
use crate::hparams::HParams;
use crate::structure::Op;

fn block(b: &mut Builder, hp: &HParams, layer: usize, x: V, rope_pos: V) -> V {
    let (d, kv) = (hp.n_embd, hp.kv_width());
    let w = |s: &str| format!("blk.{layer}.{s}");
    let h = b.value();
    b.push(Node::RmsNorm {
        out: h,
        x,
        gain: w("attn_norm.weight"),
        width: d,
    });
    let (q, k, v) = (b.value(), b.value(), b.value());
    let bias = |s: &str| hp.qk_bias.then(|| w(s));
    b.push(Node::Linear {
        out: q,
        x: h,
        w: w("attn_q.weight"),
        bias: bias("attn_q.bias"),
        n_in: d,
        n_out: hp.n_head * hp.head_dim,
    });
    b.push(Node::Linear {
        out: k,
        x: h,
        w: w("attn_k.weight"),
        bias: bias("attn_k.bias"),
        n_in: d,
        n_out: kv,
    });
    b.push(Node::Linear {
        out: v,
        x: h,
        w: w("attn_v.weight"),
        bias: None,
        n_in: d,
        n_out: kv,
    });
    b.push(Node::Rope {
        x: q,
        pos: rope_pos,
        head_dim: hp.head_dim,
    });
    b.push(Node::Rope {
        x: k,
        pos: rope_pos,
        head_dim: hp.head_dim,
    });
    let att = b.value();
    b.push(Node::Attention {
        out: att,
        q,
        k,
        v,
        pos: rope_pos,
        layer,
    });
    let o = b.value();
    b.push(Node::Linear {
        out: o,
        x: att,
        w: w("attn_output.weight"),
        bias: None,
        n_in: hp.n_head * hp.head_dim,
        n_out: d,
    });
    let x1 = b.value();
    b.push(Node::Add {
        out: x1,
        a: x,
        b: o,
    });
    let h2 = b.value();
    b.push(Node::RmsNorm {
        out: h2,
        x: x1,
        gain: w("ffn_norm.weight"),
        width: d,
    });
    let (g, u) = (b.value(), b.value());
    b.push(Node::Linear {
        out: g,
        x: h2,
        w: w("ffn_gate.weight"),
        bias: None,
        n_in: d,
        n_out: hp.n_ff,
    });
    b.push(Node::Linear {
        out: u,
        x: h2,
        w: w("ffn_up.weight"),
        bias: None,
        n_in: d,
        n_out: hp.n_ff,
    });
    let s = b.value();
    b.push(Node::SwiGlu {
        out: s,
        gate: g,
        up: u,
    });
    let down = b.value();
    b.push(Node::Linear {
        out: down,
        x: s,
        w: w("ffn_down.weight"),
        bias: None,
        n_in: hp.n_ff,
        n_out: d,
    });
    let x2 = b.value();
    b.push(Node::Add {
        out: x2,
        a: x1,
        b: down,
    });
    x2
}

/// Builds the forward graph for `hp`.
pub fn build(hp: &HParams) -> Graph {
    let mut b = Builder::default();
    let (pos, rope_pos) = (b.value(), b.value());
    let mut x = b.value();
    b.push(Node::Embed {
        out: x,
        table: "token_embd.weight".into(),
        n_embd: hp.n_embd,
    });
    // (x, pos, rope_pos, sel) saved at each open region
    let mut stack: Vec<(V, V, V, V)> = Vec::new();
    let (mut cur_pos, mut cur_rope) = (pos, rope_pos);
    for op in &hp.structure.ops {
        match *op {
            Op::Block { layer, .. } => x = block(&mut b, hp, layer, x, cur_rope),
            Op::Open { region, level } => {
                let (ox, op_, orp, sel) = (b.value(), b.value(), b.value(), b.value());
                b.push(Node::Subsample {
                    region,
                    level,
                    x,
                    pos: cur_pos,
                    rope_pos: cur_rope,
                    score: format!("sub.{region}.score.weight"),
                    width: hp.n_embd,
                    out_x: ox,
                    out_pos: op_,
                    out_rope_pos: orp,
                    sel,
                });
                stack.push((x, cur_pos, cur_rope, sel));
                (x, cur_pos, cur_rope) = (ox, op_, orp);
            }
            Op::Close { region, .. } => {
                let (outer, p, rp, sel) = stack.pop().expect("a validated structure is balanced");
                let z = b.value();
                b.push(Node::Upsample {
                    out: z,
                    outer,
                    inner: x,
                    sel,
                    bypass: format!("sub.{region}.bypass.weight"),
                    width: hp.n_embd,
                });
                (x, cur_pos, cur_rope) = (z, p, rp);
            }
        }
    }
    let logits = b.value();
    let w = if hp.tied_output {
        "token_embd.weight"
    } else {
        "output.weight"
    };
    b.push(Node::Logits {
        out: logits,
        x,
        norm: "output_norm.weight".into(),
        w: w.into(),
        n_embd: hp.n_embd,
        n_vocab: hp.n_vocab,
    });
    b.finish(pos, rope_pos, logits)
}
