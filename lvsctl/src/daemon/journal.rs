//! Logs for the systemd journal: when stderr is the journal (`JOURNAL_STREAM`
//! is set), each line starts with its syslog priority (`<3>` error, `<4>`
//! warning, `<6>` info, `<7>` debug), which journald reads
//! (`SyslogLevelPrefix=`, on by default) so `journalctl -p warning` finds the
//! real servers that went down.

use std::fmt;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// An event format that puts `<PRIORITY>` before what `F` writes.
#[derive(Debug, Clone)]
pub struct SyslogPrefix<F>(pub F);

/// The syslog priority of a tracing level.
fn priority(l: Level) -> u8 {
    match l {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        Level::DEBUG | Level::TRACE => 7,
    }
}

impl<S, N, F> FormatEvent<S, N> for SyslogPrefix<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        write!(writer, "<{}>", priority(*event.metadata().level()))?;
        self.0.format_event(ctx, writer, event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_carry_their_priority() {
        let buf = Buf::default();
        let b = buf.clone();
        let sub = tracing_subscriber::fmt()
            .with_writer(move || b.clone())
            .with_ansi(false)
            .event_format(SyslogPrefix(tracing_subscriber::fmt::format().without_time()))
            .finish();
        tracing::subscriber::with_default(sub, || {
            tracing::warn!(real_server = "10.18.68.186:15858", "real server down");
            tracing::info!("real server up");
        });
        let out = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 2, "{out}");
        assert!(
            lines[0].starts_with("<4> WARN ")
                && lines[0].ends_with("real server down real_server=\"10.18.68.186:15858\""),
            "{out}"
        );
        assert!(lines[1].starts_with("<6> INFO "), "{out}");
    }
}

/// Tell systemd about the daemon's state (`sd_notify(3)`): `READY=1` once the
/// config is applied (for `Type=notify`), `STATUS=...` for `systemctl
/// status`, `STOPPING=1`. Does nothing unless systemd set `NOTIFY_SOCKET`.
pub fn sd_notify(state: &str) {
    if let Some(path) = std::env::var_os("NOTIFY_SOCKET") {
        if let Err(e) = notify_to(&path, state) {
            tracing::debug!(reason = %e, "cannot notify systemd");
        }
    }
}

fn notify_to(path: &std::ffi::OsStr, state: &str) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::net::{SocketAddr, UnixDatagram};
    let sock = UnixDatagram::unbound()?;
    let addr = match path.as_bytes().strip_prefix(b"@") {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(name)?
        }
        None => SocketAddr::from_pathname(path)?,
    };
    sock.send_to_addr(state.as_bytes(), &addr)?;
    Ok(())
}

#[cfg(test)]
mod notify_tests {
    #[test]
    fn notify_reaches_the_socket() {
        let dir = std::env::temp_dir().join(format!("lvsctl-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("notify");
        let rx = std::os::unix::net::UnixDatagram::bind(&p).unwrap();
        super::notify_to(p.as_os_str(), "READY=1\nSTATUS=2 of 2 real servers up").unwrap();
        let mut buf = [0u8; 128];
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=2 of 2 real servers up");
        // An abstract socket name (systemd's usual form).
        let name = format!("lvsctl-notify-test-{}", std::process::id());
        use std::os::linux::net::SocketAddrExt;
        let a = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let rx2 = std::os::unix::net::UnixDatagram::bind_addr(&a).unwrap();
        super::notify_to(std::ffi::OsStr::new(&format!("@{name}")), "STOPPING=1").unwrap();
        let n = rx2.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"STOPPING=1");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
