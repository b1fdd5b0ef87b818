//! How the report times a configuration: a probe call sizes the work, one
//! checked call, then the median of a few samples of calls that walk through
//! the batch and its buffer sets.

use crate::workload::Shape;
use std::time::Instant;

/// The probe call covers at least this many elements (whole rows).
const PROBE_ELEMENTS: usize = 1 << 16;
/// A configuration keeps whole-batch calls only if this many of them fit in its time.
const MIN_SAMPLES: usize = 3;

/// Where a call works: buffer set `set`, from row `row`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slot {
    pub set: usize,
    pub row: usize,
}

impl Slot {
    pub const START: Slot = Slot { set: 0, row: 0 };
}

/// What one configuration's timing found.
#[derive(Clone, Copy, Debug)]
pub struct Measurement {
    /// Rows each timed call covers: the whole batch, or a block of it when one
    /// whole-batch call would not fit in the configuration's time.
    pub block_rows: usize,
    /// Against the reference, on the first block of set 0.
    pub error: f64,
    /// Median over samples of the mean seconds per call within a sample.
    pub seconds_per_call: f64,
    pub samples: usize,
    pub calls_per_sample: usize,
}

/// Wall seconds `f` takes, never 0.
pub fn seconds_of(f: impl FnOnce()) -> f64 {
    let start = Instant::now();
    f();
    start.elapsed().as_secs_f64().max(1e-9)
}

/// The middle value (the upper one of an even count); sorts `values`.
pub fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// What [`measure`] times: calls on blocks of rows of one shape, in buffer sets.
pub trait Timed {
    fn shape(&self) -> Shape;
    fn sets(&self) -> usize;

    /// One call on `count` rows from `at`.
    fn run(&mut self, at: Slot, count: usize);

    /// One call on the first `count` rows of set 0, with their outputs poisoned
    /// with NaN first so a skipped element cannot pass: its seconds, and its
    /// error against the scalar ISA.
    fn checked_call(&mut self, count: usize) -> (f64, f64);

    /// Where the `call`-th call of `block` rows works: consecutive blocks of
    /// one set, then the next set, so memory is cold again when a block comes round.
    fn slot(&self, block: usize, call: usize) -> Slot {
        let blocks = self.shape().rows / block;
        let index = call % (blocks * self.sets());
        Slot {
            set: index / blocks,
            row: index % blocks * block,
        }
    }
}

/// Checks `job` once and times it for about `seconds`.
///
/// A slow configuration on a big batch (the scalar ISA on 512×32000 takes
/// seconds per call) cannot afford even a few whole-batch calls, so a probe
/// call sizes the work first: whole batches when they fit, else blocks of
/// rows sized to one sample. Consecutive calls walk through the batch (and the
/// buffer sets), so blocks of an out-of-cache shape still meet cold memory.
/// The median sample is kept, which shrugs off one disturbed by another process.
pub fn measure(job: &mut impl Timed, seconds: f64, samples: usize) -> Measurement {
    let Shape { rows, cols } = job.shape();

    // The probe doubles as the warm-up (code, pool threads, page tables).
    let probe_rows = rows.min(PROBE_ELEMENTS.div_ceil(cols));
    let per_row = seconds_of(|| job.run(Slot::START, probe_rows)) / probe_rows as f64;
    let block_rows = match per_row * rows as f64 <= seconds / MIN_SAMPLES as f64 {
        true => rows,
        false => ((seconds / samples as f64 / per_row) as usize).clamp(probe_rows, rows),
    };

    // The check: one block, which also times one call.
    let (one_call, error) = job.checked_call(block_rows);

    // Slow whole-batch calls get fewer samples (down to MIN_SAMPLES) rather than overrun.
    let samples = ((seconds / one_call) as usize).clamp(MIN_SAMPLES.min(samples), samples);
    let calls_per_sample = ((seconds / samples as f64 / one_call) as usize).max(1);
    let mut call = 1;
    let mut per_call: Vec<f64> = (0..samples)
        .map(|_| {
            let sample = seconds_of(|| {
                for _ in 0..calls_per_sample {
                    let at = job.slot(block_rows, call);
                    job.run(at, block_rows);
                    call += 1;
                }
            });
            sample / calls_per_sample as f64
        })
        .collect();
    Measurement {
        block_rows,
        error,
        seconds_per_call: median(&mut per_call),
        samples,
        calls_per_sample,
    }
}

/// Times whole-batch calls of `call` (which returns only its own seconds, so
/// that it can leave untimed work out): `samples` samples of as many calls as
/// fill about `seconds`, at least one; a first call sizes them.
pub fn measure_whole_calls(
    mut call: impl FnMut() -> f64,
    seconds: f64,
    samples: usize,
) -> (f64, usize) {
    let [timing] = measure_whole_calls_alternated(|_| call(), seconds, samples);
    timing
}

/// As [`measure_whole_calls`] for `N` calls measured against each other
/// (`call(i)` is the i-th): their samples take turns, so whatever slows the
/// machine for a while (another process, the clock) slows them alike.
pub fn measure_whole_calls_alternated<const N: usize>(
    mut call: impl FnMut(usize) -> f64,
    seconds: f64,
    samples: usize,
) -> [(f64, usize); N] {
    let calls_per_sample: [usize; N] = std::array::from_fn(|i| {
        let one_call = call(i);
        ((seconds / samples as f64 / one_call) as usize).max(1)
    });
    let mut per_call: [Vec<f64>; N] = std::array::from_fn(|_| Vec::with_capacity(samples));
    for _ in 0..samples {
        for (i, &calls) in calls_per_sample.iter().enumerate() {
            let sample: f64 = (0..calls).map(|_| call(i)).sum();
            per_call[i].push(sample / calls as f64);
        }
    }
    std::array::from_fn(|i| (median(&mut per_call[i]), calls_per_sample[i]))
}
