//! The orchestrator's side of the node API.

use std::fmt;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::api::{ApiError, Exchange, ExchangeReply, Faults, MessageReceipt, NodeInfo, NodeMessage, PREFIX, Plan};
use crate::secret::Secret;
use crate::secure::ClientTls;

/// The longest reply read from a node unless a run says less
/// ([`NodeClient::with_reply_bytes_max`], [`dtest_core::run::reply_bytes_max`]): a week-long
/// load's per-second histograms (the longest load a scenario may hold) come to about 250 MB.
pub const REPLY_BYTES_MAX: usize = dtest_core::run::REPLY_BYTES_CAP as usize;

/// The longest account of itself read from a node, bytes.
const INFO_BYTES_MAX: usize = 64 * 1024;

/// The longest error message read from a node, bytes.
pub(crate) const ERROR_BYTES_MAX: usize = 64 * 1024;

/// What went wrong talking to a node.
#[derive(Debug)]
pub enum ClientError {
    /// The node could not be reached or did not answer in time.
    Unreachable(String),
    /// The node does not have the plan the exchange named (409 to an exchange).
    NeedsPlan,
    /// The node answered with an error.
    Refused(u16, String),
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Unreachable(why) => write!(f, "unreachable: {why}"),
            ClientError::NeedsPlan => write!(f, "the node does not have the plan"),
            ClientError::Refused(status, why) => write!(f, "refused ({status}): {why}"),
        }
    }
}

impl std::error::Error for ClientError {}

/// One node daemon, as the orchestrator talks to it.
#[derive(Clone, Debug)]
pub struct NodeClient {
    base: String,
    token: Secret,
    http: reqwest::Client,
    tls: ClientTls,
    reply_bytes_max: usize,
}

impl NodeClient {
    /// A client for the daemon at `url` (`http://host:port`, or `https://` with `tls`),
    /// authenticating with `token`.
    pub fn new(url: &str, token: &Secret, tls: &ClientTls) -> NodeClient {
        let http = tls
            .http()
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true)
            .pool_max_idle_per_host(4)
            .build()
            .expect("a client with plain settings builds");
        NodeClient {
            base: url.trim_end_matches('/').to_owned(),
            token: token.clone(),
            http,
            tls: tls.clone(),
            reply_bytes_max: REPLY_BYTES_MAX,
        }
    }

    /// Reads no reply longer than `bytes` (at most [`REPLY_BYTES_MAX`]): what the run asked of
    /// the node bounds what it may send back.
    pub fn with_reply_bytes_max(mut self, bytes: u64) -> NodeClient {
        self.reply_bytes_max = usize::try_from(bytes).unwrap_or(REPLY_BYTES_MAX).min(REPLY_BYTES_MAX);
        self
    }

    /// The daemon's address.
    pub fn url(&self) -> &str {
        &self.base
    }

    /// What the node is and offers, checked as a scenario's groups are.
    pub async fn info(&self, timeout: Duration) -> Result<NodeInfo, ClientError> {
        let request = self.http.get(format!("{}{PREFIX}/info", self.base)).timeout(timeout);
        // A few hundred bytes at most, whatever the run: a service probes every node each second.
        let (info, _): (NodeInfo, _) = match self.send_measured(request, INFO_BYTES_MAX).await {
            // A connection closed under the request may be a TLS refusal the client did not
            // read: ask once more, within the caller's time. Other failures say why already.
            Err(ClientError::Unreachable(why)) if closed_early(&why) => {
                match self.tls.diagnose(&self.base, timeout).await {
                    Some(tls) if !why.contains(&tls) => {
                        return Err(ClientError::Unreachable(format!("{why}; TLS: {tls}")));
                    }
                    _ => return Err(ClientError::Unreachable(why)),
                }
            }
            other => other?,
        };
        info.check().map_err(|why| ClientError::Unreachable(format!("its info is not believable: {why}")))?;
        Ok(info)
    }

    /// Gives the node the run's plan: a plan it does not hold starts a new life of its own (a
    /// new agent); one it holds changes nothing.
    pub async fn put_plan(&self, plan: &Plan) -> Result<(), ClientError> {
        let request = self.http.put(format!("{}{PREFIX}/plan", self.base)).timeout(Duration::from_secs(30));
        self.send_empty(request.json(plan)).await
    }

    /// Ends the life of plan `id` on the node: its work stops and the node forgets it.
    pub async fn end_plan(&self, id: &str) -> Result<(), ClientError> {
        let url = format!("{}{PREFIX}/plans/{}", self.base, path_segment(id));
        self.send_empty(self.http.delete(url).timeout(Duration::from_secs(5))).await
    }

    /// Appends a message to the node's inbox, for the commands running there.
    pub async fn send_message(&self, message: &NodeMessage) -> Result<MessageReceipt, ClientError> {
        let request = self.http.post(format!("{}{PREFIX}/messages", self.base)).timeout(Duration::from_secs(10));
        self.send(request.json(message)).await
    }

    /// Sets the network faults the node applies to its link.
    pub async fn put_faults(&self, faults: &Faults) -> Result<(), ClientError> {
        let request = self.http.put(format!("{}{PREFIX}/faults", self.base)).timeout(Duration::from_secs(5));
        self.send_empty(request.json(faults)).await
    }

    /// Hands over frames and takes the node's, waiting up to `exchange.wait_ms` for some.
    pub async fn exchange(&self, exchange: &Exchange) -> Result<ExchangeReply, ClientError> {
        self.exchange_measured(exchange).await.map(|(reply, _)| reply)
    }

    /// [`NodeClient::exchange`], with the reply's length in bytes.
    pub async fn exchange_measured(&self, exchange: &Exchange) -> Result<(ExchangeReply, usize), ClientError> {
        let timeout = Duration::from_millis(exchange.wait_ms) + Duration::from_secs(5);
        let request = self.http.post(format!("{}{PREFIX}/exchange", self.base)).timeout(timeout);
        match self.send_measured(request.json(exchange), self.reply_bytes_max).await {
            Err(ClientError::Refused(409, _)) => Err(ClientError::NeedsPlan),
            other => other,
        }
    }

    async fn send<T: DeserializeOwned>(&self, request: reqwest::RequestBuilder) -> Result<T, ClientError> {
        self.send_measured(request, self.reply_bytes_max).await.map(|(value, _)| value)
    }

    /// The reply read up to `max` bytes, parsed, with its length.
    async fn send_measured<T: DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
        max: usize,
    ) -> Result<(T, usize), ClientError> {
        let response = self.checked(request).await?;
        let bytes = read_bounded(response, max).await?;
        let value =
            serde_json::from_slice(&bytes).map_err(|e| ClientError::Unreachable(format!("a malformed reply: {e}")))?;
        Ok((value, bytes.len()))
    }

    async fn send_empty(&self, request: reqwest::RequestBuilder) -> Result<(), ClientError> {
        self.checked(request).await.map(|_| ())
    }

    async fn checked(&self, request: reqwest::RequestBuilder) -> Result<reqwest::Response, ClientError> {
        let response = request
            .bearer_auth(self.token.expose())
            .send()
            .await
            .map_err(|e| ClientError::Unreachable(reqwest_reason(&e)))?;
        match response.status() {
            status if status.is_success() => Ok(response),
            status => {
                let text = match read_bounded(response, ERROR_BYTES_MAX).await {
                    Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
                    Err(e) => format!("its error text could not be read: {e}"),
                };
                let why = serde_json::from_str::<ApiError>(&text).map_or(text, |e| e.error);
                Err(ClientError::Refused(status.as_u16(), why))
            }
        }
    }
}

/// A reply's body, refused past `max` bytes (a node that streams without end is not believed).
pub(crate) async fn read_bounded(mut response: reqwest::Response, max: usize) -> Result<Vec<u8>, ClientError> {
    if response.content_length().is_some_and(|length| length > max as u64) {
        return Err(ClientError::Unreachable(format!("a reply of more than {max} bytes")));
    }
    let mut bytes = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| ClientError::Unreachable(reqwest_reason(&e)))? {
        if bytes.len() + chunk.len() > max {
            return Err(ClientError::Unreachable(format!("a reply of more than {max} bytes")));
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}

/// `text` as one URL path segment: every byte but unreserved ones percent-encoded.
fn path_segment(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Whether a request failed because its connection closed under it, as a TLS 1.3 server's
/// refusal of a client certificate looks to an HTTP client that did not read it.
fn closed_early(why: &str) -> bool {
    ["connection was not ready", "connection closed", "Connection reset", "unexpected EOF", "broken pipe"]
        .iter()
        .any(|sign| why.contains(sign))
}

/// reqwest's error with its causes, which say what actually failed (connection refused, ...).
fn reqwest_reason(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Serializes `value` as the node API does (for measuring frames on the wire).
pub fn wire_bytes<T: Serialize>(value: &T) -> usize {
    serde_json::to_vec(value).map_or(0, |v| v.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A one-shot server on loopback that answers any request with `head` and `body_len` bytes.
    async fn answering(head: &'static str, body_len: usize) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.expect("accept");
            let mut request = [0u8; 4096];
            let _ = socket.read(&mut request).await;
            let _ = socket.write_all(head.as_bytes()).await;
            let _ = socket.write_all(&vec![b'x'; body_len]).await;
        });
        url
    }

    #[tokio::test]
    async fn a_reply_past_the_bound_is_refused_whether_it_says_its_length_or_not() {
        let client = ClientTls::default().http().build().expect("a plain client builds");
        let said = answering("HTTP/1.1 200 OK\r\ncontent-length: 5000\r\n\r\n", 5000).await;
        let response = client.get(&said).send().await.expect("a response");
        let error = read_bounded(response, 1000).await.expect_err("too long");
        assert!(error.to_string().contains("more than 1000 bytes"), "{error}");
        let unsaid = answering("HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n", 5000).await;
        let response = client.get(&unsaid).send().await.expect("a response");
        let error = read_bounded(response, 1000).await.expect_err("too long");
        assert!(error.to_string().contains("more than 1000 bytes"), "{error}");
        let short = answering("HTTP/1.1 200 OK\r\ncontent-length: 500\r\n\r\n", 500).await;
        let response = client.get(&short).send().await.expect("a response");
        assert_eq!(read_bounded(response, 1000).await.expect("within the bound").len(), 500);
    }

    #[test]
    fn plan_ids_are_percent_encoded_in_paths() {
        assert_eq!(path_segment("run-1.a_b~"), "run-1.a_b~");
        assert_eq!(path_segment("a/b c"), "a%2Fb%20c");
    }
}
