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

/// One warning per process for a realtime I/O class refused.
static IO_CLASS_REFUSED: AtomicBool = AtomicBool::new(false);

/// Puts the calling thread (a writer, with `threads.writer_io_class = "realtime"`) in the
/// realtime I/O class, so the block layer serves its journal writes and flushes before
/// best-effort requests: the kernel's writeback of other processes' files (nats-server's
/// stream, ClickHouse's parts) no longer queues ahead of a group commit. On the 2-core
/// test VM at 100k ticks/s through JetStream, with the journal on the disk nats-server
/// writes, receive-to-durable p99 was 21-157 ms (median 44) over eleven runs against
/// 21-190 ms (median 44) over twenty-seven without it: no gain there, where the tail is
/// CPU as often as the disk (perf/README), so it is off by default. Refused (no
/// CAP_SYS_NICE or CAP_SYS_ADMIN): one warning, and the thread keeps the process's
/// class.
pub fn set_writer_io_realtime(thread_name: &str) {
    if let Err(error) = set_current_thread_io_realtime() {
        if !IO_CLASS_REFUSED.swap(true, Ordering::Relaxed) {
            tracing::warn!(thread = %thread_name, %error,
                "Could not put the writers in the realtime I/O class; their journal syncs may wait behind other processes' writeback. Grant CAP_SYS_NICE (systemd: AmbientCapabilities=CAP_SYS_NICE) or set threads.writer_io_class = \"inherit\"");
        }
    }
}

/// `ioprio_set` values (linux/ioprio.h): the class in the top bits, then the level.
#[cfg(target_os = "linux")]
const IOPRIO_CLASS_SHIFT: libc::c_int = 13;
#[cfg(target_os = "linux")]
const IOPRIO_CLASS_RT: libc::c_int = 1;
#[cfg(target_os = "linux")]
const IOPRIO_WHO_PROCESS: libc::c_int = 1;
/// The middle of the realtime levels (0 highest, 7 lowest): ahead of every best-effort
/// request, with room above for something the host holds more urgent.
#[cfg(target_os = "linux")]
const WRITER_IO_LEVEL: libc::c_int = 4;

/// The calling thread's I/O priority (class and level), as `ioprio_get` gives it.
#[cfg(target_os = "linux")]
pub fn thread_io_priority(tid: i32) -> std::io::Result<(i32, i32)> {
    // SAFETY: ioprio_get takes plain integers and touches no memory of ours.
    #[allow(unsafe_code)]
    let value = unsafe { libc::syscall(libc::SYS_ioprio_get, IOPRIO_WHO_PROCESS, tid) };
    if value < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let value = value as libc::c_int;
    Ok((
        value >> IOPRIO_CLASS_SHIFT,
        value & ((1 << IOPRIO_CLASS_SHIFT) - 1),
    ))
}

#[cfg(target_os = "linux")]
fn set_current_thread_io_realtime() -> std::io::Result<()> {
    let value = (IOPRIO_CLASS_RT << IOPRIO_CLASS_SHIFT) | WRITER_IO_LEVEL;
    // SAFETY: gettid and ioprio_set take plain integers and touch no memory of ours.
    #[allow(unsafe_code)]
    let code = unsafe {
        let tid = libc::gettid();
        libc::syscall(libc::SYS_ioprio_set, IOPRIO_WHO_PROCESS, tid, value)
    };
    if code == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Elsewhere the class is not applied.
#[cfg(not(target_os = "linux"))]
fn set_current_thread_io_realtime() -> std::io::Result<()> {
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "per-thread I/O classes are Linux-only",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_writer_takes_the_realtime_io_class_and_the_spawner_keeps_its_own() {
        // SAFETY: gettid takes nothing and touches no memory.
        #[allow(unsafe_code)]
        let own = unsafe { libc::gettid() };
        let before = thread_io_priority(own).unwrap();
        let writer = spawn("io-test", None, || {
            set_writer_io_realtime("io-test");
            #[allow(unsafe_code)]
            // SAFETY: as above.
            let tid = unsafe { libc::gettid() };
            thread_io_priority(tid).unwrap()
        })
        .unwrap();
        let got = writer.join().unwrap();
        // SAFETY: geteuid takes nothing and touches no memory.
        #[allow(unsafe_code)]
        let root = unsafe { libc::geteuid() } == 0;
        if root {
            // CI runs as root, which holds CAP_SYS_ADMIN and CAP_SYS_NICE.
            assert_eq!(got, (IOPRIO_CLASS_RT, WRITER_IO_LEVEL), "realtime, level 4");
        } else {
            // Refused without the capability: the thread keeps the class it had.
            assert_eq!(got, before, "a refused class changes nothing");
        }
        assert_eq!(
            thread_io_priority(own).unwrap(),
            before,
            "per thread, not per process"
        );
    }

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
