//! Batches of rows: serial below a work threshold, else split across rayon
//! tasks of whole rows, each task dispatching once.

use crate::dispatch;
use crate::Isa;
use rayon::ThreadPool;
use softmax_kernels::{Forward, LogSumExp};
use std::cell::RefCell;
use std::sync::Arc;

/// Below this many elements in a batch, rows run on the calling thread.
pub const PARALLEL_MIN_ELEMENTS: usize = 1 << 15;

/// Each rayon task gets at least this many elements (whole rows).
pub const TASK_MIN_ELEMENTS: usize = 1 << 14;

/// Where the rows of a batch run.
#[derive(Clone, Debug, Default)]
pub enum Parallelism {
    /// Rayon's global pool for batches of at least [`PARALLEL_MIN_ELEMENTS`], else serial.
    #[default]
    Auto,
    /// Always on the calling thread.
    Serial,
    /// On this pool, for batches of at least [`PARALLEL_MIN_ELEMENTS`], else serial.
    Pool(Arc<ThreadPool>),
}

/// A kernel job that can be cut between rows.
pub(crate) trait Batch: Sized + Send {
    fn rows(&self) -> usize;
    fn split_at(self, k: usize) -> (Self, Self);
    fn run(self, isa: Isa);
}

impl Batch for Forward<'_> {
    fn rows(&self) -> usize {
        self.y.rows()
    }
    fn split_at(self, k: usize) -> (Self, Self) {
        let (xa, xb) = match self.x {
            Some(x) => {
                let (a, b) = x.split_at(k);
                (Some(a), Some(b))
            }
            None => (None, None),
        };
        let (ya, yb) = self.y.split_at(k);
        let half = |x, y| Forward {
            x,
            y,
            scratch: &mut [],
            ..self
        };
        (half(xa, ya), half(xb, yb))
    }
    fn run(self, isa: Isa) {
        match self.scratch_len() {
            0 => dispatch::run(isa, self),
            len => with_scratch(len, |scratch| {
                dispatch::run(isa, Forward { scratch, ..self })
            }),
        }
    }
}

impl Batch for LogSumExp<'_> {
    fn rows(&self) -> usize {
        self.x.rows()
    }
    fn split_at(self, k: usize) -> (Self, Self) {
        let (xa, xb) = self.x.split_at(k);
        let (oa, ob) = self.out.split_at(xa.rows());
        let half = |x, out| LogSumExp { x, out, ..self };
        (half(xa, oa), half(xb, ob))
    }
    fn run(self, isa: Isa) {
        dispatch::run(isa, self)
    }
}

/// Runs `job` (rows of `cols` elements) as `parallelism` says.
pub(crate) fn run<J: Batch>(job: J, cols: usize, isa: Isa, parallelism: &Parallelism) {
    let rows = job.rows();
    let elements = rows.saturating_mul(cols.max(1));
    let pool = match parallelism {
        _ if rows < 2 || elements < PARALLEL_MIN_ELEMENTS => return job.run(isa),
        Parallelism::Serial => return job.run(isa),
        Parallelism::Auto => None,
        Parallelism::Pool(pool) => Some(pool),
    };
    let rows_per_task = TASK_MIN_ELEMENTS.div_ceil(cols.max(1)).max(1);
    match pool {
        Some(pool) => pool.install(|| split(job, rows_per_task, isa)),
        None => split(job, rows_per_task, isa),
    }
}

fn split<J: Batch>(job: J, rows_per_task: usize, isa: Isa) {
    let rows = job.rows();
    if rows <= rows_per_task {
        return job.run(isa);
    }
    let (a, b) = job.split_at(rows / 2);
    rayon::join(
        || split(a, rows_per_task, isa),
        || split(b, rows_per_task, isa),
    );
}

/// Scratch rows up to this many f32 values stay allocated per thread between
/// calls; longer ones are allocated for the call and freed after it.
const KEEP_SCRATCH_UP_TO: usize = 1 << 20;

thread_local! {
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` with `len` f32 values of working space.
fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    if len > KEEP_SCRATCH_UP_TO {
        return f(&mut vec![0.0; len]);
    }
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut kept) => {
            if kept.len() < len {
                kept.resize(len, 0.0);
            }
            f(&mut kept[..len])
        }
        // Taken further up this thread's stack (a job run from inside another).
        Err(_) => f(&mut vec![0.0; len]),
    })
}
