//! Privileged tests of `[director.bgp]`: `lvsctl director run` runs its own
//! BIRD 2 in the director's namespace and announces the VIP to a router.
//! The client namespace of the daemon test network
//! (tests/support/daemon_net.rs) is the router: its own BIRD (config
//! written here) learns the VIP over eBGP and installs the route the client
//! then uses; there is no static route to the VIP.
//!
//! ```text
//!   client+router 10.18.68.10, AS 65000 (BIRD, protocol kernel)
//!   director      10.18.68.185, AS 65001 (director run + its BIRD, VIP on lo)
//!   rs1 .186, rs2 .187 (real servers, LVS-DR)
//! ```
//!
//! Every wait polls with a generous deadline; nothing asserts a duration.
//! SIGHUP reloads that change `[director.bgp]` are tested here too: a VIP
//! added, a neighbour's hold time changed, a section refused.

#[allow(dead_code)]
#[path = "support/daemon_net.rs"]
mod net;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use lvsctl_tests::bird::Bird;
use lvsctl_tests::ip_bin;
use lvsctl_tests::topology::Netns;
use net::{Daemon, Net, Server, TestDir, CLIENT, DIRECTOR, PORT, REALS, VIP};

/// How long any awaited change may take (software emulation is slow).
const T: Duration = Duration::from_secs(90);

/// A quick tcp check: 200 ms apart, 500 ms timeout, rise 2, fall 2.
const FAST_TCP: &str = r#"{ type = "tcp", interval = "200ms", timeout = "500ms", rise = 2, fall = 2 }"#;

/// The drain delay of the SIGTERM test: long enough to look at the table.
const DRAIN: u64 = 8;

/// The VIP a reload adds (with a service over rs1 and rs2).
const VIP2: &str = "10.19.70.167";

/// The VIP:PORT service (mh, with mh-fallback so a drained real server's
/// clients go to another one) over rs1 and rs2, checked, announced to the router.
fn config(bgp_extra: &str) -> String {
    format!(
        "[director]\niface = \"eth0\"\n\n[[director.service]]\nvip = \"{VIP}\"\nport = {PORT}\nscheduler = \"mh\"\nsched_flags = [\"mh-fallback\"]\n\
         real = [\"{}\", \"{}\"]\ncheck = {FAST_TCP}\n\n[director.bgp]\nasn = 65001\nrouter_id = \"{DIRECTOR}\"\n\
         hold_time = 3\ndrain_delay = \"{DRAIN}s\"\n{bgp_extra}\n[[director.bgp.neighbor]]\naddress = \"{CLIENT}\"\nasn = 65000\n",
        REALS[0], REALS[1]
    )
}

/// [`config`] with a second service, on [`VIP2`] (so a second announced VIP).
fn config_two_vips(bgp_extra: &str) -> String {
    let second = format!(
        "[[director.service]]\nvip = \"{VIP2}\"\nport = {PORT}\nscheduler = \"mh\"\nsched_flags = [\"mh-fallback\"]\n\
         real = [\"{}\", \"{}\"]\ncheck = {FAST_TCP}\n\n[director.bgp]\n",
        REALS[0], REALS[1]
    );
    config(bgp_extra).replacen("[director.bgp]\n", &second, 1)
}

/// The router's BIRD in the client namespace: eBGP from the director, the
/// learnt routes into the kernel. Killed on drop.
struct Router {
    bird: Bird,
    ns: String,
}

impl Router {
    /// With `bfd`, BFD on the session too (`protocol bfd`, `bfd on`). The
    /// router asks for slow BFD timers (1 s, multiplier 10: once negotiated
    /// a failure takes 5 to 10 s to detect): BIRD's default of 100 ms x 5
    /// drops sessions of a loaded, emulated VM. `hold` is its hold time:
    /// the session takes the lower of both sides'.
    fn start(ns: &Netns, dir: &TestDir, bfd: bool, hold: u16) -> Self {
        let slow =
            "protocol bfd { interface \"*\" { min rx interval 1000 ms; min tx interval 1000 ms; multiplier 10; }; }\n";
        let (bfd_protocol, bfd_on) = if bfd { (slow, "bfd on; ") } else { ("", "") };
        let conf = format!(
            "router id {CLIENT};\nprotocol device {{ }}\n{bfd_protocol}\
             protocol kernel {{ ipv4 {{ import none; export all; }}; merge paths yes; }}\n\
             protocol bgp director1 {{ local as 65000; neighbor {DIRECTOR} as 65001; hold time {hold}; keepalive time 1; {bfd_on}\n\
             ipv4 {{ import all; export none; }}; }}\n"
        );
        Self { bird: Bird::start(ns, &dir.0, "router-bird", &conf), ns: ns.name.clone() }
    }

    /// `birdc show protocols` of the router.
    fn protocols(&self) -> String {
        self.bird.birdc(&["show", "protocols"])
    }

    /// Whether the router's BFD session with the director is Up.
    fn bfd_up(&self) -> bool {
        self.bird.birdc(&["show", "bfd", "sessions"]).lines().any(|l| l.starts_with(DIRECTOR) && l.contains(" Up "))
    }

    /// Whether the router's session with the director is Established.
    fn established(&self) -> bool {
        self.bird.established("director1")
    }

    /// The `Since` column of the router's session with the director
    /// (`05:18:27.090`), in milliseconds of the day.
    fn session_since(&self) -> u64 {
        let text = self.bird.birdc(&["show", "protocols", "director1"]);
        let line = text.lines().find(|l| l.starts_with("director1")).unwrap_or_default().to_owned();
        let since = line.split_whitespace().nth(4).unwrap_or_default().to_owned();
        let ms = |hms: &str| -> Option<u64> {
            let (hms, frac) = hms.split_once('.').unwrap_or((hms, "0"));
            let mut it = hms.split(':').map(|p| p.parse::<u64>().ok());
            let (h, m, s) = (it.next()??, it.next()??, it.next()??);
            Some(((h * 60 + m) * 60 + s) * 1000 + frac.parse::<u64>().ok()?)
        };
        ms(&since).unwrap_or_else(|| panic!("no Since in {line:?}"))
    }

    /// Whether the session is the one that was up `since` (BIRD shows its
    /// Since a millisecond off now and then: it converts its monotonic
    /// clock to the wall clock on each show). A restarted session's is
    /// later than the SIGHUP, which comes after several birdc and lvsctl
    /// runs (each tens of milliseconds here) made after the session was up.
    fn same_session(&self, since: u64) -> bool {
        self.session_since().abs_diff(since) <= 10
    }

    /// The router's kernel route to the VIP (empty when there is none).
    fn route(&self) -> String {
        self.route_to(VIP)
    }

    /// The router's kernel route to `vip` (empty when there is none).
    fn route_to(&self, vip: &str) -> String {
        let out =
            Command::new(ip_bin()).args(["-n", &self.ns, "route", "show", &format!("{vip}/32")]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    fn has_route(&self) -> bool {
        self.has_route_to(VIP)
    }

    /// Whether the router learnt `vip` from the director over BGP.
    fn has_route_to(&self, vip: &str) -> bool {
        let r = self.route_to(vip);
        r.contains(&format!("via {DIRECTOR}")) && r.contains("proto bird")
    }
}

/// `/proc/sys/net/ipv4/vs/NAME` in the namespace.
fn vs_sysctl(ns: &Netns, name: &str) -> String {
    let p = Path::new("/proc/sys/net/ipv4/vs").join(name);
    ns.run(move || {
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display())).trim().to_owned()
    })
}

/// The client (the router) without its static route to the VIP: only BGP
/// can give it one.
fn net_without_static_route() -> Net {
    let net = Net::new();
    net.client.ip(&["route", "del", &format!("{VIP}/32")]);
    net
}

/// The network without the static route, rs1 and rs2 answering, and the
/// router's BIRD (with `bfd`, asking for `hold` seconds). Fields drop in
/// this order: the router, the servers, the folder, the network.
struct Setup {
    router: Router,
    _servers: [Server; 2],
    dir: TestDir,
    net: Net,
}

impl Setup {
    fn new(bfd: bool, hold: u16) -> Self {
        let net = net_without_static_route();
        let dir = TestDir::new();
        let servers = [Server::text(&net.reals[0], PORT, "rs1"), Server::text(&net.reals[1], PORT, "rs2")];
        let router = Router::start(&net.client, &dir, bfd, hold);
        Setup { router, _servers: servers, dir, net }
    }
}

/// The `bgp` section of `director status --json`.
fn status_bgp(d: &Daemon, ns: &Netns) -> serde_json::Value {
    let (_, out) = d.status(ns, true);
    let j: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("status --json: {e}: {out}"));
    j["health"]["bgp"].clone()
}

#[test]
#[ignore = "privileged: needs root, IPVS and BIRD 2 (scripts/privileged-tests)"]
fn bgp_vip_follows_health_and_is_withdrawn_before_exit() {
    let net = net_without_static_route();
    let dir = TestDir::new();
    let s1 = Server::text(&net.reals[0], PORT, "rs1");
    let s2 = Server::text(&net.reals[1], PORT, "rs2");
    let router = Router::start(&net.client, &dir, false, 3);
    let sloppy_before = (vs_sysctl(&net.director, "sloppy_tcp"), vs_sysctl(&net.director, "sloppy_sctp"));
    assert_eq!(sloppy_before, ("0".to_owned(), "0".to_owned()), "a fresh namespace has the kernel defaults");
    assert!(router.route().is_empty(), "no route to the VIP before BGP: {}", router.route());

    let cfg = dir.write("lvsctl.toml", &config(""), 0o644);
    let d = Daemon::start(&net.director, &dir, &cfg, &[]);
    let took = d.wait_for("the VIP route on the router", T, || router.has_route());
    eprintln!("VIP announced {took:?} after director run started");
    assert!(router.established(), "{}", router.protocols());
    // End to end: the client reaches the real servers through the BGP route.
    for a in net.answers(4) {
        assert!(a == "rs1" || a == "rs2", "answer {a:?} through the announced route");
    }
    assert!(net.director.ip(&["-br", "addr", "show", "dev", "lo"]).contains(VIP), "the VIP goes on lo");
    assert!(!net.director_addrs().contains(VIP), "not on eth0: {}", net.director_addrs());
    assert_eq!(
        (vs_sysctl(&net.director, "sloppy_tcp"), vs_sysctl(&net.director, "sloppy_sctp")),
        ("1".into(), "1".into())
    );
    let b = status_bgp(&d, &net.director);
    assert_eq!(b["vips"][0]["announced"], true, "{b}");
    assert!(b["sessions"][0]["info"].as_str().unwrap_or("").contains("Established"), "{b}");
    let (_, text) = d.status(&net.director, false);
    assert!(text.contains("announced since") && text.contains("Established"), "{text}");

    // Every real server fails its check: withdrawn, the session stays up.
    s1.set_up(false);
    s2.set_up(false);
    d.wait_for("the VIP route gone from the router", T, || !router.has_route());
    assert!(router.established(), "a withdrawal, not a dropped session: {}", router.protocols());
    let b = status_bgp(&d, &net.director);
    assert_eq!(b["vips"][0]["announced"], false, "{b}");
    assert!(b["vips"][0]["reason"].as_str().unwrap().contains("all 2 real servers down"), "{b}");
    assert!(d.log().contains("bgp: withdrawing the VIP"), "{}", d.log());

    // One recovers: announced again.
    s1.set_up(true);
    d.wait_for("the VIP route back on the router", T, || router.has_route());
    assert_eq!(net.answers(3), vec!["rs1"; 3], "the recovered real server serves through the route");

    // SIGTERM: withdrawn while director run still runs, the table kept
    // through the drain delay, the session still up (graceful).
    d.signal(libc::SIGTERM);
    let deadline = Instant::now() + T;
    while router.has_route() {
        assert!(d.running(), "director run exited before the VIP was withdrawn:\n{}", d.log());
        assert!(Instant::now() < deadline, "the VIP was not withdrawn after SIGTERM:\n{}", d.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(d.running(), "director run waits the drain delay ({DRAIN}s) after withdrawing:\n{}", d.log());
    assert!(net.weights().is_some(), "the IPVS service stays during the drain delay");
    assert!(router.established(), "the session is still up during the drain: {}", router.protocols());
    let status = d.wait(T);
    assert!(status.success(), "{status}: {}", d.log());
    assert_eq!((vs_sysctl(&net.director, "sloppy_tcp"), vs_sysctl(&net.director, "sloppy_sctp")), sloppy_before);
    assert!(net.weights().is_some(), "without --teardown-on-exit the service stays");
    let log = d.log();
    let withdraw = log
        .find("bgp: withdrawing the VIP vip=10.19.70.166 reason=director run is stopping")
        .expect("withdrawal logged with its reason");
    let stopped = log.find("bgp: BIRD stopped").expect("BIRD stopped logged");
    assert!(withdraw < stopped, "withdrawn before BIRD stops:\n{log}");
    let _ = net.director.lvsctl(&["director", "stop"]);
}

#[test]
#[ignore = "privileged: needs root, IPVS and BIRD 2 (scripts/privileged-tests)"]
fn bgp_bad_section_is_a_clear_error_and_nothing_starts() {
    let net = net_without_static_route();
    let dir = TestDir::new();
    // A bad value: the config error names the key, file, line and column.
    let cfg = dir.write("lvsctl.toml", &config("").replace("hold_time = 3", "hold_time = 1"), 0o644);
    let d = Daemon::start(&net.director, &dir, &cfg, &[]);
    let status = d.wait(T);
    assert!(!status.success(), "{}", d.log());
    let want = format!("{}:", cfg.display());
    assert!(d.log().contains(&want) && d.log().contains("hold_time = 1 is out of range 3..65535"), "{}", d.log());

    // Valid, but no router id for this host: refused at start.
    let text = config("").replace(&format!("router_id = \"{DIRECTOR}\"\n"), "");
    let text = format!("{text}[director.bgp.hosts.\"10.99.0.1\"]\n");
    let cfg = dir.write("lvsctl2.toml", &text, 0o644);
    let d = Daemon::start(&net.director, &dir, &cfg, &[]);
    let status = d.wait(T);
    assert!(!status.success(), "{}", d.log());
    assert!(d.log().contains("no router_id for this host"), "{}", d.log());

    // Nothing changed: no service, no VIP, the sysctls as they were, no BIRD.
    assert!(net.table().is_empty(), "no IPVS service: {:?}", net.table());
    assert!(!net.director.ip(&["-br", "addr", "show", "dev", "lo"]).contains(VIP));
    assert_eq!(vs_sysctl(&net.director, "sloppy_tcp"), "0");
    let state: Vec<String> = std::fs::read_dir(dir.0.join("state"))
        .map(|r| r.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    assert!(!state.iter().any(|n| n.starts_with("bird-")), "no BIRD files left: {state:?}");
}

/// The pid of the director's BIRD, from its pid file in the state folder.
fn director_bird_pid(dir: &TestDir) -> Option<i32> {
    let state = dir.0.join("state");
    let rd = std::fs::read_dir(&state).ok()?;
    let pid_file = rd.flatten().map(|e| e.path()).find(|p| {
        let n = p.file_name().unwrap().to_string_lossy();
        n.starts_with("bird-netns") && n.ends_with(".pid")
    })?;
    std::fs::read_to_string(pid_file).ok()?.trim().parse().ok()
}

/// Whether `pid` is a live bird process.
fn is_bird(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "bird")
}

#[test]
#[ignore = "privileged: needs root, IPVS and BIRD 2 (scripts/privileged-tests)"]
fn bgp_bird_is_restarted_and_dies_with_director_run() {
    // BFD on both sides: the generated `protocol bfd` (with the configured
    // timers) and `bfd on` are taken by BIRD.
    let setup = Setup::new(true, 3);
    let (net, dir, router) = (&setup.net, &setup.dir, &setup.router);
    let bfd = "bfd = true\nbfd_interval = \"2s\"\nbfd_multiplier = 7";
    let cfg = dir.write("lvsctl.toml", &config(bfd), 0o644);
    let d = Daemon::start(&net.director, dir, &cfg, &[]);
    d.wait_for("the VIP route on the router", T, || router.has_route());
    let (_, text) = d.status(&net.director, false);
    assert!(text.contains("Established"), "{text}");
    d.wait_for("the BFD session up on the router", T, || router.bfd_up());
    // The router detects a failure after the director's multiplier times the
    // slower of the intervals (the director's 2 s over its own 1 s): 14 s;
    // BIRD's defaults (5 x 1 s) would give 5 s.
    let sessions = router.bird.birdc(&["show", "bfd", "sessions"]);
    let line = sessions.lines().find(|l| l.starts_with(DIRECTOR)).unwrap_or_default().to_owned();
    // The columns end with Interval and Timeout.
    assert_eq!(
        line.split_whitespace().last(),
        Some("14.000"),
        "the director's BFD timers on the router's session: {sessions}"
    );

    // BIRD killed: the session drops, the route goes; lvsctl starts BIRD
    // again, which reads the announced set from its include file.
    let first = director_bird_pid(dir).expect("the director's BIRD pid file");
    assert!(is_bird(first), "pid {first} is not bird");
    // SAFETY: kill on the pid of the BIRD this test's daemon started.
    #[allow(unsafe_code)]
    unsafe {
        libc::kill(first, libc::SIGKILL);
    }
    d.wait_for("the route gone with the session", T, || !router.has_route());
    d.wait_for("a new BIRD", T, || director_bird_pid(dir).is_some_and(|p| p != first && is_bird(p)));
    d.wait_for("the VIP route back from the restarted BIRD", T, || router.has_route());
    assert!(d.log().contains("bgp: BIRD is gone, the sessions dropped; restarting it"), "{}", d.log());

    // director run killed: its BIRD goes with it, so the router withdraws
    // the VIP by itself; the IPVS table stays.
    let second = director_bird_pid(dir).unwrap();
    d.signal(libc::SIGKILL);
    d.wait(T);
    let deadline = Instant::now() + T;
    while is_bird(second) || router.has_route() {
        assert!(Instant::now() < deadline, "BIRD outlived director run (or the route stayed): {}", router.route());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(net.weights().is_some(), "the IPVS service stays after a kill");
    let _ = net.director.lvsctl(&["director", "stop"]);
}

/// A neighbour with `multihop` and `local_address`: BIRD takes both (its
/// session shows the source address) and the router learns the VIP.
#[test]
#[ignore = "privileged: needs root, IPVS and BIRD 2 (scripts/privileged-tests)"]
fn bgp_multihop_neighbor_with_a_source_address() {
    // The neighbour table is the config's last: these keys go into it.
    let setup = Setup::new(false, 3);
    let (net, dir, router) = (&setup.net, &setup.dir, &setup.router);
    let text = config("") + &format!("multihop = 2\nlocal_address = \"{DIRECTOR}\"\n");
    let cfg = dir.write("lvsctl.toml", &text, 0o644);
    let d = Daemon::start(&net.director, dir, &cfg, &[]);
    d.wait_for("the VIP route on the router", T, || router.has_route());
    let session = director_session(&d, &net.director);
    let source = session.lines().find(|l| l.contains("Source address:")).unwrap_or_default();
    assert!(source.trim_end().ends_with(DIRECTOR), "the session's source address: {session}");
    let conf = std::fs::read_dir(dir.0.join("state"))
        .unwrap()
        .flatten()
        .find(|e| {
            e.file_name().to_string_lossy().ends_with(".conf") && e.file_name().to_string_lossy().starts_with("bird-")
        })
        .map(|e| std::fs::read_to_string(e.path()).unwrap())
        .expect("the director's BIRD config");
    assert!(conf.contains("    multihop 2;"), "{conf}");
}

/// `birdc show protocols all` of the director's BIRD, for its session with
/// the router (through the socket `director status --json` names).
fn director_session(d: &Daemon, ns: &Netns) -> String {
    let b = status_bgp(d, ns);
    let socket = b["socket"].as_str().unwrap_or_else(|| panic!("no socket in the status: {b}")).to_owned();
    let peer = format!("peer_{}", CLIENT.replace('.', "_"));
    let out = Command::new("birdc").args(["-s", &socket, "show", "protocols", "all", &peer]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The hold time the director's session with the router runs with (the
/// lower of both sides'), from `Hold timer: 1.234/3`; `None` while the
/// session is not Established.
fn hold_time(d: &Daemon, ns: &Netns) -> Option<u32> {
    let text = director_session(d, ns);
    let line = text.lines().find(|l| l.trim_start().starts_with("Hold timer:"))?;
    line.rsplit('/').next()?.trim().parse().ok()
}

#[test]
#[ignore = "privileged: needs root, IPVS and BIRD 2 (scripts/privileged-tests)"]
fn bgp_reload_adds_a_vip_and_changes_the_hold_time() {
    // The router asks for 9 s, so the session runs with the director's hold time.
    let setup = Setup::new(false, 9);
    let (net, dir, router) = (&setup.net, &setup.dir, &setup.router);
    let cfg = dir.write("lvsctl.toml", &config(""), 0o644);
    let d = Daemon::start(&net.director, dir, &cfg, &[]);
    d.wait_for("the VIP route on the router", T, || router.has_route());
    d.wait_for("the session's hold time of 3 s", T, || hold_time(&d, &net.director) == Some(3));
    let since = router.session_since();
    assert!(!router.has_route_to(VIP2), "{}", router.route_to(VIP2));

    // A second service on a new VIP: the router learns it; the session,
    // whose settings did not change, keeps running.
    dir.write("lvsctl.toml", &config_two_vips(""), 0o644);
    d.signal(libc::SIGHUP);
    d.wait_for("the second VIP's route on the router", T, || router.has_route_to(VIP2));
    assert!(router.has_route(), "the first VIP stays announced: {}", router.route());
    assert!(router.same_session(since), "the session was not restarted: {since} ms, now {}", router.protocols());
    let b = status_bgp(&d, &net.director);
    assert_eq!(b["vips"].as_array().map(Vec::len), Some(2), "{b}");
    assert_eq!(b["vips"][1]["vip"], VIP2, "{b}");
    assert_eq!(b["vips"][1]["announced"], true, "{b}");
    assert!(d.log().contains("bgp: the reloaded [director.bgp] is BIRD's config"), "{}", d.log());

    // The hold time changed: BIRD restarts that session with it, and
    // announces both VIPs again.
    dir.write("lvsctl.toml", &config_two_vips("").replace("hold_time = 3", "hold_time = 6"), 0o644);
    d.signal(libc::SIGHUP);
    d.wait_for("the session's hold time of 6 s", T, || hold_time(&d, &net.director) == Some(6));
    d.wait_for("both routes back on the router", T, || router.has_route() && router.has_route_to(VIP2));

    // The second service and VIP removed again: withdrawn.
    dir.write("lvsctl.toml", &config("").replace("hold_time = 3", "hold_time = 6"), 0o644);
    d.signal(libc::SIGHUP);
    d.wait_for("the second VIP's route gone from the router", T, || !router.has_route_to(VIP2));
    assert!(router.has_route(), "the first VIP stays announced: {}", router.route());
    d.signal(libc::SIGTERM);
    d.wait(T);
    let _ = net.director.lvsctl(&["director", "stop"]);
}

#[test]
#[ignore = "privileged: needs root, IPVS and BIRD 2 (scripts/privileged-tests)"]
fn bgp_reload_with_a_refused_section_keeps_everything() {
    // BIRD as lvsctl runs it, except that its parse check (`bird -p`)
    let setup = Setup::new(false, 9);
    let (net, dir, router) = (&setup.net, &setup.dir, &setup.router);
    // refuses a config with hold time 7 (lvsctl accepts 7): how a BIRD
    // that rejects what lvsctl wrote looks to the daemon.
    let real = ["/usr/sbin/bird", "/usr/local/sbin/bird", "/usr/bin/bird"]
        .into_iter()
        .find(|p| Path::new(p).is_file())
        .expect("bird is installed");
    let wrapper = format!(
        "#!/bin/sh\nif [ \"$1\" = -p ] && grep -q 'hold time 7;' \"$3\"; then\n  echo \"$3:9: hold time 7 refused by the test's BIRD\" >&2\n  exit 1\nfi\nexec {real} \"$@\"\n"
    );
    let bird = dir.write("bird", &wrapper, 0o755);
    let cfg = dir.write("lvsctl.toml", &config(""), 0o644);
    let d = Daemon::start_env(&net.director, dir, &cfg, &[], &[("LVSCTL_BIRD", bird.as_path())]);
    d.wait_for("the VIP route on the router", T, || router.has_route());
    d.wait_for("the session's hold time of 3 s", T, || hold_time(&d, &net.director) == Some(3));
    let since = router.session_since();
    let table = net.weights();

    // BIRD refuses the new section: the whole reload is refused (the new
    // VIP, its service and the hold time), the announcement stays.
    let refused = config_two_vips("").replace("hold_time = 3", "hold_time = 7");
    dir.write("lvsctl.toml", &refused, 0o644);
    d.signal(libc::SIGHUP);
    d.wait_for("the rejection in the log", T, || d.log().contains("new config rejected"));
    let log = d.log();
    let line = log.lines().find(|l| l.contains("new config rejected")).unwrap();
    assert!(line.contains("refused by the test's BIRD"), "BIRD's reason is logged: {line}");
    // Wait for a resync (and a few keepalives) before looking again.
    std::thread::sleep(Duration::from_secs(3));
    assert!(router.has_route() && !router.has_route_to(VIP2), "{} / {}", router.route(), router.route_to(VIP2));
    assert!(router.same_session(since), "the session was not touched: {since} ms, now {}", router.protocols());
    assert_eq!(hold_time(&d, &net.director), Some(3));
    assert_eq!(net.weights(), table, "the service table is unchanged");
    assert_eq!(net.table().len(), 1, "no service on the second VIP: {:?}", net.table());
    assert_eq!(status_bgp(&d, &net.director)["vips"].as_array().map(Vec::len), Some(1));

    // A section lvsctl cannot resolve for this host (no router id) is refused too.
    let no_id = config_two_vips("").replace(&format!("router_id = \"{DIRECTOR}\"\n"), "");
    dir.write("lvsctl.toml", &format!("{no_id}[director.bgp.hosts.\"10.99.0.1\"]\n"), 0o644);
    d.signal(libc::SIGHUP);
    d.wait_for("the second rejection", T, || d.log().matches("new config rejected").count() == 2);
    assert!(d.log().contains("no router_id for this host"), "{}", d.log());
    assert_eq!(net.table().len(), 1, "no service on the second VIP: {:?}", net.table());
    assert!(router.has_route(), "{}", router.route());
    d.signal(libc::SIGTERM);
    d.wait(T);
    let _ = net.director.lvsctl(&["director", "stop"]);
}
