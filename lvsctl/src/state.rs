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
//! The folder is created 0700 and must be the effective user's (root's)
//! alone, and so must every file in it (0600): see `open_dir`. Nothing in
//! it is opened through a symlink.
//!
//! Writes are atomic: a new temporary file of an unguessable name in the same
//! folder, fsync, rename. What is read back is checked before it is used
//! ([`StateFile`]): `stop` writes sysctls and removes addresses as root.

use std::ffi::CString;
use std::fs::File;
use std::io::{Read, Write};
use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
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

/// How long the commands wait for another run to release the lock.
pub(crate) const COMMAND_LOCK_WAIT: Duration = Duration::from_secs(60);
/// How long `director run` waits for it once running: a lock someone else
/// holds makes a change fail soon (it is retried later) instead of holding up
/// the daemon's checks and signals.
pub(crate) const DAEMON_LOCK_WAIT: Duration = Duration::from_secs(1);

/// How long [`lock`] waits, in milliseconds ([`COMMAND_LOCK_WAIT`] unless
/// [`set_lock_wait`] changed it).
static LOCK_WAIT_MS: AtomicU64 = AtomicU64::new(60_000);

/// Set how long [`lock`] waits for another run from now on.
pub(crate) fn set_lock_wait(d: Duration) {
    LOCK_WAIT_MS.store(u64::try_from(d.as_millis()).unwrap_or(u64::MAX), Ordering::Relaxed);
}

/// The exclusive lock; released when dropped.
#[derive(Debug)]
pub struct Lock {
    _file: File,
}

/// Take the lock in `dir`, waiting (on a timer, never blocking the runtime's
/// thread: the daemon keeps checking and handling signals meanwhile) up to
/// the time `set_lock_wait` set, a minute by default.
///
/// The folder is the effective user's alone (`open_dir`) and the lock file
/// is opened without following a symlink, must be that user's, and is made
/// 0600: nobody else can open it, so nobody else can hold it.
pub async fn lock(dir: &Path) -> Result<Lock, Error> {
    lock_within(dir, Duration::from_millis(LOCK_WAIT_MS.load(Ordering::Relaxed))).await
}

/// [`lock`], waiting up to `wait`.
async fn lock_within(dir: &Path, wait: Duration) -> Result<Lock, Error> {
    let d = open_dir(dir, true)?.expect("open_dir creates the folder");
    let p = dir.join("lock");
    let file = open_at(&d, "lock", libc::O_RDWR | libc::O_CREAT, 0o600)
        .and_then(|fd| own_regular_file(&fd, 0o600).map(|()| File::from(fd)))
        .map_err(|e| io_err(&format!("cannot open the lock file {}", p.display()), e))?;
    let started = Instant::now();
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
        if started.elapsed() >= wait {
            return Err(Error::Busy { path: p, waited: wait });
        }
        // Short waits are normal (runs are short); say so only when it lasts.
        if !said && started.elapsed() >= Duration::from_secs(2) {
            tracing::info!(lock = %p.display(), "waiting for another lvsctl run to finish");
            said = true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Take the lock a `director run` daemon holds for its whole life in this
/// network namespace (`director-run-netns<ID>.pid` in `dir`, holding its
/// process id), without waiting: while another daemon holds it, the answer
/// is [`Error::AlreadyRunning`] with that daemon's process id. The file is
/// opened as the lock is: in the user's own folder, never through a symlink.
pub fn daemon_lock(dir: &Path) -> Result<Lock, Error> {
    let d = open_dir(dir, true)?.expect("open_dir creates the folder");
    let name = format!("director-run-netns{}.pid", netns_id()?);
    let p = dir.join(&name);
    let mut file = open_at(&d, &name, libc::O_RDWR | libc::O_CREAT, 0o600)
        .and_then(|fd| own_regular_file(&fd, 0o600).map(|()| File::from(fd)))
        .map_err(|e| io_err(&format!("cannot open the daemon's lock file {}", p.display()), e))?;
    // SAFETY: flock on a valid fd.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EWOULDBLOCK) {
            return Err(io_err(&format!("cannot lock {}", p.display()), e));
        }
        let mut text = String::new();
        let pid = file.read_to_string(&mut text).ok().and_then(|_| text.trim().parse().ok());
        return Err(Error::AlreadyRunning { path: p, pid });
    }
    let res = file.set_len(0).and_then(|()| writeln!(file, "{}", std::process::id())).and_then(|()| file.flush());
    res.map_err(|e| io_err(&format!("cannot write {}", p.display()), e))?;
    Ok(Lock { _file: file })
}

/// The effective user id.
fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions.
    #[allow(unsafe_code)]
    unsafe {
        libc::geteuid()
    }
}

fn cstr(p: &Path) -> std::io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))
}

/// `openat(dir, name, flags | O_NOFOLLOW | O_CLOEXEC, mode)`: `name` is one
/// path component; a symlink in its place is refused (`ELOOP`).
fn open_at(dir: &OwnedFd, name: &str, flags: libc::c_int, mode: libc::mode_t) -> std::io::Result<OwnedFd> {
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
    }
    let c = cstr(Path::new(name))?;
    // SAFETY: openat with a valid directory fd and a NUL-terminated name.
    #[allow(unsafe_code)]
    let fd = unsafe {
        libc::openat(dir.as_raw_fd(), c.as_ptr(), flags | libc::O_NOFOLLOW | libc::O_CLOEXEC, libc::c_uint::from(mode))
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd was just returned by openat and is owned by nobody else.
    #[allow(unsafe_code)]
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn fstat(fd: &OwnedFd) -> std::io::Result<libc::stat> {
    // SAFETY: stat is plain data; fstat fills it for a valid fd.
    #[allow(unsafe_code)]
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        if libc::fstat(fd.as_raw_fd(), &mut st) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(st)
    }
}

fn fchmod(fd: &OwnedFd, mode: libc::mode_t) -> std::io::Result<()> {
    // SAFETY: fchmod on a valid fd.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::fchmod(fd.as_raw_fd(), mode) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Refuse an open file that is not a regular file of the effective user;
/// take away any permission beyond `mode` (files of older versions were 0644).
fn own_regular_file(fd: &OwnedFd, mode: libc::mode_t) -> std::io::Result<()> {
    let st = fstat(fd)?;
    if st.st_mode & libc::S_IFMT != libc::S_IFREG {
        return Err(std::io::Error::other("not a regular file"));
    }
    if st.st_uid != euid() {
        return Err(std::io::Error::other(format!("owned by uid {}, not by uid {}", st.st_uid, euid())));
    }
    if st.st_mode & 0o7777 & !mode != 0 {
        fchmod(fd, mode)?;
    }
    Ok(())
}

/// Open the state folder `dir`; create it (mode 0700) when `create` and it is
/// missing (`None` when it is missing and not `create`). It must be a real
/// directory (not a symlink) of the effective user; group and other
/// permissions are taken away (folders of older versions were 0755): another
/// user who could open the lock could hold up every run, and one who could
/// write a state file could make `stop` undo the wrong things as root.
pub(crate) fn open_dir(dir: &Path, create: bool) -> Result<Option<OwnedFd>, Error> {
    let refuse = |why: String| {
        Error::Failed(format!(
            "refusing the state folder {}: {why} (it must be a directory of uid {} only; set LVSCTL_STATE_DIR or fix it by hand)",
            dir.display(),
            euid()
        ))
    };
    if create {
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| io_err(&format!("cannot create {}", parent.display()), e))?;
        }
        match std::fs::DirBuilder::new().mode(0o700).create(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_err(&format!("cannot create {}", dir.display()), e)),
        }
    }
    let c = cstr(dir).map_err(|e| io_err(&format!("cannot open {}", dir.display()), e))?;
    // SAFETY: open with a NUL-terminated path.
    #[allow(unsafe_code)]
    let fd = unsafe { libc::open(c.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC) };
    if fd < 0 {
        let e = std::io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::ENOENT) if !create => Ok(None),
            Some(libc::ELOOP) | Some(libc::ENOTDIR) => Err(refuse("it is a symbolic link or not a directory".into())),
            _ => Err(io_err(&format!("cannot open {}", dir.display()), e)),
        };
    }
    // SAFETY: fd was just returned by open and is owned by nobody else.
    #[allow(unsafe_code)]
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let st = fstat(&fd).map_err(|e| io_err(&format!("cannot stat {}", dir.display()), e))?;
    if st.st_uid != euid() {
        return Err(refuse(format!("it is owned by uid {}", st.st_uid)));
    }
    if st.st_mode & 0o077 != 0 {
        fchmod(&fd, 0o700).map_err(|e| io_err(&format!("cannot chmod 0700 {}", dir.display()), e))?;
    }
    Ok(Some(fd))
}

fn io_err(what: &str, e: std::io::Error) -> Error {
    Error::Io { what: what.to_owned(), source: e }
}

/// The folder of a state file and its name in it.
fn split(path: &Path) -> Result<(&Path, &str), Error> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| Error::Failed(format!("invalid state file name {}", path.display())))?;
    Ok((dir, name))
}

/// A file lvsctl keeps in its state folder: the newest format this version
/// knows, and what a record read back must look like.
pub trait StateFile: Serialize + DeserializeOwned {
    /// The newest `format` this version reads.
    const FORMAT: u32;
    /// Refuse a record lvsctl would not have written (`Err`: what is wrong).
    fn check(&self) -> Result<(), String> {
        Ok(())
    }
}

/// Read a state file; `None` when there is none. The file must be the
/// effective user's (not a symlink); a file of a newer format than this
/// version knows, or with a record it would not have written, is refused.
pub fn read<T: StateFile>(path: &Path) -> Result<Option<T>, Error> {
    let (dir, name) = split(path)?;
    let Some(d) = open_dir(dir, false)? else { return Ok(None) };
    let cannot = |e| io_err(&format!("cannot read the state file {}", path.display()), e);
    let fd = match open_at(&d, name, libc::O_RDONLY, 0) {
        Ok(fd) => fd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(cannot(e)),
    };
    own_regular_file(&fd, 0o600).map_err(cannot)?;
    let mut text = String::new();
    File::from(fd).read_to_string(&mut text).map_err(cannot)?;
    parse(path, &text).map(Some)
}

fn parse<T: StateFile>(path: &Path, text: &str) -> Result<T, Error> {
    let damaged = |why: String| Error::StateDamaged { path: path.to_owned(), reason: why };
    #[derive(Deserialize)]
    struct Head {
        format: Option<u64>,
    }
    let head: Head = serde_json::from_str(text).map_err(|e| damaged(e.to_string()))?;
    if let Some(f) = head.format.filter(|f| *f > u64::from(T::FORMAT)) {
        return Err(Error::Failed(format!(
            "the state file {} has format {f}, written by a newer lvsctl (this one reads up to format {}): \
             use that version (or a newer one) to stop or start; this one leaves the file alone",
            path.display(),
            T::FORMAT
        )));
    }
    let v: T = serde_json::from_str(text).map_err(|e| damaged(e.to_string()))?;
    v.check().map_err(|e| damaged(format!("a record lvsctl did not write: {e}")))?;
    Ok(v)
}

/// A temporary name nobody can guess: `.<name>.<16 random hex digits>.tmp`.
fn temp_name(name: &str) -> std::io::Result<String> {
    let mut b = [0u8; 8];
    // SAFETY: getrandom writes at most b.len() bytes into b.
    #[allow(unsafe_code)]
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    if n != b.len() as isize {
        return Err(std::io::Error::last_os_error());
    }
    Ok(format!(".{name}.{:016x}.tmp", u64::from_ne_bytes(b)))
}

/// Write a state file atomically: a new temporary file of an unguessable
/// name (`O_CREAT | O_EXCL`, never through a symlink, mode 0600), fsync,
/// rename over the file, fsync the folder.
pub fn write<T: Serialize>(path: &Path, value: &T) -> Result<(), Error> {
    let (dir, name) = split(path)?;
    let d = open_dir(dir, true)?.expect("open_dir creates the folder");
    // Compact: a record of a thousand services is written before each
    // start's batch, and indentation would double its size (`jq .` reads it).
    let text = serde_json::to_vec(value).map_err(|e| Error::Failed(format!("cannot encode the state: {e}")))?;
    let mut tmp = String::new();
    let res = (|| {
        tmp = temp_name(name)?;
        let fd = open_at(&d, &tmp, libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL, 0o600)?;
        let mut f = File::from(fd);
        f.write_all(&text)?;
        f.write_all(b"\n")?;
        f.sync_all()?;
        let (from, to) = (cstr(Path::new(&tmp))?, cstr(Path::new(name))?);
        // SAFETY: renameat within one valid directory fd, NUL-terminated names.
        #[allow(unsafe_code)]
        let rc = unsafe { libc::renameat(d.as_raw_fd(), from.as_ptr(), d.as_raw_fd(), to.as_ptr()) };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: fsync on a valid fd.
        #[allow(unsafe_code)]
        let rc = unsafe { libc::fsync(d.as_raw_fd()) };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    })();
    res.map_err(|e| {
        if !tmp.is_empty() {
            let _ = unlink_at(&d, &tmp);
        }
        io_err(&format!("cannot write the state file {}", path.display()), e)
    })
}

fn unlink_at(dir: &OwnedFd, name: &str) -> std::io::Result<()> {
    let c = cstr(Path::new(name))?;
    // SAFETY: unlinkat with a valid directory fd and a NUL-terminated name.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::unlinkat(dir.as_raw_fd(), c.as_ptr(), 0) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
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
    let (dir, name) = split(path)?;
    let Some(d) = open_dir(dir, false)? else { return Ok(()) };
    match unlink_at(&d, name) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err(&format!("cannot remove the state file {}", path.display()), e)),
    }
}

/// Whether `s` is a name the kernel takes for an interface (`all` and
/// `default` of the sysctl folders included): 1 to 15 bytes, not `.` or
/// `..`, no `/`, `:`, white space or control characters.
pub(crate) fn valid_ifname(s: &str) -> bool {
    (1..=15).contains(&s.len())
        && s != "."
        && s != ".."
        && !s.chars().any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control())
}

fn check_addresses(addrs: &[AddressRecord]) -> Result<(), String> {
    for a in addrs {
        if !valid_ifname(&a.iface) {
            return Err(format!("address {} on an invalid interface name {:?}", a.addr, a.iface));
        }
        let host = if a.addr.is_ipv4() { 32 } else { 128 };
        if a.prefix_len != host {
            return Err(format!("address {}/{} is not a host address", a.addr, a.prefix_len));
        }
    }
    Ok(())
}

fn check_sysctls(records: &[SysctlRecord]) -> Result<(), String> {
    records.iter().try_for_each(check_sysctl_record)
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
    /// Set by the kernel when start wrote another sysctl (writing
    /// `conf/all/forwarding` sets every interface's `forwarding`, for
    /// example): stop puts it back, `status` does not compare it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub side_effect: bool,
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

impl StateFile for DirectorState {
    const FORMAT: u32 = FORMAT;
    fn check(&self) -> Result<(), String> {
        check_addresses(&self.addresses)?;
        check_sysctls(&self.sysctls)
    }
}

impl StateFile for RealserverState {
    const FORMAT: u32 = FORMAT;
    fn check(&self) -> Result<(), String> {
        if let Some(i) = self.iface.as_deref().filter(|i| !valid_ifname(i)) {
            return Err(format!("invalid interface name {i:?}"));
        }
        check_addresses(&self.addresses)?;
        check_sysctls(&self.sysctls)
    }
}

/// The sysctls lvsctl ever writes (under `net/ipv{4,6}/conf/<iface>/`):
/// what a state file may name, and nothing else.
pub(crate) const MANAGED: &[&str] = &["arp_ignore", "arp_announce", "forwarding", "accept_redirects"];

/// Refuse a record read back from a state file that lvsctl would not have
/// written: an unknown sysctl name, an interface name that is no interface's
/// (`..`, `a/b`), a value that is not a number. `stop` writes these as root.
fn check_sysctl_record(r: &SysctlRecord) -> Result<(), String> {
    if !MANAGED.contains(&r.name.as_str()) {
        return Err(format!("sysctl {:?} is not one lvsctl manages", r.name));
    }
    if !valid_ifname(&r.iface) {
        return Err(format!("sysctl {} of an invalid interface name {:?}", r.name, r.iface));
    }
    for v in [&r.previous, &r.value] {
        let digits = v.strip_prefix('-').unwrap_or(v);
        if digits.is_empty() || digits.len() > 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("sysctl {}/{} value {v:?} is not a number", r.iface, r.name));
        }
    }
    Ok(())
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
                side_effect: false,
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
            side_effect: false,
        };
        let text = serde_json::to_string(&v6).unwrap();
        assert!(text.contains(r#""ipv6":true"#), "{text}");
        assert_eq!(serde_json::from_str::<SysctlRecord>(&text).unwrap(), v6);
        // An IPv4 record is written as before.
        assert!(!serde_json::to_string(&SysctlRecord { ipv6: false, ..v6 }).unwrap().contains("ipv6"));
    }

    #[tokio::test]
    async fn lock_is_exclusive() {
        let d = tmpdir();
        let l = lock(&d).await.unwrap();
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

    fn mode(p: &Path) -> u32 {
        use std::os::unix::fs::MetadataExt;
        std::fs::symlink_metadata(p).unwrap().mode() & 0o7777
    }

    /// The folder is created 0700, the lock and state files 0600; those an
    /// older version left open to everyone are closed.
    #[tokio::test]
    async fn folder_and_files_are_the_users_alone() {
        use std::os::unix::fs::PermissionsExt;
        let top = tmpdir();
        let d = top.join("state");
        let _l = lock(&d).await.unwrap();
        assert_eq!((mode(&d), mode(&d.join("lock"))), (0o700, 0o600));
        let p = d.join("director-netns1.json");
        write(&p, &serde_json::json!({"format": 1})).unwrap();
        assert_eq!(mode(&p), 0o600);
        drop(_l);

        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(d.join("lock"), std::fs::Permissions::from_mode(0o644)).unwrap();
        let _l = lock(&d).await.unwrap();
        assert_eq!((mode(&d), mode(&d.join("lock"))), (0o700, 0o600));
        std::fs::remove_dir_all(&top).unwrap();
    }

    /// Nothing is opened through a symlink: not the folder, not the lock,
    /// not a state file; and a folder of another user is refused.
    #[tokio::test]
    async fn symlinks_and_foreign_folders_are_refused() {
        let top = tmpdir();
        let real = top.join("real");
        std::fs::create_dir(&real).unwrap();
        let link = top.join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let e = lock(&link).await.unwrap_err();
        assert!(e.to_string().contains("symbolic link or not a directory"), "{}", e.to_string());
        assert!(!real.join("lock").exists());

        let d = top.join("d");
        std::fs::create_dir(&d).unwrap();
        let victim = top.join("victim");
        std::fs::write(&victim, "untouched").unwrap();
        std::os::unix::fs::symlink(&victim, d.join("lock")).unwrap();
        let e = lock(&d).await.unwrap_err();
        assert!(e.to_string().contains("cannot open the lock file"), "{}", e.to_string());
        let st = d.join("realserver-netns1.json");
        std::os::unix::fs::symlink(&victim, &st).unwrap();
        let e = read::<RealserverState>(&st).unwrap_err();
        assert!(e.to_string().contains("cannot read the state file"), "{}", e.to_string());
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "untouched");

        // A folder someone else owns (only root can make one here).
        if euid() == 0 {
            let other = top.join("other");
            std::fs::create_dir(&other).unwrap();
            std::os::unix::fs::chown(&other, Some(65534), Some(65534)).unwrap();
            let e = lock(&other).await.unwrap_err();
            assert!(e.to_string().contains("it is owned by uid 65534"), "{}", e.to_string());
            assert!(e.to_string().contains("LVSCTL_STATE_DIR"), "{}", e.to_string());
        }
        std::fs::remove_dir_all(&top).unwrap();
    }

    /// While another run holds the lock, waiting for it leaves the thread
    /// free: on a one-thread runtime (the daemon's) another task still runs.
    #[test]
    fn waiting_for_the_lock_does_not_block_the_runtime() {
        let d = tmpdir();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let held = lock(&d).await.unwrap();
            let waiter = tokio::spawn({
                let d = d.clone();
                async move { lock(&d).await.map(drop) }
            });
            let (tx, rx) = tokio::sync::oneshot::channel();
            tokio::spawn(async move { tx.send(()).unwrap() });
            rx.await.unwrap();
            assert!(!waiter.is_finished(), "the waiter got the lock although it is held");
            drop(held);
            waiter.await.unwrap().unwrap();
        });
        std::fs::remove_dir_all(&d).unwrap();
    }

    /// A short wait (the daemon's) gives up with a message naming the lock.
    #[tokio::test]
    async fn a_busy_lock_fails_after_the_wait() {
        let d = tmpdir();
        let _held = lock(&d).await.unwrap();
        let e = lock_within(&d, Duration::ZERO).await.unwrap_err();
        assert!(e.to_string().contains("another lvsctl run holds"), "{}", e.to_string());
        std::fs::remove_dir_all(&d).unwrap();
    }

    /// The temporary file has a name nobody can guess and is created new: a
    /// symlink left where the old predictable name was is not followed.
    #[test]
    fn the_temporary_file_is_new_and_unguessable() {
        let d = tmpdir();
        let (a, b) = (temp_name("x.json").unwrap(), temp_name("x.json").unwrap());
        assert_ne!(a, b);
        assert!(a.starts_with(".x.json.") && a.ends_with(".tmp") && a.len() == ".x.json.".len() + 16 + 4, "{a}");
        let victim = d.join("victim");
        std::fs::write(&victim, "untouched").unwrap();
        let p = d.join("realserver-netns1.json");
        std::os::unix::fs::symlink(&victim, d.join(format!(".realserver-netns1.json.tmp{}", std::process::id())))
            .unwrap();
        write(&p, &serde_json::json!({"format": 1})).unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "untouched");
        std::fs::remove_dir_all(&d).unwrap();
    }

    /// Records lvsctl would not write are refused before anything uses them,
    /// and so is a state file of a newer format; neither is rewritten.
    #[test]
    fn crafted_records_and_newer_formats_are_refused() {
        let d = tmpdir();
        let p = d.join("realserver-netns1.json");
        let good = r#"{"format":1,"iface":"eth0.100","addresses":[{"addr":"10.0.0.1","prefix_len":32,"iface":"lo","created":true}],
            "sysctls":[{"iface":"all","name":"arp_ignore","previous":"0","value":"1"}]}"#;
        let sysctl = |iface: &str, name: &str, value: &str| {
            good.replace(
                r#""iface":"all","name":"arp_ignore","previous":"0""#,
                &format!(
                    r#""iface":{},"name":{},"previous":{}"#,
                    serde_json::json!(iface),
                    serde_json::json!(name),
                    serde_json::json!(value)
                ),
            )
        };
        for (text, why) in [
            (sysctl("../../../kernel", "core_pattern", "0"), "not one lvsctl manages"),
            (sysctl("../../../kernel", "forwarding", "0"), "invalid interface name"),
            (sysctl("all/../../..", "forwarding", "0"), "invalid interface name"),
            (sysctl("..", "forwarding", "0"), "invalid interface name"),
            (sysctl("all", "arp_ignore/../forwarding", "0"), "not one lvsctl manages"),
            (sysctl("all", "arp_ignore", "|/bin/sh"), "is not a number"),
            (good.replace(r#""iface":"lo""#, r#""iface":"a/b""#), "invalid interface name"),
            (good.replace(r#""prefix_len":32"#, r#""prefix_len":8"#), "not a host address"),
            (good.replace(r#""iface":"eth0.100""#, r#""iface":"..""#), "invalid interface name"),
        ] {
            std::fs::write(&p, &text).unwrap();
            let e = read::<RealserverState>(&p).unwrap_err();
            assert!(
                e.to_string().contains("a record lvsctl did not write") && e.to_string().contains(why),
                "{text}: {e}"
            );
        }
        std::fs::write(&p, good).unwrap();
        assert!(read::<RealserverState>(&p).unwrap().is_some());

        let newer = good.replace(r#""format":1"#, r#""format":2,"something_new":[1]"#);
        std::fs::write(&p, &newer).unwrap();
        let e = read::<RealserverState>(&p).unwrap_err();
        assert!(e.to_string().contains("has format 2, written by a newer lvsctl"), "{}", e.to_string());
        assert_eq!(std::fs::read_to_string(&p).unwrap(), newer);
        let e = read::<DirectorState>(&p).unwrap_err();
        assert!(e.to_string().contains("newer lvsctl"), "{}", e.to_string());
        std::fs::remove_dir_all(&d).unwrap();
    }

    /// The id is this namespace's cookie (a number), or on kernels without
    /// cookies `i` and the inode of /proc/thread-self/ns/net; another
    /// namespace (root only: unshare) has another id.
    #[test]
    fn netns_id_names_this_namespace() {
        use std::os::unix::fs::MetadataExt;
        let id = netns_id().unwrap();
        match id.strip_prefix('i') {
            Some(ino) => {
                assert_eq!(ino.parse::<u64>().unwrap(), std::fs::metadata("/proc/thread-self/ns/net").unwrap().ino())
            }
            None => assert!(id.parse::<u64>().unwrap() > 0, "{id}"),
        }
        if euid() == 0 {
            let other = std::thread::spawn(|| {
                // SAFETY: unshare affects this (short-lived) thread only.
                #[allow(unsafe_code)]
                let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
                (rc == 0).then(|| netns_id().unwrap())
            })
            .join()
            .unwrap();
            if let Some(other) = other {
                assert_ne!(other, id);
            }
        }
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
}
