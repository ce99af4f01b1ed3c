//! Fork-safe rayon thread pools, one per thread count.
//!
//! rayon's global pool is unusable in a child created by `fork()` (its worker threads do not exist
//! there, so the first parallel call would wait forever). Every parallel call of this crate runs in
//! [`pool()`]: the pool of the requested thread count, which remembers the process id it was built in and
//! is built afresh when called from another process (a forked DataLoader worker). Pools live in one slot
//! per thread count, so switching the count back and forth (`set_num_threads`) reuses them instead of
//! starting new threads each time; a pool replaced after a fork is leaked on purpose (its threads are gone
//! in the child). No lock is taken, so a fork at any instant is safe.

use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};

use rayon::{ThreadPool, ThreadPoolBuilder};

struct Owned {
    pid: u32,
    pool: ThreadPool,
}

/// Thread counts with a slot of their own; a larger request is served by the pool of this many.
const MAX_THREADS: usize = 256;
/// Slot 0: the default count (`PUDNET_NUM_THREADS`, else `RAYON_NUM_THREADS`, else the CPU count).
static POOLS: [AtomicPtr<Owned>; MAX_THREADS + 1] = [const { AtomicPtr::new(std::ptr::null_mut()) }; MAX_THREADS + 1];
/// Requested thread count; 0 = the default.
static REQUESTED: AtomicUsize = AtomicUsize::new(0);

/// The thread count to build a pool with (read when a pool is built, not on every call).
fn wanted_threads(requested: usize) -> usize {
    if requested > 0 {
        return requested;
    }
    std::env::var("PUDNET_NUM_THREADS")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or(0) // 0: rayon reads RAYON_NUM_THREADS or uses the number of CPUs
}

fn build(threads: usize) -> Option<ThreadPool> {
    ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("pudnet-{i}"))
        .build()
        .ok()
}

/// The pool of this process for the requested thread count, built on first use (and again after a fork).
pub fn pool() -> &'static ThreadPool {
    let pid = std::process::id();
    let requested = REQUESTED.load(Ordering::Relaxed).min(MAX_THREADS);
    let slot = &POOLS[requested];
    let cur = slot.load(Ordering::Acquire);
    // SAFETY: pointers stored in POOLS come from Box::into_raw and are never freed.
    if let Some(owned) = unsafe { cur.as_ref() } {
        if owned.pid == pid {
            return &owned.pool;
        }
    }
    let pool = match build(wanted_threads(requested)) {
        Some(p) => p,
        None => build(1).expect("cannot start even one thread"),
    };
    let new = Box::into_raw(Box::new(Owned { pid, pool }));
    match slot.compare_exchange(cur, new, Ordering::AcqRel, Ordering::Acquire) {
        Ok(_) => unsafe { &(*new).pool },
        Err(other) => {
            // Another thread installed a pool first: use it, and drop ours (never shared, no worker busy).
            drop(unsafe { Box::from_raw(new) });
            unsafe { &(*other).pool }
        }
    }
}

/// Sets the number of worker threads for later calls (0 = back to the default).
pub fn set_num_threads(n: usize) {
    REQUESTED.store(n, Ordering::Relaxed);
}

/// The number of threads parallel calls use now.
pub fn num_threads() -> usize {
    pool().current_num_threads()
}

/// Runs `f` inside this process's pool.
pub fn install<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    pool().install(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn switching_the_thread_count_reuses_each_counts_pool() {
        set_num_threads(2);
        let two = pool() as *const ThreadPool;
        set_num_threads(3);
        let three = pool() as *const ThreadPool;
        set_num_threads(2);
        assert_eq!(pool() as *const ThreadPool, two);
        assert_ne!(two, three);
        assert_eq!(num_threads(), 2);
        set_num_threads(0);
    }
}
