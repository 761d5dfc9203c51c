//! The IPv4 per-interface sysctls under `/proc/sys/net/ipv4/conf/<if>/`.
//!
//! The path is built from the interface name as one path component, never
//! from a dotted sysctl key: `eth0.100` is `/proc/sys/net/ipv4/conf/eth0.100/`.
//! The values are those of the calling thread's network namespace.

use std::path::{Path, PathBuf};

use crate::CliError;

/// Where the per-interface IPv4 sysctls live.
pub(crate) const CONF_ROOT: &str = "/proc/sys/net/ipv4/conf";

/// `<root>/<iface>/<name>`. `iface` must be a valid interface name (or
/// `all` / `default`): it has no `/` and is not `.` or `..`.
pub(crate) fn path(root: &Path, iface: &str, name: &str) -> PathBuf {
    debug_assert!(!iface.contains('/') && iface != "." && iface != "..");
    root.join(iface).join(name)
}

/// Read `net/ipv4/conf/<iface>/<name>` (trimmed).
pub(crate) fn read(iface: &str, name: &str) -> Result<String, CliError> {
    let p = path(Path::new(CONF_ROOT), iface, name);
    std::fs::read_to_string(&p)
        .map(|s| s.trim().to_owned())
        .map_err(|e| CliError::failure(format!("cannot read {}: {e}", p.display())))
}

/// Write `value` to `net/ipv4/conf/<iface>/<name>`.
pub(crate) fn write(iface: &str, name: &str, value: &str) -> Result<(), CliError> {
    let p = path(Path::new(CONF_ROOT), iface, name);
    std::fs::write(&p, format!("{value}\n")).map_err(|e| {
        let msg = format!("cannot write {value} to {}: {e}", p.display());
        if matches!(e.raw_os_error(), Some(libc::EACCES) | Some(libc::EPERM)) {
            CliError::not_permitted(msg)
        } else {
            CliError::failure(msg)
        }
    })
}

/// `/proc/sys/net/ipv4/conf/<iface>/<name>`, for messages.
pub(crate) fn display(iface: &str, name: &str) -> String {
    path(Path::new(CONF_ROOT), iface, name).display().to_string()
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
        assert_eq!(display("all", "arp_announce"), "/proc/sys/net/ipv4/conf/all/arp_announce");
    }
}
