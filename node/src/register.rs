//! A node telling a `dtest serve` service that it exists: `POST {orchestrator}/v1/nodes` with a
//! [`NodeRegistration`], at start and every [`REGISTER_INTERVAL`] after (the service upserts by
//! name, so a restarted service learns of the node within one interval). Failures are logged
//! once when they start and once when they end, and never stop the daemon.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::api::{NodeInfo, NodeRegistration};
use crate::secret::Secret;
use crate::secure::ClientTls;

/// Time between two registrations.
pub const REGISTER_INTERVAL: Duration = Duration::from_secs(5);
/// Until the first registration succeeds, the pause between attempts: a node started together
/// with its service joins as soon as the service listens.
pub const FIRST_REGISTER_RETRY: Duration = Duration::from_millis(500);

/// One registration attempt gives up after this long.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(5);

/// Whom to register with, and as what.
#[derive(Clone, Debug)]
pub struct Registration {
    /// The service's base URL (`http://host:port`).
    pub orchestrator: String,
    /// The token the service expects (`Authorization: Bearer TOKEN`).
    pub token: Secret,
    /// The node's name.
    pub name: String,
    /// The node's API as the service reaches it.
    pub url: String,
    /// The node's labels, already checked by [`crate::api::validate_labels`].
    pub labels: BTreeMap<String, String>,
    /// Whom the node trusts as the service, and the certificate it presents to it.
    pub tls: ClientTls,
}

/// The name a node registers with unless told one: its group and port (`eu-7001`), or
/// `node-PORT` without a group.
pub fn default_name(group: Option<&str>, port: u16) -> String {
    format!("{}-{port}", group.unwrap_or("node"))
}

/// Registers now and every [`REGISTER_INTERVAL`] with what `info` says the node is then, until
/// `stop` resolves.
pub async fn register_loop(
    registration: Registration,
    info: impl Fn() -> NodeInfo + Send,
    stop: impl Future<Output = ()> + Send,
) {
    let http = match registration.tls.http().connect_timeout(Duration::from_secs(2)).build() {
        Ok(http) => http,
        Err(e) => {
            tracing::error!(orchestrator = %registration.orchestrator, "cannot register: {e}");
            return;
        }
    };
    let endpoint = format!("{}/v1/nodes", registration.orchestrator.trim_end_matches('/'));
    let mut failing = false;
    let mut registered = false;
    tokio::pin!(stop);
    loop {
        let body = NodeRegistration {
            name: registration.name.clone(),
            url: registration.url.clone(),
            info: info(),
            labels: registration.labels.clone(),
        };
        let request =
            http.post(&endpoint).bearer_auth(registration.token.expose()).timeout(REGISTER_TIMEOUT).json(&body);
        let outcome = tokio::select! {
            sent = register_once(request) => sent,
            () = &mut stop => return,
        };
        match outcome {
            Ok(()) => {
                if failing {
                    tracing::info!(%endpoint, "registered again");
                } else if !registered {
                    tracing::info!(%endpoint, name = %registration.name, "registered");
                }
                (failing, registered) = (false, true);
            }
            Err(why) => {
                if !failing {
                    tracing::warn!(%endpoint, "cannot register ({why}); retrying");
                }
                failing = true;
            }
        }
        let pause = if registered { REGISTER_INTERVAL } else { FIRST_REGISTER_RETRY };
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            () = &mut stop => return,
        }
    }
}

/// One registration: a 2xx is success; anything else says why not.
async fn register_once(request: reqwest::RequestBuilder) -> Result<(), String> {
    let response = request.send().await.map_err(|e| e.to_string())?;
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    // The service's answer is a peer's: read no more of it than an error can need.
    let text = match crate::client::read_bounded(response, crate::client::ERROR_BYTES_MAX).await {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(crate::client::ClientError::Unreachable(why)) => why,
        Err(other) => other.to_string(),
    };
    let why = serde_json::from_str::<crate::api::ApiError>(&text).map_or(text, |e| e.error);
    Err(format!("{status}: {}", why.chars().take(200).collect::<String>()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_endless_refusal_from_the_service_is_read_no_further_than_an_error_needs() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}/v1/nodes", listener.local_addr().expect("address"));
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.expect("accept");
            let mut request = [0u8; 4096];
            let _ = socket.read(&mut request).await;
            let _ = socket.write_all(b"HTTP/1.1 500 Internal Server Error\r\nconnection: close\r\n\r\n").await;
            // No length said, and no end: it stops only when the client hangs up.
            let chunk = vec![b'x'; 64 * 1024];
            while socket.write_all(&chunk).await.is_ok() {}
        });
        let client = crate::secure::ClientTls::default().http().build().expect("a plain client builds");
        let why = register_once(client.post(&url)).await.expect_err("a refusal");
        assert!(why.starts_with("500") && why.contains("more than 65536 bytes"), "{why}");
    }

    #[test]
    fn default_names_are_the_group_or_node_and_the_port() {
        assert_eq!(default_name(Some("eu"), 7001), "eu-7001");
        assert_eq!(default_name(None, 7070), "node-7070");
    }

    #[test]
    fn the_token_stays_out_of_debug_output() {
        let registration = Registration {
            orchestrator: "http://service:7000".to_owned(),
            token: Secret::new("very-secret"),
            name: "eu-7001".to_owned(),
            url: "http://10.0.0.1:7001".to_owned(),
            labels: BTreeMap::new(),
            tls: ClientTls::default(),
        };
        assert!(!format!("{registration:?}").contains("very-secret"));
    }
}
