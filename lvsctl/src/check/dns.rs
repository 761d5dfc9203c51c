//! `dns` health checks: one question over UDP to the real server (a DNS
//! server), healthy when the answer has the expected response code and,
//! if one is configured, holds the expected record. The messages are built
//! and parsed by hickory-proto.

use crate::check::Owner;
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
    pub(super) fn dns(&self, port: u16, what: Owner<'_>) -> Result<DnsCheck, String> {
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
fn parse_addr(a: &str, t: RecordType, what: Owner<'_>) -> Result<IpAddr, String> {
    match a.parse::<IpAddr>() {
        Ok(ip) if ip.is_ipv4() == (t == RecordType::A) => Ok(ip),
        _ => Err(format!(
            "{what}: dns check answer {a:?} is not an {} address",
            if t == RecordType::A { "IPv4" } else { "IPv6" }
        )),
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

#[cfg(test)]
mod tests {
    use hickory_proto::rr::rdata::{A, MX};
    use hickory_proto::rr::Record;
    use tokio::net::UdpSocket;

    use super::*;
    use crate::check::{Check, Probe, Target};

    /// How the test responder answers.
    #[derive(Clone, Copy)]
    enum Answer {
        /// `www.example.com. A 192.0.2.7`, `example.com. MX 10 mail.example.com.`, NXDOMAIN for anything else.
        Zone,
        /// SERVFAIL to everything.
        ServFail,
        /// First a reply with another id, then the real answer.
        StaleFirst,
    }

    /// A DNS responder on loopback.
    async fn responder(how: Answer) -> (SocketAddr, tokio::task::JoinHandle<()>) {
        let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = s.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let mut buf = [0u8; 1500];
            loop {
                let (n, from) = s.recv_from(&mut buf).await.unwrap();
                let q = Message::from_vec(&buf[..n]).unwrap();
                let mut r = reply(&q, how);
                if let Answer::StaleFirst = how {
                    let id = r.id();
                    r.set_id(id.wrapping_add(1));
                    s.send_to(&r.to_vec().unwrap(), from).await.unwrap();
                    r.set_id(id);
                }
                s.send_to(&r.to_vec().unwrap(), from).await.unwrap();
            }
        });
        (addr, task)
    }

    fn reply(q: &Message, how: Answer) -> Message {
        let mut r = Message::new();
        r.set_id(q.id()).set_message_type(MessageType::Response);
        r.add_queries(q.queries().to_vec());
        let question = &q.queries()[0];
        let (name, t) = (question.name().to_ascii(), question.query_type());
        let answer = match (name.as_str(), t) {
            ("www.example.com.", RecordType::A) => Some(RData::A(A("192.0.2.7".parse().unwrap()))),
            ("example.com.", RecordType::MX) => {
                Some(RData::MX(MX::new(10, Name::from_ascii("mail.example.com.").unwrap())))
            }
            _ => None,
        };
        match (how, answer) {
            (Answer::ServFail, _) => r.set_response_code(ResponseCode::ServFail),
            (_, Some(data)) => r.add_answer(Record::from_rdata(question.name().clone(), 60, data)),
            (_, None) => r.set_response_code(ResponseCode::NXDomain),
        };
        r
    }

    fn check(fields: &str, port: u16) -> Result<Check, String> {
        super::super::fields::test_check("dns", "5s", fields, port)
    }

    async fn run(fields: &str, addr: SocketAddr) -> Result<(), String> {
        check(fields, addr.port())?.run(&Target { addr, service: "udp 10.0.0.1:53".into() }).await
    }

    #[tokio::test]
    async fn rcode_and_answers() {
        let (addr, _server) = responder(Answer::Zone).await;
        run("name = \"www.example.com\"", addr).await.unwrap();
        run("name = \"www.example.com\", answer = \"192.0.2.7\"", addr).await.unwrap();
        run("name = \"example.com\", query_type = \"mx\", answer = \"10 MAIL.example.com\"", addr).await.unwrap();
        run("name = \"nowhere.example.com\", rcode = \"NXDOMAIN\"", addr).await.unwrap();
        let e = run("name = \"www.example.com\", answer = \"192.0.2.8\"", addr).await.unwrap_err();
        assert_eq!(e, format!("dns A www.example.com. at {addr}: no answer 192.0.2.8 among [\"192.0.2.7\"]"));
        let e = run("name = \"nowhere.example.com\"", addr).await.unwrap_err();
        assert_eq!(e, format!("dns A nowhere.example.com. at {addr}: answered NXDOMAIN, expected NOERROR"));
    }

    #[tokio::test]
    async fn a_wrong_rcode_is_down() {
        let (addr, _server) = responder(Answer::ServFail).await;
        let e = run("name = \"www.example.com\"", addr).await.unwrap_err();
        assert!(e.ends_with("answered SERVFAIL, expected NOERROR"), "{e}");
        run("name = \"www.example.com\", rcode = \"servfail\"", addr).await.unwrap();
    }

    /// A reply to another question (another id) is not the answer.
    #[tokio::test]
    async fn a_reply_with_another_id_is_skipped() {
        let (addr, _server) = responder(Answer::StaleFirst).await;
        run("name = \"www.example.com\", answer = \"192.0.2.7\"", addr).await.unwrap();
    }

    #[tokio::test]
    async fn no_server_and_no_reply_are_down() {
        let (addr, server) = responder(Answer::Zone).await;
        server.abort();
        let _ = server.await;
        let e = run("name = \"www.example.com\"", addr).await.unwrap_err();
        assert!(e.starts_with(&format!("dns reply from {addr}: ")) && e.contains("refused"), "{e}");
        let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = silent.local_addr().unwrap();
        let mut c = check("name = \"www.example.com\"", addr.port()).unwrap();
        c.timeout = std::time::Duration::from_millis(300);
        let e = c.run(&Target { addr, service: String::new() }).await.unwrap_err();
        assert_eq!(e, "dns check timed out after 300ms");
    }

    #[test]
    fn config() {
        let Probe::Dns(d) = check("name = \"example.com\", query_type = \"aaaa\"", 0).unwrap().probe else {
            panic!("not a dns probe")
        };
        assert_eq!((d.port, d.query_type, d.rcode), (DEFAULT_PORT, RecordType::AAAA, ResponseCode::NoError));
        assert_eq!(d.name.to_ascii(), "example.com.");
        let Probe::Dns(d) = check("name = \"example.com\", port = 5353", 53).unwrap().probe else { panic!() };
        assert_eq!(d.port, 5353);
        let Probe::Dns(d) = check("name = \"example.com\"", 1053).unwrap().probe else { panic!() };
        assert_eq!(d.port, 1053);
        let e = check("query_type = \"A\"", 53).unwrap_err();
        assert!(e.starts_with("dns check: a dns check needs the `name` to query"), "{e}");
        let e = check("name = \"example.com\", query_type = \"BOGUS\"", 53).unwrap_err();
        assert!(e.contains("query_type \"BOGUS\" is not a record type"), "{e}");
        let e = check("name = \"example.com\", rcode = \"FINE\"", 53).unwrap_err();
        assert!(e.contains("rcode \"FINE\" is not one of NOERROR, FORMERR"), "{e}");
        let e = check("name = \"example.com\", answer = \"2001:db8::1\"", 53).unwrap_err();
        assert!(e.contains("answer \"2001:db8::1\" is not an IPv4 address"), "{e}");
        let e = check("name = \"example.com\", query_type = \"AAAA\", answer = \"192.0.2.1\"", 53).unwrap_err();
        assert!(e.contains("is not an IPv6 address"), "{e}");
        let e = check("name = \"example.com\", expect = \"x\"", 53).unwrap_err();
        assert_eq!(e, "dns check: check field `expect` is for udp checks, not dns");
        let e = check("name = \"a..b\"", 53).unwrap_err();
        assert!(e.contains("is not a domain name"), "{e}");
    }
}
