//! The `dtest serve` the execution tools drive: a remote one (`--orchestrator URL`), or one
//! embedded in this process on a loopback port, with `--local N` node daemons registered to it.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use dtest_node::secret::Secret;
use dtest_node::secure::ClientTls;
use dtest_orchestrator::local::{TempDir, fresh_token, write_private};
use serde_json::Value;
use tokio::process::{Child, Command};

use crate::tools::ToolError;
use crate::{Config, McpError};

/// Local node daemons at most (`--local N`).
pub const LOCAL_MAX: u32 = dtest_orchestrator::local::LOCAL_MAX;

/// How long local nodes have to register with the embedded orchestrator.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(30);

/// The longest answer read from the orchestrator, bytes (a report with its histograms).
const ANSWER_BYTES_MAX: usize = 64 * 1024 * 1024;

/// Which orchestrator.
#[derive(Clone, Debug)]
pub enum Upstream {
    /// A running `dtest serve`.
    Remote {
        /// Its base URL (`http://127.0.0.1:8700`).
        url: String,
        /// Its operator token.
        token: Secret,
        /// Whom to trust as the service (`https://`), and the certificate to present to it.
        tls: ClientTls,
    },
    /// One in this process.
    Embedded {
        /// Local node daemons to start and register.
        local: u32,
        /// Whether the local nodes run command tasks.
        allow_commands: bool,
        /// Where it keeps its state (a temporary directory, removed at exit, when not given).
        data: Option<PathBuf>,
    },
}

/// The orchestrator, and what this process started for it.
pub struct Host {
    /// Its REST API.
    pub api: Api,
    /// Local nodes: asked to leave by [`Host::stop`], killed when this is dropped, and watching
    /// this process besides.
    nodes: tokio::sync::Mutex<Vec<Child>>,
    /// The embedded service.
    _service: Option<tokio::task::JoinHandle<()>>,
    /// The embedded service's data and the local nodes' work directories, when temporary;
    /// removed by [`Host::stop`] (other holders of the host may outlive the serving).
    dir: std::sync::Mutex<Option<TempDir>>,
}

impl Host {
    pub async fn start(config: &Config) -> Result<Host, McpError> {
        let (local, allow_commands, data) = match &config.upstream {
            Upstream::Remote { url, token, tls } => {
                let api = Api::new(url.trim_end_matches('/').to_owned(), token.clone(), tls);
                return Ok(Host { api, nodes: Default::default(), _service: None, dir: Default::default() });
            }
            Upstream::Embedded { local, allow_commands, data } => (*local, *allow_commands, data.clone()),
        };
        let fail = |what: &str, e: &dyn std::fmt::Display| McpError(format!("{what}: {e}"));
        let dir = TempDir::new("dtest-mcp").map_err(|e| fail("cannot make a temporary directory", &e))?;
        let token = fresh_token().map_err(|e| fail("cannot draw a token", &e))?;
        let token_file = dir.0.join("token");
        write_private(&token_file, &token).map_err(|e| fail("cannot write the token file", &e))?;
        let token = Secret::new(token);
        let service_config = dtest_serve::Config {
            listen: "127.0.0.1:0".parse().expect("a loopback address"),
            access: dtest_serve::api::Access { operator: token.clone(), read_only: None, rate_per_s: 0 },
            node_token: token.clone(),
            tls: None,
            node_tls: ClientTls::default(),
            data: data.unwrap_or_else(|| dir.0.join("data")),
        };
        let (ready, address) = tokio::sync::oneshot::channel();
        let (failed, failure) = tokio::sync::oneshot::channel();
        let service = tokio::spawn(async move {
            let result = dtest_serve::run(
                service_config,
                |address| {
                    let _ = ready.send(address);
                },
                std::future::pending(),
            )
            .await;
            if let Err(e) = result {
                let _ = failed.send(e.to_string());
            }
        });
        let address = tokio::select! {
            address = address => address.map_err(|_| McpError("the embedded orchestrator stopped".to_owned()))?,
            failure = failure => return Err(McpError(format!("the embedded orchestrator: {}", failure.unwrap_or_default()))),
        };
        let url = format!("http://{address}");
        let api = Api::new(url.clone(), token, &ClientTls::default());
        let mut nodes = Vec::new();
        for i in 1..=local.min(LOCAL_MAX) {
            let name = format!("local-{i}");
            let workdir = dir.0.join(&name);
            std::fs::create_dir_all(&workdir).map_err(|e| fail("cannot make a node's directory", &e))?;
            let log =
                std::fs::File::create(dir.0.join(format!("{name}.log"))).map_err(|e| fail("cannot make a log", &e))?;
            let mut command = Command::new(&config.node_exe);
            command
                .args(["node", "--listen", "127.0.0.1:0", "--group", "local", "--name", &name])
                .arg("--token-file")
                .arg(&token_file)
                .arg("--orchestrator")
                .arg(&url)
                .arg("--orchestrator-token-file")
                .arg(&token_file)
                .arg("--workdir")
                .arg(&workdir)
                .arg("--parent-pid")
                .arg(std::process::id().to_string());
            if allow_commands {
                command.arg("--allow-commands");
            }
            command.stdin(Stdio::null()).stdout(Stdio::null()).stderr(log).kill_on_drop(true);
            nodes.push(command.spawn().map_err(|e| fail(&format!("cannot start {}", config.node_exe.display()), &e))?);
        }
        let deadline = tokio::time::Instant::now() + REGISTER_TIMEOUT;
        loop {
            let registered = api.get("/v1/nodes").await.ok().and_then(|v| v.as_array().map(Vec::len)).unwrap_or(0);
            if registered >= nodes.len() {
                break;
            }
            if tokio::time::Instant::now() > deadline {
                return Err(McpError(format!(
                    "{registered} of {} local nodes registered within {} s; their logs are in {}",
                    nodes.len(),
                    REGISTER_TIMEOUT.as_secs(),
                    dir.0.display()
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(Host {
            api,
            nodes: tokio::sync::Mutex::new(nodes),
            _service: Some(service),
            dir: std::sync::Mutex::new(Some(dir)),
        })
    }
}

impl Host {
    /// Asks the local nodes to leave (SIGTERM: their commands stop with them), kills those still
    /// there after the core's grace, stops the embedded service and removes its directory.
    pub async fn stop(&self) {
        let mut nodes = self.nodes.lock().await;
        for node in nodes.iter() {
            if let Some(pid) = node.id() {
                let _ =
                    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGTERM);
            }
        }
        let deadline = tokio::time::Instant::now() + Duration::from_millis(dtest_core::run::LEAVE_GRACE_MS);
        for node in nodes.iter_mut() {
            if tokio::time::timeout_at(deadline, node.wait()).await.is_err() {
                let _ = node.kill().await;
            }
        }
        drop(nodes);
        if let Some(service) = &self._service {
            service.abort();
        }
        // The token file and the embedded service's data go with it.
        drop(self.dir.lock().unwrap_or_else(|e| e.into_inner()).take());
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        if let Some(service) = &self._service {
            service.abort();
        }
    }
}

/// The orchestrator's REST API, its answers as JSON and its refusals as tool errors carrying
/// its own message (which names the field at fault).
pub struct Api {
    base: String,
    token: Secret,
    client: reqwest::Client,
}

impl Api {
    fn new(base: String, token: Secret, tls: &ClientTls) -> Api {
        let client = tls
            .http()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(60))
            .build()
            .expect("a client with a preconfigured TLS and plain settings builds");
        Api { base, token, client }
    }

    pub async fn get(&self, path: &str) -> Result<Value, ToolError> {
        self.call(reqwest::Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Result<Value, ToolError> {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    pub async fn put(&self, path: &str, body: &Value) -> Result<Value, ToolError> {
        self.call(reqwest::Method::PUT, path, Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> Result<Value, ToolError> {
        self.call(reqwest::Method::DELETE, path, None).await
    }

    /// A text answer (an HTML or JUnit report).
    pub async fn get_text(&self, path: &str) -> Result<String, ToolError> {
        let bytes = self.send(reqwest::Method::GET, path, None).await?;
        String::from_utf8(bytes).map_err(|_| ToolError::upstream("the orchestrator's answer is not UTF-8"))
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<&Value>) -> Result<Value, ToolError> {
        let bytes = self.send(method, path, body).await?;
        if bytes.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&bytes)
            .map_err(|e| ToolError::upstream(format!("the orchestrator's answer is not JSON: {e}")))
    }

    async fn send(&self, method: reqwest::Method, path: &str, body: Option<&Value>) -> Result<Vec<u8>, ToolError> {
        let mut request = self.client.request(method, format!("{}{path}", self.base)).bearer_auth(self.token.expose());
        if let Some(body) = body {
            request = request.json(body);
        }
        let unreachable =
            |e: reqwest::Error| ToolError::upstream(format!("the orchestrator at {} did not answer: {e}", self.base));
        let mut response = request.send().await.map_err(unreachable)?;
        let status = response.status();
        let mut bytes = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(unreachable)? {
            if bytes.len() + chunk.len() > ANSWER_BYTES_MAX {
                return Err(ToolError::upstream(format!("the orchestrator's answer exceeds {ANSWER_BYTES_MAX} bytes")));
            }
            bytes.extend_from_slice(&chunk);
        }
        if status.is_success() {
            return Ok(bytes);
        }
        let message = serde_json::from_slice::<dtest_serve::model::ErrorBody>(&bytes)
            .map(|e| e.error.message)
            .unwrap_or_else(|_| String::from_utf8_lossy(&bytes[..bytes.len().min(500)]).into_owned());
        Err(ToolError::refused(status.as_u16(), message))
    }
}
