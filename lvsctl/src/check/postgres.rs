//! The `postgres` health check: speak the start of PostgreSQL's wire protocol
//! (version 3.0) to a real server and judge its answer as `pg_isready`
//! (libpq's `PQping`) does, without any client program.
//!
//! The probe sends a StartupMessage (user, database) and reads the first
//! answer:
//!
//! | answer                                         | `pg_isready` | check |
//! |------------------------------------------------|--------------|-------|
//! | an authentication request, or ReadyForQuery    | 0 accepting  | up    |
//! | ErrorResponse with SQLSTATE 57P03              | 1 rejecting  | down  |
//! | no answer, refused, timeout, no SQLSTATE       | 2 no response| down  |
//! | ErrorResponse with any other SQLSTATE          | 0 accepting  | up    |
//!
//! 57P03 (`cannot_connect_now`) is what a server that is starting up,
//! shutting down or in recovery without hot standby answers. Any other
//! error (`28P01` bad password, `3D000` no such database, `53300` too many
//! connections) means the server is up and talking, so it is up, as for
//! `pg_isready`.
//!
//! With `login = true` the check goes further: it authenticates (trust,
//! cleartext password, MD5 or SCRAM-SHA-256, the password read from a
//! root-only file at each check), waits for ReadyForQuery and, with `query`,
//! runs that query; any error on the way is down. Message framing and SCRAM
//! come from the `postgres-protocol` crate. No TLS: the connection is plain
//! TCP, as the real servers are on the director's own network.

use crate::check::Owner;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use bytes::BytesMut;
use fallible_iterator::FallibleIterator;
use postgres_protocol::authentication::md5_hash;
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256, SCRAM_SHA_256};
use postgres_protocol::message::backend::{ErrorResponseBody, Header, Message};
use postgres_protocol::message::frontend;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{security, CheckConfig};

/// The SQLSTATE of "the database system is starting up / shutting down /
/// not accepting connections": the server is there but refuses sessions.
pub const CANNOT_CONNECT_NOW: &str = "57P03";
/// The user the probe names when the config does not say.
pub const DEFAULT_USER: &str = "postgres";
/// A message from the server longer than this is not a PostgreSQL answer.
const MAX_MESSAGE: usize = 1024 * 1024;

/// A `postgres` check, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostgresCheck {
    /// The port to connect to.
    pub port: u16,
    /// The database user named in the StartupMessage.
    pub user: String,
    /// The database named in the StartupMessage.
    pub database: String,
    /// Log in (and run a query) instead of only asking whether the server
    /// accepts connections.
    pub login: Option<Login>,
}

/// What `login = true` adds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Login {
    /// The root-only file holding the password (read at each check).
    pub password_file: Option<PathBuf>,
    /// A query to run once logged in; any error fails the check.
    pub query: Option<String>,
}

/// A non-empty text without NUL bytes (a database name, a query): wrong ones
/// are refused while the config is parsed, with their line and column.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct PgText(pub String);

impl<'de> Deserialize<'de> for PgText {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if s.trim().is_empty() || s.contains('\0') {
            return Err(serde::de::Error::custom(format!("{s:?} must be a non-empty text without NUL bytes")));
        }
        Ok(Self(s))
    }
}

/// An absolute file path (the password file), refused at parse time otherwise.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct AbsPath(pub PathBuf);

impl<'de> Deserialize<'de> for AbsPath {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let p = PathBuf::deserialize(d)?;
        if !p.is_absolute() {
            return Err(serde::de::Error::custom(format!("{} must be an absolute path", p.display())));
        }
        Ok(Self(p))
    }
}

/// Resolve a `postgres` check for a real server listening on `port`.
pub(super) fn resolve(c: &CheckConfig, port: u16, what: Owner<'_>) -> Result<PostgresCheck, String> {
    let user = c.user.clone().unwrap_or_else(|| DEFAULT_USER.to_owned());
    if user.is_empty() || user.contains('\0') {
        return Err(format!("{what}: postgres check user {user:?} must be a non-empty name without NUL bytes"));
    }
    // As libpq: the database defaults to the user's name.
    let database = c.database.as_ref().map_or_else(|| user.clone(), |d| d.0.clone());
    let login = if c.login == Some(true) {
        let password_file = c.password_file.as_ref().map(|p| p.0.clone());
        if let Some(p) = &password_file {
            read_password(p).map_err(|e| format!("{what}: {e}"))?;
        }
        Some(Login { password_file, query: c.query.as_ref().map(|q| q.0.clone()) })
    } else {
        for (set, field) in [(c.query.is_some(), "query"), (c.password_file.is_some(), "password_file")] {
            if set {
                return Err(format!("{what}: postgres check field `{field}` needs `login = true`"));
            }
        }
        None
    };
    Ok(PostgresCheck { port: c.check_port(port, what)?, user, database, login })
}

/// The password: the file's text without its line end. The file must be
/// root's, writable and readable by root only.
fn read_password(path: &Path) -> Result<String, String> {
    let text = security::read_root_secret(path, "password file")?;
    let pw = text.strip_suffix('\n').unwrap_or(&text);
    let pw = pw.strip_suffix('\r').unwrap_or(pw);
    if pw.is_empty() {
        return Err(format!("password file {} is empty", path.display()));
    }
    Ok(pw.to_owned())
}

/// The outcome of the exchange, before it is told as up or down.
enum Answer {
    /// Accepting connections (for the probe) or logged in and the query ran;
    /// `session`: a session was established (ReadyForQuery), to be ended
    /// with Terminate. Otherwise the check just closes the connection, as
    /// `PQping` does: a server in the middle of authentication logs nothing
    /// for a client that leaves, but complains about any other message.
    Up { session: bool },
    /// Not accepting connections, or not a PostgreSQL answer: the reason.
    Down(String),
}

impl PostgresCheck {
    /// Run the check over `s`, connected to the real server at `addr`.
    pub(crate) async fn exchange(&self, s: TcpStream, addr: SocketAddr) -> Result<(), String> {
        let password = match self.login.as_ref().and_then(|l| l.password_file.as_deref()) {
            Some(p) => Some(read_password(p).map_err(|e| format!("postgres {addr}: {e}"))?),
            None => None,
        };
        self.talk(s, addr, password.as_deref()).await
    }

    /// [`Self::exchange`] with the password already read.
    async fn talk(&self, s: TcpStream, addr: SocketAddr, password: Option<&str>) -> Result<(), String> {
        let mut conn = Conn { s, buf: BytesMut::with_capacity(1024) };
        let answer = match &self.login {
            None => self.probe(&mut conn).await,
            Some(l) => self.login(&mut conn, l, password).await,
        };
        match answer {
            Ok(Answer::Up { session }) => {
                if session {
                    // Say goodbye, as a client that leaves does; its failure changes nothing.
                    let mut out = BytesMut::new();
                    frontend::terminate(&mut out);
                    let _ = conn.s.write_all(&out).await;
                }
                Ok(())
            }
            Ok(Answer::Down(why)) => Err(format!("postgres {addr}: {why}")),
            Err(e) => Err(format!("postgres {addr}: {e}")),
        }
    }

    /// One line for the log: `postgres port 5432 user postgres database postgres login, query "SELECT 1"`.
    pub fn describe(&self) -> String {
        let mut s = format!("postgres port {} user {} database {}", self.port, self.user, self.database);
        match &self.login {
            None => {}
            Some(Login { query: Some(q), .. }) => s.push_str(&format!(" login, query {q:?}")),
            Some(Login { query: None, .. }) => s.push_str(" login"),
        }
        s
    }

    /// The StartupMessage for this check.
    fn startup(&self) -> Result<BytesMut, String> {
        let mut out = BytesMut::new();
        let params = [("user", self.user.as_str()), ("database", self.database.as_str())];
        frontend::startup_message(params, &mut out).map_err(|e| format!("startup message: {e}"))?;
        Ok(out)
    }

    /// `pg_isready`: the first answer to the StartupMessage decides. A
    /// request for a password (or any other authentication) is up at once;
    /// AuthenticationOk (trust) is up too, and the session it starts is read
    /// up to ReadyForQuery so that it can be ended cleanly.
    async fn probe(&self, conn: &mut Conn) -> Result<Answer, String> {
        conn.send(&self.startup()?).await?;
        let mut authenticated = false;
        loop {
            return Ok(match conn.next().await? {
                Message::AuthenticationOk => {
                    authenticated = true;
                    continue;
                }
                Message::AuthenticationCleartextPassword
                | Message::AuthenticationMd5Password(_)
                | Message::AuthenticationSasl(_)
                | Message::AuthenticationGss
                | Message::AuthenticationKerberosV5
                | Message::AuthenticationScmCredential
                | Message::AuthenticationSspi => Answer::Up { session: false },
                Message::ReadyForQuery(_) => Answer::Up { session: true },
                // As PQping: once authenticated, any failure still means "accepting".
                Message::ErrorResponse(_) if authenticated => Answer::Up { session: false },
                Message::ErrorResponse(e) => judge_error(&e),
                // A notice may come first; the answer follows it. A session
                // sends its parameters and key before ReadyForQuery.
                Message::NoticeResponse(_) | Message::ParameterStatus(_) => continue,
                Message::BackendKeyData(_) if authenticated => continue,
                _ => Answer::Down("unexpected first answer to the startup message".into()),
            });
        }
    }

    /// Log in, wait for ReadyForQuery, run the query if any.
    async fn login(&self, conn: &mut Conn, l: &Login, password: Option<&str>) -> Result<Answer, String> {
        conn.send(&self.startup()?).await?;
        let mut auth = Auth { user: &self.user, password, scram: None };
        loop {
            match conn.next().await? {
                Message::ReadyForQuery(_) => break,
                Message::ErrorResponse(e) => return Ok(Answer::Down(format!("login refused: {}", error_text(&e)))),
                Message::AuthenticationOk => auth.done()?,
                Message::ParameterStatus(_) | Message::BackendKeyData(_) | Message::NoticeResponse(_) => {}
                Message::AuthenticationSaslContinue(b) => conn.send(&auth.scram_continue(b.data()).await?).await?,
                m => conn.send(&auth.answer(m)?).await?,
            }
        }
        match &l.query {
            None => Ok(Answer::Up { session: true }),
            Some(q) => run_query(conn, q).await,
        }
    }
}

/// Send the query and read until ReadyForQuery; an ErrorResponse on the way
/// is down.
async fn run_query(conn: &mut Conn, q: &str) -> Result<Answer, String> {
    let mut out = BytesMut::new();
    frontend::query(q, &mut out).map_err(|e| format!("query: {e}"))?;
    conn.send(&out).await?;
    let mut failed = None;
    loop {
        match conn.next().await? {
            Message::ReadyForQuery(_) => break,
            Message::ErrorResponse(e) => failed = Some(error_text(&e)),
            _ => {}
        }
    }
    Ok(match failed {
        None => Answer::Up { session: true },
        Some(e) => Answer::Down(format!("query {q:?} failed: {e}")),
    })
}

/// The login's side of authentication: the answers to the server's requests.
struct Auth<'a> {
    user: &'a str,
    password: Option<&'a str>,
    /// The SCRAM exchange under way, if any.
    scram: Option<ScramSha256>,
}

impl Auth<'_> {
    fn password(&self) -> Result<&[u8], String> {
        self.password.map(str::as_bytes).ok_or_else(|| "the server asks for a password: set `password_file`".into())
    }

    /// The message answering an authentication request.
    fn answer(&mut self, m: Message) -> Result<BytesMut, String> {
        let mut out = BytesMut::new();
        let io = |e: std::io::Error| format!("authentication: {e}");
        match m {
            Message::AuthenticationCleartextPassword => frontend::password_message(self.password()?, &mut out),
            Message::AuthenticationMd5Password(b) => {
                let h = md5_hash(self.user.as_bytes(), self.password()?, b.salt());
                frontend::password_message(h.as_bytes(), &mut out)
            }
            Message::AuthenticationSasl(b) => {
                let mechs: Vec<String> = b.mechanisms().map(|m| Ok(m.to_owned())).collect().map_err(io)?;
                if !mechs.iter().any(|m| m == SCRAM_SHA_256) {
                    return Err(format!("the server offers SASL {mechs:?}, not {SCRAM_SHA_256}"));
                }
                let scram = ScramSha256::new(self.password()?, ChannelBinding::unsupported());
                let r = frontend::sasl_initial_response(SCRAM_SHA_256, scram.message(), &mut out);
                self.scram = Some(scram);
                r
            }
            Message::AuthenticationSaslFinal(b) => {
                // Checks the server's signature: it knows the password too.
                let mut scram = self.scram.take().ok_or("SASL final without a SASL start")?;
                scram.finish(b.data()).map_err(io)?;
                return Ok(out);
            }
            _ => return Err("the server asks for an authentication method this check does not support".into()),
        }
        .map_err(io)?;
        Ok(out)
    }

    /// The answer to the server's first SCRAM message. Deriving the key from
    /// the password (4096 rounds of HMAC-SHA-256, or what the server asks)
    /// is CPU work: it runs on a blocking thread, not on the checks' runtime.
    async fn scram_continue(&mut self, server_first: &[u8]) -> Result<BytesMut, String> {
        let mut scram = self.scram.take().ok_or("SASL continue without a SASL start")?;
        let data = server_first.to_vec();
        let scram = tokio::task::spawn_blocking(move || scram.update(&data).map(|()| scram))
            .await
            .map_err(|e| format!("authentication: {e}"))?
            .map_err(|e| format!("authentication: {e}"))?;
        let mut out = BytesMut::new();
        frontend::sasl_response(scram.message(), &mut out).map_err(|e| format!("authentication: {e}"))?;
        self.scram = Some(scram);
        Ok(out)
    }

    /// AuthenticationOk: refused if a SCRAM exchange did not end with the
    /// server proving it knows the password.
    fn done(&self) -> Result<(), String> {
        match self.scram {
            Some(_) => Err("the server ended SCRAM authentication without proving itself".into()),
            None => Ok(()),
        }
    }
}

/// `PQping`'s verdict on an ErrorResponse: 57P03 and no SQLSTATE are down,
/// any other SQLSTATE is up (the server is accepting connections; it did not
/// like this user or database).
fn judge_error(e: &ErrorResponseBody) -> Answer {
    match field(e, b'C') {
        Some(code) if code == CANNOT_CONNECT_NOW => {
            Answer::Down(format!("not accepting connections: {}", error_text(e)))
        }
        Some(code) if code.len() == 5 => Answer::Up { session: false },
        _ => Answer::Down(format!("error without a SQLSTATE: {}", error_text(e))),
    }
}

/// One field of an ErrorResponse (`C` SQLSTATE, `M` message, `D` detail).
fn field(e: &ErrorResponseBody, kind: u8) -> Option<String> {
    let mut fields = e.fields();
    while let Ok(Some(f)) = fields.next() {
        if f.type_() == kind {
            return Some(String::from_utf8_lossy(f.value_bytes()).into_owned());
        }
    }
    None
}

/// "message (SQLSTATE): detail", for the log.
fn error_text(e: &ErrorResponseBody) -> String {
    let mut s = field(e, b'M').unwrap_or_else(|| "no message".into());
    if let Some(c) = field(e, b'C') {
        s = format!("{s} ({c})");
    }
    if let Some(d) = field(e, b'D') {
        s = format!("{s}: {d}");
    }
    s
}

/// A connection to the server: the socket and what was read of it.
struct Conn {
    s: TcpStream,
    buf: BytesMut,
}

impl Conn {
    async fn send(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.s.write_all(bytes).await.map_err(|e| format!("send: {e}"))
    }

    /// The next whole message from the server.
    async fn next(&mut self) -> Result<Message, String> {
        loop {
            if let Ok(Some(h)) = Header::parse(&self.buf) {
                if h.len() as usize > MAX_MESSAGE {
                    return Err("the answer is not the PostgreSQL protocol (message too long)".into());
                }
            }
            let bad = |e: std::io::Error| format!("the answer is not the PostgreSQL protocol: {e}");
            if let Some(m) = Message::parse(&mut self.buf).map_err(bad)? {
                return Ok(m);
            }
            match self.s.read_buf(&mut self.buf).await {
                Ok(0) => return Err("the server closed the connection without an answer".into()),
                Ok(_) => {}
                Err(e) => return Err(format!("receive: {e}")),
            }
        }
    }
}

#[cfg(test)]
#[path = "postgres_tests.rs"]
mod tests;
