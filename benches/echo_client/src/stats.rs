//! CPU-time sampling and the JSON report.

use std::fs;
use std::time::Duration;

/// utime+stime of a whole process (all threads) in microseconds, from
/// /proc/PID/stat. Linux reports it in clock ticks (normally 10 ms each), so
/// the measured phase should last at least about a second.
pub fn process_cpu_us(pid: u32) -> Option<f64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may contain spaces,
    // so count fields from the last ')': field 3 (state) is index 0 there,
    // utime (field 14) index 11 and stime (field 15) index 12.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let ticks = if ticks > 0 { ticks as f64 } else { 100.0 };
    Some((utime + stime) * 1e6 / ticks)
}

/// This process's own CPU time in microseconds (getrusage has µs resolution).
pub fn self_cpu_us() -> f64 {
    // SAFETY: getrusage only writes into the zeroed struct we pass it.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let tv = |t: libc::timeval| t.tv_sec as f64 * 1e6 + t.tv_usec as f64;
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// Nearest-rank percentile of sorted latencies (ns), in µs.
fn percentile_us(sorted_ns: &[u64], pct: f64) -> Option<f64> {
    if sorted_ns.is_empty() {
        return None;
    }
    let rank = ((pct / 100.0) * sorted_ns.len() as f64).ceil() as usize;
    let idx = rank.clamp(1, sorted_ns.len()) - 1;
    Some(sorted_ns[idx] as f64 / 1e3)
}

/// What the measured phase produced.
pub struct Report {
    pub conns: usize,
    pub size: usize,
    pub requests: u64,
    pub errors: u64,
    pub elapsed: Duration,
    pub latencies_ns: Vec<u64>,
    pub server_cpu_us: Option<f64>,
    pub client_cpu_us: f64,
    pub first_error: Option<String>,
}

fn num(value: Option<f64>) -> String {
    match value {
        Some(v) if v.is_finite() => format!("{v:.1}"),
        _ => "null".into(),
    }
}

fn json_string(text: &str) -> String {
    let mut out = String::from("\"");
    for ch in text.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

impl Report {
    /// One-line JSON object (no serde: the schema is flat and fixed).
    pub fn into_json(mut self) -> String {
        self.latencies_ns.sort_unstable();
        let secs = self.elapsed.as_secs_f64();
        let rps = if secs > 0.0 {
            self.requests as f64 / secs
        } else {
            0.0
        };
        let per_req = |cpu: Option<f64>| match cpu {
            Some(us) if self.requests > 0 => Some(us / self.requests as f64),
            _ => None,
        };
        let error = self
            .first_error
            .as_deref()
            .map_or("null".into(), json_string);
        format!(
            concat!(
                "{{\"conns\": {}, \"size\": {}, \"requests\": {}, \"errors\": {}, ",
                "\"elapsed_s\": {:.3}, \"rps\": {:.1}, \"p50_us\": {}, \"p99_us\": {}, ",
                "\"server_cpu_us\": {}, \"server_cpu_us_per_req\": {}, ",
                "\"client_cpu_us\": {}, \"client_cpu_us_per_req\": {}, \"first_error\": {}}}"
            ),
            self.conns,
            self.size,
            self.requests,
            self.errors,
            secs,
            rps,
            num(percentile_us(&self.latencies_ns, 50.0)),
            num(percentile_us(&self.latencies_ns, 99.0)),
            num(self.server_cpu_us),
            num(per_req(self.server_cpu_us)),
            num(Some(self.client_cpu_us)),
            num(per_req(Some(self.client_cpu_us))),
            error,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let ns: Vec<u64> = (1..=100).map(|i| i * 1000).collect();
        assert_eq!(percentile_us(&ns, 50.0), Some(50.0));
        assert_eq!(percentile_us(&ns, 99.0), Some(99.0));
        assert_eq!(percentile_us(&[], 50.0), None);
    }

    #[test]
    fn own_stat_parses() {
        assert!(process_cpu_us(std::process::id()).is_some());
    }
}
