//! Privileged tests of ECMP scale-out: two LVS-DR directors announce the VIP
//! over eBGP to a router (BIRD, `merge paths`, an L4 multipath hash) that
//! spreads the flows over both; the directors share three real servers
//! (see tests/support/ecmp_net.rs for the network).
//!
//! A director dies (its link cut and its BIRD killed): the router drops its
//! next hop after the BGP hold time and its flows arrive, mid-stream, at the
//! other director. With `mh` (Maglev hashing over the same real servers, by
//! port) and `sloppy_tcp` = 1 that director takes them up and sends each to
//! the real server it was on: every long-lived connection survives, every
//! echo comes from the same real server. With `rr` (the negative control)
//! the moved flows land on another real server and break, which shows the
//! test can fail. The time from the death to traffic flowing again is
//! printed, never asserted.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use ipvs::{Destination, Forward, SchedFlags, Scheduler, Service, ServiceKey};
use lvsctl_tests::bird::Bird;
use lvsctl_tests::ecmp_net::{director_bird_config, vip, write_proc, EcmpNet, DIRECTORS, REALS, T, VIP};
use lvsctl_tests::flows::{ask_echo, Long, Outcome};
use lvsctl_tests::topology::eventually;

/// Long-lived connections per failover run.
const FLOWS: usize = 20;

/// A test's folder for BIRD's files (config, socket, pid, log); removed on drop.
struct Dir(std::path::PathBuf);

impl Dir {
    fn new() -> Self {
        let p = std::env::temp_dir().join(lvsctl_tests::unique("lvsctl-ecmp-"));
        std::fs::create_dir_all(&p).expect("test folder");
        Self(p)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Director `i` set up by hand: the VIP on `lo` (not answering ARP for it),
/// `sloppy_tcp` = 1, the IPVS service with the three real servers (DR) built
/// through the library, and BIRD announcing the VIP to the router.
fn director_by_hand(net: &EcmpNet, i: usize, scheduler: &Scheduler, dir: &Path) -> Bird {
    let d = &net.directors[i];
    d.ip(&["addr", "add", &format!("{VIP}/32"), "dev", "lo"]);
    for iface in ["all", "eth0"] {
        d.set_sysctl(iface, "arp_ignore", "1");
        d.set_sysctl(iface, "arp_announce", "2");
    }
    let flags = if *scheduler == Scheduler::Mh { SchedFlags::MH_PORT } else { SchedFlags::NONE };
    let (ns, sched) = (d.name.clone(), scheduler.clone());
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(async move {
        let h = match ipvs::Ipvs::connect_named_netns(&ns).await {
            Ok(h) => h,
            Err(e) => panic!("PRIVILEGED TEST COULD NOT RUN: cannot connect to IPVS in {ns}: {e}"),
        };
        let key = ServiceKey::tcp(vip());
        h.add_service(&Service::new(key, sched).with_sched_flags(flags)).await.expect("add the service");
        for r in REALS {
            let a: SocketAddr = format!("{r}:{}", vip().port()).parse().unwrap();
            h.add_destination(&key, &Destination::new(a, Forward::Route).with_weight(1))
                .await
                .expect("add a real server");
        }
    });
    write_proc(d, "sys/net/ipv4/vs/sloppy_tcp", "1");
    Bird::start(d, dir, &format!("d{i}"), &director_bird_config(i))
}

/// Wait until the router routes the VIP over both directors.
fn wait_ecmp(net: &EcmpNet) {
    let t0 = Instant::now();
    let both: Vec<String> = DIRECTORS.iter().map(|d| d.to_string()).collect();
    eventually("the router's route to the VIP via both directors", T, || {
        let n = net.nexthops();
        if n == both {
            Ok(())
        } else {
            Err((n, net.router_bird.birdc(&["show", "protocols"])))
        }
    });
    eprintln!("ECMP: the router routes the VIP via both directors {:?} after their BIRDs started", t0.elapsed());
}

/// Two directors set up by hand with `scheduler`, the route via both.
fn two_directors(scheduler: &Scheduler) -> (Dir, EcmpNet, [Bird; 2]) {
    let dir = Dir::new();
    let net = EcmpNet::new(&dir.0);
    let birds = [0, 1].map(|i| director_by_hand(&net, i, scheduler, &dir.0));
    wait_ecmp(&net);
    (dir, net, birds)
}

#[test]
#[ignore = "privileged: needs root, IPVS and BIRD (scripts/privileged-tests)"]
fn ecmp_new_connections_spread_over_both_directors() {
    let (_dir, net, _birds) = two_directors(&Scheduler::Mh);
    let before = [net.counters(0), net.counters(1)];
    let n = 20u64;
    let names: Vec<String> = (0..n)
        .map(|i| ask_echo(&net.client, vip()).unwrap_or_else(|e| panic!("new connection {i} through the VIP: {e}")))
        .collect();
    // The counters are folded in every 2 s: wait until two reads 2.5 s apart
    // agree and count at least every connection asked.
    let mut last = [before[0].0, before[1].0];
    let grown = eventually("both directors' counters to settle, counting every connection", T, || {
        std::thread::sleep(Duration::from_millis(2500));
        let c = [net.counters(0).0, net.counters(1).0];
        let d = [c[0] - before[0].0, c[1] - before[1].0];
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

/// What a director's death did to the long-lived connections.
struct Failover {
    /// Every connection's outcome.
    outcomes: Vec<Outcome>,
    /// The flows (client port, real server) director d0 had before its death.
    moved: Vec<(u16, String)>,
    /// The flows director d1 had after it.
    after: Vec<(u16, String)>,
}

impl Failover {
    fn moved_outcomes(&self) -> Vec<&Outcome> {
        self.outcomes.iter().filter(|o| self.moved.iter().any(|(p, _)| *p == o.port)).collect()
    }
}

/// Twenty long-lived connections through both directors, then director d0
/// dies: its LAN link goes down and its BIRD is SIGKILLed (no goodbye to the
/// router: the router notices at the hold time). Returns the outcomes once
/// every connection echoed again or broke.
fn kill_a_director_with_flows(scheduler: Scheduler) -> Failover {
    let (_dir, net, [mut bird0, _bird1]) = two_directors(&scheduler);
    let longs: Vec<Long> = (0..FLOWS).map(|_| Long::open(&net.client, vip())).collect();
    let ports: Vec<u16> = longs.iter().map(|l| l.port).collect();
    let before = eventually("every flow in one director's connection table", T, || {
        let f = [net.flows(0), net.flows(1)];
        let seen = |p: &u16| f.iter().filter(|t| t.iter().any(|x| x.0 == *p)).count() == 1;
        if ports.iter().all(seen) {
            Ok(f)
        } else {
            Err(f)
        }
    });
    eprintln!("flows before: d0 {:?}, d1 {:?}", before[0], before[1]);
    assert!(
        !before[0].is_empty() && !before[1].is_empty(),
        "the router must spread the flows over both directors: {before:?}"
    );
    let t0 = Instant::now();
    net.directors[0].ip(&["link", "set", "eth0", "down"]);
    bird0.kill();
    let route_at = eventually("the router's route to the VIP via d1 only", T, || {
        let n = net.nexthops();
        if n == [DIRECTORS[1]] {
            Ok(t0.elapsed())
        } else {
            Err(n)
        }
    });
    eventually("every connection echoed again, or broke", T, || {
        let now: Vec<Outcome> = longs.iter().map(Long::now).collect();
        let done = |o: &Outcome| o.error.is_some() || o.first_echo_after(t0 + route_at).is_some();
        if now.iter().all(done) {
            Ok(())
        } else {
            Err(now.into_iter().filter(|o| !done(o)).map(|o| o.port).collect::<Vec<_>>())
        }
    });
    // A few more lines on every connection that still runs.
    std::thread::sleep(Duration::from_secs(2));
    let after = net.flows(1);
    let outcomes: Vec<Outcome> = longs.into_iter().map(Long::finish).collect();
    let f = Failover { outcomes, moved: before[0].clone(), after };
    report(&scheduler, &f, t0, route_at);
    f
}

/// Print what happened, with the time from the death to traffic flowing again.
fn report(scheduler: &Scheduler, f: &Failover, t0: Instant, route_at: Duration) {
    for o in &f.outcomes {
        eprintln!(
            "{scheduler:?} flow :{} on {} (moved {}): sent {}, echoed {}, error {:?}",
            o.port,
            o.server,
            f.moved.iter().any(|m| m.0 == o.port),
            o.sent,
            o.echoed,
            o.error
        );
    }
    let moved = f.moved_outcomes();
    let back: Vec<Duration> = moved.iter().filter_map(|o| o.first_echo_after(t0)).collect();
    let broke = moved.iter().filter(|o| o.error.is_some()).count();
    eprintln!(
        "ECMP FAILOVER ({scheduler:?}): {} of {FLOWS} flows went through the dead director; the router dropped its \
         next hop {route_at:?} after the death; moved flows echoing again after {:?} (slowest {:?}); {broke} moved \
         flows broke",
        moved.len(),
        back,
        back.iter().max()
    );
}

#[test]
#[ignore = "privileged: needs root, IPVS and BIRD (scripts/privileged-tests)"]
fn ecmp_flows_survive_a_directors_death_with_mh() {
    let f = kill_a_director_with_flows(Scheduler::Mh);
    for o in &f.outcomes {
        assert!(o.survived(), "every connection must survive the director's death: {o:?}");
    }
    // The moved flows now go through d1, to the real server d0 had picked.
    for (port, real) in &f.moved {
        let now = f.after.iter().find(|(p, _)| p == port);
        assert_eq!(now.map(|x| &x.1), Some(real), "flow :{port} must reach {real} through d1: {:?}", f.after);
    }
    assert_eq!(f.after.len(), FLOWS, "d1 must carry every flow now: {:?}", f.after);
}

#[test]
#[ignore = "privileged: needs root, IPVS and BIRD (scripts/privileged-tests)"]
fn ecmp_negative_control_rr_breaks_moved_flows() {
    let f = kill_a_director_with_flows(Scheduler::Rr);
    let moved = f.moved_outcomes();
    assert!(
        moved.iter().any(|o| o.error.is_some()),
        "with rr the surviving director schedules moved flows anew: some must break: {moved:?}"
    );
    for o in f.outcomes.iter().filter(|o| !f.moved.iter().any(|m| m.0 == o.port)) {
        assert!(o.survived(), "a flow that stayed on d1 must survive: {o:?}");
    }
}
