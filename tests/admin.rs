//! Privileged tests of lvsctl's ipvsadm-level commands, against a
//! real IPVS kernel and ipvsadm 1.31, each in a fresh network namespace.
//! Run them with `scripts/privileged-tests admin` (the test VM when the host
//! kernel has no IPVS).

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use lvsctl_tests::{in_fresh_netns, ip, ipvsadm, lvsctl_bin, run, unique};

/// The tests that compare readings taken a moment apart (connection expiry
/// timers, rates) need three reads between two ticks of the kernel's timers;
/// under software emulation another test starting processes meanwhile slows
/// the reads past a tick again and again. Those tests hold this exclusively
/// ([`quiet`]), every other one shares it ([`shared`]).
static QUIET: std::sync::RwLock<()> = std::sync::RwLock::new(());

fn quiet() -> std::sync::RwLockWriteGuard<'static, ()> {
    QUIET.write().unwrap_or_else(|e| e.into_inner())
}

fn shared() -> std::sync::RwLockReadGuard<'static, ()> {
    QUIET.read().unwrap_or_else(|e| e.into_inner())
}

const FULL: &str = include_str!("data/admin/full.rules");
const REPLACE_A: &str = include_str!("data/admin/replace-a.rules");
const REPLACE_B: &str = include_str!("data/admin/replace-b.rules");

/// A dummy interface with the real servers' networks, so that their
/// addresses are unicast in this namespace, and a route to the VIPs.
fn setup_net() {
    ip(&["link", "add", "d0", "type", "dummy"]);
    ip(&["link", "set", "d0", "up"]);
    ip(&["addr", "add", "10.1.0.1/24", "dev", "d0"]);
    ip(&["-6", "addr", "add", "2001:db8:1::1/64", "dev", "d0", "nodad"]);
    ip(&["route", "add", "10.0.0.0/24", "dev", "d0"]);
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Run a program with `input` on stdin.
fn with_stdin(cmd: &mut Command, input: &str) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

fn lvsctl(args: &[&str]) -> Output {
    run(Command::new(lvsctl_bin()).args(args))
}

/// lvsctl with these arguments; must succeed; its stdout.
fn lvsctl_ok(args: &[&str]) -> String {
    let o = lvsctl(args);
    assert!(o.status.success(), "lvsctl {args:?} failed ({}): {}", o.status, text(&o.stderr));
    text(&o.stdout)
}

/// lvsctl must fail with exit status `code` and say `msg` on stderr.
fn lvsctl_fails(args: &[&str], code: i32, msg: &str) {
    let o = lvsctl(args);
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(code), "lvsctl {args:?}: stderr {err}");
    assert!(err.contains(msg), "lvsctl {args:?}: expected {msg:?} in stderr, got {err:?}");
}

fn restore(args: &[&str], rules: &str) -> Output {
    with_stdin(Command::new(lvsctl_bin()).arg("restore").args(args), rules)
}

fn ipvsadm_restore(rules: &str) {
    let o = with_stdin(Command::new("ipvsadm").arg("-R"), rules);
    assert!(o.status.success(), "ipvsadm -R failed: {}", text(&o.stderr));
}

/// The rules without lvsctl's threshold extension (` -x U -y L`), which
/// ipvsadm does not save.
fn without_thresholds(rules: &str) -> String {
    rules
        .lines()
        .map(|l| match l.find(" -x ") {
            Some(i) => &l[..i],
            None => l,
        })
        .map(|l| format!("{l}\n"))
        .collect()
}

#[test]
#[ignore = "privileged: needs root and IPVS (scripts/privileged-tests)"]
fn admin_restore_then_ipvsadm_saves_the_input() {
    let _shared = shared();
    in_fresh_netns(|| async {
        setup_net();
        let o = restore(&[], FULL);
        assert!(o.status.success(), "lvsctl restore failed: {}", text(&o.stderr));
        // Every option came through: ipvsadm prints exactly the input (which is
        // sorted as ipvsadm sorts), except the thresholds ipvsadm never saves...
        assert_eq!(ipvsadm(&["-Sn"]), without_thresholds(FULL));
        // ...which are in the kernel all the same.
        let th = ipvsadm(&["-Ln", "--thresholds"]);
        for (rs, x, y) in [("10.1.0.11:8080", 100, 10), ("10.1.0.12:8081", 50, 0), ("[2001:db8:1::12]:8080", 7, 3)] {
            let line = format!("  -> {rs:<28} {x:<10} {y:<10} 0          0         \n");
            assert!(th.contains(&line), "{line:?} not in {th}");
        }
        // lvsctl's own save, with the documented extension, is the input itself.
        assert_eq!(lvsctl_ok(&["save", "--thresholds"]), FULL);
    });
}

#[test]
#[ignore = "privileged: needs root and IPVS (scripts/privileged-tests)"]
fn admin_ipvsadm_restore_then_lvsctl_saves_like_ipvsadm() {
    let _shared = shared();
    in_fresh_netns(|| async {
        setup_net();
        ipvsadm_restore(FULL);
        let theirs = ipvsadm(&["-Sn"]);
        assert_eq!(theirs, without_thresholds(FULL), "ipvsadm itself did not take the rules as written");
        assert_eq!(lvsctl_ok(&["save"]), theirs);
        assert_eq!(lvsctl_ok(&["save", "-n"]), theirs);
    });
}

/// Send TCP SYNs from this namespace to `vip`: IPVS schedules locally
/// generated connections too, so the service's counters move even though the
/// real servers (behind a dummy interface) never answer.
fn knock(vip: &str, times: usize) {
    let a: SocketAddr = vip.parse().unwrap();
    for _ in 0..times {
        let _ = TcpStream::connect_timeout(&a, Duration::from_millis(300));
    }
}

/// Wait until the kernel's estimator (every 2 s) has folded the connections
/// `knock` made into the counters of `vip` (a TCP service): at least `conns`.
/// Fails loudly when they never show up.
async fn wait_for_conns(h: &ipvs::Ipvs, vip: &str, conns: u64) -> ipvs::Stats {
    let key = ipvs::ServiceKey::tcp(vip.parse().unwrap());
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let s = h.service(&key).await.unwrap().stats;
        if s.conns >= conns {
            return s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the traffic did not reach IPVS: {conns} connections to {vip} expected, counters {s:?}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
#[ignore = "privileged: needs root and IPVS (scripts/privileged-tests)"]
fn admin_list_and_views_agree_with_ipvsadm() {
    let _quiet = quiet();
    in_fresh_netns(|| async {
        setup_net();
        let o = restore(&[], FULL);
        assert!(o.status.success(), "{}", text(&o.stderr));
        // Some traffic, so that counters and connection counts are not all zero.
        knock("10.0.0.1:80", 3);
        knock("10.0.0.2:80", 2);
        let h = lvsctl_tests::connect().await;
        wait_for_conns(&h, "10.0.0.2:80", 2).await;
        let stats = wait_for_conns(&h, "10.0.0.1:80", 3).await;

        // Rates move on their own (a 2 s estimator), the other views do not.
        for view in [
            &[][..],
            &["--stats"],
            &["--stats", "--exact"],
            &["--thresholds"],
            &["--persistent-conn"],
            &["--tun-info"],
            &["--timeout"],
            &["--daemon"],
        ] {
            let mut theirs = vec!["-Ln"];
            theirs.extend_from_slice(view);
            let mut ours = vec!["list"];
            ours.extend_from_slice(view);
            assert_eq!(lvsctl_ok(&ours), ipvsadm(&theirs), "view {view:?}");
        }
        for one in
            [&["-t", "10.0.0.4:80"][..], &["-f", "3", "-6"], &["-u", "10.0.0.2:5060"], &["-t", "[2001:db8::1]:80"]]
        {
            let mut theirs = vec!["-Ln"];
            theirs.extend_from_slice(one);
            let mut ours = vec!["list"];
            ours.extend_from_slice(one);
            assert_eq!(lvsctl_ok(&ours), ipvsadm(&theirs), "service {one:?}");
            ours.push("--stats");
            theirs.push("--stats");
            assert_eq!(lvsctl_ok(&ours), ipvsadm(&theirs), "service {one:?} --stats");
        }
        // The rate view: the kernel's estimator changes the rates every 2 s, so
        // compare ipvsadm's text with ours read just before and just after it,
        // when those two agree (the window did not move in between).
        let mut compared = false;
        for _ in 0..20 {
            let before = lvsctl_ok(&["ls", "--rate"]);
            let theirs = ipvsadm(&["-Ln", "--rate"]);
            let after = lvsctl_ok(&["ls", "--rate"]);
            if before == after {
                assert_eq!(before, theirs, "the --rate view");
                compared = true;
                break;
            }
        }
        assert!(compared, "the rates never held still for three reads in a row");

        // JSON: the same services and values.
        let j: serde_json::Value = serde_json::from_str(&lvsctl_ok(&["list", "--json"])).unwrap();
        let services = j.as_array().unwrap();
        assert_eq!(services.len(), FULL.lines().filter(|l| l.starts_with("-A")).count());
        assert_eq!(services[0]["key"]["addr"], "10.0.0.1:80");
        assert_eq!(services[0]["stats"]["conns"].as_u64(), Some(stats.conns));
        assert_eq!(services[1]["destinations"][0]["upper_threshold"], 100);

        // Timeouts and sync daemons, set with lvsctl, shown alike.
        lvsctl_ok(&["timeout", "100", "20", "30"]);
        assert_eq!(ipvsadm(&["-L", "--timeout"]), "Timeout (tcp tcpfin udp): 100 20 30\n");
        assert_eq!(lvsctl_ok(&["timeout"]), "Timeout (tcp tcpfin udp): 100 20 30\n");
        lvsctl_ok(&["timeout", "0", "60", "0"]);
        assert_eq!(ipvsadm(&["-L", "--timeout"]), "Timeout (tcp tcpfin udp): 100 60 30\n");
        let t: serde_json::Value = serde_json::from_str(&lvsctl_ok(&["timeout", "--json"])).unwrap();
        assert_eq!(t["tcp_fin"], 60);
        // The kernel refuses sync daemons while real servers of another
        // family than their service exist (FULL has two): start from empty.
        lvsctl_ok(&["clear"]);
        assert_eq!(ipvsadm(&["-Sn"]), "");
        lvsctl_ok(&[
            "sync",
            "start",
            "master",
            "--mcast-interface",
            "d0",
            "--syncid",
            "7",
            "--sync-maxlen",
            "1400",
            "--mcast-group",
            "239.1.2.3",
            "--mcast-port",
            "9999",
            "--mcast-ttl",
            "3",
        ]);
        lvsctl_ok(&["sync", "start", "backup", "--mcast-interface", "d0", "--syncid", "8"]);
        let theirs = ipvsadm(&["-L", "--daemon"]);
        assert!(
            theirs.contains("master sync daemon (mcast=d0, syncid=7, maxlen=1400, group=239.1.2.3, port=9999, ttl=3)"),
            "{theirs}"
        );
        assert!(theirs.contains("backup sync daemon (mcast=d0, syncid=8"), "{theirs}");
        assert_eq!(lvsctl_ok(&["sync", "show"]), theirs);
        assert_eq!(lvsctl_ok(&["list", "--daemon"]), theirs);
        lvsctl_ok(&["sync", "stop", "master"]);
        assert!(!ipvsadm(&["-L", "--daemon"]).contains("master"));
        lvsctl_ok(&["sync", "stop", "backup"]);
        assert_eq!(ipvsadm(&["-L", "--daemon"]), "");
        assert_eq!(lvsctl_ok(&["info"]), ipvsadm(&["-Ln"]).lines().next().unwrap().to_owned() + "\n");
    });
}

#[test]
#[ignore = "privileged: needs root and IPVS (scripts/privileged-tests)"]
fn admin_restore_replace_applies_only_the_difference() {
    let _shared = shared();
    in_fresh_netns(|| async {
        setup_net();
        let o = restore(&[], REPLACE_A);
        assert!(o.status.success(), "{}", text(&o.stderr));
        assert_eq!(ipvsadm(&["-Sn"]), REPLACE_A);
        // Traffic to the service that both tables have.
        knock("10.0.0.100:80", 3);
        let h = lvsctl_tests::connect().await;
        let key = ipvs::ServiceKey::tcp("10.0.0.100:80".parse().unwrap());
        let before = wait_for_conns(&h, "10.0.0.100:80", 3).await;
        assert!(before.in_pkts >= 3, "{before:?}");
        let kept: SocketAddr = "10.1.0.2:80".parse().unwrap();
        let dest_before = h.destinations(&key).await.unwrap().into_iter().find(|d| d.destination.addr == kept).unwrap();
        // Weight 0 on the other real server: every connection went to the kept one.
        assert!(dest_before.stats.conns >= 1, "no connection reached {kept}: {dest_before:?}");

        // The plan, printed: only differences.
        let plan = restore(&["--replace", "--dry-run"], REPLACE_B);
        assert!(plan.status.success(), "{}", text(&plan.stderr));
        let plan = text(&plan.stdout);
        assert!(!plan.contains("delete service tcp 10.0.0.100:80"), "{plan}");
        assert!(plan.contains("edit service tcp 10.0.0.100:80"), "{plan}");
        assert!(plan.contains("delete service udp 10.0.0.101:53"), "{plan}");
        assert_eq!(ipvsadm(&["-Sn"]), REPLACE_A, "--dry-run changed the table");

        // From a file this time (stdin elsewhere).
        let file = std::env::temp_dir().join(unique("replace-b.rules"));
        std::fs::write(&file, REPLACE_B).unwrap();
        let o = lvsctl(&["restore", "--replace", file.to_str().unwrap()]);
        let _ = std::fs::remove_file(&file);
        assert!(o.status.success(), "{}", text(&o.stderr));
        // Exactly the second table.
        assert_eq!(ipvsadm(&["-Sn"]), REPLACE_B);
        // The service in both was edited in place: its counters survived
        // (a deleted and re-created service starts from zero).
        let after = h.service(&key).await.unwrap().stats;
        assert!(
            after.conns >= before.conns && after.in_pkts >= before.in_pkts,
            "counters lost: {before:?} -> {after:?}"
        );
        let dest_after = h.destinations(&key).await.unwrap().into_iter().find(|d| d.destination.addr == kept).unwrap();
        assert_eq!(dest_after.destination.weight, 4);
        assert!(dest_after.stats.conns >= dest_before.stats.conns, "{dest_before:?} -> {dest_after:?}");
        // Replacing with the same table again changes nothing.
        let again = restore(&["--replace", "--dry-run"], REPLACE_B);
        assert!(again.status.success());
        assert_eq!(text(&again.stdout), "", "a second replace would still change things");
    });
}

#[test]
#[ignore = "privileged: needs root and IPVS (scripts/privileged-tests)"]
fn admin_commands_mean_what_ipvsadm_means() {
    let _shared = shared();
    in_fresh_netns(|| async {
        setup_net();
        // The same changes with ipvsadm and with lvsctl give the same table.
        let steps: &[(&[&str], &[&str])] = &[
            (
                &["-A", "-t", "10.0.0.1:80", "-s", "rr", "-p"],
                &["service", "add", "-t", "10.0.0.1:80", "-s", "rr", "-p"],
            ),
            (&["-A", "-t", "10.0.0.2:80"], &["svc", "add", "-t", "10.0.0.2:80"]),
            (
                &["-A", "-u", "10.0.0.2:53", "-s", "sh", "-b", "sh-port", "-o"],
                &["svc", "add", "-u", "10.0.0.2:53", "-s", "sh", "-b", "sh-port", "-o"],
            ),
            (
                &["-A", "-f", "9", "-6", "-s", "mh", "-p", "20", "-M", "96"],
                &["svc", "add", "-f", "9", "-6", "-s", "mh", "-p", "20", "-M", "96"],
            ),
            (&["-E", "-t", "10.0.0.1:80", "-s", "wrr"], &["service", "edit", "-t", "10.0.0.1:80", "-s", "wrr"]),
            (
                &["-a", "-t", "10.0.0.1:80", "-r", "10.1.0.2:8080"],
                &["real", "add", "-t", "10.0.0.1:80", "-r", "10.1.0.2:8080"],
            ),
            (
                &["-a", "-t", "10.0.0.1:80", "-r", "10.1.0.3", "-m", "-w", "5", "-x", "9", "-y", "2"],
                &["dest", "add", "-t", "10.0.0.1:80", "-r", "10.1.0.3", "-m", "-w", "5", "-x", "9", "-y", "2"],
            ),
            (
                &[
                    "-a",
                    "-t",
                    "10.0.0.1:80",
                    "-r",
                    "10.1.0.4:99",
                    "-i",
                    "--tun-type",
                    "gue",
                    "--tun-port",
                    "5555",
                    "--tun-csum",
                ],
                &[
                    "real",
                    "add",
                    "-t",
                    "10.0.0.1:80",
                    "-r",
                    "10.1.0.4:99",
                    "-i",
                    "--tun-type",
                    "gue",
                    "--tun-port",
                    "5555",
                    "--tun-csum",
                ],
            ),
            (&["-e", "-t", "10.0.0.1:80", "-r", "10.1.0.3"], &["real", "edit", "-t", "10.0.0.1:80", "-r", "10.1.0.3"]),
            (
                &["-a", "-u", "10.0.0.2:53", "-r", "10.1.0.2", "-m"],
                &["real", "add", "-u", "10.0.0.2:53", "-r", "10.1.0.2", "-m"],
            ),
            (
                &["-a", "-f", "9", "-6", "-r", "[2001:db8:1::2]:0", "-w", "3"],
                &["real", "add", "-f", "9", "-6", "-r", "[2001:db8:1::2]:0", "-w", "3"],
            ),
            (&["-d", "-u", "10.0.0.2:53", "-r", "10.1.0.2"], &["real", "del", "-u", "10.0.0.2:53", "-r", "10.1.0.2"]),
            (&["-D", "-t", "10.0.0.2:80"], &["service", "del", "-t", "10.0.0.2:80"]),
        ];
        let mut want = Vec::new();
        for (theirs, _) in steps {
            ipvsadm(theirs);
            want.push(ipvsadm(&["-Sn"]));
        }
        ipvsadm(&["-C"]);
        for (i, (_, ours)) in steps.iter().enumerate() {
            lvsctl_ok(ours);
            assert_eq!(ipvsadm(&["-Sn"]), want[i], "after lvsctl {ours:?}");
        }
        let th = ipvsadm(&["-Ln", "--thresholds", "-t", "10.0.0.1:80"]);
        assert!(
            th.contains("  -> 10.1.0.3:80                  0          0"),
            "real edit resets thresholds to the defaults, as ipvsadm -e does: {th}"
        );

        // zero and clear
        knock("10.0.0.1:80", 2);
        let h = lvsctl_tests::connect().await;
        let key = ipvs::ServiceKey::tcp("10.0.0.1:80".parse().unwrap());
        wait_for_conns(&h, "10.0.0.1:80", 2).await;
        lvsctl_ok(&["zero", "-t", "10.0.0.1:80"]);
        assert_eq!(h.service(&key).await.unwrap().stats.conns, 0);
        knock("10.0.0.1:80", 1);
        wait_for_conns(&h, "10.0.0.1:80", 1).await;
        lvsctl_ok(&["zero"]);
        assert_eq!(h.service(&key).await.unwrap().stats.conns, 0);
        lvsctl_ok(&["clear"]);
        assert_eq!(ipvsadm(&["-Sn"]), "");
    });
}

#[test]
#[ignore = "privileged: needs root and IPVS (scripts/privileged-tests)"]
fn admin_errors_read_like_ipvsadm() {
    let _shared = shared();
    in_fresh_netns(|| async {
        setup_net();
        lvsctl_ok(&["service", "add", "-t", "10.0.0.1:80", "-s", "rr"]);
        lvsctl_ok(&["real", "add", "-t", "10.0.0.1:80", "-r", "10.1.0.2"]);
        let table = ipvsadm(&["-Sn"]);

        // Kernel refusals: exit 1, ipvsadm's words.
        lvsctl_fails(&["service", "add", "-t", "10.0.0.1:80"], 1, "Service already exists");
        lvsctl_fails(&["service", "edit", "-t", "10.9.9.9:80"], 1, "No such service");
        lvsctl_fails(&["service", "del", "-t", "10.9.9.9:80"], 1, "No such service");
        lvsctl_fails(&["zero", "-t", "10.9.9.9:80"], 1, "No such service");
        lvsctl_fails(&["list", "-t", "10.9.9.9:80"], 1, "No such service");
        lvsctl_fails(&["real", "add", "-t", "10.9.9.9:80", "-r", "10.1.0.2"], 1, "Service not defined");
        lvsctl_fails(&["real", "add", "-t", "10.0.0.1:80", "-r", "10.1.0.2"], 1, "Destination already exists");
        lvsctl_fails(&["real", "edit", "-t", "10.0.0.1:80", "-r", "10.1.0.99"], 1, "No such destination");
        lvsctl_fails(&["real", "del", "-t", "10.0.0.1:80", "-r", "10.1.0.99"], 1, "No such destination");
        lvsctl_fails(
            &["service", "add", "-t", "10.0.0.2:80", "-s", "bogus"],
            1,
            "Scheduler or persistence engine not found",
        );
        lvsctl_fails(
            &["service", "add", "-t", "10.0.0.2:80", "--pe", "bogus", "-p"],
            1,
            "Scheduler or persistence engine not found",
        );
        // The broadcast address of d0's network is not unicast: the kernel says EINVAL.
        lvsctl_fails(&["real", "add", "-t", "10.0.0.1:80", "-r", "10.1.0.255"], 1, "Invalid operation");
        lvsctl_fails(&["sync", "stop", "master"], 1, "No daemon is running");
        lvsctl_fails(&["sync", "start", "master", "--mcast-interface", "nope0"], 1, "No such device");
        lvsctl_ok(&["sync", "start", "backup", "--mcast-interface", "d0"]);
        lvsctl_fails(&["sync", "start", "backup", "--mcast-interface", "d0"], 1, "Daemon has already run");
        lvsctl_ok(&["sync", "stop", "backup"]);

        // Bad input: exit 2, nothing sent.
        lvsctl_fails(&["service", "add", "-t", "10.0.0.999:80"], 2, "illegal virtual server address[:port] specified");
        lvsctl_fails(&["service", "add", "-t", "10.0.0.3:0"], 2, "Zero port specified for non-persistent service");
        lvsctl_fails(&["service", "add", "-t", "10.0.0.3:80", "-o"], 2, "One-Packet Scheduling is only for UDP");
        lvsctl_fails(
            &["service", "add", "-t", "10.0.0.3:80", "-s", "rr", "-b", "sh-port"],
            2,
            "incompatible scheduler flag",
        );
        lvsctl_fails(&["real", "add", "-t", "10.0.0.1:80", "-r", "10.1.0.999"], 2, "illegal real server address");
        lvsctl_fails(&["real", "add", "-t", "10.0.0.1:80", "-r", "224.0.0.1"], 2, "not a unicast address");
        lvsctl_fails(
            &["real", "add", "-t", "10.0.0.1:80", "-r", "10.1.0.3", "-w", "70000"],
            2,
            "illegal weight specified",
        );
        lvsctl_fails(
            &["real", "add", "-t", "10.0.0.1:80", "-r", "[2001:db8:1::3]", "-m"],
            2,
            "Different address family",
        );
        lvsctl_fails(&["real", "add", "-t", "10.0.0.1:80", "-r", "10.1.0.3", "-i", "--tun-type", "gue"], 2, "tun-port");
        lvsctl_fails(&["service", "add"], 2, "service-address");
        lvsctl_fails(&["service", "add", "-t", "10.0.0.3:80", "--bogus"], 2, "--bogus");
        let nowhere = unique("nonexistent");
        lvsctl_fails(&["--netns", &nowhere, "list"], 2, "network namespace");
        assert_eq!(ipvsadm(&["-Sn"]), table, "a failed command changed the table");

        // A bad line in restore: its number, and nothing applied.
        let bad = "-A -t 10.0.0.5:80 -s rr\n-a -t 10.0.0.5:80 -r 10.1.0.5\n\n-a -t 10.0.0.5:80 -r 10.1.0.6 -w lots\n-A -t 10.0.0.6:80\n";
        let o = restore(&[], bad);
        assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
        assert!(text(&o.stderr).contains("line 4: illegal weight specified"), "{}", text(&o.stderr));
        assert_eq!(ipvsadm(&["-Sn"]), table, "restore applied something despite a bad line");
        for (rules, line) in [
            ("-A -t 10.0.0.5:80\n-A -t 10.0.0.5:81 -s rr -p 0\n", "line 2:"),
            ("-A -t 10.0.0.5:80\n-X -t 10.0.0.5:81\n", "line 2:"),
            ("-A -t 10.0.0.5:80\n-a -t 10.0.0.5:80 -r 10.1.0.5 -i --tun-type gre --tun-remcsum\n", "line 2:"),
            ("-A -t 10.0.0.5:80 -b mh-port\n", "line 1:"),
            ("-A -t 10.0.0.5:80\n-A -t [2001:db8::5]:80 -M 129 -p\n", "line 2:"),
        ] {
            let o = restore(&[], rules);
            assert_eq!(o.status.code(), Some(2), "{rules}: {}", text(&o.stderr));
            assert!(text(&o.stderr).contains(line), "{rules}: {}", text(&o.stderr));
            assert_eq!(ipvsadm(&["-Sn"]), table, "restore applied something despite a bad line: {rules}");
        }
        // --replace refuses what is not a table, before changing anything.
        let o = restore(&["--replace"], "-A -t 10.0.0.5:80\n-D -t 10.0.0.1:80\n");
        assert_eq!(o.status.code(), Some(2));
        assert!(text(&o.stderr).contains("line 2:"), "{}", text(&o.stderr));
        let o = restore(&["--replace"], "-A -t 10.0.0.5:80\n-A -t 10.0.0.5:80 -s rr\n");
        assert_eq!(o.status.code(), Some(2));
        assert!(text(&o.stderr).contains("line 2: service tcp 10.0.0.5:80 is already defined on line 1"));
        assert_eq!(ipvsadm(&["-Sn"]), table);

        // Lines the kernel refuses: reported with their numbers; the others
        // are applied (the kernel has no transactions), exit 1.
        let o = restore(&[], "-A -t 10.0.0.7:80 -s rr\n-A -t 10.0.0.1:80\n-A -t 10.0.0.8:80 -s nosuch\n");
        assert_eq!(o.status.code(), Some(1));
        let err = text(&o.stderr);
        assert!(err.contains("line 2: Service already exists"), "{err}");
        assert!(err.contains("line 3: Scheduler or persistence engine not found"), "{err}");
        assert!(ipvsadm(&["-Sn"]).contains("-A -t 10.0.0.7:80 -s rr\n"));
    });
}

#[test]
#[ignore = "privileged: needs root and IPVS (scripts/privileged-tests)"]
fn admin_netns_option_acts_in_that_namespace() {
    let _shared = shared();
    in_fresh_netns(|| async {
        let ns = unique("lvsadm");
        ip(&["netns", "add", &ns]);
        ip(&["-n", &ns, "link", "set", "lo", "up"]);
        let res = std::panic::catch_unwind(|| {
            lvsctl_ok(&["--netns", &ns, "service", "add", "-t", "10.0.0.1:80", "-s", "rr"]);
            lvsctl_ok(&["--netns", &ns, "real", "add", "-t", "10.0.0.1:80", "-r", "127.0.0.1", "-m"]);
            let theirs =
                lvsctl_tests::must(Command::new(lvsctl_tests::ip_bin()).args(["netns", "exec", &ns, "ipvsadm", "-Sn"]));
            assert_eq!(theirs, "-A -t 10.0.0.1:80 -s rr\n-a -t 10.0.0.1:80 -r 127.0.0.1:80 -m -w 1\n");
            assert_eq!(lvsctl_ok(&["--netns", &ns, "save"]), theirs);
            // This test's own namespace is untouched.
            assert_eq!(ipvsadm(&["-Sn"]), "");
            assert_eq!(lvsctl_ok(&["save"]), "");
        });
        ip(&["netns", "del", &ns]);
        if let Err(p) = res {
            std::panic::resume_unwind(p);
        }
    });
}

/// The expiry column (`MM:SS`, the second field) of each connection line of
/// `ipvsadm -Lnc`, and the text with that column blanked: the one column that
/// counts down while the table is read.
fn split_expiry(table: &str) -> (String, Vec<u32>) {
    let mut masked = String::with_capacity(table.len());
    let mut expiry = Vec::new();
    for line in table.lines() {
        let mut fields = line.splitn(3, ' ');
        let (first, rest) = (fields.next().unwrap_or(""), line.get(4..).unwrap_or(""));
        let mmss = rest.get(..5).unwrap_or("");
        match (mmss.get(..2).map(str::parse::<u32>), mmss.get(3..).map(str::parse::<u32>), mmss.get(2..3)) {
            (Some(Ok(m)), Some(Ok(s)), Some(":")) if first.len() <= 3 && !first.is_empty() => {
                expiry.push(m * 60 + s);
                masked.push_str(&line[..4]);
                masked.push_str("--:--");
                masked.push_str(&rest[5..]);
            }
            _ => masked.push_str(line),
        }
        masked.push('\n');
    }
    (masked, expiry)
}

/// `ours()` against `ipvsadm` read just before and just after it. Listings
/// without timers must be identical. Connection listings (`-Lnc`) count down
/// while they are read, so the expiry column is compared as a range: each
/// entry's expiry in `ours()` lies between the two ipvsadm reads, everything
/// else is identical. Retried while the entries themselves change between the
/// two reads (a connection expiring, a state changing).
fn same_as_ipvsadm_around(theirs_args: &[&str], ours: impl Fn() -> String) -> String {
    let timed = theirs_args.iter().any(|a| a.starts_with("-L") && a.contains('c'));
    for _ in 0..20 {
        let before = ipvsadm(theirs_args);
        let o = ours();
        let after = ipvsadm(theirs_args);
        if !timed {
            if before == after {
                assert_eq!(o, before, "lvsctl vs ipvsadm {theirs_args:?}");
                return before;
            }
            continue;
        }
        let ((b, bx), (a, ax), (m, mx)) = (split_expiry(&before), split_expiry(&after), split_expiry(&o));
        if a != b {
            continue;
        }
        assert_eq!(m, b, "lvsctl vs ipvsadm {theirs_args:?} (expiry column blanked)");
        assert!(bx.len() == mx.len() && ax.len() == mx.len(), "{before}\n{o}\n{after}");
        for i in 0..mx.len() {
            assert!(
                bx[i] >= mx[i] && mx[i] >= ax[i],
                "entry {i}: lvsctl's expiry {} is not between ipvsadm's {} and {}\n{before}\n{o}\n{after}",
                mx[i],
                bx[i],
                ax[i]
            );
        }
        return before;
    }
    panic!("the table's entries kept changing between two ipvsadm reads ({theirs_args:?})");
}

/// Run `f` on a thread that has entered the named network namespace.
fn in_named_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    use std::os::fd::AsRawFd;
    let path = std::path::Path::new("/var/run/netns").join(ns);
    std::thread::spawn(move || {
        let fd = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        // SAFETY: setns with a valid fd; it changes only this thread's network namespace.
        #[allow(unsafe_code)]
        let rc = unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns {}: {}", path.display(), std::io::Error::last_os_error());
        f()
    })
    .join()
    .unwrap_or_else(|p| std::panic::resume_unwind(p))
}

/// `list --connection` and `--nosort`, against ipvsadm on real connections:
/// this namespace is a NAT director (a persistent IPv4 service and an IPv6
/// one) between a client namespace and a real-server namespace (veth pairs);
/// one connection held open, others closed by the client (TIME_WAIT and the
/// like), and the persistence template.
#[test]
#[ignore = "privileged: needs root and IPVS (scripts/privileged-tests)"]
fn admin_conn_list_agrees_with_ipvsadm() {
    let _quiet = quiet();
    in_fresh_netns(|| async {
        let (cl, rs) = (unique("lvscl"), unique("lvsrs"));
        ip(&["netns", "add", &cl]);
        ip(&["netns", "add", &rs]);
        let res = std::panic::catch_unwind(|| conn_list_test(&cl, &rs));
        ip(&["netns", "del", &cl]);
        ip(&["netns", "del", &rs]);
        if let Err(p) = res {
            std::panic::resume_unwind(p);
        }
    });
}

fn conn_list_test(cl: &str, rs: &str) {
    use std::io::Read;
    use std::net::{Shutdown, TcpListener};
    // Director: VIPs on a dummy, the client side on v0, the real servers on r0.
    ip(&["link", "add", "d0", "type", "dummy"]);
    ip(&["link", "set", "d0", "up"]);
    ip(&["addr", "add", "10.0.0.1/32", "dev", "d0"]);
    ip(&["-6", "addr", "add", "2001:db8::1/128", "dev", "d0", "nodad"]);
    for (dev, peer, ns, mine, theirs, mine6, theirs6) in [
        ("v0", "vc", cl, "192.168.50.1/24", "192.168.50.2/24", "2001:db8:50::1/64", "2001:db8:50::2/64"),
        ("r0", "vr", rs, "10.1.0.1/24", "10.1.0.2/24", "2001:db8:1::1/64", "2001:db8:1::2/64"),
    ] {
        ip(&["link", "add", dev, "type", "veth", "peer", "name", peer, "netns", ns]);
        ip(&["addr", "add", mine, "dev", dev]);
        ip(&["-6", "addr", "add", mine6, "dev", dev, "nodad"]);
        ip(&["link", "set", dev, "up"]);
        ip(&["-n", ns, "addr", "add", theirs, "dev", peer]);
        ip(&["-n", ns, "-6", "addr", "add", theirs6, "dev", peer, "nodad"]);
        ip(&["-n", ns, "link", "set", peer, "up"]);
        ip(&["-n", ns, "link", "set", "lo", "up"]);
        let gw = mine.split('/').next().unwrap();
        let gw6 = mine6.split('/').next().unwrap();
        ip(&["-n", ns, "route", "add", "default", "via", gw]);
        ip(&["-n", ns, "-6", "route", "add", "default", "via", gw6]);
    }
    std::fs::write("/proc/sys/net/ipv4/ip_forward", "1").unwrap();
    std::fs::write("/proc/sys/net/ipv6/conf/all/forwarding", "1").unwrap();
    // The real servers: read until the client closes, then close.
    for addr in ["10.1.0.2:8080", "[2001:db8:1::2]:8080"] {
        let l = in_named_netns(rs, move || TcpListener::bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}")));
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(mut s) = s else { return };
                std::thread::spawn(move || {
                    let mut buf = [0u8; 64];
                    while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
                });
            }
        });
    }
    ipvsadm(&["-A", "-t", "10.0.0.1:80", "-s", "rr", "-p", "300"]);
    ipvsadm(&["-a", "-t", "10.0.0.1:80", "-r", "10.1.0.2:8080", "-m"]);
    ipvsadm(&["-A", "-t", "[2001:db8::1]:80", "-s", "rr"]);
    ipvsadm(&["-a", "-t", "[2001:db8::1]:80", "-r", "[2001:db8:1::2]:8080", "-m"]);
    // From the client: one connection held open, some closed by the client.
    let held = in_named_netns(cl, || {
        let connect = |a: &str| {
            TcpStream::connect_timeout(&a.parse().unwrap(), Duration::from_secs(5))
                .unwrap_or_else(|e| panic!("connecting through {a}: {e}"))
        };
        let held = connect("10.0.0.1:80");
        for vip in ["10.0.0.1:80", "10.0.0.1:80", "[2001:db8::1]:80", "[2001:db8::1]:80"] {
            let mut s = connect(vip);
            s.shutdown(Shutdown::Write).unwrap();
            let _ = s.read_to_end(&mut Vec::new());
        }
        held
    });
    std::thread::sleep(Duration::from_millis(200));

    let table = same_as_ipvsadm_around(&["-Lnc"], || lvsctl_ok(&["list", "-c"]));
    // The comparison saw what it was meant to see.
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines[0], "IPVS connection entries");
    assert!(lines.len() >= 2 + 6, "expected 5 connections and a template:\n{table}");
    assert!(lines.iter().any(|l| l.contains(" ESTABLISHED ") && l.contains(" 10.0.0.1:80 ")), "{table}");
    // The persistence template: client port 0 (its state is ASSURED on Linux 6.1).
    assert!(lines.iter().any(|l| l.starts_with("TCP") && l.contains(" 192.168.50.2:0 ")), "no template:\n{table}");
    assert!(lines.iter().any(|l| l.contains("[2001:db8::1]:80")), "no IPv6 entry:\n{table}");
    assert!(
        lines.iter().filter(|l| l.contains(" 10.0.0.1:80 ") && !l.contains(" ESTABLISHED ")).count() >= 3,
        "no closed connections:\n{table}"
    );
    same_as_ipvsadm_around(&["-Lnc"], || lvsctl_ok(&["list", "-n", "--connection"]));
    same_as_ipvsadm_around(&["-Lnc", "--persistent-conn"], || lvsctl_ok(&["list", "-c", "--persistent-conn"]));

    // JSON: the same entries in the same order, expiry in seconds (between
    // the two ipvsadm reads around it).
    let (j, before, after) = (0..20)
        .find_map(|_| {
            let before = ipvsadm(&["-Lnc"]);
            let j: serde_json::Value = serde_json::from_str(&lvsctl_ok(&["list", "-c", "--json"])).unwrap();
            let after = ipvsadm(&["-Lnc"]);
            (split_expiry(&before).0 == split_expiry(&after).0).then_some((j, before, after))
        })
        .expect("the connection entries kept changing between two ipvsadm reads");
    let entries = j.as_array().expect("a JSON array");
    let rows: Vec<Vec<&str>> = before.lines().skip(2).map(|l| l.split_whitespace().collect()).collect();
    let (bx, ax) = (split_expiry(&before).1, split_expiry(&after).1);
    assert_eq!(entries.len(), rows.len(), "{j:#}\n{before}");
    for (i, (e, row)) in entries.iter().zip(&rows).enumerate() {
        let secs = e["expires_seconds"].as_u64().unwrap();
        assert!(u64::from(bx[i]) >= secs && secs >= u64::from(ax[i]), "{e}: expiry not between\n{before}\n{after}");
        let got = [
            e["protocol"].as_str().unwrap(),
            e["state"].as_str().unwrap(),
            e["client"].as_str().unwrap(),
            e["virtual"].as_str().unwrap(),
            e["destination"].as_str().unwrap(),
        ];
        assert_eq!(got.to_vec(), [row[0], row[2], row[3], row[4], row[5]], "{e}");
        assert!(e["pe"].is_null(), "{e}");
    }

    // --nosort: the kernel's order of services and real servers.
    ipvsadm(&["-A", "-u", "10.0.0.2:53", "-s", "rr"]);
    ipvsadm(&["-A", "-t", "10.0.0.3:80", "-s", "wrr"]);
    for rs in ["10.1.0.9", "10.1.0.3", "10.1.0.5"] {
        ipvsadm(&["-a", "-t", "10.0.0.3:80", "-r", rs, "-m"]);
    }
    let sorted = same_as_ipvsadm_around(&["-Ln"], || lvsctl_ok(&["list"]));
    let unsorted = same_as_ipvsadm_around(&["-Ln", "--nosort"], || lvsctl_ok(&["list", "--nosort"]));
    // Services and real servers only (connection counts may move meanwhile).
    let order = |t: &str| -> Vec<String> {
        t.lines().map(|l| l.split_whitespace().take(2).collect::<Vec<_>>().join(" ")).collect()
    };
    assert_ne!(order(&unsorted), order(&sorted), "the kernel's order happened to be ipvsadm's sorted order");
    drop(held);
}

/// A table with marks of 2^31 and more is saved as ipvsadm saves it (`-f
/// -1294967296`) and restored from that text; a persistence timeout the
/// kernel would wrap is refused on every path, the restore's included.
#[test]
#[ignore = "privileged: needs root and IPVS (scripts/privileged-tests)"]
fn admin_save_restore_negative_fwmarks_and_persistence_cap() {
    let _shared = shared();
    in_fresh_netns(|| async {
        setup_net();
        lvsctl_ok(&["service", "add", "-f", "3000000000", "-s", "rr"]);
        lvsctl_ok(&["real", "add", "-f", "3000000000", "-r", "10.1.0.3", "-m", "-w", "2"]);
        lvsctl_ok(&["service", "add", "-f", "4294967295", "-6", "-s", "wrr"]);
        let theirs = ipvsadm(&["-Sn"]);
        assert!(theirs.contains("-A -f -1294967296 -s rr"), "{theirs}");
        let saved = lvsctl_ok(&["save", "-n"]);
        assert_eq!(saved, theirs, "lvsctl save must print marks as ipvsadm does");
        ipvsadm(&["-C"]);
        let o = restore(&[], &saved);
        assert!(o.status.success(), "restore of a saved table failed: {}", text(&o.stderr));
        assert_eq!(ipvsadm(&["-Sn"]), theirs, "the restored table differs from the saved one");
        // The same marks as written by hand, negative.
        ipvsadm(&["-C"]);
        lvsctl_ok(&["service", "add", "-f", "-1294967296", "-s", "rr"]);
        assert!(ipvsadm(&["-Sn"]).contains("-A -f -1294967296 -s rr"));

        let table = ipvsadm(&["-Sn"]);
        lvsctl_fails(
            &["service", "add", "-t", "10.0.0.3:80", "-p", "4294968"],
            2,
            "illegal timeout for persistent service",
        );
        let o = restore(&[], "-A -t 10.0.0.4:80 -s rr\n-A -t 10.0.0.5:80 -p 2678401\n");
        assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
        assert!(text(&o.stderr).contains("line 2"), "{}", text(&o.stderr));
        lvsctl_ok(&["service", "add", "-t", "10.0.0.3:80", "-p", "2678400"]);
        assert!(ipvsadm(&["-Sn"]).contains("-A -t 10.0.0.3:80 -s wlc -p 2678400"));
        lvsctl_ok(&["service", "del", "-t", "10.0.0.3:80"]);
        assert_eq!(ipvsadm(&["-Sn"]), table, "a refused persistence changed the table");
    });
}
