//! A fork-safe rayon thread pool.
//!
//! rayon's global pool is unusable in a child created by `fork()` (its worker threads do not exist
//! there, so the first parallel call would wait forever). Every parallel call of this crate runs in
//! [`pool()`], which remembers the process id it was built in and builds a fresh pool when called from
//! another process (a forked DataLoader worker). No lock is taken, so a fork at any instant is safe; a
//! replaced pool is leaked on purpose (its threads are gone in the child, or it is still referenced).

use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};

use rayon::{ThreadPool, ThreadPoolBuilder};

struct Owned {
    pid: u32,
    requested: usize,
    pool: ThreadPool,
}

static POOL: AtomicPtr<Owned> = AtomicPtr::new(std::ptr::null_mut());
/// Requested thread count; 0 = `PUDNET_NUM_THREADS`, else `RAYON_NUM_THREADS`, else the CPU count.
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

/// The pool of this process, built on first use (and again after a fork or `set_num_threads`).
pub fn pool() -> &'static ThreadPool {
    let pid = std::process::id();
    let requested = REQUESTED.load(Ordering::Relaxed);
    let cur = POOL.load(Ordering::Acquire);
    // SAFETY: pointers stored in POOL come from Box::into_raw and are never freed.
    if let Some(owned) = unsafe { cur.as_ref() } {
        if owned.pid == pid && owned.requested == requested {
            return &owned.pool;
        }
    }
    let pool = match build(wanted_threads(requested)) {
        Some(p) => p,
        None => build(1).expect("cannot start even one thread"),
    };
    let new = Box::into_raw(Box::new(Owned { pid, requested, pool }));
    match POOL.compare_exchange(cur, new, Ordering::AcqRel, Ordering::Acquire) {
        Ok(_) => unsafe { &(*new).pool },
        Err(_) => {
            // Another thread installed a pool first: use it; ours is leaked with the rest (rare).
            let other = POOL.load(Ordering::Acquire);
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
