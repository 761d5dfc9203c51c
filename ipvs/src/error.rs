//! Errors of the `ipvs` library.

use std::io;

/// What went wrong. One variant per thing a caller handles differently.
///
/// ```no_run
/// # async fn f() -> Result<(), ipvs::Error> {
/// use ipvs::{Error, Scheduler, Service, ServiceKey};
/// let ipvs = ipvs::Ipvs::connect().await?;
/// let s = Service::new(ServiceKey::tcp("10.0.0.1:80".parse().unwrap()), Scheduler::Rr);
/// match ipvs.add_service(&s).await {
///     Ok(()) | Err(Error::ServiceExists(_)) => {} // idempotent add
///     Err(Error::SchedulerNotFound(msg)) => eprintln!("{msg}"),
///     Err(Error::PermissionDenied) => eprintln!("run as root"),
///     Err(e) if e.errno() == Some(libc::EINVAL) => eprintln!("the kernel refused it: {e}"),
///     Err(e) => return Err(e),
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The virtual service already exists (`EEXIST` on add).
    #[error("virtual service {0} already exists")]
    ServiceExists(String),
    /// No such virtual service (`ESRCH`).
    #[error("no such virtual service {0}")]
    NoSuchService(String),
    /// The destination already exists in that service (`EEXIST` on add).
    #[error("real server {0} already exists")]
    DestinationExists(String),
    /// No such destination in that service (`ENOENT`).
    #[error("no such real server {0}")]
    NoSuchDestination(String),
    /// The kernel has no scheduler or persistence engine of that name (`ENOENT` on a service).
    #[error("{0}")]
    SchedulerNotFound(String),
    /// A sync daemon of that state already runs (`EEXIST`).
    #[error("{0} sync daemon is already running")]
    DaemonExists(String),
    /// No sync daemon of that state runs (`ESRCH`).
    #[error("no {0} sync daemon is running")]
    NoSuchDaemon(String),
    /// The caller lacks `CAP_NET_ADMIN` in the initial user namespace (`EPERM`).
    #[error("permission denied: IPVS needs root (CAP_NET_ADMIN in the initial user namespace)")]
    PermissionDenied,
    /// The kernel has no IPVS (the `IPVS` generic netlink family is missing).
    #[error("IPVS is not available in this kernel: {0}")]
    NotAvailable(String),
    /// The input was refused before anything was sent: it names the problem.
    #[error("{0}")]
    Invalid(String),
    /// The kernel refused a request with `errno`.
    #[error("{context}: {}", io::Error::from_raw_os_error(*errno))]
    Kernel {
        /// What was being done.
        context: String,
        /// The positive errno (EINVAL, ERANGE, ENODEV, ...).
        errno: i32,
    },
    /// No reply within the handle's deadline.
    #[error("no reply from the kernel within {0:?} ({1})")]
    Timeout(std::time::Duration, String),
    /// A socket or namespace operation failed.
    #[error("{0}: {1}")]
    Io(String, #[source] io::Error),
    /// A reply could not be decoded.
    #[error("could not decode the kernel's reply: {0}")]
    Decode(String),
}

impl Error {
    /// An [`Error::Invalid`] with this message.
    pub fn invalid(msg: impl Into<String>) -> Self {
        Self::Invalid(msg.into())
    }

    /// The errno the kernel answered with, when the error came from the kernel.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Self::ServiceExists(_) | Self::DestinationExists(_) | Self::DaemonExists(_) => Some(libc::EEXIST),
            Self::NoSuchService(_) | Self::NoSuchDaemon(_) => Some(libc::ESRCH),
            Self::NoSuchDestination(_) | Self::SchedulerNotFound(_) => Some(libc::ENOENT),
            Self::PermissionDenied => Some(libc::EPERM),
            Self::Kernel { errno, .. } => Some(*errno),
            Self::Io(_, e) => e.raw_os_error(),
            _ => None,
        }
    }
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
