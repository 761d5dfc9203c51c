//! What `start` recorded, so that `stop` can undo exactly that and `status`
//! knows what to compare the kernel with; and the lock that serialises
//! lvsctl runs.
//!
//! Files live in `/run/lvsctl/` (or `$LVSCTL_STATE_DIR`):
//! - `lock`: held with `flock(LOCK_EX)` by every `start` and `stop`;
//! - `director-netns<ID>.json`, `realserver-netns<ID>.json`: one per role and
//!   network namespace. `<ID>` is the namespace's cookie (`SO_NETNS_COOKIE`,
//!   unique per boot; its inode number on kernels without cookies), so hosts
//!   emulated by namespaces on one machine keep separate records.
//!
//! Writes are atomic: a temporary file in the same folder, fsync, rename.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ipvs::reconcile::DesiredService;
use ipvs::ServiceKey;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::Error;

/// Version of the state file format.
pub const FORMAT: u32 = 1;

/// The state folder: `$LVSCTL_STATE_DIR` or `/run/lvsctl`.
pub fn dir() -> PathBuf {
    std::env::var_os("LVSCTL_STATE_DIR").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/run/lvsctl"))
}

/// The role a state file belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `lvsctl director`.
    Director,
    /// `lvsctl realserver`.
    Realserver,
}

/// Path of the state file of `role` in this network namespace.
pub fn path(dir: &Path, role: Role) -> Result<PathBuf, Error> {
    let ns = netns_id()?;
    let r = match role {
        Role::Director => "director",
        Role::Realserver => "realserver",
    };
    Ok(dir.join(format!("{r}-netns{ns}.json")))
}

/// An id of the calling thread's network namespace: its cookie, or its inode.
pub fn netns_id() -> Result<String, Error> {
    const SO_NETNS_COOKIE: libc::c_int = 71;
    // Any socket tells its namespace's cookie; a unix socket needs no address
    // (so it works even with lo down) and no IP stack.
    // SAFETY: plain socket(2); the fd is owned right away.
    #[allow(unsafe_code)]
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd >= 0 {
        use std::os::fd::{FromRawFd, OwnedFd};
        // SAFETY: fd was just returned by socket(2) and is owned by nobody else.
        #[allow(unsafe_code)]
        let sock = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut cookie: u64 = 0;
        let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
        // SAFETY: getsockopt on a valid socket with a buffer of `len` bytes.
        #[allow(unsafe_code)]
        let rc = unsafe {
            libc::getsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                SO_NETNS_COOKIE,
                (&mut cookie as *mut u64).cast(),
                &mut len,
            )
        };
        if rc == 0 && len as usize == std::mem::size_of::<u64>() {
            return Ok(cookie.to_string());
        }
    }
    // Kernels before 5.14 have no cookie: the namespace's inode number.
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata("/proc/thread-self/ns/net")
        .map_err(|e| Error::Io { what: "cannot tell this network namespace".into(), source: e })?;
    Ok(format!("i{}", m.ino()))
}

/// The exclusive lock; released when dropped.
#[derive(Debug)]
pub struct Lock {
    _file: File,
}

/// Take the lock in `dir`, waiting up to a minute for another run to finish.
pub fn lock(dir: &Path) -> Result<Lock, Error> {
    ensure_dir(dir)?;
    let p = dir.join("lock");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&p)
        .map_err(|e| io_err(&format!("cannot open the lock file {}", p.display()), e))?;
    let started = Instant::now();
    let deadline = started + Duration::from_secs(60);
    let mut said = false;
    loop {
        // SAFETY: flock on a valid fd.
        #[allow(unsafe_code)]
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc == 0 {
            return Ok(Lock { _file: file });
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EWOULDBLOCK) {
            return Err(io_err(&format!("cannot lock {}", p.display()), e));
        }
        if Instant::now() >= deadline {
            return Err(Error::Busy { path: p });
        }
        // Short waits are normal (runs are short); say so only when it lasts.
        if !said && started.elapsed() >= Duration::from_secs(2) {
            tracing::info!(lock = %p.display(), "waiting for another lvsctl run to finish");
            said = true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Take the lock a `director run` daemon holds for its whole life in this
/// network namespace (`director-run-netns<ID>.pid` in `dir`, holding its
/// process id), without waiting: while another daemon holds it, the answer
/// is [`Error::AlreadyRunning`] with that daemon's process id.
pub fn daemon_lock(dir: &Path) -> Result<Lock, Error> {
    ensure_dir(dir)?;
    let p = dir.join(format!("director-run-netns{}.pid", netns_id()?));
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&p)
        .map_err(|e| io_err(&format!("cannot open the daemon's lock file {}", p.display()), e))?;
    // SAFETY: flock on a valid fd.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EWOULDBLOCK) {
            return Err(io_err(&format!("cannot lock {}", p.display()), e));
        }
        let pid = std::fs::read_to_string(&p).ok().and_then(|t| t.trim().parse().ok());
        return Err(Error::AlreadyRunning { path: p, pid });
    }
    let res = file.set_len(0).and_then(|()| writeln!(file, "{}", std::process::id())).and_then(|()| file.flush());
    res.map_err(|e| io_err(&format!("cannot write {}", p.display()), e))?;
    Ok(Lock { _file: file })
}

fn ensure_dir(dir: &Path) -> Result<(), Error> {
    std::fs::create_dir_all(dir).map_err(|e| io_err(&format!("cannot create {}", dir.display()), e))
}

fn io_err(what: &str, e: std::io::Error) -> Error {
    Error::Io { what: what.to_owned(), source: e }
}

/// Read a state file; `None` when there is none.
pub fn read<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, Error> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(&format!("cannot read the state file {}", path.display()), e)),
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| Error::StateDamaged { path: path.to_owned(), reason: e.to_string() })
}

/// Write a state file atomically: temporary file, fsync, rename, fsync folder.
pub fn write<T: Serialize>(path: &Path, value: &T) -> Result<(), Error> {
    let dir = path.parent().unwrap_or(Path::new("."));
    ensure_dir(dir)?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("state");
    let tmp = dir.join(format!(".{name}.tmp{}", std::process::id()));
    let text =
        serde_json::to_string_pretty(value).map_err(|e| Error::Failed(format!("cannot encode the state: {e}")))?;
    let res = (|| {
        let mut f = OpenOptions::new().create(true).truncate(true).write(true).open(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.write_all(b"\n")?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    res.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io_err(&format!("cannot write the state file {}", path.display()), e)
    })
}

/// The end of a `stop`: when something could not be undone (`err`), keep
/// the state with what is left so a later stop can finish, and return the
/// error; otherwise remove the state file.
pub fn finish_stop<T: Serialize>(path: &Path, left: &T, err: Option<Error>) -> Result<(), Error> {
    match err {
        Some(e) => {
            write(path, left)?;
            Err(e)
        }
        None => remove(path),
    }
}

/// Remove a state file (no error if it is gone).
pub fn remove(path: &Path) -> Result<(), Error> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err(&format!("cannot remove the state file {}", path.display()), e)),
    }
}

/// An address start put on (or found on) an interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddressRecord {
    /// The address.
    pub addr: IpAddr,
    /// Its prefix length (32 or 128).
    pub prefix_len: u8,
    /// The interface.
    pub iface: String,
    /// Whether start added it (then stop removes it); false when it was there before.
    pub created: bool,
}

/// A sysctl start set, with the value it had before.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SysctlRecord {
    /// Under `net/ipv6/conf` rather than `net/ipv4/conf` (absent in state
    /// files written before IPv6 sysctls were managed: false).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ipv6: bool,
    /// The interface part of `net/ipv{4,6}/conf/<iface>/<name>` (`all`, `lo`, ...).
    pub iface: String,
    /// `arp_ignore`, `arp_announce` or `forwarding`.
    pub name: String,
    /// The value before the first start (what stop writes back).
    pub previous: String,
    /// The value start set.
    pub value: String,
}

/// What `director start` recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectorState {
    /// [`FORMAT`].
    pub format: u32,
    /// The services as configured (what status compares the kernel with).
    pub services: Vec<DesiredService>,
    /// The services lvsctl created: the only ones it ever deletes.
    pub owned: Vec<ServiceKey>,
    /// The VIPs on their interfaces.
    pub addresses: Vec<AddressRecord>,
    /// The forwarding sysctls NAT needs, with their previous values (absent
    /// in state files written before they were managed: none).
    #[serde(default)]
    pub sysctls: Vec<SysctlRecord>,
}

/// What `realserver start` recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RealserverState {
    /// [`FORMAT`].
    pub format: u32,
    /// The interface given, if any.
    pub iface: Option<String>,
    /// The VIPs on `lo`.
    pub addresses: Vec<AddressRecord>,
    /// The ARP sysctls, with their previous values.
    pub sysctls: Vec<SysctlRecord>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmpdir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("lvsctl-state-test-{}-{:?}", std::process::id(), Instant::now()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn write_is_atomic_and_round_trips() {
        let d = tmpdir();
        let p = d.join("realserver-netns1.json");
        assert_eq!(read::<RealserverState>(&p).unwrap(), None);
        let s = RealserverState {
            format: FORMAT,
            iface: Some("eth0.100".into()),
            addresses: vec![AddressRecord {
                addr: "10.19.70.166".parse().unwrap(),
                prefix_len: 32,
                iface: "lo".into(),
                created: true,
            }],
            sysctls: vec![SysctlRecord {
                ipv6: false,
                iface: "eth0.100".into(),
                name: "arp_ignore".into(),
                previous: "2".into(),
                value: "1".into(),
            }],
        };
        write(&p, &s).unwrap();
        assert_eq!(read::<RealserverState>(&p).unwrap(), Some(s));
        // No temporary file is left behind.
        let names: Vec<_> = std::fs::read_dir(&d).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("realserver-netns1.json")]);
        remove(&p).unwrap();
        remove(&p).unwrap();
        assert_eq!(read::<RealserverState>(&p).unwrap(), None);
        std::fs::write(&p, "{not json").unwrap();
        assert!(read::<RealserverState>(&p).unwrap_err().to_string().contains("damaged"));
        std::fs::remove_dir_all(&d).unwrap();
    }

    /// State files of earlier versions (no IPv6 flag on sysctls, no sysctls
    /// in the director's) still read; what is written now reads back.
    #[test]
    fn older_state_files_still_read() {
        let rs: RealserverState = serde_json::from_str(
            r#"{"format":1,"iface":null,"addresses":[],
                "sysctls":[{"iface":"all","name":"arp_ignore","previous":"0","value":"1"}]}"#,
        )
        .unwrap();
        assert!(!rs.sysctls[0].ipv6);
        let d: DirectorState = serde_json::from_str(r#"{"format":1,"services":[],"owned":[],"addresses":[]}"#).unwrap();
        assert!(d.sysctls.is_empty());
        let v6 = SysctlRecord {
            ipv6: true,
            iface: "all".into(),
            name: "forwarding".into(),
            previous: "0".into(),
            value: "1".into(),
        };
        let text = serde_json::to_string(&v6).unwrap();
        assert!(text.contains(r#""ipv6":true"#), "{text}");
        assert_eq!(serde_json::from_str::<SysctlRecord>(&text).unwrap(), v6);
        // An IPv4 record is written as before.
        assert!(!serde_json::to_string(&SysctlRecord { ipv6: false, ..v6 }).unwrap().contains("ipv6"));
    }

    #[test]
    fn lock_is_exclusive() {
        let d = tmpdir();
        let l = lock(&d).unwrap();
        let f = File::open(d.join("lock")).unwrap();
        // SAFETY: flock on a valid fd.
        #[allow(unsafe_code)]
        let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        assert_eq!(rc, -1, "a second lock must not be granted while the first is held");
        drop(l);
        #[allow(unsafe_code)]
        let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        assert_eq!(rc, 0);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_second_daemon_lock_is_refused_at_once_with_the_holders_pid() {
        let d = tmpdir();
        let held = daemon_lock(&d).unwrap();
        match daemon_lock(&d) {
            Err(Error::AlreadyRunning { pid, .. }) => assert_eq!(pid, Some(std::process::id())),
            other => panic!("expected AlreadyRunning, got {other:?}"),
        }
        drop(held);
        let again = daemon_lock(&d).unwrap();
        drop(again);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn netns_id_is_stable() {
        assert_eq!(netns_id().unwrap(), netns_id().unwrap());
    }
}
