//! Received dump bytes parsed as [`crate::Ipvs::dump`] parses them, without
//! a kernel: for host harnesses that profile the dump's user-space work
//! (`lvs-bench replay`, run under callgrind). Not part of the supported API.

use ipvs_sys::{emit_request, DestAttr, InetAddr, IpvsAttr, IpvsCmd, IpvsMessage, ServiceAttr, StatsAttr, StatsField};

use crate::conn::{dump_datagram, Datagram};
use crate::convert::{dest_attrs, service_attrs};
use crate::dumpparse::service_message;
use crate::error::{Error, Result};
use crate::handle::{assemble, unique_services, DestLists, Table};
use crate::types::{DestinationEntry, Forward, ServiceEntry, Stats};

/// The sequence number the replayed service dump's messages carry; the
/// destination dump of service `i` (in the order the service dump lists
/// them) carries `SERVICE_DUMP_SEQ + 1 + i`.
pub const SERVICE_DUMP_SEQ: u32 = 1;

/// The table [`crate::Ipvs::dump`] makes of these datagrams, as received
/// from the kernel: `services`, the service dump's datagrams, and per
/// service (in the order of that dump) the datagrams of its destination
/// dump, each dump ending with `NLMSG_DONE`. The parsing, the pieces and
/// the assembly are the dump's own; only the sockets are left out (and so
/// the second look at services without destinations).
pub fn dump(family_id: u16, services: &[Vec<u8>], dests: &[Vec<Vec<u8>>]) -> Result<Table> {
    let mut svcs = Vec::new();
    if let Err(e) = replay(services, SERVICE_DUMP_SEQ, family_id, |_cmd, attrs| service_message(attrs, &mut svcs))? {
        return Err(Error::Kernel { context: "listing services".into(), errno: e });
    }
    unique_services(&mut svcs);
    if dests.len() != svcs.len() {
        return Err(Error::Decode(format!("{} services but {} destination dumps", svcs.len(), dests.len())));
    }
    let mut state = DestLists::default();
    let mut results = Vec::with_capacity(svcs.len());
    for (i, (s, datagrams)) in svcs.iter().zip(dests).enumerate() {
        let fam = s.service.key.family();
        let seq = SERVICE_DUMP_SEQ + 1 + i as u32;
        results.push(replay(datagrams, seq, family_id, |_cmd, attrs| state.add(i, fam, attrs))?);
    }
    assemble(svcs, vec![state], results)
}

/// Hand the messages of dump `seq` in `datagrams` to `f`: `Ok(errno)`, 0 or
/// the kernel's positive errno, from the message that ends it.
fn replay(
    datagrams: &[Vec<u8>],
    seq: u32,
    family_id: u16,
    mut f: impl FnMut(u8, &[u8]) -> Result<()>,
) -> Result<std::result::Result<(), i32>> {
    for d in datagrams {
        match dump_datagram(d, seq, family_id, &mut f)? {
            Datagram::More => {}
            Datagram::End(0) => return Ok(Ok(())),
            Datagram::End(e) => return Ok(Err(e)),
            Datagram::Overrun => return Err(Error::Decode("netlink overrun".into())),
        }
    }
    Err(Error::Decode(format!("dump {seq} has no end")))
}

/// The datagrams the kernel (Linux 6.1) sends for a dump of `table`, for
/// [`dump`]: one message per service and per destination, each with the
/// attributes the kernel fills in (counters, both statistics sets), packed
/// into datagrams as long as the ones [`crate::Ipvs::dump`] asks for, each
/// dump's `NLMSG_DONE` in a datagram of its own. The service dump carries
/// [`SERVICE_DUMP_SEQ`], the destination dump of service `i` the next
/// sequence numbers.
pub fn kernel_datagrams(family_id: u16, table: &Table) -> (Vec<Vec<u8>>, Vec<Vec<Vec<u8>>>) {
    use crate::conn::{DEST_DUMP_RECV_LEN, DUMP_RECV_LEN};
    let svc_msgs = table.iter().map(|(s, _)| service_message_of(s));
    let services = datagrams(family_id, SERVICE_DUMP_SEQ, DUMP_RECV_LEN, svc_msgs);
    let dests = table
        .iter()
        .enumerate()
        .map(|(i, (_, d))| {
            let seq = SERVICE_DUMP_SEQ + 1 + i as u32;
            datagrams(family_id, seq, DEST_DUMP_RECV_LEN, d.iter().map(dest_message_of))
        })
        .collect();
    (services, dests)
}

/// Messages packed into datagrams of at most `max` bytes, then `NLMSG_DONE`.
fn datagrams(family_id: u16, seq: u32, max: usize, msgs: impl Iterator<Item = IpvsMessage>) -> Vec<Vec<u8>> {
    const NLM_F_MULTI: u16 = 2;
    let mut out = Vec::new();
    let mut cur = Vec::new();
    let mut one = Vec::new();
    for m in msgs {
        one.clear();
        emit_request(&mut one, family_id, NLM_F_MULTI, seq, &m);
        if !cur.is_empty() && cur.len() + one.len() > max {
            out.push(std::mem::take(&mut cur));
        }
        cur.extend_from_slice(&one);
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    // NLMSG_DONE: a header and the dump's status (0).
    let mut done = vec![0u8; 20];
    done[0..4].copy_from_slice(&20u32.to_ne_bytes());
    done[4..6].copy_from_slice(&netlink_packet_core::NLMSG_DONE.to_ne_bytes());
    done[6..8].copy_from_slice(&NLM_F_MULTI.to_ne_bytes());
    done[8..12].copy_from_slice(&seq.to_ne_bytes());
    out.push(done);
    out
}

/// A statistics set as the kernel fills `STATS` (`wide` false: 32-bit but
/// for the byte counters) or `STATS64`.
fn stats_attrs(s: &Stats, wide: bool) -> Vec<StatsAttr> {
    let v = [s.conns, s.in_pkts, s.out_pkts, s.in_bytes, s.out_bytes, s.cps, s.in_pps, s.out_pps, s.in_bps, s.out_bps];
    StatsField::ALL
        .iter()
        .zip(v)
        .map(|(f, v)| {
            if wide || matches!(f, StatsField::InBytes | StatsField::OutBytes) {
                StatsAttr::U64(*f, v)
            } else {
                StatsAttr::U32(*f, v as u32)
            }
        })
        .collect()
}

fn service_message_of(s: &ServiceEntry) -> IpvsMessage {
    let mut a = service_attrs(&s.service);
    a.push(ServiceAttr::Stats(stats_attrs(&s.stats, false)));
    a.push(ServiceAttr::Stats64(stats_attrs(&s.stats, true)));
    IpvsMessage::new(IpvsCmd::NewService, vec![IpvsAttr::Service(a)])
}

fn dest_message_of(d: &DestinationEntry) -> IpvsMessage {
    let mut a = dest_attrs(&d.destination);
    if !matches!(d.destination.forward, Forward::Tunnel(_)) {
        // The kernel always sends the tunnel attributes.
        a.extend([DestAttr::TunType(0), DestAttr::TunPort(0), DestAttr::TunFlags(0)]);
    }
    a.extend([
        DestAttr::ActiveConns(d.active_conns),
        DestAttr::InactiveConns(d.inactive_conns),
        DestAttr::PersistConns(d.persistent_conns),
        DestAttr::AddressFamily(InetAddr::family_of(d.destination.addr.ip())),
        DestAttr::Stats(stats_attrs(&d.stats, false)),
        DestAttr::Stats64(stats_attrs(&d.stats, true)),
    ]);
    IpvsMessage::new(IpvsCmd::NewDest, vec![IpvsAttr::Dest(a)])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{Destination, Scheduler, Service, ServiceKey};

    /// A table survives the trip through the kernel's bytes.
    #[test]
    fn a_table_comes_back_from_its_datagrams() {
        let mut table: Table = Vec::new();
        for i in 0..30u32 {
            let key = ServiceKey::tcp(format!("10.0.{}.{}:80", i / 200, i % 200 + 1).parse().unwrap());
            let dests = (0..i % 25)
                .map(|j| {
                    let mut d = DestinationEntry::from(Destination::new(
                        format!("10.1.{i}.{}:8080", j + 1).parse().unwrap(),
                        Forward::Route,
                    ));
                    d.stats.in_bytes = u64::from(i) << 33;
                    d.active_conns = j;
                    d
                })
                .collect();
            table.push((ServiceEntry::from(Service::new(key, Scheduler::Wrr)), dests));
        }
        let (s, d) = kernel_datagrams(0x20, &table);
        // Destination dumps of 24 entries take more than one datagram.
        assert!(d[24].len() > 2, "{}", d[24].len());
        assert_eq!(dump(0x20, &s, &d).unwrap(), table);
        // A dump without its end is an error.
        let mut cut = d.clone();
        cut[3].pop();
        assert!(dump(0x20, &s, &cut).is_err());
    }
}
