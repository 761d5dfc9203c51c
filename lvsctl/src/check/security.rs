//! keepalived-style script security: the daemon runs as root, so a config file
//! or check program that someone else can change is a way to run commands as
//! root (or to redirect traffic). Both must be writable by root only, and so
//! must every directory above them; exec checks run as an unprivileged user.

use std::ffi::CString;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// The sticky bit: in such a directory only a file's owner may rename or delete it.
const S_ISVTX: u32 = 0o1000;

/// Refuse `path` unless it and every directory above it are owned by root
/// and writable by root only. A sticky directory owned by root (`/tmp`) may be
/// world-writable: nobody else can replace the root-owned entry below it.
/// `what` names the file in the message (`config file`, `check command`).
pub fn check_root_only_writable(path: &Path, what: &str) -> Result<(), String> {
    let real = std::fs::canonicalize(path).map_err(|e| format!("{what} {}: {e}", path.display()))?;
    let mut cur: Option<&Path> = Some(&real);
    let mut first = true;
    while let Some(p) = cur {
        let md = std::fs::metadata(p).map_err(|e| format!("{what} {}: {p:?}: {e}", path.display()))?;
        let mode = md.mode() & 0o7777;
        let shown = if first {
            format!("{what} {}", path.display())
        } else {
            format!("{what} {}: its directory {}", path.display(), p.display())
        };
        if md.uid() != 0 {
            return Err(format!(
                "refusing {shown}: owned by uid {}, not root (anyone but root who can change it could make lvsctl run commands as root)",
                md.uid()
            ));
        }
        let sticky_dir = !first && md.is_dir() && mode & S_ISVTX != 0;
        if mode & 0o022 != 0 && !sticky_dir {
            let who = if mode & 0o002 != 0 { "everyone" } else { "its group" };
            return Err(format!(
                "refusing {shown}: writable by {who} (mode {mode:04o}); make it writable by root only (chmod go-w)"
            ));
        }
        first = false;
        cur = p.parent();
    }
    Ok(())
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
}
