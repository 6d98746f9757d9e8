//! TLS targets: `dtest load` and `dtest run` against the load tests' target served over TLS
//! (HTTP/1.1 and HTTP/2 by ALPN, WebSocket), with a certificate from a private CA that the test
//! makes; trusted through `--cacert` or a scenario's `tls.ca_file`, refused without it, and
//! accepted unverified with `--insecure`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::rustls::{self, ServerConfig};

use crate::dtest;
use crate::load::{app, load_json, serve_in_thread, tempdir};

/// The protocols ALPN chose, a connection each (`""` for none).
type Negotiated = Arc<Mutex<Vec<String>>>;

/// The target over TLS on a free loopback port, a PEM file of the CA that signed its
/// certificate (for `localhost` and 127.0.0.1), and what ALPN chose for each connection.
fn tls_target() -> (SocketAddr, PathBuf, Negotiated) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let params = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    let ca_file = tempdir().join("ca.pem");
    std::fs::write(&ca_file, ca_cert.pem()).unwrap();

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(cert.der().to_vec())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let negotiated = Negotiated::default();
    let seen = negotiated.clone();
    let addr = serve_in_thread(move |listener| async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { continue };
            let (acceptor, seen) = (acceptor.clone(), seen.clone());
            tokio::spawn(async move {
                // A client that does not trust the certificate ends the handshake.
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                let alpn = tls.get_ref().1.alpn_protocol().unwrap_or_default();
                seen.lock().unwrap().push(String::from_utf8_lossy(alpn).into_owned());
                let service = TowerToHyperService::new(app());
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    (addr, ca_file, negotiated)
}

fn count(report: &serde_json::Value, path: &[&str]) -> u64 {
    path.iter().fold(report, |v, key| &v[key]).as_u64().unwrap_or_else(|| panic!("{path:?} in {report}"))
}

#[test]
fn https_and_wss_targets_are_loaded_when_their_ca_is_trusted() {
    let (addr, ca_file, negotiated) = tls_target();
    let ca = ca_file.to_string_lossy().into_owned();
    let port = addr.port();
    for (url, extra, alpn) in [
        (format!("https://127.0.0.1:{port}/"), None, "http/1.1"),
        (format!("https://localhost:{port}/chunked"), None, "http/1.1"),
        (format!("https://127.0.0.1:{port}/"), Some("--http2"), "h2"),
        (format!("wss://localhost:{port}/ws"), None, ""),
    ] {
        let mut args = vec![url.as_str(), "--rate", "100", "--duration", "1s", "-c", "4", "--cacert", ca.as_str()];
        args.extend(extra);
        let (code, r) = load_json(&args);
        assert_eq!(code, 0, "{args:?}: {r}");
        assert_eq!((count(&r, &["requests"]), count(&r, &["status", "2xx"])), (100, 100), "{args:?}: {r}");
        let chosen = std::mem::take(&mut *negotiated.lock().unwrap());
        assert!(!chosen.is_empty() && chosen.iter().all(|p| p == alpn), "{args:?}: ALPN chose {chosen:?}");
    }
    // Unverified, the same target serves too.
    let url = format!("https://127.0.0.1:{port}/");
    let (code, r) = load_json(&[&url, "--rate", "50", "--duration", "1s", "--insecure"]);
    assert_eq!((code, count(&r, &["status", "2xx"])), (0, 50), "{r}");
    let _ = std::fs::remove_dir_all(ca_file.parent().unwrap());
}

#[test]
fn an_untrusted_certificate_is_refused_and_says_why() {
    let (addr, _, _) = tls_target();
    let url = format!("https://127.0.0.1:{}/", addr.port());
    let out = dtest(&["load", &url, "--rate", "20", "--duration", "1s", "-c", "2", "--json"]);
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((count(&r, &["requests"]), count(&r, &["status", "connect"])), (20, 20), "{r}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("warning: TLS with 127.0.0.1") && stderr.contains("UnknownIssuer"), "{stderr}");

    let dir = tempdir();
    let not_pem = dir.join("not.pem");
    std::fs::write(&not_pem, "not a certificate").unwrap();
    for (args, says) in [
        (vec!["--cacert", "/nonexistent/ca.pem"], "--cacert /nonexistent/ca.pem"),
        (vec!["--cacert", not_pem.to_str().unwrap()], "no PEM certificate"),
        (vec!["--cacert", not_pem.to_str().unwrap(), "--insecure"], "cannot be used with"),
    ] {
        let mut all = vec!["load", url.as_str()];
        all.extend(args);
        let out = dtest(&all);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{all:?}: {stderr}");
        assert!(stderr.contains(says), "{all:?}: {stderr}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_run_trusts_the_ca_file_its_scenario_names() {
    let (addr, ca_file, _) = tls_target();
    let dir = ca_file.parent().unwrap().to_owned();
    let scenario = |url: &str, tls: &str| {
        format!(
            r#"{{ "name": "tls", "description": "a TLS target", "duration_s": 60,
              "cluster": {{ "groups": [ {{ "name": "gen", "count": 2,
                 "resources": {{ "cpu_millis": 1000, "memory_mb": 256 }} }} ] }},
              "targets": {{ "api": {{ "url": "{url}", "tls": {tls} }} }},
              "workload": {{ "tasks": [ {{ "name": "steady", "count": 2, "kind": "load",
                 "load": {{ "target": "api", "connections": 2,
                            "pattern": {{ "type": "constant", "rps": 50, "duration_s": 1 }} }} }} ] }},
              "expect": {{ "error_rate_max": 0 }} }}"#
        )
    };
    let url = format!("https://localhost:{}/", addr.port());
    let file = dir.join("tls.json");
    std::fs::write(&file, scenario(&url, r#"{ "ca_file": "ca.pem" }"#)).unwrap();
    let out = dtest(&["run", file.to_str().unwrap(), "--local", "2", "--json"]);
    let r: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(out.status.code(), Some(0), "{r}");
    assert_eq!((count(&r, &["requests"]), count(&r, &["status", "2xx"])), (50, 50), "{r}");

    for (url, tls, says) in [
        (url.as_str(), r#"{ "ca_file": "missing.pem" }"#, "targets.api.tls.ca_file: cannot read"),
        (url.as_str(), r#"{ "ca_file": "ca.pem", "insecure": true }"#, "contradict"),
        ("http://localhost:1/", r#"{ "insecure": true }"#, "only an `https` or `wss` `url` speaks TLS"),
    ] {
        std::fs::write(&file, scenario(url, tls)).unwrap();
        let out = dtest(&["run", file.to_str().unwrap(), "--local", "2"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{tls}: {stderr}");
        assert!(stderr.contains(says), "{tls}: {stderr}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
