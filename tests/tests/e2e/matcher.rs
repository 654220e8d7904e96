//! The matcher under attack, end to end: real sweeps, NAT neighbours and a spoofed flood sent
//! from the lab's client namespace to our knockd in the server namespace (issue 10). Raw
//! packets only ever go to the lab's server address.

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::time::Duration;

use knock_e2e::knockd::{knock, OurKnockd, EFFECT_TIMEOUT};
use knock_e2e::traffic::generator::{FloodSpec, Flooder, Pattern};
use knock_e2e::traffic::knocker::Knocker;
use knock_e2e::{require_root, Lab, CLI_V6, SRV_V4, SRV_V6};

fn srv() -> Ipv4Addr {
    SRV_V4.parse().expect("SRV_V4")
}

/// A door per line of `doors` (`name sequence [guard]`), each running /bin/true, plus the
/// one-knock `[sync]` door on 4444.
fn conf(options: &str, doors: &[(&str, &str, bool)]) -> String {
    let mut s = format!("[options]\n{options}\n");
    for (name, seq, guard) in doors {
        s.push_str(&format!(
            "[{name}]\n sequence = {seq}\n seq_timeout = 20\n command = /bin/true\n tcpflags = syn\n"
        ));
        if !guard {
            s.push_str(" SweepGuard = off\n");
        }
    }
    s.push_str("[sync]\n sequence = 4444\n command = /bin/true\n");
    s
}

/// Sends `passes` sweeps over `ports` from `src`, in chunks so that capture keeps up.
fn sweep(lab: &Lab, src: &str, ports: &[u16], passes: usize) {
    let mut k = Knocker::new(lab.cli_ns(), src.parse().expect("src"), srv()).expect("knocker");
    for _ in 0..passes {
        for chunk in ports.chunks(200) {
            k.knock(chunk).expect("sweep");
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

/// Waits until knockd has seen everything sent by the client so far.
fn sync(lab: &Lab, knockd: &OurKnockd, n: usize) {
    knock(lab, &[SRV_V4, "4444"]);
    assert!(
        knockd.wait_count("10.99.77.2: sync: OPEN SESAME", n, EFFECT_TIMEOUT),
        "knockd never saw sync knock #{n}:\n{}",
        knockd.log()
    );
}

/// Two ascending and two descending sweeps from two addresses do not open the seed doors
/// (7000,8000,9000 and 9000,8000,7000) nor a shuffled one; the same sweeps open a door whose
/// guard is off, so the sweeps really reach knockd.
#[test]
fn real_sweeps_in_both_directions_do_not_open_guarded_doors() {
    if !require_root() {
        return;
    }
    let lab = Lab::new();
    let knockd = OurKnockd::start(
        &lab,
        &conf(
            "",
            &[
                ("openSSH", "7000,8000,9000", true),
                ("closeSSH", "9000,8000,7000", true),
                ("shuffled", "8500,7500,8800", true),
                ("legacy", "30000,28000,29000", false),
            ],
        ),
    );
    let up: Vec<u16> = (6990..=9010).collect();
    let down: Vec<u16> = up.iter().rev().copied().collect();
    sweep(&lab, "10.99.77.31", &up, 2);
    sweep(&lab, "10.99.77.32", &down, 2);
    let legacy: Vec<u16> = (27990..=30010).collect();
    sweep(&lab, "10.99.77.33", &legacy, 2);
    sync(&lab, &knockd, 1);
    let log = knockd.log();
    assert!(
        log.contains("10.99.77.33: legacy: OPEN SESAME"),
        "the unguarded door must fall to the sweep (else the test proves nothing):\n{log}"
    );
    for door in ["openSSH", "closeSSH", "shuffled"] {
        assert!(
            !log.contains(&format!("{door}: OPEN SESAME")),
            "{door} opened:\n{log}"
        );
    }
    for src in ["10.99.77.31", "10.99.77.32"] {
        assert!(
            log.contains(&format!("{src}: sweep guard:")),
            "{src} not found scanning:\n{log}"
        );
    }
}

/// The same over IPv6: two ascending and two descending sweeps from spoofed IPv6 sources do
/// not open the guarded seed doors; the same sweeps open an unguarded door.
#[test]
fn real_ipv6_sweeps_do_not_open_guarded_doors() {
    use knock_e2e::spoof6::Flooder6;
    if !require_root() {
        return;
    }
    let lab = Lab::new();
    let knockd = OurKnockd::start(
        &lab,
        &conf(
            "",
            &[
                ("openSSH", "7000,8000,9000", true),
                ("closeSSH", "9000,8000,7000", true),
                ("legacy", "30000,28000,29000", false),
            ],
        ),
    );
    let dst: std::net::Ipv6Addr = SRV_V6.parse().expect("SRV_V6");
    let flooder = Flooder6::new(lab.cli_ns(), dst).expect("flooder");
    let up: Vec<u16> = (6990..=9010).collect();
    let down: Vec<u16> = up.iter().rev().copied().collect();
    let legacy: Vec<u16> = (27990..=30010).collect();
    for (src, ports) in [
        ("fd00:bad2::31", &up),
        ("fd00:bad2::32", &down),
        ("fd00:bad2::33", &legacy),
    ] {
        let src = src.parse().expect("src");
        for _ in 0..2 {
            flooder.sweep(src, ports).expect("sweep");
        }
    }
    sync(&lab, &knockd, 1);
    let log = knockd.log();
    assert!(
        log.contains("fd00:bad2::33: legacy: OPEN SESAME"),
        "the unguarded door must fall to the sweep (else the test proves nothing):\n{log}"
    );
    for door in ["openSSH", "closeSSH"] {
        assert!(
            !log.contains(&format!("{door}: OPEN SESAME")),
            "{door} opened:\n{log}"
        );
    }
    for src in ["fd00:bad2::31", "fd00:bad2::32"] {
        assert!(
            log.contains(&format!("{src}: sweep guard:")),
            "{src} not found scanning:\n{log}"
        );
    }
}

/// A client whose NAT neighbours open connections to the server's web ports in the middle of
/// its knock gets in.
#[test]
fn nat_neighbour_connections_during_a_knock_do_not_stop_it() {
    if !require_root() {
        return;
    }
    let lab = Lab::new();
    let knockd = OurKnockd::start(&lab, &conf("", &[("openSSH", "7000,8000,9000", true)]));
    let mut k =
        Knocker::new(lab.cli_ns(), "10.99.77.2".parse().expect("cli"), srv()).expect("knocker");
    k.knock(&[7000]).expect("knock");
    for _ in 0..10 {
        k.knock(&[80, 443, 80, 443]).expect("neighbours");
    }
    k.knock(&[8000]).expect("knock");
    k.knock(&[443, 80, 53]).expect("neighbours");
    k.knock(&[9000]).expect("knock");
    assert!(
        knockd.wait_count("10.99.77.2: openSSH: OPEN SESAME", 1, EFFECT_TIMEOUT),
        "{}",
        knockd.log()
    );
    assert!(!knockd.log().contains("sweep guard"), "{}", knockd.log());
}

/// MaxAttempts = 2000 and 20,000 spoofed first knocks per second on the door's first port
/// (knockd 0.8 and our earlier oldest-first eviction lost every legitimate knock): a client
/// knocking one second apart (`knock -d 1000`) opens.
#[test]
fn a_client_opens_through_a_spoofed_flood_of_first_knocks() {
    if !require_root() {
        return;
    }
    let lab = Lab::new();
    let knockd = OurKnockd::start(
        &lab,
        &conf("MaxAttempts = 2000", &[("openSSH", "7000,8000,9000", true)]),
    );
    let flooder = Flooder::new(lab.cli_ns(), srv()).expect("flooder");
    let spec = FloodSpec {
        pattern: Pattern::Door { port: 7000 },
        rate_pps: 20_000,
        duration: Duration::from_secs(6),
    };
    let (progress, stop) = (AtomicU64::new(0), AtomicBool::new(false));
    let stats = std::thread::scope(|s| {
        let flood = s.spawn(|| flooder.run(&spec, &progress, &stop));
        std::thread::sleep(Duration::from_millis(1500));
        let out = knock(&lab, &["-d", "1000", SRV_V4, "7000", "8000", "9000"]);
        assert!(out.status.success(), "{out:?}");
        let opened = knockd.wait_count("10.99.77.2: openSSH: OPEN SESAME", 1, EFFECT_TIMEOUT);
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let stats = flood.join().expect("flood thread");
        assert!(opened, "no open under the flood:\n{}", knockd.log());
        stats
    });
    assert!(
        stats.sent > 40_000,
        "the flood was too weak to mean anything: {stats:?}"
    );
    assert!(
        knockd
            .log()
            .contains("attempt table full (MaxAttempts = 2000"),
        "the table never filled:\n{}",
        knockd.log()
    );
}

/// The same property over IPv6, where one /64 supplies unlimited real source addresses:
/// MaxAttempts = 2000 and 20,000 spoofed first knocks per second, first from fresh addresses
/// of 64 /64s (the table fills; the per-network shares and the tiers protect the client),
/// then from fresh addresses of a single /64 (it may hold only its tenth of the table): a
/// client knocking one second apart over IPv6 opens both times.
#[test]
fn an_ipv6_client_opens_through_spoofed_floods_from_many_and_from_one_64() {
    use knock_e2e::spoof6::{Flooder6, Sources};
    if !require_root() {
        return;
    }
    let lab = Lab::new();
    let knockd = OurKnockd::start(
        &lab,
        &conf("MaxAttempts = 2000", &[("openSSH", "7000,8000,9000", true)]),
    );
    let dst: std::net::Ipv6Addr = SRV_V6.parse().expect("SRV_V6");
    let flooder = Flooder6::new(lab.cli_ns(), dst).expect("flooder");
    let mut evicted = 0;
    for (round, sources) in [Sources::Nets { nets: 64 }, Sources::OneNet]
        .into_iter()
        .enumerate()
    {
        let stop = AtomicBool::new(false);
        let stats = std::thread::scope(|s| {
            let flood =
                s.spawn(|| flooder.run(sources, 7000, 20_000, Duration::from_secs(6), &stop));
            std::thread::sleep(Duration::from_millis(1500));
            let out = knock(&lab, &["-6", "-d", "1000", SRV_V6, "7000", "8000", "9000"]);
            assert!(out.status.success(), "{out:?}");
            let opened = knockd.wait_count(
                &format!("{CLI_V6}: openSSH: OPEN SESAME"),
                round + 1,
                EFFECT_TIMEOUT,
            );
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            let stats = flood.join().expect("flood thread");
            assert!(
                opened,
                "{sources:?}: no open under the flood ({stats:?}):\n{}",
                knockd.log()
            );
            stats
        });
        assert!(
            stats.sent > 40_000,
            "{sources:?}: the flood was too weak to mean anything: {stats:?}"
        );
        // The flood reached knockd: its first knocks filled the table (many /64s) or the
        // /64's share (one /64), and kept evicting each other.
        let now = evictions(&knockd);
        eprintln!(
            "{sources:?}: {} spoofed first knocks in {:.1} s, {} evictions",
            stats.sent,
            stats.elapsed_s,
            now - evicted
        );
        assert!(
            now - evicted > 20_000,
            "{sources:?}: only {} evictions:\n{}",
            now - evicted,
            knockd.log()
        );
        evicted = now;
    }
}

/// A slow flood of forged first knocks, each from a new /64 below the client's, keeps the
/// table (MaxAttempts = 2000) full of one attempt per network: at 1,000 per second the table
/// turns over in 2 s, so a client knocking one second apart opens (the table's oldest goes
/// first; when ties went to the highest network, the client's first knock went at once).
#[test]
fn an_ipv6_client_opens_through_a_slow_flood_from_more_networks_than_the_table_holds() {
    use knock_e2e::spoof6::{Flooder6, Sources};
    if !require_root() {
        return;
    }
    let lab = Lab::new();
    let knockd = OurKnockd::start(
        &lab,
        &conf("MaxAttempts = 2000", &[("openSSH", "7000,8000,9000", true)]),
    );
    let dst: std::net::Ipv6Addr = SRV_V6.parse().expect("SRV_V6");
    let flooder = Flooder6::new(lab.cli_ns(), dst).expect("flooder");
    let sources = Sources::Nets { nets: 1_000_000 };
    let stop = AtomicBool::new(false);
    let stats = std::thread::scope(|s| {
        let flood = s.spawn(|| flooder.run(sources, 7000, 1_000, Duration::from_secs(8), &stop));
        // The table is full after 2 s.
        std::thread::sleep(Duration::from_millis(2500));
        let out = knock(&lab, &["-6", "-d", "1000", SRV_V6, "7000", "8000", "9000"]);
        assert!(out.status.success(), "{out:?}");
        let opened = knockd.wait_count(
            &format!("{CLI_V6}: openSSH: OPEN SESAME"),
            1,
            EFFECT_TIMEOUT,
        );
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let stats = flood.join().expect("flood thread");
        assert!(
            opened,
            "no open under the flood ({stats:?}):\n{}",
            knockd.log()
        );
        stats
    });
    let evicted = evictions(&knockd);
    eprintln!(
        "{} forged first knocks from as many /64s in {:.1} s, {evicted} evictions",
        stats.sent, stats.elapsed_s
    );
    assert!(evicted > 1_000, "the table never turned over: {evicted}");
}

/// knockd's eviction counter (`knockctl status`).
fn evictions(k: &OurKnockd) -> u64 {
    let out = k.knockctl(&["status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    text.split("evictions ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no eviction counter in knockctl status: {text}"))
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// `knockd --new-totp` makes the secret, `TOTP_File` names it, `knock --totp` opens the door.
/// The same packets from a second client address are refused (and logged), also after a
/// reload (SIGHUP) and after a restart following `kill -9` (the replay memory is in the
/// state file); after the window (steps of 10 s here) they open nothing.
///
/// A replay proves something only when knockd judged it inside the window (the step and the
/// next): a go in which a step ended too soon on a slow machine is run again in a new lab, up
/// to three times; a replay judged inside the window and not refused fails at once.
#[test]
fn knock_totp_opens_and_replays_are_refused() {
    if !require_root() {
        return;
    }
    let mut slow = Vec::new();
    for _ in 0..3 {
        match totp_replays_go() {
            Ok(()) => return,
            Err(why) => {
                eprintln!("inconclusive, again: {why}");
                slow.push(why);
            }
        }
    }
    panic!("three goes, each too slow for 10 s TOTP steps: {slow:?}");
}

/// One go of [`knock_totp_opens_and_replays_are_refused`] in a lab of its own. Err: the
/// window passed before a check was done (nothing proved either way).
fn totp_replays_go() -> Result<(), String> {
    let lab = Lab::new();
    let secret = lab.path("door.totp");
    let out = std::process::Command::new(knock_e2e::bin("knockd"))
        .arg("--new-totp")
        .arg(&secret)
        .output()
        .expect("knockd --new-totp");
    assert!(out.status.success(), "{out:?}");
    // Refuses to overwrite.
    let again = std::process::Command::new(knock_e2e::bin("knockd"))
        .arg("--new-totp")
        .arg(&secret)
        .output()
        .expect("knockd --new-totp");
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("already exists"),
        "{again:?}"
    );
    // Short steps so that the window passes within the test.
    let text = std::fs::read_to_string(&secret).expect("read");
    std::fs::write(&secret, text.replace("step = 30", "step = 10")).expect("write");
    let spec = knock_ipc::totp::Spec::read(&secret).expect("spec");
    let conf = format!(
        "[rot]\n TOTP_File = {}\n command = /bin/true\n tcpflags = syn\n[sync]\n sequence = 4444\n command = /bin/true\n",
        secret.display()
    );
    let knockd = OurKnockd::start(&lab, &conf);
    // Knock when a step has at least 5 s left, so that the knock is of a known step and the
    // reload and the restart have 15 s or more within the window.
    while unix_now() % 10 > 4 {
        std::thread::sleep(Duration::from_millis(200));
    }
    let step = spec.step_at(unix_now());
    let secret_arg = secret.to_str().expect("utf8");
    let out = knock(&lab, &["--totp", secret_arg, SRV_V4]);
    assert!(out.status.success(), "{out:?}");
    if spec.step_at(unix_now()) != step {
        return Err(format!("knock --totp took until the next step ({out:?})"));
    }
    assert!(
        knockd.wait_count("10.99.77.2: rot: OPEN SESAME", 1, EFFECT_TIMEOUT),
        "{}",
        knockd.log()
    );
    let ports = spec.ports(step);
    // Replay from `src`, wait until knockd has seen it (the `n`th sync knock), and check that
    // it was refused as a replay, if knockd saw it inside the window.
    let replay = |src: &str| {
        let mut k = Knocker::new(lab.cli_ns(), src.parse().expect("src"), srv()).expect("knocker");
        k.knock(&ports).expect("replay");
    };
    let refused = |knockd: &OurKnockd, src: &str, n: usize| {
        replay(src);
        sync(&lab, knockd, n);
        let now = spec.step_at(unix_now());
        if now > step + 1 {
            return Err(format!(
                "the replay from {src} was seen by step {now}, after the window of step {step}"
            ));
        }
        let log = knockd.log();
        assert!(
            log.contains(&format!("{src}: rot: sequence refused: replay")),
            "replay from {src} not refused:\n{log}"
        );
        assert!(!log.contains(&format!("{src}: rot: OPEN SESAME")), "{log}");
        Ok(())
    };
    refused(&knockd, "10.99.77.41", 1)?;
    // A reload keeps the memory.
    knockd.daemon.kill_hup();
    assert!(
        knockd.wait_count("configuration reloaded", 1, EFFECT_TIMEOUT),
        "{}",
        knockd.log()
    );
    refused(&knockd, "10.99.77.43", 2)?;
    // So does a restart after kill -9: the memory is in the state file.
    knockd.daemon.kill_9();
    assert!(knockd.daemon.wait_exit(EFFECT_TIMEOUT).is_some());
    let before = knockd.log();
    let state = std::fs::read_to_string(lab.path("state.json")).unwrap_or_default();
    let knockd = OurKnockd::start(&lab, &conf);
    let now = spec.step_at(unix_now());
    if now > step + 1 {
        return Err(format!(
            "the restart was done by step {now}, after the window of step {step}"
        ));
    }
    assert!(
        knockd.log().contains(
            "replay memory: 1 of 1 TOTP step(s) from the state file still in their window"
        ),
        "{}\n--- state file before the restart:\n{state}\n--- the killed knockd:\n{before}",
        knockd.log()
    );
    refused(&knockd, "10.99.77.44", 1)?;
    // After the window (the step, its successor as "previous", then gone).
    while spec.step_at(unix_now()) < step + 2 {
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_millis(300));
    replay("10.99.77.42");
    replay("10.99.77.2");
    sync(&lab, &knockd, 2);
    let log = knockd.log();
    assert!(!log.contains("10.99.77.42: rot: OPEN SESAME"), "{log}");
    assert!(!log.contains("10.99.77.2: rot: OPEN SESAME"), "{log}");
    // The secret never reaches the log.
    let b32 = text
        .lines()
        .find_map(|l| l.strip_prefix("secret = "))
        .expect("secret line");
    assert!(!log.contains(b32));
    Ok(())
}

/// knockd's CPU seconds (user + system) so far.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 (1-based), 11 and 12 after the ')'.
    (ticks(11) + ticks(12)) / 100.0
}

/// The packets counter of `knockctl status`.
fn packets_seen(k: &OurKnockd) -> u64 {
    let out = k.knockctl(&["status"]);
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .skip_while(|w| *w != "packets")
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// Bench (run by hand: `cargo test -p knock-e2e --test e2e matcher::bench -- --ignored --nocapture`):
/// what the sweep guard's wider capture filter costs on a host that also serves ordinary
/// traffic: a bulk TCP transfer (established: must stay out of the filter) and new
/// connections to a public service (20,000 SYN/s to port 443: the guard sees them). Same
/// door, guard on and off; knockd's CPU time and the packets it read. Results: BENCHMARKS.md.
#[test]
#[ignore = "bench: run by hand, results in BENCHMARKS.md"]
fn bench_sweep_guard_capture_cost() {
    if !require_root() {
        return;
    }
    for guard in [false, true] {
        let lab = Lab::new();
        let off = if guard { "" } else { " SweepGuard = off\n" };
        let knockd = OurKnockd::start(
            &lab,
            &format!("[openSSH]\n sequence = 7000,8000,9000\n command = /bin/true\n tcpflags = syn\n{off}"),
        );
        let _server = lab.spawn_srv([
            "python3",
            "-c",
            "import socket\ns=socket.socket()\ns.bind(('0.0.0.0',8080))\ns.listen(1)\nc,_=s.accept()\nwhile c.recv(1<<20): pass",
        ]);
        std::thread::sleep(Duration::from_millis(500));
        let (pid, cpu0, pk0) = (
            knockd.daemon.pid(),
            cpu_secs(knockd.daemon.pid()),
            packets_seen(&knockd),
        );
        let _client = lab.spawn_cli([
            "python3",
            "-c",
            "import socket,time\ns=socket.create_connection(('10.99.77.1',8080))\nb=bytes(1<<16)\nt=time.time()+5\nn=0\nwhile time.time()<t:\n  s.sendall(b); n+=len(b)\nprint(n)",
        ]);
        let flooder = Flooder::new(lab.cli_ns(), srv()).expect("flooder");
        let spec = FloodSpec {
            pattern: Pattern::Door { port: 443 },
            rate_pps: 20_000,
            duration: Duration::from_secs(5),
        };
        let stats = flooder.run(&spec, &AtomicU64::new(0), &AtomicBool::new(false));
        std::thread::sleep(Duration::from_millis(500));
        let (cpu, pk) = (cpu_secs(pid) - cpu0, packets_seen(&knockd) - pk0);
        println!(
            "BENCH guard={guard}: knockd read {pk} packets, used {cpu:.2} s CPU in 5 s ({:.1}% of a core) while {} SYN/s to 443 and a bulk TCP transfer ran",
            cpu / 5.0 * 100.0,
            stats.achieved_pps as u64
        );
    }
}

/// A raw socket in the client namespace sending hand-made TCP segments with any flags (or
/// UDP datagrams) from any address to the lab's server: sweeps of other kinds than SYN.
struct Segments {
    sock: socket2::Socket,
    sport: u16,
}

impl Segments {
    fn new(lab: &Lab) -> Segments {
        let sock = knock_e2e::traffic::netns::create_in(
            lab.cli_ns(),
            knock_e2e::traffic::generator::raw_socket,
        )
        .expect("raw socket");
        Segments {
            sock,
            sport: 20_000,
        }
    }

    /// One segment with `flags` (None: a UDP datagram) from `src` to each of `ports`.
    fn send(&mut self, src: Ipv4Addr, ports: &[u16], flags: Option<u8>) {
        let to = socket2::SockAddr::from(std::net::SocketAddrV4::new(srv(), 0));
        for &port in ports {
            self.sport = if self.sport >= 60_000 {
                20_000
            } else {
                self.sport + 1
            };
            let mut p = knock_e2e::traffic::wire::syn(src, srv(), self.sport, port, 7);
            match flags {
                Some(f) => {
                    p[33] = f;
                    p[36..38].copy_from_slice(&[0, 0]);
                    let sum = l4_checksum(src, 6, &p[20..]);
                    p[36..38].copy_from_slice(&sum.to_be_bytes());
                }
                None => {
                    // IPv4 + UDP (8 bytes) + 12 bytes of payload: same length, protocol 17.
                    p[9] = 17;
                    p[10..12].copy_from_slice(&[0, 0]);
                    let ip_sum = checksum(0, &p[..20]);
                    p[10..12].copy_from_slice(&ip_sum.to_be_bytes());
                    p[24..26].copy_from_slice(&20u16.to_be_bytes());
                    p[26..28].copy_from_slice(&[0, 0]);
                    let sum = l4_checksum(src, 17, &p[20..]);
                    p[26..28].copy_from_slice(&sum.to_be_bytes());
                }
            }
            self.sock.send_to(&p, &to).expect("send");
            if self.sport % 200 == 0 {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
    }
}

fn checksum(initial: u32, data: &[u8]) -> u16 {
    let mut sum = initial;
    for pair in data.chunks(2) {
        sum += u32::from(u16::from_be_bytes([
            pair[0],
            pair.get(1).copied().unwrap_or(0),
        ]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// TCP or UDP checksum of `segment` from `src` to the server.
fn l4_checksum(src: Ipv4Addr, proto: u8, segment: &[u8]) -> u16 {
    let words = |a: Ipv4Addr| {
        let o = a.octets();
        u32::from(u16::from_be_bytes([o[0], o[1]])) + u32::from(u16::from_be_bytes([o[2], o[3]]))
    };
    let pseudo = words(src) + words(srv()) + u32::from(proto) + segment.len() as u32;
    checksum(pseudo, segment)
}

/// Issue 21 item 1: sweeps made of SYN|ACK, ACK, FIN, RST, NULL, XMAS segments or UDP
/// datagrams, two ascending and two descending passes each from its own address, open no
/// guarded door: the seed door (`TCPFlags = syn`, which SYN|ACK matches) and one without
/// `TCPFlags`. The same SYN|ACK sweep opens a door whose guard is off, so it reaches knockd.
#[test]
fn sweeps_of_other_tcp_flags_and_udp_do_not_open_guarded_doors() {
    if !require_root() {
        return;
    }
    let lab = Lab::new();
    let conf = "[options]\n\
        [openSSH]\n sequence = 7000,8000,9000\n seq_timeout = 20\n command = /bin/true\n tcpflags = syn\n\
        [anyflags]\n sequence = 7500,8500,8900\n seq_timeout = 20\n command = /bin/true\n\
        [legacy]\n sequence = 30000,28000,29000\n seq_timeout = 20\n command = /bin/true\n SweepGuard = off\n\
        [sync]\n sequence = 4444\n command = /bin/true\n";
    let knockd = OurKnockd::start(&lab, conf);
    let up: Vec<u16> = (6990..=9010).collect();
    let down: Vec<u16> = up.iter().rev().copied().collect();
    let mut seg = Segments::new(&lab);
    let kinds: [(&str, Option<u8>); 7] = [
        ("SYN|ACK", Some(0x12)),
        ("ACK", Some(0x10)),
        ("FIN", Some(0x01)),
        ("RST", Some(0x04)),
        ("NULL", Some(0x00)),
        ("XMAS", Some(0x29)),
        ("UDP", None),
    ];
    for (i, (_, flags)) in kinds.iter().enumerate() {
        let src = Ipv4Addr::new(10, 99, 77, 50 + i as u8);
        for ports in [&up, &up, &down, &down] {
            seg.send(src, ports, *flags);
        }
    }
    let legacy: Vec<u16> = (27990..=30010).collect();
    seg.send(Ipv4Addr::new(10, 99, 77, 60), &legacy, Some(0x12));
    seg.send(Ipv4Addr::new(10, 99, 77, 60), &legacy, Some(0x12));
    sync(&lab, &knockd, 1);
    let log = knockd.log();
    assert!(
        log.contains("10.99.77.60: legacy: OPEN SESAME"),
        "the unguarded door must fall to the SYN|ACK sweep (else the test proves nothing):\n{log}"
    );
    for door in ["openSSH", "anyflags"] {
        assert!(
            !log.contains(&format!("{door}: OPEN SESAME")),
            "{door} opened:\n{log}"
        );
    }
    // The guarded doors still open to a real knock.
    knock(&lab, &[SRV_V4, "7500", "8500", "8900"]);
    assert!(
        knockd.wait_count("10.99.77.2: anyflags: OPEN SESAME", 1, EFFECT_TIMEOUT),
        "{}",
        knockd.log()
    );
}

/// Issue 21 item 3: six packets forged with the client's address (a static door's first knock,
/// then five other ports) make it a scanner; its next correct TOTP knock still opens the
/// rotating door, while the static door refuses it for SweepPenalty.
#[test]
fn a_forged_burst_does_not_lock_the_client_out_of_a_totp_door() {
    if !require_root() {
        return;
    }
    let lab = Lab::new();
    let secret = lab.path("door.totp");
    let spec = knock_ipc::totp::Spec::write_new(&secret).expect("totp file");
    let conf = format!(
        "[rot]\n TOTP_File = {}\n command = /bin/true\n\
         [static]\n sequence = 7000,8000,9000\n command = /bin/true\n tcpflags = syn\n\
         [sync]\n sequence = 4444\n command = /bin/true\n",
        secret.display()
    );
    let knockd = OurKnockd::start(&lab, &conf);
    let client: Ipv4Addr = "10.99.77.2".parse().expect("cli");
    let mut forger = Knocker::new(lab.cli_ns(), client, srv()).expect("knocker");
    forger.knock(&[7000, 81, 82, 83, 84, 85]).expect("burst");
    assert!(
        knockd.wait_count("10.99.77.2: sweep guard:", 1, EFFECT_TIMEOUT),
        "the burst did not make the client a scanner:\n{}",
        knockd.log()
    );
    // Knock the step that has time left.
    while unix_now() % spec.step_secs > spec.step_secs - 3 {
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = knock(&lab, &["--totp", secret.to_str().expect("utf8"), SRV_V4]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        knockd.wait_count("10.99.77.2: rot: OPEN SESAME", 1, EFFECT_TIMEOUT),
        "the client's TOTP knock after the burst did not open:\n{}",
        knockd.log()
    );
    // What the forger still does: the static door refuses the client for SweepPenalty.
    knock(&lab, &[SRV_V4, "7000", "8000", "9000"]);
    assert!(
        knockd.wait_count(
            "10.99.77.2: static: first knock refused: source is penalised as a scanner",
            1,
            EFFECT_TIMEOUT
        ),
        "{}",
        knockd.log()
    );
    assert!(!knockd.log().contains("static: OPEN SESAME"));
}
