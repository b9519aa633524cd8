//! echo_client: a low-overhead closed-loop load client for echo servers.
//!
//! Used by `benches/net.py`; see `args::USAGE` for the command line. Prints a
//! single JSON object on stdout; exit status 2 on usage errors, 1 when the
//! load could not start (for example the connection was refused).

mod args;
mod load;
mod stats;
mod tls;

use std::process::ExitCode;

fn main() -> ExitCode {
    let args = match args::parse(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(msg) => {
            if !msg.is_empty() {
                eprintln!("echo_client: {msg}");
            }
            eprintln!("{}", args::USAGE);
            return ExitCode::from(2);
        }
    };
    match load::run(&args) {
        Ok(report) => {
            println!("{}", report.into_json());
            ExitCode::SUCCESS
        }
        Err(msg) => {
            eprintln!("echo_client: {msg}");
            ExitCode::FAILURE
        }
    }
}
