//! Desired-state reconcile: given what the kernel has and what you want, the
//! smallest list of [`Op`]s that turns one into the other. Zero operations
//! when nothing differs.
//!
//! ```
//! use ipvs::reconcile::{plan, DesiredService, Scope};
//! use ipvs::{Destination, Forward, Scheduler, Service, ServiceKey};
//!
//! let key = ServiceKey::tcp("10.19.70.166:15858".parse().unwrap());
//! let want = vec![DesiredService {
//!     service: Service::new(key, Scheduler::Rr),
//!     destinations: vec![Destination::new("10.18.68.186:15858".parse().unwrap(), Forward::Route)],
//! }];
//! // Against an empty table: add the service, then its real server.
//! let ops = plan(&[], &want, &Scope::Owned(vec![key]));
//! assert_eq!(ops.len(), 2);
//! ```

use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};
use std::borrow::Cow;
use std::net::SocketAddr;

use crate::op::Op;
use crate::types::*;

/// A virtual service and the destinations it should have.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct DesiredService {
    /// The service's configuration.
    pub service: Service,
    /// Exactly the destinations it should have.
    pub destinations: Vec<Destination>,
}

/// Which services a reconcile may delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Make the whole table equal to the desired one (`restore --replace`):
    /// services not desired are deleted.
    All,
    /// Only these services are ours: ones among them that are not desired any
    /// more are deleted; every other service is left alone.
    Owned(Vec<ServiceKey>),
}

fn normalize(s: &Service) -> Cow<'_, Service> {
    let full_mask = s.persistence.is_some_and(|p| p.netmask.is_some_and(|m| m.is_full()));
    let empty_pe = s.pe.as_deref() == Some("");
    if !full_mask && !empty_pe {
        // The usual case: already normal, nothing to copy.
        return Cow::Borrowed(s);
    }
    let mut s = s.clone();
    if let Some(p) = &mut s.persistence {
        if p.netmask.is_some_and(|m| m.is_full()) {
            p.netmask = None;
        }
    }
    if s.pe.as_deref() == Some("") {
        s.pe = None;
    }
    Cow::Owned(s)
}

/// Destinations looked up by address: a linear scan for the usual handful
/// (cheaper than hashing), a hash map for long lists.
enum ByAddr<'a, T> {
    Few(&'a [T]),
    Many(HashMap<SocketAddr, &'a T>),
}

impl<'a, T> ByAddr<'a, T> {
    fn new(list: &'a [T], addr: impl Fn(&T) -> SocketAddr) -> Self {
        if list.len() <= 16 {
            ByAddr::Few(list)
        } else {
            ByAddr::Many(list.iter().map(|x| (addr(x), x)).collect())
        }
    }

    fn get(&self, a: &SocketAddr, addr: impl Fn(&T) -> SocketAddr) -> Option<&'a T> {
        match self {
            ByAddr::Few(l) => l.iter().find(|x| addr(x) == *a),
            ByAddr::Many(m) => m.get(a).copied(),
        }
    }
}

/// Whether the kernel's destination already is what is desired: same
/// forwarding method (tunnel type and options included), weight and
/// thresholds. The kernel stores the method it is given and reports it back
/// unchanged, also for destinations on local addresses (checked on Linux 6.1
/// by the privileged tests: NAT to a local address reads back as `Masq`), so
/// the method is compared exactly.
pub fn destination_matches(current: &Destination, desired: &Destination) -> bool {
    current.forward == desired.forward
        && current.weight == desired.weight
        && current.upper_threshold == desired.upper_threshold
        && current.lower_threshold == desired.lower_threshold
}

/// The operations that turn `current` into `desired` within `scope`, in an
/// order the kernel accepts: deletions of unwanted services, then per desired
/// service its add or update, then its destination deletions, updates, adds.
pub fn plan(current: &[(ServiceEntry, Vec<DestinationEntry>)], desired: &[DesiredService], scope: &Scope) -> Vec<Op> {
    let cur: HashMap<ServiceKey, (&Service, &Vec<DestinationEntry>)> =
        current.iter().map(|(s, d)| (s.service.key, (&s.service, d))).collect();
    let want_keys: HashSet<ServiceKey> = desired.iter().map(|d| d.service.key).collect();
    let mut ops = Vec::new();

    // Deletions first.
    match scope {
        Scope::All => {
            for (s, _) in current {
                if !want_keys.contains(&s.service.key) {
                    ops.push(Op::DeleteService(s.service.key));
                }
            }
        }
        Scope::Owned(keys) => {
            for k in keys {
                if !want_keys.contains(k) && cur.contains_key(k) {
                    ops.push(Op::DeleteService(*k));
                }
            }
        }
    }

    let dest_addr = |x: &Destination| x.addr;
    let entry_addr = |x: &DestinationEntry| x.destination.addr;
    for d in desired {
        let want = normalize(&d.service);
        let key = want.key;
        match cur.get(&key) {
            None => {
                ops.push(Op::AddService(want.into_owned()));
                for dest in &d.destinations {
                    ops.push(Op::AddDestination(key, dest.clone()));
                }
            }
            Some((have, have_dests)) => {
                if *normalize(have) != *want {
                    ops.push(Op::UpdateService(want.into_owned()));
                }
                let desired_by_addr = ByAddr::new(&d.destinations, dest_addr);
                let have_by_addr = ByAddr::new(have_dests, entry_addr);
                for h in have_dests.iter() {
                    if desired_by_addr.get(&h.destination.addr, dest_addr).is_none() {
                        ops.push(Op::DeleteDestination(key, h.destination.addr));
                    }
                }
                for dest in &d.destinations {
                    match have_by_addr.get(&dest.addr, entry_addr) {
                        Some(h) if destination_matches(&h.destination, dest) => {}
                        Some(_) => ops.push(Op::UpdateDestination(key, dest.clone())),
                        None => ops.push(Op::AddDestination(key, dest.clone())),
                    }
                }
            }
        }
    }
    ops
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(s: Service, d: Vec<Destination>) -> (ServiceEntry, Vec<DestinationEntry>) {
        (s.into(), d.into_iter().map(DestinationEntry::from).collect())
    }

    fn svc(a: &str) -> Service {
        Service::new(ServiceKey::tcp(a.parse().unwrap()), Scheduler::Rr)
    }

    fn dest(a: &str, w: u32) -> Destination {
        Destination { weight: w, ..Destination::new(a.parse().unwrap(), Forward::Route) }
    }

    #[test]
    fn nothing_to_do_when_equal() {
        let s = svc("10.0.0.1:80");
        let d = vec![dest("10.0.0.2:80", 1), dest("10.0.0.3:80", 2)];
        let cur = vec![entry(s.clone(), d.clone())];
        let want = vec![DesiredService { service: s, destinations: d }];
        assert!(plan(&cur, &want, &Scope::All).is_empty());
    }

    #[test]
    fn only_the_difference() {
        let s = svc("10.0.0.1:80");
        let cur = vec![entry(s.clone(), vec![dest("10.0.0.2:80", 1), dest("10.0.0.3:80", 1)])];
        let want = vec![DesiredService {
            service: s.clone(),
            destinations: vec![dest("10.0.0.2:80", 5), dest("10.0.0.4:80", 1)],
        }];
        let ops = plan(&cur, &want, &Scope::All);
        assert_eq!(
            ops,
            vec![
                Op::DeleteDestination(s.key, "10.0.0.3:80".parse().unwrap()),
                Op::UpdateDestination(s.key, dest("10.0.0.2:80", 5)),
                Op::AddDestination(s.key, dest("10.0.0.4:80", 1)),
            ]
        );
    }

    #[test]
    fn long_destination_lists_too() {
        // More destinations than the linear lookup takes: the hashed one.
        let s = svc("10.0.0.1:80");
        let have: Vec<Destination> = (1..=40).map(|i| dest(&format!("10.0.1.{i}:80"), 1)).collect();
        let mut want = have.clone();
        want[30].weight = 3;
        want.remove(5);
        want.push(dest("10.0.2.1:80", 1));
        let cur = vec![entry(s.clone(), have.clone())];
        let ops = plan(&cur, &[DesiredService { service: s.clone(), destinations: want.clone() }], &Scope::All);
        assert_eq!(
            ops,
            vec![
                Op::DeleteDestination(s.key, have[5].addr),
                Op::UpdateDestination(s.key, want[29].clone()),
                Op::AddDestination(s.key, dest("10.0.2.1:80", 1)),
            ]
        );
        assert!(plan(&cur, &[DesiredService { service: s, destinations: have }], &Scope::All).is_empty());
    }

    #[test]
    fn owned_scope_leaves_foreign_services() {
        let mine = svc("10.0.0.1:80");
        let foreign = svc("10.0.0.9:80");
        let cur = vec![entry(mine.clone(), vec![]), entry(foreign.clone(), vec![])];
        let ops = plan(&cur, &[], &Scope::Owned(vec![mine.key]));
        assert_eq!(ops, vec![Op::DeleteService(mine.key)]);
        let ops = plan(&cur, &[], &Scope::All);
        assert_eq!(ops.len(), 2);
    }

    #[test]
    fn service_change_is_an_update_not_a_recreate() {
        let s = svc("10.0.0.1:80");
        let mut s2 = s.clone();
        s2.scheduler = Scheduler::Wlc;
        let cur = vec![entry(s, vec![])];
        let ops = plan(&cur, &[DesiredService { service: s2.clone(), destinations: vec![] }], &Scope::All);
        assert_eq!(ops, vec![Op::UpdateService(s2)]);
    }

    #[test]
    fn a_different_forwarding_method_is_an_update() {
        let s = svc("10.0.0.1:80");
        let local = Destination::new("10.0.0.2:80".parse().unwrap(), Forward::Local);
        let masq = Destination::new("10.0.0.2:80".parse().unwrap(), Forward::Masq);
        let cur = vec![entry(s.clone(), vec![local])];
        let ops = plan(&cur, &[DesiredService { service: s.clone(), destinations: vec![masq.clone()] }], &Scope::All);
        assert_eq!(ops, vec![Op::UpdateDestination(s.key, masq)]);
    }

    #[test]
    fn full_netmask_is_the_same_as_none() {
        let mut s = svc("10.0.0.1:80");
        s.persistence = Some(Persistence { timeout: 300, netmask: None });
        let mut s2 = s.clone();
        s2.persistence = Some(Persistence { timeout: 300, netmask: Some(Netmask::full(Family::Inet)) });
        let cur = vec![entry(s, vec![])];
        assert!(plan(&cur, &[DesiredService { service: s2, destinations: vec![] }], &Scope::All).is_empty());
    }
}
