//! Test network for `director run` (tests/daemon.rs), on the topology
//! helpers of the director tests ([`lvsctl_tests::topology`]): LVS-DR hosts
//! like the coordinator pair's on one bridge, real servers set up by `lvsctl realserver
//! start`, servers that can be switched off and on (and HTTP health
//! endpoints), a client, and the daemon as a child process.
//!
//! ```text
//!   client 10.18.68.10          (route to the VIP via the director)
//!   director 10.18.68.185       (VIP 10.19.70.166 on eth0, by lvsctl director run)
//!   rs1 .186, rs2 .187, rs3 .188 (lvsctl realserver start: VIP on lo, ARP sysctls)
//! ```
//!
//! Every namespace is unique per test, so tests run in parallel; everything
//! is removed on drop.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use lvsctl_tests::topology::{enter, Lan, Netns};
use lvsctl_tests::{lvsctl_bin, unique};

/// The VIP of the coordinator pair's service.
pub const VIP: &str = "10.19.70.166";
/// The port of the coordinator pair's service.
pub const PORT: u16 = 15858;
/// The client's address.
pub const CLIENT: &str = "10.18.68.10";
/// The director's address.
pub const DIRECTOR: &str = "10.18.68.185";
/// The real servers' addresses.
pub const REALS: [&str; 3] = ["10.18.68.186", "10.18.68.187", "10.18.68.188"];

/// The test network.
pub struct Net {
    /// The client.
    pub client: Netns,
    /// The director.
    pub director: Netns,
    /// The three real servers.
    pub reals: [Netns; 3],
    _lan: Lan,
}

impl Net {
    /// Build it: the hosts on one bridge, the client's route to the VIP, and
    /// `lvsctl realserver start` on every real server. The director's VIP is
    /// left to `lvsctl director run`.
    pub fn new() -> Self {
        let lan = Lan::new();
        let client = lan.host("dc", "eth0", &format!("{CLIENT}/24"));
        let director = lan.host("dd", "eth0", &format!("{DIRECTOR}/24"));
        let reals = REALS.map(|a| lan.host("dr", "eth0", &format!("{a}/24")));
        client.ip(&["route", "add", &format!("{VIP}/32"), "via", DIRECTOR]);
        for r in &reals {
            r.lvsctl_ok(&["realserver", "start", "--vip", VIP, "--iface", "eth0"]);
        }
        Net { client, director, reals, _lan: lan }
    }

    /// Connect from the client to VIP:PORT and return what the server said
    /// (trimmed), or the error.
    pub fn ask(&self) -> Result<String, String> {
        self.client.run(|| {
            let a: SocketAddr = format!("{VIP}:{PORT}").parse().unwrap();
            let mut s = TcpStream::connect_timeout(&a, Duration::from_secs(3)).map_err(|e| e.to_string())?;
            s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).map_err(|e| e.to_string())?;
            Ok(out.trim().to_owned())
        })
    }

    /// `n` answers from the client, one connection each; errors are kept as `error: ...`.
    pub fn answers(&self, n: usize) -> Vec<String> {
        (0..n).map(|_| self.ask().unwrap_or_else(|e| format!("error: {e}"))).collect()
    }

    /// The IPVS table of the director.
    pub fn table(&self) -> ipvs::Table {
        let ns = self.director.name.clone();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            let h = match ipvs::Ipvs::connect_named_netns(&ns).await {
                Ok(h) => h,
                Err(e) => panic!("PRIVILEGED TEST COULD NOT RUN: cannot connect to IPVS in {ns}: {e}"),
            };
            h.dump().await.expect("dump")
        })
    }

    /// The weights of the service VIP:PORT by real server address (`None` if there is no such service).
    pub fn weights(&self) -> Option<Vec<(String, u32)>> {
        let key = ipvs::ServiceKey::tcp(format!("{VIP}:{PORT}").parse().unwrap());
        let t = self.table();
        let (_, dests) = t.into_iter().find(|(s, _)| s.service.key == key)?;
        let mut v: Vec<(String, u32)> =
            dests.iter().map(|d| (d.destination.addr.ip().to_string(), d.destination.weight)).collect();
        v.sort();
        Some(v)
    }

    /// The addresses on the director's eth0.
    pub fn director_addrs(&self) -> String {
        self.director.ip(&["-br", "addr", "show", "dev", "eth0"])
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        // Its state file lives in /run/lvsctl; the namespaces go with their drop.
        for r in &self.reals {
            let _ = r.lvsctl(&["realserver", "stop"]);
        }
    }
}

/// What a [`Server`] answers.
#[derive(Clone)]
enum Reply {
    /// This line.
    Text(String),
    /// An HTTP/1.0 response with the current status and body.
    Http { status: Arc<AtomicU16>, body: Arc<Mutex<String>> },
}

/// A TCP server on 0.0.0.0:port of a namespace that can be switched off
/// (its socket closed: connections are refused) and on again.
pub struct Server {
    up: Arc<AtomicBool>,
    listening: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    reply: Reply,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    /// A server that answers every connection with `text` and a newline.
    pub fn text(ns: &Netns, port: u16, text: &str) -> Self {
        Self::start(ns, port, Reply::Text(text.to_owned()))
    }

    /// An HTTP server answering any request with status 200 and `body`
    /// (see [`Server::set_http`]).
    pub fn http(ns: &Netns, port: u16, body: &str) -> Self {
        Self::start(
            ns,
            port,
            Reply::Http { status: Arc::new(AtomicU16::new(200)), body: Arc::new(Mutex::new(body.to_owned())) },
        )
    }

    fn start(ns: &Netns, port: u16, reply: Reply) -> Self {
        let up = Arc::new(AtomicBool::new(true));
        let listening = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let (u, l, s, r, path) = (up.clone(), listening.clone(), stop.clone(), reply.clone(), ns.path());
        let thread = std::thread::spawn(move || {
            enter(&path);
            let mut sock: Option<TcpListener> = None;
            while !s.load(Ordering::SeqCst) {
                if u.load(Ordering::SeqCst) {
                    if sock.is_none() {
                        let t = TcpListener::bind(("0.0.0.0", port))
                            .unwrap_or_else(|e| panic!("bind {port} in {}: {e}", path.display()));
                        t.set_nonblocking(true).unwrap();
                        sock = Some(t);
                    }
                } else {
                    sock = None;
                }
                l.store(sock.is_some(), Ordering::SeqCst);
                match sock.as_ref().map(|t| t.accept()) {
                    Some(Ok((c, _))) => serve(c, &r),
                    _ => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        let s = Self { up, listening, stop, reply, thread: Some(thread) };
        s.wait_listening(true);
        s
    }

    fn wait_listening(&self, want: bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.listening.load(Ordering::SeqCst) != want {
            assert!(Instant::now() < deadline, "server did not switch");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Switch the server on (listening) or off (socket closed); returns once done.
    pub fn set_up(&self, up: bool) {
        self.up.store(up, Ordering::SeqCst);
        self.wait_listening(up);
    }

    /// Set the status and body of an HTTP server.
    pub fn set_http(&self, status: u16, body: &str) {
        match &self.reply {
            Reply::Http { status: s, body: b } => {
                s.store(status, Ordering::SeqCst);
                *b.lock().unwrap() = body.to_owned();
            }
            Reply::Text(_) => panic!("set_http on a text server"),
        }
    }
}

fn serve(mut c: TcpStream, r: &Reply) {
    let _ = c.set_nonblocking(false);
    let _ = c.set_read_timeout(Some(Duration::from_secs(2)));
    match r {
        Reply::Text(t) => {
            let _ = c.write_all(format!("{t}\n").as_bytes());
        }
        Reply::Http { status, body } => {
            let mut req = Vec::new();
            let mut buf = [0u8; 512];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                match c.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => req.extend_from_slice(&buf[..n]),
                }
            }
            let st = status.load(Ordering::SeqCst);
            let b = body.lock().unwrap().clone();
            let _ = c.write_all(format!("HTTP/1.0 {st} X\r\nContent-Type: text/plain\r\n\r\n{b}").as_bytes());
        }
    }
    let _ = c.shutdown(std::net::Shutdown::Both);
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A folder for one test's files (config, state, scripts): root-owned,
/// mode 0755, under the temp dir. Removed on drop.
pub struct TestDir(pub PathBuf);

impl TestDir {
    /// A new folder.
    pub fn new() -> Self {
        use std::os::unix::fs::PermissionsExt;
        let p = std::env::temp_dir().join(unique("lvsctl-daemon-"));
        std::fs::create_dir_all(&p).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        Self(p)
    }

    /// Write a file with this mode; returns its path.
    pub fn write(&self, name: &str, text: &str, mode: u32) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let p = self.0.join(name);
        let tmp = self.0.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode)).unwrap();
        std::fs::rename(&tmp, &p).unwrap();
        p
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `lvsctl --netns NS director run --config FILE [ARGS]` as a child process,
/// its stderr in a log file. Killed on drop if still running.
pub struct Daemon {
    child: std::cell::RefCell<Child>,
    log: PathBuf,
    state_dir: PathBuf,
}

impl Daemon {
    /// Start it with `LVSCTL_STATE_DIR` in the test folder.
    pub fn start(ns: &Netns, dir: &TestDir, config: &Path, args: &[&str]) -> Self {
        Self::start_env(ns, dir, config, args, &[])
    }

    /// [`Daemon::start`] with more environment variables.
    pub fn start_env(ns: &Netns, dir: &TestDir, config: &Path, args: &[&str], env: &[(&str, &Path)]) -> Self {
        Self::spawn(ns, dir, config, args, env, None)
    }

    /// [`Daemon::start`] with this soft and hard limit of open files.
    pub fn start_limited(ns: &Netns, dir: &TestDir, config: &Path, nofile: u64) -> Self {
        Self::spawn(ns, dir, config, &[], &[], Some(nofile))
    }

    fn spawn(
        ns: &Netns,
        dir: &TestDir,
        config: &Path,
        args: &[&str],
        env: &[(&str, &Path)],
        nofile: Option<u64>,
    ) -> Self {
        let log = dir.0.join(unique("daemon-log-"));
        let state_dir = dir.0.join("state");
        let f = std::fs::File::create(&log).unwrap();
        let mut cmd = Command::new(lvsctl_bin());
        if let Some(n) = nofile {
            use std::os::unix::process::CommandExt;
            // SAFETY: setrlimit is async-signal-safe; nothing else runs in the child.
            #[allow(unsafe_code)]
            unsafe {
                cmd.pre_exec(move || {
                    let r = libc::rlimit { rlim_cur: n, rlim_max: n };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &r) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let child = cmd
            .args(["--netns", &ns.name, "director", "run", "--config"])
            .arg(config)
            .args(args)
            .env("LVSCTL_STATE_DIR", &state_dir)
            .env("LVSCTL_LOG", "info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(f)
            .spawn()
            .expect("spawn lvsctl director run");
        Self { child: std::cell::RefCell::new(child), log, state_dir }
    }

    /// `lvsctl --netns NS director status [--json]` with the daemon's state
    /// folder: exit status and stdout.
    pub fn status(&self, ns: &Netns, json: bool) -> (i32, String) {
        let mut c = Command::new(lvsctl_bin());
        c.args(["--netns", &ns.name, "director", "status"]).env("LVSCTL_STATE_DIR", &self.state_dir);
        if json {
            c.arg("--json");
        }
        let out = c.output().expect("run lvsctl director status");
        (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Its stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Send a signal.
    pub fn signal(&self, sig: libc::c_int) {
        // SAFETY: kill on our own child's pid.
        #[allow(unsafe_code)]
        let rc = unsafe { libc::kill(self.child.borrow().id() as libc::pid_t, sig) };
        assert_eq!(rc, 0, "kill: {}", std::io::Error::last_os_error());
    }

    /// Whether it still runs.
    pub fn running(&self) -> bool {
        self.child.borrow_mut().try_wait().unwrap().is_none()
    }

    /// Wait for it to exit (panics after `timeout`).
    pub fn wait(&self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.child.borrow_mut().try_wait().unwrap() {
                return s;
            }
            assert!(Instant::now() < deadline, "director run did not exit within {timeout:?}; log:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Poll `cond` every 50 ms until it holds; panics with `what` and the
    /// daemon's log after `timeout`. Returns the time it took.
    pub fn wait_for(&self, what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) -> Duration {
        let start = Instant::now();
        loop {
            if cond() {
                return start.elapsed();
            }
            if !self.running() {
                panic!("director run exited while waiting for {what}; log:\n{}", self.log());
            }
            assert!(start.elapsed() < timeout, "timed out after {timeout:?} waiting for {what}; log:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The health report it writes (the one `health-netns*.json` of its state folder).
    pub fn report(&self) -> Option<serde_json::Value> {
        let rd = std::fs::read_dir(&self.state_dir).ok()?;
        for e in rd.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if n.starts_with("health-netns") && n.ends_with(".json") {
                let text = std::fs::read_to_string(e.path()).ok()?;
                return serde_json::from_str(&text).ok();
            }
        }
        None
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let c = self.child.get_mut();
        if c.try_wait().ok().flatten().is_none() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            eprintln!("---- director run log ----\n{}", self.log());
        }
    }
}

/// Requests counted on an `nlmon` device (the benchmark's counter): every
/// generic netlink request any process of one namespace sends while the capture runs.
pub use lvs_bench::nlmon::NlCounts;

/// A capture of a namespace's generic netlink requests on a fresh `nlmon`
/// device (as `lvs-bench nlcount` does for the benchmark).
pub struct NlCapture(lvs_bench::nlmon::Capture);

impl NlCapture {
    /// Create `nlmon0` in `ns` and start counting.
    pub fn start(ns: &Netns) -> Self {
        ns.ip(&["link", "add", "nlmon0", "type", "nlmon"]);
        ns.ip(&["link", "set", "nlmon0", "up"]);
        // The packet socket is opened in the namespace; it stays there.
        Self(ns.run(|| lvs_bench::nlmon::Capture::start("nlmon0")).expect("nlmon capture"))
    }

    /// Stop (after the packets already queued are read) and give the counts.
    pub fn finish(self) -> NlCounts {
        self.0.finish().expect("nlmon capture")
    }
}

/// The weight of real server `real`:`PORT` of the service VIP:PORT as the
/// kernel's `/proc/net/ip_vs` of `ns` shows it (read without netlink, so
/// that it does not show up in a capture); `None` when it is not listed.
pub fn proc_weight(ns: &Netns, real: &str) -> Option<u32> {
    let hex = |a: &str, port: u16| {
        let ip: std::net::Ipv4Addr = a.parse().unwrap();
        format!("{:08X}:{port:04X}", u32::from(ip))
    };
    let (svc, want) = (hex(VIP, PORT), hex(real, PORT));
    let text = ns.run(|| std::fs::read_to_string("/proc/thread-self/net/ip_vs").unwrap_or_default());
    let mut in_service = false;
    for line in text.lines() {
        let cols: Vec<&str> = line.split_whitespace().collect();
        match cols.as_slice() {
            ["TCP", addr, ..] => in_service = *addr == svc,
            ["->", addr, _fwd, weight, ..] if in_service && *addr == want => return weight.parse().ok(),
            _ => {}
        }
    }
    None
}
