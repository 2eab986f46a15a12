//! Golden file and kernel tests.
//!
//! The kernel tests need root and the `nft` binary, and they fail — never
//! skip — without them: CI runs them as root. They all use the one table
//! `inet portcullis`, so they take [`KERNEL`] first and remove the table
//! when done, panicking or not ([`Cleanup`]).

use std::collections::BTreeSet;
use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Mutex, MutexGuard};

use super::layout::{Key, Layout};
use super::ruleset::{AddrPair, Cidr, FlowKey, GuardNet, Managed, Ruleset, L4};
use super::{apply, render};

fn v4(d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(198, 19, 0, d))
}

fn v6(d: u16) -> IpAddr {
    IpAddr::V6(Ipv6Addr::new(0xfd00, 0xbeef, 0, 0, 0, 0, 0, d))
}

fn managed(addr: IpAddr, name: &str) -> Managed {
    Managed {
        addr,
        comment: name.to_string(),
    }
}

fn flow(src: IpAddr, dst: IpAddr, proto: L4, port: u16, comment: &str) -> FlowKey {
    FlowKey {
        src,
        dst,
        proto,
        port,
        comment: comment.to_string(),
    }
}

/// The three-container example of `spec/rules.md`: app2 may call app1 on
/// port 80 through the proxy (it has HTTP rules), nothing else is allowed.
fn example() -> Ruleset {
    Ruleset {
        proxy_port: 15001,
        audit: false,
        managed: vec![
            managed(v4(2), "app1"),
            managed(v4(3), "app2"),
            managed(v4(4), "app3"),
        ],
        allow: vec![],
        redirect: vec![flow(
            v4(3),
            v4(2),
            L4::Tcp,
            80,
            "access[0] rules.json:9:5 app2->app1",
        )],
        audit_pairs: vec![],
        guard: vec![],
        log_drops: None,
    }
}

/// Everything at once: both families, every set non-empty, more elements
/// than fit in one netlink message, comments that need sanitising.
fn rich(audit: bool) -> Ruleset {
    let mut rs = example();
    rs.audit = audit;
    rs.proxy_port = 15002;
    rs.log_drops = Some(crate::policy::DropLog {
        per_second: 25,
        group: 77,
    });
    rs.managed.push(managed(v6(2), "app1"));
    rs.managed.push(managed(v6(3), "app2 \"quoted\"\nnewline"));
    for i in 0..300u16 {
        let addr = IpAddr::V4(Ipv4Addr::new(10, 77, (i / 250) as u8, (i % 250) as u8 + 1));
        rs.managed.push(managed(addr, &format!("bulk{i}")));
    }
    rs.allow
        .push(flow(v4(2), v4(4), L4::Udp, 53, "access[1] app1->app3 dns"));
    rs.allow
        .push(flow(v4(2), v4(4), L4::Tcp, 5432, &"long ".repeat(40)));
    rs.allow
        .push(flow(v6(2), v6(3), L4::Tcp, 443, "access[2] app1->app2 é"));
    rs.allow.push(flow(v4(4), v4(2), L4::Tcp, 8080, ""));
    rs.redirect
        .push(flow(v6(3), v6(2), L4::Tcp, 80, "access[0] app2->app1 v6"));
    rs.audit_pairs.push(AddrPair {
        src: v4(4),
        dst: v4(3),
        comment: "access[3] app3->app2 audit".into(),
    });
    rs.audit_pairs.push(AddrPair {
        src: v6(3),
        dst: v6(2),
        comment: "access[4] audit v6".into(),
    });
    // Byte-aligned and unaligned prefixes, a host, both families: nft
    // compiles each differently.
    for (i, net) in [
        "198.19.0.0/16",
        "10.78.0.0/25",
        "10.79.0.9/32",
        "fd00::/64",
        "fd01:19::/61",
        "fd02::9/128",
    ]
    .iter()
    .enumerate()
    {
        rs.guard.push(GuardNet {
            net: Cidr::parse(net).expect("cidr"),
            comment: format!("guard.networks[{i}]:3:{} \"net\"", 5 + i),
        });
    }
    rs
}

// === golden file ===

fn golden_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("nft/example.nft")
}

/// `nft/example.nft` is the rendering of [`example`], byte for byte.
/// Regenerate with `UPDATE_GOLDEN=1 cargo test`.
#[test]
fn golden_example() {
    let text = render::to_nft_text(&example());
    let path = golden_path();
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &text).expect("write golden file");
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("read {}: {e} (UPDATE_GOLDEN=1 creates it)", path.display()));
    assert_eq!(
        text,
        want,
        "{} is out of date; check the diff, then UPDATE_GOLDEN=1 cargo test",
        path.display()
    );
}

/// `nft/README.md` shows the listing of [`example`] as `nft list` prints it.
#[test]
fn readme_shows_the_listing() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("nft/README.md");
    let readme = std::fs::read_to_string(&path).expect("read nft/README.md");
    let listing =
        render::table_text(&example()).replace(" counter ", " counter packets 0 bytes 0 ");
    assert!(
        readme.contains(&listing),
        "{} does not show this listing:\n{listing}",
        path.display()
    );
}

// === helpers for the kernel tests ===

/// Serialises the tests that touch table `inet portcullis`.
static KERNEL: Mutex<()> = Mutex::new(());

/// Held by every test in this crate that touches table `inet portcullis`
/// (installing, removing, or running `nft` on it, even `nft -c`), since
/// tests in one binary run in parallel.
pub(crate) fn kernel_lock() -> MutexGuard<'static, ()> {
    KERNEL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Removes the table when dropped, also when the test panics.
struct Cleanup;

impl Drop for Cleanup {
    fn drop(&mut self) {
        if apply::remove().is_err() {
            let _ = Command::new("nft")
                .args(["delete", "table", "inet", "portcullis"])
                .status();
        }
    }
}

/// Runs `nft ARGS` with `stdin`, returning stdout; panics with stderr if
/// it cannot run or fails.
fn nft(args: &[&str], stdin: Option<&str>) -> String {
    let mut child = Command::new("nft")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run nft ({e}): these tests need nftables installed"));
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write to nft");
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().expect("wait for nft");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "nft {args:?} failed (these tests need root): {stderr}"
    );
    String::from_utf8(out.stdout).expect("utf-8 from nft")
}

/// `counter packets N bytes M` → `counter`: the rendered text's spelling.
fn strip_counters(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("counter packets ") {
        out.push_str(&rest[..i]);
        out.push_str("counter");
        let after = &rest[i + "counter packets ".len()..];
        let after = after.trim_start_matches(|c: char| c.is_ascii_digit());
        let after = after.strip_prefix(" bytes ").unwrap_or(after);
        rest = after.trim_start_matches(|c: char| c.is_ascii_digit());
    }
    out.push_str(rest);
    out
}

/// `nft --debug=netlink list` output without what legitimately differs:
/// handles, counter values, and the (hash) order of set elements.
fn normalize_bytecode(text: &str) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut elements: Vec<String> = Vec::new();
    let flush = |elements: &mut Vec<String>, out: &mut Vec<String>| {
        elements.sort();
        out.append(elements);
    };
    for line in text.lines() {
        if line.starts_with("\telement ") {
            elements.push(line.to_string());
            continue;
        }
        flush(&mut elements, &mut out);
        let line = if line.starts_with("inet portcullis ") && !line.contains('@') {
            // "inet portcullis forward 13 11": chain, handle, position.
            line.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        } else if line.contains("[ counter pkts") {
            "  [ counter ]".to_string()
        } else {
            line.to_string()
        };
        out.push(line);
    }
    flush(&mut elements, &mut out);
    out.join("\n")
}

/// The set elements of the listed table as (set, JSON value, comment).
fn json_elements(json: &str) -> BTreeSet<(String, String, String)> {
    let v: serde_json::Value = serde_json::from_str(json).expect("nft -j output is JSON");
    let mut out = BTreeSet::new();
    let items = v["nftables"].as_array().expect("nftables array");
    for item in items {
        let Some(set) = item.get("set") else { continue };
        let name = set["name"].as_str().expect("set name").to_string();
        for e in set["elem"].as_array().into_iter().flatten() {
            let (val, comment) = match e.get("elem") {
                Some(inner) => (
                    inner["val"].clone(),
                    inner["comment"].as_str().unwrap_or("").to_string(),
                ),
                None => (e.clone(), String::new()),
            };
            out.insert((name.clone(), val.to_string(), comment));
        }
    }
    out
}

/// What [`json_elements`] should find for `rs`.
fn expected_elements(rs: &Ruleset) -> BTreeSet<(String, String, String)> {
    let layout = Layout::new(rs);
    let mut out = BTreeSet::new();
    for set in &layout.sets {
        for e in &set.elements {
            let val = match &e.key {
                Key::Addr(a) => serde_json::json!(a.to_string()),
                Key::Flow {
                    src,
                    dst,
                    proto,
                    port,
                } => {
                    serde_json::json!({"concat": [src.to_string(), dst.to_string(), proto.name(), port]})
                }
                Key::Pair { src, dst } => {
                    serde_json::json!({"concat": [src.to_string(), dst.to_string()]})
                }
            };
            out.insert((set.name.clone(), val.to_string(), e.comment.clone()));
        }
    }
    out
}

struct Listing {
    text: String,
    json: String,
    bytecode: String,
}

fn list() -> Listing {
    let args = ["list", "table", "inet", "portcullis"];
    Listing {
        text: strip_counters(&nft(&args, None)),
        json: nft(&["-j", "list", "table", "inet", "portcullis"], None),
        bytecode: normalize_bytecode(&nft(
            &["--debug=netlink", "list", "table", "inet", "portcullis"],
            None,
        )),
    }
}

// === kernel tests ===

/// `nft -c` (parse and evaluate, change nothing) accepts every rendering.
/// The kernel does run the transaction before aborting it, and other
/// tests' queries can see that happen, hence the lock.
#[test]
fn nft_check_accepts_rendered_text() {
    let _lock = kernel_lock();
    for rs in [example(), rich(false), rich(true), Ruleset::default()] {
        nft(&["-c", "-f", "-"], Some(&render::to_nft_text(&rs)));
    }
}

/// Installing over netlink and loading the rendered text with `nft -f`
/// give the same table: same listing, same bytecode, same elements with
/// the same comments; and the listing is the rendered table text.
#[test]
fn netlink_install_equals_nft_f() {
    let _lock = kernel_lock();
    let _cleanup = Cleanup;
    for rs in [example(), rich(false), rich(true)] {
        apply::install(&rs).expect("install over netlink");
        assert!(apply::exists().expect("exists"));
        let a = list();

        assert!(apply::remove().expect("remove"), "table was there");
        assert!(!apply::exists().expect("exists"));

        nft(&["-f", "-"], Some(&render::to_nft_text(&rs)));
        let b = list();

        assert_eq!(a.text, b.text, "nft list after netlink vs after nft -f");
        assert_eq!(a.bytecode, b.bytecode, "rule bytecode differs");
        assert_eq!(a.text, render::table_text(&rs), "listing vs rendered text");
        let want = expected_elements(&rs);
        assert_eq!(json_elements(&a.json), want, "elements after netlink");
        assert_eq!(json_elements(&b.json), want, "elements after nft -f");
        assert!(apply::remove().expect("remove"));
    }
}

/// A second install replaces the first whole (no leftovers), in place of
/// a table that `nft -f` made; `remove` reports whether there was a table.
#[test]
fn install_replaces_and_remove_reports() {
    let _lock = kernel_lock();
    let _cleanup = Cleanup;
    let _ = apply::remove().expect("remove");
    assert!(!apply::remove().expect("remove when absent"));

    nft(&["-f", "-"], Some(&render::to_nft_text(&rich(true))));
    apply::install(&example()).expect("install over an existing table");
    let listed = strip_counters(&nft(&["list", "table", "inet", "portcullis"], None));
    assert_eq!(listed, render::table_text(&example()));

    apply::install(&example()).expect("install again");
    assert!(apply::remove().expect("remove"));
    assert!(!apply::exists().expect("exists"));
    assert!(!apply::remove().expect("remove again"));
}

/// A rejected batch changes nothing and names the object that failed.
#[test]
fn rejected_batch_keeps_the_old_table() {
    let _lock = kernel_lock();
    let _cleanup = Cleanup;
    apply::install(&example()).expect("install");
    let before = nft(&["list", "table", "inet", "portcullis"], None);

    // A key of the wrong family in a set: the kernel refuses the element
    // (wrong key length), so the whole batch is rolled back.
    let table = nftnl::Table::new(c"portcullis", nftnl::ProtoFamily::Inet);
    let mut batch = nftnl::Batch::new();
    batch.add(&table, nftnl::MsgType::Add);
    let mut elems =
        super::expr::SetElemsMsg::new(nftnl::ProtoFamily::Inet, c"portcullis", c"managed4", 0);
    elems.push(&[0u8; 16], None);
    batch.add(&elems, nftnl::MsgType::Add);
    let labels = ["table (declare)".to_string(), "bad element".to_string()];
    let err = apply::transact(&batch.finalize(), &labels)
        .expect_err("a 16-byte key in an ipv4 set must be refused");
    let msg = err.to_string();
    assert!(msg.contains("bad element"), "{msg}");
    assert!(msg.starts_with("nftables rejected"), "{msg}");

    assert_eq!(nft(&["list", "table", "inet", "portcullis"], None), before);
}

/// A ruleset far larger than one netlink message and one batch page:
/// elements are split over many messages, pages are sent as one datagram.
#[test]
fn large_ruleset_installs_whole() {
    let _lock = kernel_lock();
    let _cleanup = Cleanup;
    let mut rs = example();
    for i in 0..6000u32 {
        let [_, b, c, d] = i.to_be_bytes();
        let src = IpAddr::V4(Ipv4Addr::new(10, 90 + b, c, d));
        rs.managed
            .push(managed(src, &format!("bulk container {i}")));
        rs.allow.push(flow(
            src,
            v4(2),
            L4::Tcp,
            (i % 60000) as u16 + 1,
            &format!(
                "access[{i}] rules.json:{}:5 bulk{i}->app1 padding the comment out",
                i + 10
            ),
        ));
    }
    apply::install(&rs).expect("install a large ruleset");
    let json = nft(&["-j", "list", "table", "inet", "portcullis"], None);
    assert_eq!(json_elements(&json), expected_elements(&rs));
}

// === reading the table back (drift), in a private network namespace ===

/// Runs `f` on a thread in a network namespace of its own: its nftables
/// are its own, so no lock is needed and the host's table is untouched.
/// Commands it spawns inherit the namespace.
fn in_private_netns<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
                .expect("unshare a network namespace (needs root)");
            f()
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}

/// The fingerprint is stable while nothing changes, ignores counters,
/// and changes with any edit of the table; a missing table reads as none.
#[test]
fn fingerprint_sees_every_change_but_counters() {
    in_private_netns(|| {
        use super::readback::fingerprint;
        assert_eq!(fingerprint().expect("read back"), None, "no table yet");
        apply::install(&example()).expect("install over netlink");
        let first = fingerprint().expect("read back").expect("table exists");
        assert_eq!(fingerprint().expect("read back"), Some(first), "stable");
        // Counters move with traffic: resetting them is no change.
        nft(&["reset", "counters", "table", "inet", "portcullis"], None);
        assert_eq!(fingerprint().expect("read back"), Some(first), "counters");
        for edit in [
            "add element inet portcullis allow4 { 198.19.0.4 . 198.19.0.2 . tcp . 8080 }",
            "delete element inet portcullis managed4 { 198.19.0.4 }",
            "flush chain inet portcullis forward",
            "add rule inet portcullis input accept",
            "add set inet portcullis extra { type ipv4_addr; }",
        ] {
            apply::install(&example()).expect("install over netlink");
            let before = fingerprint().expect("read back").expect("table");
            nft(&edit.split(' ').collect::<Vec<_>>(), None);
            let after = fingerprint().expect("read back").expect("table");
            assert_ne!(before, after, "`nft {edit}` must change the fingerprint");
        }
        nft(&["flush", "ruleset"], None);
        assert_eq!(fingerprint().expect("read back"), None, "flushed");
    });
}

/// The `drops` sets count per pair: a packet from one managed address to
/// another that reaches a lookup of the set moves that element's counter
/// (read back by `pair_counters`), and only that one; the fingerprint
/// does not see it move. (The packets here go over loopback through an
/// input-chain lookup added for the test: the forward hook, where the
/// installed lookup is, needs a routed path, which the proxy lab tests.)
#[test]
fn pair_counters_count_per_element_and_are_no_drift() {
    in_private_netns(|| {
        use super::readback::{fingerprint, pair_counters};
        let ip = |args: &str| {
            let st = std::process::Command::new("ip")
                .args(args.split(' '))
                .status()
                .expect("ip");
            assert!(st.success(), "ip {args}");
        };
        ip("link set lo up");
        ip("addr add 198.19.0.2/32 dev lo");
        ip("addr add 198.19.0.3/32 dev lo");
        assert_eq!(pair_counters().expect("read back"), vec![], "no table yet");
        apply::install(&example()).expect("install over netlink");
        let read = pair_counters().expect("read back");
        assert_eq!(read.len(), 6, "every ordered pair of app1..3: {read:?}");
        assert!(
            read.iter().all(|c| c.packets == 0 && c.bytes == 0),
            "{read:?}"
        );
        nft(
            // UDP only: app1's port-unreachable answers would count too.
            &"add rule inet portcullis input meta l4proto udp ip saddr . ip daddr @drops4"
                .split(' ')
                .collect::<Vec<_>>(),
            None,
        );
        let before = fingerprint().expect("read back");
        let s = std::net::UdpSocket::bind("198.19.0.3:0").expect("bind app2's address");
        for _ in 0..3 {
            s.send_to(b"hello", "198.19.0.2:9").expect("send to app1");
        }
        assert_eq!(
            fingerprint().expect("read back"),
            before,
            "counters are no drift"
        );
        let read = pair_counters().expect("read back");
        let counted: Vec<_> = read.iter().filter(|c| c.packets > 0).collect();
        assert_eq!(counted.len(), 1, "{read:?}");
        let c = counted[0];
        assert_eq!(
            (c.src.to_string(), c.dst.to_string(), c.packets),
            ("198.19.0.3".into(), "198.19.0.2".into(), 3)
        );
        assert!(c.bytes >= 3 * (20 + 8 + 5), "{c:?}");
        nft(&["flush", "ruleset"], None);
    });
}

/// The counters of the rules are read back with their comments: the
/// installed default-deny rules at 0, and a rule made by `nft` with
/// counter values of its own read as the kernel holds them.
#[test]
fn rule_counters_are_read_back_with_their_comments() {
    in_private_netns(|| {
        use super::readback::{rule_counters, RuleCounter};
        assert_eq!(rule_counters().expect("read back"), vec![], "no table yet");
        apply::install(&example()).expect("install over netlink");
        let read = rule_counters().expect("read back");
        for family in ["ipv4", "ipv6"] {
            let comment = format!("default deny between managed containers ({family})");
            assert!(
                read.iter()
                    .any(|c| c.comment == comment && c.packets == 0 && c.bytes == 0),
                "{comment} not read back: {read:?}"
            );
        }
        nft(
            &[
                "add",
                "rule",
                "inet",
                "portcullis",
                "forward",
                "counter",
                "packets",
                "5",
                "bytes",
                "300",
                "comment",
                "\"counted\"",
            ],
            None,
        );
        let read = rule_counters().expect("read back");
        assert_eq!(
            read.iter().find(|c| c.comment == "counted"),
            Some(&RuleCounter {
                comment: "counted".into(),
                packets: 5,
                bytes: 300
            }),
            "{read:?}"
        );
        nft(&["flush", "ruleset"], None);
    });
}
