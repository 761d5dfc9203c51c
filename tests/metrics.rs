//! Privileged tests of the Prometheus metrics of `lvsctl director run`
//! (`metrics = "127.0.0.1:PORT"`), on the LVS-DR test network of
//! tests/daemon.rs: the scrape is made over HTTP inside the director's
//! namespace and checked against the kernel's IPVS table, connections made
//! through the VIP, and a real server that fails its check.

// The test network of tests/daemon.rs; this file uses part of it.
#[allow(dead_code)]
#[path = "support/daemon_net.rs"]
mod net;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::Duration;

use lvsctl_tests::topology::{eventually, Netns};
use net::{Daemon, Net, Server, TestDir, PORT, REALS, VIP};

/// How long any awaited change may take (software emulation is slow).
const T: Duration = Duration::from_secs(60);

/// Where the metrics are served inside the director's namespace.
const METRICS: &str = "127.0.0.1:9101";

/// A quick tcp check: 200 ms apart, 500 ms timeout, rise 2, fall 2.
const FAST_TCP: &str = r#"{ type = "tcp", interval = "200ms", timeout = "500ms", rise = 2, fall = 2 }"#;

/// The coordinator pair's service with two checked real servers; `metrics` is the `metrics` line.
fn config(metrics: &str) -> String {
    format!(
        "[director]\niface = \"eth0\"\n{metrics}\n\n[[director.service]]\nvip = \"{VIP}\"\nport = {PORT}\nreal = [\"{}\", \"{}\"]\ncheck = {FAST_TCP}\n",
        REALS[0], REALS[1]
    )
}

/// `GET path` on `addr` from inside `ns`: the status code and the body.
fn get(ns: &Netns, addr: &str, path: &str) -> Result<(u16, String), String> {
    let (addr, req) = (
        addr.parse::<SocketAddr>().unwrap(),
        format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"),
    );
    ns.run(move || {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
        let mut out = String::new();
        s.read_to_string(&mut out).map_err(|e| e.to_string())?;
        let (head, body) = out.split_once("\r\n\r\n").ok_or_else(|| format!("no HTTP head in {out:?}"))?;
        let code = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).ok_or(format!("bad head {head:?}"))?;
        Ok((code, body.to_owned()))
    })
}

/// One sample of the text format: name, labels, value.
type Sample = (String, BTreeMap<String, String>, f64);

/// Parse the samples (lvsctl's label values have no quotes or commas).
fn samples(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("bad line {line:?}"));
        let (name, labels) = match series.split_once('{') {
            Some((n, rest)) => (n, rest.strip_suffix('}').unwrap_or_else(|| panic!("bad line {line:?}"))),
            None => (series, ""),
        };
        let labels = labels
            .split(',')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap_or_else(|| panic!("bad label in {line:?}"));
                (k.to_owned(), v.trim_matches('"').to_owned())
            })
            .collect();
        out.push((name.to_owned(), labels, value.parse().unwrap_or_else(|_| panic!("bad value in {line:?}"))));
    }
    out
}

/// The scrape, parsed.
fn scrape(ns: &Netns) -> Vec<Sample> {
    let (code, body) = get(ns, METRICS, "/metrics").expect("scrape /metrics");
    assert_eq!(code, 200, "{body}");
    samples(&body)
}

/// The value of `name` for the real server `real` of VIP:PORT (any other labels).
fn of_real(s: &[Sample], name: &str, real: &str) -> Option<f64> {
    let want = [("local_address", VIP), ("proto", "TCP"), ("remote_address", real), ("local_mark", "")];
    let port = PORT.to_string();
    let hits: Vec<&Sample> = s
        .iter()
        .filter(|(n, l, _)| {
            n == name
                && want.iter().all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
                && l.get("local_port") == Some(&port)
                && l.get("remote_port") == Some(&port)
        })
        .collect();
    assert!(hits.len() <= 1, "{name} of {real}: {} series", hits.len());
    hits.first().map(|x| x.2)
}

/// The value of the label-less series `name`.
fn plain(s: &[Sample], name: &str) -> Option<f64> {
    s.iter().find(|(n, l, _)| n == name && l.is_empty()).map(|x| x.2)
}

/// The kernel's (weight, active connections) of each real server of VIP:PORT
/// (none while there is no such service).
fn kernel(net: &Net) -> BTreeMap<String, (u32, u32)> {
    let key = ipvs::ServiceKey::tcp(format!("{VIP}:{PORT}").parse().unwrap());
    let t = net.table();
    let Some((_, dests)) = t.into_iter().find(|(s, _)| s.service.key == key) else { return BTreeMap::new() };
    dests.iter().map(|d| (d.destination.addr.ip().to_string(), (d.destination.weight, d.active_conns))).collect()
}

/// Hold a connection from the client to VIP:PORT open (the server's FIN
/// goes straight to the client in LVS-DR; the director sees no FIN from the
/// client while it holds the socket, so IPVS counts it active).
fn hold(net: &Net) -> TcpStream {
    net.client.run(|| {
        let a: SocketAddr = format!("{VIP}:{PORT}").parse().unwrap();
        TcpStream::connect_timeout(&a, Duration::from_secs(5)).expect("connect to the VIP")
    })
}

#[test]
#[ignore = "privileged: needs root and IPVS (scripts/privileged-tests)"]
fn metrics_follow_the_kernel_connections_and_checks() {
    let net = Net::new();
    let dir = TestDir::new();
    let s1 = Server::text(&net.reals[0], PORT, "rs1");
    let _s2 = Server::text(&net.reals[1], PORT, "rs2");
    let cfg = dir.write("lvsctl.toml", &config(&format!("metrics = \"{METRICS}\"")), 0o644);
    let d = Daemon::start(&net.director, &dir, &cfg, &[]);
    d.wait_for("both real servers in the kernel", T, || kernel(&net).values().filter(|v| v.0 == 1).count() == 2);
    d.wait_for("the metrics endpoint", T, || get(&net.director, METRICS, "/metrics").is_ok());

    // Every real server's node_exporter weight is the kernel's.
    let s = scrape(&net.director);
    for (real, (weight, _)) in kernel(&net) {
        assert_eq!(of_real(&s, "node_ipvs_backend_weight", &real), Some(f64::from(weight)), "{real}");
        assert_eq!(of_real(&s, "lvsctl_real_server_up", &real), Some(1.0), "{real}");
    }
    assert_eq!(plain(&s, "lvsctl_kernel_read_success"), Some(1.0));
    assert!(plain(&s, "node_ipvs_connections_total").is_some(), "global counters from /proc/net/ip_vs_stats");
    assert_eq!(get(&net.director, METRICS, "/other").unwrap().0, 404);

    // Connections through the VIP: active connections and the counters grow.
    let active = |s: &[Sample]| {
        REALS[..2].iter().map(|r| of_real(s, "node_ipvs_backend_connections_active", r).unwrap()).sum::<f64>()
    };
    let conns = |s: &[Sample]| {
        let svc = s.iter().find(|(n, l, _)| {
            n == "lvsctl_service_connections_total" && l.get("local_address").map(String::as_str) == Some(VIP)
        });
        svc.map_or(0.0, |x| x.2)
    };
    let before = scrape(&net.director);
    let held = [hold(&net), hold(&net)];
    let after = eventually("two more active connections in the metrics", T, || {
        let s = scrape(&net.director);
        if active(&s) == active(&before) + 2.0 {
            Ok(s)
        } else {
            Err(active(&s))
        }
    });
    let kernel_active: u32 = kernel(&net).values().map(|v| v.1).sum();
    assert_eq!(active(&after), f64::from(kernel_active), "the kernel's active connections");
    // The kernel publishes its counters when its rate estimator runs (every 2 s).
    let counted = eventually("lvsctl_service_connections_total to count both", T, || {
        let s = scrape(&net.director);
        if conns(&s) == conns(&before) + 2.0 {
            Ok(s)
        } else {
            Err(conns(&s))
        }
    });
    let global = plain(&counted, "node_ipvs_connections_total").unwrap();
    assert!(global >= conns(&counted), "the global counter {global} includes the service's connections");
    drop(held);

    // A real server that fails its check: health 0 (refused), node weight 0, one transition.
    s1.set_up(false);
    let s = eventually("rs1 down in the metrics and in the kernel", T, || {
        let s = scrape(&net.director);
        let seen = (of_real(&s, "lvsctl_real_server_up", REALS[0]), of_real(&s, "node_ipvs_backend_weight", REALS[0]));
        if seen == (Some(0.0), Some(0.0)) {
            Ok(s)
        } else {
            Err(seen)
        }
    });
    assert_eq!(kernel(&net)[REALS[0]].0, 0, "the kernel's weight is 0 too");
    let reason = s.iter().find(|(n, l, _)| {
        n == "lvsctl_real_server_up" && l.get("remote_address").map(String::as_str) == Some(REALS[0])
    });
    assert_eq!(reason.unwrap().1.get("reason").map(String::as_str), Some("refused"));
    assert_eq!(of_real(&s, "lvsctl_real_server_transitions_total", REALS[0]), Some(1.0));
    assert_eq!(of_real(&s, "lvsctl_real_server_up", REALS[1]), Some(1.0), "rs2 stays up");
    let tcp_checks = s.iter().find(|(n, l, _)| {
        n == "lvsctl_check_duration_seconds_count" && l.get("check").map(String::as_str) == Some("tcp")
    });
    assert!(tcp_checks.is_some_and(|x| x.2 > 0.0), "check durations are observed");
    assert_eq!(s.iter().filter(|x| x.0 == "lvsctl_real_server_up").count(), 2, "one health series per real server");
}

/// `lvsctl --netns NS director run` that must fail at start: its exit status and stderr.
fn refused(ns: &Netns, dir: &TestDir, args: &[&str]) -> (std::process::ExitStatus, String) {
    let out = Command::new(lvsctl_tests::lvsctl_bin())
        .args(["--netns", &ns.name, "director", "run"])
        .args(args)
        .env("LVSCTL_STATE_DIR", dir.0.join("state"))
        .output()
        .expect("run lvsctl director run");
    (out.status, String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
#[ignore = "privileged: needs root and IPVS (scripts/privileged-tests)"]
fn metrics_bad_address_fails_before_anything_changes() {
    let net = Net::new();
    let dir = TestDir::new();
    let nothing = |why: &str| {
        assert!(net.table().is_empty(), "{why}: no virtual service may have been created");
        assert!(!net.director_addrs().contains(VIP), "{why}: the VIP must not be on eth0");
    };

    let cfg = dir.write("bad.toml", &config("metrics = \"localhost:9101\""), 0o644);
    let (st, err) = refused(&net.director, &dir, &["--config", cfg.to_str().unwrap()]);
    assert!(!st.success(), "{err}");
    let want = format!("{}:3:11: metrics = \"localhost:9101\": expected ADDR:PORT", cfg.display());
    assert!(err.contains(&want), "{err}");
    nothing("a bad metrics value");

    let (st, err) = refused(&net.director, &dir, &["--config", cfg.to_str().unwrap(), "--metrics", "127.0.0.1:0"]);
    assert_eq!(st.code(), Some(2), "a bad flag is a usage error: {err}");
    assert!(err.contains("--metrics") && err.contains("the port must be 1..65535"), "{err}");
    nothing("a bad --metrics flag");

    // An address in use (held by the test inside the namespace), given by the flag: it wins over the config's.
    let busy = net.director.run(|| std::net::TcpListener::bind("127.0.0.1:9102").expect("bind 9102"));
    let good = dir.write("good.toml", &config(&format!("metrics = \"{METRICS}\"")), 0o644);
    let (st, err) = refused(&net.director, &dir, &["--config", good.to_str().unwrap(), "--metrics", "127.0.0.1:9102"]);
    assert!(!st.success(), "{err}");
    assert!(err.contains("cannot serve metrics on 127.0.0.1:9102") && err.contains("in use"), "{err}");
    nothing("a metrics address in use");
    drop(busy);
}

/// The daemon's resident set size (from /proc/PID/status, its pid from its health report), in kB.
fn rss_kb(d: &Daemon) -> u64 {
    let pid = d.report().expect("the health report")["pid"].as_u64().expect("the daemon's pid");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("the daemon's /proc status");
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("VmRSS");
    line.split_whitespace().nth(1).and_then(|v| v.parse().ok()).expect("VmRSS in kB")
}

/// Services on one VIP at ports 10000.. with two unchecked real servers each.
const MANY: u16 = 300;

#[test]
#[ignore = "privileged: needs root and IPVS (scripts/privileged-tests)"]
fn metrics_of_many_services_match_the_kernel() {
    let ns = Netns::new("dm");
    ns.ip(&["link", "add", "eth0", "type", "dummy"]);
    ns.ip(&["link", "set", "eth0", "up"]);
    let dir = TestDir::new();
    let mut services = String::new();
    for p in 10_000..10_000 + MANY {
        services.push_str(&format!(
            "\n[[director.service]]\nvip = \"{VIP}\"\nport = {p}\nreal = [\"{}\", \"{}:{p},weight=2\"]\n",
            REALS[0], REALS[1]
        ));
    }
    let off = dir.write("off.toml", &format!("[director]\niface = \"eth0\"\n{services}"), 0o644);
    let on = dir.write("on.toml", &format!("[director]\niface = \"eth0\"\nmetrics = \"{METRICS}\"\n{services}"), 0o644);
    let ready = |d: &Daemon| d.wait_for("the health report", T, || d.report().is_some());

    // Without metrics: the daemon's memory once the table is applied.
    let d = Daemon::start(&ns, &dir, &off, &[]);
    ready(&d);
    let rss_off = rss_kb(&d);
    d.signal(libc::SIGTERM);
    assert!(d.wait(T).success(), "{}", d.log());

    // With metrics: every real server of every service is scraped with the kernel's weight.
    let d = Daemon::start(&ns, &dir, &on, &[]);
    ready(&d);
    d.wait_for("the metrics endpoint", T, || get(&ns, METRICS, "/metrics").is_ok());
    let mut took = Vec::new();
    let mut s = Vec::new();
    for _ in 0..5 {
        let start = std::time::Instant::now();
        s = scrape(&ns);
        took.push(start.elapsed());
    }
    let weights: Vec<&Sample> = s.iter().filter(|x| x.0 == "node_ipvs_backend_weight").collect();
    assert_eq!(weights.len(), 2 * usize::from(MANY), "one weight per real server");
    for (name, labels, v) in &weights {
        let want = if labels["remote_address"] == REALS[0] { 1.0 } else { 2.0 };
        assert_eq!(*v, want, "{name} {labels:?}");
    }
    assert_eq!(s.iter().filter(|x| x.0 == "lvsctl_real_server_up" && x.2 == 1.0).count(), 2 * usize::from(MANY));
    let rss_on = rss_kb(&d);
    took.sort();
    eprintln!(
        "{MANY} services, {} real servers: scrape {:?} (median of 5, min {:?}, max {:?}), {} bytes; daemon RSS {rss_off} kB without metrics, {rss_on} kB with metrics after 5 scrapes",
        2 * MANY,
        took[2],
        took[0],
        took[4],
        get(&ns, METRICS, "/metrics").unwrap().1.len()
    );
}
