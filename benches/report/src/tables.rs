//! The report's tables on stdout: the header that says what was measured and
//! how, the header and one line per record of each table, and the summary.

use crate::flags::Config;
use crate::machine::{isa_names, Machine, BUILD_PROFILE, BUILD_TARGET, BUILD_TARGET_FEATURES};
use softmax::{Algorithm, Isa};
use softmax_report::attention::{
    ALIBI_MAX_BIAS, ATTENTION_TOLERANCE, PADDING_KEYS, SCALE, SCORE_RANGE, SOFT_CAP,
};
use softmax_report::peers::onnxruntime::Runtime;
use softmax_report::record::{Op, Record, Section};
use softmax_report::sampling::{self, Case};
use softmax_report::training::TRAINING_TOLERANCE;
use softmax_report::workload::{Dtype, Shape, LOGIT_RANGE, TOLERANCE};

/// Cores kept busy by other processes above which the header warns.
const BUSY_WARNING: f64 = 0.25;

pub const TABLE_HEADER: &str =
    "shape        rows/call  op           algorithm   isa     thr   Gelem/s     GB/s  ×naive   ×copy    max|Δ|";

fn error_text(error: f64) -> String {
    match error {
        0.0 => "0".to_string(),
        e if e.is_finite() => format!("{e:.1e}"),
        _ => "NaN".to_string(),
    }
}

pub fn table_row(r: &Record) -> String {
    match r.section {
        Section::HalfPrecision => return half_row(r),
        Section::Training => return training_row(r),
        Section::Sampling => return sampling_row(r, None),
        Section::Peers => return peers_row(r),
        Section::Attention => return attention_row(r),
        Section::Main => {}
    }
    format!(
        "{:<12} {:>9}  {:<12} {:<11} {:<7} {:>3} {:>9.3} {:>8.2} {:>7.2} {:>7.2} {:>9} {}",
        r.shape,
        r.m.block_rows,
        r.op.name(),
        r.op.algorithm(),
        r.op.isa(),
        r.threads,
        r.gelem(),
        r.gbytes(),
        r.vs_naive,
        r.vs_copy,
        error_text(r.m.error),
        if r.ok() { "✓" } else { "✗" }
    )
}

pub const HALF_TABLE_HEADER: &str =
    "shape        cache  thr  in→out     sets   Gelem/s     GB/s    ×f32  target        max|Δ|";

/// The targets for f16→f16 and bf16→bf16 against f32→f32: in cache the
/// conversions must cost little, out of cache half the bytes must show.
fn half_target(r: &Record) -> Option<f64> {
    let same_half = r.elements.input == r.elements.output && r.elements.input != Dtype::F32;
    same_half.then_some(if r.out_of_cache { 1.6 } else { 0.9 })
}

pub fn half_row(r: &Record) -> String {
    let target = match half_target(r) {
        Some(t) if r.vs_f32 >= t => format!("≥{t:.1} met"),
        Some(t) => format!("≥{t:.1} missed"),
        None => String::new(),
    };
    format!(
        "{:<12} {:<5} {:>4}  {:<10} {:>4} {:>9.3} {:>8.2} {:>7.2}  {:<11} {:>8} {}",
        r.shape,
        if r.out_of_cache { "out" } else { "in" },
        r.threads,
        r.elements,
        r.buffer_sets,
        r.gelem(),
        r.gbytes(),
        r.vs_f32,
        target,
        error_text(r.m.error),
        if r.ok() { "✓" } else { "✗" }
    )
}

/// What the half-precision table measured and how to read it.
pub fn print_half_header(config: &Config) {
    println!(
        "half precision: softmax, auto on {} (the detected ISA), by element types in→out",
        Isa::detect()
    );
    println!("  input      the same logits as above, rounded to the input type; arithmetic is f32");
    println!(
        "  ×f32       Gelem/s ÷ f32→f32's on the same shape and threads in this run; \
         target (f16→f16, bf16→bf16): ≥ 0.9 in cache, ≥ 1.6 out of cache"
    );
    println!(
        "  GB/s       bytes of the input and output types, each element read and written once"
    );
    println!(
        "  cache      out: buffer sets totalling ≥ 2 × LLC rotated (more sets for narrower types), as above"
    );
    println!(
        "  check      output widened to f32 vs the scalar ISA's softmax of the input as stored: \
         max|Δ| is |Δ|/max(1,|ref|) ≤ {TOLERANCE:e} for f32 out, |Δ|/max(|ref|,2^-14) ≤ 2^-10 for f16 out, ≤ 2^-7 for bf16 out"
    );
    if config.threads.iter().any(|&t| t > 1) {
        println!("  threads    1 = Parallelism::Serial, n = rayon pool of n, as above");
    }
}

pub const TRAINING_TABLE_HEADER: &str =
    "shape        cache  thr  op                           Gelem/s     GB/s  ×forward  target        max|Δ|";

pub fn training_row(r: &Record) -> String {
    let target = match r.op {
        Op::Training(pass) => pass.target(),
        _ => None,
    };
    let target = match target {
        Some(t) if r.vs_forward >= t => format!("≥{t:.1} met"),
        Some(t) => format!("≥{t:.1} missed"),
        None => String::new(),
    };
    format!(
        "{:<12} {:<5} {:>4}  {:<26} {:>9.3} {:>8.2} {:>9.2}  {:<11} {:>8} {}",
        r.shape,
        if r.out_of_cache { "out" } else { "in" },
        r.threads,
        r.op.name(),
        r.gelem(),
        r.gbytes(),
        r.vs_forward,
        target,
        error_text(r.m.error),
        if r.ok() { "✓" } else { "✗" }
    )
}

/// What the training table measured and how to read it.
pub fn print_training_header(shape: Shape) {
    println!(
        "training: f32 {shape} ({:.0} MB per tensor), {} (the detected ISA), whole batches",
        shape.elements() as f64 * 4e-6,
        Isa::detect()
    );
    println!(
        "  passes     softmax: softmax_rows, out of place, auto (the yardstick); softmax-backward,"
    );
    println!(
        "             log-softmax-backward: dx from the forward output y and an upstream g (±1);"
    );
    println!(
        "             ce-*: CrossEntropy (mean over rows, one class label per row): loss_and_grad"
    );
    println!("             into a gradient buffer, loss_and_grad_in_place, loss alone");
    println!(
        "  ×forward   Gelem/s ÷ the forward softmax's on the same shape and threads in this run; \
         targets: backward ≥ 0.8, loss and gradient ≥ 0.9"
    );
    println!("  GB/s       f32 tensors read and written once: backward 12 B/element, softmax and ce gradient 8, ce loss 4");
    println!("  timing     median of the samples; in-place passes get their input copied back before each call, untimed");
    println!(
        "  check      every output and row loss written; the returned loss is the mean of the row losses; \
         the first two and last two rows vs the scalar ISA: max|Δ| is |Δ| / the row's largest |ref| \
         (row losses: / max(1,|ref|)) ≤ {TRAINING_TOLERANCE:e}"
    );
}

pub const ATTENTION_TABLE_HEADER: &str =
    "variant              heads×q×keys    cache  thr  softmax µs  Gelem/s  attention µs  Gelem/s  ×softmax  target         max|Δ|";

pub fn attention_row(r: &Record) -> String {
    let Op::Attention(variant) = r.op else {
        unreachable!("the attention table holds attention variants only")
    };
    let [_, heads, queries, keys] = variant.dims();
    let target = match variant.target() {
        Some(t) if r.vs_forward >= t => format!("≥{t:.2} met"),
        Some(t) => format!("≥{t:.2} missed"),
        None => String::new(),
    };
    let forward_seconds = r.forward.map_or(f64::NAN, |m| m.seconds_per_call);
    format!(
        "{:<20} {:<15} {:<5} {:>4} {:>11.1} {:>8.3} {:>13.1} {:>8.3} {:>9.2}  {:<12} {:>8} {}",
        variant.name(),
        format!("{heads}x{queries}x{keys}"),
        if r.out_of_cache { "out" } else { "in" },
        r.threads,
        forward_seconds * 1e6,
        r.shape.elements() as f64 / forward_seconds / 1e9,
        r.m.seconds_per_call * 1e6,
        r.gelem(),
        r.vs_forward,
        target,
        error_text(r.m.error),
        if r.ok() { "✓" } else { "✗" }
    )
}

/// What the attention table measured and how to read it.
pub fn print_attention_header() {
    println!(
        "attention: AttentionSoftmax::softmax, f32 scores in and out, scale {SCALE}, {} (the detected ISA), whole calls",
        Isa::detect()
    );
    println!("  variants   prefill causal: with_causal (a square block); f16 mask: the same pattern as an");
    println!("             f16 additive mask [1,1,512,512], broadcast over heads; cap+mask: that and soft-cap {SOFT_CAP}");
    println!("             decode f16 pad mask: one query, mask [1,1,1,4096] with the last {PADDING_KEYS} keys −inf");
    println!(
        "             alibi+sinks: ALiBi max bias {ALIBI_MAX_BIAS} times an f16 mask −|p−j| [1,1,64,1024], one sink logit per head"
    );
    println!("  scores     uniform in ±{SCORE_RANGE} (±{LOGIT_RANGE} once scaled); sinks uniform in ±{LOGIT_RANGE}");
    println!(
        "  softmax    softmax_rows of the same scores (no scale, no mask), auto, same threads: the yardstick"
    );
    println!(
        "  ×softmax   Gelem/s ÷ the softmax's (every score counted, hidden ones too) in this run; targets: \
         f16 masks ≥ 0.85 (an extra read), causal ≥ 1/0.6 (time ≤ 0.6×), cap+mask ≥ 0.6"
    );
    println!("  timing     median of the samples, the variant and the softmax taking turns sample by sample");
    println!(
        "  check      every output written; every row of the variant and the softmax's first two and last \
         two rows vs the scalar ISA: max|Δ| is |Δ| / the row's largest |ref| ≤ {ATTENTION_TOLERANCE:e}"
    );
    println!("  ggml's soft_max_ext: not measured (no ggml build in the report)");
}

pub const SAMPLING_TABLE_HEADER: &str =
    "shape        sampler                    kept    µs/call   Gelem/s  ×softmax  target     ×full-sort  target        check";

/// One row of the sampling table; `kept`: tokens the case keeps, when known.
pub fn sampling_row(r: &Record, kept: Option<usize>) -> String {
    let (time_target, speedup_target) = match r.op {
        Op::Sampling(case) => (
            sampling::time_target(case, 1.0 / r.vs_forward),
            sampling::speedup_target(case, r.vs_full_sort),
        ),
        _ => (String::new(), String::new()),
    };
    format!(
        "{:<12} {:<24} {:>6} {:>10.2} {:>9.3} {:>9.3}  {:<9} {:>11.1}  {:<9} {:>9} {}",
        r.shape,
        r.op.name(),
        kept.map_or("-".into(), |k| k.to_string()),
        r.m.seconds_per_call * 1e6,
        r.gelem(),
        1.0 / r.vs_forward,
        time_target,
        r.vs_full_sort,
        speedup_target,
        match r.op {
            Op::Sampling(Case::Softmax | Case::FullSort) => error_text(r.m.error),
            _ if r.m.error.is_finite() => format!("z {:.1}", r.m.error),
            _ => "mismatch".into(),
        },
        if r.ok() { "✓" } else { "✗" }
    )
}

/// What the sampling table measured and how to read it.
pub fn print_sampling_header(cols: &[usize], samples: usize) {
    use sampling::{MIN_P, PEAKS, TOP_K, TOP_P};
    let peaks: Vec<String> = PEAKS.iter().map(|p| p.to_string()).collect();
    let cols: Vec<String> = cols.iter().map(|c| c.to_string()).collect();
    println!(
        "sampling: one f32 row of {} tokens, one thread, {} (the detected ISA), t = {}",
        cols.join(" and "),
        Isa::detect(),
        sampling::TEMPERATURE
    );
    println!(
        "  logits     N(0, {}²), seeded, with {} peaked tokens at {}",
        sampling::LOGIT_SIGMA,
        PEAKS.len(),
        peaks.join(", ")
    );
    println!("  cases      softmax: Softmax::softmax, out of place, auto (the yardstick)");
    println!(
        "             Sampler::sample: top-k {TOP_K} + top-p {TOP_P} (inverse CDF, Gumbel-max), \
         no truncation (both), min-p {MIN_P} alone, top-p {TOP_P} alone"
    );
    println!(
        "             full-sort-reference: x/t, sort every (value, index) pair, top-k {TOP_K}, \
         softmax over them, top-p {TOP_P} cut, one uniform (f32, scratch reused)"
    );
    println!("  kept       tokens the case keeps: finite truncated_logprobs (the full sort: its own set)");
    println!(
        "  ×softmax   median time per call ÷ the softmax's on the same row in this run \
         (lower is faster); target for top-k+top-p/inverse-cdf: ≤ {}",
        sampling::MAX_TIME_VS_SOFTMAX
    );
    println!(
        "  ×full-sort the full sort's median time ÷ this one's (higher is faster); \
         target for top-k+top-p/inverse-cdf: ≥ {}",
        sampling::MIN_SPEEDUP_VS_FULL_SORT
    );
    println!(
        "  timing     {samples} samples per case, the cases interleaved sample by sample; \
         each call draws at the next step"
    );
    println!(
        "  check      softmax: max|Δ| vs the scalar ISA ≤ {:e}·max(1,|ref|)",
        sampling::SOFTMAX_TOLERANCE
    );
    println!(
        "             samplers: the kept set is the one a full sort in f64 finds; {} draws, all \
         inside it; z: the largest |count − N·p| in standard errors (tokens with p ≥ 1%, the rest \
         pooled) ≤ {}; the scalar ISA's tokens where the draw does not depend on the ISA",
        sampling::DRAWS,
        sampling::Z_LIMIT
    );
    println!(
        "             full sort: the crate's kept set, max|Δp| vs exp(truncated_logprobs) ≤ {:e}",
        sampling::REFERENCE_TOLERANCE
    );
}

pub const PEERS_TABLE_HEADER: &str =
    "shape        cache  thr  op           isa       Gelem/s     GB/s    ×ORT   ×copy    max|Δ|";

pub fn peers_row(r: &Record) -> String {
    format!(
        "{:<12} {:<5} {:>4}  {:<12} {:<7} {:>9.3} {:>8.2} {:>7.2} {:>7.2} {:>9} {}",
        r.shape,
        if r.out_of_cache { "out" } else { "in" },
        r.threads,
        r.op.name(),
        r.op.isa(),
        r.gelem(),
        r.gbytes(),
        r.vs_ort,
        r.vs_copy,
        error_text(r.m.error),
        if r.ok() { "✓" } else { "✗" }
    )
}

pub fn print_peers_header(rt: &Runtime, rounds: usize) {
    println!(
        "side by side: this crate (softmax_rows, auto, {}) against ONNX Runtime {} ({}),",
        Isa::detect(),
        rt.version,
        rt.path.display()
    );
    println!(
        "  one-node Softmax (opset 13) with an I/O binding; the same buffers, {rounds} alternating rounds;"
    );
    println!("  ×ORT: median over rounds of ONNX Runtime's time ÷ this one's in the same round (> 1: faster);");
    println!(
        "  ONNX Runtime's time is a whole Run (the session's per-call work, a few µs, included)"
    );
    println!("  thr n: a rayon pool of n for ours (serial under the crate's threshold), n intra-op threads for ONNX Runtime");
}

/// Per thread count: where this crate is ahead of ONNX Runtime and where behind.
pub fn print_peers_summary(records: &[Record], version: &str) {
    let mut threads: Vec<usize> = records.iter().map(|r| r.threads).collect();
    threads.sort_unstable();
    threads.dedup();
    println!(
        "against ONNX Runtime {version} (×ORT of softmax, auto, {}):",
        Isa::detect()
    );
    for t in threads {
        let ours = records
            .iter()
            .filter(|r| r.threads == t && matches!(r.op, Op::Softmax(..)));
        let (ahead, behind): (Vec<&Record>, Vec<&Record>) = ours.partition(|r| r.vs_ort >= 1.0);
        let list = |rs: &[&Record]| match rs.is_empty() {
            true => "none".to_string(),
            false => rs
                .iter()
                .map(|r| format!("{} {:.2}×", r.shape, r.vs_ort))
                .collect::<Vec<_>>()
                .join(", "),
        };
        println!("  {t} thr  ahead: {}", list(&ahead));
        println!("         behind: {}", list(&behind));
        // Against candle (built with --features candle), from the two ×ORT columns.
        let vs_candle: Vec<String> = records
            .iter()
            .filter(|r| r.threads == t && r.op == Op::Candle)
            .filter_map(|c| {
                let ours = records.iter().find(|r| {
                    r.threads == t && r.shape == c.shape && matches!(r.op, Op::Softmax(..))
                })?;
                Some(format!("{} {:.1}×", c.shape, ours.vs_ort / c.vs_ort))
            })
            .collect();
        if !vs_candle.is_empty() {
            println!("         ×candle: {}", vs_candle.join(", "));
        }
    }
    println!();
}

/// One line per (shape, threads): the fastest softmax configuration and what
/// `Algorithm::Auto` on the detected ISA gets, the numbers a README quotes.
pub fn print_summary(records: &[Record]) {
    println!("fastest softmax per shape, and auto on the detected ISA (Gelem/s, ×naive, ×copy)");
    let mut keys: Vec<(Shape, usize)> = Vec::new();
    for r in records {
        if !keys.contains(&(r.shape, r.threads)) {
            keys.push((r.shape, r.threads));
        }
    }
    let numbers =
        |r: &Record| format!("{:>7.3} {:>6.2}× {:>5.2}", r.gelem(), r.vs_naive, r.vs_copy);
    for (shape, threads) in keys {
        let softmax = || {
            records
                .iter()
                .filter(move |r| r.shape == shape && r.threads == threads)
                .filter(|r| matches!(r.op, Op::Softmax(..)))
        };
        let Some(best) = softmax().max_by(|a, b| a.gelem().total_cmp(&b.gelem())) else {
            continue;
        };
        let auto = softmax().find(|r| r.op == Op::Softmax(Isa::detect(), Algorithm::Auto));
        let best_name = format!("{} {}", best.op.isa(), best.op.algorithm());
        println!(
            "  {shape:<12} {threads:>2} thr   best {best_name:<18} {}   {} auto {}",
            numbers(best),
            Isa::detect(),
            auto.map_or("-".into(), numbers)
        );
    }
    println!();
}

/// What was measured, where and how: everything needed to read the table.
pub fn print_header(machine: &Machine, config: &Config, seconds: f64) {
    let llc_source = machine.llc_source;
    let llc_bytes = machine.llc_bytes;
    println!("softmax report");
    println!(
        "  cpu        {} ({} logical cores)",
        machine.cpu, machine.cores
    );
    println!(
        "  llc        {} MiB ({llc_source})",
        llc_bytes as f64 / (1 << 20) as f64
    );
    println!(
        "  isa        detected {}; available {}; measured {}",
        Isa::detect(),
        isa_names(&Isa::available()),
        isa_names(&config.isas)
    );
    println!(
        "  build      {} profile, {}; compile-time features {}",
        BUILD_PROFILE, BUILD_TARGET, BUILD_TARGET_FEATURES
    );
    println!(
        "  timing     median of up to {} samples over ~{seconds:.3} s per configuration; threads {} \
         (1 = Parallelism::Serial, n = rayon pool of n)",
        config.samples,
        config
            .threads
            .iter()
            .map(|t| t.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!("  input      logits uniform in ±{LOGIT_RANGE}; GB/s counts each element read and written once");
    println!(
        "  check      every row vs the scalar ISA, three-pass: |Δ| ≤ {TOLERANCE:e}·max(1,|ref|)"
    );
    println!("  rows/call  the whole batch, unless one call would not fit the time (slow ISAs on big shapes): then blocks of rows, walked through the batch");
    println!("  ×naive     throughput / naive scalar softmax; ×copy: / copy-scale y = c·x (same shape, threads)");
    if config.threads.iter().any(|&t| t > 1) {
        println!(
            "  note       shapes under {} elements or with one row run on one thread whatever the pool, \
             so they are measured with 1 thread only",
            softmax::PARALLEL_MIN_ELEMENTS
        );
    }
    if let Some(busy) = machine.busy_before {
        println!(
            "  other work {busy:.2} of {} cores busy just before the run{}",
            machine.cores,
            if busy > BUSY_WARNING {
                " — expect low, noisy numbers"
            } else {
                ""
            }
        );
    }
}
