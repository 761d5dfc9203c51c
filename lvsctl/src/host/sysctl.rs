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

use crate::state::SysctlRecord;
use crate::CliError;

/// Where the per-interface IPv4 sysctls live.
pub(crate) const CONF_ROOT: &str = "/proc/sys/net/ipv4/conf";
/// Where the per-interface IPv6 sysctls live.
pub(crate) const CONF6_ROOT: &str = "/proc/sys/net/ipv6/conf";

/// `<root>/<iface>/<name>`. `iface` must be a valid interface name (or
/// `all` / `default`): it has no `/` and is not `.` or `..`.
pub(crate) fn path(root: &Path, iface: &str, name: &str) -> PathBuf {
    debug_assert!(!iface.contains('/') && iface != "." && iface != "..");
    root.join(iface).join(name)
}

fn full_path(ipv6: bool, iface: &str, name: &str) -> PathBuf {
    path(Path::new(if ipv6 { CONF6_ROOT } else { CONF_ROOT }), iface, name)
}

/// Read `net/ipv{4,6}/conf/<iface>/<name>` (trimmed).
pub(crate) fn read(ipv6: bool, iface: &str, name: &str) -> Result<String, CliError> {
    let p = full_path(ipv6, iface, name);
    std::fs::read_to_string(&p)
        .map(|s| s.trim().to_owned())
        .map_err(|e| CliError::failure(format!("cannot read {}: {e}", p.display())))
}

/// Write `value` to `net/ipv{4,6}/conf/<iface>/<name>`.
pub(crate) fn write(ipv6: bool, iface: &str, name: &str, value: &str) -> Result<(), CliError> {
    let p = full_path(ipv6, iface, name);
    std::fs::write(&p, format!("{value}\n")).map_err(|e| {
        let msg = format!("cannot write {value} to {}: {e}", p.display());
        if matches!(e.raw_os_error(), Some(libc::EACCES) | Some(libc::EPERM)) {
            CliError::not_permitted(msg)
        } else {
            CliError::failure(msg)
        }
    })
}

/// `/proc/sys/net/ipv{4,6}/conf/<iface>/<name>`, for messages.
pub(crate) fn display(ipv6: bool, iface: &str, name: &str) -> String {
    full_path(ipv6, iface, name).display().to_string()
}

/// A sysctl a role wants: `(ipv6, iface, name, value)`.
pub(crate) type Want = (bool, String, &'static str, &'static str);

/// What a `start` does to the sysctls it manages.
#[derive(Debug, Default)]
pub(crate) struct Plan {
    /// Every wanted sysctl, with the value to restore on stop: the one it
    /// had before the first start (kept from the previous state).
    pub(crate) records: Vec<SysctlRecord>,
    /// The wanted sysctls that do not have their value yet, with the value
    /// they have.
    pub(crate) writes: Vec<(SysctlRecord, String)>,
    /// Sysctls a previous start set that are not wanted any more: they go
    /// back to their previous values.
    pub(crate) restores: Vec<SysctlRecord>,
}

impl Plan {
    /// Whether applying the plan changes anything.
    pub(crate) fn is_empty(&self) -> bool {
        self.writes.is_empty() && self.restores.is_empty()
    }

    /// The records a state written ahead of [`apply`] holds: every one the
    /// plan may change, so that stop can undo a run that dies half-way.
    pub(crate) fn claim(&self) -> Vec<SysctlRecord> {
        self.records.iter().chain(&self.restores).cloned().collect()
    }

    /// The records the state keeps after [`apply`]: the wanted ones, and
    /// when it `failed` also those it may not have restored yet.
    pub(crate) fn kept(self, failed: bool) -> Vec<SysctlRecord> {
        let mut r = self.records;
        if failed {
            r.extend(self.restores);
        }
        r
    }
}

/// Read the wanted sysctls (an unreadable one is an error: nothing has
/// changed yet) and work out what start has to do, given the records of a
/// previous start.
pub(crate) fn plan(wanted: &[Want], prev: &[SysctlRecord]) -> Result<Plan, CliError> {
    let mut p = Plan::default();
    for (ipv6, iface, name, value) in wanted {
        let current = read(*ipv6, iface, name)?;
        let previous = prev
            .iter()
            .find(|r| r.ipv6 == *ipv6 && r.iface == *iface && r.name == *name)
            .map_or_else(|| current.clone(), |r| r.previous.clone());
        let rec = SysctlRecord {
            ipv6: *ipv6,
            iface: iface.clone(),
            name: (*name).to_owned(),
            previous,
            value: (*value).to_owned(),
        };
        if current != *value {
            p.writes.push((rec.clone(), current));
        }
        p.records.push(rec);
    }
    p.restores = prev
        .iter()
        .filter(|o| !p.records.iter().any(|r| r.ipv6 == o.ipv6 && r.iface == o.iface && r.name == o.name))
        .cloned()
        .collect();
    Ok(p)
}

/// Carry out a plan (restores first, then writes), printing each change as
/// `<who>: ...` and counting it in `changes`. Stops at the first error.
pub(crate) fn apply(p: &Plan, who: &str, changes: &mut usize) -> Result<(), CliError> {
    for r in &p.restores {
        if read(r.ipv6, &r.iface, &r.name).is_ok() {
            write(r.ipv6, &r.iface, &r.name, &r.previous)?;
            println!("{who}: restored {} = {}", display(r.ipv6, &r.iface, &r.name), r.previous);
            *changes += 1;
        }
    }
    for (r, was) in &p.writes {
        write(r.ipv6, &r.iface, &r.name, &r.value)?;
        println!("{who}: set {} = {} (was {was})", display(r.ipv6, &r.iface, &r.name), r.value);
        *changes += 1;
    }
    Ok(())
}

/// What `stop` does: every recorded sysctl back to its previous value, in
/// reverse order. Returns the records that could not be restored (and must
/// stay in the state) and the first error. A sysctl of an interface that is
/// gone went with it; `all`, `default` and `lo` do not go.
pub(crate) fn restore_all(records: &[SysctlRecord], who: &str) -> (Vec<SysctlRecord>, Option<CliError>) {
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
            Ok(()) => println!("{who}: restored {} = {} (was {cur})", display(r.ipv6, &r.iface, &r.name), r.previous),
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
pub(crate) struct SysctlStatus {
    pub(crate) path: String,
    /// What the kernel has now (`null`: unreadable).
    pub(crate) value: Option<String>,
    /// What start set.
    pub(crate) want: String,
    /// What stop will restore.
    pub(crate) previous: String,
}

impl SysctlStatus {
    /// The human line of `status`.
    pub(crate) fn line(&self) -> String {
        format!(
            "{} = {} (set {}, restores {})",
            self.path,
            self.value.as_deref().unwrap_or("?"),
            self.want,
            self.previous
        )
    }
}

/// Read every recorded sysctl for `status`, adding what differs to `problems`.
pub(crate) fn status(records: &[SysctlRecord], problems: &mut Vec<String>) -> Vec<SysctlStatus> {
    let mut out = Vec::new();
    for r in records {
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
