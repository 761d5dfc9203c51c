//! Helpers for the library's privileged tests: what the running kernel
//! offers, named network namespaces, real traffic, and independent readers of
//! the IPVS table (`ipvsadm -Sn`, `ipvsadm -Ln`, `/proc/net/ip_vs`).

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ipvs::{
    Destination, Family, Forward, Netmask, Persistence, Protocol, SchedFlags, Scheduler, Service, ServiceKey, Tunnel,
    TunnelChecksum,
};

use crate::{ip, must, require_privileged};

/// Whether the running kernel has the IPVS scheduler `name`: loaded
/// (`/proc/modules`, `/sys/module`), built in (`modules.builtin`), or
/// available as a module file under `/lib/modules/$(uname -r)`. Read from the
/// system, never assumed.
pub fn kernel_has_scheduler(name: &str) -> bool {
    let module = format!("ip_vs_{name}");
    if std::fs::read_to_string("/proc/modules")
        .map(|m| m.lines().any(|l| l.split_whitespace().next() == Some(module.as_str())))
        .unwrap_or(false)
        || Path::new("/sys/module").join(&module).exists()
    {
        return true;
    }
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").expect("kernel release");
    let dir = Path::new("/lib/modules").join(release.trim());
    let file = format!("{module}.ko");
    if std::fs::read_to_string(dir.join("modules.builtin"))
        .map(|b| b.lines().any(|l| l.rsplit('/').next().is_some_and(|f| f == file)))
        .unwrap_or(false)
    {
        return true;
    }
    fn find(dir: &Path, file: &str) -> bool {
        let Ok(rd) = std::fs::read_dir(dir) else { return false };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                if find(&p, file) {
                    return true;
                }
            } else if p.file_name().and_then(|f| f.to_str()).is_some_and(|f| f.starts_with(file)) {
                return true;
            }
        }
        false
    }
    find(&dir, &file)
}

/// A named network namespace (`ip netns add`), deleted on drop.
pub struct NamedNetns {
    /// Its name.
    pub name: String,
}

impl NamedNetns {
    /// Create a named netns with `lo` up.
    pub fn new(prefix: &str) -> Self {
        require_privileged();
        let name = crate::unique(prefix);
        ip(&["netns", "add", &name]);
        ip(&["-n", &name, "link", "set", "lo", "up"]);
        Self { name }
    }

    /// `/var/run/netns/NAME`.
    pub fn path(&self) -> std::path::PathBuf {
        Path::new("/var/run/netns").join(&self.name)
    }

    /// Run `f` on a new thread that has entered this namespace; the caller's
    /// thread does not move.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let ns = std::fs::File::open(self.path()).expect("open netns");
        std::thread::scope(|s| {
            s.spawn(move || {
                // SAFETY: setns on a valid namespace fd; only this scoped thread moves.
                #[allow(unsafe_code)]
                let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
                f()
            })
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
        })
    }
}

impl Drop for NamedNetns {
    fn drop(&mut self) {
        let _ = std::process::Command::new(crate::ip_bin()).args(["netns", "del", &self.name]).status();
    }
}

/// The network namespace of the calling thread, as the inode of its ns file.
pub fn current_netns_id() -> String {
    std::fs::read_link("/proc/thread-self/ns/net").expect("readlink /proc/thread-self/ns/net").display().to_string()
}

/// A TCP echo server on `addr` in the calling thread's netns, on its own
/// thread. It answers every connection by echoing what it reads until EOF.
pub struct EchoServer {
    stop: Arc<AtomicBool>,
    addr: SocketAddr,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl EchoServer {
    /// Listen on `addr`.
    pub fn start(addr: SocketAddr) -> Self {
        let l = TcpListener::bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"));
        let stop = Arc::new(AtomicBool::new(false));
        let s2 = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            for c in l.incoming() {
                if s2.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(mut c) = c else { continue };
                let mut buf = [0u8; 4096];
                while let Ok(n) = c.read(&mut buf) {
                    if n == 0 || c.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        });
        Self { stop, addr, thread: Some(thread) }
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Connect to `addr`, send `payload`, read it back in full, close.
pub fn echo_once(addr: SocketAddr, payload: &[u8]) {
    let mut s =
        TcpStream::connect_timeout(&addr, Duration::from_secs(10)).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(payload).unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut back = Vec::new();
    s.read_to_end(&mut back).unwrap_or_else(|e| panic!("read from {addr}: {e}"));
    assert_eq!(back, payload, "echo through {addr}");
}

/// `ipvsadm` with these arguments inside the named netns; must succeed.
pub fn ipvsadm_in(ns: &str, args: &[&str]) -> String {
    let mut a = vec!["netns", "exec", ns, "ipvsadm"];
    a.extend_from_slice(args);
    must(std::process::Command::new(crate::ip_bin()).args(&a))
}

/// One line of `ipvsadm -Sn` (an independent reader of the table), parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Saved {
    /// `-A ...`
    Service(Service),
    /// `-a ...`: ipvsadm 1.31 does not save thresholds, so they are 0 here.
    Destination(ServiceKey, Destination),
}

fn parse_sockaddr(s: &str) -> SocketAddr {
    s.parse().unwrap_or_else(|e| panic!("ipvsadm address {s:?}: {e}"))
}

/// Parse `ipvsadm -Sn` output. Any option this parser does not know makes it
/// panic, so a test never silently ignores something ipvsadm reports.
pub fn parse_save(text: &str) -> Vec<Saved> {
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let t: Vec<&str> = line.split_whitespace().collect();
        let mut i = 1;
        let mut key = None;
        let mut v6 = false;
        let mut sched = None;
        let mut flags = SchedFlags::NONE;
        let mut persist: Option<u32> = None;
        let mut mask: Option<String> = None;
        let mut one_packet = false;
        let mut pe = None;
        let mut rip = None;
        let mut fwd = None;
        let mut weight = None;
        let mut tun_type = None;
        let mut tun_port = 0u16;
        let mut csum = TunnelChecksum::NoCsum;
        let mut mark = None;
        while i < t.len() {
            let arg = t.get(i + 1).copied();
            let mut takes = true;
            match t[i] {
                "-t" => key = Some(ServiceKey::tcp(parse_sockaddr(arg.unwrap()))),
                "-u" => key = Some(ServiceKey::udp(parse_sockaddr(arg.unwrap()))),
                "--sctp-service" => key = Some(ServiceKey::sctp(parse_sockaddr(arg.unwrap()))),
                // ipvsadm 1.31 prints marks above 2^31 as negative numbers (`-f -2`).
                "-f" => mark = Some(arg.unwrap().parse::<i64>().map(|m| m as u32).unwrap()),
                "-6" => {
                    v6 = true;
                    takes = false
                }
                "-s" => sched = Some(Scheduler::from_name(arg.unwrap()).unwrap()),
                "-b" => flags = SchedFlags::parse_list(arg.unwrap()).unwrap(),
                "-p" => persist = Some(arg.unwrap().parse().unwrap()),
                "-M" => mask = Some(arg.unwrap().to_owned()),
                "-o" => {
                    one_packet = true;
                    takes = false
                }
                "--pe" => pe = Some(arg.unwrap().to_owned()),
                "-r" => rip = Some(parse_sockaddr(arg.unwrap())),
                "-g" | "-m" | "-i" => {
                    fwd = Some(t[i]);
                    takes = false
                }
                "-w" => weight = Some(arg.unwrap().parse::<u32>().unwrap()),
                "--tun-type" => tun_type = Some(arg.unwrap().to_owned()),
                "--tun-port" => tun_port = arg.unwrap().parse().unwrap(),
                "--tun-nocsum" | "--tun-csum" | "--tun-remcsum" => {
                    csum = match t[i] {
                        "--tun-csum" => TunnelChecksum::Csum,
                        "--tun-remcsum" => TunnelChecksum::RemCsum,
                        _ => TunnelChecksum::NoCsum,
                    };
                    takes = false
                }
                other => panic!("parse_save: unknown ipvsadm -Sn token {other:?} in {line:?}"),
            }
            i += if takes { 2 } else { 1 };
        }
        if let Some(m) = mark {
            key = Some(ServiceKey::fwmark(m, if v6 { Family::Inet6 } else { Family::Inet }));
        }
        let key = key.unwrap_or_else(|| panic!("no service in {line:?}"));
        match t[0] {
            "-A" => {
                let netmask = mask.map(|m| match key.family() {
                    Family::Inet => Netmask::V4(m.parse().unwrap()),
                    Family::Inet6 => Netmask::V6(m.parse().unwrap()),
                });
                out.push(Saved::Service(
                    Service::new(key, sched.unwrap_or_else(|| panic!("no scheduler in {line:?}")))
                        .with_sched_flags(flags)
                        .with_persistence(persist.map(|timeout| Persistence { timeout, netmask }))
                        .with_one_packet(one_packet)
                        .with_pe(pe),
                ))
            }
            "-a" => {
                let forward = match fwd {
                    Some("-m") => Forward::Masq,
                    Some("-g") => Forward::Route,
                    Some("-i") => Forward::Tunnel(match tun_type.as_deref() {
                        None | Some("ipip") => Tunnel::Ipip,
                        Some("gue") => Tunnel::Gue { port: tun_port, checksum: csum },
                        Some("gre") => Tunnel::Gre { checksum: csum },
                        Some(o) => panic!("unknown tunnel type {o:?}"),
                    }),
                    other => panic!("no forwarding method ({other:?}) in {line:?}"),
                };
                out.push(Saved::Destination(
                    key,
                    Destination::new(rip.unwrap_or_else(|| panic!("no real server in {line:?}")), forward)
                        .with_weight(weight.unwrap_or_else(|| panic!("no weight in {line:?}"))),
                ))
            }
            other => panic!("parse_save: unknown line kind {other:?} in {line:?}"),
        }
    }
    out
}

/// The table as `ipvsadm -Sn` in the calling thread's netns shows it.
pub fn ipvsadm_save() -> Vec<Saved> {
    parse_save(&crate::ipvsadm(&["-Sn"]))
}

/// The library's table in the same shape as [`ipvsadm_save`] (thresholds
/// zeroed because ipvsadm does not save them), sorted like it for comparison.
pub fn as_saved(table: &ipvs::Table) -> Vec<Saved> {
    let mut out = Vec::new();
    for (s, dests) in table {
        out.push(Saved::Service(s.service.clone()));
        for d in dests {
            let mut d = d.destination.clone();
            d.upper_threshold = 0;
            d.lower_threshold = 0;
            out.push(Saved::Destination(s.service.key, d));
        }
    }
    out
}

/// Compare two saved tables as sets (the order of services in a dump is the
/// kernel's hash order, the same for both readers, but that is not promised).
pub fn assert_same_table(library: Vec<Saved>, ipvsadm: Vec<Saved>) {
    let key = |s: &Saved| format!("{s:?}");
    let mut a = library;
    let mut b = ipvsadm;
    a.sort_by_key(key);
    b.sort_by_key(key);
    // ipvsadm's own service dump repeats entries when any namespace changes
    // its services meanwhile (the kernel pages dumps by a position counted
    // over all namespaces; other tests run in parallel): drop exact repeats,
    // which cannot be two real entries (a service key is unique).
    b.dedup();
    assert_eq!(a, b, "the library's table (left) differs from ipvsadm -Sn (right)");
}

/// Counters of one row of `ipvsadm -Ln --stats --exact`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RowStats {
    /// Conns.
    pub conns: u64,
    /// InPkts.
    pub in_pkts: u64,
    /// OutPkts.
    pub out_pkts: u64,
    /// InBytes.
    pub in_bytes: u64,
    /// OutBytes.
    pub out_bytes: u64,
}

/// The counters `ipvsadm -Ln --stats --exact` shows for the service line
/// `PROTO ADDR` (e.g. `TCP  10.1.0.1:80`) and its real server lines, keyed by
/// the printed address.
pub fn ipvsadm_stats(proto: &str, vip: SocketAddr) -> (RowStats, Vec<(String, RowStats)>) {
    let text = crate::ipvsadm(&["-Ln", "--stats", "--exact"]);
    let row = |f: &[&str]| RowStats {
        conns: f[0].parse().unwrap(),
        in_pkts: f[1].parse().unwrap(),
        out_pkts: f[2].parse().unwrap(),
        in_bytes: f[3].parse().unwrap(),
        out_bytes: f[4].parse().unwrap(),
    };
    let mut svc = None;
    let mut dests = Vec::new();
    let mut in_it = false;
    for l in text.lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() == 7 && f[0] == proto && f[1] == vip.to_string() {
            svc = Some(row(&f[2..]));
            in_it = true;
        } else if in_it && f.len() == 7 && f[0] == "->" {
            dests.push((f[1].to_owned(), row(&f[2..])));
        } else if !l.starts_with("  ->") {
            in_it = false;
        }
    }
    (svc.unwrap_or_else(|| panic!("{proto} {vip} not in ipvsadm -Ln --stats --exact:\n{text}")), dests)
}

/// `(upper, lower)` thresholds of each real server of a service as
/// `ipvsadm -Ln --thresholds` prints them, keyed by the printed address.
pub fn ipvsadm_thresholds(proto: &str, vip: &str) -> Vec<(String, u32, u32)> {
    let text = crate::ipvsadm(&["-Ln", "--thresholds"]);
    let mut out = Vec::new();
    let mut in_it = false;
    for l in text.lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() >= 2 && f[0] == proto && f[1] == vip {
            in_it = true;
        } else if in_it && f.first() == Some(&"->") && f.len() >= 4 && f[2].parse::<u32>().is_ok() {
            out.push((f[1].to_owned(), f[2].parse().unwrap(), f[3].parse().unwrap()));
        } else if !l.starts_with("  ->") {
            in_it = false;
        }
    }
    out
}

/// The connection table size the kernel prints in `/proc/net/ip_vs`.
pub fn proc_conn_table_size() -> u32 {
    let t = std::fs::read_to_string("/proc/thread-self/net/ip_vs").expect("/proc/thread-self/net/ip_vs");
    let first = t.lines().next().unwrap_or_default();
    let s = first.split("size=").nth(1).and_then(|r| r.split(')').next()).expect("size= in /proc/net/ip_vs");
    s.parse().unwrap()
}

/// A veth pair between the calling thread's netns (`a`, with `a_addr`) and
/// the named netns (`b`, with `b_addr`), both up. IPv4 /24 addresses.
pub fn veth_to(ns: &NamedNetns, a: &str, a_addr: Ipv4Addr, b: &str, b_addr: Ipv4Addr) {
    ip(&["link", "add", a, "type", "veth", "peer", "name", b, "netns", &ns.name]);
    ip(&["addr", "add", &format!("{a_addr}/24"), "dev", a]);
    ip(&["link", "set", a, "up"]);
    ip(&["-n", &ns.name, "addr", "add", &format!("{b_addr}/24"), "dev", b]);
    ip(&["-n", &ns.name, "link", "set", b, "up"]);
}

/// The protocol word `ipvsadm -Ln` prints.
pub fn ipvsadm_proto(p: Protocol) -> &'static str {
    match p {
        Protocol::Tcp => "TCP",
        Protocol::Udp => "UDP",
        Protocol::Sctp => "SCTP",
        Protocol::Other(_) => "?",
    }
}

/// `IpAddr` of a socket address string as ipvsadm prints it.
pub fn ip_of(s: &str) -> IpAddr {
    parse_sockaddr(s).ip()
}

/// Like [`crate::in_fresh_netns`], but with a multi-threaded tokio runtime
/// (two workers, created inside the fresh netns, so they live in it too).
pub fn in_fresh_netns_multi_thread<F, Fut>(f: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    crate::in_fresh_netns_with(|| tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build(), f)
}

/// Drop every capability of the calling thread (effective, permitted and
/// inheritable sets; capabilities are per thread on Linux). For checking what
/// an unprivileged caller gets. The thread cannot get them back.
pub fn drop_all_capabilities() {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;
    let hdr = Header { version: LINUX_CAPABILITY_VERSION_3, pid: 0 };
    let data = [Data { effective: 0, permitted: 0, inheritable: 0 }; 2];
    // SAFETY: capset with a valid header and two data structs (version 3).
    #[allow(unsafe_code)]
    let rc = unsafe { libc::syscall(libc::SYS_capset, &hdr as *const Header, data.as_ptr()) };
    assert_eq!(rc, 0, "capset: {}", std::io::Error::last_os_error());
}

/// One real server line of `ipvsadm -Ln`, with the service line above it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedDest {
    /// The service as `ipvsadm -Ln` heads it: `TCP 10.0.0.1:80`, `UDP [2001:db8::1]:53`, `FWM 5`.
    pub service: String,
    /// `10.0.1.1:80` or `[2001:db8::2]:80`.
    pub addr: String,
    /// `Masq`, `Route`, `Tunnel`, `Local`, ...
    pub forward: String,
    /// Weight.
    pub weight: u32,
    /// ActiveConn.
    pub active: u32,
    /// InActConn.
    pub inactive: u32,
}

/// Every real server line of `ipvsadm -Ln` in the calling thread's netns.
pub fn ipvsadm_list() -> Vec<ListedDest> {
    let text = crate::ipvsadm(&["-Ln"]);
    let mut out = Vec::new();
    let mut service = None;
    for l in text.lines().skip(3) {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.first() == Some(&"->") {
            assert_eq!(f.len(), 6, "ipvsadm -Ln real server line {l:?}");
            out.push(ListedDest {
                service: service.clone().unwrap_or_else(|| panic!("real server before any service: {l:?}")),
                addr: f[1].to_owned(),
                forward: f[2].to_owned(),
                weight: f[3].parse().unwrap(),
                active: f[4].parse().unwrap(),
                inactive: f[5].parse().unwrap(),
            });
        } else if f.len() >= 2 {
            service = Some(format!("{} {}", f[0], f[1]));
        }
    }
    out
}

/// How `ipvsadm -Ln` heads a service (see [`ListedDest::service`]).
pub fn ipvsadm_service_head(key: &ServiceKey) -> String {
    match key {
        ServiceKey::Inet { protocol, addr } => format!("{} {addr}", ipvsadm_proto(*protocol)),
        ServiceKey::Fwmark { mark, .. } => format!("FWM {}", *mark as i32),
    }
}

/// Compare every destination of the library's table with `ipvsadm -Ln`:
/// forwarding method, weight, active and inactive connections.
pub fn assert_same_as_ipvsadm_list(table: &ipvs::Table) {
    let mut listed = ipvsadm_list();
    let mut ours = Vec::new();
    for (s, dests) in table {
        for d in dests {
            ours.push(ListedDest {
                service: ipvsadm_service_head(&s.service.key),
                addr: d.destination.addr.to_string(),
                forward: d.destination.forward.name().to_owned(),
                weight: d.destination.weight,
                active: d.active_conns,
                inactive: d.inactive_conns,
            });
        }
    }
    let key = |d: &ListedDest| (d.service.clone(), d.addr.clone());
    listed.sort_by_key(key);
    ours.sort_by_key(key);
    // See assert_same_table: ipvsadm may list a service twice.
    listed.dedup();
    assert_eq!(ours, listed, "the library's destinations (left) differ from ipvsadm -Ln (right)");
}

/// The kernel pages IPVS service dumps by a position counted over the
/// services of EVERY network namespace (`ip_vs_genl_dump_services` counts
/// before it filters by namespace), so a dump larger than one netlink message
/// (about 100 services) can skip entries when a test in another namespace
/// changes its table meanwhile. Tests hold this lock shared; tests that check
/// that a large dump is complete hold it exclusively.
fn table_lock() -> &'static std::sync::RwLock<()> {
    static LOCK: std::sync::RwLock<()> = std::sync::RwLock::new(());
    &LOCK
}

/// Hold while changing IPVS tables alongside other tests.
pub fn shared_table() -> std::sync::RwLockReadGuard<'static, ()> {
    table_lock().read().unwrap_or_else(|e| e.into_inner())
}

/// Hold while no other test may change any IPVS table (large dumps).
pub fn exclusive_table() -> std::sync::RwLockWriteGuard<'static, ()> {
    table_lock().write().unwrap_or_else(|e| e.into_inner())
}
