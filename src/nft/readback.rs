//! Reading table `inet portcullis` back from the kernel, to notice when
//! something other than Portcullis changed or removed it (drift).
//!
//! A [`Fingerprint`] is a digest of the kernel's own description of the
//! table — its chains, rules (in order), sets and set elements — as dumped
//! over netlink. Packet and byte counters are left out (they move with
//! traffic); everything else, handles included, is in. The daemon takes a
//! fingerprint right after each install: a later one that differs, or a
//! missing table, means the kernel no longer holds what Portcullis
//! installed, and the ruleset is applied again (`control::drift`).
//!
//! Comparing the kernel with itself, rather than decoding every expression
//! into the ruleset's terms, keeps this small and exact: any change at all
//! to the table is seen, including ones no decoder anticipated.

use xxhash_rust::xxh3::Xxh3;

use std::time::Duration;

use std::net::IpAddr;

use super::apply::{open, send, setsockopt, NftError, RecvBuf};
use super::layout::{Family, DROPS};
use super::ruleset::TABLE;

/// Digest of the table's kernel state, counters excluded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint(pub u64);

// Message types (NFT_MSG_*), attribute numbers (linux/netfilter/nf_tables.h).
const GETCHAIN: u16 = libc::NFT_MSG_GETCHAIN as u16;
const GETRULE: u16 = libc::NFT_MSG_GETRULE as u16;
const GETSET: u16 = libc::NFT_MSG_GETSET as u16;
const GETSETELEM: u16 = libc::NFT_MSG_GETSETELEM as u16;
/// NFTA_{CHAIN,RULE,SET,SET_ELEM_LIST}_TABLE: the first attribute of each.
const ATTR_TABLE: u16 = 1;
const NFTA_SET_NAME: u16 = 2;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_CHAIN_COUNTERS: u16 = 8;
const NFTA_RULE_EXPRESSIONS: u16 = 4;
#[cfg(test)]
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_SET_ELEM_EXPR: u16 = 7;
const NFTA_SET_ELEM_EXPRESSIONS: u16 = 11;
const NLA_F_NESTED: u16 = 1 << 15;
const NLA_TYPE_MASK: u16 = !(NLA_F_NESTED | (1 << 14));
const NLMSG_DONE: u16 = libc::NLMSG_DONE as u16;
/// netlink header + nfgenmsg.
const HEADERS: usize = 16 + 4;

/// The fingerprint of the table as the kernel holds it now, or `None` if
/// there is no table `inet portcullis`.
pub fn fingerprint() -> Result<Option<Fingerprint>, NftError> {
    if !super::apply::exists()? {
        return Ok(None);
    }
    let mut h = Xxh3::new();
    let chains = dump(GETCHAIN, &[])?;
    let rules = dump(GETRULE, &[])?;
    let sets = dump(GETSET, &[])?;
    h.update(b"chains");
    digest_sorted(&mut h, &chains);
    // Rule order is meaning: hashed in the order the kernel lists them.
    h.update(b"rules");
    for r in &rules {
        h.update(&(r.len() as u64).to_le_bytes());
        h.update(r);
    }
    h.update(b"sets");
    digest_sorted(&mut h, &sets);
    for set in &sets {
        let Some(name) = attr(set, NFTA_SET_NAME) else {
            return Err(NftError::Malformed("set without a name"));
        };
        let elems = dump(GETSETELEM, &[(NFTA_SET_ELEM_LIST_SET, name)])?;
        h.update(b"elements");
        h.update(name);
        digest_sorted(&mut h, &elems);
    }
    Ok(Some(Fingerprint(h.digest())))
}

/// What one rule of the table counted, named by its comment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleCounter {
    pub comment: String,
    pub packets: u64,
    pub bytes: u64,
}

/// The `counter` of every rule of table `inet portcullis` that has one,
/// in the kernel's order; empty when there is no table. The kernel's
/// counters start at 0 with each install (a reload replaces the table).
pub fn rule_counters() -> Result<Vec<RuleCounter>, NftError> {
    if !super::apply::exists()? {
        return Ok(Vec::new());
    }
    let rules = dump_as(GETRULE, &[], |body| Ok(body.to_vec()))?;
    Ok(rules.iter().filter_map(|r| rule_counter(r)).collect())
}

/// The comment and counter values of one dumped rule.
fn rule_counter(rule: &[u8]) -> Option<RuleCounter> {
    const NFTA_RULE_USERDATA: u16 = 7;
    const NFTA_COUNTER_BYTES: u16 = 1;
    const NFTA_COUNTER_PACKETS: u16 = 2;
    const NFTNL_UDATA_RULE_COMMENT: u8 = 0;
    // User data: (type: u8, length: u8, value) records.
    let mut udata = attr(rule, NFTA_RULE_USERDATA).unwrap_or_default();
    let mut comment = String::new();
    while let [ty, len, rest @ ..] = udata {
        let value = rest.get(..usize::from(*len))?;
        if *ty == NFTNL_UDATA_RULE_COMMENT {
            let text = value.split(|b| *b == 0).next().unwrap_or_default();
            comment = String::from_utf8_lossy(text).into_owned();
        }
        udata = &rest[usize::from(*len)..];
    }
    let be64 = |b: &[u8]| b.try_into().ok().map(u64::from_be_bytes);
    let exprs = attr(rule, NFTA_RULE_EXPRESSIONS)?;
    attrs(exprs).find_map(|(_, _, inner)| {
        if attr(inner, NFTA_EXPR_NAME) != Some(b"counter\0") {
            return None;
        }
        let data = attr(inner, NFTA_EXPR_DATA)?;
        Some(RuleCounter {
            comment: comment.clone(),
            packets: be64(attr(data, NFTA_COUNTER_PACKETS)?)?,
            bytes: be64(attr(data, NFTA_COUNTER_BYTES)?)?,
        })
    })
}

/// A socket told of every committed nftables change (any table, any
/// process: the `NFNLGRP_NFTABLES` multicast group), so drift is seen at
/// once rather than at the next periodic look.
pub struct ChangeWatch {
    socket: mnl::Socket,
    buf: RecvBuf,
    tick: Duration,
}

fn set_timeout(socket: &mnl::Socket, t: Duration) -> Result<(), NftError> {
    let tv = libc::timeval {
        tv_sec: t.as_secs() as libc::time_t,
        tv_usec: t.subsec_micros() as libc::suseconds_t,
    };
    setsockopt(socket, libc::SOL_SOCKET, libc::SO_RCVTIMEO, &tv).map_err(NftError::Socket)
}

impl ChangeWatch {
    /// Subscribes; [`ChangeWatch::wait`] returns at the latest after `tick`.
    pub fn new(tick: Duration) -> Result<ChangeWatch, NftError> {
        const NFNLGRP_NFTABLES: libc::c_int = 7;
        let socket = open()?;
        setsockopt(
            &socket,
            libc::SOL_NETLINK,
            libc::NETLINK_ADD_MEMBERSHIP,
            &NFNLGRP_NFTABLES,
        )
        .map_err(NftError::Socket)?;
        set_timeout(&socket, tick)?;
        Ok(ChangeWatch {
            socket,
            buf: RecvBuf::new(),
            tick,
        })
    }

    /// Waits for notifications: `true` when some arrived (or were lost to
    /// a full buffer, which counts as a change), `false` after a quiet tick.
    /// A burst (one transaction sends many) is drained as one change.
    pub fn wait(&mut self) -> Result<bool, NftError> {
        if !self.recv_one()? {
            return Ok(false);
        }
        set_timeout(&self.socket, Duration::from_millis(2))?;
        let mut drained = 0;
        while drained < 100_000 && self.recv_one()? {
            drained += 1;
        }
        set_timeout(&self.socket, self.tick)?;
        Ok(true)
    }

    fn recv_one(&mut self) -> Result<bool, NftError> {
        let buf = self.buf.aligned()?;
        match self.socket.recv(buf) {
            Ok(_) => Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => Ok(true),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) =>
            {
                Ok(false)
            }
            Err(e) => Err(NftError::Receive(e)),
        }
    }
}

/// Element and set listings carry no order that means anything.
fn digest_sorted(h: &mut Xxh3, items: &[Vec<u8>]) {
    let mut sorted: Vec<&Vec<u8>> = items.iter().collect();
    sorted.sort();
    for i in sorted {
        h.update(&(i.len() as u64).to_le_bytes());
        h.update(i);
    }
}

/// Dumps one kind of object of family inet and keeps those of our table,
/// each as its attributes with counters removed.
fn dump(kind: u16, extra: &[(u16, &[u8])]) -> Result<Vec<Vec<u8>>, NftError> {
    dump_as(kind, extra, |body| normalised(body, kind))
}

/// Dumps one kind of object of our table, each as `keep` makes it.
fn dump_as(
    kind: u16,
    extra: &[(u16, &[u8])],
    keep: impl Fn(&[u8]) -> Result<Vec<u8>, NftError>,
) -> Result<Vec<Vec<u8>>, NftError> {
    const SEQ: u32 = 1;
    let socket = open()?;
    let table = std::ffi::CString::new(TABLE).map_err(|_| NftError::Encode(TABLE.into()))?;
    let mut attrs: Vec<(u16, &[u8])> = vec![(ATTR_TABLE, table.as_bytes_with_nul())];
    attrs.extend_from_slice(extra);
    send(&socket, &request(kind, SEQ, &attrs))?;
    let mut out = Vec::new();
    let mut buf = RecvBuf::new();
    loop {
        let aligned = buf.aligned()?;
        let msgs = loop {
            match socket.recv(aligned) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                other => break other.map_err(NftError::Receive)?,
            }
        };
        for msg in msgs {
            let msg = msg.map_err(NftError::Receive)?;
            let ty = u16_at(msg, 4).ok_or(NftError::Malformed("short netlink header"))?;
            if ty == NLMSG_DONE {
                return Ok(out);
            }
            if ty == libc::NLMSG_ERROR as u16 {
                let code = msg
                    .get(16..20)
                    .and_then(|b| b.try_into().ok())
                    .map(i32::from_ne_bytes)
                    .ok_or(NftError::Malformed("short netlink error"))?;
                if code == 0 {
                    return Ok(out);
                }
                // The table (or a set) went away between the queries: the
                // caller's next look will see that.
                if code == -libc::ENOENT {
                    out.push(b"ENOENT".to_vec());
                    return Ok(out);
                }
                return Err(NftError::Rejected {
                    object: format!("dump of table inet {TABLE}"),
                    errno: -code,
                });
            }
            let body = msg.get(HEADERS..).unwrap_or_default();
            if attr(body, ATTR_TABLE) != Some(table.as_bytes_with_nul()) {
                continue;
            }
            out.push(keep(body)?);
        }
    }
}

/// A dump request: netlink header (NLM_F_DUMP), nfgenmsg for family inet,
/// then the attributes.
fn request(kind: u16, seq: u32, attrs: &[(u16, &[u8])]) -> Vec<u8> {
    let ty = ((libc::NFNL_SUBSYS_NFTABLES as u16) << 8) | kind;
    let flags = (libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16;
    nfnetlink_message(ty, flags, libc::NFPROTO_INET as u8, 0, seq, attrs)
}

/// One nfnetlink message: netlink header (`ty` is subsystem << 8 | kind),
/// nfgenmsg (`family`, version 0, `res_id`), then the attributes, each
/// padded to 4 bytes.
pub(super) fn nfnetlink_message(
    ty: u16,
    flags: u16,
    family: u8,
    res_id: u16,
    seq: u32,
    attrs: &[(u16, &[u8])],
) -> Vec<u8> {
    let mut m = vec![0u8; 16];
    m[4..6].copy_from_slice(&ty.to_ne_bytes());
    m[6..8].copy_from_slice(&flags.to_ne_bytes());
    m[8..12].copy_from_slice(&seq.to_ne_bytes());
    m.push(family);
    m.push(0); // NFNETLINK_V0
    m.extend(res_id.to_be_bytes());
    for (ty, value) in attrs {
        let len = 4 + value.len();
        m.extend((len as u16).to_ne_bytes());
        m.extend(ty.to_ne_bytes());
        m.extend_from_slice(value);
        m.resize(m.len().div_ceil(4) * 4, 0);
    }
    let total = m.len() as u32;
    m[0..4].copy_from_slice(&total.to_ne_bytes());
    m
}

pub(super) fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    b.get(at..at + 2)
        .and_then(|b| b.try_into().ok())
        .map(u16::from_ne_bytes)
}

/// The attributes of `b` as (type without flags, whole attribute bytes,
/// payload). Stops at the first malformed length.
pub(super) fn attrs(b: &[u8]) -> impl Iterator<Item = (u16, &[u8], &[u8])> {
    let mut rest = b;
    std::iter::from_fn(move || {
        let len = usize::from(u16_at(rest, 0)?);
        let ty = u16_at(rest, 2)? & NLA_TYPE_MASK;
        if len < 4 || len > rest.len() {
            return None;
        }
        let whole = &rest[..len];
        rest = rest.get(len.div_ceil(4) * 4..).unwrap_or_default();
        Some((ty, whole, &whole[4..]))
    })
}

fn attr(b: &[u8], ty: u16) -> Option<&[u8]> {
    attrs(b).find(|(t, ..)| *t == ty).map(|(_, _, p)| p)
}

/// Copies an attribute with its padding, so the result still parses as
/// attributes.
fn push(out: &mut Vec<u8>, attr: &[u8]) {
    out.extend_from_slice(attr);
    out.resize(out.len().div_ceil(4) * 4, 0);
}

/// An expression (`whole`, its attributes `inner`) with a counter's
/// values left out: its header and name only.
fn expr_shape(out: &mut Vec<u8>, whole: &[u8], inner: &[u8]) {
    if attr(inner, NFTA_EXPR_NAME) == Some(b"counter\0") {
        push(out, &whole[..4]);
        push(out, b"counter\0");
    } else {
        push(out, whole);
    }
}

/// The message's attributes without the parts that move with traffic:
/// a chain's counters, and the data of every `counter` expression, in
/// rules and in set elements (the `drops` sets count per element).
fn normalised(body: &[u8], kind: u16) -> Result<Vec<u8>, NftError> {
    let mut out = Vec::with_capacity(body.len());
    for (ty, whole, payload) in attrs(body) {
        match (kind, ty) {
            (GETCHAIN, NFTA_CHAIN_COUNTERS) => {}
            (GETRULE, NFTA_RULE_EXPRESSIONS) => {
                push(&mut out, &whole[..4]);
                for (_, elem, inner) in attrs(payload) {
                    expr_shape(&mut out, elem, inner);
                }
            }
            (GETSETELEM, NFTA_SET_ELEM_LIST_ELEMENTS) => {
                push(&mut out, &whole[..4]);
                for (_, elem, inner) in attrs(payload) {
                    push(&mut out, &elem[..4]);
                    for (ty, w, p) in attrs(inner) {
                        match ty {
                            NFTA_SET_ELEM_EXPR => expr_shape(&mut out, w, p),
                            NFTA_SET_ELEM_EXPRESSIONS => {
                                push(&mut out, &w[..4]);
                                for (_, ew, ep) in attrs(p) {
                                    expr_shape(&mut out, ew, ep);
                                }
                            }
                            _ => push(&mut out, w),
                        }
                    }
                }
            }
            _ => push(&mut out, whole),
        }
    }
    Ok(out)
}

/// What the default deny dropped between two managed addresses (an
/// element of a `drops` set and its counter).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PairCounter {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub packets: u64,
    pub bytes: u64,
}

/// The counter of every element of the `drops4`/`drops6` sets; empty when
/// there is no table. Like the rules' counters they start at 0 with each
/// install.
pub fn pair_counters() -> Result<Vec<PairCounter>, NftError> {
    if !super::apply::exists()? {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for family in Family::BOTH {
        let name = format!("{DROPS}{}\0", family.suffix());
        let msgs = dump_as(
            GETSETELEM,
            &[(NFTA_SET_ELEM_LIST_SET, name.as_bytes())],
            |body| Ok(body.to_vec()),
        )?;
        let len = family.addr_len() as usize;
        for msg in &msgs {
            let Some(list) = attr(msg, NFTA_SET_ELEM_LIST_ELEMENTS) else {
                continue;
            };
            out.extend(attrs(list).filter_map(|(_, _, elem)| pair_counter(elem, len)));
        }
    }
    Ok(out)
}

/// One element of a `drops` set: its two addresses (`len` bytes each) and
/// its counter.
fn pair_counter(elem: &[u8], len: usize) -> Option<PairCounter> {
    const NFTA_DATA_VALUE: u16 = 1;
    const NFTA_COUNTER_BYTES: u16 = 1;
    const NFTA_COUNTER_PACKETS: u16 = 2;
    let key = attr(attr(elem, NFTA_SET_ELEM_KEY)?, NFTA_DATA_VALUE)?;
    let addr = |b: &[u8]| -> Option<IpAddr> {
        Some(match len {
            4 => IpAddr::from(<[u8; 4]>::try_from(b).ok()?),
            _ => IpAddr::from(<[u8; 16]>::try_from(b).ok()?),
        })
    };
    let (src, dst) = (addr(key.get(..len)?)?, addr(key.get(len..2 * len)?)?);
    let mut exprs: Vec<&[u8]> = attr(elem, NFTA_SET_ELEM_EXPR).into_iter().collect();
    if let Some(list) = attr(elem, NFTA_SET_ELEM_EXPRESSIONS) {
        exprs.extend(attrs(list).map(|(_, _, e)| e));
    }
    let counter = exprs
        .into_iter()
        .find(|e| attr(e, NFTA_EXPR_NAME) == Some(b"counter\0"))?;
    let data = attr(counter, NFTA_EXPR_DATA)?;
    let be64 = |b: &[u8]| b.try_into().ok().map(u64::from_be_bytes);
    Some(PairCounter {
        src,
        dst,
        packets: be64(attr(data, NFTA_COUNTER_PACKETS)?)?,
        bytes: be64(attr(data, NFTA_COUNTER_BYTES)?)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_carry_the_table_and_dump_flag() {
        let m = request(GETSETELEM, 9, &[(1, b"portcullis\0"), (2, b"allow4\0")]);
        assert_eq!(
            m.len() as u32,
            u32::from_ne_bytes(m[0..4].try_into().unwrap())
        );
        assert_eq!(m.len() % 4, 0);
        let flags = u16::from_ne_bytes(m[6..8].try_into().unwrap());
        assert_eq!(flags, (libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16);
        assert_eq!(attr(&m[HEADERS..], 1), Some(&b"portcullis\0"[..]));
        assert_eq!(attr(&m[HEADERS..], 2), Some(&b"allow4\0"[..]));
    }

    #[test]
    fn counter_values_do_not_count() {
        let expr = |name: &[u8], data: &[u8]| {
            let mut inner = request(0, 0, &[(NFTA_EXPR_NAME, name), (NFTA_EXPR_DATA, data)]);
            inner.drain(..HEADERS);
            let mut elem = request(0, 0, &[(NFTA_LIST_ELEM, &inner)]);
            elem.drain(..HEADERS);
            let mut rule = request(
                0,
                0,
                &[(1, b"portcullis\0"), (NFTA_RULE_EXPRESSIONS, &elem)],
            );
            rule.drain(..HEADERS);
            normalised(&rule, GETRULE).unwrap()
        };
        assert_eq!(
            expr(b"counter\0", b"12345678"),
            expr(b"counter\0", b"87654321")
        );
        assert_ne!(
            expr(b"lookup\0", b"12345678"),
            expr(b"lookup\0", b"87654321")
        );
        assert_ne!(expr(b"counter\0", b"x"), expr(b"lookup\0", b"x"));
    }

    #[test]
    fn truncated_attributes_end_the_walk() {
        assert_eq!(attrs(&[8, 0, 1, 0, 1, 2]).count(), 0);
        assert_eq!(attrs(&[3, 0, 1, 0]).count(), 0);
        assert_eq!(attrs(&[5, 0, 1, 0, 9, 0, 0, 0]).count(), 1);
    }
}
