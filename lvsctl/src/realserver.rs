//! The LVS-DR real server: each VIP as /32 (/128) on `lo` and, when a VIP is
//! IPv4, `arp_ignore=1` and `arp_announce=2` on `all`, `lo` and the
//! interface, every previous value recorded.
//!
//! [`start`] observes ([`observe`]), plans ([`plan`], pure) and executes;
//! [`stop`] removes the addresses start added and writes back every previous
//! sysctl value; [`status`] compares the host with what start configured.
//!
//! ```no_run
//! # async fn f() -> Result<(), lvsctl::Error> {
//! use lvsctl::spec::RealserverSpec;
//! let spec = RealserverSpec { vips: vec!["10.19.70.166".parse().unwrap()], iface: None };
//! let report = lvsctl::realserver::start(&spec).await?;
//! for c in &report.changes {
//!     println!("{c}");
//! }
//! # Ok(()) }
//! ```

use std::net::IpAddr;

use serde::Serialize;

use crate::host::addr::{host_prefix, AddrStatus, Rtnl};
use crate::host::{require_root, sysctl, Change, Incomplete, Report};
use crate::spec::RealserverSpec;
use crate::state::{self, AddressRecord, RealserverState, Role};
use crate::Error;

/// The sysctls a DR real server needs, with their values.
const ARP_SYSCTLS: [(&str, &str); 2] = [("arp_ignore", "1"), ("arp_announce", "2")];

/// The interfaces whose ARP sysctls are set: all, lo and the interface; none
/// when every VIP is IPv6 (IPv6 has no ARP).
pub fn sysctl_targets(spec: &RealserverSpec) -> Vec<String> {
    if !spec.vips.iter().any(|v| v.is_ipv4()) {
        return Vec::new();
    }
    let mut t = vec!["all".to_owned(), "lo".to_owned()];
    if let Some(i) = &spec.iface {
        if !t.iter().any(|x| x == i.as_str()) {
            t.push(i.to_string());
        }
    }
    t
}

/// What a real server has now: the input of [`plan`].
#[derive(Debug, Default)]
pub struct Observed {
    /// The addresses on `lo`.
    pub on_lo: Vec<IpAddr>,
    /// The sysctl changes the spec needs, from the current and recorded values.
    pub sysctls: sysctl::Plan,
    /// What an earlier start recorded.
    pub prev: Option<RealserverState>,
}

/// Every change a start makes.
#[derive(Debug, Default)]
pub struct Plan {
    /// VIPs to add to `lo`.
    pub adds: Vec<AddressRecord>,
    /// VIPs an earlier start added that are not wanted any more.
    pub dels: Vec<AddressRecord>,
    /// VIPs already there.
    pub kept: Vec<AddressRecord>,
    /// The sysctl writes and restores.
    pub sysctls: sysctl::Plan,
    /// The record written before the first change (`None`: nothing changes).
    pub write_ahead: Option<RealserverState>,
    /// The interface given.
    pub iface: Option<String>,
}

/// Decide the changes that make the host match `spec`. Pure.
pub fn plan(spec: &RealserverSpec, obs: Observed) -> Plan {
    let prev_addrs = obs.prev.as_ref().map(|p| p.addresses.clone()).unwrap_or_default();
    let mut p = Plan { sysctls: obs.sysctls, iface: spec.iface.as_ref().map(|i| i.to_string()), ..Plan::default() };
    for ip in &spec.vips {
        let ours = prev_addrs.iter().any(|r| r.addr == *ip && r.created);
        let rec = AddressRecord { addr: *ip, prefix_len: host_prefix(*ip), iface: "lo".into(), created: ours };
        if obs.on_lo.contains(ip) {
            p.kept.push(rec);
        } else {
            p.adds.push(rec);
        }
    }
    p.dels = prev_addrs.into_iter().filter(|r| r.created && !spec.vips.contains(&r.addr)).collect();
    if !p.sysctls.is_empty() || !p.dels.is_empty() || !p.adds.is_empty() {
        let mut addresses = p.kept.clone();
        addresses.extend(p.adds.iter().map(|r| AddressRecord { created: true, ..r.clone() }));
        addresses.extend(p.dels.iter().cloned());
        let sysctls = p.sysctls.claim();
        p.write_ahead = Some(RealserverState { format: state::FORMAT, iface: p.iface.clone(), addresses, sysctls });
    }
    p
}

/// Read what [`plan()`] needs. `lo` is the index of the loopback interface.
pub async fn observe(
    rtnl: &Rtnl,
    lo: u32,
    spec: &RealserverSpec,
    prev: Option<RealserverState>,
) -> Result<Observed, Error> {
    let prev_sysctls = prev.as_ref().map(|p| p.sysctls.clone()).unwrap_or_default();
    let wanted: Vec<sysctl::Want> = sysctl_targets(spec)
        .into_iter()
        .flat_map(|iface| ARP_SYSCTLS.iter().map(move |(name, value)| (false, iface.clone(), *name, *value)))
        .collect();
    let sysctls = sysctl::plan(&wanted, &prev_sysctls)?;
    let on_lo = rtnl.addresses(lo).await?.into_iter().map(|(a, _)| a).collect();
    Ok(Observed { on_lo, sysctls, prev })
}

/// Make the host a real server for `spec`; run again to reconcile. On an
/// error, the changes made before it come with it.
pub async fn start(spec: &RealserverSpec) -> Result<Report, Incomplete> {
    let mut report = Report { services: spec.vips.len(), ..Report::default() };
    match start_into(spec, &mut report.changes).await {
        Ok(()) => Ok(report),
        Err(e) => Err(report.failed(e)),
    }
}

async fn start_into(spec: &RealserverSpec, changes: &mut Vec<Change>) -> Result<(), Error> {
    require_root("lvsctl realserver start")?;
    // Checks and reads first: nothing changes until all of them pass.
    let rtnl = Rtnl::connect()?;
    let lo = rtnl.link_index("lo").await?.ok_or_else(|| Error::Failed("no loopback interface lo".into()))?;
    if let Some(i) = &spec.iface {
        if rtnl.link_index(i.as_str()).await?.is_none() {
            return Err(Error::NoSuchInterface(i.to_string()));
        }
    }
    let dir = state::dir();
    let _lock = state::lock(&dir).await?;
    let path = state::path(&dir, Role::Realserver)?;
    let prev: Option<RealserverState> = state::read(&path)?;
    let p = plan(spec, observe(&rtnl, lo, spec, prev).await?);
    if let Some(st) = &p.write_ahead {
        state::write(&path, st)?;
    }
    let mut addrs = p.kept.clone();
    let res = execute(&rtnl, lo, &p, &mut addrs, changes).await;
    if res.is_err() {
        // Keep whatever may still need undoing.
        addrs.extend(p.dels.iter().cloned());
    }
    let st = RealserverState {
        format: state::FORMAT,
        iface: p.iface.clone(),
        addresses: addrs,
        sysctls: p.sysctls.kept(res.is_err()),
    };
    state::write(&path, &st)?;
    res
}

async fn execute(
    rtnl: &Rtnl,
    lo: u32,
    p: &Plan,
    addrs: &mut Vec<AddressRecord>,
    changes: &mut Vec<Change>,
) -> Result<(), Error> {
    sysctl::apply(&p.sysctls, changes)?;
    for r in &p.dels {
        rtnl.del_address(lo, "lo", r.addr, r.prefix_len).await?;
        changes.push(Change::AddressRemoved { addr: r.addr, prefix_len: r.prefix_len, iface: "lo".into() });
    }
    for r in &p.adds {
        rtnl.add_address(lo, "lo", r.addr, r.prefix_len).await?;
        changes.push(Change::AddressAdded { addr: r.addr, prefix_len: r.prefix_len, iface: "lo".into() });
        addrs.push(AddressRecord { created: true, ..r.clone() });
    }
    Ok(())
}

/// Undo what start did. Without a record there is nothing to undo (an
/// empty report).
pub async fn stop() -> Result<Report, Incomplete> {
    let mut report = Report::default();
    match stop_into(&mut report.changes).await {
        Ok(()) => Ok(report),
        Err(e) => Err(report.failed(e)),
    }
}

async fn stop_into(changes: &mut Vec<Change>) -> Result<(), Error> {
    require_root("lvsctl realserver stop")?;
    let dir = state::dir();
    if !dir.exists() {
        // Never started on this host (not even a lock file).
        return Ok(());
    }
    let _lock = state::lock(&dir).await?;
    let path = state::path(&dir, Role::Realserver)?;
    let Some(mut st) = state::read::<RealserverState>(&path)? else { return Ok(()) };
    let (left, mut first_err) = sysctl::restore_all(&st.sysctls, changes);
    st.sysctls = left;
    let rtnl = Rtnl::connect()?;
    let (left, err) = rtnl.remove_created(std::mem::take(&mut st.addresses), changes).await;
    st.addresses = left;
    if let Some(e) = err {
        first_err.get_or_insert(e);
    }
    state::finish_stop(&path, &st, first_err)
}

/// `realserver status` (`--json` prints it as it is).
#[derive(Debug, Serialize)]
pub struct Status {
    /// `realserver`.
    pub role: &'static str,
    /// `running`, `degraded` or `not running`.
    pub status: &'static str,
    /// The exit status (LSB): 0 running, 1 degraded, 3 not running.
    pub exit_code: u8,
    /// What is missing or differs.
    pub problems: Vec<String>,
    /// The VIPs on `lo`.
    pub addresses: Vec<AddrStatus>,
    /// The ARP sysctls.
    pub sysctls: Vec<sysctl::SysctlStatus>,
}

/// Compare addresses and sysctls with what start configured.
pub async fn status() -> Result<Status, Error> {
    let dir = state::dir();
    let path = state::path(&dir, Role::Realserver)?;
    let Some(st) = state::read::<RealserverState>(&path)? else {
        let (problems, addresses, sysctls) = (vec![], vec![], vec![]);
        return Ok(Status { role: "realserver", status: "not running", exit_code: 3, problems, addresses, sysctls });
    };
    let rtnl = Rtnl::connect()?;
    let mut problems = Vec::new();
    let present = match rtnl.link_index("lo").await? {
        Some(i) => rtnl.addresses(i).await?,
        None => Vec::new(),
    };
    let mut addresses = Vec::new();
    for r in &st.addresses {
        let ok = present.iter().any(|(a, _)| *a == r.addr);
        if !ok {
            problems.push(format!("VIP {}/{} is not on lo", r.addr, r.prefix_len));
        }
        addresses.push(AddrStatus { addr: r.addr, prefix_len: r.prefix_len, iface: r.iface.clone(), present: ok });
    }
    let sysctls = sysctl::status(&st.sysctls, &mut problems);
    let (status, code) = if problems.is_empty() { ("running", 0) } else { ("degraded", 1) };
    Ok(Status { role: "realserver", status, exit_code: code, problems, addresses, sysctls })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(a: &str, created: bool) -> AddressRecord {
        AddressRecord { addr: a.parse().unwrap(), prefix_len: 32, iface: "lo".into(), created }
    }

    fn prev(addrs: Vec<AddressRecord>) -> Option<RealserverState> {
        Some(RealserverState { format: state::FORMAT, iface: None, addresses: addrs, sysctls: vec![] })
    }

    /// Each case: VIPs on `lo`, the earlier record, then the VIPs added,
    /// kept (with whether lvsctl owns them) and removed, and whether a record
    /// is written ahead.
    #[test]
    fn plan_adds_keeps_and_removes_only_what_it_owns() {
        let spec = RealserverSpec { vips: vec!["10.19.70.166".parse().unwrap()], iface: None };
        type Case = (&'static str, Vec<&'static str>, Option<RealserverState>, usize, Vec<bool>, usize, bool);
        let cases: Vec<Case> = vec![
            ("first start", vec![], None, 1, vec![], 0, true),
            ("already there before lvsctl: kept, not owned", vec!["10.19.70.166"], None, 0, vec![false], 0, false),
            (
                "added earlier: kept and owned",
                vec!["10.19.70.166"],
                prev(vec![rec("10.19.70.166", true)]),
                0,
                vec![true],
                0,
                false,
            ),
            (
                "a VIP no longer wanted that lvsctl added goes",
                vec!["10.19.70.166", "10.19.70.167"],
                prev(vec![rec("10.19.70.166", true), rec("10.19.70.167", true)]),
                0,
                vec![true],
                1,
                true,
            ),
            (
                "one it found there stays",
                vec!["10.19.70.166", "10.19.70.167"],
                prev(vec![rec("10.19.70.166", true), rec("10.19.70.167", false)]),
                0,
                vec![true],
                0,
                false,
            ),
        ];
        for (what, on_lo, prev, adds, kept, dels, ahead) in cases {
            let obs =
                Observed { on_lo: on_lo.iter().map(|a| a.parse().unwrap()).collect(), prev, ..Observed::default() };
            let p = plan(&spec, obs);
            assert_eq!(p.adds.len(), adds, "{what}");
            assert_eq!(p.kept.iter().map(|r| r.created).collect::<Vec<_>>(), kept, "{what}");
            assert_eq!(p.dels.len(), dels, "{what}");
            assert_eq!(p.write_ahead.is_some(), ahead, "{what}");
            if let Some(w) = &p.write_ahead {
                // The record claims what is added and what is being removed.
                assert_eq!(
                    w.addresses.iter().filter(|r| r.created).count(),
                    adds + dels + kept.iter().filter(|c| **c).count(),
                    "{what}"
                );
            }
        }
    }
}
