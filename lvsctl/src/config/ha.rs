//! `[director.ha]`: the failover settings of `director run`, read from the
//! same file as the rest of the director, and their validation.
//!
//! ```toml
//! [director.ha]
//! interface = "enp1s0"          # where VRRP runs and the VIPs go on the MASTER
//! virtual_router_id = 51        # 1..255, the same on both directors
//! priority = 100                # 1..254; the default for hosts not listed below
//! advert_interval = 1           # seconds between VRRP adverts (1..255)
//! preempt = false               # a returning higher priority takes the VIP back
//! peers = ["10.18.68.187"]      # unicast VRRP to these; multicast when absent
//! sync_interface = "enp1s0"     # the connection sync daemons' interface (default: interface)
//! sync_id = 51                  # 0..255 (default: virtual_router_id)
//! # sync_maxlen = 1472, sync_group = "224.0.0.81", sync_port = 8848, sync_ttl = 1
//! [director.ha.hosts."10.18.68.186"]
//! priority = 150                # this host's own priority (the key is one of its addresses)
//! ```
//!
//! One shared file serves both directors: per-host values sit in `hosts`,
//! keyed by an address the host has; the entry whose address is local wins
//! ([`HaSpec::priority_here`]).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::ops::Range;

use serde::Deserialize;
use toml::Spanned;

use super::{ConfigError, IfName, Origin};
use crate::spec::HaSpec;

/// `[director.ha]` as written (validated into [`HaSpec`]; the keys are
/// described in docs/high-availability.md).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HaConfig {
    interface: IfName,
    virtual_router_id: Spanned<u32>,
    priority: Option<Spanned<u32>>,
    #[serde(default)]
    advert_interval: Option<Spanned<u32>>,
    #[serde(default)]
    preempt: bool,
    peers: Option<Vec<IpAddr>>,
    sync_interface: Option<IfName>,
    sync_id: Option<Spanned<u32>>,
    sync_maxlen: Option<Spanned<u32>>,
    sync_group: Option<Spanned<IpAddr>>,
    sync_port: Option<Spanned<u32>>,
    sync_ttl: Option<Spanned<u32>>,
    #[serde(default)]
    hosts: BTreeMap<String, Spanned<HostConfig>>,
}

/// `[director.ha.hosts."ADDR"]`: what differs on the host that has ADDR.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct HostConfig {
    priority: Spanned<u32>,
}

fn range<T: Copy + Into<u64>>(
    origin: &Origin,
    v: &Spanned<T>,
    name: &str,
    lo: u64,
    hi: u64,
    note: &str,
) -> Result<u64, ConfigError> {
    let x: u64 = (*v.get_ref()).into();
    if x < lo || x > hi {
        return Err(origin.error(Some(v.span()), format!("{name} = {x} is out of range {lo}..{hi}{note}")));
    }
    Ok(x)
}

/// Check every value; errors carry the file, line and column.
pub(super) fn validate(h: &Spanned<HaConfig>, origin: &Origin) -> Result<HaSpec, ConfigError> {
    let span: Range<usize> = h.span();
    let h = h.get_ref();
    let vrid = range(origin, &h.virtual_router_id, "virtual_router_id", 1, 255, "")? as u8;
    let prio_note = " (255 is kept for the owner of the address, 0 means \"leaving\")";
    let priority = match &h.priority {
        Some(p) => Some(range(origin, p, "priority", 1, 254, prio_note)? as u8),
        None => None,
    };
    let mut host_priority = Vec::new();
    for (addr, host) in &h.hosts {
        let ip: IpAddr = addr.parse().map_err(|_| {
            origin.error(Some(host.span()), format!("hosts key {addr:?} is not an IP address of a host"))
        })?;
        let p = range(origin, &host.get_ref().priority, "priority", 1, 254, prio_note)? as u8;
        host_priority.push((ip, p));
    }
    if priority.is_none() && host_priority.is_empty() {
        return Err(
            origin.error(Some(span), "no priority: set priority (and/or one per host in [director.ha.hosts.\"ADDR\"])")
        );
    }
    let advert_interval = match &h.advert_interval {
        Some(a) => range(origin, a, "advert_interval", 1, 255, " seconds")? as u8,
        None => 1,
    };
    let peers = h.peers.clone().unwrap_or_default();
    for p in &peers {
        if p.is_unspecified() || p.is_multicast() || p.is_loopback() {
            return Err(origin.error(Some(span.clone()), format!("peer {p} is not a unicast address of a host")));
        }
    }
    let sync_id = match &h.sync_id {
        Some(s) => range(origin, s, "sync_id", 0, 255, "")? as u8,
        None => vrid,
    };
    let sync_maxlen = match &h.sync_maxlen {
        Some(m) => Some(range(origin, m, "sync_maxlen", 1, 65535, " bytes")? as u16),
        None => None,
    };
    let sync_port = match &h.sync_port {
        Some(m) => Some(range(origin, m, "sync_port", 1, 65535, "")? as u16),
        None => None,
    };
    let sync_ttl = match &h.sync_ttl {
        Some(m) => Some(range(origin, m, "sync_ttl", 1, 255, "")? as u8),
        None => None,
    };
    let sync_group = match &h.sync_group {
        Some(g) if !g.get_ref().is_multicast() => {
            return Err(origin.error(Some(g.span()), format!("sync_group {} is not a multicast address", g.get_ref())))
        }
        Some(g) => Some(*g.get_ref()),
        None => None,
    };
    Ok(HaSpec {
        interface: h.interface.clone(),
        virtual_router_id: vrid,
        priority,
        host_priority,
        advert_interval,
        preempt: h.preempt,
        peers,
        sync_interface: h.sync_interface.clone().unwrap_or_else(|| h.interface.clone()),
        sync_id,
        sync_maxlen,
        sync_group,
        sync_port,
        sync_ttl,
    })
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    const BASE: &str = "[director]\niface = \"eth0\"\n[[director.service]]\nvip = \"10.19.70.166\"\nport = 15858\nreal = [\"10.18.68.186\", \"10.18.68.187\"]\n";

    fn ha(extra: &str) -> Result<super::HaSpec, String> {
        let text = format!("{BASE}[director.ha]\n{extra}");
        Config::parse(&text, "t.toml")
            .and_then(|c| c.director())
            .map(|d| d.ha.expect("the ha section"))
            .map_err(|e| e.0)
    }

    #[test]
    fn the_two_host_example() {
        let h = ha("interface = \"eth0\"\nvirtual_router_id = 51\npriority = 100\npeers = [\"10.18.68.187\", \"10.18.68.186\"]\n[director.ha.hosts.\"10.18.68.186\"]\npriority = 150\n").unwrap();
        assert_eq!((h.virtual_router_id, h.priority, h.advert_interval, h.preempt), (51, Some(100), 1, false));
        assert_eq!((h.sync_interface.as_str(), h.sync_id), ("eth0", 51), "sync defaults to VRRP's interface and id");
        let p186 = h.priority_here(|a| a == "10.18.68.186".parse::<std::net::IpAddr>().unwrap()).unwrap();
        let p187 = h.priority_here(|a| a == "10.18.68.187".parse::<std::net::IpAddr>().unwrap()).unwrap();
        assert_eq!((p186, p187), (150, 100));
    }

    #[test]
    fn bad_values_name_file_line_and_column() {
        let e = ha("interface = \"eth0\"\nvirtual_router_id = 256\npriority = 100\n").unwrap_err();
        assert!(e.starts_with("t.toml:9:21: virtual_router_id = 256 is out of range 1..255"), "{e}");
        let e = ha("interface = \"eth0\"\nvirtual_router_id = 5\npriority = 255\n").unwrap_err();
        assert!(e.starts_with("t.toml:10:12: priority = 255 is out of range 1..254"), "{e}");
        let e = ha("interface = \"eth0\"\nvirtual_router_id = 5\npriority = 1\npreemt = true\n").unwrap_err();
        assert!(e.starts_with("t.toml:11:1: unknown field `preemt`"), "{e}");
        let e = ha("interface = \"eth0\"\nvirtual_router_id = 5\n").unwrap_err();
        assert!(e.starts_with("t.toml:7:1: no priority"), "{e}");
        let e =
            ha("interface = \"eth0\"\nvirtual_router_id = 5\n[director.ha.hosts.\"h1\"]\npriority = 9\n").unwrap_err();
        assert!(e.starts_with("t.toml:10:") && e.contains("not an IP address"), "{e}");
        let e =
            ha("interface = \"eth0\"\nvirtual_router_id = 5\npriority = 9\nsync_group = \"10.0.0.1\"\n").unwrap_err();
        assert!(e.starts_with("t.toml:11:14: sync_group 10.0.0.1 is not a multicast"), "{e}");
        let e = ha("interface = \"eth0\"\nvirtual_router_id = 5\npriority = 9\nsync_ttl = 0\n").unwrap_err();
        assert!(e.starts_with("t.toml:11:12: sync_ttl = 0"), "{e}");
    }

    #[test]
    fn without_the_section_nothing_changes() {
        let d = Config::parse(BASE, "t.toml").unwrap().director().unwrap();
        assert!(d.ha.is_none());
        assert_eq!(d.vips().len(), 1, "without [director.ha] the director puts the VIP on its interface");
    }

    #[test]
    fn with_the_section_keepalived_owns_the_vip() {
        let text = format!("{BASE}[director.ha]\ninterface = \"eth0\"\nvirtual_router_id = 5\npriority = 9\n");
        let d = Config::parse(&text, "t.toml").unwrap().director().unwrap();
        assert!(d.vips().is_empty(), "keepalived puts the VIP on the MASTER, not director start/run");
        assert_eq!(d.ha_vips(), vec!["10.19.70.166".parse::<std::net::IpAddr>().unwrap()]);
    }
}
