//! Node health: failure detection now; health scores and alerts join it (issue 4).

pub mod phi;

pub use phi::{PhiAccrual, PhiConfig};
