//! [`Op`], one change to the table, and what became of it in a bulk
//! [`Ipvs::apply`](crate::Ipvs::apply): no I/O here, so that the planner
//! ([`reconcile`](crate::reconcile)) and the encoder share it with the handle.

use std::net::SocketAddr;

use ipvs_sys::{IpvsAttr, IpvsCmd, IpvsMessage};

use crate::convert::{dest_attrs, dest_key_attrs, service_attrs, service_key_attrs};
use crate::error::{dest_err, svc_err, svc_err_full, Error, Result};
use crate::types::*;

/// One change to the table, for [`Ipvs::apply`](crate::Ipvs::apply).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Add a virtual service.
    AddService(Service),
    /// Change a virtual service.
    UpdateService(Service),
    /// Delete a virtual service.
    DeleteService(ServiceKey),
    /// Add a destination.
    AddDestination(ServiceKey, Destination),
    /// Change a destination.
    UpdateDestination(ServiceKey, Destination),
    /// Delete a destination.
    DeleteDestination(ServiceKey, SocketAddr),
}

impl Op {
    /// Check the operation as the single-request methods do.
    pub fn validate(&self) -> Result<()> {
        match self {
            Op::AddService(s) | Op::UpdateService(s) => s.validate(),
            Op::AddDestination(k, d) | Op::UpdateDestination(k, d) => d.validate(k),
            Op::DeleteService(_) | Op::DeleteDestination(..) => Ok(()),
        }
    }

    /// The virtual service the operation is about.
    pub fn service_key(&self) -> &ServiceKey {
        match self {
            Op::AddService(s) | Op::UpdateService(s) => &s.key,
            Op::DeleteService(k)
            | Op::AddDestination(k, _)
            | Op::UpdateDestination(k, _)
            | Op::DeleteDestination(k, _) => k,
        }
    }

    /// The request as a message: the reference `emit::emit_op` is tested against.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn message(&self) -> IpvsMessage {
        match self {
            Op::AddService(s) => IpvsMessage::new(IpvsCmd::NewService, vec![IpvsAttr::Service(service_attrs(s))]),
            Op::UpdateService(s) => IpvsMessage::new(IpvsCmd::SetService, vec![IpvsAttr::Service(service_attrs(s))]),
            Op::DeleteService(k) => {
                IpvsMessage::new(IpvsCmd::DelService, vec![IpvsAttr::Service(service_key_attrs(k))])
            }
            Op::AddDestination(k, d) => dest_msg(IpvsCmd::NewDest, k, dest_attrs(d)),
            Op::UpdateDestination(k, d) => dest_msg(IpvsCmd::SetDest, k, dest_attrs(d)),
            Op::DeleteDestination(k, a) => dest_msg(IpvsCmd::DelDest, k, dest_key_attrs(*a)),
        }
    }

    /// The error for the kernel's answer `errno` to this operation.
    pub(crate) fn error(&self, errno: i32) -> Error {
        match self {
            Op::AddService(s) | Op::UpdateService(s) => svc_err_full(s, errno),
            Op::DeleteService(k) => svc_err(k, errno),
            Op::AddDestination(k, d) | Op::UpdateDestination(k, d) => dest_err(k, d.addr, errno),
            Op::DeleteDestination(k, a) => dest_err(k, *a, errno),
        }
    }
}

impl std::fmt::Display for Op {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Op::AddService(s) => write!(f, "add service {} ({})", s.key, s.scheduler),
            Op::UpdateService(s) => write!(f, "edit service {} ({})", s.key, s.scheduler),
            Op::DeleteService(k) => write!(f, "delete service {k}"),
            Op::AddDestination(k, d) => {
                write!(f, "add real server {} to {k} ({}, weight {})", d.addr, d.forward.name(), d.weight)
            }
            Op::UpdateDestination(k, d) => {
                write!(f, "edit real server {} of {k} ({}, weight {})", d.addr, d.forward.name(), d.weight)
            }
            Op::DeleteDestination(k, a) => write!(f, "delete real server {a} of {k}"),
        }
    }
}

/// A request of one destination: the service's identity, then the destination's attributes.
pub(crate) fn dest_msg(cmd: IpvsCmd, key: &ServiceKey, dest: Vec<ipvs_sys::DestAttr>) -> IpvsMessage {
    IpvsMessage::new(cmd, vec![IpvsAttr::Service(service_key_attrs(key)), IpvsAttr::Dest(dest)])
}

/// What became of one operation of [`Ipvs::apply`](crate::Ipvs::apply).
///
/// [`Done`](OpOutcome::Done) and [`Unknown`](OpOutcome::Unknown) may have
/// changed the table; [`Failed`](OpOutcome::Failed) and
/// [`NotSent`](OpOutcome::NotSent) did not. A caller that keeps records of what
/// it created must count an unknown add as possibly done, and read the table
/// again before deciding anything about it.
#[derive(Debug)]
pub enum OpOutcome {
    /// The kernel did it.
    Done,
    /// The kernel refused it with this error; it changed nothing.
    Failed(Error),
    /// It was sent, but the batch was cut short (see [`Applied::interrupted`])
    /// before the kernel's answer arrived: it may or may not have been done.
    Unknown,
    /// It was not sent: the batch was cut short before it.
    NotSent,
}

impl OpOutcome {
    /// Whether the kernel is known to have done it.
    pub fn is_done(&self) -> bool {
        matches!(self, Self::Done)
    }

    /// Whether it may have changed the table ([`Done`](Self::Done) or [`Unknown`](Self::Unknown)).
    pub fn maybe_done(&self) -> bool {
        matches!(self, Self::Done | Self::Unknown)
    }

    /// The kernel's refusal, for [`Failed`](Self::Failed).
    pub fn error(&self) -> Option<&Error> {
        match self {
            Self::Failed(e) => Some(e),
            _ => None,
        }
    }
}

/// The result of [`Ipvs::apply`](crate::Ipvs::apply): one [`OpOutcome`] per
/// operation, in order, and the error that cut the batch short, if one did.
///
/// ```no_run
/// # async fn f(ipvs: ipvs::Ipvs, ops: Vec<ipvs::Op>) -> Result<(), ipvs::Error> {
/// use ipvs::OpOutcome;
/// let applied = ipvs.apply(&ops).await?;
/// if let Some(e) = applied.interrupted() {
///     eprintln!("the batch was cut short: {e}; read the table again");
/// }
/// for (op, outcome) in ops.iter().zip(applied) {
///     match outcome {
///         OpOutcome::Done => println!("{op}"),
///         OpOutcome::Failed(e) => eprintln!("{op}: {e}"),
///         OpOutcome::Unknown => eprintln!("{op}: perhaps done"),
///         OpOutcome::NotSent => eprintln!("{op}: not sent"),
///     }
/// }
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Applied {
    outcomes: Vec<OpOutcome>,
    interrupted: Option<Error>,
}

impl Applied {
    pub(crate) fn new(outcomes: Vec<OpOutcome>, interrupted: Option<Error>) -> Self {
        Self { outcomes, interrupted }
    }

    /// One outcome per operation, in order.
    pub fn outcomes(&self) -> &[OpOutcome] {
        &self.outcomes
    }

    /// The socket error or deadline that cut the batch short: every operation
    /// from the first [`OpOutcome::Unknown`] on has no known result.
    pub fn interrupted(&self) -> Option<&Error> {
        self.interrupted.as_ref()
    }

    /// Whether every operation was done.
    pub fn all_done(&self) -> bool {
        self.interrupted.is_none() && self.outcomes.iter().all(OpOutcome::is_done)
    }

    /// Number of operations.
    pub fn len(&self) -> usize {
        self.outcomes.len()
    }

    /// Whether there was no operation.
    pub fn is_empty(&self) -> bool {
        self.outcomes.is_empty()
    }

    /// The outcomes, in order.
    pub fn iter(&self) -> std::slice::Iter<'_, OpOutcome> {
        self.outcomes.iter()
    }

    /// The outcomes and the interrupting error.
    pub fn into_parts(self) -> (Vec<OpOutcome>, Option<Error>) {
        (self.outcomes, self.interrupted)
    }
}

impl std::ops::Index<usize> for Applied {
    type Output = OpOutcome;
    fn index(&self, i: usize) -> &OpOutcome {
        &self.outcomes[i]
    }
}

impl IntoIterator for Applied {
    type Item = OpOutcome;
    type IntoIter = std::vec::IntoIter<OpOutcome>;
    fn into_iter(self) -> Self::IntoIter {
        self.outcomes.into_iter()
    }
}

impl<'a> IntoIterator for &'a Applied {
    type Item = &'a OpOutcome;
    type IntoIter = std::slice::Iter<'a, OpOutcome>;
    fn into_iter(self) -> Self::IntoIter {
        self.outcomes.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_tell_what_may_have_changed() {
        let a = Applied::new(
            vec![OpOutcome::Done, OpOutcome::Failed(Error::invalid("no")), OpOutcome::Unknown, OpOutcome::NotSent],
            Some(Error::invalid("cut short")),
        );
        assert_eq!(a.iter().map(OpOutcome::maybe_done).collect::<Vec<_>>(), [true, false, true, false]);
        assert_eq!(a.iter().map(OpOutcome::is_done).collect::<Vec<_>>(), [true, false, false, false]);
        assert!(a[1].error().is_some() && a[2].error().is_none());
        assert!(!a.all_done());
        assert!(Applied::new(vec![OpOutcome::Done], None).all_done());
        // Cut short before anything was sent: not all done, though no operation failed.
        assert!(!Applied::new(vec![], Some(Error::invalid("cut short"))).all_done());
    }
}
