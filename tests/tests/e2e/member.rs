//! What a member of group knockd may see (issue 21.5): door sequences, static and one-time,
//! are sent to root only; a member sees each door's kind and number of knocks. knockd enforces
//! it: the sequences never leave knockd for a member's connection.
//!
//! A fresh machine has no group knockd, and the host's `/etc/group` is never touched: knockd
//! runs in a private mount namespace where `/etc/group` is a copy from the lab with a group
//! knockd added (a gid no host group has), and the member is uid 65534 with that gid as a
//! supplementary group (setpriv).

use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output};

use knock_e2e::knockd::OurKnockd;
use knock_e2e::{bin, require_root, Lab};

/// A gid no group of the host has.
fn free_gid(group_file: &str) -> u32 {
    let used: Vec<u32> = group_file
        .lines()
        .filter_map(|l| l.split(':').nth(2)?.parse().ok())
        .collect();
    (60_000..64_990)
        .rev()
        .find(|g| !used.contains(g))
        .expect("a free gid")
}

/// `knockctl --socket <socket> <args>` as uid 65534 with supplementary group `gid`.
fn as_member(k: &OurKnockd, gid: u32, args: &[&str]) -> Output {
    Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", &format!("--groups={gid}")])
        .arg(bin("knockctl"))
        .arg("--socket")
        .arg(&k.socket)
        .args(args)
        .output()
        .expect("run setpriv knockctl")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn a_member_of_group_knockd_sees_kinds_and_knock_counts_never_sequences() {
    if !require_root() {
        return;
    }
    let lab = Lab::new();
    let host_groups = std::fs::read_to_string("/etc/group").expect("read /etc/group");
    let gid = free_gid(&host_groups);
    let mut groups: String = host_groups
        .lines()
        .filter(|l| !l.starts_with("knockd:"))
        .map(|l| format!("{l}\n"))
        .collect();
    groups.push_str(&format!("knockd:x:{gid}:\n"));
    let group_file = lab.write_file("group", &groups);
    let otp = lab.write_file("once.otp", "7101,7102,7103,7104\n7201,7202,7203,7204\n");
    std::fs::set_permissions(&otp, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let conf = format!(
        "[ssh]\n sequence = 7000,8000,9000\n tcpflags = syn\n open = 22/tcp\n\
         [once]\n one_time_sequences = {}\n tcpflags = syn\n open = 443/tcp\n",
        otp.display()
    );
    let prefix: Vec<OsString> = [
        "unshare",
        "-m",
        "--propagation",
        "private",
        "sh",
        "-c",
        r#"mount --bind "$1" /etc/group || exit 97; shift; exec "$@""#,
        "sh",
    ]
    .into_iter()
    .map(OsString::from)
    .chain([group_file.into_os_string()])
    .collect();
    let k = OurKnockd::spawn_with(&lab, &conf, prefix, &[]);
    k.wait_started();
    // The member can reach the socket (mode 0660, group knockd) through the lab's dir.
    std::fs::set_permissions(lab.tempdir(), std::fs::Permissions::from_mode(0o711))
        .expect("chmod lab dir");
    let meta = std::fs::metadata(&k.socket).expect("socket");
    use std::os::unix::fs::MetadataExt;
    assert_eq!(meta.gid(), gid, "socket not in the lab's group knockd");

    // Root sees the sequences.
    let root = k.knockctl(&["doors"]);
    assert!(root.status.success(), "{}", text(&root));
    let root = text(&root);
    assert!(
        root.contains("7000:tcp") && root.contains("7101:tcp"),
        "{root}"
    );

    // A member sees kind and number of knocks, in text and JSON, and no port of either.
    let table = as_member(&k, gid, &["doors"]);
    assert!(table.status.success(), "{}", text(&table));
    let table = text(&table);
    for secret in ["7000", "8000", "9000", "7101", "7104", "7201"] {
        assert!(!table.contains(secret), "member sees {secret}:\n{table}");
    }
    assert!(table.contains("(hidden: 3 knocks)"), "{table}");
    assert!(table.contains("(hidden: 4 knocks)"), "{table}");
    let json = as_member(&k, gid, &["--json", "doors"]);
    assert!(json.status.success(), "{}", text(&json));
    let doors: serde_json::Value = serde_json::from_slice(&json.stdout).expect("JSON");
    let doors = doors.as_array().expect("an array of doors");
    assert_eq!(doors.len(), 2, "{doors:?}");
    for d in doors {
        assert_eq!(d["sequence"], serde_json::json!([]), "{d}");
        assert_eq!(d["sequence_hidden"], true, "{d}");
    }
    assert_eq!(doors[0]["kind"], "static");
    assert_eq!(doors[0]["knocks"], 3);
    assert_eq!(doors[1]["kind"], "one-time");
    assert_eq!(doors[1]["knocks"], 4);
    // The member's other requests still work.
    let status = as_member(&k, gid, &["status"]);
    assert!(status.status.success(), "{}", text(&status));
}
