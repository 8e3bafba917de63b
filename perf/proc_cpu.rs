//! CPU seconds of other processes, from `/proc`, for the perf examples that charge
//! nats-server's work to the consumer that caused it (`ack_policy`, `receiver_budget`).

/// The nats-server process: `NATS_SERVER_PID`, else the one `/proc/*/comm` names.
pub fn nats_server_pid() -> u32 {
    if let Some(pid) = std::env::var("NATS_SERVER_PID")
        .ok()
        .and_then(|p| p.parse().ok())
    {
        return pid;
    }
    let mut pids: Vec<u32> = std::fs::read_dir("/proc")
        .expect("/proc")
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let comm = std::fs::read_to_string(entry.path().join("comm")).ok()?;
            (comm.trim_end() == "nats-server").then_some(pid)
        })
        .collect();
    pids.sort_unstable();
    match pids.as_slice() {
        [] => panic!("no nats-server process in /proc (bash .ci/services.sh all)"),
        [pid] => *pid,
        [pid, ..] => {
            eprintln!("several nats-server processes {pids:?}; measuring {pid} (set NATS_SERVER_PID to choose)");
            *pid
        }
    }
}

/// utime + stime of `pid` in seconds, from `/proc/<pid>/stat` (all its threads).
pub fn process_cpu_s(pid: u32, ticks_per_s: f64) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("nats-server stat");
    // Fields after `(comm)`, which may hold spaces: state is field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')').expect("stat has (comm)") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields[i - 3].parse::<u64>().expect("stat tick count");
    (ticks(14) + ticks(15)) as f64 / ticks_per_s
}

/// Clock ticks per second of `/proc/<pid>/stat`'s times.
pub fn clock_ticks_per_s() -> f64 {
    // SAFETY: sysconf reads a constant.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    assert!(ticks > 0, "sysconf(_SC_CLK_TCK)");
    ticks as f64
}
