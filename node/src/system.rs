//! The machine as sysinfo sees it: capacity when none is declared, and the load figures each
//! heartbeat carries.

use std::path::Path;
use std::time::Instant;

use dtest_core::health::Metrics;
use sysinfo::{Disks, Networks, System};

use crate::api::Resources;

/// The network figure is bandwidth in use over this nominal link speed, in bits per second,
/// since the machine's real link speed is not portably known.
const NOMINAL_LINK_BPS: f64 = 1e9;

/// What this machine has: every CPU, all memory, the free space of the disk holding `workdir`.
pub fn detect(workdir: &Path) -> Resources {
    let memory = System::new().map_or(0, |mut system| {
        system.refresh_memory();
        system.total_memory()
    });
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    Resources {
        cpu_millis: cpus * 1000,
        memory_mb: memory >> 20,
        disk_mb: disk_of(workdir).map_or(0, |(_, available)| available >> 20),
        net_mbps: (NOMINAL_LINK_BPS / 1e6) as u64,
        gpus: 0,
        custom: Default::default(),
    }
}

/// The total and available bytes of the disk whose mount point holds `path` most closely.
fn disk_of(path: &Path) -> Option<(u64, u64)> {
    let path = path.canonicalize().ok()?;
    let disks = Disks::new_with_refreshed_list().ok()?;
    disks
        .iter()
        .filter(|d| path.starts_with(d.mount_point()))
        .max_by_key(|d| d.mount_point().as_os_str().len())
        .map(|d| (d.total_space(), d.available_space()))
}

/// Samples the machine's load for heartbeats.
pub struct Sampler {
    system: Option<System>,
    networks: Option<Networks>,
    workdir: std::path::PathBuf,
    last: Instant,
}

impl Sampler {
    /// A sampler for the machine; disk use is that of the disk holding `workdir`.
    pub fn new(workdir: &Path) -> Sampler {
        let mut system = System::new().ok();
        if let Some(system) = system.as_mut() {
            system.refresh_cpu_usage();
        }
        Sampler {
            system,
            networks: Networks::new_with_refreshed_list().ok(),
            workdir: workdir.to_owned(),
            last: Instant::now(),
        }
    }

    /// Load since the last sample, as fractions from 0 to 1.
    pub fn sample(&mut self, task_error_rate: f64) -> Metrics {
        let (cpu, memory) = self.system.as_mut().map_or((0.0, 0.0), |system| {
            system.refresh_cpu_usage();
            system.refresh_memory();
            let cpu = f64::from(system.global_cpu_usage()) / 100.0;
            (cpu, ratio(system.used_memory(), system.total_memory()))
        });
        let disk = disk_of(&self.workdir).map_or(0.0, |(total, available)| ratio(total - available, total));
        let elapsed = self.last.elapsed().as_secs_f64().max(1e-3);
        self.last = Instant::now();
        let network = self.networks.as_mut().map_or(0.0, |networks| {
            networks.refresh(true);
            let bytes: u64 = networks.values().map(|n| n.received() + n.transmitted()).sum();
            bytes as f64 * 8.0 / elapsed / NOMINAL_LINK_BPS
        });
        let round = |x: f64| (x.clamp(0.0, 1.0) * 1000.0).round() / 1000.0;
        Metrics {
            cpu: round(cpu),
            memory: round(memory),
            disk: round(disk),
            network: round(network),
            task_error_rate: round(task_error_rate),
        }
    }
}

fn ratio(part: u64, whole: u64) -> f64 {
    if whole == 0 { 0.0 } else { part as f64 / whole as f64 }
}
