//! The library's error type.

use std::path::PathBuf;

use ipvs::ServiceKey;

/// What went wrong. Every variant's message is one line, naming the problem;
/// the `lvsctl` command prints it and maps the variant to its exit status.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The input is invalid: a config file (with file, line and column) or
    /// values given by a caller. Nothing was changed.
    #[error("{0}")]
    Invalid(String),
    /// An interface the configuration names does not exist. Nothing was changed.
    #[error("no such interface {0}")]
    NoSuchInterface(String),
    /// A configured virtual service exists and lvsctl did not create it: it
    /// is never taken over. Nothing was changed.
    #[error(
        "virtual service {0} already exists and lvsctl did not create it: delete it first (ipvsadm -D {key}) or leave it out",
        key = ipvsadm_key(.0)
    )]
    ForeignService(ServiceKey),
    /// The operation needs root.
    #[error("{what} must be run as root (euid is {euid}): permission denied")]
    NotRoot {
        /// The operation, as the user named it (`lvsctl director start`).
        what: String,
        /// The effective user id it ran with.
        euid: u32,
    },
    /// The kernel's IPVS refused a request, or could not be reached.
    #[error(transparent)]
    Ipvs(#[from] ipvs::Error),
    /// A file or system call failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done (`cannot write the state file /run/lvsctl/...`).
        what: String,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
    /// A route netlink request (addresses, interfaces) failed.
    #[error("{what}: {reason}")]
    Netlink {
        /// What was being done (`cannot add 10.0.0.1/32 to eth0`).
        what: String,
        /// The kernel's error number, when it answered with one.
        errno: Option<i32>,
        /// The reason, as text.
        reason: String,
    },
    /// A state file cannot be understood.
    #[error("the state file {} is damaged ({reason}); remove it only after checking the host by hand", path.display())]
    StateDamaged {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Another lvsctl run held the lock for longer than this run waits.
    #[error("another lvsctl run holds {} (waited {} s); try again later", path.display(), waited.as_secs())]
    Busy {
        /// The lock file.
        path: PathBuf,
        /// How long this run waited for it.
        waited: std::time::Duration,
    },
    /// A director daemon already runs in this network namespace.
    #[error(
        "another lvsctl director run already runs in this network namespace{} (it holds {}); stop it first",
        pid.map(|p| format!(" (pid {p})")).unwrap_or_default(),
        path.display()
    )]
    AlreadyRunning {
        /// The daemon's lock file.
        path: PathBuf,
        /// The process holding it, when known.
        pid: Option<u32>,
    },
    /// Any other failure.
    #[error("{0}")]
    Failed(String),
}

/// The library's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The OS error number underneath, when there is one (`EACCES`, ...).
    pub fn os_error(&self) -> Option<i32> {
        match self {
            Self::Io { source, .. } => source.raw_os_error(),
            Self::Netlink { errno, .. } => *errno,
            Self::Ipvs(e) => e.errno(),
            _ => None,
        }
    }

    /// Whether the error means "not permitted": not root, or the kernel or a
    /// file refused for lack of privilege.
    pub fn is_permission(&self) -> bool {
        match self {
            Self::NotRoot { .. } | Self::Ipvs(ipvs::Error::PermissionDenied) => true,
            Self::Io { .. } | Self::Netlink { .. } => {
                matches!(self.os_error(), Some(libc::EACCES) | Some(libc::EPERM) | Some(libc::EROFS))
            }
            _ => false,
        }
    }

    /// Whether the error is about the input (nothing was changed because the
    /// input was refused before the first change).
    pub fn is_input(&self) -> bool {
        matches!(
            self,
            Self::Invalid(_) | Self::NoSuchInterface(_) | Self::ForeignService(_) | Self::Ipvs(ipvs::Error::Invalid(_))
        )
    }
}

/// The ipvsadm options naming a virtual service: `-t 10.0.0.1:80`, `-f 7`.
pub(crate) fn ipvsadm_key(key: &ServiceKey) -> String {
    match key {
        ServiceKey::Inet { protocol, addr } => {
            let p = match protocol {
                ipvs::Protocol::Tcp => "-t",
                ipvs::Protocol::Udp => "-u",
                ipvs::Protocol::Sctp => "--sctp-service",
                // ipvsadm's own name for a protocol it does not know.
                ipvs::Protocol::Other(_) => "--xxx-service",
            };
            format!("{p} {addr}")
        }
        ServiceKey::Fwmark { mark, .. } => format!("-f {mark}"),
    }
}
