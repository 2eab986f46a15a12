//! The nftables objects `nftnl` does not offer, built on its public
//! [`Expression`] and [`NlMsg`] traits with the `nftnl-sys` constants:
//!
//! - expressions that load into any register (the crate's `Payload` and
//!   `Meta` always use register 1, but a concatenated key needs its fields
//!   in consecutive 32-bit registers), `lookup` of a named set by name and
//!   id, `redir` with a port register, `log prefix`;
//! - named, mutable sets with concatenated keys ([`SetMsg`]) and their
//!   elements with comments ([`SetElemsMsg`]) — the crate's sets are
//!   anonymous and constant, with address keys only.
//!
//! Every object is encoded the way nft 1.0.6 encodes the same statement
//! (checked against `nft --debug=netlink`), so `nft list` prints what was
//! installed here exactly as it prints what `nft -f` installed.
//!
//! This is the one file with FFI calls besides the socket options in
//! `apply.rs`; each `unsafe` block is one call on a pointer this file
//! allocated and still owns.
#![allow(unsafe_code)]

use std::ffi::{c_void, CStr};
use std::os::raw::{c_char, c_int};
use std::ptr::NonNull;

use nftnl::expr::Expression;
use nftnl::nftnl_sys::{self as sys, libc};
use nftnl::{MsgType, NlMsg, ProtoFamily, Rule};

/// Aborts on a failed libnftnl allocation, as Rust itself does on OOM: the
/// allocations here are a few bytes, so failing means the process is done.
fn alloc_or_abort<T>(ptr: *mut T) -> NonNull<T> {
    match NonNull::new(ptr) {
        Some(p) => p,
        None => std::process::abort(),
    }
}

/// libnftnl setters that copy data return -1 only when that copy cannot be
/// allocated; treated like any other allocation failure.
fn copied_or_abort(ret: c_int) {
    if ret < 0 {
        std::process::abort();
    }
}

// === impl Reg ===

/// A data register in the numbering nft uses on the wire: the first word of
/// each 16-byte register as `NFT_REG_1..4`, any other 32-bit word as
/// `NFT_REG32_xx` (the kernel accepts both; nft prefers the former).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Reg(u32);

impl Reg {
    /// The register holding 32-bit word `n` (0-based) of the register file.
    pub(crate) fn word(n: u32) -> Reg {
        if n % 4 == 0 {
            Reg(libc::NFT_REG_1 as u32 + n / 4)
        } else {
            Reg(libc::NFT_REG32_00 as u32 + n)
        }
    }

    fn raw(self) -> u32 {
        self.0
    }
}

// === impl Expr ===

/// One nftables expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Expr {
    /// `meta KEY` into `dreg`.
    Meta {
        key: u32,
        dreg: Reg,
    },
    /// `len` bytes at `offset` of header `base` into `dreg`.
    Payload {
        base: u32,
        offset: u32,
        len: u32,
        dreg: Reg,
    },
    /// Compare `sreg` with `data`.
    Cmp {
        op: u32,
        sreg: Reg,
        data: Vec<u8>,
    },
    /// `dreg = (sreg & mask) ^ xor`.
    Bitwise {
        sreg: Reg,
        dreg: Reg,
        mask: Vec<u8>,
        xor: Vec<u8>,
    },
    /// `ct KEY` into `dreg`.
    Ct {
        key: u32,
        dreg: Reg,
    },
    /// Match if the key starting at `sreg` is in the named set.
    Lookup {
        sreg: Reg,
        set: String,
        set_id: u32,
        /// `!= @set`: match if the key is *not* in the set.
        invert: bool,
    },
    Counter,
    /// `log prefix "…"` (to the kernel log), or with `group` to NFLOG.
    Log {
        prefix: String,
        group: Option<u16>,
    },
    /// `limit rate RATE/second` (burst 5 packets, nft's default): the rule
    /// ends here for packets over the rate.
    Limit {
        rate: u64,
    },
    /// A constant into a data register.
    Immediate {
        dreg: Reg,
        data: Vec<u8>,
    },
    /// `accept`, `drop`… (`NF_ACCEPT`, `NF_DROP`).
    Verdict(i32),
    /// Redirect to the local port held in `proto_min`.
    Redir {
        proto_min: Reg,
        flags: u32,
    },
}

fn new_expr(name: &CStr) -> NonNull<sys::nftnl_expr> {
    // SAFETY: `name` is a NUL-terminated string that libnftnl only reads.
    alloc_or_abort(unsafe { sys::nftnl_expr_alloc(name.as_ptr()) })
}

fn set_u32(e: NonNull<sys::nftnl_expr>, attr: u32, value: u32) {
    // SAFETY: `e` is a live expression allocated by `new_expr`.
    unsafe { sys::nftnl_expr_set_u32(e.as_ptr(), attr as u16, value) }
}

fn set_bytes(e: NonNull<sys::nftnl_expr>, attr: u32, data: &[u8]) {
    // SAFETY: `e` is live; libnftnl copies `data.len()` bytes from `data`.
    let ret = unsafe {
        sys::nftnl_expr_set(
            e.as_ptr(),
            attr as u16,
            data.as_ptr().cast::<c_void>(),
            data.len() as u32,
        )
    };
    copied_or_abort(ret);
}

fn set_str(e: NonNull<sys::nftnl_expr>, attr: u32, s: &str) {
    // Strings here are set names and a fixed log prefix: no NUL inside.
    let mut z = Vec::with_capacity(s.len() + 1);
    z.extend(s.bytes().filter(|&b| b != 0));
    z.push(0);
    // SAFETY: `e` is live; `z` is NUL-terminated and libnftnl copies it.
    let ret =
        unsafe { sys::nftnl_expr_set_str(e.as_ptr(), attr as u16, z.as_ptr().cast::<c_char>()) };
    copied_or_abort(ret);
}

impl Expression for Expr {
    fn to_expr(&self, _rule: &Rule<'_>) -> NonNull<sys::nftnl_expr> {
        match self {
            Expr::Meta { key, dreg } => {
                let e = new_expr(c"meta");
                set_u32(e, sys::NFTNL_EXPR_META_KEY, *key);
                set_u32(e, sys::NFTNL_EXPR_META_DREG, dreg.raw());
                e
            }
            Expr::Payload {
                base,
                offset,
                len,
                dreg,
            } => {
                let e = new_expr(c"payload");
                set_u32(e, sys::NFTNL_EXPR_PAYLOAD_DREG, dreg.raw());
                set_u32(e, sys::NFTNL_EXPR_PAYLOAD_BASE, *base);
                set_u32(e, sys::NFTNL_EXPR_PAYLOAD_OFFSET, *offset);
                set_u32(e, sys::NFTNL_EXPR_PAYLOAD_LEN, *len);
                e
            }
            Expr::Cmp { op, sreg, data } => {
                let e = new_expr(c"cmp");
                set_u32(e, sys::NFTNL_EXPR_CMP_SREG, sreg.raw());
                set_u32(e, sys::NFTNL_EXPR_CMP_OP, *op);
                set_bytes(e, sys::NFTNL_EXPR_CMP_DATA, data);
                e
            }
            Expr::Bitwise {
                sreg,
                dreg,
                mask,
                xor,
            } => {
                let e = new_expr(c"bitwise");
                set_u32(e, sys::NFTNL_EXPR_BITWISE_SREG, sreg.raw());
                set_u32(e, sys::NFTNL_EXPR_BITWISE_DREG, dreg.raw());
                set_u32(e, sys::NFTNL_EXPR_BITWISE_LEN, mask.len() as u32);
                set_bytes(e, sys::NFTNL_EXPR_BITWISE_MASK, mask);
                set_bytes(e, sys::NFTNL_EXPR_BITWISE_XOR, xor);
                e
            }
            Expr::Ct { key, dreg } => {
                let e = new_expr(c"ct");
                set_u32(e, sys::NFTNL_EXPR_CT_KEY, *key);
                set_u32(e, sys::NFTNL_EXPR_CT_DREG, dreg.raw());
                e
            }
            Expr::Lookup {
                sreg,
                set,
                set_id,
                invert,
            } => {
                let e = new_expr(c"lookup");
                set_u32(e, sys::NFTNL_EXPR_LOOKUP_SREG, sreg.raw());
                set_str(e, sys::NFTNL_EXPR_LOOKUP_SET, set);
                set_u32(e, sys::NFTNL_EXPR_LOOKUP_SET_ID, *set_id);
                if *invert {
                    // NFT_LOOKUP_F_INV
                    set_u32(e, sys::NFTNL_EXPR_LOOKUP_FLAGS, 1);
                }
                e
            }
            Expr::Counter => new_expr(c"counter"),
            Expr::Log { prefix, group } => {
                let e = new_expr(c"log");
                set_str(e, sys::NFTNL_EXPR_LOG_PREFIX, prefix);
                if let Some(g) = group {
                    // SAFETY: `e` is a live expression allocated above.
                    unsafe {
                        sys::nftnl_expr_set_u16(e.as_ptr(), sys::NFTNL_EXPR_LOG_GROUP as u16, *g)
                    };
                }
                e
            }
            Expr::Limit { rate } => {
                const NFT_LIMIT_PKTS: u32 = 0;
                const PER_SECOND: u64 = 1;
                const BURST: u32 = 5;
                let e = new_expr(c"limit");
                // SAFETY: `e` is a live expression allocated above.
                unsafe {
                    sys::nftnl_expr_set_u64(e.as_ptr(), sys::NFTNL_EXPR_LIMIT_RATE as u16, *rate);
                    sys::nftnl_expr_set_u64(
                        e.as_ptr(),
                        sys::NFTNL_EXPR_LIMIT_UNIT as u16,
                        PER_SECOND,
                    );
                }
                set_u32(e, sys::NFTNL_EXPR_LIMIT_BURST, BURST);
                set_u32(e, sys::NFTNL_EXPR_LIMIT_TYPE, NFT_LIMIT_PKTS);
                set_u32(e, sys::NFTNL_EXPR_LIMIT_FLAGS, 0);
                e
            }
            Expr::Immediate { dreg, data } => {
                let e = new_expr(c"immediate");
                set_u32(e, sys::NFTNL_EXPR_IMM_DREG, dreg.raw());
                set_bytes(e, sys::NFTNL_EXPR_IMM_DATA, data);
                e
            }
            Expr::Verdict(v) => {
                let e = new_expr(c"immediate");
                set_u32(e, sys::NFTNL_EXPR_IMM_DREG, libc::NFT_REG_VERDICT as u32);
                set_u32(e, sys::NFTNL_EXPR_IMM_VERDICT, *v as u32);
                e
            }
            Expr::Redir { proto_min, flags } => {
                let e = new_expr(c"redir");
                set_u32(e, sys::NFTNL_EXPR_REDIR_REG_PROTO_MIN, proto_min.raw());
                set_u32(e, sys::NFTNL_EXPR_REDIR_FLAGS, *flags);
                e
            }
        }
    }
}

// === impl SetMsg ===

fn new_set(family: ProtoFamily, table: &CStr, name: &CStr, id: u32) -> NonNull<sys::nftnl_set> {
    // SAFETY: plain allocation, checked for NULL.
    let set = alloc_or_abort(unsafe { sys::nftnl_set_alloc() });
    let s = set.as_ptr();
    // SAFETY: `s` is live; the strings are NUL-terminated and copied.
    copied_or_abort(unsafe {
        sys::nftnl_set_set_str(s, sys::NFTNL_SET_TABLE as u16, table.as_ptr())
    });
    // SAFETY: as above.
    copied_or_abort(unsafe {
        sys::nftnl_set_set_str(s, sys::NFTNL_SET_NAME as u16, name.as_ptr())
    });
    // SAFETY: `s` is live.
    unsafe { sys::nftnl_set_set_u32(s, sys::NFTNL_SET_FAMILY as u16, family as u32) };
    // SAFETY: `s` is live.
    unsafe { sys::nftnl_set_set_u32(s, sys::NFTNL_SET_ID as u16, id) };
    set
}

/// A named set (not anonymous, not constant: its elements belong to the
/// table, not to a rule), as `NFT_MSG_NEWSET`.
pub(crate) struct SetMsg {
    set: NonNull<sys::nftnl_set>,
    family: ProtoFamily,
}

impl SetMsg {
    /// `id` must be unique in the batch; rules refer to the set by name and
    /// id. `userdata` is what nft stores in `NFTA_SET_USERDATA` (key byte
    /// order and, for concatenations, the typeof blob).
    pub(crate) fn new(
        family: ProtoFamily,
        table: &CStr,
        name: &CStr,
        id: u32,
        key_type: u32,
        key_len: u32,
        userdata: &[u8],
    ) -> SetMsg {
        let set = new_set(family, table, name, id);
        let s = set.as_ptr();
        // SAFETY: `s` is live (allocated by `new_set` above).
        unsafe { sys::nftnl_set_set_u32(s, sys::NFTNL_SET_FLAGS as u16, 0) };
        // SAFETY: as above.
        unsafe { sys::nftnl_set_set_u32(s, sys::NFTNL_SET_KEY_TYPE as u16, key_type) };
        // SAFETY: as above.
        unsafe { sys::nftnl_set_set_u32(s, sys::NFTNL_SET_KEY_LEN as u16, key_len) };
        // SAFETY: `s` is live; libnftnl copies `userdata.len()` bytes.
        copied_or_abort(unsafe {
            sys::nftnl_set_set_data(
                s,
                sys::NFTNL_SET_USERDATA as u16,
                userdata.as_ptr().cast::<c_void>(),
                userdata.len() as u32,
            )
        });
        SetMsg { set, family }
    }

    /// `counter` in the set's declaration (`NFTA_SET_EXPR`): the kernel
    /// gives every element its own counter, which lookups of the set
    /// increment.
    pub(crate) fn with_counter(self) -> SetMsg {
        let name = c"counter";
        // SAFETY: plain allocation of an expression by its NUL-terminated
        // name, checked for NULL.
        let expr = alloc_or_abort(unsafe { sys::nftnl_expr_alloc(name.as_ptr()) });
        // SAFETY: both are live; the set takes ownership of the expression
        // and frees it with itself.
        unsafe { sys::nftnl_set_add_expr(self.set.as_ptr(), expr.as_ptr()) };
        self
    }
}

// SAFETY: a set message holds names, a few u32s and at most 255 bytes of
// user data: far below `nft_nlmsg_maxsize()`.
unsafe impl NlMsg for SetMsg {
    unsafe fn write(&self, buf: *mut c_void, seq: u32, msg_type: MsgType) {
        let (ty, flags) = match msg_type {
            MsgType::Add => (libc::NFT_MSG_NEWSET, libc::NLM_F_CREATE | libc::NLM_F_ACK),
            MsgType::Del => (libc::NFT_MSG_DELSET, libc::NLM_F_ACK),
        };
        // SAFETY: the caller (nftnl's `Batch`) passes a buffer of
        // `nft_nlmsg_maxsize()` bytes, as the trait requires.
        let header = unsafe {
            sys::nftnl_nlmsg_build_hdr(
                buf.cast::<c_char>(),
                ty as u16,
                self.family as u16,
                flags as u16,
                seq,
            )
        };
        // SAFETY: `header` was just built in that buffer; `self.set` is live.
        unsafe { sys::nftnl_set_nlmsg_build_payload(header, self.set.as_ptr()) };
    }
}

impl Drop for SetMsg {
    fn drop(&mut self) {
        // SAFETY: allocated by `new_set`, freed once here.
        unsafe { sys::nftnl_set_free(self.set.as_ptr()) };
    }
}

// === impl SetElemsMsg ===

/// At most this many elements go in one `NFT_MSG_NEWSETELEM`: an element
/// is at most ~200 bytes (40-byte key, 128-byte comment, attribute
/// headers), and the element list is one netlink attribute, whose length
/// is 16 bits.
pub(crate) const ELEMS_PER_MSG: usize = 128;

/// A batch of elements for one named set, as `NFT_MSG_NEWSETELEM`.
pub(crate) struct SetElemsMsg {
    set: NonNull<sys::nftnl_set>,
    family: ProtoFamily,
    len: usize,
}

impl SetElemsMsg {
    /// Elements for the set called `name` with batch id `id`.
    pub(crate) fn new(family: ProtoFamily, table: &CStr, name: &CStr, id: u32) -> SetElemsMsg {
        SetElemsMsg {
            set: new_set(family, table, name, id),
            family,
            len: 0,
        }
    }

    /// Adds an element. `key` is at most 64 bytes (`NFT_DATA_VALUE_MAXLEN`);
    /// `userdata` is the TLV-encoded comment, if any. Returns false, adding
    /// nothing, once [`ELEMS_PER_MSG`] elements are in.
    pub(crate) fn push(&mut self, key: &[u8], userdata: Option<&[u8]>) -> bool {
        if self.len >= ELEMS_PER_MSG {
            return false;
        }
        // SAFETY: plain allocation, checked for NULL.
        let elem = alloc_or_abort(unsafe { sys::nftnl_set_elem_alloc() });
        // SAFETY: `elem` is live; libnftnl copies `key.len()` bytes.
        let ret = unsafe {
            sys::nftnl_set_elem_set(
                elem.as_ptr(),
                sys::NFTNL_SET_ELEM_KEY as u16,
                key.as_ptr().cast::<c_void>(),
                key.len() as u32,
            )
        };
        copied_or_abort(ret);
        if let Some(ud) = userdata {
            // SAFETY: `elem` is live; libnftnl copies `ud.len()` bytes.
            let ret = unsafe {
                sys::nftnl_set_elem_set(
                    elem.as_ptr(),
                    sys::NFTNL_SET_ELEM_USERDATA as u16,
                    ud.as_ptr().cast::<c_void>(),
                    ud.len() as u32,
                )
            };
            copied_or_abort(ret);
        }
        // SAFETY: both live; the set takes ownership of `elem` and frees it
        // with itself.
        unsafe { sys::nftnl_set_elem_add(self.set.as_ptr(), elem.as_ptr()) };
        self.len += 1;
        true
    }
}

// SAFETY: at most `ELEMS_PER_MSG` elements of at most ~200 bytes each, well
// under `nft_nlmsg_maxsize()` (64 KiB plus a page).
unsafe impl NlMsg for SetElemsMsg {
    unsafe fn write(&self, buf: *mut c_void, seq: u32, msg_type: MsgType) {
        let (ty, flags) = match msg_type {
            MsgType::Add => (
                libc::NFT_MSG_NEWSETELEM,
                libc::NLM_F_CREATE | libc::NLM_F_EXCL | libc::NLM_F_ACK,
            ),
            MsgType::Del => (libc::NFT_MSG_DELSETELEM, libc::NLM_F_ACK),
        };
        // SAFETY: the caller passes a buffer of `nft_nlmsg_maxsize()` bytes.
        let header = unsafe {
            sys::nftnl_nlmsg_build_hdr(
                buf.cast::<c_char>(),
                ty as u16,
                self.family as u16,
                flags as u16,
                seq,
            )
        };
        // SAFETY: `header` was just built in that buffer; `self.set` is live.
        unsafe { sys::nftnl_set_elems_nlmsg_build_payload(header, self.set.as_ptr()) };
    }
}

impl Drop for SetElemsMsg {
    fn drop(&mut self) {
        // SAFETY: allocated by `new_set`, freed once here (with its elements).
        unsafe { sys::nftnl_set_free(self.set.as_ptr()) };
    }
}

// === user data ===

/// One user-data TLV (`struct nftnl_udata`: type, length, value).
fn udata_tlv(out: &mut Vec<u8>, ty: u8, value: &[u8]) {
    out.push(ty);
    out.push(value.len() as u8);
    out.extend_from_slice(value);
}

/// A comment as nft stores it in rule and set-element user data: TLV type
/// 0 (`NFTNL_UDATA_RULE_COMMENT` = `NFTNL_UDATA_SET_ELEM_COMMENT`), the
/// string with its NUL. `comment` is at most 125 bytes (sanitised).
pub(crate) fn comment_udata(comment: &str) -> Vec<u8> {
    let mut value: Vec<u8> = comment.bytes().take(254).collect();
    value.push(0);
    let mut out = Vec::with_capacity(value.len() + 2);
    udata_tlv(&mut out, sys::NFTNL_UDATA_SET_ELEM_COMMENT as u8, &value);
    out
}

/// What nft 1.0.6 puts in `NFTA_SET_USERDATA` for a `type …` set: the key
/// byte order (big endian for a single address type, "invalid" for a
/// concatenation), and for a concatenation a typeof record naming a concat
/// expression with no sub-expressions. Values are u32 in host order.
pub(crate) fn set_udata(concat: bool) -> Vec<u8> {
    const BYTEORDER_INVALID: u32 = 0;
    const BYTEORDER_BIG_ENDIAN: u32 = 2;
    const EXPR_CONCAT: u32 = 13;
    let mut out = Vec::new();
    let order = if concat {
        BYTEORDER_INVALID
    } else {
        BYTEORDER_BIG_ENDIAN
    };
    udata_tlv(
        &mut out,
        sys::NFTNL_UDATA_SET_KEYBYTEORDER as u8,
        &order.to_ne_bytes(),
    );
    if concat {
        let mut typeof_ = Vec::new();
        udata_tlv(
            &mut typeof_,
            sys::NFTNL_UDATA_SET_TYPEOF_EXPR as u8,
            &EXPR_CONCAT.to_ne_bytes(),
        );
        udata_tlv(&mut typeof_, sys::NFTNL_UDATA_SET_TYPEOF_DATA as u8, &[]);
        udata_tlv(&mut out, sys::NFTNL_UDATA_SET_KEY_TYPEOF as u8, &typeof_);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registers_use_nft_numbering() {
        assert_eq!(Reg::word(0).raw(), 1); // NFT_REG_1
        assert_eq!(Reg::word(1).raw(), 9); // NFT_REG32_01
        assert_eq!(Reg::word(3).raw(), 11);
        assert_eq!(Reg::word(4).raw(), 2); // NFT_REG_2
        assert_eq!(Reg::word(9).raw(), 17);
    }

    #[test]
    fn udata_matches_what_nft_sends() {
        assert_eq!(comment_udata("a"), [0, 2, b'a', 0]);
        let single = set_udata(false);
        assert_eq!(single[..2], [0, 4]);
        assert_eq!(single[2..], 2u32.to_ne_bytes());
        let concat = set_udata(true);
        let mut want = vec![0, 4];
        want.extend(0u32.to_ne_bytes());
        want.extend([3, 8, 0, 4]);
        want.extend(13u32.to_ne_bytes());
        want.extend([1, 0]);
        assert_eq!(concat, want);
    }
}
