//! The report's files: results.csv and results.json (one row or object per
//! record, the same fields in both), and throughput.svg.

use crate::flags::Config;
use crate::machine::{Machine, BUILD_PROFILE, BUILD_TARGET, BUILD_TARGET_FEATURES};
use crate::record::{Op, Record, Section};
use crate::svg;
use softmax::Isa;
use softmax_report::workload::{LOGIT_RANGE, TOLERANCE};
use std::fmt::Write as _;
use std::path::Path;

const CSV_HEADER: &str = "shape,rows,cols,op,algorithm,isa,threads,out_of_cache,buffer_sets,\
rows_per_call,seconds_per_call,gelem_per_s,gbytes_per_s,vs_naive,vs_copy_scale,max_error,ok,samples,calls_per_sample,\
section,in_type,out_type,vs_f32,tolerance,vs_forward,time_vs_forward,vs_full_sort";

/// A header line, then one line per record; NaN where a ratio does not apply.
pub fn csv(records: &[Record]) -> Result<String, String> {
    let mut csv = format!("{CSV_HEADER}\n");
    for r in records {
        csv.push_str(&csv_row(r));
        csv.push('\n');
    }
    Ok(csv)
}

fn csv_row(r: &Record) -> String {
    format!(
        "{},{},{},{},{},{},{},{},{},{},{:e},{:.6},{:.6},{:.4},{:.4},{:e},{},{},{},{},{},{},{:.4},{:e},{:.4},{:.4},{:.4}",
        r.shape,
        r.shape.rows,
        r.shape.cols,
        r.op.name(),
        r.op.algorithm(),
        r.op.isa(),
        r.threads,
        r.out_of_cache,
        r.buffer_sets,
        r.m.block_rows,
        r.m.seconds_per_call,
        r.gelem(),
        r.gbytes(),
        r.vs_naive,
        r.vs_copy,
        r.m.error,
        r.ok(),
        r.m.samples,
        r.m.calls_per_sample,
        r.section.name(),
        r.elements.input.name(),
        r.elements.output.name(),
        r.vs_f32,
        r.tolerance(),
        r.vs_forward,
        1.0 / r.vs_forward,
        r.vs_full_sort
    )
}

fn json_string(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// JSON has no NaN or infinity.
fn json_number(v: f64) -> String {
    match v.is_finite() {
        true => format!("{v}"),
        false => "null".into(),
    }
}

/// The machine, the settings and every record; NaN and infinities are null.
pub fn json(machine: &Machine, config: &Config, seconds: f64, records: &[Record]) -> String {
    let strings = |items: Vec<String>| {
        let quoted: Vec<String> = items.iter().map(|s| json_string(s)).collect();
        format!("[{}]", quoted.join(", "))
    };
    let mut out = String::from("{\n");
    let _ = writeln!(out, "  \"machine\": {{");
    let _ = writeln!(out, "    \"cpu\": {},", json_string(&machine.cpu));
    let _ = writeln!(out, "    \"cores\": {},", machine.cores);
    let busy = |b: Option<f64>| b.map_or("null".into(), json_number);
    let _ = writeln!(
        out,
        "    \"busy_cores_before\": {},",
        busy(machine.busy_before)
    );
    let _ = writeln!(
        out,
        "    \"busy_cores_after\": {},",
        busy(machine.busy_after)
    );
    let _ = writeln!(out, "    \"llc_bytes\": {},", machine.llc_bytes);
    let _ = writeln!(
        out,
        "    \"llc_source\": {},",
        json_string(machine.llc_source)
    );
    let _ = writeln!(
        out,
        "    \"isa_detected\": {},",
        json_string(Isa::detect().name())
    );
    let available = Isa::available()
        .iter()
        .map(|i| i.name().to_string())
        .collect();
    let _ = writeln!(out, "    \"isas_available\": {},", strings(available));
    let _ = writeln!(out, "    \"profile\": {},", json_string(BUILD_PROFILE));
    let _ = writeln!(out, "    \"target\": {},", json_string(BUILD_TARGET));
    let _ = writeln!(
        out,
        "    \"target_features\": {}",
        json_string(BUILD_TARGET_FEATURES)
    );
    let _ = writeln!(out, "  }},");
    let _ = writeln!(out, "  \"settings\": {{");
    let _ = writeln!(
        out,
        "    \"seconds_per_configuration\": {},",
        json_number(seconds)
    );
    let _ = writeln!(out, "    \"samples\": {},", config.samples);
    let _ = writeln!(out, "    \"tolerance\": {},", json_number(TOLERANCE));
    let _ = writeln!(
        out,
        "    \"logit_range\": {},",
        json_number(LOGIT_RANGE as f64)
    );
    let threads = config
        .threads
        .iter()
        .map(|t| t.to_string())
        .collect::<Vec<_>>();
    let _ = writeln!(out, "    \"threads\": [{}],", threads.join(", "));
    let pairs = config
        .pairs
        .iter()
        .map(|p| format!("{}-{}", p.input.name(), p.output.name()))
        .collect();
    let _ = writeln!(out, "    \"half_precision_pairs\": {},", strings(pairs));
    let shapes = config.half_shapes.iter().map(|s| s.to_string()).collect();
    let _ = writeln!(out, "    \"half_precision_shapes\": {},", strings(shapes));
    let training = config
        .training
        .map_or("null".into(), |s| json_string(&s.to_string()));
    let _ = writeln!(out, "    \"training_shape\": {training},");
    let sampling = config
        .sampling
        .iter()
        .map(|c| c.to_string())
        .collect::<Vec<_>>();
    let _ = writeln!(out, "    \"sampling_cols\": [{}]", sampling.join(", "));
    let _ = writeln!(out, "  }},");
    let _ = writeln!(out, "  \"results\": [");
    for (i, r) in records.iter().enumerate() {
        let fields = [
            ("shape", json_string(&r.shape.to_string())),
            ("rows", r.shape.rows.to_string()),
            ("cols", r.shape.cols.to_string()),
            ("op", json_string(r.op.name())),
            ("algorithm", json_string(r.op.algorithm())),
            ("isa", json_string(&r.op.isa())),
            ("threads", r.threads.to_string()),
            ("out_of_cache", r.out_of_cache.to_string()),
            ("buffer_sets", r.buffer_sets.to_string()),
            ("rows_per_call", r.m.block_rows.to_string()),
            ("seconds_per_call", json_number(r.m.seconds_per_call)),
            ("gelem_per_s", json_number(r.gelem())),
            ("gbytes_per_s", json_number(r.gbytes())),
            ("vs_naive", json_number(r.vs_naive)),
            ("vs_copy_scale", json_number(r.vs_copy)),
            ("max_error", json_number(r.m.error)),
            ("ok", r.ok().to_string()),
            ("samples", r.m.samples.to_string()),
            ("calls_per_sample", r.m.calls_per_sample.to_string()),
            ("section", json_string(r.section.name())),
            ("in_type", json_string(r.elements.input.name())),
            ("out_type", json_string(r.elements.output.name())),
            ("vs_f32", json_number(r.vs_f32)),
            ("tolerance", json_number(r.tolerance())),
            ("vs_forward", json_number(r.vs_forward)),
            ("time_vs_forward", json_number(1.0 / r.vs_forward)),
            ("vs_full_sort", json_number(r.vs_full_sort)),
        ];
        let body: Vec<String> = fields
            .iter()
            .map(|(k, v)| format!("{}: {v}", json_string(k)))
            .collect();
        let comma = if i + 1 < records.len() { "," } else { "" };
        let _ = writeln!(out, "    {{{}}}{comma}", body.join(", "));
    }
    out.push_str("  ]\n}\n");
    out
}

/// Softmax G elements/s against row length, one panel per thread count.
pub fn chart(records: &[Record], config: &Config, cpu: &str) -> String {
    const ALGORITHM_COLORS: [(&str, &str); 4] = [
        ("three-pass", "#1f77b4"),
        ("two-pass", "#ff7f0e"),
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

/// Writes each (file name, contents) into `dir`, creating it first.
pub fn write(dir: &Path, files: &[(&str, String)]) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    for (name, text) in files {
        let path = dir.join(name);
        std::fs::write(&path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_escapes() {
        assert_eq!(json_string("a\"b\\c\n"), r#""a\"b\\c\u000a""#);
        assert_eq!(json_number(f64::NAN), "null");
    }
}
