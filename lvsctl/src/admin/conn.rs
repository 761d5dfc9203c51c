//! `lvsctl list --connection`: the kernel's connection table
//! (`/proc/net/ip_vs_conn` of the current network namespace) as `ipvsadm
//! -Lnc` prints it, and as JSON.
//!
//! ipvsadm 1.31 (`list_conn`, `print_conn`) skips the file's header line,
//! then reads each line with `sscanf("%s %s %hX %s %hX %s %hX %s %d %s
//! %s")` and prints it in file order (the kernel's hash-table order, never
//! sorted): `%-3s %-6s %-11s %-18s %-18s %s` (protocol, expiry as `mm:ss`,
//! state, source, virtual, destination), and with `--persistent-conn` also
//! the persistence engine's name and data when the line has both. This module
//! reproduces that, including how ipvsadm reads the kernel's addresses: the
//! family is the client address's (full IPv6 text, else 8 hex digits of
//! IPv4), and the other two are read in that family.
//!
//! Where ipvsadm's output is not defined, lvsctl prints something sensible
//! instead: an IPv6 service's IPv4 real server (a mixed-family tunnel, which
//! ipvsadm prints from uninitialised memory) is printed as the IPv4 address
//! it is; and a line longer than 255 bytes (IPv6 with a long SIP Call-ID),
//! which ipvsadm's `fgets` cuts into two "lines", is one line.

use std::fmt::Write as _;
use std::io::{BufRead, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::list::addr_port;

/// Where the kernel shows the connections of the reading process's network namespace.
pub(crate) const CONN_PROC_FILE: &str = "/proc/net/ip_vs_conn";

/// A persistence engine's part of a connection (`PEName PEData`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub(crate) struct Pe {
    /// The engine, such as `sip`.
    pub(crate) name: String,
    /// What it keys on (the SIP Call-ID); absent when the kernel shows none.
    pub(crate) data: Option<String>,
}

/// One connection (or persistence template) of the kernel's table.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub(crate) struct Conn {
    /// `TCP`, `UDP`, `SCTP`, or `IP` (a firewall-mark service's persistence template).
    pub(crate) protocol: String,
    /// The client (port 0 in a persistence template).
    pub(crate) client: SocketAddr,
    /// The virtual service (a firewall-mark service's template holds the mark as the address).
    #[serde(rename = "virtual")]
    pub(crate) virtual_addr: SocketAddr,
    /// The real server.
    pub(crate) destination: SocketAddr,
    /// The protocol state (`ESTABLISHED`, `TIME_WAIT`, ...; a template's `NONE` or `ASSURED`).
    pub(crate) state: String,
    /// Seconds until the entry expires.
    pub(crate) expires_seconds: u32,
    /// The persistence engine's data, when the entry has some.
    pub(crate) pe: Option<Pe>,
}

/// A line of the file that is not a connection.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct BadLine {
    /// 1-based, the header being line 1.
    pub(crate) line: usize,
}

impl std::fmt::Display for BadLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "unexpected input from {CONN_PROC_FILE} (line {})", self.line)
    }
}

/// glibc `strtoul(s, NULL, 16)` truncated to 32 bits, as ipvsadm reads an
/// IPv4 address it could not read as an address (and `%hX` reads a port).
fn strtoul16(s: &str) -> u64 {
    let s = s.trim_start();
    let (neg, s) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let s = match s.get(..2) {
        Some("0x") | Some("0X") if s[2..].starts_with(|c: char| c.is_ascii_hexdigit()) => &s[2..],
        _ => s,
    };
    let mut v: u64 = 0;
    for c in s.chars() {
        let Some(d) = c.to_digit(16) else { break };
        v = match v.checked_mul(16).and_then(|v| v.checked_add(d as u64)) {
            Some(v) => v,
            None => return u64::MAX,
        };
    }
    if neg {
        v.wrapping_neg()
    } else {
        v
    }
}

/// The kernel writes an IPv4 address as 8 hex digits.
fn hex_v4(s: &str) -> Option<Ipv4Addr> {
    (s.len() == 8 && s.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| u32::from_str_radix(s, 16).ok().map(Ipv4Addr::from))
        .flatten()
}

/// A connection line's fields as ipvsadm reads them, plus what they mean.
struct Parsed<'a> {
    protocol: &'a str,
    state: &'a str,
    expires: u32,
    pe_name: Option<&'a str>,
    pe_data: Option<&'a str>,
    /// The three addresses as ipvsadm prints them.
    text: [String; 3],
    conn: Conn,
}

fn parse_line(line: &str) -> Option<Parsed<'_>> {
    let t: Vec<&str> = line.split_ascii_whitespace().take(11).collect();
    if t.len() < 9 {
        return None;
    }
    let port = |s: &str| -> Option<u16> {
        // sscanf's %hX: hex digits, stored in an unsigned short.
        s.bytes().next().filter(|b| b.is_ascii_hexdigit())?;
        Some(strtoul16(s) as u16)
    };
    let (cport, vport, dport) = (port(t[2])?, port(t[4])?, port(t[6])?);
    let expires: u32 = t[8].parse::<i64>().ok()?.try_into().ok()?;
    let addrs = [t[1], t[3], t[5]];
    let ports = [cport, vport, dport];
    // ipvsadm: the client address decides the family of all three.
    let v6 = addrs[0].parse::<Ipv6Addr>().is_ok();
    let mut text: [String; 3] = Default::default();
    let mut real: [Option<IpAddr>; 3] = [None; 3];
    for i in 0..3 {
        let a = addrs[i];
        // What the kernel means: IPv6 text, or 8 hex digits of IPv4.
        real[i] = a.parse::<Ipv6Addr>().ok().map(IpAddr::V6).or_else(|| hex_v4(a).map(IpAddr::V4));
        // What ipvsadm prints.
        let shown = if v6 {
            match a.parse::<Ipv6Addr>() {
                Ok(x) => IpAddr::V6(x),
                // Undefined in ipvsadm (it prints uninitialised memory): the address itself.
                Err(_) => real[i]?,
            }
        } else if let Ok(x) = addrs[0].parse::<Ipv4Addr>().and_then(|_| a.parse::<Ipv4Addr>()) {
            // Dotted IPv4 (never written by the kernel; ipvsadm accepts it).
            IpAddr::V4(x)
        } else {
            IpAddr::V4(Ipv4Addr::from(strtoul16(a) as u32))
        };
        text[i] = addr_port(SocketAddr::new(shown, ports[i]));
    }
    let real: Vec<IpAddr> = real.into_iter().collect::<Option<_>>()?;
    let conn = Conn {
        protocol: t[0].to_owned(),
        client: SocketAddr::new(real[0], cport),
        virtual_addr: SocketAddr::new(real[1], vport),
        destination: SocketAddr::new(real[2], dport),
        state: t[7].to_owned(),
        expires_seconds: expires,
        pe: t.get(9).map(|n| Pe { name: (*n).to_owned(), data: t.get(10).map(|d| (*d).to_owned()) }),
    };
    Some(Parsed {
        protocol: t[0],
        state: t[7],
        expires,
        pe_name: t.get(9).copied(),
        pe_data: t.get(10).copied(),
        text,
        conn,
    })
}

/// The title lines of `ipvsadm -Lnc` (`--persistent-conn`: with the PE columns).
pub(crate) fn title(persistent_conn: bool) -> String {
    if persistent_conn {
        format!(
            "IPVS connection entries\npro expire {:<11} {:<18} {:<18} {:<18} {:<16} {}\n",
            "state", "source", "virtual", "destination", "pe name", "pe_data"
        )
    } else {
        format!(
            "IPVS connection entries\npro expire {:<11} {:<18} {:<18} {}\n",
            "state", "source", "virtual", "destination"
        )
    }
}

fn text_line(p: &Parsed<'_>, persistent_conn: bool) -> String {
    let expire = format!("{:02}:{:02}", p.expires / 60, p.expires % 60);
    let [c, v, d] = &p.text;
    let mut s = String::new();
    match (persistent_conn, p.pe_name, p.pe_data) {
        (true, Some(n), Some(data)) => {
            let _ = writeln!(s, "{:<3} {expire:<6} {:<11} {c:<18} {v:<18} {d:<16} {n:<18} {data}", p.protocol, p.state);
        }
        _ => {
            let _ = writeln!(s, "{:<3} {expire:<6} {:<11} {c:<18} {v:<18} {d}", p.protocol, p.state);
        }
    }
    s
}

/// The lines of the file after its header, with their numbers (the header is
/// line 1). No header: ipvsadm's "unexpected input".
fn body<R: BufRead>(r: R) -> std::io::Result<impl Iterator<Item = std::io::Result<(usize, String)>>> {
    let mut lines = r.lines();
    match lines.next() {
        None => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("unexpected input from {CONN_PROC_FILE}"),
            ))
        }
        Some(Err(e)) => return Err(e),
        Some(Ok(_)) => {}
    }
    Ok(lines.enumerate().map(|(i, l)| l.map(|l| (i + 2, l))))
}

fn bad(n: usize) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, BadLine { line: n }.to_string())
}

/// Read the file from `r` and write `ipvsadm -Lnc`'s text to `w`, a line at a time.
pub(crate) fn write_text<R: BufRead, W: Write>(r: R, w: &mut W, persistent_conn: bool) -> std::io::Result<()> {
    let lines = body(r)?;
    w.write_all(title(persistent_conn).as_bytes())?;
    for l in lines {
        let (n, line) = l?;
        let p = parse_line(&line).ok_or_else(|| bad(n))?;
        w.write_all(text_line(&p, persistent_conn).as_bytes())?;
    }
    Ok(())
}

/// Read the file from `r`: its connections in file order.
pub(crate) fn parse<R: BufRead>(r: R) -> std::io::Result<Vec<Conn>> {
    body(r)?.map(|l| l.and_then(|(n, line)| parse_line(&line).map(|p| p.conn).ok_or_else(|| bad(n)))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "Pro FromIP   FPrt ToIP     TPrt DestIP   DPrt State       Expires PEName PEData\n";

    fn text(file: &str, pc: bool) -> String {
        let mut out = Vec::new();
        write_text(file.as_bytes(), &mut out, pc).unwrap();
        String::from_utf8(out).unwrap()
    }

    /// Lines as Linux 6.1's ip_vs_conn_seq_show writes them, and what ipvsadm
    /// 1.31 prints for them (its format strings: an ESTABLISHED, a TIME_WAIT,
    /// a TCP persistence template and a firewall-mark one, in file order).
    #[test]
    fn ipv4_like_ipvsadm() {
        let file = format!(
            "{HEADER}\
TCP 0A010001 9C4E 0A000001 0050 0A010001 1F90 ESTABLISHED     899
TCP 0A010001 9C50 0A000001 0050 0A010001 1F90 TIME_WAIT       119
TCP 0A010001 0000 0A000001 0050 0A010001 1F90 ASSURED         359
IP  C0A80006 0000 0000000A 0000 0A000011 0000 NONE          10793
"
        );
        let want = "\
IPVS connection entries
pro expire state       source             virtual            destination
TCP 14:59  ESTABLISHED 10.1.0.1:40014     10.0.0.1:80        10.1.0.1:8080
TCP 01:59  TIME_WAIT   10.1.0.1:40016     10.0.0.1:80        10.1.0.1:8080
TCP 05:59  ASSURED     10.1.0.1:0         10.0.0.1:80        10.1.0.1:8080
IP  179:53 NONE        192.168.0.6:0      0.0.0.10:0         10.0.0.17:0
";
        assert_eq!(text(&file, false), want);
        let c = parse(file.as_bytes()).unwrap();
        assert_eq!(c.len(), 4);
        assert_eq!(c[0].client, "10.1.0.1:40014".parse().unwrap());
        assert_eq!(c[0].virtual_addr, "10.0.0.1:80".parse().unwrap());
        assert_eq!(c[0].destination, "10.1.0.1:8080".parse().unwrap());
        assert_eq!(c[0].state, "ESTABLISHED");
        assert_eq!(c[0].expires_seconds, 899);
        assert_eq!(c[3].protocol, "IP");
        assert_eq!(c[3].expires_seconds, 10793);
        assert_eq!(c[3].pe, None);
        let j: serde_json::Value = serde_json::to_value(&c[1]).unwrap();
        assert_eq!(
            j,
            serde_json::json!({
                "protocol": "TCP", "client": "10.1.0.1:40016", "virtual": "10.0.0.1:80",
                "destination": "10.1.0.1:8080", "state": "TIME_WAIT", "expires_seconds": 119, "pe": null
            })
        );
    }

    /// The kernel writes IPv6 in full (%pI6); ipvsadm prints it as inet_ntop does.
    #[test]
    fn ipv6_like_ipvsadm() {
        let file = format!(
            "{HEADER}\
TCP 2001:0db8:0001:0000:0000:0000:0000:0001 A3F2 2001:0db8:0000:0000:0000:0000:0000:0001 0050 2001:0db8:0001:0000:0000:0000:0000:0001 1F90 SYN_RECV         59
UDP 0000:0000:0000:0000:0000:0000:0102:0304 0035 fd00:0000:0000:0000:0000:0000:0000:0001 0035 fd00:0000:0000:0000:0000:0000:0000:0002 0035 UDP              299
"
        );
        let want = "\
IPVS connection entries
pro expire state       source             virtual            destination
TCP 00:59  SYN_RECV    [2001:db8:1::1]:41970 [2001:db8::1]:80   [2001:db8:1::1]:8080
UDP 04:59  UDP         [::1.2.3.4]:53     [fd00::1]:53       [fd00::2]:53
";
        assert_eq!(text(&file, false), want);
        let c = parse(file.as_bytes()).unwrap();
        assert_eq!(c[0].client, "[2001:db8:1::1]:41970".parse().unwrap());
        assert_eq!(c[1].destination, "[fd00::2]:53".parse().unwrap());
    }

    /// A SIP persistence template: the PE columns with --persistent-conn, only
    /// when the line has both name and data.
    #[test]
    fn persistence_engine_columns() {
        let file = format!(
            "{HEADER}\
UDP 0A000063 0000 0A000002 13C4 0A010001 13C4 NONE            177 sip abc123@host
UDP 0A000063 13C4 0A000002 13C4 0A010001 13C4 UDP              57 sip 
UDP 0A000064 13C4 0A000002 13C4 0A010002 13C4 UDP              57
"
        );
        let plain = text(&file, false);
        assert_eq!(
            plain,
            "\
IPVS connection entries
pro expire state       source             virtual            destination
UDP 02:57  NONE        10.0.0.99:0        10.0.0.2:5060      10.1.0.1:5060
UDP 00:57  UDP         10.0.0.99:5060     10.0.0.2:5060      10.1.0.1:5060
UDP 00:57  UDP         10.0.0.100:5060    10.0.0.2:5060      10.1.0.2:5060
"
        );
        assert_eq!(
            text(&file, true),
            "\
IPVS connection entries
pro expire state       source             virtual            destination        pe name          pe_data
UDP 02:57  NONE        10.0.0.99:0        10.0.0.2:5060      10.1.0.1:5060    sip                abc123@host
UDP 00:57  UDP         10.0.0.99:5060     10.0.0.2:5060      10.1.0.1:5060
UDP 00:57  UDP         10.0.0.100:5060    10.0.0.2:5060      10.1.0.2:5060
"
        );
        let c = parse(file.as_bytes()).unwrap();
        assert_eq!(c[0].pe, Some(Pe { name: "sip".into(), data: Some("abc123@host".into()) }));
        assert_eq!(c[1].pe, Some(Pe { name: "sip".into(), data: None }));
        assert_eq!(c[2].pe, None);
    }

    /// Mixed families (tunnels): ipvsadm reads an IPv4 service's IPv6 real
    /// server with strtoul (up to the first colon); JSON has the real address.
    #[test]
    fn mixed_families() {
        let file = format!(
            "{HEADER}\
TCP 0A000063 A000 0A000001 0050 2001:0db8:0000:0000:0000:0000:0000:0009 0050 ESTABLISHED     890
TCP 2001:0db8:0000:0000:0000:0000:0000:0063 A000 2001:0db8:0000:0000:0000:0000:0000:0001 0050 0A010009 0050 ESTABLISHED     890
"
        );
        let t = text(&file, false);
        assert!(t.contains("\nTCP 14:50  ESTABLISHED 10.0.0.99:40960    10.0.0.1:80        0.0.32.1:80\n"), "{t}");
        assert!(t.contains("[2001:db8::1]:80   10.1.0.9:80\n"), "{t}");
        let c = parse(file.as_bytes()).unwrap();
        assert_eq!(c[0].destination, "[2001:db8::9]:80".parse().unwrap());
        assert_eq!(c[1].destination, "10.1.0.9:80".parse().unwrap());
    }

    #[test]
    fn empty_table_and_bad_input() {
        assert_eq!(text(HEADER, false), title(false));
        assert_eq!(parse(HEADER.as_bytes()).unwrap(), vec![]);
        // No header at all: ipvsadm says "unexpected input".
        let mut out = Vec::new();
        let e = write_text("".as_bytes(), &mut out, false).unwrap_err();
        assert!(e.to_string().contains("unexpected input"), "{e}");
        let e = parse(format!("{HEADER}TCP 0A000001 zz\n").as_bytes()).unwrap_err();
        assert!(e.to_string().contains("line 2"), "{e}");
    }

    #[test]
    fn strtoul_like_glibc() {
        assert_eq!(strtoul16("0A000001"), 0x0A00_0001);
        assert_eq!(strtoul16("2001:0db8::1"), 0x2001);
        assert_eq!(strtoul16("0x1F"), 0x1F);
        assert_eq!(strtoul16("zz"), 0);
        assert_eq!(strtoul16("FFFFFFFFFFFFFFFFFF"), u64::MAX);
    }
}
