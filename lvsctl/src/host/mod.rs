//! Host plumbing for the director and the real server: addresses over
//! rtnetlink ([`addr`]), the per-interface sysctls ([`sysctl`]), and the
//! [`Change`]s both report.

pub mod addr;
pub mod bird;
pub mod sysctl;

use std::fmt;
use std::net::IpAddr;

use crate::Error;

/// One change made to the host, as a run reports it (the command prints
/// each as a line: `director: added 10.19.70.166/32 to eth0`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Change {
    /// An IPVS operation that was carried out.
    Ipvs(ipvs::Op),
    /// An IPVS operation that undid an earlier one of the same run (after a
    /// later one failed).
    Undone(ipvs::Op),
    /// An address was added.
    AddressAdded {
        /// The address.
        addr: IpAddr,
        /// Its prefix length.
        prefix_len: u8,
        /// The interface.
        iface: String,
    },
    /// An address was removed.
    AddressRemoved {
        /// The address.
        addr: IpAddr,
        /// Its prefix length.
        prefix_len: u8,
        /// The interface.
        iface: String,
    },
    /// A sysctl was set.
    SysctlSet {
        /// Its path under `/proc/sys`.
        path: String,
        /// The value written.
        value: String,
        /// The value it had.
        was: String,
    },
    /// A sysctl was put back to the value it had before lvsctl set it.
    SysctlRestored {
        /// Its path under `/proc/sys`.
        path: String,
        /// The value written back.
        value: String,
        /// The value it had, when it was read.
        was: Option<String>,
    },
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ipvs(op) => write!(f, "{op}"),
            Self::Undone(op) => write!(f, "undone: {op}"),
            Self::AddressAdded { addr, prefix_len, iface } => write!(f, "added {addr}/{prefix_len} to {iface}"),
            Self::AddressRemoved { addr, prefix_len, iface } => write!(f, "removed {addr}/{prefix_len} from {iface}"),
            Self::SysctlSet { path, value, was } => write!(f, "set {path} = {value} (was {was})"),
            Self::SysctlRestored { path, value, was: Some(was) } => write!(f, "restored {path} = {value} (was {was})"),
            Self::SysctlRestored { path, value, was: None } => write!(f, "restored {path} = {value}"),
        }
    }
}

impl Change {
    /// What kind of change this is, for a summary (`services added`).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Ipvs(ipvs::Op::AddService(_)) => "services added",
            Self::Ipvs(ipvs::Op::UpdateService(_)) => "services changed",
            Self::Ipvs(ipvs::Op::DeleteService(_)) => "services removed",
            Self::Ipvs(ipvs::Op::AddDestination(..)) => "real servers added",
            Self::Ipvs(ipvs::Op::UpdateDestination(..)) => "real servers changed",
            Self::Ipvs(ipvs::Op::DeleteDestination(..)) => "real servers removed",
            Self::Undone(_) => "operations undone",
            Self::AddressAdded { .. } => "addresses added",
            Self::AddressRemoved { .. } => "addresses removed",
            Self::SysctlSet { .. } => "sysctls set",
            Self::SysctlRestored { .. } => "sysctls restored",
        }
    }
}

/// How many changes of each kind `changes` holds, in order of first
/// appearance: `1000 services added, 4000 real servers added`.
pub fn summarize(changes: &[Change]) -> String {
    let mut counts: Vec<(&str, usize)> = Vec::new();
    for c in changes {
        match counts.iter_mut().find(|(k, _)| *k == c.kind()) {
            Some((_, n)) => *n += 1,
            None => counts.push((c.kind(), 1)),
        }
    }
    counts.iter().map(|(k, n)| format!("{n} {k}")).collect::<Vec<_>>().join(", ")
}

/// What a run of either role did.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct Report {
    /// Every change made, in order.
    pub changes: Vec<Change>,
    /// Virtual services configured (director) or VIPs (real server).
    pub services: usize,
    /// Real servers configured (director).
    pub real_servers: usize,
}

/// A run that failed part-way: what it changed before the error, and the
/// error. Converts into the bare [`Error`] for callers that only need that.
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct Incomplete {
    /// The changes made before the error (they stay, and are recorded).
    pub report: Report,
    /// What failed.
    #[source]
    pub error: Error,
}

impl From<Incomplete> for Error {
    fn from(i: Incomplete) -> Self {
        i.error
    }
}

impl Report {
    /// This report, ended by `error`.
    pub fn failed(self, error: impl Into<Error>) -> Incomplete {
        Incomplete { report: self, error: error.into() }
    }
}

/// Whether `ip` is an address of this host (in this network namespace):
/// binding a socket to it works only then.
pub fn is_local(ip: IpAddr) -> bool {
    std::net::UdpSocket::bind(std::net::SocketAddr::new(ip, 0)).is_ok()
}

/// A program: the path in `$env_var` when set, else `name` on PATH or in
/// the sbin folders.
pub fn find_program(env_var: &str, name: &str) -> Option<std::path::PathBuf> {
    if let Some(p) = std::env::var_os(env_var) {
        return Some(p.into());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let sbin = ["/usr/local/sbin", "/usr/sbin", "/sbin"].map(std::path::PathBuf::from);
    std::env::split_paths(&path).chain(sbin).map(|d| d.join(name)).find(|p| p.is_file())
}

/// Fail with [`Error::NotRoot`] unless running as root.
pub fn require_root(what: &str) -> Result<(), Error> {
    // SAFETY: geteuid has no preconditions.
    #[allow(unsafe_code)]
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        return Err(Error::NotRoot { what: what.to_owned(), euid });
    }
    Ok(())
}
