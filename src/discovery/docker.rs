//! The Docker source of [`super::Discovery`]: `{"docker": NAME}` containers
//! resolved and followed through the Docker Engine API (the `bollard`
//! client, on the local socket).
//!
//! [`Engine::resolve_all`] inspects every named container; a container that
//! is stopped or unknown resolves to no address, which means its rules have
//! no elements: nothing is opened for an address Portcullis cannot
//! attribute. Such names are reported, never silent (`status`, the log,
//! `docker_unresolved_containers`).
//!
//! The Docker networks `guard.networks` names are inspected the same way:
//! their subnets are the `Subnet`s of the network's IPAM config, IPv4 and
//! IPv6. The answer must be the network of exactly that name (the engine
//! also answers an ID prefix). A network the engine does not know, or
//! without subnets, guards nothing and is reported
//! (`docker_unresolved_networks`, the log, `status`); one it fails to
//! answer about keeps the subnets known so far.
//!
//! [`Engine::follow`] keeps the addresses current: it subscribes to the
//! engine's event stream (container start/stop/die/…, network
//! create/destroy/connect/disconnect) and asks the daemon for a resync
//! after each burst of events, and after every (re)connection, since events
//! may have been missed while the stream was down. If the engine cannot be
//! reached the daemon runs on with the addresses and subnets it knows, says
//! so (`docker_engine_up` 0, the log, `status`), and keeps trying.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use bollard::container::InspectContainerOptions;
use bollard::network::InspectNetworkOptions;
use bollard::system::EventsOptions;
use bollard::Docker;
use futures_util::StreamExt;
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::{BoxFuture, Discovery, Names, Outcome, Resolution as Found};
use crate::policy::guard::Cidr;
use crate::policy::Policy;
use crate::state::metrics::Metrics;

pub const DEFAULT_SOCKET: &str = "/var/run/docker.sock";

/// Bound on one API call (inspect); the event stream itself is long-lived.
const API_TIMEOUT_S: u64 = 5;
/// First wait before reconnecting to an unreachable engine; doubled up to
/// [`RETRY_MAX`].
const RETRY_MIN: Duration = Duration::from_millis(250);
const RETRY_MAX: Duration = Duration::from_secs(5);
/// Events that come together (a restart is die, stop, start, connect) are
/// answered with one resync after this quiet time.
const DEBOUNCE: Duration = Duration::from_millis(50);

#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    #[error("cannot reach the Docker engine at {socket}: {reason} (is dockerd running?)")]
    Connect { socket: String, reason: String },
    #[error("Docker API request for {name} failed: {reason}")]
    Api { name: String, reason: String },
}

/// A client of one Docker engine. Holds only the socket's path: the engine
/// may be absent at start and appear later, so each use connects afresh.
#[derive(Clone)]
pub struct Engine {
    socket: String,
}

/// The addresses of the named containers and the subnets of the named
/// networks, as far as the engine told.
#[derive(Debug, Default)]
pub struct Resolution {
    pub addresses: HashMap<String, Vec<IpAddr>>,
    /// Per network: its subnets (none: unknown, or none configured), or why
    /// the engine's answer was no use.
    pub networks: HashMap<String, Result<Vec<Cidr>, String>>,
    /// Set when the engine could not be asked (then both maps are empty).
    pub unreachable: Option<DockerError>,
}

impl Engine {
    /// A client for the engine at `socket` (no connection is made yet).
    pub fn new(socket: &str) -> Engine {
        Engine {
            socket: socket.to_owned(),
        }
    }

    fn client(&self) -> Result<Docker, DockerError> {
        Docker::connect_with_socket(&self.socket, API_TIMEOUT_S, bollard::API_DEFAULT_VERSION)
            .map_err(|e| DockerError::Connect {
                socket: self.socket.clone(),
                reason: e.to_string(),
            })
    }

    /// Inspects every container and network named. An engine that cannot
    /// be reached is reported once in [`Resolution::unreachable`]; a
    /// container it does not know, or that is not running, has no
    /// addresses; a network it does not know has no subnets.
    pub async fn resolve_all(&self, names: &Names) -> Resolution {
        let mut out = Resolution::default();
        if names.is_empty() {
            return out;
        }
        let docker = match self.client() {
            Ok(d) => d,
            Err(e) => {
                out.unreachable = Some(e);
                return out;
            }
        };
        let unreachable = |mut out: Resolution, e| {
            out.addresses.clear();
            out.networks.clear();
            out.unreachable = Some(e);
            out
        };
        for name in &names.containers {
            match self.resolve(&docker, name).await {
                Ok(a) => {
                    out.addresses.insert(name.to_owned(), a);
                }
                Err(e @ DockerError::Connect { .. }) => return unreachable(out, e),
                Err(e) => {
                    warn!(container = name, error = %e, "docker container left without addresses");
                    out.addresses.insert(name.to_owned(), Vec::new());
                }
            }
        }
        for name in &names.networks {
            match self.network(&docker, name).await {
                Ok(found) => {
                    out.networks.insert(name.to_owned(), found);
                }
                Err(e @ DockerError::Connect { .. }) => return unreachable(out, e),
                Err(e) => {
                    out.networks.insert(name.to_owned(), Err(e.to_string()));
                }
            }
        }
        out
    }

    /// The subnets of one network: empty if the engine does not know it
    /// (a 404, or an answer about a network of another name); an error in
    /// the inner result if its answer cannot be used.
    async fn network(
        &self,
        docker: &Docker,
        name: &str,
    ) -> Result<Result<Vec<Cidr>, String>, DockerError> {
        match docker
            .inspect_network(name, None::<InspectNetworkOptions<String>>)
            .await
        {
            Ok(n) => Ok(subnets(name, &n)),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(Ok(Vec::new())),
            Err(e @ bollard::errors::Error::DockerResponseServerError { .. }) => {
                Err(DockerError::Api {
                    name: format!("network {name}"),
                    reason: e.to_string(),
                })
            }
            Err(e) => Err(DockerError::Connect {
                socket: self.socket.clone(),
                reason: e.to_string(),
            }),
        }
    }

    /// The current addresses of one container (empty: not running, or
    /// unknown to the engine).
    async fn resolve(&self, docker: &Docker, name: &str) -> Result<Vec<IpAddr>, DockerError> {
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
        {
            return Err(DockerError::Api {
                name: name.to_owned(),
                reason: "invalid container name".into(),
            });
        }
        match docker
            .inspect_container(name, None::<InspectContainerOptions>)
            .await
        {
            Ok(c) => Ok(addresses(&c)),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(Vec::new()),
            Err(e @ bollard::errors::Error::DockerResponseServerError { .. }) => {
                Err(DockerError::Api {
                    name: name.to_owned(),
                    reason: e.to_string(),
                })
            }
            Err(e) => Err(DockerError::Connect {
                socket: self.socket.clone(),
                reason: e.to_string(),
            }),
        }
    }

    /// Follows the engine's events until `resync` is closed: one message on
    /// `resync` after each burst of relevant events and after each
    /// (re)connection. `docker_engine_up` says whether the stream is up.
    pub async fn follow(self, resync: mpsc::Sender<()>, metrics: Arc<Metrics>) {
        let mut backoff = RETRY_MIN;
        let mut was_up = true;
        loop {
            let docker = self.client();
            let ping = match &docker {
                Ok(d) => d.ping().await.map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            // The stream is only known to be up once the engine answered:
            // ask it something cheap first.
            let docker = match docker.and_then(|d| {
                ping.map(|_| d).map_err(|e| DockerError::Connect {
                    socket: self.socket.clone(),
                    reason: e,
                })
            }) {
                Ok(d) => d,
                Err(e) => {
                    if was_up {
                        warn!(socket = %self.socket, error = %e, "docker engine unreachable: keeping the known container addresses and retrying");
                    }
                    was_up = false;
                    metrics
                        .docker_engine_up
                        .store(0, std::sync::atomic::Ordering::Relaxed);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(RETRY_MAX);
                    continue;
                }
            };
            let filters = HashMap::from([("type", vec!["container", "network"])]);
            let mut events = docker.events(Some(EventsOptions::<&str> {
                filters,
                ..Default::default()
            }));
            if !was_up {
                info!(socket = %self.socket, "docker engine reachable again: resyncing container addresses");
            }
            backoff = RETRY_MIN;
            metrics
                .docker_engine_up
                .store(1, std::sync::atomic::Ordering::Relaxed);
            // Events may have been missed while not subscribed.
            if resync.send(()).await.is_err() {
                return;
            }
            loop {
                match events.next().await {
                    Some(Ok(ev)) => {
                        if !relevant(ev.action.as_deref().unwrap_or("")) {
                            continue;
                        }
                        // Let the rest of the burst arrive, then one resync.
                        let quiet = tokio::time::sleep(DEBOUNCE);
                        tokio::pin!(quiet);
                        loop {
                            tokio::select! {
                                _ = &mut quiet => break,
                                more = events.next() => match more {
                                    Some(Ok(_)) => continue,
                                    _ => break,
                                },
                            }
                        }
                        if resync.send(()).await.is_err() {
                            return;
                        }
                    }
                    Some(Err(e)) => {
                        warn!(socket = %self.socket, error = %e, "docker event stream failed; reconnecting");
                        break;
                    }
                    None => {
                        warn!(socket = %self.socket, "docker event stream ended; reconnecting");
                        break;
                    }
                }
            }
            metrics
                .docker_engine_up
                .store(0, std::sync::atomic::Ordering::Relaxed);
            was_up = false;
            tokio::time::sleep(backoff).await;
        }
    }
}

// === impl DockerDiscovery ===

/// [`Discovery`] through one Docker engine. Owns the `docker_*` metrics
/// and log lines, so the daemon need not know it is Docker.
pub struct DockerDiscovery {
    engine: Engine,
    metrics: Arc<Metrics>,
}

impl DockerDiscovery {
    /// A source for the engine at `socket` (no connection is made yet: the
    /// engine may appear later).
    pub fn new(socket: &str, metrics: Arc<Metrics>) -> DockerDiscovery {
        DockerDiscovery {
            engine: Engine::new(socket),
            metrics,
        }
    }
}

impl Discovery for DockerDiscovery {
    fn kind(&self) -> &'static str {
        "docker"
    }

    fn names(&self, policy: &Policy) -> Names {
        Names::docker(policy)
    }

    fn resolve<'a>(&'a self, names: &'a Names) -> BoxFuture<'a, Found> {
        Box::pin(async move {
            let r = self.engine.resolve_all(names).await;
            Found {
                addresses: r.addresses,
                networks: r.networks,
                unreachable: r.unreachable.map(|e| e.into()),
            }
        })
    }

    fn follow(&self, changed: mpsc::Sender<()>) -> BoxFuture<'static, ()> {
        Box::pin(self.engine.clone().follow(changed, self.metrics.clone()))
    }

    fn reachable(&self) -> bool {
        self.metrics
            .docker_engine_up
            .load(std::sync::atomic::Ordering::Relaxed)
            == 1
    }

    fn report(&self, outcome: &Outcome<'_>) {
        use std::sync::atomic::Ordering;
        if let Some(e) = outcome.unreachable {
            self.metrics.docker_engine_up.store(0, Ordering::Relaxed);
            warn!(error = %e, "docker engine unreachable: Docker containers keep the addresses and guarded Docker networks the subnets known so far (none at start) until it answers");
        } else if !outcome.names.is_empty() {
            self.metrics.docker_engine_up.store(1, Ordering::Relaxed);
        }
        self.metrics
            .docker_unresolved_containers
            .store(outcome.unplaced.len() as u64, Ordering::Relaxed);
        if !outcome.unplaced.is_empty() {
            warn!(containers = ?outcome.unplaced, "docker containers without a known address (not running, unknown to the engine, or the engine is unreachable): their access entries allow nothing until they are placed");
        }
        for (network, error) in outcome.network_errors {
            warn!(network, error, "docker network could not be inspected: its guard keeps the subnets known so far (none at start)");
        }
        self.metrics
            .docker_unresolved_networks
            .store(outcome.unresolved_networks.len() as u64, Ordering::Relaxed);
        if !outcome.unresolved_networks.is_empty() {
            warn!(networks = ?outcome.unresolved_networks, "guarded docker networks without a known subnet (unknown to the engine, none in its IPAM config, or never answered for): they guard nothing until they resolve");
        }
    }
}

/// Events after which a container's addresses may differ.
fn relevant(action: &str) -> bool {
    matches!(
        action,
        "start"
            | "restart"
            | "stop"
            | "die"
            | "kill"
            | "pause"
            | "unpause"
            | "destroy"
            | "rename"
            | "connect"
            | "disconnect"
            | "create"
            | "remove"
            | "update"
    )
}

/// The subnets of the network the engine answered for `name` (IPv4 and
/// IPv6, each once). Another network's answer (the engine matches ID
/// prefixes too) counts as none; a subnet that is not a network is an
/// error, so that the subnets known so far stay.
fn subnets(name: &str, n: &bollard::models::Network) -> Result<Vec<Cidr>, String> {
    if n.name.as_deref() != Some(name) && n.id.as_deref() != Some(name) {
        warn!(
            network = name,
            answered = n.name.as_deref().unwrap_or(""),
            "docker answered for another network (an ID prefix?): none of that name"
        );
        return Ok(Vec::new());
    }
    let configs = n.ipam.as_ref().and_then(|i| i.config.as_ref());
    let mut out: Vec<Cidr> = Vec::new();
    for subnet in configs
        .into_iter()
        .flatten()
        .filter_map(|c| c.subnet.as_deref())
    {
        let net = Cidr::parse_subnet(subnet)
            .map_err(|e| format!("its IPAM subnet {subnet:?} is not usable: {e}"))?;
        if !out.contains(&net) {
            out.push(net);
        }
    }
    Ok(out)
}

fn addresses(c: &bollard::models::ContainerInspectResponse) -> Vec<IpAddr> {
    let running = c.state.as_ref().and_then(|s| s.running) == Some(true);
    if !running {
        return Vec::new();
    }
    let mut out = Vec::new();
    let nets = c
        .network_settings
        .as_ref()
        .and_then(|n| n.networks.as_ref());
    for net in nets.into_iter().flat_map(|n| n.values()) {
        for a in [&net.ip_address, &net.global_ipv6_address] {
            if let Some(ip) = a.as_deref().and_then(|a| a.parse().ok()) {
                if !out.contains(&ip) {
                    out.push(ip);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use bollard::models::ContainerInspectResponse;

    fn inspect(json: &str) -> ContainerInspectResponse {
        serde_json::from_str(json).expect("inspect JSON")
    }

    #[test]
    fn running_container_addresses() {
        let c = inspect(
            r#"{"State":{"Running":true},"NetworkSettings":{"Networks":{"n1":{"IPAddress":"198.19.5.3","GlobalIPv6Address":"fd00::3"},"n2":{"IPAddress":"198.19.5.3"}}}}"#,
        );
        assert_eq!(
            super::addresses(&c),
            vec![
                "198.19.5.3".parse::<std::net::IpAddr>().unwrap(),
                "fd00::3".parse().unwrap()
            ]
        );
        let stopped = inspect(
            r#"{"State":{"Running":false},"NetworkSettings":{"Networks":{"n1":{"IPAddress":"198.19.5.3"}}}}"#,
        );
        assert!(super::addresses(&stopped).is_empty());
    }

    fn network(json: &str) -> bollard::models::Network {
        serde_json::from_str(json).expect("network inspect JSON")
    }

    /// What `docker network inspect` answers (trimmed), as the guard reads it.
    #[test]
    fn guarded_network_subnets() {
        let cidrs = |v: &[&str]| -> Vec<crate::policy::guard::Cidr> {
            v.iter()
                .map(|s| crate::policy::guard::Cidr::parse(s).expect("cidr"))
                .collect()
        };
        let dual = network(
            r#"{"Name":"appnet","Id":"5ccb97d8d741","Driver":"bridge","EnableIPv6":true,
                "IPAM":{"Driver":"default","Options":{},"Config":[
                  {"Subnet":"198.19.234.0/24","Gateway":"198.19.234.1"},
                  {"Subnet":"fd00:198:19:234::/64"},
                  {"Subnet":"198.19.234.0/24"}]}}"#,
        );
        assert_eq!(
            super::subnets("appnet", &dual),
            Ok(cidrs(&["198.19.234.0/24", "fd00:198:19:234::/64"]))
        );
        // Asked by full ID: the same network.
        assert_eq!(
            super::subnets("5ccb97d8d741", &dual).map(|v| v.len()),
            Ok(2)
        );
        // The engine matched an ID prefix: not the network of that name.
        assert_eq!(super::subnets("5ccb", &dual), Ok(vec![]));
        // `host`-like: no IPAM config at all; an IP range without a subnet.
        let bare = network(r#"{"Name":"hostish","IPAM":{"Driver":"default","Config":[]}}"#);
        assert_eq!(super::subnets("hostish", &bare), Ok(vec![]));
        let none = network(r#"{"Name":"n","IPAM":{"Config":[{"IPRange":"10.1.0.0/24"}]}}"#);
        assert_eq!(super::subnets("n", &none), Ok(vec![]));
        // Host bits in a subnet: the range is not in doubt.
        let sloppy = network(r#"{"Name":"s","IPAM":{"Config":[{"Subnet":"198.19.7.9/24"}]}}"#);
        assert_eq!(super::subnets("s", &sloppy), Ok(cidrs(&["198.19.7.0/24"])));
        // A subnet that is no network: an error, the known subnets stay.
        let bad = network(r#"{"Name":"b","IPAM":{"Config":[{"Subnet":"198.19.7.0"}]}}"#);
        let e = super::subnets("b", &bad).expect_err("not a subnet");
        assert!(e.contains("\"198.19.7.0\""), "{e}");
    }

    #[test]
    fn events_that_move_addresses() {
        for a in [
            "start",
            "die",
            "connect",
            "disconnect",
            "rename",
            "create",
            "destroy",
        ] {
            assert!(super::relevant(a), "{a}");
        }
        for a in ["exec_start", "health_status: healthy", "attach", "top"] {
            assert!(!super::relevant(a), "{a}");
        }
    }

    #[tokio::test]
    async fn an_absent_engine_is_reported_not_fatal() {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("docker.sock");
        let engine = super::Engine::new(socket.to_str().expect("utf-8"));
        let r = engine
            .resolve_all(&crate::discovery::Names {
                containers: vec!["app1".to_owned(), "app2".to_owned()],
                networks: vec!["appnet".to_owned()],
            })
            .await;
        assert!(r.addresses.is_empty());
        assert!(r.networks.is_empty());
        assert!(
            matches!(r.unreachable, Some(super::DockerError::Connect { .. })),
            "{:?}",
            r.unreachable
        );
    }

    /// The Docker source's metrics say what the daemon's directory build
    /// told it: engine up or not, how many containers are unplaced.
    #[tokio::test]
    async fn the_docker_source_reports_in_its_metrics() {
        use crate::discovery::{Discovery, Outcome};
        use std::sync::atomic::Ordering;
        let metrics = std::sync::Arc::new(crate::state::metrics::Metrics::default());
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("docker.sock");
        let source = super::DockerDiscovery::new(socket.to_str().expect("utf-8"), metrics.clone());
        let policy = crate::policy::Policy::compile(
            crate::rules::parse("rules.json", include_str!("../../rules/example.json"))
                .expect("rules parse"),
        )
        .expect("rules compile");
        assert_eq!(source.names(&policy).containers, vec!["app2".to_owned()]);
        assert!(source.names(&policy).networks.is_empty());

        let names = source.names(&policy);
        let r = source.resolve(&names).await;
        assert!(r.addresses.is_empty());
        let e = r.unreachable.expect("no engine at that socket");
        assert!(
            e.to_string().contains("cannot reach the Docker engine"),
            "{e}"
        );

        metrics.docker_engine_up.store(1, Ordering::Relaxed);
        source.report(&Outcome {
            names: &names,
            unreachable: Some(&e),
            unplaced: &["app2"],
            unresolved_networks: &["appnet"],
            network_errors: &[],
        });
        assert!(!source.reachable());
        assert_eq!(metrics.docker_engine_up.load(Ordering::Relaxed), 0);
        assert_eq!(
            metrics.docker_unresolved_containers.load(Ordering::Relaxed),
            1
        );
        assert_eq!(
            metrics.docker_unresolved_networks.load(Ordering::Relaxed),
            1
        );

        source.report(&Outcome {
            names: &names,
            unreachable: None,
            unplaced: &[],
            unresolved_networks: &[],
            network_errors: &[],
        });
        assert!(source.reachable());
        assert_eq!(
            metrics.docker_unresolved_containers.load(Ordering::Relaxed),
            0
        );
        assert_eq!(
            metrics.docker_unresolved_networks.load(Ordering::Relaxed),
            0
        );

        // Rules without Docker containers leave the engine gauge alone.
        metrics.docker_engine_up.store(0, Ordering::Relaxed);
        source.report(&Outcome {
            names: &crate::discovery::Names::default(),
            unreachable: None,
            unplaced: &[],
            unresolved_networks: &[],
            network_errors: &[],
        });
        assert!(!source.reachable());
    }
}
