//! The closed-loop load generator: one thread, one mio poll, N connections.
//!
//! A single thread multiplexing every connection keeps the client's own CPU
//! use and context switches low (it shares the 2 cores with the server), and
//! non-blocking I/O lets it read the echo while a large message is still
//! being written, so 100 KiB messages cannot deadlock on full socket buffers.
//! With `--tls` each connection runs rustls over its TCP socket (`tls.rs`).

use std::io::{self, Read, Write};
use std::net::ToSocketAddrs;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::{TcpStream, UnixStream};
use mio::{Events, Interest, Poll, Token};
use rustls::pki_types::ServerName;
use rustls::ClientConfig;

use crate::args::{Args, Target};
use crate::stats::{process_cpu_us, self_cpu_us, Report};
use crate::tls::{self, TlsStream};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// What `--tls` sets up once for every connection.
type TlsSetup = (Arc<ClientConfig>, ServerName<'static>);

enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
    Tls(Box<TlsStream>),
}

impl Stream {
    fn connect(target: &Target, tls: Option<&TlsSetup>) -> io::Result<Stream> {
        // Connect with blocking std sockets (simple, bounded by a timeout),
        // then hand them to mio in non-blocking mode.
        match target {
            Target::Tcp(addr) => {
                let addr = addr
                    .to_socket_addrs()?
                    .next()
                    .ok_or_else(|| io::Error::other(format!("cannot resolve {addr}")))?;
                let std = std::net::TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)?;
                // Every request is one small-ish write followed by a wait:
                // Nagle would add delayed-ACK stalls to the latency.
                std.set_nodelay(true)?;
                std.set_nonblocking(true)?;
                let sock = TcpStream::from_std(std);
                Ok(match tls {
                    None => Stream::Tcp(sock),
                    Some((config, name)) => Stream::Tls(Box::new(TlsStream::new(
                        sock,
                        config.clone(),
                        name.clone(),
                    )?)),
                })
            }
            Target::Unix(path) => {
                let std = std::os::unix::net::UnixStream::connect(path)?;
                std.set_nonblocking(true)?;
                Ok(Stream::Unix(UnixStream::from_std(std)))
            }
        }
    }

    fn source(&mut self) -> &mut dyn mio::event::Source {
        match self {
            Stream::Tcp(s) => s,
            Stream::Unix(s) => s,
            Stream::Tls(s) => s.socket(),
        }
    }

    /// Send anything written earlier but still held back (TLS records).
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Tls(s) => s.flush(),
            _ => Ok(()),
        }
    }

    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }

    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }
}

/// One connection's position in its current request.
struct Conn {
    stream: Stream,
    sent: usize,
    received: usize,
    started: Instant,
    alive: bool,
}

/// Counters for the current phase (reset when the warm-up ends).
#[derive(Default)]
struct Tally {
    requests: u64,
    errors: u64,
    latencies_ns: Vec<u64>,
    first_error: Option<String>,
}

impl Tally {
    fn error(&mut self, what: String) {
        self.errors += 1;
        self.first_error.get_or_insert(what);
    }
}

/// Outcome of pumping one connection.
enum Pump {
    Ok,
    Failed(String),
}

/// Write what is left of the request, then read whatever echo has arrived,
/// completing and restarting requests as they finish. Edge-triggered poll:
/// both directions must be driven until WouldBlock.
fn pump(conn: &mut Conn, payload: &[u8], buf: &mut [u8], tally: &mut Tally, count: bool) -> Pump {
    let size = payload.len();
    loop {
        match conn.stream.flush() {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Pump::Failed(format!("write: {e}")),
        }
        while conn.sent < size {
            match conn.stream.write(&payload[conn.sent..]) {
                Ok(0) => return Pump::Failed("write returned 0".into()),
                Ok(n) => conn.sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Pump::Failed(format!("write: {e}")),
            }
        }
        let mut finished = false;
        loop {
            // Never read past the current request: the server only echoes
            // what was sent, so anything extra would be a protocol error.
            let want = (size - conn.received).min(buf.len());
            if want == 0 {
                break;
            }
            match conn.stream.read(&mut buf[..want]) {
                Ok(0) => return Pump::Failed("server closed the connection".into()),
                Ok(n) => {
                    // Check the echo is the bytes we sent (a memcmp is cheap
                    // next to the syscalls around it).
                    if buf[..n] != payload[conn.received..conn.received + n] {
                        return Pump::Failed("echo does not match the request".into());
                    }
                    conn.received += n;
                    if conn.received == size {
                        finished = true;
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Pump::Failed(format!("read: {e}")),
            }
        }
        if !finished {
            return Pump::Ok;
        }
        if count {
            tally.requests += 1;
            tally
                .latencies_ns
                .push(conn.started.elapsed().as_nanos() as u64);
        }
        // Closed loop: the next request starts as soon as the echo is in.
        conn.sent = 0;
        conn.received = 0;
        conn.started = Instant::now();
    }
}

pub fn run(args: &Args) -> Result<Report, String> {
    let mut poll = Poll::new().map_err(|e| format!("poll: {e}"))?;
    let tls = match (&args.tls_ca, &args.target) {
        (Some(ca), Target::Tcp(addr)) => Some((tls::client_config(ca)?, tls::server_name(addr)?)),
        _ => None,
    };
    let mut conns = Vec::with_capacity(args.conns);
    for i in 0..args.conns {
        let mut stream =
            Stream::connect(&args.target, tls.as_ref()).map_err(|e| format!("connect: {e}"))?;
        poll.registry()
            .register(
                stream.source(),
                Token(i),
                Interest::READABLE | Interest::WRITABLE,
            )
            .map_err(|e| format!("register: {e}"))?;
        conns.push(Conn {
            stream,
            sent: 0,
            received: 0,
            started: Instant::now(),
            alive: true,
        });
    }

    // A fixed non-uniform pattern, so a misordered or shifted echo is caught.
    let payload: Vec<u8> = (0..args.size).map(|i| (i % 251) as u8).collect();
    let mut buf = vec![0u8; args.size.min(256 * 1024)];
    let mut events = Events::with_capacity(1024);
    let mut tally = Tally::default();

    let start = Instant::now();
    let warm_end = start + args.warmup;
    let end = warm_end + args.duration;
    let mut measuring = args.warmup.is_zero();
    let mut measure_start = start;
    let mut cpu_start = (args.server_pid.and_then(process_cpu_us), self_cpu_us());

    // Kick off the first request on every connection.
    for conn in conns.iter_mut() {
        conn.started = Instant::now();
        if let Pump::Failed(e) = pump(conn, &payload, &mut buf, &mut tally, measuring) {
            return Err(e);
        }
    }

    let mut live = conns.len();
    while live > 0 {
        let now = Instant::now();
        if !measuring && now >= warm_end {
            // Warm-up over: drop its counts and sample CPU times at the
            // exact start of the measured phase.
            measuring = true;
            tally = Tally::default();
            tally.latencies_ns.reserve(1 << 16);
            measure_start = now;
            cpu_start = (args.server_pid.and_then(process_cpu_us), self_cpu_us());
        }
        if now >= end {
            break;
        }
        let boundary = if measuring { end } else { warm_end };
        let timeout = boundary.saturating_duration_since(now);
        if let Err(e) = poll.poll(&mut events, Some(timeout)) {
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(format!("poll: {e}"));
            }
        }
        for event in events.iter() {
            let conn = &mut conns[event.token().0];
            if !conn.alive {
                continue;
            }
            if let Pump::Failed(e) = pump(conn, &payload, &mut buf, &mut tally, measuring) {
                // Count the failure and drop the connection; the others go on.
                tally.error(e);
                conn.alive = false;
                let _ = poll.registry().deregister(conn.stream.source());
                live -= 1;
            }
        }
    }
    let elapsed = measure_start.elapsed();
    let server_cpu_us = match (cpu_start.0, args.server_pid.and_then(process_cpu_us)) {
        (Some(before), Some(after)) if measuring => Some(after - before),
        _ => None,
    };
    let client_cpu_us = self_cpu_us() - cpu_start.1;
    if !measuring {
        tally.error("every connection failed during the warm-up".into());
    }
    Ok(Report {
        conns: args.conns,
        size: args.size,
        requests: tally.requests,
        errors: tally.errors,
        elapsed,
        latencies_ns: tally.latencies_ns,
        server_cpu_us,
        client_cpu_us,
        first_error: tally.first_error,
    })
}
