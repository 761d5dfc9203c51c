//! keepalived-style script security: the daemon runs as root, so a config file
//! or check program that someone else can change is a way to run commands as
//! root (or to redirect traffic). Both must be writable by root only, and so
//! must every directory above them; exec checks run as an unprivileged user.

use std::collections::VecDeque;
use std::ffi::{CString, OsString};
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

/// The sticky bit: in such a directory only a file's owner may rename or delete it.
const S_ISVTX: u32 = 0o1000;

/// Symlinks followed at most while resolving one path (as the kernel's limit).
const MAX_SYMLINKS: u32 = 40;

/// Refuse `path` unless every directory it passes through, every symlink on
/// the way and the file it names are owned by root, and the directories and
/// the file are writable by root only. A sticky directory owned by root
/// (`/tmp`) may be world-writable: nobody else can replace the root-owned
/// entry below it. `what` names the file in the message (`config file`,
/// `check command`).
///
/// The path is walked as given, one component at a time with `lstat`: a
/// symlink is followed by hand, and the directories of its target are
/// checked in turn. So a symlink in a directory another user can write (who
/// could point it elsewhere after the check) is refused, even when what it
/// points to is root's. Returns the path it resolved to, free of symlinks:
/// the file that was checked, which is what must be run or read.
pub fn check_root_only_writable(path: &Path, what: &str) -> Result<PathBuf, String> {
    checked(path, what).map(|(p, _)| p)
}

/// [`check_root_only_writable`], with the metadata of the file it resolved to.
fn checked(path: &Path, what: &str) -> Result<(PathBuf, std::fs::Metadata), String> {
    let given = path.display();
    if !path.is_absolute() {
        return Err(format!("{what} {given}: must be an absolute path"));
    }
    let mut todo: VecDeque<OsString> = VecDeque::new();
    push_components(&mut todo, path);
    let mut cur = PathBuf::from("/");
    let mut md = lstat(&cur, what, path)?;
    check_entry(&cur, &md, false, what, path)?;
    let mut links = 0;
    while let Some(c) = todo.pop_front() {
        if c == ".." {
            // Back to a directory already checked on the way down.
            cur.pop();
            md = lstat(&cur, what, path)?;
            continue;
        }
        let next = cur.join(&c);
        let m = lstat(&next, what, path)?;
        if m.file_type().is_symlink() {
            links += 1;
            if links > MAX_SYMLINKS {
                return Err(format!("{what} {given}: too many levels of symbolic links"));
            }
            // A symlink's mode means nothing: its owner and its directory
            // (checked) decide who can change where it points.
            if m.uid() != 0 {
                return Err(format!(
                    "refusing {what} {given}: the symbolic link {} is owned by uid {}, not root",
                    next.display(),
                    m.uid()
                ));
            }
            let target = std::fs::read_link(&next).map_err(|e| format!("{what} {given}: {}: {e}", next.display()))?;
            let mut rest: VecDeque<OsString> = VecDeque::new();
            push_components(&mut rest, &target);
            rest.extend(todo.drain(..));
            todo = rest;
            if target.is_absolute() {
                cur = PathBuf::from("/");
            }
            continue;
        }
        if !todo.is_empty() && !m.is_dir() {
            return Err(format!("{what} {given}: {} is not a directory", next.display()));
        }
        check_entry(&next, &m, todo.is_empty(), what, path)?;
        cur = next;
        md = m;
    }
    if !md.is_file() {
        return Err(format!("{what} {given}: not a regular file"));
    }
    Ok((cur, md))
}

fn push_components(todo: &mut VecDeque<OsString>, p: &Path) {
    for c in p.components() {
        match c {
            Component::Normal(n) => todo.push_back(n.to_owned()),
            Component::ParentDir => todo.push_back(OsString::from("..")),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
}

fn lstat(p: &Path, what: &str, given: &Path) -> Result<std::fs::Metadata, String> {
    std::fs::symlink_metadata(p).map_err(|e| {
        if p == given {
            format!("{what} {}: {e}", given.display())
        } else {
            format!("{what} {}: {}: {e}", given.display(), p.display())
        }
    })
}

/// Owned by root and writable by root only (a sticky directory of root may
/// be writable by all); `last`: the file itself, not a directory above it.
fn check_entry(p: &Path, md: &std::fs::Metadata, last: bool, what: &str, given: &Path) -> Result<(), String> {
    let mode = md.mode() & 0o7777;
    let shown = if last {
        format!("{what} {}", given.display())
    } else {
        format!("{what} {}: its directory {}", given.display(), p.display())
    };
    if md.uid() != 0 {
        return Err(format!(
            "refusing {shown}: owned by uid {}, not root (anyone but root who can change it could make lvsctl run commands as root)",
            md.uid()
        ));
    }
    let sticky_dir = !last && md.is_dir() && mode & S_ISVTX != 0;
    if mode & 0o022 != 0 && !sticky_dir {
        let who = if mode & 0o002 != 0 { "everyone" } else { "its group" };
        return Err(format!(
            "refusing {shown}: writable by {who} (mode {mode:04o}); make it writable by root only (chmod go-w)"
        ));
    }
    Ok(())
}

/// Read a file that must be root's alone ([`check_root_only_writable`]),
/// from one open: the file checked is opened (never through a symlink) and
/// must still be that file, root's and writable by root only, so what is
/// read is what was checked even if the path changes meanwhile.
pub(crate) fn read_root_only(path: &Path, what: &str) -> Result<String, String> {
    read_checked(path, what, false)
}

/// [`read_root_only`] for a secret (a password): the file must also be
/// readable by root only, not by its group or others.
pub(crate) fn read_root_secret(path: &Path, what: &str) -> Result<String, String> {
    read_checked(path, what, true)
}

fn read_checked(path: &Path, what: &str, secret: bool) -> Result<String, String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let (real, md) = checked(path, what)?;
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&real)
        .map_err(|e| format!("cannot read {what} {}: {e}", path.display()))?;
    let open = f.metadata().map_err(|e| format!("cannot read {what} {}: {e}", path.display()))?;
    if (open.dev(), open.ino()) != (md.dev(), md.ino()) {
        return Err(format!("refusing {what} {}: it was replaced while it was being checked", path.display()));
    }
    check_entry(&real, &open, true, what, path)?;
    if secret && open.mode() & 0o044 != 0 {
        return Err(format!(
            "refusing {what} {}: readable by {} (mode {:04o}); make it readable by root only (chmod go-rwx)",
            path.display(),
            if open.mode() & 0o004 != 0 { "everyone" } else { "its group" },
            open.mode() & 0o7777
        ));
    }
    let mut text = String::new();
    f.read_to_string(&mut text).map_err(|e| format!("cannot read {what} {}: {e}", path.display()))?;
    Ok(text)
}

/// The uid and primary gid of a user name, from the passwd database.
pub fn lookup_user(name: &str) -> Result<(u32, u32), String> {
    let c = CString::new(name).map_err(|_| format!("invalid user name {name:?}"))?;
    let mut buf = vec![0u8; 16 * 1024];
    // SAFETY: passwd is plain data; getpwnam_r writes into pwd and buf (of the
    // length given) and sets result to &pwd or null.
    #[allow(unsafe_code)]
    unsafe {
        let mut pwd: libc::passwd = std::mem::zeroed();
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        let rc = libc::getpwnam_r(c.as_ptr(), &mut pwd, buf.as_mut_ptr().cast(), buf.len(), &mut result);
        if rc != 0 {
            return Err(format!("cannot look up user {name:?}: {}", std::io::Error::from_raw_os_error(rc)));
        }
        if result.is_null() {
            return Err(format!("no user {name:?} in the passwd database"));
        }
        Ok((pwd.pw_uid, pwd.pw_gid))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_user_exists() {
        assert_eq!(lookup_user("root").unwrap(), (0, 0));
        assert!(lookup_user("no-such-user-lvsctl").unwrap_err().contains("no user"));
    }

    #[test]
    fn system_binaries_are_safe_and_user_files_are_not() {
        // /bin/sh and its directories belong to root on any sane system.
        check_root_only_writable(Path::new("/bin/sh"), "check command").unwrap();
        let dir = std::env::temp_dir().join(format!("lvsctl-sec-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("c.toml");
        std::fs::write(&f, "").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o666)).unwrap();
        let e = check_root_only_writable(&f, "config file").unwrap_err();
        // Not root: refused for the owner; root: refused for the mode.
        assert!(e.starts_with(&format!("refusing config file {}", f.display())), "{e}");
        // SAFETY: geteuid has no preconditions.
        #[allow(unsafe_code)]
        if unsafe { libc::geteuid() } == 0 {
            assert!(e.contains("writable by everyone (mode 0666)"), "{e}");
        } else {
            assert!(e.contains("not root"), "{e}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn tmp(name: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let d = std::env::temp_dir().join(format!("lvsctl-sec-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
        d
    }

    /// The path is checked as given: a symlink in a folder others can write
    /// is refused although what it points to (/bin/sh) is root's alone.
    #[test]
    fn a_symlink_in_a_folder_others_can_write_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let d = tmp("link");
        let open = d.join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        let link = open.join("check");
        std::os::unix::fs::symlink("/bin/sh", &link).unwrap();
        let e = check_root_only_writable(&link, "check command").unwrap_err();
        assert!(e.starts_with(&format!("refusing check command {}: its directory", link.display())), "{e}");
        // A folder above, given as `..` in the path, counts too.
        let up = open.join("..").join("open").join("check");
        assert!(check_root_only_writable(&up, "check command").is_err());
        std::fs::remove_dir_all(&d).unwrap();
    }

    /// Symlinks of root in root's folders are followed, `..` included; the
    /// answer is the file itself, with no symlink left in its path.
    #[test]
    fn root_symlinks_resolve_to_the_file_checked() {
        let sh = check_root_only_writable(Path::new("/bin/sh"), "check command").unwrap();
        assert_eq!(sh, std::fs::canonicalize("/bin/sh").unwrap());
        let via_dotdot = check_root_only_writable(Path::new("/usr/../bin/./sh"), "check command").unwrap();
        assert_eq!(via_dotdot, sh);
        let e = check_root_only_writable(Path::new("bin/sh"), "check command").unwrap_err();
        assert!(e.contains("must be an absolute path"), "{e}");
        let e = check_root_only_writable(Path::new("/bin"), "check command").unwrap_err();
        assert!(e.contains("not a regular file"), "{e}");
    }

    /// The config is read from the file that was checked; one others can
    /// write is not read at all.
    #[test]
    fn read_root_only_reads_what_was_checked() {
        use std::os::unix::fs::PermissionsExt;
        let d = tmp("read");
        let f = d.join("c.toml");
        std::fs::write(&f, "x = 1\n").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        // SAFETY: geteuid has no preconditions.
        #[allow(unsafe_code)]
        let root = unsafe { libc::geteuid() } == 0;
        if root {
            assert_eq!(read_root_only(&f, "config file").unwrap(), "x = 1\n");
        }
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o666)).unwrap();
        let e = read_root_only(&f, "config file").unwrap_err();
        assert!(e.starts_with(&format!("refusing config file {}", f.display())), "{e}");
        std::fs::remove_dir_all(&d).unwrap();
    }
}
