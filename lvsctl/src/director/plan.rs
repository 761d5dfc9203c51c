//! The director's decisions, without I/O: given what the host has
//! ([`Observed`]) and what it should have, every change to make, the record
//! written ahead of them, and what to undo when the IPVS part fails.

use std::collections::HashMap;
use std::net::IpAddr;

use ipvs::reconcile::{self, DesiredService, Scope};
use ipvs::{Op, ServiceKey, Table};

use crate::host::addr::host_prefix;
use crate::host::sysctl;
use crate::spec::DirectorSpec;
use crate::state::{self, AddressRecord, DirectorState};
use crate::Error;

/// What the director's host has now: the input of [`plan`].
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// The kernel's IPVS table. A service lvsctl owns or wants that a dump
    /// left out but a lookup of its own key found is included.
    pub table: Table,
    /// Owned services a lookup of their own key confirmed absent: only these
    /// lose their ownership for being absent (a dump may skip entries).
    pub confirmed_gone: Vec<ServiceKey>,
    /// The index of every interface a VIP goes on; an interface that does
    /// not exist is missing here.
    pub links: HashMap<String, u32>,
    /// The VIPs already on their interface.
    pub vips_present: Vec<(IpAddr, String)>,
    /// The sysctl changes the services need, worked out from their current
    /// values and the recorded ones.
    pub sysctls: sysctl::Plan,
    /// What an earlier run recorded.
    pub prev: Option<DirectorState>,
}

impl Observed {
    fn present(&self, k: &ServiceKey) -> bool {
        self.table.iter().any(|(s, _)| s.service.key == *k)
    }

    fn prev_owned(&self) -> &[ServiceKey] {
        self.prev.as_ref().map_or(&[], |p| &p.owned)
    }
}

/// Every change a reconcile makes, decided before the first one.
#[derive(Debug, Default)]
pub struct Plan {
    /// IPVS operations, sent as one batch.
    pub ipvs: Vec<Op>,
    /// VIPs to add (with the index of their interface).
    pub address_adds: Vec<(u32, AddressRecord)>,
    /// VIPs an earlier run added that are not wanted any more.
    pub address_dels: Vec<AddressRecord>,
    /// VIPs that are there already (recorded, not changed).
    pub address_kept: Vec<AddressRecord>,
    /// The sysctl writes and restores.
    pub sysctls: sysctl::Plan,
    /// The services lvsctl owns before the changes.
    pub owned: Vec<ServiceKey>,
    /// The record written before the first change, so that a run that dies
    /// half-way can be finished by the next or undone by stop (`None`:
    /// nothing changes, nothing is written).
    pub write_ahead: Option<DirectorState>,
    /// The configured services, without health applied (recorded for status).
    pub desired: Vec<DesiredService>,
}

impl Plan {
    /// Whether the host already matches.
    pub fn is_empty(&self) -> bool {
        self.ipvs.is_empty() && self.address_adds.is_empty() && self.address_dels.is_empty() && self.sysctls.is_empty()
    }
}

/// Decide what makes the host match `spec` with the virtual services
/// `desired` (normally `spec.desired_services()`; the daemon passes them with
/// the health applied).
///
/// Refused, with nothing changed: an interface that does not exist
/// ([`Error::NoSuchInterface`]), a wanted service that exists and lvsctl
/// did not create ([`Error::ForeignService`]).
pub fn plan(spec: &DirectorSpec, desired: &[DesiredService], obs: &Observed) -> Result<Plan, Error> {
    let vips = spec.vips();
    if let Some((_, iface)) = vips.iter().find(|(_, i)| !obs.links.contains_key(i.as_str())) {
        return Err(Error::NoSuchInterface(iface.to_string()));
    }
    let prev_owned = obs.prev_owned();
    if let Some(d) = desired.iter().find(|d| obs.present(&d.service.key) && !prev_owned.contains(&d.service.key)) {
        return Err(Error::ForeignService(d.service.key));
    }
    let ops = reconcile::plan(&obs.table, desired, &Scope::Owned(prev_owned.to_vec()));
    // Ownership is lost only when the service is known to be gone.
    let owned: Vec<ServiceKey> = prev_owned.iter().copied().filter(|k| !obs.confirmed_gone.contains(k)).collect();
    let mut p = Plan { ipvs: ops, owned, desired: spec.desired_services(), ..Plan::default() };
    plan_addresses(&mut p, &vips.iter().map(|(ip, i)| (*ip, i.to_string())).collect::<Vec<_>>(), obs);
    p.sysctls = obs.sysctls.clone();
    if !p.is_empty() {
        p.write_ahead = Some(write_ahead(&p));
    }
    Ok(p)
}

/// The VIPs to add, keep and remove.
fn plan_addresses(p: &mut Plan, vips: &[(IpAddr, String)], obs: &Observed) {
    let prev_addrs: &[AddressRecord] = obs.prev.as_ref().map_or(&[], |s| &s.addresses);
    for (ip, iface) in vips {
        let ours = prev_addrs.iter().any(|r| r.addr == *ip && r.iface == *iface && r.created);
        let rec = AddressRecord { addr: *ip, prefix_len: host_prefix(*ip), iface: iface.clone(), created: ours };
        if obs.vips_present.iter().any(|(a, i)| a == ip && i == iface) {
            p.address_kept.push(rec);
        } else {
            p.address_adds.push((obs.links[iface.as_str()], rec));
        }
    }
    p.address_dels = prev_addrs
        .iter()
        .filter(|r| r.created && !vips.iter().any(|(ip, i)| *ip == r.addr && *i == r.iface))
        .cloned()
        .collect();
}

/// The record that claims everything the plan may create.
fn write_ahead(p: &Plan) -> DirectorState {
    let mut claim = p.owned.clone();
    for op in &p.ipvs {
        if let Op::AddService(s) = op {
            if !claim.contains(&s.key) {
                claim.push(s.key);
            }
        }
    }
    let mut addresses = p.address_kept.clone();
    addresses.extend(p.address_adds.iter().map(|(_, r)| AddressRecord { created: true, ..r.clone() }));
    addresses.extend(p.address_dels.iter().cloned());
    DirectorState {
        format: state::FORMAT,
        services: p.desired.clone(),
        owned: claim,
        addresses,
        sysctls: p.sysctls.claim(),
    }
}

/// The ownership after the IPVS batch: services added are owned, services
/// deleted are not; a failed operation changes nothing.
pub fn owned_after(owned: &[ServiceKey], ops: &[Op], results: &[bool]) -> Vec<ServiceKey> {
    let mut out = owned.to_vec();
    for (op, ok) in ops.iter().zip(results) {
        match (op, ok) {
            (Op::AddService(s), true) if !out.contains(&s.key) => out.push(s.key),
            (Op::DeleteService(k), true) => out.retain(|x| x != k),
            _ => {}
        }
    }
    out
}

/// The undo of a batch that failed part-way: delete the services it added
/// (their destinations go with them). Changes to services that existed
/// before, and addresses, stay.
pub fn undo(ops: &[Op], results: &[bool]) -> Vec<Op> {
    ops.iter()
        .zip(results)
        .filter_map(|(op, ok)| match (op, ok) {
            (Op::AddService(s), true) => Some(Op::DeleteService(s.key)),
            _ => None,
        })
        .collect()
}

/// The sysctls the configured services need: forwarding on (in the family
/// of their addresses) when a real server is reached by NAT, whose replies
/// the director must route back through itself. Direct routing and
/// tunnelling need none.
pub fn forwarding_sysctls(spec: &DirectorSpec) -> Vec<sysctl::Want> {
    let mut out: Vec<sysctl::Want> = Vec::new();
    for s in &spec.services {
        for d in &s.desired.destinations {
            if d.forward == ipvs::Forward::Masq {
                let want = (d.addr.is_ipv6(), "all".to_owned(), "forwarding", "1");
                if !out.contains(&want) {
                    out.push(want);
                }
            }
        }
    }
    out
}

/// The changes a transition between two effective forms of one service
/// needs, by real server: added, changed or removed destinations. No
/// service-level change (a health transition never changes the service).
pub fn destination_ops(before: &DesiredService, after: &DesiredService) -> Vec<Op> {
    let key = after.service.key;
    let mut ops = Vec::new();
    for d in &after.destinations {
        match before.destinations.iter().find(|x| x.addr == d.addr) {
            None => ops.push(Op::AddDestination(key, d.clone())),
            Some(x) if !reconcile::destination_matches(x, d) => ops.push(Op::UpdateDestination(key, d.clone())),
            Some(_) => {}
        }
    }
    for x in &before.destinations {
        if !after.destinations.iter().any(|d| d.addr == x.addr) {
            ops.push(Op::DeleteDestination(key, x.addr));
        }
    }
    ops
}
