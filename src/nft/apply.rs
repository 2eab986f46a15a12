//! Installing and removing the table over netlink (`nftnl` + `mnl`).
//!
//! [`install`] sends the whole table as one batch — declare the table,
//! delete it, define it again with every set, element, chain and rule — so
//! the kernel swaps old for new in one transaction, or rejects the batch
//! and keeps the old table. Every message asks for an acknowledgement; a
//! rejected message is reported with its errno and which object it was.
//!
//! The objects are encoded the way nft encodes the same text (see
//! `expr.rs`), so `nft list table inet portcullis` after [`install`] prints
//! exactly what [`super::render::table_text`] renders.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::io;
use std::ops::Range;
use std::os::raw::c_int;

use nftnl::nftnl_sys::libc;
use nftnl::{
    Batch, Chain, ChainType, FinalizedBatch, Hook, MsgType, Policy, ProtoFamily, Rule, Table,
};

use super::expr::{comment_udata, set_udata, Expr, Reg, SetElemsMsg, SetMsg, ELEMS_PER_MSG};
use super::layout::{
    ChainKind, Family, HookPoint, Layout, SetLayout, Stmt, AUDIT_PREFIX, DROP_PREFIX,
};
use super::ruleset::{Cidr, Ruleset, L4, TABLE};

/// Errors from talking to nftables. The messages are for an operator.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    #[error("cannot open a netlink socket to nftables: {0}")]
    Socket(#[source] io::Error),
    #[error("cannot send to nftables: {source}{}", send_hint(source))]
    Send { source: io::Error },
    #[error("cannot read the answer of nftables: {0}")]
    Receive(#[source] io::Error),
    #[error(
        "nftables rejected {object}: {}{}",
        io::Error::from_raw_os_error(*errno),
        errno_hint(*errno)
    )]
    Rejected { object: String, errno: i32 },
    #[error("nftables did not answer {missing} of {expected} messages in time")]
    NoAnswer { missing: usize, expected: usize },
    #[error("malformed answer from nftables: {0}")]
    Malformed(&'static str),
    #[error("cannot pass {0:?} to nftables: it contains a NUL byte or is too long")]
    Encode(String),
}

fn errno_hint(errno: i32) -> &'static str {
    match errno {
        libc::EPERM => "; run as root or with CAP_NET_ADMIN",
        libc::ENOENT => {
            "; the kernel may lack an nftables module (nf_tables, nft_redir, nft_ct, nf_nat)"
        }
        libc::EOPNOTSUPP => "; the kernel does not support this nftables feature",
        _ => "",
    }
}

fn send_hint(e: &io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(libc::EMSGSIZE) => "; the ruleset is too large for one netlink message",
        Some(libc::EPERM) => "; run as root or with CAP_NET_ADMIN",
        _ => "",
    }
}

fn cstring(s: &str) -> Result<CString, NftError> {
    CString::new(s).map_err(|_| NftError::Encode(s.to_string()))
}

/// Installs `rs` as table `inet portcullis`, replacing any previous version
/// atomically.
pub fn install(rs: &Ruleset) -> Result<(), NftError> {
    let layout = Layout::new(rs);
    let table_name = cstring(TABLE)?;
    let table = Table::new(&table_name, ProtoFamily::Inet);
    let mut batch = Batch::new();
    let mut labels: Vec<String> = Vec::new();

    // Declare (a no-op if it exists), delete, define: deleting a table that
    // is not there would fail the whole batch.
    batch.add(&table, MsgType::Add);
    labels.push(format!("table inet {TABLE} (declare)"));
    batch.add(&table, MsgType::Del);
    labels.push(format!("table inet {TABLE} (delete)"));
    batch.add(&table, MsgType::Add);
    labels.push(format!("table inet {TABLE}"));

    let mut set_ids: Vec<(String, u32)> = Vec::new();
    for (i, set) in layout.sets.iter().enumerate() {
        let id = i as u32 + 1;
        add_set(&mut batch, &mut labels, &table_name, set, id)?;
        set_ids.push((set.name.clone(), id));
    }
    let id_of = |name: &str| {
        set_ids
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, id)| *id)
            .unwrap_or(0)
    };

    for chain in &layout.chains {
        let mut c = Chain::new(&cstring(chain.name)?, &table);
        let hook = match chain.hook {
            HookPoint::Prerouting => Hook::PreRouting,
            HookPoint::Forward => Hook::Forward,
            HookPoint::Input => Hook::In,
        };
        c.set_hook(hook, chain.priority);
        c.set_type(match chain.kind {
            ChainKind::Nat => ChainType::Nat,
            ChainKind::Filter => ChainType::Filter,
        });
        c.set_policy(Policy::Accept);
        batch.add(&c, MsgType::Add);
        labels.push(format!("chain {}", chain.name));

        for (n, rule) in chain.rules.iter().enumerate() {
            let mut r = Rule::new(&c);
            for e in stmt_exprs(&rule.stmt, &id_of) {
                r.add_expr(&e);
            }
            let object = format!("rule {n} of chain {} ({})", chain.name, rule.comment);
            r.set_comment(cstring(&rule.comment)?)
                .map_err(|_| NftError::Encode(rule.comment.clone()))?;
            batch.add(&r, MsgType::Add);
            labels.push(object);
        }
    }
    transact(&batch.finalize(), &labels)
}

fn add_set(
    batch: &mut Batch,
    labels: &mut Vec<String>,
    table: &CString,
    set: &SetLayout,
    id: u32,
) -> Result<(), NftError> {
    let name = cstring(&set.name)?;
    let msg = SetMsg::new(
        ProtoFamily::Inet,
        table,
        &name,
        id,
        set.key_type(),
        set.key_len(),
        &set_udata(set.is_concat()),
    );
    let msg = if set.counter { msg.with_counter() } else { msg };
    batch.add(&msg, MsgType::Add);
    labels.push(format!("set {}", set.name));
    for (chunk_no, chunk) in set.elements.chunks(ELEMS_PER_MSG).enumerate() {
        let mut elems = SetElemsMsg::new(ProtoFamily::Inet, table, &name, id);
        for e in chunk {
            let udata = (!e.comment.is_empty()).then(|| comment_udata(&e.comment));
            elems.push(&e.key.bytes(), udata.as_deref());
        }
        batch.add(&elems, MsgType::Add);
        let first = chunk_no * ELEMS_PER_MSG;
        labels.push(match chunk {
            [one] => format!("element {} of set {}", one.key.text(), set.name),
            _ => format!(
                "elements {}..{} of set {} (first {})",
                first,
                first + chunk.len(),
                set.name,
                chunk[0].key.text()
            ),
        });
    }
    Ok(())
}

// === rule bytecode ===

fn cmp_eq(data: Vec<u8>) -> Expr {
    cmp(libc::NFT_CMP_EQ, data)
}

fn cmp(op: c_int, data: Vec<u8>) -> Expr {
    Expr::Cmp {
        op: op as u32,
        sreg: Reg::word(0),
        data,
    }
}

/// `meta l4proto ipv6-icmp`.
const IPPROTO_ICMPV6: u8 = 58;
/// ICMPv6 router solicitation (133) .. redirect (137): neighbour discovery.
const ND_FIRST: u8 = 133;
const ND_LAST: u8 = 137;

fn meta(key: c_int, dreg: Reg) -> Expr {
    Expr::Meta {
        key: key as u32,
        dreg,
    }
}

/// `meta nfproto ipv4|ipv6`: nft's implicit dependency of `ip`/`ip6`
/// matches in an inet table.
fn nfproto(family: Family) -> [Expr; 2] {
    [
        meta(libc::NFT_META_NFPROTO, Reg::word(0)),
        cmp_eq(vec![family.nfproto()]),
    ]
}

/// `meta l4proto tcp|udp`: checked before any transport field is read.
fn l4proto(proto: L4) -> [Expr; 2] {
    [
        meta(libc::NFT_META_L4PROTO, Reg::word(0)),
        cmp_eq(vec![proto.number()]),
    ]
}

fn network(offset: u32, len: u32, dreg: Reg) -> Expr {
    Expr::Payload {
        base: libc::NFT_PAYLOAD_NETWORK_HEADER as u32,
        offset,
        len,
        dreg,
    }
}

/// `th dport` (destination port: bytes 2-3 of the TCP/UDP header).
fn dport(dreg: Reg) -> Expr {
    Expr::Payload {
        base: libc::NFT_PAYLOAD_TRANSPORT_HEADER as u32,
        offset: 2,
        len: 2,
        dreg,
    }
}

fn lookup(set: &str, id_of: &dyn Fn(&str) -> u32) -> Expr {
    Expr::Lookup {
        sreg: Reg::word(0),
        set: set.to_string(),
        set_id: id_of(set),
        invert: false,
    }
}

/// `ip saddr . ip daddr . meta l4proto . th dport @set`, with the fields in
/// consecutive 32-bit registers from register 1.
fn flow_lookup(family: Family, set: &str, id_of: &dyn Fn(&str) -> u32) -> Vec<Expr> {
    let words = family.addr_len() / 4;
    vec![
        network(family.saddr_offset(), family.addr_len(), Reg::word(0)),
        network(family.daddr_offset(), family.addr_len(), Reg::word(words)),
        meta(libc::NFT_META_L4PROTO, Reg::word(2 * words)),
        dport(Reg::word(2 * words + 1)),
        lookup(set, id_of),
    ]
}

/// `ip daddr 198.19.0.0/16` as nft 1.0.6 compiles it: a byte-aligned
/// prefix loads and compares only its bytes, any other prefix loads the
/// whole address and masks it first.
fn prefix_match(offset: u32, net: &Cidr) -> Vec<Expr> {
    let octets = net.octets();
    let len = octets.len() as u32;
    if net.prefix % 8 == 0 {
        let bytes = u32::from(net.prefix) / 8;
        vec![
            network(offset, bytes, Reg::word(0)),
            cmp_eq(octets[..bytes as usize].to_vec()),
        ]
    } else {
        vec![
            network(offset, len, Reg::word(0)),
            Expr::Bitwise {
                sreg: Reg::word(0),
                dreg: Reg::word(0),
                mask: net.mask(),
                xor: vec![0; len as usize],
            },
            cmp_eq(octets),
        ]
    }
}

/// `ip saddr . ip daddr @SET`: the two addresses in consecutive registers.
fn pair_lookup(family: Family, set: &str, id_of: &dyn Fn(&str) -> u32) -> Vec<Expr> {
    let mut v = nfproto(family).to_vec();
    v.push(network(
        family.saddr_offset(),
        family.addr_len(),
        Reg::word(0),
    ));
    v.push(network(
        family.daddr_offset(),
        family.addr_len(),
        Reg::word(family.addr_len() / 4),
    ));
    v.push(lookup(set, id_of));
    v
}

fn audit_log_accept() -> [Expr; 2] {
    [
        Expr::Log {
            prefix: AUDIT_PREFIX.to_string(),
            group: None,
        },
        Expr::Verdict(libc::NF_ACCEPT),
    ]
}

/// `ct KEY & mask != 0` (how nft compiles `ct state established,related`
/// and `ct status dnat`; ct bits are in host byte order).
fn ct_bits(key: c_int, mask: u32) -> [Expr; 3] {
    [
        Expr::Ct {
            key: key as u32,
            dreg: Reg::word(0),
        },
        Expr::Bitwise {
            sreg: Reg::word(0),
            dreg: Reg::word(0),
            mask: mask.to_ne_bytes().to_vec(),
            xor: 0u32.to_ne_bytes().to_vec(),
        },
        Expr::Cmp {
            op: libc::NFT_CMP_NEQ as u32,
            sreg: Reg::word(0),
            data: 0u32.to_ne_bytes().to_vec(),
        },
    ]
}

/// The expressions of one rule, in the order nft 1.0.6 emits them for the
/// text [`super::render`] prints.
fn stmt_exprs(stmt: &Stmt, id_of: &dyn Fn(&str) -> u32) -> Vec<Expr> {
    // Conntrack state bits: 1 << (ctinfo + 1); status bit IPS_DST_NAT.
    const CT_ESTABLISHED_RELATED: u32 = 0b110;
    const IPS_DST_NAT: u32 = 1 << 5;
    const NF_NAT_RANGE_PROTO_SPECIFIED: u32 = 1 << 1;
    let mut v = Vec::new();
    match stmt {
        Stmt::Redirect { family, set, port } => {
            v.extend(nfproto(*family));
            v.extend(l4proto(L4::Tcp));
            v.extend(flow_lookup(*family, set, id_of));
            v.push(Expr::Counter);
            v.push(Expr::Immediate {
                dreg: Reg::word(0),
                data: port.to_be_bytes().to_vec(),
            });
            v.push(Expr::Redir {
                proto_min: Reg::word(0),
                flags: NF_NAT_RANGE_PROTO_SPECIFIED,
            });
        }
        Stmt::Established => {
            v.extend(ct_bits(libc::NFT_CT_STATE, CT_ESTABLISHED_RELATED));
            v.push(Expr::Verdict(libc::NF_ACCEPT));
        }
        Stmt::NeighbourDiscovery => {
            // nft 1.0.6: the type range as two compares on one register,
            // then the hop limit (IPv6 header byte 7).
            v.extend(nfproto(Family::V6));
            v.push(meta(libc::NFT_META_L4PROTO, Reg::word(0)));
            v.push(cmp_eq(vec![IPPROTO_ICMPV6]));
            v.push(Expr::Payload {
                base: libc::NFT_PAYLOAD_TRANSPORT_HEADER as u32,
                offset: 0,
                len: 1,
                dreg: Reg::word(0),
            });
            v.push(cmp(libc::NFT_CMP_GTE, vec![ND_FIRST]));
            v.push(cmp(libc::NFT_CMP_LTE, vec![ND_LAST]));
            v.push(network(7, 1, Reg::word(0)));
            v.push(cmp_eq(vec![255]));
            v.push(Expr::Counter);
            v.push(Expr::Verdict(libc::NF_ACCEPT));
        }
        Stmt::Allow { family, proto, set } => {
            v.extend(nfproto(*family));
            v.extend(l4proto(*proto));
            v.extend(flow_lookup(*family, set, id_of));
            v.push(Expr::Counter);
            v.push(Expr::Verdict(libc::NF_ACCEPT));
        }
        Stmt::AuditPair { family, set } => {
            v.extend(pair_lookup(*family, set, id_of));
            v.push(Expr::Counter);
            v.extend(audit_log_accept());
        }
        Stmt::CountPair { family, set, log } => {
            v.extend(pair_lookup(*family, set, id_of));
            if let Some(l) = log {
                v.push(Expr::Limit {
                    rate: u64::from(l.per_second),
                });
                v.push(Expr::Log {
                    prefix: DROP_PREFIX.to_string(),
                    group: Some(l.group),
                });
            }
        }
        Stmt::DefaultDeny { family, set, audit } => {
            v.extend(nfproto(*family));
            v.push(network(
                family.saddr_offset(),
                family.addr_len(),
                Reg::word(0),
            ));
            v.push(lookup(set, id_of));
            v.push(network(
                family.daddr_offset(),
                family.addr_len(),
                Reg::word(0),
            ));
            v.push(lookup(set, id_of));
            v.push(Expr::Counter);
            if *audit {
                v.extend(audit_log_accept());
            } else {
                v.push(Expr::Verdict(libc::NF_DROP));
            }
        }
        Stmt::Guard {
            family,
            set,
            net,
            outbound,
            audit,
        } => {
            v.extend(nfproto(*family));
            let managed = |offset| {
                [
                    network(offset, family.addr_len(), Reg::word(0)),
                    lookup(set, id_of),
                ]
            };
            let unplaced = |offset| {
                let mut u = prefix_match(offset, net);
                u.push(network(offset, family.addr_len(), Reg::word(0)));
                u.push(Expr::Lookup {
                    sreg: Reg::word(0),
                    set: set.clone(),
                    set_id: id_of(set),
                    invert: true,
                });
                u
            };
            if *outbound {
                v.extend(managed(family.saddr_offset()));
                v.extend(unplaced(family.daddr_offset()));
            } else {
                v.extend(unplaced(family.saddr_offset()));
                v.extend(managed(family.daddr_offset()));
            }
            v.push(Expr::Counter);
            if *audit {
                v.extend(audit_log_accept());
            } else {
                v.push(Expr::Verdict(libc::NF_DROP));
            }
        }
        Stmt::ProxyRedirected { port } => {
            v.extend(l4proto(L4::Tcp));
            v.push(dport(Reg::word(0)));
            v.push(cmp_eq(port.to_be_bytes().to_vec()));
            v.extend(ct_bits(libc::NFT_CT_STATUS, IPS_DST_NAT));
            v.push(Expr::Counter);
            v.push(Expr::Verdict(libc::NF_ACCEPT));
        }
        Stmt::ProxyDirect { port } => {
            v.extend(l4proto(L4::Tcp));
            v.push(dport(Reg::word(0)));
            v.push(cmp_eq(port.to_be_bytes().to_vec()));
            v.push(Expr::Counter);
            v.push(Expr::Verdict(libc::NF_DROP));
        }
    }
    v
}

// === remove / exists ===

/// Deletes table `inet portcullis`. Returns whether it was there.
pub fn remove() -> Result<bool, NftError> {
    let table = Table::new(&cstring(TABLE)?, ProtoFamily::Inet);
    let mut batch = Batch::new();
    batch.add(&table, MsgType::Del);
    match transact(&batch.finalize(), &[format!("table inet {TABLE} (delete)")]) {
        Ok(()) => Ok(true),
        Err(NftError::Rejected { errno, .. }) if errno == libc::ENOENT => Ok(false),
        Err(e) => Err(e),
    }
}

/// Whether table `inet portcullis` exists. (While another process runs an
/// nftables transaction — even `nft -c` — the answer can briefly reflect
/// that transaction.)
pub fn exists() -> Result<bool, NftError> {
    const SEQ: u32 = 1;
    let socket = open()?;
    let request = get_table_request(SEQ)?;
    send(&socket, &request)?;
    let mut found = false;
    let mut buf = RecvBuf::new();
    loop {
        for msg in receive(&socket, &mut buf)? {
            if msg.seq != SEQ {
                continue;
            }
            match msg.kind {
                Reply::Data(ty) if ty == NEWTABLE_TYPE => found = true,
                Reply::Data(_) => {}
                Reply::Ack => return Ok(found),
                Reply::Error(errno) if errno == libc::ENOENT => return Ok(false),
                Reply::Error(errno) => {
                    return Err(NftError::Rejected {
                        object: format!("query of table inet {TABLE}"),
                        errno,
                    })
                }
            }
        }
    }
}

/// Message type of a table description: `NFNL_SUBSYS_NFTABLES << 8 |
/// NFT_MSG_NEWTABLE`.
const NEWTABLE_TYPE: u16 =
    ((libc::NFNL_SUBSYS_NFTABLES as u16) << 8) | libc::NFT_MSG_NEWTABLE as u16;

/// `NFT_MSG_GETTABLE` for our table, built by hand: a netlink header, the
/// nfgenmsg header and one `NFTA_TABLE_NAME` attribute.
fn get_table_request(seq: u32) -> Result<Vec<u8>, NftError> {
    const NFTA_TABLE_NAME: u16 = 1;
    let name = cstring(TABLE)?;
    let name = name.as_bytes_with_nul();
    let attr_len = 4 + name.len();
    let padded = attr_len.div_ceil(4) * 4;
    let total = 16 + 4 + padded;
    let ty = ((libc::NFNL_SUBSYS_NFTABLES as u16) << 8) | libc::NFT_MSG_GETTABLE as u16;
    let flags = (libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16;
    let mut m = Vec::with_capacity(total);
    m.extend((total as u32).to_ne_bytes());
    m.extend(ty.to_ne_bytes());
    m.extend(flags.to_ne_bytes());
    m.extend(seq.to_ne_bytes());
    m.extend(0u32.to_ne_bytes()); // port id: the kernel fills it in
    m.push(libc::NFPROTO_INET as u8); // nfgen_family
    m.push(0); // NFNETLINK_V0
    m.extend(0u16.to_be_bytes()); // res_id
    m.extend((attr_len as u16).to_ne_bytes());
    m.extend(NFTA_TABLE_NAME.to_ne_bytes());
    m.extend_from_slice(name);
    m.resize(total, 0);
    Ok(m)
}

// === talking to the kernel ===

pub(super) fn open() -> Result<mnl::Socket, NftError> {
    let socket = mnl::Socket::new(mnl::Bus::Netfilter).map_err(NftError::Socket)?;
    // Give up on a missing answer after this long. The kernel answers a
    // batch while processing the send, so answers are normally queued
    // before `send` returns; this only bounds a pathological wait.
    let timeout = libc::timeval {
        tv_sec: 5,
        tv_usec: 0,
    };
    setsockopt(&socket, libc::SOL_SOCKET, libc::SO_RCVTIMEO, &timeout).map_err(NftError::Socket)?;
    // Error answers without a copy of the failed request: keeps each
    // answer small however large the rejected message was.
    const NETLINK_CAP_ACK: c_int = 10;
    setsockopt(&socket, libc::SOL_NETLINK, NETLINK_CAP_ACK, &1 as &c_int)
        .map_err(NftError::Socket)?;
    Ok(socket)
}

pub(super) fn setsockopt<T>(
    socket: &mnl::Socket,
    level: c_int,
    name: c_int,
    value: &T,
) -> io::Result<()> {
    // SAFETY: `as_raw_socket` is the live socket owned by `socket`; this
    // only reads its file descriptor.
    let fd = unsafe { mnl::mnl_sys::mnl_socket_get_fd(socket.as_raw_socket()) };
    let len = std::mem::size_of::<T>() as libc::socklen_t;
    // SAFETY: `value` points to a `T` of `len` bytes that outlives the
    // call; the kernel copies it.
    let rc = unsafe { libc::setsockopt(fd, level, name, (value as *const T).cast(), len) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

pub(super) fn send(socket: &mnl::Socket, bytes: &[u8]) -> Result<(), NftError> {
    let sent = socket
        .send(bytes)
        .map_err(|source| NftError::Send { source })?;
    if sent < bytes.len() {
        return Err(NftError::Send {
            source: io::Error::other("short write"),
        });
    }
    Ok(())
}

/// Sends a finalized batch as one datagram (one transaction) and checks
/// the answer to every message. `labels[i]` names the i-th object message.
pub(super) fn transact(batch: &FinalizedBatch, labels: &[String]) -> Result<(), NftError> {
    let socket = open()?;
    // `nftnl` splits a large batch into pages; `mnl`'s `send_all` would
    // send each page on its own, and the kernel only runs a batch that
    // begins and ends in one datagram. So send the pages as one.
    let bytes: Vec<u8> = batch.iter().flat_map(|page| page.iter().copied()).collect();
    let seqs: Range<u32> = batch.sequence_numbers();
    let expected = seqs.len();
    // Room for the whole batch and for an answer per message (each answer
    // is its own skb, about 1 KiB of buffer accounting). Best effort: if
    // it fails, a too-large batch fails below with a clear error.
    let _ = setsockopt(
        &socket,
        libc::SOL_SOCKET,
        libc::SO_SNDBUFFORCE,
        &((bytes.len() + 4096).max(1 << 18) as c_int),
    );
    let _ = setsockopt(
        &socket,
        libc::SOL_SOCKET,
        libc::SO_RCVBUFFORCE,
        &((expected * 2048).max(1 << 18) as c_int),
    );
    // With kernels >= 6.10 nftnl also asks for answers to the batch begin
    // and end messages; the object messages are the ones in between.
    let first_object = if expected == labels.len() + 2 {
        seqs.start + 1
    } else {
        seqs.start
    };
    let describe = |seq: u32| -> String {
        seq.checked_sub(first_object)
            .and_then(|i| labels.get(i as usize))
            .cloned()
            .unwrap_or_else(|| "the batch".to_string())
    };

    send(&socket, &bytes)?;

    let mut answered = vec![false; expected];
    let mut first_error: Option<(u32, i32)> = None;
    let mut buf = RecvBuf::new();
    while answered.iter().any(|a| !a) {
        let msgs = match receive(&socket, &mut buf) {
            Ok(m) => m,
            Err(NftError::Receive(e))
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                break
            }
            Err(e) => return Err(e),
        };
        for msg in msgs {
            let errno = match msg.kind {
                Reply::Ack => 0,
                Reply::Error(errno) => errno,
                Reply::Data(_) => continue,
            };
            if seqs.contains(&msg.seq) {
                answered[(msg.seq - seqs.start) as usize] = true;
            }
            if errno != 0 {
                // The first rejected message is the cause; later ones fail
                // because of it (e.g. a rule naming a set that failed).
                if first_error.is_none_or(|(s, _)| msg.seq < s) {
                    first_error = Some((msg.seq, errno));
                }
                // A failed batch is aborted without answering the batch end
                // message, and whatever answers there are were queued before
                // `send` returned: collect those, but do not wait for more.
                let drain = libc::timeval {
                    tv_sec: 0,
                    tv_usec: 1000,
                };
                setsockopt(&socket, libc::SOL_SOCKET, libc::SO_RCVTIMEO, &drain)
                    .map_err(NftError::Socket)?;
                // An answer outside the object messages (e.g. EPERM for the
                // whole batch) means no other answer will come.
                if msg.seq < first_object || msg.seq >= first_object + labels.len() as u32 {
                    answered.iter_mut().for_each(|a| *a = true);
                }
            }
        }
    }
    if let Some((seq, errno)) = first_error {
        return Err(NftError::Rejected {
            object: describe(seq),
            errno,
        });
    }
    let missing = answered.iter().filter(|a| !**a).count();
    if missing > 0 {
        return Err(NftError::NoAnswer { missing, expected });
    }
    Ok(())
}

/// What one netlink answer says.
enum Reply {
    Ack,
    Error(i32),
    Data(u16),
}

struct Answer {
    seq: u32,
    kind: Reply,
}

/// A receive buffer aligned for `nlmsghdr`, as `mnl` requires.
pub(super) struct RecvBuf {
    storage: Vec<u8>,
}

impl RecvBuf {
    pub(super) fn new() -> RecvBuf {
        RecvBuf {
            storage: vec![0; nftnl::nft_nlmsg_maxsize() as usize + 8],
        }
    }

    pub(super) fn aligned(&mut self) -> Result<&mut [u8], NftError> {
        let offset = self
            .storage
            .as_ptr()
            .align_offset(std::mem::align_of::<libc::nlmsghdr>());
        self.storage
            .get_mut(offset..)
            .ok_or(NftError::Malformed("cannot align the receive buffer"))
    }
}

/// Receives one datagram and decodes the netlink messages in it.
fn receive(socket: &mnl::Socket, buf: &mut RecvBuf) -> Result<Vec<Answer>, NftError> {
    let buf = buf.aligned()?;
    let msgs = loop {
        match socket.recv(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => break other.map_err(NftError::Receive)?,
        }
    };
    let mut out = Vec::new();
    for msg in msgs {
        let msg = msg.map_err(NftError::Receive)?;
        out.push(decode(msg)?);
    }
    Ok(out)
}

fn decode(msg: &[u8]) -> Result<Answer, NftError> {
    let u32_at = |at: usize| -> Option<u32> {
        msg.get(at..at + 4)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_ne_bytes)
    };
    let ty = msg
        .get(4..6)
        .and_then(|b| b.try_into().ok())
        .map(u16::from_ne_bytes)
        .ok_or(NftError::Malformed("short netlink header"))?;
    let seq = u32_at(8).ok_or(NftError::Malformed("short netlink header"))?;
    let kind = if ty == libc::NLMSG_ERROR as u16 {
        let code = u32_at(16).ok_or(NftError::Malformed("short netlink error message"))? as i32;
        if code == 0 {
            Reply::Ack
        } else {
            Reply::Error(code.saturating_neg())
        }
    } else {
        Reply::Data(ty)
    };
    Ok(Answer { seq, kind })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn get_table_request_is_well_formed() {
        let m = get_table_request(7).expect("request");
        assert_eq!(m.len(), 36); // 16 + 4 + (4 + 11, padded to 16)
        assert_eq!(u32::from_ne_bytes(m[0..4].try_into().expect("4")), 36);
        assert_eq!(u16::from_ne_bytes(m[4..6].try_into().expect("2")), 0x0a01);
        assert_eq!(&m[24..35], b"portcullis\0");
    }

    #[test]
    fn decode_reads_acks_and_errors() {
        let mut m = vec![0u8; 36];
        m[0..4].copy_from_slice(&36u32.to_ne_bytes());
        m[4..6].copy_from_slice(&2u16.to_ne_bytes());
        m[8..12].copy_from_slice(&5u32.to_ne_bytes());
        m[16..20].copy_from_slice(&(-libc::ENOENT).to_ne_bytes());
        let a = decode(&m).expect("decode");
        assert_eq!(a.seq, 5);
        assert!(matches!(a.kind, Reply::Error(e) if e == libc::ENOENT));
        m[16..20].copy_from_slice(&0i32.to_ne_bytes());
        assert!(matches!(decode(&m).expect("decode").kind, Reply::Ack));
    }

    #[test]
    fn redirect_rule_bytecode_matches_nft() {
        let id_of = |_: &str| 3;
        let v = stmt_exprs(
            &Stmt::Redirect {
                family: Family::V4,
                set: "redirect4".into(),
                port: 15001,
            },
            &id_of,
        );
        // nft --debug=netlink for the same text:
        //   meta load nfproto => reg 1; cmp eq reg 1 0x02
        //   meta load l4proto => reg 1; cmp eq reg 1 0x06
        //   payload load 4b @ network header + 12 => reg 1
        //   payload load 4b @ network header + 16 => reg 9
        //   meta load l4proto => reg 10
        //   payload load 2b @ transport header + 2 => reg 11
        //   lookup reg 1 set redirect4; counter
        //   immediate reg 1 0x993a; redir proto_min reg 1 flags 0x2
        assert_eq!(v.len(), 12);
        assert_eq!(
            v[5],
            Expr::Payload {
                base: libc::NFT_PAYLOAD_NETWORK_HEADER as u32,
                offset: 16,
                len: 4,
                dreg: Reg::word(1)
            }
        );
        assert_eq!(
            v[7],
            Expr::Payload {
                base: libc::NFT_PAYLOAD_TRANSPORT_HEADER as u32,
                offset: 2,
                len: 2,
                dreg: Reg::word(3)
            }
        );
        assert_eq!(
            v[10],
            Expr::Immediate {
                dreg: Reg::word(0),
                data: vec![0x3a, 0x99]
            }
        );
    }
}
