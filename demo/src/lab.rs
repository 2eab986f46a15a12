//! The throw-away lab: three network namespaces playing app1..app3, each
//! on a routed veth to the host (`198.19.N.1` on the host side, a /32 per
//! app), each running the test service.
//!
//! The test service runs in this process: its sockets are made by a thread
//! that has entered the app's namespace (`setns`), and a socket keeps the
//! namespace it was made in, so it serves and probes from inside the app
//! exactly as a process started there would, without a second binary to
//! build and find. Everything made is removed by [`Lab`]'s `Drop`, also on
//! failure.

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sched::{setns, CloneFlags};
use portcullis::nft;
use testsvc::probe::{self, Outcome as Seen, ProbeOpts};
use testsvc::server::{Config, Server};

/// Everything the demo creates, removed on drop.
pub struct Lab {
    subnet: u8,
    pub tag: String,
    namespaces: Vec<String>,
    veths: Vec<String>,
    services: Vec<Server>,
    pub dir: PathBuf,
    forward_before: Option<String>,
    /// Set once the daemon may have installed the machine's table.
    pub nft_installed: bool,
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

/// Runs `f` on a thread inside network namespace `ns`; sockets it makes
/// stay in that namespace.
fn in_ns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> Result<T, String> {
    std::thread::scope(|s| {
        s.spawn(|| {
            let fd = File::open(format!("/run/netns/{ns}"))
                .map_err(|e| format!("cannot open namespace {ns}: {e}"))?;
            setns(&fd, CloneFlags::CLONE_NEWNET)
                .map_err(|e| format!("cannot enter namespace {ns}: {e}"))?;
            Ok(f())
        })
        .join()
        .unwrap_or_else(|_| Err(format!("a thread in namespace {ns} panicked")))
    })
}

impl Lab {
    /// Picks a free /24 in 198.19.100-199.0 and a temp dir; makes nothing
    /// in the kernel yet.
    pub fn new() -> Result<Lab, String> {
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
            veths: Vec::new(),
            services: Vec::new(),
            dir,
            forward_before,
            nft_installed: false,
        })
    }

    /// `198.19.N.host`: `.1` is the host side, `.2`..`.4` app1..app3.
    pub fn addr(&self, host: u8) -> Ipv4Addr {
        Ipv4Addr::new(198, 19, self.subnet, host)
    }

    /// app1..app3's addresses.
    pub fn apps(&self) -> [Ipv4Addr; 3] {
        [1, 2, 3].map(|app| self.addr(1 + app))
    }

    fn ns(&self, app: usize) -> String {
        format!("{}-app{app}", self.tag)
    }

    /// The namespaces, their veths and routes, and a test service in each
    /// (HTTP on 80 and 8080, UDP echo on 5353).
    pub fn build(&mut self) -> Result<(), String> {
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
            self.veths.push(veth.clone());
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
            let config = Config {
                name: format!("app{app}"),
                http: vec![80, 8080],
                udp: vec![5353],
                bind: Ipv4Addr::UNSPECIFIED.into(),
                quiet: true,
            };
            let service = in_ns(&ns, || Server::start(config))?
                .map_err(|e| format!("cannot start the test service in {ns}: {e}"))?;
            self.services.push(service);
        }
        Ok(())
    }

    /// Sends one HTTP request from inside app`from` (1..=3).
    pub fn http_from(&self, from: usize, opts: &ProbeOpts) -> Seen {
        in_ns(&self.ns(from), || probe::probe(opts)).unwrap_or_else(Seen::Error)
    }

    /// Sends one datagram from inside app`from` (1..=3).
    pub fn udp_from(&self, from: usize, to: SocketAddr, timeout: Duration) -> Seen {
        in_ns(&self.ns(from), || probe::udp_probe(to, b"ping", timeout)).unwrap_or_else(Seen::Error)
    }

    /// Requests and datagrams app1's service has counted.
    pub fn app1_counter(&self) -> Option<u64> {
        self.services.first().map(Server::counter)
    }

    /// Waits until each app's service answers from inside its own
    /// namespace, on its own address (so its veth and routes are up).
    pub fn wait_healthy(&self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        for app in 1..=3u8 {
            let mut opts = ProbeOpts::new(format!("http://{}:80/healthz", self.addr(1 + app)));
            opts.timeout = Duration::from_millis(500);
            loop {
                let seen = self.http_from(app as usize, &opts);
                if matches!(seen, Seen::Http { status: 200, .. }) {
                    break;
                }
                if Instant::now() > deadline {
                    return Err(format!(
                        "app{app}'s test service did not come up: {}",
                        seen.to_json()
                    ));
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
        // Deleting a veth deletes its peer and the host route through it.
        for veth in &self.veths {
            let _ = sh(&["ip", "link", "del", veth]);
        }
        // The test services' sockets keep their namespaces alive until this
        // process exits (right after); deleting the names is what is left.
        for ns in &self.namespaces {
            let _ = sh(&["ip", "netns", "del", ns]);
        }
        if let Some(v) = &self.forward_before {
            let _ = std::fs::write("/proc/sys/net/ipv4/ip_forward", v.trim());
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
