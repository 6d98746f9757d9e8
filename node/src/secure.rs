//! TLS for dtest's own connections: node daemons and `dtest serve` listening over TLS, with
//! mutual TLS as an option, and the clients that reach them (`run`, `serve`, nodes registering,
//! `mcp --orchestrator`). rustls with the *ring* provider throughout, as for load targets
//! ([`crate::tls`]).
//!
//! - [`Identity`]: a certificate chain and its key, read from PEM files: a server's, and the one
//!   a client presents to a server that asks for it.
//! - [`ServerTls`] and [`Incoming`]: a listener for axum whose connections are TLS when given a
//!   `ServerTls`. Handshakes run beside the accept loop, bounded in number and time, so a client
//!   that stalls holds no one up. A plain HTTP request to a TLS port is answered with a plain
//!   `400` that says to use `https://`.
//! - [`ClientTls`]: what a client trusts (Mozilla's roots and the CAs it is given) and presents,
//!   and the one way every reqwest client of ours is built.

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// Handshakes in flight at once; past this, the listener stops accepting until one ends.
pub const HANDSHAKES_MAX: usize = 256;
/// A handshake (or a plain request's refusal) that takes longer is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest PEM file read: certificates, chains and keys are a few KiB.
const PEM_BYTES_MAX: u64 = 1024 * 1024;

/// A certificate chain (leaf first) and its private key.
pub struct Identity {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl std::fmt::Debug for Identity {
    // The key stays out of logs and panics.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity").field("certificates", &self.chain.len()).finish_non_exhaustive()
    }
}

impl Clone for Identity {
    fn clone(&self) -> Identity {
        Identity { chain: self.chain.clone(), key: self.key.clone_key() }
    }
}

impl Identity {
    /// Reads a PEM certificate chain and a PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub fn load(cert: &Path, key: &Path) -> Result<Identity, String> {
        let chain = certificates(cert)?;
        let text = read_pem(key)?;
        let key =
            PrivateKeyDer::from_pem_slice(&text).map_err(|e| format!("{}: no PEM private key ({e})", key.display()))?;
        Ok(Identity { chain, key })
    }
}

/// The certificates in a PEM file; none is an error.
fn certificates(file: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let text = read_pem(file)?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&text)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: not PEM certificates ({e})", file.display()))?;
    if chain.is_empty() {
        return Err(format!("{}: holds no PEM certificate", file.display()));
    }
    Ok(chain)
}

fn read_pem(file: &Path) -> Result<Vec<u8>, String> {
    let metadata = std::fs::metadata(file).map_err(|e| format!("{}: {e}", file.display()))?;
    if !metadata.is_file() || metadata.len() > PEM_BYTES_MAX {
        return Err(format!("{}: not a PEM file of at most {PEM_BYTES_MAX} bytes", file.display()));
    }
    std::fs::read(file).map_err(|e| format!("{}: {e}", file.display()))
}

/// Mozilla's roots and the certificates in `cacert`.
fn roots(cacert: Option<&Path>) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
    if let Some(file) = cacert {
        for certificate in certificates(file)? {
            roots.add(certificate).map_err(|e| format!("{}: a CA certificate: {e}", file.display()))?;
        }
    }
    Ok(roots)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// How a daemon serves TLS: its identity, and the CA its clients' certificates must chain to
/// when mutual TLS is on.
#[derive(Clone)]
pub struct ServerTls {
    acceptor: TlsAcceptor,
    mutual: bool,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls").field("mutual", &self.mutual).finish_non_exhaustive()
    }
}

impl ServerTls {
    /// A server presenting `identity`; with `client_ca`, every client must present a
    /// certificate that CA signed (mutual TLS), or the handshake fails.
    pub fn new(identity: &Identity, client_ca: Option<&Path>) -> Result<ServerTls, String> {
        let provider = provider();
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS: {e}"))?;
        let builder = match client_ca {
            Some(file) => {
                let mut roots = RootCertStore::empty();
                for certificate in certificates(file)? {
                    roots.add(certificate).map_err(|e| format!("{}: a CA certificate: {e}", file.display()))?;
                }
                let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                    .build()
                    .map_err(|e| format!("{}: {e}", file.display()))?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let mut config = builder
            .with_single_cert(identity.chain.clone(), identity.key.clone_key())
            .map_err(|e| format!("the certificate and key do not go together: {e}"))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(ServerTls { acceptor: TlsAcceptor::from(Arc::new(config)), mutual: client_ca.is_some() })
    }
}

/// A connection a daemon accepted, plain or TLS.
pub trait Connection: AsyncRead + AsyncWrite + Unpin + Send {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> Connection for T {}

/// A handshake in flight: the connection, or nothing when it failed.
type Handshake = Option<(Box<dyn Connection>, SocketAddr)>;

/// A daemon's listening socket for axum: plain TCP, or TLS when given a [`ServerTls`].
pub struct Incoming {
    tcp: TcpListener,
    tls: Option<ServerTls>,
    handshakes: JoinSet<Handshake>,
}

impl Incoming {
    /// Plain HTTP.
    pub fn plain(tcp: TcpListener) -> Incoming {
        Incoming { tcp, tls: None, handshakes: JoinSet::new() }
    }

    /// TLS when `tls` is given, else plain.
    pub fn new(tcp: TcpListener, tls: Option<ServerTls>) -> Incoming {
        Incoming { tcp, tls, handshakes: JoinSet::new() }
    }

    /// The bound address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.tcp.local_addr()
    }
}

impl axum::serve::Listener for Incoming {
    type Io = Box<dyn Connection>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Some(tls) = &self.tls else {
                let (tcp, peer) = accept_tcp(&self.tcp).await;
                return (Box::new(tcp), peer);
            };
            // Both arms are cancel-safe: axum drops this future when it stops.
            tokio::select! {
                (tcp, peer) = accept_tcp(&self.tcp), if self.handshakes.len() < HANDSHAKES_MAX => {
                    let acceptor = tls.acceptor.clone();
                    self.handshakes.spawn(async move {
                        tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake(acceptor, tcp)).await.ok().flatten()
                            .map(|connection| (connection, peer))
                    });
                }
                Some(done) = self.handshakes.join_next(), if !self.handshakes.is_empty() => {
                    if let Ok(Some(accepted)) = done {
                        return accepted;
                    }
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

/// The next TCP connection, with Nagle off. Errors of one connection are skipped; others (out
/// of descriptors) pause the loop a moment, as axum's own listener does.
async fn accept_tcp(listener: &TcpListener) -> (TcpStream, SocketAddr) {
    loop {
        match listener.accept().await {
            Ok((tcp, peer)) => {
                let _ = tcp.set_nodelay(true);
                return (tcp, peer);
            }
            Err(e) if matches!(e.kind(), io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset) => {}
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// The TLS handshake, or, for a client that sent plain HTTP, a plain `400` saying what to do
/// instead (as nginx does); `None` when neither worked out.
async fn handshake(acceptor: TlsAcceptor, mut tcp: TcpStream) -> Option<Box<dyn Connection>> {
    let mut first = [0u8; 1];
    let peeked = tcp.peek(&mut first).await.ok()?;
    // Every TLS connection opens with a handshake record (content type 22); an HTTP request
    // opens with a method's capital letter.
    if peeked == 1 && first[0].is_ascii_uppercase() {
        let body = "{\"error\":\"this port speaks TLS: use https://\"}";
        let answer = format!(
            "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = tcp.write_all(answer.as_bytes()).await;
        close_gently(tcp).await;
        return None;
    }
    match acceptor.accept(tcp).into_fallible().await {
        Ok(tls) => Some(Box::new(tls)),
        // rustls has written its alert (an unknown CA, a missing certificate) to the socket.
        Err((_, tcp)) => {
            close_gently(tcp).await;
            None
        }
    }
}

/// Closes a connection so that what was written reaches the client: the write side first, then
/// whatever the client still sends is read and dropped until it closes too (or a second
/// passes). Closing a socket with unread input sends a reset, and a reset can throw away a
/// refusal the client has not read yet, leaving it to report "connection closed" instead of
/// why (under TLS 1.3 a client sends its request before it learns its certificate was refused).
async fn close_gently(mut tcp: TcpStream) {
    let _ = tcp.shutdown().await;
    let drain = async {
        let mut sink = [0u8; 4096];
        while let Ok(1..) = tcp.read(&mut sink).await {}
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), drain).await;
}

/// What a client of dtest's daemons trusts and presents. Cheap to clone.
#[derive(Clone)]
pub struct ClientTls {
    config: Arc<ClientConfig>,
    presents: bool,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls").field("presents_a_certificate", &self.presents).finish_non_exhaustive()
    }
}

impl Default for ClientTls {
    /// Mozilla's roots, no client certificate.
    fn default() -> ClientTls {
        ClientTls::new(None, None).expect("Mozilla's roots and the ring provider make a client")
    }
}

impl ClientTls {
    /// Trusts Mozilla's roots and the CA certificates in `cacert`; presents `identity` to a
    /// server that asks for a client certificate.
    pub fn new(cacert: Option<&Path>, identity: Option<&Identity>) -> Result<ClientTls, String> {
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS: {e}"))?
            .with_root_certificates(roots(cacert)?);
        let mut config = match identity {
            Some(identity) => builder
                .with_client_auth_cert(identity.chain.clone(), identity.key.clone_key())
                .map_err(|e| format!("the client certificate and key do not go together: {e}"))?,
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(ClientTls { config: Arc::new(config), presents: identity.is_some() })
    }

    /// Why a TLS connection to `url` fails, found by making one and reading from it, or `None`
    /// when it does not fail. Under TLS 1.3 a server refuses a client's certificate after the
    /// client has finished its handshake; an HTTP client has often sent its request by then and
    /// reports only that the connection closed, while a read here gets the server's alert
    /// ("UnknownCA", "CertificateRequired").
    /// Gives up after `within`, at most 2 s.
    pub async fn diagnose(&self, url: &str, within: Duration) -> Option<String> {
        let url = reqwest::Url::parse(url).ok().filter(|url| url.scheme() == "https")?;
        let host = url.host_str()?.trim_start_matches('[').trim_end_matches(']').to_owned();
        let address = (host.clone(), url.port_or_known_default()?);
        let name = ServerName::try_from(host).ok()?;
        let connector = TlsConnector::from(Arc::clone(&self.config));
        let attempt = async {
            let tcp = TcpStream::connect(address).await?;
            let mut tls = connector.connect(name, tcp).await?;
            tls.read(&mut [0u8; 1]).await
        };
        match tokio::time::timeout(within.min(Duration::from_secs(2)), attempt).await {
            Ok(Err(e)) => Some(e.to_string()),
            _ => None,
        }
    }

    /// A reqwest client builder with this TLS: every reqwest client of ours starts here (reqwest
    /// is built without a crypto provider of its own, so one built otherwise cannot speak TLS).
    pub fn http(&self) -> reqwest::ClientBuilder {
        reqwest::Client::builder().tls_backend_preconfigured(ClientConfig::clone(&self.config))
    }
}
