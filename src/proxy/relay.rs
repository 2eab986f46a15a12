//! The upstream phase by protocol: [`forward_once`] sends one decided
//! request to an HTTP/1.1 ([`super::forward`]) or h2c
//! ([`super::upstream_h2`]) upstream as the exchange says, [`relay`] also
//! answers its failure to the client.

use std::io;

use super::downstream::Downstream;
use super::exchange::{Exchange, Relayed, Upstream, UpstreamFailure};
use super::refusal::At;
use super::tap::Tap;
use super::ProxyCtx;
use crate::rules::model::UpstreamProtocol;

/// One exchange with the upstream in its protocol; failures are returned
/// (the outer `Err` is the client connection failing).
pub async fn forward_once(
    ctx: &ProxyCtx,
    flow: &Upstream,
    client: &mut Downstream<'_>,
    out_head: &[u8],
    exchange: Exchange,
    tap: &mut dyn Tap,
) -> io::Result<Result<Relayed, UpstreamFailure>> {
    match exchange.upstream {
        UpstreamProtocol::Http1 => {
            super::forward::forward_once_h1(ctx, flow, client, out_head, exchange, tap).await
        }
        UpstreamProtocol::H2c => {
            super::upstream_h2::forward_once(ctx, flow, client, out_head, exchange, tap).await
        }
    }
}

/// [`forward_once`] answering upstream failures itself (502/504): what a
/// caller that does not retry wants. `tap` sees the response.
pub async fn relay(
    ctx: &ProxyCtx,
    flow: &Upstream,
    client: &mut Downstream<'_>,
    out_head: &[u8],
    exchange: Exchange,
    tap: &mut dyn Tap,
) -> io::Result<Relayed> {
    match forward_once(ctx, flow, client, out_head, exchange, tap).await? {
        Ok(relayed) => Ok(relayed),
        Err(f) => {
            let r = f.refusal(flow.dst);
            let at = At {
                peer: Some(flow.peer),
                destination: Some(&flow.dst),
                ..At::default()
            };
            r.record(&ctx.metrics, &at);
            client.refuse(&r, true).await?;
            Ok(Relayed {
                keep: false,
                status: Some(f.code),
                intercepted: false,
            })
        }
    }
}
