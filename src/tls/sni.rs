//! Which certificate a client gets: by the SNI name it asks for, among
//! the subjectAltName DNS names of a frontend's certificates — an exact
//! name first, then a wildcard `*.example.com` for one label under
//! `example.com` (RFC 6125: the wildcard covers exactly one label) — and
//! the first certificate when the client sends no SNI or a name none has.
//! The first certificate to claim a name keeps it.

use std::collections::HashMap;
use std::sync::Arc;

use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;

use super::files::Loaded;

/// The SNI table of one frontend; one lookup per handshake.
#[derive(Debug)]
pub struct SniResolver {
    keys: Vec<Arc<CertifiedKey>>,
    exact: HashMap<String, usize>,
    /// `*.example.com` under `example.com`.
    wildcard: HashMap<String, usize>,
}

impl SniResolver {
    pub fn new(certs: &[Loaded]) -> SniResolver {
        let mut exact = HashMap::new();
        let mut wildcard = HashMap::new();
        for (i, c) in certs.iter().enumerate() {
            for name in &c.names {
                match name.strip_prefix("*.") {
                    Some(parent) => wildcard.entry(parent.to_owned()).or_insert(i),
                    None => exact.entry(name.clone()).or_insert(i),
                };
            }
        }
        SniResolver {
            keys: certs.iter().map(|c| c.certified.clone()).collect(),
            exact,
            wildcard,
        }
    }

    /// The index of the certificate for `server_name` (0: the default).
    pub fn pick(&self, server_name: Option<&str>) -> usize {
        let Some(name) = server_name else { return 0 };
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        if let Some(&i) = self.exact.get(&name) {
            return i;
        }
        name.split_once('.')
            .and_then(|(_, parent)| self.wildcard.get(parent))
            .copied()
            .unwrap_or(0)
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.keys.get(self.pick(hello.server_name())).cloned()
    }
}
