//! Node health: the phi accrual failure detector and health scores with anti-flapping; alerts
//! join them (issue 4).

pub mod phi;
pub mod score;

pub use phi::{PhiAccrual, PhiConfig};
pub use score::{ClusterHealth, HealthConfig, HealthState, Metrics, NodeHealth, cluster_health, score};
