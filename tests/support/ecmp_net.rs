//! The ECMP scale-out network: two LVS-DR directors behind a router that
//! learns the VIP from both over eBGP (BIRD) and spreads flows over them by
//! an L4 hash, three real servers behind both.
//!
//! ```text
//!   client 10.0.1.10 ---- (public bridge) ---- 10.0.1.1 router (BIRD, AS 65000)
//!                                                10.18.68.1 |  ECMP route VIP/32 via d0, d1
//!   ------------------------------------- LAN bridge ------------------------------
//!   d0 10.18.68.181   d1 10.18.68.182        (AS 65001 each: left to the test, e.g.
//!                                              `lvsctl director run` with [director.bgp])
//!   rs186 .186, rs187 .187, rs188 .188       (VIP on lo by `lvsctl realserver start`,
//!                                              a line echo server naming itself)
//! ```
//!
//! The real servers answer straight to the client through the router (DR).
//! Everything lives in namespaces the test created and is deleted on drop.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use crate::bird::{bgp_config, Bird};
use crate::flows::LineEcho;
use crate::topology::{Lan, Netns};

/// The VIP the directors announce.
pub const VIP: &str = "10.19.70.166";
/// The service's port.
pub const PORT: u16 = 15858;
/// The client.
pub const CLIENT: &str = "10.0.1.10";
/// The router's address on the LAN (the directors' BGP peer).
pub const ROUTER: &str = "10.18.68.1";
/// The directors.
pub const DIRECTORS: [&str; 2] = ["10.18.68.181", "10.18.68.182"];
/// The real servers.
pub const REALS: [&str; 3] = ["10.18.68.186", "10.18.68.187", "10.18.68.188"];
/// The real servers' names in their echoes.
pub const REAL_NAMES: [&str; 3] = ["rs186", "rs187", "rs188"];
/// The router's AS.
pub const ROUTER_AS: u32 = 65000;
/// The directors' AS.
pub const DIRECTOR_AS: u32 = 65001;

/// VIP:PORT.
pub fn vip() -> SocketAddr {
    format!("{VIP}:{PORT}").parse().expect("VIP:PORT")
}

/// The network (without anything on the directors yet).
pub struct EcmpNet {
    /// The client.
    pub client: Netns,
    /// The router, with its BIRD running.
    pub router: Netns,
    /// The directors.
    pub directors: [Netns; 2],
    /// The real servers, each with its line echo server.
    pub reals: [Netns; 3],
    /// The router's BIRD.
    pub router_bird: Bird,
    _echo: Vec<LineEcho>,
    _lans: (Lan, Lan),
}

impl EcmpNet {
    /// Build it; the router's BIRD writes its files to `dir`.
    pub fn new(dir: &Path) -> Self {
        let (public, lan) = (Lan::new(), Lan::new());
        let client = public.host("ec", "eth0", &format!("{CLIENT}/24"));
        let router = public.host("er", "pub0", "10.0.1.1/24");
        lan.attach(&router, "lan0", &format!("{ROUTER}/24"));
        client.ip(&["route", "add", "default", "via", "10.0.1.1"]);
        // The router hashes a flow with the hash its packets carry, and over
        // veth that is the client socket's own (sk_txhash), which the client
        // redraws on every retransmission timeout (net.core.txrehash): a flow
        // would hop between directors with nothing failing. A router on a real
        // NIC hashes the addresses and ports itself; keep the hash fixed.
        write_proc(&client, "sys/net/core/txrehash", "0");
        write_proc(&router, "sys/net/ipv4/ip_forward", "1");
        // Hash on ports too, so one client's flows spread over both directors.
        write_proc(&router, "sys/net/ipv4/fib_multipath_hash_policy", "1");
        let directors = DIRECTORS.map(|a| lan.host("ed", "eth0", &format!("{a}/24")));
        let reals = REALS.map(|a| lan.host("es", "eth0", &format!("{a}/24")));
        let mut echo = Vec::new();
        for (r, name) in reals.iter().zip(REAL_NAMES) {
            r.ip(&["route", "add", "default", "via", ROUTER]);
            r.lvsctl_ok(&["realserver", "start", "--vip", VIP, "--iface", "eth0"]);
            echo.push(LineEcho::start(r, PORT, name));
        }
        for d in &directors {
            d.ip(&["route", "add", "default", "via", ROUTER]);
        }
        let router_bird = Bird::start(&router, dir, "router", &router_config());
        EcmpNet { client, router, directors, reals, router_bird, _echo: echo, _lans: (public, lan) }
    }

    /// The next hops of the router's route to the VIP, sorted (empty: no route).
    pub fn nexthops(&self) -> Vec<String> {
        let out = self.router.ip(&["-4", "route", "show", &format!("{VIP}/32")]);
        let words: Vec<&str> = out.split_whitespace().collect();
        let mut v: Vec<String> = words.windows(2).filter(|w| w[0] == "via").map(|w| w[1].to_owned()).collect();
        v.sort();
        v
    }

    /// The client ports of the established connections to the VIP in director
    /// `i`'s IPVS connection table, with the real server each goes to.
    pub fn flows(&self, i: usize) -> Vec<(u16, String)> {
        let out = self.directors[i].ipvsadm(&["-Lnc"]);
        let mut v: Vec<(u16, String)> = out.lines().filter_map(flow_of).collect();
        v.sort();
        v
    }

    /// Director `i`'s service counters: (connections scheduled, packets in),
    /// read through the library in its namespace (0s without the service).
    pub fn counters(&self, i: usize) -> (u64, u64) {
        self.service(i).map_or((0, 0), |(s, _)| (s.stats.conns, s.stats.in_pkts))
    }

    /// How many real servers of the service have a weight above 0 on
    /// director `i` (0 without the service).
    pub fn reals_up(&self, i: usize) -> usize {
        self.service(i).map_or(0, |(_, ds)| ds.iter().filter(|d| d.destination.weight > 0).count())
    }

    /// The VIP:PORT service and its real servers in director `i`'s IPVS
    /// table, read through the library in its namespace.
    fn service(&self, i: usize) -> Option<(ipvs::ServiceEntry, Vec<ipvs::DestinationEntry>)> {
        let ns = self.directors[i].name.clone();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let table = rt.block_on(async move {
            match ipvs::Ipvs::connect_named_netns(&ns).await {
                Ok(h) => h.dump().await.expect("dump the IPVS table"),
                Err(e) => panic!("PRIVILEGED TEST COULD NOT RUN: cannot connect to IPVS in {ns}: {e}"),
            }
        });
        let key = ipvs::ServiceKey::tcp(vip());
        table.into_iter().find(|(s, _)| s.service.key == key)
    }
}

/// `(client port, real server)` of one `ipvsadm -Lnc` line of an
/// established connection from the client to VIP:PORT.
fn flow_of(line: &str) -> Option<(u16, String)> {
    // pro expire state source virtual destination
    let w: Vec<&str> = line.split_whitespace().collect();
    if w.len() < 6 || w[0] != "TCP" || w[2] != "ESTABLISHED" || w[4] != format!("{VIP}:{PORT}") {
        return None;
    }
    let (src, port) = w[3].rsplit_once(':')?;
    let (real, _) = w[5].rsplit_once(':')?;
    (src == CLIENT).then(|| Some((port.parse().ok()?, real.to_owned()))).flatten()
}

/// Write `/proc/<rel>` inside `ns` (a per-namespace sysctl).
pub fn write_proc(ns: &Netns, rel: &str, value: &str) {
    let (p, v) = (Path::new("/proc").join(rel), value.to_owned());
    ns.run(move || std::fs::write(&p, v).unwrap_or_else(|e| panic!("write {}: {e}", p.display())));
}

/// The router's BIRD: an eBGP session to each director, every route it
/// learns installed in the kernel, equal ones merged into one multipath route.
fn router_config() -> String {
    let peers = [("d0", DIRECTORS[0], DIRECTOR_AS), ("d1", DIRECTORS[1], DIRECTOR_AS)];
    let kernel = "protocol kernel { ipv4 { export all; }; merge paths yes; }";
    bgp_config(ROUTER, ROUTER_AS, &peers, kernel, "import all; export none;")
}

/// How long any awaited change may take (software emulation is slow).
pub const T: Duration = Duration::from_secs(90);
