//! Threads inside one firing. Work is split into disjoint output planes, so every element is
//! still computed by one thread in the same order: results do not depend on the thread count.
//!
//! The pool is a few lines on std's atomics, mutex and condition variables rather than rayon,
//! because rayon's job queue allocates as jobs come and go, and a session promises to allocate
//! nothing while it runs. The calling thread takes tasks too.
//!
//! A job is done when its tasks are, whoever ran them: a worker that has not shown up (asleep,
//! or descheduled because another process holds the core) is not waited for, and the caller
//! runs the tasks it leaves. By parts, a run is thousands of small jobs; waiting for every
//! worker to check in made a run beside one busy process several times slower than on one
//! thread (`benches/contended.sh`).

use std::cell::UnsafeCell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A task function, called with the task's index and the running thread's slot (see
/// [`Pool::run_slotted`]), with its lifetime erased; valid only while `Pool::run_slotted`
/// waits for it.
#[derive(Clone, Copy)]
struct Job(*const (dyn Fn(usize, usize) + Sync));

// SAFETY: the pointee is `Sync`, and `Pool::run` keeps it alive until every task is done.
unsafe impl Send for Job {}

/// The claim word: the current job's unclaimed tasks are `lo .. hi` (low and high half). The
/// caller claims from the front, workers from the back, so with one task per thread each
/// thread runs the same part of every job: kernels split their output in space (left/top
/// part first), so a thread reads what it wrote itself for the previous layer, from its own
/// cache. On a 2-core Xeon VM a 64 KB block another core wrote reads 5x slower than one this
/// core wrote (1 MB: 4x; `benches/xcore.c`).
fn word(lo: usize, hi: usize) -> u64 {
    ((hi as u64) << 32) | lo as u64
}

fn unword(w: u64) -> (usize, usize) {
    ((w & 0xffff_ffff) as usize, (w >> 32) as usize)
}

struct Shared {
    /// See [`word`]. Exhausted (`lo == hi`) between jobs.
    claim: AtomicU64,
    /// The current job's task count. Written before the claim word is published; read by a
    /// thread only after it claimed a task (so it is that job's: see `job`).
    tasks: AtomicUsize,
    /// The current job. Written by `Pool::run` only while no task is claimed and unfinished
    /// (before it publishes the claim word); read by a thread only after it claimed a task,
    /// which `run` waits for before it returns.
    job: UnsafeCell<Option<Job>>,
    /// Tasks of the current job finished.
    finished: AtomicUsize,
    shutdown: AtomicBool,
    /// Workers asleep, or about to sleep, on `wake`.
    sleepers: AtomicUsize,
    /// Whether the caller sleeps, or is about to sleep, on `done`.
    waiting: AtomicBool,
    panicked: AtomicBool,
    /// Guards only the sleeping: no data.
    sleep: Mutex<()>,
    wake: Condvar,
    done: Condvar,
}

// SAFETY: `job` is written and read under the claim protocol described on the field; all else
// is atomics and std's synchronisation.
unsafe impl Sync for Shared {}

/// How long a waiting thread spins before it blocks: firings come back to back, and a futex
/// round trip costs more than a small kernel.
const SPIN_FOR: Duration = Duration::from_millis(1);

/// Pure spins before a spinning thread starts yielding its CPU between checks. With more
/// runnable threads than cores (another process busy), a thread that only spins holds the
/// core the thread it waits for needs, for a whole time slice. Yielding costs a system call
/// per check only after the first few microseconds of waiting.
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
    fn lock(&self) -> MutexGuard<'_, ()> {
        self.sleep.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the current job has a task nobody took yet.
    fn claimable(&self, order: Ordering) -> bool {
        let (lo, hi) = unword(self.claim.load(order));
        lo < hi
    }

    /// Takes tasks of the current job until none are left: from the front (`back` false, the
    /// caller) or from the back (workers), running them as thread `slot`.
    fn work(&self, back: bool, slot: usize) {
        let mut w = self.claim.load(Ordering::Acquire);
        loop {
            let (lo, hi) = unword(w);
            if lo >= hi {
                return;
            }
            let (next, claimed) =
                if back { (hi - 1, word(lo, hi - 1)) } else { (lo, word(lo + 1, hi)) };
            // Whatever job `w` was read in, a successful exchange claims task `next` of the
            // current one: the word's value is the current job's unclaimed range.
            match self.claim.compare_exchange_weak(w, claimed, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => {
                    // SAFETY: task `next` of the current job is claimed and not finished, so
                    // `run` has written this job and neither returns nor rewrites it before the
                    // task is counted below.
                    if let Some(job) = unsafe { *self.job.get() } {
                        // SAFETY: as above, the job outlives its unfinished tasks.
                        let f = unsafe { &*job.0 };
                        if catch_unwind(AssertUnwindSafe(|| f(next, slot))).is_err() {
                            self.panicked.store(true, Ordering::Relaxed);
                        }
                    }
                    // The claimed task is unfinished, so this is still its job's count.
                    let tasks = self.tasks.load(Ordering::Acquire);
                    // SeqCst with the caller's store of `waiting` then load of `finished`:
                    // either it sees this count, or this sees it waiting.
                    if self.finished.fetch_add(1, Ordering::SeqCst) + 1 == tasks
                        && self.waiting.load(Ordering::SeqCst)
                    {
                        // The caller is asleep or about to be: taking the lock waits until
                        // it is.
                        drop(self.lock());
                        self.done.notify_all();
                    }
                    w = self.claim.load(Ordering::Acquire);
                }
                Err(now) => w = now,
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
            claim: AtomicU64::new(word(0, 0)),
            tasks: AtomicUsize::new(0),
            job: UnsafeCell::new(None),
            finished: AtomicUsize::new(0),
            shutdown: AtomicBool::new(false),
            sleepers: AtomicUsize::new(0),
            waiting: AtomicBool::new(false),
            panicked: AtomicBool::new(false),
            sleep: Mutex::new(()),
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
                    worker(&s, i)
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
        self.run_slotted(tasks, &|i, _| f(i));
    }

    /// Runs `f(i, slot)` for `i < tasks` across the threads, `slot` being the running
    /// thread's: 0 for the caller, `1 .. threads()` for the workers. A thread runs one task at
    /// a time, so per-thread scratch indexed by slot is never shared: a kernel that splits
    /// its work into more tasks than threads (for balance) needs scratch for `threads()`
    /// tasks, not for every task.
    pub fn run_slotted(&self, tasks: usize, f: &(dyn Fn(usize, usize) + Sync)) {
        if self.workers.is_empty() || tasks <= 1 {
            (0..tasks).for_each(|i| f(i, 0));
            return;
        }
        assert!(tasks < 1 << 32, "too many tasks in one job");
        let s = &*self.shared;
        // SAFETY: only the lifetime is erased; this function waits below until every task
        // has finished, and no thread reads the job without an unfinished task of it.
        let job = Job(unsafe {
            std::mem::transmute::<
                &(dyn Fn(usize, usize) + Sync),
                &'static (dyn Fn(usize, usize) + Sync),
            >(f)
        });
        // SAFETY: the previous job's tasks are all finished and its claim word exhausted, so
        // no thread reads `job` now.
        unsafe { *s.job.get() = Some(job) };
        s.finished.store(0, Ordering::Relaxed);
        s.tasks.store(tasks, Ordering::Relaxed);
        // SeqCst with the load of `sleepers` (and a worker's increment of `sleepers` before
        // its check for work): either this sees the sleeper, or the sleeper sees this job.
        s.claim.store(word(0, tasks), Ordering::SeqCst);
        if s.sleepers.load(Ordering::SeqCst) > 0 {
            drop(s.lock());
            s.wake.notify_all();
        }
        s.work(false, 0);
        let all_done = || s.finished.load(Ordering::Acquire) == tasks;
        if !spin_until(all_done) {
            let mut g = s.lock();
            s.waiting.store(true, Ordering::SeqCst);
            while s.finished.load(Ordering::SeqCst) < tasks {
                g = s.done.wait(g).unwrap_or_else(|e| e.into_inner());
            }
            s.waiting.store(false, Ordering::Relaxed);
        }
        // SAFETY: every task is finished and none is left to claim.
        unsafe { *s.job.get() = None };
        if s.panicked.swap(false, Ordering::Relaxed) {
            panic!("a frugal-cpu worker thread panicked");
        }
    }
}

fn worker(s: &Shared, slot: usize) {
    loop {
        let ready = || s.claimable(Ordering::Acquire) || s.shutdown.load(Ordering::Relaxed);
        if !spin_until(ready) {
            let mut g = s.lock();
            s.sleepers.fetch_add(1, Ordering::SeqCst);
            while !s.claimable(Ordering::SeqCst) && !s.shutdown.load(Ordering::SeqCst) {
                g = s.wake.wait(g).unwrap_or_else(|e| e.into_inner());
            }
            s.sleepers.fetch_sub(1, Ordering::SeqCst);
        }
        if s.shutdown.load(Ordering::SeqCst) {
            return;
        }
        s.work(true, slot);
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.shared.shutdown.store(true, Ordering::SeqCst);
        drop(self.shared.lock());
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

/// Jobs below this many floating-point operations run on the calling thread only:
/// `FRUGAL_SERIAL_FLOPS`, else 20k (by parts on 2 threads ran ~5% faster than with 50k, layer
/// by layer the same). The best value depends on the model and the machine's cost of handing
/// work between cores (`cargo bench --bench pool`): on a 2-core Xeon VM, 160k made one model's
/// one-row plan 7% faster and another's 7% slower. Results never depend on it.
pub fn serial_flops() -> usize {
    static FLOPS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *FLOPS.get_or_init(|| {
        std::env::var("FRUGAL_SERIAL_FLOPS").ok().and_then(|v| v.parse().ok()).unwrap_or(20_000)
    })
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

    /// Calls `f(i)` for each `i < tasks`, in parallel when threads are available and there is
    /// more than one task.
    pub fn each(&self, tasks: usize, f: impl Fn(usize) + Sync) {
        match self.pool {
            Some(pool) if tasks > 1 => pool.run(tasks, &f),
            _ => (0..tasks).for_each(f),
        }
    }

    /// Calls `f(i, slot)` for each `i < tasks`, `slot < self.threads()` being the running
    /// thread's ([`Pool::run_slotted`]): scratch per slot is never used by two tasks at once.
    pub fn each_slotted(&self, tasks: usize, f: impl Fn(usize, usize) + Sync) {
        match self.pool {
            Some(pool) if tasks > 1 => pool.run_slotted(tasks, &f),
            _ => (0..tasks).for_each(|i| f(i, 0)),
        }
    }

    /// Threads available.
    pub fn threads(&self) -> usize {
        self.pool.map_or(1, Pool::threads)
    }

    /// This `Par` for a job of `flops` floating-point operations: serial when the job is too
    /// small to pay for handing tasks to other threads (a microsecond or two while they spin).
    /// [`serial_flops`]: 20k by default.
    pub fn for_work(self, flops: usize) -> Par<'a> {
        if flops < serial_flops() {
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
        self.chunks_slotted(data, chunk_len, |i, _, c| f(i, c));
    }

    /// [`Self::chunks`] with the running thread's slot: `f(index, slot, chunk)` (see
    /// [`Self::each_slotted`]).
    pub fn chunks_slotted<T: Send>(
        &self,
        data: &mut [T],
        chunk_len: usize,
        f: impl Fn(usize, usize, &mut [T]) + Sync,
    ) {
        let chunk_len = chunk_len.max(1);
        let n = data.len().div_ceil(chunk_len);
        match self.pool {
            Some(pool) if n > 1 => {
                let (base, len) = (SendPtr(data.as_mut_ptr()), data.len());
                pool.run_slotted(n, &|i, slot| {
                    let start = i * chunk_len;
                    let end = (start + chunk_len).min(len);
                    // SAFETY: chunk i covers elements start..end of `data`, disjoint from every
                    // other chunk, and `data` is borrowed mutably for the whole call.
                    let chunk = unsafe {
                        std::slice::from_raw_parts_mut(base.get().add(start), end - start)
                    };
                    f(i, slot, chunk);
                });
            }
            _ => data.chunks_mut(chunk_len).enumerate().for_each(|(i, c)| f(i, 0, c)),
        }
    }

    /// How many of `units` to give each task: a few tasks per thread in multiples of `align`
    /// (a microkernel's rows, a channel group), unless those leave the threads unevenly
    /// loaded, then one equal share per thread. 16 rows in tiles of 6 made tasks of 6, 6 and
    /// 4: one thread did 10 rows while the other did 6; shares of 8 finish together.
    pub fn split(&self, units: usize, align: usize) -> usize {
        let (t, align) = (self.threads(), align.max(1));
        if t <= 1 {
            return units.max(1);
        }
        let aligned = units.div_ceil(t * 2).max(1).div_ceil(align) * align;
        let even = units.div_ceil(t).max(1);
        // Load estimate as if tasks were dealt in turn (thread i: tasks i, i + t, ...); the
        // caller claims from the front and workers from the back, which balances as well.
        let tasks = units.div_ceil(aligned);
        let busiest = (0..t.min(tasks))
            .map(|i| (i..tasks).step_by(t).map(|k| aligned.min(units - k * aligned)).sum::<usize>())
            .max()
            .unwrap_or(0);
        if busiest * 10 <= even * 11 {
            aligned
        } else {
            even
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_load_the_threads_evenly() {
        let pool = Pool::new(2).unwrap();
        let par = Par::new(Some(&pool));
        // Aligned tasks where they come out even, equal shares where they would not.
        assert_eq!(par.split(96, 6), 24);
        assert_eq!(par.split(16, 6), 8);
        assert_eq!(par.split(32, 6), 16);
        assert_eq!(par.split(64, 6), 32);
        assert_eq!(par.split(160, 6), 42);
        assert_eq!(par.split(40, 4), 20);
        assert_eq!(1usize.div_ceil(par.split(1, 6)), 1);
        assert_eq!(Par::serial().split(10, 6), 10);
    }

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

    /// Many jobs of every size back to back, on more threads than this machine may have
    /// cores: each task runs exactly once, in its own job.
    #[test]
    fn every_task_of_every_job_runs_once() {
        use std::sync::atomic::AtomicU32;
        let pool = Pool::new(4).unwrap();
        let counts: Vec<AtomicU32> = (0..64).map(|_| AtomicU32::new(0)).collect();
        for job in 0..20_000usize {
            let tasks = job % 64;
            pool.run(tasks, &|i| {
                counts[i].fetch_add(1, Ordering::Relaxed);
            });
            for (i, c) in counts.iter().enumerate() {
                assert_eq!(c.swap(0, Ordering::Relaxed), u32::from(i < tasks), "job {job}");
            }
        }
    }

    /// Slots name the running thread: below the thread count, never two tasks at once in
    /// one slot (what per-slot scratch relies on), the caller's 0.
    #[test]
    fn a_slot_runs_one_task_at_a_time() {
        use std::sync::atomic::AtomicBool;
        let pool = Pool::new(3).unwrap();
        let busy: Vec<AtomicBool> = (0..3).map(|_| AtomicBool::new(false)).collect();
        let caller = std::thread::current().id();
        let ran = AtomicUsize::new(0);
        for job in 0..2_000usize {
            pool.run_slotted(1 + job % 16, &|_, slot| {
                assert!(slot < 3, "slot {slot} of 3 threads");
                assert_eq!(slot == 0, std::thread::current().id() == caller);
                assert!(!busy[slot].swap(true, Ordering::AcqRel), "slot {slot} shared");
                std::hint::black_box((0..200).sum::<usize>());
                busy[slot].store(false, Ordering::Release);
                ran.fetch_add(1, Ordering::Relaxed);
            });
        }
        assert_eq!(ran.load(Ordering::Relaxed), (0..2_000).map(|j| 1 + j % 16).sum::<usize>());
    }

    #[test]
    fn a_panicking_task_is_reported_and_the_pool_goes_on() {
        let pool = Pool::new(2).unwrap();
        let r = catch_unwind(AssertUnwindSafe(|| {
            pool.run(8, &|i| assert!(i != 5, "task 5"));
        }));
        assert!(r.is_err());
        let n = AtomicUsize::new(0);
        pool.run(8, &|_| {
            n.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(n.load(Ordering::Relaxed), 8);
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
