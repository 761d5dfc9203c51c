//! A minimal HTTP/1.0 client for `http` health checks: one GET, read the
//! whole response (bounded), compare the status code and look for a string in
//! the body. No keep-alive, no redirects, no TLS, no chunked encoding (an
//! HTTP/1.0 request gets an unchunked answer).

use std::net::{IpAddr, SocketAddr};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// At most this much of a response is read.
const MAX_RESPONSE: u64 = 64 * 1024;

/// An `http` check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpCheck {
    /// The port to connect to.
    pub port: u16,
    /// The path to GET.
    pub path: String,
    /// The expected status code.
    pub status: u16,
    /// A string the body must contain.
    pub body: Option<String>,
    /// The Host header; default the address.
    pub host: Option<String>,
}

impl HttpCheck {
    /// The request bytes for a real server at `ip`.
    pub fn request(&self, ip: IpAddr) -> Vec<u8> {
        let host = match (&self.host, ip) {
            (Some(h), _) => h.clone(),
            (None, IpAddr::V4(a)) => format!("{a}:{}", self.port),
            (None, IpAddr::V6(a)) => format!("[{a}]:{}", self.port),
        };
        format!(
            "GET {} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: lvsctl-health-check\r\nAccept: */*\r\nConnection: close\r\n\r\n",
            self.path
        )
        .into_bytes()
    }

    /// Whether a complete response passes the check.
    pub fn judge(&self, response: &[u8]) -> Result<(), String> {
        let (status, body) = parse_response(response)?;
        if status != self.status {
            return Err(format!("http GET {} answered status {status}, expected {}", self.path, self.status));
        }
        if let Some(want) = &self.body {
            if !contains(body, want.as_bytes()) {
                return Err(format!("http GET {}: body does not contain {want:?}", self.path));
            }
        }
        Ok(())
    }

    /// GET the path from the real server at `ip` (the caller bounds the time).
    #[cfg(test)]
    pub(crate) async fn run(&self, ip: IpAddr) -> Result<(), String> {
        let addr = SocketAddr::new(ip, self.port);
        let s = tokio::net::TcpStream::connect(addr).await.map_err(|e| format!("http connect to {addr}: {e}"))?;
        self.exchange(s, ip, "http").await
    }

    /// GET the path over `s`, connected to the real server at `ip`: a TCP
    /// stream for `http`, a TLS stream for `https` (`kind` names it in errors).
    pub(crate) async fn exchange<S>(&self, mut s: S, ip: IpAddr, kind: &str) -> Result<(), String>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let addr = SocketAddr::new(ip, self.port);
        s.write_all(&self.request(ip)).await.map_err(|e| format!("{kind} request to {addr}: {e}"))?;
        s.flush().await.map_err(|e| format!("{kind} request to {addr}: {e}"))?;
        let buf = read_response(&mut s).await.map_err(|e| format!("{kind} response from {addr}: {e}"))?;
        self.judge(&buf)
    }
}

/// The whole response, at most [`MAX_RESPONSE`] bytes. A TLS server that
/// closes the connection without saying so first (no `close_notify`, which
/// many HTTP servers skip) still gave its complete HTTP/1.0 answer: what was
/// read until then is the response.
async fn read_response<S: AsyncRead + Unpin>(s: &mut S) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    match s.take(MAX_RESPONSE).read_to_end(&mut buf).await {
        Ok(_) => Ok(buf),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !buf.is_empty() => Ok(buf),
        Err(e) => Err(e),
    }
}

/// The status code and body of a response (`HTTP/1.x NNN reason`, headers, blank line, body).
fn parse_response(r: &[u8]) -> Result<(u16, &[u8]), String> {
    if r.is_empty() {
        return Err("http: the server closed the connection without answering".to_owned());
    }
    let line_end = r.iter().position(|&b| b == b'\n').unwrap_or(r.len());
    let line = String::from_utf8_lossy(&r[..line_end]);
    let line = line.trim_end();
    let mut parts = line.splitn(3, ' ');
    let version = parts.next().unwrap_or("");
    let code = parts.next().unwrap_or("");
    if !version.starts_with("HTTP/") || code.len() != 3 {
        let shown: String = line.chars().take(60).collect();
        return Err(format!("http: not an HTTP response: {shown:?}"));
    }
    let status: u16 = code.parse().map_err(|_| format!("http: bad status code {code:?}"))?;
    let body =
        find(r, b"\r\n\r\n").map(|i| &r[i + 4..]).or_else(|| find(r, b"\n\n").map(|i| &r[i + 2..])).unwrap_or(&[]);
    Ok((status, body))
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || find(hay, needle).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(body: Option<&str>) -> HttpCheck {
        HttpCheck { port: 8080, path: "/health".into(), status: 200, body: body.map(Into::into), host: None }
    }

    #[test]
    fn request_bytes() {
        let r = check(None).request("10.18.68.186".parse().unwrap());
        assert_eq!(
            String::from_utf8(r).unwrap(),
            "GET /health HTTP/1.0\r\nHost: 10.18.68.186:8080\r\nUser-Agent: lvsctl-health-check\r\nAccept: */*\r\nConnection: close\r\n\r\n"
        );
        let r = check(None).request("2001:db8::1".parse().unwrap());
        assert!(String::from_utf8(r).unwrap().contains("Host: [2001:db8::1]:8080\r\n"));
    }

    #[test]
    fn judging() {
        let ok = b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nall good\n";
        check(None).judge(ok).unwrap();
        check(Some("good")).judge(ok).unwrap();
        assert_eq!(check(Some("ready")).judge(ok).unwrap_err(), "http GET /health: body does not contain \"ready\"");
        // The header must not satisfy a body match.
        assert!(check(Some("text/plain")).judge(ok).is_err());
        assert_eq!(
            check(None).judge(b"HTTP/1.1 503 Service Unavailable\r\n\r\n").unwrap_err(),
            "http GET /health answered status 503, expected 200"
        );
        assert!(check(None).judge(b"").unwrap_err().contains("without answering"));
        assert!(check(None).judge(b"SSH-2.0-OpenSSH_9.2\r\n").unwrap_err().contains("not an HTTP response"));
        check(Some("x")).judge(b"HTTP/1.0 200 OK\n\nx").unwrap();
    }

    #[tokio::test]
    async fn against_a_server() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut req = vec![0u8; 1024];
            let n = s.read(&mut req).await.unwrap();
            s.write_all(b"HTTP/1.0 200 OK\r\n\r\nhealthy").await.unwrap();
            String::from_utf8_lossy(&req[..n]).into_owned()
        });
        let c = HttpCheck { port, ..check(Some("healthy")) };
        c.run("127.0.0.1".parse().unwrap()).await.unwrap();
        assert!(server.await.unwrap().starts_with("GET /health HTTP/1.0\r\n"));
    }
}
