//! Batches of rows: serial below a work threshold, else split across rayon
//! tasks of whole rows, each task dispatching once.

use crate::dispatch;
use crate::Isa;
use rayon::ThreadPool;
use softmax_kernels::{Batch, Job};
use std::cell::RefCell;
use std::sync::Arc;

/// Below this many elements in a batch, rows run on the calling thread.
///
/// Measured on a 2-core AMD EPYC (Zen 3), `Serial` against a 2-thread pool
/// alternated (median per-round speedup over four runs): 0.78–0.90 at 2^15
/// elements, 0.70–1.26 at 2^16, 0.86–1.30 at 2^17, 0.98–1.40 at 2^18, and
/// 1.3–1.76 from 2^19. Handing a batch to a pool costs a wake-up of its
/// workers and of the waiting caller; from 2^18 elements two threads are not
/// slower than one.
pub const PARALLEL_MIN_ELEMENTS: usize = 1 << 18;

/// Each rayon task gets at least this many elements (whole rows).
pub const TASK_MIN_ELEMENTS: usize = 1 << 14;

/// Where the rows of a batch run.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub enum Parallelism {
    /// Rayon's global pool for batches of at least [`PARALLEL_MIN_ELEMENTS`], else serial.
    #[default]
    Auto,
    /// Always on the calling thread.
    Serial,
    /// On this pool, for batches of at least [`PARALLEL_MIN_ELEMENTS`], else serial.
    Pool(Arc<ThreadPool>),
}

/// Runs `job` on this thread, with its working space.
pub(crate) fn run_here<J: Job>(job: J, isa: Isa) -> J::Output {
    match job.scratch_len() {
        0 => dispatch::run(isa, job, &mut []),
        len => with_scratch(len, |scratch| dispatch::run(isa, job, scratch)),
    }
}

/// Runs `job` (rows of `cols` elements) as `parallelism` says. Rows are cut
/// into the same tasks whether they run on a pool or not, so combined results
/// (sums over rows) do not depend on the parallelism or the thread count.
pub(crate) fn run<J: Batch<Output: Send> + Send>(
    job: J,
    cols: usize,
    isa: Isa,
    parallelism: &Parallelism,
) -> J::Output {
    let rows = job.rows();
    let elements = rows.saturating_mul(cols.max(1));
    let rows_per_task = TASK_MIN_ELEMENTS.div_ceil(cols.max(1)).max(1);
    let pool = match parallelism {
        _ if rows < 2 || elements < PARALLEL_MIN_ELEMENTS => {
            return split(job, rows_per_task, isa, false)
        }
        Parallelism::Serial => return split(job, rows_per_task, isa, false),
        Parallelism::Auto => None,
        Parallelism::Pool(pool) => Some(pool),
    };
    match pool {
        Some(pool) => pool.install(|| split(job, rows_per_task, isa, true)),
        None => split(job, rows_per_task, isa, true),
    }
}

/// Halves `job` until a part has at most `rows_per_task` rows; the halves run
/// side by side when `parallel`.
fn split<J: Batch<Output: Send> + Send>(
    job: J,
    rows_per_task: usize,
    isa: Isa,
    parallel: bool,
) -> J::Output {
    let rows = job.rows();
    if rows <= rows_per_task {
        return run_here(job, isa);
    }
    let (a, b) = job.split_at(rows / 2);
    let (ra, rb) = if parallel {
        rayon::join(
            || split(a, rows_per_task, isa, true),
            || split(b, rows_per_task, isa, true),
        )
    } else {
        (
            split(a, rows_per_task, isa, false),
            split(b, rows_per_task, isa, false),
        )
    };
    J::combine(ra, rb)
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
