//! The director's decisions, without I/O: given what the host has
//! ([`Observed`]) and what it should have, every change to make, the record
//! written ahead of them, and what to undo when the IPVS part fails.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use ipvs::reconcile::{self, DesiredService, Scope};
use ipvs::{Op, OpOutcome, ServiceKey, Table};

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
    pub(crate) fn prev_owned(&self) -> &[ServiceKey] {
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
    // Sets, not list scans: a thousand services must not cost a million comparisons.
    let present: HashSet<ServiceKey> = obs.table.iter().map(|(s, _)| s.service.key).collect();
    let owned_set: HashSet<ServiceKey> = prev_owned.iter().copied().collect();
    if let Some(d) = desired.iter().find(|d| present.contains(&d.service.key) && !owned_set.contains(&d.service.key)) {
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
    let created: HashSet<(IpAddr, &str)> =
        prev_addrs.iter().filter(|r| r.created).map(|r| (r.addr, r.iface.as_str())).collect();
    let present: HashSet<(IpAddr, &str)> = obs.vips_present.iter().map(|(a, i)| (*a, i.as_str())).collect();
    let wanted: HashSet<(IpAddr, &str)> = vips.iter().map(|(a, i)| (*a, i.as_str())).collect();
    for (ip, iface) in vips {
        let ours = created.contains(&(*ip, iface.as_str()));
        let rec = AddressRecord { addr: *ip, prefix_len: host_prefix(*ip), iface: iface.clone(), created: ours };
        if present.contains(&(*ip, iface.as_str())) {
            p.address_kept.push(rec);
        } else {
            p.address_adds.push((obs.links[iface.as_str()], rec));
        }
    }
    p.address_dels =
        prev_addrs.iter().filter(|r| r.created && !wanted.contains(&(r.addr, r.iface.as_str()))).cloned().collect();
}

/// The record that claims everything the plan may create.
fn write_ahead(p: &Plan) -> DirectorState {
    let mut claim = p.owned.clone();
    let mut claimed: HashSet<ServiceKey> = claim.iter().copied().collect();
    for op in &p.ipvs {
        if let Op::AddService(s) = op {
            if claimed.insert(s.key) {
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

/// The ownership after the IPVS batch with these outcomes: services
/// perhaps added ([`OpOutcome::Done`] or [`OpOutcome::Unknown`]) are owned,
/// services known to be deleted (`Done`) are not; a failed or unsent
/// operation changes nothing.
pub fn owned_after(owned: &[ServiceKey], ops: &[Op], outcomes: &[OpOutcome]) -> Vec<ServiceKey> {
    let mut out = owned.to_vec();
    let mut has: HashSet<ServiceKey> = out.iter().copied().collect();
    let mut any_deleted = false;
    for (op, outcome) in ops.iter().zip(outcomes) {
        match op {
            Op::AddService(s) if outcome.maybe_done() && has.insert(s.key) => out.push(s.key),
            Op::DeleteService(k) if outcome.is_done() && has.remove(k) => any_deleted = true,
            _ => {}
        }
    }
    // The deleted ones go in one pass (a key deleted and added again stays once).
    if any_deleted {
        let mut kept = HashSet::new();
        out.retain(|k| has.contains(k) && kept.insert(*k));
    }
    out
}

/// The undo of a batch that failed part-way: delete the services it perhaps
/// added (their destinations go with them; one whose add was not done after
/// all answers that it does not exist, and stays claimed until a lookup).
/// Changes to services that existed before, and addresses, stay.
pub fn undo(ops: &[Op], outcomes: &[OpOutcome]) -> Vec<Op> {
    ops.iter()
        .zip(outcomes)
        .filter_map(|(op, outcome)| match op {
            Op::AddService(s) if outcome.maybe_done() => Some(Op::DeleteService(s.key)),
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

#[cfg(test)]
mod tests {
    use ipvs::{Destination, DestinationEntry, Forward, Scheduler, Service, ServiceEntry};

    use super::*;
    use crate::config::Config;

    const VIP: &str = "10.19.70.166";

    fn spec() -> DirectorSpec {
        let text = format!(
            "[director]\niface = \"eth0\"\n[[director.service]]\nvip = \"{VIP}\"\nport = 80\n\
             real = [\"10.18.68.186\", \"10.18.68.187\"]\n"
        );
        Config::parse(&text, "t.toml").unwrap().director().unwrap()
    }

    fn key() -> ServiceKey {
        ServiceKey::tcp(format!("{VIP}:80").parse().unwrap())
    }

    fn dest(a: &str) -> DestinationEntry {
        DestinationEntry::from(Destination::new(format!("{a}:80").parse().unwrap(), Forward::Route))
    }

    /// The kernel's table with the coordinator pair's service (10.19.70.166:15858) and these real servers.
    fn table(reals: &[&str]) -> Table {
        let s = ServiceEntry::from(Service::new(key(), Scheduler::Rr));
        vec![(s, reals.iter().map(|a| dest(a)).collect())]
    }

    fn recorded(owned: &[ServiceKey], vip_created: bool) -> DirectorState {
        let addresses = vec![AddressRecord {
            addr: VIP.parse().unwrap(),
            prefix_len: 32,
            iface: "eth0".into(),
            created: vip_created,
        }];
        DirectorState {
            format: state::FORMAT,
            services: spec().desired_services(),
            owned: owned.to_vec(),
            addresses,
            sysctls: vec![],
        }
    }

    fn observed(table: Table, prev: Option<DirectorState>, vip_on: bool) -> Observed {
        let vips_present = if vip_on { vec![(VIP.parse().unwrap(), "eth0".to_owned())] } else { vec![] };
        Observed { table, links: [("eth0".to_owned(), 2)].into(), vips_present, prev, ..Observed::default() }
    }

    fn kinds(ops: &[Op]) -> Vec<String> {
        ops.iter().map(|o| o.to_string()).collect()
    }

    /// Each case: the observation, and what the plan must be (IPVS ops,
    /// owned services before the changes, claimed in the write-ahead record,
    /// addresses added and removed), or the error.
    #[test]
    fn ownership_rules() {
        let k = key();
        let add_all = vec![
            format!("add service tcp {VIP}:80 (rr)"),
            format!("add real server 10.18.68.186:80 to tcp {VIP}:80 (Route, weight 1)"),
            format!("add real server 10.18.68.187:80 to tcp {VIP}:80 (Route, weight 1)"),
        ];
        struct Case {
            what: &'static str,
            obs: Observed,
            ops: Vec<String>,
            owned: Vec<ServiceKey>,
            claim: Option<Vec<ServiceKey>>,
            adds: usize,
        }
        let cases = vec![
            Case {
                what: "first start: everything is added and claimed ahead",
                obs: observed(vec![], None, false),
                ops: add_all.clone(),
                owned: vec![],
                claim: Some(vec![k]),
                adds: 1,
            },
            Case {
                what: "already as configured: nothing to do, nothing written",
                obs: observed(table(&["10.18.68.186", "10.18.68.187"]), Some(recorded(&[k], true)), true),
                ops: vec![],
                owned: vec![k],
                claim: None,
                adds: 0,
            },
            Case {
                what: "an earlier run died after adding the service and one real server: the rest is added",
                obs: observed(table(&["10.18.68.186"]), Some(recorded(&[k], true)), false),
                ops: vec![add_all[2].clone()],
                owned: vec![k],
                claim: Some(vec![k]),
                adds: 1,
            },
            Case {
                what: "claimed but missing from the dump and not confirmed gone: ownership stays",
                obs: observed(vec![], Some(recorded(&[k], true)), true),
                ops: add_all.clone(),
                owned: vec![k],
                claim: Some(vec![k]),
                adds: 0,
            },
            Case {
                what: "claimed and confirmed gone by a lookup: ownership is dropped, then claimed again",
                obs: Observed { confirmed_gone: vec![k], ..observed(vec![], Some(recorded(&[k], true)), true) },
                ops: add_all.clone(),
                owned: vec![],
                claim: Some(vec![k]),
                adds: 0,
            },
        ];
        for c in cases {
            let p = plan(&spec(), &spec().desired_services(), &c.obs).unwrap_or_else(|e| panic!("{}: {e}", c.what));
            assert_eq!(kinds(&p.ipvs), c.ops, "{}", c.what);
            assert_eq!(p.owned, c.owned, "{}", c.what);
            assert_eq!(p.write_ahead.as_ref().map(|s| s.owned.clone()), c.claim, "{}", c.what);
            assert_eq!(p.address_adds.len(), c.adds, "{}", c.what);
            if let Some(w) = &p.write_ahead {
                assert!(w.addresses.iter().all(|r| r.created || c.adds == 0), "{}", c.what);
            }
        }
    }

    #[test]
    fn refusals_change_nothing() {
        // A service with the configured key that lvsctl did not create.
        let foreign = observed(table(&["10.18.68.186"]), None, false);
        match plan(&spec(), &spec().desired_services(), &foreign) {
            Err(Error::ForeignService(k)) => assert_eq!(k, key()),
            other => panic!("expected ForeignService, got {other:?}"),
        }
        let e = plan(&spec(), &spec().desired_services(), &foreign).unwrap_err().to_string();
        assert!(e.contains(&format!("ipvsadm -D -t {VIP}:80")), "{e}");
        // An interface that does not exist.
        let no_link = Observed { links: HashMap::new(), ..observed(vec![], None, false) };
        match plan(&spec(), &spec().desired_services(), &no_link) {
            Err(Error::NoSuchInterface(i)) => assert_eq!(i, "eth0"),
            other => panic!("expected NoSuchInterface, got {other:?}"),
        }
    }

    #[test]
    fn a_vip_no_longer_wanted_is_removed_only_if_lvsctl_added_it() {
        let mut prev = recorded(&[key()], true);
        prev.addresses[0].addr = "10.19.70.167".parse().unwrap();
        let p = plan(&spec(), &spec().desired_services(), &observed(table(&[]), Some(prev.clone()), true)).unwrap();
        assert_eq!(p.address_dels.len(), 1);
        assert_eq!(p.address_dels[0].addr, "10.19.70.167".parse::<IpAddr>().unwrap());
        prev.addresses[0].created = false;
        let p = plan(&spec(), &spec().desired_services(), &observed(table(&[]), Some(prev), true)).unwrap();
        assert!(p.address_dels.is_empty(), "an address that was there before stays");
    }

    /// Outcomes from a pattern: `d` done, `f` failed, `u` unknown, `n` not sent.
    fn outcomes(pattern: &str) -> Vec<OpOutcome> {
        pattern
            .chars()
            .map(|c| match c {
                'd' => OpOutcome::Done,
                'f' => OpOutcome::Failed(ipvs::Error::NoSuchService(key())),
                'u' => OpOutcome::Unknown,
                'n' => OpOutcome::NotSent,
                _ => panic!("outcome {c}"),
            })
            .collect()
    }

    #[test]
    fn undo_deletes_only_the_services_added_by_the_failed_batch() {
        let k = key();
        let other = ServiceKey::tcp(format!("{VIP}:81").parse().unwrap());
        let d = Destination::new("10.18.68.186:80".parse().unwrap(), Forward::Route);
        let ops = vec![
            Op::AddService(Service::new(k, Scheduler::Rr)),
            Op::AddDestination(k, d.clone()),
            Op::UpdateDestination(other, d),
            Op::AddService(Service::new(other, Scheduler::Rr)),
        ];
        for (results, undo_keys, owned) in [
            ("dddf", vec![k], vec![k]),
            ("ffdd", vec![other], vec![other]),
            ("ffff", vec![], vec![]),
            // Cut short: an add without an answer is perhaps done (claimed,
            // undone); one not sent is not.
            ("dduu", vec![k, other], vec![k, other]),
            ("dunn", vec![k], vec![k]),
            ("unnn", vec![k], vec![k]),
            ("nnnn", vec![], vec![]),
        ] {
            let results = outcomes(results);
            let u = undo(&ops, &results);
            assert_eq!(u, undo_keys.iter().map(|k| Op::DeleteService(*k)).collect::<Vec<_>>());
            assert_eq!(owned_after(&[], &ops, &results), owned);
            let all_undone = outcomes(&"d".repeat(u.len()));
            assert!(owned_after(&owned, &u, &all_undone).is_empty(), "after the undo nothing new is owned");
        }
        // A delete that failed, was not sent or has no answer keeps the
        // ownership; one that was done ends it.
        let del = [Op::DeleteService(k), Op::DeleteService(other)];
        assert_eq!(owned_after(&[k, other], &del, &outcomes("fd")), vec![k]);
        assert_eq!(owned_after(&[k, other], &del, &outcomes("un")), vec![k, other]);
        assert_eq!(owned_after(&[k, other], &del, &outcomes("du")), vec![other]);
    }

    #[test]
    fn a_health_transition_is_one_destination_change() {
        let before = spec().desired_services().remove(0);
        let k = before.service.key;
        let mut drained = before.clone();
        drained.destinations[1].weight = 0;
        assert_eq!(destination_ops(&before, &drained), vec![Op::UpdateDestination(k, drained.destinations[1].clone())]);
        let mut removed = before.clone();
        let gone = removed.destinations.remove(0);
        assert_eq!(destination_ops(&before, &removed), vec![Op::DeleteDestination(k, gone.addr)]);
        let mut sorry = removed.clone();
        sorry.destinations.clear();
        let s = Destination::new("10.18.68.190:80".parse().unwrap(), Forward::Route);
        sorry.destinations.push(s.clone());
        let ops = destination_ops(&removed, &sorry);
        assert_eq!(ops, vec![Op::AddDestination(k, s), Op::DeleteDestination(k, removed.destinations[0].addr)]);
        assert!(destination_ops(&before, &before).is_empty());
    }
}
