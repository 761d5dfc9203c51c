//! The daemon benchmark's network: the director and real-server namespaces,
//! the one listener that answers every real server, and the pollers that
//! watch the kernel's table from inside the director namespace.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ipvs::ServiceKey;

use super::Table;
use crate::nlmon::Capture;
use crate::Res;

/// Where the daemon runs (its VIPs on `dum0`, a veth to the real servers).
pub const DIR_NS: &str = "bd-dir";
/// Where every real server answers.
pub const RS_NS: &str = "bd-rs";

fn ip(args: &[&str]) -> Res<()> {
    let out = Command::new("ip").args(args).output().map_err(|e| format!("ip: {e}"))?;
    if !out.status.success() {
        return Err(format!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok(())
}

/// Both namespaces: director 192.168.77.1 routes 10.128.0.0/9 to the
/// real-server side 192.168.77.2, where that whole range is local (one
/// route), so one wildcard listener answers every real server.
pub fn setup() -> Res<()> {
    teardown();
    for ns in [DIR_NS, RS_NS] {
        ip(&["netns", "add", ns])?;
        ip(&["-n", ns, "link", "set", "lo", "up"])?;
    }
    ip(&["-n", DIR_NS, "link", "add", "vd", "type", "veth", "peer", "name", "vr", "netns", RS_NS])?;
    ip(&["-n", DIR_NS, "addr", "add", "192.168.77.1/24", "dev", "vd"])?;
    ip(&["-n", RS_NS, "addr", "add", "192.168.77.2/24", "dev", "vr"])?;
    ip(&["-n", DIR_NS, "link", "set", "vd", "up"])?;
    ip(&["-n", RS_NS, "link", "set", "vr", "up"])?;
    ip(&["-n", DIR_NS, "route", "add", "10.128.0.0/9", "via", "192.168.77.2"])?;
    ip(&["-n", DIR_NS, "link", "add", "dum0", "type", "dummy"])?;
    ip(&["-n", DIR_NS, "link", "set", "dum0", "up"])?;
    ip(&["-n", RS_NS, "route", "add", "local", "10.128.0.0/9", "dev", "lo", "table", "local"])
}

/// Flush what a daemon left and delete both namespaces (errors ignored: a
/// first run finds nothing to delete).
pub fn teardown() {
    let _ = Command::new("ip").args(["netns", "exec", DIR_NS, "ipvsadm", "-C"]).output();
    for ns in [DIR_NS, RS_NS] {
        let _ = Command::new("ip").args(["netns", "del", ns]).output();
    }
}

/// Make real server `addr` stop answering (`on`) or answer again: a
/// blackhole route on the real-server side drops what is sent to it.
pub fn blackhole(addr: Ipv4Addr, on: bool) -> Res<()> {
    let a = format!("{addr}/32");
    ip(&["-n", RS_NS, "route", if on { "add" } else { "del" }, "blackhole", &a, "table", "local"])
}

/// Move the calling thread into namespace `ns`.
fn enter(ns: &str) -> Res<()> {
    let f = std::fs::File::open(format!("/run/netns/{ns}")).map_err(|e| format!("netns {ns}: {e}"))?;
    // SAFETY: setns on a namespace file we hold open; affects this thread only.
    let rc = unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&f), libc::CLONE_NEWNET) };
    if rc != 0 {
        return Err(format!("setns {ns}: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Run `f` on a thread inside namespace `ns` and give its result.
pub fn in_ns<T: Send + 'static>(ns: &'static str, f: impl FnOnce() -> T + Send + 'static) -> Res<T> {
    std::thread::spawn(move || enter(ns).map(|()| f())).join().map_err(|_| "namespace thread panicked".to_owned())?
}

fn runtime() -> Res<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| format!("runtime: {e}"))
}

/// Poll the table until it holds every service and real server of `t`;
/// when that was first seen. Both daemons add the services in the config's
/// order, so the poll asks for the LAST service's real servers every 10 ms
/// (one small request: a whole dump of a large table takes longer under
/// emulation than the finer daemon needs to fill it); once those are all
/// there, one dump confirms the whole table and the time of the small
/// request counts. A table filled in another order is still seen, by dumps.
pub fn wait_full(t: &Table, limit: Duration) -> Res<Instant> {
    let (services, reals) = (t.services as usize, (t.services * t.reals) as usize);
    let last = ServiceKey::tcp(t.vip(t.services - 1));
    let start = Instant::now();
    runtime()?.block_on(async {
        let h = ipvs::Ipvs::connect().await.map_err(|e| format!("connect: {e}"))?;
        let full =
            |table: &ipvs::Table| table.len() == services && table.iter().map(|(_, d)| d.len()).sum::<usize>() == reals;
        loop {
            let seen = loop {
                if h.destinations(&last).await.is_ok_and(|d| d.len() == t.reals as usize) {
                    break Instant::now();
                }
                if start.elapsed() > limit {
                    return Err(format!("the table was not full after {limit:?}"));
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            };
            // A dump that fails (the daemon changes the table meanwhile) is retried.
            if h.dump().await.is_ok_and(|table| full(&table)) {
                return Ok(seen);
            }
            if start.elapsed() > limit {
                return Err(format!("the table was not full after {limit:?}"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
}

/// Poll each real server (service, address) until the kernel shows it with
/// `weight`; when each was first seen so (`None`: not within `limit`).
pub fn wait_weights(rs: &[(SocketAddr, Ipv4Addr)], weight: u32, limit: Duration) -> Res<Vec<Option<Instant>>> {
    let start = Instant::now();
    let mut seen = vec![None; rs.len()];
    runtime()?.block_on(async {
        let h = ipvs::Ipvs::connect().await.map_err(|e| format!("connect: {e}"))?;
        while seen.iter().any(Option::is_none) && start.elapsed() < limit {
            for (i, (vip, real)) in rs.iter().enumerate() {
                if seen[i].is_some() {
                    continue;
                }
                let dests = h.destinations(&ServiceKey::tcp(*vip)).await.unwrap_or_default();
                let now = Instant::now();
                if dests.iter().any(|d| d.destination.addr.ip() == *real && d.destination.weight == weight) {
                    seen[i] = Some(now);
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(seen)
    })
}

/// Poll `/proc/net/ip_vs` (no netlink: it would be counted) until its real
/// servers are exactly `want` (sorted `HEXADDR:PORT`); when that was seen.
pub fn wait_proc_table(want: &[String], limit: Duration) -> Res<Instant> {
    let start = Instant::now();
    loop {
        let text = std::fs::read_to_string("/proc/thread-self/net/ip_vs").map_err(|e| e.to_string())?;
        let mut got: Vec<&str> = text
            .lines()
            .filter_map(|l| l.trim_start().strip_prefix("-> "))
            .filter_map(|l| l.split_whitespace().next())
            .filter(|a| *a != "RemoteAddress:Port")
            .collect();
        got.sort_unstable();
        if got.len() == want.len() && got.iter().zip(want).all(|(a, b)| *a == b) {
            return Ok(Instant::now());
        }
        if start.elapsed() > limit {
            return Err(format!("the reloaded table was not there after {limit:?}"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// An nlmon device in the calling thread's namespace, and a capture on it.
pub fn start_capture() -> Res<Capture> {
    let _ = Command::new("ip").args(["link", "del", "nlmon0"]).output();
    ip(&["link", "add", "nlmon0", "type", "nlmon"])?;
    ip(&["link", "set", "nlmon0", "up"])?;
    Capture::start("nlmon0")
}

/// Accepted connections (= successful checks, whichever daemon runs them).
#[derive(Default)]
struct Seen {
    accepted: AtomicU64,
    last: Mutex<HashMap<Ipv4Addr, Instant>>,
}

/// The one listener on 0.0.0.0:80 of the real-server namespace: it accepts,
/// counts, notes when each address was last checked, and closes.
pub struct Listener {
    seen: Arc<Seen>,
}

impl Listener {
    /// Start it on a thread of its own (it runs until the process ends).
    pub fn start() -> Res<Self> {
        let seen = Arc::new(Seen::default());
        let s2 = Arc::clone(&seen);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let r = enter(RS_NS).and_then(|()| runtime()).and_then(|rt| rt.block_on(accept_loop(&s2, &ready_tx)));
            let _ = ready_tx.send(r);
        });
        ready_rx.recv().map_err(|_| "the listener thread ended".to_owned())??;
        Ok(Self { seen })
    }

    pub fn accepted(&self) -> u64 {
        self.seen.accepted.load(Ordering::SeqCst)
    }

    pub fn last_seen(&self, a: Ipv4Addr) -> Option<Instant> {
        self.seen.last.lock().unwrap().get(&a).copied()
    }

    /// Wait until every address in `addrs` has been checked at least once
    /// since the listener started.
    pub fn wait_all_seen(&self, addrs: &[Ipv4Addr], limit: Duration) -> Res<()> {
        let start = Instant::now();
        loop {
            let missing = {
                let last = self.seen.last.lock().unwrap();
                addrs.iter().filter(|a| !last.contains_key(a)).count()
            };
            if missing == 0 {
                return Ok(());
            }
            if start.elapsed() > limit {
                return Err(format!("{missing} real servers were never checked within {limit:?}"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

async fn accept_loop(seen: &Seen, ready: &std::sync::mpsc::Sender<Res<()>>) -> Res<()> {
    let sock = tokio::net::TcpSocket::new_v4().map_err(|e| e.to_string())?;
    sock.set_reuseaddr(true).map_err(|e| e.to_string())?;
    sock.bind("0.0.0.0:80".parse().unwrap()).map_err(|e| format!("bind: {e}"))?;
    let l = sock.listen(4096).map_err(|e| format!("listen: {e}"))?;
    let _ = ready.send(Ok(()));
    loop {
        let Ok((c, _)) = l.accept().await else { continue };
        let now = Instant::now();
        if let Ok(SocketAddr::V4(a)) = c.local_addr() {
            seen.last.lock().unwrap().insert(*a.ip(), now);
        }
        seen.accepted.fetch_add(1, Ordering::SeqCst);
    }
}
