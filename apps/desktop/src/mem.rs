//! What the process uses: resident memory for the status line, and CPU time per group of
//! threads, to tell what drawing costs next to inference.

/// Resident set size in bytes (`VmRSS` of `/proc/self/status`); `None` off Linux.
pub fn rss_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_vmrss(&s)
}

fn parse_vmrss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// CPU seconds (user + system) the process's live threads have used, by group.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct CpuSplit {
    /// The worker (`suanpan-engine`) and the runtime's pool (`suanpan-N`).
    pub inference: f64,
    /// The main thread: event loop, egui, wgpu submit and present.
    pub ui: f64,
    /// Everything else: the driver's threads (lavapipe's rasterizer, WSI), Xlib.
    pub other: f64,
}

impl CpuSplit {
    pub fn since(&self, earlier: &CpuSplit) -> CpuSplit {
        CpuSplit {
            inference: self.inference - earlier.inference,
            ui: self.ui - earlier.ui,
            other: self.other - earlier.other,
        }
    }
}

/// Read `/proc/self/task/*/stat`; `None` off Linux.
pub fn cpu_split() -> Option<CpuSplit> {
    let pid = std::process::id().to_string();
    let mut out = CpuSplit::default();
    for entry in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
        let tid = entry.file_name().to_string_lossy().into_owned();
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue; // the thread just ended
        };
        let Some((comm, secs)) = parse_stat(&stat) else {
            continue;
        };
        if tid == pid {
            out.ui += secs;
        } else if comm == "suanpan-engine"
            || comm
                .strip_prefix("suanpan-")
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        {
            out.inference += secs;
        } else {
            out.other += secs;
        }
    }
    Some(out)
}

/// `(comm, utime + stime in seconds)` of one `stat` line. Times are in USER_HZ ticks,
/// which Linux fixes at 100 per second on every architecture.
fn parse_stat(stat: &str) -> Option<(&str, f64)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = &stat[open + 1..close];
    // After "pid (comm) ": state is field 3, utime field 14, stime field 15.
    let rest: Vec<&str> = stat[close + 1..].split_whitespace().collect();
    let utime: u64 = rest.get(11)?.parse().ok()?;
    let stime: u64 = rest.get(12)?.parse().ok()?;
    Some((comm, (utime + stime) as f64 / 100.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_vmrss_line() {
        let s = "Name:\tx\nVmPeak:\t  10 kB\nVmRSS:\t  123456 kB\nThreads:\t3\n";
        assert_eq!(parse_vmrss(s), Some(123_456 * 1024));
        assert_eq!(parse_vmrss("Name: x\n"), None);
    }

    #[test]
    fn parses_a_stat_line_with_spaces_in_the_name() {
        // Fields 14 and 15 (utime, stime) are 250 and 50 ticks.
        let s = "4242 (llvmpipe 0) S 1 4242 4242 0 -1 4194368 100 0 0 0 250 50 0 0 20 0 3 0 99 0 0";
        assert_eq!(parse_stat(s), Some(("llvmpipe 0", 3.0)));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn reads_our_own_process() {
        // A running test binary holds at least a megabyte.
        assert!(rss_bytes().unwrap() > 1 << 20);
        let c = cpu_split().unwrap();
        assert!(c.ui >= 0.0 && c.inference >= 0.0 && c.other >= 0.0);
    }
}
