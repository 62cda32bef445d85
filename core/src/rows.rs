//! Row maps: which rows of an input a node reads to produce given rows of its output.
//!
//! A tensor is streamed along its row axis (axis `rank - 2`, H for NCHW). Every op input has a
//! [`RowMap`]; the by-parts scheduler uses it to know when a node can fire and which input rows
//! can be dropped, and the executor uses it to build each firing's input windows. Maps are
//! monotone: later output rows never need earlier input rows.

use serde::{Deserialize, Serialize};

use crate::ops::Resize;

/// How output rows `[a, b)` of a node map to rows of one of its inputs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "map", rename_all = "snake_case")]
pub enum RowMap {
    /// The same rows (elementwise ops, channel concat, row-preserving reshapes).
    Same,
    /// A sliding window: `[a*stride - pad, (b-1)*stride - pad + (kernel-1)*dilation + 1)`
    /// (convolution and pooling).
    Window {
        /// Kernel height.
        kernel: usize,
        /// Row stride.
        stride: usize,
        /// Row dilation.
        dilation: usize,
        /// Top padding.
        pad: usize,
    },
    /// The gather form of a transposed convolution: output row `o` reads input rows `i` with
    /// `o = i*stride - pad + k*dilation` for some tap `k`.
    Transposed {
        /// Kernel height.
        kernel: usize,
        /// Row stride.
        stride: usize,
        /// Row dilation.
        dilation: usize,
        /// Top padding.
        pad: usize,
    },
    /// Rows shifted by an offset (concatenation along the row axis): output row `o` is input
    /// row `o - offset` when that exists.
    Offset {
        /// First output row of this input.
        offset: usize,
    },
    /// Spatial resize: the rows its interpolation taps read.
    Resize(Resize),
    /// Row 0 only (an operand broadcast along the row axis, such as a channel scale).
    First,
    /// Every row: the node needs its whole input before it can produce anything.
    Whole,
    /// The node folds input rows into its output as they arrive (see [`Fold`]): it fires on
    /// input rows, which map to themselves.
    Accumulate,
}

/// How an accumulating node's input rows land in its output. Output rows start when their
/// first input row is folded in and are complete after their last; in between they hold
/// partial results (running maxima or sums) in the output buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "fold", rename_all = "snake_case")]
pub enum Fold {
    /// Every input row feeds every output row (global pooling).
    All,
    /// Output row `o` folds input rows `o*stride - pad + k*dilation`, `k < kernel` (pooling).
    Window {
        /// Kernel height.
        kernel: usize,
        /// Row stride.
        stride: usize,
        /// Row dilation.
        dilation: usize,
        /// Top padding.
        pad: usize,
    },
}

impl Fold {
    /// Output rows `[lo, hi)` that input rows `[a, b)` fold into: the first and last output
    /// rows with a tap among them (dilated windows can skip rows, so this checks taps).
    pub fn touched(&self, a: usize, b: usize, out_rows: usize) -> (usize, usize) {
        match *self {
            Fold::All => (0, out_rows),
            Fold::Window { kernel, stride, dilation, pad } => {
                let (lo, hi) =
                    RowMap::Transposed { kernel, stride, dilation, pad }.need(a, b, out_rows);
                let hit = |o: &usize| {
                    (0..kernel).any(|k| {
                        (o * stride + k * dilation)
                            .checked_sub(pad)
                            .is_some_and(|r| (a..b).contains(&r))
                    })
                };
                match ((lo..hi).find(hit), (lo..hi).rev().find(hit)) {
                    (Some(first), Some(last)) => (first, last + 1),
                    _ => (lo, lo),
                }
            }
        }
    }

    /// Output rows started once input rows `[0, b)` are folded in.
    pub fn started(&self, b: usize, out_rows: usize) -> usize {
        if b == 0 {
            return 0;
        }
        match *self {
            Fold::All => out_rows,
            Fold::Window { stride, pad, .. } => ((b - 1 + pad) / stride + 1).min(out_rows),
        }
    }

    /// Output rows complete once input rows `[0, b)` of `in_rows` are folded in.
    pub fn complete(&self, b: usize, in_rows: usize, out_rows: usize) -> usize {
        if b >= in_rows {
            return out_rows;
        }
        match *self {
            Fold::All => 0,
            Fold::Window { kernel, stride, dilation, pad } => {
                let reach = (kernel - 1) * dilation;
                // Rows whose last tap o*stride - pad + reach is below b.
                if b + pad < reach + 1 {
                    0
                } else {
                    ((b + pad - reach - 1) / stride + 1).min(out_rows)
                }
            }
        }
    }
}

impl RowMap {
    /// Input rows `[lo, hi)` (within `0..in_rows`) that output rows `[a, b)` read; empty
    /// (`lo == hi`) when none. For `Accumulate`, `[a, b)` are input rows and map to themselves.
    pub fn need(&self, a: usize, b: usize, in_rows: usize) -> (usize, usize) {
        let clamp = |lo: usize, hi: usize| {
            let lo = lo.min(in_rows);
            (lo, hi.clamp(lo, in_rows))
        };
        if b <= a {
            return clamp(a, a);
        }
        match *self {
            RowMap::Same | RowMap::Accumulate => clamp(a, b),
            RowMap::Window { kernel, stride, dilation, pad } => {
                let lo = (a * stride).saturating_sub(pad);
                let hi = ((b - 1) * stride + (kernel - 1) * dilation + 1).saturating_sub(pad);
                clamp(lo, hi)
            }
            RowMap::Transposed { kernel, stride, dilation, pad } => {
                let reach = (kernel - 1) * dilation;
                let lo = (a + pad).saturating_sub(reach).div_ceil(stride);
                let hi = (b - 1 + pad) / stride + 1;
                clamp(lo, hi)
            }
            RowMap::Offset { offset } => clamp(a.saturating_sub(offset), b.saturating_sub(offset)),
            RowMap::Resize(ref r) => {
                // Taps are monotone, but a zero weight at the last row can end lower than an
                // earlier row's second tap, so take the extremes over the band.
                let (mut lo, mut hi) = (usize::MAX, 0);
                for o in a..b {
                    let (l, h) = r.rows_read(o, in_rows);
                    (lo, hi) = (lo.min(l), hi.max(h));
                }
                clamp(lo, hi)
            }
            RowMap::First => clamp(0, 1),
            RowMap::Whole => clamp(0, in_rows),
        }
    }

    /// Whether the node needs all input rows before producing output.
    pub fn is_whole(&self) -> bool {
        matches!(self, RowMap::Whole)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_follow_the_design_formula() {
        let conv = RowMap::Window { kernel: 3, stride: 2, dilation: 1, pad: 1 };
        assert_eq!(conv.need(0, 1, 224), (0, 2));
        assert_eq!(conv.need(5, 6, 224), (9, 12));
        assert_eq!(conv.need(111, 112, 224), (221, 224));
        // A 1x1 stride-2 conv holds one input row per output row.
        let pointwise = RowMap::Window { kernel: 1, stride: 2, dilation: 1, pad: 0 };
        assert_eq!(pointwise.need(3, 4, 8), (6, 7));
        let dilated = RowMap::Window { kernel: 3, stride: 1, dilation: 2, pad: 2 };
        assert_eq!(dilated.need(0, 1, 10), (0, 3));
    }

    #[test]
    fn folds_start_and_complete_rows() {
        // 3x3 stride-2 pooling with pad 1 over 8 rows -> 4 output rows.
        let f = Fold::Window { kernel: 3, stride: 2, dilation: 1, pad: 1 };
        assert_eq!(f.started(1, 4), 1);
        assert_eq!(f.complete(1, 8, 4), 0);
        assert_eq!(f.complete(2, 8, 4), 1); // row 0 reads rows -1..2
        assert_eq!(f.started(2, 4), 2);
        assert_eq!(f.complete(4, 8, 4), 2);
        assert_eq!(f.complete(7, 8, 4), 3);
        assert_eq!(f.complete(8, 8, 4), 4);
        assert_eq!(f.touched(2, 3, 4), (1, 2));
        assert_eq!(f.touched(3, 4, 4), (1, 3));
        assert_eq!(Fold::All.complete(3, 4, 1), 0);
        assert_eq!(Fold::All.complete(4, 4, 1), 1);
    }

    #[test]
    fn transposed_and_offset_maps() {
        let t = RowMap::Transposed { kernel: 2, stride: 2, dilation: 1, pad: 0 };
        assert_eq!(t.need(0, 2, 4), (0, 1));
        assert_eq!(t.need(2, 3, 4), (1, 2));
        let t3 = RowMap::Transposed { kernel: 3, stride: 2, dilation: 1, pad: 1 };
        assert_eq!(t3.need(0, 1, 5), (0, 1));
        assert_eq!(t3.need(1, 2, 5), (0, 2));
        let o = RowMap::Offset { offset: 4 };
        assert_eq!(o.need(0, 2, 3), (0, 0));
        assert_eq!(o.need(5, 6, 3), (1, 2));
        assert_eq!(o.need(8, 9, 3), (3, 3));
        assert_eq!(RowMap::Whole.need(3, 4, 7), (0, 7));
        assert_eq!(RowMap::First.need(3, 4, 1), (0, 1));
    }
}
