//! The wire format of the Linux IP Virtual Server (IPVS) generic netlink family.
//!
//! This crate has no I/O: it emits and parses the messages described by the
//! kernel's [`include/uapi/linux/ip_vs.h`](https://github.com/torvalds/linux/blob/master/include/uapi/linux/ip_vs.h)
//! and handled by `net/netfilter/ipvs/ip_vs_ctl.c`. The typed, async library on
//! top of it is the `ipvs` crate.
//!
//! Layout: one module per attribute nesting level ([`service`], [`dest`],
//! [`daemon`], [`stats`]), the top level and commands in [`message`], and netlink
//! framing in [`frame`]. Every attribute enum ends in `Other(DefaultNla)`, so an
//! attribute a newer kernel sends survives parse then emit unchanged.
//!
//! ```
//! use ipvs_sys::{emit_request, parse_replies, IpvsAttr, IpvsCmd, IpvsMessage, ServiceAttr, ReplyKind};
//! use ipvs_sys::constants::{AF_INET, IPPROTO_TCP};
//!
//! let msg = IpvsMessage::new(IpvsCmd::DelService, vec![IpvsAttr::Service(vec![
//!     ServiceAttr::AddressFamily(AF_INET),
//!     ServiceAttr::Protocol(IPPROTO_TCP),
//!     ServiceAttr::Address("10.0.0.1".parse::<std::net::Ipv4Addr>().unwrap().into()),
//!     ServiceAttr::Port(80),
//! ])]);
//! let mut buf = Vec::new();
//! emit_request(&mut buf, 0x20, 0x0001 | 0x0004, 7, &msg);
//! // A message of our family parses back to the same value.
//! let reply = parse_replies(&buf, 0x20).next().unwrap().unwrap();
//! assert_eq!(reply.seq, 7);
//! assert_eq!(reply.kind, ReplyKind::Message(msg));
//! ```
#![warn(missing_docs, unreachable_pub)]
#![deny(unsafe_code)]

mod addr;
pub mod bytes;
pub mod constants;
pub mod daemon;
pub mod dest;
pub mod frame;
pub mod message;
pub mod service;
pub mod stats;
mod util;

pub use addr::InetAddr;
pub use daemon::DaemonAttr;
pub use dest::DestAttr;
pub use frame::{emit_request, parse_replies, Replies, Reply, ReplyKind};
pub use message::{IpvsAttr, IpvsCmd, IpvsMessage};
pub use netlink_packet_core::{DecodeError, DefaultNla};
pub use service::{ServiceAttr, ServiceFlags};
pub use stats::{StatsAttr, StatsField};
