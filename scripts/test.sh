#!/usr/bin/env bash
# Runs every check dtest has, on a bare Debian machine with a Rust toolchain: installs what the
# tests need, then formatting, lints, all tests, and the benchmarks in quick test mode.
# This is the README's test command and what CI runs (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

# RUSTFLAGS would replace .cargo/config.toml's `--cfg madsim` and drop the simulator.
if [ -n "${RUSTFLAGS:-}${RUSTDOCFLAGS:-}" ]; then
  echo "error: RUSTFLAGS or RUSTDOCFLAGS is set; they replace .cargo/config.toml's flags. Unset them." >&2
  exit 2
fi

step "installing test dependencies"
# Python's jsonschema is the independent validator the schema test checks `dtest schema` with;
# junitparser the JUnit consumer the run tests read `--junit` files with; hdrhistogram (module
# hdrh) the other HdrHistogram implementation that reads the reports' histograms; python3 also
# runs the sharded test suite that `dtest run` distributes. Debian's chromium renders the HTML
# report in the load tests; util-linux's `script` gives them a terminal to watch progress bars on.
# requests and websockets are the clients the `dtest serve` end-to-end tests (serve_e2e.py) drive
# its REST API and event WebSocket with; schemathesis fuzzes it against its own OpenAPI document.
# mcp is the official MCP Python SDK, the client the `dtest mcp` end-to-end tests (mcp_e2e.py) drive it with.
# PyYAML reads the sweep manifests of docs/k8s and docs/ci, which cli/tests/it/sweeps.rs runs as written.
missing=()
command -v python3 >/dev/null 2>&1 || missing+=(python3 python3-pip)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v script >/dev/null 2>&1 || missing+=(bsdutils)
# xxd makes the tokens in the README's `dtest serve` walkthrough, which a test runs as printed.
command -v xxd >/dev/null 2>&1 || missing+=(xxd)
# The real Prometheus scrapes `/metrics` of a node and a service (cli/tests/it/metrics.rs), and its
# promtool lints them.
command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi
if ! python3 -c 'import jsonschema, junitparser, hdrh, requests, websockets, schemathesis, mcp, yaml' 2>/dev/null; then
  pip_install() {
    python3 -m pip install --quiet --disable-pip-version-check "$@" 'jsonschema>=4.18,<5' 'junitparser>=3.1,<4' \
      'hdrhistogram>=0.10,<0.11' 'requests>=2.32,<3' 'websockets>=14,<18' 'schemathesis>=4,<5' \
      'mcp==2.3.0' 'pyyaml>=6,<7'
  }
  # Debian's own python3 refuses system-wide installs (PEP 668) unless told otherwise.
  pip_install || pip_install --break-system-packages
fi
for component in rustfmt clippy; do
  if ! cargo "${component/rustfmt/fmt}" --version >/dev/null 2>&1; then
    rustup component add "$component"
  fi
done

step "cargo fmt --check"
cargo fmt --all --check

step "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo test"
cargo test --workspace --locked

step "benchmarks (quick test mode)"
cargo bench --workspace --locked -- --test
