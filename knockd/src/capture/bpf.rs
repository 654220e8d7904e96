//! Fitting the capture filter to what libpcap can compile and the kernel can hold.
//!
//! [`crate::capture::filter::build`] writes the exact filter (per door, address family and flags). With
//! thousands of doors that expression is too big: libpcap's code generator and optimizer
//! recurse once per term (1,600 doors × 3 knocks overflowed a thread's default 2 MiB stack),
//! the optimizer is super-linear, and the kernel refuses classic BPF programs longer than
//! 4,096 instructions or larger than `net.core.optmem_max` (libpcap then filters in user space,
//! i.e. copies every packet). So [`fit`] compiles the exact filter, exactly as the capture will
//! (same libpcap, same link type, optimised), on a thread with a large stack, and when it does
//! not compile or does not fit it falls back to a coarser filter that still passes every
//! door's knocks: the union of all knock ports (merged into at most [`COARSE_MAX_RANGES`] port
//! ranges), and as a last resort every TCP and UDP packet. Userspace re-checks destination,
//! ports and flags of every packet, so a coarser filter costs CPU, never a knock.

use crate::config::model::{Door, Proto};
use std::net::IpAddr;

/// The kernel's limit on a classic BPF socket filter (BPF_MAXINSNS).
pub const KERNEL_MAX_INSNS: usize = 4096;
/// Stack for threads that compile filters (libpcap recursion depth grows with the expression;
/// this is address space, only the pages touched are used).
pub const COMPILE_STACK: usize = 256 << 20;
/// The exact filter is not tried above this many port and address tests (libpcap's optimizer
/// would take seconds and the result would not fit in the kernel anyway).
pub const EXACT_MAX_TESTS: usize = 1_000;
/// Nor when the doors have more than this many knock ports (per address) in all.
pub const EXACT_MAX_DOOR_TESTS: usize = 500;
/// Most port ranges in the coarse filter.
pub const COARSE_MAX_RANGES: usize = 200;

/// IPv6 packets whose next header is an extension header: the decoder walks the chain.
const IPV6_EXT: &str =
    "(ip6 and (ip6[6] == 0 or ip6[6] == 43 or ip6[6] == 44 or ip6[6] == 60 or ip6[6] == 51))";
/// New connections to any port (what the sweep guard watches), any destination.
const SWEEP_ANY: &str = "(tcp and (tcp[tcpflags] & (tcp-syn|tcp-ack) == tcp-syn)) or udp or (ip6 and ((ip6[6] == 6 and (ip6[53] & 0x12 == 0x02)) or ip6[6] == 17))";
/// Last resort: every TCP and UDP packet (and IPv6 with extension headers).
pub const ANY_KNOCK: &str = "tcp or udp or (ip6 and (ip6[6] == 0 or ip6[6] == 43 or ip6[6] == 44 or ip6[6] == 60 or ip6[6] == 51))";

/// How precise the installed filter is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Per door: destination, ports, TCP flags.
    Exact,
    /// Union of every door's knock ports (as port ranges), any destination, any flags.
    Ports,
    /// Every TCP and UDP packet.
    Any,
}

/// A filter expression that compiles and fits, and how it was chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fitted {
    pub expr: String,
    pub level: Level,
    /// Instructions of the compiled program.
    pub insns: usize,
    /// Why a coarser level was used (None for [`Level::Exact`]).
    pub fallback: Option<String>,
    /// Doors the filter is for.
    pub doors: usize,
}

impl Fitted {
    /// One line for the log and `knockd -t` when the filter is not exact.
    pub fn note(&self) -> Option<String> {
        let why = self.fallback.as_deref()?;
        let what = match self.level {
            Level::Exact => "exact",
            Level::Ports => "the union of all knock ports",
            Level::Any => "every TCP and UDP packet",
        };
        let of = if self.doors == 0 {
            String::new()
        } else {
            format!(" for {} door(s)", self.doors)
        };
        Some(format!(
            "warning: the exact capture filter{of} {why}; capturing {what} instead \
             ({} BPF instructions): every knock is still seen, knockd checks the rest in user space \
             at some CPU cost",
            self.insns
        ))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FitError {
    #[error("cannot compile a capture filter for {doors} door(s): {reason}")]
    Compile { doors: usize, reason: String },
}

/// Distinct knock ports (with protocol) of one door: at most 32 knocks, no allocation.
fn unique_ports(d: &Door) -> usize {
    let seq = &d.sequence;
    (0..seq.len())
        .filter(|&i| !seq[..i].contains(&seq[i]))
        .count()
}

/// Port tests of the exact filter per address (the distinct knock ports of every door): above
/// [`EXACT_MAX_DOOR_TESTS`] the exact filter is not even built. A pure function of the config,
/// so `-t`, start, reload and the engine all decide alike.
pub fn door_tests(doors: &[Door]) -> usize {
    doors.iter().map(unique_ports).sum()
}

/// Does `doors` get the coarse filter? Stops counting at the limit (cheap on 100,000 doors).
fn is_large(doors: &[Door]) -> bool {
    let mut n = 0;
    doors.iter().any(|d| {
        n += unique_ports(d);
        n > EXACT_MAX_DOOR_TESTS
    })
}

/// Why the exact filter is skipped for `doors`, if it is.
pub fn too_many_tests(doors: &[Door]) -> Option<String> {
    is_large(doors).then(|| {
        format!(
            "would test {} door ports per address (more than {EXACT_MAX_DOOR_TESTS})",
            door_tests(doors)
        )
    })
}

/// What a reload says when `doors` get the coarse filter (None when the exact one is tried).
pub fn coarse_note(doors: &[Door]) -> Option<String> {
    let why = too_many_tests(doors)?;
    Some(format!(
        "the exact capture filter for {} door(s) {why}; capturing the union of all \
         knock ports instead: every knock is still seen, knockd checks the rest in user space \
         at some CPU cost",
        doors.iter().filter(|d| !d.sequence.is_empty()).count()
    ))
}

/// The filter expression the engine hands to the capture thread: the exact one from
/// [`crate::capture::filter::build`], or for large configs the coarse [`ports_filter_of`] (cheap to
/// build: the exact text of 100,000 doors took seconds on the engine task).
pub fn expression(doors: &[Door], local: &[IpAddr]) -> String {
    if is_large(doors) {
        ports_filter_of(doors)
    } else {
        crate::capture::filter::build(doors, local)
    }
}

/// Choose and compile the filter for `doors` ([`super::filter_doors`]) on a capture of link type
/// `link` whose interface has addresses `local`, as the capture thread will.
pub fn fit(doors: &[Door], local: &[IpAddr], link: pcap::Linktype) -> Result<Fitted, FitError> {
    let knockable = doors.iter().filter(|d| !d.sequence.is_empty()).count();
    let mut f = fit_expr(&expression(doors, local), knockable, link)?;
    if let Some(why) = too_many_tests(doors) {
        if f.level == Level::Exact {
            f.level = Level::Ports;
        }
        f.fallback.get_or_insert(why);
    }
    Ok(f)
}

/// Fit `expr` (from [`expression`]): it, or the union of the knock ports it names, or
/// [`ANY_KNOCK`]. Runs the compiler on its own large-stack thread, so it is safe to call from
/// any thread.
pub fn fit_expr(expr: &str, doors: usize, link: pcap::Linktype) -> Result<Fitted, FitError> {
    std::thread::scope(|s| {
        std::thread::Builder::new()
            .name("bpf-compile".into())
            .stack_size(COMPILE_STACK)
            .spawn_scoped(s, || fit_here(expr, doors, link))
            .map_err(|e| FitError::Compile {
                doors,
                reason: format!("cannot start the compiler thread: {e}"),
            })?
            .join()
            .unwrap_or_else(|_| {
                Err(FitError::Compile {
                    doors,
                    reason: "the filter compiler panicked".into(),
                })
            })
    })
}

fn fit_here(exact: &str, doors: usize, link: pcap::Linktype) -> Result<Fitted, FitError> {
    let budget = kernel_budget();
    let tests = exact.matches(" dst port ").count() + exact.matches("dst host ").count();
    let fallback = if tests > EXACT_MAX_TESTS {
        format!("would have {tests} tests (more than {EXACT_MAX_TESTS})")
    } else {
        match compile_len(exact, link) {
            Ok(insns) if insns <= budget => {
                return Ok(Fitted {
                    expr: exact.to_string(),
                    level: Level::Exact,
                    insns,
                    fallback: None,
                    doors,
                })
            }
            Ok(insns) => format!(
                "compiles to {insns} BPF instructions, more than the kernel accepts ({budget})"
            ),
            Err(e) => format!("does not compile ({e})"),
        }
    };
    let coarse = ports_filter(exact);
    match compile_len(&coarse, link) {
        Ok(insns) if insns <= budget => Ok(Fitted {
            expr: coarse,
            level: Level::Ports,
            insns,
            fallback: Some(fallback),
            doors,
        }),
        _ => match compile_len(ANY_KNOCK, link) {
            Ok(insns) => Ok(Fitted {
                expr: ANY_KNOCK.to_string(),
                level: Level::Any,
                insns,
                fallback: Some(fallback),
                doors,
            }),
            Err(e) => Err(FitError::Compile { doors, reason: e }),
        },
    }
}

/// Compile `expr` as the capture will (optimised) and count its instructions.
pub fn compile_len(expr: &str, link: pcap::Linktype) -> Result<usize, String> {
    let cap = pcap::Capture::dead(link).map_err(|e| e.to_string())?;
    let prog = cap.compile(expr, true).map_err(|e| e.to_string())?;
    Ok(prog.get_instructions().len())
}

/// Largest program the kernel will take: BPF_MAXINSNS, and what `net.core.optmem_max` leaves
/// (the kernel charges the translated program, a few times the classic size, to the socket).
pub fn kernel_budget() -> usize {
    let optmem = std::fs::read_to_string("/proc/sys/net/core/optmem_max")
        .ok()
        .and_then(|s| s.trim().parse::<usize>().ok())
        .unwrap_or(20_480);
    KERNEL_MAX_INSNS.min(optmem.saturating_sub(1024) / 32)
}

/// The union of the knock ports named in `expr` (`tcp dst port N`, `udp dst portrange A-B`),
/// as `coarse` builds it.
pub fn ports_filter(expr: &str) -> String {
    let sweep = expr.contains("tcp-syn|tcp-ack");
    let mut per_proto = Vec::new();
    for proto in ["tcp", "udp"] {
        let mut ranges: Vec<(u16, u16)> = Vec::new();
        for kw in ["port", "portrange"] {
            let needle = format!("{proto} dst {kw} ");
            for (i, _) in expr.match_indices(&needle) {
                let rest = &expr[i + needle.len()..];
                let end = rest
                    .find(|c: char| !c.is_ascii_digit() && c != '-')
                    .unwrap_or(rest.len());
                let token = &rest[..end];
                let (a, b) = token.split_once('-').unwrap_or((token, token));
                if let (Ok(a), Ok(b)) = (a.parse::<u16>(), b.parse::<u16>()) {
                    ranges.push((a.min(b), a.max(b)));
                }
            }
        }
        per_proto.push((proto, ranges));
    }
    coarse(per_proto, sweep)
}

/// The coarse filter for `doors`, straight from the config (no exact text built first).
pub fn ports_filter_of(doors: &[Door]) -> String {
    let sweep = doors
        .iter()
        .any(|d| d.sweep_guard && !d.sequence.is_empty());
    // A bitmap per protocol: linear in the knocks, no sort of 300,000 ports.
    let mut seen = [vec![false; 65_536], vec![false; 65_536]];
    for step in doors.iter().flat_map(|d| d.sequence.iter()) {
        seen[usize::from(step.proto == Proto::Udp)][usize::from(step.port)] = true;
    }
    let per_proto = ["tcp", "udp"]
        .into_iter()
        .zip(seen)
        .map(|(name, bits)| {
            let ranges = (0..=u16::MAX)
                .filter(|&p| bits[usize::from(p)])
                .map(|p| (p, p))
                .collect();
            (name, ranges)
        })
        .collect();
    coarse(per_proto, sweep)
}

/// Per protocol, `ranges` merged into at most [`COARSE_MAX_RANGES`] (smallest gaps first, so
/// the extra ports are few); plus IPv6 with extension headers, and the sweep guard's clause
/// (new connections to any port) when a door has it.
fn coarse(per_proto: Vec<(&str, Vec<(u16, u16)>)>, sweep: bool) -> String {
    let mut parts = Vec::new();
    for (proto, mut ranges) in per_proto {
        if ranges.is_empty() {
            continue;
        }
        ranges.sort_unstable();
        let tests: Vec<String> = merge(&ranges, COARSE_MAX_RANGES)
            .iter()
            .map(|&(a, b)| {
                if a == b {
                    format!("{proto} dst port {a}")
                } else {
                    format!("{proto} dst portrange {a}-{b}")
                }
            })
            .collect();
        parts.push(format!("({})", tests.join(" or ")));
    }
    if parts.is_empty() {
        return super::filter::MATCH_NOTHING.to_string();
    }
    parts.push(IPV6_EXT.to_string());
    if sweep {
        parts.push(SWEEP_ANY.to_string());
    }
    parts.join(" or ")
}

/// Sorted `ranges` (inclusive, possibly overlapping) joined where they touch, then merged
/// until at most `max` are left.
fn merge(ranges: &[(u16, u16)], max: usize) -> Vec<(u16, u16)> {
    let mut joined: Vec<(u16, u16)> = Vec::new();
    for &(a, b) in ranges {
        match joined.last_mut() {
            Some((_, end)) if u32::from(a) <= u32::from(*end) + 1 => *end = (*end).max(b),
            _ => joined.push((a, b)),
        }
    }
    let max = max.max(1);
    if joined.len() <= max {
        return joined;
    }
    // Merge every gap no wider than the (len - max)-th smallest one.
    let mut gaps: Vec<u16> = joined.windows(2).map(|w| w[1].0 - w[0].1).collect();
    gaps.sort_unstable();
    let limit = gaps[joined.len() - max - 1];
    let mut out: Vec<(u16, u16)> = Vec::new();
    for r in joined {
        match out.last_mut() {
            Some((_, b)) if r.0 - *b <= limit => *b = r.1,
            _ => out.push(r),
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::config::model::{
        Command6, Proto, Step, TcpFlags, DEFAULT_CMD_TIMEOUT, DEFAULT_OPEN_CHAIN,
        DEFAULT_SEQ_TIMEOUT,
    };
    use std::time::Instant;

    fn door(i: usize, knocks: usize) -> Door {
        Door {
            name: format!("d{i}"),
            line: 1,
            sequence: (0..knocks)
                .map(|k| Step {
                    port: (1024 + (i * 7919 + k * 104_729) % 64_000) as u16,
                    proto: if k % 5 == 4 { Proto::Udp } else { Proto::Tcp },
                })
                .collect(),
            one_time_sequences: None,
            seq_timeout: DEFAULT_SEQ_TIMEOUT,
            tcp_flags: TcpFlags {
                set: crate::config::model::flag::SYN,
                unset: 0,
            },
            start_command: None,
            start_command_6: Command6::Fallback,
            stop_command: None,
            stop_command_6: Command6::Fallback,
            cmd_timeout: DEFAULT_CMD_TIMEOUT,
            target: None,
            open: Vec::new(),
            open_chain: DEFAULT_OPEN_CHAIN.to_string(),
            sweep_guard: false,
            totp_file: None,
            totp: None,
            spa: Vec::new(),
            spa_address: Default::default(),
        }
    }

    fn local() -> Vec<IpAddr> {
        vec!["10.99.77.1".parse().unwrap(), "fd99:77::1".parse().unwrap()]
    }

    #[test]
    fn merge_keeps_every_port_and_bounds_the_ranges() {
        let single = |v: &[u16]| v.iter().map(|&p| (p, p)).collect::<Vec<_>>();
        assert_eq!(
            merge(&single(&[1, 2, 3, 7, 9, 10]), 10),
            vec![(1, 3), (7, 7), (9, 10)]
        );
        assert_eq!(
            merge(&single(&[1, 2, 3, 7, 9, 10]), 2),
            vec![(1, 3), (7, 10)]
        );
        assert_eq!(merge(&[(1, 5), (3, 9), (10, 12)], 10), vec![(1, 12)]);
        let ports: Vec<u16> = (0..20_000u32).map(|i| (i * 3 + 1) as u16).collect();
        let r = merge(&single(&ports), COARSE_MAX_RANGES);
        assert!(r.len() <= COARSE_MAX_RANGES, "{}", r.len());
        for p in ports {
            assert!(r.iter().any(|&(a, b)| a <= p && p <= b), "{p} lost");
        }
    }

    #[test]
    fn the_coarse_filter_keeps_the_sweep_guard_clause() {
        let mut doors: Vec<Door> = (0..2_000).map(|i| door(i, 3)).collect();
        doors[0].sweep_guard = true;
        let f = fit(&doors, &local(), pcap::Linktype::ETHERNET).unwrap();
        assert_eq!(f.level, Level::Ports);
        assert!(f.expr.contains("tcp-syn|tcp-ack"), "{}", f.expr);
    }

    #[test]
    fn large_configs_get_the_coarse_filter_without_building_the_exact_one() {
        let doors: Vec<Door> = (0..100_000).map(|i| door(i, 3)).collect();
        let t = Instant::now();
        let e = expression(&doors, &local());
        assert!(t.elapsed().as_secs() < 5, "{:?}", t.elapsed());
        assert!(!e.contains("dst host"), "{e}");
        assert!(coarse_note(&doors).unwrap().contains("100000 door(s)"));
        // Re-deriving the coarse filter from its own text keeps every range.
        assert_eq!(ports_filter(&e), e);
        let small: Vec<Door> = (0..10).map(|i| door(i, 3)).collect();
        assert!(coarse_note(&small).is_none());
        assert_eq!(
            expression(&small, &local()),
            crate::capture::filter::build(&small, &local())
        );
    }

    #[test]
    fn small_configs_get_the_exact_filter() {
        let doors: Vec<Door> = (0..10).map(|i| door(i, 3)).collect();
        let f = fit(&doors, &local(), pcap::Linktype::ETHERNET).unwrap();
        assert_eq!(f.level, Level::Exact);
        assert_eq!(f.expr, crate::capture::filter::build(&doors, &local()));
        assert!(f.note().is_none());
    }

    /// The configs of issue 13: each gets a filter that compiles and fits, quickly, and the
    /// coarse ones name the reason.
    #[test]
    fn large_configs_fit_without_overflowing_or_stalling() {
        for (n, knocks) in [
            (40, 3),
            (80, 3),
            (150, 3),
            (8, 32),
            (16, 32),
            (1_600, 3),
            (2_000, 3),
            (300, 32),
            (200, 32),
            (10_000, 3),
        ] {
            let doors: Vec<Door> = (0..n).map(|i| door(i, knocks)).collect();
            for link in [pcap::Linktype::ETHERNET, pcap::Linktype::LINUX_SLL] {
                let t = Instant::now();
                let f = fit(&doors, &local(), link).unwrap();
                let took = t.elapsed();
                eprintln!(
                    "{n} x {knocks}: {:?} {} insns in {took:?}",
                    f.level, f.insns
                );
                assert!(f.insns <= KERNEL_MAX_INSNS);
                assert!(took.as_secs() < 5, "{n} x {knocks} took {took:?}");
                if f.level != Level::Exact {
                    assert!(f.note().unwrap().contains(&format!("{n} door(s)")));
                }
                // Every knock port passes.
                if f.level == Level::Ports {
                    for d in &doors {
                        for s in &d.sequence {
                            let p = s.port;
                            assert!(
                                f.expr.contains(&format!("port {p}"))
                                    || f.expr.split(" or ").any(|t| {
                                        t.contains(s.proto.as_str())
                                            && t.rsplit(' ').next().and_then(|r| {
                                                let r = r.trim_end_matches(')');
                                                let (a, b) = r.split_once('-')?;
                                                Some(
                                                    a.parse::<u16>().ok()? <= p
                                                        && p <= b.parse::<u16>().ok()?,
                                                )
                                            }) == Some(true)
                                    }),
                                "{p} missing"
                            );
                        }
                    }
                }
            }
        }
    }
}
