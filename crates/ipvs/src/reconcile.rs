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

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;

use crate::handle::Op;
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

fn normalize(s: &Service) -> Service {
    let mut s = s.clone();
    if let Some(p) = &mut s.persistence {
        if p.netmask.is_some_and(|m| m.is_full()) {
            p.netmask = None;
        }
    }
    if s.pe.as_deref() == Some("") {
        s.pe = None;
    }
    s
}

/// Whether the kernel's destination already is what is desired. The kernel
/// reports a destination on a local address as `Local` whatever method it was
/// given, so `Local` matches any desired method.
pub fn destination_matches(current: &Destination, desired: &Destination) -> bool {
    (current.forward == desired.forward || current.forward == Forward::Local)
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

    for d in desired {
        let want = normalize(&d.service);
        let key = want.key;
        match cur.get(&key) {
            None => {
                ops.push(Op::AddService(want));
                for dest in &d.destinations {
                    ops.push(Op::AddDestination(key, dest.clone()));
                }
            }
            Some((have, have_dests)) => {
                if normalize(have) != want {
                    ops.push(Op::UpdateService(want));
                }
                let desired_by_addr: HashMap<SocketAddr, &Destination> =
                    d.destinations.iter().map(|x| (x.addr, x)).collect();
                let have_by_addr: HashMap<SocketAddr, &Destination> =
                    have_dests.iter().map(|x| (x.destination.addr, &x.destination)).collect();
                for h in have_dests.iter() {
                    if !desired_by_addr.contains_key(&h.destination.addr) {
                        ops.push(Op::DeleteDestination(key, h.destination.addr));
                    }
                }
                for dest in &d.destinations {
                    match have_by_addr.get(&dest.addr) {
                        Some(h) if destination_matches(h, dest) => {}
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
        (
            ServiceEntry { service: s, stats: Stats::default() },
            d.into_iter()
                .map(|destination| DestinationEntry {
                    destination,
                    active_conns: 0,
                    inactive_conns: 0,
                    persistent_conns: 0,
                    stats: Stats::default(),
                })
                .collect(),
        )
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
    fn full_netmask_is_the_same_as_none() {
        let mut s = svc("10.0.0.1:80");
        s.persistence = Some(Persistence { timeout: 300, netmask: None });
        let mut s2 = s.clone();
        s2.persistence = Some(Persistence { timeout: 300, netmask: Some(Netmask::full(Family::Inet)) });
        let cur = vec![entry(s, vec![])];
        assert!(plan(&cur, &[DesiredService { service: s2, destinations: vec![] }], &Scope::All).is_empty());
    }
}
