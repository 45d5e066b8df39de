//! SUBLLM's structure string, e.g. `TT(TT(T)T)T`: `T` is a transformer
//! block, `(` opens a subsampled region, `)` closes it (upsample + bypass).
//!
//! Numbering follows the official code: blocks in order, subsamplers in
//! order of opening (outermost first), bypasses in order of closing
//! (innermost first). Each region is identified here by its subsampler
//! index; [`Structure::bypass_of_region`] gives the bypass that closes it.

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StructureError {
    #[error("structure {0:?}: character {1:?} at {2} is not T, ( or )")]
    BadChar(String, char, usize),
    #[error("structure {0:?}: ')' at {1} closes no region")]
    UnmatchedClose(String, usize),
    #[error("structure {0:?}: {1} region(s) left open")]
    Unclosed(String, usize),
    #[error("structure {0:?} has {1} blocks (T), but the model has {2} layers")]
    BlockCount(String, usize, usize),
    #[error("structure is empty")]
    Empty,
}

/// One step of the forward pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Run block `layer`, which sits at nesting `level` (0 = outside all regions).
    Block { layer: usize, level: usize },
    /// Open region `region` (its subsampler's index); the inner level is `level`.
    Open { region: usize, level: usize },
    /// Close region `region` with bypass number `bypass`.
    Close { region: usize, bypass: usize },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Structure {
    pub text: String,
    pub ops: Vec<Op>,
    pub n_blocks: usize,
    pub n_regions: usize,
    /// Level of each block.
    pub block_level: Vec<usize>,
    /// For each region (subsampler index), the bypass index that closes it.
    pub bypass_of_region: Vec<usize>,
    /// Deepest level.
    pub depth: usize,
}

impl Structure {
    /// Parses `text` and checks it has `n_layers` blocks.
    pub fn parse(text: &str, n_layers: usize) -> Result<Structure, StructureError> {
        if text.is_empty() {
            return Err(StructureError::Empty);
        }
        let mut ops = Vec::new();
        let mut stack: Vec<usize> = Vec::new(); // open regions
        let (mut n_blocks, mut n_regions, mut n_closed) = (0, 0, 0);
        let mut block_level = Vec::new();
        let mut bypass_of_region = Vec::new();
        let mut depth = 0;
        for (i, c) in text.chars().enumerate() {
            match c {
                'T' => {
                    ops.push(Op::Block {
                        layer: n_blocks,
                        level: stack.len(),
                    });
                    block_level.push(stack.len());
                    n_blocks += 1;
                }
                '(' => {
                    stack.push(n_regions);
                    bypass_of_region.push(usize::MAX);
                    ops.push(Op::Open {
                        region: n_regions,
                        level: stack.len(),
                    });
                    depth = depth.max(stack.len());
                    n_regions += 1;
                }
                ')' => {
                    let region = stack
                        .pop()
                        .ok_or_else(|| StructureError::UnmatchedClose(text.into(), i))?;
                    bypass_of_region[region] = n_closed;
                    ops.push(Op::Close {
                        region,
                        bypass: n_closed,
                    });
                    n_closed += 1;
                }
                _ => return Err(StructureError::BadChar(text.into(), c, i)),
            }
        }
        if !stack.is_empty() {
            return Err(StructureError::Unclosed(text.into(), stack.len()));
        }
        if n_blocks != n_layers {
            return Err(StructureError::BlockCount(text.into(), n_blocks, n_layers));
        }
        Ok(Structure {
            text: text.into(),
            ops,
            n_blocks,
            n_regions,
            block_level,
            bypass_of_region,
            depth,
        })
    }

    /// A structure of `n` plain blocks (a Llama).
    pub fn plain(n: usize) -> Structure {
        Structure::parse(&"T".repeat(n.max(1)), n.max(1)).expect("a plain structure is valid")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_official_1_3b_structure() {
        let s = Structure::parse("TTTTT(TTTTT(TTTT)TTTTT)TTTTT", 24).unwrap();
        assert_eq!(s.n_regions, 2);
        assert_eq!(s.depth, 2);
        let count = |l| s.block_level.iter().filter(|&&x| x == l).count();
        assert_eq!((count(0), count(1), count(2)), (10, 10, 4));
        // bypasses close innermost first: region 1 (inner) -> bypass 0
        assert_eq!(s.bypass_of_region, vec![1, 0]);
    }

    #[test]
    fn siblings_and_tiny() {
        let s = Structure::parse("T(T)T(TT)T", 6).unwrap();
        assert_eq!(s.bypass_of_region, vec![0, 1]);
        assert_eq!(s.block_level, vec![0, 1, 0, 1, 1, 0]);
        let s = Structure::parse("TT(TT(T)T)T", 7).unwrap();
        assert_eq!(s.block_level, vec![0, 0, 1, 1, 2, 1, 0]);
    }

    #[test]
    fn errors() {
        assert!(matches!(
            Structure::parse("T(T", 2),
            Err(StructureError::Unclosed(..))
        ));
        assert!(matches!(
            Structure::parse("T)T(", 2),
            Err(StructureError::UnmatchedClose(..))
        ));
        assert!(matches!(
            Structure::parse("TxT", 2),
            Err(StructureError::BadChar(..))
        ));
        assert!(matches!(
            Structure::parse("T(T)T", 4),
            Err(StructureError::BlockCount(..))
        ));
        // an empty region is legal (it is the identity)
        assert_eq!(Structure::parse("T()T", 2).unwrap().n_regions, 1);
        assert!(matches!(
            Structure::parse("", 0),
            Err(StructureError::Empty)
        ));
    }
}
