//! What the kernel says about the relay process and the machine (`/proc`).

use std::fs;
use std::io;

/// CPU time of every thread of `pid`, ns (`/proc/PID/task/*/schedstat`, first field: time
/// on CPU, nanosecond resolution, unlike the 10 ms ticks of `/proc/PID/stat`).
pub fn process_cpu_ns(pid: u32) -> io::Result<u64> {
    let mut total = 0;
    for task in fs::read_dir(format!("/proc/{pid}/task"))? {
        let path = task?.path().join("schedstat");
        // A thread may exit between listing and reading: skip it.
        if let Ok(text) = fs::read_to_string(path) {
            total += parse_schedstat(&text).unwrap_or(0);
        }
    }
    Ok(total)
}

fn parse_schedstat(text: &str) -> Option<u64> {
    text.split_whitespace().next()?.parse().ok()
}

/// Resident set size of `pid`, KiB (`VmRSS` of `/proc/PID/status`).
pub fn rss_kib(pid: u32) -> io::Result<u64> {
    let text = fs::read_to_string(format!("/proc/{pid}/status"))?;
    parse_vmrss(&text).ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no VmRSS"))
}

fn parse_vmrss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// CPU time the whole machine spent busy (everything but idle and iowait), ns, from the
/// `cpu` line of `/proc/stat` (10 ms resolution: use over seconds).
pub fn machine_busy_ns() -> io::Result<u64> {
    let text = fs::read_to_string("/proc/stat")?;
    parse_proc_stat(&text)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "bad /proc/stat"))
}

fn parse_proc_stat(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal (guest time is inside user).
    let busy: u64 = fields
        .iter()
        .take(8)
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, v)| v)
        .sum();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Some(busy * (1_000_000_000 / hz))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_files() {
        assert_eq!(parse_schedstat("123456 789 10\n"), Some(123456));
        assert_eq!(parse_schedstat(""), None);
        assert_eq!(
            parse_vmrss("Name:\trecorder\nVmPeak:\t 9 kB\nVmRSS:\t   20480 kB\n"),
            Some(20480)
        );
        assert_eq!(parse_vmrss("Name: x\n"), None);
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
        let busy = parse_proc_stat("cpu  10 1 5 1000 7 2 3 0 0 0\ncpu0 1 1 1 1 1 1 1 1 1 1\n");
        assert_eq!(busy, Some(21 * (1_000_000_000 / hz)));
        assert_eq!(parse_proc_stat("intr 1 2 3\n"), None);
    }

    #[test]
    fn reads_this_process() {
        let me = std::process::id();
        assert!(process_cpu_ns(me).unwrap() > 0);
        assert!(rss_kib(me).unwrap() > 100);
        assert!(machine_busy_ns().unwrap() > 0);
    }
}
