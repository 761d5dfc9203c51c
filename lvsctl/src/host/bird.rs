//! BIRD 2's control socket, through `birdc -s SOCKET`: reconfigure after
//! the announced set changed, and list the BGP sessions (for `director
//! status`). The daemon that runs BIRD is [`crate::bgp`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::process::Command;

/// How long one birdc call may take.
const TIMEOUT: Duration = Duration::from_secs(10);

/// The `birdc` program: `$LVSCTL_BIRDC`, else `birdc` on PATH or in the sbin folders.
pub fn birdc() -> Option<PathBuf> {
    crate::host::find_program("LVSCTL_BIRDC", "birdc")
}

/// Run `birdc -s socket ARGS...`; its output, or why it failed.
pub async fn run(socket: &Path, args: &[&str]) -> Result<String, String> {
    let prog = birdc().ok_or("birdc is not installed (Debian package bird2)")?;
    let mut c = Command::new(&prog);
    c.arg("-s").arg(socket).args(args).stdin(std::process::Stdio::null()).kill_on_drop(true);
    let out = tokio::time::timeout(TIMEOUT, c.output())
        .await
        .map_err(|_| format!("birdc {} did not answer within {TIMEOUT:?}", args.join(" ")))?
        .map_err(|e| format!("cannot run {}: {e}", prog.display()))?;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if !out.status.success() {
        return Err(format!("birdc {} failed ({}): {}", args.join(" "), out.status, one_line(&text)));
    }
    Ok(text)
}

fn one_line(s: &str) -> String {
    s.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join("; ")
}

/// `birdc configure`: BIRD rereads its config. Ok only when it says it did
/// (birdc exits 0 on a refused config too).
pub async fn configure(socket: &Path) -> Result<(), String> {
    let text = run(socket, &["configure"]).await?;
    if configured(&text) {
        Ok(())
    } else {
        Err(format!("BIRD refused to reconfigure: {}", one_line(&text)))
    }
}

/// Whether `birdc configure`'s output says the new config is taken.
pub fn configured(text: &str) -> bool {
    text.lines().any(|l| {
        let l = l.trim();
        l == "Reconfigured"
            || l.starts_with("Reconfiguration in progress")
            || l.starts_with("Reconfiguration already in progress")
    })
}

/// One BGP session as `birdc show protocols` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// The protocol's name in BIRD.
    pub name: String,
    /// `up`, `start`, `down`, ...
    pub state: String,
    /// Since when (BIRD's own format).
    pub since: String,
    /// BGP's state: `Established`, `Active`, `Connect`, ... and any error.
    pub info: String,
}

/// The BGP sessions of `birdc show protocols` output.
pub fn parse_protocols(text: &str) -> Vec<Session> {
    let mut out = Vec::new();
    for line in text.lines() {
        let w: Vec<&str> = line.split_whitespace().collect();
        if w.len() < 5 || w[1] != "BGP" {
            continue;
        }
        out.push(Session {
            name: w[0].to_owned(),
            state: w[3].to_owned(),
            since: w[4].to_owned(),
            info: w[5..].join(" "),
        });
    }
    out
}

/// The BGP sessions of the BIRD at `socket`.
pub async fn sessions(socket: &Path) -> Result<Vec<Session>, String> {
    Ok(parse_protocols(&run(socket, &["show", "protocols"]).await?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocols_table() {
        let text = "BIRD 2.0.12 ready.\nName       Proto      Table      State  Since         Info\ndevice1    Device     ---        up     21:40:02.331  \nlvsctl_vips Static    master4    up     21:40:02.331  \npeer_10_0_0_1 BGP        ---        up     21:40:06.512  Established   \npeer_10_0_0_9 BGP        ---        start  21:40:02.331  Active        Socket: Connection refused\n";
        let s = parse_protocols(text);
        assert_eq!(s.len(), 2);
        assert_eq!(
            (s[0].name.as_str(), s[0].state.as_str(), s[0].info.as_str()),
            ("peer_10_0_0_1", "up", "Established")
        );
        assert_eq!(s[1].info, "Active Socket: Connection refused");
    }

    #[test]
    fn configure_answers() {
        assert!(configured("BIRD 2.0.12 ready.\nReading configuration from /run/lvsctl/bird.conf\nReconfigured\n"));
        assert!(!configured(
            "BIRD 2.0.12 ready.\nReading configuration from /x\n/x:3:1 syntax error, unexpected CF_SYM_UNDEFINED\n"
        ));
    }
}
