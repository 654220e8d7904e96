//! Watches the server namespace's firewall: an nftables netlink listener (the multicast group
//! `nft monitor` uses) on its own thread, timestamping every rule added or deleted with the
//! same monotonic clock as the knocks. iptables on Debian 12 is iptables-nft, so every
//! `iptables -I/-D` shows up here the moment the kernel commits it. Elements added to or
//! deleted from knockd's `inet knockd allow4` set (`Firewall = nftables`) count as rules too.

use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use nix::errno::Errno;
use nix::sys::socket::{
    bind, recv, setsockopt, socket, sockopt, AddressFamily, MsgFlags, NetlinkAddr, SockFlag,
    SockProtocol, SockType,
};
use nix::sys::time::TimeVal;

use knock_e2e::traffic::netns::create_in;

/// nfnetlink multicast group of nftables (NFNLGRP_NFTABLES).
const NFNLGRP_NFTABLES: u32 = 7;
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFT_MSG_NEWRULE: u16 = 6;
const NFT_MSG_DELRULE: u16 = 8;
const NFT_MSG_NEWSETELEM: u16 = 12;
const NFT_MSG_DELSETELEM: u16 = 14;
const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_SET_ELEM_KEY: u16 = 1;
/// Set-element "handles" are made from the key, above any real rule handle.
const ELEM_HANDLE: u64 = 1 << 63;
const NFTA_RULE_HANDLE: u16 = 3;
const NFTA_RULE_EXPRESSIONS: u16 = 4;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;
const NFTA_PAYLOAD_BASE: u16 = 2;
const NFTA_PAYLOAD_OFFSET: u16 = 3;
const NFTA_PAYLOAD_LEN: u16 = 4;
const NFTA_CMP_DATA: u16 = 3;
const NFTA_DATA_VALUE: u16 = 1;
const NFT_PAYLOAD_NETWORK_HEADER: u32 = 1;
/// Offset of the source address in the IPv4 header.
const IPV4_SADDR_OFFSET: u32 = 12;
const NLMSG_HDRLEN: usize = 16;
const NFGENMSG_LEN: usize = 4;
/// How often the listener thread checks whether it should stop.
const STOP_POLL: Duration = Duration::from_millis(100);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Added,
    Removed,
}

/// A rule added to or deleted from some chain of the server namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuleChange {
    pub change: Change,
    /// The kernel's rule handle.
    pub handle: u64,
    /// The IPv4 source address the rule matches (`-s ADDR/32`), if any.
    pub saddr: Option<Ipv4Addr>,
}

/// A [`RuleChange`] and when this process received it.
#[derive(Debug, Clone, Copy)]
pub struct RuleEvent {
    pub at: Instant,
    pub rule: RuleChange,
}

/// The listener thread and the events it received.
pub struct RuleMonitor {
    events: Receiver<RuleEvent>,
    stop: Arc<AtomicBool>,
    /// Receive errors other than the poll time-out: events lost to a full buffer (ENOBUFS).
    lost: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl RuleMonitor {
    /// Subscribes to nftables events in network namespace `ns`; events that happen after
    /// this returns are delivered.
    pub fn start(ns: &str) -> Result<RuleMonitor> {
        let fd = create_in(ns, subscribe)?;
        let (tx, events) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let lost = Arc::new(AtomicU64::new(0));
        let losses = Arc::clone(&lost);
        let thread = std::thread::Builder::new()
            .name("rule-monitor".into())
            .spawn(move || listen(&fd, &tx, &flag, &losses))
            .context("cannot start the rule monitor thread")?;
        Ok(RuleMonitor {
            events,
            stop,
            lost,
            thread: Some(thread),
        })
    }

    /// The next event, waiting until `deadline` at most.
    pub fn next_before(&self, deadline: Instant) -> Option<RuleEvent> {
        let wait = deadline.saturating_duration_since(Instant::now());
        self.events.recv_timeout(wait).ok()
    }

    /// How many times events were lost so far (the kernel's buffer overran: ENOBUFS).
    pub fn losses(&self) -> u64 {
        self.lost.load(Ordering::Relaxed)
    }
}

impl Drop for RuleMonitor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn subscribe() -> Result<OwnedFd> {
    let fd = socket(
        AddressFamily::Netlink,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkNetFilter,
    )
    .context("cannot open a netfilter netlink socket")?;
    let groups = 1 << (NFNLGRP_NFTABLES - 1);
    bind(fd.as_raw_fd(), &NetlinkAddr::new(0, groups))
        .context("cannot subscribe to nftables events")?;
    setsockopt(
        &fd,
        sockopt::ReceiveTimeout,
        &TimeVal::new(0, STOP_POLL.as_micros() as i64),
    )
    .context("cannot set a receive timeout on the netlink socket")?;
    let _ = setsockopt(&fd, sockopt::RcvBuf, &(4 << 20));
    Ok(fd)
}

fn listen(fd: &OwnedFd, tx: &Sender<RuleEvent>, stop: &AtomicBool, lost: &AtomicU64) {
    let mut buf = vec![0u8; 1 << 16];
    while !stop.load(Ordering::Relaxed) {
        // An error is a timeout (time to check `stop`), an interruption, or events lost
        // to a full buffer (ENOBUFS, counted): carry on.
        match recv(fd.as_raw_fd(), &mut buf, MsgFlags::empty()) {
            Ok(n) => {
                let at = Instant::now();
                for rule in parse_messages(&buf[..n]) {
                    if tx.send(RuleEvent { at, rule }).is_err() {
                        return;
                    }
                }
            }
            Err(Errno::ENOBUFS) => {
                lost.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {}
        }
    }
}

/// The rule changes in a buffer of netlink messages. Pure; ignores anything else.
pub fn parse_messages(buf: &[u8]) -> Vec<RuleChange> {
    let mut out = Vec::new();
    let mut off = 0;
    while off + NLMSG_HDRLEN <= buf.len() {
        let len = u32_ne(&buf[off..off + 4]) as usize;
        let kind = u16::from_ne_bytes([buf[off + 4], buf[off + 5]]);
        if len < NLMSG_HDRLEN || off + len > buf.len() {
            break;
        }
        let change = match (kind >> 8, kind & 0xff) {
            (NFNL_SUBSYS_NFTABLES, NFT_MSG_NEWRULE) => Some((Change::Added, false)),
            (NFNL_SUBSYS_NFTABLES, NFT_MSG_DELRULE) => Some((Change::Removed, false)),
            (NFNL_SUBSYS_NFTABLES, NFT_MSG_NEWSETELEM) => Some((Change::Added, true)),
            (NFNL_SUBSYS_NFTABLES, NFT_MSG_DELSETELEM) => Some((Change::Removed, true)),
            _ => None,
        };
        let body = &buf[off + NLMSG_HDRLEN..off + len];
        match (change, body.get(NFGENMSG_LEN..)) {
            (Some((change, false)), Some(attrs)) => out.push(parse_rule(change, attrs)),
            (Some((change, true)), Some(attrs)) => parse_elems(change, attrs, &mut out),
            _ => {}
        }
        off += align4(len);
    }
    out
}

fn parse_rule(change: Change, attrs: &[u8]) -> RuleChange {
    let mut rule = RuleChange {
        change,
        handle: 0,
        saddr: None,
    };
    for (kind, value) in Attrs(attrs) {
        match kind {
            NFTA_RULE_HANDLE if value.len() == 8 => {
                let mut b = [0u8; 8];
                b.copy_from_slice(value);
                rule.handle = u64::from_be_bytes(b);
            }
            NFTA_RULE_EXPRESSIONS => rule.saddr = source_address(value),
            _ => {}
        }
    }
    rule
}

/// Elements of `inet knockd allow4` (key: address . proto . port, each padded to 4 bytes).
fn parse_elems(change: Change, attrs: &[u8], out: &mut Vec<RuleChange>) {
    let (mut table, mut set, mut elems): (&[u8], &[u8], &[u8]) = (&[], &[], &[]);
    for (kind, value) in Attrs(attrs) {
        match kind {
            NFTA_SET_ELEM_LIST_TABLE => table = value,
            NFTA_SET_ELEM_LIST_SET => set = value,
            NFTA_SET_ELEM_LIST_ELEMENTS => elems = value,
            _ => {}
        }
    }
    if table != b"knockd\0" || set != b"allow4\0" {
        return;
    }
    for (kind, elem) in Attrs(elems) {
        if kind != NFTA_LIST_ELEM {
            continue;
        }
        let key = Attrs(elem)
            .find(|&(k, _)| k == NFTA_SET_ELEM_KEY)
            .and_then(|(_, k)| Attrs(k).find(|&(k, _)| k == NFTA_DATA_VALUE))
            .map(|(_, v)| v);
        if let Some(&[a, b, c, d, proto, _, _, _, p0, p1, ..]) = key {
            let port = u64::from(u16::from_be_bytes([p0, p1]));
            out.push(RuleChange {
                change,
                handle: ELEM_HANDLE
                    | (u64::from(u32::from_be_bytes([a, b, c, d])) << 24)
                    | (u64::from(proto) << 16)
                    | port,
                saddr: Some(Ipv4Addr::new(a, b, c, d)),
            });
        }
    }
}

/// `payload load 4b @ network header + 12` followed by `cmp eq ADDR`: what iptables-nft
/// makes of `-s ADDR/32`.
fn source_address(exprs: &[u8]) -> Option<Ipv4Addr> {
    let mut loads_saddr = false;
    for (kind, elem) in Attrs(exprs) {
        if kind != NFTA_LIST_ELEM {
            continue;
        }
        let mut name: &[u8] = &[];
        let mut data: &[u8] = &[];
        for (k, v) in Attrs(elem) {
            match k {
                NFTA_EXPR_NAME => name = v.split(|&b| b == 0).next().unwrap_or(v),
                NFTA_EXPR_DATA => data = v,
                _ => {}
            }
        }
        match name {
            b"payload" => {
                let field = |want: u16| {
                    Attrs(data)
                        .find(|&(k, v)| k == want && v.len() == 4)
                        .map(|(_, v)| u32_be(v))
                };
                loads_saddr = field(NFTA_PAYLOAD_BASE) == Some(NFT_PAYLOAD_NETWORK_HEADER)
                    && field(NFTA_PAYLOAD_OFFSET) == Some(IPV4_SADDR_OFFSET)
                    && field(NFTA_PAYLOAD_LEN) == Some(4);
            }
            b"cmp" if loads_saddr => {
                let value = Attrs(data)
                    .find(|&(k, _)| k == NFTA_CMP_DATA)
                    .and_then(|(_, d)| Attrs(d).find(|&(k, _)| k == NFTA_DATA_VALUE))
                    .map(|(_, v)| v);
                if let Some(&[a, b, c, d]) = value {
                    return Some(Ipv4Addr::new(a, b, c, d));
                }
                loads_saddr = false;
            }
            _ => loads_saddr = false,
        }
    }
    None
}

/// Iterator over netlink attributes: (type without the NESTED/BYTEORDER flags, value).
struct Attrs<'a>(&'a [u8]);

impl<'a> Iterator for Attrs<'a> {
    type Item = (u16, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let buf = self.0;
        if buf.len() < 4 {
            return None;
        }
        let len = usize::from(u16::from_ne_bytes([buf[0], buf[1]]));
        let kind = u16::from_ne_bytes([buf[2], buf[3]]) & 0x3fff;
        if len < 4 || len > buf.len() {
            self.0 = &[];
            return None;
        }
        self.0 = buf.get(align4(len)..).unwrap_or(&[]);
        Some((kind, &buf[4..len]))
    }
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

fn u32_ne(b: &[u8]) -> u32 {
    u32::from_ne_bytes([b[0], b[1], b[2], b[3]])
}

fn u32_be(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// Follows one address's rules through the events: which of its rules are in place, and
/// every other address that got a rule (a stray grant).
#[derive(Debug, Default)]
pub struct RuleBook {
    watched: Option<Ipv4Addr>,
    live: Vec<u64>,
    /// Rules added for addresses other than the watched one.
    pub strays: u64,
}

impl RuleBook {
    pub fn new(watched: Ipv4Addr) -> RuleBook {
        RuleBook {
            watched: Some(watched),
            ..RuleBook::default()
        }
    }

    /// Records an event; true if it added a rule for the watched address.
    pub fn apply(&mut self, ev: &RuleEvent) -> bool {
        let r = ev.rule;
        match r.change {
            Change::Added if r.saddr.is_some() && r.saddr == self.watched => {
                self.live.push(r.handle);
                true
            }
            Change::Added if r.saddr.is_some() => {
                self.strays += 1;
                false
            }
            Change::Added => false,
            Change::Removed => {
                self.live.retain(|&h| h != r.handle);
                false
            }
        }
    }

    /// True while a rule for the watched address is in place.
    pub fn watched_open(&self) -> bool {
        !self.live.is_empty()
    }

    /// Applies events until one adds a rule for the watched address (returns its time) or
    /// `deadline` passes.
    pub fn wait_added(&mut self, mon: &RuleMonitor, deadline: Instant) -> Option<Instant> {
        while let Some(ev) = mon.next_before(deadline) {
            if self.apply(&ev) {
                return Some(ev.at);
            }
        }
        None
    }

    /// Applies events until no rule for the watched address is left; false at `deadline`.
    pub fn wait_closed(&mut self, mon: &RuleMonitor, deadline: Instant) -> bool {
        while self.watched_open() {
            match mon.next_before(deadline) {
                Some(ev) => {
                    self.apply(&ev);
                }
                None => return false,
            }
        }
        true
    }

    /// Applies every event already received.
    pub fn drain(&mut self, mon: &RuleMonitor) {
        while let Some(ev) = mon.next_before(Instant::now()) {
            self.apply(&ev);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(kind: u16, value: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&((value.len() + 4) as u16).to_ne_bytes());
        v.extend_from_slice(&kind.to_ne_bytes());
        v.extend_from_slice(value);
        while v.len() % 4 != 0 {
            v.push(0);
        }
        v
    }

    fn nested(kind: u16, parts: &[Vec<u8>]) -> Vec<u8> {
        attr(kind | 0x8000, &parts.concat())
    }

    fn expr(name: &str, data: &[Vec<u8>]) -> Vec<u8> {
        let mut n = name.as_bytes().to_vec();
        n.push(0);
        nested(
            NFTA_LIST_ELEM,
            &[attr(NFTA_EXPR_NAME, &n), nested(NFTA_EXPR_DATA, data)],
        )
    }

    fn payload(base: u32, offset: u32, len: u32) -> Vec<u8> {
        expr(
            "payload",
            &[
                attr(1, &1u32.to_be_bytes()),
                attr(NFTA_PAYLOAD_BASE, &base.to_be_bytes()),
                attr(NFTA_PAYLOAD_OFFSET, &offset.to_be_bytes()),
                attr(NFTA_PAYLOAD_LEN, &len.to_be_bytes()),
            ],
        )
    }

    fn cmp(value: &[u8]) -> Vec<u8> {
        expr(
            "cmp",
            &[
                attr(1, &1u32.to_be_bytes()),
                attr(2, &0u32.to_be_bytes()),
                nested(NFTA_CMP_DATA, &[attr(NFTA_DATA_VALUE, value)]),
            ],
        )
    }

    fn message(msg: u16, handle: u64, exprs: &[Vec<u8>]) -> Vec<u8> {
        let mut body = vec![2, 0, 0, 0]; // nfgenmsg: NFPROTO_IPV4
        body.extend(attr(1, b"filter\0"));
        body.extend(attr(2, b"INPUT\0"));
        body.extend(attr(NFTA_RULE_HANDLE, &handle.to_be_bytes()));
        body.extend(nested(NFTA_RULE_EXPRESSIONS, exprs));
        let mut m = Vec::new();
        m.extend_from_slice(&((body.len() + NLMSG_HDRLEN) as u32).to_ne_bytes());
        m.extend_from_slice(&((NFNL_SUBSYS_NFTABLES << 8) | msg).to_ne_bytes());
        m.extend_from_slice(&[0; 10]);
        m.extend(body);
        m
    }

    /// `-s 10.99.77.2/32 -p tcp --dport 22 -j ACCEPT`, as iptables-nft encodes it.
    fn accept_rule(msg: u16, handle: u64, saddr: [u8; 4]) -> Vec<u8> {
        message(
            msg,
            handle,
            &[
                payload(NFT_PAYLOAD_NETWORK_HEADER, 12, 4),
                cmp(&saddr),
                expr("meta", &[attr(1, &16u32.to_be_bytes())]),
                cmp(&[6]),
                payload(2, 2, 2),
                cmp(&22u16.to_be_bytes()),
                expr("immediate", &[]),
            ],
        )
    }

    #[test]
    fn new_and_deleted_rules_with_their_source() {
        let mut buf = accept_rule(NFT_MSG_NEWRULE, 7, [10, 99, 77, 2]);
        buf.extend(accept_rule(NFT_MSG_DELRULE, 7, [10, 99, 77, 2]));
        let got = parse_messages(&buf);
        let saddr = Some(Ipv4Addr::new(10, 99, 77, 2));
        assert_eq!(
            got,
            vec![
                RuleChange {
                    change: Change::Added,
                    handle: 7,
                    saddr
                },
                RuleChange {
                    change: Change::Removed,
                    handle: 7,
                    saddr
                },
            ]
        );
    }

    #[test]
    fn a_rule_without_a_source_match_has_no_address() {
        // `-p tcp --dport 22`: the only 4-byte compare is not after a saddr load.
        let buf = message(
            NFT_MSG_NEWRULE,
            3,
            &[
                payload(NFT_PAYLOAD_NETWORK_HEADER, 16, 4),
                cmp(&[10, 99, 77, 1]),
                payload(2, 2, 2),
                cmp(&22u16.to_be_bytes()),
            ],
        );
        let got = parse_messages(&buf);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].saddr, None);
        assert_eq!(got[0].handle, 3);
    }

    fn setelem(msg: u16, set: &[u8], key: &[u8]) -> Vec<u8> {
        let mut body = vec![1, 0, 0, 0]; // nfgenmsg: NFPROTO_INET
        body.extend(attr(NFTA_SET_ELEM_LIST_TABLE, b"knockd\0"));
        body.extend(attr(NFTA_SET_ELEM_LIST_SET, set));
        body.extend(nested(
            NFTA_SET_ELEM_LIST_ELEMENTS,
            &[nested(
                NFTA_LIST_ELEM,
                &[nested(NFTA_SET_ELEM_KEY, &[attr(NFTA_DATA_VALUE, key)])],
            )],
        ));
        let mut m = Vec::new();
        m.extend_from_slice(&((body.len() + NLMSG_HDRLEN) as u32).to_ne_bytes());
        m.extend_from_slice(&((NFNL_SUBSYS_NFTABLES << 8) | msg).to_ne_bytes());
        m.extend_from_slice(&[0; 10]);
        m.extend(body);
        m
    }

    #[test]
    fn knockd_set_elements_count_as_rules() {
        let key = [10, 99, 77, 2, 6, 0, 0, 0, 0, 22, 0, 0];
        let mut buf = setelem(NFT_MSG_NEWSETELEM, b"allow4\0", &key);
        buf.extend(setelem(NFT_MSG_DELSETELEM, b"allow4\0", &key));
        buf.extend(setelem(NFT_MSG_NEWSETELEM, b"other\0", &key));
        let got = parse_messages(&buf);
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(got[0].change, Change::Added);
        assert_eq!(got[1].change, Change::Removed);
        assert_eq!(got[0].handle, got[1].handle);
        assert_eq!(got[0].saddr, Some(Ipv4Addr::new(10, 99, 77, 2)));
    }

    #[test]
    fn other_messages_and_garbage_are_ignored() {
        let mut other = accept_rule(NFT_MSG_NEWRULE, 1, [1, 2, 3, 4]);
        other[4] = 0; // NFT_MSG_NEWTABLE
        assert!(parse_messages(&other).is_empty());
        assert!(parse_messages(&[0xff; 40]).is_empty());
        assert!(parse_messages(&[]).is_empty());
        let mut truncated = accept_rule(NFT_MSG_NEWRULE, 1, [1, 2, 3, 4]);
        truncated.truncate(30);
        assert!(parse_messages(&truncated).is_empty());
    }

    #[test]
    fn rulebook_tracks_the_watched_address_and_counts_strays() {
        let at = Instant::now();
        let ev = |change, handle, saddr: [u8; 4]| RuleEvent {
            at,
            rule: RuleChange {
                change,
                handle,
                saddr: Some(Ipv4Addr::from(saddr)),
            },
        };
        let mut book = RuleBook::new(Ipv4Addr::new(10, 99, 77, 2));
        assert!(book.apply(&ev(Change::Added, 1, [10, 99, 77, 2])));
        assert!(!book.apply(&ev(Change::Added, 2, [10, 200, 0, 1])));
        assert!(book.watched_open());
        assert_eq!(book.strays, 1);
        book.apply(&ev(Change::Removed, 1, [10, 99, 77, 2]));
        assert!(!book.watched_open());
    }
}
