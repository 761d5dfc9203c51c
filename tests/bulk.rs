//! Privileged tests of the bulk paths: what they do, not how fast.
//!
//! - `Ipvs::apply` of many operations, some failing at chosen places (among
//!   them the last request of a sendmsg chunk, the one that carries the ACK
//!   flag), reports exactly those failures, with the right error, and the
//!   kernel keeps everything else (no rollback);
//! - a reconcile of an unchanged table plans zero operations, and of a changed
//!   one exactly the difference;
//! - a dump of a large table is complete: many services (the service dump
//!   spans many datagrams), a service with hundreds of destinations (its
//!   destination dump too), and a dump abandoned half-way does not disturb
//!   the next one.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use ipvs::reconcile::{plan, DesiredService, Scope};
use ipvs::*;
use lvsctl_tests::*;

/// Service `i`: TCP 10.1.0.1+i:80, wrr.
fn service(i: u32) -> Service {
    let ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 1, 0, 1)) + i);
    Service::new(ServiceKey::tcp(SocketAddr::new(ip.into(), 80)), Scheduler::Wrr)
}

/// Destination `j` of service `i` (of `m` per service): 10.128.0.1+i*m+j:80, DR.
fn dest(i: u32, j: u32, m: u32) -> Destination {
    let ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 128, 0, 1)) + i * m + j);
    Destination::new(SocketAddr::new(ip.into(), 80), Forward::Route).with_weight(1 + (i + j) % 10)
}

fn table(n: u32, m: u32) -> Vec<DesiredService> {
    (0..n)
        .map(|i| DesiredService { service: service(i), destinations: (0..m).map(|j| dest(i, j, m)).collect() })
        .collect()
}

fn create_ops(t: &[DesiredService]) -> Vec<Op> {
    let mut ops = Vec::new();
    for d in t {
        ops.push(Op::AddService(d.service.clone()));
        ops.extend(d.destinations.iter().map(|x| Op::AddDestination(d.service.key, x.clone())));
    }
    ops
}

/// The dumped table as (service, sorted destinations), sorted.
fn normalized(t: &Table) -> Vec<(Service, Vec<Destination>)> {
    let mut v: Vec<(Service, Vec<Destination>)> = t
        .iter()
        .map(|(s, d)| {
            let mut d: Vec<Destination> = d.iter().map(|e| e.destination.clone()).collect();
            d.sort_by_key(|x| x.addr);
            (s.service.clone(), d)
        })
        .collect();
    v.sort_by_key(|(s, _)| s.key.sort_key());
    v
}

fn expected(t: &[DesiredService]) -> Vec<(Service, Vec<Destination>)> {
    let mut v: Vec<(Service, Vec<Destination>)> = t
        .iter()
        .map(|d| {
            let mut x = d.destinations.clone();
            x.sort_by_key(|x| x.addr);
            (d.service.clone(), x)
        })
        .collect();
    v.sort_by_key(|(s, _)| s.key.sort_key());
    v
}

/// Run `f` as [`in_fresh_netns`] does, but never at the same time as another
/// test of this file, and empty the table before the namespace goes. These
/// tests build tables of thousands of services, and the kernel pages a
/// service dump by a position counted over the services of EVERY namespace
/// (see `Ipvs::services` and "A kernel limit" in docs/library.md): a large table changing elsewhere during a
/// dump - another test's, or one the kernel tears down in the background
/// after its namespace went - makes a dump (ipvsadm's too) skip or repeat
/// entries. Seen once in CI: `ipvsadm -Sn` listed 17,981 of 22,601 lines.
fn alone<F, Fut>(f: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _alone = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    in_fresh_netns(|| async move {
        f().await;
        // Removed here, synchronously, not by the namespace's background teardown.
        ipvsadm(&["-C"]);
    });
}

#[test]
#[ignore = "privileged: needs root and IPVS (scripts/privileged-tests)"]
fn apply_reports_exactly_the_failures() {
    alone(|| async {
        let h = connect().await;
        // 100 services x 20 destinations: 2,100 operations, more than four chunks of 512.
        let t = table(100, 20);
        let mut ops = create_ops(&t);
        let missing = ServiceKey::tcp("10.9.9.9:80".parse().unwrap());
        let dup_service = Op::AddService(t[0].service.clone());
        let to_missing = Op::AddDestination(missing, Destination::new("10.9.9.10:80".parse().unwrap(), Forward::Route));
        let del_missing_dest = Op::DeleteDestination(t[1].service.key, "10.200.0.1:80".parse().unwrap());
        let edit_missing_service = Op::UpdateService(Service::new(missing, Scheduler::Rr));
        // (index in the final list, operation): at the very start, as the last of
        // the first chunk (the request that carries NLM_F_ACK), as the first of the
        // second, inside one, and as the very last.
        let bad: Vec<(usize, Op)> = vec![
            (1, dup_service.clone()),
            (511, to_missing.clone()),
            (512, del_missing_dest.clone()),
            (1023, edit_missing_service.clone()),
            (1500, dup_service.clone()),
        ];
        for (i, op) in &bad {
            ops.insert(*i, op.clone());
        }
        ops.push(to_missing.clone());
        let last = ops.len() - 1;
        let res = h.apply(&ops).await.expect("apply");
        assert_eq!(res.len(), ops.len());
        let failed: Vec<usize> = res.iter().enumerate().filter(|(_, r)| !r.is_done()).map(|(i, _)| i).collect();
        let mut want: Vec<usize> = bad.iter().map(|(i, _)| *i).collect();
        want.push(last);
        assert_eq!(failed, want, "exactly the bad operations fail");
        for i in want {
            let e = res[i].error().expect("refused by the kernel");
            let ok = match &ops[i] {
                Op::AddService(_) => matches!(e, Error::ServiceExists(_)),
                Op::AddDestination(..) | Op::UpdateService(_) => matches!(e, Error::NoSuchService(_)),
                Op::DeleteDestination(..) => matches!(e, Error::NoSuchDestination { .. }),
                _ => false,
            };
            assert!(ok, "operation {i} ({}) failed with an unexpected error: {e}", ops[i]);
        }
        // No rollback: everything else is in the kernel.
        assert_eq!(normalized(&h.dump().await.unwrap()), expected(&t));
        // Nothing to apply sends nothing and reports nothing.
        assert!(h.apply(&[]).await.unwrap().is_empty());
    });
}

#[test]
#[ignore = "privileged: needs root and IPVS (scripts/privileged-tests)"]
fn reconcile_of_an_unchanged_table_plans_nothing() {
    alone(|| async {
        let h = connect().await;
        let t = table(1000, 10);
        assert!(h.apply(&create_ops(&t)).await.unwrap().iter().all(|r| r.is_done()));
        let current = h.dump().await.unwrap();
        assert!(plan(&current, &t, &Scope::All).is_empty(), "unchanged table, Scope::All");
        let keys: Vec<ServiceKey> = t.iter().map(|d| d.service.key).collect();
        assert!(plan(&current, &t, &Scope::Owned(keys)).is_empty(), "unchanged table, owned scope");

        // One service re-weighted, one real server replaced, one service gone:
        // exactly those operations, and applying them gives the desired table.
        let mut want = t.clone();
        want[7].destinations[0].weight += 10;
        want[8].destinations[1].addr = "10.200.0.8:80".parse().unwrap();
        let gone = want.remove(9).service.key;
        let ops = plan(&current, &want, &Scope::All);
        assert_eq!(ops.len(), 4, "{ops:?}");
        assert!(ops.contains(&Op::DeleteService(gone)));
        assert!(ops.contains(&Op::UpdateDestination(want[7].service.key, want[7].destinations[0].clone())));
        assert!(ops.contains(&Op::AddDestination(want[8].service.key, want[8].destinations[1].clone())));
        assert!(ops.contains(&Op::DeleteDestination(want[8].service.key, t[8].destinations[1].addr)));
        assert!(h.apply(&ops).await.unwrap().iter().all(|r| r.is_done()));
        let now = h.dump().await.unwrap();
        assert_eq!(normalized(&now), expected(&want));
        assert!(plan(&now, &want, &Scope::All).is_empty(), "converged");
    });
}

#[test]
#[ignore = "privileged: needs root and IPVS (scripts/privileged-tests)"]
fn dump_of_a_large_table_is_complete() {
    alone(|| async {
        let h = connect().await;
        // 2,000 services x 10 (the service dump spans many 32 KiB datagrams) and
        // one service with 600 destinations (its destination dump spans ~30).
        let mut t = table(2000, 10);
        let big = Service::new(ServiceKey::udp("10.2.0.1:53".parse().unwrap()), Scheduler::Rr);
        t.push(DesiredService {
            service: big.clone(),
            destinations: (0..600u32)
                .map(|j| {
                    let ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 160, 0, 1)) + j);
                    Destination::new(SocketAddr::new(ip.into(), 53), Forward::Route).with_weight(j % 7)
                })
                .collect(),
        });
        let res = h.apply(&create_ops(&t)).await.unwrap();
        assert!(res.iter().all(|r| r.is_done()));
        let want = expected(&t);
        let got = h.dump().await.unwrap();
        assert_eq!(got.len(), 2001);
        assert_eq!(got.iter().map(|(_, d)| d.len()).sum::<usize>(), 20_600);
        assert_eq!(normalized(&got), want);
        let one = h.destinations(&big.key).await.unwrap();
        assert_eq!(one.len(), 600);
        // ipvsadm agrees on the size.
        assert_eq!(ipvsadm(&["-Sn"]).lines().count(), 2001 + 20_600);

        // Dumps abandoned at various points (the caller gives up) do not
        // disturb the next one: the rest of the old dump is drained first.
        for ms in [1u64, 10, 50] {
            let _ = tokio::time::timeout(Duration::from_millis(ms), h.dump()).await;
            let _ = tokio::time::timeout(Duration::from_millis(ms), h.services()).await;
            let _ = tokio::time::timeout(Duration::from_millis(ms), h.destinations(&big.key)).await;
            assert_eq!(normalized(&h.dump().await.unwrap()), want, "after giving up a dump after {ms} ms");
        }
        // Concurrent dumps on clones of one handle queue and each is complete.
        let h2 = h.clone();
        let (a, b) = tokio::join!(h.dump(), h2.dump());
        assert_eq!(normalized(&a.unwrap()), want);
        assert_eq!(normalized(&b.unwrap()), want);
    });
}
