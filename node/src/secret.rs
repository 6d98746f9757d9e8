//! A bearer token held so that it cannot leak by accident: `Debug` prints `Secret(***)`, there
//! is no `Display`, `Serialize` or `Deref`, and comparing it takes time that depends on the
//! lengths only. [`Secret::expose`] is the one way to read it, for the places that send it.

use std::fmt;

/// A token: a node's, a service's operator or read-only one, an MCP server's.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    /// Holds `token`.
    pub fn new(token: impl Into<String>) -> Secret {
        Secret(token.into())
    }

    /// The token itself, for an `Authorization` header or a token file.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether `given` is this token, compared in time that depends on the lengths only, so
    /// that timing tells nothing of the token. Every daemon's door uses it.
    pub fn matches(&self, given: &[u8]) -> bool {
        let expected = self.0.as_bytes();
        given.len() == expected.len() && given.iter().zip(expected).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::NodeClient;
    use crate::daemon::NodeConfig;
    use crate::register::Registration;

    const TOKEN: &str = "very-secret-token";

    #[test]
    fn debug_never_shows_the_token() {
        let secret = Secret::new(TOKEN);
        assert_eq!(format!("{secret:?}"), "Secret(***)");
        assert_eq!(format!("{:?}", Some(secret.clone())), "Some(Secret(***))");
        assert!(!format!("{secret:#?}").contains(TOKEN));
    }

    #[test]
    fn a_node_config_and_a_client_keep_their_token_out_of_debug() {
        let config = NodeConfig {
            token: Secret::new(TOKEN),
            name: Some("eu-7001".to_owned()),
            group: Some("eu".to_owned()),
            region: None,
            zone: None,
            capabilities: Vec::new(),
            resources: None,
            allow_commands: false,
            workdir: ".".into(),
            max_commands: 1,
            heartbeat_interval_ms: 1_000,
            drain_timeout: std::time::Duration::from_secs(1),
            registration: Some(Registration {
                orchestrator: "http://service:7000".to_owned(),
                token: Secret::new(TOKEN),
                name: "eu-7001".to_owned(),
                url: "http://10.0.0.1:7001".to_owned(),
                labels: Default::default(),
                tls: Default::default(),
            }),
        };
        assert!(!format!("{config:?}").contains(TOKEN));
        assert!(!format!("{config:#?}").contains(TOKEN));
        let client = NodeClient::new("http://127.0.0.1:7001", &Secret::new(TOKEN), &Default::default());
        assert!(!format!("{client:?}").contains(TOKEN));
    }

    #[test]
    fn matches_only_the_same_bytes() {
        let secret = Secret::new(TOKEN);
        assert!(secret.matches(TOKEN.as_bytes()));
        assert!(!secret.matches(b"very-secret-tokeN"));
        assert!(!secret.matches(b"very-secret-token-and-more"));
        assert!(!secret.matches(b"very-secret"));
        assert!(!secret.matches(b""));
        assert!(Secret::new("").matches(b""));
        assert!(!Secret::new("").matches(b"x"));
    }
}
