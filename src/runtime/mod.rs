//! Threads: named, optionally pinned to a core, the one waiting type every role uses
//! when its input is empty, and the stop-and-deadline alert every wait looks at.

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

/// Spawns a named thread, pinned to `core` when given. A failed pin is logged and the
/// thread runs unpinned: the host's cores were validated at load, so a failure means
/// the process was started with a narrower CPU set (taskset, cgroup), which the
/// operator should see but which must not stop ingestion.
pub fn spawn<T: Send + 'static>(
    name: &str,
    core: Option<usize>,
    work: impl FnOnce() -> T + Send + 'static,
) -> std::io::Result<std::thread::JoinHandle<T>> {
    let thread_name = name.to_string();
    std::thread::Builder::new().name(thread_name.clone()).spawn(move || {
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
