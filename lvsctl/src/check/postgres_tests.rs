//! The `postgres` check against a fake server: a tokio task that reads the
//! client's messages and answers with the few backend messages each case needs.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::*;

/// A backend message: tag, length, body.
fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![tag];
    m.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
    m.extend_from_slice(body);
    m
}

/// An authentication request with its code and extra bytes.
fn auth(code: u32, extra: &[u8]) -> Vec<u8> {
    let mut b = code.to_be_bytes().to_vec();
    b.extend_from_slice(extra);
    msg(b'R', &b)
}

/// An ErrorResponse with these fields.
fn error(fields: &[(u8, &str)]) -> Vec<u8> {
    let mut b = Vec::new();
    for (k, v) in fields {
        b.push(*k);
        b.extend_from_slice(v.as_bytes());
        b.push(0);
    }
    b.push(0);
    msg(b'E', &b)
}

fn ready() -> Vec<u8> {
    msg(b'Z', b"I")
}

/// Read the StartupMessage (no tag: length then body).
async fn read_startup(s: &mut TcpStream) -> Vec<u8> {
    let len = s.read_u32().await.unwrap() as usize;
    let mut body = vec![0; len - 4];
    s.read_exact(&mut body).await.unwrap();
    body
}

/// Read one tagged frontend message: (tag, body).
async fn read_msg(s: &mut TcpStream) -> (u8, Vec<u8>) {
    let tag = s.read_u8().await.unwrap();
    let len = s.read_u32().await.unwrap() as usize;
    let mut body = vec![0; len - 4];
    s.read_exact(&mut body).await.unwrap();
    (tag, body)
}

/// A fake server that reads the StartupMessage, sends `answer` and ends its
/// side, and reads
/// what the client sends after it until the client closes; it hands back
/// the StartupMessage's body and those bytes.
async fn answering(answer: Vec<u8>) -> (SocketAddr, tokio::task::JoinHandle<(Vec<u8>, Vec<u8>)>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        let startup = read_startup(&mut s).await;
        s.write_all(&answer).await.unwrap();
        // Nothing more from the server: the client sees the end after the answer.
        s.shutdown().await.unwrap();
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest).await;
        (startup, rest)
    });
    (addr, task)
}

fn probe_check(port: u16) -> PostgresCheck {
    PostgresCheck { port, user: "postgres".into(), database: "postgres".into(), login: None }
}

async fn probe(answer: Vec<u8>) -> Result<(), String> {
    probe_and_after(answer).await.0
}

/// The probe's verdict, and what it sent after the server's answer.
async fn probe_and_after(answer: Vec<u8>) -> (Result<(), String>, Vec<u8>) {
    let (addr, task) = answering(answer).await;
    let s = TcpStream::connect(addr).await.unwrap();
    let r = probe_check(addr.port()).exchange(s, addr).await;
    (r, task.await.unwrap().1)
}

/// As PQping: a server asking for a password gets nothing more (it logs
/// nothing for a client that leaves then, but complains about a Terminate);
/// a session opened at once (trust) is read to ReadyForQuery and ended with
/// Terminate.
#[tokio::test]
async fn the_probe_leaves_as_pg_isready_does() {
    let (r, after) = probe_and_after(auth(10, b"SCRAM-SHA-256\0\0")).await;
    r.unwrap();
    assert_eq!(after, b"", "nothing after an authentication request");
    let session = [auth(0, b""), msg(b'S', b"a\0b\0"), msg(b'K', &[0, 0, 0, 1, 0, 0, 0, 2]), ready()].concat();
    let (r, after) = probe_and_after(session).await;
    r.unwrap();
    assert_eq!(after, msg(b'X', b""), "Terminate after ReadyForQuery");
    // Authenticated, then refused (no such database): still accepting, as PQping.
    let (r, after) = probe_and_after([auth(0, b""), error(&[(b'C', "3D000"), (b'M', "no db")])].concat()).await;
    r.unwrap();
    assert_eq!(after, b"");
}

#[tokio::test]
async fn the_startup_message_names_protocol_3_user_and_database() {
    let (addr, task) = answering(auth(5, b"salt")).await;
    let s = TcpStream::connect(addr).await.unwrap();
    let c = PostgresCheck { database: "lightdb".into(), ..probe_check(addr.port()) };
    c.exchange(s, addr).await.unwrap();
    let body = task.await.unwrap().0;
    assert_eq!(&body[..4], &0x0003_0000u32.to_be_bytes(), "protocol 3.0");
    assert_eq!(&body[4..], b"user\0postgres\0database\0lightdb\0\0");
}

/// Accepting connections, as `pg_isready` exit status 0: any authentication
/// request, a session at once (trust), or an error other than 57P03.
#[tokio::test]
async fn accepting_answers_are_up() {
    let ok_then_ready = [auth(0, b""), msg(b'S', b"server_version\x0015\0"), ready()].concat();
    let answers = [
        auth(3, b""),
        auth(5, b"salt"),
        auth(10, b"SCRAM-SHA-256\0\0"),
        ok_then_ready,
        error(&[(b'S', "FATAL"), (b'C', "28P01"), (b'M', "password authentication failed for user \"postgres\"")]),
        error(&[(b'S', "FATAL"), (b'C', "3D000"), (b'M', "database \"x\" does not exist")]),
        error(&[(b'S', "FATAL"), (b'C', "53300"), (b'M', "sorry, too many clients already")]),
    ];
    for a in answers {
        probe(a.clone()).await.unwrap_or_else(|e| panic!("{a:?}: {e}"));
    }
}

/// Rejecting connections (pg_isready 1) and no valid response (2) are down.
#[tokio::test]
async fn rejecting_and_silent_answers_are_down() {
    let starting = error(&[(b'S', "FATAL"), (b'C', "57P03"), (b'M', "the database system is starting up")]);
    let e = probe(starting).await.unwrap_err();
    assert!(e.ends_with(": not accepting connections: the database system is starting up (57P03)"), "{e}");
    let no_state = error(&[(b'M', "could not fork new process for connection")]);
    let e = probe(no_state).await.unwrap_err();
    assert!(e.ends_with("error without a SQLSTATE: could not fork new process for connection"), "{e}");
    let e = probe(Vec::new()).await.unwrap_err();
    assert!(e.ends_with("the server closed the connection without an answer"), "{e}");
    let e = probe(b"HTTP/1.0 400 Bad Request\r\n\r\n".to_vec()).await.unwrap_err();
    assert!(e.contains("not the PostgreSQL protocol"), "{e}");
    let e = probe(msg(b'C', b"SELECT 1\0")).await.unwrap_err();
    assert!(e.ends_with("unexpected first answer to the startup message"), "{e}");
}

/// Through the whole check: nothing listening is down, a server that never
/// answers times out.
#[tokio::test]
async fn refused_and_timed_out_are_down() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let check = super::super::Check {
        probe: super::super::Probe::Postgres(probe_check(addr.port())),
        interval: super::super::DEFAULT_INTERVAL,
        timeout: Duration::from_millis(300),
        rise: 1,
        fall: 1,
    };
    let t = super::super::Target { addr, service: "tcp 10.0.0.1:5432".into() };
    let e = check.run(&t).await.unwrap_err();
    assert_eq!(e, "postgres check timed out after 300ms");
    drop(l);
    let e = check.run(&t).await.unwrap_err();
    assert!(e.starts_with(&format!("postgres connect to {addr}: ")), "{e}");
}

fn login_check(port: u16, query: Option<&str>) -> PostgresCheck {
    let login = Some(Login { password_file: None, query: query.map(str::to_owned) });
    PostgresCheck { login, ..probe_check(port) }
}

/// A fake server for the login path: `script` runs on the accepted
/// connection after the StartupMessage was read.
async fn login_with<F, Fut>(
    check: impl FnOnce(u16) -> PostgresCheck,
    password: Option<&str>,
    script: F,
) -> Result<(), String>
where
    F: FnOnce(TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        read_startup(&mut s).await;
        script(s).await;
    });
    let s = TcpStream::connect(addr).await.unwrap();
    let r = check(addr.port()).talk(s, addr, password).await;
    task.await.unwrap();
    r
}

/// The session's start after authentication, then ReadyForQuery.
fn session_start() -> Vec<u8> {
    [auth(0, b""), msg(b'S', b"server_version\x0015\0"), msg(b'K', &[0, 0, 0, 1, 0, 0, 0, 2]), ready()].concat()
}

#[tokio::test]
async fn login_with_a_cleartext_password_and_a_query() {
    let r = login_with(
        |p| login_check(p, Some("SELECT 1")),
        Some("s3cret"),
        |mut s| async move {
            s.write_all(&auth(3, b"")).await.unwrap();
            assert_eq!(read_msg(&mut s).await, (b'p', b"s3cret\0".to_vec()));
            s.write_all(&session_start()).await.unwrap();
            assert_eq!(read_msg(&mut s).await, (b'Q', b"SELECT 1\0".to_vec()));
            let row = [msg(b'T', &[0, 0]), msg(b'D', &[0, 1, 0, 0, 0, 1, b'1']), msg(b'C', b"SELECT 1\0"), ready()];
            s.write_all(&row.concat()).await.unwrap();
            assert_eq!(read_msg(&mut s).await.0, b'X', "the check says goodbye");
        },
    )
    .await;
    r.unwrap();
}

#[tokio::test]
async fn login_with_md5() {
    let r = login_with(
        |p| login_check(p, None),
        Some("pw"),
        |mut s| async move {
            s.write_all(&auth(5, b"abcd")).await.unwrap();
            let want = format!("{}\0", md5_hash(b"postgres", b"pw", *b"abcd"));
            assert_eq!(read_msg(&mut s).await, (b'p', want.into_bytes()));
            s.write_all(&session_start()).await.unwrap();
        },
    )
    .await;
    r.unwrap();
}

/// A login refused, a query that fails, a password asked for but not
/// configured, SCRAM ended without the server's proof: all down.
#[tokio::test]
async fn login_failures_are_down() {
    let e = login_with(
        |p| login_check(p, None),
        Some("bad"),
        |mut s| async move {
            s.write_all(&auth(3, b"")).await.unwrap();
            read_msg(&mut s).await;
            let fail = error(&[(b'C', "28P01"), (b'M', "password authentication failed for user \"postgres\"")]);
            s.write_all(&fail).await.unwrap();
        },
    )
    .await
    .unwrap_err();
    assert!(e.ends_with("login refused: password authentication failed for user \"postgres\" (28P01)"), "{e}");

    let e = login_with(
        |p| login_check(p, Some("SELECT nope")),
        None,
        |mut s| async move {
            s.write_all(&session_start()).await.unwrap();
            read_msg(&mut s).await;
            let fail = error(&[(b'C', "42703"), (b'M', "column \"nope\" does not exist")]);
            s.write_all(&[fail, ready()].concat()).await.unwrap();
        },
    )
    .await
    .unwrap_err();
    assert!(e.ends_with("query \"SELECT nope\" failed: column \"nope\" does not exist (42703)"), "{e}");

    let e = login_with(
        |p| login_check(p, None),
        None,
        |mut s| async move {
            s.write_all(&auth(5, b"abcd")).await.unwrap();
        },
    )
    .await
    .unwrap_err();
    assert!(e.ends_with("the server asks for a password: set `password_file`"), "{e}");

    let e = login_with(
        |p| login_check(p, None),
        Some("pw"),
        |mut s| async move {
            s.write_all(&auth(10, b"SCRAM-SHA-256\0\0")).await.unwrap();
            assert_eq!(read_msg(&mut s).await.0, b'p', "the SASL initial response");
            s.write_all(&session_start()).await.unwrap();
        },
    )
    .await
    .unwrap_err();
    assert!(e.ends_with("the server ended SCRAM authentication without proving itself"), "{e}");
}

fn parse(s: &str) -> Result<CheckConfig, String> {
    #[derive(serde::Deserialize)]
    struct W {
        #[allow(dead_code)]
        check: CheckConfig,
    }
    toml::from_str::<W>(s).map(|w| w.check).map_err(|e| e.to_string())
}

#[test]
fn config_defaults_and_refusals() {
    let c = parse("check = { type = \"postgres\" }").unwrap().resolve(15858, &"x").unwrap();
    assert_eq!(c.probe, super::super::Probe::Postgres(probe_check(15858)));
    let c =
        parse("check = { type = \"postgres\", user = \"lightdb\", port = 5432, login = true, query = \"SELECT 1\" }")
            .unwrap()
            .resolve(15858, &"x")
            .unwrap();
    let want = PostgresCheck {
        port: 5432,
        user: "lightdb".into(),
        database: "lightdb".into(),
        login: Some(Login { password_file: None, query: Some("SELECT 1".into()) }),
    };
    assert_eq!(c.probe, super::super::Probe::Postgres(want));
    let e = parse("check = { type = \"postgres\", query = \"SELECT 1\" }").unwrap().resolve(1, &"x").unwrap_err();
    assert_eq!(e, "x: postgres check field `query` needs `login = true`");
    let e = parse("check = { type = \"tcp\", database = \"db\" }").unwrap().resolve(1, &"x").unwrap_err();
    assert_eq!(e, "x: check field `database` is for postgres checks, not tcp");
    let e = parse("check = { type = \"postgres\", path = \"/\" }").unwrap().resolve(1, &"x").unwrap_err();
    assert_eq!(e, "x: check field `path` is for http and https checks, not postgres");
    let e = parse("check = {\n type = \"postgres\", database = \"\" }").unwrap_err();
    assert!(e.contains("line 2") && e.contains("must be a non-empty text"), "{e}");
    let e = parse("check = { type = \"postgres\", login = true, password_file = \"pw\" }").unwrap_err();
    assert!(e.contains("pw must be an absolute path"), "{e}");
}

/// The password file must be root's and readable by root only.
#[test]
fn the_password_file_is_root_only() {
    use std::os::unix::fs::PermissionsExt;
    let f = std::env::temp_dir().join(format!("lvsctl-pg-pw-{}", std::process::id()));
    std::fs::write(&f, "s3cret\n").unwrap();
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o640)).unwrap();
    let toml =
        format!("check = {{ type = \"postgres\", login = true, password_file = {:?} }}", f.display().to_string());
    let e = parse(&toml).unwrap().resolve(5432, &"x").unwrap_err();
    assert!(e.starts_with(&format!("x: refusing password file {}", f.display())), "{e}");
    // SAFETY: geteuid has no preconditions.
    #[allow(unsafe_code)]
    let root = unsafe { libc::geteuid() } == 0;
    if root {
        assert!(e.contains("readable by its group (mode 0640)"), "{e}");
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read_password(&f).unwrap(), "s3cret");
        parse(&toml).unwrap().resolve(5432, &"x").unwrap();
    }
    std::fs::remove_file(&f).unwrap();
}

/// A malformed postgres value in a config file is named with its file, line and column.
#[test]
fn config_file_errors_have_line_and_column() {
    let text = "[director]\niface = \"e\"\n[[director.service]]\nvip = \"10.0.0.1\"\nport = 5432\nreal = [\"10.0.0.2\"]\ncheck = { type = \"postgres\", database = \"\" }\n";
    let e = crate::config::Config::parse(text, "lvsctl.toml").unwrap_err().to_string();
    assert!(e.starts_with("lvsctl.toml:7:"), "{e}");
    assert!(e.contains("\"\" must be a non-empty text without NUL bytes"), "{e}");
}

/// Run a PostgreSQL program of this host as `uid`/`gid` (initdb and postgres
/// refuse to run as root); panics with its output when it fails.
fn host_pg(bin: &std::path::Path, program: &str, args: &[&str], ids: (u32, u32)) {
    use std::os::unix::process::CommandExt;
    let mut cmd = std::process::Command::new(bin.join(program));
    cmd.args(args).env("TZ", "UTC").current_dir("/");
    let (uid, gid) = ids;
    // SAFETY: setgroups, setgid and setuid are async-signal-safe; nothing allocates here.
    #[allow(unsafe_code)]
    unsafe {
        cmd.pre_exec(move || {
            if libc::getuid() == 0
                && (libc::setgroups(0, std::ptr::null()) != 0 || libc::setgid(gid) != 0 || libc::setuid(uid) != 0)
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The probe and the SCRAM login against Debian's PostgreSQL 15 when this
/// host has it (`scripts/test` installs it for the test VM); skipped, saying
/// so, when it does not. The privileged tests run it in the VM either way.
#[tokio::test]
async fn a_real_postgresql_on_this_host() {
    let bin = std::path::Path::new("/usr/lib/postgresql/15/bin");
    if !bin.join("postgres").is_file() {
        eprintln!("SKIPPED a_real_postgresql_on_this_host: no {}/postgres", bin.display());
        return;
    }
    // SAFETY: getuid and getgid have no preconditions.
    #[allow(unsafe_code)]
    let ids = match unsafe { libc::getuid() } {
        0 => crate::check::security::lookup_user("postgres").expect("the postgres user of the postgresql package"),
        uid => (uid, unsafe { libc::getgid() }),
    };
    let dir = std::env::temp_dir().join(format!("lvsctl-pg-host-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::os::unix::fs::chown(&dir, Some(ids.0), Some(ids.1)).unwrap();
    std::fs::write(dir.join("pw"), "s3cret\n").unwrap();
    let (data, pw) = (dir.join("data").display().to_string(), format!("--pwfile={}", dir.join("pw").display()));
    host_pg(
        bin,
        "initdb",
        &["-D", &data, "-U", "postgres", &pw, "-A", "scram-sha-256", "--no-locale", "--no-sync"],
        ids,
    );
    let port = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap().port();
    let opts = format!("-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories='{}'", dir.display());
    let log = dir.join("log").display().to_string();
    host_pg(bin, "pg_ctl", &["-D", &data, "-l", &log, "-w", "-o", &opts, "start"], ids);
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let run = |c: PostgresCheck, pw: Option<&'static str>| async move {
        let s = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        c.talk(s, addr, pw).await
    };
    let probe = run(probe_check(port), None).await;
    let good = run(login_check(port, Some("SELECT 1")), Some("s3cret")).await;
    let bad = run(login_check(port, None), Some("wrong")).await;
    host_pg(bin, "pg_ctl", &["-D", &data, "-m", "immediate", "-w", "stop"], ids);
    let stopped = run(probe_check(port), None).await;
    // Every backend has ended (pg_ctl waited for them): the log is complete.
    let server_log = std::fs::read_to_string(&log).unwrap_or_default();
    std::fs::remove_dir_all(&dir).unwrap();
    probe.unwrap();
    assert!(server_log.contains("password authentication failed"), "{server_log}");
    assert!(!server_log.contains("expected SASL response"), "the probe must leave silently:\n{server_log}");
    good.unwrap();
    assert!(bad.unwrap_err().contains("(28P01)"));
    assert!(stopped.is_err());
}
