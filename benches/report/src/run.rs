//! One run of the report: the tables in order, progress on stderr, the files
//! at the end, and whether every configuration passed its check.

use crate::flags::Config;
use crate::machine::{busy_cores, Machine};
use crate::{output, tables};
use softmax_report::attention::Variant;
use softmax_report::measure::{self, out_of_cache, thread_counts, Pool, Reference, Workload};
use softmax_report::peers::{self, onnxruntime::Runtime};
use softmax_report::record::{Op, Record};
use softmax_report::sampling::Case;
use softmax_report::training::Pass;
use softmax_report::workload::Shape;
use std::sync::Arc;
use std::time::Instant;

/// Measuring time the default run spreads over its configurations. Probes,
/// checks and the scalar reference come on top (about a third more), which
/// keeps the whole default run under a minute on a 2-core machine.
const DEFAULT_BUDGET_S: f64 = 30.0;

/// How a run failed.
pub enum Failure {
    /// Some configurations differ from the scalar ISA (exit status 1).
    Check,
    /// The output files could not be written (exit status 2).
    Output(String),
}

/// The state of a run: its configuration, the machine, the thread pools, and
/// the records so far.
struct Run<'a> {
    config: &'a Config,
    machine: Machine,
    ops: Vec<Op>,
    pools: Vec<Pool>,
    /// Measuring time per configuration.
    seconds: f64,
    configurations: usize,
    records: Vec<Record>,
    /// The ONNX Runtime the side-by-side table ran against.
    ort_version: Option<String>,
    started: Instant,
}

/// Measures every table of `config`, prints them, writes the files.
pub fn run(config: &Config) -> Result<(), Failure> {
    let mut run = Run::new(config);
    tables::print_header(&run.machine, config, run.seconds);
    println!();
    run.main_table();
    tables::print_summary(&run.records);
    run.peers_table();
    // After the summary, which covers the f32 table only; the records join the files.
    run.half_table();
    run.training_table();
    run.attention_table();
    run.sampling_table();
    run.finish()
}

impl<'a> Run<'a> {
    fn new(config: &'a Config) -> Self {
        let started = Instant::now();
        let machine = Machine::probe();
        let ops = measure::ops(&config.isas, &config.algorithms);
        let configurations_of = |shape: Shape, per_thread_count: usize| {
            thread_counts(&config.threads, shape).len() * per_thread_count
        };
        let configurations: usize = config
            .shapes
            .iter()
            .map(|&s| configurations_of(s, ops.len()))
            .chain(
                config
                    .half_shapes
                    .iter()
                    .map(|&s| configurations_of(s, config.pairs.len())),
            )
            .chain(
                config
                    .training
                    .map(|s| configurations_of(s, Pass::ALL.len())),
            )
            .sum::<usize>()
            + config
                .attention
                .iter()
                .map(|&v| configurations_of(attention_shape(v), 1))
                .sum::<usize>()
            + config.sampling.len() * Case::ALL.len()
            + match config.peers.is_empty() {
                true => 0,
                false => config.shapes.len() * config.threads.len() * peers::contestants().len(),
            };
        let seconds = config
            .seconds
            .unwrap_or((DEFAULT_BUDGET_S / configurations as f64).clamp(0.02, 0.3));
        let pools = config
            .threads
            .iter()
            .map(|&n| {
                let pool = (n > 1).then(|| {
                    let pool = rayon::ThreadPoolBuilder::new().num_threads(n).build();
                    Arc::new(pool.expect("a rayon pool"))
                });
                (n, pool)
            })
            .collect();
        Run {
            config,
            machine,
            ops,
            pools,
            seconds,
            configurations,
            records: Vec::new(),
            ort_version: None,
            started,
        }
    }

    /// The pools of the thread counts `shape` is measured with.
    fn pools_for(&self, shape: Shape) -> Vec<Pool> {
        let pool = |threads| {
            let found = self.pools.iter().find(|(n, _)| *n == threads);
            found.expect("a pool per thread count").clone()
        };
        thread_counts(&self.config.threads, shape)
            .into_iter()
            .map(pool)
            .collect()
    }

    fn timing(&self) -> (f64, usize) {
        (self.seconds, self.config.samples)
    }

    /// "[label] what: n configurations; done/total done, t s elapsed" on stderr.
    fn progress(&self, label: &str, what: String, configurations: usize) {
        eprintln!(
            "[{label}] {what}: {configurations} configurations; {}/{} done, {:.1} s elapsed",
            self.records.len(),
            self.configurations,
            self.started.elapsed().as_secs_f64()
        );
    }

    /// Prints and keeps `records`, followed by a blank line.
    fn keep(&mut self, records: Vec<Record>, row: impl Fn(&Record) -> String) {
        for record in records {
            println!("{}", row(&record));
            self.records.push(record);
        }
        println!();
    }

    fn main_table(&mut self) {
        println!("{}", tables::TABLE_HEADER);
        let shapes = &self.config.shapes;
        for (index, &shape) in shapes.iter().enumerate() {
            let mut work = Workload::new(shape, self.machine.llc_bytes);
            let reference = Reference::new(&work);
            let cache_note = match work.out_of_cache {
                true => format!("out of cache, {} buffer set(s) rotated", work.sets()),
                false => "in cache".to_string(),
            };
            let pools = self.pools_for(shape);
            let label = format!("{}/{}", index + 1, shapes.len());
            let what = format!("{shape} ({cache_note})");
            self.progress(&label, what, pools.len() * self.ops.len());
            for pool in pools {
                let group =
                    measure::measure_group(&mut work, &reference, &self.ops, pool, self.timing());
                for record in group {
                    println!("{}", tables::table_row(&record));
                    self.records.push(record);
                }
            }
            println!();
        }
    }

    /// The side-by-side table: every shape at every thread count (a batch
    /// the crate runs serially is still compared with ONNX Runtime's threads).
    fn peers_table(&mut self) {
        if self.config.peers.is_empty() {
            return;
        }
        let rt = match Runtime::load() {
            Ok(rt) => rt,
            Err(why) => {
                println!("side by side: no ONNX Runtime, table left out: {why}");
                println!();
                return;
            }
        };
        tables::print_peers_header(&rt, self.config.samples);
        println!();
        println!("{}", tables::PEERS_TABLE_HEADER);
        let shapes = &self.config.shapes;
        let mut records = Vec::new();
        for (index, &shape) in shapes.iter().enumerate() {
            let label = format!("peers {}/{}", index + 1, shapes.len());
            let contestants = peers::contestants().len();
            self.progress(&label, shape.to_string(), self.pools.len() * contestants);
            for pool in self.pools.clone() {
                let llc_bytes = self.machine.llc_bytes;
                let timing = self.timing();
                match peers::measure_peers(&rt, shape, pool, llc_bytes, timing) {
                    Ok(group) => {
                        for record in group {
                            println!("{}", tables::peers_row(&record));
                            records.push(record);
                        }
                    }
                    Err(e) => println!("{shape:<12} ONNX Runtime failed: {e}"),
                }
            }
            println!();
        }
        tables::print_peers_summary(&records, &rt.version);
        self.ort_version = Some(rt.version.clone());
        self.records.extend(records);
    }

    fn half_table(&mut self) {
        let shapes = &self.config.half_shapes;
        if !shapes.is_empty() {
            tables::print_half_header(self.config);
            println!();
            println!("{}", tables::HALF_TABLE_HEADER);
        }
        for (index, &shape) in shapes.iter().enumerate() {
            let pools = self.pools_for(shape);
            let llc_bytes = self.machine.llc_bytes;
            let cache_note = match out_of_cache(shape, llc_bytes) {
                true => "out of cache",
                false => "in cache",
            };
            let pairs = &self.config.pairs;
            let label = format!("half {}/{}", index + 1, shapes.len());
            self.progress(
                &label,
                format!("{shape} ({cache_note})"),
                pools.len() * pairs.len(),
            );
            let group = measure::measure_half_shape(shape, pairs, &pools, llc_bytes, self.timing());
            self.keep(group, tables::half_row);
        }
    }

    fn training_table(&mut self) {
        let Some(shape) = self.config.training else {
            return;
        };
        let pools = self.pools_for(shape);
        tables::print_training_header(shape);
        println!();
        println!("{}", tables::TRAINING_TABLE_HEADER);
        self.progress("training", shape.to_string(), pools.len() * Pass::ALL.len());
        let llc_bytes = self.machine.llc_bytes;
        let group = measure::measure_training_shape(shape, &pools, llc_bytes, self.timing());
        self.keep(group, tables::training_row);
    }

    fn attention_table(&mut self) {
        let variants = &self.config.attention;
        if variants.is_empty() {
            return;
        }
        tables::print_attention_header();
        println!();
        println!("{}", tables::ATTENTION_TABLE_HEADER);
        for &variant in variants {
            let pools = self.pools_for(attention_shape(variant));
            self.progress("attention", variant.name().to_string(), pools.len());
            let llc_bytes = self.machine.llc_bytes;
            let group =
                measure::measure_attention_variant(variant, &pools, llc_bytes, self.timing());
            for record in group {
                println!("{}", tables::attention_row(&record));
                self.records.push(record);
            }
        }
        println!();
    }

    fn sampling_table(&mut self) {
        let config = self.config;
        if !config.sampling.is_empty() {
            tables::print_sampling_header(&config.sampling, config.samples);
            println!();
            println!("{}", tables::SAMPLING_TABLE_HEADER);
        }
        for &cols in &config.sampling {
            self.progress("sampling", format!("1x{cols}"), Case::ALL.len());
            let llc_bytes = self.machine.llc_bytes;
            let group = measure::measure_sampling_row(cols, llc_bytes, self.timing());
            for (record, kept) in group {
                println!("{}", tables::sampling_row(&record, kept));
                self.records.push(record);
            }
            println!();
        }
    }

    /// Writes the files and says whether every configuration passed.
    fn finish(mut self) -> Result<(), Failure> {
        self.machine.busy_after = busy_cores();
        let (config, records) = (self.config, &self.records);
        let mut files = vec![
            (
                "results.csv",
                output::csv(records).map_err(Failure::Output)?,
            ),
            (
                "results.json",
                output::json(
                    &self.machine,
                    config,
                    (self.seconds, self.ort_version.as_deref()),
                    records,
                ),
            ),
            (
                "throughput.svg",
                output::chart(records, config, &self.machine.cpu),
            ),
        ];
        let version = self.ort_version.as_deref().unwrap_or("-");
        if let Some(chart) = output::peers_chart(records, &self.machine.cpu, version) {
            files.push(("peers.svg", chart));
        }
        output::write(&config.out, &files).map_err(Failure::Output)?;
        let elapsed = self.started.elapsed().as_secs_f64();
        eprintln!("done: {} configurations in {elapsed:.1} s", records.len());
        let names: Vec<&str> = files.iter().map(|(name, _)| *name).collect();
        println!(
            "wrote {} into {} in {elapsed:.1} s",
            names.join(", "),
            config.out.display()
        );
        if let Some(busy) = self.machine.busy_after {
            println!(
                "other work: {busy:.2} of {} cores busy just after the run",
                self.machine.cores
            );
        }
        let failed: Vec<&Record> = records.iter().filter(|r| !r.ok()).collect();
        if failed.is_empty() {
            println!(
                "✓ all {} configurations agree with the scalar ISA",
                records.len()
            );
            return Ok(());
        }
        println!(
            "✗ {} of {} configurations differ from the scalar ISA:",
            failed.len(),
            records.len()
        );
        for r in &failed {
            println!("  {}", tables::table_row(r));
        }
        Err(Failure::Check)
    }
}

/// The rows × keys an attention variant's calls cover: what its thread
/// counts and its share of the time budget go by.
fn attention_shape(variant: Variant) -> Shape {
    let [batch, heads, queries, keys] = variant.dims();
    Shape::new(batch * heads * queries, keys)
}
