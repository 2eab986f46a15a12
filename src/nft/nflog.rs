//! Reading the default deny's drops from NFLOG (`log_drops`).
//!
//! With `log_drops` the rule counting drops per pair also sends those
//! packets, at most `per_second`, to an NFLOG group (`log group N`). This
//! module binds that group over netlink (`NETLINK_NETFILTER`, subsystem
//! `NFNL_SUBSYS_ULOG`) and decodes each logged packet into who tried to
//! reach whom: addresses, protocol and ports, read from the first bytes of
//! the packet the kernel copies along. Turning that into a log line with
//! container names is the daemon's part (`control::drop_log`).
//!
//! A group has one reader: if another program already reads it, binding
//! fails with `EBUSY` and the caller says so; enforcement does not depend
//! on any of this.

use std::net::IpAddr;

use super::apply::{open, send, NftError, RecvBuf};
use super::readback::{attrs, nfnetlink_message, u16_at};

// linux/netfilter/nfnetlink_log.h
const NFNL_SUBSYS_ULOG: u16 = 4;
const NFULNL_MSG_PACKET: u16 = 0;
const NFULNL_MSG_CONFIG: u16 = 1;
const NFULA_CFG_CMD: u16 = 1;
const NFULA_CFG_MODE: u16 = 2;
const NFULNL_CFG_CMD_BIND: u8 = 1;
const NFULNL_COPY_PACKET: u8 = 2;
const NFULA_PAYLOAD: u16 = 9;
const NFULA_PREFIX: u16 = 10;
/// Bytes of each packet copied to us: an IPv6 header and the ports.
const COPY_RANGE: u32 = 64;
/// netlink header + nfgenmsg.
const HEADERS: usize = 16 + 4;

/// One logged packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dropped {
    pub src: IpAddr,
    pub dst: IpAddr,
    /// IP protocol number (6 TCP, 17 UDP, 1/58 ICMP…).
    pub proto: u8,
    /// Source and destination port (TCP, UDP, SCTP, UDP-Lite).
    pub ports: Option<(u16, u16)>,
    /// The `log prefix` of the rule that sent it.
    pub prefix: String,
}

/// A socket bound to one NFLOG group.
pub struct NflogReader {
    socket: mnl::Socket,
    buf: RecvBuf,
}

impl NflogReader {
    /// Binds `group`, asking for the first [`COPY_RANGE`] bytes of each
    /// packet. Fails if the group cannot be bound (another reader: EBUSY).
    pub fn bind(group: u16) -> Result<NflogReader, NftError> {
        let socket = open()?;
        let mut buf = RecvBuf::new();
        let mut mode = COPY_RANGE.to_be_bytes().to_vec();
        mode.extend([NFULNL_COPY_PACKET, 0]);
        for (seq, attr) in [
            (1, (NFULA_CFG_CMD, vec![NFULNL_CFG_CMD_BIND])),
            (2, (NFULA_CFG_MODE, mode)),
        ] {
            send(&socket, &config(group, seq, attr.0, &attr.1))?;
            ack(&socket, &mut buf, seq, group)?;
        }
        Ok(NflogReader { socket, buf })
    }

    /// Waits (at most the socket's receive timeout, 5 s) for logged
    /// packets; `Ok(empty)` on a timeout.
    pub fn receive(&mut self) -> Result<Vec<Dropped>, NftError> {
        let buf = self.buf.aligned()?;
        let msgs = match self.socket.recv(buf) {
            Ok(m) => m,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) =>
            {
                return Ok(Vec::new())
            }
            Err(e) => return Err(NftError::Receive(e)),
        };
        let mut out = Vec::new();
        for msg in msgs {
            let msg = msg.map_err(NftError::Receive)?;
            if msg_type(msg) == Some((NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_PACKET) {
                out.extend(decode(msg.get(HEADERS..).unwrap_or_default()));
            }
        }
        Ok(out)
    }
}

fn msg_type(msg: &[u8]) -> Option<u16> {
    u16_at(msg, 4)
}

/// An `NFULNL_MSG_CONFIG` request for `group` with one attribute.
fn config(group: u16, seq: u32, ty: u16, value: &[u8]) -> Vec<u8> {
    let kind = (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_CONFIG;
    let flags = (libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16;
    nfnetlink_message(
        kind,
        flags,
        libc::AF_UNSPEC as u8,
        group,
        seq,
        &[(ty, value)],
    )
}

/// Waits for the kernel's answer to request `seq`.
fn ack(socket: &mnl::Socket, buf: &mut RecvBuf, seq: u32, group: u16) -> Result<(), NftError> {
    loop {
        let msgs = socket.recv(buf.aligned()?).map_err(NftError::Receive)?;
        for msg in msgs {
            let msg = msg.map_err(NftError::Receive)?;
            let this = msg
                .get(8..12)
                .and_then(|b| b.try_into().ok())
                .map(u32::from_ne_bytes);
            if msg_type(msg) != Some(libc::NLMSG_ERROR as u16) || this != Some(seq) {
                continue;
            }
            let code = msg
                .get(16..20)
                .and_then(|b| b.try_into().ok())
                .map(i32::from_ne_bytes)
                .ok_or(NftError::Malformed("short netlink error"))?;
            return match code {
                0 => Ok(()),
                e => Err(NftError::Rejected {
                    object: format!("NFLOG group {group}"),
                    errno: -e,
                }),
            };
        }
    }
}

/// One `NFULNL_MSG_PACKET`'s attributes → the packet's addresses and
/// ports. `None` for what is not an IP packet (or is cut too short).
fn decode(attributes: &[u8]) -> Option<Dropped> {
    let mut payload = None;
    let mut prefix = String::new();
    for (ty, _, value) in attrs(attributes) {
        match ty {
            NFULA_PAYLOAD => payload = Some(value),
            NFULA_PREFIX => {
                let text = value.split(|&b| b == 0).next().unwrap_or_default();
                prefix = String::from_utf8_lossy(text).into_owned();
            }
            _ => {}
        }
    }
    let (src, dst, proto, transport) = ip_header(payload?)?;
    let ports = matches!(proto, 6 | 17 | 132 | 136)
        .then(|| {
            let p = transport.get(0..4)?;
            Some((
                u16::from_be_bytes([p[0], p[1]]),
                u16::from_be_bytes([p[2], p[3]]),
            ))
        })
        .flatten();
    Some(Dropped {
        src,
        dst,
        proto,
        ports,
        prefix,
    })
}

/// (source, destination, protocol, what follows the IP header) of an
/// IPv4 or IPv6 packet. IPv6 extension headers are not walked: the
/// protocol is then the first next-header value, and no ports are read
/// unless it is a transport protocol.
fn ip_header(p: &[u8]) -> Option<(IpAddr, IpAddr, u8, &[u8])> {
    match p.first()? >> 4 {
        4 => {
            let ihl = usize::from(p[0] & 0x0f) * 4;
            let src: [u8; 4] = p.get(12..16)?.try_into().ok()?;
            let dst: [u8; 4] = p.get(16..20)?.try_into().ok()?;
            Some((
                src.into(),
                dst.into(),
                *p.get(9)?,
                p.get(ihl..).unwrap_or_default(),
            ))
        }
        6 => {
            let src: [u8; 16] = p.get(8..24)?.try_into().ok()?;
            let dst: [u8; 16] = p.get(24..40)?.try_into().ok()?;
            Some((
                src.into(),
                dst.into(),
                *p.get(6)?,
                p.get(40..).unwrap_or_default(),
            ))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(ty: u16, value: &[u8]) -> Vec<u8> {
        let mut a = ((4 + value.len()) as u16).to_ne_bytes().to_vec();
        a.extend(ty.to_ne_bytes());
        a.extend_from_slice(value);
        a.resize(a.len().div_ceil(4) * 4, 0);
        a
    }

    #[test]
    fn a_logged_tcp_syn_reads_as_addresses_and_ports() {
        let mut ip = vec![0x45, 0, 0, 60, 0, 0, 0x40, 0, 64, 6, 0, 0];
        ip.extend([198, 19, 0, 3, 198, 19, 0, 2]);
        ip.extend(40000u16.to_be_bytes());
        ip.extend(9399u16.to_be_bytes());
        let mut msg = attr(NFULA_PREFIX, b"portcullis drop \0");
        msg.extend(attr(NFULA_PAYLOAD, &ip));
        let d = decode(&msg).expect("an IPv4 packet");
        assert_eq!(
            (
                d.src.to_string(),
                d.dst.to_string(),
                d.proto,
                d.ports,
                d.prefix.as_str()
            ),
            (
                "198.19.0.3".into(),
                "198.19.0.2".into(),
                6,
                Some((40000, 9399)),
                "portcullis drop "
            )
        );
    }

    #[test]
    fn ipv6_and_portless_and_cut_packets() {
        let mut ip = vec![0x60, 0, 0, 0, 0, 8, 58, 255];
        ip.extend(std::iter::repeat_n(0xfd, 16));
        ip.extend(std::iter::repeat_n(0xfe, 16));
        ip.extend([128, 0, 0, 0]);
        let d = decode(&attr(NFULA_PAYLOAD, &ip)).expect("an IPv6 packet");
        assert_eq!((d.proto, d.ports), (58, None), "ICMPv6 has no ports");
        assert!(d.src.is_ipv6() && d.dst.is_ipv6());
        assert_eq!(decode(&attr(NFULA_PAYLOAD, &ip[..20])), None, "cut short");
        assert_eq!(decode(&attr(NFULA_PAYLOAD, &[0x10; 40])), None, "not IP");
        assert_eq!(decode(&attr(NFULA_PREFIX, b"x\0")), None, "no payload");
    }

    #[test]
    fn the_bind_request_names_the_group_and_asks_for_an_ack() {
        let m = config(2121, 7, NFULA_CFG_CMD, &[NFULNL_CFG_CMD_BIND]);
        assert_eq!(m.len() % 4, 0);
        assert_eq!(
            u32::from_ne_bytes(m[0..4].try_into().unwrap()) as usize,
            m.len()
        );
        assert_eq!(
            msg_type(&m),
            Some((NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_CONFIG)
        );
        assert_eq!(
            u16::from_be_bytes([m[18], m[19]]),
            2121,
            "res_id: the group"
        );
        let attrs: Vec<_> = attrs(&m[HEADERS..]).map(|(t, _, v)| (t, v)).collect();
        assert_eq!(attrs, vec![(NFULA_CFG_CMD, &[NFULNL_CFG_CMD_BIND][..])]);
    }
}
