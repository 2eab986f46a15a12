//! `testsvc`: the Portcullis test service. One static binary, std only, that
//! runs in the test containers as an HTTP/UDP echo server (`serve`) and as the
//! client that probes from inside them (`probe`, `udp-probe`). The demo
//! (`demo/`) and the tests use [`server`] and [`probe`] as a library, in
//! their own process; the `portcullis` binary never contains it.

mod args;
mod http;
mod json;
pub mod probe;
pub mod server;
mod signals;
#[cfg(test)]
mod tests;

pub const USAGE: &str = "\
Usage: testsvc <COMMAND> [ARGS]...

Commands:
  serve      HTTP/1.1 and UDP echo server with a request counter
  probe      send one HTTP/1.1 request, print the outcome as one JSON line
  udp-probe  send one UDP datagram, print the outcome as one JSON line

`testsvc COMMAND --help` describes each.
";

/// Runs a subcommand; `args` excludes the program name. Returns the exit code.
pub fn run(args: Vec<String>) -> i32 {
    let mut args = args.into_iter();
    let command = args.next();
    let rest: Vec<String> = args.collect();
    match command.as_deref() {
        Some("serve") => server::main(rest),
        Some("probe") => probe::main(rest),
        Some("udp-probe") => probe::udp_main(rest),
        Some("--help" | "-h" | "help") => {
            print!("{USAGE}");
            0
        }
        Some(other) => {
            eprintln!("testsvc: unknown command `{other}`\n\n{USAGE}");
            2
        }
        None => {
            eprint!("{USAGE}");
            2
        }
    }
}
