//! Batches of rows: serial below a work threshold, else split across the
//! calling thread and rayon tasks of whole rows, each part dispatching once.

use crate::dispatch;
use crate::Isa;
use rayon::{Scope, ThreadPool};
use softmax_kernels::{Batch, Job};
use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Below this many elements in a batch, rows run on the calling thread.
///
/// Measured on a 2-core AMD EPYC (Zen 3), `Serial` against a pool of 2
/// alternated, rows of 1024 and of 128 elements (median per-round speedup).
/// Back to back (eight calls a sample): 0.78–0.99 at 2^15 elements,
/// 1.05–1.27 at 2^16, 1.23–1.45 at 2^17, 1.34–1.49 at 2^18, 1.27–1.29 at
/// 2^19. One call after 2 ms of idleness: 0.26–0.33 at 2^15, 0.56–0.61 at
/// 2^17, 0.65–0.81 at 2^18, 0.86–0.89 at 2^19, the worker's wake-up (about
/// 0.1 ms on that machine) weighing more than the half it saves. From 2^18
/// two threads gain on calls that follow one another, and lose the least
/// on a call after a pause.
pub const PARALLEL_MIN_ELEMENTS: usize = 1 << 18;

/// A batch is halved into parts of whole rows down to about this many
/// elements (or one row); threads share the parts, never split them.
pub const TASK_MIN_ELEMENTS: usize = 1 << 14;

/// Where the rows of a batch run.
///
/// A batch run on a pool of T threads uses T threads in all: the calling
/// thread keeps a share of the rows, and T − 1 of the pool's workers take the
/// rest, one share each. The shares are the halves (of halves) of the rows
/// that the serial path cuts, so combined results do not change; when T is
/// not a power of two some shares are twice the size of others. A share no
/// worker has started by the time the calling thread is done with its own
/// runs on the calling thread. (A calling thread that only waited while
/// the pool's workers ran would leave the operating system free to wake two
/// workers on one core; on a 2-core machine that happened in about half the
/// calls, which then ran at the speed of one thread.)
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub enum Parallelism {
    /// Rayon's current pool (the global one outside a pool) for batches of
    /// at least [`PARALLEL_MIN_ELEMENTS`], else serial.
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
    let tasks = Tasks {
        rows: TASK_MIN_ELEMENTS.div_ceil(cols.max(1)).max(1),
        isa,
    };
    match parallelism {
        _ if rows < 2 || elements < PARALLEL_MIN_ELEMENTS => tasks.serial(job),
        Parallelism::Serial => tasks.serial(job),
        Parallelism::Auto => tasks.fork(job, rayon::current_num_threads(), None),
        Parallelism::Pool(pool) => tasks.fork(job, pool.current_num_threads(), Some(pool)),
    }
}

/// How a batch is cut: halved until a part has at most `rows` rows.
#[derive(Clone, Copy)]
struct Tasks {
    rows: usize,
    isa: Isa,
}

impl Tasks {
    /// Runs the parts of `job` one after another on this thread.
    fn serial<J: Batch>(self, job: J) -> J::Output {
        let rows = job.rows();
        if rows <= self.rows {
            return run_here(job, self.isa);
        }
        let (a, b) = job.split_at(rows / 2);
        J::combine(self.serial(a), self.serial(b))
    }

    /// Runs `job` on `threads` threads: halves it as [`Tasks::serial`] does,
    /// keeps the first half (and its share of the threads) on this thread
    /// and offers the second half, with the rest of the threads, to a task on
    /// `pool` (rayon's current pool when `None`). A second half that no
    /// worker has taken by the time the first is done runs here too: a
    /// worker that was asleep can take longer to wake than the half takes.
    fn fork<J: Batch<Output: Send> + Send>(
        self,
        job: J,
        threads: usize,
        pool: Option<&ThreadPool>,
    ) -> J::Output {
        let rows = job.rows();
        if threads < 2 || rows <= self.rows {
            return self.serial(job);
        }
        let (a, b) = job.split_at(rows / 2);
        let b_threads = threads / 2;
        let offered = Mutex::new(Some(b));
        let take = || {
            offered
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take()
        };
        let done = AtomicBool::new(false);
        let mut there = None;
        let (a_out, here) = in_place_scope(pool, |scope| {
            scope.spawn(|_| {
                if let Some(b) = take() {
                    there = Some(self.fork(b, b_threads, pool));
                }
                done.store(true, Ordering::Release);
            });
            let start = Instant::now();
            let a_out = self.fork(a, threads - b_threads, pool);
            let here = match take() {
                Some(b) => Some(self.fork(b, b_threads, pool)),
                None => {
                    wait_briefly(&done, start.elapsed().min(MAX_SPIN));
                    None
                }
            };
            (a_out, here)
        });
        // One side took the second half, and the scope waited for its task.
        let b_out = here.or(there).expect("the second half ran on one side");
        J::combine(a_out, b_out)
    }
}

/// The longest a thread that has run its part of a batch spins for the
/// other part before it blocks (a blocked thread waits for the operating
/// system to wake it: about 0.1 ms on the machine of
/// [`PARALLEL_MIN_ELEMENTS`]'s measurements).
const MAX_SPIN: Duration = Duration::from_micros(100);

/// Spins until `done` is set, for at most `limit`.
fn wait_briefly(done: &AtomicBool, limit: Duration) {
    let start = Instant::now();
    while !done.load(Ordering::Acquire) {
        if start.elapsed() > limit {
            return;
        }
        for _ in 0..64 {
            core::hint::spin_loop();
        }
    }
}

/// A rayon scope whose body runs on this thread and whose tasks run on
/// `pool` (rayon's current pool when `None`).
fn in_place_scope<'s, R>(pool: Option<&ThreadPool>, body: impl FnOnce(&Scope<'s>) -> R) -> R {
    match pool {
        Some(pool) => pool.in_place_scope(body),
        None => rayon::in_place_scope(body),
    }
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
