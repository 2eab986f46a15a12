//! `portcullis-demo`, what `portcullis demo` runs: scenarios 1 to 4 of
//! `spec/scenarios.md` in a throw-away lab of network namespaces (no Docker
//! needed); scenarios 3 and 4 are requests from the host to the frontend.
//!
//! A crate of its own so that the lab and the test service stay out of the
//! `portcullis` binary: `portcullis demo` finds this binary next to itself
//! (or on PATH) and execs it. The daemon runs in-process with the example
//! rules ([`probes::lab_rules`]) and every probe is sent from inside an
//! app's namespace ([`lab`]). For each probe the table shows what the rules
//! say (`explain`'s answer), what was expected, and what was seen.

mod lab;
mod probes;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use clap::Parser;
use portcullis::balance::Balancer;
use portcullis::cli::LogFormat;
use portcullis::control::daemon;
use portcullis::policy::{Policy, L4};
use testsvc::probe::{Outcome as Seen, ProbeOpts};

use lab::Lab;
use probes::{Outcome, Probe, FRONTEND_PROBES};

/// The flags are `portcullis`'s global ones, which `portcullis demo` passes on.
#[derive(Debug, Parser)]
#[command(
    name = "portcullis-demo",
    version,
    about = "Build a throw-away three-container lab in network namespaces and probe it (what `portcullis demo` runs)"
)]
struct Cli {
    /// More log output (repeat for more).
    #[arg(short, long, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Less log output.
    #[arg(short, long)]
    quiet: bool,
    /// Log format (default: text on a terminal, json otherwise).
    #[arg(long, value_enum)]
    log_format: Option<LogFormat>,
}

fn main() {
    let cli = Cli::parse();
    portcullis::cli::init_logging(cli.quiet, cli.verbose, cli.log_format);
    let code = match run_demo() {
        Ok(true) => 0,
        Ok(false) => 1,
        Err(e) => {
            eprintln!("portcullis demo: {e}");
            1
        }
    };
    std::process::exit(code);
}

/// Sends probe `p` from inside its namespace to app1 and says what came
/// back: the outcome (`None` when it is none of the three) and a detail.
fn run_probe(lab: &Lab, p: &Probe) -> (Option<Outcome>, String) {
    let from = if p.from == "app2" { 2 } else { 3 };
    let target = SocketAddr::new(IpAddr::V4(lab.apps()[0]), p.port);
    let timeout = Duration::from_millis(1500);
    let seen = if p.proto == L4::Udp {
        lab.udp_from(from, target, timeout)
    } else {
        let mut opts = ProbeOpts::new(format!("http://{target}{}", p.path));
        opts.method = p.method.into();
        opts.timeout = timeout;
        opts.headers = p
            .header_pairs()
            .into_iter()
            .map(|(n, v)| (n.into(), v.into()))
            .collect();
        lab.http_from(from, &opts)
    };
    match seen {
        Seen::Timeout => (Some(Outcome::Dropped), "timeout".into()),
        Seen::Reply(_) => (Some(Outcome::Reached), "udp reply".into()),
        Seen::Http {
            status: 200, body, ..
        } => {
            let echo: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            let source: Vec<String> = echo["headers"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|h| {
                    h[0].as_str()
                        .is_some_and(|n| n.eq_ignore_ascii_case("x-portcullis-source"))
                })
                .map(|h| h[1].as_str().unwrap_or("").to_owned())
                .collect();
            if echo["service"] != "app1" || source != [p.from.to_owned()] {
                return (
                    None,
                    format!(
                        "200 from {} with X-Portcullis-Source {source:?}",
                        echo["service"]
                    ),
                );
            }
            (
                Some(Outcome::Reached),
                format!("200, app1 saw X-Portcullis-Source: {}", source.join(",")),
            )
        }
        Seen::Http {
            status: 403, body, ..
        } => (
            Some(Outcome::Forbidden),
            format!("403 {}", String::from_utf8_lossy(&body).trim()),
        ),
        Seen::Http { status, body, .. } => (
            None,
            format!("HTTP {status} {}", String::from_utf8_lossy(&body).trim()),
        ),
        other => (None, other.to_json().to_string()),
    }
}

/// Sends the scenario 3-4 requests from the host to the frontend on
/// 127.0.0.1:`front` and prints them as table rows; returns the failures.
fn frontend_probes(policy: &Policy, front: u16) -> usize {
    let lb = Balancer::compile(policy);
    let mut failures = 0;
    println!(
        "{:<52} {:<9} {:<9} {:<4} observed",
        "frontend request (host -> edge)", "route", "expected", "ok"
    );
    for f in FRONTEND_PROBES {
        let said = f.routed(policy, &lb);
        let mut opts = ProbeOpts::new(format!("http://127.0.0.1:{front}{}", f.path));
        opts.headers.push(("Host".into(), f.host.into()));
        opts.timeout = Duration::from_millis(3000);
        let seen = match testsvc::probe::probe(&opts) {
            Seen::Http {
                status: 200, body, ..
            } => serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["service"].as_str().map(str::to_owned))
                .unwrap_or_else(|| "200 without service".into()),
            Seen::Http { status, .. } => status.to_string(),
            other => format!("{other:?}"),
        };
        let ok = said == f.pool && seen == f.service;
        if !ok {
            failures += 1;
        }
        println!(
            "{:<52} {:<9} {:<9} {:<4} {seen}",
            format!("GET {} Host: {}", f.path, f.host),
            said,
            f.service,
            if ok { "ok" } else { "FAIL" }
        );
    }
    failures
}

fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free port: {e}"))
}

fn run_demo() -> Result<bool, String> {
    if !nix::unistd::Uid::effective().is_root() {
        return Err("the demo needs root (network namespaces and nftables)".into());
    }
    let mut lab = Lab::new()?;
    lab.build()?;
    let front = free_port()?;
    let text = probes::lab_rules(lab.apps(), free_port()?, free_port()?, front)?;
    let rules = lab.dir.join("rules.json");
    std::fs::write(&rules, text).map_err(|e| format!("cannot write {}: {e}", rules.display()))?;
    let policy = portcullis::rules::load(&rules)
        .and_then(Policy::compile)
        .map_err(|e| e.to_string())?;
    lab.wait_healthy()?;

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let (_reload_tx, reload) = tokio::sync::mpsc::channel(1);
    let (started_tx, started_rx) = std::sync::mpsc::channel();
    lab.nft_installed = true;
    let daemon = rt.spawn(daemon::run(
        rules.clone(),
        portcullis::discovery::Config {
            docker_socket: "/nonexistent/docker.sock".into(),
        },
        daemon::Control { stop, reload },
        move |s| {
            let _ = started_tx.send(s);
        },
    ));
    let started = match started_rx.recv_timeout(Duration::from_secs(15)) {
        Ok(s) => s,
        Err(_) => {
            let err = rt
                .block_on(daemon)
                .map_err(|e| e.to_string())
                .and_then(|r| r.map_err(|e| e.to_string()));
            return Err(format!(
                "the daemon did not start: {}",
                err.err().unwrap_or_default()
            ));
        }
    };
    let [app1, app2, app3] = lab.apps();
    println!(
        "lab: app1 {app1} app2 {app2} app3 {app3} (network namespaces {}-app*), proxy {}, rules {}",
        lab.tag,
        started.proxy,
        rules.display()
    );
    let before = lab.app1_counter();
    let mut failures = 0;
    let mut reached = 0u64;
    println!(
        "{:<52} {:<9} {:<9} {:<4} observed",
        "probe", "rules say", "expected", "ok"
    );
    for p in probes::probes() {
        let (seen, detail) = run_probe(&lab, &p);
        let said = p.explained(&policy);
        let ok = seen == Some(p.expect) && said == p.expect;
        if !ok {
            failures += 1;
        }
        if seen == Some(Outcome::Reached) {
            reached += 1;
        }
        println!(
            "{:<52} {:<9} {:<9} {:<4} {detail}",
            p.describe(),
            said.as_str(),
            p.expect.as_str(),
            if ok { "ok" } else { "FAIL" }
        );
    }
    let after = lab.app1_counter();
    let counted = match (before, after) {
        (Some(b), Some(a)) => a.saturating_sub(b),
        _ => u64::MAX,
    };
    let counter_ok = counted == reached;
    if !counter_ok {
        failures += 1;
    }
    println!(
        "app1's request counter rose by {counted} for {reached} allowed probes: {}",
        if counter_ok {
            "nothing else reached it"
        } else {
            "FAIL"
        }
    );
    failures += frontend_probes(&policy, front);
    let _ = stop_tx.send(true);
    let _ = rt.block_on(daemon);
    let total = probes::probes().len() + 1 + FRONTEND_PROBES.len();
    println!("{} passed, {} failed", total - failures, failures);
    Ok(failures == 0)
}
