//! Node health: the phi accrual failure detector, health scores with anti-flapping, and alerts.

pub mod alerts;
pub mod phi;
pub mod score;

pub use alerts::{AlertError, AlertEvent, AlertRule, Alerts, Comparison, Severity, Transition};
pub use phi::{PhiAccrual, PhiConfig};
pub use score::{ClusterHealth, HealthConfig, HealthState, Metrics, NodeHealth, cluster_health, score};
