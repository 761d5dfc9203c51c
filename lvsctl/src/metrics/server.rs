//! The HTTP endpoint: `GET /metrics` answers the Prometheus text format,
//! every other path 404. HTTP/1.1 by hyper on the daemon's tokio runtime;
//! scrapes are answered one at a time (each reads the whole IPVS table), and
//! a client that does not send its request within [`HEADER_TIMEOUT`] is
//! dropped.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{header, Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Mutex;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use super::{Metrics, CONTENT_TYPE};
use crate::Error;

/// How long a client may take to send its request head.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// The endpoint, made ready before the daemon changes anything (an address
/// in use or not on this host is an error at start): the listening socket
/// and an IPVS connection of its own for the scrapes.
#[derive(Debug)]
pub struct Endpoint {
    listener: TcpListener,
    ipvs: ipvs::Ipvs,
}

/// The running server; it stops when dropped.
#[derive(Debug)]
pub struct Server(JoinHandle<()>);

impl Drop for Server {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Endpoint {
    /// Listen on `addr` and connect to IPVS.
    pub async fn open(addr: SocketAddr) -> Result<Self, Error> {
        let listener = TcpListener::bind(addr).await.map_err(|e| Error::Io {
            what: format!("cannot serve metrics on {addr} (metrics = \"{addr}\" or --metrics)"),
            source: e,
        })?;
        Ok(Self { listener, ipvs: ipvs::Ipvs::connect().await? })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.local_addr().ok()
    }

    /// Serve `metrics` until the [`Server`] is dropped.
    pub fn serve(self, metrics: Metrics) -> Server {
        if let Some(a) = self.local_addr() {
            info!(address = %format!("http://{a}/metrics"), "serving Prometheus metrics");
        }
        let ipvs = Arc::new(Mutex::new(self.ipvs));
        let listener = self.listener;
        Server(tokio::spawn(async move {
            loop {
                let stream = match listener.accept().await {
                    Ok((s, _)) => s,
                    Err(e) => {
                        // Out of file descriptors, for example: wait, do not spin.
                        warn!(reason = %e, "metrics: cannot accept a connection");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                tokio::spawn(connection(stream, metrics.clone(), Arc::clone(&ipvs)));
            }
        }))
    }
}

/// Answer the requests of one connection.
async fn connection(stream: tokio::net::TcpStream, metrics: Metrics, ipvs: Arc<Mutex<ipvs::Ipvs>>) {
    let service = service_fn(move |req| answer(req, metrics.clone(), Arc::clone(&ipvs)));
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(TokioIo::new(stream), service);
    // A client that goes away is its own business.
    let _ = conn.await;
}

/// One request.
async fn answer(
    req: Request<Incoming>,
    metrics: Metrics,
    ipvs: Arc<Mutex<ipvs::Ipvs>>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.uri().path() != "/metrics" {
        return Ok(plain(StatusCode::NOT_FOUND, "not found: metrics are at /metrics\n"));
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return Ok(plain(StatusCode::METHOD_NOT_ALLOWED, "only GET /metrics\n"));
    }
    let text = {
        let ipvs = ipvs.lock().await;
        metrics.scrape(&ipvs).await
    };
    Ok(with_type(StatusCode::OK, CONTENT_TYPE, text))
}

fn plain(status: StatusCode, text: &str) -> Response<Full<Bytes>> {
    with_type(status, "text/plain; charset=utf-8", text.to_owned())
}

fn with_type(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static(content_type));
    r
}
