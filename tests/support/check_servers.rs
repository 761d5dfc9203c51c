//! Servers for the `https`, `udp` and `dns` checks of `director run`
//! (tests/checks.rs), each in a thread inside a real server's namespace and
//! switchable between answering well, answering wrong and off (socket
//! closed: TCP connections are refused, UDP datagrams draw an ICMP port
//! unreachable):
//!
//! - [`tls_server`]: HTTPS with a certificate of a test CA ([`Pki`], made by
//!   rcgen); "wrong" presents a certificate of another CA;
//! - [`udp_echo`]: answers `pong <datagram>`; "wrong" answers `busy`;
//! - [`dns_server`]: answers `A` questions for one name (hickory-proto);
//!   "wrong" answers SERVFAIL.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{RData, Record, RecordType};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::ServerConfig;

use lvsctl_tests::topology::{enter, Netns};

/// What a switchable server does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Mode {
    /// Socket closed.
    Off = 0,
    /// Answers as a healthy server does.
    Good = 1,
    /// Answers, but wrong for the check.
    Wrong = 2,
}

impl Mode {
    fn from(v: u8) -> Self {
        match v {
            1 => Self::Good,
            2 => Self::Wrong,
            _ => Self::Off,
        }
    }
}

/// A server thread and its switch. Stops on drop.
pub struct Switched {
    want: Arc<AtomicU8>,
    now: Arc<AtomicU8>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Switched {
    /// Start `serve` in a thread inside `ns`, answering well.
    fn start(ns: &Netns, serve: impl FnOnce(&Control) + Send + 'static) -> Self {
        let c = Control {
            want: Arc::new(AtomicU8::new(Mode::Good as u8)),
            now: Arc::new(AtomicU8::new(Mode::Off as u8)),
            stop: Arc::new(AtomicBool::new(false)),
        };
        let (want, now, stop) = (c.want.clone(), c.now.clone(), c.stop.clone());
        let path = ns.path();
        let thread = std::thread::spawn(move || {
            enter(&path);
            serve(&c);
        });
        let s = Self { want, now, stop, thread: Some(thread) };
        s.set(Mode::Good);
        s
    }

    /// Switch; returns once the server works so.
    pub fn set(&self, m: Mode) {
        self.want.store(m as u8, Ordering::SeqCst);
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.now.load(Ordering::SeqCst) != m as u8 {
            assert!(Instant::now() < deadline, "server did not switch to {m:?}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Switched {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The server thread's side of the switch.
struct Control {
    want: Arc<AtomicU8>,
    now: Arc<AtomicU8>,
    stop: Arc<AtomicBool>,
}

impl Control {
    /// Serve until stopped: `open` makes the socket when the mode leaves
    /// Off, the socket is closed when it goes Off, `once` handles (at most)
    /// one request in the current mode and must not block for long.
    fn run<S>(&self, mut open: impl FnMut() -> S, mut once: impl FnMut(&S, Mode)) {
        let mut sock: Option<S> = None;
        while !self.stop.load(Ordering::SeqCst) {
            let m = Mode::from(self.want.load(Ordering::SeqCst));
            if m == Mode::Off {
                sock = None;
            } else if sock.is_none() {
                sock = Some(open());
            }
            self.now.store(m as u8, Ordering::SeqCst);
            match &sock {
                Some(s) => once(s, m),
                None => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    }
}

/// A test CA and a server certificate it signed for `names`.
pub struct Pki {
    /// The CA certificate, PEM.
    pub ca_pem: String,
    /// A TLS server configuration with the certificate.
    pub server: Arc<ServerConfig>,
}

impl Pki {
    /// A new CA called `ca_name` and a certificate for `names`.
    pub fn new(ca_name: &str, names: &[&str]) -> Self {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name.push(DnType::CommonName, ca_name);
        let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
        let issuer = Issuer::new(ca, ca_key);
        let key = KeyPair::generate().unwrap();
        let leaf = CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>()).unwrap();
        let cert = leaf.signed_by(&key, &issuer).unwrap();
        let key = PrivateKeyDer::from(PrivatePkcs8KeyDer::from(key.serialize_der()));
        #[allow(deprecated)] // ring, as lvsctl uses it
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let server = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.der().clone()], key)
            .unwrap();
        Self { ca_pem, server: Arc::new(server) }
    }
}

/// An HTTPS server on 0.0.0.0:`port` of `ns` answering `200 OK` and `body`
/// with `good`'s certificate; [`Mode::Wrong`] presents `wrong`'s.
pub fn tls_server(ns: &Netns, port: u16, good: &Pki, wrong: &Pki, body: &str) -> Switched {
    let (good, wrong) = (good.server.clone(), wrong.server.clone());
    let answer = format!("HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n{body}");
    Switched::start(ns, move |c| {
        let open = || {
            let l = TcpListener::bind(("0.0.0.0", port)).unwrap_or_else(|e| panic!("bind tcp {port}: {e}"));
            l.set_nonblocking(true).unwrap();
            l
        };
        c.run(open, |l, m| match l.accept() {
            Ok((s, _)) => serve_tls(s, if m == Mode::Good { &good } else { &wrong }, &answer),
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        });
    })
}

/// One HTTPS exchange: handshake, read the request, answer, close_notify.
fn serve_tls(s: TcpStream, config: &Arc<ServerConfig>, answer: &str) {
    let _ = s.set_nonblocking(false);
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let conn = rustls::ServerConnection::new(config.clone()).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, s);
    let mut req = Vec::new();
    let mut buf = [0u8; 512];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
        match tls.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => req.extend_from_slice(&buf[..n]),
        }
    }
    let _ = tls.write_all(answer.as_bytes());
    tls.conn.send_close_notify();
    let _ = tls.flush();
}

/// A UDP server on 0.0.0.0:`port` of `ns`; `reply` makes the answer to a
/// datagram in a mode (`None`: no answer).
fn udp_server(ns: &Netns, port: u16, reply: impl Fn(Mode, &[u8]) -> Option<Vec<u8>> + Send + 'static) -> Switched {
    Switched::start(ns, move |c| {
        let open = || {
            let s = UdpSocket::bind(("0.0.0.0", port)).unwrap_or_else(|e| panic!("bind udp {port}: {e}"));
            s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
            s
        };
        c.run(open, |s, m| {
            let mut buf = [0u8; 1500];
            if let Ok((n, from)) = s.recv_from(&mut buf) {
                if let Some(r) = reply(m, &buf[..n]) {
                    let _ = s.send_to(&r, from);
                }
            }
        });
    })
}

/// A UDP server answering `pong ` and the datagram; [`Mode::Wrong`]: `busy`.
pub fn udp_echo(ns: &Netns, port: u16) -> Switched {
    udp_server(ns, port, |m, d| Some(if m == Mode::Good { [b"pong ", d].concat() } else { b"busy".to_vec() }))
}

/// A DNS server answering `A` questions for `name` with `addr` (NXDOMAIN
/// for other names); [`Mode::Wrong`]: SERVFAIL to everything.
pub fn dns_server(ns: &Netns, port: u16, name: &str, addr: std::net::Ipv4Addr) -> Switched {
    let name = format!("{}.", name.trim_end_matches('.'));
    udp_server(ns, port, move |m, d| {
        let q = Message::from_vec(d).ok()?;
        let question = q.queries().first()?.clone();
        let mut r = Message::new();
        r.set_id(q.id()).set_message_type(MessageType::Response).add_query(question.clone());
        if m == Mode::Wrong {
            r.set_response_code(ResponseCode::ServFail);
        } else if question.name().to_ascii() == name && question.query_type() == RecordType::A {
            r.add_answer(Record::from_rdata(question.name().clone(), 60, RData::A(A(addr))));
        } else {
            r.set_response_code(ResponseCode::NXDomain);
        }
        r.to_vec().ok()
    })
}
