//! End-to-end tests of the `knock` binary. Every knock goes to loopback; no root needed.

use std::io;
use std::net::{TcpListener, UdpSocket};
use std::process::{Command, Output};
use std::thread;
use std::time::{Duration, Instant};

fn knock(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_knock"))
        .args(args)
        .output()
        .expect("run the knock binary")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn udp_sink(addr: &str) -> (UdpSocket, u16) {
    let sock = UdpSocket::bind(addr).expect("bind a loopback UDP socket");
    let port = sock.local_addr().expect("local addr").port();
    (sock, port)
}

/// Waits up to `timeout` for one datagram; returns its payload and arrival time.
fn recv_one(sock: &UdpSocket, timeout: Duration) -> Option<(Vec<u8>, Instant)> {
    sock.set_read_timeout(Some(timeout)).expect("set timeout");
    let mut buf = [0u8; 64];
    match sock.recv_from(&mut buf) {
        Ok((n, _)) => Some((buf[..n].to_vec(), Instant::now())),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) =>
        {
            None
        }
        Err(e) => panic!("recv_from: {e}"),
    }
}

/// Asserts that nothing arrives on `sock` for a short while.
fn assert_silent(sock: &UdpSocket) {
    if let Some((payload, _)) = recv_one(sock, Duration::from_millis(300)) {
        panic!("expected no datagram, got {payload:?}");
    }
}

/// Polls a non-blocking listener until it accepts a connection or `timeout` passes.
fn accepted(listener: &TcpListener, timeout: Duration) -> bool {
    listener
        .set_nonblocking(true)
        .expect("non-blocking listener");
    let deadline = Instant::now() + timeout;
    loop {
        match listener.accept() {
            Ok(_) => return true,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("accept: {e}"),
        }
        if Instant::now() > deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

fn assert_fails_with(out: &Output, code: i32, message: &str) {
    assert_eq!(out.status.code(), Some(code), "stderr: {}", stderr(out));
    assert!(
        stderr(out).contains(message),
        "stderr should contain {message:?}, got: {}",
        stderr(out)
    );
}

#[test]
fn udp_knocks_arrive_in_order_with_one_nul_byte() {
    let sinks: Vec<(UdpSocket, u16)> = (0..3).map(|_| udp_sink("127.0.0.1:0")).collect();
    let ports: Vec<String> = sinks.iter().map(|(_, p)| p.to_string()).collect();

    // One receiver thread per socket records when its datagram arrived.
    let receivers: Vec<_> = sinks
        .into_iter()
        .map(|(sock, _)| thread::spawn(move || recv_one(&sock, Duration::from_secs(10))))
        .collect();

    let mut args = vec!["-u", "-d", "150", "127.0.0.1"];
    args.extend(ports.iter().map(String::as_str));
    let out = knock(&args);
    assert!(out.status.success(), "stderr: {}", stderr(&out));
    assert_eq!(stdout(&out), "", "quiet without -v");

    let arrivals: Vec<Instant> = receivers
        .into_iter()
        .map(|r| {
            let (payload, at) = r
                .join()
                .expect("receiver thread")
                .expect("every port got a datagram");
            assert_eq!(payload, vec![0u8], "payload is a single NUL byte");
            at
        })
        .collect();
    assert!(
        arrivals.windows(2).all(|w| w[0] < w[1]),
        "knocks arrived out of order"
    );
}

#[test]
fn uppercase_udp_is_udp_and_verbose_prints_each_knock() {
    let (sock, port) = udp_sink("127.0.0.1:0");
    let spec = format!("{port}:UDP");
    let out = knock(&["-v", "127.0.0.1", &spec]);
    assert!(out.status.success(), "stderr: {}", stderr(&out));
    assert_eq!(stdout(&out), format!("hitting udp 127.0.0.1:{port}\n"));
    let (payload, _) = recv_one(&sock, Duration::from_secs(5)).expect("datagram arrives");
    assert_eq!(payload, vec![0u8]);
}

#[test]
fn tcp_knock_reaches_a_listener() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind listener");
    let port = listener
        .local_addr()
        .expect("local addr")
        .port()
        .to_string();
    let out = knock(&["-v", "127.0.0.1", &port]);
    assert!(out.status.success(), "stderr: {}", stderr(&out));
    assert_eq!(stdout(&out), format!("hitting tcp 127.0.0.1:{port}\n"));
    assert!(
        accepted(&listener, Duration::from_secs(5)),
        "the listener saw no connection attempt"
    );
}

#[test]
fn tcp_knock_to_a_closed_port_still_counts_as_sent() {
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind listener");
        l.local_addr().expect("local addr").port()
    };
    let out = knock(&["127.0.0.1", &port.to_string()]);
    assert!(out.status.success(), "stderr: {}", stderr(&out));
}

#[test]
fn udp_flag_is_only_a_default_explicit_tcp_wins() {
    let (sock, udp_port) = udp_sink("127.0.0.1:0");
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind listener");
    let tcp_port = listener.local_addr().expect("local addr").port();
    let tcp_spec = format!("{tcp_port}:tcp");
    let out = knock(&["-u", "-v", "127.0.0.1", &udp_port.to_string(), &tcp_spec]);
    assert!(out.status.success(), "stderr: {}", stderr(&out));
    assert_eq!(
        stdout(&out),
        format!("hitting udp 127.0.0.1:{udp_port}\nhitting tcp 127.0.0.1:{tcp_port}\n")
    );
    let (payload, _) = recv_one(&sock, Duration::from_secs(5)).expect("UDP knock arrives");
    assert_eq!(payload, vec![0u8]);
    assert!(
        accepted(&listener, Duration::from_secs(5)),
        "explicit :tcp was not sent as TCP"
    );
}

#[test]
fn ipv6_loopback_knock() {
    let (sock, port) = udp_sink("[::1]:0");
    let out = knock(&["-6", "-v", "::1", &format!("{port}:udp")]);
    assert!(out.status.success(), "stderr: {}", stderr(&out));
    assert_eq!(stdout(&out), format!("hitting udp [::1]:{port}\n"));
    let (payload, _) = recv_one(&sock, Duration::from_secs(5)).expect("datagram arrives");
    assert_eq!(payload, vec![0u8]);
}

#[test]
fn bad_port_arguments_fail_and_send_nothing() {
    let cases: &[(&str, &str)] = &[
        ("0", "knock: invalid port '0' (ports are 1-65535)"),
        ("99999", "knock: invalid port '99999' (ports are 1-65535)"),
        (
            "99999:tcp",
            "knock: invalid port '99999' in '99999:tcp' (ports are 1-65535)",
        ),
        ("abc", "knock: invalid port 'abc' (ports are 1-65535)"),
        (
            "8000junk",
            "knock: invalid port '8000junk' (ports are 1-65535)",
        ),
        (
            "7000:icmp",
            "knock: unknown protocol 'icmp' in '7000:icmp' (use tcp or udp)",
        ),
        (
            "7000:udp:tcp",
            "knock: too many ':' in '7000:udp:tcp' (use PORT or PORT:PROTO",
        ),
    ];
    let (sock, port) = udp_sink("127.0.0.1:0");
    let good = format!("{port}:udp");
    for &(bad, message) in cases {
        // The good knock comes first: it must not be sent either.
        let out = knock(&["127.0.0.1", &good, bad]);
        assert_fails_with(&out, 1, message);
        assert_eq!(stdout(&out), "");
    }
    assert_silent(&sock);
}

#[test]
fn negative_port_is_rejected() {
    let (sock, port) = udp_sink("127.0.0.1:0");
    let good = format!("{port}:udp");
    // Bare "-1" looks like an option to clap: a usage error naming it.
    let out = knock(&["127.0.0.1", &good, "-1"]);
    assert_fails_with(&out, 2, "'-1'");
    // After "--" it reaches the port parser.
    let out = knock(&["127.0.0.1", &good, "--", "-1"]);
    assert_fails_with(&out, 1, "knock: invalid port '-1' (ports are 1-65535)");
    assert_silent(&sock);
}

#[test]
fn unresolvable_host_exits_1() {
    let out = knock(&["no-such-host.invalid", "7000"]);
    assert_fails_with(
        &out,
        1,
        "knock: cannot resolve host 'no-such-host.invalid': ",
    );
}

#[test]
fn wrong_address_family_is_an_error() {
    let out = knock(&["-4", "::1", "7000"]);
    assert_fails_with(
        &out,
        1,
        "knock: host '::1' has no IPv4 address (it resolves to ::1); drop -4 or use -6",
    );
    let out = knock(&["-6", "127.0.0.1", "7000"]);
    assert_fails_with(&out, 1, "knock: host '127.0.0.1' has no IPv6 address");
}

#[test]
fn usage_errors_exit_2() {
    let out = knock(&["-4", "-6", "127.0.0.1", "7000"]);
    assert_fails_with(&out, 2, "cannot be used with");
    let out = knock(&["127.0.0.1"]);
    assert_fails_with(&out, 2, "PORT[:PROTO]");
    let out = knock(&["-d", "soon", "127.0.0.1", "7000"]);
    assert_fails_with(&out, 2, "soon");
}

#[test]
fn help_and_version_exit_0() {
    let out = knock(&["--help"]);
    assert_eq!(out.status.code(), Some(0));
    let help = stdout(&out);
    for needle in [
        "Usage: knock [OPTIONS] <HOST> [PORT[:PROTO]]...",
        "--totp <FILE>",
        "-u, --udp",
        "-d, --delay <MS>",
        "-4, --ipv4",
        "-6, --ipv6",
        "-v, --verbose",
        "an explicit :tcp stays TCP",
        "Examples:",
        "knock example.com 7000 8000 9000",
    ] {
        assert!(help.contains(needle), "--help lacks {needle:?}:\n{help}");
    }

    let out = knock(&["-h"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(stdout(&out).contains("Examples:"));

    let out = knock(&["-V"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        stdout(&out),
        format!("knock {}\n", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn delay_is_not_applied_after_the_last_knock() {
    // Two knocks with a 1.5 s delay: one pause, so well under the 3 s that a trailing
    // sleep (knock 0.8 behaviour) would take.
    let (a, pa) = udp_sink("127.0.0.1:0");
    let (b, pb) = udp_sink("127.0.0.1:0");
    let start = Instant::now();
    let out = knock(&[
        "-u",
        "-d",
        "1500",
        "127.0.0.1",
        &pa.to_string(),
        &pb.to_string(),
    ]);
    let elapsed = start.elapsed();
    assert!(out.status.success(), "stderr: {}", stderr(&out));
    assert!(elapsed >= Duration::from_millis(1500), "{elapsed:?}");
    assert!(elapsed < Duration::from_millis(2900), "{elapsed:?}");
    assert!(recv_one(&a, Duration::from_secs(1)).is_some());
    assert!(recv_one(&b, Duration::from_secs(1)).is_some());
}

/// `knock -v --totp` says which step, window, ports and address it knocks; a secret file
/// others can read is warned about on stderr, and the knocks still go out.
#[test]
fn verbose_totp_says_what_it_knocks_and_warns_about_a_readable_file() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("door.totp");
    knock_ipc::totp::Spec::write_new(&file).expect("new secret");
    let path = file.to_str().expect("utf-8 path");
    let out = knock(&["-v", "--totp", path, "127.0.0.1"]);
    assert!(out.status.success(), "stderr: {}", stderr(&out));
    assert_eq!(stderr(&out), "", "a 0600 file is not warned about");
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].starts_with("totp: step ") && lines[0].contains(" UTC, ports "),
        "{text}"
    );
    assert!(
        lines[1].starts_with("totp: knocking 127.0.0.1 over IPv4"),
        "{text}"
    );
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.starts_with("hitting tcp 127.0.0.1:"))
            .count(),
        4,
        "{text}"
    );
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let out = knock(&["--totp", path, "127.0.0.1"]);
    assert!(out.status.success(), "stderr: {}", stderr(&out));
    assert!(
        stderr(&out).starts_with(&format!(
            "knock: warning: TOTP file '{path}' is readable by its group and every user (mode 0644)"
        )),
        "{}",
        stderr(&out)
    );
}
