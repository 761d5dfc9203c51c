//! `https` health checks: the `http` check's GET, status and body match
//! ([`super::http::HttpCheck`]) over TLS (rustls, ring provider).
//!
//! The server's certificate is verified by default, against the CA
//! certificates of a `ca_file` (PEM) or else the system's trust store
//! (rustls-native-certs: the store the host's administrator keeps current
//! and adds internal CAs to, which is what real servers behind a director
//! usually carry; a root list compiled into the binary would know neither).
//! `tls_verify = false` accepts any certificate, and says so in the log.
//!
//! The name verified (and sent as SNI) is `sni`, else the `host` header's
//! name, else the real server's address (verified against the certificate's
//! IP addresses; rustls sends no SNI for an address).

use crate::check::Owner;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{ring, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use super::http::HttpCheck;
use super::{socket_for, CheckConfig, Fail};

/// An `https` check.
#[derive(Debug, Clone)]
pub struct HttpsCheck {
    /// The request and what the response must be (port, path, status, body, Host).
    pub http: HttpCheck,
    /// The name verified and sent as SNI; `None`: the real server's address.
    pub sni: Option<String>,
    /// Where the trusted CA certificates come from.
    pub trust: Trust,
    client: Arc<ClientConfig>,
}

/// Which certificates an `https` check accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trust {
    /// Those signed by a CA of the system's trust store.
    System,
    /// Those signed by a CA of this PEM file (its certificates, as read at load).
    CaFile(PathBuf, Vec<CertificateDer<'static>>),
    /// Any (`tls_verify = false`).
    Any,
}

/// Two checks are the same when they ask the same and trust the same (the
/// client configuration is made from those).
impl PartialEq for HttpsCheck {
    fn eq(&self, o: &Self) -> bool {
        self.http == o.http && self.sni == o.sni && self.trust == o.trust
    }
}

impl Eq for HttpsCheck {}

/// The TLS settings of a check table, validated.
pub(super) struct TlsSettings {
    sni: Option<String>,
    trust: Trust,
}

impl CheckConfig {
    /// The TLS part of an `https` check: the name, and the CA file read and
    /// parsed (the system store is read by [`CheckConfig::https`]).
    pub(super) fn tls_settings(&self, what: Owner<'_>) -> Result<TlsSettings, String> {
        let sni = match (&self.sni, &self.host) {
            (Some(s), _) => Some(s.clone()),
            // A Host header may carry a port; the name is what comes before it.
            (None, Some(h)) => Some(host_name(h).to_owned()),
            (None, None) => None,
        };
        if let Some(s) = &sni {
            ServerName::try_from(s.as_str())
                .map_err(|_| format!("{what}: https check name {s:?} is not a valid DNS name or address"))?;
        }
        let trust = match (self.tls_verify, &self.ca_file) {
            (Some(false), Some(_)) => {
                return Err(format!("{what}: https check `ca_file` has no use with `tls_verify = false`"))
            }
            (Some(false), None) => Trust::Any,
            (_, Some(f)) => Trust::CaFile(f.clone(), read_ca_file(f).map_err(|e| format!("{what}: {e}"))?),
            (_, None) => Trust::System,
        };
        Ok(TlsSettings { sni, trust })
    }

    /// The `https` check: the `http` check's settings plus TLS.
    pub(super) fn https(&self, port: u16, what: Owner<'_>) -> Result<HttpsCheck, String> {
        let http = self.http(port, what)?;
        let TlsSettings { sni, trust } = self.tls_settings(what)?;
        let client = client_config(&trust).map_err(|e| format!("{what}: {e}"))?;
        if trust == Trust::Any {
            tracing::warn!("{what}: https check with tls_verify = false: any certificate is accepted");
        }
        Ok(HttpsCheck { http, sni, trust, client })
    }
}

/// The name part of a Host header (`name`, `name:port`, `[v6]:port`).
fn host_name(h: &str) -> &str {
    if let Some(rest) = h.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match h.rsplit_once(':') {
        Some((name, port)) if !name.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => h,
    }
}

/// The certificates of a PEM file; none is an error.
fn read_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let shown = path.display();
    if !path.is_absolute() {
        return Err(format!("https check ca_file {shown}: must be an absolute path"));
    }
    let pem = std::fs::read(path).map_err(|e| format!("https check ca_file {shown}: {e}"))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("https check ca_file {shown}: not a PEM file of certificates: {e}"))?;
    if certs.is_empty() {
        return Err(format!("https check ca_file {shown}: no certificate (BEGIN CERTIFICATE) in it"));
    }
    Ok(certs)
}

/// The system's trust store, read once per process.
fn system_roots() -> Result<Arc<RootCertStore>, String> {
    static ROOTS: OnceLock<Result<Arc<RootCertStore>, String>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let found = rustls_native_certs::load_native_certs();
            store_of(found.certs, found.errors.first().map(ToString::to_string)).map(Arc::new)
        })
        .clone()
}

/// The trust store of the certificates found in the system's (`error`: the
/// first problem met reading it); none usable is an error.
fn store_of(certs: Vec<CertificateDer<'static>>, error: Option<String>) -> Result<RootCertStore, String> {
    let mut store = RootCertStore::empty();
    let (added, _) = store.add_parsable_certificates(certs);
    if added == 0 {
        let why = error.map(|e| format!(" ({e})")).unwrap_or_default();
        return Err(format!(
            "no CA certificate found in the system's trust store{why}: set the https check's `ca_file`"
        ));
    }
    Ok(store)
}

/// The ring provider. rustls marks it deprecated for lacking post-quantum key
/// exchange, which a health check between hosts of one site does not need;
/// it spares every build the C and assembly toolchain aws-lc-rs needs.
#[allow(deprecated)]
fn provider() -> Arc<CryptoProvider> {
    Arc::new(ring::default_provider())
}

/// The rustls client configuration for a trust setting.
fn client_config(trust: &Trust) -> Result<Arc<ClientConfig>, String> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?;
    let config = match trust {
        Trust::System => builder.with_root_certificates(system_roots()?),
        Trust::CaFile(path, certs) => {
            let mut store = RootCertStore::empty();
            for c in certs {
                store.add(c.clone()).map_err(|e| format!("https check ca_file {}: {e}", path.display()))?;
            }
            builder.with_root_certificates(store)
        }
        Trust::Any => builder.dangerous().with_custom_certificate_verifier(Arc::new(AnyCertificate(provider()))),
    };
    Ok(Arc::new(config.with_no_client_auth()))
}

impl HttpsCheck {
    /// Connect, shake hands, GET, judge (the caller bounds the time).
    pub(super) async fn run(&self, ip: IpAddr) -> Result<(), Fail> {
        let addr = SocketAddr::new(ip, self.http.port);
        let name = match &self.sni {
            Some(n) => ServerName::try_from(n.clone()).map_err(|e| Fail::Failed(format!("https name {n:?}: {e}")))?,
            None => ServerName::IpAddress(ip.into()),
        };
        let s = socket_for(addr, "https")?;
        let s = s.connect(addr).await.map_err(|e| Fail::Failed(format!("https connect to {addr}: {e}")))?;
        let tls = tokio_rustls::TlsConnector::from(self.client.clone())
            .connect(name, s)
            .await
            .map_err(|e| Fail::Failed(format!("https TLS handshake with {addr}: {}", tls_problem(&e))))?;
        self.http.exchange(tls, ip, "https").await.map_err(Fail::Failed)
    }
}

/// What went wrong in a handshake, in words (rustls names the common
/// certificate problems by their variant only).
fn tls_problem(e: &std::io::Error) -> String {
    let Some(rustls::Error::InvalidCertificate(c)) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) else {
        return e.to_string();
    };
    match c {
        CertificateError::UnknownIssuer => "unknown CA: the certificate is not signed by a trusted CA".to_owned(),
        CertificateError::NotValidForName => "the certificate is not valid for the name checked".to_owned(),
        CertificateError::Expired => "the certificate has expired".to_owned(),
        CertificateError::NotValidYet => "the certificate is not valid yet".to_owned(),
        CertificateError::BadSignature => "the certificate's signature is bad".to_owned(),
        CertificateError::Revoked => "the certificate is revoked".to_owned(),
        other => format!("invalid certificate: {other}"),
    }
}

/// `tls_verify = false`: any certificate chain and name are accepted. The
/// handshake's signatures are still checked (they prove the server holds the
/// key of the certificate it sent, whatever that certificate is).
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
    use rustls::ServerConfig;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::check::{Check, Probe, Target};

    /// A CA (its PEM, in a file of its own) and a server certificate it
    /// signed for `names`, valid now or long expired.
    struct Pki {
        ca_file: PathBuf,
        server: Arc<ServerConfig>,
    }

    impl Drop for Pki {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.ca_file);
        }
    }

    fn pki(tag: &str, names: &[&str], expired: bool) -> Pki {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name.push(DnType::CommonName, format!("lvsctl test CA {tag}"));
        let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
        let issuer = Issuer::new(ca, ca_key);
        let key = KeyPair::generate().unwrap();
        let mut leaf = CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>()).unwrap();
        if expired {
            leaf.not_before = rcgen::date_time_ymd(2000, 1, 1);
            leaf.not_after = rcgen::date_time_ymd(2001, 1, 1);
        }
        let cert = leaf.signed_by(&key, &issuer).unwrap();
        let ca_file = std::env::temp_dir().join(format!("lvsctl-https-{}-{tag}.pem", std::process::id()));
        std::fs::write(&ca_file, ca_pem).unwrap();
        let key = PrivateKeyDer::from(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let server = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.der().clone()], key)
            .unwrap();
        Pki { ca_file, server: Arc::new(server) }
    }

    /// An HTTPS server on loopback answering every request with `answer`.
    async fn serve(server: Arc<ServerConfig>, answer: &'static str) -> (SocketAddr, tokio::task::JoinHandle<()>) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(server);
        let task = tokio::spawn(async move {
            loop {
                let (s, _) = l.accept().await.unwrap();
                let Ok(mut tls) = acceptor.accept(s).await else { continue };
                let mut req = Vec::new();
                let mut buf = [0u8; 512];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = tls.write_all(answer.as_bytes()).await;
                let _ = tls.shutdown().await;
            }
        });
        (addr, task)
    }

    const OK: &str = "HTTP/1.0 200 OK\r\n\r\nhealthy\n";

    fn check(fields: &str, port: u16) -> Result<Check, String> {
        super::super::fields::test_check("https", "10s", fields, port)
    }

    async fn run(fields: &str, addr: SocketAddr) -> Result<(), String> {
        let t = Target { addr, service: "tcp 10.0.0.1:443".into() };
        check(fields, addr.port())?.run(&t).await
    }

    fn ca(p: &Pki) -> String {
        format!("ca_file = {:?}", p.ca_file.display().to_string())
    }

    #[tokio::test]
    async fn verified_by_the_ca_file_with_and_without_a_name() {
        let p = pki("ok", &["rs1.example", "127.0.0.1"], false);
        let (addr, _server) = serve(p.server.clone(), OK).await;
        run(&format!("{}, sni = \"rs1.example\", body = \"healthy\"", ca(&p)), addr).await.unwrap();
        // The name of the Host header is the default name.
        run(&format!("{}, host = \"rs1.example:443\"", ca(&p)), addr).await.unwrap();
        // No name: the address is verified against the certificate's addresses.
        run(&ca(&p), addr).await.unwrap();
        let e = run(&format!("{}, body = \"ready\"", ca(&p)), addr).await.unwrap_err();
        assert_eq!(e, "http GET /: body does not contain \"ready\"");
    }

    #[tokio::test]
    async fn status_is_judged_as_for_http() {
        let p = pki("status", &["127.0.0.1"], false);
        let (addr, _server) = serve(p.server.clone(), "HTTP/1.0 503 Busy\r\n\r\n").await;
        let e = run(&ca(&p), addr).await.unwrap_err();
        assert_eq!(e, "http GET / answered status 503, expected 200");
        run(&format!("{}, status = 503", ca(&p)), addr).await.unwrap();
    }

    #[tokio::test]
    async fn wrong_name_wrong_ca_and_expired_are_named() {
        let p = pki("name", &["rs1.example"], false);
        let (addr, _server) = serve(p.server.clone(), OK).await;
        let e = run(&format!("{}, sni = \"rs2.example\"", ca(&p)), addr).await.unwrap_err();
        assert!(e.starts_with(&format!("https TLS handshake with {addr}: ")), "{e}");
        assert!(e.contains("not valid for name \"rs2.example\""), "{e}");
        let other = pki("other-ca", &["rs1.example"], false);
        let e = run(&format!("{}, sni = \"rs1.example\"", ca(&other)), addr).await.unwrap_err();
        assert!(e.ends_with("unknown CA: the certificate is not signed by a trusted CA"), "{e}");
        let old = pki("expired", &["rs1.example"], true);
        let (old_addr, _old_server) = serve(old.server.clone(), OK).await;
        let e = run(&format!("{}, sni = \"rs1.example\"", ca(&old)), old_addr).await.unwrap_err();
        assert!(e.contains("expired"), "{e}");
    }

    #[tokio::test]
    async fn verification_can_be_turned_off() {
        let p = pki("off", &["rs1.example"], true);
        let (addr, _server) = serve(p.server.clone(), OK).await;
        run("tls_verify = false, sni = \"elsewhere.example\", body = \"healthy\"", addr).await.unwrap();
        run("tls_verify = false", addr).await.unwrap();
    }

    #[tokio::test]
    async fn a_stopped_server_and_a_plain_one_are_down() {
        let p = pki("down", &["127.0.0.1"], false);
        let (addr, server) = serve(p.server.clone(), OK).await;
        server.abort();
        let _ = server.await;
        let e = run(&ca(&p), addr).await.unwrap_err();
        assert!(e.starts_with(&format!("https connect to {addr}: ")), "{e}");
        // A server that speaks plain HTTP, not TLS.
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let plain = l.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let _ = s.write_all(OK.as_bytes()).await;
        });
        let e = run(&ca(&p), plain).await.unwrap_err();
        assert!(e.starts_with(&format!("https TLS handshake with {plain}: ")), "{e}");
    }

    #[test]
    fn config_errors() {
        let e = check("ca_file = \"/nonexistent/ca.pem\"", 443).unwrap_err();
        assert!(e.starts_with("https check: https check ca_file /nonexistent/ca.pem: "), "{e}");
        let e = check("ca_file = \"ca.pem\"", 443).unwrap_err();
        assert!(e.contains("must be an absolute path"), "{e}");
        let e = check("ca_file = \"/etc/hostname\"", 443).unwrap_err();
        assert!(e.contains("no certificate"), "{e}");
        let e = check("tls_verify = false, ca_file = \"/x.pem\"", 443).unwrap_err();
        assert!(e.contains("no use with `tls_verify = false`"), "{e}");
        let e = check("tls_verify = false, payload = \"x\"", 443).unwrap_err();
        assert_eq!(e, "https check: check field `payload` is for udp checks, not https");
        let e = check("tls_verify = false, sni = \"bad name\"", 443).unwrap_err();
        assert!(e.contains("not a valid DNS name"), "{e}");
        let e = check("tls_verify = false, command = [\"x\"]", 443).unwrap_err();
        assert_eq!(e, "https check: check field `command` is for exec checks, not https");
        assert_eq!(Duration::from_secs(10), check("tls_verify = false", 443).unwrap().timeout);
        assert!(matches!(check("tls_verify = false", 443).unwrap().probe, Probe::Https(_)));
    }

    /// The system's trust store: its certificates, or a clear error when it has none.
    #[test]
    fn system_store() {
        let p = pki("system", &["127.0.0.1"], false);
        let certs = read_ca_file(&p.ca_file).unwrap();
        assert_eq!(store_of(certs, None).unwrap().len(), 1);
        let e = store_of(Vec::new(), None);
        assert_eq!(
            e.unwrap_err(),
            "no CA certificate found in the system's trust store: set the https check's `ca_file`"
        );
    }

    #[test]
    fn host_names() {
        assert_eq!(host_name("rs1.example"), "rs1.example");
        assert_eq!(host_name("rs1.example:8443"), "rs1.example");
        assert_eq!(host_name("[2001:db8::1]:443"), "2001:db8::1");
        assert_eq!(host_name("2001:db8::1"), "2001:db8::1");
    }
}
