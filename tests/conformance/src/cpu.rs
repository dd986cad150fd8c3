//! CPU time by process, for the benchmarks' cost tables: where every process shares the
//! machine's cores, a path that costs N times the reference's CPU per operation cannot pass
//! 1/N of its throughput once both keep the cores busy (Linux only: read from `/proc`).

use std::time::Duration;

/// A process whose CPU time is sampled: a label and its pid.
pub type Probe = (&'static str, u32);

/// CPU time every thread of `pid` has used so far (`/proc/{pid}/task/*/schedstat`, whose
/// first field is nanoseconds on a CPU); `None` where there is no `/proc`.
pub fn cpu_time(pid: u32) -> Option<Duration> {
    let mut ns = 0u64;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let stat = std::fs::read_to_string(task.ok()?.path().join("schedstat")).ok()?;
        ns += stat.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(Duration::from_nanos(ns))
}

/// The pid `scripts/services.sh` recorded in `var` for a server it started, if any.
pub fn service_pid(var: &str) -> Option<u32> {
    std::env::var(var).ok()?.parse().ok()
}

/// The CPU time of every probe, together; `None` if one could not be read.
pub fn total(probes: &[Probe]) -> Option<Duration> {
    probes.iter().map(|(_, pid)| cpu_time(*pid)).sum()
}
