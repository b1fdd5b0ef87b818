//! ggml `soft_max_ext` (CPU backend, ggml_graph_compute) beside softmax's
//! `AttentionSoftmax`, same input buffers, alternated per round.
//!
//! Setup: `./fetch-ggml.sh`, then `cargo build --release` in this directory.
//! Usage: softmax-ggml-bench [ROUNDS=15] [THREADS=1,2] [--check]
//!   --check: run each shape once per thread count, compare, exit (no timing).
//! Env: GGML_POOL=0 makes ggml create a disposable threadpool per compute
//!      (ggml_graph_compute with cplan.threadpool == NULL); default 1 = one
//!      persistent ggml threadpool per shape. GGML_POLL=<0..100> its polling
//!      level (default 0: idle workers sleep on a condvar, so they do not spin
//!      while ours runs; llama.cpp's default is 50).
use softmax::half::f16;
use softmax::{
    packed_strides, Alibi, AttentionInputs, AttentionMask, AttentionSoftmax, Parallelism, Scores,
    ScoresMut, ThreadPoolBuilder,
};
use std::ffi::CStr;
use std::os::raw::{c_char, c_float, c_int};
use std::sync::Arc;
use std::time::Instant;

#[repr(C)]
struct Shim {
    _p: [u8; 0],
}
extern "C" {
    fn shim_new(
        heads: c_int,
        queries: c_int,
        keys: c_int,
        mask_kind: c_int,
        scale: c_float,
        max_bias: c_float,
        n_threads: c_int,
        pool: c_int,
        poll: c_int,
    ) -> *mut Shim;
    fn shim_run(s: *mut Shim) -> c_int;
    fn shim_src(s: *mut Shim) -> *mut f32;
    fn shim_dst(s: *mut Shim) -> *mut f32;
    fn shim_mask(s: *mut Shim) -> *mut u16;
    fn shim_work_size(s: *mut Shim) -> usize;
    fn shim_free(s: *mut Shim);
    fn shim_version() -> *const c_char;
    fn shim_commit() -> *const c_char;
}

#[derive(Clone, Copy, PartialEq)]
enum Mask {
    None,
    Causal,         // 0 for j <= q, -inf above (q = k, offset 0)
    AlibiCausal,    // -(q - j) for j <= q (llama.cpp's ALiBi KQ mask), -inf above
    PadLast(usize), // 0, last n keys -inf (one row, broadcast over heads)
}

struct Shape {
    name: &'static str,
    heads: usize,
    queries: usize,
    keys: usize,
    mask: Mask,
    scale: f32,
    max_bias: f32,
}

const SHAPES: [Shape; 4] = [
    Shape {
        name: "1 prefill 32x512x512, f16 causal mask",
        heads: 32,
        queries: 512,
        keys: 512,
        mask: Mask::Causal,
        scale: 0.125,
        max_bias: 0.0,
    },
    Shape {
        name: "2 decode 32x1x4096, f16 padding mask (last 100 -inf)",
        heads: 32,
        queries: 1,
        keys: 4096,
        mask: Mask::PadLast(100),
        scale: 0.125,
        max_bias: 0.0,
    },
    Shape {
        name: "3a prefill 32x512x512, no mask",
        heads: 32,
        queries: 512,
        keys: 512,
        mask: Mask::None,
        scale: 0.125,
        max_bias: 0.0,
    },
    Shape {
        name: "3b prefill 32x512x512, ALiBi max_bias 8 x f16 mask -(q-j)/-inf",
        heads: 32,
        queries: 512,
        keys: 512,
        mask: Mask::AlibiCausal,
        scale: 0.125,
        max_bias: 8.0,
    },
];

struct Case {
    shim: *mut Shim,
    n: usize,
    mask_len: usize,
    ours_out: Vec<f32>,
}

impl Case {
    fn new(s: &Shape, threads: usize, pool: bool, poll: i32) -> Case {
        let n = s.heads * s.queries * s.keys;
        // SAFETY: shim_new takes plain integers and floats; it returns a new
        // graph (or null, checked below) that only this Case frees.
        let shim = unsafe {
            shim_new(
                s.heads as c_int,
                s.queries as c_int,
                s.keys as c_int,
                (s.mask != Mask::None) as c_int,
                s.scale,
                s.max_bias,
                threads as c_int,
                pool as c_int,
                poll,
            )
        };
        assert!(!shim.is_null(), "ggml_init failed");
        let mask_len = if s.mask == Mask::None {
            0
        } else {
            s.queries * s.keys
        };
        let mut c = Case {
            shim,
            n,
            mask_len,
            ours_out: vec![0.0; n],
        };
        // Scores: a fixed xorshift stream, uniform in [-20, 20) (x 0.125 -> [-2.5, 2.5)).
        let mut st = 0x9E37_79B9_7F4A_7C15u64;
        for v in c.src_mut() {
            st ^= st << 13;
            st ^= st >> 7;
            st ^= st << 17;
            *v = ((st >> 40) as f32 / (1u64 << 24) as f32) * 40.0 - 20.0;
        }
        let (q, k) = (s.queries, s.keys);
        if let Some(m) = c.mask_mut() {
            for qi in 0..q {
                for j in 0..k {
                    let v = match s.mask {
                        Mask::None => unreachable!(),
                        Mask::Causal => {
                            if j <= qi {
                                0.0
                            } else {
                                f32::NEG_INFINITY
                            }
                        }
                        Mask::AlibiCausal => {
                            if j <= qi {
                                -((qi - j) as f32)
                            } else {
                                f32::NEG_INFINITY
                            }
                        }
                        Mask::PadLast(p) => {
                            if j + p < k {
                                0.0
                            } else {
                                f32::NEG_INFINITY
                            }
                        }
                    };
                    m[qi * k + j] = f16::from_f32(v);
                }
            }
        }
        c
    }
    fn src(&self) -> &[f32] {
        // SAFETY: the score tensor holds n f32, lives until shim_free (in
        // drop), and ggml writes it only during shim_run, which takes &mut self.
        unsafe { std::slice::from_raw_parts(shim_src(self.shim), self.n) }
    }
    fn src_mut(&mut self) -> &mut [f32] {
        // SAFETY: as in `src`; &mut self makes this the only view.
        unsafe { std::slice::from_raw_parts_mut(shim_src(self.shim), self.n) }
    }
    fn ggml_out(&self) -> &[f32] {
        // SAFETY: the output tensor holds n f32 (a separate allocation in the
        // context), written only during shim_run, which takes &mut self.
        unsafe { std::slice::from_raw_parts(shim_dst(self.shim), self.n) }
    }
    fn mask(&self) -> Option<&[f16]> {
        // SAFETY: a live shim.
        let p = unsafe { shim_mask(self.shim) };
        if p.is_null() {
            return None;
        }
        // SAFETY: a non-null mask tensor holds queries·keys f16 (u16 bit
        // patterns, as f16 stores them), read-only to ggml, live until drop.
        Some(unsafe { std::slice::from_raw_parts(p as *const f16, self.mask_len) })
    }
    fn mask_mut(&mut self) -> Option<&mut [f16]> {
        // SAFETY: a live shim.
        let p = unsafe { shim_mask(self.shim) };
        if p.is_null() {
            return None;
        }
        // SAFETY: as in `mask`; &mut self makes this the only view.
        Some(unsafe { std::slice::from_raw_parts_mut(p as *mut f16, self.mask_len) })
    }
    fn run_ggml(&mut self) {
        // SAFETY: a live shim; no slice of its tensors outlives this &mut borrow.
        let rc = unsafe { shim_run(self.shim) };
        assert_eq!(rc, 0, "ggml_graph_compute failed");
    }
}

impl Drop for Case {
    fn drop(&mut self) {
        // SAFETY: the shim is live and freed once, here.
        unsafe { shim_free(self.shim) }
    }
}

fn ours(att: &AttentionSoftmax, s: &Shape, src: &[f32], mask: Option<&[f16]>, out: &mut [f32]) {
    let dims = [1, s.heads, s.queries, s.keys];
    let mut inputs = AttentionInputs::new();
    if let Some(m) = mask {
        let md = [1, 1, s.queries, s.keys];
        inputs = inputs.with_mask(AttentionMask::additive(m, md, packed_strides(md)).unwrap());
    }
    att.softmax(
        Scores::contiguous(src, dims).unwrap(),
        ScoresMut::contiguous(out, dims).unwrap(),
        &inputs,
    )
    .unwrap();
}

fn run_ours(c: &mut Case, att: &AttentionSoftmax, s: &Shape) {
    let mut out = std::mem::take(&mut c.ours_out);
    ours(att, s, c.src(), c.mask(), &mut out);
    c.ours_out = out;
}

/// f64 reference of ggml's formula: softmax(scale*x + slope_h*m).
// Indexed by head, query and key, as the formula is.
#[allow(clippy::needless_range_loop)]
fn max_err_vs_f64(c: &Case, s: &Shape, out: &[f32]) -> f64 {
    let slopes = softmax::alibi_slopes(s.heads, s.max_bias);
    let (src, mask) = (c.src(), c.mask());
    let mut worst = 0.0f64;
    let mut v = vec![0.0f64; s.keys];
    for h in 0..s.heads {
        for q in 0..s.queries {
            let row = (h * s.queries + q) * s.keys;
            for j in 0..s.keys {
                let m = mask.map_or(0.0, |m| m[q * s.keys + j].to_f32() as f64);
                let bias = if m == 0.0 { 0.0 } else { slopes[h] as f64 * m };
                v[j] = s.scale as f64 * src[row + j] as f64 + bias;
            }
            let mx = v.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let sum: f64 = v.iter().map(|x| (x - mx).exp()).sum();
            for j in 0..s.keys {
                let e = ((v[j] - mx).exp() / sum - out[row + j] as f64).abs();
                worst = worst.max(e);
            }
        }
    }
    worst
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let check = args.iter().any(|a| a == "--check");
    let pos: Vec<&String> = args.iter().filter(|a| !a.starts_with("--")).collect();
    let rounds: usize = pos.first().map_or(15, |a| a.parse().expect("rounds"));
    let threads: Vec<usize> = pos
        .get(1)
        .map_or("1,2".to_string(), |s| s.to_string())
        .split(',')
        .map(|t| t.parse().expect("threads"))
        .collect();
    let pool = std::env::var("GGML_POOL").map_or(true, |v| v != "0");
    let poll: i32 = std::env::var("GGML_POLL")
        .ok()
        .map_or(0, |v| v.parse().expect("GGML_POLL"));
    // SAFETY: static NUL-terminated strings from ggml.
    let (ver, commit) = unsafe {
        (
            CStr::from_ptr(shim_version())
                .to_string_lossy()
                .into_owned(),
            CStr::from_ptr(shim_commit()).to_string_lossy().into_owned(),
        )
    };
    println!(
        "ggml {ver} ({commit}); ggml threadpool: {}, poll {poll}; rounds {rounds}; threads {threads:?}{}",
        if pool { "persistent" } else { "disposable per compute" },
        if check { "; --check" } else { "" }
    );
    println!(
        "{:<66} {:>3} {:>11} {:>11} {:>9} {:>9} {:>9}",
        "shape", "thr", "ggml ns/row", "ours ns/row", "ratio", "ratio min", "ratio max"
    );

    for &t in &threads {
        let par = if t == 1 {
            Parallelism::Serial
        } else {
            Parallelism::Pool(Arc::new(
                ThreadPoolBuilder::new().num_threads(t).build().unwrap(),
            ))
        };
        for s in &SHAPES {
            let mut att = AttentionSoftmax::new()
                .with_scale(s.scale)
                .unwrap()
                .with_parallelism(par.clone());
            if s.max_bias > 0.0 {
                att = att.with_alibi(Alibi::MaxBias(s.max_bias)).unwrap();
            }
            let mut c = Case::new(s, t, pool, poll);
            // One call of each: warm-up and the correctness check.
            c.run_ggml();
            run_ours(&mut c, &att, s);
            let diff = c
                .ggml_out()
                .iter()
                .zip(&c.ours_out)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            let bad = c
                .ggml_out()
                .iter()
                .chain(&c.ours_out)
                .any(|v| !v.is_finite());
            if check {
                let eg = max_err_vs_f64(&c, s, c.ggml_out());
                let eo = max_err_vs_f64(&c, s, &c.ours_out);
                println!(
                    "{:<66} {t:>3}  max|ours-ggml| {diff:.3e}  max err vs f64: ggml {eg:.3e} ours {eo:.3e}  (ggml work {} B){}",
                    s.name,
                    // SAFETY: a live shim.
                    unsafe { shim_work_size(c.shim) },
                    if bad { "  NON-FINITE!" } else { "" }
                );
                continue;
            }
            assert!(
                !bad && diff < 1e-5,
                "{}: outputs disagree (max diff {diff})",
                s.name
            );
            let rows = (s.heads * s.queries) as f64;
            let (mut tg, mut to, mut ratio) = (Vec::new(), Vec::new(), Vec::new());
            for r in 0..rounds {
                // Alternate which goes first, so neither always runs on the
                // other's cache leftovers.
                let (g, o);
                if r % 2 == 0 {
                    let t0 = Instant::now();
                    c.run_ggml();
                    let t1 = Instant::now();
                    run_ours(&mut c, &att, s);
                    let t2 = Instant::now();
                    g = (t1 - t0).as_nanos() as f64;
                    o = (t2 - t1).as_nanos() as f64;
                } else {
                    let t0 = Instant::now();
                    run_ours(&mut c, &att, s);
                    let t1 = Instant::now();
                    c.run_ggml();
                    let t2 = Instant::now();
                    o = (t1 - t0).as_nanos() as f64;
                    g = (t2 - t1).as_nanos() as f64;
                }
                tg.push(g / rows);
                to.push(o / rows);
                ratio.push(g / o);
            }
            let (rmin, rmax) = ratio
                .iter()
                .fold((f64::MAX, f64::MIN), |(a, b), &x| (a.min(x), b.max(x)));
            println!(
                "{:<66} {t:>3} {:>11.1} {:>11.1} {:>9.3} {:>9.3} {:>9.3}",
                s.name,
                median(&mut tg),
                median(&mut to),
                median(&mut ratio),
                rmin,
                rmax
            );
        }
    }
    if !check {
        println!("ratio = ours/ggml throughput = ggml time / ours time, median of per-round ratios (min, max over rounds)");
    }
}
