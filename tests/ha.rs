//! Privileged tests of director failover (`director run` with
//! `[director.ha]`: keepalived's VRRP, the kernel's sync daemons) on the
//! seed's shape made highly available:
//!
//! ```text
//!   client 10.18.68.10     (the VIP on-link: it ARPs for it, so it follows VRRP's gratuitous ARPs)
//!   host186 10.18.68.186   director (priority 150, MASTER first) AND real server
//!   host187 10.18.68.187   director (priority 100, BACKUP first) AND real server
//! ```
//!
//! Both hosts run `lvsctl realserver start` (VIP on lo) and `lvsctl director
//! run` with the same config. Long-lived connections through the VIP (a line
//! every 200 ms, every echo checked) must survive the MASTER's `director
//! run` and keepalived killed; the same run with the sync daemons stopped
//! must lose the connections the old MASTER served itself (so the test can
//! fail). New connections the MASTER forwards to the BACKUP as a real server
//! must be served there, never forwarded back. Takeover times are printed,
//! not asserted.

#[allow(dead_code)]
#[path = "support/daemon_net.rs"]
mod net;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use lvsctl_tests::flows::{ask_echo, LineEcho, Long, Outcome};
use lvsctl_tests::topology::{Lan, Netns};
use net::{Daemon, TestDir, PORT, VIP};

/// How long any awaited change may take (software emulation is slow).
const T: Duration = Duration::from_secs(90);
const CLIENT: &str = "10.18.68.10";
const H186: &str = "10.18.68.186";
const H187: &str = "10.18.68.187";

/// The one config both hosts run.
fn config() -> String {
    config_preempt(false)
}

/// The config, with `preempt` on or off.
fn config_preempt(preempt: bool) -> String {
    format!(
        r#"[director]
iface = "eth0"

[[director.service]]
vip = "{VIP}"
port = {PORT}
scheduler = "rr"
real = ["{H186}", "{H187}"]
check = {{ type = "tcp", interval = "300ms", timeout = "1s", rise = 2, fall = 3 }}

[director.ha]
interface = "eth0"
virtual_router_id = 51
priority = 100
peers = ["{H186}", "{H187}"]
preempt = {preempt}

[director.ha.hosts."{H186}"]
priority = 150
"#
    )
}

fn vip() -> SocketAddr {
    format!("{VIP}:{PORT}").parse().unwrap()
}

/// One short connection from the client: send a line, return who echoed it.
fn ask(client: &Netns) -> Result<String, String> {
    ask_echo(client, vip())
}

/// The seed's shape: client, host186, host187 on one bridge, both hosts
/// real servers of the VIP (`lvsctl realserver start`) with an echo server.
struct Pair {
    client: Netns,
    h: [Netns; 2],
    _echo: [LineEcho; 2],
    _lan: Lan,
}

impl Pair {
    fn new() -> Self {
        let lan = Lan::new();
        let client = lan.host("hc", "eth0", &format!("{CLIENT}/24"));
        let h = [H186, H187].map(|a| lan.host("hh", "eth0", &format!("{a}/24")));
        // On-link: the client ARPs for the VIP and follows the MASTER.
        client.ip(&["route", "add", &format!("{VIP}/32"), "dev", "eth0"]);
        for x in &h {
            x.lvsctl_ok(&["realserver", "start", "--vip", VIP, "--iface", "eth0"]);
        }
        let echo = [LineEcho::start(&h[0], PORT, "rs186"), LineEcho::start(&h[1], PORT, "rs187")];
        Pair { client, h, _echo: echo, _lan: lan }
    }

    fn has_vip(&self, i: usize) -> bool {
        self.h[i].ip(&["-4", "-o", "addr", "show", "dev", "eth0"]).contains(&format!("{VIP}/32"))
    }

    /// (weight, conns) of each real server of the VIP's service on host i.
    fn dests(&self, i: usize) -> Vec<(String, u32, u64)> {
        let ns = self.h[i].name.clone();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            let h = match ipvs::Ipvs::connect_named_netns(&ns).await {
                Ok(h) => h,
                Err(e) => panic!("PRIVILEGED TEST COULD NOT RUN: cannot connect to IPVS in {ns}: {e}"),
            };
            let key = ipvs::ServiceKey::tcp(vip());
            let t = h.dump().await.expect("dump");
            let Some((_, ds)) = t.into_iter().find(|(s, _)| s.service.key == key) else { return Vec::new() };
            let mut v: Vec<(String, u32, u64)> =
                ds.iter().map(|d| (d.destination.addr.ip().to_string(), d.destination.weight, d.stats.conns)).collect();
            v.sort();
            v
        })
    }

    fn weights(&self, i: usize) -> Vec<(String, u32)> {
        self.dests(i).into_iter().map(|(a, w, _)| (a, w)).collect()
    }

    /// Connections in host i's IPVS connection table to the VIP whose real
    /// server is `to` (on the BACKUP, a connection to the MASTER's real
    /// server can only come from the sync daemon).
    fn conns_to(&self, i: usize, to: &str) -> usize {
        let out = self.h[i].ipvsadm(&["-Lnc"]);
        let (v, r) = (format!("{VIP}:{PORT}"), format!("{to}:{PORT}"));
        out.lines().filter(|l| l.contains(&v) && l.trim_end().ends_with(&r) && l.contains("ESTABLISHED")).count()
    }
}

fn role(d: &Daemon) -> Option<String> {
    d.report().and_then(|r| r["ha"]["role"].as_str().map(str::to_owned))
}

fn w(a: u32, b: u32) -> Vec<(String, u32)> {
    vec![(H186.to_owned(), a), (H187.to_owned(), b)]
}

/// The keepalived main process's pid, from the pid file in a daemon's state folder.
fn keepalived_pid(dir: &TestDir) -> i32 {
    let state = dir.0.join("state");
    let pidfile: PathBuf = std::fs::read_dir(&state)
        .unwrap_or_else(|e| panic!("{}: {e}", state.display()))
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            let n = p.file_name().unwrap().to_string_lossy();
            n.starts_with("keepalived-netns") && n.ends_with(".pid") && !n.ends_with(".vrrp.pid")
        })
        .unwrap_or_else(|| panic!("no keepalived pid file in {}", state.display()));
    std::fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap()
}

fn sigkill(pid: i32) {
    // SAFETY: kill on a pid this test started (directly or through lvsctl).
    #[allow(unsafe_code)]
    let rc = unsafe { libc::kill(pid, libc::SIGKILL) };
    assert_eq!(rc, 0, "kill {pid}: {}", std::io::Error::last_os_error());
}

/// Both directors up: 186 MASTER with the VIP and both weights, 187 BACKUP
/// with the peer at weight 0.
fn start_pair(p: &Pair) -> (TestDir, TestDir, Daemon, Daemon) {
    start_pair_with(p, &config())
}

fn start_pair_with(p: &Pair, cfg: &str) -> (TestDir, TestDir, Daemon, Daemon) {
    let (dir186, dir187) = (TestDir::new(), TestDir::new());
    let c186 = dir186.write("lvsctl.toml", cfg, 0o644);
    let c187 = dir187.write("lvsctl.toml", cfg, 0o644);
    let t0 = Instant::now();
    let d186 = Daemon::start(&p.h[0], &dir186, &c186, &[]);
    // 186 first, so it is MASTER before 187 starts (no preemption).
    d186.wait_for("host186 MASTER", T, || role(&d186).as_deref() == Some("MASTER") && p.has_vip(0));
    eprintln!("host186 MASTER with the VIP {:?} after director run started", t0.elapsed());
    let d187 = Daemon::start(&p.h[1], &dir187, &c187, &[]);
    d187.wait_for("host187 BACKUP", T, || role(&d187).as_deref() == Some("BACKUP"));
    d186.wait_for("both weights on the MASTER", T, || p.weights(0) == w(1, 1));
    d187.wait_for("the peer at weight 0 on the BACKUP", T, || p.weights(1) == w(0, 1));
    assert!(!p.has_vip(1), "the BACKUP must not hold the VIP on eth0");
    // The standby weights are the BACKUP's table on purpose: director status
    // reports no drift on either host, and names the role.
    for (i, d, role) in [(0, &d186, "MASTER"), (1, &d187, "BACKUP")] {
        let (code, out) = d.status(&p.h[i], false);
        assert_eq!(code, 0, "director status on the {role} must be running:\n{out}");
        assert!(out.contains(&format!("): {role} since")), "director status on the {role}:\n{out}");
    }
    (dir186, dir187, d186, d187)
}

/// New connections: every one answered, both real servers reached.
fn new_connections_work(p: &Pair, phase: &str) {
    let names: Vec<String> =
        (0..6).map(|_| ask(&p.client).unwrap_or_else(|e| panic!("{phase}: a new connection failed: {e}"))).collect();
    eprintln!("{phase}: new connections served by {names:?}");
    assert!(names.iter().any(|n| n == "rs186") && names.iter().any(|n| n == "rs187"), "{phase}: {names:?}");
}

/// Kill host186's `director run` and keepalived (SIGKILL) with long-lived
/// connections running; returns their outcomes.
fn kill_master_with_connections(sync: bool) -> Vec<Outcome> {
    let p = Pair::new();
    let (dir186, _dir187, d186, d187) = start_pair(&p);
    if !sync {
        for h in &p.h {
            h.ipvsadm(&["--stop-daemon", "master"]);
            h.ipvsadm(&["--stop-daemon", "backup"]);
        }
    }
    new_connections_work(&p, "before the failover");
    let longs: Vec<Long> = (0..4).map(|_| Long::open(&p.client, vip())).collect();
    std::thread::sleep(Duration::from_secs(2));
    let by186 = longs.iter().filter(|l| l.server == "rs186").count();
    assert!(by186 > 0 && by186 < longs.len(), "connections must be served by both real servers");
    if sync {
        d187.wait_for("the MASTER's own connections synced to the BACKUP", T, || p.conns_to(1, H186) == by186);
    } else {
        assert_eq!(p.conns_to(1, H186), 0, "no sync daemon: the BACKUP must not know the MASTER's connections");
    }

    let kpid = keepalived_pid(&dir186);
    let t0 = Instant::now();
    d186.signal(libc::SIGKILL);
    sigkill(kpid);
    let vip_at = d187.wait_for("host187 holds the VIP", T, || p.has_vip(1));
    d187.wait_for("a new connection through host187", T, || ask(&p.client).is_ok());
    let answer_at = t0.elapsed();
    d187.wait_for("host187 MASTER", T, || role(&d187).as_deref() == Some("MASTER"));
    eprintln!(
        "TAKEOVER (sync {}): the VIP on host187 {vip_at:?} after the SIGKILL, a new connection answered after {answer_at:?}, \
         MASTER in host187's report after {:?}",
        if sync { "on" } else { "off" },
        t0.elapsed()
    );
    d187.wait_for("both weights on the new MASTER", T, || p.weights(1) == w(1, 1));
    // host186 is still a real server; keepalived's last act there took the peer out of its table.
    let standby_log = || {
        std::fs::read_dir(dir186.0.join("state"))
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("ha-standby"))
            .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
            .collect::<String>()
    };
    let start = Instant::now();
    while p.weights(0) != w(1, 0) && start.elapsed() < T {
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("keepalived's ha-standby on host186:\n{}", standby_log());
    assert_eq!(p.weights(0), w(1, 0), "host186's table must be in standby form (the peer at weight 0)");
    eprintln!("host186's table in standby form {:?} after host187 became MASTER", start.elapsed());
    std::thread::sleep(Duration::from_secs(3));
    let out: Vec<Outcome> = longs.into_iter().map(Long::finish).collect();
    for o in &out {
        eprintln!("long-lived connection (sync {}): {o:?}", if sync { "on" } else { "off" });
    }
    let served: Vec<&str> = out.iter().map(|o| o.server.as_str()).collect();
    assert!(served.contains(&"rs186") && served.contains(&"rs187"), "connections must be served by both: {out:?}");
    if sync {
        new_connections_work(&p, "after the failover");
    }
    stop(&d187);
    out
}

/// SIGTERM and wait: `director run` stops its keepalived.
fn stop(d: &Daemon) {
    d.signal(libc::SIGTERM);
    let st = d.wait(T);
    assert!(st.success(), "director run exited with {st}; log:\n{}", d.log());
}

#[test]
#[ignore = "privileged: needs root, IPVS and keepalived (scripts/privileged-tests)"]
fn ha_connections_survive_the_masters_director_and_keepalived_killed() {
    let out = kill_master_with_connections(true);
    for o in &out {
        assert!(o.error.is_none() && o.echoed == o.sent, "every connection must survive, every line echoed: {o:?}");
    }
}

#[test]
#[ignore = "privileged: needs root, IPVS and keepalived (scripts/privileged-tests)"]
fn ha_negative_control_without_sync_the_old_masters_connections_break() {
    let out = kill_master_with_connections(false);
    let broken: Vec<&Outcome> = out.iter().filter(|o| o.error.is_some()).collect();
    assert!(
        out.iter().filter(|o| o.server == "rs186").all(|o| o.error.is_some()),
        "without sync, the connections the old MASTER served itself must break: {out:?}"
    );
    eprintln!("negative control: {} of {} connections broke without the sync daemons", broken.len(), out.len());
}

#[test]
#[ignore = "privileged: needs root, IPVS and keepalived (scripts/privileged-tests)"]
fn ha_no_loop_the_backup_serves_forwarded_connections_itself() {
    let p = Pair::new();
    let (_d1, _d2, d186, d187) = start_pair(&p);
    let conns = |i: usize, a: &str| p.dests(i).into_iter().find(|x| x.0 == a).map_or(0, |x| x.2);
    // Counters settle within 2 s; wait until two reads agree.
    let settle = |d: &Daemon| {
        let mut last = (0, 0, 0, 0);
        d.wait_for("the counters to settle", T, || {
            std::thread::sleep(Duration::from_millis(2500));
            let now = (conns(0, H186), conns(0, H187), conns(1, H186), conns(1, H187));
            let same = now == last;
            last = now;
            same
        });
        last
    };
    let before = settle(&d186);
    let n = 10;
    let names: Vec<String> =
        (0..n).map(|_| ask(&p.client).unwrap_or_else(|e| panic!("a new connection failed: {e}"))).collect();
    let after = settle(&d187);
    let delta = (after.0 - before.0, after.1 - before.1, after.2 - before.2, after.3 - before.3);
    eprintln!(
        "no loop: {n} new connections answered by {names:?}; MASTER host186 scheduled {} to itself and {} to host187; \
         BACKUP host187 scheduled {} to host186 and {} to itself",
        delta.0, delta.1, delta.2, delta.3
    );
    assert_eq!(delta.0 + delta.1, n as u64, "the MASTER schedules every new connection once");
    assert!(delta.1 > 0, "the MASTER must forward some connections to the BACKUP's real server");
    assert_eq!(delta.2, 0, "the BACKUP must never forward a connection back to the MASTER");
    assert_eq!(delta.3, delta.1, "the BACKUP serves each forwarded connection itself");
    assert_eq!(names.iter().filter(|x| *x == "rs187").count() as u64, delta.1, "{names:?}");
    stop(&d187);
    stop(&d186);
}

#[test]
#[ignore = "privileged: needs root, IPVS and keepalived (scripts/privileged-tests)"]
fn ha_link_down_then_failback_with_preempt() {
    let p = Pair::new();
    let (_dir186, _dir187, d186, d187) = start_pair_with(&p, &config_preempt(true));
    let first: Vec<Long> = (0..4).map(|_| Long::open(&p.client, vip())).collect();
    let by186 = first.iter().filter(|l| l.server == "rs186").count();
    assert!(by186 > 0 && by186 < first.len(), "connections must be served by both real servers");
    d187.wait_for("the MASTER's own connections synced to the BACKUP", T, || p.conns_to(1, H186) == by186);

    // (b) The MASTER's link goes down.
    let t0 = Instant::now();
    p.h[0].ip(&["link", "set", "eth0", "down"]);
    let vip_at = d187.wait_for("host187 holds the VIP", T, || p.has_vip(1));
    d187.wait_for("a new connection through host187", T, || ask(&p.client).is_ok());
    eprintln!(
        "TAKEOVER (link down): the VIP on host187 {vip_at:?} after the link went down, answering after {:?}",
        t0.elapsed()
    );
    d187.wait_for("host187 MASTER", T, || role(&d187).as_deref() == Some("MASTER"));
    d187.wait_for("host186 drained by host187's health check", T, || p.weights(1) == w(0, 1));
    // host187's checks of host186 failed for seconds before the takeover
    // (1 s timeouts every 300 ms, VRRP needs three missed adverts): the new
    // MASTER must hold the dead peer at weight 0, never give it its weight
    // back while its checks count up to `fall` (new connections would go to
    // a dead host meanwhile).
    let log = d187.log();
    let since_master = log.split("to=\"MASTER\"").nth(1).expect("host187's log has its change to MASTER");
    assert!(
        !since_master.contains(&format!("real server {H186}:{PORT} of tcp {VIP}:{PORT} (Route, weight 1)")),
        "the new MASTER gave the dead peer its weight back:\n{log}"
    );
    assert!(since_master.contains("weight 0 until a check passes"), "the hold is logged:\n{log}");
    let names: Vec<String> = (0..4).map(|_| ask(&p.client).expect("a new connection while host186 is down")).collect();
    assert_eq!(names, vec!["rs187"; 4], "new connections while host186 is cut off");
    // Connections made while host186 is cut off: host187 syncs a connection at
    // its 3rd packet and then every 50th, so host186 learns these only at their
    // next sync point after it is back. Reported, not asserted.
    let second: Vec<Long> = (0..2).map(|_| Long::open(&p.client, vip())).collect();
    std::thread::sleep(Duration::from_secs(2));

    // (c) The link comes back: host186 (priority 150, preempt on) takes the VIP back.
    let t1 = Instant::now();
    p.h[0].ip(&["link", "set", "eth0", "up"]);
    d186.wait_for("host186 MASTER again", T, || role(&d186).as_deref() == Some("MASTER") && p.has_vip(0));
    let back_at = t1.elapsed();
    d186.wait_for("a new connection through host186", T, || ask(&p.client).is_ok());
    eprintln!(
        "FAILBACK (preempt): host186 MASTER with the VIP {back_at:?} after its link came up, answering after {:?}",
        t1.elapsed()
    );
    d187.wait_for("host187 BACKUP again", T, || role(&d187).as_deref() == Some("BACKUP"));
    d186.wait_for("both weights on host186", T, || p.weights(0) == w(1, 1));
    d187.wait_for("the peer at weight 0 on host187", T, || p.weights(1) == w(0, 1));
    new_connections_work(&p, "after the failback");
    std::thread::sleep(Duration::from_secs(3));

    let first: Vec<Outcome> = first.into_iter().map(Long::finish).collect();
    let second: Vec<Outcome> = second.into_iter().map(Long::finish).collect();
    for o in &first {
        eprintln!("long-lived connection (link down, failback): {o:?}");
    }
    for o in &second {
        eprintln!("opened while host186 was cut off: {o:?}");
    }
    // Those served by host187's real server were synced to host186 before the
    // cut: they survive the takeover and the failback.
    for o in first.iter().filter(|o| o.server == "rs187") {
        assert!(o.error.is_none() && o.echoed == o.sent, "a connection served by a surviving real server broke: {o:?}");
    }
    stop(&d187);
    stop(&d186);
}
