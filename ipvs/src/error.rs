//! Errors of the `ipvs` library.

use std::io;
use std::net::SocketAddr;

use crate::types::{Scheduler, Service, ServiceKey, SyncState};

/// What went wrong. One variant per thing a caller handles differently.
///
/// ```no_run
/// # async fn f() -> Result<(), ipvs::Error> {
/// use ipvs::{Error, Scheduler, Service, ServiceKey};
/// let ipvs = ipvs::Ipvs::connect().await?;
/// let s = Service::new(ServiceKey::tcp("10.0.0.1:80".parse().unwrap()), Scheduler::Rr);
/// match ipvs.add_service(&s).await {
///     Ok(()) | Err(Error::ServiceExists(_)) => {} // idempotent add
///     Err(e @ Error::SchedulerNotFound { .. }) => eprintln!("{e}"),
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
    ServiceExists(ServiceKey),
    /// No such virtual service (`ESRCH`).
    #[error("no such virtual service {0}")]
    NoSuchService(ServiceKey),
    /// The destination already exists in that service (`EEXIST` on add).
    #[error("real server {destination} already exists in {service}")]
    DestinationExists {
        /// The virtual service.
        service: ServiceKey,
        /// The destination's address and port.
        destination: SocketAddr,
    },
    /// No such destination in that service (`ENOENT`).
    #[error("no such real server {destination} in {service}")]
    NoSuchDestination {
        /// The virtual service.
        service: ServiceKey,
        /// The destination's address and port.
        destination: SocketAddr,
    },
    /// The kernel has no scheduler or persistence engine of that name (`ENOENT` on a service).
    #[error("{}", sched_not_found(scheduler, pe.as_deref()))]
    SchedulerNotFound {
        /// The scheduler asked for.
        scheduler: Scheduler,
        /// The persistence engine asked for, if any (either may be the missing one).
        pe: Option<String>,
    },
    /// A sync daemon of that state already runs (`EEXIST`).
    #[error("{} sync daemon is already running", .0.name())]
    DaemonExists(SyncState),
    /// No sync daemon of that state runs (`ESRCH`).
    #[error("no {} sync daemon is running", .0.name())]
    NoSuchDaemon(SyncState),
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
            Self::ServiceExists(_) | Self::DestinationExists { .. } | Self::DaemonExists(_) => Some(libc::EEXIST),
            Self::NoSuchService(_) | Self::NoSuchDaemon(_) => Some(libc::ESRCH),
            Self::NoSuchDestination { .. } | Self::SchedulerNotFound { .. } => Some(libc::ENOENT),
            Self::PermissionDenied => Some(libc::EPERM),
            Self::Kernel { errno, .. } => Some(*errno),
            Self::Io(_, e) => e.raw_os_error(),
            _ => None,
        }
    }
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

fn sched_not_found(scheduler: &Scheduler, pe: Option<&str>) -> String {
    match pe {
        Some(pe) => format!("scheduler {:?} or persistence engine {pe:?} not found in the kernel", scheduler.name()),
        None => {
            format!("scheduler {:?} not found in the kernel (no module ip_vs_{})", scheduler.name(), scheduler.name())
        }
    }
}

/// An [`Error::Kernel`].
pub(crate) fn kernel(context: &str, errno: i32) -> Error {
    Error::Kernel { context: context.to_owned(), errno }
}

/// Errors that mean the same whatever the request.
pub(crate) fn map_common(errno: i32) -> Option<Error> {
    match errno {
        libc::EPERM | libc::EACCES => Some(Error::PermissionDenied),
        _ => None,
    }
}

/// The kernel's answer `errno` to a request about the service `key`.
pub(crate) fn svc_err(key: &ServiceKey, errno: i32) -> Error {
    if let Some(e) = map_common(errno) {
        return e;
    }
    match errno {
        libc::ESRCH => Error::NoSuchService(*key),
        libc::EEXIST => Error::ServiceExists(*key),
        _ => kernel(&format!("service {key}"), errno),
    }
}

/// The kernel's answer `errno` to adding or editing the service `s`.
pub(crate) fn svc_err_full(s: &Service, errno: i32) -> Error {
    match errno {
        libc::ENOENT => Error::SchedulerNotFound { scheduler: s.scheduler.clone(), pe: s.pe.clone() },
        libc::EINVAL => {
            kernel(&format!("service {}: invalid argument (check netmask, scheduler flags, address)", s.key), errno)
        }
        _ => svc_err(&s.key, errno),
    }
}

/// The kernel's answer `errno` to a request about the destination `addr` of `key`.
pub(crate) fn dest_err(key: &ServiceKey, addr: SocketAddr, errno: i32) -> Error {
    if let Some(e) = map_common(errno) {
        return e;
    }
    match errno {
        libc::ESRCH => Error::NoSuchService(*key),
        libc::EEXIST => Error::DestinationExists { service: *key, destination: addr },
        libc::ENOENT => Error::NoSuchDestination { service: *key, destination: addr },
        libc::ERANGE => kernel(&format!("real server {addr} of {key}: weight or threshold out of range"), errno),
        libc::EINVAL => kernel(
            &format!(
                "real server {addr} of {key}: invalid (is the address unicast or local, and the forwarding method allowed?)"
            ),
            errno,
        ),
        _ => kernel(&format!("real server {addr} of {key}"), errno),
    }
}
