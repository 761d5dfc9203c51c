//! `udp` health checks: send one datagram to the real server and wait for a
//! reply (within the check's timeout), which may have to contain a string.
//! No reply, or an ICMP "port unreachable" (seen on a connected socket as
//! "connection refused"), is down.

use crate::check::Owner;
use std::net::{IpAddr, SocketAddr};

use tokio::net::UdpSocket;

use super::{out_of_resources, CheckConfig, Fail};

/// At most this much of a reply is looked at.
const MAX_REPLY: usize = 64 * 1024;

/// A `udp` check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UdpCheck {
    /// The port to send to.
    pub port: u16,
    /// The datagram sent.
    pub payload: Vec<u8>,
    /// Bytes the reply must contain.
    pub expect: Option<Vec<u8>>,
}

impl CheckConfig {
    /// The `udp` check: `payload` (text) or `payload_hex`, and `expect`.
    pub(super) fn udp(&self, port: u16, what: Owner<'_>) -> Result<UdpCheck, String> {
        let payload = match (&self.payload, &self.payload_hex) {
            (Some(text), None) => text.as_bytes().to_vec(),
            (None, Some(hex)) => parse_hex(hex).map_err(|e| format!("{what}: udp check payload_hex: {e}"))?,
            (Some(_), Some(_)) => {
                return Err(format!("{what}: a udp check takes `payload` or `payload_hex`, not both"))
            }
            (None, None) => {
                return Err(format!(
                    "{what}: a udp check needs the datagram to send: `payload` (text) or `payload_hex`"
                ))
            }
        };
        let port = self.check_port(port, what)?;
        Ok(UdpCheck { port, payload, expect: self.expect.as_ref().map(|e| e.as_bytes().to_vec()) })
    }
}

/// Hex digits (either case, spaces allowed between bytes) to bytes.
fn parse_hex(hex: &str) -> Result<Vec<u8>, String> {
    let digits: String = hex.split_whitespace().collect();
    data_encoding::HEXLOWER_PERMISSIVE
        .decode(digits.as_bytes())
        .map_err(|e| format!("{hex:?} is not hex bytes like \"0a1b2c\": {e}"))
}

/// A UDP socket connected to `addr` (so only its replies are received, and
/// an ICMP error for it is reported); the host lacking one is [`Fail::NotRun`].
pub(super) async fn connected(addr: SocketAddr, kind: &str) -> Result<UdpSocket, Fail> {
    let any: SocketAddr =
        if addr.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { (std::net::Ipv6Addr::UNSPECIFIED, 0).into() };
    let s = UdpSocket::bind(any).await.map_err(|e| {
        let msg = format!("{kind} check of {addr} not run: cannot open a socket: {e}");
        if out_of_resources(&e) {
            Fail::NotRun(msg)
        } else {
            Fail::Failed(msg)
        }
    })?;
    s.connect(addr).await.map_err(|e| Fail::Failed(format!("{kind} check of {addr}: {e}")))?;
    Ok(s)
}

/// Wait for the next datagram on `s` (connected to `addr`).
pub(super) async fn receive(s: &UdpSocket, addr: SocketAddr, kind: &str) -> Result<Vec<u8>, Fail> {
    let mut buf = vec![0u8; MAX_REPLY];
    let n = s.recv(&mut buf).await.map_err(|e| Fail::Failed(format!("{kind} reply from {addr}: {e}")))?;
    buf.truncate(n);
    Ok(buf)
}

impl UdpCheck {
    /// Send the payload, judge the first reply (the caller bounds the time).
    pub(super) async fn run(&self, ip: IpAddr) -> Result<(), Fail> {
        let addr = SocketAddr::new(ip, self.port);
        let s = connected(addr, "udp").await?;
        s.send(&self.payload).await.map_err(|e| Fail::Failed(format!("udp send to {addr}: {e}")))?;
        let reply = receive(&s, addr, "udp").await?;
        self.judge(&reply, addr).map_err(Fail::Failed)
    }

    /// Whether a reply passes.
    fn judge(&self, reply: &[u8], addr: SocketAddr) -> Result<(), String> {
        match &self.expect {
            Some(want) if !want.is_empty() && !reply.windows(want.len()).any(|w| w == want.as_slice()) => {
                let shown: String = String::from_utf8_lossy(reply).chars().take(60).collect();
                let want = String::from_utf8_lossy(want);
                Err(format!("udp reply from {addr} does not contain {want:?}: {shown:?}"))
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::{Check, Target};

    /// A UDP server on loopback that answers each datagram with `prefix`
    /// followed by the datagram.
    async fn echo(prefix: &'static [u8]) -> (SocketAddr, tokio::task::JoinHandle<()>) {
        let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = s.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let mut buf = [0u8; 2048];
            loop {
                let (n, from) = s.recv_from(&mut buf).await.unwrap();
                let reply = [prefix, &buf[..n]].concat();
                s.send_to(&reply, from).await.unwrap();
            }
        });
        (addr, task)
    }

    fn check(fields: &str, port: u16) -> Result<Check, String> {
        super::super::fields::test_check("udp", "5s", fields, port)
    }

    async fn run(fields: &str, addr: SocketAddr) -> Result<(), String> {
        check(fields, addr.port())?.run(&Target { addr, service: "udp 10.0.0.1:53".into() }).await
    }

    #[tokio::test]
    async fn a_reply_and_its_content() {
        let (addr, _server) = echo(b"pong ").await;
        run("payload = \"ping\"", addr).await.unwrap();
        run("payload = \"ping\", expect = \"pong ping\"", addr).await.unwrap();
        run("payload_hex = \"de ad BE EF\", expect = \"pong \"", addr).await.unwrap();
        let e = run("payload = \"ping\", expect = \"ready\"", addr).await.unwrap_err();
        assert_eq!(e, format!("udp reply from {addr} does not contain \"ready\": \"pong ping\""));
    }

    /// The datagram sent is the payload, text or hex.
    #[test]
    fn payloads() {
        let c = CheckConfig { payload_hex: Some("00ff10".into()), ..check_config() };
        assert_eq!(c.udp(7, &"x").unwrap().payload, vec![0, 255, 16]);
        let c = CheckConfig { payload: Some("hi".into()), ..check_config() };
        assert_eq!(c.udp(7, &"x").unwrap(), UdpCheck { port: 7, payload: b"hi".to_vec(), expect: None });
    }

    fn check_config() -> CheckConfig {
        toml::from_str::<std::collections::BTreeMap<String, CheckConfig>>("check = { type = \"udp\" }").unwrap()
            ["check"]
            .clone()
    }

    /// Nothing listening: the ICMP port unreachable comes back as "connection refused".
    #[tokio::test]
    async fn a_closed_port_is_down() {
        let (addr, server) = echo(b"").await;
        server.abort();
        let _ = server.await;
        let e = run("payload = \"ping\"", addr).await.unwrap_err();
        assert!(e.starts_with(&format!("udp reply from {addr}: ")) && e.contains("refused"), "{e}");
    }

    /// A server that reads and never answers: the check times out.
    #[tokio::test]
    async fn no_reply_is_down() {
        let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = silent.local_addr().unwrap();
        let c = CheckConfig {
            payload: Some("ping".into()),
            timeout: Some(crate::check::Secs::parse("300ms").unwrap()),
            ..check_config()
        };
        let e = c.resolve(addr.port(), &"x").unwrap().run(&Target { addr, service: String::new() }).await.unwrap_err();
        assert_eq!(e, "udp check timed out after 300ms");
        drop(silent);
    }

    #[test]
    fn config_errors() {
        let e = check("", 53).unwrap_err();
        assert!(e.contains("a udp check needs the datagram to send"), "{e}");
        let e = check("payload = \"a\", payload_hex = \"61\"", 53).unwrap_err();
        assert!(e.contains("not both"), "{e}");
        let e = check("payload_hex = \"6g\"", 53).unwrap_err();
        assert!(e.starts_with("udp check: udp check payload_hex: \"6g\" is not hex bytes"), "{e}");
        let e = check("payload_hex = \"616\"", 53).unwrap_err();
        assert!(e.contains("is not hex bytes"), "{e}");
        let e = check("payload = \"a\", path = \"/\"", 53).unwrap_err();
        assert_eq!(e, "udp check: check field `path` is for http and https checks, not udp");
        let e = check("payload = \"a\", name = \"example.com\"", 53).unwrap_err();
        assert_eq!(e, "udp check: check field `name` is for dns checks, not udp");
        let e = check("payload = \"a\"", 0).unwrap_err();
        assert!(e.contains("set the check's `port`"), "{e}");
    }
}
