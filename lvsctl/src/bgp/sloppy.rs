//! `net.ipv4.vs.sloppy_tcp` and `sloppy_sctp` = 1 while VIPs are announced
//! over BGP: a flow the routers move here mid-stream (another director left
//! the ECMP group) is taken from any packet, not only from a SYN / INIT.
//!
//! The values they had are recorded (`bgp-sysctls-netns<ID>.json` in the
//! state folder) before they change, and written back on exit; a run that
//! was killed leaves the record, and the next run keeps its first values.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::{state, Error};

/// The sysctls, under [`ROOT`].
const NAMES: [&str; 2] = ["sloppy_tcp", "sloppy_sctp"];
const ROOT: &str = "/proc/sys/net/ipv4/vs";

/// The values before lvsctl set them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Record {
    /// `(name, previous value)`.
    pub(crate) previous: Vec<(String, String)>,
}

impl state::StateFile for Record {
    const FORMAT: u32 = 1;
    /// Only the two names, only numbers: the record says what exit writes where.
    fn check(&self) -> Result<(), String> {
        for (n, v) in &self.previous {
            if !NAMES.contains(&n.as_str()) || v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
                return Err(format!("unexpected sysctl record {n} = {v:?}"));
            }
        }
        Ok(())
    }
}

/// The record's path in `dir` for this network namespace.
pub(crate) fn record_path(dir: &Path) -> Result<PathBuf, Error> {
    Ok(dir.join(format!("bgp-sysctls-netns{}.json", state::netns_id()?)))
}

fn path(name: &str) -> PathBuf {
    Path::new(ROOT).join(name)
}

fn read(name: &str) -> Result<String, Error> {
    let p = path(name);
    std::fs::read_to_string(&p).map(|s| s.trim().to_owned()).map_err(|e| Error::Io {
        what: format!("cannot read {} (is the ip_vs module loaded?)", p.display()),
        source: e,
    })
}

fn write(name: &str, value: &str) -> Result<(), Error> {
    let p = path(name);
    std::fs::write(&p, format!("{value}\n"))
        .map_err(|e| Error::Io { what: format!("cannot write {value} to {}", p.display()), source: e })
}

/// Record the values, then set both to 1.
pub(crate) fn set(record: &Path) -> Result<(), Error> {
    let prev: Record = state::read(record)?.unwrap_or_default();
    let mut rec = Record::default();
    for n in NAMES {
        let current = read(n)?;
        let before = prev.previous.iter().find(|(p, _)| p == n).map_or(current, |(_, v)| v.clone());
        rec.previous.push((n.to_owned(), before));
    }
    state::write(record, &rec)?;
    for n in NAMES {
        let was = read(n)?;
        if was != "1" {
            write(n, "1")?;
            info!(sysctl = %path(n).display(), value = "1", was = %was, "set for flows that move between directors");
        }
    }
    Ok(())
}

/// Write the recorded values back and drop the record.
pub(crate) fn restore(record: &Path) {
    let rec: Record = match state::read(record) {
        Ok(Some(r)) => r,
        Ok(None) => return,
        Err(e) => {
            warn!(reason = %e, "cannot read the sloppy_tcp record; the sysctls stay as they are");
            return;
        }
    };
    for (n, v) in &rec.previous {
        match write(n, v) {
            Ok(()) => info!(sysctl = %path(n).display(), value = %v, "restored"),
            Err(e) => warn!(reason = %e, "cannot restore a sysctl"),
        }
    }
    let _ = state::remove(record);
}
