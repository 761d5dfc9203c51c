//! A typed, async (tokio) library for the Linux kernel's IP Virtual Server
//! (IPVS), spoken to over generic netlink.
//!
//! Everything the kernel's IPVS interface offers: virtual services (TCP, UDP,
//! SCTP, firewall marks; IPv4 and IPv6; every scheduler and its flags,
//! persistence, one-packet scheduling, persistence engines), destinations
//! (every forwarding method and tunnel type, weights, thresholds), statistics
//! and rates, timeouts, sync daemons, zero, flush and info; in any network
//! namespace; with bulk [`Ipvs::apply`] and a desired-state [`reconcile`].
//!
//! Words: a *virtual service* ([`Service`]) is what clients connect to; a
//! *destination* ([`Destination`], "real server" in ipvsadm) is where it
//! forwards, by a *forwarding method* ([`Forward`]); the *scheduler*
//! ([`Scheduler`]) picks a destination.
//!
//! The wire format lives in the [`ipvs_sys`] crate.
//!
//! ```no_run
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), ipvs::Error> {
//! let ipvs = ipvs::Ipvs::connect().await?;
//! for (svc, dests) in ipvs.dump().await? {
//!     println!("{} {}", svc.service.key, svc.service.scheduler);
//!     for d in dests {
//!         println!("  -> {} {} {}", d.destination.addr, d.destination.forward.name(), d.destination.weight);
//!     }
//! }
//! # Ok(()) }
//! ```
#![warn(missing_docs, unreachable_pub)]
#![deny(unsafe_code)]

mod conn;
mod convert;
mod dumpparse;
mod emit;
mod error;
mod handle;
mod op;
pub mod reconcile;
#[doc(hidden)]
pub mod replay;
mod types;

pub use error::{Error, Result};
pub use handle::{ConnectOptions, Ipvs, Table, DEFAULT_TIMEOUT};
pub use op::{Applied, Op, OpOutcome};
pub use types::*;

/// The wire-format crate, re-exported.
pub use ipvs_sys;

/// The workspace README's Rust examples, compiled as doctests.
#[doc = include_str!("../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

/// The library guide's Rust examples (docs/library.md), compiled as doctests.
#[doc = include_str!("../../docs/library.md")]
#[cfg(doctest)]
pub struct LibraryGuideDoctests;

/// This crate's README examples, compiled as doctests.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct CrateReadmeDoctests;
