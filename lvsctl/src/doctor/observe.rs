//! What `lvsctl doctor` reads from the host (in the calling thread's network
//! namespace): interfaces and addresses over rtnetlink, sysctls and
//! listening sockets from /proc, and the IPVS table. Reading only: nothing
//! is changed.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use futures::TryStreamExt;
use ipvs::{Protocol, SyncState};
use netlink_packet_route::address::AddressAttribute;
use netlink_packet_route::link::{LinkAttribute, LinkFlags};

use super::rules::{conf_key, Addr, Host, IpvsView, Link, Listener};
use crate::CliError;

/// The per-interface sysctls the rules read (for `all`, `default` and every interface).
const CONF: [&str; 4] = ["arp_ignore", "arp_announce", "rp_filter", "forwarding"];

/// The other sysctls the rules read.
const OTHER: [&str; 9] = [
    "net/ipv6/conf/all/forwarding",
    "net/ipv4/vs/conntrack",
    "net/ipv4/vs/expire_nodest_conn",
    "net/ipv4/vs/expire_quiescent_template",
    "net/ipv4/vs/sloppy_tcp",
    "net/ipv4/vs/backup_only",
    "net/netfilter/nf_conntrack_max",
    "net/netfilter/nf_conntrack_count",
    "net/ipv4/ip_forward",
];

/// The index and hardware address of each interface, by name (for the ARP probe).
pub(crate) type Hardware = BTreeMap<String, (u32, Option<[u8; 6]>)>;

/// Read the host (everything but the ARP probes).
pub(crate) async fn observe() -> Result<(Host, Hardware), CliError> {
    let mut host = Host::default();
    let (conn, handle, _) = rtnetlink::new_connection()
        .map_err(|e| CliError::failure(format!("cannot open a route netlink socket: {e}")))?;
    tokio::spawn(conn);

    let (names, hw) = read_links(&handle, &mut host).await?;
    read_addrs(&handle, &names, &mut host).await?;
    read_sysctls(&mut host);
    read_listeners(&mut host);
    read_ipvs(&mut host).await;
    Ok((host, hw))
}

/// Add the interfaces to `host`; return their names by index (to name the
/// interface of each address) and their hardware (for the ARP probe).
async fn read_links(
    handle: &rtnetlink::Handle,
    host: &mut Host,
) -> Result<(BTreeMap<u32, String>, Hardware), CliError> {
    let mut names = BTreeMap::new();
    let mut hw = Hardware::new();
    let mut links = handle.link().get().execute();
    while let Some(m) = links.try_next().await.map_err(|e| CliError::failure(format!("cannot list interfaces: {e}")))? {
        let mut name = None;
        let mut mtu = 0;
        let mut mac = None;
        for a in &m.attributes {
            match a {
                LinkAttribute::IfName(n) => name = Some(n.clone()),
                LinkAttribute::Mtu(v) => mtu = *v,
                LinkAttribute::Address(a) if a.len() == 6 => mac = <[u8; 6]>::try_from(&a[..]).ok(),
                _ => {}
            }
        }
        let Some(name) = name else { continue };
        names.insert(m.header.index, name.clone());
        hw.insert(name.clone(), (m.header.index, mac));
        host.links.push(Link {
            name,
            up: m.header.flags.contains(LinkFlags::Up),
            mtu,
            noarp: m.header.flags.contains(LinkFlags::Noarp),
        });
    }
    Ok((names, hw))
}

/// Add the addresses of every interface (named through `names`) to `host`.
async fn read_addrs(
    handle: &rtnetlink::Handle,
    names: &BTreeMap<u32, String>,
    host: &mut Host,
) -> Result<(), CliError> {
    let mut addrs = handle.address().get().execute();
    while let Some(m) = addrs.try_next().await.map_err(|e| CliError::failure(format!("cannot list addresses: {e}")))? {
        // IFA_LOCAL is the interface's own address on point-to-point links; else IFA_ADDRESS.
        let local = m.attributes.iter().find_map(|a| match a {
            AddressAttribute::Local(ip) => Some(*ip),
            _ => None,
        });
        let ip = local.or_else(|| {
            m.attributes.iter().find_map(|a| match a {
                AddressAttribute::Address(ip) => Some(*ip),
                _ => None,
            })
        });
        if let (Some(ip), Some(iface)) = (ip, names.get(&m.header.index)) {
            host.addrs.push(Addr { iface: iface.clone(), ip, prefix: m.header.prefix_len });
        }
    }
    Ok(())
}

/// Read the sysctls the rules look at (those of `all`, `default` and every
/// interface of `host`); a missing one is left out.
fn read_sysctls(host: &mut Host) {
    let mut keys: Vec<String> = OTHER.iter().map(|s| s.to_string()).collect();
    for i in ["all", "default"].into_iter().map(str::to_owned).chain(host.links.iter().map(|l| l.name.clone())) {
        for n in CONF {
            keys.push(conf_key(&i, n));
        }
    }
    for k in keys {
        if let Ok(v) = std::fs::read_to_string(format!("/proc/sys/{k}")) {
            host.sysctls.insert(k, v.trim().to_owned());
        }
    }
    // net.ipv4.ip_forward is the same switch as conf/all/forwarding.
    if let Some(v) = host.sysctls.get("net/ipv4/ip_forward").cloned() {
        host.sysctls.entry(conf_key("all", "forwarding")).or_insert(v);
    }
}

/// Read the listening TCP and UDP sockets, IPv4 and IPv6.
fn read_listeners(host: &mut Host) {
    for (file, proto) in
        [("tcp", Protocol::Tcp), ("tcp6", Protocol::Tcp), ("udp", Protocol::Udp), ("udp6", Protocol::Udp)]
    {
        // thread-self: the namespace this thread entered (--netns), not the process's first.
        if let Ok(text) = std::fs::read_to_string(format!("/proc/thread-self/net/{file}")) {
            host.listeners.extend(parse_sockets(&text, proto));
        }
    }
}

/// Read the IPVS table and sync daemons, or why they cannot be read.
async fn read_ipvs(host: &mut Host) {
    let table = match ipvs::Ipvs::connect().await {
        Ok(h) => h.dump().await.map(|t| (h, t)),
        Err(e) => Err(e),
    };
    match table {
        Ok((h, table)) => {
            let daemons = h.sync_daemons().await.unwrap_or_default();
            host.ipvs = Some(IpvsView {
                table,
                backup_daemon: daemons.iter().any(|d| d.state == SyncState::Backup),
                any_daemon: !daemons.is_empty(),
            });
        }
        Err(e) => host.ipvs_error = Some(e.to_string()),
    }
}

/// The listening sockets of `/proc/net/{tcp,tcp6,udp,udp6}`: TCP sockets in
/// LISTEN (state 0A), UDP sockets not connected to a peer (state 07).
pub(crate) fn parse_sockets(text: &str, proto: Protocol) -> Vec<Listener> {
    let want = if proto == Protocol::Tcp { "0A" } else { "07" };
    let mut out = Vec::new();
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 4 || f[3] != want {
            continue;
        }
        let Some((a, p)) = f[1].split_once(':') else { continue };
        let Ok(port) = u16::from_str_radix(p, 16) else { continue };
        // The kernel prints each 32-bit word of the address as a native-endian number.
        let word = |s: &str| u32::from_str_radix(s, 16).ok().map(u32::to_ne_bytes);
        let ip = match a.len() {
            8 => word(a).map(|b| IpAddr::V4(Ipv4Addr::from(b))),
            32 => {
                let mut bytes = [0u8; 16];
                let mut ok = true;
                for i in 0..4 {
                    match word(&a[i * 8..i * 8 + 8]) {
                        Some(b) => bytes[i * 4..i * 4 + 4].copy_from_slice(&b),
                        None => ok = false,
                    }
                }
                ok.then(|| IpAddr::V6(Ipv6Addr::from(bytes)))
            }
            _ => None,
        };
        if let Some(ip) = ip {
            out.push(Listener { proto, ip, port });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_net_sockets_are_parsed() {
        // Little-endian words, as on x86.
        if cfg!(target_endian = "big") {
            return;
        }
        let tcp = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
            0: 00000000:3DEA 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0\n\
            1: A6461301:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2 1 0 100 0 0 10 0\n\
            2: 0100007F:0016 0200007F:9C40 01 00000000:00000000 00:00000000 00000000     0        0 3 1 0 100 0 0 10 0\n";
        let l = parse_sockets(tcp, Protocol::Tcp);
        assert_eq!(
            l,
            vec![
                Listener { proto: Protocol::Tcp, ip: "0.0.0.0".parse().unwrap(), port: 15850 },
                Listener { proto: Protocol::Tcp, ip: "1.19.70.166".parse().unwrap(), port: 80 },
            ]
        );
        let tcp6 = "  sl  local_address                         remote_address                        st\n\
            0: 00000000000000000000000000000000:0050 00000000000000000000000000000000:0000 0A 0\n\
            1: B80D0120000000000000000001000000:0035 00000000000000000000000000000000:0000 07 0\n";
        assert_eq!(
            parse_sockets(tcp6, Protocol::Tcp),
            vec![Listener { proto: Protocol::Tcp, ip: "::".parse().unwrap(), port: 80 }]
        );
        assert_eq!(
            parse_sockets(tcp6, Protocol::Udp),
            vec![Listener { proto: Protocol::Udp, ip: "2001:db8::1".parse().unwrap(), port: 53 }]
        );
    }
}
