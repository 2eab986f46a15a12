//! A private network lab for driving the real proxy with raw bytes.
//!
//! The transparent proxy only serves connections that nftables redirected
//! (it reads `SO_ORIGINAL_DST`), so testing it means a kernel path: a client
//! namespace whose traffic to the upstream namespace is routed through a
//! third, "host" namespace where the real `portcullis run` installs its
//! nftables table and listens. Because that table lives in the lab's own
//! host namespace it can never collide with the machine's table or with
//! another lab, so these tests need no lock and run in parallel.
//!
//! ```text
//!   client ns (198.19.N.2, .5) ──veth── host ns (198.19.N.1) ──veth── upstream ns (198.19.N.3)
//!                                       portcullis run                  testsvc :80 :8080 :8081 (in-process)
//!                                       (nft table, proxy, admin)       + test-made servers
//! ```
//!
//! The lab is dual stack: each namespace also has an IPv6 ULA address in
//! `fd00:198:19:N::/64` (`::2`, `::5`, `::1`, `::3`, the same host parts;
//! `N` written as the same decimal digits as the IPv4 `N`), routed through
//! the host namespace like the IPv4 ones. Nothing leaves the namespaces.
//!
//! Sockets are made inside a namespace by a short-lived thread that enters
//! it with `setns` (a socket keeps the namespace it was created in), so the
//! test itself sends and reads the bytes. Everything made is removed by
//! [`Lab`]'s `Drop`, also when a test fails.

use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{
    IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, TcpListener, TcpStream,
};
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use nix::sched::{setns, CloneFlags};
use nix::sys::socket::{self, AddressFamily, SockFlag, SockType, SockaddrIn};

const BIN: &str = env!("CARGO_BIN_EXE_portcullis");
/// Admin endpoint of the daemon, on the host namespace's own loopback.
const ADMIN: &str = "127.0.0.1:9901";

static SEQ: AtomicU32 = AtomicU32::new(0);

fn sh(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", args[0]));
    assert!(
        out.status.success(),
        "`{}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

/// Runs `f` on a thread inside network namespace `ns`; sockets it creates
/// stay in that namespace.
pub fn in_ns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            let fd = File::open(format!("/run/netns/{ns}"))
                .unwrap_or_else(|e| panic!("cannot open namespace {ns}: {e}"));
            setns(&fd, CloneFlags::CLONE_NEWNET)
                .unwrap_or_else(|e| panic!("cannot enter namespace {ns}: {e}"));
            f()
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}

/// The lab: three namespaces, the daemon and the test service.
pub struct Lab {
    pub net: u8,
    pub host: String,
    pub client: String,
    pub upstream: String,
    namespaces: Vec<String>,
    children: Vec<Child>,
    /// The test service in the upstream namespace. Its threads, like the
    /// test-made servers', outlive the lab: their listeners keep the
    /// (deleted, unreachable) upstream namespace until the test exits.
    service: Option<testsvc::server::Server>,
    pub dir: tempfile::TempDir,
}

impl Lab {
    /// Builds the lab and starts `portcullis run` with `rules`, a rule file
    /// in which `@CLIENT@`, `@CLIENT2@` and `@UP@` stand for the addresses,
    /// and `@HOST@` for the host namespace's (where frontends listen);
    /// `@CLIENT6@`, `@CLIENT26@`, `@UP6@`, `@HOST6@` for their IPv6 twins,
    /// and `@ND1@`, `@ND2@` for the two bridged namespaces
    /// [`Lab::add_bridged_pair`] makes.
    pub fn start(rules: &str) -> Lab {
        Lab::start_with(rules, &[])
    }

    /// [`Lab::start`] with more arguments for `portcullis run`.
    pub fn start_with(rules: &str, run_args: &[&str]) -> Lab {
        Lab::start_inner(rules, run_args, Ipv4Addr::UNSPECIFIED.into())
    }

    /// [`Lab::start`] with the test service listening on `[::]` (dual
    /// stack: it answers the IPv6 addresses too; IPv4 peers then show as
    /// `::ffff:a.b.c.d` in its echo, hence not the default).
    pub fn start_dual_stack(rules: &str) -> Lab {
        Lab::start_inner(rules, &[], Ipv6Addr::UNSPECIFIED.into())
    }

    fn start_inner(rules: &str, run_args: &[&str], service_bind: IpAddr) -> Lab {
        assert!(
            nix::unistd::Uid::effective().is_root(),
            "the proxy lab tests need root (network namespaces and nftables); run them as root"
        );
        let seq = SEQ.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let tag = format!("pt{}{}", pid % 100_000, seq);
        // Addresses live only inside the lab's namespaces; still, pick a
        // /24 per lab as the project's address plan asks.
        let net = (100 + (pid as u64 * 31 + seq as u64 * 7 + now_nanos()) % 100) as u8;
        let mut lab = Lab {
            net,
            host: format!("{tag}h"),
            client: format!("{tag}c"),
            upstream: format!("{tag}u"),
            namespaces: Vec::new(),
            children: Vec::new(),
            service: None,
            dir: tempfile::tempdir().expect("temporary directory"),
        };
        lab.build();
        let text = rules
            .replace("@CLIENT@", &lab.client_ip().to_string())
            .replace("@CLIENT2@", &lab.client2_ip().to_string())
            .replace("@UP@", &lab.upstream_ip().to_string())
            .replace("@HOST@", &lab.host_ip().to_string())
            .replace("@CLIENT6@", &lab.client_ip6().to_string())
            .replace("@CLIENT26@", &lab.client2_ip6().to_string())
            .replace("@UP6@", &lab.upstream_ip6().to_string())
            .replace("@HOST6@", &lab.host_ip6().to_string())
            .replace("@ND1@", &lab.nd_ip(1).to_string())
            .replace("@ND2@", &lab.nd_ip(2).to_string());
        let path = lab.dir.path().join("rules.json");
        std::fs::write(&path, text).expect("write rules");
        lab.start_service(service_bind);
        let rules_path = path.to_string_lossy().into_owned();
        let mut args = vec!["--log-format", "json", "run", &rules_path];
        args.extend_from_slice(run_args);
        lab.spawn_in(&lab.host.clone(), "daemon.log", &args);
        lab.wait_ready();
        lab
    }

    fn build(&mut self) {
        for ns in [&self.host, &self.client, &self.upstream] {
            sh(&["ip", "netns", "add", ns]);
            self.namespaces.push(ns.clone());
            sh(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        let gw = self.ip(1).to_string();
        let gw6 = self.host_ip6().to_string();
        let pairs = [
            (
                self.client.clone(),
                "vc",
                vec![self.client_ip(), self.client2_ip()],
                vec![self.client_ip6(), self.client2_ip6()],
            ),
            (
                self.upstream.clone(),
                "vu",
                vec![self.upstream_ip()],
                vec![self.upstream_ip6()],
            ),
        ];
        for (ns, veth, addrs, addrs6) in pairs {
            sh(&[
                "ip", "-n", &self.host, "link", "add", veth, "type", "veth", "peer", "name",
                "eth0", "netns", &ns,
            ]);
            sh(&[
                "ip",
                "-n",
                &self.host,
                "addr",
                "add",
                &format!("{gw}/32"),
                "dev",
                veth,
            ]);
            sh(&[
                "ip",
                "-n",
                &self.host,
                "addr",
                "add",
                &format!("{gw6}/128"),
                "dev",
                veth,
                "nodad",
            ]);
            sh(&["ip", "-n", &self.host, "link", "set", veth, "up"]);
            for a in &addrs6 {
                sh(&[
                    "ip",
                    "-n",
                    &ns,
                    "addr",
                    "add",
                    &format!("{a}/128"),
                    "dev",
                    "eth0",
                    "nodad",
                ]);
                sh(&[
                    "ip",
                    "-n",
                    &self.host,
                    "route",
                    "add",
                    &format!("{a}/128"),
                    "dev",
                    veth,
                ]);
            }
            for a in &addrs {
                sh(&[
                    "ip",
                    "-n",
                    &ns,
                    "addr",
                    "add",
                    &format!("{a}/32"),
                    "dev",
                    "eth0",
                ]);
                sh(&[
                    "ip",
                    "-n",
                    &self.host,
                    "route",
                    "add",
                    &format!("{a}/32"),
                    "dev",
                    veth,
                ]);
            }
            sh(&["ip", "-n", &ns, "link", "set", "eth0", "up"]);
            sh(&["ip", "-n", &ns, "route", "add", &gw, "dev", "eth0"]);
            sh(&[
                "ip", "-n", &ns, "route", "add", "default", "via", &gw, "dev", "eth0",
            ]);
            sh(&["ip", "-n", &ns, "-6", "route", "add", &gw6, "dev", "eth0"]);
            sh(&[
                "ip", "-n", &ns, "-6", "route", "add", "default", "via", &gw6, "dev", "eth0",
            ]);
        }
        sh(&[
            "ip",
            "netns",
            "exec",
            &self.host,
            "sysctl",
            "-qw",
            "net.ipv6.conf.all.forwarding=1",
        ]);
        sh(&[
            "ip",
            "netns",
            "exec",
            &self.host,
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=1",
        ]);
    }

    /// The test service (`up`, HTTP on 80, 8080 and 8081) in the upstream
    /// namespace, served by threads of this process: its listeners are
    /// made inside the namespace and stay there, like the test-made servers.
    fn start_service(&mut self, bind: IpAddr) {
        let config = testsvc::server::Config {
            name: "up".into(),
            http: vec![80, 8080, 8081],
            udp: Vec::new(),
            bind,
            quiet: true,
        };
        let service = in_ns(&self.upstream, || testsvc::server::Server::start(config))
            .unwrap_or_else(|e| {
                panic!("cannot start the test service in the upstream namespace: {e}")
            });
        self.service = Some(service);
    }

    fn spawn_in(&mut self, ns: &str, log: &str, args: &[&str]) {
        let log = File::create(self.dir.path().join(log)).expect("log file");
        let child = Command::new("ip")
            .args(["netns", "exec", ns, BIN])
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {args:?} in {ns}: {e}"));
        self.children.push(child);
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let admin = in_ns(&self.host, || get(ADMIN, "/healthz"));
            let up = in_ns(&self.upstream, || get("127.0.0.1:80", "/healthz"));
            if matches!((&admin, &up), (Ok(a), Ok(u)) if a.starts_with("HTTP/1.1 200") && u.starts_with("HTTP/1.1 200"))
            {
                return;
            }
            for c in &mut self.children {
                if let Ok(Some(status)) = c.try_wait() {
                    panic!(
                        "the daemon exited early ({status}); its log:\n{}",
                        self.log()
                    );
                }
            }
            assert!(
                Instant::now() < deadline,
                "the lab did not come up: admin {admin:?}, upstream {up:?}; daemon log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn ip(&self, host: u8) -> Ipv4Addr {
        Ipv4Addr::new(198, 19, self.net, host)
    }
    pub fn client_ip(&self) -> Ipv4Addr {
        self.ip(2)
    }
    pub fn client2_ip(&self) -> Ipv4Addr {
        self.ip(5)
    }
    pub fn upstream_ip(&self) -> Ipv4Addr {
        self.ip(3)
    }
    /// The host namespace's address, where frontends listen (`@HOST@`).
    pub fn host_ip(&self) -> Ipv4Addr {
        self.ip(1)
    }
    /// `fd00:198:19:N::host`, `N` spelled with the IPv4 `N`'s digits.
    pub fn ip6(&self, host: u16) -> Ipv6Addr {
        Ipv6Addr::new(0xfd00, 0x198, 0x19, self.net6(), 0, 0, 0, host)
    }
    fn net6(&self) -> u16 {
        u16::from_str_radix(&self.net.to_string(), 16).expect("a decimal u8 is valid hex")
    }
    pub fn client_ip6(&self) -> Ipv6Addr {
        self.ip6(2)
    }
    pub fn client2_ip6(&self) -> Ipv6Addr {
        self.ip6(5)
    }
    pub fn upstream_ip6(&self) -> Ipv6Addr {
        self.ip6(3)
    }
    pub fn host_ip6(&self) -> Ipv6Addr {
        self.ip6(1)
    }
    /// Addresses of the bridged pair (`@ND1@`, `@ND2@`): one on-link /64,
    /// `fd00:198:19:N:1::/64`.
    pub fn nd_ip(&self, n: u16) -> Ipv6Addr {
        Ipv6Addr::new(0xfd00, 0x198, 0x19, self.net6(), 1, 0, 0, n)
    }
    pub fn upstream(&self, port: u16) -> SocketAddr {
        SocketAddr::V4(SocketAddrV4::new(self.upstream_ip(), port))
    }

    /// A connection from the client namespace to the upstream's `port`
    /// (redirected into the proxy by the rules).
    pub fn connect(&self, port: u16) -> TcpStream {
        self.connect_from(self.client_ip(), port)
    }

    /// Like [`Lab::connect`], from a chosen source address of the client.
    pub fn connect_from(&self, src: Ipv4Addr, port: u16) -> TcpStream {
        self.connect_between(src, SocketAddrV4::new(self.upstream_ip(), port))
    }

    /// A connection to a frontend listening on the host namespace's `port`
    /// (no redirect involved), as an outside client: from client2, which
    /// the frontend tests' rule files do not name (a managed container
    /// would be held to its own access rules on a frontend).
    pub fn connect_frontend(&self, port: u16) -> TcpStream {
        self.connect_between(self.client2_ip(), SocketAddrV4::new(self.host_ip(), port))
    }

    /// A TCP connection from the client namespace's IPv6 `src` to the
    /// upstream's IPv6 address and `port`, or the error if it does not
    /// connect within `timeout` (a dropped SYN times out).
    pub fn try_connect6(
        &self,
        src: Ipv6Addr,
        port: u16,
        timeout: Duration,
    ) -> io::Result<TcpStream> {
        let dst = SocketAddr::V6(SocketAddrV6::new(self.upstream_ip6(), port, 0, 0));
        try_connect_in(&self.client, SocketAddr::new(src.into(), 0), dst, timeout)
    }

    /// Makes two more namespaces, each with one veth into a bridge `br6`
    /// in the host namespace, addressed `@ND1@` and `@ND2@` on one on-link
    /// /64: traffic between them is bridged, not routed, and passes the
    /// daemon's `inet` hooks only through `br_netfilter` (turned on for
    /// the host namespace here). Returns the two namespaces' names.
    pub fn add_bridged_pair(&mut self) -> (String, String) {
        let host = self.host.clone();
        sh(&["ip", "-n", &host, "link", "add", "br6", "type", "bridge"]);
        sh(&["ip", "-n", &host, "link", "set", "br6", "up"]);
        sh(&[
            "ip",
            "netns",
            "exec",
            &host,
            "sysctl",
            "-qw",
            "net.bridge.bridge-nf-call-ip6tables=1",
        ]);
        let mut names = Vec::new();
        for n in [1u16, 2] {
            let ns = format!("{}n{n}", self.host);
            sh(&["ip", "netns", "add", &ns]);
            self.namespaces.push(ns.clone());
            sh(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
            let veth = format!("vn{n}");
            sh(&[
                "ip", "-n", &host, "link", "add", &veth, "type", "veth", "peer", "name", "eth0",
                "netns", &ns,
            ]);
            sh(&["ip", "-n", &host, "link", "set", &veth, "master", "br6"]);
            sh(&["ip", "-n", &host, "link", "set", &veth, "up"]);
            sh(&[
                "ip",
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{}/64", self.nd_ip(n)),
                "dev",
                "eth0",
                "nodad",
            ]);
            sh(&["ip", "-n", &ns, "link", "set", "eth0", "up"]);
            names.push(ns);
        }
        (names[0].clone(), names[1].clone())
    }

    fn connect_between(&self, src: Ipv4Addr, dst: SocketAddrV4) -> TcpStream {
        let dst = SockaddrIn::from(dst);
        let bind = SockaddrIn::from(SocketAddrV4::new(src, 0));
        let s = in_ns(&self.client, move || -> io::Result<TcpStream> {
            let fd: OwnedFd = socket::socket(
                AddressFamily::Inet,
                SockType::Stream,
                SockFlag::SOCK_CLOEXEC,
                None,
            )?;
            socket::bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &bind)?;
            socket::connect(std::os::fd::AsRawFd::as_raw_fd(&fd), &dst)?;
            Ok(TcpStream::from(fd))
        })
        .unwrap_or_else(|e| panic!("cannot connect to {dst} from {src}: {e}"));
        s.set_read_timeout(Some(Duration::from_secs(10))).ok();
        s.set_nodelay(true).ok();
        s
    }

    /// A connection from `src` in namespace `ns` to `dst` that gives up
    /// after `patience` (`SO_SNDTIMEO` bounds a blocking connect): for
    /// flows the kernel is expected to drop.
    pub fn try_connect_in(
        &self,
        ns: &str,
        src: Ipv4Addr,
        dst: SocketAddrV4,
        patience: Duration,
    ) -> io::Result<TcpStream> {
        let (dst, bind) = (
            SockaddrIn::from(dst),
            SockaddrIn::from(SocketAddrV4::new(src, 0)),
        );
        in_ns(ns, move || -> io::Result<TcpStream> {
            let fd: OwnedFd = socket::socket(
                AddressFamily::Inet,
                SockType::Stream,
                SockFlag::SOCK_CLOEXEC,
                None,
            )?;
            let tv = nix::sys::time::TimeVal::new(
                patience.as_secs() as i64,
                patience.subsec_micros() as i64,
            );
            socket::setsockopt(&fd, socket::sockopt::SendTimeout, &tv)?;
            socket::bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &bind)?;
            socket::connect(std::os::fd::AsRawFd::as_raw_fd(&fd), &dst)?;
            let s = TcpStream::from(fd);
            s.set_read_timeout(Some(Duration::from_secs(10)))?;
            s.set_write_timeout(None)?;
            Ok(s)
        })
    }

    /// The forward chain of the daemon's table, as `nft list` prints it.
    pub fn forward_chain(&self) -> String {
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.host,
                "nft",
                "list",
                "chain",
                "inet",
                "portcullis",
                "forward",
            ])
            .stdin(Stdio::null())
            .output()
            .expect("run nft in the host namespace");
        assert!(
            out.status.success(),
            "nft list: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A listener bound inside the upstream namespace, for test-made
    /// upstreams (raw responses, WebSocket, HTTP/2).
    pub fn listen_upstream(&self, port: u16) -> TcpListener {
        let addr = self.upstream(port);
        in_ns(&self.upstream, move || TcpListener::bind(addr))
            .unwrap_or_else(|e| panic!("cannot listen on {addr} in the upstream namespace: {e}"))
    }

    /// Requests the test service has served (its own counter, read in
    /// this process: no request is involved).
    pub fn upstream_count(&self) -> u64 {
        self.service
            .as_ref()
            .map(testsvc::server::Server::counter)
            .expect("the lab's test service runs")
    }

    /// One counter of the daemon's `/metrics`.
    pub fn metric(&self, name: &str) -> u64 {
        let text = in_ns(&self.host, || get(ADMIN, "/metrics"))
            .unwrap_or_else(|e| panic!("cannot read /metrics: {e}"));
        let full = format!("portcullis_{name} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&full))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("metric {name} not in /metrics:\n{text}"))
    }

    /// The daemon's process id (`ip netns exec` executes it in place).
    pub fn daemon_pid(&self) -> u32 {
        self.children
            .first()
            .map(Child::id)
            .expect("the daemon is the lab's only process")
    }

    /// The daemon's resident memory in KiB (`VmRSS` of /proc/PID/status).
    pub fn daemon_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.daemon_pid()))
            .unwrap_or_else(|e| panic!("cannot read the daemon's /proc status: {e}"));
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no VmRSS in the daemon's status:\n{status}"))
    }

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        self.read_log("daemon.log")
    }

    fn read_log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default()
    }

    /// Runs a program inside namespace `ns` and returns its output.
    pub fn run_in(&self, ns: &str, args: &[&str]) -> std::process::Output {
        Command::new("ip")
            .args(["netns", "exec", ns])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {args:?} in namespace {ns}: {e}"))
    }

    /// Runs a program inside the client namespace and returns its output.
    /// `curl` from the client namespace to the upstream's `port` with
    /// `args`: (status, HTTP version, response head lower-cased, body).
    /// A curl that gets no response at all fails the test.
    pub fn curl(&self, port: u16, args: &[&str], path: &str) -> (u16, String, String, String) {
        let url = format!("http://{}{path}", self.upstream(port));
        let mut all = vec![
            "curl",
            "-sS",
            "--max-time",
            "20",
            "-D",
            "/dev/stderr",
            "-w",
            "\n%{http_code} %{http_version}",
        ];
        all.extend_from_slice(args);
        all.push(&url);
        let out = self.run_in_client(&all);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, tail) = text.rsplit_once('\n').unwrap_or(("", &text));
        let mut tail = tail.split(' ');
        let status = tail.next().and_then(|s| s.parse().ok()).unwrap_or(0);
        let version = tail.next().unwrap_or("").to_owned();
        let head = String::from_utf8_lossy(&out.stderr).to_ascii_lowercase();
        assert!(status != 0, "curl {args:?} {url} failed: {text} {head}");
        (status, version, head, body.to_owned())
    }

    pub fn run_in_client(&self, args: &[&str]) -> std::process::Output {
        Command::new("ip")
            .args(["netns", "exec", &self.client])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| {
                panic!("cannot run {args:?} in the client namespace: {e} (is it installed?)")
            })
    }

    pub fn rules_path(&self) -> PathBuf {
        self.dir.path().join("rules.json")
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        for c in &mut self.children {
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                match c.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if Instant::now() > deadline => {
                        let _ = nix::sys::signal::killpg(
                            nix::unistd::Pid::from_raw(c.id() as i32),
                            nix::sys::signal::Signal::SIGKILL,
                        );
                        let _ = c.wait();
                        break;
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        }
        // Deleting a namespace removes its veths, routes and the nftables
        // table the daemon left behind (it fails closed on stop).
        for ns in &self.namespaces {
            let _ = Command::new("ip")
                .args(["netns", "del", ns])
                .stdin(Stdio::null())
                .output();
        }
        if std::thread::panicking() {
            eprintln!("--- daemon log of the failed lab ---\n{}", self.log());
        }
    }
}

/// A TCP connection made inside namespace `ns` from `src` to `dst`, or the
/// error if it is not up within `timeout`.
pub fn try_connect_in(
    ns: &str,
    src: SocketAddr,
    dst: SocketAddr,
    timeout: Duration,
) -> io::Result<TcpStream> {
    let s = in_ns(ns, move || -> io::Result<TcpStream> {
        let sock = socket2::Socket::new(
            socket2::Domain::for_address(dst),
            socket2::Type::STREAM,
            None,
        )?;
        sock.bind(&src.into())?;
        sock.connect_timeout(&dst.into(), timeout)?;
        Ok(sock.into())
    })?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.set_nodelay(true)?;
    Ok(s)
}

fn now_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64)
        .unwrap_or(0)
}

/// A plain `GET path` with `Connection: close`; the whole answer as text.
pub fn get(addr: &str, path: &str) -> io::Result<String> {
    let mut s = TcpStream::connect_timeout(
        &addr.parse().map_err(|_| io::ErrorKind::InvalidInput)?,
        Duration::from_secs(2),
    )?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: lab\r\nConnection: close\r\n\r\n"
    )?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

// === reading responses ===

/// One response as the client saw it.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// What came back on a connection: complete responses, and whether the
/// proxy then closed it.
#[derive(Debug)]
pub struct Answer {
    pub responses: Vec<Response>,
    pub closed: bool,
    pub raw: Vec<u8>,
}

impl Answer {
    pub fn statuses(&self) -> Vec<u16> {
        self.responses.iter().map(|r| r.status).collect()
    }
}

/// Reads responses (skipping interim 1xx) until `want` were seen and the
/// peer closed, or `patience` passes without a byte (with `want` 0: until
/// the peer closes or `patience` passes).
pub fn read_answer(s: &mut TcpStream, want: usize, patience: Duration) -> Answer {
    s.set_read_timeout(Some(patience)).ok();
    let mut buf: Vec<u8> = Vec::new();
    let mut raw = Vec::new();
    let mut responses = Vec::new();
    let mut closed = false;
    let mut chunk = [0u8; 16384];
    loop {
        // Parse whatever is complete.
        while let Some((resp, used)) = parse_response(&buf) {
            buf.drain(..used);
            if !(100..200).contains(&resp.status) {
                responses.push(resp);
            }
        }
        if closed {
            break;
        }
        // Once enough responses arrived, wait only briefly for a close.
        if want > 0 && responses.len() >= want {
            s.set_read_timeout(Some(Duration::from_millis(300))).ok();
        }
        match s.read(&mut chunk) {
            Ok(0) => closed = true,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                raw.extend_from_slice(&chunk[..n]);
            }
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => closed = true,
            Err(_) => break,
        }
    }
    Answer {
        responses,
        closed,
        raw,
    }
}

fn parse_response(buf: &[u8]) -> Option<(Response, usize)> {
    let mut storage = [httparse::EMPTY_HEADER; 64];
    let mut r = httparse::Response::new(&mut storage);
    let head = match r.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        _ => return None,
    };
    let status = r.code?;
    let headers: Vec<(String, String)> = r
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_owned(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect();
    let find = |n: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(n))
            .map(|(_, v)| v.clone())
    };
    let bodyless = (100..200).contains(&status) || status == 204 || status == 304;
    if bodyless {
        return Some((
            Response {
                status,
                headers,
                body: Vec::new(),
            },
            head,
        ));
    }
    if find("transfer-encoding").is_some() {
        let mut at = head;
        let mut body = Vec::new();
        loop {
            let rest = buf.get(at..)?;
            let nl = rest.windows(2).position(|w| w == b"\r\n")?;
            let size =
                usize::from_str_radix(std::str::from_utf8(&rest[..nl]).ok()?.trim(), 16).ok()?;
            at += nl + 2;
            if size == 0 {
                let rest = buf.get(at..)?;
                let end = rest.windows(2).position(|w| w == b"\r\n")?;
                return Some((
                    Response {
                        status,
                        headers,
                        body,
                    },
                    at + end + 2,
                ));
            }
            body.extend_from_slice(buf.get(at..at + size)?);
            at += size + 2;
            if buf.len() < at {
                return None;
            }
        }
    }
    let len: usize = find("content-length")?.trim().parse().ok()?;
    let body = buf.get(head..head + len)?.to_vec();
    Some((
        Response {
            status,
            headers,
            body,
        },
        head + len,
    ))
}

/// An HTTP/2 (prior knowledge) server of the test's own on `port` in the
/// upstream namespace: each stream is handed to `on_stream` on a task of its
/// own. With `one_each`, every connection serves one stream, then GOAWAY.
pub fn h2_server<F, Fut>(lab: &Lab, port: u16, one_each: bool, on_stream: F)
where
    F: Fn(http::Request<h2::RecvStream>, h2::server::SendResponse<bytes::Bytes>) -> Fut
        + Send
        + Sync
        + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = lab.listen_upstream(port);
    listener.set_nonblocking(true).expect("nonblocking");
    let on_stream = std::sync::Arc::new(on_stream);
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let on_stream = on_stream.clone();
                tokio::spawn(async move {
                    let Ok(mut conn) = h2::server::handshake(tcp).await else {
                        return;
                    };
                    while let Some(Ok((req, respond))) = conn.accept().await {
                        tokio::spawn(on_stream(req, respond));
                        if one_each {
                            conn.graceful_shutdown();
                        }
                    }
                });
            }
        });
    });
}

/// Sends `bytes` on a fresh client connection to `port` and reads the
/// answer (expecting `want` responses).
pub fn exchange(lab: &Lab, port: u16, bytes: &[u8], want: usize) -> Answer {
    let mut s = lab.connect(port);
    // A refused request may be answered before all of it is written; the
    // proxy closing then makes the rest of the write fail, which is fine.
    let _ = s.write_all(bytes);
    read_answer(&mut s, want, Duration::from_secs(5))
}
