//! Whole-file validation: every cross-reference and value range of the
//! contract, checked before anything is applied. Returns the JSON path of
//! the offending value and one sentence; the caller turns the path into
//! `file:line:col`.

use super::model::{Balance, GuardNetwork, HeaderCond, HeadersWithUnderscores, Limits, RuleFile};
use super::RuleSet;
use crate::policy::guard::{Cidr, CidrError};
use crate::wire::normalize::normalize_path;
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};

type Invalid = (String, String);

fn bad<T>(path: impl Into<String>, msg: impl Into<String>) -> Result<T, Invalid> {
    Err((path.into(), msg.into()))
}

/// `[a-z0-9][a-z0-9_.-]{0,62}`
pub fn valid_container_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter().all(|&c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'_' | b'.' | b'-')
        })
}

/// An HTTP token (RFC 9110 `tchar`), as used for methods and header names.
pub fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes().all(|c| {
            c.is_ascii_alphanumeric()
                || matches!(
                    c,
                    b'!' | b'#'
                        | b'$'
                        | b'%'
                        | b'&'
                        | b'\''
                        | b'*'
                        | b'+'
                        | b'-'
                        | b'.'
                        | b'^'
                        | b'_'
                        | b'`'
                        | b'|'
                        | b'~'
                )
        })
}

/// Splits `"container:port"`.
pub fn parse_target(s: &str) -> Option<(&str, u16)> {
    let (name, port) = s.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    (port != 0).then_some((name, port))
}

pub fn validate(set: &RuleSet) -> Result<(), Invalid> {
    let r = &set.rules;
    if r.version != 1 {
        return bad(
            "version",
            format!("unsupported version {}: expected 1", r.version),
        );
    }
    containers(r)?;
    access(r)?;
    pools(r)?;
    frontends(r)?;
    cache(r)?;
    guard(r)?;
    if let Some(per_second) = r.log_drops.as_ref().and_then(|l| l.per_second) {
        if !(1..=10_000).contains(&per_second) {
            return bad(
                "log_drops.per_second",
                format!("{per_second} is out of range: 1 to 10000 packets per second"),
            );
        }
    }
    if let Some(l) = &r.limits {
        limits("limits", l)?;
    }
    if let Some(p) = &r.proxy {
        if let Some(port) = p.listen_port {
            if !(1..=65535).contains(&port) {
                return bad(
                    "proxy.listen_port",
                    format!("port {port} out of range: expected 1-65535"),
                );
            }
        }
        if let Some(a) = &p.admin {
            if a.parse::<SocketAddr>().is_err() {
                return bad(
                    "proxy.admin",
                    format!("invalid admin address {a:?}: expected \"IP:PORT\""),
                );
            }
        }
        if let Some(mode) = p.headers_with_underscores {
            underscore_names(r, mode)?;
        }
    }
    Ok(())
}

/// Under `headers_with_underscores` "drop" or "reject" no request field
/// with `_` reaches the rules: a rule naming one could never hold.
fn underscore_names(r: &RuleFile, mode: HeadersWithUnderscores) -> Result<(), Invalid> {
    let word = match mode {
        HeadersWithUnderscores::RejectLookalikes => return Ok(()),
        HeadersWithUnderscores::Drop => "drop",
        HeadersWithUnderscores::Reject => "reject",
    };
    let why = |name: &str| {
        format!(
            "header {name:?} contains '_', but proxy.headers_with_underscores is \"{word}\": no request can carry it"
        )
    };
    for (i, e) in r.access.iter().enumerate() {
        for (j, m) in e.http.iter().flatten().enumerate() {
            for name in m.headers.iter().flatten().map(|(n, _)| n) {
                if name.contains('_') {
                    return bad(format!("access[{i}].http[{j}].headers.{name}"), why(name));
                }
            }
        }
    }
    for (name, p) in &r.pools {
        if let Some(h) = p
            .hash_key
            .as_deref()
            .and_then(|k| k.strip_prefix("header:"))
        {
            if h.contains('_') {
                return bad(format!("pools.{name}.hash_key"), why(h));
            }
        }
    }
    Ok(())
}

/// `guard.networks`: each a CIDR or a Docker network name. CIDRs must not
/// overlap each other (two spellings of one range are a mistake the author
/// should see); a name must be one Docker could have, listed once, and not
/// `host` or `none` (which have no addresses of their own). Whether a named
/// network exists, and what its subnets are, is the daemon's to find out:
/// it may not exist yet when the file is checked.
fn guard(r: &RuleFile) -> Result<(), Invalid> {
    let Some(g) = &r.guard else { return Ok(()) };
    if g.networks.is_empty() {
        return bad(
            "guard.networks",
            "no networks: list the CIDRs or Docker networks to guard, or remove \"guard\"",
        );
    }
    let mut seen: Vec<(usize, Cidr)> = Vec::with_capacity(g.networks.len());
    let mut names: Vec<(usize, &str)> = Vec::new();
    for (i, n) in g.networks.iter().enumerate() {
        let path = format!("guard.networks[{i}]");
        let s = match n {
            GuardNetwork::Cidr(s) => s,
            GuardNetwork::Docker(name) => {
                docker_network_name(&format!("{path}.docker_network"), name, &names)?;
                names.push((i, name));
                continue;
            }
        };
        let net = match Cidr::parse(s) {
            Ok(n) => n,
            Err(e @ CidrError::Syntax) if valid_docker_network_name(s) && s.parse::<IpAddr>().is_err() => {
                return bad(
                    path,
                    format!("invalid guarded network {s:?}: {e}; to guard the Docker network of that name write {{\"docker_network\": {s:?}}}"),
                )
            }
            Err(e) => return bad(path, format!("invalid guarded network {s:?}: {e}")),
        };
        if let Some((j, other)) = seen.iter().find(|(_, o)| o.overlaps(&net)) {
            return bad(
                path,
                format!("guarded network {net} overlaps guard.networks[{j}] ({other}): list each range once"),
            );
        }
        seen.push((i, net));
    }
    Ok(())
}

/// What Docker accepts as a network name (and all that may go into the
/// Engine API's `/networks/NAME` path).
fn valid_docker_network_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

/// A `{"docker_network": NAME}` entry: a possible name, one with addresses
/// of its own, not listed before.
fn docker_network_name(path: &str, name: &str, earlier: &[(usize, &str)]) -> Result<(), Invalid> {
    if !valid_docker_network_name(name) {
        return bad(
            path,
            format!(
                "invalid Docker network name {name:?}: expected [A-Za-z0-9][A-Za-z0-9_.-]{{0,127}}"
            ),
        );
    }
    if matches!(name, "host" | "none") {
        return bad(
            path,
            format!("Docker network {name:?} has no addresses of its own: there is nothing in it to guard"),
        );
    }
    if let Some((j, _)) = earlier.iter().find(|(_, n)| *n == name) {
        return bad(
            path,
            format!(
                "Docker network {name:?} is already guard.networks[{j}]: list each network once"
            ),
        );
    }
    Ok(())
}

fn containers(r: &RuleFile) -> Result<(), Invalid> {
    let mut owner: HashMap<IpAddr, &str> = HashMap::new();
    for (name, spec) in &r.containers {
        let path = format!("containers.{name}");
        if !valid_container_name(name) {
            return bad(
                path,
                format!("invalid container name {name:?}: expected [a-z0-9][a-z0-9_.-]{{0,62}}"),
            );
        }
        match (&spec.address, &spec.docker) {
            (Some(_), Some(_)) => {
                return bad(
                    path,
                    format!("container {name} has both address and docker: give exactly one"),
                )
            }
            (None, None) => {
                return bad(
                    path,
                    format!("container {name} needs \"address\" or \"docker\""),
                )
            }
            (None, Some(d)) if d.is_empty() => {
                return bad(format!("{path}.docker"), "empty docker name")
            }
            _ => {}
        }
        if let Some(addrs) = &spec.address {
            if addrs.0.is_empty() {
                return bad(
                    format!("{path}.address"),
                    format!("container {name} has an empty address list"),
                );
            }
            for a in &addrs.0 {
                let Ok(ip) = a.parse::<IpAddr>() else {
                    return bad(
                        format!("{path}.address"),
                        format!("invalid IP address {a:?} for container {name}"),
                    );
                };
                if ip.is_unspecified() || ip.is_multicast() || ip.is_loopback() {
                    return bad(
                        format!("{path}.address"),
                        format!(
                            "address {ip} of container {name} is not a unicast container address"
                        ),
                    );
                }
                if let Some(prev) = owner.insert(ip, name) {
                    if prev != name {
                        return bad(
                            format!("{path}.address"),
                            format!("address {ip} is given to both {prev} and {name}"),
                        );
                    }
                    return bad(
                        format!("{path}.address"),
                        format!("address {ip} is listed twice for {name}"),
                    );
                }
            }
        }
    }
    Ok(())
}

fn known(r: &RuleFile, path: &str, name: &str) -> Result<(), Invalid> {
    if r.containers.contains_key(name) {
        Ok(())
    } else {
        bad(
            path,
            format!("unknown container {name:?}: it is not listed under \"containers\""),
        )
    }
}

fn access(r: &RuleFile) -> Result<(), Invalid> {
    let mut seen: HashMap<(String, String, super::model::Protocol, u16), usize> = HashMap::new();
    for (i, e) in r.access.iter().enumerate() {
        let path = format!("access[{i}]");
        if e.from.0.is_empty() {
            return bad(format!("{path}.from"), "\"from\" lists no container");
        }
        for f in &e.from.0 {
            known(r, &format!("{path}.from"), f)?;
            if *f == e.to {
                return bad(format!("{path}.from"), format!("container {f} is both from and to: traffic inside one container never crosses the host"));
            }
        }
        known(r, &format!("{path}.to"), &e.to)?;
        if e.ports.is_empty() {
            return bad(
                format!("{path}.ports"),
                "\"ports\" is empty: list at least one port",
            );
        }
        for (j, &p) in e.ports.iter().enumerate() {
            let pp = format!("{path}.ports[{j}]");
            let Ok(port) = u16::try_from(p) else {
                return bad(pp, format!("port {p} out of range: expected 1-65535"));
            };
            if port == 0 {
                return bad(pp, "port 0 out of range: expected 1-65535");
            }
            for f in &e.from.0 {
                if let Some(prev) = seen.insert((f.clone(), e.to.clone(), e.protocol, port), i) {
                    return bad(pp, format!("{f} -> {}:{port} is already covered by access[{prev}]: entries may not overlap", e.to));
                }
            }
        }
        if e.upstream_protocol.is_some() && e.http.is_none() {
            return bad(
                format!("{path}.upstream_protocol"),
                "\"upstream_protocol\" applies to HTTP entries only (add \"http\" matchers, or remove it)",
            );
        }
        if let Some(http) = &e.http {
            if e.protocol != super::model::Protocol::Tcp {
                return bad(
                    format!("{path}.http"),
                    "\"http\" requires \"protocol\": \"tcp\"",
                );
            }
            if http.is_empty() {
                return bad(format!("{path}.http"), "\"http\" is empty, which would refuse every request: omit it to allow at L4, or list matchers");
            }
            for (j, m) in http.iter().enumerate() {
                matcher(&format!("{path}.http[{j}]"), m)?;
            }
        }
        if let Some(l) = &e.limits {
            limits(&format!("{path}.limits"), l)?;
        }
    }
    Ok(())
}

fn normal_path(path: &str, field: &str, p: &str) -> Result<(), Invalid> {
    match normalize_path(p) {
        Ok(n) if n == p => Ok(()),
        Ok(n) => bad(
            path,
            format!("{field} {p:?} is not normalised: write {n:?}"),
        ),
        Err(e) => bad(path, format!("invalid {field} {p:?}: {e}")),
    }
}

fn matcher(path: &str, m: &super::model::HttpMatcher) -> Result<(), Invalid> {
    if let Some(methods) = &m.methods {
        if methods.is_empty() {
            return bad(
                format!("{path}.methods"),
                "\"methods\" is empty: omit it to allow any method",
            );
        }
        for (k, meth) in methods.iter().enumerate() {
            if !is_token(meth) || meth.bytes().any(|c| c.is_ascii_lowercase()) {
                return bad(format!("{path}.methods[{k}]"), format!("invalid method {meth:?}: expected an upper-case HTTP method such as \"GET\""));
            }
        }
    }
    if let Some(p) = &m.path_prefix {
        normal_path(&format!("{path}.path_prefix"), "path_prefix", p)?;
    }
    if let Some(p) = &m.path {
        normal_path(&format!("{path}.path"), "path", p)?;
    }
    if let Some(re) = &m.path_regex {
        if let Err(e) = regex::Regex::new(re) {
            return bad(
                format!("{path}.path_regex"),
                format!("path_regex does not compile: {}", one_line(&e.to_string())),
            );
        }
    }
    if let Some(h) = &m.headers {
        let mut names = HashSet::new();
        for (name, cond) in h {
            let hp = format!("{path}.headers.{name}");
            if !is_token(name) {
                return bad(hp, format!("invalid header name {name:?}"));
            }
            if !names.insert(name.to_ascii_lowercase()) {
                return bad(
                    hp,
                    format!("header {name:?} is listed twice (names are case-insensitive)"),
                );
            }
            if let HeaderCond::Regex(re) = cond {
                if let Err(e) = regex::Regex::new(re) {
                    return bad(
                        hp,
                        format!(
                            "header regex does not compile: {}",
                            one_line(&e.to_string())
                        ),
                    );
                }
            }
        }
    }
    Ok(())
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn member_target<'a>(r: &'a RuleFile, path: &str, t: &'a str) -> Result<(&'a str, u16), Invalid> {
    let Some((name, port)) = parse_target(t) else {
        return bad(
            path,
            format!("invalid target {t:?}: expected \"container:port\" with port 1-65535"),
        );
    };
    known(r, path, name)?;
    Ok((name, port))
}

fn pools(r: &RuleFile) -> Result<(), Invalid> {
    for (name, p) in &r.pools {
        let path = format!("pools.{name}");
        if !valid_container_name(name) {
            return bad(
                path,
                format!("invalid pool name {name:?}: expected [a-z0-9][a-z0-9_.-]{{0,62}}"),
            );
        }
        if p.members.is_empty() {
            return bad(
                format!("{path}.members"),
                format!("pool {name} has no members"),
            );
        }
        let mut seen = HashSet::new();
        for (i, m) in p.members.iter().enumerate() {
            let mp = format!("{path}.members[{i}]");
            let t = member_target(r, &mp, &m.target)?;
            if !seen.insert(t) {
                return bad(
                    mp,
                    format!("member {} is listed twice in pool {name}", m.target),
                );
            }
            if m.weight == 0 || m.weight > 1000 {
                return bad(
                    mp,
                    format!("weight {} out of range: expected 1-1000", m.weight),
                );
            }
        }
        match (p.balance, &p.hash_key) {
            (Balance::Hash, None) => {
                return bad(
                    format!("{path}.balance"),
                    "\"balance\": \"hash\" needs \"hash_key\": \"client_ip\" or \"header:NAME\"",
                )
            }
            (Balance::Hash, Some(k)) => {
                let ok = k == "client_ip" || k.strip_prefix("header:").is_some_and(is_token);
                if !ok {
                    return bad(
                        format!("{path}.hash_key"),
                        format!(
                            "invalid hash_key {k:?}: expected \"client_ip\" or \"header:NAME\""
                        ),
                    );
                }
            }
            (_, Some(_)) => {
                return bad(
                    format!("{path}.hash_key"),
                    "\"hash_key\" is only meaningful with \"balance\": \"hash\"",
                )
            }
            _ => {}
        }
        if let Some(h) = &p.health {
            if let Some(hp) = &h.path {
                normal_path(&format!("{path}.health.path"), "health path", hp)?;
            }
            for (field, v) in [("interval_ms", h.interval_ms), ("timeout_ms", h.timeout_ms)] {
                if v == Some(0) {
                    return bad(
                        format!("{path}.health.{field}"),
                        format!("{field} must be greater than 0"),
                    );
                }
            }
            for (field, v) in [
                ("unhealthy_after", h.unhealthy_after),
                ("healthy_after", h.healthy_after),
            ] {
                if v == Some(0) {
                    return bad(
                        format!("{path}.health.{field}"),
                        format!("{field} must be at least 1"),
                    );
                }
            }
        }
        for (field, v) in [
            ("connect_timeout_ms", p.connect_timeout_ms),
            ("timeout_ms", p.timeout_ms),
        ] {
            if v == Some(0) {
                return bad(
                    format!("{path}.{field}"),
                    format!("{field} must be greater than 0"),
                );
            }
        }
        if p.retries.is_some_and(|n| n > 10) {
            return bad(
                format!("{path}.retries"),
                "retries out of range: expected 0-10",
            );
        }
    }
    Ok(())
}

/// A frontend host pattern: a DNS name, optionally `*.` + name, no port.
fn valid_host(h: &str) -> bool {
    let name = h.strip_prefix("*.").unwrap_or(h);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-')
        })
}

fn frontends(r: &RuleFile) -> Result<(), Invalid> {
    let mut names = HashSet::new();
    let mut listens = HashSet::new();
    let mut redirects = HashSet::new();
    for (i, f) in r.frontends.iter().enumerate() {
        let path = format!("frontends[{i}]");
        if !valid_container_name(&f.name) {
            return bad(
                format!("{path}.name"),
                format!("invalid frontend name {:?}", f.name),
            );
        }
        if !names.insert(f.name.as_str()) {
            return bad(
                format!("{path}.name"),
                format!("frontend name {:?} is used twice", f.name),
            );
        }
        let Ok(addr) = f.listen.parse::<SocketAddr>() else {
            return bad(
                format!("{path}.listen"),
                format!(
                    "invalid listen address {:?}: expected \"IP:PORT\"",
                    f.listen
                ),
            );
        };
        if addr.port() == 0 {
            return bad(format!("{path}.listen"), "listen port 0: expected 1-65535");
        }
        if !listens.insert(addr) {
            return bad(
                format!("{path}.listen"),
                format!("listen address {addr} is used by two frontends"),
            );
        }
        if f.routes.is_empty() && f.default_pool.is_none() {
            return bad(
                format!("{path}.routes"),
                format!("frontend {} has no routes and no default_pool", f.name),
            );
        }
        if let Some(p) = &f.default_pool {
            if !r.pools.contains_key(p) {
                return bad(
                    format!("{path}.default_pool"),
                    format!("unknown pool {p:?}"),
                );
            }
        }
        let mut seen = HashMap::new();
        for (j, rt) in f.routes.iter().enumerate() {
            let rp = format!("{path}.routes[{j}]");
            if rt.host.is_none() && rt.path_prefix.is_none() {
                return bad(rp, "a route needs \"host\" and/or \"path_prefix\" (use default_pool for a catch-all)");
            }
            if let Some(h) = &rt.host {
                if !valid_host(h) {
                    return bad(format!("{rp}.host"), format!("invalid host {h:?}: expected a DNS name or \"*.\" + name, without port"));
                }
            }
            if let Some(p) = &rt.path_prefix {
                normal_path(&format!("{rp}.path_prefix"), "path_prefix", p)?;
            }
            if !r.pools.contains_key(&rt.pool) {
                return bad(format!("{rp}.pool"), format!("unknown pool {:?}", rt.pool));
            }
            let key = (
                rt.host.as_ref().map(|h| h.to_ascii_lowercase()),
                rt.path_prefix.clone(),
            );
            if let Some(prev) = seen.insert(key, j) {
                return bad(
                    rp,
                    format!("route duplicates routes[{prev}] (same host and path_prefix)"),
                );
            }
        }
        if let Some(l) = &f.limits {
            limits(&format!("{path}.limits"), l)?;
        }
        if let Some(t) = &f.tls {
            if let Some(redirect) = &t.redirect_http {
                let rp = format!("{path}.tls.redirect_http");
                let Ok(raddr) = redirect.parse::<SocketAddr>() else {
                    return bad(
                        rp,
                        format!("invalid listen address {redirect:?}: expected \"IP:PORT\""),
                    );
                };
                if raddr.port() == 0 {
                    return bad(rp, "listen port 0: expected 1-65535");
                }
                if !redirects.insert(raddr)
                    || r.frontends.iter().any(|o| o.listen.parse() == Ok(raddr))
                {
                    return bad(
                        rp,
                        format!("listen address {raddr} is used twice (by frontends or their redirect_http)"),
                    );
                }
            }
            if t.certificates.is_empty() {
                return bad(
                    format!("{path}.tls.certificates"),
                    "a TLS frontend needs at least one certificate",
                );
            }
            for (j, c) in t.certificates.iter().enumerate() {
                for (field, v) in [("cert", &c.cert), ("key", &c.key)] {
                    if v.trim().is_empty() {
                        return bad(
                            format!("{path}.tls.certificates[{j}].{field}"),
                            format!("empty {field} path: expected a PEM file"),
                        );
                    }
                }
            }
        }
    }
    Ok(())
}

fn cache(r: &RuleFile) -> Result<(), Invalid> {
    for (target, c) in &r.cache {
        let path = format!("cache.{target}");
        member_target(r, &path, target)?;
        if c.max_bytes == 0 {
            return bad(
                format!("{path}.max_bytes"),
                "max_bytes must be greater than 0",
            );
        }
    }
    Ok(())
}

/// Largest `request_buffer_bytes`: it is held in memory per request.
const MAX_REQUEST_BUFFER: u64 = 16 << 20;

fn limits(path: &str, l: &Limits) -> Result<(), Invalid> {
    let fields = [
        ("max_header_bytes", l.max_header_bytes),
        ("max_body_bytes", l.max_body_bytes),
        ("header_timeout_ms", l.header_timeout_ms),
        ("idle_timeout_ms", l.idle_timeout_ms),
        ("max_connections_per_source", l.max_connections_per_source),
        ("requests_per_second", l.requests_per_second),
        ("burst", l.burst),
        ("request_buffer_bytes", l.request_buffer_bytes),
        ("body_timeout_ms", l.body_timeout_ms),
        ("send_timeout_ms", l.send_timeout_ms),
    ];
    for (name, v) in fields {
        if v == Some(0) {
            return bad(
                format!("{path}.{name}"),
                format!("{name} must be greater than 0"),
            );
        }
    }
    if let Some(h) = l.max_header_bytes {
        if !(1024..=1 << 20).contains(&h) {
            return bad(
                format!("{path}.max_header_bytes"),
                "max_header_bytes out of range: expected 1024-1048576",
            );
        }
    }
    if let Some(b) = l.request_buffer_bytes {
        if b > MAX_REQUEST_BUFFER {
            return bad(
                format!("{path}.request_buffer_bytes"),
                format!("request_buffer_bytes out of range: expected 1-{MAX_REQUEST_BUFFER}"),
            );
        }
    }
    if l.burst.is_some() && l.requests_per_second.is_none() {
        return bad(
            format!("{path}.burst"),
            "\"burst\" needs \"requests_per_second\"",
        );
    }
    Ok(())
}
