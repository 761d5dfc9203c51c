//! The per-interface sysctls under `/proc/sys/net/ipv4/conf/<if>/` (and
//! `/proc/sys/net/ipv6/conf/<if>/`), and what `start`, `stop` and `status` of
//! both roles do with the ones they manage: set them, remember the values they
//! had, put those back.
//!
//! The path is built from the interface name as one path component, never
//! from a dotted sysctl key: `eth0.100` is `/proc/sys/net/ipv4/conf/eth0.100/`.
//! The values are those of the calling thread's network namespace.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::host::Change;
use crate::state::SysctlRecord;
use crate::Error;

/// Where the per-interface IPv4 sysctls live.
pub const CONF_ROOT: &str = "/proc/sys/net/ipv4/conf";
/// Where the per-interface IPv6 sysctls live.
pub const CONF6_ROOT: &str = "/proc/sys/net/ipv6/conf";

/// `<root>/<iface>/<name>`. `iface` must be a valid interface name (or
/// `all` / `default`): it has no `/` and is not `.` or `..`.
pub fn path(root: &Path, iface: &str, name: &str) -> PathBuf {
    debug_assert!(!iface.contains('/') && iface != "." && iface != "..");
    root.join(iface).join(name)
}

fn full_path(ipv6: bool, iface: &str, name: &str) -> PathBuf {
    path(Path::new(if ipv6 { CONF6_ROOT } else { CONF_ROOT }), iface, name)
}

/// Read `net/ipv{4,6}/conf/<iface>/<name>` (trimmed).
pub fn read(ipv6: bool, iface: &str, name: &str) -> Result<String, Error> {
    let p = full_path(ipv6, iface, name);
    std::fs::read_to_string(&p)
        .map(|s| s.trim().to_owned())
        .map_err(|e| Error::Io { what: format!("cannot read {}", p.display()), source: e })
}

/// Write `value` to `net/ipv{4,6}/conf/<iface>/<name>`.
pub fn write(ipv6: bool, iface: &str, name: &str, value: &str) -> Result<(), Error> {
    let p = full_path(ipv6, iface, name);
    std::fs::write(&p, format!("{value}\n"))
        .map_err(|e| Error::Io { what: format!("cannot write {value} to {}", p.display()), source: e })
}

/// `/proc/sys/net/ipv{4,6}/conf/<iface>/<name>`, for messages.
pub fn display(ipv6: bool, iface: &str, name: &str) -> String {
    full_path(ipv6, iface, name).display().to_string()
}

/// A sysctl a role wants: `(ipv6, iface, name, value)`.
pub type Want = (bool, String, &'static str, &'static str);

/// What a `start` does to the sysctls it manages.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// Every wanted sysctl, with the value to restore on stop: the one it
    /// had before the first start (kept from the previous state).
    pub records: Vec<SysctlRecord>,
    /// The wanted sysctls that do not have their value yet, with the value
    /// they have.
    pub writes: Vec<(SysctlRecord, String)>,
    /// Sysctls a previous start set that are not wanted any more: they go
    /// back to their previous values.
    pub restores: Vec<SysctlRecord>,
}

impl Plan {
    /// Whether applying the plan changes anything.
    pub fn is_empty(&self) -> bool {
        self.writes.is_empty() && self.restores.is_empty()
    }

    /// The records a state written ahead of [`apply`] holds: every one the
    /// plan may change, so that stop can undo a run that dies half-way.
    pub fn claim(&self) -> Vec<SysctlRecord> {
        self.records.iter().chain(&self.restores).cloned().collect()
    }

    /// The records the state keeps after [`apply`]: the wanted ones, and
    /// when it `failed` also those it may not have restored yet.
    pub fn kept(self, failed: bool) -> Vec<SysctlRecord> {
        let mut r = self.records;
        if failed {
            r.extend(self.restores);
        }
        r
    }
}

/// What the kernel itself changes when `net/ipv{4,6}/conf/<iface>/<name>`
/// is set to `value`, as `(iface, name, value)`: writing `conf/all/forwarding`
/// sets `forwarding` of every interface and of `default` (IPv4 and IPv6) and,
/// in IPv4, `all/accept_redirects` to the opposite. Nothing for any other.
fn kernel_side_effects(ipv6: bool, iface: &str, name: &str, value: &str) -> Vec<(String, &'static str, String)> {
    if iface != "all" || name != "forwarding" {
        return Vec::new();
    }
    let root = if ipv6 { CONF6_ROOT } else { CONF_ROOT };
    let mut ifaces: Vec<String> = std::fs::read_dir(root)
        .map(|d| d.filter_map(|e| e.ok()?.file_name().into_string().ok()).collect())
        .unwrap_or_default();
    ifaces.retain(|i| i != "all" && crate::state::valid_ifname(i));
    ifaces.sort();
    let mut out: Vec<_> = ifaces.into_iter().map(|i| (i, "forwarding", value.to_owned())).collect();
    if !ipv6 {
        let redirects = if value == "0" { "1" } else { "0" };
        out.push(("all".to_owned(), "accept_redirects", redirects.to_owned()));
    }
    out
}

/// Read the wanted sysctls (an unreadable one is an error: nothing has
/// changed yet) and work out what start has to do, given the records of a
/// previous start.
///
/// A write the kernel follows with changes of its own (see
/// `kernel_side_effects`) records those too, with the values they had, so
/// that stop puts every one back. They come before the sysctl that causes
/// them: records are undone in reverse order, so that one is undone first
/// (which changes them all again) and then each is put back.
pub fn plan(wanted: &[Want], prev: &[SysctlRecord]) -> Result<Plan, Error> {
    let same =
        |a: &SysctlRecord, ipv6: bool, iface: &str, name: &str| a.ipv6 == ipv6 && a.iface == iface && a.name == name;
    let mut p = Plan::default();
    for (ipv6, iface, name, value) in wanted {
        let current = read(*ipv6, iface, name)?;
        let before = prev.iter().find(|r| !r.side_effect && same(r, *ipv6, iface, name));
        let previous = before.map_or_else(|| current.clone(), |r| r.previous.clone());
        let rec = SysctlRecord {
            ipv6: *ipv6,
            iface: iface.clone(),
            name: (*name).to_owned(),
            previous,
            value: (*value).to_owned(),
            side_effect: false,
        };
        let effects = kernel_side_effects(*ipv6, iface, name, value);
        // What an earlier start recorded stays, with its first values.
        let mut side: Vec<SysctlRecord> = prev
            .iter()
            .filter(|r| r.side_effect && effects.iter().any(|(i, n, _)| same(r, *ipv6, i, n)))
            .cloned()
            .collect();
        if current != *value {
            for (i, n, v) in &effects {
                if side.iter().any(|r| same(r, *ipv6, i, n)) {
                    continue;
                }
                // Recorded even when it has the kernel's value already: undoing
                // the cause on stop changes it all the same.
                let Ok(cur) = read(*ipv6, i, n) else { continue };
                side.push(SysctlRecord {
                    ipv6: *ipv6,
                    iface: i.clone(),
                    name: (*n).to_owned(),
                    previous: cur,
                    value: v.clone(),
                    side_effect: true,
                });
            }
            p.writes.push((rec.clone(), current));
        }
        p.records.extend(side);
        p.records.push(rec);
    }
    p.restores = prev
        .iter()
        .filter(|o| !p.records.iter().any(|r| r.side_effect == o.side_effect && same(r, o.ipv6, &o.iface, &o.name)))
        .cloned()
        .collect();
    Ok(p)
}

/// Carry out a plan (restores first, in reverse order as stop does, then
/// writes), adding each change to `changes`. Stops at the first error.
pub fn apply(p: &Plan, changes: &mut Vec<Change>) -> Result<(), Error> {
    for r in p.restores.iter().rev() {
        if read(r.ipv6, &r.iface, &r.name).is_ok() {
            write(r.ipv6, &r.iface, &r.name, &r.previous)?;
            let path = display(r.ipv6, &r.iface, &r.name);
            changes.push(Change::SysctlRestored { path, value: r.previous.clone(), was: None });
        }
    }
    for (r, was) in &p.writes {
        write(r.ipv6, &r.iface, &r.name, &r.value)?;
        let path = display(r.ipv6, &r.iface, &r.name);
        changes.push(Change::SysctlSet { path, value: r.value.clone(), was: was.clone() });
    }
    Ok(())
}

/// What `stop` does: every recorded sysctl back to its previous value, in
/// reverse order, adding each to `changes`. Returns the records that could not be restored (and must
/// stay in the state) and the first error. A sysctl of an interface that is
/// gone went with it; `all`, `default` and `lo` do not go.
pub fn restore_all(records: &[SysctlRecord], changes: &mut Vec<Change>) -> (Vec<SysctlRecord>, Option<Error>) {
    let mut first_err = None;
    let mut left = Vec::new();
    for r in records.iter().rev() {
        let cur = match read(r.ipv6, &r.iface, &r.name) {
            Ok(c) => c,
            Err(_) if !matches!(r.iface.as_str(), "all" | "default" | "lo") => continue,
            Err(e) => {
                first_err.get_or_insert(e);
                left.push(r.clone());
                continue;
            }
        };
        if cur == r.previous {
            continue;
        }
        match write(r.ipv6, &r.iface, &r.name, &r.previous) {
            Ok(()) => changes.push(Change::SysctlRestored {
                path: display(r.ipv6, &r.iface, &r.name),
                value: r.previous.clone(),
                was: Some(cur),
            }),
            Err(e) => {
                first_err.get_or_insert(e);
                left.push(r.clone());
            }
        }
    }
    left.reverse();
    (left, first_err)
}

/// A managed sysctl in `status`.
#[derive(Debug, Serialize)]
pub struct SysctlStatus {
    /// Its path under `/proc/sys`.
    pub path: String,
    /// What the kernel has now (`null`: unreadable).
    pub value: Option<String>,
    /// What start set.
    pub want: String,
    /// What stop will restore.
    pub previous: String,
}

impl SysctlStatus {
    /// The human line of `status`.
    pub fn line(&self) -> String {
        format!(
            "{} = {} (set {}, restores {})",
            self.path,
            self.value.as_deref().unwrap_or("?"),
            self.want,
            self.previous
        )
    }
}

/// Read every recorded sysctl for `status`, adding what differs to
/// `problems`. What the kernel changed on its own is not shown: start did not
/// ask for it, and the operator may change it since.
pub fn status(records: &[SysctlRecord], problems: &mut Vec<String>) -> Vec<SysctlStatus> {
    let mut out = Vec::new();
    for r in records.iter().filter(|r| !r.side_effect) {
        let value = read(r.ipv6, &r.iface, &r.name).ok();
        let p = display(r.ipv6, &r.iface, &r.name);
        match &value {
            None => problems.push(format!("{p} cannot be read (is interface {} gone?)", r.iface)),
            Some(v) if *v != r.value => problems.push(format!("{p} is {v}, want {}", r.value)),
            Some(_) => {}
        }
        out.push(SysctlStatus { path: p, value, want: r.value.clone(), previous: r.previous.clone() });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dotted_interface_names_stay_one_component() {
        assert_eq!(
            path(Path::new(CONF_ROOT), "eth0.100", "arp_ignore"),
            PathBuf::from("/proc/sys/net/ipv4/conf/eth0.100/arp_ignore")
        );
        assert_eq!(display(false, "all", "arp_announce"), "/proc/sys/net/ipv4/conf/all/arp_announce");
        assert_eq!(display(true, "all", "forwarding"), "/proc/sys/net/ipv6/conf/all/forwarding");
    }
}
