//! `[director.bgp]`, validated: how `director run` announces its VIPs over
//! BGP for ECMP scale-out (see docs/scale-out.md).

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use serde::Serialize;

/// One BGP neighbour (a router).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Neighbor {
    /// Its address (IPv4).
    pub address: IpAddr,
    /// Its AS number.
    pub asn: u32,
    /// eBGP multihop: the TTL of the session's packets (BIRD `multihop`),
    /// for a router that is not on a directly connected network.
    pub multihop: Option<u8>,
    /// The session's source address (BIRD `local`); BIRD needs one for a
    /// multihop session with BFD.
    pub local_address: Option<IpAddr>,
}

/// What differs on one host (`[director.bgp.hosts."ADDR"]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BgpHost {
    /// The address the host has (the table's key).
    pub addr: IpAddr,
    /// Its AS number, if it differs from the default.
    pub asn: Option<u32>,
    /// Its router id; the key itself when absent and the key is IPv4.
    pub router_id: Option<Ipv4Addr>,
    /// Its neighbours, replacing the default list.
    pub neighbors: Option<Vec<Neighbor>>,
}

/// `[director.bgp]`, validated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BgpSpec {
    /// The local AS number (hosts without their own).
    pub asn: Option<u32>,
    /// The router id (hosts without their own).
    pub router_id: Option<Ipv4Addr>,
    /// The neighbours (hosts without their own list).
    pub neighbors: Vec<Neighbor>,
    /// BGP hold time in seconds (3..65535); keepalives every third of it.
    pub hold_time: u16,
    /// BFD on every session (BIRD `bfd on` and a `protocol bfd`).
    pub bfd: bool,
    /// BFD's transmit and receive interval (BIRD's default: 100 ms).
    pub bfd_interval: Option<Duration>,
    /// Missed BFD packets before the session is down (BIRD's default: 5).
    pub bfd_multiplier: Option<u8>,
    /// How long the VIPs stay withdrawn with the IPVS table still in place
    /// before `director run` exits (the routers move the flows first).
    pub drain_delay: Duration,
    /// The VIPs to announce (every service VIP unless listed).
    pub vips: Vec<IpAddr>,
    /// Per-host values.
    pub hosts: Vec<BgpHost>,
}

/// The values that apply on this host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BgpHere {
    /// The local AS number.
    pub asn: u32,
    /// The router id.
    pub router_id: Ipv4Addr,
    /// The neighbours.
    pub neighbors: Vec<Neighbor>,
}

impl BgpSpec {
    /// The values for this host: the `hosts` entry whose address `is_local`
    /// says this host has (at most one), over the defaults.
    pub fn here(&self, is_local: impl Fn(IpAddr) -> bool) -> Result<BgpHere, String> {
        let mine: Vec<&BgpHost> = self.hosts.iter().filter(|h| is_local(h.addr)).collect();
        let host = match mine.as_slice() {
            [] => None,
            [h] => Some(*h),
            many => {
                let listed: Vec<String> = many.iter().map(|h| h.addr.to_string()).collect();
                return Err(format!(
                    "[director.bgp]: this host has several addresses of hosts ({}): keep one",
                    listed.join(", ")
                ));
            }
        };
        let none = |what: &str| {
            format!("[director.bgp]: no {what} for this host: set {what} (or one in [director.bgp.hosts.\"ADDR\"] for an address of this host)")
        };
        let asn = host.and_then(|h| h.asn).or(self.asn).ok_or_else(|| none("asn"))?;
        let key_id = host.and_then(|h| match h.addr {
            IpAddr::V4(a) => Some(a),
            IpAddr::V6(_) => None,
        });
        let router_id =
            host.and_then(|h| h.router_id).or(key_id).or(self.router_id).ok_or_else(|| none("router_id"))?;
        let neighbors = host.and_then(|h| h.neighbors.clone()).unwrap_or_else(|| self.neighbors.clone());
        if neighbors.is_empty() {
            return Err(none("neighbor"));
        }
        Ok(BgpHere { asn, router_id, neighbors })
    }
}
