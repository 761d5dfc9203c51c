//! Host plumbing for `director` and `realserver`: addresses over rtnetlink
//! ([`addr`]) and the per-interface ARP sysctls ([`sysctl`]).

pub(crate) mod addr;
pub(crate) mod sysctl;

use crate::CliError;

/// Fail with exit status 4 unless running as root.
pub(crate) fn require_root(what: &str) -> Result<(), CliError> {
    // SAFETY: geteuid has no preconditions.
    #[allow(unsafe_code)]
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        return Err(CliError::not_permitted(format!("{what} must be run as root (euid is {euid}): permission denied")));
    }
    Ok(())
}
