//! Privileged tests of the `postgres` health check against Debian's real
//! PostgreSQL server (in the test VM: `scripts/vm-run --postgres`), run as
//! the `postgres` user in a real server's namespace of the LVS-DR test
//! network (tests/support/daemon_net.rs), behind `lvsctl director run`.
//!
//! The server's states the check must tell apart, as `pg_isready` does:
//! running (weight as configured), a standby without hot standby and a smart
//! shutdown with a session open (both answer SQLSTATE 57P03: weight 0 while a
//! plain tcp check of the same port still says up), stopped (weight 0), and
//! started again. The login path logs in with SCRAM-SHA-256 and runs a query.
//!
//! `initdb` takes half a minute under emulation: it runs once per test
//! binary into a template that every test copies.

#[allow(dead_code)]
#[path = "support/daemon_net.rs"]
mod net;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Duration;

use lvsctl_tests::topology::Netns;
use lvsctl_tests::unique;
use net::{Daemon, Net, TestDir, REALS, VIP};

/// How long any awaited change may take (software emulation is slow).
const T: Duration = Duration::from_secs(120);
/// The port of the service checked with `postgres`: the database's port.
const PG_PORT: u16 = net::PORT;
/// A second service on the same real server, checked with `tcp` on the database's port.
const TCP_PORT: u16 = 15859;
/// The superuser's password (set by initdb, stored as a SCRAM-SHA-256 secret).
const PASSWORD: &str = "lvsctl-pg-secret";

/// Where Debian's PostgreSQL 15 programs are (or `$LVSCTL_PG_BIN`).
fn pg_bin(name: &str) -> PathBuf {
    let dir =
        std::env::var_os("LVSCTL_PG_BIN").map_or_else(|| PathBuf::from("/usr/lib/postgresql/15/bin"), PathBuf::from);
    let p = dir.join(name);
    assert!(
        p.is_file(),
        "PRIVILEGED TEST COULD NOT RUN: no PostgreSQL program {} (install postgresql-15; in the VM scripts/privileged-tests loads it with vm-run --postgres)",
        p.display()
    );
    p
}

/// The uid and gid of the `postgres` user.
fn postgres_user() -> (u32, u32) {
    let name = std::ffi::CString::new("postgres").unwrap();
    // SAFETY: getpwnam returns null or a pointer to static passwd data, read at once.
    #[allow(unsafe_code)]
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    assert!(!pw.is_null(), "PRIVILEGED TEST COULD NOT RUN: no user postgres in the passwd database");
    // SAFETY: pw is not null (checked above).
    #[allow(unsafe_code)]
    unsafe {
        ((*pw).pw_uid, (*pw).pw_gid)
    }
}

/// Run a PostgreSQL program as the postgres user (in the calling thread's
/// network namespace), with TZ=UTC; returns its output whatever its status.
fn as_postgres(program: &str, args: &[&str]) -> Output {
    let (uid, gid) = postgres_user();
    let mut cmd = Command::new(pg_bin(program));
    cmd.args(args).env("TZ", "UTC").current_dir("/");
    // SAFETY: setgroups, setgid and setuid are async-signal-safe; no allocation here.
    #[allow(unsafe_code)]
    unsafe {
        cmd.pre_exec(move || {
            if libc::setgroups(0, std::ptr::null()) != 0 || libc::setgid(gid) != 0 || libc::setuid(uid) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.output().unwrap_or_else(|e| panic!("cannot run {program}: {e}"))
}

fn must_postgres(program: &str, args: &[&str]) {
    let out = as_postgres(program, args);
    assert!(
        out.status.success(),
        "{program} {args:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The template cluster: initdb once per test binary, superuser `postgres`
/// with [`PASSWORD`].
fn template() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let (uid, gid) = postgres_user();
        let dir = std::env::temp_dir().join(unique("lvsctl-pg-template-"));
        std::fs::create_dir_all(&dir).unwrap();
        std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).unwrap();
        let pw = dir.join("pw");
        std::fs::write(&pw, format!("{PASSWORD}\n")).unwrap();
        std::os::unix::fs::chown(&pw, Some(uid), Some(gid)).unwrap();
        let data = dir.join("data");
        let (data_s, pw_s) = (data.display().to_string(), format!("--pwfile={}", pw.display()));
        must_postgres(
            "initdb",
            &["-D", &data_s, "-U", "postgres", &pw_s, "-A", "trust", "--no-locale", "-E", "UTF8", "--no-sync"],
        );
        data
    })
}

/// A PostgreSQL cluster of one test, copied from the template, run by
/// `pg_ctl` as the postgres user in a real server's namespace. Stopped and
/// removed on drop.
struct Cluster {
    ns_path: PathBuf,
    dir: PathBuf,
}

impl Cluster {
    /// A copy of the template whose pg_hba.conf lets remote hosts in with `auth`.
    fn new(ns: &Netns, auth: &str) -> Self {
        let dir = std::env::temp_dir().join(unique("lvsctl-pg-"));
        let out = Command::new("cp").arg("-a").arg(template()).arg(&dir).output().unwrap();
        assert!(out.status.success(), "cp -a the template: {}", String::from_utf8_lossy(&out.stderr));
        let hba = dir.join("pg_hba.conf");
        let mut text = std::fs::read_to_string(&hba).unwrap();
        text.push_str(&format!("host all all 0.0.0.0/0 {auth}\n"));
        std::fs::write(&hba, text).unwrap();
        Self { ns_path: ns.path(), dir }
    }

    fn pg_ctl(&self, args: &[&str]) -> Output {
        let mut a = vec!["-D".to_owned(), self.dir.display().to_string()];
        a.extend(args.iter().map(|s| (*s).to_owned()));
        let path = self.ns_path.clone();
        std::thread::spawn(move || {
            lvsctl_tests::topology::enter(&path);
            let a: Vec<&str> = a.iter().map(String::as_str).collect();
            as_postgres("pg_ctl", &a)
        })
        .join()
        .unwrap()
    }

    fn must_pg_ctl(&self, args: &[&str]) {
        let out = self.pg_ctl(args);
        assert!(
            out.status.success(),
            "pg_ctl {args:?} failed ({}):\n{}{}\nserver log:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
    }

    /// Start the server on 0.0.0.0:PG_PORT; `hot_standby` only matters for a standby.
    fn start(&self, hot_standby: bool, wait: bool) {
        let opts = format!(
            "-c listen_addresses='*' -c port={PG_PORT} -c unix_socket_directories='{}' -c shared_buffers=16MB -c hot_standby={}",
            self.dir.display(),
            if hot_standby { "on" } else { "off" }
        );
        let log = self.dir.join("log").display().to_string();
        let w = if wait { "-w" } else { "-W" };
        self.must_pg_ctl(&["-l", &log, w, "-t", "300", "-o", &opts, "start"]);
    }

    /// Make it a standby (`standby.signal`, no primary): it stays in recovery.
    fn set_standby(&self, on: bool) {
        let f = self.dir.join("standby.signal");
        if on {
            std::fs::write(&f, "").unwrap();
            let (uid, gid) = postgres_user();
            std::os::unix::fs::chown(&f, Some(uid), Some(gid)).unwrap();
        } else {
            std::fs::remove_file(&f).unwrap();
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.pg_ctl(&["-m", "immediate", "-w", "stop"]);
        if std::thread::panicking() {
            eprintln!("---- PostgreSQL log ----\n{}", self.log());
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A logged-in session (trust): the startup message, then every message up
/// to ReadyForQuery. The connection stays open while the value lives.
fn open_session(ns: &Netns, addr: SocketAddr) -> TcpStream {
    ns.run(move || {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(10)).expect("connect for a session");
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        s.write_all(&startup_message()).unwrap();
        loop {
            let (tag, body) = read_message(&mut s);
            assert_ne!(tag, b'E', "the session was refused: {}", String::from_utf8_lossy(&body));
            if tag == b'Z' {
                return s;
            }
        }
    })
}

/// StartupMessage, protocol 3.0, user and database `postgres`.
fn startup_message() -> Vec<u8> {
    let body = b"\x00\x03\x00\x00user\0postgres\0database\0postgres\0\0";
    let mut m = ((body.len() + 4) as u32).to_be_bytes().to_vec();
    m.extend_from_slice(body);
    m
}

fn read_message(s: &mut TcpStream) -> (u8, Vec<u8>) {
    let mut head = [0u8; 5];
    s.read_exact(&mut head).expect("read a message header");
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    let mut body = vec![0; len - 4];
    s.read_exact(&mut body).expect("read a message body");
    (head[0], body)
}

/// From the client, through the VIP: the first answer to a StartupMessage
/// (`R` authentication, `E` error), proving the data path to the database.
fn first_answer_via_vip(net: &Net) -> u8 {
    net.client.run(|| {
        let a: SocketAddr = format!("{VIP}:{PG_PORT}").parse().unwrap();
        let mut s = TcpStream::connect_timeout(&a, Duration::from_secs(10)).expect("connect to the VIP");
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        s.write_all(&startup_message()).unwrap();
        read_message(&mut s).0
    })
}

/// Two services on the VIP with real server rs1: PG_PORT checked with
/// `pg_check` at weight 5, TCP_PORT checked with a plain tcp check of the
/// database's port at weight 1.
fn config(pg_check: &str) -> String {
    let rs = REALS[0];
    format!(
        r#"[director]
iface = "eth0"

[[director.service]]
vip = "{VIP}"
port = {PG_PORT}
scheduler = "rr"
real = ["{rs},weight=5"]
check = {pg_check}

[[director.service]]
vip = "{VIP}"
port = {TCP_PORT}
scheduler = "rr"
real = ["{rs}"]
check = {{ type = "tcp", port = {PG_PORT}, interval = "200ms", timeout = "10s", rise = 1, fall = 1 }}
"#
    )
}

/// The kernel's weights of rs1 in the postgres-checked and the tcp-checked services.
fn weights(net: &Net) -> (Option<u32>, Option<u32>) {
    let key = |port: u16| ipvs::ServiceKey::tcp(format!("{VIP}:{port}").parse().unwrap());
    let (mut pg, mut tcp) = (None, None);
    for (s, dests) in net.table() {
        let w = dests.first().map(|d| d.destination.weight);
        if s.service.key == key(PG_PORT) {
            pg = w;
        } else if s.service.key == key(TCP_PORT) {
            tcp = w;
        }
    }
    (pg, tcp)
}

/// The last error the daemon reports for rs1 in the postgres-checked service.
fn pg_last_error(d: &Daemon) -> String {
    let rep = d.report().expect("health report");
    let want = format!("{}:{PG_PORT}", REALS[0]);
    let services = rep["services"].as_array().expect("services");
    let r = services
        .iter()
        .flat_map(|s| s["real_servers"].as_array().cloned().unwrap_or_default())
        .find(|r| r["addr"] == want.as_str())
        .unwrap_or_else(|| panic!("no {want} in the health report {rep}"));
    r["last_error"].as_str().unwrap_or_default().to_owned()
}

#[test]
#[ignore = "privileged: needs root, IPVS and PostgreSQL (scripts/privileged-tests)"]
fn postgres_check_follows_the_server_through_standby_smart_shutdown_stop_and_start() {
    let net = Net::new();
    let dir = TestDir::new();
    let pg = Cluster::new(&net.reals[0], "trust");
    pg.start(false, true);
    let check = r#"{ type = "postgres", interval = "200ms", timeout = "10s", rise = 1, fall = 1 }"#;
    let cfg = dir.write("lvsctl.toml", &config(check), 0o644);
    let d = Daemon::start(&net.director, &dir, &cfg, &[]);
    d.wait_for("running: postgres-checked weight 5, tcp-checked 1", T, || weights(&net) == (Some(5), Some(1)));
    assert_eq!(first_answer_via_vip(&net), b'R', "a client through the VIP gets the server's authentication request");

    // A standby without hot standby: in recovery for ever, answering 57P03.
    pg.must_pg_ctl(&["-m", "fast", "-w", "stop"]);
    pg.set_standby(true);
    pg.start(false, false);
    // The check's reason is the standby's own answer (not the refusals while it was down).
    let standby = "not accepting connections: the database system is not accepting connections (57P03): Hot standby mode is disabled.";
    d.wait_for("standby: postgres-checked 0 while tcp says up", T, || {
        weights(&net) == (Some(0), Some(1)) && pg_last_error(&d).ends_with(standby)
    });
    assert!(pg.log().contains("Hot standby mode is disabled"), "{}", pg.log());

    // Back to a primary.
    pg.must_pg_ctl(&["-m", "fast", "-w", "stop"]);
    pg.set_standby(false);
    pg.start(false, true);
    d.wait_for("a primary again: weight 5", T, || weights(&net) == (Some(5), Some(1)));

    // A smart shutdown waits for the open session and refuses new ones with 57P03.
    let session = open_session(&net.reals[0], format!("127.0.0.1:{PG_PORT}").parse().unwrap());
    pg.must_pg_ctl(&["-m", "smart", "-W", "stop"]);
    let shutting = "not accepting connections: the database system is shutting down (57P03)";
    d.wait_for("shutting down: postgres-checked 0 while tcp says up", T, || {
        weights(&net) == (Some(0), Some(1)) && pg_last_error(&d).ends_with(shutting)
    });

    // The session ends, the server stops: nothing listens, both checks fail.
    drop(session);
    d.wait_for("stopped: both 0, the postgres check refused", T, || {
        weights(&net) == (Some(0), Some(0)) && pg_last_error(&d).contains("postgres connect to")
    });

    pg.start(false, true);
    d.wait_for("started again: weight 5 and 1", T, || weights(&net) == (Some(5), Some(1)));
    assert_eq!(first_answer_via_vip(&net), b'R');
}

#[test]
#[ignore = "privileged: needs root, IPVS and PostgreSQL (scripts/privileged-tests)"]
fn postgres_check_logs_in_with_scram_and_runs_a_query() {
    let net = Net::new();
    let dir = TestDir::new();
    let pg = Cluster::new(&net.reals[0], "scram-sha-256");
    pg.start(false, true);
    // A wrong password first (the file is read at each check): the login fails.
    let pw = dir.write("pg.pw", "not-the-password\n", 0o600);
    let check = format!(
        r#"{{ type = "postgres", login = true, query = "SELECT 1", password_file = "{}", interval = "200ms", timeout = "30s", rise = 1, fall = 1 }}"#,
        pw.display()
    );
    let cfg = dir.write("lvsctl.toml", &config(&check), 0o644);
    let d = Daemon::start(&net.director, &dir, &cfg, &[]);
    let refused = "login refused: password authentication failed for user \"postgres\" (28P01)";
    d.wait_for("login refused: weight 0 while tcp says up", T, || {
        weights(&net) == (Some(0), Some(1)) && pg_last_error(&d).ends_with(refused)
    });

    // The right password: SCRAM login and the query succeed, the weight comes back.
    dir.write("pg.pw", &format!("{PASSWORD}\n"), 0o600);
    d.wait_for("logged in and queried: weight 5", T, || weights(&net) == (Some(5), Some(1)));
    assert!(pg.log().contains("password authentication failed"), "{}", pg.log());
}
