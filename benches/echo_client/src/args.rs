//! Command-line parsing (hand-rolled to keep the crate's dependencies few).

use std::time::Duration;

pub const USAGE: &str =
    "usage: echo_client (--tcp HOST:PORT | --unix PATH) [--conns N] [--size BYTES]
                   [--duration SECS] [--warmup SECS] [--pid SERVER_PID]
                   [--tls CA_PEM]

Opens N connections; each sends SIZE bytes, waits for the whole echo, and
repeats (closed loop). After the warm-up, requests are counted for DURATION
seconds. Prints one JSON object on stdout. With --pid, the server's CPU time
(utime+stime from /proc/PID/stat) is sampled at the start and end of the
measured phase. With --tls (TCP only), every connection speaks TLS (rustls)
and checks the server's certificate against the CA certificates in CA_PEM,
for the host part of --tcp (an IP address or a DNS name).";

/// Where the echo server listens.
#[derive(Debug, Clone)]
pub enum Target {
    Tcp(String),
    Unix(String),
}

#[derive(Debug, Clone)]
pub struct Args {
    pub target: Target,
    pub conns: usize,
    pub size: usize,
    pub warmup: Duration,
    pub duration: Duration,
    pub server_pid: Option<u32>,
    /// PEM file of the CA(s) to trust; TLS is on when set.
    pub tls_ca: Option<String>,
}

fn seconds(text: &str) -> Result<Duration, String> {
    let secs: f64 = text
        .parse()
        .map_err(|_| format!("not a number of seconds: {text}"))?;
    if !(0.0..=3600.0).contains(&secs) {
        return Err(format!("seconds out of range (0..3600): {text}"));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn positive(text: &str, what: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("{what} must be a positive integer, got {text}")),
    }
}

pub fn parse(mut argv: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut target = None;
    let mut args = Args {
        target: Target::Tcp(String::new()),
        conns: 1,
        size: 1024,
        warmup: Duration::from_millis(500),
        duration: Duration::from_secs(2),
        server_pid: None,
        tls_ca: None,
    };
    while let Some(flag) = argv.next() {
        if flag == "-h" || flag == "--help" {
            return Err(String::new());
        }
        let value = argv.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--tcp" => target = Some(Target::Tcp(value)),
            "--unix" => target = Some(Target::Unix(value)),
            "--conns" => args.conns = positive(&value, "--conns")?,
            "--size" => args.size = positive(&value, "--size")?,
            "--warmup" => args.warmup = seconds(&value)?,
            "--duration" => args.duration = seconds(&value)?,
            "--pid" => args.server_pid = Some(positive(&value, "--pid")? as u32),
            "--tls" => args.tls_ca = Some(value),
            _ => return Err(format!("unknown option {flag}")),
        }
    }
    args.target = target.ok_or("one of --tcp or --unix is required")?;
    if args.tls_ca.is_some() && !matches!(args.target, Target::Tcp(_)) {
        return Err("--tls needs --tcp".into());
    }
    if args.duration.is_zero() {
        return Err("--duration must be > 0".into());
    }
    Ok(args)
}
