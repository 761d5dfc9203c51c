//! Privileged tests of ECMP scale-out: two LVS-DR directors, each running
//! `lvsctl director run` with `[director.bgp]` (its own BIRD announcing the
//! VIP while a real server is up), behind a router (BIRD, `merge paths`, an
//! L4 multipath hash) that spreads the flows over both; the directors share
//! three real servers (see tests/support/ecmp_net.rs for the network).
//!
//! A director dies (its link cut and `director run` SIGKILLed): the router
//! drops its next hop after the BGP hold time and its flows arrive,
//! mid-stream, at the other director. With `mh` (Maglev hashing over the same
//! real servers, by port) and `sloppy_tcp` = 1 (set by `director run`) that
//! director takes them up and sends each to the real server it was on: every
//! long-lived connection survives, every echo comes from the same real
//! server. With `rr` (the negative control) the moved flows land on another
//! real server and break, which shows the test can fail. A director whose
//! real servers all fail their checks is withdrawn at the router and comes
//! back; a director stopped with SIGTERM is withdrawn before it exits and no
//! connection breaks. Times are printed, never asserted.

#[allow(dead_code)]
#[path = "support/daemon_net.rs"]
mod net;

use std::time::{Duration, Instant};

use lvsctl_tests::ecmp_net::{vip, EcmpNet, DIRECTORS, DIRECTOR_AS, PORT, REALS, ROUTER, ROUTER_AS, T, VIP};
use lvsctl_tests::flows::{ask_echo, Long, Outcome};
use lvsctl_tests::topology::eventually;
use net::{Daemon, TestDir};

/// Long-lived connections per failover run.
const FLOWS: usize = 20;

/// The one config both directors run: the VIP:PORT service over the three
/// real servers (DR) with `scheduler`, checked, announced to the router.
fn config(scheduler: &str) -> String {
    let flags = if scheduler == "mh" { "sched_flags = [\"mh-port\", \"mh-fallback\"]\n" } else { "" };
    let [r0, r1, r2] = REALS;
    let [d0, d1] = DIRECTORS;
    format!(
        r#"[director]
iface = "eth0"

[[director.service]]
vip = "{VIP}"
port = {PORT}
scheduler = "{scheduler}"
{flags}real = ["{r0}", "{r1}", "{r2}"]
check = {{ type = "tcp", interval = "500ms", timeout = "1s", rise = 2, fall = 2 }}

[director.bgp]
asn = {DIRECTOR_AS}
hold_time = 6
drain_delay = "5s"

[[director.bgp.neighbor]]
address = "{ROUTER}"
asn = {ROUTER_AS}

[director.bgp.hosts."{d0}"]
[director.bgp.hosts."{d1}"]
"#
    )
}

/// The network with `director run` on both directors, every real server up
/// on both, and the router's route to the VIP via both.
struct Scaled {
    // Dropped in this order: the daemons (and their BIRDs) before the network.
    daemons: [Daemon; 2],
    dirs: [TestDir; 2],
    net: EcmpNet,
    _bird_dir: TestDir,
}

impl Scaled {
    fn new(scheduler: &str) -> Self {
        let bird_dir = TestDir::new();
        let net = EcmpNet::new(&bird_dir.0);
        let dirs = [TestDir::new(), TestDir::new()];
        let t0 = Instant::now();
        let daemons = [0, 1].map(|i| {
            let cfg = dirs[i].write("lvsctl.toml", &config(scheduler), 0o644);
            Daemon::start(&net.directors[i], &dirs[i], &cfg, &[])
        });
        for (i, d) in daemons.iter().enumerate() {
            d.wait_for("every real server up", T, || net.reals_up(i) == REALS.len());
        }
        let s = Scaled { daemons, dirs, net, _bird_dir: bird_dir };
        s.wait_route("via both directors", &DIRECTORS);
        eprintln!("ECMP: the router routes the VIP via both directors {:?} after director run started", t0.elapsed());
        s
    }

    /// Wait until the router's route to the VIP goes via `want` (sorted);
    /// returns when it did, measured from the call.
    fn wait_route(&self, what: &str, want: &[&str]) -> Duration {
        let t0 = Instant::now();
        eventually(&format!("the router's route to the VIP {what}"), T, || {
            let n = self.net.nexthops();
            // A cheap poll (the router's BIRD log is printed on a failure).
            if n == want {
                Ok(t0.elapsed())
            } else {
                Err(n)
            }
        })
    }

    /// Director `i` dies: its LAN link goes down (no goodbye reaches the
    /// router: it notices at the hold time), `director run` is SIGKILLed, its
    /// BIRD too.
    fn kill(&self, i: usize) {
        let bird = bird_pid(&self.dirs[i]);
        self.net.directors[i].ip(&["link", "set", "eth0", "down"]);
        self.daemons[i].signal(libc::SIGKILL);
        if let Some(pid) = bird {
            // SAFETY: kill on the BIRD this test's director run started.
            #[allow(unsafe_code)]
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
    }
}

/// The pid of the BIRD a `director run` started, from its state folder.
fn bird_pid(dir: &TestDir) -> Option<i32> {
    let state = dir.0.join("state");
    let file = std::fs::read_dir(&state).ok()?.flatten().map(|e| e.path()).find(|p| {
        let n = p.file_name().unwrap_or_default().to_string_lossy();
        n.starts_with("bird-netns") && n.ends_with(".pid")
    })?;
    std::fs::read_to_string(file).ok()?.trim().parse().ok()
}

#[test]
#[ignore = "privileged: needs root, IPVS and BIRD (scripts/privileged-tests)"]
fn ecmp_new_connections_spread_over_both_directors() {
    let s = Scaled::new("mh");
    let before = [s.net.counters(0).0, s.net.counters(1).0];
    let n = 20u64;
    let names: Vec<String> = (0..n)
        .map(|i| ask_echo(&s.net.client, vip()).unwrap_or_else(|e| panic!("new connection {i} through the VIP: {e}")))
        .collect();
    // The counters are folded in every 2 s: wait until two reads 2.5 s apart
    // agree and count at least every connection asked.
    let mut last = before;
    let grown = eventually("both directors' counters to settle, counting every connection", T, || {
        std::thread::sleep(Duration::from_millis(2500));
        let c = [s.net.counters(0).0, s.net.counters(1).0];
        let d = [c[0] - before[0], c[1] - before[1]];
        let settled = c == last && d[0] + d[1] >= n;
        last = c;
        if settled {
            Ok(d)
        } else {
            Err(c)
        }
    });
    eprintln!(
        "ECMP spread: {n} new connections, director d0 scheduled {}, d1 {}; answered by {names:?}",
        grown[0], grown[1]
    );
    assert!(grown[0] > 0 && grown[1] > 0, "both directors must schedule new connections: {grown:?}");
    let mut distinct = names.clone();
    distinct.sort();
    distinct.dedup();
    assert!(distinct.len() > 1, "mh-port must spread one client's connections over the real servers: {names:?}");
}

/// What happened to the long-lived connections when director d0 went away.
struct Moved {
    /// Every connection's outcome.
    outcomes: Vec<Outcome>,
    /// The flows (client port, real server) d0 carried before.
    moved: Vec<(u16, String)>,
    /// The flows d1 carries after.
    after: Vec<(u16, String)>,
}

impl Moved {
    fn moved_outcomes(&self) -> Vec<&Outcome> {
        self.outcomes.iter().filter(|o| self.was_moved(o)).collect()
    }

    fn was_moved(&self, o: &Outcome) -> bool {
        self.moved.iter().any(|(p, _)| *p == o.port)
    }

    /// The moved flows reach the real server they were on, through d1.
    fn same_real_servers(&self) {
        for (port, real) in &self.moved {
            let now = self.after.iter().find(|(p, _)| p == port);
            assert_eq!(now.map(|x| &x.1), Some(real), "flow :{port} must reach {real} through d1: {:?}", self.after);
        }
    }
}

/// Twenty long-lived connections spread over both directors; then `away`
/// takes director d0 out. Waits until the router routes via d1 only (then
/// calls `withdrawn`) and every connection echoed again (or broke), prints
/// the times and returns the outcomes.
fn move_flows_off_d0(s: &Scaled, what: &str, away: impl FnOnce(), withdrawn: impl FnOnce()) -> Moved {
    let longs: Vec<Long> = (0..FLOWS).map(|_| Long::open(&s.net.client, vip())).collect();
    let ports: Vec<u16> = longs.iter().map(|l| l.port).collect();
    let before = eventually("every flow in one director's connection table", T, || {
        let f = [s.net.flows(0), s.net.flows(1)];
        let once = |p: &u16| f.iter().filter(|t| t.iter().any(|x| x.0 == *p)).count() == 1;
        if ports.iter().all(once) {
            Ok(f)
        } else {
            Err(f)
        }
    });
    eprintln!("flows before: d0 {:?}, d1 {:?}", before[0], before[1]);
    assert!(!before[0].is_empty() && !before[1].is_empty(), "the router must spread the flows: {before:?}");
    let t0 = Instant::now();
    away();
    s.wait_route("via d1 only", &[DIRECTORS[1]]);
    let route_at = t0.elapsed();
    withdrawn();
    eventually("every connection echoed again, or broke", T, || {
        let now: Vec<Outcome> = longs.iter().map(Long::now).collect();
        let done = |o: &Outcome| o.error.is_some() || o.first_echo_after(t0 + route_at).is_some();
        let waiting: Vec<u16> = now.iter().filter(|o| !done(o)).map(|o| o.port).collect();
        if waiting.is_empty() {
            Ok(())
        } else {
            Err(waiting)
        }
    });
    std::thread::sleep(Duration::from_secs(2)); // a few more lines on each
    let after = s.net.flows(1);
    let outcomes: Vec<Outcome> = longs.into_iter().map(Long::finish).collect();
    let m = Moved { outcomes, moved: before[0].clone(), after };
    report(what, &m, t0, route_at);
    m
}

/// Print every connection and the times: death (or stop) to the router's
/// withdrawal, and to the moved flows echoing again.
fn report(what: &str, m: &Moved, t0: Instant, route_at: Duration) {
    for o in &m.outcomes {
        let (port, server, moved) = (o.port, &o.server, m.was_moved(o));
        eprintln!(
            "{what}: flow :{port} on {server} (moved {moved}): sent {}, echoed {}, error {:?}",
            o.sent, o.echoed, o.error
        );
    }
    let moved = m.moved_outcomes();
    let back: Vec<Duration> = moved.iter().filter_map(|o| o.resumed_after(t0)).collect();
    let gaps: Vec<Duration> = moved.iter().filter_map(|o| o.longest_gap_after(t0)).collect();
    let broke = moved.iter().filter(|o| o.error.is_some()).count();
    eprintln!(
        "ECMP {what}: {} of {FLOWS} flows went through d0; the router dropped d0's next hop {route_at:?} after; \
         moved flows flowing again after {back:?} (slowest {:?}); their longest silence {:?} (a line every 200 ms); \
         {broke} moved flows broke",
        moved.len(),
        back.iter().max(),
        gaps.iter().max()
    );
}

#[test]
#[ignore = "privileged: needs root, IPVS and BIRD (scripts/privileged-tests)"]
fn ecmp_flows_survive_a_directors_death_with_mh() {
    let s = Scaled::new("mh");
    let m = move_flows_off_d0(&s, "DEATH (mh)", || s.kill(0), || ());
    for o in &m.outcomes {
        assert!(o.survived(), "every connection must survive the director's death: {o:?}");
    }
    m.same_real_servers();
    assert_eq!(m.after.len(), FLOWS, "d1 must carry every flow now: {:?}", m.after);
}

#[test]
#[ignore = "privileged: needs root, IPVS and BIRD (scripts/privileged-tests)"]
fn ecmp_negative_control_rr_breaks_moved_flows() {
    let s = Scaled::new("rr");
    let m = move_flows_off_d0(&s, "DEATH (rr, negative control)", || s.kill(0), || ());
    let moved = m.moved_outcomes();
    assert!(
        moved.iter().any(|o| o.error.is_some()),
        "with rr the surviving director schedules moved flows anew: some must break: {moved:?}"
    );
    for o in m.outcomes.iter().filter(|o| !m.was_moved(o)) {
        assert!(o.survived(), "a flow that stayed on d1 must survive: {o:?}");
    }
}

#[test]
#[ignore = "privileged: needs root, IPVS and BIRD (scripts/privileged-tests)"]
fn ecmp_graceful_stop_withdraws_first_and_breaks_nothing() {
    let s = Scaled::new("mh");
    // The route goes first: when the router has moved d0's flows, d0 still
    // runs (its drain delay) with its table in place.
    let withdrawn = || {
        assert!(s.daemons[0].running(), "d0 must still run (drain delay) when its route is withdrawn");
        assert_eq!(s.net.reals_up(0), REALS.len(), "d0's table must stay in place through the drain delay");
    };
    let m = move_flows_off_d0(&s, "SIGTERM (mh)", || s.daemons[0].signal(libc::SIGTERM), withdrawn);
    let st = s.daemons[0].wait(T);
    assert!(st.success(), "director run exited with {st}; log:\n{}", s.daemons[0].log());
    for o in &m.outcomes {
        assert!(o.survived(), "no connection may break on a graceful stop: {o:?}");
    }
    m.same_real_servers();
}

#[test]
#[ignore = "privileged: needs root, IPVS and BIRD (scripts/privileged-tests)"]
fn ecmp_director_without_healthy_real_servers_is_withdrawn_and_returns() {
    let s = Scaled::new("mh");
    // d0 loses its path to every real server: its checks fail, d1's do not.
    let t0 = Instant::now();
    for r in REALS {
        s.net.directors[0].ip(&["route", "add", "blackhole", &format!("{r}/32")]);
    }
    s.daemons[0].wait_for("every real server down on d0", T, || s.net.reals_up(0) == 0);
    let gone = s.wait_route("via d1 only", &[DIRECTORS[1]]);
    eprintln!("ECMP health: d0's route withdrawn {:?} after its real servers became unreachable", t0.elapsed());
    assert_eq!(s.net.reals_up(1), REALS.len(), "d1's real servers stay up");
    let names: Vec<String> =
        (0..6).map(|_| ask_echo(&s.net.client, vip()).expect("a new connection while d0 is withdrawn")).collect();
    eprintln!("while d0 is withdrawn ({gone:?} to see it): answered by {names:?}");
    let t1 = Instant::now();
    for r in REALS {
        s.net.directors[0].ip(&["route", "del", "blackhole", &format!("{r}/32")]);
    }
    s.wait_route("via both directors again", &DIRECTORS);
    eprintln!("ECMP health: d0's route back {:?} after its real servers became reachable", t1.elapsed());
    assert!(s.daemons[0].running() && s.daemons[1].running(), "both director runs keep running");
}
