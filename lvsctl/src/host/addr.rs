//! Interface addresses over rtnetlink (`ip addr` without the `ip` binary).

use std::collections::HashMap;
use std::net::IpAddr;

use futures::{StreamExt, TryStreamExt};
use netlink_packet_route::address::{AddressAttribute, AddressFlags, AddressMessage};
use netlink_packet_route::link::LinkAttribute;

use crate::host::Change;
use crate::state::AddressRecord;
use crate::Error;

/// Address changes in flight at once on one connection.
const IN_FLIGHT: usize = 64;

/// A route-netlink connection in the calling thread's network namespace.
pub struct Rtnl {
    handle: rtnetlink::Handle,
}

fn rt_err(what: &str, e: rtnetlink::Error) -> Error {
    if let rtnetlink::Error::NetlinkError(m) = &e {
        let errno = -m.raw_code();
        let io = std::io::Error::from_raw_os_error(errno);
        return Error::Netlink { what: what.to_owned(), errno: Some(errno), reason: io.to_string() };
    }
    Error::Netlink { what: what.to_owned(), errno: None, reason: e.to_string() }
}

fn errno_of(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => Some(-m.raw_code()),
        _ => None,
    }
}

/// A VIP and whether it is on its interface, for `status`.
#[derive(Debug, serde::Serialize)]
pub struct AddrStatus {
    /// The address.
    pub addr: IpAddr,
    /// Its prefix length.
    pub prefix_len: u8,
    /// The interface.
    pub iface: String,
    /// Whether it is there.
    pub present: bool,
}

/// The full prefix of a single address: /32 or /128.
pub fn host_prefix(ip: IpAddr) -> u8 {
    if ip.is_ipv4() {
        32
    } else {
        128
    }
}

fn message_addr(m: &AddressMessage) -> Option<IpAddr> {
    // IFA_LOCAL is the interface's own address on point-to-point links; else IFA_ADDRESS.
    let local = m.attributes.iter().find_map(|a| match a {
        AddressAttribute::Local(ip) => Some(*ip),
        _ => None,
    });
    local.or_else(|| {
        m.attributes.iter().find_map(|a| match a {
            AddressAttribute::Address(ip) => Some(*ip),
            _ => None,
        })
    })
}

impl Rtnl {
    /// Open the connection (must be called inside a tokio runtime).
    pub fn connect() -> Result<Self, Error> {
        let (conn, handle, _) = rtnetlink::new_connection()
            .map_err(|e| Error::Io { what: "cannot open a route netlink socket".into(), source: e })?;
        tokio::spawn(conn);
        Ok(Self { handle })
    }

    /// The index of interface `name`; `None` when there is no such interface.
    pub async fn link_index(&self, name: &str) -> Result<Option<u32>, Error> {
        let mut s = self.handle.link().get().match_name(name.to_owned()).execute();
        match s.try_next().await {
            Ok(Some(link)) => {
                // The kernel answers for the name asked; check anyway.
                let same = link.attributes.iter().any(|a| matches!(a, LinkAttribute::IfName(n) if n == name));
                Ok(same.then_some(link.header.index))
            }
            Ok(None) => Ok(None),
            Err(e) if errno_of(&e) == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(rt_err(&format!("cannot look up interface {name}"), e)),
        }
    }

    /// Every address of interface `index`, with its prefix length.
    pub async fn addresses(&self, index: u32) -> Result<Vec<(IpAddr, u8)>, Error> {
        let mut s = self.handle.address().get().set_link_index_filter(index).execute();
        let mut out = Vec::new();
        while let Some(m) = s.try_next().await.map_err(|e| rt_err("cannot list addresses", e))? {
            if m.header.index != index {
                continue;
            }
            if let Some(ip) = message_addr(&m) {
                out.push((ip, m.header.prefix_len));
            }
        }
        Ok(out)
    }

    /// Whether `ip` is on interface `index` (with any prefix length).
    pub async fn has_address(&self, index: u32, ip: IpAddr) -> Result<bool, Error> {
        Ok(self.addresses(index).await?.iter().any(|(a, _)| *a == ip))
    }

    /// `ip addr add IP/PREFIX dev IF` (IPv6 without duplicate address detection).
    pub async fn add_address(&self, index: u32, iface: &str, ip: IpAddr, prefix: u8) -> Result<(), Error> {
        let mut req = self.handle.address().add(index, ip, prefix);
        if ip.is_ipv6() {
            req.message_mut().attributes.push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
        req.execute().await.map_err(|e| rt_err(&format!("cannot add {ip}/{prefix} to {iface}"), e))
    }

    /// Remove the addresses `start` created (records with `created`), adding
    /// each removal to `changes`. Records of addresses that were there before
    /// are dropped (they stay on the host); those that could not be removed
    /// are returned, with the first error, so the state can keep them.
    pub async fn remove_created(
        &self,
        records: Vec<AddressRecord>,
        changes: &mut Vec<Change>,
    ) -> (Vec<AddressRecord>, Option<Error>) {
        let mut left = Vec::new();
        let mut first_err = None;
        let mut todo = Vec::new();
        // One link lookup per interface, however many addresses it holds.
        let mut links: HashMap<String, Option<u32>> = HashMap::new();
        for r in records.into_iter().filter(|r| r.created) {
            let idx = match links.get(&r.iface) {
                Some(i) => *i,
                None => match self.link_index(&r.iface).await {
                    Ok(i) => *links.entry(r.iface.clone()).or_insert(i),
                    Err(e) => {
                        first_err.get_or_insert(e);
                        left.push(r);
                        continue;
                    }
                },
            };
            // An interface that is gone took its addresses with it.
            if let Some(idx) = idx {
                todo.push((idx, r));
            }
        }
        let results = self.del_addresses(&todo).await;
        for ((_, r), res) in todo.into_iter().zip(results) {
            match res {
                Ok(()) => {
                    changes.push(Change::AddressRemoved { addr: r.addr, prefix_len: r.prefix_len, iface: r.iface })
                }
                Err(e) => {
                    first_err.get_or_insert(e);
                    left.push(r);
                }
            }
        }
        (left, first_err)
    }

    /// `ip addr add` of each `(interface index, record)`, many in flight at
    /// once (a director with a thousand VIPs waits for a few round trips,
    /// not a thousand); each one's result, in order.
    pub async fn add_addresses(&self, adds: &[(u32, AddressRecord)]) -> Vec<Result<(), Error>> {
        let each = adds.iter().map(|(idx, r)| self.add_address(*idx, &r.iface, r.addr, r.prefix_len));
        futures::stream::iter(each).buffered(IN_FLIGHT).collect().await
    }

    /// `ip addr del` of each `(interface index, record)`, many in flight at
    /// once; each one's result, in order (missing already: Ok).
    pub async fn del_addresses(&self, dels: &[(u32, AddressRecord)]) -> Vec<Result<(), Error>> {
        let each = dels.iter().map(|(idx, r)| self.del_address(*idx, &r.iface, r.addr, r.prefix_len));
        futures::stream::iter(each).buffered(IN_FLIGHT).collect().await
    }

    /// `ip addr del IP/PREFIX dev IF`. Missing already: Ok. The request names
    /// the address as `add` does (no dump to find it first: the kernel
    /// deletes the one with that address and prefix on that interface).
    pub async fn del_address(&self, index: u32, iface: &str, ip: IpAddr, prefix: u8) -> Result<(), Error> {
        let m = self.handle.address().add(index, ip, prefix).message_mut().clone();
        match self.handle.address().del(m).execute().await {
            Ok(()) => Ok(()),
            Err(e) if errno_of(&e) == Some(libc::EADDRNOTAVAIL) => Ok(()),
            Err(e) => Err(rt_err(&format!("cannot remove {ip}/{prefix} from {iface}"), e)),
        }
    }
}
