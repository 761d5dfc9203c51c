//! Privileged tests of the `ipvs` library against the real kernel.
//!
//! Every test runs in a fresh network namespace (its own empty IPVS table),
//! writes through the library, reads back through the library and compares
//! field by field, and where it can, reads the table again with an independent
//! reader (`ipvsadm -Sn`, `ipvsadm -Ln`, `/proc/net/ip_vs`) and compares that
//! too. Run with `scripts/privileged-tests library`.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use ipvs::*;
use lvsctl_tests::kernel::*;
use lvsctl_tests::*;

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// Read the service back with both `service()` and `services()` and check it
/// equals what was written, then compare the whole table with `ipvsadm -Sn`.
async fn assert_service(h: &Ipvs, want: &Service) {
    let one = h.service(&want.key).await.unwrap_or_else(|e| panic!("get {}: {e}", want.key));
    assert_eq!(&one.service, want, "GET_SERVICE of {}", want.key);
    let all = h.services().await.unwrap();
    let found: Vec<_> = all.iter().filter(|s| s.service.key == want.key).collect();
    assert_eq!(found.len(), 1, "{} once in the service dump", want.key);
    assert_eq!(&found[0].service, want, "service dump entry of {}", want.key);
}

/// The whole table as the library reads it equals what ipvsadm shows, both
/// `-Sn` (configuration) and `-Ln` (destinations with their counts).
async fn assert_matches_ipvsadm(h: &Ipvs) {
    let table = h.dump().await.unwrap();
    assert_same_table(as_saved(&table), ipvsadm_save());
    assert_same_as_ipvsadm_list(&table);
}

fn expect_invalid<T: std::fmt::Debug>(r: Result<T>, what: &str) {
    match r {
        Err(Error::Invalid(msg)) => assert!(!msg.is_empty(), "{what}: empty message"),
        other => panic!("{what}: expected Error::Invalid, got {other:?}"),
    }
}

// ---- services -----------------------------------------------------------------

#[test]
#[ignore = "privileged: needs root and IPVS (scripts/privileged-tests)"]
fn smoke_add_list_delete() {
    let _table = shared_table();
    in_fresh_netns(|| async {
        let h = connect().await;
        let info = h.info().await.unwrap();
        assert_eq!(info.version_string(), "1.2.1");
        let key = ServiceKey::tcp("10.19.70.166:15858".parse().unwrap());
        h.add_service(&Service::new(key, Scheduler::Rr)).await.unwrap();
        let d = Destination::new("10.18.68.186:15858".parse().unwrap(), Forward::Route);
        h.add_destination(&key, &d).await.unwrap();
        let table = h.dump().await.unwrap();
        assert_eq!(table.len(), 1);
        assert_eq!(table[0].0.service, Service::new(key, Scheduler::Rr));
        assert_eq!(table[0].1.len(), 1);
        assert_eq!(table[0].1[0].destination, d);
        let saved = ipvsadm(&["-Sn"]);
        assert_eq!(saved, "-A -t 10.19.70.166:15858 -s rr\n-a -t 10.19.70.166:15858 -r 10.18.68.186:15858 -g -w 1\n");
        h.delete_service(&key).await.unwrap();
        assert!(h.services().await.unwrap().is_empty());
    });
}

/// Every protocol on IPv4 and IPv6 and fwmark on both families: add, read
/// back, update every field, read back, cross-check with ipvsadm, delete.
#[test]
#[ignore = "privileged: needs root and IPVS (scripts/privileged-tests)"]
fn service_every_protocol_and_family() {
    let _table = shared_table();
    in_fresh_netns(|| async {
        let h = connect().await;
        let keys = [
            ServiceKey::tcp(sa("10.0.0.1:80")),
            ServiceKey::udp(sa("10.0.0.1:53")),
            ServiceKey::sctp(sa("10.0.0.1:3868")),
            ServiceKey::tcp(sa("[2001:db8::1]:443")),
            ServiceKey::udp(sa("[2001:db8::1]:53")),
            ServiceKey::sctp(sa("[2001:db8::1]:3868")),
            ServiceKey::fwmark(1, Family::Inet),
            ServiceKey::fwmark(0xfffffffe, Family::Inet6),
            // Port 0: every port.
            ServiceKey::tcp(sa("10.0.0.2:0")),
        ];
        for key in keys {
            let s = Service::new(key, Scheduler::Wlc);
            h.add_service(&s).await.unwrap_or_else(|e| panic!("add {key}: {e}"));
            assert_service(&h, &s).await;
        }
        assert_matches_ipvsadm(&h).await;
        for key in keys {
            let netmask = match key.family() {
                Family::Inet => Netmask::V4(Ipv4Addr::new(255, 255, 0, 0)),
                Family::Inet6 => Netmask::V6(48),
            };
            let s = Service::new(key, Scheduler::Sh)
                .with_sched_flags(SchedFlags::FLAG_1 | SchedFlags::FLAG_2)
                .with_persistence(Persistence { timeout: 1234, netmask: Some(netmask) })
                .with_one_packet(true);
            h.update_service(&s).await.unwrap_or_else(|e| panic!("update {key}: {e}"));
            assert_service(&h, &s).await;
            // And back to plain: flags and persistence must really go away.
            let plain = Service::new(key, Scheduler::Rr);
            h.update_service(&plain).await.unwrap();
            assert_service(&h, &plain).await;
            h.update_service(&s).await.unwrap();
        }
        assert_matches_ipvsadm(&h).await;
        assert_lists_services(&h, keys.len()).await;
        for key in keys {
            h.delete_service(&key).await.unwrap();
            assert!(matches!(h.service(&key).await, Err(Error::NoSuchService(_))), "{key} is gone");
        }
        assert!(h.services().await.unwrap().is_empty());
        assert_eq!(ipvsadm(&["-Sn"]), "");
    });
}

/// Every mainline scheduler: those the kernel has work and read back; the
/// others (detected from the system, not assumed) give SchedulerNotFound.
#[test]
#[ignore = "privileged: needs root and IPVS (scripts/privileged-tests)"]
fn every_scheduler() {
    let _table = shared_table();
    in_fresh_netns(|| async {
        let h = connect().await;
        let mut missing = Vec::new();
        for (i, sched) in Scheduler::MAINLINE.iter().enumerate() {
            let key = ServiceKey::tcp(SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 1, i as u8 + 1)), 80));
            let s = Service::new(key, sched.clone());
            let have = kernel_has_scheduler(sched.name());
            match h.add_service(&s).await {
                Ok(()) => {
                    assert!(have, "scheduler {sched} worked although the system shows no module ip_vs_{sched}");
                    assert_service(&h, &s).await;
                    // A destination can be scheduled to.
                    h.add_destination(
                        &key,
                        &Destination::new(
                            SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 9, 1, i as u8 + 1)), 80),
                            Forward::Route,
                        ),
                    )
                    .await
                    .unwrap();
                }
                Err(e @ Error::SchedulerNotFound { .. }) => {
                    assert!(!have, "the system has ip_vs_{sched} but the kernel said SchedulerNotFound: {e}");
                    missing.push(sched.name().to_owned());
                    assert!(matches!(h.service(&key).await, Err(Error::NoSuchService(_))));
                }
                Err(e) => panic!("scheduler {sched}: {e}"),
            }
        }
        eprintln!("schedulers missing from this kernel: {missing:?}");
        assert_matches_ipvsadm(&h).await;
        // Switching a service through every available scheduler.
        let key = ServiceKey::udp(sa("[2001:db8::9]:53"));
        h.add_service(&Service::new(key, Scheduler::Rr)).await.unwrap();
        for sched in Scheduler::MAINLINE.iter().filter(|s| !missing.iter().any(|m| m == s.name())) {
            let s = Service::new(key, sched.clone());
            h.update_service(&s).await.unwrap_or_else(|e| panic!("switch to {sched}: {e}"));
            assert_service(&h, &s).await;
        }
        // An out-of-tree name the kernel does not have.
        let bogus = Service::new(ServiceKey::tcp(sa("10.0.2.1:80")), Scheduler::from_name("nosuchsched").unwrap());
        assert!(matches!(h.add_service(&bogus).await, Err(Error::SchedulerNotFound { .. })));
        assert!(matches!(
            h.update_service(&Service::new(key, bogus.scheduler.clone())).await,
            Err(Error::SchedulerNotFound { .. })
        ));
    });
}

/// Scheduler flags, persistence with netmasks (IPv4 and IPv6), one-packet and
/// the sip persistence engine, each read back and checked against ipvsadm.
#[test]
#[ignore = "privileged: needs root and IPVS (scripts/privileged-tests)"]
fn service_flags_persistence_onepacket_pe() {
    let _table = shared_table();
    in_fresh_netns(|| async {
        let h = connect().await;
        let cases = vec![
            Service::new(ServiceKey::tcp(sa("10.0.0.1:80")), Scheduler::Sh).with_sched_flags(SchedFlags::FLAG_1),
            Service::new(ServiceKey::tcp(sa("10.0.0.1:81")), Scheduler::Mh)
                .with_sched_flags(SchedFlags::FLAG_1 | SchedFlags::FLAG_2),
            Service::new(ServiceKey::tcp(sa("10.0.0.1:82")), Scheduler::Rr).with_sched_flags(SchedFlags::FLAG_3),
            Service::new(ServiceKey::tcp(sa("10.0.0.1:83")), Scheduler::Wlc)
                .with_persistence(Some(Persistence { timeout: 300, netmask: None })),
            Service::new(ServiceKey::tcp(sa("10.0.0.1:84")), Scheduler::Wlc).with_persistence(Some(Persistence {
                timeout: 7200,
                netmask: Some(Netmask::V4(Ipv4Addr::new(255, 255, 255, 0))),
            })),
            Service::new(ServiceKey::tcp(sa("[2001:db8::1]:84")), Scheduler::Wlc)
                .with_persistence(Some(Persistence { timeout: 1, netmask: Some(Netmask::V6(64)) })),
            Service::new(ServiceKey::fwmark(7, Family::Inet6), Scheduler::Lc)
                .with_persistence(Some(Persistence { timeout: 60, netmask: Some(Netmask::V6(1)) })),
            Service::new(ServiceKey::udp(sa("10.0.0.1:53")), Scheduler::Rr).with_one_packet(true),
            Service::new(ServiceKey::udp(sa("10.0.0.1:5060")), Scheduler::Rr)
                .with_persistence(Some(Persistence { timeout: 180, netmask: None }))
                .with_pe(Some("sip".into())),
            Service::new(ServiceKey::udp(sa("[2001:db8::1]:5060")), Scheduler::Sh)
                .with_persistence(Some(Persistence { timeout: 180, netmask: Some(Netmask::V6(128)) }))
                .with_pe(Some("sip".into()))
                .with_one_packet(true)
                .with_sched_flags(SchedFlags::FLAG_2),
        ];
        for s in &cases {
            h.add_service(s).await.unwrap_or_else(|e| panic!("add {s:?}: {e}"));
            // A full netmask reads back as "no netmask" (the kernel cannot tell them apart).
            let mut want = s.clone();
            if let Some(p) = &mut want.persistence {
                if p.netmask.is_some_and(|m| m.is_full()) {
                    p.netmask = None;
                }
            }
            assert_service(&h, &want).await;
        }
        assert_matches_ipvsadm(&h).await;
        // Removing the engine and persistence by update.
        let mut s = cases[8].clone();
        s.pe = None;
        h.update_service(&s).await.unwrap();
        assert_service(&h, &s).await;
        s.persistence = None;
        h.update_service(&s).await.unwrap();
        assert_service(&h, &s).await;
        // An engine the kernel does not have.
        let bad = cases[8].clone().with_pe(Some("nosuchpe".into()));
        let mut bad = bad;
        bad.key = ServiceKey::udp(sa("10.0.0.1:5061"));
        assert!(matches!(h.add_service(&bad).await, Err(Error::SchedulerNotFound { .. })), "unknown pe");
    });
}

// ---- destinations -----------------------------------------------------------

/// Every forwarding method, every tunnel type and checksum option, weights and
/// thresholds, IPv4 and IPv6 and mixed-family tunnels: add, read back, update,
/// delete; cross-checked with ipvsadm -Sn and -Ln --thresholds.
#[test]
#[ignore = "privileged: needs root and IPVS (scripts/privileged-tests)"]
fn destinations_every_forwarding_method_and_tunnel() {
    let _table = shared_table();
    in_fresh_netns(|| async {
        let h = connect().await;
        let v4 = ServiceKey::tcp(sa("10.0.0.1:80"));
        let v6 = ServiceKey::tcp(sa("[2001:db8::1]:80"));
        let fw4 = ServiceKey::fwmark(3, Family::Inet);
        for k in [v4, v6, fw4] {
            h.add_service(&Service::new(k, Scheduler::Wrr)).await.unwrap();
        }
        let d = |a: &str, f: Forward, w: u32, u: u32, l: u32| {
            Destination::new(sa(a), f).with_weight(w).with_thresholds(u, l)
        };
        let gue = |port, checksum| Forward::Tunnel(Tunnel::Gue { port, checksum });
        let gre = |checksum| Forward::Tunnel(Tunnel::Gre { checksum });
        let cases: Vec<(ServiceKey, Destination)> = vec![
            (v4, d("10.0.1.1:8080", Forward::Masq, 1, 0, 0)),
            (v4, d("10.0.1.2:80", Forward::Route, 0, 0, 0)),
            (v4, d("10.0.1.3:80", Forward::Tunnel(Tunnel::Ipip), 65535, 100, 10)),
            (v4, d("10.0.1.4:80", gue(6080, TunnelChecksum::NoCsum), 2, 0, 0)),
            (v4, d("10.0.1.5:80", gue(6081, TunnelChecksum::Csum), 3, 0, 0)),
            (v4, d("10.0.1.6:80", gue(65535, TunnelChecksum::RemCsum), 4, 0, 0)),
            (v4, d("10.0.1.7:80", gre(TunnelChecksum::NoCsum), 5, 0, 0)),
            (v4, d("10.0.1.8:80", gre(TunnelChecksum::Csum), 2147483647, 2147483647, 2147483646)),
            // Mixed families: only with tunnelling.
            (v4, d("[2001:db8:1::9]:80", Forward::Tunnel(Tunnel::Ipip), 1, 0, 0)),
            (v6, d("10.0.1.10:80", gue(7000, TunnelChecksum::Csum), 1, 0, 0)),
            (v6, d("[2001:db8:1::1]:8080", Forward::Masq, 7, 50, 0)),
            (v6, d("[2001:db8:1::2]:80", Forward::Route, 8, 0, 0)),
            (v6, d("[2001:db8:1::3]:80", gre(TunnelChecksum::Csum), 9, 0, 0)),
            // fwmark: port 0 = the client's port.
            (fw4, d("10.0.1.20:0", Forward::Route, 1, 0, 0)),
            (fw4, d("10.0.1.21:0", Forward::Tunnel(Tunnel::Ipip), 1, 0, 0)),
            (fw4, d("10.0.1.22:8080", Forward::Masq, 1, 0, 0)),
        ];
        for (k, dest) in &cases {
            h.add_destination(k, dest).await.unwrap_or_else(|e| panic!("add {dest:?} to {k}: {e}"));
        }
        let check = |h: Ipvs, cases: Vec<(ServiceKey, Destination)>| async move {
            for k in [v4, v6, fw4] {
                let mut got: Vec<Destination> =
                    h.destinations(&k).await.unwrap().into_iter().map(|e| e.destination).collect();
                let mut want: Vec<Destination> =
                    cases.iter().filter(|(kk, _)| *kk == k).map(|(_, d)| d.clone()).collect();
                got.sort_by_key(|d| d.addr);
                want.sort_by_key(|d| d.addr);
                assert_eq!(got, want, "destinations of {k}");
            }
            assert_matches_ipvsadm(&h).await;
            let th = ipvsadm_thresholds("TCP", "10.0.0.1:80");
            for (k, dest) in cases.iter().filter(|(k, _)| *k == v4) {
                let _ = k;
                let shown = dest.addr.to_string();
                let row = th.iter().find(|(a, ..)| *a == shown).unwrap_or_else(|| panic!("{shown} in {th:?}"));
                assert_eq!(
                    (row.1, row.2),
                    (dest.upper_threshold, dest.lower_threshold),
                    "thresholds of {shown} per ipvsadm"
                );
            }
        };
        check(h.clone(), cases.clone()).await;

        // Update every destination to something else, then read back again.
        let mut updated = Vec::new();
        for (i, (k, dest)) in cases.iter().enumerate() {
            let mut n = dest.clone();
            n.weight = dest.weight.wrapping_add(10) % 1000;
            n.upper_threshold = if i % 2 == 0 { 0 } else { 500 };
            n.lower_threshold = if i % 2 == 0 { 0 } else { 400 };
            // Cycle the forwarding method where the port allows it.
            n.forward = match dest.forward {
                Forward::Masq if dest.addr.port() == 0 || k.is_fwmark() => Forward::Route,
                Forward::Masq => Forward::Masq,
                Forward::Route => Forward::Tunnel(Tunnel::Gre { checksum: TunnelChecksum::Csum }),
                Forward::Tunnel(Tunnel::Ipip) if Family::of(dest.addr.ip()) == k.family() => Forward::Route,
                Forward::Tunnel(Tunnel::Ipip) => gue(1234, TunnelChecksum::RemCsum),
                Forward::Tunnel(Tunnel::Gue { .. }) => Forward::Tunnel(Tunnel::Ipip),
                Forward::Tunnel(Tunnel::Gre { .. }) => gue(999, TunnelChecksum::NoCsum),
                other => other,
            };
            h.update_destination(k, &n).await.unwrap_or_else(|e| panic!("update {n:?} of {k}: {e}"));
            updated.push((*k, n));
        }
        check(h.clone(), updated.clone()).await;

        // Delete them one by one.
        for (k, dest) in &updated {
            h.delete_destination(k, dest.addr).await.unwrap();
        }
        for k in [v4, v6, fw4] {
            assert!(h.destinations(&k).await.unwrap().is_empty());
        }
        assert_matches_ipvsadm(&h).await;
    });
}

/// The local and bypass forwarding methods, which ipvsadm cannot set.
#[test]
#[ignore = "privileged: needs root and IPVS (scripts/privileged-tests)"]
fn destinations_local_and_bypass() {
    let _table = shared_table();
    in_fresh_netns(|| async {
        let h = connect().await;
        let key = ServiceKey::tcp(sa("10.0.0.1:80"));
        h.add_service(&Service::new(key, Scheduler::Rr)).await.unwrap();
        let local = Destination::new(sa("127.0.0.1:80"), Forward::Local);
        let bypass = Destination::new(sa("10.0.3.1:80"), Forward::Bypass);
        h.add_destination(&key, &local).await.unwrap();
        h.add_destination(&key, &bypass).await.unwrap();
        let mut got: Vec<_> = h.destinations(&key).await.unwrap().into_iter().map(|d| d.destination).collect();
        got.sort_by_key(|d| d.addr);
        assert_eq!(got, vec![bypass, local]);
    });
}

// ---- misuse -------------------------------------------------------------------

/// Each misuse gives its typed error; invalid input is refused before
/// anything is sent (the kernel would answer differently, and nothing changes).
#[test]
#[ignore = "privileged: needs root and IPVS (scripts/privileged-tests)"]
fn errors_for_each_misuse() {
    let _table = shared_table();
    in_fresh_netns(|| async {
        let h = connect().await;
        let key = ServiceKey::tcp(sa("10.0.0.1:80"));
        let missing = ServiceKey::tcp(sa("10.0.0.99:80"));
        let s = Service::new(key, Scheduler::Rr);
        h.add_service(&s).await.unwrap();
        assert!(matches!(h.add_service(&s).await, Err(Error::ServiceExists(_))));
        for k in [missing, ServiceKey::fwmark(99, Family::Inet), ServiceKey::udp(sa("[2001:db8::99]:53"))] {
            assert!(matches!(h.service(&k).await, Err(Error::NoSuchService(_))), "get {k}");
            assert!(
                matches!(h.update_service(&Service::new(k, Scheduler::Rr)).await, Err(Error::NoSuchService(_))),
                "update {k}"
            );
            assert!(matches!(h.delete_service(&k).await, Err(Error::NoSuchService(_))), "delete {k}");
            assert!(matches!(h.destinations(&k).await, Err(Error::NoSuchService(_))), "list dests of {k}");
            assert!(matches!(h.zero(Some(&k)).await, Err(Error::NoSuchService(_))), "zero {k}");
            let d = Destination::new(
                SocketAddr::new(
                    if k.family() == Family::Inet {
                        "10.0.0.2".parse().unwrap()
                    } else {
                        "2001:db8::2".parse().unwrap()
                    },
                    k_port(&k),
                ),
                Forward::Route,
            );
            assert!(matches!(h.add_destination(&k, &d).await, Err(Error::NoSuchService(_))), "add dest to {k}");
        }
        let d = Destination::new(sa("10.0.0.2:80"), Forward::Route);
        h.add_destination(&key, &d).await.unwrap();
        assert!(matches!(h.add_destination(&key, &d).await, Err(Error::DestinationExists { .. })));
        let other = Destination::new(sa("10.0.0.3:80"), Forward::Route);
        assert!(matches!(h.update_destination(&key, &other).await, Err(Error::NoSuchDestination { .. })));
        assert!(matches!(h.delete_destination(&key, other.addr).await, Err(Error::NoSuchDestination { .. })));
        assert!(matches!(
            h.add_service(&Service::new(ServiceKey::tcp(sa("10.0.0.1:81")), Scheduler::Other("nosuch".into()))).await,
            Err(Error::SchedulerNotFound { .. })
        ));

        let before = h.dump().await.unwrap();
        let before_saved = ipvsadm(&["-Sn"]);
        // Validation: refused before sending.
        expect_invalid("icmp".parse::<Protocol>(), "protocol icmp");
        expect_invalid("".parse::<Protocol>(), "empty protocol");
        for p in [0u8, 129, 255] {
            let s6 = Service::new(ServiceKey::tcp(sa("[2001:db8::5]:80")), Scheduler::Rr)
                .with_persistence(Some(Persistence { timeout: 10, netmask: Some(Netmask::V6(p)) }));
            expect_invalid(h.add_service(&s6).await, &format!("IPv6 netmask /{p}"));
        }
        let s4bad = Service::new(ServiceKey::tcp(sa("10.0.0.5:80")), Scheduler::Rr)
            .with_persistence(Some(Persistence { timeout: 10, netmask: Some(Netmask::V6(64)) }));
        expect_invalid(h.add_service(&s4bad).await, "prefix length on IPv4");
        let s4gap =
            Service::new(ServiceKey::tcp(sa("10.0.0.5:80")), Scheduler::Rr).with_persistence(Some(Persistence {
                timeout: 10,
                netmask: Some(Netmask::V4(Ipv4Addr::new(255, 0, 255, 0))),
            }));
        expect_invalid(h.add_service(&s4gap).await, "non-contiguous netmask");
        expect_invalid(
            h.add_service(&Service::new(ServiceKey::fwmark(0, Family::Inet), Scheduler::Rr)).await,
            "fwmark 0",
        );
        let th = Destination::new(sa("10.0.0.4:80"), Forward::Route).with_thresholds(10, 11);
        expect_invalid(h.add_destination(&key, &th).await, "lower above upper threshold");
        expect_invalid(
            h.update_destination(&key, &Destination::new(d.addr, Forward::Route).with_thresholds(10, 11)).await,
            "update: lower above upper",
        );
        let th0 = Destination::new(sa("10.0.0.4:80"), Forward::Route).with_thresholds(0, 5);
        expect_invalid(h.add_destination(&key, &th0).await, "lower threshold without upper");
        for (u, l) in [(1u32 << 31, 0u32), (u32::MAX, 1)] {
            let big = Destination::new(sa("10.0.0.4:80"), Forward::Route).with_thresholds(u, l);
            expect_invalid(h.add_destination(&key, &big).await, &format!("threshold {u} above i32::MAX"));
        }
        let gre_rem =
            Destination::new(sa("10.0.0.4:80"), Forward::Tunnel(Tunnel::Gre { checksum: TunnelChecksum::RemCsum }));
        expect_invalid(h.add_destination(&key, &gre_rem).await, "GRE with remote checksum offload");
        let gue0 = Destination::new(
            sa("10.0.0.4:80"),
            Forward::Tunnel(Tunnel::Gue { port: 0, checksum: TunnelChecksum::NoCsum }),
        );
        expect_invalid(h.add_destination(&key, &gue0).await, "GUE without port");
        for f in [Forward::Route, Forward::Masq, Forward::Local, Forward::Bypass] {
            let mixed = Destination::new(sa("[2001:db8::4]:80"), f);
            expect_invalid(h.add_destination(&key, &mixed).await, &format!("mixed families with {}", f.name()));
        }
        let dr_port = Destination::new(sa("10.0.0.4:8080"), Forward::Route);
        expect_invalid(h.add_destination(&key, &dr_port).await, "DR port differs");
        let tun_port = Destination::new(sa("10.0.0.4:8080"), Forward::Tunnel(Tunnel::Ipip));
        expect_invalid(h.add_destination(&key, &tun_port).await, "tunnel port differs");
        let heavy = Destination::new(sa("10.0.0.4:80"), Forward::Route).with_weight(1 << 31);
        expect_invalid(h.add_destination(&key, &heavy).await, "weight above i32::MAX");
        // Bulk: one invalid operation and nothing is sent.
        let ops = vec![
            Op::AddService(Service::new(ServiceKey::tcp(sa("10.0.0.6:80")), Scheduler::Rr)),
            Op::AddDestination(key, gue0.clone()),
        ];
        expect_invalid(h.apply(&ops).await, "apply with an invalid operation");
        // Nothing changed.
        assert_eq!(h.dump().await.unwrap(), before);
        assert_eq!(ipvsadm(&["-Sn"]), before_saved);
    });
}

fn k_port(k: &ServiceKey) -> u16 {
    match k {
        ServiceKey::Inet { addr, .. } => addr.port(),
        ServiceKey::Fwmark { .. } => 0,
    }
}

// ---- traffic, stats, zero ---------------------------------------------------

async fn wait_for<T>(what: &str, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    // The kernel folds counters in every 2 s; give it many rounds. This is a
    // bound on waiting for a condition, not a measurement.
    for _ in 0..60 {
        if let Some(v) = f().await {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!("timed out waiting for {what}");
}

fn sum(stats: impl Iterator<Item = Stats>) -> (u64, u64, u64, u64, u64) {
    stats.fold((0, 0, 0, 0, 0), |a, s| {
        (a.0 + s.conns, a.1 + s.in_pkts, a.2 + s.out_pkts, a.3 + s.in_bytes, a.4 + s.out_bytes)
    })
}

fn tuple(s: &Stats) -> (u64, u64, u64, u64, u64) {
    (s.conns, s.in_pkts, s.out_pkts, s.in_bytes, s.out_bytes)
}

/// Real traffic from a client namespace through two NAT services to local
/// echo servers: 64-bit counters count it, destinations sum to their service,
/// ipvsadm shows the same numbers; then zero one service, all, and flush.
#[test]
#[ignore = "privileged: needs root and IPVS (scripts/privileged-tests)"]
fn stats_traffic_zero_flush() {
    let _table = shared_table();
    in_fresh_netns(|| async {
        let h = connect().await;
        let client = NamedNetns::new("cli");
        let dir_ip = Ipv4Addr::new(10, 1, 0, 1);
        veth_to(&client, "vdir", dir_ip, "vcli", Ipv4Addr::new(10, 1, 0, 2));
        let _s1 = EchoServer::start(SocketAddr::new(dir_ip.into(), 8080));
        let _s2 = EchoServer::start(SocketAddr::new(dir_ip.into(), 8081));
        let a = ServiceKey::tcp(SocketAddr::new(dir_ip.into(), 80));
        let b = ServiceKey::tcp(SocketAddr::new(dir_ip.into(), 81));
        for k in [a, b] {
            h.add_service(&Service::new(k, Scheduler::Rr)).await.unwrap();
        }
        for port in [8080, 8081] {
            h.add_destination(&a, &Destination::new(SocketAddr::new(dir_ip.into(), port), Forward::Masq))
                .await
                .unwrap();
        }
        h.add_destination(&b, &Destination::new(SocketAddr::new(dir_ip.into(), 8080), Forward::Masq)).await.unwrap();

        let (na, nb) = (6u64, 3u64);
        let payload = vec![b'x'; 1000];
        client.run(|| {
            for _ in 0..na {
                echo_once(SocketAddr::new(dir_ip.into(), 80), &payload);
            }
            for _ in 0..nb {
                echo_once(SocketAddr::new(dir_ip.into(), 81), &payload);
            }
        });

        // Wait until the estimator has folded every connection in and the
        // destinations add up to their service.
        let table = wait_for("counters of both services", || {
            let h = h.clone();
            async move {
                let t = h.dump().await.unwrap();
                let ok = t.iter().all(|(s, d)| {
                    let want = if s.service.key == a { na } else { nb };
                    s.stats.conns == want && s.stats.out_pkts > 0 && tuple(&s.stats) == sum(d.iter().map(|d| d.stats))
                });
                ok.then_some(t)
            }
        })
        .await;
        for (s, dests) in &table {
            let st = &s.stats;
            assert!(st.in_pkts >= 4 * st.conns, "{}: in_pkts {} for {} conns", s.service.key, st.in_pkts, st.conns);
            assert!(st.in_bytes >= st.conns * payload.len() as u64, "{}: in_bytes {}", s.service.key, st.in_bytes);
            assert!(st.out_bytes >= st.conns * payload.len() as u64, "{}: out_bytes {}", s.service.key, st.out_bytes);
            if s.service.key == a {
                // rr over two destinations: both got connections.
                assert!(dests.iter().all(|d| d.stats.conns == na / 2), "rr split: {dests:?}");
            }
            // Same numbers through GET_SERVICE (do) as through the dump.
            assert_eq!(tuple(&h.service(&s.service.key).await.unwrap().stats), tuple(st));
            // An independent reader.
            let ServiceKey::Inet { addr, .. } = s.service.key else { unreachable!() };
            let (row, drows) = ipvsadm_stats("TCP", addr);
            assert_eq!(
                (row.conns, row.in_pkts, row.out_pkts, row.in_bytes, row.out_bytes),
                tuple(st),
                "{} counters per ipvsadm -Ln --stats --exact",
                s.service.key
            );
            for d in dests {
                let r = drows.iter().find(|(ad, _)| *ad == d.destination.addr.to_string()).expect("dest row").1;
                assert_eq!((r.conns, r.in_pkts, r.out_pkts, r.in_bytes, r.out_bytes), tuple(&d.stats));
            }
        }

        // The NAT destinations on local addresses read back as written (Masq).
        for (_, dests) in &table {
            assert!(dests.iter().all(|d| d.destination.forward == Forward::Masq), "{dests:?}");
        }
        // Connection counts against ipvsadm -Ln: connection entries change
        // state on their own (CLOSE after 10 s), so compare when two library
        // reads around ipvsadm's agree.
        let mut compared = false;
        for _ in 0..20 {
            let t1 = h.dump().await.unwrap();
            let listed = ipvsadm_list();
            let t2 = h.dump().await.unwrap();
            if t1 == t2 {
                assert_same_as_ipvsadm_list(&t1);
                assert!(
                    t1.iter().flat_map(|(_, d)| d).map(|d| d.active_conns + d.inactive_conns).sum::<u32>() > 0,
                    "connection entries are counted: {listed:?}"
                );
                compared = true;
                break;
            }
        }
        assert!(compared, "the table kept changing");

        // Zero one service: it and its destinations go to 0, the other keeps its counters.
        let b_before = h.service(&b).await.unwrap().stats;
        h.zero(Some(&a)).await.unwrap();
        let t = h.dump().await.unwrap();
        for (s, d) in &t {
            if s.service.key == a {
                assert_eq!(tuple(&s.stats), (0, 0, 0, 0, 0), "zeroed service");
                assert!(d.iter().all(|d| tuple(&d.stats) == (0, 0, 0, 0, 0)), "zeroed destinations");
            } else {
                assert_eq!(tuple(&s.stats), tuple(&b_before), "the other service is untouched");
            }
        }
        h.zero(None).await.unwrap();
        for (s, d) in h.dump().await.unwrap() {
            assert_eq!(tuple(&s.stats), (0, 0, 0, 0, 0));
            assert!(d.iter().all(|d| tuple(&d.stats) == (0, 0, 0, 0, 0)));
        }
        assert!(matches!(h.zero(Some(&ServiceKey::tcp(sa("10.9.9.9:1")))).await, Err(Error::NoSuchService(_))));

        // Flush.
        h.flush().await.unwrap();
        assert!(h.services().await.unwrap().is_empty());
        assert_eq!(ipvsadm(&["-Sn"]), "");
    });
}

// ---- config, info, daemons --------------------------------------------------

#[test]
#[ignore = "privileged: needs root and IPVS (scripts/privileged-tests)"]
fn timeouts_set_get() {
    let _table = shared_table();
    in_fresh_netns(|| async {
        let h = connect().await;
        let shown = || {
            let t = ipvsadm(&["-L", "--timeout"]);
            let v: Vec<u32> = t.split(':').nth(1).unwrap().split_whitespace().map(|x| x.parse().unwrap()).collect();
            Timeouts::new(v[0], v[1], v[2])
        };
        // Kernel defaults in a fresh namespace.
        let def = h.timeouts().await.unwrap();
        assert_eq!(def, Timeouts::new(900, 120, 300));
        assert_eq!(shown(), def);
        let t = Timeouts::new(1000, 100, 200);
        h.set_timeouts(&t).await.unwrap();
        assert_eq!(h.timeouts().await.unwrap(), t);
        assert_eq!(shown(), t);
        // 0 = unchanged, field by field.
        h.set_timeouts(&Timeouts::new(0, 50, 0)).await.unwrap();
        assert_eq!(h.timeouts().await.unwrap(), Timeouts::new(1000, 50, 200));
        h.set_timeouts(&Timeouts::new(7, 0, 0)).await.unwrap();
        h.set_timeouts(&Timeouts::new(0, 0, 86400)).await.unwrap();
        let want = Timeouts::new(7, 50, 86400);
        assert_eq!(h.timeouts().await.unwrap(), want);
        assert_eq!(shown(), want);
    });
}

#[test]
#[ignore = "privileged: needs root and IPVS (scripts/privileged-tests)"]
fn info_matches_proc() {
    let _table = shared_table();
    in_fresh_netns(|| async {
        let h = connect().await;
        let i = h.info().await.unwrap();
        assert_eq!(i.version, (1, 2, 1));
        assert_eq!(i.conn_table_size, proc_conn_table_size());
        let first = ipvsadm(&["-Ln"]);
        assert!(
            first.starts_with(&format!(
                "IP Virtual Server version {} (size={})",
                i.version_string(),
                i.conn_table_size
            )),
            "{first}"
        );
    });
}

/// Master and backup sync daemons on a veth, every attribute, IPv4 and IPv6
/// groups, the defaults, and each error.
#[test]
#[ignore = "privileged: needs root and IPVS (scripts/privileged-tests)"]
fn sync_daemons_start_list_stop() {
    let _table = shared_table();
    in_fresh_netns(|| async {
        let h = connect().await;
        ip(&["link", "add", "sync0", "type", "veth", "peer", "name", "sync1"]);
        ip(&["addr", "add", "10.5.0.1/24", "dev", "sync0"]);
        ip(&["addr", "add", "10.5.0.2/24", "dev", "sync1"]);
        ip(&["-6", "addr", "add", "2001:db8:5::1/64", "dev", "sync0", "nodad"]);
        ip(&["-6", "addr", "add", "2001:db8:5::2/64", "dev", "sync1", "nodad"]);
        ip(&["link", "set", "sync0", "up"]);
        ip(&["link", "set", "sync1", "up"]);
        assert!(h.sync_daemons().await.unwrap().is_empty());

        // Every attribute, IPv4 group on the master, IPv6 group on the backup.
        let master = SyncDaemon::new(SyncState::Master, "sync0", 200)
            .with_max_len(1400)
            .with_mcast_group(IpAddr::V4(Ipv4Addr::new(239, 1, 2, 3)))
            .with_mcast_port(8850)
            .with_mcast_ttl(3);
        let backup = SyncDaemon::new(SyncState::Backup, "sync1", 201)
            .with_max_len(1300)
            .with_mcast_group(IpAddr::V6("ff02::1:3".parse::<Ipv6Addr>().unwrap()))
            .with_mcast_port(8851)
            .with_mcast_ttl(5);
        h.start_sync_daemon(&master).await.unwrap();
        h.start_sync_daemon(&backup).await.unwrap_or_else(|e| panic!("backup: {e}"));
        let got = h.sync_daemons().await.unwrap();
        // The kernel does not report a backup's TTL as set? Compare all first.
        assert_eq!(got, vec![master.clone(), backup.clone()]);
        let shown = ipvsadm(&["-L", "--daemon"]);
        assert!(
            shown.contains(
                "master sync daemon (mcast=sync0, syncid=200, maxlen=1400, group=239.1.2.3, port=8850, ttl=3)"
            ),
            "{shown}"
        );
        assert!(
            shown.contains(
                "backup sync daemon (mcast=sync1, syncid=201, maxlen=1300, group=ff02::1:3, port=8851, ttl=5)"
            ),
            "{shown}"
        );

        assert!(matches!(h.start_sync_daemon(&master).await, Err(Error::DaemonExists(_))));
        assert!(matches!(h.start_sync_daemon(&backup).await, Err(Error::DaemonExists(_))));
        h.stop_sync_daemon(SyncState::Master).await.unwrap();
        assert_eq!(h.sync_daemons().await.unwrap(), vec![backup.clone()]);
        assert!(matches!(h.stop_sync_daemon(SyncState::Master).await, Err(Error::NoSuchDaemon(_))));
        h.stop_sync_daemon(SyncState::Backup).await.unwrap();
        assert!(matches!(h.stop_sync_daemon(SyncState::Backup).await, Err(Error::NoSuchDaemon(_))));
        assert!(h.sync_daemons().await.unwrap().is_empty());

        // The other way round: an IPv6 group for the master, IPv4 for the backup.
        let master6 = master.clone().with_mcast_group(Some(IpAddr::V6("ff02::1:4".parse::<Ipv6Addr>().unwrap())));
        let backup4 = backup.clone().with_mcast_group(Some(IpAddr::V4(Ipv4Addr::new(239, 9, 9, 9))));
        h.start_sync_daemon(&master6).await.unwrap_or_else(|e| panic!("master with an IPv6 group: {e}"));
        h.start_sync_daemon(&backup4).await.unwrap_or_else(|e| panic!("backup with an IPv4 group: {e}"));
        assert_eq!(h.sync_daemons().await.unwrap(), vec![master6, backup4]);
        h.stop_sync_daemon(SyncState::Backup).await.unwrap();
        h.stop_sync_daemon(SyncState::Master).await.unwrap();

        // Defaults: the kernel fills in group, port, ttl and a maxlen from the MTU.
        h.start_sync_daemon(&SyncDaemon::new(SyncState::Master, "sync0", 9)).await.unwrap();
        let got = h.sync_daemons().await.unwrap();
        assert_eq!(got.len(), 1);
        let g = &got[0];
        assert_eq!((g.state, g.interface.as_str(), g.sync_id), (SyncState::Master, "sync0", 9));
        assert_eq!(g.mcast_group, Some(IpAddr::V4(Ipv4Addr::new(224, 0, 0, 81))));
        assert_eq!(g.mcast_port, Some(8848));
        assert_eq!(g.mcast_ttl, Some(1));
        let shown = ipvsadm(&["-L", "--daemon"]);
        let maxlen = shown.split("maxlen=").nth(1).and_then(|r| r.split(',').next()).unwrap().parse::<u16>().unwrap();
        assert_eq!(g.max_len, Some(maxlen), "{shown}");
        h.stop_sync_daemon(SyncState::Master).await.unwrap();

        // A missing interface.
        match h.start_sync_daemon(&SyncDaemon::new(SyncState::Backup, "nosuchif0", 1)).await {
            Err(Error::Kernel { errno, .. }) => assert_eq!(errno, libc::ENODEV),
            other => panic!("missing interface: {other:?}"),
        }
        expect_invalid(h.start_sync_daemon(&SyncDaemon::new(SyncState::Master, "", 1)).await, "empty interface");
        expect_invalid(
            h.start_sync_daemon(&SyncDaemon::new(SyncState::Master, "a-very-long-interface-name", 1)).await,
            "long interface",
        );
        let mut unicast = SyncDaemon::new(SyncState::Master, "sync0", 1);
        unicast.mcast_group = Some("10.5.0.9".parse().unwrap());
        expect_invalid(h.start_sync_daemon(&unicast).await, "unicast group");
        assert!(h.sync_daemons().await.unwrap().is_empty());
    });
}

// ---- concurrency, scale, bulk -----------------------------------------------

/// Many tasks on two worker threads share one handle and issue requests at
/// once; each gets exactly its own answers.
#[test]
#[ignore = "privileged: needs root and IPVS (scripts/privileged-tests)"]
fn concurrency_shared_handle() {
    let _table = exclusive_table();
    in_fresh_netns_multi_thread(|| async {
        let h = connect().await;
        let n = 100u32;
        let mut tasks = Vec::new();
        for i in 0..n {
            let h = h.clone();
            tasks.push(tokio::spawn(async move {
                let s = conc_service(i);
                let key = s.key;
                h.add_service(&s).await.unwrap();
                let d = Destination::new(
                    SocketAddr::new(Ipv4Addr::from(0x0b00_0000 + i).into(), 1000 + i as u16),
                    Forward::Route,
                )
                .with_weight(i);
                h.add_destination(&key, &d).await.unwrap();
                for _ in 0..3 {
                    assert_eq!(h.service(&key).await.unwrap().service, s, "task {i} got its own service");
                    let ds = h.destinations(&key).await.unwrap();
                    assert_eq!(ds.len(), 1);
                    assert_eq!(ds[0].destination, d, "task {i} got its own destination");
                    // A dump in the middle of it all. The kernel pages service
                    // dumps by position, so one taken while other tasks add
                    // services may skip entries (documented on Ipvs::services):
                    // check only that it has no duplicates and that every entry
                    // is exactly one of the services the tasks write.
                    let all = h.services().await.unwrap();
                    let uniq: HashSet<_> = all.iter().map(|x| x.service.key).collect();
                    assert_eq!(uniq.len(), all.len(), "no duplicates in a dump");
                    for x in &all {
                        let ServiceKey::Inet { addr, .. } = x.service.key else { panic!("{:?}", x.service) };
                        assert_eq!(x.service, conc_service(u32::from(addr.port()) - 1000), "dump entry intact");
                    }
                    // Errors go to the right task too.
                    assert!(matches!(h.add_service(&s).await, Err(Error::ServiceExists(k)) if k == key));
                }
                key
            }));
        }
        let mut keys = HashSet::new();
        for t in tasks {
            keys.insert(t.await.unwrap());
        }
        assert_eq!(keys.len(), n as usize);
        let table = h.dump().await.unwrap();
        assert_eq!(table.len(), n as usize);
        assert_same_table(as_saved(&table), ipvsadm_save());
        // Emptied here, before the namespace goes: a large table torn down in
        // the background makes dumps in other namespaces skip entries (see
        // tests/bulk.rs).
        h.flush().await.unwrap();
    });
}

fn conc_service(i: u32) -> Service {
    let ip = Ipv4Addr::from(0x0a00_0000 + (i << 8) + 1);
    let key = ServiceKey::tcp(SocketAddr::new(ip.into(), 1000 + i as u16));
    Service::new(key, if i % 2 == 0 { Scheduler::Rr } else { Scheduler::Wlc })
        .with_persistence((i % 3 == 0).then_some(Persistence { timeout: 100 + i, netmask: None }))
}

/// 2,000 services with 5 destinations each through `apply`, then a dump that
/// is complete, without duplicates, and equal to what was written.
#[test]
#[ignore = "privileged: needs root and IPVS (scripts/privileged-tests)"]
fn large_table_apply_and_dump() {
    let _table = exclusive_table();
    in_fresh_netns(|| async {
        let h = connect().await;
        let mut ops = Vec::new();
        let mut want = Vec::new();
        for i in 0..2000u32 {
            let key = ServiceKey::tcp(SocketAddr::new(Ipv4Addr::from(0x0a10_0000 + i).into(), 80));
            let s = Service::new(key, Scheduler::Wrr);
            ops.push(Op::AddService(s.clone()));
            let mut dests = Vec::new();
            for j in 0..5u32 {
                let d = Destination::new(
                    SocketAddr::new(Ipv4Addr::from(0x0b00_0000 + i * 8 + j).into(), 80),
                    Forward::Route,
                )
                .with_weight(j + 1);
                ops.push(Op::AddDestination(key, d.clone()));
                dests.push(d);
            }
            want.push((s, dests));
        }
        let res = h.apply(&ops).await.unwrap();
        assert_eq!(res.len(), ops.len());
        for (op, r) in ops.iter().zip(&res) {
            assert!(r.is_done(), "{op}: {r:?}");
        }
        let table = h.dump().await.unwrap();
        assert_eq!(table.len(), 2000, "every service in the dump");
        let keys: HashSet<_> = table.iter().map(|(s, _)| s.service.key).collect();
        assert_eq!(keys.len(), 2000, "no duplicates");
        let mut got: Vec<(Service, Vec<Destination>)> = table
            .into_iter()
            .map(|(s, d)| {
                let mut d: Vec<_> = d.into_iter().map(|d| d.destination).collect();
                d.sort_by_key(|d| d.addr);
                (s.service, d)
            })
            .collect();
        got.sort_by_key(|(s, _)| s.key.sort_key());
        want.sort_by_key(|(s, _)| s.key.sort_key());
        assert_eq!(got, want);
        assert_eq!(ipvsadm(&["-Sn"]).lines().count(), 2000 * 6, "ipvsadm sees every line");
        // Emptied here, before the namespace goes: a large table torn down in
        // the background makes dumps in other namespaces skip entries (see
        // tests/bulk.rs).
        h.flush().await.unwrap();
    });
}

/// A request whose reply does not come within the deadline fails with
/// `Error::Timeout`, and a batch cut short so reports what it sent as
/// `Unknown` (here: in fact done) and the rest as `NotSent`. The replies are
/// held back by starving the handle's reader task: it runs on the runtime
/// that connected, whose only thread then waits for another thread using the
/// handle from a runtime of its own.
#[test]
#[ignore = "privileged: needs root and IPVS (scripts/privileged-tests)"]
fn forced_deadline_gives_timeout_and_unknown_outcomes() {
    let _table = shared_table();
    in_fresh_netns(|| async {
        let deadline = std::time::Duration::from_millis(300);
        let h = connect().await.with_timeout(deadline);
        let ops: Vec<Op> = (0..600u32)
            .map(|i| {
                let key = ServiceKey::tcp(SocketAddr::new(Ipv4Addr::from(0x0a40_0000 + i).into(), 80));
                Op::AddService(Service::new(key, Scheduler::Rr))
            })
            .collect();
        let h2 = h.clone();
        let ops2 = ops.clone();
        // This thread (the connecting runtime's only one) waits here: the
        // reader task cannot run until the other thread is done.
        let (info, applied) = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async { (h2.info().await, h2.apply(&ops2).await) })
        })
        .join()
        .unwrap();
        assert!(matches!(info, Err(Error::Timeout(d, _)) if d == deadline), "{info:?}");
        let applied = applied.expect("valid operations");
        assert!(matches!(applied.interrupted(), Some(Error::Timeout(..))), "{:?}", applied.interrupted());
        // The first chunk (512 requests) was sent, the second was not.
        assert!(applied.outcomes()[..512].iter().all(|o| matches!(o, OpOutcome::Unknown)), "{applied:?}");
        assert!(applied.outcomes()[512..].iter().all(|o| matches!(o, OpOutcome::NotSent)), "{applied:?}");
        // The reader runs again: the handle works, and the unknown ones were done.
        assert_eq!(h.info().await.unwrap().version.0, 1);
        assert_lists_services(&h, 512).await;
        h.flush().await.unwrap();
    });
}

/// `h` lists exactly `n` services, in one of at most three service dumps
/// (none listing more): a dump can skip a service while other namespaces
/// change their tables (the kernel's dump resumes by position).
async fn assert_lists_services(h: &ipvs::Ipvs, n: usize) {
    let mut counts = Vec::new();
    for _ in 0..3 {
        counts.push(h.services().await.unwrap().len());
        if counts.last() == Some(&n) {
            break;
        }
    }
    assert!(counts.iter().all(|c| *c <= n) && counts.contains(&n), "services listed, {n} expected: {counts:?}");
}

/// A dump of `h` that lists exactly `n` services, out of at most three tries
/// (each listing at most `n`); see `dump_keeps_services_without_real_servers`.
async fn complete_dump(h: &ipvs::Ipvs, n: usize) -> Vec<(ipvs::ServiceEntry, Vec<ipvs::DestinationEntry>)> {
    let mut sizes = Vec::new();
    for _ in 0..3 {
        let table = h.dump().await.unwrap();
        assert!(table.len() <= n, "a dump listed {} services of {n}", table.len());
        if table.len() == n {
            return table;
        }
        sizes.push(table.len());
    }
    panic!("no dump listed all {n} services: {sizes:?}");
}

/// Services without real servers are looked up again after their (empty)
/// destination dumps, to leave out the ones deleted meanwhile: the ones that
/// exist stay, also more than one batch of them, on both dump paths.
#[test]
#[ignore = "privileged: needs root and IPVS (scripts/privileged-tests)"]
fn dump_keeps_services_without_real_servers() {
    let _table = exclusive_table();
    in_fresh_netns(|| async {
        let h = connect().await;
        let ops: Vec<Op> = (0..700u32)
            .map(|i| {
                let key = ServiceKey::tcp(SocketAddr::new(Ipv4Addr::from(0x0a30_0000 + i).into(), 80));
                Op::AddService(Service::new(key, Scheduler::Rr))
            })
            .collect();
        assert!(h.apply(&ops).await.unwrap().all_done());
        let with_dest = ServiceKey::tcp(SocketAddr::new(Ipv4Addr::from(0x0a30_0000).into(), 80));
        h.add_destination(&with_dest, &Destination::new(sa("10.0.1.1:80"), Forward::Route)).await.unwrap();
        // The kernel pages service dumps by a position counted over every
        // namespace's services: a namespace of an earlier test that the kernel
        // still tears down in the background can make one dump skip an entry
        // (see `exclusive_table`). So each path gets three dumps, and must
        // never list more than exists and must list all of it in one of them:
        // a library that dropped empty services would fail all three.
        let table = complete_dump(&h, 700).await;
        assert_eq!(table.iter().filter(|(_, d)| d.is_empty()).count(), 699);
        // The same with the one-by-one path (no dump socket pool).
        let one = ipvs::Ipvs::builder().dump_sockets(0).connect().await.unwrap();
        complete_dump(&one, 700).await;
        // Emptied here, before the namespace goes (see tests/bulk.rs).
        h.flush().await.unwrap();
    });
}

/// A failing operation in the middle of a bulk apply reports exactly that
/// operation's error; the others are applied.
#[test]
#[ignore = "privileged: needs root and IPVS (scripts/privileged-tests)"]
fn bulk_apply_reports_each_failure() {
    let _table = exclusive_table();
    in_fresh_netns(|| async {
        let h = connect().await;
        let a = Service::new(ServiceKey::tcp(sa("10.0.0.1:80")), Scheduler::Rr);
        let b = Service::new(ServiceKey::tcp(sa("10.0.0.2:80")), Scheduler::Rr);
        let c = Service::new(ServiceKey::udp(sa("10.0.0.3:53")), Scheduler::Rr);
        let missing = ServiceKey::tcp(sa("10.0.0.9:80"));
        let da = Destination::new(sa("10.0.1.1:80"), Forward::Route);
        let ops = vec![
            Op::AddService(a.clone()),
            Op::AddService(b.clone()),
            Op::AddService(a.clone()),
            Op::AddDestination(missing, Destination::new(sa("10.0.1.2:80"), Forward::Route)),
            Op::AddDestination(a.key, da.clone()),
            Op::DeleteDestination(a.key, sa("10.0.1.3:80")),
            Op::UpdateService(Service::new(missing, Scheduler::Rr)),
            Op::AddService(Service::new(ServiceKey::tcp(sa("10.0.0.4:80")), Scheduler::Other("nosuch".into()))),
            Op::AddService(c.clone()),
        ];
        let res = h.apply(&ops).await.unwrap();
        assert_eq!(res.len(), ops.len());
        assert!(res[0].is_done() && res[1].is_done() && res[4].is_done() && res[8].is_done(), "{res:?}");
        assert!(matches!(res[2], OpOutcome::Failed(Error::ServiceExists(_))), "{:?}", res[2]);
        assert!(matches!(res[3], OpOutcome::Failed(Error::NoSuchService(_))), "{:?}", res[3]);
        assert!(matches!(res[5], OpOutcome::Failed(Error::NoSuchDestination { .. })), "{:?}", res[5]);
        assert!(matches!(res[6], OpOutcome::Failed(Error::NoSuchService(_))), "{:?}", res[6]);
        assert!(matches!(res[7], OpOutcome::Failed(Error::SchedulerNotFound { .. })), "{:?}", res[7]);
        let table = h.dump().await.unwrap();
        let keys: HashSet<_> = table.iter().map(|(s, _)| s.service.key).collect();
        assert_eq!(keys, HashSet::from([a.key, b.key, c.key]));
        let dests = h.destinations(&a.key).await.unwrap();
        assert_eq!(dests.len(), 1);
        assert_eq!(dests[0].destination, da);
        assert_matches_ipvsadm(&h).await;

        // Many failures across several sendmsg chunks (512 requests each).
        let mut ops = Vec::new();
        for i in 0..1500u32 {
            let key = ServiceKey::tcp(SocketAddr::new(Ipv4Addr::from(0x0a20_0000 + i).into(), 80));
            ops.push(Op::AddService(Service::new(key, Scheduler::Rr)));
            if i % 7 == 0 {
                ops.push(Op::AddService(Service::new(key, Scheduler::Rr)));
            }
        }
        let res = h.apply(&ops).await.unwrap();
        let mut seen = HashSet::new();
        for (op, r) in ops.iter().zip(&res) {
            let Op::AddService(s) = op else { unreachable!() };
            if seen.insert(s.key) {
                assert!(r.is_done(), "{op}: {r:?}");
            } else {
                assert!(matches!(r, OpOutcome::Failed(Error::ServiceExists(_))), "{op}: {r:?}");
            }
        }
        assert_lists_services(&h, 3 + 1500).await;
        // Emptied here, before the namespace goes: a large table torn down in
        // the background makes dumps in other namespaces skip entries (see
        // tests/bulk.rs).
        h.flush().await.unwrap();
    });
}

// ---- namespaces -----------------------------------------------------------------

/// connect_named_netns and connect_in_netns reach another namespace's table
/// from a thread that stays in the initial namespace.
#[test]
#[ignore = "privileged: needs root and IPVS (scripts/privileged-tests)"]
fn connect_into_named_and_pathed_netns() {
    require_privileged();
    let _table = shared_table();
    let ns = NamedNetns::new("lib");
    let name = ns.name.clone();
    let path = ns.path();
    let key = ServiceKey::tcp(sa("10.7.7.7:80"));
    let before = current_netns_id();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let h = Ipvs::connect_named_netns(&name).await.unwrap();
        assert_eq!(current_netns_id(), before, "the calling thread did not move");
        h.add_service(&Service::new(key, Scheduler::Rr)).await.unwrap();
        h.add_destination(&key, &Destination::new(sa("10.7.7.8:80"), Forward::Route)).await.unwrap();
        // The service is in the named namespace (per ipvsadm there) ...
        let there = parse_save(&ipvsadm_in(&name, &["-Sn"]));
        assert!(there.contains(&Saved::Service(Service::new(key, Scheduler::Rr))), "{there:?}");
        // ... and not here.
        let here = Ipvs::connect().await.unwrap();
        assert!(here.services().await.unwrap().iter().all(|s| s.service.key != key));
        // The same table through the path, and through /proc/PID/ns/net of a process in it.
        let by_path = Ipvs::connect_in_netns(&path).await.unwrap();
        assert_eq!(by_path.dump().await.unwrap(), h.dump().await.unwrap());
        let mut child =
            std::process::Command::new(ip_bin()).args(["netns", "exec", &name, "sleep", "60"]).spawn().unwrap();
        let proc_path = format!("/proc/{}/ns/net", child.id());
        // Wait until the child has entered the namespace.
        let target = std::fs::read_link(&path).ok();
        let _ = target;
        let want = std::fs::metadata(&path).map(|m| std::os::unix::fs::MetadataExt::ino(&m)).unwrap();
        for _ in 0..100 {
            if std::fs::metadata(&proc_path).map(|m| std::os::unix::fs::MetadataExt::ino(&m)).ok() == Some(want) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let by_pid = Ipvs::connect_in_netns(&proc_path).await.unwrap();
        assert_eq!(by_pid.services().await.unwrap().len(), 1);
        assert_eq!(by_pid.services().await.unwrap()[0].service.key, key);
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(current_netns_id(), before, "the calling thread did not move");
        // Errors.
        assert!(matches!(Ipvs::connect_named_netns("no-such-netns-xyz").await, Err(Error::Io(..))));
        expect_invalid(Ipvs::connect_named_netns("../etc").await, "netns name with a slash");
        expect_invalid(Ipvs::connect_named_netns("").await, "empty netns name");
    });
    drop(ns);
}

/// Without CAP_NET_ADMIN every IPVS operation is refused with
/// PermissionDenied (the generic netlink lookup itself needs no privilege).
#[test]
#[ignore = "privileged: needs root and IPVS (scripts/privileged-tests)"]
fn permission_denied_without_cap_net_admin() {
    let _table = shared_table();
    in_fresh_netns(|| async {
        // Something to look at, added while still privileged.
        let h = connect().await;
        let key = ServiceKey::tcp(sa("10.0.0.1:80"));
        h.add_service(&Service::new(key, Scheduler::Rr)).await.unwrap();
        drop(h);
        drop_all_capabilities();
        let h = Ipvs::connect().await.expect("connecting needs no privilege");
        assert!(matches!(h.services().await, Err(Error::PermissionDenied)), "list");
        assert!(matches!(h.service(&key).await, Err(Error::PermissionDenied)), "get");
        assert!(matches!(h.info().await, Err(Error::PermissionDenied)), "info");
        assert!(
            matches!(
                h.add_service(&Service::new(ServiceKey::tcp(sa("10.0.0.2:80")), Scheduler::Rr)).await,
                Err(Error::PermissionDenied)
            ),
            "add"
        );
        assert!(matches!(h.delete_service(&key).await, Err(Error::PermissionDenied)), "delete");
        assert!(matches!(h.timeouts().await, Err(Error::PermissionDenied)), "timeouts");
        let res = h.apply(&[Op::DeleteService(key)]).await.unwrap();
        assert!(matches!(res[0], OpOutcome::Failed(Error::PermissionDenied)), "apply: {res:?}");
        // Nothing changed (ipvsadm runs as a child process with our dropped
        // capabilities, so ask /proc instead).
        let t = std::fs::read_to_string("/proc/thread-self/net/ip_vs").unwrap();
        assert!(t.contains("0A000001:0050"), "{t}");
    });
}

/// Stopping a sync daemon right after starting it, while another namespace
/// keeps the kernel busy. On Linux 6.1 a backup daemon whose kernel thread has
/// not run yet is stopped without any netlink reply (kthread_stop() gives
/// -EINTR and netlink_rcv_skb() then skips the ACK); a plain request would
/// wait out its deadline. Every stop must succeed promptly and leave no daemon.
#[test]
#[ignore = "privileged: needs root and IPVS (scripts/privileged-tests)"]
fn sync_daemon_stop_right_after_start_under_load() {
    let _table = shared_table();
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = Arc::clone(&stop);
    let load = std::thread::spawn(move || {
        in_fresh_netns(move || async move {
            let h = connect().await;
            while !stop2.load(Ordering::SeqCst) {
                let ops: Vec<Op> = (0..2000u32)
                    .map(|i| {
                        Op::AddService(Service::new(
                            ServiceKey::tcp(SocketAddr::new(Ipv4Addr::from(0x0a10_0000 + i).into(), 80)),
                            Scheduler::Wrr,
                        ))
                    })
                    .collect();
                h.apply(&ops).await.unwrap();
                h.flush().await.unwrap();
            }
        })
    });
    let stop3 = Arc::clone(&stop);
    let result = std::panic::catch_unwind(move || {
        in_fresh_netns(|| async move {
            // A deadline far below the default: a missing reply fails fast.
            let h = connect().await.with_timeout(Duration::from_secs(20));
            ip(&["link", "add", "sync0", "type", "veth", "peer", "name", "sync1"]);
            ip(&["addr", "add", "10.5.0.1/24", "dev", "sync0"]);
            ip(&["addr", "add", "10.5.0.2/24", "dev", "sync1"]);
            ip(&["link", "set", "sync0", "up"]);
            ip(&["link", "set", "sync1", "up"]);
            let master = SyncDaemon::new(SyncState::Master, "sync0", 1);
            let backup = SyncDaemon::new(SyncState::Backup, "sync1", 1);
            for i in 0..40 {
                h.start_sync_daemon(&master).await.unwrap();
                h.start_sync_daemon(&backup).await.unwrap();
                h.stop_sync_daemon(SyncState::Backup)
                    .await
                    .unwrap_or_else(|e| panic!("iteration {i}: stop backup: {e}"));
                h.stop_sync_daemon(SyncState::Master)
                    .await
                    .unwrap_or_else(|e| panic!("iteration {i}: stop master: {e}"));
                assert!(h.sync_daemons().await.unwrap().is_empty(), "iteration {i}: daemons left");
            }
        });
        stop3.store(true, Ordering::SeqCst);
    });
    stop.store(true, Ordering::SeqCst);
    load.join().unwrap();
    if let Err(p) = result {
        std::panic::resume_unwind(p);
    }
}
