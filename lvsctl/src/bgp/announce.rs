//! Which VIPs to announce: a pure decision from the daemon's view of its
//! services, so the table of cases is tested without BIRD or a kernel.
//!
//! A VIP is announced while at least one of its virtual services is in the
//! IPVS table and has at least one real server up with a weight above 0. A
//! sorry server does not count: another director may still reach real
//! servers, and the routers should send the flows there.

use std::net::IpAddr;

use ipvs::ServiceKey;

/// One virtual service as the daemon sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ServiceView {
    /// Its VIP.
    pub(crate) vip: IpAddr,
    /// The service.
    pub(crate) key: ServiceKey,
    /// Whether it is in the table the daemon last applied (false after a
    /// failed change until the retry succeeds, and before the first apply).
    pub(crate) in_table: bool,
    /// Its real servers that are up with a weight above 0.
    pub(crate) up: usize,
    /// All its real servers.
    pub(crate) total: usize,
}

/// One VIP's decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Decision {
    /// The VIP.
    pub(crate) vip: IpAddr,
    /// Announce it (true) or withdraw it.
    pub(crate) announce: bool,
    /// Why, for the log and the status.
    pub(crate) reason: String,
}

/// Decide for each of `vips` from `services`.
pub(crate) fn decide(vips: &[IpAddr], services: &[ServiceView]) -> Vec<Decision> {
    vips.iter().map(|vip| decide_one(*vip, services.iter().filter(|s| s.vip == *vip))).collect()
}

fn decide_one<'a>(vip: IpAddr, services: impl Iterator<Item = &'a ServiceView>) -> Decision {
    let mut why_not = Vec::new();
    for s in services {
        if !s.in_table {
            why_not.push(format!("{} is not in the IPVS table", s.key));
        } else if s.up == 0 {
            why_not.push(format!("{}: all {} real servers down or at weight 0", s.key, s.total));
        } else {
            let reason = format!("{}: {} of {} real servers up", s.key, s.up, s.total);
            return Decision { vip, announce: true, reason };
        }
    }
    if why_not.is_empty() {
        why_not.push("no virtual service has this VIP".to_owned());
    }
    Decision { vip, announce: false, reason: why_not.join("; ") }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(vip: &str, port: u16, in_table: bool, up: usize, total: usize) -> ServiceView {
        let vip: IpAddr = vip.parse().unwrap();
        ServiceView { vip, key: ServiceKey::tcp(std::net::SocketAddr::new(vip, port)), in_table, up, total }
    }

    #[test]
    fn decision_table() {
        let a: IpAddr = "10.19.70.166".parse().unwrap();
        let b: IpAddr = "10.19.70.167".parse().unwrap();
        let cases: [(&[ServiceView], bool, &str); 6] = [
            (&[view("10.19.70.166", 80, true, 2, 3)], true, "tcp 10.19.70.166:80: 2 of 3 real servers up"),
            (&[view("10.19.70.166", 80, true, 0, 3)], false, "all 3 real servers down or at weight 0"),
            (&[view("10.19.70.166", 80, false, 3, 3)], false, "is not in the IPVS table"),
            // One service of the VIP with a real server up is enough.
            (&[view("10.19.70.166", 80, true, 0, 2), view("10.19.70.166", 443, true, 1, 2)], true, ":443: 1 of 2"),
            (&[view("10.19.70.166", 80, true, 0, 2), view("10.19.70.166", 443, false, 2, 2)], false, ":80: all 2"),
            (&[view("10.19.70.167", 80, true, 1, 1)], false, "no virtual service has this VIP"),
        ];
        for (services, announce, why) in cases {
            let d = decide(&[a], services);
            assert_eq!(d.len(), 1);
            assert_eq!(d[0].announce, announce, "{services:?}: {d:?}");
            assert!(d[0].reason.contains(why), "{:?} lacks {why:?}", d[0].reason);
        }
        let both = decide(&[a, b], &[view("10.19.70.166", 80, true, 0, 1), view("10.19.70.167", 80, true, 1, 1)]);
        assert_eq!(both.iter().map(|d| (d.vip, d.announce)).collect::<Vec<_>>(), vec![(a, false), (b, true)]);
    }
}
