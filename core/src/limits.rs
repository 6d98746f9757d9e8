//! Upper bounds on everything a scenario can ask for, checked when the scenario is parsed.
//!
//! Each limit is a named constant so that an error can say which one was crossed and so that the
//! shells can size their queues and tables from it. The JSON Schema printed by `dtest schema`
//! carries the same numbers as `maximum`/`maxItems`, because both come from these constants.

/// Largest scenario file accepted, in bytes. Scenarios describe clusters by groups with counts,
/// so even a 100,000-node scenario is a few kilobytes; this bound keeps a stray log file or a
/// hostile input from being read into memory.
pub const SCENARIO_BYTES_MAX: u64 = 8 * 1024 * 1024;
/// Deepest nesting of JSON arrays and objects. The format itself nests no deeper than 7.
pub const JSON_DEPTH_MAX: usize = 64;
/// Longest string anywhere in a scenario, in bytes (argv items, URLs, bodies included).
pub const STRING_BYTES_MAX: usize = 64 * 1024;
/// Longest name of a group, task, target, region, zone, capability or resource, in bytes.
pub const NAME_BYTES_MAX: usize = 64;
/// Longest `description`, in bytes.
pub const DESCRIPTION_BYTES_MAX: usize = 4096;

/// Nodes in one scenario, summed over all groups.
pub const NODES_MAX: u64 = 100_000;
/// Groups in one scenario.
pub const GROUPS_MAX: usize = 1_000;
/// Task entries in `workload.tasks`.
pub const TASK_SPECS_MAX: usize = 10_000;
/// Instances of one task entry (`count`).
pub const TASK_COUNT_MAX: u64 = 1_000_000;
/// Task instances in one scenario, summed over all entries.
pub const TASKS_MAX: u64 = 1_000_000;
/// Entries in `faults`.
pub const FAULTS_MAX: usize = 10_000;
/// Entries in `reservations`.
pub const RESERVATIONS_MAX: usize = 10_000;
/// Targets in `targets`.
pub const TARGETS_MAX: usize = 1_000;
/// Rules in `alerts`. Every rule is evaluated for every node at every health check, so this
/// bounds the alert engine's work per check to this many comparisons per node.
pub const ALERTS_MAX: usize = 100;
/// Names in one list of capabilities, node ids, group names or partition sides.
pub const LIST_ITEMS_MAX: usize = 100_000;
/// Named custom resources on one group or task.
pub const CUSTOM_RESOURCES_MAX: usize = 8;
/// Distinct custom resource names in one scenario. The placement index keeps every resource of
/// every node in a fixed-size array, so this bounds its size and speed.
pub const CUSTOM_KINDS_MAX: usize = 8;
/// Distinct capability names in one scenario: the placement index holds capabilities as a
/// 64-bit set, one bit of which marks a node as eligible.
pub const CAPABILITIES_MAX: usize = 63;
/// Priority of a task; higher runs first and may preempt lower when allowed.
pub const PRIORITY_MAX: u64 = 1_000;

/// Longest scenario, in seconds (7 days). Every `*_s` time is bounded by it and must also fall
/// inside the scenario's own `duration_s`.
pub const DURATION_S_MAX: f64 = 604_800.0;
/// [`DURATION_S_MAX`] in milliseconds, as the validated types and the node API carry times.
pub const DURATION_MS_MAX: u64 = DURATION_S_MAX as u64 * 1000;
/// Longest latency, timeout or duration given in milliseconds (10 minutes).
pub const MILLIS_MAX: f64 = 600_000.0;

/// CPU of one node or task, in thousandths of a core (1,024 cores).
pub const CPU_MILLIS_MAX: u64 = 1_024_000;
/// Memory of one node or task, in MiB (64 TiB).
pub const MEMORY_MB_MAX: u64 = 64 * 1024 * 1024;
/// Disk of one node or task, in MB (1 PB).
pub const DISK_MB_MAX: u64 = 1_000_000_000;
/// Network bandwidth of one node or task, in Mbit/s (1.6 Tbit/s).
pub const NET_MBPS_MAX: u64 = 1_600_000;
/// GPUs of one node or task.
pub const GPUS_MAX: u64 = 1_024;
/// Units of one named custom resource on one node or task.
pub const CUSTOM_UNITS_MAX: u64 = 1_000_000_000;

/// Request rate of one load task, in requests per second, summed over its instances' nodes.
pub const RPS_MAX: f64 = 10_000_000.0;
/// Requests of one run: [`RPS_MAX`] for [`DURATION_S_MAX`].
pub const REQUESTS_MAX: u64 = 6_048_000_000_000;
/// Rate changes of one `random` pattern (`duration_s / change_every_s`).
pub const RANDOM_CHANGES_MAX: u64 = 100_000;
/// Open connections of one load task instance.
pub const CONNECTIONS_MAX: u64 = 100_000;
/// Command-line arguments of one command task.
pub const ARGV_MAX: usize = 4_096;
/// Environment variables of one command task.
pub const ENV_MAX: usize = 1_024;
/// Longest command timeout, in seconds (1 day).
pub const COMMAND_TIMEOUT_S_MAX: f64 = 86_400.0;
/// Headers of one load request.
pub const HEADERS_MAX: usize = 256;

/// Attempts at one task instance, the first included.
pub const ATTEMPTS_MAX: u64 = 100;
/// Phi threshold of the failure detector.
pub const PHI_THRESHOLD_MAX: f64 = 100.0;
/// Heartbeat inter-arrival samples the failure detector keeps.
pub const DETECTOR_WINDOW_MAX: u64 = 10_000;
