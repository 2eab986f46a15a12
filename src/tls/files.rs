//! One certificate of a frontend: its PEM files read and checked — the
//! chain parses, the key is one rustls can sign with and matches the
//! leaf, the leaf has not expired — so that a bad file is refused at load,
//! never discovered by a client's failed handshake.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use tokio_rustls::rustls::crypto::CryptoProvider;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::sign::CertifiedKey;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::rules::model::CertificateFiles;

/// A checked certificate, ready to serve.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The certificate (chain) file, as resolved.
    pub cert: PathBuf,
    /// The key file, as resolved.
    pub key: PathBuf,
    /// The DNS names of the leaf's subjectAltName, lower-case
    /// (`*.example.com` for a wildcard).
    pub names: Vec<String>,
    /// The leaf's subject, for logs.
    pub subject: String,
    /// The leaf's notAfter, in Unix seconds.
    pub not_after: i64,
    pub certified: Arc<CertifiedKey>,
}

/// Why a certificate is refused; [`field`](Self::field) says whether the
/// `cert` or the `key` entry is at fault.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("cannot read {what} file {path}: {reason}")]
    Read {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error(
        "no certificate in {0} (expected PEM \"BEGIN CERTIFICATE\" blocks, the server's first)"
    )]
    NoCertificate(PathBuf),
    #[error("certificate {path} (number {index} in the file) cannot be parsed: {reason}")]
    Parse {
        path: PathBuf,
        index: usize,
        reason: String,
    },
    #[error("certificate {path} expired at {not_after} (notAfter, Unix time {unix})")]
    Expired {
        path: PathBuf,
        not_after: String,
        unix: i64,
    },
    #[error("no private key in {0} (expected a PEM PKCS#8, PKCS#1 or SEC1 key)")]
    NoKey(PathBuf),
    #[error("key {path} cannot be used: {reason}")]
    BadKey { path: PathBuf, reason: String },
    #[error("key {key} does not match certificate {cert}")]
    Mismatch { key: PathBuf, cert: PathBuf },
}

impl CertError {
    /// The rule-file field (`cert` or `key`) the error is about.
    pub fn field(&self) -> &'static str {
        match self {
            CertError::Read { what, .. } => what,
            CertError::NoKey(_) | CertError::BadKey { .. } | CertError::Mismatch { .. } => "key",
            _ => "cert",
        }
    }
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, CertError> {
    std::fs::read(path).map_err(|e| CertError::Read {
        what,
        path: path.to_owned(),
        reason: e.to_string(),
    })
}

/// Reads and checks one `{cert, key}` pair, paths relative to `base`.
pub fn load(
    provider: &CryptoProvider,
    base: &Path,
    files: &CertificateFiles,
    now: SystemTime,
) -> Result<Loaded, CertError> {
    let cert = base.join(&files.cert);
    let key = base.join(&files.key);
    let pem = read("cert", &cert)?;
    let chain = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CertError::Parse {
            path: cert.clone(),
            index: 1,
            reason: e.to_string(),
        })?;
    let Some(leaf) = chain.first() else {
        return Err(CertError::NoCertificate(cert));
    };
    // Every certificate of the chain must parse; the leaf says the names
    // and the expiry.
    for (i, c) in chain.iter().enumerate().skip(1) {
        X509Certificate::from_der(c).map_err(|e| CertError::Parse {
            path: cert.clone(),
            index: i + 1,
            reason: e.to_string(),
        })?;
    }
    let (_, parsed) = X509Certificate::from_der(leaf).map_err(|e| CertError::Parse {
        path: cert.clone(),
        index: 1,
        reason: e.to_string(),
    })?;
    let not_after = parsed.validity().not_after;
    let unix_now = now
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    if not_after.timestamp() <= unix_now {
        return Err(CertError::Expired {
            path: cert,
            not_after: not_after.to_string(),
            unix: not_after.timestamp(),
        });
    }
    let names = dns_names(&parsed);
    let subject = parsed.subject().to_string();
    let not_after = not_after.timestamp();

    let key_pem = read("key", &key)?;
    let private = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| match e {
        tokio_rustls::rustls::pki_types::pem::Error::NoItemsFound => CertError::NoKey(key.clone()),
        e => CertError::BadKey {
            path: key.clone(),
            reason: e.to_string(),
        },
    })?;
    let signer = provider
        .key_provider
        .load_private_key(private)
        .map_err(|e| CertError::BadKey {
            path: key.clone(),
            reason: e.to_string(),
        })?;
    let certified = CertifiedKey::new(chain, signer);
    // An unknown answer (a key type that cannot say its public key) is a
    // refusal too: serving a pair nobody checked is failing open.
    if certified.keys_match().is_err() {
        return Err(CertError::Mismatch { key, cert });
    }
    Ok(Loaded {
        cert,
        key,
        names,
        subject,
        not_after,
        certified: Arc::new(certified),
    })
}

/// The leaf's subjectAltName DNS names, lower-case.
fn dns_names(cert: &X509Certificate<'_>) -> Vec<String> {
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::DNSName(d) => Some(d.trim_end_matches('.').to_ascii_lowercase()),
            _ => None,
        })
        .collect()
}
