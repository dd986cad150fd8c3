//! The wasmtime engine and the limits every component instance runs under.
//!
//! One engine per host: components are compiled once (the compiled artifact is cached on disk,
//! keyed by the component's content hash and the engine's settings, by wasmtime's cache), and
//! instantiated per invocation from a pooling allocator, so an instance costs a few
//! microseconds. Execution time is bounded with epoch interruption: a background thread
//! advances the epoch every [`EPOCH_TICK`], and each store gets a deadline in ticks.
//!
//! A freed instance slot is reset by zeroing the pages the instance touched (found with the
//! `PAGEMAP_SCAN` ioctl where the kernel has it) rather than by `madvise`: handing pages back
//! to the kernel costs a TLB shootdown on every core and a page fault per page on the next
//! instance, which profiled at a quarter of the host's CPU under HTTP load. What stays
//! resident is bounded by [`KEEP_RESIDENT_MEMORY`] per warm slot.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use wasmtime::{
    Cache, CacheConfig, Config, Enabled, Engine, InstanceAllocationStrategy,
    PoolingAllocationConfig,
};

/// How often the epoch advances; deadlines are rounded up to it.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Bytes of a freed linear memory reset in place (and kept resident) instead of returned to
/// the kernel. Covers the data, heap and shadow stack a typical request touches.
pub const KEEP_RESIDENT_MEMORY: usize = 2 << 20;

/// The same for tables (function tables are small).
const KEEP_RESIDENT_TABLES: usize = 64 << 10;

/// Freed slots kept warm for reuse (each holds at most the resident bytes above).
const WARM_SLOTS: u32 = 32;

/// Limits applied to every component instance.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest linear memory one instance may grow to, in bytes.
    pub max_memory_bytes: usize,
    /// Longest one invocation may run before it is interrupted.
    pub execution_deadline: Duration,
    /// Most instances of one component alive at once; further calls wait.
    pub max_concurrent_instances: usize,
    /// Instances the pooling allocator holds across all components.
    pub pool_instances: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_memory_bytes: 64 << 20,
            execution_deadline: Duration::from_secs(10),
            max_concurrent_instances: 64,
            pool_instances: 256,
        }
    }
}

impl Limits {
    /// The deadline in epoch ticks (at least one).
    pub fn deadline_ticks(&self) -> u64 {
        let ticks = self.execution_deadline.as_millis() / EPOCH_TICK.as_millis().max(1);
        u64::try_from(ticks).unwrap_or(u64::MAX).max(1)
    }
}

/// Why the engine could not be built.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// wasmtime refused the configuration.
    #[error("cannot configure wasmtime: {0}")]
    Wasmtime(String),
}

/// The host's engine, with its epoch ticker (stopped when dropped).
pub struct HostEngine {
    engine: Engine,
    limits: Limits,
    ticker_stop: Arc<AtomicBool>,
}

impl std::fmt::Debug for HostEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostEngine")
            .field("limits", &self.limits)
            .finish()
    }
}

impl HostEngine {
    /// Builds the engine; compiled components are cached under `cache_dir` if given.
    pub fn new(limits: Limits, cache_dir: Option<PathBuf>) -> Result<Self, EngineError> {
        let err = |e: wasmtime::Error| EngineError::Wasmtime(format!("{e:#}"));
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(limits.pool_instances)
            .total_core_instances(limits.pool_instances.saturating_mul(4))
            .total_memories(limits.pool_instances.saturating_mul(2))
            .total_tables(limits.pool_instances.saturating_mul(4))
            .total_stacks(limits.pool_instances)
            .max_memory_size(limits.max_memory_bytes)
            .linear_memory_keep_resident(KEEP_RESIDENT_MEMORY)
            .table_keep_resident(KEEP_RESIDENT_TABLES)
            .max_unused_warm_slots(WARM_SLOTS.min(limits.pool_instances))
            // Only the pages an instance touched are reset (no-op where unsupported).
            .pagemap_scan(Enabled::Auto);
        let mut config = Config::new();
        config
            .wasm_component_model(true)
            .epoch_interruption(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        if let Some(dir) = cache_dir {
            let mut cache = CacheConfig::new();
            cache.with_directory(dir);
            config.cache(Some(Cache::new(cache).map_err(err)?));
        }
        let engine = Engine::new(&config).map_err(err)?;
        let ticker_stop = Arc::new(AtomicBool::new(false));
        {
            let engine = engine.clone();
            let stop = Arc::clone(&ticker_stop);
            std::thread::Builder::new()
                .name("trellis-epoch".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(EPOCH_TICK);
                        engine.increment_epoch();
                    }
                })
                .map_err(|e| {
                    EngineError::Wasmtime(format!("cannot start the epoch ticker: {e}"))
                })?;
        }
        Ok(Self {
            engine,
            limits,
            ticker_stop,
        })
    }

    /// The wasmtime engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The limits instances run under.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }
}

impl Drop for HostEngine {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
    }
}
