//! One probe → one [`Decision`]: the function behind `portcullis explain`
//! for access flows, shared with `portcullis diff`'s property test and the
//! demo so that what they claim is checked against exactly what `explain`
//! says. A request on a proxied flow is decided by the proxy's own
//! [`Policy::decide_access`]; the flow itself by [`Policy::decide_flow`],
//! the decision nftables is compiled from.

use super::access::{Access, FlowOwner, HttpRequest};
use super::matcher::RequestView;
use super::{Decision, Policy, RequestCheck, L4};

/// An HTTP request to probe a flow with: the request the proxy decides on.
pub type RequestProbe<'a> = HttpRequest<'a>;

/// A probe that names something the rule file does not have.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProbeError {
    #[error("unknown container {0:?}")]
    UnknownContainer(String),
}

impl Policy {
    /// What happens to a connection `from -> to:port/proto` and, when the
    /// flow is checked by the proxy and `request` is given, to that request.
    pub fn probe(
        &self,
        from: &str,
        to: &str,
        proto: L4,
        port: u16,
        request: Option<&RequestProbe<'_>>,
    ) -> Result<Decision, ProbeError> {
        let unknown = |n: &str| ProbeError::UnknownContainer(n.to_owned());
        let from_id = self.container_id(from).ok_or_else(|| unknown(from))?;
        let to_id = self.container_id(to).ok_or_else(|| unknown(to))?;
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
