//! Privileged tests that run the example programs of `examples/` (built by
//! `cargo build --examples`; scripts/privileged-tests puts them on PATH, in the
//! test VM in /usr/local/bin) against the real kernel and check what they
//! print and do against the table, read with the library and with ipvsadm.

use std::path::PathBuf;
use std::process::Command;

use ipvs::*;
use lvsctl_tests::kernel::*;
use lvsctl_tests::*;

/// The example program `name`: on PATH (as scripts/privileged-tests arranges),
/// else in the target folder next to this test binary. Fails loudly if missing.
fn example_bin(name: &str) -> PathBuf {
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let p = dir.join(name);
            if p.is_file() {
                return p;
            }
        }
    }
    let exe = std::env::current_exe().expect("current_exe");
    let p = exe.parent().and_then(|d| d.parent()).map(|d| d.join("examples").join(name)).expect("target dir");
    assert!(p.is_file(), "example {name} not found on PATH nor at {}: cargo build --examples", p.display());
    p
}

/// Run an example in the calling thread's netns; it must succeed. Its stdout.
fn run_example(name: &str, args: &[&str]) -> String {
    must(Command::new(example_bin(name)).args(args))
}

#[test]
#[ignore = "privileged: needs root and IPVS (scripts/privileged-tests)"]
fn dr_service_example_sets_up_and_converges() {
    in_fresh_netns(|| async {
        let h = connect().await;
        // Someone else's service, which the example must leave alone.
        let foreign = Service::new(ServiceKey::udp("10.9.9.9:53".parse().unwrap()), Scheduler::Wlc);
        h.add_service(&foreign).await.unwrap();

        let out = run_example("dr_service", &["10.19.70.166:15858", "10.18.68.186", "10.18.68.187"]);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines,
            vec![
                "add service tcp 10.19.70.166:15858 (rr)",
                "add real server 10.18.68.186:15858 to tcp 10.19.70.166:15858 (Route, weight 1)",
                "add real server 10.18.68.187:15858 to tcp 10.19.70.166:15858 (Route, weight 1)",
                "3 change(s) applied",
            ],
            "{out}"
        );
        let key = ServiceKey::tcp("10.19.70.166:15858".parse().unwrap());
        assert_eq!(h.service(&key).await.unwrap().service, Service::new(key, Scheduler::Rr));
        let mut dests: Vec<_> = h.destinations(&key).await.unwrap().into_iter().map(|d| d.destination).collect();
        dests.sort_by_key(|d| d.addr);
        assert_eq!(
            dests,
            vec![
                Destination::new("10.18.68.186:15858".parse().unwrap(), Forward::Route),
                Destination::new("10.18.68.187:15858".parse().unwrap(), Forward::Route),
            ]
        );
        let table = h.dump().await.unwrap();
        assert_same_table(as_saved(&table), ipvsadm_save());

        // Run again: nothing to do, nothing changes.
        let out = run_example("dr_service", &["10.19.70.166:15858", "10.18.68.186", "10.18.68.187"]);
        assert_eq!(out, "0 change(s) applied\n");
        assert_eq!(h.dump().await.unwrap(), table);

        // One real server fewer: exactly that one is deleted.
        let out = run_example("dr_service", &["10.19.70.166:15858", "10.18.68.186"]);
        assert_eq!(out, "delete real server 10.18.68.187:15858 of tcp 10.19.70.166:15858\n1 change(s) applied\n");
        let dests: Vec<_> = h.destinations(&key).await.unwrap().into_iter().map(|d| d.destination).collect();
        assert_eq!(dests, vec![Destination::new("10.18.68.186:15858".parse().unwrap(), Forward::Route)]);
        assert_eq!(h.service(&foreign.key).await.unwrap().service, foreign, "foreign service untouched");
        assert_same_table(as_saved(&h.dump().await.unwrap()), ipvsadm_save());
    });
}

#[test]
#[ignore = "privileged: needs root and IPVS (scripts/privileged-tests)"]
fn list_example_prints_the_table() {
    in_fresh_netns(|| async {
        let h = connect().await;
        // Real traffic from a client namespace through the first service
        // (NAT to a local echo server), so the counters are not all zero.
        let client = NamedNetns::new("lcli");
        let dir_ip = std::net::Ipv4Addr::new(10, 1, 0, 1);
        veth_to(&client, "vdir", dir_ip, "vcli", std::net::Ipv4Addr::new(10, 1, 0, 2));
        let _echo = EchoServer::start(std::net::SocketAddr::new(dir_ip.into(), 8080));
        let services = [
            Service::new(ServiceKey::tcp("10.1.0.1:80".parse().unwrap()), Scheduler::Rr),
            Service::new(ServiceKey::udp("[2001:db8::1]:53".parse().unwrap()), Scheduler::Wlc),
            Service::new(ServiceKey::fwmark(7, Family::Inet), Scheduler::Sh),
        ];
        for s in &services {
            h.add_service(s).await.unwrap();
        }
        let dests = [
            // Weight 0: gets no connections.
            (services[0].key, Destination::new("10.0.1.1:80".parse().unwrap(), Forward::Route).with_weight(0)),
            (services[0].key, Destination::new("10.1.0.1:8080".parse().unwrap(), Forward::Masq).with_weight(5)),
            (services[1].key, Destination::new("[2001:db8::2]:53".parse().unwrap(), Forward::Masq).with_weight(3)),
            (services[2].key, Destination::new("10.0.1.3:0".parse().unwrap(), Forward::Tunnel(Tunnel::Ipip))),
        ];
        for (k, d) in &dests {
            h.add_destination(k, d).await.unwrap();
        }

        client.run(|| {
            for _ in 0..4 {
                echo_once("10.1.0.1:80".parse().unwrap(), b"hello through ipvs");
            }
        });
        // Wait for the kernel's estimator (every 2 s) to count all four.
        let mut counted = false;
        for _ in 0..60 {
            if h.service(&services[0].key).await.unwrap().stats.conns == 4 {
                counted = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
        assert!(counted, "the kernel never counted the 4 connections");

        let out = run_example("list", &[]);
        let mut lines = out.lines();
        assert_eq!(
            lines.next().unwrap(),
            format!("IP Virtual Server version 1.2.1 (size={})", proc_conn_table_size()),
            "{out}"
        );
        let header = lines.next().unwrap();
        assert!(header.starts_with("Service / -> Real server"), "{header}");
        // Every other line: a label, then conns, inpkts, outpkts, inbytes, outbytes.
        let rows: Vec<(String, Vec<u64>)> = lines
            .map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                assert!(f.len() > 5, "{l}");
                let (label, nums) = f.split_at(f.len() - 5);
                (label.join(" "), nums.iter().map(|n| n.parse().unwrap()).collect())
            })
            .collect();
        // What ipvsadm (an independent reader) says is in the table.
        let saved = ipvsadm_save();
        let mut want = Vec::new();
        for s in &saved {
            match s {
                Saved::Service(s) => want.push(format!("{} {}", s.key, s.scheduler)),
                Saved::Destination(_, d) => want.push(format!("-> {} {} w={}", d.addr, d.forward.name(), d.weight)),
            }
        }
        let got: Vec<String> = rows.iter().map(|(l, _)| l.clone()).collect();
        let (mut g, mut w) = (got.clone(), want.clone());
        g.sort();
        w.sort();
        assert_eq!(g, w, "list prints exactly the table ipvsadm -Sn shows:\n{out}");
        assert_eq!(got.len(), services.len() + dests.len());
        // Each real server is printed under its own service, with the
        // counters ipvsadm -Ln --stats --exact shows (only the first service
        // had traffic; the others must show zeros).
        let (svc_row, dest_rows) = ipvsadm_stats("TCP", "10.1.0.1:80".parse().unwrap());
        let as_vec = |r: RowStats| vec![r.conns, r.in_pkts, r.out_pkts, r.in_bytes, r.out_bytes];
        assert_eq!(svc_row.conns, 4);
        let mut current = None;
        for (label, nums) in &rows {
            let want = if label.starts_with("tcp 10.1.0.1:80 ") {
                as_vec(svc_row)
            } else if let (Some(rest), Some(k)) = (label.strip_prefix("-> "), current) {
                if k == services[0].key {
                    let addr = rest.split_whitespace().next().unwrap();
                    as_vec(
                        dest_rows
                            .iter()
                            .find(|(a, _)| a == addr)
                            .unwrap_or_else(|| panic!("{addr} in {dest_rows:?}"))
                            .1,
                    )
                } else {
                    vec![0; 5]
                }
            } else {
                vec![0; 5]
            };
            assert_eq!(nums, &want, "counters of {label}");
            if let Some(rest) = label.strip_prefix("-> ") {
                let k = current.expect("a real server line after a service line");
                assert!(
                    dests.iter().any(|(dk, d)| *dk == k && rest.starts_with(&d.addr.to_string())),
                    "{label} listed under {k}"
                );
            } else {
                current = services.iter().find(|s| label == &format!("{} {}", s.key, s.scheduler)).map(|s| s.key);
                assert!(current.is_some(), "{label} is one of the services");
            }
        }
    });
}
