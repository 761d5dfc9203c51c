//! `dns` health checks: one question over UDP to the real server (a DNS
//! server), healthy when the answer has the expected response code and,
//! if one is configured, holds the expected record. The messages are built
//! and parsed by hickory-proto.

use std::hash::BuildHasher;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use hickory_proto::op::{Message, MessageType, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};

use super::udp::{connected, receive};
use super::{CheckConfig, Fail};

/// The port of a DNS server when neither the check nor the real server has one.
pub const DEFAULT_PORT: u16 = 53;

/// The response codes by the names used in the config.
const RCODES: [(&str, u8); 11] = [
    ("NOERROR", 0),
    ("FORMERR", 1),
    ("SERVFAIL", 2),
    ("NXDOMAIN", 3),
    ("NOTIMP", 4),
    ("REFUSED", 5),
    ("YXDOMAIN", 6),
    ("YXRRSET", 7),
    ("NXRRSET", 8),
    ("NOTAUTH", 9),
    ("NOTZONE", 10),
];

/// A `dns` check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsCheck {
    /// The port to ask.
    pub port: u16,
    /// The name asked about (fully qualified).
    pub name: Name,
    /// The record type asked for.
    pub query_type: RecordType,
    /// The response code that is healthy.
    pub rcode: ResponseCode,
    /// A record the answer must hold.
    pub answer: Option<Expected>,
}

/// An expected answer record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expected {
    /// An `A` or `AAAA` record with this address.
    Addr(IpAddr),
    /// A record whose data reads so (as in a zone file; case and a final dot
    /// do not matter), e.g. `"10 mail.example.com"` for `MX`.
    Text(String),
}

impl CheckConfig {
    /// The `dns` check: `name` (required), `query_type`, `rcode`, `answer`;
    /// the port is the check's, else the real server's, else 53.
    pub(super) fn dns(&self, port: u16, what: &str) -> Result<DnsCheck, String> {
        let Some(text) = self.name.as_deref() else {
            return Err(format!("{what}: a dns check needs the `name` to query, e.g. name = \"www.example.com\""));
        };
        let mut name =
            Name::from_utf8(text).map_err(|e| format!("{what}: dns check name {text:?} is not a domain name: {e}"))?;
        name.set_fqdn(true);
        let qt = self.query_type.as_deref().unwrap_or("A").to_ascii_uppercase();
        let query_type = RecordType::from_str(&qt)
            .map_err(|_| format!("{what}: dns check query_type {qt:?} is not a record type (A, AAAA, MX, TXT...)"))?;
        let rc = self.rcode.as_deref().unwrap_or("NOERROR").to_ascii_uppercase();
        let rcode = RCODES.iter().find(|(n, _)| *n == rc).map(|(_, c)| ResponseCode::from(0, *c)).ok_or_else(|| {
            let names: Vec<&str> = RCODES.iter().map(|(n, _)| *n).collect();
            format!("{what}: dns check rcode {rc:?} is not one of {}", names.join(", "))
        })?;
        let answer = match (&self.answer, query_type) {
            (None, _) => None,
            (Some(a), RecordType::A | RecordType::AAAA) => Some(Expected::Addr(parse_addr(a, query_type, what)?)),
            (Some(a), _) => Some(Expected::Text(a.clone())),
        };
        let port = match self.port.unwrap_or(port) {
            0 => DEFAULT_PORT,
            p => p,
        };
        Ok(DnsCheck { port, name, query_type, rcode, answer })
    }
}

/// The expected address of an `A` (IPv4) or `AAAA` (IPv6) answer.
fn parse_addr(a: &str, t: RecordType, what: &str) -> Result<IpAddr, String> {
    match a.parse::<IpAddr>() {
        Ok(ip) if ip.is_ipv4() == (t == RecordType::A) => Ok(ip),
        _ => Err(format!("{what}: dns check answer {a:?} is not an {} address", if t == RecordType::A { "IPv4" } else { "IPv6" })),
    }
}

/// The config name of a response code.
fn rcode_name(c: ResponseCode) -> String {
    let code = u16::from(c);
    RCODES.iter().find(|(_, v)| u16::from(*v) == code).map_or_else(|| format!("rcode {code}"), |(n, _)| (*n).to_owned())
}

impl DnsCheck {
    /// The question, with a fresh random id.
    fn query(&self) -> Message {
        let id = std::collections::hash_map::RandomState::new().hash_one(std::time::SystemTime::now()) as u16;
        let mut m = Message::new();
        m.set_id(id).set_message_type(MessageType::Query).set_recursion_desired(true);
        m.add_query(Query::query(self.name.clone(), self.query_type));
        m
    }

    /// Ask, wait for the answer to this question, judge it (the caller bounds the time).
    pub(super) async fn run(&self, ip: IpAddr) -> Result<(), Fail> {
        let addr = SocketAddr::new(ip, self.port);
        let q = self.query();
        let bytes = q.to_vec().map_err(|e| Fail::Failed(format!("dns query for {}: {e}", self.name)))?;
        let s = connected(addr, "dns").await?;
        s.send(&bytes).await.map_err(|e| Fail::Failed(format!("dns send to {addr}: {e}")))?;
        loop {
            let reply = receive(&s, addr, "dns").await?;
            // A datagram that is not the answer to this question (a late
            // answer to an earlier one, garbage) is not the answer: wait on.
            match Message::from_vec(&reply) {
                Ok(m) if m.id() == q.id() && m.message_type() == MessageType::Response => {
                    return self.judge(&m, addr).map_err(Fail::Failed)
                }
                _ => continue,
            }
        }
    }

    /// Whether an answer passes: its rcode, and the expected record if any.
    pub(crate) fn judge(&self, m: &Message, addr: SocketAddr) -> Result<(), String> {
        let ask = format!("dns {} {} at {addr}", self.query_type, self.name);
        if m.response_code() != self.rcode {
            let (got, want) = (rcode_name(m.response_code()), rcode_name(self.rcode));
            return Err(format!("{ask}: answered {got}, expected {want}"));
        }
        let Some(want) = &self.answer else { return Ok(()) };
        let found = m.answers().iter().filter(|r| r.record_type() == self.query_type).map(|r| r.data());
        let mut seen = Vec::new();
        for data in found {
            if matches(data, want) {
                return Ok(());
            }
            seen.push(data.to_string());
        }
        let trunc = if m.truncated() { " (the answer was truncated)" } else { "" };
        Err(format!("{ask}: no answer {} among {seen:?}{trunc}", shown(want)))
    }
}

fn matches(data: &RData, want: &Expected) -> bool {
    match want {
        Expected::Addr(ip) => data.ip_addr() == Some(*ip),
        Expected::Text(t) => normal(&data.to_string()) == normal(t),
    }
}

/// Text for comparing: trimmed, lowercase, no final dot.
fn normal(s: &str) -> String {
    s.trim().trim_end_matches('.').to_ascii_lowercase()
}

fn shown(want: &Expected) -> String {
    match want {
        Expected::Addr(ip) => ip.to_string(),
        Expected::Text(t) => format!("{t:?}"),
    }
}
