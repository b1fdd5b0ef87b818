//! The fused cross-entropy allocates nothing proportional to the batch: with a
//! counting global allocator, a loss-and-gradient call over 64 rows and one over
//! 512 rows allocate the same (after a warm-up call has started the thread
//! pools and their thread-locals), serially and on a 2-thread pool. One test
//! in this binary, so no other test allocates while it counts.

use softmax::{CrossEntropy, Parallelism, Reduction, Rows, RowsMut, Softmax};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

struct Counting;

static CALLS: AtomicUsize = AtomicUsize::new(0);
static BYTES: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded to the system allocator unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        CALLS.fetch_add(1, Ordering::SeqCst);
        BYTES.fetch_add(layout.size(), Ordering::SeqCst);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        CALLS.fetch_add(1, Ordering::SeqCst);
        BYTES.fetch_add(layout.size(), Ordering::SeqCst);
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        CALLS.fetch_add(1, Ordering::SeqCst);
        BYTES.fetch_add(new_size, Ordering::SeqCst);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// (allocations, bytes) made while `f` runs.
fn measure(f: impl FnOnce()) -> (usize, usize) {
    let (c, b) = (CALLS.load(Ordering::SeqCst), BYTES.load(Ordering::SeqCst));
    f();
    (
        CALLS.load(Ordering::SeqCst) - c,
        BYTES.load(Ordering::SeqCst) - b,
    )
}

/// Allocations a call may make beyond those of the small batch (none measured
/// so far; a pool's wake-ups may allocate a few bytes of bookkeeping).
const SLACK_CALLS: usize = 4;

#[test]
fn fused_loss_and_grad_allocates_nothing_per_row() {
    const COLS: usize = 4096;
    // The smaller batch already reaches the parallel threshold.
    const MIN_ROWS: usize = softmax::PARALLEL_MIN_ELEMENTS / COLS;
    const MAX_ROWS: usize = 512;
    let x: Vec<f32> = (0..MAX_ROWS * COLS)
        .map(|i| ((i * 7919) % 1000) as f32 / 100.0 - 5.0)
        .collect();
    let labels: Vec<i64> = (0..MAX_ROWS)
        .map(|i| {
            if i % 5 == 3 {
                -100
            } else {
                ((i * 31) % COLS) as i64
            }
        })
        .collect();
    let weights: Vec<f32> = (0..COLS).map(|c| 1.0 + (c % 3) as f32).collect();
    let mut grad = vec![0.0f32; MAX_ROWS * COLS];
    let mut losses = vec![0.0f32; MAX_ROWS];
    let pool = Arc::new(
        rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap(),
    );
    for (name, par) in [
        ("Serial", Parallelism::Serial),
        ("pool of 2", Parallelism::Pool(pool)),
    ] {
        for (what, ce) in [
            (
                "labels mean smoothing weights",
                CrossEntropy::new()
                    .with_label_smoothing(0.1)
                    .unwrap()
                    .with_weights(&weights)
                    .unwrap()
                    .with_parallelism(par.clone()),
            ),
            (
                "labels none",
                CrossEntropy::new()
                    .with_reduction(Reduction::None)
                    .with_parallelism(par.clone()),
            ),
        ] {
            let mut run = |rows: usize| {
                let logits = Rows::contiguous(&x[..rows * COLS], COLS).unwrap();
                let g = RowsMut::contiguous(&mut grad[..rows * COLS], COLS).unwrap();
                measure(|| {
                    ce.loss_and_grad(logits, &labels[..rows], g, Some(&mut losses[..rows]))
                        .unwrap();
                })
            };
            run(MAX_ROWS); // warm-up: pool threads, thread-locals, detection
            run(MIN_ROWS);
            let small = run(MIN_ROWS);
            let large = run(MAX_ROWS);
            eprintln!(
                "alloc: {name:<9} {what:<30} {MIN_ROWS} rows: {} allocations, {} bytes; {MAX_ROWS} rows: {} allocations, {} bytes",
                small.0, small.1, large.0, large.1
            );
            assert!(
                large.0 <= small.0 + SLACK_CALLS && large.1 <= small.1 + 64 * SLACK_CALLS,
                "{name} {what} f32 cols {COLS}: {MAX_ROWS} rows allocate {large:?} (calls, bytes), {MIN_ROWS} rows {small:?}"
            );
        }
        // The backward pass over rows, the same way.
        let sm = Softmax::new().with_parallelism(par.clone());
        let mut run = |rows: usize| {
            let y = Rows::contiguous(&x[..rows * COLS], COLS).unwrap();
            let g = RowsMut::contiguous(&mut grad[..rows * COLS], COLS).unwrap();
            measure(|| sm.softmax_backward_rows_in_place(y, g).unwrap())
        };
        run(MAX_ROWS);
        let small = run(MIN_ROWS);
        let large = run(MAX_ROWS);
        eprintln!(
            "alloc: {name:<9} {:<30} {MIN_ROWS} rows: {} allocations, {} bytes; {MAX_ROWS} rows: {} allocations, {} bytes",
            "softmax_backward_rows_in_place", small.0, small.1, large.0, large.1
        );
        assert!(
            large.0 <= small.0 + SLACK_CALLS && large.1 <= small.1 + 64 * SLACK_CALLS,
            "{name} softmax_backward_rows_in_place f32 cols {COLS}: {MAX_ROWS} rows allocate {large:?}, {MIN_ROWS} rows {small:?}"
        );
    }
}
