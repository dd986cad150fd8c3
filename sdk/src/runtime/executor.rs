//! The tokio runtime a provider binary runs on: one thread unless told otherwise.
//!
//! Serving one call takes a handful of short steps on different tasks: the NATS connection
//! task reads the invocation, the serving task runs the handler, the backend client's task
//! talks to the backend, and the NATS connection task writes the result. On one thread each
//! hand-off is a queue push, and every connection's writes leave in larger batches. On a
//! thread pool most hand-offs become cross-thread wake-ups — a futex call and a context
//! switch each. keyvalue-redis spends about a seventh less CPU per call on one thread (see
//! the README's benchmark section), and its throughput does not drop.
//!
//! A provider whose handlers do real CPU work on a large machine can ask for more threads
//! with [`THREADS_ENV`].
//!
//! The runtime also keeps one short timer pending at all times (see [`keep_timer_armed`]): a
//! call arms timers (its deadline, its backend request's timeout), and without it every timer
//! armed after the thread found the timer wheel empty would wake the I/O driver through its
//! eventfd, a system call each, about one per three calls under load.

use super::RuntimeError;

/// Environment variable setting how many threads a provider started with
/// [`provider_runtime`] runs on: `1` (the default) for a single-threaded runtime, `N` for a
/// pool of `N` workers, `0` for one worker per CPU.
pub const THREADS_ENV: &str = "TRELLIS_PROVIDER_THREADS";

/// Most worker threads [`THREADS_ENV`] may ask for.
const MAX_THREADS: usize = 1024;

/// Builds the tokio runtime for a provider binary, with as many threads as [`THREADS_ENV`]
/// says (one if unset).
///
/// ```no_run
/// fn main() -> anyhow::Result<()> {
///     trellis_sdk::runtime::provider_runtime()?.block_on(async {
///         // run_provider(my_provider, |handle| async move { … }).await
///         Ok(())
///     })
/// }
/// ```
pub fn provider_runtime() -> Result<tokio::runtime::Runtime, RuntimeError> {
    return_large_buffers_at_once();
    let rt = build(threads(std::env::var(THREADS_ENV).ok().as_deref())?)?;
    rt.spawn(keep_timer_armed());
    Ok(rt)
}

/// Large buffers (a multipart upload's parts, a read-ahead window) are mapped on their own
/// and returned to the system as soon as they are freed.
///
/// glibc's allocator maps an allocation above its threshold on its own, but after the first
/// such buffer is freed it raises the threshold to that size, so every later buffer of
/// that size comes from the heap, whose freed middle stays resident: a provider streaming
/// 1 GiB through 8 MiB parts then held 56 to 66 MiB at its peak from run to run instead of
/// the parts in flight. Fixing the threshold keeps the peak at what is really held.
fn return_large_buffers_at_once() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}

/// How often the timer of [`keep_timer_armed`] fires: well below the timeouts calls arm
/// (seconds), so theirs expire after it. A shorter timeout only costs the wake-up again.
const TIMER_ANCHOR_PERIOD: std::time::Duration = std::time::Duration::from_millis(500);

/// Keeps a timer pending for the runtime's whole life.
///
/// When tokio's timer driver parks it records its earliest timer. A timer armed later that
/// expires before that one (or any timer, if there was none) wakes the driver so it can
/// sleep less — through the I/O driver's eventfd, a `write` system call, even when it is
/// the runtime's own thread, not parked at all, that arms the timer. A provider that goes
/// idle between bursts of calls has no timer pending each time it parks, so each call of
/// the next burst paid that system call for its deadline and its backend timeout. With this
/// timer pending, the calls' timers expire later than the recorded one and wake nobody;
/// it costs one wake-up every [`TIMER_ANCHOR_PERIOD`].
async fn keep_timer_armed() {
    let mut tick = tokio::time::interval(TIMER_ANCHOR_PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
    }
}

fn build(threads: Threads) -> Result<tokio::runtime::Runtime, RuntimeError> {
    let mut builder = match threads {
        Threads::One => tokio::runtime::Builder::new_current_thread(),
        Threads::Pool(n) => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            if let Some(n) = n {
                b.worker_threads(n);
            }
            b
        }
    };
    builder.enable_all().build().map_err(RuntimeError::Tokio)
}

/// What [`THREADS_ENV`] asks for.
#[derive(Debug, PartialEq, Eq)]
enum Threads {
    One,
    /// A worker pool: this many workers, or one per CPU.
    Pool(Option<usize>),
}

fn threads(value: Option<&str>) -> Result<Threads, RuntimeError> {
    let Some(value) = value.map(str::trim).filter(|v| !v.is_empty()) else {
        return Ok(Threads::One);
    };
    match value.parse::<usize>() {
        Ok(0) => Ok(Threads::Pool(None)),
        Ok(1) => Ok(Threads::One),
        Ok(n) if n <= MAX_THREADS => Ok(Threads::Pool(Some(n))),
        _ => Err(RuntimeError::Threads(value.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thread_counts_parse() {
        assert_eq!(threads(None).ok(), Some(Threads::One));
        assert_eq!(threads(Some(" ")).ok(), Some(Threads::One));
        assert_eq!(threads(Some("1")).ok(), Some(Threads::One));
        assert_eq!(threads(Some("0")).ok(), Some(Threads::Pool(None)));
        assert_eq!(threads(Some(" 4 ")).ok(), Some(Threads::Pool(Some(4))));
        for bad in ["-1", "two", "1.5", "100000"] {
            let err = threads(Some(bad)).expect_err(bad).to_string();
            assert!(err.contains(THREADS_ENV) && err.contains(bad), "{err}");
        }
    }

    #[test]
    fn provider_runtimes_keep_a_timer_task() {
        let rt = provider_runtime().expect("runtime");
        assert_eq!(rt.metrics().num_alive_tasks(), 1);
    }

    #[test]
    fn runtimes_have_the_asked_flavor() {
        let one = build(threads(None).expect("default")).expect("runtime");
        assert_eq!(
            one.handle().runtime_flavor(),
            tokio::runtime::RuntimeFlavor::CurrentThread
        );
        assert_eq!(one.block_on(async { 7 }), 7);
        let pool = build(Threads::Pool(Some(2))).expect("runtime");
        assert_eq!(
            pool.handle().runtime_flavor(),
            tokio::runtime::RuntimeFlavor::MultiThread
        );
        assert_eq!(pool.metrics().num_workers(), 2);
    }
}
