//! Privileged tests of `lvsctl director run`, the health-checking director
//! daemon, on an LVS-DR topology like the coordinator pair's (VIP
//! 10.19.70.166:15858, see tests/support/daemon_net.rs) in network namespaces:
//! checks (tcp, http, exec) drive weights, the sorry server, SIGHUP reloads,
//! SIGTERM/SIGINT with and without teardown, and the file-safety refusals.
//!
//! Checks run every 200 ms so a test takes seconds even under software
//! emulation; every wait polls with a generous deadline. The time a
//! transition took is printed, not asserted.

#[path = "support/daemon_net.rs"]
mod net;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use lvsctl_tests::topology::Netns;
use net::{proc_weight, Daemon, Net, NlCapture, Server, TestDir, DIRECTOR, PORT, REALS, VIP};

/// How long any awaited change may take (software emulation is slow).
const T: Duration = Duration::from_secs(60);

/// A quick tcp check: 200 ms apart, 500 ms timeout, rise 2, fall 2.
const FAST_TCP: &str = r#"{ type = "tcp", interval = "200ms", timeout = "500ms", rise = 2, fall = 2 }"#;

/// The coordinator pair's service (VIP:PORT) with these real servers, this check, and `extra` service keys.
fn config(reals: &[&str], check: &str, extra: &str) -> String {
    let reals: Vec<String> = reals.iter().map(|r| format!("\"{r}\"")).collect();
    format!(
        "[director]\niface = \"eth0\"\n\n[[director.service]]\nvip = \"{VIP}\"\nport = {PORT}\nscheduler = \"rr\"\nreal = [{}]\ncheck = {check}\n{extra}\n",
        reals.join(", ")
    )
}

fn w(pairs: &[(&str, u32)]) -> Option<Vec<(String, u32)>> {
    let mut v: Vec<(String, u32)> = pairs.iter().map(|(a, w)| ((*a).to_owned(), *w)).collect();
    v.sort();
    Some(v)
}

/// Answers alternate between exactly these two names (round robin).
fn assert_round_robin(answers: &[String], a: &str, b: &str) {
    assert!(answers.iter().all(|x| x == a || x == b), "answers {answers:?}: expected only {a} and {b}");
    assert!(answers.windows(2).all(|p| p[0] != p[1]), "answers {answers:?} do not alternate (round robin)");
}

fn real_report(report: &serde_json::Value, addr: &str) -> serde_json::Value {
    let want = format!("{addr}:{PORT}");
    report["services"][0]["real_servers"]
        .as_array()
        .expect("real_servers")
        .iter()
        .find(|r| r["addr"] == want.as_str())
        .unwrap_or_else(|| panic!("no {want} in the health report {report}"))
        .clone()
}

#[test]
#[ignore = "privileged: needs root and IPVS (scripts/privileged-tests)"]
fn daemon_tcp_check_drains_a_dead_real_server_and_restores_it() {
    let net = Net::new();
    let dir = TestDir::new();
    let s1 = Server::text(&net.reals[0], PORT, "rs1");
    let _s2 = Server::text(&net.reals[1], PORT, "rs2");
    let cfg = dir.write("lvsctl.toml", &config(&REALS[..2], FAST_TCP, ""), 0o644);
    let d = Daemon::start(&net.director, &dir, &cfg, &[]);
    d.wait_for("the service with both real servers", T, || net.weights() == w(&[(REALS[0], 1), (REALS[1], 1)]));
    assert_round_robin(&net.answers(4), "rs1", "rs2");

    s1.set_up(false);
    let took = d.wait_for("rs1 at weight 0", T, || net.weights() == w(&[(REALS[0], 0), (REALS[1], 1)]));
    eprintln!("rs1 drained {took:?} after its server stopped (fall 2 x 200ms + timeout 500ms = 900ms nominal)");
    assert_eq!(net.answers(6), vec!["rs2"; 6], "every new connection must reach the healthy real server");
    let rep = d.report().expect("health report");
    let r1 = real_report(&rep, REALS[0]);
    assert_eq!(r1["up"], false, "{rep}");
    assert!(r1["last_error"].as_str().unwrap().contains("Connection refused"), "{rep}");
    // director status shows each real server's health while the daemon runs.
    let (code, out) = d.status(&net.director, false);
    assert_eq!(code, 0, "a drained real server is the daemon's doing, not a degradation:\n{out}");
    let line = |out: &str, addr: &str| {
        let want = format!("-> {addr}:{PORT} ");
        out.lines().find(|l| l.contains(&want) && l.contains(" since ")).map(str::to_owned)
    };
    let l1 = line(&out, REALS[0]).unwrap_or_else(|| panic!("no health line for rs1 in:\n{out}"));
    assert!(l1.contains("down since") && l1.contains("Connection refused"), "{out}");
    assert!(line(&out, REALS[1]).unwrap().contains("up since"), "{out}");
    let (code, out) = d.status(&net.director, true);
    assert_eq!(code, 0, "{out}");
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(real_report(&j["health"], REALS[0])["up"], false, "{out}");

    s1.set_up(true);
    let took = d.wait_for("rs1 back at weight 1", T, || net.weights() == w(&[(REALS[0], 1), (REALS[1], 1)]));
    eprintln!("rs1 restored {took:?} after its server started (rise 2 x 200ms = 400ms nominal)");
    assert_round_robin(&net.answers(4), "rs1", "rs2");

    // Each transition is logged once, with the reason.
    let log = d.log();
    let downs: Vec<&str> = log.lines().filter(|l| l.contains("real server down")).collect();
    assert_eq!(downs.len(), 1, "one down transition expected:\n{log}");
    assert!(downs[0].contains(&format!("real_server={}:{PORT}", REALS[0])), "{log}");
    assert!(downs[0].contains("Connection refused"), "the reason must be logged:\n{log}");
    assert_eq!(log.lines().filter(|l| l.contains("real server up")).count(), 1, "{log}");
}

#[test]
#[ignore = "privileged: needs root and IPVS (scripts/privileged-tests)"]
fn daemon_sorry_server_takes_over_when_every_real_server_is_down() {
    let net = Net::new();
    let dir = TestDir::new();
    let s1 = Server::text(&net.reals[0], PORT, "rs1");
    let s2 = Server::text(&net.reals[1], PORT, "rs2");
    // The director itself is the sorry server (the kernel forwards to it locally).
    let _sorry = Server::text(&net.director, PORT, "sorry");
    let extra = format!("on_failure = \"remove\"\nsorry_server = \"{DIRECTOR}\"");
    let cfg = dir.write("lvsctl.toml", &config(&REALS[..2], FAST_TCP, &extra), 0o644);
    let d = Daemon::start(&net.director, &dir, &cfg, &[]);
    d.wait_for("the service with both real servers", T, || net.weights() == w(&[(REALS[0], 1), (REALS[1], 1)]));

    s1.set_up(false);
    d.wait_for("rs1 removed (on_failure = remove)", T, || net.weights() == w(&[(REALS[1], 1)]));
    assert_eq!(net.answers(3), vec!["rs2"; 3]);

    s2.set_up(false);
    d.wait_for("only the sorry server", T, || net.weights() == w(&[(DIRECTOR, 1)]));
    assert_eq!(net.answers(3), vec!["sorry"; 3], "clients must reach the sorry server");
    let rep = d.report().expect("health report");
    assert_eq!(rep["services"][0]["sorry_active"], true, "{rep}");

    s2.set_up(true);
    d.wait_for("rs2 back and the sorry server gone", T, || net.weights() == w(&[(REALS[1], 1)]));
    assert_eq!(net.answers(3), vec!["rs2"; 3]);
    let log = d.log();
    assert_eq!(log.matches("sorry server takes over").count(), 1, "{log}");
    assert_eq!(log.matches("sorry server leaves").count(), 1, "{log}");
}

#[test]
#[ignore = "privileged: needs root and IPVS (scripts/privileged-tests)"]
fn daemon_sighup_applies_the_difference_and_rejects_a_broken_config() {
    let net = Net::new();
    let dir = TestDir::new();
    let s1 = Server::text(&net.reals[0], PORT, "rs1");
    let _s2 = Server::text(&net.reals[1], PORT, "rs2");
    let _s3 = Server::text(&net.reals[2], PORT, "rs3");
    let cfg = dir.write("lvsctl.toml", &config(&REALS[..2], FAST_TCP, ""), 0o644);
    let d = Daemon::start(&net.director, &dir, &cfg, &[]);
    d.wait_for("the service with rs1 and rs2", T, || net.weights() == w(&[(REALS[0], 1), (REALS[1], 1)]));
    assert_round_robin(&net.answers(4), "rs1", "rs2");

    // rs1 goes down: its state (down, since when) and counters must survive the reload.
    s1.set_up(false);
    d.wait_for("rs1 at weight 0", T, || net.weights() == w(&[(REALS[0], 0), (REALS[1], 1)]));
    let since = real_report(&d.report().unwrap(), REALS[0])["since"].clone();
    let conns = |net: &Net| -> u64 {
        let t = net.table();
        t[0].1.iter().find(|x| x.destination.addr.ip().to_string() == REALS[0]).map(|x| x.stats.conns).unwrap()
    };
    // The kernel folds its per-CPU counters into the dumped ones every 2 s.
    d.wait_for("rs1's counter to show its 2 connections", T, || conns(&net) >= 2);
    let before = conns(&net);

    // Add rs3, remove rs2.
    dir.write("lvsctl.toml", &config(&[REALS[0], REALS[2]], FAST_TCP, ""), 0o644);
    d.signal(libc::SIGHUP);
    d.wait_for("rs3 added and rs2 removed", T, || net.weights() == w(&[(REALS[0], 0), (REALS[2], 1)]));
    let rep = d.report().unwrap();
    let r1 = real_report(&rep, REALS[0]);
    assert_eq!(r1["up"], false, "rs1 must stay down across the reload: {rep}");
    assert_eq!(r1["since"], since, "rs1 must keep its health state across the reload: {rep}");
    assert_eq!(conns(&net), before, "rs1 must keep its counters (it was not re-created)");
    assert_eq!(net.answers(3), vec!["rs3"; 3]);
    assert!(d.log().contains("new config applied"), "{}", d.log());

    // A config that does not parse is rejected; nothing changes.
    let table_before: Vec<_> = net
        .table()
        .into_iter()
        .map(|(s, ds)| (s.service, ds.into_iter().map(|x| x.destination).collect::<Vec<_>>()))
        .collect();
    dir.write("lvsctl.toml", "[director\niface = \"eth0\"\n", 0o644);
    d.signal(libc::SIGHUP);
    d.wait_for("the rejection in the log", T, || d.log().contains("new config rejected"));
    let log = d.log();
    let line = log.lines().find(|l| l.contains("new config rejected")).unwrap();
    assert!(line.contains("lvsctl.toml:1:"), "the reason (file, line, column) must be logged: {line}");
    let table_after: Vec<_> = net
        .table()
        .into_iter()
        .map(|(s, ds)| (s.service, ds.into_iter().map(|x| x.destination).collect::<Vec<_>>()))
        .collect();
    assert_eq!(table_after, table_before, "a rejected config must not change the table");
    // The running configuration stays in force: rs1 still comes back.
    s1.set_up(true);
    d.wait_for("rs1 back at weight 1 after the rejected reload", T, || {
        net.weights() == w(&[(REALS[0], 1), (REALS[2], 1)])
    });
    assert_round_robin(&net.answers(4), "rs1", "rs3");
}

#[test]
#[ignore = "privileged: needs root and IPVS (scripts/privileged-tests)"]
fn daemon_exec_check_runs_as_nobody_and_drives_a_transition() {
    let net = Net::new();
    let dir = TestDir::new();
    let _s1 = Server::text(&net.reals[0], PORT, "rs1");
    let _s2 = Server::text(&net.reals[1], PORT, "rs2");
    let flags = dir.0.display().to_string();
    let script = dir.write(
        "check.sh",
        &format!(
            "#!/bin/sh\n\
             [ \"$(id -u)\" = 65534 ] || {{ echo \"runs as uid $(id -u), not nobody\" >&2; exit 3; }}\n\
             [ \"$LVSCTL_REAL_SERVER_PORT\" = {PORT} ] || {{ echo \"port $LVSCTL_REAL_SERVER_PORT\" >&2; exit 4; }}\n\
             [ -e \"{flags}/up-$LVSCTL_REAL_SERVER_ADDR\" ] || {{ echo \"no flag for $LVSCTL_REAL_SERVER_ADDR\" >&2; exit 1; }}\n"
        ),
        0o755,
    );
    for r in &REALS[..2] {
        dir.write(&format!("up-{r}"), "", 0o644);
    }
    let check = format!(
        "{{ type = \"exec\", command = [\"{}\"], interval = \"200ms\", timeout = \"5s\", rise = 2, fall = 2 }}",
        script.display()
    );
    // rs1 has weight 3: recovery must restore the configured weight, not 1.
    let rs1 = format!("{},weight=3", REALS[0]);
    let cfg = dir.write("lvsctl.toml", &config(&[&rs1, REALS[1]], &check, ""), 0o644);
    let d = Daemon::start(&net.director, &dir, &cfg, &[]);
    d.wait_for("the service with both real servers", T, || net.weights() == w(&[(REALS[0], 3), (REALS[1], 1)]));

    std::fs::remove_file(dir.0.join(format!("up-{}", REALS[0]))).unwrap();
    d.wait_for("rs1 at weight 0", T, || net.weights() == w(&[(REALS[0], 0), (REALS[1], 1)]));
    let rep = d.report().unwrap();
    let r1 = real_report(&rep, REALS[0]);
    assert!(r1["last_error"].as_str().unwrap().ends_with(&format!("exit status 1: no flag for {}", REALS[0])), "{rep}");
    // rs2's check has passed every time: it ran as nobody with the address and port in its environment.
    assert_eq!(real_report(&rep, REALS[1])["last_error"], serde_json::Value::Null, "{rep}");
    assert_eq!(net.answers(4), vec!["rs2"; 4]);

    dir.write(&format!("up-{}", REALS[0]), "", 0o644);
    d.wait_for("rs1 back at its weight 3", T, || net.weights() == w(&[(REALS[0], 3), (REALS[1], 1)]));
    assert_round_robin(&net.answers(4), "rs1", "rs2");
}

#[test]
#[ignore = "privileged: needs root and IPVS (scripts/privileged-tests)"]
fn daemon_http_check_drives_transitions_on_status_and_body() {
    let net = Net::new();
    let dir = TestDir::new();
    let _s1 = Server::text(&net.reals[0], PORT, "rs1");
    let _s2 = Server::text(&net.reals[1], PORT, "rs2");
    let _h1 = Server::http(&net.reals[0], 8080, "status: ok");
    let h2 = Server::http(&net.reals[1], 8080, "status: ok");
    let check = r#"{ type = "http", port = 8080, path = "/health", status = 200, body = "ok", interval = "200ms", timeout = "1s", rise = 2, fall = 2 }"#;
    let cfg = dir.write("lvsctl.toml", &config(&REALS[..2], check, ""), 0o644);
    let d = Daemon::start(&net.director, &dir, &cfg, &[]);
    d.wait_for("the service with both real servers", T, || net.weights() == w(&[(REALS[0], 1), (REALS[1], 1)]));

    // The service port still answers; only the health endpoint says no.
    h2.set_http(503, "status: ok");
    d.wait_for("rs2 at weight 0 on status 503", T, || net.weights() == w(&[(REALS[0], 1), (REALS[1], 0)]));
    assert_eq!(net.answers(4), vec!["rs1"; 4]);
    h2.set_http(200, "status: ok");
    d.wait_for("rs2 back at weight 1", T, || net.weights() == w(&[(REALS[0], 1), (REALS[1], 1)]));
    h2.set_http(200, "status: maintenance");
    d.wait_for("rs2 at weight 0 on a body without \"ok\"", T, || net.weights() == w(&[(REALS[0], 1), (REALS[1], 0)]));
    let log = d.log();
    assert!(log.contains("answered status 503, expected 200"), "{log}");
    assert!(log.contains("body does not contain \\\"ok\\\"") || log.contains("body does not contain \"ok\""), "{log}");
}

#[test]
#[ignore = "privileged: needs root and IPVS (scripts/privileged-tests)"]
fn daemon_sigterm_leaves_the_service_and_teardown_on_exit_removes_it() {
    let net = Net::new();
    let dir = TestDir::new();
    let _s1 = Server::text(&net.reals[0], PORT, "rs1");
    let _s2 = Server::text(&net.reals[1], PORT, "rs2");
    let cfg = dir.write("lvsctl.toml", &config(&REALS[..2], FAST_TCP, ""), 0o644);
    let both = w(&[(REALS[0], 1), (REALS[1], 1)]);

    // As under systemd (Type=notify): READY=1 once the config is applied, STOPPING=1 on SIGTERM.
    let notify_path = dir.0.join("notify");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
    notify.set_read_timeout(Some(T)).unwrap();
    let d = Daemon::start_env(&net.director, &dir, &cfg, &[], &[("NOTIFY_SOCKET", notify_path.as_path())]);
    let mut buf = [0u8; 256];
    let n = notify.recv(&mut buf).expect("READY=1 from director run");
    assert_eq!(String::from_utf8_lossy(&buf[..n]), "READY=1\nSTATUS=2 of 2 real servers up");
    assert_eq!(net.weights(), both, "READY=1 comes after the config is applied");
    d.wait_for("the health report", T, || d.report().is_some());
    assert!(net.director_addrs().contains(&format!("{VIP}/32")), "{}", net.director_addrs());
    d.signal(libc::SIGTERM);
    let n = notify.recv(&mut buf).expect("STOPPING=1 from director run");
    assert_eq!(String::from_utf8_lossy(&buf[..n]), "STOPPING=1");
    let st = d.wait(T);
    assert!(st.success(), "director run must exit 0 on SIGTERM, got {st}; log:\n{}", d.log());
    assert_eq!(net.weights(), both, "SIGTERM must leave the service in place");
    assert!(net.director_addrs().contains(&format!("{VIP}/32")), "the VIP must stay: {}", net.director_addrs());
    assert!(d.report().is_none(), "the health report is removed when the daemon exits");
    assert_round_robin(&net.answers(2), "rs1", "rs2");

    let d = Daemon::start(&net.director, &dir, &cfg, &["--teardown-on-exit"]);
    d.wait_for("the daemon's health report", T, || d.report().is_some());
    assert_eq!(net.weights(), both);
    d.signal(libc::SIGINT);
    let st = d.wait(T);
    assert!(st.success(), "director run must exit 0 on SIGINT, got {st}; log:\n{}", d.log());
    assert_eq!(net.weights(), None, "--teardown-on-exit must remove the service");
    assert!(!net.director_addrs().contains(VIP), "--teardown-on-exit must remove the VIP: {}", net.director_addrs());
}

/// `lvsctl director run --config CFG`, which must refuse to start: its exit
/// status and stderr. It runs in a throw-away namespace (were a check to
/// regress, it would configure only that), and is killed and the test failed
/// if it still runs after [`T`].
fn refused_run(dir: &TestDir, cfg: &Path) -> (ExitStatus, String) {
    let ns = Netns::new("dz");
    let log = dir.0.join(lvsctl_tests::unique("refused-"));
    let mut child = Command::new(lvsctl_tests::lvsctl_bin())
        .args(["--netns", &ns.name, "director", "run", "--config"])
        .arg(cfg)
        .env("LVSCTL_STATE_DIR", dir.0.join("state"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + T;
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return (st, std::fs::read_to_string(&log).unwrap_or_default());
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "director run --config {} did not refuse: still running after {T:?}; log:\n{}",
                cfg.display(),
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
#[ignore = "privileged: needs root (scripts/privileged-tests)"]
fn daemon_refuses_files_others_can_write_and_root_checks() {
    lvsctl_tests::require_privileged();
    let dir = TestDir::new();
    let safe = dir.write("check.sh", "#!/bin/sh\nexit 0\n", 0o755);
    let exec = |cmd: &Path, user: &str| format!("{{ type = \"exec\", command = [\"{}\"]{user} }}", cmd.display());

    let cfg = dir.write("open.toml", &config(&REALS[..1], FAST_TCP, ""), 0o666);
    let (st, err) = refused_run(&dir, &cfg);
    assert!(!st.success(), "{err}");
    assert!(err.contains("refusing config file") && err.contains("writable by everyone (mode 0666)"), "{err}");

    let group_writable = dir.write("group.sh", "#!/bin/sh\nexit 0\n", 0o775);
    let cfg = dir.write("a.toml", &config(&REALS[..1], &exec(&group_writable, ""), ""), 0o644);
    let (st, err) = refused_run(&dir, &cfg);
    assert!(!st.success(), "{err}");
    assert!(err.contains("refusing check command") && err.contains("writable by its group"), "{err}");

    let cfg = dir.write("b.toml", &config(&REALS[..1], &exec(&safe, ", user = \"root\""), ""), 0o644);
    let (st, err) = refused_run(&dir, &cfg);
    assert!(!st.success(), "{err}");
    assert!(err.contains("never run as root"), "{err}");

    let cfg = dir.write("c.toml", &config(&REALS[..1], &exec(&safe, ", user = \"no-such-user-x\""), ""), 0o644);
    let (st, err) = refused_run(&dir, &cfg);
    assert!(!st.success(), "{err}");
    assert!(err.contains("no user \"no-such-user-x\""), "{err}");

    // The path as given counts, not only where it leads: a symlink (root's)
    // in a folder everyone can write could be pointed elsewhere after the
    // check, although the files it points to now are root's alone.
    let open = dir.0.join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    let good = dir.write("good.toml", &config(&REALS[..1], FAST_TCP, ""), 0o644);
    let link = open.join("lvsctl.toml");
    std::os::unix::fs::symlink(&good, &link).unwrap();
    let (st, err) = refused_run(&dir, &link);
    assert!(!st.success(), "{err}");
    assert!(
        err.contains(&format!("refusing config file {}: its directory {}", link.display(), open.display())),
        "{err}"
    );
    assert!(err.contains("writable by everyone"), "{err}");
    let prog = open.join("check");
    std::os::unix::fs::symlink(&safe, &prog).unwrap();
    let cfg = dir.write("d.toml", &config(&REALS[..1], &exec(&prog, ""), ""), 0o644);
    let (st, err) = refused_run(&dir, &cfg);
    assert!(!st.success(), "{err}");
    assert!(err.contains(&format!("refusing check command {}: its directory", prog.display())), "{err}");
}

/// A reload checks the config's folders as the start did: once the folder
/// of the config is writable by everyone, SIGHUP is refused and the running
/// configuration stays; once it is root's again, the reload goes through.
#[test]
#[ignore = "privileged: needs root and IPVS (scripts/privileged-tests)"]
fn daemon_reload_refuses_a_config_in_a_folder_others_can_write() {
    let net = Net::new();
    let dir = TestDir::new();
    let _s1 = Server::text(&net.reals[0], PORT, "rs1");
    let _s2 = Server::text(&net.reals[1], PORT, "rs2");
    let cfg = dir.write("lvsctl.toml", &config(&REALS[..1], FAST_TCP, ""), 0o644);
    let d = Daemon::start(&net.director, &dir, &cfg, &[]);
    d.wait_for("the service with rs1", T, || net.weights() == w(&[(REALS[0], 1)]));

    dir.write("lvsctl.toml", &config(&REALS[..2], FAST_TCP, ""), 0o644);
    std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o777)).unwrap();
    d.signal(libc::SIGHUP);
    d.wait_for("the rejection in the log", T, || d.log().contains("new config rejected"));
    let log = d.log();
    let line = log.lines().find(|l| l.contains("new config rejected")).unwrap();
    let want = format!("refusing config file {}: its directory {}", cfg.display(), dir.0.display());
    assert!(line.contains(&want) && line.contains("writable by everyone"), "{line}");
    assert_eq!(net.weights(), w(&[(REALS[0], 1)]), "a rejected reload must not change the table");

    std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o755)).unwrap();
    d.signal(libc::SIGHUP);
    d.wait_for("rs2 added by the reload", T, || net.weights() == w(&[(REALS[0], 1), (REALS[1], 1)]));
}

/// A thousand tcp-checked real servers under a limit of 200 open files: the
/// daemon starts, every real server is checked, none is taken down for want
/// of a file descriptor (fall 1: one failed check would), and it runs on.
#[test]
#[ignore = "privileged: needs root and IPVS (scripts/privileged-tests)"]
fn daemon_a_thousand_checks_under_a_low_open_files_limit() {
    use std::collections::HashSet;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    const N: usize = 1000;
    const CHECK_PORT: u16 = 17001;
    let ns = Netns::new("dk");
    ns.ip(&["link", "add", "eth0", "type", "dummy"]);
    ns.ip(&["link", "set", "eth0", "up"]);
    ns.ip(&["addr", "add", "10.18.68.185/24", "dev", "eth0"]);
    // Every address of 10.50.0.0/16 is this host's: one listener answers the
    // checks of all the real servers, and tells which were checked.
    ns.ip(&["route", "add", "local", "10.50.0.0/16", "dev", "lo"]);
    let checked: Arc<Mutex<HashSet<std::net::IpAddr>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let listener = {
        let (checked, stop, path) = (checked.clone(), stop.clone(), ns.path());
        std::thread::spawn(move || {
            lvsctl_tests::topology::enter(&path);
            let l = std::net::TcpListener::bind(("0.0.0.0", CHECK_PORT)).unwrap();
            l.set_nonblocking(true).unwrap();
            while !stop.load(Ordering::SeqCst) {
                match l.accept() {
                    Ok((s, _)) => {
                        checked.lock().unwrap().insert(s.local_addr().unwrap().ip());
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        })
    };
    let reals: Vec<String> = (0..N).map(|i| format!("10.50.{}.{}", i / 250, i % 250 + 1)).collect();
    let reals: Vec<&str> = reals.iter().map(String::as_str).collect();
    let check =
        format!(r#"{{ type = "tcp", port = {CHECK_PORT}, interval = "2s", timeout = "5s", rise = 1, fall = 1 }}"#);
    let dir = TestDir::new();
    let cfg = dir.write("big.toml", &config(&reals, &check, ""), 0o644);
    let d = Daemon::start_limited(&ns, &dir, &cfg, 200);
    d.wait_for("every real server checked at least once", Duration::from_secs(600), || {
        checked.lock().unwrap().len() == N
    });
    // One more round after the last first check, with the same counts.
    let seen = checked.lock().unwrap().len();
    checked.lock().unwrap().clear();
    d.wait_for("a second round of checks", Duration::from_secs(600), || checked.lock().unwrap().len() == N);
    stop.store(true, Ordering::SeqCst);
    listener.join().unwrap();
    assert_eq!(seen, N);
    assert!(d.running(), "director run died; log:\n{}", d.log());
    let log = d.log();
    assert!(!log.contains("real server down"), "a real server was taken down; log:\n{log}");
    assert!(!log.contains("Too many open files"), "log:\n{log}");
    let table = ipvs_table(&ns);
    assert_eq!(table.len(), 1);
    assert_eq!(table[0].1.len(), N);
    assert!(table[0].1.iter().all(|x| x.destination.weight == 1), "a real server lost its weight");
    d.signal(libc::SIGTERM);
    assert!(d.wait(T).success(), "log:\n{}", d.log());
}

/// The IPVS table of a namespace.
fn ipvs_table(ns: &Netns) -> ipvs::Table {
    let name = ns.name.clone();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(
        async move { ipvs::Ipvs::connect_named_netns(&name).await.expect("connect").dump().await.expect("dump") },
    )
}

/// One health transition sends its own change and nothing else: one
/// destination edit, no dump and no other request (counted on an nlmon
/// device in the director's namespace; the kernel's state is read from
/// /proc meanwhile, without netlink).
#[test]
#[ignore = "privileged: needs root and IPVS (scripts/privileged-tests)"]
fn daemon_one_transition_is_one_change_request_and_no_dump() {
    let net = Net::new();
    let dir = TestDir::new();
    let s1 = Server::text(&net.reals[0], PORT, "rs1");
    let _s2 = Server::text(&net.reals[1], PORT, "rs2");
    // No resync during the test: only the transition may talk to the kernel.
    let cfg = dir.write(
        "lvsctl.toml",
        &config(&REALS[..2], FAST_TCP, "").replace("[director]\n", "[director]\nresync_interval = \"60m\"\n"),
        0o644,
    );
    let d = Daemon::start(&net.director, &dir, &cfg, &[]);
    d.wait_for("the service with both real servers", T, || net.weights() == w(&[(REALS[0], 1), (REALS[1], 1)]));
    d.wait_for("the daemon up and checking", T, || d.report().is_some_and(|r| real_report(&r, REALS[0])["up"] == true));

    let capture = NlCapture::start(&net.director);
    s1.set_up(false);
    d.wait_for("rs1 at weight 0 (read from /proc)", T, || proc_weight(&net.director, REALS[0]) == Some(0));
    let counts = capture.finish();
    // No dump, read or family lookup: one change request, IPVS_CMD_SET_DEST (6).
    let seen = (counts.dumps, counts.reads, counts.ctrl, counts.by_cmd.clone());
    assert_eq!(seen, (0, 0, 0, [(6u8, 1u64)].into()), "one transition: {counts:?}");
    assert_eq!(proc_weight(&net.director, REALS[1]), Some(1));
}

/// A SIGHUP that adds one real server sends exactly that change, planned
/// from the table the daemon last applied: no dump, no lookup (counted on
/// nlmon). When the kernel differs from that table after all (the service
/// deleted behind the daemon's back), the reload's change fails and the
/// retry's full reconcile puts the whole table back.
#[test]
#[ignore = "privileged: needs root and IPVS (scripts/privileged-tests)"]
fn daemon_reload_sends_only_its_changes_and_repairs_a_kernel_that_differs() {
    let net = Net::new();
    let dir = TestDir::new();
    let _servers: Vec<Server> =
        ["rs1", "rs2", "rs3"].iter().zip(&net.reals).map(|(name, ns)| Server::text(ns, PORT, name)).collect();
    // No resync during the test: only the reloads may talk to the kernel.
    let text =
        |reals: &[&str]| config(reals, FAST_TCP, "").replace("[director]\n", "[director]\nresync_interval = \"60m\"\n");
    let cfg = dir.write("lvsctl.toml", &text(&REALS[..1]), 0o644);
    let d = Daemon::start(&net.director, &dir, &cfg, &[]);
    d.wait_for("the service with rs1", T, || net.weights() == w(&[(REALS[0], 1)]));
    d.wait_for("the daemon up and checking", T, || d.report().is_some_and(|r| real_report(&r, REALS[0])["up"] == true));

    let capture = NlCapture::start(&net.director);
    dir.write("lvsctl.toml", &text(&REALS[..2]), 0o644);
    d.signal(libc::SIGHUP);
    d.wait_for("rs2 added (read from /proc)", T, || proc_weight(&net.director, REALS[1]) == Some(1));
    d.wait_for("the reload logged", T, || d.log().contains("new config applied"));
    let counts = capture.finish();
    // One change request, IPVS_CMD_NEW_DEST (5), and nothing else.
    let seen = (counts.dumps, counts.reads, counts.ctrl, counts.by_cmd.clone());
    assert_eq!(seen, (0, 0, 0, [(5u8, 1u64)].into()), "a reload adding one real server: {counts:?}");

    net.director.ipvsadm(&["-D", "-t", &format!("{VIP}:{PORT}")]);
    dir.write("lvsctl.toml", &text(&REALS[..3]), 0o644);
    d.signal(libc::SIGHUP);
    let all = w(&[(REALS[0], 1), (REALS[1], 1), (REALS[2], 1)]);
    d.wait_for("the deleted service back with all three", T, || net.weights() == all);
    let log = d.log();
    assert!(log.contains("cannot change the IPVS table; retrying"), "the reload's change must have failed:\n{log}");
    let answers = net.answers(3);
    assert!(answers.iter().all(|a| a.starts_with("rs")), "the VIP answers again: {answers:?}");
}

/// A second `director run` in the same network namespace is refused at once,
/// with a message naming the running one, and changes nothing.
#[test]
#[ignore = "privileged: needs root and IPVS (scripts/privileged-tests)"]
fn daemon_second_run_in_the_namespace_is_refused() {
    let net = Net::new();
    let dir = TestDir::new();
    let _s1 = Server::text(&net.reals[0], PORT, "rs1");
    let _s2 = Server::text(&net.reals[1], PORT, "rs2");
    let cfg = dir.write("lvsctl.toml", &config(&REALS[..2], FAST_TCP, ""), 0o644);
    let first = Daemon::start(&net.director, &dir, &cfg, &[]);
    first.wait_for("the service with both real servers", T, || net.weights() == w(&[(REALS[0], 1), (REALS[1], 1)]));
    let second = Daemon::start(&net.director, &dir, &cfg, &[]);
    let status = second.wait(T);
    assert_eq!(status.code(), Some(1), "the second daemon must fail; log:\n{}", second.log());
    let log = second.log();
    assert!(log.contains("already runs in this network namespace"), "{log}");
    assert!(first.running(), "the first daemon keeps running");
    assert_eq!(net.weights(), w(&[(REALS[0], 1), (REALS[1], 1)]));
}

/// The periodic resync puts back what others change: a flushed table comes
/// back as the health says, and a weight someone restored on a drained real
/// server goes back to 0.
#[test]
#[ignore = "privileged: needs root and IPVS (scripts/privileged-tests)"]
fn daemon_resync_repairs_a_flushed_table_and_foreign_weights() {
    let net = Net::new();
    let dir = TestDir::new();
    let s1 = Server::text(&net.reals[0], PORT, "rs1");
    let _s2 = Server::text(&net.reals[1], PORT, "rs2");
    let text = config(&REALS[..2], FAST_TCP, "").replace("[director]\n", "[director]\nresync_interval = \"1s\"\n");
    let cfg = dir.write("lvsctl.toml", &text, 0o644);
    let d = Daemon::start(&net.director, &dir, &cfg, &[]);
    s1.set_up(false);
    d.wait_for("rs1 drained", T, || net.weights() == w(&[(REALS[0], 0), (REALS[1], 1)]));

    net.director.ipvsadm(&["-C"]);
    d.wait_for("the flushed table back, rs1 still drained", T, || net.weights() == w(&[(REALS[0], 0), (REALS[1], 1)]));
    assert_eq!(net.answers(3), vec!["rs2"; 3]);

    let (vip, rs1) = (format!("{VIP}:{PORT}"), format!("{}:{PORT}", REALS[0]));
    net.director.ipvsadm(&["-e", "-t", &vip, "-r", &rs1, "-g", "-w", "1"]);
    // The resync saw the weight put back (its repair says so) and set it to 0 again.
    let repaired = format!("edit real server {rs1} of tcp {vip} (Route, weight 0)");
    d.wait_for("rs1 back at weight 0", T, || {
        d.log().contains(&repaired) && net.weights() == w(&[(REALS[0], 0), (REALS[1], 1)])
    });
}

/// A service the kernel refuses (a scheduler it lacks) does not take down
/// the one it accepted: the daemon keeps running and retries, and the
/// working service is never deleted and re-created (its counters survive
/// the retries).
#[test]
#[ignore = "privileged: needs root and IPVS (scripts/privileged-tests)"]
fn daemon_kernel_refusal_keeps_the_services_that_work() {
    let net = Net::new();
    let probe = net.director.exec("ipvsadm", &["-A", "-t", "10.0.0.9:1", "-s", "twos"]);
    assert!(!probe.status.success(), "TEST PRECONDITION: this kernel has the twos scheduler; pick one it lacks");
    let dir = TestDir::new();
    let _s1 = Server::text(&net.reals[0], PORT, "rs1");
    let _s2 = Server::text(&net.reals[1], PORT, "rs2");
    let text = format!(
        "{}\n[[director.service]]\nvip = \"{VIP}\"\nport = 80\nscheduler = \"twos\"\nreal = [\"{}\"]\n",
        config(&REALS[..2], FAST_TCP, ""),
        REALS[2]
    );
    let cfg = dir.write("lvsctl.toml", &text, 0o644);
    let d = Daemon::start(&net.director, &dir, &cfg, &[]);
    d.wait_for("the working service", T, || net.weights() == w(&[(REALS[0], 1), (REALS[1], 1)]));
    assert_round_robin(&net.answers(2), "rs1", "rs2");
    let conns = || {
        let key = ipvs::ServiceKey::tcp(format!("{VIP}:{PORT}").parse().unwrap());
        net.table().into_iter().find(|(s, _)| s.service.key == key).map(|(s, _)| s.stats.conns)
    };
    // The kernel adds connections to a service's counters on its estimator's timer.
    d.wait_for("the two connections counted", T, || conns().is_some_and(|c| c >= 2));
    let before = conns().expect("the working service");
    // Two more attempts at the refused service.
    d.wait_for("two retries", T, || d.log().matches("cannot change the IPVS table").count() >= 3);
    assert!(d.running());
    assert!(
        conns().is_some_and(|c| c >= before),
        "the working service was re-created: counters {:?} < {before}",
        conns()
    );
    assert_eq!(net.weights(), w(&[(REALS[0], 1), (REALS[1], 1)]));
    let twos = ipvs::ServiceKey::tcp(format!("{VIP}:80").parse().unwrap());
    assert!(net.table().iter().all(|(s, _)| s.service.key != twos));
}
