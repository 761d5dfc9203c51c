//! Long-lived TCP flows for the failover and scale-out tests: a line echo
//! server that names itself in every answer, and a client connection that
//! sends a numbered line every 200 ms and checks each echo (same server, same
//! number), recording when each echo arrived.
//!
//! The echo's name tells the client which real server it is on, so a flow
//! moved to another director is seen to reach the same real server (or not).

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::topology::{enter, Netns};

/// A line echo server on `0.0.0.0:port` of a namespace: answers each line
/// with `<name> <line>`, one thread per connection. Stops accepting on drop.
#[derive(Debug)]
pub struct LineEcho {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl LineEcho {
    /// Start it in `ns`; returns once it listens.
    pub fn start(ns: &Netns, port: u16, name: &str) -> Self {
        let (path, name) = (ns.path(), name.to_owned());
        let stop = Arc::new(AtomicBool::new(false));
        let st = stop.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            enter(&path);
            let l = TcpListener::bind(("0.0.0.0", port)).unwrap_or_else(|e| panic!("bind the echo server: {e}"));
            l.set_nonblocking(true).expect("nonblocking listener");
            tx.send(()).expect("echo server start");
            while !st.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((c, _)) => {
                        let name = name.clone();
                        std::thread::spawn(move || echo_lines(c, &name));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        rx.recv().expect("echo server thread");
        Self { stop, thread: Some(thread) }
    }
}

/// Answer every line of `c` with `<name> <line>` until it closes.
fn echo_lines(c: TcpStream, name: &str) {
    let _ = c.set_nonblocking(false);
    let Ok(mut w) = c.try_clone() else { return };
    for line in BufReader::new(c).lines() {
        let Ok(line) = line else { return };
        if w.write_all(format!("{name} {line}\n").as_bytes()).is_err() {
            return;
        }
    }
}

impl Drop for LineEcho {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One short connection from `ns` to `to`: send a line, return who echoed it.
pub fn ask_echo(ns: &Netns, to: SocketAddr) -> Result<String, String> {
    ns.run(move || {
        let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(3)).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_secs(5))).map_err(|e| e.to_string())?;
        s.write_all(b"hello\n").map_err(|e| e.to_string())?;
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line).map_err(|e| e.to_string())?;
        line.strip_suffix(" hello\n").map(str::to_owned).ok_or_else(|| format!("bad echo {line:?}"))
    })
}

/// What a long-lived connection saw.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The client's port (the flow's identity in the directors' tables).
    pub port: u16,
    /// Who echoed the first line.
    pub server: String,
    /// Lines sent.
    pub sent: u32,
    /// Lines echoed correctly, by the same server.
    pub echoed: u32,
    /// When each correct echo arrived.
    pub times: Vec<Instant>,
    /// What went wrong, if anything (the connection stopped there).
    pub error: Option<String>,
}

impl Outcome {
    /// Whether it survived: no error and every line echoed.
    pub fn survived(&self) -> bool {
        self.error.is_none() && self.echoed == self.sent
    }

    /// The longest time without an echo that ended after `t0` (the
    /// connection's outage around an event at `t0`).
    pub fn longest_gap_after(&self, t0: Instant) -> Option<Duration> {
        self.times.windows(2).filter(|w| w[1] > t0).map(|w| w[1] - w[0]).max()
    }

    /// When, counted from `t0`, the echo arrived that ended the longest
    /// silence after `t0`: the time from an event to this flow flowing again.
    pub fn resumed_after(&self, t0: Instant) -> Option<Duration> {
        let gap = |w: &&[Instant]| w[1] - w[0];
        self.times.windows(2).filter(|w| w[1] > t0).max_by_key(gap).map(|w| w[1] - t0)
    }

    /// How long after `t0` the first echo arrived (`None` if none did).
    pub fn first_echo_after(&self, t0: Instant) -> Option<Duration> {
        self.times.iter().find(|t| **t > t0).map(|t| *t - t0)
    }
}

/// A long-lived connection: a numbered line every 200 ms, every echo
/// checked, until [`Long::finish`] (or the first error).
pub struct Long {
    /// The client's port.
    pub port: u16,
    /// Who echoed the first line.
    pub server: String,
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Outcome>>,
    thread: JoinHandle<()>,
}

impl Long {
    /// Open it from `ns` to `to`; returns after the first echo (panics if
    /// the connection cannot start).
    pub fn open(ns: &Netns, to: SocketAddr) -> Self {
        let path = ns.path();
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Outcome {
            port: 0,
            server: String::new(),
            sent: 0,
            echoed: 0,
            times: Vec::new(),
            error: None,
        }));
        let (st, sn) = (stop.clone(), seen.clone());
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            enter(&path);
            match TcpStream::connect_timeout(&to, Duration::from_secs(5)) {
                Ok(s) => talk(s, &st, &sn, tx),
                Err(e) => {
                    sn.lock().unwrap().error = Some(format!("connect: {e}"));
                    let _ = tx.send(());
                }
            }
        });
        rx.recv().expect("long-lived connection thread");
        let o = seen.lock().unwrap().clone();
        assert!(o.error.is_none(), "a long-lived connection could not start: {o:?}");
        Self { port: o.port, server: o.server, stop, seen, thread }
    }

    /// What it has seen so far.
    pub fn now(&self) -> Outcome {
        self.seen.lock().unwrap().clone()
    }

    /// Stop sending and return what it saw.
    pub fn finish(self) -> Outcome {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
        let o = self.seen.lock().unwrap().clone();
        o
    }
}

/// The loop of a long-lived connection; signals `started` after the first echo.
fn talk(s: TcpStream, stop: &AtomicBool, seen: &Mutex<Outcome>, started: std::sync::mpsc::Sender<()>) {
    seen.lock().unwrap().port = s.local_addr().map(|a| a.port()).unwrap_or(0);
    let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
    let Ok(mut w) = s.try_clone() else { return };
    let mut r = BufReader::new(s);
    let mut n: u32 = 0;
    loop {
        let mut line = String::new();
        let res = w.write_all(format!("{n}\n").as_bytes()).and_then(|()| r.read_line(&mut line));
        let error = check_echo(res, &line, n, &mut seen.lock().unwrap());
        if n == 0 {
            let _ = started.send(());
        }
        if error || stop.load(Ordering::Relaxed) {
            return;
        }
        n += 1;
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Record the echo of line `n` in `o`; returns whether it was wrong.
fn check_echo(res: std::io::Result<usize>, line: &str, n: u32, o: &mut Outcome) -> bool {
    o.sent += 1;
    let err = match res {
        Ok(0) => Some(format!("line {n}: connection closed")),
        Err(e) => Some(format!("line {n}: {e}")),
        Ok(_) => match line.trim_end().rsplit_once(' ') {
            Some((name, got)) if got == n.to_string() && (n == 0 || name == o.server) => {
                o.server = name.to_owned();
                o.echoed += 1;
                o.times.push(Instant::now());
                None
            }
            _ => Some(format!("line {n}: bad echo {line:?} (server {})", o.server)),
        },
    };
    let wrong = err.is_some();
    o.error = err;
    wrong
}
