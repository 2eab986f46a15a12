//! One probe → one [`Decision`]: the function behind `portcullis explain`
//! for access flows, shared with `portcullis diff`'s property test so that
//! what `diff` claims is checked against exactly what `explain` says.

use super::matcher::RequestView;
use super::{Decision, Policy, L4};

/// An HTTP request to probe a flow with.
#[derive(Debug, Clone, Copy)]
pub struct RequestProbe<'a> {
    pub method: &'a str,
    /// Request target as sent (path and optional query; normalised here).
    pub target: &'a str,
    pub headers: &'a [httparse::Header<'a>],
}

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
                // The proxy's order: fields, then the path, then the rules.
                if let Err(err) = self.fields.check(req.headers) {
                    Policy::refuse_fields(&err)
                } else {
                    match Policy::request_path(req.method, req.target) {
                        Err(err) => Policy::refuse_path(err),
                        Ok((path, _)) => self.decide_request(
                            e,
                            &RequestView {
                                method: req.method,
                                path: &path,
                                headers: req.headers,
                            },
                        ),
                    }
                }
            }
            _ => self.decide_flow(from_id, to_id, proto, port),
        })
    }
}
