//! Byte tunnels for WebSocket upgrades and CONNECT, opened only after the
//! request was authorised and the upstream agreed (101 / 2xx). From then on
//! the proxy no longer sees requests, which is why only those two are ever
//! tunnelled (an `h2c` upgrade is not: it would carry unchecked requests).

use std::io;

use tokio::io::{copy_bidirectional, AsyncWriteExt};
use tokio::net::TcpStream;

use super::body::Inbound;

/// Relays bytes both ways until both sides are done, starting with what
/// either side already sent past the handshake. Returns the bytes moved
/// (client → upstream, upstream → client).
pub async fn splice(
    client: &mut Inbound<TcpStream>,
    upstream: &mut Inbound<TcpStream>,
) -> io::Result<(u64, u64)> {
    let early_up = client.buf.len() as u64;
    let early_down = upstream.buf.len() as u64;
    if !client.buf.is_empty() {
        upstream.io.write_all(&client.buf).await?;
        client.buf.clear();
    }
    if !upstream.buf.is_empty() {
        client.io.write_all(&upstream.buf).await?;
        upstream.buf.clear();
    }
    let (up, down) = copy_bidirectional(&mut client.io, &mut upstream.io).await?;
    Ok((up + early_up, down + early_down))
}
