//! The LVS host layer behind the `lvsctl` command: run a host as an LVS
//! director (VIPs, virtual services, real servers, health checks) or as an
//! LVS-DR real server (VIPs on `lo`, ARP sysctls), from a program, without
//! shelling out.
//!
//! Each role works in three stages:
//!
//! 1. **observe**: read the kernel's IPVS table, the interfaces and their
//!    addresses, the sysctls and what an earlier run recorded
//!    ([`director::Observed`], [`realserver::Observed`]);
//! 2. **plan**: a pure function of the desired spec and the observation
//!    ([`director::plan()`], [`realserver::plan()`]) decides every change: IPVS
//!    operations, address changes, sysctl writes, the record written ahead
//!    of them and what to undo if they fail;
//! 3. **execute**: carry the plan out and report each change made
//!    ([`director::Report`]).
//!
//! [`director::Director`] bundles the three for a program that runs a
//! director: one handle holds the IPVS and route netlink connections for its
//! life, reconciles the whole table ([`director::Director::reconcile`]) or
//! sends one real server's change ([`director::Director::send`]).
//! [`daemon`] is the health-checking loop of `lvsctl director run` built on it.
//!
//! ```no_run
//! # async fn f() -> Result<(), lvsctl::Error> {
//! use lvsctl::config::Config;
//! use lvsctl::director::Director;
//!
//! let spec = Config::parse(
//!     r#"
//!         [director]
//!         iface = "eth0"
//!         [[director.service]]
//!         vip = "10.19.70.166"
//!         port = 15858
//!         real = ["10.18.68.186", "10.18.68.187"]
//!     "#,
//!     "inline",
//! )?
//! .director()?;
//! let mut director = Director::connect().await?;
//! let report = director.reconcile(&spec, &spec.desired_services()).await?;
//! for change in &report.changes {
//!     println!("{change}");
//! }
//! # Ok(()) }
//! ```
//!
//! The module stack points one way, from the bottom: [`error`]; [`spec`]
//! (validated types), [`check`] (health-check settings and probes),
//! [`health`] (pure health counting); [`host`] (addresses, sysctls) and
//! [`state`] (records, locks); [`config`] (the TOML file into specs);
//! [`director`] and [`realserver`]; [`ha`] (failover with keepalived) and
//! [`bgp`] (ECMP scale-out with BIRD), both running their engine through
//! the private `supervise` module; [`metrics`] (the daemon's Prometheus registry and endpoint);
//! [`daemon`] on top.

#![warn(missing_docs)]

pub mod bgp;
pub mod check;
pub mod config;
pub mod daemon;
pub mod director;
pub mod error;
pub mod ha;
pub mod health;
pub mod host;
pub mod metrics;
pub mod realserver;
pub mod spec;
pub mod state;
mod supervise;

pub use error::{Error, Result};
