//! Resolving `{"docker": NAME}` containers through the Docker Engine API on
//! the local socket.
//!
//! One blocking `GET /containers/NAME/json` per container over the Unix
//! socket; the daemon repeats it periodically so restarts and address
//! changes are followed. A container that is stopped or unknown resolves to
//! no address, which means its rules have no elements: nothing is opened
//! for an address Portcullis cannot attribute.

use std::io::{Read, Write};
use std::net::IpAddr;
use std::os::unix::net::UnixStream;
use std::time::Duration;

pub const DEFAULT_SOCKET: &str = "/var/run/docker.sock";

#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    #[error("cannot reach the Docker engine at {socket}: {source} (is dockerd running?)")]
    Connect {
        socket: String,
        source: std::io::Error,
    },
    #[error("Docker API request for {name} failed: {reason}")]
    Api { name: String, reason: String },
}

/// Current addresses of a Docker container; empty if it is not running or
/// does not exist.
pub fn resolve(socket: &str, name: &str) -> Result<Vec<IpAddr>, DockerError> {
    let mut s = UnixStream::connect(socket).map_err(|source| DockerError::Connect {
        socket: socket.to_owned(),
        source,
    })?;
    let api = |reason: String| DockerError::Api {
        name: name.to_owned(),
        reason,
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = s.set_write_timeout(Some(Duration::from_secs(5)));
    // Names are validated by the rule file loader; still refuse anything
    // that could break the request line.
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
    {
        return Err(api("invalid container name".into()));
    }
    write!(
        s,
        "GET /containers/{name}/json HTTP/1.0\r\nHost: docker\r\n\r\n"
    )
    .map_err(|e| api(e.to_string()))?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).map_err(|e| api(e.to_string()))?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| api("malformed response".into()))?;
    let status_line = String::from_utf8_lossy(&raw[..split]);
    let status = status_line.split_whitespace().nth(1).unwrap_or("");
    if status == "404" {
        return Ok(Vec::new());
    }
    if status != "200" {
        return Err(api(format!("HTTP status {status}")));
    }
    let v: serde_json::Value =
        serde_json::from_slice(&raw[split + 4..]).map_err(|e| api(e.to_string()))?;
    Ok(addresses(&v))
}

/// Addresses of a running container from its inspect JSON.
fn addresses(v: &serde_json::Value) -> Vec<IpAddr> {
    if v.pointer("/State/Running").and_then(|r| r.as_bool()) != Some(true) {
        return Vec::new();
    }
    let mut out = Vec::new();
    if let Some(nets) = v
        .pointer("/NetworkSettings/Networks")
        .and_then(|n| n.as_object())
    {
        for net in nets.values() {
            for key in ["IPAddress", "GlobalIPv6Address"] {
                if let Some(ip) = net
                    .get(key)
                    .and_then(|a| a.as_str())
                    .and_then(|a| a.parse().ok())
                {
                    if !out.contains(&ip) {
                        out.push(ip);
                    }
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn running_container_addresses() {
        let v: serde_json::Value = serde_json::from_str(
            r#"{"State":{"Running":true},"NetworkSettings":{"Networks":{"n1":{"IPAddress":"198.19.5.3","GlobalIPv6Address":""}}}}"#,
        )
        .unwrap();
        assert_eq!(
            super::addresses(&v),
            vec!["198.19.5.3".parse::<std::net::IpAddr>().unwrap()]
        );
        let stopped: serde_json::Value = serde_json::from_str(r#"{"State":{"Running":false},"NetworkSettings":{"Networks":{"n1":{"IPAddress":"198.19.5.3"}}}}"#).unwrap();
        assert!(super::addresses(&stopped).is_empty());
    }
}
