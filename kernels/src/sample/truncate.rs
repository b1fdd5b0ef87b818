//! Truncation: the kept set of top-k, top-p and min-p as one threshold set
//! {v ≥ τ}, found without sorting the row; and the top-n log-probabilities.

use super::blocks::block_sums;
use super::{Cand, Row, SampleOptions, TokenLogprob, Weights, Workspace};
use crate::arch::Arch;
use crate::loops::Stage;
use crate::storage::{AnySlice, Storage};
use crate::Temperature;

/// The kept set of a row (t > 0, finite max) into `ws.cand`, in index order:
/// the logits v ≥ τ, τ the highest of the top-k, top-p and min-p cuts
/// (`min_p`: the min-p cut as a logit, -inf when off). Every logit when
/// nothing truncates.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(super) fn truncate<A: Arch, T: Storage>(
    arch: A,
    st: &mut Stage<'_>,
    xs: AnySlice<'_>,
    row: &Row<'_, T>,
    o: &SampleOptions<'_>,
    t: Temperature,
    w: Weights,
    (max, min_p): (f64, f64),
    ws: &mut Workspace,
) {
    let top_k = o.top_k < row.x.len();
    let top_p = o.top_p < 1.0;
    let mut tau = min_p;
    if top_k {
        let k = o.top_k;
        let mut floor = kth_largest_floor(&ws.vmax, k, &mut ws.sorted);
        if !top_p {
            // min-p cuts no fewer than top-k here; collect no more than both keep.
            floor = floor.max(min_p);
        }
        row.collect(&ws.vmax, floor, &mut ws.cand);
        if ws.cand.len() >= k {
            ws.sorted.clear();
            ws.sorted.extend(ws.cand.iter().map(|c| c.v));
            let tau_k = kth_largest(&mut ws.sorted, k);
            ws.cand.retain(|c| c.v >= tau_k);
            tau = tau.max(tau_k);
        }
        if top_p {
            let mass: f64 = ws.cand.iter().map(|c| w.w(c.v)).sum();
            tau = tau.max(nucleus_cut(&ws.cand, o.top_p * mass, w, &mut ws.weighted));
        }
    } else if top_p {
        let target = o.top_p * block_sums(arch, st, xs, row, w, t.inv, &mut ws.sums);
        // Grow the candidate set until it holds the nucleus: one e-fold of
        // weight at a time while the bulk of most rows lies there, then
        // doubling. Each step adds only the logits between the old and new floors.
        let mut depth = 8.0;
        let mut below = None;
        let mut mass = 0.0;
        ws.cand.clear();
        loop {
            let floor = if depth > 1024.0 {
                f64::NEG_INFINITY
            } else {
                max - depth / w.inv_t
            };
            let start = ws.cand.len();
            row.collect_below(&ws.vmax, floor, below, &mut ws.cand);
            mass += ws.cand[start..].iter().map(|c| w.w(c.v)).sum::<f64>();
            if mass >= target || floor == f64::NEG_INFINITY {
                break;
            }
            below = Some(floor);
            depth = if depth < 16.0 {
                depth + 1.0
            } else {
                depth * 2.0
            };
        }
        tau = tau.max(nucleus_cut(&ws.cand, target, w, &mut ws.weighted));
    } else {
        row.collect(&ws.vmax, min_p, &mut ws.cand);
    }
    ws.cand.retain(|c| c.v >= tau);
    into_index_order(&mut ws.cand);
}

/// A lower bound of the k-th largest logit of a row (1-based): the k-th largest
/// block max (k distinct logits reach it), or -inf when there are k blocks or
/// fewer. `space` is working room.
fn kth_largest_floor(vmax: &[f64], k: usize, space: &mut Vec<f64>) -> f64 {
    if vmax.len() <= k {
        return f64::NEG_INFINITY;
    }
    space.clear();
    space.extend_from_slice(vmax);
    kth_largest(space, k)
}

/// The k-th largest of `values` (1-based), reordering them. Never inlined, as
/// every per-row function here that sorts or selects: std's sort stays out of
/// the vectorised region.
#[inline(never)]
fn kth_largest(values: &mut [f64], k: usize) -> f64 {
    let (_, kth, _) = values.select_nth_unstable_by(k - 1, |a, b| b.total_cmp(a));
    *kth
}

/// Puts a kept set in index order (the growth of top-p appends out of order),
/// so the draw does not depend on how the set was found; already in order on
/// the other paths. Once per row, never inlined: std's sort stays out of the
/// vectorised region that calls it.
#[inline(never)]
fn into_index_order(cand: &mut [Cand]) {
    cand.sort_unstable_by_key(|c| c.i);
}

/// The largest τ such that the candidates with v ≥ τ hold at least `target`
/// of the mass (the smallest candidate when none does). A quickselect that
/// carries the mass of what it has set aside above: expected linear time, so a
/// large candidate set is never sorted whole.
#[inline(never)]
fn nucleus_cut(cand: &[Cand], target: f64, w: Weights, space: &mut Vec<(f64, f64)>) -> f64 {
    space.clear();
    space.extend(cand.iter().map(|c| (c.v, w.w(c.v))));
    let by_value_desc = |a: &(f64, f64), b: &(f64, f64)| b.0.total_cmp(&a.0);
    let mut above = 0.0;
    let mut part = &mut space[..];
    while part.len() > 32 {
        let mid = part.len() / 2;
        part.select_nth_unstable_by(mid, by_value_desc);
        let upper: f64 = part[..=mid].iter().map(|e| e.1).sum();
        if above + upper >= target {
            part = &mut part[..=mid];
        } else {
            above += upper;
            part = &mut part[mid + 1..];
        }
    }
    part.sort_unstable_by(by_value_desc);
    for &(v, wv) in part.iter() {
        above += wv;
        if above >= target {
            return v;
        }
    }
    part.last().map_or(f64::NEG_INFINITY, |e| e.0)
}

/// The n largest logits as (token, v - lse), largest first, lower index first
/// on a tie; -inf logits (lowest index first) when fewer than n are finite.
#[inline(never)]
pub(super) fn top_logprobs<T: Storage>(
    row: &Row<'_, T>,
    vmax: &[f64],
    lse: f64,
    cand: &mut Vec<Cand>,
    sorted: &mut Vec<f64>,
    top: &mut [TokenLogprob],
) {
    let n = top.len();
    if n == 0 {
        return;
    }
    let floor = kth_largest_floor(vmax, n, sorted);
    row.collect(vmax, floor, cand);
    cand.sort_by(|a, b| b.v.total_cmp(&a.v).then(a.i.cmp(&b.i)));
    let mut masked = (0..row.x.len()).filter(|&i| row.value(i) == f64::NEG_INFINITY);
    for (slot, item) in top.iter_mut().enumerate() {
        *item = match cand.get(slot) {
            Some(c) => TokenLogprob {
                token: c.i,
                logprob: (c.v - lse) as f32,
            },
            None => TokenLogprob {
                token: masked.next().unwrap_or(0),
                logprob: f32::NEG_INFINITY,
            },
        };
    }
}
