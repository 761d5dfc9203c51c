//! A supervised child daemon: start it, restart it with backoff when it
//! exits, stop it with SIGTERM (SIGKILL after a grace period). Used for
//! keepalived ([`crate::ha`]) and BIRD ([`crate::bgp`]); what differs
//! between them (the command line, what an exit means) stays with them.

use std::path::Path;
use std::time::{Duration, Instant};

use tokio::process::Child;
use tokio::sync::oneshot;
use tracing::{info, warn};

/// The first wait before a restart; it doubles up to [`MAX_BACKOFF`] and
/// starts over once the child ran for [`STABLE`].
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
const STABLE: Duration = Duration::from_secs(60);
/// How long a child may take to stop after SIGTERM.
const GRACE: Duration = Duration::from_secs(10);

/// What happened to the child, for its owner.
#[derive(Debug)]
pub(crate) enum ChildEvent {
    /// Started, with its pid.
    Started(u32),
    /// Could not be started; retried after the delay.
    SpawnFailed(String, Duration),
    /// Exited (how); restarted after the delay.
    Exited(String, Duration),
}

/// A supervised child: dropping it stops the child too.
pub(crate) struct Supervisor {
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Supervisor {
    /// Start `spawn`ing the child `name` and keep it running; every start,
    /// failure and exit goes to `on_event`.
    pub(crate) fn start<S, E>(name: &'static str, spawn: S, on_event: E) -> Self
    where
        S: FnMut() -> std::io::Result<Child> + Send + 'static,
        E: FnMut(ChildEvent) + Send + 'static,
    {
        let (stop_tx, stop_rx) = oneshot::channel();
        let task = tokio::spawn(supervise(name, spawn, on_event, stop_rx));
        Self { stop: Some(stop_tx), task: Some(task) }
    }

    /// Stop the child (SIGTERM, SIGKILL after 10 s) and wait for it.
    pub(crate) async fn stop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

async fn supervise<S, E>(name: &'static str, mut spawn: S, mut on_event: E, mut stop: oneshot::Receiver<()>)
where
    S: FnMut() -> std::io::Result<Child>,
    E: FnMut(ChildEvent),
{
    let mut backoff = FIRST_BACKOFF;
    loop {
        let started = Instant::now();
        let event = match spawn() {
            Err(e) => ChildEvent::SpawnFailed(format!("cannot start {name}: {e}"), backoff),
            Ok(mut child) => {
                on_event(ChildEvent::Started(child.id().unwrap_or(0)));
                let status = tokio::select! {
                    s = child.wait() => s,
                    _ = &mut stop => {
                        terminate(name, &mut child).await;
                        return;
                    }
                };
                if started.elapsed() > STABLE {
                    backoff = FIRST_BACKOFF;
                }
                let how = match status {
                    Ok(s) => format!("{name} exited ({s})"),
                    Err(e) => format!("{name}: cannot wait for it: {e}"),
                };
                ChildEvent::Exited(how, backoff)
            }
        };
        on_event(event);
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = &mut stop => return,
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// SIGTERM, then SIGKILL when the child is still there after [`GRACE`].
async fn terminate(name: &str, child: &mut Child) {
    if let Some(pid) = child.id() {
        // SAFETY: kill on our own child's pid.
        #[allow(unsafe_code)]
        unsafe {
            libc::kill(pid as libc::pid_t, libc::SIGTERM);
        }
    }
    if tokio::time::timeout(GRACE, child.wait()).await.is_err() {
        warn!("{name} did not stop within {GRACE:?} of SIGTERM: killing it");
        let _ = child.kill().await;
    }
}

/// Stop a daemon an earlier `director run` left running: its pid file names
/// a live process whose name is `comm`. It would make the new one refuse to
/// start (or fight over the same files).
pub(crate) fn stop_leftover(pid_file: &Path, comm: &str) {
    let Ok(text) = std::fs::read_to_string(pid_file) else { return };
    let Ok(pid) = text.trim().parse::<i32>() else { return };
    let name = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    if name.trim() != comm {
        return;
    }
    warn!(pid, "a {comm} left by an earlier director run is still running: stopping it");
    // SAFETY: kill on the pid of a daemon lvsctl started earlier.
    #[allow(unsafe_code)]
    unsafe {
        libc::kill(pid, libc::SIGTERM);
    }
    let deadline = Instant::now() + GRACE;
    while Instant::now() < deadline && Path::new(&format!("/proc/{pid}")).exists() {
        std::thread::sleep(Duration::from_millis(50));
    }
    if Path::new(&format!("/proc/{pid}")).exists() {
        info!(pid, "{comm} still there after SIGTERM");
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// A child that exits is started again; stop ends the one running.
    #[tokio::test]
    async fn restarts_and_stops() {
        let events = Arc::new(Mutex::new(Vec::new()));
        let seen = events.clone();
        let mut runs = 0;
        let spawn = move || {
            runs += 1;
            // The first run exits at once, the second stays until stopped.
            let script = if runs == 1 { "exit 3" } else { "sleep 30" };
            tokio::process::Command::new("sh").args(["-c", script]).kill_on_drop(true).spawn()
        };
        let mut s = Supervisor::start("sh", spawn, move |e| seen.lock().unwrap().push(format!("{e:?}")));
        let deadline = Instant::now() + Duration::from_secs(20);
        while events.lock().unwrap().iter().filter(|e| e.starts_with("Started")).count() < 2 {
            assert!(Instant::now() < deadline, "not restarted: {:?}", events.lock().unwrap());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        s.stop().await;
        let ev = events.lock().unwrap().clone();
        assert!(ev[1].starts_with("Exited(\"sh exited (exit status: 3)\""), "{ev:?}");
        assert_eq!(ev.len(), 3, "no restart after stop: {ev:?}");
    }
}
