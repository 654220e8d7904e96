//! The effect side of the nftables backend.
//!
//! Element changes (grants) use one long-lived nf_tables netlink socket: one batch = one
//! kernel transaction, tens of microseconds, no process. A small batch that finds nothing
//! queued and the socket free is applied at once by the caller (the quiet case: a lone knock
//! pays no hand-off to another thread, whose wake-up costs as much as the transaction on an
//! idle machine). Everything else goes through a worker thread, in the order submitted: jobs
//! that queue up while a transaction is in flight are merged into the next one (batching under
//! load). Table set-up, clean-up and listings are rare and go through the `nft` program
//! (`nft -f -`, `nft -j list ...`).

use super::dump;
use super::listing::{self, KernelElem};
use super::netlink;
use super::{table, ElemOp, NftError};
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Most element operations in one kernel transaction (keeps a batch well under the socket
/// buffer; a flood's backlog is split into several transactions).
pub const MAX_OPS_PER_BATCH: usize = 256;
const RECV_TIMEOUT: Duration = Duration::from_secs(5);

/// Run `nft` with `args`, `stdin` as its input; stdout on success.
pub fn nft(args: &[&str], stdin: Option<&str>) -> Result<String, NftError> {
    let mut child = Command::new("nft")
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| NftError::Spawn(e.to_string()))?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes())
            .map_err(|e| NftError::Nft(format!("writing to nft: {e}")))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| NftError::Nft(e.to_string()))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        let err = String::from_utf8_lossy(&out.stderr);
        Err(NftError::Nft(err.trim().chars().take(1000).collect()))
    }
}

/// Apply an `nft -f` script as one transaction.
pub fn apply_script(script: &str) -> Result<(), NftError> {
    nft(&["-f", "-"], Some(script)).map(|_| ())
}

/// The elements of knockd's allow sets, as the kernel holds them. `Ok(None)`: no table.
pub fn list_elements() -> Result<Option<Vec<KernelElem>>, NftError> {
    match nft(&["-j", "list", "table", "inet", table()], None) {
        Ok(json) => listing::parse(&json).map(Some),
        Err(NftError::Nft(e)) if e.contains("No such file or directory") => Ok(None),
        Err(e) => Err(e),
    }
}

/// The whole ruleset as JSON (for detection).
pub fn list_ruleset() -> Result<String, NftError> {
    nft(&["-j", "list", "ruleset"], None)
}

/// A long-lived `NETLINK_NETFILTER` socket.
pub struct Netlink {
    fd: OwnedFd,
    seq: u32,
    buf: Vec<u8>,
}

impl Netlink {
    pub fn open() -> Result<Netlink, NftError> {
        use nix::sys::socket::{
            bind, setsockopt, socket, sockopt, AddressFamily, NetlinkAddr, SockFlag, SockProtocol,
            SockType,
        };
        let err = |what: &str, e: nix::Error| NftError::Netlink(format!("{what}: {e}"));
        let fd = socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkNetFilter,
        )
        .map_err(|e| err("socket", e))?;
        bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 0)).map_err(|e| err("bind", e))?;
        let tv =
            nix::sys::time::TimeVal::new(i64::try_from(RECV_TIMEOUT.as_secs()).unwrap_or(5), 0);
        setsockopt(&fd, sockopt::ReceiveTimeout, &tv).map_err(|e| err("SO_RCVTIMEO", e))?;
        // Room for the acks of a large batch.
        let _ = setsockopt(&fd, sockopt::RcvBuf, &(1 << 20));
        let seq = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(1);
        Ok(Netlink {
            fd,
            seq,
            buf: vec![0; 1 << 16],
        })
    }

    /// The elements of both allow sets with the time the kernel has left on each (one dump
    /// per set). `NoTable` when table inet knockd is gone.
    pub fn dump(&mut self) -> Result<Vec<KernelElem>, NftError> {
        use nix::sys::socket::{recv, send, MsgFlags};
        let fd = self.fd.as_raw_fd();
        let mut out = Vec::new();
        for set in [super::SET4, super::SET6] {
            let seq = self.seq;
            self.seq = self.seq.wrapping_add(1);
            send(fd, &dump::request(set, seq), MsgFlags::empty())
                .map_err(|e| NftError::Netlink(format!("send: {e}")))?;
            loop {
                let n = recv(fd, &mut self.buf, MsgFlags::empty())
                    .map_err(|e| NftError::Netlink(format!("no answer from the kernel: {e}")))?;
                match dump::decode(&self.buf[..n], seq, &mut out) {
                    dump::Part::More => {}
                    dump::Part::Done => break,
                    dump::Part::Error(libc::ENOENT) => return Err(NftError::NoTable),
                    dump::Part::Error(e) => {
                        return Err(NftError::Netlink(format!(
                            "the kernel refused to list set {set}: {}",
                            std::io::Error::from_raw_os_error(e)
                        )))
                    }
                }
            }
        }
        Ok(out)
    }

    /// Apply `ops` as one kernel transaction (all or nothing).
    pub fn apply(&mut self, ops: &[ElemOp]) -> Result<(), NftError> {
        use nix::sys::socket::{recv, send, MsgFlags};
        if ops.is_empty() {
            return Ok(());
        }
        let batch = netlink::encode(ops, self.seq);
        self.seq = batch.last_seq.wrapping_add(2);
        let fd = self.fd.as_raw_fd();
        send(fd, &batch.bytes, MsgFlags::empty())
            .map_err(|e| NftError::Netlink(format!("send: {e}")))?;
        let in_batch = |s: u32| {
            s.wrapping_sub(batch.first_seq) <= batch.last_seq.wrapping_sub(batch.first_seq)
        };
        let mut first_error = None;
        loop {
            let n = recv(fd, &mut self.buf, MsgFlags::empty())
                .map_err(|e| NftError::Netlink(format!("no answer from the kernel: {e}")))?;
            for ack in netlink::decode_acks(&self.buf[..n]) {
                if !in_batch(ack.seq) {
                    continue; // a late answer to an earlier batch
                }
                if ack.errno != 0 && first_error.is_none() {
                    first_error = Some(ack.errno);
                }
                if ack.seq == batch.last_seq {
                    return match first_error {
                        None => Ok(()),
                        Some(libc::ENOENT) => Err(NftError::NoTable),
                        Some(e) => Err(NftError::Netlink(format!(
                            "the kernel refused the transaction: {}",
                            std::io::Error::from_raw_os_error(e)
                        ))),
                    };
                }
            }
        }
    }
}

/// How element batches reach the kernel.
pub enum Transport {
    Netlink(Netlink),
    /// One `nft -f -` process per batch (about 2 ms); used when the socket cannot be opened.
    Cli,
}

impl Transport {
    /// The netlink socket, or `nft -f -` if it cannot be opened.
    pub fn best() -> Transport {
        match Netlink::open() {
            Ok(n) => Transport::Netlink(n),
            Err(e) => {
                tracing::warn!("nftables: {e}; falling back to one nft process per batch");
                Transport::Cli
            }
        }
    }

    /// The elements the kernel holds now, with their time left.
    pub fn list(&mut self) -> Result<Vec<KernelElem>, NftError> {
        match self {
            Transport::Netlink(n) => n.dump(),
            Transport::Cli => list_elements()?.ok_or(NftError::NoTable),
        }
    }

    /// Element changes go over the netlink socket (not one `nft` process per batch).
    fn is_netlink(&self) -> bool {
        matches!(self, Transport::Netlink(_))
    }

    pub fn apply(&mut self, ops: &[ElemOp]) -> Result<(), NftError> {
        for chunk in ops.chunks(MAX_OPS_PER_BATCH) {
            match self {
                Transport::Netlink(n) => n.apply(chunk)?,
                Transport::Cli => apply_script(&super::script::ops_script(chunk))?,
            }
        }
        Ok(())
    }
}

/// Work for the worker thread, done in the order submitted.
enum Work {
    /// Element changes (grants): merged with other queued element jobs into one transaction.
    Ops(Vec<ElemOp>),
    /// An `nft -f` script (table set-up at reload).
    Script(String),
    /// Read the elements back (after everything submitted before).
    List(tokio::sync::oneshot::Sender<Result<Vec<KernelElem>, String>>),
    /// Check the table against a script; re-create it with the script when it is not whole.
    Repair(String, tokio::sync::oneshot::Sender<Result<bool, String>>),
}

struct Job {
    work: Work,
    /// For `Ops` and `Script` (`List` answers through its own sender).
    reply: Option<tokio::sync::oneshot::Sender<Result<(), String>>>,
}

impl Job {
    fn answer(self, r: Result<(), String>) {
        if let Some(reply) = self.reply {
            let _ = reply.send(r);
        }
    }
}

/// Sends work to the nftables worker thread, or applies a small element batch at once when
/// nothing is queued (at most [`crate::firewall::direct::MAX_OPS`] ops). Cheap to clone.
#[derive(Clone)]
pub struct Handle {
    tx: std::sync::mpsc::Sender<Job>,
    shared: Arc<Shared>,
}

/// What the caller and the worker thread share: the transport (whoever holds the lock may
/// use the socket) and the count of jobs submitted and not yet answered.
struct Shared {
    transport: Mutex<Transport>,
    queued: AtomicUsize,
}

impl std::fmt::Debug for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handle")
            .field("queued", &self.shared.queued.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Handle {
    /// Start the worker thread with `transport`.
    pub fn start(transport: Transport) -> Result<Handle, NftError> {
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        let shared = Arc::new(Shared {
            transport: Mutex::new(transport),
            queued: AtomicUsize::new(0),
        });
        let worker = shared.clone();
        std::thread::Builder::new()
            .name("knockd-nft".into())
            .spawn(move || work(&worker, &rx))
            .map_err(|e| NftError::Netlink(format!("cannot start the nftables thread: {e}")))?;
        Ok(Handle { tx, shared })
    }

    /// Queue `job` for the worker thread.
    fn send(&self, job: Job) -> Result<(), String> {
        self.shared.queued.fetch_add(1, Ordering::SeqCst);
        self.tx.send(job).map_err(|_| {
            self.shared.queued.fetch_sub(1, Ordering::SeqCst);
            "the nftables thread has stopped".to_string()
        })
    }

    /// Apply `ops` here and now when they are few, nothing submitted before is still waiting
    /// or running, and the socket is free (None otherwise: queue them). The lock is taken
    /// before the count is read, and the worker holds it for every transaction and counts a
    /// job as done only after it ran, so a batch applied here is always ordered after
    /// everything submitted before it.
    pub fn apply_now(&self, ops: &[ElemOp]) -> Option<Result<(), String>> {
        if ops.is_empty() || ops.len() > crate::firewall::direct::MAX_OPS {
            return None;
        }
        let mut transport = self.shared.transport.try_lock().ok()?;
        if self.shared.queued.load(Ordering::SeqCst) != 0 || !transport.is_netlink() {
            return None;
        }
        Some(transport.apply(ops).map_err(|e| e.to_string()))
    }

    async fn submit(&self, work: Work) -> Result<(), String> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        self.send(Job {
            work,
            reply: Some(reply),
        })?;
        rx.await
            .unwrap_or_else(|_| Err("the nftables thread has stopped".to_string()))
    }

    /// Apply `ops` (at once when few and nothing is queued, else in one transaction with
    /// whatever else is queued); Err names the problem.
    pub async fn apply(&self, ops: Vec<ElemOp>) -> Result<(), String> {
        if let Some(r) = self.apply_now(&ops) {
            return r;
        }
        self.submit(Work::Ops(ops)).await
    }

    /// The elements the kernel holds, read after everything submitted before.
    pub async fn list(&self) -> Result<Vec<KernelElem>, String> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        self.send(Job {
            work: Work::List(reply),
            reply: None,
        })?;
        rx.await
            .unwrap_or_else(|_| Err("the nftables thread has stopped".to_string()))
    }

    /// Check the table against `script` (after everything submitted before) and re-create it
    /// with the script when it is not whole. Ok(true): it was re-created.
    pub async fn repair(&self, script: String) -> Result<bool, String> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        self.send(Job {
            work: Work::Repair(script, reply),
            reply: None,
        })?;
        rx.await
            .unwrap_or_else(|_| Err("the nftables thread has stopped".to_string()))
    }

    /// Apply an `nft -f` script, after everything submitted before it.
    pub async fn script(&self, script: String) -> Result<(), String> {
        self.submit(Work::Script(script)).await
    }
}

/// The process's nftables worker (one netlink socket, one FIFO for element batches and
/// scripts), started on first use.
pub fn shared() -> Result<&'static Handle, String> {
    static SHARED: std::sync::OnceLock<Result<Handle, String>> = std::sync::OnceLock::new();
    SHARED
        .get_or_init(|| Handle::start(Transport::best()).map_err(|e| e.to_string()))
        .as_ref()
        .map_err(Clone::clone)
}

/// The worker thread: jobs in the order submitted, each counted done once answered.
fn work(shared: &Shared, rx: &std::sync::mpsc::Receiver<Job>) {
    let done = |n: usize| shared.queued.fetch_sub(n, Ordering::SeqCst);
    let transport = || shared.transport.lock().unwrap_or_else(|p| p.into_inner());
    let mut pending: Option<Job> = None;
    loop {
        let first = match pending.take() {
            Some(j) => j,
            None => match rx.recv() {
                Ok(j) => j,
                Err(_) => return,
            },
        };
        let Job { work, reply } = first;
        let first = match work {
            Work::Script(script) => {
                let r = apply_script(&script).map_err(|e| e.to_string());
                Job {
                    work: Work::Ops(Vec::new()),
                    reply,
                }
                .answer(r);
                done(1);
                continue;
            }
            Work::List(to) => {
                let _ = to.send(transport().list().map_err(|e| e.to_string()));
                done(1);
                continue;
            }
            Work::Repair(script, to) => {
                let _ = to.send(repair(&script).map_err(|e| e.to_string()));
                done(1);
                continue;
            }
            work @ Work::Ops(_) => Job { work, reply },
        };
        // Merge the element jobs queued behind this one, up to a script or list.
        let mut jobs = vec![first];
        while jobs.len() < MAX_OPS_PER_BATCH {
            match rx.try_recv() {
                Ok(j) if !matches!(j.work, Work::Ops(_)) => {
                    pending = Some(j);
                    break;
                }
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
        let n = jobs.len();
        run_jobs(&mut transport(), jobs);
        done(n);
    }
}

fn ops_of(j: &Job) -> &[ElemOp] {
    match &j.work {
        Work::Ops(o) => o,
        Work::Script(_) | Work::List(_) | Work::Repair(..) => &[],
    }
}

/// Re-create the table with `script` unless it is whole (see [`listing::intact`]); the
/// script keeps whatever elements survived. Ok(true): re-created.
fn repair(script: &str) -> Result<bool, NftError> {
    let rules = script
        .lines()
        .filter(|l| l.starts_with("add rule "))
        .count();
    let whole = match nft(&["-j", "list", "table", "inet", table()], None) {
        Ok(json) => listing::intact(&json, rules),
        Err(NftError::Nft(e)) if e.contains("No such file or directory") => false,
        Err(e) => return Err(e),
    };
    if whole {
        return Ok(false);
    }
    apply_script(script)?;
    Ok(true)
}

fn run_jobs(transport: &mut Transport, jobs: Vec<Job>) {
    if jobs.len() > 1 {
        let all: Vec<ElemOp> = jobs
            .iter()
            .flat_map(|j| ops_of(j).iter().cloned())
            .collect();
        if transport.apply(&all).is_ok() {
            for j in jobs {
                j.answer(Ok(()));
            }
            return;
        }
        // One bad job must not fail the others: apply each alone.
    }
    for j in jobs {
        let r = transport.apply(ops_of(&j)).map_err(|e| e.to_string());
        j.answer(r);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Proto;
    use crate::firewall::nftables::Elem;

    /// Run by hand inside a throwaway namespace: `ip netns exec NS <test binary> --ignored probe`.
    #[test]
    #[ignore = "needs CAP_NET_ADMIN inside a throwaway network namespace"]
    fn probe_netlink_in_namespace() {
        apply_script(&crate::firewall::nftables::script::TableSpec::default().script(&[]))
            .expect("table");
        let mut n = Netlink::open().expect("socket");
        let e = Elem {
            addr: "10.0.0.12".parse().expect("ip"),
            proto: Proto::Tcp,
            port: 22,
        };
        let e6 = Elem {
            addr: "fd99::2".parse().expect("ip"),
            proto: Proto::Udp,
            port: 53,
        };
        let t = std::time::Instant::now();
        n.apply(&[
            ElemOp::Put {
                elem: e,
                timeout: Duration::from_secs(30),
            },
            ElemOp::Put {
                elem: e6,
                timeout: Duration::from_secs(40),
            },
        ])
        .expect("put");
        eprintln!("put took {:?}", t.elapsed());
        let listed = list_elements().expect("list").expect("table");
        eprintln!("{listed:?}");
        assert_eq!(listed.len(), 2);
        let mut dumped = n.dump().expect("dump");
        dumped.sort_by_key(|k| k.elem);
        eprintln!("{dumped:?}");
        assert_eq!(dumped.len(), 2);
        assert_eq!(dumped[0].elem, e);
        assert_eq!(dumped[0].timeout, Some(Duration::from_secs(30)));
        assert!(dumped[0]
            .expires
            .is_some_and(|x| x <= Duration::from_secs(30)));
        n.apply(&[ElemOp::Remove { elem: e }]).expect("remove");
        n.apply(&[ElemOp::Remove { elem: e }])
            .expect("remove twice");
        assert_eq!(list_elements().expect("list").expect("table").len(), 1);
        let mut times = Vec::new();
        for _ in 0..200 {
            let t = std::time::Instant::now();
            n.apply(&[ElemOp::Put {
                elem: e,
                timeout: Duration::from_secs(30),
            }])
            .expect("put");
            times.push(t.elapsed());
        }
        times.sort();
        eprintln!("p50 {:?} p99 {:?}", times[100], times[198]);
        // A flood's batch: 256 grants of distinct sources in one transaction.
        let batch: Vec<ElemOp> = (0..MAX_OPS_PER_BATCH)
            .map(|i| ElemOp::Put {
                elem: Elem {
                    addr: std::net::IpAddr::from([10, 192, (i / 250) as u8, (i % 250) as u8 + 1]),
                    proto: Proto::Tcp,
                    port: 22,
                },
                timeout: Duration::from_secs(30),
            })
            .collect();
        let mut times = Vec::new();
        for _ in 0..20 {
            let t = std::time::Instant::now();
            n.apply(&batch).expect("batch");
            times.push(t.elapsed());
        }
        times.sort();
        eprintln!(
            "batch of {} puts: p50 {:?} max {:?}",
            batch.len(),
            times[10],
            times[19]
        );
        assert_eq!(
            list_elements().expect("list").expect("table").len(),
            2 + MAX_OPS_PER_BATCH
        );
        apply_script(&crate::firewall::nftables::script::cleanup_script()).expect("cleanup");
        assert!(matches!(
            n.apply(&[ElemOp::Remove { elem: e }]),
            Err(NftError::NoTable)
        ));
    }
}
