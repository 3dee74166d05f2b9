//! CPU time and resident memory of a process or one of its threads, from `/proc` (Linux).
use std::time::Instant;

/// CPU seconds (user + system) in a `stat` file of `/proc` (a process's: all its threads).
fn cpu_seconds_in(stat_path: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(stat_path).ok()?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// Resident memory, MiB.
pub fn rss_mb(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}

/// The threads of `pid` named `prefix` followed by a number, as (number, thread id), in order.
pub fn numbered_threads(pid: u32, prefix: &str) -> Vec<(usize, u32)> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    let mut threads: Vec<(usize, u32)> = tasks
        .filter_map(|task| {
            let task = task.ok()?;
            let tid: u32 = task.file_name().to_str()?.parse().ok()?;
            let comm = std::fs::read_to_string(task.path().join("comm")).ok()?;
            let number = comm.trim().strip_prefix(prefix)?.parse().ok()?;
            Some((number, tid))
        })
        .collect();
    threads.sort_unstable();
    threads
}

/// CPU use of a process (or one thread) over an interval, as a percentage of one core.
pub struct CpuMeter {
    stat_path: String,
    start: Instant,
    cpu: f64,
}

impl CpuMeter {
    /// Starts measuring process `pid` (all its threads).
    pub fn start(pid: u32) -> Option<CpuMeter> {
        Self::at(format!("/proc/{pid}/stat"))
    }

    /// Starts measuring thread `tid` of process `pid`.
    pub fn thread(pid: u32, tid: u32) -> Option<CpuMeter> {
        Self::at(format!("/proc/{pid}/task/{tid}/stat"))
    }

    fn at(stat_path: String) -> Option<CpuMeter> {
        Some(CpuMeter {
            cpu: cpu_seconds_in(&stat_path)?,
            stat_path,
            start: Instant::now(),
        })
    }

    /// Percent of one core since the start.
    pub fn percent(&self) -> Option<f64> {
        let used = cpu_seconds_in(&self.stat_path)? - self.cpu;
        Some(100.0 * used / self.start.elapsed().as_secs_f64())
    }
}
