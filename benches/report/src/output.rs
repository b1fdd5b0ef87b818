//! The report's files: results.csv and results.json (one row or object per
//! record, the same fields in both), and throughput.svg.

use crate::flags::Config;
use crate::machine::{Machine, BUILD_PROFILE, BUILD_TARGET, BUILD_TARGET_FEATURES};
use crate::svg;
use serde::Serialize;
use softmax::Isa;
use softmax_report::record::{Op, Record, Section};
use softmax_report::workload::{LOGIT_RANGE, TOLERANCE};
use std::path::Path;

/// One record, as a CSV row and as an object of the JSON `results`.
#[derive(Serialize)]
struct Row {
    shape: String,
    rows: usize,
    cols: usize,
    op: &'static str,
    algorithm: &'static str,
    isa: String,
    threads: usize,
    out_of_cache: bool,
    buffer_sets: usize,
    rows_per_call: usize,
    seconds_per_call: f64,
    gelem_per_s: f64,
    gbytes_per_s: f64,
    vs_naive: f64,
    vs_copy_scale: f64,
    max_error: f64,
    ok: bool,
    samples: usize,
    calls_per_sample: usize,
    section: &'static str,
    in_type: &'static str,
    out_type: &'static str,
    vs_f32: f64,
    tolerance: f64,
    vs_forward: f64,
    time_vs_forward: f64,
    vs_full_sort: f64,
    vs_onnxruntime: f64,
    forward_seconds_per_call: f64,
}

impl Row {
    fn new(r: &Record) -> Row {
        Row {
            shape: r.shape.to_string(),
            rows: r.shape.rows,
            cols: r.shape.cols,
            op: r.op.name(),
            algorithm: r.op.algorithm(),
            isa: r.op.isa(),
            threads: r.threads,
            out_of_cache: r.out_of_cache,
            buffer_sets: r.buffer_sets,
            rows_per_call: r.m.block_rows,
            seconds_per_call: r.m.seconds_per_call,
            gelem_per_s: r.gelem(),
            gbytes_per_s: r.gbytes(),
            vs_naive: r.vs_naive,
            vs_copy_scale: r.vs_copy,
            max_error: r.m.error,
            ok: r.ok(),
            samples: r.m.samples,
            calls_per_sample: r.m.calls_per_sample,
            section: r.section.name(),
            in_type: r.elements.input.name(),
            out_type: r.elements.output.name(),
            vs_f32: r.vs_f32,
            tolerance: r.tolerance(),
            vs_forward: r.vs_forward,
            time_vs_forward: 1.0 / r.vs_forward,
            vs_full_sort: r.vs_full_sort,
            vs_onnxruntime: r.vs_ort,
            forward_seconds_per_call: r.forward.map_or(f64::NAN, |m| m.seconds_per_call),
        }
    }
}

/// A header line, then one line per record; NaN where a ratio does not apply.
pub fn csv(records: &[Record]) -> Result<String, String> {
    let mut out = csv::Writer::from_writer(Vec::new());
    for r in records {
        out.serialize(Row::new(r)).map_err(|e| e.to_string())?;
    }
    let bytes = out.into_inner().map_err(|e| e.to_string())?;
    String::from_utf8(bytes).map_err(|e| e.to_string())
}

#[derive(Serialize)]
struct Document {
    machine: MachineFacts,
    settings: Settings,
    results: Vec<Row>,
}

#[derive(Serialize)]
struct MachineFacts {
    cpu: String,
    cores: usize,
    busy_cores_before: Option<f64>,
    busy_cores_after: Option<f64>,
    llc_bytes: usize,
    llc_source: &'static str,
    isa_detected: &'static str,
    isas_available: Vec<&'static str>,
    profile: &'static str,
    target: &'static str,
    target_features: &'static str,
}

#[derive(Serialize)]
struct Settings {
    seconds_per_configuration: f64,
    samples: usize,
    tolerance: f64,
    logit_range: f64,
    threads: Vec<usize>,
    half_precision_pairs: Vec<String>,
    half_precision_shapes: Vec<String>,
    training_shape: Option<String>,
    attention_variants: Vec<&'static str>,
    sampling_cols: Vec<usize>,
    /// The ONNX Runtime of the side-by-side table (none: no table).
    onnxruntime_version: Option<String>,
}

/// The machine, the settings and every record; NaN and infinities are null.
pub fn json(
    machine: &Machine,
    config: &Config,
    (seconds, ort_version): (f64, Option<&str>),
    records: &[Record],
) -> String {
    let document = Document {
        machine: MachineFacts {
            cpu: machine.cpu.clone(),
            cores: machine.cores,
            busy_cores_before: machine.busy_before,
            busy_cores_after: machine.busy_after,
            llc_bytes: machine.llc_bytes,
            llc_source: machine.llc_source,
            isa_detected: Isa::detect().name(),
            isas_available: Isa::available().iter().map(|i| i.name()).collect(),
            profile: BUILD_PROFILE,
            target: BUILD_TARGET,
            target_features: BUILD_TARGET_FEATURES,
        },
        settings: Settings {
            seconds_per_configuration: seconds,
            samples: config.samples,
            tolerance: TOLERANCE,
            logit_range: LOGIT_RANGE as f64,
            threads: config.threads.clone(),
            half_precision_pairs: config
                .pairs
                .iter()
                .map(|p| format!("{}-{}", p.input.name(), p.output.name()))
                .collect(),
            half_precision_shapes: config.half_shapes.iter().map(|s| s.to_string()).collect(),
            training_shape: config.training.map(|s| s.to_string()),
            attention_variants: config.attention.iter().map(|v| v.name()).collect(),
            sampling_cols: config.sampling.clone(),
            onnxruntime_version: ort_version.map(str::to_string),
        },
        results: records.iter().map(Row::new).collect(),
    };
    let mut text = serde_json::to_string_pretty(&document).expect("plain data serialises");
    text.push('\n');
    text
}

/// Softmax G elements/s against row length, one panel per thread count.
pub fn chart(records: &[Record], config: &Config, cpu: &str) -> String {
    const ALGORITHM_COLORS: [(&str, &str); 3] = [
        ("three-pass", "#1f77b4"),
        ("online", "#2ca02c"),
        ("auto", "#d62728"),
    ];
    let color = |op: Op| match op {
        Op::Naive => "#7f7f7f",
        Op::CopyScale => "#000000",
        _ => ALGORITHM_COLORS
            .iter()
            .find(|(name, _)| *name == op.algorithm())
            .map_or("#9467bd", |(_, c)| c),
    };
    // Line style tells the ISA apart; colour tells the algorithm.
    let dash = |op: Op| match op {
        Op::Naive => "2,3",
        Op::CopyScale => "",
        Op::Softmax(Isa::Scalar, _) => "5,4",
        Op::Softmax(Isa::Avx512, _) => "10,3,2,3",
        _ => "",
    };
    // The f32 table only: the half-precision one repeats auto on other element types.
    let records: Vec<&Record> = records
        .iter()
        .filter(|r| r.section == Section::Main)
        .collect();
    let charted = |op: Op| matches!(op, Op::Naive | Op::CopyScale | Op::Softmax(..));
    let mut panels = Vec::new();
    for &threads in &config.threads {
        let here: Vec<&Record> = records
            .iter()
            .copied()
            .filter(|r| r.threads == threads && charted(r.op))
            .collect();
        if here.is_empty() {
            continue;
        }
        let mut series: Vec<svg::Series> = Vec::new();
        for r in &here {
            let label = match r.op {
                Op::Softmax(isa, a) => format!("{isa} {}", a.name()),
                Op::Naive => "naive scalar softmax".into(),
                _ => format!("copy-scale ({})", r.op.isa()),
            };
            // One line per (ISA, algorithm) through the in-cache shapes; where two
            // in-cache shapes share a row length the larger batch is on the line.
            let on_line = !r.out_of_cache
                && !here.iter().any(|o| {
                    o.op == r.op
                        && !o.out_of_cache
                        && o.shape.cols == r.shape.cols
                        && o.shape.rows > r.shape.rows
                });
            let point = svg::Point {
                x: r.shape.cols as f64,
                y: r.gelem(),
                on_line,
            };
            match series.iter_mut().find(|s| s.label == label) {
                Some(s) => s.points.push(point),
                None => series.push(svg::Series {
                    label,
                    color: color(r.op),
                    dash: dash(r.op),
                    points: vec![point],
                }),
            }
        }
        panels.push(svg::Panel {
            title: match threads {
                1 => "1 thread".into(),
                n => format!("{n} threads (rayon pool)"),
            },
            series,
        });
    }
    svg::render(&svg::Chart {
        title: format!("softmax throughput, {}", cpu),
        x_label: "row length (elements, log scale)".into(),
        y_label: "G elements/s (log scale)".into(),
        x_ticks: {
            let mut cols: Vec<f64> = records.iter().map(|r| r.shape.cols as f64).collect();
            cols.sort_by(f64::total_cmp);
            cols.dedup();
            cols
        },
        notes: vec![
            "Filled markers on lines: in-cache shapes (the largest batch per row length).".into(),
            "Hollow markers: out-of-cache shapes and smaller batches of a row length already on the line.".into(),
            "Colour: algorithm; dashes: ISA (scalar dashed, AVX-512 dash-dot); grey: naive loop; black: copy-scale.".into(),
        ],
        panels,
    })
}

/// ×ORT of the crate's softmax against row length, one series per thread
/// count; None without a side-by-side table.
pub fn peers_chart(records: &[Record], cpu: &str, version: &str) -> Option<String> {
    const COLORS: [&str; 4] = ["#d62728", "#1f77b4", "#2ca02c", "#9467bd"];
    let ours: Vec<&Record> = records
        .iter()
        .filter(|r| r.section == Section::Peers && matches!(r.op, Op::Softmax(..)))
        .collect();
    if ours.is_empty() {
        return None;
    }
    let mut threads: Vec<usize> = ours.iter().map(|r| r.threads).collect();
    threads.sort_unstable();
    threads.dedup();
    let series = threads
        .iter()
        .enumerate()
        .map(|(i, &t)| {
            let here: Vec<&&Record> = ours.iter().filter(|r| r.threads == t).collect();
            let points = here
                .iter()
                .map(|r| svg::Point {
                    x: r.shape.cols as f64,
                    y: r.vs_ort,
                    // Single rows on the line; batches as markers beside it.
                    on_line: r.shape.rows == 1,
                })
                .collect();
            svg::Series {
                label: format!("{t} thread(s)"),
                color: COLORS[i % COLORS.len()],
                dash: "",
                points,
            }
        })
        .collect();
    let mut cols: Vec<f64> = ours.iter().map(|r| r.shape.cols as f64).collect();
    cols.sort_by(f64::total_cmp);
    cols.dedup();
    let shapes: Vec<String> = ours
        .iter()
        .filter(|r| r.threads == threads[0])
        .map(|r| format!("{} {:.2}×", r.shape, r.vs_ort))
        .collect();
    Some(svg::render(&svg::Chart {
        title: format!("softmax vs ONNX Runtime {version}, side by side, {cpu}"),
        x_label: "row length (elements, log scale)".into(),
        y_label: "ONNX Runtime time ÷ ours (log scale; > 1: faster)".into(),
        x_ticks: cols,
        notes: vec![
            format!(
                "Softmax, auto, {}; medians of per-round ratios on the same buffers.",
                Isa::detect()
            ),
            "Markers on lines: single rows; markers off them: batches.".into(),
            format!("{} thread(s): {}", threads[0], shapes.join(", ")),
        ],
        panels: vec![svg::Panel {
            title: "×ORT".into(),
            series,
        }],
    }))
}

/// Writes each (file name, contents) into `dir`, creating it first.
pub fn write(dir: &Path, files: &[(&str, String)]) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    for (name, text) in files {
        let path = dir.join(name);
        std::fs::write(&path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    Ok(())
}
