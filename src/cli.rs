//! The command line (`spec/cli.md`): clap definitions and the mapping of
//! each command onto the library. Errors reach the user as one sentence on
//! stderr with a non-zero exit code, never as a Debug dump.

use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand, ValueEnum};

use crate::control::daemon;
use crate::discovery::{self, docker};
use crate::nft;
use crate::policy::guard::NamedSubnets;
use crate::policy::probe::RequestProbe;
use crate::policy::{Decision, Policy, L4};
use crate::rules;
use crate::state::directory::Directory;

#[derive(Debug, Parser)]
#[command(
    name = "portcullis",
    version,
    about = "Host-level HTTP firewall and load balancer for containers"
)]
pub struct Cli {
    /// More log output (repeat for more).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Less log output.
    #[arg(short, long, global = true)]
    quiet: bool,
    /// Log format (default: text on a terminal, json otherwise).
    #[arg(long, global = true, value_enum)]
    log_format: Option<LogFormat>,
    #[command(subcommand)]
    command: Command,
}

/// `--log-format` (also the demo binary's).
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Proto {
    Tcp,
    Udp,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Validate a rule file and print a one-line summary.
    Check { rules: PathBuf },
    /// Say what would happen to a connection or request, without touching the system.
    Explain(ExplainArgs),
    /// What a rule change does to traffic: newly allowed and newly refused flows and requests.
    Diff(DiffArgs),
    /// Print the nftables ruleset `run` would install (nft syntax).
    Nft {
        rules: PathBuf,
        /// Docker Engine socket used to resolve {"docker": …} containers.
        #[arg(long, default_value = docker::DEFAULT_SOCKET)]
        docker_socket: String,
    },
    /// Run the daemon in the foreground: install the rules and serve the proxy.
    Run {
        rules: PathBuf,
        #[arg(long, default_value = docker::DEFAULT_SOCKET)]
        docker_socket: String,
    },
    /// Remove everything Portcullis installed in nftables.
    Down,
    /// Ask the running daemon to reload its rule file and wait for the result
    /// (exit 0: the new rules are in force; 1: refused, the previous rules stay).
    Reload {
        /// Admin address of the daemon.
        #[arg(long, default_value = crate::policy::DEFAULT_ADMIN)]
        admin: String,
    },
    /// Show the running daemon's state.
    Status {
        /// Admin address of the daemon.
        #[arg(long, default_value = crate::policy::DEFAULT_ADMIN)]
        admin: String,
    },
    /// Build a throw-away three-container lab in network namespaces and probe it
    /// (runs the separate portcullis-demo binary).
    Demo,
}

#[derive(Debug, clap::Args)]
struct ExplainArgs {
    rules: PathBuf,
    /// Source container.
    #[arg(long, required_unless_present = "frontend")]
    from: Option<String>,
    /// Destination as NAME:PORT.
    #[arg(long, required_unless_present = "frontend")]
    to: Option<String>,
    #[arg(long, value_enum, default_value = "tcp")]
    proto: Proto,
    /// HTTP method (default GET when --path is given).
    #[arg(long)]
    method: Option<String>,
    /// HTTP request target (path and optional query).
    #[arg(long)]
    path: Option<String>,
    /// A request header, 'Name: value' (repeatable).
    #[arg(long = "header")]
    headers: Vec<String>,
    /// Frontend name (route explanation).
    #[arg(long, conflicts_with_all = ["from", "to"])]
    frontend: Option<String>,
    /// Host header for --frontend.
    #[arg(long, requires = "frontend")]
    host: Option<String>,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
    /// Docker Engine socket, asked for the subnets of the Docker networks
    /// guard.networks names (only when --from or --to is an address).
    #[arg(long, default_value = docker::DEFAULT_SOCKET)]
    docker_socket: String,
}

#[derive(Debug, clap::Args)]
struct DiffArgs {
    /// The rule file before the change: a path or REV:PATH (read with `git show`).
    old: String,
    /// The rule file after the change: a path or REV:PATH.
    new: String,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
    /// Which changes give a non-zero exit status (any: 2 widening, 1 only narrowing).
    #[arg(long, value_enum, default_value = "any")]
    fail_on: FailOnArg,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum FailOnArg {
    /// 2 if anything is newly allowed (or undecidable), else 1 if anything is newly refused, else 0.
    Any,
    /// 2 if anything is newly allowed (or undecidable), else 0.
    Widen,
    /// 1 if anything is newly refused, else 0.
    Narrow,
    /// Always 0 (report only); errors still exit 3.
    Never,
}

/// Runs the CLI and returns the process exit code.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            // `diff` uses 2 for "newly allowed": its usage errors get 3.
            let is_diff = std::env::args().skip(1).any(|a| a == "diff");
            return match (e.use_stderr(), is_diff) {
                (false, _) => 0,
                (true, true) => crate::diff::EXIT_ERROR,
                (true, false) => 2,
            };
        }
    };
    init_logging(cli.quiet, cli.verbose, cli.log_format);
    match cli.command {
        Command::Check { rules } => check(&rules),
        Command::Explain(args) => explain(&args),
        Command::Diff(args) => diff(&args),
        Command::Nft {
            rules,
            docker_socket,
        } => print_nft(&rules, &docker_socket),
        Command::Run {
            rules,
            docker_socket,
        } => run(rules, docker_socket),
        Command::Down => down(),
        Command::Reload { admin } => reload(&admin),
        Command::Status { admin } => status(&admin),
        Command::Demo => demo(&cli),
    }
}

/// Log lines on stderr as the global flags say: `-q`/`-v` levels, text on
/// a terminal and JSON otherwise unless `--log-format` says which. Shared
/// with the demo binary, so its daemon logs as `portcullis run` does.
pub fn init_logging(quiet: bool, verbose: u8, format: Option<LogFormat>) {
    use std::io::IsTerminal;
    let level = match (quiet, verbose) {
        (true, _) => "warn",
        (false, 0) => "info",
        (false, 1) => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("portcullis={level},warn")));
    let json = match format {
        Some(LogFormat::Json) => true,
        Some(LogFormat::Text) => false,
        None => !std::io::stderr().is_terminal(),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

/// The demo's own binary: the lab and the test service it needs are not
/// part of this one.
const DEMO_BIN: &str = "portcullis-demo";

/// `portcullis demo`: execs `portcullis-demo` from the directory of this
/// executable (where `cargo build --workspace` puts both), else from PATH,
/// passing on the global flags. Returns only if that fails.
fn demo(cli: &Cli) -> i32 {
    use std::os::unix::process::CommandExt;
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.join(DEMO_BIN)))
        .filter(|p| p.is_file());
    let mut cmd = std::process::Command::new(beside.as_deref().unwrap_or(Path::new(DEMO_BIN)));
    cmd.args(std::iter::repeat_n("-v", cli.verbose.into()));
    if cli.quiet {
        cmd.arg("-q");
    }
    if let Some(format) = cli.log_format {
        let name = match format {
            LogFormat::Json => "json",
            LogFormat::Text => "text",
        };
        cmd.args(["--log-format", name]);
    }
    let err = cmd.exec();
    if beside.is_none() && err.kind() == std::io::ErrorKind::NotFound {
        return fail(
            format!(
                "the demo is a binary of its own, `{DEMO_BIN}`, found neither next to this executable nor on PATH; \
                 build it from the source tree with `cargo build --release -p portcullis -p {DEMO_BIN}` \
                 and run target/release/portcullis demo (or sudo ./ci/demo.sh)"
            ),
            1,
        );
    }
    fail(
        format!("cannot run {}: {err}", cmd.get_program().to_string_lossy()),
        1,
    )
}

fn fail(msg: impl std::fmt::Display, code: i32) -> i32 {
    eprintln!("portcullis: {msg}");
    code
}

fn check(path: &Path) -> i32 {
    // The certificates of TLS frontends are read and checked as a reload
    // would: `check` answers whether the daemon would take these rules.
    match rules::load(path).and_then(|s| {
        let summary = s.summary();
        crate::tls::load(&s, &crate::tls::base_of(path), std::time::SystemTime::now())?;
        Policy::compile(s).map(|_| summary)
    }) {
        Ok(summary) => {
            println!("{summary}");
            0
        }
        Err(e) => fail(e, 1),
    }
}

fn diff(a: &DiffArgs) -> i32 {
    use crate::diff::{self, FailOn};
    let load = |spec: &str| diff::source::load(spec);
    let (old, new) = match (load(&a.old), load(&a.new)) {
        (Ok(o), Ok(n)) => (o, n),
        (Err(e), _) | (_, Err(e)) => return fail(e, diff::EXIT_ERROR),
    };
    let report = diff::diff(&old, &new);
    let code = report.exit_code(match a.fail_on {
        FailOnArg::Any => FailOn::Any,
        FailOnArg::Widen => FailOn::Widen,
        FailOnArg::Narrow => FailOn::Narrow,
        FailOnArg::Never => FailOn::Never,
    });
    if a.json {
        println!("{}", diff::render::json(&report, code));
    } else {
        print!("{}", diff::render::text(&report));
    }
    code
}

fn print_decision(d: &Decision, json: bool) {
    if json {
        let v = serde_json::json!({
            "verdict": d.verdict.to_string(),
            "layer": d.layer.to_string(),
            "rule": d.rule.as_ref().map(ToString::to_string),
            "rule_position": d.rule.as_ref().map(|r| serde_json::json!({
                "file": r.file.to_string(), "line": r.pos.line, "column": r.pos.col, "path": r.path,
            })),
            "reason": d.reason,
            "audit_deny": d.audit_deny,
            "status": d.status,
        });
        println!("{v}");
    } else {
        let rule = d
            .rule
            .as_ref()
            .map_or_else(|| "default".to_owned(), ToString::to_string);
        println!("{} {} {}: {}", d.verdict, d.layer, rule, d.reason);
    }
}

fn explain(a: &ExplainArgs) -> i32 {
    let policy = match rules::load(&a.rules).and_then(Policy::compile) {
        Ok(p) => p,
        Err(e) => return fail(e, 2),
    };
    if let Some(name) = &a.frontend {
        return explain_frontend(&policy, name, a);
    }
    let (Some(from), Some(to)) = (&a.from, &a.to) else {
        return fail("--from and --to are required", 2);
    };
    let Some((to_name, port)) = to
        .rsplit_once(':')
        .and_then(|(n, p)| Some((n, p.parse::<u16>().ok().filter(|&p| p != 0)?)))
        // `[fd00::5]:80`: an IPv6 address in brackets.
        .map(|(n, p)| {
            (
                n.strip_prefix('[')
                    .and_then(|n| n.strip_suffix(']'))
                    .unwrap_or(n),
                p,
            )
        })
    else {
        return fail(format!("invalid --to {to:?}: expected NAME:PORT"), 2);
    };
    let proto = match a.proto {
        Proto::Tcp => L4::Tcp,
        Proto::Udp => L4::Udp,
    };
    let parsed = match parse_headers(&a.headers) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let headers = header_view(&parsed);
    let wants_request = a.method.is_some() || a.path.is_some() || !a.headers.is_empty();
    let request = RequestProbe {
        method: a.method.as_deref().unwrap_or("GET"),
        target: a.path.as_deref().unwrap_or("/"),
        headers: &headers,
    };
    // An address may be on a guarded Docker network: ask the engine for
    // those subnets (never for container addresses: see the docs).
    let named = if [from.as_str(), to_name]
        .iter()
        .any(|e| policy.container_id(e).is_none())
    {
        resolve_networks(&policy, &a.docker_socket)
    } else {
        NamedSubnets::new()
    };
    let decision = match policy.probe_with(
        from,
        to_name,
        proto,
        port,
        wants_request.then_some(&request),
        &named,
    ) {
        Ok(d) => d,
        Err(e) => return fail(format!("{e} (not in {})", a.rules.display()), 2),
    };
    print_decision(&decision, a.json);
    match decision.verdict {
        crate::policy::Verdict::Allow => 0,
        crate::policy::Verdict::Deny => 1,
    }
}

/// `explain --frontend`: the route and pool a request would take.
fn explain_frontend(policy: &Policy, name: &str, a: &ExplainArgs) -> i32 {
    use crate::policy::route_decision::FrontendRequest;
    let lb = crate::balance::Balancer::compile(policy);
    let Some(fe) = lb.frontend(name) else {
        let known: Vec<&str> = lb.frontends.iter().map(|f| f.name.as_str()).collect();
        return fail(
            format!("unknown frontend {name:?} (known: {})", known.join(", ")),
            2,
        );
    };
    // The request as the proxy would read it: --host is its Host field.
    let mut parsed = match parse_headers(&a.headers) {
        Ok(p) => p,
        Err(code) => return code,
    };
    if let Some(h) = &a.host {
        parsed.retain(|(n, _)| !n.eq_ignore_ascii_case("host"));
        parsed.push(("Host".to_owned(), h.clone()));
    }
    let headers = header_view(&parsed);
    let request = FrontendRequest {
        method: a.method.as_deref().unwrap_or("GET"),
        target: a.path.as_deref().unwrap_or("/"),
        headers: &headers,
    };
    let v = match explain_route(policy, &lb, fe, &request) {
        Ok(v) => v,
        Err(e) => return fail(e, 2),
    };
    let text = |k: &str| v[k].as_str().unwrap_or_default();
    let routed = v["status"].is_null();
    if a.json {
        println!("{v}");
    } else if routed {
        let members: Vec<String> = v["members"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|m| format!("{} (weight {})", text_of(&m["target"]), m["weight"]))
            .collect();
        println!(
            "routed frontend {} {}: {} -> pool {} ({}: {})",
            text("frontend"),
            v["rule"].as_str().unwrap_or("default_pool"),
            text("reason"),
            text("pool"),
            text("balance"),
            members.join(", ")
        );
    } else {
        println!(
            "{} frontend {}: {}",
            v["status"],
            text("frontend"),
            text("reason")
        );
    }
    if routed {
        0
    } else {
        1
    }
}

fn text_of(v: &serde_json::Value) -> &str {
    v.as_str().unwrap_or_default()
}

/// What `explain --frontend` answers for a request to frontend `fe`, as
/// the JSON object it prints (`status` null when routed): the proxy's own
/// decision ([`crate::policy::routes::RouteTable::decide`]) explained.
pub(crate) fn explain_route(
    policy: &Policy,
    lb: &crate::balance::Balancer,
    fe: &crate::policy::routes::RouteTable,
    request: &crate::policy::route_decision::FrontendRequest<'_>,
) -> Result<serde_json::Value, String> {
    use crate::policy::route_decision::RouteRefusal;
    use crate::policy::routes::{HostClass, RouteMatch};
    let refused = |status: u16, reason: &str| {
        serde_json::json!({
            "verdict": status.to_string(),
            "layer": "frontend",
            "frontend": fe.name,
            "rule": null,
            "pool": null,
            "reason": reason,
            "status": status,
        })
    };
    let routed = match fe.decide(&policy.fields, request) {
        Ok(r) => r,
        Err(RouteRefusal::NoRoute { host, path }) => {
            let shown_host = host.as_deref().unwrap_or("(none)");
            let reason = format!(
                "no route matches host {shown_host} and path {path}, and there is no default_pool"
            );
            return Ok(refused(404, &reason));
        }
        Err(e) => return Ok(refused(e.status(), &e.to_string())),
    };
    let (m, path) = (routed.matched, &routed.path);
    let shown_host = routed.host.as_deref().unwrap_or("(none)");
    let Some(pool) = lb.pool(m.pool()) else {
        return Err("internal error: route names a missing pool".to_owned());
    };
    let (rule, why) = match m {
        RouteMatch::Route { index, class, .. } => {
            let r = &fe.routes[index];
            let host_part = match class {
                HostClass::Exact => format!("host {}", r.host.as_deref().unwrap_or("")),
                HostClass::Wildcard => {
                    format!("wildcard host {}", r.host.as_deref().unwrap_or(""))
                }
                HostClass::Any => "any host".to_owned(),
            };
            let prefix = r.path_prefix.as_deref().unwrap_or("/");
            (
                Some(r.rule.to_string()),
                format!("matches {host_part}, path_prefix {prefix}"),
            )
        }
        RouteMatch::Default { .. } => (None, "no route matches, default_pool".to_owned()),
    };
    let balance = match &pool.algo {
        crate::balance::Algo::RoundRobin { .. } => "round_robin".to_owned(),
        crate::balance::Algo::LeastConnections { .. } => "least_connections".to_owned(),
        crate::balance::Algo::Hash(crate::balance::HashKey::ClientIp) => {
            "hash on client_ip".to_owned()
        }
        crate::balance::Algo::Hash(crate::balance::HashKey::Header(h)) => {
            format!("hash on header:{h}")
        }
    };
    Ok(serde_json::json!({
        "verdict": "routed",
        "layer": "frontend",
        "frontend": fe.name,
        "rule": rule,
        "pool": pool.name,
        "balance": balance,
        "members": pool.members.iter().map(|m| serde_json::json!({"target": m.target, "weight": m.weight})).collect::<Vec<_>>(),
        "reason": format!("{} {shown_host} {path}: {why}", request.method),
        "status": null,
    }))
}

/// `--header 'Name: value'` arguments as (name, value); a malformed one
/// is a usage error (exit 2).
fn parse_headers(args: &[String]) -> Result<Vec<(String, String)>, i32> {
    let mut parsed = Vec::with_capacity(args.len());
    for h in args {
        let Some((n, v)) = h.split_once(':') else {
            return Err(fail(
                format!("invalid --header {h:?}: expected 'Name: value'"),
                2,
            ));
        };
        parsed.push((n.trim().to_owned(), v.trim().to_owned()));
    }
    Ok(parsed)
}

fn header_view(parsed: &[(String, String)]) -> Vec<httparse::Header<'_>> {
    parsed
        .iter()
        .map(|(n, v)| httparse::Header {
            name: n,
            value: v.as_bytes(),
        })
        .collect()
}

/// Asks the Docker engine at `socket` once for `names`, for a command that
/// prints and exits (`nft`, `explain`); what cannot be had is a warning on
/// stderr, never an error.
fn resolve_once(socket: &str, names: &discovery::Names) -> discovery::Resolution {
    let source = discovery::open(
        &discovery::Config {
            docker_socket: socket.to_owned(),
        },
        std::sync::Arc::default(),
    );
    let resolved = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())
        .map(|rt| rt.block_on(source.resolve(names)));
    let r = match resolved {
        Ok(r) => r,
        Err(e) => {
            eprintln!("portcullis: warning: Docker not asked: {e}");
            return discovery::Resolution::default();
        }
    };
    if let Some(e) = &r.unreachable {
        eprintln!("portcullis: warning: Docker containers left without addresses and guarded Docker networks without subnets: {e}");
    }
    for (name, e) in r
        .networks
        .iter()
        .filter_map(|(n, r)| Some((n, r.as_ref().err()?)))
    {
        eprintln!("portcullis: warning: guarded Docker network {name} left without subnets: {e}");
    }
    r
}

/// The subnets of the Docker networks `policy` guards by name, as the
/// engine at `socket` answers now (none for those it cannot place).
fn resolve_networks(policy: &Policy, socket: &str) -> NamedSubnets {
    let names = discovery::Names {
        containers: Vec::new(),
        ..discovery::Names::docker(policy)
    };
    if names.is_empty() {
        return NamedSubnets::new();
    }
    let r = resolve_once(socket, &names);
    Directory::default()
        .with_networks(policy, |name| match r.networks.get(name) {
            Some(Ok(nets)) => nets.clone(),
            _ => Vec::new(),
        })
        .networks
}

fn resolve_for_print(policy: &Policy, socket: &str) -> Directory {
    let names = discovery::Names::docker(policy);
    if names.is_empty() {
        return Directory::build(policy, |_| Vec::new());
    }
    let r = resolve_once(socket, &names);
    let dir = Directory::build(policy, |name| {
        r.addresses.get(name).cloned().unwrap_or_default()
    })
    .with_networks(policy, |name| match r.networks.get(name) {
        Some(Ok(nets)) => nets.clone(),
        _ => Vec::new(),
    });
    for name in dir.unplaced(policy) {
        eprintln!("portcullis: warning: container {name} has no address (not running or unknown to Docker)");
    }
    for name in policy.unresolved_guard_networks(&dir.networks) {
        eprintln!("portcullis: warning: guarded Docker network {name} has no subnet (unknown to Docker, or none configured): it guards nothing");
    }
    dir
}

fn print_nft(path: &Path, socket: &str) -> i32 {
    let policy = match rules::load(path).and_then(Policy::compile) {
        Ok(p) => p,
        Err(e) => return fail(e, 2),
    };
    let dir = resolve_for_print(&policy, socket);
    print!(
        "{}",
        nft::render::to_nft_text(&nft::compile::compile(&policy, &dir))
    );
    0
}

fn down() -> i32 {
    match nft::apply::remove() {
        Ok(true) => {
            println!("removed table inet {}", nft::ruleset::TABLE);
            0
        }
        Ok(false) => {
            println!(
                "nothing to remove: table inet {} is not installed",
                nft::ruleset::TABLE
            );
            0
        }
        Err(e) => fail(format!("cannot remove the nftables table: {e}"), 1),
    }
}

fn status(admin: &str) -> i32 {
    use std::io::{Read, Write};
    let addr: std::net::SocketAddr = match admin.parse() {
        Ok(a) => a,
        Err(_) => return fail(format!("invalid --admin {admin:?}: expected IP:PORT"), 2),
    };
    let res = std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(2))
        .and_then(|mut s| {
            s.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
            s.write_all(b"GET /status HTTP/1.0\r\nHost: admin\r\n\r\n")?;
            let mut out = String::new();
            s.read_to_string(&mut out)?;
            Ok(out)
        });
    match res {
        Ok(body) => match body.split_once("\r\n\r\n") {
            Some((_, json)) => {
                match serde_json::from_str::<serde_json::Value>(json) {
                    Ok(v) => println!(
                        "{}",
                        serde_json::to_string_pretty(&v).unwrap_or_else(|_| json.to_owned())
                    ),
                    Err(_) => println!("{json}"),
                }
                0
            }
            None => fail(format!("unexpected answer from {addr}"), 1),
        },
        Err(e) => fail(format!("no daemon answering at {addr}: {e}"), 1),
    }
}

/// `portcullis reload`: `POST /reload` to the admin endpoint, which answers
/// once the daemon has applied or refused the file. This is the unit's
/// `ExecReload`, so `systemctl reload` fails exactly when the reload did.
fn reload(admin: &str) -> i32 {
    use std::io::{Read, Write};
    let addr: std::net::SocketAddr = match admin.parse() {
        Ok(a) => a,
        Err(_) => return fail(format!("invalid --admin {admin:?}: expected IP:PORT"), 2),
    };
    let res = std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(2))
        .and_then(|mut s| {
            // The daemon answers within its own 60 s bound.
            s.set_read_timeout(Some(std::time::Duration::from_secs(70)))?;
            s.write_all(b"POST /reload HTTP/1.0\r\nHost: admin\r\nContent-Length: 0\r\n\r\n")?;
            let mut out = String::new();
            s.read_to_string(&mut out)?;
            Ok(out)
        });
    let answer = match res {
        Ok(a) => a,
        Err(e) => return fail(format!("no daemon answering at {addr}: {e}"), 1),
    };
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let code = head.split_whitespace().nth(1).unwrap_or("");
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    match (code, v["version"].as_u64(), v["error"].as_str()) {
        ("200", Some(version), _) => {
            println!("reloaded: rules version {version} in force");
            0
        }
        (_, _, Some(e)) => fail(
            format!("reload refused, the previous rules stay in force: {e}"),
            1,
        ),
        _ => fail(
            format!(
                "unexpected answer from {addr}: {}",
                head.lines().next().unwrap_or("")
            ),
            1,
        ),
    }
}

fn run(path: PathBuf, docker_socket: String) -> i32 {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(format!("cannot start the runtime: {e}"), 1),
    };
    rt.block_on(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let (stop_tx, stop) = tokio::sync::watch::channel(false);
        let (reload_tx, reload) = tokio::sync::mpsc::channel(4);
        let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::hangup()),
        ) else {
            return fail("cannot install signal handlers", 1);
        };
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = term.recv() => break,
                    _ = int.recv() => break,
                    _ = hup.recv() => { let _ = reload_tx.send(()).await; }
                }
            }
            let _ = stop_tx.send(true);
        });
        let ctl = daemon::Control { stop, reload };
        let discovery = discovery::Config { docker_socket };
        match daemon::run(path, discovery, ctl, |s| {
            tracing::info!(proxy = %s.proxy, admin = %s.admin, "portcullis running");
        })
        .await
        {
            Ok(()) => 0,
            Err(e) => fail(e, 1),
        }
    })
}
