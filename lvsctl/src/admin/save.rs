//! `lvsctl save`: the table in `ipvsadm -Sn` format, byte for byte what
//! ipvsadm 1.31 prints for the same table.
//!
//! One extension, only with `--thresholds`: real servers with a threshold get
//! ` -x U -y L` (ipvsadm does not save thresholds, although `-R` reads them).

use std::fmt::Write;

use ipvs::{DestinationEntry, Family, Forward, Netmask, Service, ServiceEntry, ServiceKey, Tunnel, TunnelChecksum};

use super::list::addr_port;
use super::sort::{service_order, sort_dests_into};
use super::text::{push_addr_port, push_i64};

/// The `-t ADDR:PORT` / `-f MARK [-6]` part of a rule.
pub(crate) fn rule_service_name(key: &ServiceKey) -> String {
    match key {
        // ipvsadm prints the mark with %d.
        ServiceKey::Fwmark { mark, family: Family::Inet } => format!("-f {}", *mark as i32),
        ServiceKey::Fwmark { mark, family: Family::Inet6 } => format!("-f {} -6", *mark as i32),
        ServiceKey::Inet { protocol, addr } => {
            let opt = match protocol {
                ipvs::Protocol::Tcp => "-t",
                ipvs::Protocol::Udp => "-u",
                ipvs::Protocol::Sctp => "--sctp-service",
                // A protocol ipvsadm has no option for (ESP, ...).
                ipvs::Protocol::Other(_) => "--xxx-service",
            };
            format!("{opt} {}", addr_port(*addr))
        }
    }
}

/// `-A ...` for a service.
pub(crate) fn service_rule(s: &Service) -> String {
    let mut out = format!("-A {} -s {}", rule_service_name(&s.key), s.scheduler.name());
    if let Some(p) = &s.persistence {
        let _ = write!(out, " -p {}", p.timeout);
        match s.netmask() {
            Netmask::V4(m) if !s.netmask().is_full() => {
                let _ = write!(out, " -M {m}");
            }
            Netmask::V6(l) if l != 128 => {
                let _ = write!(out, " -M {l}");
            }
            _ => {}
        }
    }
    if let Some(pe) = s.pe.as_deref().filter(|p| !p.is_empty()) {
        let _ = write!(out, " --pe {pe}");
    }
    if s.one_packet {
        out.push_str(" -o");
    }
    let flags = s.sched_flags.names(&s.scheduler);
    if !flags.is_empty() {
        let _ = write!(out, " -b {}", flags.join(","));
    }
    out
}

/// ipvsadm's `fwd_switch`.
pub(crate) fn fwd_switch(f: &Forward) -> &'static str {
    match f {
        Forward::Masq => "-m",
        Forward::Tunnel(_) => "-i",
        Forward::Route | Forward::Local => "-g",
        // ipvsadm passes a NULL to printf here; glibc prints "(null)".
        Forward::Bypass | Forward::Other(_) => "(null)",
    }
}

fn csum_opt(c: TunnelChecksum) -> &'static str {
    match c {
        TunnelChecksum::NoCsum => "--tun-nocsum",
        TunnelChecksum::Csum => "--tun-csum",
        TunnelChecksum::RemCsum => "--tun-remcsum",
    }
}

/// `-a ...` for a real server, appended to `out`, with the service part
/// (`-t ADDR:PORT`, [`rule_service_name`]) given: a save of a large table
/// writes every line this way, without formatting the service again or
/// allocating for each line.
fn write_dest_rule(out: &mut String, service_name: &str, d: &DestinationEntry, thresholds: bool) {
    let d = &d.destination;
    out.push_str("-a ");
    out.push_str(service_name);
    out.push_str(" -r ");
    push_addr_port(out, d.addr);
    out.push(' ');
    out.push_str(fwd_switch(&d.forward));
    out.push_str(" -w ");
    push_i64(out, (d.weight as i32).into());
    if let Forward::Tunnel(t) = &d.forward {
        match t {
            Tunnel::Ipip => out.push_str(" --tun-type ipip"),
            Tunnel::Gue { port, checksum } => {
                let _ = write!(out, " --tun-type gue --tun-port {port} {}", csum_opt(*checksum));
            }
            Tunnel::Gre { checksum } => {
                let _ = write!(out, " --tun-type gre {}", csum_opt(*checksum));
            }
        }
    }
    if thresholds && (d.upper_threshold != 0 || d.lower_threshold != 0) {
        let _ = write!(out, " -x {} -y {}", d.upper_threshold, d.lower_threshold);
    }
}

/// Text is handed to the writer in pieces of about this many bytes: a large
/// table is never held as one text (on a 10,000 x 10 table that text was
/// 5 MiB, a sixth of the peak memory of `lvsctl save`).
const CHUNK: usize = 64 * 1024;

/// The whole table as `ipvsadm -Sn` prints it (sorted as ipvsadm sorts),
/// written to `w` in pieces of about [`CHUNK`] bytes, each ending with a line.
pub(crate) fn write_save(
    w: &mut impl std::io::Write,
    table: &[(ServiceEntry, Vec<DestinationEntry>)],
    thresholds: bool,
) -> std::io::Result<()> {
    let mut out = String::with_capacity(CHUNK + 4096);
    // Reused from service to service: the sorted real servers and the sort's buffer.
    let (mut dests, mut tmp) = (Vec::new(), Vec::new());
    for i in service_order(table) {
        let (s, list) = &table[i];
        out.push_str(&service_rule(&s.service));
        out.push('\n');
        let name = rule_service_name(&s.service.key);
        sort_dests_into(list, &mut dests, &mut tmp);
        for d in &dests {
            write_dest_rule(&mut out, &name, d, thresholds);
            out.push('\n');
            if out.len() >= CHUNK {
                w.write_all(out.as_bytes())?;
                out.clear();
            }
        }
        if out.len() >= CHUNK {
            w.write_all(out.as_bytes())?;
            out.clear();
        }
    }
    w.write_all(out.as_bytes())
}

/// [`write_save`] into one text.
#[cfg(test)]
pub(crate) fn format_save(table: &[(ServiceEntry, Vec<DestinationEntry>)], thresholds: bool) -> String {
    let mut text = Vec::new();
    write_save(&mut text, table, thresholds).expect("writing to memory does not fail");
    String::from_utf8(text).expect("the lines are built from strings")
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use ipvs::{Destination, Persistence, SchedFlags, Scheduler};

    pub(crate) fn entry(s: Service, d: Vec<Destination>) -> (ServiceEntry, Vec<DestinationEntry>) {
        (s.into(), d.into_iter().map(DestinationEntry::from).collect())
    }

    fn dest(a: &str, f: Forward, w: u32) -> Destination {
        Destination::new(a.parse().unwrap(), f).with_weight(w)
    }

    /// Lines ipvsadm 1.31 printed on the test VM (`ipvsadm -Sn`).
    #[test]
    fn like_ipvsadm() {
        let mut s = Service::new(ServiceKey::tcp("10.0.0.10:80".parse().unwrap()), Scheduler::Sh);
        s.persistence =
            Some(Persistence { timeout: 360, netmask: Some(Netmask::V4("255.255.255.0".parse().unwrap())) });
        s.pe = Some("sip".into());
        s.sched_flags = SchedFlags::FLAG_2;
        let mut u = Service::new(ServiceKey::udp("10.0.0.70:53".parse().unwrap()), Scheduler::Sh);
        u.persistence = Some(Persistence { timeout: 10, netmask: None });
        u.pe = Some("sip".into());
        u.one_packet = true;
        u.sched_flags = SchedFlags::FLAG_2;
        let mut f6 = Service::new(ServiceKey::fwmark(2, Family::Inet6), Scheduler::Wrr);
        f6.persistence = Some(Persistence { timeout: 100, netmask: Some(Netmask::V6(64)) });
        let mut f3 = Service::new(ServiceKey::fwmark(3, Family::Inet6), Scheduler::Wrr);
        f3.pe = Some("sip".into());
        let mut v6 = Service::new(ServiceKey::tcp("[2001:db8::10]:80".parse().unwrap()), Scheduler::Rr);
        v6.persistence = Some(Persistence { timeout: 30, netmask: Some(Netmask::V6(128)) });
        let mut mh = Service::new(ServiceKey::tcp("10.0.0.12:80".parse().unwrap()), Scheduler::Mh);
        mh.persistence = Some(Persistence { timeout: 360, netmask: None });
        mh.sched_flags = SchedFlags::FLAG_1 | SchedFlags::FLAG_2;
        let sctp = Service::new(
            ServiceKey::Inet { protocol: ipvs::Protocol::Sctp, addr: "10.0.0.10:3868".parse().unwrap() },
            Scheduler::Rr,
        );
        let table = vec![
            entry(f3, vec![]),
            entry(sctp, vec![dest("10.1.0.2:3868", Forward::Route, 1)]),
            entry(
                s,
                vec![
                    dest("10.1.0.9:80", Forward::Tunnel(Tunnel::Gre { checksum: TunnelChecksum::NoCsum }), 1),
                    dest("10.1.0.3:8080", Forward::Masq, 7),
                    dest("10.1.0.4:80", Forward::Tunnel(Tunnel::Ipip), 0),
                    dest("10.1.0.2:80", Forward::Route, 1),
                    dest(
                        "10.1.0.5:80",
                        Forward::Tunnel(Tunnel::Gue { port: 6080, checksum: TunnelChecksum::NoCsum }),
                        1,
                    ),
                    dest(
                        "10.1.0.7:80",
                        Forward::Tunnel(Tunnel::Gue { port: 6082, checksum: TunnelChecksum::RemCsum }),
                        1,
                    ),
                    dest("10.1.0.8:80", Forward::Tunnel(Tunnel::Gre { checksum: TunnelChecksum::Csum }), 1),
                ],
            ),
            entry(u, vec![]),
            entry(v6, vec![]),
            entry(f6, vec![dest("[2001:db8:1::2]:0", Forward::Masq, 65535)]),
            entry(mh, vec![]),
        ];
        let want = "\
-A -t 10.0.0.10:80 -s sh -p 360 -M 255.255.255.0 --pe sip -b sh-port
-a -t 10.0.0.10:80 -r 10.1.0.2:80 -g -w 1
-a -t 10.0.0.10:80 -r 10.1.0.3:8080 -m -w 7
-a -t 10.0.0.10:80 -r 10.1.0.4:80 -i -w 0 --tun-type ipip
-a -t 10.0.0.10:80 -r 10.1.0.5:80 -i -w 1 --tun-type gue --tun-port 6080 --tun-nocsum
-a -t 10.0.0.10:80 -r 10.1.0.7:80 -i -w 1 --tun-type gue --tun-port 6082 --tun-remcsum
-a -t 10.0.0.10:80 -r 10.1.0.8:80 -i -w 1 --tun-type gre --tun-csum
-a -t 10.0.0.10:80 -r 10.1.0.9:80 -i -w 1 --tun-type gre --tun-nocsum
-A -t 10.0.0.12:80 -s mh -p 360 -b mh-fallback,mh-port
-A -u 10.0.0.70:53 -s sh -p 10 --pe sip -o -b sh-port
-A --sctp-service 10.0.0.10:3868 -s rr
-a --sctp-service 10.0.0.10:3868 -r 10.1.0.2:3868 -g -w 1
-A -t [2001:db8::10]:80 -s rr -p 30
-A -f 2 -6 -s wrr -p 100 -M 64
-a -f 2 -6 -r [2001:db8:1::2]:0 -m -w 65535
-A -f 3 -6 -s wrr --pe sip
";
        assert_eq!(format_save(&table, false), want);
    }

    #[test]
    fn thresholds_only_with_the_flag() {
        let s = Service::new(ServiceKey::fwmark(3000000000, Family::Inet), Scheduler::Rr);
        let d = dest("10.1.0.3:0", Forward::Masq, 2).with_thresholds(100, 50);
        let t = vec![entry(s, vec![d])];
        assert_eq!(format_save(&t, false), "-A -f -1294967296 -s rr\n-a -f -1294967296 -r 10.1.0.3:0 -m -w 2\n");
        assert_eq!(
            format_save(&t, true),
            "-A -f -1294967296 -s rr\n-a -f -1294967296 -r 10.1.0.3:0 -m -w 2 -x 100 -y 50\n"
        );
    }

    /// Not a test of behaviour but a profiling harness: the user-space work
    /// of `lvsctl save` without a kernel. The table `lvs-bench gen` makes
    /// (`LVSCTL_REPLAY_SERVICES` services, default 10,000, of 10 real servers)
    /// becomes the datagrams a kernel dump of it brings (services scrambled,
    /// real servers newest first, as the kernel lists them); then
    /// [`replay_save_once`] parses them as `Ipvs::dump` does and writes the
    /// save into a discarding writer. In release, under callgrind:
    /// `valgrind --tool=callgrind --toggle-collect='*replay_save_once*'
    /// <lvsctl test binary> --ignored --exact admin::save::tests::replay_save`.
    #[test]
    #[ignore = "a profiling harness, see its documentation"]
    fn replay_save() {
        let n: u32 = std::env::var("LVSCTL_REPLAY_SERVICES").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000);
        let (m, base) = (10, u32::from(std::net::Ipv4Addr::new(10, 128, 0, 1)));
        let size = n.next_power_of_two();
        let table: ipvs::Table = (0..size)
            .map(|k| k.wrapping_mul(0x9e37_79b1) & (size - 1))
            .filter(|i| *i < n)
            .map(|i| {
                let vip = std::net::Ipv4Addr::from(u32::from(std::net::Ipv4Addr::new(10, 1, 0, 1)) + i);
                let s = Service::new(ServiceKey::tcp((vip, 80).into()), Scheduler::Wrr);
                let d = (0..m).rev().map(|j| {
                    let rip = std::net::Ipv4Addr::from(base + i * m + j);
                    dest(&format!("{rip}:80"), Forward::Route, 1 + (i + j) % 10)
                });
                entry(s, d.collect())
            })
            .collect();
        let (services, dests) = ipvs::replay::kernel_datagrams(0x20, &table);
        let bytes = replay_save_once(&services, &dests);
        assert_eq!(bytes, format_save(&table, false).len());
    }

    /// Parse the datagrams into a table and write its save; the bytes written.
    #[inline(never)]
    fn replay_save_once(services: &[Vec<u8>], dests: &[Vec<Vec<u8>>]) -> usize {
        struct Count(usize);
        impl std::io::Write for Count {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0 += b.len();
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let table = ipvs::replay::dump(0x20, services, dests).expect("the datagrams parse");
        let mut w = Count(0);
        write_save(&mut w, &table, false).expect("counting does not fail");
        w.0
    }
}
