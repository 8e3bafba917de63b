//! Threads: named, optionally pinned to a core, hot-path ones optionally run ahead of
//! the rest ([`spawn_hot`]), the one waiting type every role uses when its input is
//! empty, and the stop-and-deadline alert every wait looks at.

pub mod alert;
pub mod backoff;
pub mod clock;
pub mod crash;
pub mod latency;
pub mod sizes;
pub mod wait;

pub use alert::Alert;
pub use backoff::Backoff;
pub use wait::Waiter;

use std::sync::atomic::{AtomicBool, Ordering};

/// Spawns a named thread, pinned to `core` when given. A failed pin is logged and the
/// thread runs unpinned: the host's cores were validated at load, so a failure means
/// the process was started with a narrower CPU set (taskset, cgroup), which the
/// operator should see but which must not stop ingestion.
pub fn spawn<T: Send + 'static>(
    name: &str,
    core: Option<usize>,
    work: impl FnOnce() -> T + Send + 'static,
) -> std::io::Result<std::thread::JoinHandle<T>> {
    spawn_with(name, core, None, work)
}

/// [`spawn`] for a hot-path thread (receiver, shard, writer): it runs at nice value
/// `nice` (`threads.hot_nice`), so on cores it shares with ClickHouse, nats-server or
/// the slow paths the scheduler lets it run first. On the 2-core test box, twelve pairs
/// at 100k ticks/s through JetStream gave a receive-to-durable p99 median of 46.5 ms at
/// -10 against 83 ms at 0, lower in 8 of 12 (perf/README). A value it may not take (no
/// RLIMIT_NICE or CAP_SYS_NICE) is logged once; the thread runs as it is.
pub fn spawn_hot<T: Send + 'static>(
    name: &str,
    core: Option<usize>,
    nice: i32,
    work: impl FnOnce() -> T + Send + 'static,
) -> std::io::Result<std::thread::JoinHandle<T>> {
    spawn_with(name, core, Some(nice), work)
}

fn spawn_with<T: Send + 'static>(
    name: &str,
    core: Option<usize>,
    nice: Option<i32>,
    work: impl FnOnce() -> T + Send + 'static,
) -> std::io::Result<std::thread::JoinHandle<T>> {
    let thread_name = name.to_string();
    std::thread::Builder::new().name(thread_name.clone()).spawn(move || {
        if let Some(nice) = nice {
            set_nice(&thread_name, nice);
        }
        if let Some(core) = core {
            let pinned = core_affinity::set_for_current(core_affinity::CoreId { id: core });
            if pinned {
                tracing::info!(thread = %thread_name, core, "Pinned thread");
            } else {
                tracing::warn!(thread = %thread_name, core, "Could not pin thread; running unpinned");
            }
        }
        work()
    })
}

/// One warning per process for a nice value refused: every hot thread would repeat it.
static NICE_REFUSED: AtomicBool = AtomicBool::new(false);

/// Sets the calling thread's nice value (per thread on Linux: each thread is a task).
fn set_nice(thread_name: &str, nice: i32) {
    match set_current_thread_nice(nice) {
        Ok(()) => {}
        Err(error) => {
            if !NICE_REFUSED.swap(true, Ordering::Relaxed) {
                tracing::warn!(thread = %thread_name, nice, %error,
                    "Could not set the hot threads' nice value; they run at the process's. Grant it (systemd: LimitNICE=-10, or CAP_SYS_NICE) or set threads.hot_nice = 0");
            }
        }
    }
}

/// `setpriority(PRIO_PROCESS, tid, nice)` for the calling thread.
#[cfg(target_os = "linux")]
fn set_current_thread_nice(nice: i32) -> std::io::Result<()> {
    // SAFETY: gettid and setpriority take plain integers and touch no memory of ours.
    #[allow(unsafe_code)]
    let code = unsafe {
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, nice)
    };
    if code == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Elsewhere the value is not applied.
#[cfg(not(target_os = "linux"))]
fn set_current_thread_nice(_nice: i32) -> std::io::Result<()> {
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "per-thread nice values are Linux-only",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The calling thread's nice value, from /proc (field 19 of its stat line).
    fn own_nice() -> i32 {
        let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
        let after_name = &stat[stat.rfind(')').unwrap() + 2..];
        after_name.split(' ').nth(16).unwrap().parse().unwrap()
    }

    #[test]
    fn a_hot_thread_takes_its_nice_value_and_the_spawner_keeps_its_own() {
        // Raising the value is allowed without privileges, so the test runs anywhere.
        let before = own_nice();
        let hot = spawn_hot("nice-test", None, before + 3, own_nice).unwrap();
        assert_eq!(hot.join().unwrap(), before + 3);
        let plain = spawn("plain-test", None, own_nice).unwrap();
        assert_eq!(plain.join().unwrap(), before, "a plain thread inherits");
        assert_eq!(own_nice(), before, "per thread, not per process");
    }
}
