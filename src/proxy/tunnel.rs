//! Byte tunnels for WebSocket upgrades and CONNECT, opened only after the
//! request was authorised and the upstream agreed (101 / 2xx). From then on
//! the proxy no longer sees requests, which is why only those two are ever
//! tunnelled (an `h2c` upgrade is not: it would carry unchecked requests).

use std::io;
use std::time::Duration;

use tokio::io::{copy_bidirectional, AsyncWriteExt};
use tokio::net::TcpStream;

use super::body::Inbound;
use super::client_io::ClientIo;
use super::send::SendTimeout;

/// Relays bytes both ways until both sides are done, starting with what
/// either side already sent past the handshake. Returns the bytes moved
/// (client → upstream, upstream → client). A side that takes nothing
/// written to it for `send_timeout` ends the tunnel (a silent tunnel does
/// not: only a pending write times out).
pub async fn splice(
    client: &mut Inbound<ClientIo>,
    upstream: &mut Inbound<TcpStream>,
    send_timeout: Duration,
) -> io::Result<(u64, u64)> {
    let early_up = client.buf.len() as u64;
    let early_down = upstream.buf.len() as u64;
    let mut down_io = SendTimeout::new(&mut client.io, send_timeout);
    let mut up_io = SendTimeout::new(&mut upstream.io, send_timeout);
    if !client.buf.is_empty() {
        up_io.write_all(&client.buf).await?;
        client.buf.clear();
    }
    if !upstream.buf.is_empty() {
        down_io.write_all(&upstream.buf).await?;
        upstream.buf.clear();
    }
    let (up, down) = copy_bidirectional(&mut down_io, &mut up_io).await?;
    Ok((up + early_up, down + early_down))
}
