//! One probe → one [`Decision`]: the function behind `portcullis explain`
//! for access flows, shared with `portcullis diff`'s property test and the
//! demo so that what they claim is checked against exactly what `explain`
//! says. A request on a proxied flow is decided by the proxy's own
//! [`Policy::decide_access`]; the flow itself by [`Policy::decide_flow`],
//! the decision nftables is compiled from.

use super::access::{Access, FlowOwner, HttpRequest};
use super::guard::NamedSubnets;
use super::matcher::RequestView;
use super::{Decision, Policy, RequestCheck, L4};
use std::net::IpAddr;

/// An HTTP request to probe a flow with: the request the proxy decides on.
pub type RequestProbe<'a> = HttpRequest<'a>;

/// A probe that names something the rule file does not have.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProbeError {
    #[error("unknown container {0:?} (and not an IP address)")]
    UnknownContainer(String),
}

/// One end of a probe: a container, or an address that belongs to none.
enum Endpoint {
    Container(super::ContainerId),
    Unplaced(IpAddr),
}

impl Policy {
    /// A container name, or an address: a fixed container address names
    /// its container; any other address is unplaced (explain does not ask
    /// Docker for container addresses, so a Docker container's current
    /// address is unplaced here; only guarded networks' subnets are asked).
    fn endpoint(&self, s: &str) -> Result<Endpoint, ProbeError> {
        if let Some(id) = self.container_id(s) {
            return Ok(Endpoint::Container(id));
        }
        let ip: IpAddr = s
            .parse()
            .map_err(|_| ProbeError::UnknownContainer(s.to_owned()))?;
        Ok(match self.container_with_address(ip) {
            Some(id) => Endpoint::Container(id),
            None => Endpoint::Unplaced(ip.to_canonical()),
        })
    }

    /// What happens to a connection `from -> to:port/proto` and, when the
    /// flow is checked by the proxy and `request` is given, to that request.
    /// Either end may be an IP address: one that belongs to no container
    /// is decided by the guarded networks ([`Policy::decide_unplaced`]),
    /// here without any subnet of a named Docker network (see
    /// [`Policy::probe_with`]).
    pub fn probe(
        &self,
        from: &str,
        to: &str,
        proto: L4,
        port: u16,
        request: Option<&RequestProbe<'_>>,
    ) -> Result<Decision, ProbeError> {
        self.probe_with(from, to, proto, port, request, &NamedSubnets::new())
    }

    /// [`Policy::probe`] with the subnets `named` resolved for the Docker
    /// networks of `guard.networks` (what `explain` asked the engine).
    pub fn probe_with(
        &self,
        from: &str,
        to: &str,
        proto: L4,
        port: u16,
        request: Option<&RequestProbe<'_>>,
        named: &NamedSubnets,
    ) -> Result<Decision, ProbeError> {
        let (from_id, to_id) = match (self.endpoint(from)?, self.endpoint(to)?) {
            (Endpoint::Container(f), Endpoint::Container(t)) => (f, t),
            (Endpoint::Container(f), Endpoint::Unplaced(ip)) => {
                return Ok(self.decide_unplaced(self.container_name(f), ip, true, named))
            }
            (Endpoint::Unplaced(ip), Endpoint::Container(t)) => {
                return Ok(self.decide_unplaced(self.container_name(t), ip, false, named))
            }
            (Endpoint::Unplaced(a), Endpoint::Unplaced(b)) => {
                return Ok(Decision {
                    verdict: super::Verdict::Allow,
                    layer: super::Layer::Nftables,
                    rule: None,
                    reason: format!(
                        "neither {a} nor {b} belongs to a managed container: Portcullis does not filter {a} -> {b}"
                    ),
                    audit_deny: false,
                    status: None,
                })
            }
        };
        let entry = self.flow(from_id, to_id, proto, port);
        Ok(match (entry, request) {
            (Some(e), Some(req)) if e.http.is_some() => {
                // The proxy's own decision; only an allowed request, which
                // the proxy does not explain, is explained here.
                match self.decide_access(FlowOwner::Entry(e), req) {
                    Access::Allow { path, matcher, .. } => self.explain_request(
                        e,
                        &RequestView {
                            method: req.method,
                            path: &path,
                            headers: req.headers,
                        },
                        RequestCheck::Allowed(matcher),
                    ),
                    Access::Audited { decision, .. } | Access::Deny { decision, .. } => decision,
                    Access::Bad(bad) => bad.decision(),
                }
            }
            _ => self.decide_flow(from_id, to_id, proto, port),
        })
    }
}
