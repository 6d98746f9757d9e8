//! The TLS flags, shared by the commands that listen (`node`, `serve`) and those that only
//! connect (`run`, `mcp --orchestrator`), and the rule that a daemon does not send tokens in
//! clear beyond this machine unless told to.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use dtest_node::secure::{ClientTls, Identity, ServerTls};

/// TLS flags of a daemon.
#[derive(Debug, clap::Args)]
pub struct ServerArgs {
    /// Serve HTTPS with this certificate chain (PEM). It is also the certificate this daemon
    /// presents to the peers it connects to that ask for one.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Mutual TLS: every client must present a certificate this CA (PEM) signed.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_client_ca: Option<PathBuf>,
    /// A CA (PEM) to trust, besides Mozilla's roots, in the peers this daemon connects to.
    #[arg(long, value_name = "FILE")]
    cacert: Option<PathBuf>,
    /// Listen in plain HTTP beyond loopback anyway: the token crosses the network in clear.
    #[arg(long, conflicts_with = "tls_cert")]
    insecure_plaintext: bool,
}

/// What a daemon's TLS flags come to.
pub struct Daemon {
    /// How it listens: TLS, or plain without.
    pub server: Option<ServerTls>,
    /// How it connects to its peers.
    pub client: ClientTls,
}

impl Daemon {
    /// `https` or `http`.
    pub fn scheme(&self) -> &'static str {
        if self.server.is_some() { "https" } else { "http" }
    }
}

impl ServerArgs {
    /// Reads the certificates and keys, and refuses plain HTTP on `listen` beyond loopback
    /// without `--insecure-plaintext`.
    pub fn daemon(&self, listen: SocketAddr) -> Result<Daemon, String> {
        let identity = identity(self.tls_cert.as_deref(), self.tls_key.as_deref())?;
        let client_ca = self.tls_client_ca.as_deref();
        let server = listening("--listen", listen, identity.as_ref(), client_ca, self.insecure_plaintext)?;
        let client = ClientTls::new(self.cacert.as_deref(), identity.as_ref()).map_err(|e| format!("--cacert {e}"))?;
        Ok(Daemon { server, client })
    }
}

/// The certificate and key of `--tls-cert` and `--tls-key`, when given.
pub fn identity(cert: Option<&Path>, key: Option<&Path>) -> Result<Option<Identity>, String> {
    match (cert, key) {
        (Some(cert), Some(key)) => Identity::load(cert, key).map(Some).map_err(|e| format!("--tls-cert/--tls-key {e}")),
        _ => Ok(None),
    }
}

/// How a daemon listening on `listen` (given by `flag`) serves: TLS with `identity` (mutual with
/// `client_ca`), or plain HTTP, which beyond loopback it refuses without `insecure_plaintext`.
pub fn listening(
    flag: &str,
    listen: SocketAddr,
    identity: Option<&Identity>,
    client_ca: Option<&Path>,
    insecure_plaintext: bool,
) -> Result<Option<ServerTls>, String> {
    match identity {
        Some(identity) => ServerTls::new(identity, client_ca).map(Some).map_err(|e| format!("TLS: {e}")),
        None if !listen.ip().is_loopback() && !insecure_plaintext => Err(format!(
            "{flag} {listen} is beyond this machine: give --tls-cert and --tls-key (`dtest certs` makes them), \
             or --insecure-plaintext to send the token in clear"
        )),
        None => Ok(None),
    }
}

/// Warns on stderr when `url` (given by `flag`) is plain HTTP to another machine: the token it
/// is sent crosses the network in clear. (The daemon there was started with
/// `--insecure-plaintext`, or is not dtest's.)
pub fn warn_if_in_clear(flag: &str, url: &str) {
    if in_clear_beyond_loopback(url) {
        eprintln!(
            "warning: {flag} {url} is plain HTTP to another machine: the token crosses the network in clear \
             (serve it over TLS and use https://; see the README's Security)"
        );
    }
}

/// Whether `url` is `http://` to a host that is not this machine's loopback.
fn in_clear_beyond_loopback(url: &str) -> bool {
    let Some((scheme, host)) = dtest_node::load::scheme_and_host(url) else { return false };
    let loopback =
        host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.to_canonical().is_loopback());
    scheme.eq_ignore_ascii_case("http") && !loopback
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_beyond_loopback_is_in_clear() {
        for clear in
            ["http://10.0.0.5:7070", "HTTP://node.example.com/", "http://[2001:db8::1]:7070", "http://u@1.2.3.4"]
        {
            assert!(in_clear_beyond_loopback(clear), "{clear}");
        }
        let safe = ["https://10.0.0.5:7070", "http://127.0.0.1:7070", "http://localhost:7070/x", "http://[::1]:7070"];
        for safe in safe.into_iter().chain(["http://[::ffff:127.0.0.1]:7070", "HTTPS://node.example.com"]) {
            assert!(!in_clear_beyond_loopback(safe), "{safe}");
        }
    }
}

/// TLS flags of a client.
#[derive(Debug, clap::Args)]
pub struct ClientArgs {
    /// A CA (PEM) to trust, besides Mozilla's roots, in the `https://` servers reached.
    #[arg(long, value_name = "FILE")]
    cacert: Option<PathBuf>,
    /// The certificate (PEM) to present to servers that require one (mutual TLS).
    #[arg(long, value_name = "FILE", requires = "client_key")]
    client_cert: Option<PathBuf>,
    /// The private key of --client-cert (PEM).
    #[arg(long, value_name = "FILE", requires = "client_cert")]
    client_key: Option<PathBuf>,
}

impl ClientArgs {
    /// Reads the CA, certificate and key.
    pub fn client(&self) -> Result<ClientTls, String> {
        let identity = match (&self.client_cert, &self.client_key) {
            (Some(cert), Some(key)) => {
                Some(Identity::load(cert, key).map_err(|e| format!("--client-cert/--client-key {e}"))?)
            }
            _ => None,
        };
        ClientTls::new(self.cacert.as_deref(), identity.as_ref()).map_err(|e| format!("--cacert {e}"))
    }

    /// Whether any flag was given.
    pub fn given(&self) -> bool {
        self.cacert.is_some() || self.client_cert.is_some()
    }
}
