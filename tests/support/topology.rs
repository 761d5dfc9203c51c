//! Hosts emulated by named network namespaces on one bridge, for the
//! `lvsctl director` / `lvsctl realserver` tests: each "host" is a netns with
//! an interface (named like the coordinator pair's, `enp1s0`, or anything else) whose veth
//! peer sits on a bridge in a "lan" netns. Plus tiny TCP servers and clients
//! that run inside a netns, and snapshots of a host's state.
//!
//! Everything lives in namespaces the test created and is deleted on drop:
//! no traffic ever leaves them.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::{ip, ip_bin, lvsctl_bin, must, require_privileged, run, unique};

/// A named network namespace (`ip netns add`), with `lo` up. Deleted on drop.
#[derive(Debug)]
pub struct Netns {
    /// Its name (`/run/netns/<name>`).
    pub name: String,
}

impl Netns {
    /// A new namespace named `<prefix><unique>`.
    pub fn new(prefix: &str) -> Self {
        require_privileged();
        let name = unique(prefix);
        ip(&["netns", "add", &name]);
        let ns = Self { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// Its path, for setns.
    pub fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    /// `ip -n NAME ARGS...`; must succeed.
    pub fn ip(&self, args: &[&str]) -> String {
        let mut a = vec!["-n", &self.name];
        a.extend_from_slice(args);
        ip(&a)
    }

    /// `ip netns exec NAME PROGRAM ARGS...`, whatever its status.
    pub fn exec(&self, program: &str, args: &[&str]) -> Output {
        run(Command::new(ip_bin()).args(["netns", "exec", &self.name, program]).args(args))
    }

    /// `ipvsadm -Sn` in this namespace: the IPVS table, byte for byte.
    pub fn ipvsadm_save(&self) -> String {
        let out = self.exec("ipvsadm", &["-Sn"]);
        assert!(out.status.success(), "ipvsadm -Sn failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `ipvsadm ARGS...` in this namespace; must succeed.
    pub fn ipvsadm(&self, args: &[&str]) -> String {
        must(Command::new(ip_bin()).args(["netns", "exec", &self.name, "ipvsadm"]).args(args))
    }

    /// `lvsctl --netns NAME ARGS...`, whatever its status.
    pub fn lvsctl(&self, args: &[&str]) -> Output {
        run(Command::new(lvsctl_bin()).args(["--netns", &self.name]).args(args))
    }

    /// `lvsctl --netns NAME ARGS...`; must exit 0. Returns stdout.
    pub fn lvsctl_ok(&self, args: &[&str]) -> String {
        let out = self.lvsctl(args);
        assert!(
            out.status.success(),
            "lvsctl {args:?} in {} failed ({}):\nstdout: {}\nstderr: {}",
            self.name,
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Run `f` on a thread that has entered this namespace.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = self.path();
        let r = std::thread::spawn(move || {
            enter(&path);
            f()
        })
        .join();
        r.unwrap_or_else(|p| std::panic::resume_unwind(p))
    }

    /// `/proc/sys/net/ipv4/conf/<iface>/<name>` in this namespace.
    pub fn sysctl(&self, iface: &str, name: &str) -> String {
        let p = PathBuf::from("/proc/sys/net/ipv4/conf").join(iface).join(name);
        self.run(move || {
            std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display())).trim().to_owned()
        })
    }

    /// Write `/proc/sys/net/ipv4/conf/<iface>/<name>` in this namespace.
    pub fn set_sysctl(&self, iface: &str, name: &str, value: &str) {
        let p = PathBuf::from("/proc/sys/net/ipv4/conf").join(iface).join(name);
        let v = value.to_owned();
        self.run(move || std::fs::write(&p, v).unwrap_or_else(|e| panic!("write {}: {e}", p.display())));
    }

    /// The IPv4 addresses of every interface (`ip -4 -o addr show`).
    pub fn addrs4(&self) -> String {
        self.ip(&["-4", "-o", "addr", "show"])
    }

    /// A veth pair `name` / `peer` inside this namespace, both up (an
    /// interface to put VIPs on when no traffic is needed).
    pub fn add_veth(&self, name: &str, peer: &str) {
        self.ip(&["link", "add", name, "type", "veth", "peer", "name", peer]);
        self.ip(&["link", "set", name, "up"]);
        self.ip(&["link", "set", peer, "up"]);
    }

    /// Everything `start` may change and `stop` must restore.
    pub fn snapshot(&self, ifaces: &[&str]) -> Snapshot {
        let mut sysctls = Vec::new();
        for i in ["all", "default", "lo"].iter().chain(ifaces) {
            for n in ["arp_ignore", "arp_announce", "forwarding"] {
                sysctls.push(format!("{i}/{n}={}", self.sysctl(i, n)));
            }
        }
        Snapshot { addrs: self.addrs4(), sysctls, ipvs: self.ipvsadm_save() }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new(ip_bin()).args(["netns", "del", &self.name]).output();
    }
}

/// Enter the network namespace at `path` (calling thread only).
pub fn enter(path: &std::path::Path) {
    let f = std::fs::File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    // SAFETY: setns on a valid namespace fd; affects the calling thread only.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns {}: {}", path.display(), std::io::Error::last_os_error());
}

/// What a host looks like: IPv4 addresses, ARP sysctls, IPVS table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// `ip -4 -o addr show`.
    pub addrs: String,
    /// `iface/name=value` for all, default, lo and the interfaces asked.
    pub sysctls: Vec<String>,
    /// `ipvsadm -Sn`.
    pub ipvs: String,
}

/// One L2 segment: a bridge in its own namespace.
#[derive(Debug)]
pub struct Lan {
    /// The namespace holding the bridge `br0`.
    pub ns: Netns,
}

impl Default for Lan {
    fn default() -> Self {
        Self::new()
    }
}

impl Lan {
    /// A new bridge.
    pub fn new() -> Self {
        let ns = Netns::new("lan");
        ns.ip(&["link", "add", "br0", "type", "bridge"]);
        ns.ip(&["link", "set", "br0", "up"]);
        Self { ns }
    }

    /// A new host on this segment: a namespace whose interface `ifname` has
    /// `cidr` (like `10.18.68.186/24`), its veth peer on the bridge.
    pub fn host(&self, prefix: &str, ifname: &str, cidr: &str) -> Netns {
        let h = Netns::new(prefix);
        self.attach(&h, ifname, cidr);
        h
    }

    /// Put an existing host on this segment too: a new interface `ifname`
    /// with `cidr` (a director between a public and a private LAN).
    pub fn attach(&self, h: &Netns, ifname: &str, cidr: &str) {
        let peer = unique("p");
        ip(&["link", "add", ifname, "netns", &h.name, "type", "veth", "peer", "name", &peer, "netns", &self.ns.name]);
        self.ns.ip(&["link", "set", &peer, "master", "br0", "up"]);
        h.ip(&["link", "set", ifname, "up"]);
        h.ip(&["addr", "add", cidr, "dev", ifname]);
    }
}

/// A TCP server in a namespace that answers every connection with its name
/// and a newline, then closes. Stops on drop.
#[derive(Debug)]
pub struct NameServer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl NameServer {
    /// Listen on `addr` (e.g. `0.0.0.0:15858` or the VIP) inside `ns`.
    pub fn start(ns: &Netns, addr: SocketAddr, name: &str) -> Self {
        let (path, name) = (ns.path(), name.to_owned());
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = std::sync::mpsc::channel();
        let st = stop.clone();
        let thread = std::thread::spawn(move || {
            enter(&path);
            let l = match TcpListener::bind(addr) {
                Ok(l) => l,
                Err(e) => {
                    let _ = tx.send(Err(format!("bind {addr}: {e}")));
                    return;
                }
            };
            l.set_nonblocking(true).expect("nonblocking listener");
            let _ = tx.send(Ok(()));
            while !st.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((mut c, _)) => {
                        let _ = c.set_nonblocking(false);
                        let _ = c.write_all(format!("{name}\n").as_bytes());
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(10))
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        rx.recv().expect("server thread").unwrap_or_else(|e| panic!("name server: {e}"));
        Self { stop, thread: Some(thread) }
    }
}

impl Drop for NameServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// From inside `ns`, open `n` TCP connections to `to`, one after the other,
/// and return what each answered (trimmed). Panics if one fails.
pub fn ask_names(ns: &Netns, to: SocketAddr, n: usize) -> Vec<String> {
    ns.run(move || {
        (0..n)
            .map(|i| {
                let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(10))
                    .unwrap_or_else(|e| panic!("connection {i} to {to}: {e}"));
                s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                let mut a = String::new();
                s.read_to_string(&mut a).unwrap_or_else(|e| panic!("reading connection {i} to {to}: {e}"));
                a.trim().to_owned()
            })
            .collect()
    })
}

/// Call `f` every 200 ms until it returns `Some`, for at most `limit`; panics
/// with `what` and the last value seen otherwise. For kernel state that
/// settles (IPVS counters are folded in every 2 s).
pub fn eventually<T, D: std::fmt::Debug>(what: &str, limit: Duration, mut f: impl FnMut() -> Result<T, D>) -> T {
    let end = Instant::now() + limit;
    loop {
        match f() {
            Ok(v) => return v,
            Err(last) if Instant::now() >= end => panic!("{what}: still not so after {limit:?}; last: {last:?}"),
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

/// Exit status of an output (panics on a signal).
pub fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or_else(|| panic!("killed by a signal: {out:?}"))
}

/// stdout and stderr as strings.
pub fn texts(out: &Output) -> (String, String) {
    (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}
