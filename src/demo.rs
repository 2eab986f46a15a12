//! `portcullis demo`: scenarios 1 to 4 of `spec/scenarios.md` in a
//! throw-away lab of network namespaces (no Docker needed); scenarios 3
//! and 4 are requests from the host to the frontend.
//!
//! Three namespaces play app1..app3, each on a routed veth to the host
//! (`198.19.N.1` on the host side, a /32 per app), each running the test
//! service. The daemon runs in-process with the example rules, and every
//! probe is sent from inside a namespace by the test service's client. For
//! each probe the table shows what the rules say (`explain`'s answer), what
//! was expected, and what was seen. Everything made is removed at the end,
//! also on failure, by [`Lab`]'s `Drop`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::control::daemon;
use crate::nft;
use crate::policy::probe::RequestProbe;
use crate::policy::{Layer, Policy, Verdict, L4};
use crate::wire::normalize::{normalize_path, split_target};

/// What a probe is expected to show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Reached app1 (HTTP 200 from the service, or a UDP reply).
    Reached,
    /// Refused by the proxy with 403.
    Forbidden,
    /// Dropped in the kernel: the client timed out.
    Dropped,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Reached => "reached",
            Outcome::Forbidden => "403",
            Outcome::Dropped => "dropped",
        }
    }
}

/// One probe of scenarios 1–2.
#[derive(Debug, Clone)]
pub struct Probe {
    pub from: &'static str,
    pub port: u16,
    pub proto: L4,
    pub method: &'static str,
    pub path: &'static str,
    pub headers: &'static [&'static str],
    pub expect: Outcome,
}

const fn http(
    from: &'static str,
    method: &'static str,
    path: &'static str,
    headers: &'static [&'static str],
    expect: Outcome,
) -> Probe {
    Probe {
        from,
        port: 80,
        proto: L4::Tcp,
        method,
        path,
        headers,
        expect,
    }
}

/// The probes of scenarios 1 and 2 against app1.
pub fn probes() -> Vec<Probe> {
    use Outcome::*;
    vec![
        http("app3", "GET", "/foo", &[], Dropped),
        Probe {
            port: 8080,
            ..http("app3", "GET", "/", &[], Dropped)
        },
        Probe {
            port: 5353,
            proto: L4::Udp,
            ..http("app3", "", "", &[], Dropped)
        },
        http("app2", "GET", "/foo", &[], Reached),
        http("app2", "GET", "/foo/x?y=1", &[], Reached),
        http("app2", "PUT", "/bar", &["X-Bar: bar"], Reached),
        // app1 is cached (example rule file): no-cache makes this repeat
        // of GET /foo reach app1, which must see the replaced source.
        http(
            "app2",
            "GET",
            "/foo",
            &["X-Portcullis-Source: app3", "Cache-Control: no-cache"],
            Reached,
        ),
        http("app2", "POST", "/foo", &[], Forbidden),
        http("app2", "GET", "/bar", &[], Forbidden),
        http("app2", "PUT", "/bar", &[], Forbidden),
        http("app2", "PUT", "/bar", &["X-Bar: baz"], Forbidden),
        http("app2", "GET", "/foobar", &[], Forbidden),
        http("app2", "GET", "/foo/../admin", &[], Forbidden),
        Probe {
            port: 8080,
            ..http("app2", "GET", "/foo", &[], Dropped)
        },
        Probe {
            port: 5353,
            proto: L4::Udp,
            ..http("app2", "", "", &[], Dropped)
        },
    ]
}

impl Probe {
    fn describe(&self) -> String {
        let target = if self.proto == L4::Udp {
            "datagram".to_owned()
        } else {
            format!(
                "{} {}{}",
                self.method,
                self.path,
                self.headers
                    .iter()
                    .map(|h| format!(" [{h}]"))
                    .collect::<String>()
            )
        };
        format!(
            "{} -> app1:{}/{} {target}",
            self.from,
            self.port,
            self.proto.name()
        )
    }

    /// What the policy says, mapped onto an outcome (the same question as
    /// `portcullis explain`).
    pub fn explained(&self, policy: &Policy) -> Outcome {
        let headers: Vec<httparse::Header> = self
            .headers
            .iter()
            .filter_map(|h| h.split_once(':'))
            .map(|(n, v)| httparse::Header {
                name: n.trim(),
                value: v.trim().as_bytes(),
            })
            .collect();
        let request = RequestProbe {
            method: self.method,
            target: self.path,
            headers: &headers,
        };
        // The very function `portcullis explain` answers with.
        let Ok(d) = policy.probe(self.from, "app1", self.proto, self.port, Some(&request)) else {
            return Outcome::Dropped;
        };
        match (d.verdict, d.layer) {
            (Verdict::Allow, _) => Outcome::Reached,
            (Verdict::Deny, Layer::Proxy) => Outcome::Forbidden,
            (Verdict::Deny, Layer::Nftables) => Outcome::Dropped,
        }
    }
}

/// Everything the demo creates, removed on drop.
struct Lab {
    subnet: u8,
    tag: String,
    namespaces: Vec<String>,
    children: Vec<Child>,
    dir: PathBuf,
    forward_before: Option<String>,
    nft_installed: bool,
}

fn sh(args: &[&str]) -> Result<String, String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", args[0]))?;
    if !out.status.success() {
        return Err(format!(
            "`{}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

impl Lab {
    fn addr(&self, host: u8) -> Ipv4Addr {
        Ipv4Addr::new(198, 19, self.subnet, host)
    }

    fn ns(&self, app: usize) -> String {
        format!("{}-app{app}", self.tag)
    }

    fn new() -> Result<Lab, String> {
        let pid = std::process::id();
        let routes = sh(&["ip", "-4", "route", "show"])?;
        let addrs = sh(&["ip", "-4", "-o", "addr", "show"])?;
        let subnet = (0..100u32)
            .map(|i| (100 + (pid + i * 7) % 100) as u8)
            .find(|s| {
                let p = format!("198.19.{s}.");
                !routes.contains(&p) && !addrs.contains(&p)
            })
            .ok_or("no free /24 in 198.19.100-199.0")?;
        let dir = std::env::temp_dir().join(format!("portcullis-demo-{pid}"));
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let forward_before = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").ok();
        Ok(Lab {
            subnet,
            tag: format!("pcd{}", pid % 100_000),
            namespaces: Vec::new(),
            children: Vec::new(),
            dir,
            forward_before,
            nft_installed: false,
        })
    }

    fn build(&mut self) -> Result<(), String> {
        std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")
            .map_err(|e| format!("cannot enable IPv4 forwarding: {e}"))?;
        let gw = self.addr(1).to_string();
        for app in 1..=3usize {
            let ns = self.ns(app);
            let veth = format!("{}h{app}", self.tag);
            let ip = self.addr(1 + app as u8).to_string();
            sh(&["ip", "netns", "add", &ns])?;
            self.namespaces.push(ns.clone());
            sh(&[
                "ip", "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns,
            ])?;
            sh(&["ip", "-n", &ns, "link", "set", "lo", "up"])?;
            sh(&[
                "ip",
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{ip}/32"),
                "dev",
                "eth0",
            ])?;
            sh(&["ip", "-n", &ns, "link", "set", "eth0", "up"])?;
            sh(&["ip", "-n", &ns, "route", "add", &gw, "dev", "eth0"])?;
            sh(&[
                "ip", "-n", &ns, "route", "add", "default", "via", &gw, "dev", "eth0",
            ])?;
            sh(&["ip", "addr", "add", &format!("{gw}/32"), "dev", &veth])?;
            sh(&["ip", "link", "set", &veth, "up"])?;
            sh(&["ip", "route", "add", &format!("{ip}/32"), "dev", &veth])?;
            let child = Command::new("ip")
                .args(["netns", "exec", &ns])
                .arg(std::env::current_exe().map_err(|e| e.to_string())?)
                .args([
                    "testsvc",
                    "serve",
                    "--name",
                    &format!("app{app}"),
                    "--http",
                    "80",
                    "--http",
                    "8080",
                    "--udp",
                    "5353",
                ])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .process_group(0)
                .spawn()
                .map_err(|e| format!("cannot start the test service in {ns}: {e}"))?;
            self.children.push(child);
        }
        Ok(())
    }

    fn rules(&self, proxy_port: u16, admin_port: u16, front: u16) -> Result<PathBuf, String> {
        let text = include_str!("../rules/example.json")
            .replace(
                "{ \"docker\": \"app2\" }",
                &format!("{{ \"address\": \"{}\" }}", self.addr(3)),
            )
            .replace("198.19.0.2", &self.addr(2).to_string())
            .replace("198.19.0.4", &self.addr(4).to_string())
            .replace("\"0.0.0.0:8080\"", &format!("\"127.0.0.1:{front}\""));
        let mut v: serde_json::Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
        v["proxy"] = serde_json::json!({ "listen_port": proxy_port, "admin": format!("127.0.0.1:{admin_port}") });
        let path = self.dir.join("rules.json");
        std::fs::write(
            &path,
            serde_json::to_string_pretty(&v).map_err(|e| e.to_string())?,
        )
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        Ok(path)
    }

    /// Runs the test service's client inside `ns`; returns its JSON line.
    fn probe_from(&self, ns: &str, args: &[String]) -> serde_json::Value {
        let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/proc/self/exe"));
        let out = Command::new("ip")
            .args(["netns", "exec", ns])
            .arg(exe)
            .arg("testsvc")
            .args(args)
            .stdin(Stdio::null())
            .output();
        match out {
            Ok(o) => serde_json::from_slice(&o.stdout).unwrap_or_else(|_| {
                serde_json::json!({"result": "error", "error": String::from_utf8_lossy(&o.stderr).trim().to_owned()})
            }),
            Err(e) => serde_json::json!({"result": "error", "error": e.to_string()}),
        }
    }

    fn run_probe(&self, p: &Probe) -> (Option<Outcome>, String) {
        let ns = self.ns(match p.from {
            "app2" => 2,
            _ => 3,
        });
        let target = SocketAddr::new(IpAddr::V4(self.addr(2)), p.port);
        let mut args: Vec<String> = Vec::new();
        if p.proto == L4::Udp {
            args.extend([
                "udp-probe".into(),
                "--timeout-ms".into(),
                "1500".into(),
                target.to_string(),
            ]);
        } else {
            args.extend([
                "probe".into(),
                "--timeout-ms".into(),
                "1500".into(),
                "--method".into(),
                p.method.into(),
            ]);
            for h in p.headers {
                args.extend(["--header".into(), (*h).into()]);
            }
            args.push(format!("http://{target}{}", p.path));
        }
        let v = self.probe_from(&ns, &args);
        let result = v["result"].as_str().unwrap_or("error");
        match result {
            "timeout" => (Some(Outcome::Dropped), "timeout".into()),
            "reply" => (Some(Outcome::Reached), "udp reply".into()),
            "http" => {
                let status = v["status"].as_u64().unwrap_or(0);
                let body = v["body"].as_str().unwrap_or("");
                match status {
                    200 => {
                        let echo: serde_json::Value =
                            serde_json::from_str(body).unwrap_or_default();
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
                    403 => (Some(Outcome::Forbidden), format!("403 {}", body.trim())),
                    s => (None, format!("HTTP {s} {}", body.trim())),
                }
            }
            other => (
                None,
                format!("{other}: {}", v["error"].as_str().unwrap_or("")),
            ),
        }
    }

    fn app1_counter(&self) -> Option<u64> {
        let v = self.probe_from(
            &self.ns(1),
            &[
                "probe".into(),
                "--timeout-ms".into(),
                "1500".into(),
                format!("http://{}:80/__stats", self.addr(2)),
            ],
        );
        let body: serde_json::Value = serde_json::from_str(v["body"].as_str()?).ok()?;
        body["counter"].as_u64()
    }

    fn wait_healthy(&self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        for app in 1..=3u8 {
            let url = format!("http://{}:80/healthz", self.addr(1 + app));
            loop {
                let v = self.probe_from(
                    &self.ns(app as usize),
                    &[
                        "probe".into(),
                        "--timeout-ms".into(),
                        "500".into(),
                        url.clone(),
                    ],
                );
                if v["status"].as_u64() == Some(200) {
                    break;
                }
                if Instant::now() > deadline {
                    return Err(format!("app{app}'s test service did not come up: {v}"));
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        Ok(())
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if self.nft_installed {
            if let Err(e) = nft::apply::remove() {
                eprintln!("portcullis demo: cleanup: cannot remove the nftables table: {e}");
            }
        }
        for c in &mut self.children {
            // Each service runs in its own process group (ip netns exec + child).
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let _ = c.wait();
        }
        for ns in &self.namespaces {
            // Deleting the namespace deletes its veth pair and the host routes.
            let _ = sh(&["ip", "netns", "del", ns]);
        }
        if let Some(v) = &self.forward_before {
            let _ = std::fs::write("/proc/sys/net/ipv4/ip_forward", v.trim());
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Scenarios 3 and 4: (Host, path, pool the rules name, service reached).
const FRONTEND_PROBES: [(&str, &str, &str, &str); 6] = [
    ("two.example", "/", "two", "app2"),
    ("three.example", "/two", "three", "app3"),
    ("other.test", "/two/x?y=1", "two", "app2"),
    ("other.test", "/three", "three", "app3"),
    ("other.test", "/one", "one", "app1"),
    ("other.test", "/four", "404", "404"),
];

/// Sends the scenario 3-4 requests from the host to the frontend on
/// 127.0.0.1:`front` and prints them as table rows; returns the failures.
fn frontend_probes(policy: &Policy, front: u16) -> usize {
    let lb = crate::balance::Balancer::compile(policy);
    let mut failures = 0;
    println!(
        "{:<52} {:<9} {:<9} {:<4} observed",
        "frontend request (host -> edge)", "route", "expected", "ok"
    );
    for (host, path, pool, service) in FRONTEND_PROBES {
        let (raw, _) = split_target(path);
        let said = lb
            .frontend("edge")
            .zip(normalize_path(raw).ok())
            .and_then(|(fe, p)| fe.lookup(Some(host), &p))
            .and_then(|m| lb.pool(m.pool()))
            .map_or("404", |p| p.name.as_str());
        let mut opts = testsvc::probe::ProbeOpts::new(format!("http://127.0.0.1:{front}{path}"));
        opts.headers.push(("Host".into(), host.into()));
        opts.timeout = Duration::from_millis(3000);
        let seen = match testsvc::probe::probe(&opts) {
            testsvc::probe::Outcome::Http {
                status: 200, body, ..
            } => serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["service"].as_str().map(str::to_owned))
                .unwrap_or_else(|| "200 without service".into()),
            testsvc::probe::Outcome::Http { status, .. } => status.to_string(),
            other => format!("{other:?}"),
        };
        let ok = said == pool && seen == service;
        if !ok {
            failures += 1;
        }
        println!(
            "{:<52} {:<9} {:<9} {:<4} {seen}",
            format!("GET {path} Host: {host}"),
            said,
            service,
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

/// Entry point of `portcullis demo`; returns the exit code.
pub fn main() -> i32 {
    match run_demo() {
        Ok(true) => 0,
        Ok(false) => 1,
        Err(e) => {
            eprintln!("portcullis demo: {e}");
            1
        }
    }
}

fn run_demo() -> Result<bool, String> {
    if !nix::unistd::Uid::effective().is_root() {
        return Err("the demo needs root (network namespaces and nftables)".into());
    }
    let mut lab = Lab::new()?;
    lab.build()?;
    let front = free_port()?;
    let rules = lab.rules(free_port()?, free_port()?, front)?;
    let policy = crate::rules::load(&rules)
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
        crate::discovery::Config {
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
    println!(
        "lab: app1 {} app2 {} app3 {} (network namespaces {}-app*), proxy {}, rules {}",
        lab.addr(2),
        lab.addr(3),
        lab.addr(4),
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
    for p in probes() {
        let (seen, detail) = lab.run_probe(&p);
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
    let total = probes().len() + 1 + FRONTEND_PROBES.len();
    println!("{} passed, {} failed", total - failures, failures);
    Ok(failures == 0)
}
