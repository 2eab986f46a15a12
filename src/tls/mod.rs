//! TLS at the frontends: the certificates a frontend's `tls` names, read
//! from disk, checked, and compiled into a rustls server configuration.
//!
//! Why its own module, below `state`: the certificates are part of what a
//! (re)load publishes. They are read and checked with the rule file — a
//! reload whose certificate cannot be read, has no certificate, does not
//! match its key or has expired is refused like a rule-file error (naming
//! the rule file position and the certificate file) and the running rules
//! and certificates stay. The result, [`Certificates`], is published in the
//! [`Snapshot`](crate::state::snapshot::Snapshot) beside the rules, so one
//! atomic swap moves both; a connection already handshaken keeps its
//! session (rustls holds the configuration it started with).
//!
//! The handshake itself (timeout, log line, metrics) and the TLS stream
//! type are the proxy's ([`crate::proxy::tls`]).

mod files;
mod sni;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use tokio_rustls::rustls::{self, ServerConfig};

use crate::rules::{RuleError, RuleSet};
pub use files::Loaded;
pub use sni::SniResolver;

/// A TLS frontend's `Strict-Transport-Security` (RFC 6797).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hsts {
    pub max_age: u32,
    pub include_subdomains: bool,
}

impl std::fmt::Display for Hsts {
    /// The field value: `max-age=31536000; includeSubDomains`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "max-age={}", self.max_age)?;
        if self.include_subdomains {
            f.write_str("; includeSubDomains")?;
        }
        Ok(())
    }
}

/// The ALPN protocols a TLS frontend offers, in order of preference.
pub const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// The TLS frontends of one rule set, each with its checked certificates.
#[derive(Debug, Default)]
pub struct Certificates {
    frontends: Vec<FrontendTls>,
}

/// One TLS frontend: its acceptor and what was loaded for it.
#[derive(Debug)]
pub struct FrontendTls {
    pub listen: SocketAddr,
    /// The frontend's `name`.
    pub name: Arc<str>,
    /// The rustls configuration handshakes start with.
    pub config: Arc<ServerConfig>,
    /// In rule-file order (the first is the default).
    pub certificates: Vec<Loaded>,
    /// The plain-HTTP listener redirecting to this frontend (`redirect_http`).
    pub redirect_http: Option<SocketAddr>,
    /// `Strict-Transport-Security` for its responses.
    pub hsts: Option<Hsts>,
    resolver: Arc<SniResolver>,
}

impl FrontendTls {
    /// Which certificate (index into `certificates`) a client asking for
    /// `server_name` (`None`: no SNI) is given.
    pub fn certificate_for(&self, server_name: Option<&str>) -> usize {
        self.resolver.pick(server_name)
    }
}

impl Certificates {
    /// The TLS frontend listening on `listen`, if it is one.
    pub fn at(&self, listen: SocketAddr) -> Option<&FrontendTls> {
        self.frontends.iter().find(|f| f.listen == listen)
    }

    /// The TLS frontend whose `redirect_http` listens on `listen`.
    pub fn at_redirect(&self, listen: SocketAddr) -> Option<&FrontendTls> {
        self.frontends
            .iter()
            .find(|f| f.redirect_http == Some(listen))
    }

    /// The addresses of every `redirect_http` listener.
    pub fn redirect_addrs(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        self.frontends.iter().filter_map(|f| f.redirect_http)
    }

    pub fn frontends(&self) -> &[FrontendTls] {
        &self.frontends
    }

    /// Every certificate and key file read (to watch them for changes).
    pub fn files(&self) -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = self
            .frontends
            .iter()
            .flat_map(|f| f.certificates.iter())
            .flat_map(|c| [c.cert.clone(), c.key.clone()])
            .collect();
        out.sort();
        out.dedup();
        out
    }
}

/// Reads and checks the certificates of every TLS frontend of `set`, as of
/// `now`. Relative paths are taken from `base` (the rule file's
/// directory). The error names the rule-file position of the offending
/// `cert` or `key` and the file.
pub fn load(set: &RuleSet, base: &Path, now: SystemTime) -> Result<Certificates, RuleError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut frontends = Vec::new();
    for (i, f) in set.rules.frontends.iter().enumerate() {
        let Some(tls) = &f.tls else { continue };
        let at = |path: String, message: String| RuleError::At {
            file: set.file.to_string(),
            pos: set.locations.of(&path),
            message,
        };
        let listen: SocketAddr = f.listen.parse().map_err(|_| {
            at(
                format!("frontends[{i}].listen"),
                format!("invalid listen address {:?}", f.listen),
            )
        })?;
        let mut certificates = Vec::with_capacity(tls.certificates.len());
        for (j, c) in tls.certificates.iter().enumerate() {
            let loaded = files::load(&provider, base, c, now).map_err(|e| {
                at(
                    format!("frontends[{i}].tls.certificates[{j}].{}", e.field()),
                    e.to_string(),
                )
            })?;
            certificates.push(loaded);
        }
        let resolver = Arc::new(SniResolver::new(&certificates));
        let config = server_config(&provider, resolver.clone()).map_err(|e| {
            at(
                format!("frontends[{i}].tls"),
                format!("cannot build the TLS configuration: {e}"),
            )
        })?;
        // Checked by validation; an unparsable one cannot get here.
        let redirect_http = tls.redirect_http.as_deref().and_then(|r| r.parse().ok());
        frontends.push(FrontendTls {
            listen,
            redirect_http,
            hsts: tls.hsts.map(|h| Hsts {
                max_age: h.max_age_s,
                include_subdomains: h.include_subdomains,
            }),
            name: f.name.as_str().into(),
            config: Arc::new(config),
            certificates,
            resolver,
        });
    }
    Ok(Certificates { frontends })
}

/// TLS 1.3 and 1.2 only, rustls' default cipher suites, no client
/// certificates, ALPN `h2` then `http/1.1`, the certificate by SNI.
fn server_config(
    provider: &Arc<rustls::crypto::CryptoProvider>,
    resolver: Arc<SniResolver>,
) -> Result<ServerConfig, rustls::Error> {
    let mut config = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

/// The directory relative certificate paths of the rule file at
/// `rule_file` are taken from (empty: the working directory).
pub fn base_of(rule_file: &Path) -> PathBuf {
    rule_file.parent().map(Path::to_owned).unwrap_or_default()
}
