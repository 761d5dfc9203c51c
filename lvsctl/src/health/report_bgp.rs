//! The BGP part of the health report (`[director.bgp]`): each VIP announced
//! or withdrawn and why, and the sessions (filled in by `director status`
//! from BIRD itself, so they are never stale).

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::clock::utc;
use crate::host::bird::Session;

/// One VIP's announcement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VipAnnouncement {
    /// The VIP (announced as a /32).
    pub vip: IpAddr,
    /// Announced (true) or withdrawn.
    pub announced: bool,
    /// Since when (seconds since the epoch).
    pub since: u64,
    /// Why.
    pub reason: String,
}

/// The BGP section of the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BgpReport {
    /// The BIRD version lvsctl runs.
    pub bird: String,
    /// BIRD's control socket.
    pub socket: PathBuf,
    /// The local AS number.
    pub asn: u32,
    /// The router id.
    pub router_id: Ipv4Addr,
    /// The neighbours, as `ADDRESS AS N`.
    pub neighbors: Vec<String>,
    /// The VIPs.
    pub vips: Vec<VipAnnouncement>,
    /// The BGP sessions, read from BIRD by `director status`.
    #[serde(default)]
    pub sessions: Vec<Session>,
    /// Why the sessions could not be read, if they could not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sessions_error: Option<String>,
}

impl BgpReport {
    /// The human section of `director status`.
    pub fn render(&self) -> String {
        let mut out = format!(
            "BGP (BIRD {}, AS {}, router id {}, socket {}):\n",
            self.bird,
            self.asn,
            self.router_id,
            self.socket.display()
        );
        for s in &self.sessions {
            out.push_str(&format!("  session {:<24} {:<6} {} (since {})\n", s.name, s.state, s.info, s.since));
        }
        if let Some(e) = &self.sessions_error {
            out.push_str(&format!("  sessions: cannot read them: {e}\n"));
        }
        for v in &self.vips {
            let what = if v.announced { "announced" } else { "withdrawn" };
            out.push_str(&format!("  VIP {:<16} {what} since {} ({})\n", v.vip.to_string(), utc(v.since), v.reason));
        }
        out
    }
}
