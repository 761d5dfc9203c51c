//! `[director.bgp]`: ECMP scale-out settings of `director run` (lvsctl runs
//! BIRD 2 and announces the VIPs), and their validation.
//!
//! ```toml
//! [director.bgp]
//! asn = 65001                   # this director's AS number
//! router_id = "10.0.0.2"        # default: the address of this host's hosts entry
//! hold_time = 9                 # seconds (3..65535); keepalives every third
//! bfd = false                   # BFD on every session
//! bfd_interval = "300ms"        # with bfd: BFD's tx/rx interval (10ms..60s; BIRD: 100ms)
//! bfd_multiplier = 3            # with bfd: packets missed before down (1..255; BIRD: 5)
//! drain_delay = "3s"            # withdrawn, table still in place, before exit
//! vips = ["10.19.70.166"]       # default: every service VIP of the file
//! [[director.bgp.neighbor]]
//! address = "10.0.0.1"
//! asn = 65000
//! multihop = 2                  # eBGP multihop: TTL (1..255), router not on-link
//! local_address = "10.0.0.2"    # the session's source address (multihop with bfd needs it)
//! [director.bgp.hosts."10.0.0.3"]
//! router_id = "10.0.0.3"        # also asn, and [[director.bgp.hosts."ADDR".neighbor]]
//! ```

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::{ConfigError, Origin};
use crate::check::Secs;
use crate::spec::bgp::{BgpHost, BgpSpec, Neighbor};

/// The hold time unless set (keepalives every 3 s).
const DEFAULT_HOLD: u16 = 9;
/// The drain delay unless set.
const DEFAULT_DRAIN: Duration = Duration::from_secs(3);

/// `[director.bgp]` as written (validated into [`BgpSpec`]).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BgpConfig {
    asn: Option<Spanned<u64>>,
    router_id: Option<Spanned<Ipv4Addr>>,
    hold_time: Option<Spanned<u64>>,
    #[serde(default)]
    bfd: bool,
    bfd_interval: Option<Spanned<Secs>>,
    bfd_multiplier: Option<Spanned<u64>>,
    drain_delay: Option<Secs>,
    vips: Option<Spanned<Vec<IpAddr>>>,
    #[serde(default, rename = "neighbor")]
    neighbors: Vec<Spanned<NeighborConfig>>,
    #[serde(default)]
    hosts: BTreeMap<String, Spanned<HostConfig>>,
}

/// `[[director.bgp.neighbor]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct NeighborConfig {
    address: Spanned<IpAddr>,
    asn: Spanned<u64>,
    multihop: Option<Spanned<u64>>,
    local_address: Option<Spanned<IpAddr>>,
}

/// `[director.bgp.hosts."ADDR"]`: what differs on the host that has ADDR.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct HostConfig {
    asn: Option<Spanned<u64>>,
    router_id: Option<Spanned<Ipv4Addr>>,
    #[serde(rename = "neighbor")]
    neighbors: Option<Vec<Spanned<NeighborConfig>>>,
}

/// An AS number: 1..4294967294 (0 and 4294967295 are reserved).
fn asn(origin: &Origin, v: &Spanned<u64>, name: &str) -> Result<u32, ConfigError> {
    let x = *v.get_ref();
    if x == 0 || x >= u64::from(u32::MAX) {
        return Err(origin.error(Some(v.span()), format!("{name} = {x} is out of range 1..4294967294")));
    }
    Ok(x as u32)
}

/// A whole number in `lo..=hi`, or an error at its place.
fn in_range(origin: &Origin, v: &Spanned<u64>, name: &str, lo: u64, hi: u64) -> Result<u64, ConfigError> {
    let x = *v.get_ref();
    if !(lo..=hi).contains(&x) {
        return Err(origin.error(Some(v.span()), format!("{name} = {x} is out of range {lo}..{hi}")));
    }
    Ok(x)
}

/// `bfd_interval` and `bfd_multiplier`: only with `bfd = true`, in range.
fn bfd_timers(origin: &Origin, c: &BgpConfig) -> Result<(Option<Duration>, Option<u8>), ConfigError> {
    let interval = match &c.bfd_interval {
        Some(i) if !c.bfd => return Err(origin.error(Some(i.span()), "bfd_interval needs bfd = true")),
        Some(i) if !(Duration::from_millis(10)..=Duration::from_secs(60)).contains(&i.get_ref().0) => {
            return Err(
                origin.error(Some(i.span()), format!("bfd_interval = \"{}\" is out of range 10ms..60s", i.get_ref()))
            )
        }
        Some(i) => Some(i.get_ref().0),
        None => None,
    };
    let multiplier = match &c.bfd_multiplier {
        Some(m) if !c.bfd => return Err(origin.error(Some(m.span()), "bfd_multiplier needs bfd = true")),
        Some(m) => Some(in_range(origin, m, "bfd_multiplier", 1, 255)? as u8),
        None => None,
    };
    Ok((interval, multiplier))
}

fn neighbors(origin: &Origin, list: &[Spanned<NeighborConfig>], bfd: bool) -> Result<Vec<Neighbor>, ConfigError> {
    let mut out: Vec<Neighbor> = Vec::new();
    for n in list {
        let a = n.get_ref().address.get_ref();
        let at = Some(n.get_ref().address.span());
        if !a.is_ipv4() {
            return Err(origin.error(at, format!("neighbor address {a}: only IPv4 neighbours are supported")));
        }
        if a.is_unspecified() || a.is_multicast() || a.is_loopback() || super::is_broadcast(*a) {
            return Err(origin.error(at, format!("neighbor address {a} is not a unicast address of a router")));
        }
        if out.iter().any(|o| o.address == *a) {
            return Err(origin.error(at, format!("neighbor {a} is listed twice")));
        }
        let multihop = n.get_ref().multihop.as_ref().map(|m| in_range(origin, m, "multihop", 1, 255)).transpose()?;
        let local_address = n.get_ref().local_address.as_ref().map(|l| *l.get_ref());
        if local_address.is_some_and(|l| !l.is_ipv4()) {
            return Err(origin.error(at, format!("neighbor {a}: local_address must be IPv4")));
        }
        if bfd && multihop.is_some() && local_address.is_none() {
            return Err(origin.error(
                at,
                format!(
                    "neighbor {a}: multihop with bfd needs local_address (BIRD needs the session's source address)"
                ),
            ));
        }
        out.push(Neighbor {
            address: *a,
            asn: asn(origin, &n.get_ref().asn, "neighbor asn")?,
            multihop: multihop.map(|m| m as u8),
            local_address,
        });
    }
    Ok(out)
}

/// The VIPs to announce: the listed ones (each a service VIP of the file)
/// or every service VIP; IPv4 only.
fn vips(
    origin: &Origin,
    listed: Option<&Spanned<Vec<IpAddr>>>,
    all: &[IpAddr],
    span: &std::ops::Range<usize>,
) -> Result<Vec<IpAddr>, ConfigError> {
    let (list, at) = match listed {
        Some(v) => (v.get_ref().clone(), v.span()),
        None => (all.to_vec(), span.clone()),
    };
    if list.is_empty() {
        return Err(origin.error(Some(at), "vips is empty: nothing to announce"));
    }
    for v in &list {
        if !all.contains(v) {
            return Err(origin.error(Some(at), format!("vips: {v} is not the VIP of any [[director.service]]")));
        }
        if !v.is_ipv4() {
            return Err(origin.error(Some(at), format!("vips: {v}: only IPv4 VIPs can be announced over BGP")));
        }
    }
    Ok(list)
}

fn host(origin: &Origin, addr: &str, h: &Spanned<HostConfig>, bfd: bool) -> Result<BgpHost, ConfigError> {
    let ip: IpAddr = addr
        .parse()
        .map_err(|_| origin.error(Some(h.span()), format!("hosts key {addr:?} is not an IP address of a host")))?;
    let c = h.get_ref();
    Ok(BgpHost {
        addr: ip,
        asn: c.asn.as_ref().map(|a| asn(origin, a, "asn")).transpose()?,
        router_id: c.router_id.as_ref().map(|r| *r.get_ref()),
        neighbors: c.neighbors.as_ref().map(|n| neighbors(origin, n, bfd)).transpose()?,
    })
}

/// Check every value; errors carry the file, line and column. `all_vips`
/// are the VIPs of the file's services.
pub(super) fn validate(b: &Spanned<BgpConfig>, origin: &Origin, all_vips: &[IpAddr]) -> Result<BgpSpec, ConfigError> {
    let span = b.span();
    let c = b.get_ref();
    let hold_time = match &c.hold_time {
        Some(h) if !(3..=65535).contains(h.get_ref()) => {
            let msg = format!("hold_time = {} is out of range 3..65535 seconds", h.get_ref());
            return Err(origin.error(Some(h.span()), msg));
        }
        Some(h) => *h.get_ref() as u16,
        None => DEFAULT_HOLD,
    };
    let hosts = c.hosts.iter().map(|(a, h)| host(origin, a, h, c.bfd)).collect::<Result<Vec<_>, _>>()?;
    let (bfd_interval, bfd_multiplier) = bfd_timers(origin, c)?;
    let spec = BgpSpec {
        asn: c.asn.as_ref().map(|a| asn(origin, a, "asn")).transpose()?,
        router_id: c.router_id.as_ref().map(|r| *r.get_ref()),
        neighbors: neighbors(origin, &c.neighbors, c.bfd)?,
        hold_time,
        bfd: c.bfd,
        bfd_interval,
        bfd_multiplier,
        drain_delay: c.drain_delay.map_or(DEFAULT_DRAIN, |s| s.0),
        vips: vips(origin, c.vips.as_ref(), all_vips, &span)?,
        hosts,
    };
    // Whatever host this file lands on must get an AS number and neighbours.
    if spec.asn.is_none() && (spec.hosts.is_empty() || spec.hosts.iter().any(|h| h.asn.is_none())) {
        return Err(origin.error(Some(span), "no asn: set asn (or one in every [director.bgp.hosts.\"ADDR\"])"));
    }
    if spec.neighbors.is_empty() && (spec.hosts.is_empty() || spec.hosts.iter().any(|h| h.neighbors.is_none())) {
        return Err(origin.error(
            Some(span),
            "no neighbor: add [[director.bgp.neighbor]] (address, asn), or one list per [director.bgp.hosts.\"ADDR\"]",
        ));
    }
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use crate::config::Config;
    use crate::spec::bgp::BgpSpec;

    const BASE: &str = "[director]\niface = \"eth0\"\n[[director.service]]\nvip = \"10.19.70.166\"\nport = 80\nscheduler = \"mh\"\nreal = [\"10.18.68.186\", \"10.18.68.187\"]\n";

    fn bgp(extra: &str) -> Result<BgpSpec, String> {
        let text = format!("{BASE}[director.bgp]\n{extra}");
        Config::parse(&text, "t.toml")
            .and_then(|c| c.director())
            .map(|d| d.bgp.expect("the bgp section"))
            .map_err(|e| e.0)
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn defaults_and_per_host_values() {
        let b = bgp("asn = 65001\n[[director.bgp.neighbor]]\naddress = \"10.0.0.1\"\nasn = 65000\n[director.bgp.hosts.\"10.0.0.2\"]\n[director.bgp.hosts.\"10.0.0.3\"]\nasn = 65003\nrouter_id = \"192.0.2.3\"\n").unwrap();
        assert_eq!((b.hold_time, b.bfd, b.drain_delay.as_secs()), (9, false, 3));
        assert_eq!(b.vips, vec![ip("10.19.70.166")], "every service VIP by default");
        let h2 = b.here(|a| a == ip("10.0.0.2")).unwrap();
        assert_eq!(
            (h2.asn, h2.router_id.to_string()),
            (65001, "10.0.0.2".to_owned()),
            "the hosts key is the router id"
        );
        assert_eq!(h2.neighbors[0].address, ip("10.0.0.1"));
        let h3 = b.here(|a| a == ip("10.0.0.3")).unwrap();
        assert_eq!((h3.asn, h3.router_id.to_string()), (65003, "192.0.2.3".to_owned()));
        let e = b.here(|_| false).unwrap_err();
        assert!(e.contains("no router_id for this host"), "{e}");
        let e = b.here(|_| true).unwrap_err();
        assert!(e.contains("several addresses of hosts (10.0.0.2, 10.0.0.3)"), "{e}");
    }

    #[test]
    fn bad_values_name_file_line_and_column() {
        let n = "[[director.bgp.neighbor]]\naddress = \"10.0.0.1\"\nasn = 65000\n";
        let cases = [
            (format!("asn = 0\n{n}"), "t.toml:9:7: asn = 0 is out of range 1..4294967294"),
            (format!("asn = 1\nhold_time = 2\n{n}"), "t.toml:10:13: hold_time = 2 is out of range 3..65535"),
            (format!("asn = 1\nholdtime = 9\n{n}"), "t.toml:10:1: unknown field `holdtime`"),
            ("asn = 1\n".to_owned(), "t.toml:8:1: no neighbor"),
            (n.to_owned(), "t.toml:8:1: no asn"),
            (format!("asn = 1\nvips = [\"10.9.9.9\"]\n{n}"), "t.toml:10:8: vips: 10.9.9.9 is not the VIP of any"),
            (format!("asn = 1\nrouter_id = \"x\"\n{n}"), "t.toml:10:13: invalid IPv4 address syntax"),
            (
                "asn = 1\n[[director.bgp.neighbor]]\naddress = \"224.0.0.5\"\nasn = 2\n".to_owned(),
                "t.toml:11:11: neighbor address 224.0.0.5 is not a unicast",
            ),
            (
                "asn = 1\n[[director.bgp.neighbor]]\naddress = \"fe80::1\"\nasn = 2\n".to_owned(),
                "t.toml:11:11: neighbor address fe80::1: only IPv4",
            ),
            (
                format!("asn = 1\n{n}[director.bgp.hosts.\"h1\"]\n"),
                "t.toml:13:1: hosts key \"h1\" is not an IP address",
            ),
            (format!("asn = 1\ndrain_delay = \"3 weeks\"\n{n}"), "t.toml:10:15: invalid duration unit"),
        ];
        for (extra, want) in cases {
            let e = bgp(&extra).unwrap_err();
            assert!(e.starts_with(want), "{extra:?}: got {e:?}, want {want:?}");
        }
    }

    /// The example of docs/scale-out.md parses, and gives each director its router id.
    #[test]
    fn docs_example_loads() {
        let doc = include_str!("../../../docs/scale-out.md");
        let start = doc.find("```toml\n").expect("docs/scale-out.md has a TOML example") + "```toml\n".len();
        let text = &doc[start..start + doc[start..].find("```").unwrap()];
        let d = Config::parse(text, "docs/scale-out.md").unwrap().director().unwrap();
        let b = d.bgp.unwrap();
        assert_eq!((b.asn, b.hold_time, b.bfd, b.drain_delay.as_secs()), (Some(65001), 9, false, 3));
        assert_eq!(b.here(|a| a == ip("10.0.0.3")).unwrap().router_id.to_string(), "10.0.0.3");
    }

    #[test]
    fn bgp_and_ha_exclude_each_other() {
        let text = format!("{BASE}[director.ha]\ninterface = \"eth0\"\nvirtual_router_id = 5\npriority = 9\n[director.bgp]\nasn = 1\n[[director.bgp.neighbor]]\naddress = \"10.0.0.1\"\nasn = 2\n");
        let e = Config::parse(&text, "t.toml").unwrap().director().unwrap_err().0;
        assert!(e.contains("[director.bgp] and [director.ha] exclude each other"), "{e}");
    }

    #[test]
    fn announced_vips_go_on_lo() {
        let text =
            format!("{BASE}[director.bgp]\nasn = 1\n[[director.bgp.neighbor]]\naddress = \"10.0.0.1\"\nasn = 2\n");
        let d = Config::parse(&text, "t.toml").unwrap().director().unwrap();
        assert_eq!(d.vips(), vec![(ip("10.19.70.166"), "lo".parse().unwrap())], "routed, not ARP-announced on eth0");
    }

    #[test]
    fn bfd_timers_need_bfd_and_a_range_and_multihop_a_ttl() {
        let n = "[[director.bgp.neighbor]]\naddress = \"10.0.0.1\"\nasn = 65000\n";
        let b =
            bgp(&format!("asn = 65001\nbfd = true\nbfd_interval = \"250ms\"\nbfd_multiplier = 4\n{n}multihop = 3\nlocal_address = \"10.0.0.2\"\n"))
                .unwrap();
        assert_eq!((b.bfd_interval.map(|d| d.as_millis()), b.bfd_multiplier), (Some(250), Some(4)));
        assert_eq!(b.neighbors[0].multihop, Some(3));
        for (extra, want) in [
            ("bfd_interval = \"300ms\"\n", "bfd_interval needs bfd = true"),
            ("bfd_multiplier = 3\n", "bfd_multiplier needs bfd = true"),
            ("bfd = true\nbfd_interval = \"5ms\"\n", "out of range 10ms..60s"),
            ("bfd = true\nbfd_multiplier = 0\n", "bfd_multiplier = 0 is out of range 1..255"),
        ] {
            let e = bgp(&format!("asn = 65001\n{extra}{n}")).unwrap_err();
            assert!(e.contains(want) && e.starts_with("t.toml:"), "{extra:?}: {e}");
        }
        let e = bgp(&format!("asn = 65001\n{n}multihop = 256\n")).unwrap_err();
        assert!(e.contains("multihop = 256 is out of range 1..255"), "{e}");
        let e = bgp(&format!("asn = 65001\nbfd = true\n{n}multihop = 2\n")).unwrap_err();
        assert!(e.contains("multihop with bfd needs local_address"), "{e}");
        let b = bgp(&format!("asn = 65001\nbfd = true\n{n}multihop = 2\nlocal_address = \"10.0.0.2\"\n")).unwrap();
        assert_eq!(b.neighbors[0].local_address, Some(ip("10.0.0.2")));
    }
}
