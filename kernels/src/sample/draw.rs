//! The draw: inverse CDF or Gumbel-max, over the kept set or (with no
//! truncation) over the whole row through the per-block sums and maxima; and
//! rows holding +inf, where the +inf tokens share the mass.

use super::blocks::block_sums;
use super::truncate::truncate;
use super::{Cand, Draw, Drawn, Row, SampleOptions, TokenLogprob, Weights, Workspace, BLOCK};
use crate::arch::Arch;
use crate::loops::Stage;
use crate::random::{gumbel_at_most, gumbel_of, Stream, INVERSE_CDF};
use crate::storage::{AnySlice, Storage};
use crate::Temperature;

/// Truncates and draws (t > 0, finite max).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(super) fn draw<A: Arch, T: Storage>(
    arch: A,
    st: &mut Stage<'_>,
    xs: AnySlice<'_>,
    row: &Row<'_, T>,
    o: &SampleOptions<'_>,
    t: Temperature,
    w: Weights,
    max: f64,
    stream: Stream,
    ws: &mut Workspace,
    kept: Option<&mut [f32]>,
) -> usize {
    let min_p = if o.min_p > 0.0 {
        max + t.get() as f64 * o.min_p.ln()
    } else {
        f64::NEG_INFINITY
    };
    let truncates = o.top_k < row.x.len() || o.top_p < 1.0 || min_p > f64::NEG_INFINITY;
    if !truncates && kept.is_none() {
        return match o.draw {
            Draw::InverseCdf => {
                let total = block_sums(arch, st, xs, row, w, t.inv, &mut ws.sums);
                inverse_cdf_blocks(row, &ws.sums, total, w, stream)
            }
            Draw::GumbelMax => gumbel_blocks(row, &ws.vmax, w, max, stream),
        };
    }
    truncate(arch, st, xs, row, o, t, w, (max, min_p), ws);
    if let Some(kept) = kept {
        let total: f64 = ws.cand.iter().map(|c| w.w(c.v)).sum();
        let ln_total = total.ln();
        kept.fill(f32::NEG_INFINITY);
        for c in &ws.cand {
            kept[c.i] = (w.z(c.v) - ln_total) as f32;
        }
    }
    match o.draw {
        Draw::InverseCdf => inverse_cdf(&ws.cand, w, stream),
        Draw::GumbelMax => gumbel_max(&ws.cand, w, stream),
    }
}

/// Inverse CDF over candidates in index order.
fn inverse_cdf(cand: &[Cand], w: Weights, stream: Stream) -> usize {
    let total: f64 = cand.iter().map(|c| w.w(c.v)).sum();
    let mut left = stream.uniform(INVERSE_CDF) * total;
    let mut last = cand[0].i;
    for c in cand {
        let wi = w.w(c.v);
        if wi > 0.0 {
            last = c.i;
            left -= wi;
            if left < 0.0 {
                return c.i;
            }
        }
    }
    last
}

/// Gumbel-max over candidates: the largest z + G, the lowest index on a tie.
fn gumbel_max(cand: &[Cand], w: Weights, stream: Stream) -> usize {
    let mut best = (f64::NEG_INFINITY, cand[0].i);
    for c in cand {
        let g = w.z(c.v) + stream.gumbel(c.i as u64);
        if g > best.0 {
            best = (g, c.i);
        }
    }
    best.1
}

/// Inverse CDF over a whole row: find the block from the per-block sums, then
/// the token inside it from its f64 weights.
fn inverse_cdf_blocks<T: Storage>(
    row: &Row<'_, T>,
    sums: &[f64],
    total: f64,
    w: Weights,
    stream: Stream,
) -> usize {
    let target = stream.uniform(INVERSE_CDF) * total;
    let mut acc = 0.0;
    let mut chosen = None;
    for (b, &s) in sums.iter().enumerate() {
        if s > 0.0 {
            if acc + s > target {
                chosen = Some((b, (target - acc) / s));
                break;
            }
            // Rounding may leave the target past the last block: take the last one with mass.
            chosen = Some((b, 1.0));
            acc += s;
        }
    }
    let (b, share) = chosen.unwrap_or((0, 0.0));
    let mut buf = [0.0; BLOCK];
    let len = row.values(b, &mut buf);
    let weights = buf[..len].iter().map(|&v| w.w(v));
    let mut left = share * weights.clone().sum::<f64>();
    let mut last = b * BLOCK;
    for (j, wj) in weights.enumerate() {
        if wj > 0.0 {
            last = b * BLOCK + j;
            left -= wj;
            if left < 0.0 {
                return last;
            }
        }
    }
    last
}

/// Gumbel-max over a whole row. Token i can win only if its noise exceeds
/// best − z_i ≥ best − (its block's max z), so tokens whose random bits are
/// below that block's bound are skipped without a logarithm. The block of the
/// max runs first, so the bound is tight from the start.
fn gumbel_blocks<T: Storage>(
    row: &Row<'_, T>,
    vmax: &[f64],
    w: Weights,
    max: f64,
    stream: Stream,
) -> usize {
    let first = vmax.iter().position(|&m| m == max).unwrap_or(0);
    let mut best = (f64::NEG_INFINITY, usize::MAX);
    let order = core::iter::once(first).chain((0..vmax.len()).filter(|&b| b != first));
    for b in order {
        if vmax[b] == f64::NEG_INFINITY {
            continue;
        }
        let cut = if best.0 == f64::NEG_INFINITY {
            0
        } else {
            gumbel_at_most(best.0 - w.z(vmax[b]))
        };
        let plain = row.bias_of(b).is_empty();
        for i in row.range(b) {
            let bits = stream.bits(i as u64);
            if (bits >> 11) < cut {
                continue;
            }
            let v = if plain {
                row.x[i].to_f64()
            } else {
                row.value(i)
            };
            if v == f64::NEG_INFINITY {
                continue;
            }
            let g = w.z(v) + gumbel_of(bits);
            if g > best.0 || (g == best.0 && i < best.1) {
                best = (g, i);
            }
        }
    }
    best.1
}

/// A row holding +inf after the bias: the +inf tokens share all the mass, so
/// the draw is uniform over them (whatever the truncation, which keeps them all).
pub(super) fn sample_infinite<T: Storage>(
    row: &Row<'_, T>,
    o: &SampleOptions<'_>,
    stream: Stream,
    ws: &mut Workspace,
    top: &mut [TokenLogprob],
    kept: Option<&mut [f32]>,
) -> Drawn {
    row.collect(&ws.vmax, f64::INFINITY, &mut ws.cand);
    let count = ws.cand.len();
    let share = -(count as f64).ln() as f32;
    if let Some(kept) = kept {
        kept.fill(f32::NEG_INFINITY);
        match o.temperature {
            // t = 0 draws the first +inf token, always.
            None => kept[ws.cand[0].i] = 0.0,
            Some(_) => {
                for c in &ws.cand {
                    kept[c.i] = share;
                }
            }
        }
    }
    let index = match (o.temperature, o.draw) {
        (None, _) => ws.cand[0].i,
        (Some(_), Draw::InverseCdf) => {
            let k = (stream.uniform(INVERSE_CDF) * count as f64) as usize;
            ws.cand[k.min(count - 1)].i
        }
        (Some(_), Draw::GumbelMax) => {
            let mut best = (f64::NEG_INFINITY, ws.cand[0].i);
            for c in &ws.cand {
                let g = stream.gumbel(c.i as u64);
                if g > best.0 {
                    best = (g, c.i);
                }
            }
            best.1
        }
    };
    let mut rest = 0..row.x.len();
    for (slot, item) in top.iter_mut().enumerate() {
        *item = match ws.cand.get(slot) {
            Some(c) => TokenLogprob {
                token: c.i,
                logprob: share,
            },
            None => {
                let token = rest
                    .by_ref()
                    .find(|&i| row.value(i) != f64::INFINITY)
                    .unwrap_or(0);
                TokenLogprob {
                    token,
                    logprob: f32::NEG_INFINITY,
                }
            }
        };
    }
    Drawn::Token {
        index,
        logprob: o.logprob.then_some(share),
    }
}
