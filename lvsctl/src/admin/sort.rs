//! The order ipvsadm lists in, reproduced exactly.
//!
//! ipvsadm 1.31 sorts with glibc's `qsort` (a merge sort) and libipvs's
//! comparators, which subtract unsigned 32-bit words and read the result as
//! an `int`. So addresses more than 2^31 apart compare "the wrong way round"
//! (`ipvsadm -Ln` lists 100.0.0.1, 200.0.0.1, 10.0.0.1 in that order, and a
//! fwmark of 3000000000 before 5), and the order is then not even transitive.
//! To print byte for byte what ipvsadm prints, both the comparators and the
//! merge sort are reproduced here.

use std::net::IpAddr;

use ipvs::{DestinationEntry, ServiceEntry, ServiceKey};

/// `(int)(a - b)` of two C `unsigned int`s.
fn csub(a: u32, b: u32) -> i32 {
    a.wrapping_sub(b) as i32
}

/// The address as libipvs holds it: four host-order words of `union nf_inet_addr`.
fn words(ip: IpAddr) -> [u32; 4] {
    match ip {
        IpAddr::V4(a) => [u32::from(a), 0, 0, 0],
        IpAddr::V6(a) => {
            let o = a.octets();
            std::array::from_fn(|i| u32::from_be_bytes([o[4 * i], o[4 * i + 1], o[4 * i + 2], o[4 * i + 3]]))
        }
    }
}

fn addr_cmp(v6: bool, a: IpAddr, b: IpAddr) -> i32 {
    let (wa, wb) = (words(a), words(b));
    if v6 {
        for i in 0..4 {
            let r = csub(wa[i], wb[i]);
            if r != 0 {
                return r;
            }
        }
        0
    } else {
        csub(wa[0], wb[0])
    }
}

/// libipvs `ipvs_cmp_services`.
pub(crate) fn cmp_services(a: &ServiceKey, b: &ServiceKey) -> i32 {
    // (fwmark, af, protocol, address, port) as libipvs holds a service entry.
    fn parts(k: &ServiceKey) -> (u32, i32, i32, Option<IpAddr>, i32) {
        match k {
            ServiceKey::Inet { protocol, addr } => {
                (0, k.family().af() as i32, protocol.number() as i32, Some(addr.ip()), addr.port() as i32)
            }
            ServiceKey::Fwmark { mark, family } => (*mark, family.af() as i32, 0, None, 0),
        }
    }
    let (fa, afa, pa, ia, pta) = parts(a);
    let (fb, afb, pb, ib, ptb) = parts(b);
    let r = csub(fa, fb);
    if r != 0 {
        return r;
    }
    if afa != afb {
        return afa - afb;
    }
    if pa != pb {
        return pa - pb;
    }
    let zero = IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED);
    let r = addr_cmp(a.family() == ipvs::Family::Inet6, ia.unwrap_or(zero), ib.unwrap_or(zero));
    if r != 0 {
        return r;
    }
    pta - ptb
}

/// libipvs `ipvs_cmp_dests`: by the first entry's family, address then port.
pub(crate) fn cmp_dests(a: &DestinationEntry, b: &DestinationEntry) -> i32 {
    let (x, y) = (a.destination.addr, b.destination.addr);
    let r = addr_cmp(x.is_ipv6(), x.ip(), y.ip());
    if r != 0 {
        return r;
    }
    x.port() as i32 - y.port() as i32
}

/// glibc's `msort_with_tmp`: split in halves (the first one `n/2` long), sort
/// each, merge taking from the first half while `cmp(first, second) <= 0`.
pub(crate) fn glibc_msort<T: Clone>(v: &mut [T], cmp: &impl Fn(&T, &T) -> i32) {
    let mut tmp = Vec::with_capacity(v.len());
    msort_with_tmp(v, &mut tmp, cmp);
}

/// [`glibc_msort`] merging through `tmp` (one buffer for the whole sort).
fn msort_with_tmp<T: Clone>(v: &mut [T], tmp: &mut Vec<T>, cmp: &impl Fn(&T, &T) -> i32) {
    let n = v.len();
    if n <= 1 {
        return;
    }
    let n1 = n / 2;
    msort_with_tmp(&mut v[..n1], tmp, cmp);
    msort_with_tmp(&mut v[n1..], tmp, cmp);
    let (mut i, mut j) = (0, n1);
    tmp.clear();
    while i < n1 && j < n {
        if cmp(&v[i], &v[j]) <= 0 {
            tmp.push(v[i].clone());
            i += 1;
        } else {
            tmp.push(v[j].clone());
            j += 1;
        }
    }
    tmp.extend_from_slice(&v[i..n1]);
    tmp.extend_from_slice(&v[j..n]);
    v.clone_from_slice(tmp);
}

/// The positions of `table`'s services in ipvsadm's order. Sorting positions
/// makes the same comparisons in the same places as sorting the entries, so
/// the order is the same, without copying entries (and their real-server
/// lists) at every merge step: on a 10,000-service table that copying made
/// `save` and `list` slower than the dump and doubled their memory.
pub(crate) fn service_order(table: &[(ServiceEntry, Vec<DestinationEntry>)]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..table.len()).collect();
    glibc_msort(&mut idx, &|a: &usize, b: &usize| cmp_services(&table[*a].0.service.key, &table[*b].0.service.key));
    idx
}

/// A service's real servers in ipvsadm's order (sorted references: an
/// entry is too large to copy around a merge sort).
pub(crate) fn sorted_dests(d: &[DestinationEntry]) -> Vec<&DestinationEntry> {
    let mut out = Vec::new();
    sort_dests_into(d, &mut out, &mut Vec::new());
    out
}

/// [`sorted_dests`] into `out`, merging through `tmp`: a caller that sorts
/// the real servers of many services reuses both.
pub(crate) fn sort_dests_into<'a>(
    d: &'a [DestinationEntry],
    out: &mut Vec<&'a DestinationEntry>,
    tmp: &mut Vec<&'a DestinationEntry>,
) {
    out.clear();
    out.extend(d);
    msort_with_tmp(out, tmp, &|a: &&DestinationEntry, b: &&DestinationEntry| cmp_dests(a, b));
}

/// A table in ipvsadm's order: services, and each service's destinations.
pub(crate) fn sort_table(table: &mut [(ServiceEntry, Vec<DestinationEntry>)]) {
    let order = service_order(table);
    // Put the entry of position order[k] at k, following the permutation's cycles.
    let mut done = vec![false; order.len()];
    for start in 0..order.len() {
        let mut j = start;
        while !done[j] {
            done[j] = true;
            let k = order[j];
            if k == start {
                break;
            }
            table.swap(j, k);
            j = k;
        }
    }
    for (_, d) in table.iter_mut() {
        glibc_msort(d, &cmp_dests);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipvs::{Family, Protocol};

    fn tcp(s: &str) -> ServiceKey {
        ServiceKey::tcp(s.parse().unwrap())
    }

    fn sorted(mut v: Vec<ServiceKey>) -> Vec<ServiceKey> {
        glibc_msort(&mut v, &|a: &ServiceKey, b: &ServiceKey| cmp_services(a, b));
        v
    }

    /// Sorting positions then moving entries gives exactly what sorting the
    /// entries gives, also where ipvsadm's comparison is not transitive.
    #[test]
    fn sorting_positions_is_sorting_entries() {
        use ipvs::{Destination, Forward, Scheduler, Service};
        let mut keys = Vec::new();
        for i in 0..60u32 {
            let a = [10u32, 100, 200, 250, 1][(i % 5) as usize];
            keys.push(tcp(&format!("{a}.{}.0.{}:{}", i % 7, i % 11, 80 + i % 3)));
            if i % 9 == 0 {
                keys.push(ServiceKey::fwmark([5, 3_000_000_000, 2_000_000_000][(i % 3) as usize] + i, Family::Inet));
            }
        }
        let table: Vec<(ServiceEntry, Vec<DestinationEntry>)> = keys
            .iter()
            .enumerate()
            .map(|(n, k)| {
                let dests = (0..(n % 4) as u32)
                    .map(|j| {
                        DestinationEntry::from(Destination::new(
                            format!("{}.0.0.{}:80", [10, 200, 100][(j % 3) as usize], 9 - j).parse().unwrap(),
                            Forward::Route,
                        ))
                    })
                    .collect();
                (ServiceEntry::from(Service::new(*k, Scheduler::Rr)), dests)
            })
            .collect();
        let mut want = table.clone();
        glibc_msort(&mut want, &|a: &(ServiceEntry, Vec<DestinationEntry>),
                                 b: &(ServiceEntry, Vec<DestinationEntry>)| {
            cmp_services(&a.0.service.key, &b.0.service.key)
        });
        for (_, d) in want.iter_mut() {
            glibc_msort(d, &cmp_dests);
        }
        let mut got = table.clone();
        sort_table(&mut got);
        assert_eq!(got, want);
        let by_order: Vec<_> = service_order(&table)
            .into_iter()
            .map(|i| (table[i].0.clone(), sorted_dests(&table[i].1).into_iter().cloned().collect()))
            .collect();
        assert_eq!(by_order, want);
    }

    #[test]
    fn ordinary_order() {
        let v = vec![
            ServiceKey::fwmark(1, Family::Inet),
            ServiceKey::Inet { protocol: Protocol::Sctp, addr: "10.0.0.10:3868".parse().unwrap() },
            tcp("[2001:db8::10]:80"),
            ServiceKey::udp("10.0.0.10:53".parse().unwrap()),
            tcp("10.0.0.16:80"),
            tcp("10.0.0.10:80"),
        ];
        assert_eq!(
            sorted(v),
            vec![
                tcp("10.0.0.10:80"),
                tcp("10.0.0.16:80"),
                ServiceKey::udp("10.0.0.10:53".parse().unwrap()),
                ServiceKey::Inet { protocol: Protocol::Sctp, addr: "10.0.0.10:3868".parse().unwrap() },
                tcp("[2001:db8::10]:80"),
                ServiceKey::fwmark(1, Family::Inet),
            ]
        );
    }

    /// ipvsadm 1.31 on the test VM listed 100.0.0.1, 200.0.0.1, 10.0.0.1 (a
    /// cycle of the wrapping comparator), fwmark 3000000000 before everything
    /// and [fd00::1] before [2001:db8::1].
    #[test]
    fn wrapping_like_ipvsadm() {
        let c = |a: &str, b: &str| cmp_services(&tcp(a), &tcp(b));
        assert!(c("100.0.0.1:80", "200.0.0.1:80") < 0);
        assert!(c("200.0.0.1:80", "10.0.0.1:80") < 0);
        assert!(c("10.0.0.1:80", "100.0.0.1:80") < 0);
        assert!(c("[fd00::1]:80", "[2001:db8::1]:80") < 0);
        let big = ServiceKey::fwmark(3000000000, Family::Inet);
        assert!(cmp_services(&big, &tcp("10.0.0.1:80")) < 0);
        assert!(cmp_services(&big, &ServiceKey::fwmark(5, Family::Inet)) < 0);
        let s = sorted(vec![tcp("[2001:db8::1]:80"), ServiceKey::fwmark(5, Family::Inet), tcp("[fd00::1]:80"), big]);
        assert_eq!(s, vec![big, tcp("[fd00::1]:80"), tcp("[2001:db8::1]:80"), ServiceKey::fwmark(5, Family::Inet)]);
    }

    #[test]
    fn msort_is_stable_for_equal_keys() {
        let mut v = vec![(1, 'a'), (0, 'b'), (1, 'c'), (0, 'd')];
        glibc_msort(&mut v, &|a: &(i32, char), b: &(i32, char)| a.0 - b.0);
        assert_eq!(v, vec![(0, 'b'), (0, 'd'), (1, 'a'), (1, 'c')]);
    }
}
