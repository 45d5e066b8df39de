//! A persistent thread pool for the CPU backend's ops.
//!
//! A decode step runs a few hundred small parallel ops (one matrix-vector
//! product takes microseconds), so what matters is the cost of starting
//! and ending one. The workers live as long as the pool; between ops they
//! spin on a job counter for a while (so the next op starts at once), then
//! park on a condition variable (so an idle pool costs nothing). The thread
//! that calls [`ThreadPool::for_each`] works too, then waits for the
//! workers to finish; tasks are handed out in shrinking chunks from one
//! atomic counter (guided self-scheduling: few claims, balanced ends).
//!
//! Every task index is run exactly once, on some thread; a panic in a task
//! stops the hand-out and is re-raised on the calling thread once every
//! worker has let go of the job. A call made while the pool is busy (from
//! inside a task, or from another thread at the same time) runs its tasks
//! on the calling thread, in order.

use std::any::Any;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long an idle worker spins before it parks.
const SPIN: Duration = Duration::from_millis(1);
/// Spins between two `yield_now`s of a waiting thread, so that a pool on
/// more threads than free cores hands its core to whoever has work.
const SPINS_PER_YIELD: u32 = 256;

/// The pool's state word: the job's epoch (high 32 bits), whether the job
/// is closed to workers (bit 31), and how many workers are in it (the rest).
const CLOSED: u64 = 1 << 31;
const ACTIVE: u64 = CLOSED - 1;

fn epoch_of(state: u64) -> u32 {
    (state >> 32) as u32
}

/// A fixed set of worker threads; see the module documentation.
pub struct ThreadPool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
}

struct Shared {
    /// Epoch, closed flag and active workers (see [`CLOSED`]). A worker
    /// joins a job by raising the count while the job is open and its
    /// epoch is the one it saw; the caller closes the job when it has run
    /// out of tasks and then waits only for the workers that joined, so a
    /// worker that was not scheduled in time holds nothing up.
    state: AtomicU64,
    /// The current job; valid for a worker from its join to its leave.
    job: AtomicPtr<Job<'static>>,
    /// Workers parked (or about to park) on `cv`.
    sleepers: AtomicUsize,
    shutdown: AtomicBool,
    /// Set while a job runs, so that a second call runs inline.
    busy: AtomicBool,
    lock: Mutex<()>,
    cv: Condvar,
}

struct Job<'a> {
    f: &'a (dyn Fn(usize) + Sync),
    n: usize,
    threads: usize,
    next: AtomicUsize,
    panic: Mutex<Option<Box<dyn Any + Send>>>,
}

impl Job<'_> {
    /// The next chunk of task indexes: a share of what is left, at least one.
    fn claim(&self) -> Option<std::ops::Range<usize>> {
        let mut cur = self.next.load(Ordering::Relaxed);
        loop {
            if cur >= self.n {
                return None;
            }
            let size = ((self.n - cur) / (2 * self.threads)).max(1);
            match self.next.compare_exchange_weak(
                cur,
                cur + size,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Some(cur..cur + size),
                Err(now) => cur = now,
            }
        }
    }

    /// Runs chunks until none is left; a panic is kept and ends the hand-out.
    fn run(&self) {
        while let Some(range) = self.claim() {
            let r = catch_unwind(AssertUnwindSafe(|| {
                for i in range {
                    (self.f)(i);
                }
            }));
            if let Err(p) = r {
                self.next.store(self.n, Ordering::Relaxed);
                let mut slot = self.panic.lock().unwrap_or_else(|e| e.into_inner());
                slot.get_or_insert(p);
                return;
            }
        }
    }
}

/// A spinning wait's pause; every [`SPINS_PER_YIELD`]-th one yields.
fn pause(spins: &mut u32) {
    *spins = spins.wrapping_add(1);
    if spins.is_multiple_of(SPINS_PER_YIELD) {
        std::thread::yield_now();
    } else {
        std::hint::spin_loop();
    }
}

impl ThreadPool {
    /// A pool computing with `threads` threads in all: the caller and
    /// `threads - 1` workers (none for 0 or 1).
    pub fn new(threads: usize) -> std::io::Result<ThreadPool> {
        let shared = Arc::new(Shared {
            state: AtomicU64::new(CLOSED),
            job: AtomicPtr::new(std::ptr::null_mut()),
            sleepers: AtomicUsize::new(0),
            shutdown: AtomicBool::new(false),
            busy: AtomicBool::new(false),
            lock: Mutex::new(()),
            cv: Condvar::new(),
        });
        let mut pool = ThreadPool {
            shared,
            workers: Vec::new(),
        };
        for i in 1..threads.max(1) {
            let s = Arc::clone(&pool.shared);
            let h = std::thread::Builder::new()
                .name(format!("subllm-worker-{i}"))
                .spawn(move || worker(&s))?;
            // on an error the workers made so far are stopped by Drop
            pool.workers.push(h);
        }
        Ok(pool)
    }

    /// Threads computing in a call: the workers and the caller.
    pub fn threads(&self) -> usize {
        self.workers.len() + 1
    }

    /// Calls `f(i)` for every `i` in `0..n`, spread over the pool; returns
    /// when every call has returned. A panic in `f` is re-raised here.
    pub fn for_each(&self, n: usize, f: &(dyn Fn(usize) + Sync)) {
        let inline =
            n <= 1 || self.workers.is_empty() || self.shared.busy.swap(true, Ordering::Acquire);
        if inline {
            (0..n).for_each(f);
            return;
        }
        let s = &*self.shared;
        let job = Job {
            f,
            n,
            threads: self.threads(),
            next: AtomicUsize::new(0),
            panic: Mutex::new(None),
        };
        // the pointer outlives its use: this function does not return (nor
        // unwind) before the job is closed with no worker in it, and a
        // worker reads it only between its join and its leave
        let ptr = &job as *const Job<'_> as *mut Job<'static>;
        s.job.store(ptr, Ordering::Relaxed);
        // the previous job is closed and empty, so no worker can change
        // the state word under this store; the release publishes `job`
        let epoch = epoch_of(s.state.load(Ordering::Relaxed)).wrapping_add(1);
        s.state.store((epoch as u64) << 32, Ordering::SeqCst);
        if s.sleepers.load(Ordering::SeqCst) > 0 {
            let _g = s.lock.lock().unwrap_or_else(|e| e.into_inner());
            s.cv.notify_all();
        }
        job.run();
        s.state.fetch_or(CLOSED, Ordering::AcqRel);
        let mut spins = 0;
        while s.state.load(Ordering::Acquire) & ACTIVE != 0 {
            pause(&mut spins);
        }
        s.job.store(std::ptr::null_mut(), Ordering::Relaxed);
        s.busy.store(false, Ordering::Release);
        let panic = job.panic.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(p) = panic {
            resume_unwind(p);
        }
    }

    /// Calls `f(i, chunk)` for each `chunk`-element piece of `data` (the
    /// last may be shorter), spread over the pool.
    pub fn for_chunks_mut<T: Send>(
        &self,
        data: &mut [T],
        chunk: usize,
        f: impl Fn(usize, &mut [T]) + Sync,
    ) {
        let chunk = chunk.max(1);
        let len = data.len();
        let base = SendPtr(data.as_mut_ptr());
        self.for_each(len.div_ceil(chunk), &|i| {
            let start = i * chunk;
            let end = (start + chunk).min(len);
            // SAFETY: `for_each` runs each index once, so the ranges
            // [start, end) of its calls are disjoint pieces of `data`, which
            // stays mutably borrowed until every call has returned.
            let piece =
                unsafe { std::slice::from_raw_parts_mut(base.get().add(start), end - start) };
            f(i, piece);
        });
    }

    /// Like [`ThreadPool::for_chunks_mut`] over two slices in lockstep:
    /// call `i` gets piece `i` of each (as many calls as the shorter has).
    pub fn for_chunks2_mut<T: Send, U: Send>(
        &self,
        a: &mut [T],
        ca: usize,
        b: &mut [U],
        cb: usize,
        f: impl Fn(usize, &mut [T], &mut [U]) + Sync,
    ) {
        let (ca, cb) = (ca.max(1), cb.max(1));
        let (la, lb) = (a.len(), b.len());
        let (pa, pb) = (SendPtr(a.as_mut_ptr()), SendPtr(b.as_mut_ptr()));
        let n = la.div_ceil(ca).min(lb.div_ceil(cb));
        self.for_each(n, &|i| {
            let (sa, sb) = (i * ca, i * cb);
            let (ea, eb) = ((sa + ca).min(la), (sb + cb).min(lb));
            // SAFETY: as in `for_chunks_mut`: each index runs once, so the
            // pieces of `a` and of `b` handed out are disjoint, and both
            // slices stay mutably borrowed until every call has returned.
            let (xa, xb) = unsafe {
                (
                    std::slice::from_raw_parts_mut(pa.get().add(sa), ea - sa),
                    std::slice::from_raw_parts_mut(pb.get().add(sb), eb - sb),
                )
            };
            f(i, xa, xb);
        });
    }
}

/// One column stripe of a row-major matrix: columns `[col, col + width)`
/// of each of its rows. Stripes of one matrix never overlap, so tasks
/// holding different stripes write the same rows at once.
pub struct Stripe<'a, T> {
    base: *mut T,
    rows: usize,
    row_len: usize,
    col: usize,
    width: usize,
    _data: std::marker::PhantomData<&'a mut [T]>,
}

impl<T> Stripe<'_, T> {
    /// Rows of the matrix (and of the stripe).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Columns of the stripe (the last stripe of a matrix may be narrower).
    pub fn width(&self) -> usize {
        self.width
    }

    /// Asks the cache for the stripe's part of row `r` ahead of its use (a
    /// hint only: nothing is read; rows past the end are ignored).
    pub fn prefetch_row(&self, r: usize) {
        if r >= self.rows || self.width == 0 {
            return;
        }
        let first = self.base.wrapping_add(r * self.row_len + self.col);
        let last = first.wrapping_add(self.width - 1);
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a prefetch never faults nor changes memory; both addresses
        // lie inside the matrix (r < rows, col + width <= row_len).
        unsafe {
            use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
            _mm_prefetch::<_MM_HINT_T0>(first.cast::<i8>());
            _mm_prefetch::<_MM_HINT_T0>(last.cast::<i8>());
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = (first, last);
    }

    /// The stripe's part of row `r`; panics where `r` is not a row.
    pub fn row(&mut self, r: usize) -> &mut [T] {
        assert!(r < self.rows, "row {r} of a stripe of {} rows", self.rows);
        // SAFETY: `r < rows` and `col + width <= row_len`, so the range lies
        // inside the matrix, which stays mutably borrowed for 'a; no other
        // stripe covers these columns (`for_stripes` hands each out once),
        // and `&mut self` keeps this the only borrow of the stripe.
        unsafe {
            std::slice::from_raw_parts_mut(self.base.add(r * self.row_len + self.col), self.width)
        }
    }
}

/// Calls `f(i, stripe)` for each `width`-column stripe `i` of `data` (a
/// row-major matrix of rows of `row_len`; a partial last row is left out),
/// on the calls that `spread(n, task)` makes of `task` (`n` of them, on
/// any threads, all returned before `spread` returns: a pool's `for_each`).
/// Each call claims the next stripe from one counter, so every stripe is
/// handed out once however `spread` runs its calls.
pub fn for_stripes<T: Send>(
    data: &mut [T],
    row_len: usize,
    width: usize,
    spread: impl FnOnce(usize, &(dyn Fn(usize) + Sync)),
    f: impl Fn(usize, Stripe<'_, T>) + Sync,
) {
    let width = width.max(1);
    let rows = data.len().checked_div(row_len).unwrap_or(0);
    let n = if rows == 0 {
        0
    } else {
        row_len.div_ceil(width)
    };
    let base = SendPtr(data.as_mut_ptr());
    let next = AtomicUsize::new(0);
    spread(n, &|_| {
        let i = next.fetch_add(1, Ordering::Relaxed);
        if i < n {
            let col = i * width;
            f(
                i,
                Stripe {
                    base: base.get(),
                    rows,
                    row_len,
                    col,
                    width: width.min(row_len - col),
                    _data: std::marker::PhantomData,
                },
            );
        }
    });
}

impl ThreadPool {
    /// [`for_stripes`] on this pool.
    pub fn for_stripes_mut<T: Send>(
        &self,
        data: &mut [T],
        row_len: usize,
        width: usize,
        f: impl Fn(usize, Stripe<'_, T>) + Sync,
    ) {
        for_stripes(data, row_len, width, |n, task| self.for_each(n, task), f);
    }
}

impl Drop for ThreadPool {
    fn drop(&mut self) {
        let s = &*self.shared;
        s.shutdown.store(true, Ordering::SeqCst);
        // a new epoch, closed: workers wake, join nothing, and see shutdown
        let epoch = epoch_of(s.state.load(Ordering::Relaxed)).wrapping_add(1);
        s.state
            .store(((epoch as u64) << 32) | CLOSED, Ordering::SeqCst);
        {
            let _g = s.lock.lock().unwrap_or_else(|e| e.into_inner());
            s.cv.notify_all();
        }
        for h in self.workers.drain(..) {
            let _ = h.join();
        }
    }
}

/// A pointer to the elements of a slice that the pool's calls split.
struct SendPtr<T>(*mut T);

impl<T> SendPtr<T> {
    /// A method, so that closures capture the whole wrapper (which is
    /// `Sync`), not its raw field.
    fn get(&self) -> *mut T {
        self.0
    }
}

// SAFETY: the pointer is only turned into disjoint `&mut [T]` pieces, one
// per task (see the callers), so sharing it between threads sends `T`s
// across threads and nothing more: sound for `T: Send`.
unsafe impl<T: Send> Sync for SendPtr<T> {}

fn worker(s: &Shared) {
    let mut seen = epoch_of(CLOSED);
    loop {
        let mut cur = wait(s, seen);
        seen = epoch_of(cur);
        if s.shutdown.load(Ordering::SeqCst) {
            return;
        }
        // join the job of epoch `seen` if it is still open
        let joined = loop {
            if epoch_of(cur) != seen || cur & CLOSED != 0 {
                break false;
            }
            match s
                .state
                .compare_exchange_weak(cur, cur + 1, Ordering::Acquire, Ordering::Relaxed)
            {
                Ok(_) => break true,
                Err(now) => cur = now,
            }
        };
        if !joined {
            continue;
        }
        let ptr = s.job.load(Ordering::Relaxed);
        // SAFETY: this worker joined the open job of epoch `seen` (an
        // acquire of the caller's release that stored `job`), and the caller
        // keeps that job alive and unchanged until every worker that joined
        // has left (the decrement below).
        let job = unsafe { &*ptr };
        job.run();
        s.state.fetch_sub(1, Ordering::Release);
    }
}

/// Waits for the epoch to move past `seen`; returns the state word then.
fn wait(s: &Shared, seen: u32) -> u64 {
    let t0 = Instant::now();
    let mut spins = 0u32;
    loop {
        let st = s.state.load(Ordering::Acquire);
        if epoch_of(st) != seen {
            return st;
        }
        if spins % 64 == 63 && t0.elapsed() >= SPIN {
            break;
        }
        pause(&mut spins);
    }
    let mut g = s.lock.lock().unwrap_or_else(|e| e.into_inner());
    s.sleepers.fetch_add(1, Ordering::SeqCst);
    let st = loop {
        let st = s.state.load(Ordering::SeqCst);
        if epoch_of(st) != seen {
            break st;
        }
        g = s.cv.wait(g).unwrap_or_else(|e| e.into_inner());
    };
    s.sleepers.fetch_sub(1, Ordering::SeqCst);
    st
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    #[test]
    fn every_index_runs_exactly_once() {
        for threads in [1, 2, 3, 8] {
            let pool = ThreadPool::new(threads).unwrap();
            assert_eq!(pool.threads(), threads);
            for n in [0, 1, 2, 3, 7, 64, 1000, 4097] {
                let hits: Vec<AtomicU64> = (0..n).map(|_| AtomicU64::new(0)).collect();
                pool.for_each(n, &|i| {
                    hits[i].fetch_add(1, Ordering::Relaxed);
                });
                assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1));
            }
        }
    }

    #[test]
    fn stripes_cover_the_matrix_disjointly() {
        let pool = ThreadPool::new(3).unwrap();
        for (rows, row_len, width) in [(0, 5, 2), (1, 1, 16), (3, 48, 16), (7, 50, 16), (4, 5, 0)] {
            // one element past the matrix where that is a partial row
            let extra = usize::from(row_len > 1);
            let mut v = vec![0usize; rows * row_len + extra];
            pool.for_stripes_mut(&mut v, row_len, width, |i, mut s| {
                assert_eq!(s.rows(), rows);
                for r in 0..s.rows() {
                    let w = s.width();
                    for (j, x) in s.row(r).iter_mut().enumerate() {
                        assert!(j < w);
                        *x += r * row_len + i * width.max(1) + j + 1;
                    }
                }
            });
            // each element written once with its own index; the partial
            // last row untouched
            let mut want: Vec<usize> = (1..=rows * row_len).collect();
            want.resize(rows * row_len + extra, 0);
            assert_eq!(v, want, "{rows}x{row_len} by {width}");
        }
        // a spread that calls the task more often than asked still hands
        // each stripe out once
        let mut v = vec![0u8; 4 * 32];
        for_stripes(
            &mut v,
            32,
            16,
            |n, t| (0..3 * n).for_each(t),
            |_, mut s| {
                for r in 0..s.rows() {
                    s.row(r).iter_mut().for_each(|x| *x += 1);
                }
            },
        );
        assert!(v.iter().all(|&x| x == 1));
    }

    #[test]
    fn chunks_cover_the_slice_disjointly() {
        let pool = ThreadPool::new(4).unwrap();
        for (len, chunk) in [(0, 3), (1, 3), (10, 3), (999, 16), (1024, 16), (5, 0)] {
            let mut v = vec![0usize; len];
            pool.for_chunks_mut(&mut v, chunk, |i, piece| {
                for (j, x) in piece.iter_mut().enumerate() {
                    *x += i * chunk.max(1) + j + 1;
                }
            });
            assert_eq!(v, (1..=len).collect::<Vec<_>>());
            let mut a = vec![0u8; len * 2];
            let mut b = vec![0u32; len];
            pool.for_chunks2_mut(&mut a, 2 * chunk.max(1), &mut b, chunk, |i, x, y| {
                x.iter_mut().for_each(|v| *v = 1);
                y.iter_mut().for_each(|v| *v = i as u32 + 1);
            });
            assert!(a.iter().all(|&v| v == 1));
            assert!(b
                .iter()
                .enumerate()
                .all(|(j, &v)| v as usize == j / chunk.max(1) + 1));
        }
    }

    #[test]
    fn work_spreads_over_the_workers() {
        let pool = ThreadPool::new(3).unwrap();
        let ids = Mutex::new(std::collections::HashSet::new());
        pool.for_each(64, &|_| {
            ids.lock().unwrap().insert(std::thread::current().id());
            std::thread::sleep(Duration::from_millis(2));
        });
        assert!(ids.lock().unwrap().len() >= 2);
    }

    #[test]
    fn a_panic_reaches_the_caller_and_the_pool_still_works() {
        let pool = ThreadPool::new(2).unwrap();
        for bad in [0, 63] {
            let r = catch_unwind(AssertUnwindSafe(|| {
                pool.for_each(64, &|i| {
                    if i == bad {
                        panic!("task {i}");
                    }
                })
            }));
            let msg = r.unwrap_err();
            assert_eq!(
                msg.downcast_ref::<String>().unwrap(),
                &format!("task {bad}")
            );
        }
        let sum = AtomicU64::new(0);
        pool.for_each(100, &|i| {
            sum.fetch_add(i as u64, Ordering::Relaxed);
        });
        assert_eq!(sum.load(Ordering::Relaxed), 4950);
    }

    #[test]
    fn nested_and_concurrent_calls_run_inline_and_finish() {
        let pool = ThreadPool::new(2).unwrap();
        let sum = AtomicU64::new(0);
        pool.for_each(8, &|_| {
            pool.for_each(8, &|j| {
                sum.fetch_add(j as u64, Ordering::Relaxed);
            });
        });
        assert_eq!(sum.load(Ordering::Relaxed), 8 * 28);
        let total = AtomicU64::new(0);
        std::thread::scope(|sc| {
            for _ in 0..4 {
                sc.spawn(|| {
                    for _ in 0..50 {
                        pool.for_each(16, &|i| {
                            total.fetch_add(i as u64, Ordering::Relaxed);
                        });
                    }
                });
            }
        });
        assert_eq!(total.load(Ordering::Relaxed), 4 * 50 * 120);
    }

    #[test]
    fn parked_workers_wake_for_the_next_job() {
        let pool = ThreadPool::new(2).unwrap();
        std::thread::sleep(SPIN * 5);
        let ids = Mutex::new(std::collections::HashSet::new());
        pool.for_each(16, &|_| {
            ids.lock().unwrap().insert(std::thread::current().id());
            std::thread::sleep(Duration::from_millis(3));
        });
        assert_eq!(ids.lock().unwrap().len(), 2);
    }
}
