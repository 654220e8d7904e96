//! [`Fleet`]: many knockd hosts on one LAN, for `knockctl -H ssh://...`. Each host is a
//! network namespace with its own sshd (its own config, temporary host key, pid file and
//! log in a temp dir; key login only) and its own knockd; a client namespace joins them
//! through a bridge, so a knock from the client has the same source address on every host.
//! The client's ssh never reads `~/.ssh`: knockctl runs it through a wrapper
//! (`KNOCKCTL_SSH`) that passes `-F` with the fleet's own config, key and known_hosts.
//!
//! Users other than root exist only inside the fleet: each host's sshd and knockd run in a
//! private mount namespace where `/etc/passwd` and `/etc/group` are the fleet's copies (the
//! host's plus the lab users and a group `knockd`), bind-mounted; the host's user database is
//! never touched.
//!
//! Dropping the fleet kills every process it started (by PID), then whatever still runs in
//! its namespaces, deletes the namespaces and the temp dir.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tempfile::TempDir;

use crate::netns::{delete_ns, exec_in, ip, quiet_ip};
use crate::process::Daemon;
use crate::{bin, wait_until, SRV_IF};

/// The client's address on the fleet's LAN (10.98.0.0/16).
pub const CLIENT_V4: &str = "10.98.255.254";

/// How long sshd and knockd may take to start.
const START: Duration = Duration::from_secs(20);

static FLEETS: AtomicU32 = AtomicU32::new(0);

/// Host `i`'s address on the LAN.
pub fn host_v4(i: usize) -> String {
    format!("10.98.{}.{}", i / 200, i % 200 + 1)
}

/// One host: a namespace with sshd and knockd.
pub struct FleetHost {
    /// `h0`, `h1`, ...: its name in the ssh config and the hosts file.
    pub name: String,
    pub ns: String,
    pub addr: String,
    pub dir: PathBuf,
    pub socket: PathBuf,
    pub conf: PathBuf,
    pub knockd: Option<Daemon>,
    pub sshd: Option<Daemon>,
}

/// A client namespace and `n` hosts; see the module docs.
pub struct Fleet {
    pub cli: String,
    pub hosts: Vec<FleetHost>,
    /// A user that is not root and not in group knockd, allowed to log in by ssh.
    pub user: Option<String>,
    /// A user in group knockd (on every host) whose login shell is `/bin/sh`.
    pub member: Option<String>,
    /// The fleet's `/etc/passwd` and `/etc/group`, once a lab user exists.
    lab_etc: Option<(PathBuf, PathBuf)>,
    conf: String,
    dir: Arc<TempDir>,
    spawned: AtomicU32,
}

impl Fleet {
    /// `n` hosts, each running sshd and knockd with `conf`. Call `require_root` first.
    pub fn new(n: usize, conf: &str) -> Fleet {
        Fleet::build(n, conf, false)
    }

    /// Like [`Fleet::new`], with a lab user in group knockd on every host (its login shell
    /// `/bin/sh`, which reads no rc file), named in [`Fleet::member`].
    pub fn with_member(n: usize, conf: &str) -> Fleet {
        Fleet::build(n, conf, true)
    }

    fn build(n: usize, conf: &str, member: bool) -> Fleet {
        let prefix = format!(
            "kf{}-{}",
            std::process::id(),
            FLEETS.fetch_add(1, Ordering::Relaxed)
        );
        let dir = tempfile::Builder::new()
            .prefix(&format!("{prefix}-"))
            .tempdir()
            .expect("cannot create the fleet's temp dir");
        // Others (the test user) reach the sockets, keys stay root's (0600).
        set_mode(dir.path(), 0o711);
        let mut fleet = Fleet {
            cli: format!("{prefix}-c"),
            hosts: Vec::new(),
            user: None,
            member: member.then(|| format!("kf{}m", std::process::id())),
            lab_etc: None,
            conf: conf.to_string(),
            dir: Arc::new(dir),
            spawned: AtomicU32::new(0),
        };
        if member {
            fleet.write_lab_etc();
        }
        fleet.set_up_lan(&prefix, n);
        fleet.write_client_files();
        fleet.start_all();
        fleet
    }

    fn start_all(&mut self) {
        let conf = self.conf.clone();
        for i in 0..self.hosts.len() {
            self.start_sshd(i);
            self.start_knockd(i, &conf);
        }
        for i in 0..self.hosts.len() {
            self.wait_started(i);
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn set_up_lan(&mut self, prefix: &str, n: usize) {
        let cli = self.cli.clone();
        let _ = quiet_ip(&["netns", "delete", &cli]);
        ip(&["netns", "add", &cli]);
        ip(&["-n", &cli, "link", "set", "lo", "up"]);
        ip(&["-n", &cli, "link", "add", "kfbr", "type", "bridge"]);
        ip(&[
            "-n",
            &cli,
            "addr",
            "add",
            &format!("{CLIENT_V4}/16"),
            "dev",
            "kfbr",
        ]);
        ip(&["-n", &cli, "link", "set", "kfbr", "up"]);
        for i in 0..n {
            let ns = format!("{prefix}-h{i}");
            let _ = quiet_ip(&["netns", "delete", &ns]);
            ip(&["netns", "add", &ns]);
            let dir = self.path(&format!("h{i}"));
            std::fs::create_dir(&dir).expect("host dir");
            set_mode(&dir, 0o711);
            self.hosts.push(FleetHost {
                name: format!("h{i}"),
                ns: ns.clone(),
                addr: host_v4(i),
                socket: dir.join("knockd.sock"),
                conf: dir.join("knockd.conf"),
                dir,
                knockd: None,
                sshd: None,
            });
            ip(&["-n", &ns, "link", "set", "lo", "up"]);
            let port = format!("kf{i}");
            ip(&[
                "-n", &cli, "link", "add", &port, "type", "veth", "peer", "name", SRV_IF, "netns",
                &ns,
            ]);
            ip(&["-n", &cli, "link", "set", &port, "master", "kfbr", "up"]);
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{}/16", host_v4(i)),
                "dev",
                SRV_IF,
            ]);
            ip(&["-n", &ns, "link", "set", SRV_IF, "up"]);
        }
    }

    /// The client's key, ssh config (an alias per host), known_hosts and the ssh wrapper.
    fn write_client_files(&self) {
        keygen(&self.path("id"));
        let mut config = String::new();
        for h in &self.hosts {
            config.push_str(&format!(
                "Host {name}\n  HostName {addr}\n  HostKeyAlias {name}\n",
                name = h.name,
                addr = h.addr
            ));
        }
        config.push_str(&format!(
            "Host *\n  IdentityFile {id}\n  IdentitiesOnly yes\n  IdentityAgent none\n  \
             UserKnownHostsFile {kh}\n  GlobalKnownHostsFile /dev/null\n  \
             StrictHostKeyChecking yes\n  ConnectTimeout 5\n  LogLevel ERROR\n",
            id = self.path("id").display(),
            kh = self.path("known_hosts").display()
        ));
        std::fs::write(self.path("ssh_config"), config).expect("ssh_config");
        let wrapper = format!(
            "#!/bin/sh\nexec ssh -F {} \"$@\"\n",
            self.path("ssh_config").display()
        );
        std::fs::write(self.path("ssh"), wrapper).expect("ssh wrapper");
        set_mode(&self.path("ssh"), 0o755);
        let mut hosts = String::from("[hosts]\n");
        for h in &self.hosts {
            hosts.push_str(&format!(
                "{0} = \"ssh://root@{0}{1}\"\n",
                h.name,
                h.socket.display()
            ));
        }
        let all: Vec<String> = self
            .hosts
            .iter()
            .map(|h| format!("\"{}\"", h.name))
            .collect();
        hosts.push_str(&format!("[groups]\nfleet = [{}]\n", all.join(", ")));
        std::fs::write(self.path("hosts.toml"), hosts).expect("hosts.toml");
        let mut known = String::new();
        for h in &self.hosts {
            keygen(&h.dir.join("host_key"));
            let public = std::fs::read_to_string(h.dir.join("host_key.pub")).expect("key");
            known.push_str(&format!("{} {}", h.name, public));
            let sshd_config = format!(
                "ListenAddress {addr}:22\nHostKey {dir}/host_key\nPidFile {dir}/sshd.pid\n\
                 AuthorizedKeysFile {id}.pub\nStrictModes no\nPasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\nUsePAM no\nPermitRootLogin prohibit-password\n\
                 SetEnv PATH={bins}:/usr/sbin:/usr/bin:/sbin:/bin\nMaxStartups 200\n",
                addr = h.addr,
                dir = h.dir.display(),
                id = self.path("id").display(),
                bins = bin("knockctl")
                    .parent()
                    .map(Path::display)
                    .expect("bin dir"),
            );
            std::fs::write(h.dir.join("sshd_config"), sshd_config).expect("sshd_config");
        }
        std::fs::write(self.path("known_hosts"), known).expect("known_hosts");
        set_mode(&self.path("id.pub"), 0o644);
    }

    /// The ssh wrapper (for `KNOCKCTL_SSH`).
    pub fn ssh_wrapper(&self) -> PathBuf {
        self.path("ssh")
    }

    /// The hosts file: `h0 = "ssh://root@h0/<h0's socket>"`, ..., and the group `fleet` of
    /// them all.
    pub fn hosts_file(&self) -> PathBuf {
        self.path("hosts.toml")
    }

    fn spawn(&self, ns: &str, args: Vec<OsString>) -> Daemon {
        let n = self.spawned.fetch_add(1, Ordering::Relaxed);
        let name = Path::new(&args[0])
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns]);
        if let Some((passwd, group)) = &self.lab_etc {
            // `ip netns exec` gives the process a mount namespace of its own; `unshare -m`
            // one whose mounts never reach the host's, where the lab's files replace
            // /etc/passwd and /etc/group.
            cmd.args([
                "unshare",
                "-m",
                "--propagation",
                "private",
                "sh",
                "-c",
                r#"mount --bind "$1" /etc/passwd && mount --bind "$2" /etc/group || exit 97
shift 2; exec "$@""#,
                "sh",
            ])
            .arg(passwd)
            .arg(group);
        }
        cmd.args(&args);
        let (daemon, _child) = Daemon::spawn(
            format!("{name}#{n}"),
            cmd,
            self.path(&format!("{n}-{name}.stdout")),
            self.path(&format!("{n}-{name}.stderr")),
            Arc::clone(&self.dir),
        );
        daemon
    }

    /// Starts host `i`'s sshd (in the foreground, logging to stderr).
    pub fn start_sshd(&mut self, i: usize) {
        // sshd insists on its privilege separation directory.
        let _ = std::fs::create_dir_all("/run/sshd");
        let h = &self.hosts[i];
        let config = h.dir.join("sshd_config");
        let args = vec![
            "/usr/sbin/sshd".into(),
            "-D".into(),
            "-e".into(),
            "-f".into(),
            config.into(),
        ];
        let sshd = self.spawn(&h.ns.clone(), args);
        self.hosts[i].sshd = Some(sshd);
    }

    /// Writes `conf` and starts host `i`'s knockd on its LAN interface, socket and state in
    /// the host's dir; the socket is opened to everyone so that knockd's own
    /// peer-credential check is what refuses other users.
    pub fn start_knockd(&mut self, i: usize, conf: &str) {
        let h = &self.hosts[i];
        std::fs::write(&h.conf, conf).expect("knockd.conf");
        let args = crate::knockd::knockd_args(&h.conf, &h.socket, &h.dir.join("state.json"));
        let knockd = self.spawn(&h.ns.clone(), args);
        self.hosts[i].knockd = Some(knockd);
    }

    /// Waits until host `i`'s sshd and knockd are up.
    pub fn wait_started(&self, i: usize) {
        let h = &self.hosts[i];
        let (Some(sshd), Some(knockd)) = (&h.sshd, &h.knockd) else {
            panic!("{}: sshd or knockd not started", h.name);
        };
        assert!(
            sshd.wait_for_log("Server listening on", START),
            "{}: sshd did not start:\n{}",
            h.name,
            sshd.log_text()
        );
        assert!(
            knockd.wait_for_log("starting up, listening on", START),
            "{}: knockd did not start:\n{}",
            h.name,
            knockd.log_text()
        );
        assert!(
            wait_until(START, || h.socket.exists()),
            "{}: no socket",
            h.name
        );
        set_mode(&h.socket, 0o666);
    }

    /// Stops host `i`'s sshd and every ssh session on it (its knockd keeps running): the
    /// host is gone for knockctl.
    pub fn stop_sshd(&mut self, i: usize) {
        drop(self.hosts[i].sshd.take());
        let h = &self.hosts[i];
        let knockd = h.knockd.as_ref().map(Daemon::pid);
        let out = quiet_ip(&["netns", "pids", &h.ns]);
        let pids: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .filter(|p| p.parse::<u32>().ok() != knockd)
            .map(str::to_owned)
            .collect();
        if !pids.is_empty() {
            let _ = Command::new("kill").arg("-KILL").args(&pids).status();
        }
    }

    /// Runs `knockctl ARGS` in the client namespace with the fleet's ssh (waits for it).
    pub fn knockctl(&self, args: &[&str]) -> Output {
        self.knockctl_env(&[], args)
    }

    /// [`Fleet::knockctl`] with `env` added to its environment.
    pub fn knockctl_env(&self, env: &[(&str, &str)], args: &[&str]) -> Output {
        let mut argv: Vec<OsString> = vec![
            "env".into(),
            format!("KNOCKCTL_SSH={}", self.ssh_wrapper().display()).into(),
        ];
        argv.extend(env.iter().map(|(k, v)| OsString::from(format!("{k}={v}"))));
        argv.push(bin("knockctl").into());
        argv.extend(args.iter().map(OsString::from));
        exec_in(&self.cli, &argv)
    }

    /// A private directory of the fleet's (mode 0700) for the client's runtime files
    /// (`XDG_RUNTIME_DIR`: knockctl's ssh control sockets).
    pub fn runtime_dir(&self) -> PathBuf {
        let dir = self.path("run");
        if !dir.exists() {
            std::fs::create_dir(&dir).expect("runtime dir");
            set_mode(&dir, 0o700);
        }
        dir
    }

    /// Adds `text` to the client's ssh config (before its `Host *` defaults).
    pub fn add_ssh_config(&self, text: &str) {
        let path = self.path("ssh_config");
        let config = std::fs::read_to_string(&path).expect("read ssh_config");
        std::fs::write(&path, format!("{text}\n{config}")).expect("write ssh_config");
    }

    /// How many ssh logins host `i`'s sshd has accepted.
    pub fn logins(&self, i: usize) -> usize {
        self.hosts[i]
            .sshd
            .as_ref()
            .map_or(0, |d| d.log_text().matches("Accepted publickey").count())
    }

    /// A hosts file like [`Fleet::hosts_file`] whose URLs log in as `user`.
    pub fn hosts_file_for(&self, user: &str) -> PathBuf {
        let mut hosts = String::from("[hosts]\n");
        for h in &self.hosts {
            hosts.push_str(&format!(
                "{0} = \"ssh://{user}@{0}{1}\"\n",
                h.name,
                h.socket.display()
            ));
        }
        let all: Vec<String> = self
            .hosts
            .iter()
            .map(|h| format!("\"{}\"", h.name))
            .collect();
        hosts.push_str(&format!("[groups]\nfleet = [{}]\n", all.join(", ")));
        let path = self.path(&format!("hosts-{user}.toml"));
        std::fs::write(&path, hosts).expect("hosts file");
        path
    }

    /// Starts `knockctl ARGS` in the client namespace (for `tail`).
    pub fn spawn_knockctl(&self, args: &[&str]) -> Daemon {
        let mut argv: Vec<OsString> = vec![
            "/usr/bin/env".into(),
            format!("KNOCKCTL_SSH={}", self.ssh_wrapper().display()).into(),
            bin("knockctl").into(),
        ];
        argv.extend(args.iter().map(OsString::from));
        self.spawn(&self.cli.clone(), argv)
    }

    /// A shell command line that runs knockctl in the client namespace (for tmux).
    pub fn knockctl_command_line(&self, args: &str) -> String {
        format!(
            "ip netns exec {} env KNOCKCTL_SSH={} {} {args}",
            self.cli,
            self.ssh_wrapper().display(),
            bin("knockctl").display()
        )
    }

    /// Knocks `ports` on host `i` from the client (our `knock`).
    pub fn knock(&self, i: usize, ports: &[&str]) {
        let mut argv: Vec<OsString> = vec![bin("knock").into(), self.hosts[i].addr.clone().into()];
        argv.extend(ports.iter().map(OsString::from));
        let out = exec_in(&self.cli, &argv);
        assert!(
            out.status.success(),
            "knock: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `iptables -S INPUT` on host `i`.
    pub fn iptables_rules(&self, i: usize) -> String {
        let out = exec_in(&self.hosts[i].ns, ["iptables", "-S", "INPUT"]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A user that is not root and not in group knockd and may log in by key, known only
    /// inside the fleet's hosts: every host's sshd and knockd are restarted in their lab
    /// mount namespace (grants and attempts are lost).
    pub fn add_user(&mut self) -> String {
        let name = format!("kf{}u", std::process::id());
        self.user = Some(name.clone());
        self.write_lab_etc();
        for h in &mut self.hosts {
            drop(h.sshd.take());
            drop(h.knockd.take());
        }
        self.start_all();
        name
    }

    /// Writes the fleet's `/etc/passwd` and `/etc/group`: the host's, without any entry
    /// named like a lab user or `knockd`, plus [`Fleet::user`] and [`Fleet::member`]
    /// (uids and a gid no host entry has) and a group `knockd` holding the member.
    fn write_lab_etc(&mut self) {
        let host_passwd = std::fs::read_to_string("/etc/passwd").expect("read /etc/passwd");
        let host_group = std::fs::read_to_string("/etc/group").expect("read /etc/group");
        let ids = |file: &str| -> Vec<u32> {
            file.lines()
                .filter_map(|l| l.split(':').nth(2)?.parse().ok())
                .collect()
        };
        let (uids, gids) = (ids(&host_passwd), ids(&host_group));
        let mut free = (60_000..64_990)
            .rev()
            .filter(|id| !uids.contains(id) && !gids.contains(id));
        let ours: Vec<&String> = self.user.iter().chain(&self.member).collect();
        let keep = |file: &str, also: &[&str]| -> String {
            file.lines()
                .filter(|l| {
                    let name = l.split(':').next().unwrap_or_default();
                    !ours.iter().any(|u| u.as_str() == name) && !also.contains(&name)
                })
                .map(|l| format!("{l}\n"))
                .collect()
        };
        let mut passwd = keep(&host_passwd, &[]);
        let mut group = keep(&host_group, &["knockd"]);
        let knockd_gid = free.next().expect("a free gid");
        if let Some(user) = &self.user {
            let uid = free.next().expect("a free uid");
            passwd.push_str(&format!("{user}:x:{uid}:65534:fleet lab user:/:/bin/sh\n"));
        }
        let mut members = Vec::new();
        if let Some(member) = &self.member {
            let uid = free.next().expect("a free uid");
            passwd.push_str(&format!(
                "{member}:x:{uid}:{knockd_gid}:fleet lab member:/:/bin/sh\n"
            ));
            members.push(member.as_str());
        }
        group.push_str(&format!("knockd:x:{knockd_gid}:{}\n", members.join(",")));
        let (p, g) = (self.path("passwd"), self.path("group"));
        std::fs::write(&p, passwd).expect("lab passwd");
        std::fs::write(&g, group).expect("lab group");
        set_mode(&p, 0o644);
        set_mode(&g, 0o644);
        self.lab_etc = Some((p, g));
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for h in &mut self.hosts {
            drop(h.sshd.take());
            drop(h.knockd.take());
        }
        for h in &self.hosts {
            delete_ns(&h.ns);
        }
        delete_ns(&self.cli);
    }
}

fn keygen(path: &Path) {
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "knock-e2e", "-f"])
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .expect("run ssh-keygen (apt-get install openssh-client)");
    assert!(
        out.status.success(),
        "ssh-keygen: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {mode:o} {}: {e}", path.display()));
}
