//! dtest's simulation shell: runs the core's orchestrator and agents as madsim nodes.
//!
//! This crate will carry the core's protocol messages over `madsim::net::Endpoint`, inject the
//! scenario's faults at their simulated times and check invariants independently of the core
//! (the `dtest sim` issue). It makes no decision of its own: every decision is the core's, so
//! the simulator tests exactly what real clusters run.
//!
//! The workspace builds with `--cfg madsim` (`.cargo/config.toml`), which compiles madsim's
//! simulated runtime into the one `dtest` binary. Without the flag this crate refuses to build,
//! so a `RUSTFLAGS` that replaces the config's flags cannot silently drop the simulator.

#[cfg(not(madsim))]
compile_error!(
    "dtest-sim needs `--cfg madsim` (set in .cargo/config.toml); is RUSTFLAGS set? it replaces the config's flags"
);

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr, SocketAddr};
    use std::time::Duration;

    use madsim::net::Endpoint;
    use madsim::runtime::{Handle, Runtime};

    /// One datagram between two simulated nodes: when it arrives (in simulated time, with the
    /// seed's random latency) must be the same for the same seed.
    fn arrival(seed: u64) -> Duration {
        let runtime = Runtime::with_seed_and_config(seed, madsim::Config::default());
        runtime.block_on(async {
            let handle = Handle::current();
            let ip = |last| IpAddr::V4(Ipv4Addr::new(10, 0, 0, last));
            let server_addr = SocketAddr::new(ip(1), 7000);
            let server = handle.create_node().name("server").ip(ip(1)).build();
            let client = handle.create_node().name("client").ip(ip(2)).build();
            let start = madsim::time::Instant::now();
            let received = server.spawn(async move {
                let endpoint = Endpoint::bind(server_addr).await.expect("bind in the simulation");
                let mut buf = [0u8; 16];
                let (len, _) = endpoint.recv_from(1, &mut buf).await.expect("receive");
                assert_eq!(&buf[..len], b"heartbeat");
                madsim::time::Instant::now()
            });
            client
                .spawn(async move {
                    let endpoint = Endpoint::bind((ip(2), 7000)).await.expect("bind in the simulation");
                    endpoint.send_to(server_addr, 1, b"heartbeat").await.expect("send");
                })
                .await
                .expect("client task");
            received.await.expect("server task") - start
        })
    }

    #[test]
    fn simulated_network_is_deterministic_per_seed() {
        assert_eq!(arrival(42), arrival(42));
        assert!(arrival(42) > Duration::ZERO, "simulated sends take simulated time");
    }
}
