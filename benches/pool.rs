//! What handing work to another core costs on this machine: the floor (one cache line bounced
//! between two threads) and an empty job of the CPU backend's thread pool, which every
//! parallel firing pays. By parts, a one-row firing is a few microseconds of work, so this
//! decides whether a second thread helps it (README, "Measured trade-offs").
//!
//! cargo bench --bench pool

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use frugal_cpu::Pool;

/// A value alone on its cache lines.
#[repr(align(128))]
struct Line(AtomicU64);

/// Microseconds for one round trip of a cache line between two spinning threads.
fn ping_pong(rounds: u64) -> f64 {
    let lines = Arc::new((Line(AtomicU64::new(0)), Line(AtomicU64::new(0))));
    let other = Arc::clone(&lines);
    let echo = std::thread::spawn(move || {
        for i in 1..=rounds {
            while other.0 .0.load(Ordering::Acquire) != i {
                std::hint::spin_loop();
            }
            other.1 .0.store(i, Ordering::Release);
        }
    });
    let t = Instant::now();
    for i in 1..=rounds {
        lines.0 .0.store(i, Ordering::Release);
        while lines.1 .0.load(Ordering::Acquire) != i {
            std::hint::spin_loop();
        }
    }
    let us = t.elapsed().as_secs_f64() * 1e6 / rounds as f64;
    echo.join().expect("echo thread");
    us
}

/// Microseconds per job of `tasks` empty tasks on a pool of `threads`.
fn empty_jobs(pool: &Pool, tasks: usize, jobs: usize) -> f64 {
    let sink = AtomicUsize::new(0);
    let t = Instant::now();
    for _ in 0..jobs {
        pool.run(tasks, &|i| {
            sink.fetch_add(i, Ordering::Relaxed);
        });
    }
    t.elapsed().as_secs_f64() * 1e6 / jobs as f64
}

fn main() {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cores < 2 {
        println!("one core: nothing to hand work to");
        return;
    }
    // Fastest of five batches: the figure that repeats on a shared machine.
    let best = |f: &dyn Fn() -> f64| (0..5).map(|_| f()).fold(f64::INFINITY, f64::min);
    println!("cache-line round trip between two threads: {:.3} us", best(&|| ping_pong(200_000)));
    let pool = Pool::new(2).expect("thread pool");
    for tasks in [2, 4] {
        let us = best(&|| empty_jobs(&pool, tasks, 100_000));
        println!("empty job of {tasks} tasks on 2 threads: {us:.3} us");
    }
}
