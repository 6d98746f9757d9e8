//! Resource amounts as fixed-size vectors, capability sets as bit sets, and the catalog that
//! maps a scenario's names onto them.
//!
//! Placement compares amounts millions of times a second, so a node's resources are an array of
//! `u32` (every per-node bound in `limits` fits) rather than a map: the five fixed resources,
//! then up to [`CUSTOM_KINDS_MAX`] named custom ones at indices the [`Catalog`] assigns.

use std::collections::BTreeMap;

use crate::limits::{CAPABILITIES_MAX, CUSTOM_KINDS_MAX};
use crate::scenario::{Resources, Scenario};

/// The fixed resources, in index order.
pub const FIXED_RESOURCES: [&str; 5] = ["cpu_millis", "memory_mb", "disk_mb", "net_mbps", "gpus"];
/// Length of an [`Amounts`] vector.
pub const KINDS: usize = FIXED_RESOURCES.len() + CUSTOM_KINDS_MAX;

/// An amount of every resource kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Amounts(pub [u32; KINDS]);

impl Amounts {
    /// Nothing of anything.
    pub const ZERO: Amounts = Amounts([0; KINDS]);

    /// Whether `self` is at least `need` in every kind.
    #[inline]
    pub fn covers(&self, need: &Amounts) -> bool {
        self.0.iter().zip(need.0.iter()).all(|(have, need)| have >= need)
    }

    /// `self + other`; panics on overflow, which only a bug can cause (amounts are bounded by
    /// capacities that fit `u32`).
    #[inline]
    pub fn plus(&self, other: &Amounts) -> Amounts {
        let mut out = *self;
        for (o, x) in out.0.iter_mut().zip(other.0.iter()) {
            *o = o.checked_add(*x).expect("resource amounts stay within u32");
        }
        out
    }

    /// `self - other`; panics if `other` exceeds `self` in any kind, which only a bug can cause.
    #[inline]
    pub fn minus(&self, other: &Amounts) -> Amounts {
        let mut out = *self;
        for (o, x) in out.0.iter_mut().zip(other.0.iter()) {
            *o = o.checked_sub(*x).expect("never take away more than is there");
        }
        out
    }

    /// `self - other`, at zero where `other` is larger.
    #[inline]
    pub fn saturating_minus(&self, other: &Amounts) -> Amounts {
        let mut out = *self;
        for (o, x) in out.0.iter_mut().zip(other.0.iter()) {
            *o = o.saturating_sub(*x);
        }
        out
    }

    /// The larger of the two in every kind.
    #[inline]
    pub fn max(&self, other: &Amounts) -> Amounts {
        let mut out = *self;
        for (o, x) in out.0.iter_mut().zip(other.0.iter()) {
            *o = (*o).max(*x);
        }
        out
    }

    /// The smaller of the two in every kind.
    #[inline]
    pub fn min(&self, other: &Amounts) -> Amounts {
        let mut out = *self;
        for (o, x) in out.0.iter_mut().zip(other.0.iter()) {
            *o = (*o).min(*x);
        }
        out
    }

    /// Whether every kind is zero.
    pub fn is_zero(&self) -> bool {
        self.0.iter().all(|&x| x == 0)
    }
}

/// Parts per million: the fixed-point unit of shares and loads, so comparisons are exact.
pub const PPM: u32 = 1_000_000;

/// The dominant share of `used` in `capacity`: the largest fraction over the kinds the node has,
/// in parts per million (DRF's dominant share; 0 for a node with no capacity at all).
#[inline]
pub fn dominant_share(used: &Amounts, capacity: &Amounts) -> u32 {
    let mut share = 0u64;
    for (u, c) in used.0.iter().zip(capacity.0.iter()) {
        if *c > 0 {
            share = share.max(u64::from(*u) * u64::from(PPM) / u64::from(*c));
        }
    }
    share.min(u64::from(PPM)) as u32
}

/// A set of capabilities, one bit each; bit [`CapSet::ELIGIBLE`] marks a node that may take work.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CapSet(pub u64);

impl CapSet {
    /// The bit that marks a node healthy, not suspected and with a closed circuit.
    pub const ELIGIBLE: u64 = 1 << 63;

    /// Whether every capability of `need` is in `self`.
    #[inline]
    pub fn contains(self, need: CapSet) -> bool {
        self.0 & need.0 == need.0
    }

    /// Capabilities of `self` that `other` lacks.
    pub fn without(self, other: CapSet) -> CapSet {
        CapSet(self.0 & !other.0)
    }

    /// Number of capabilities, the eligibility bit not counted.
    pub fn len(self) -> u32 {
        (self.0 & !Self::ELIGIBLE).count_ones()
    }

    /// Whether there is no capability in the set.
    pub fn is_empty(self) -> bool {
        self.len() == 0
    }
}

/// Why a name could not be mapped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CatalogError {
    /// More distinct capabilities than [`CAPABILITIES_MAX`].
    TooManyCapabilities,
    /// More distinct custom resources than [`CUSTOM_KINDS_MAX`].
    TooManyCustomKinds,
}

impl std::fmt::Display for CatalogError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CatalogError::TooManyCapabilities => write!(f, "more than {CAPABILITIES_MAX} distinct capabilities"),
            CatalogError::TooManyCustomKinds => write!(f, "more than {CUSTOM_KINDS_MAX} distinct custom resources"),
        }
    }
}

impl std::error::Error for CatalogError {}

/// The names of a cluster's capabilities and custom resources, with their indices.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Catalog {
    capabilities: BTreeMap<String, u8>,
    custom: BTreeMap<String, u8>,
}

impl Catalog {
    /// The catalog of every name a scenario's groups use. A validated scenario is within the
    /// limits, so this cannot fail for one.
    pub fn of_scenario(scenario: &Scenario) -> Catalog {
        let mut catalog = Catalog::default();
        for group in &scenario.groups {
            for capability in &group.capabilities {
                catalog.add_capability(capability).expect("scenarios are within CAPABILITIES_MAX");
            }
            for name in group.resources.iter().flat_map(|r| r.custom.keys()) {
                catalog.add_custom(name).expect("scenarios are within CUSTOM_KINDS_MAX");
            }
        }
        catalog
    }

    /// Adds a capability name (a no-op if known) and returns its bit.
    pub fn add_capability(&mut self, name: &str) -> Result<CapSet, CatalogError> {
        let next = self.capabilities.len();
        if let Some(&bit) = self.capabilities.get(name) {
            return Ok(CapSet(1 << bit));
        }
        if next >= CAPABILITIES_MAX {
            return Err(CatalogError::TooManyCapabilities);
        }
        self.capabilities.insert(name.to_owned(), next as u8);
        Ok(CapSet(1 << next))
    }

    /// Adds a custom resource name (a no-op if known) and returns its index in [`Amounts`].
    pub fn add_custom(&mut self, name: &str) -> Result<usize, CatalogError> {
        let next = self.custom.len();
        if let Some(&i) = self.custom.get(name) {
            return Ok(FIXED_RESOURCES.len() + usize::from(i));
        }
        if next >= CUSTOM_KINDS_MAX {
            return Err(CatalogError::TooManyCustomKinds);
        }
        self.custom.insert(name.to_owned(), next as u8);
        Ok(FIXED_RESOURCES.len() + next)
    }

    /// The set of the named capabilities, or `None` if one is unknown (no node offers it).
    pub fn capabilities<'a>(&self, names: impl IntoIterator<Item = &'a String>) -> Option<CapSet> {
        let mut set = CapSet::default();
        for name in names {
            set.0 |= 1 << *self.capabilities.get(name)?;
        }
        Some(set)
    }

    /// The amounts of `resources`, or `None` if it names a custom resource no node has.
    pub fn amounts(&self, resources: &Resources) -> Option<Amounts> {
        let clamp = |x: u64| u32::try_from(x).unwrap_or(u32::MAX);
        let mut a = Amounts::ZERO;
        a.0[0] = clamp(resources.cpu_millis);
        a.0[1] = clamp(resources.memory_mb);
        a.0[2] = clamp(resources.disk_mb);
        a.0[3] = clamp(resources.net_mbps);
        a.0[4] = clamp(resources.gpus);
        for (name, &units) in &resources.custom {
            let i = *self.custom.get(name)?;
            a.0[FIXED_RESOURCES.len() + usize::from(i)] = clamp(units);
        }
        Some(a)
    }

    /// The name of every resource kind in use, by index: the fixed ones, then the custom ones.
    pub fn resource_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = FIXED_RESOURCES.to_vec();
        let mut custom: Vec<(&u8, &String)> = self.custom.iter().map(|(n, i)| (i, n)).collect();
        custom.sort();
        names.extend(custom.into_iter().map(|(_, n)| n.as_str()));
        names
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dominant_share_is_the_largest_fraction() {
        let mut cap = Amounts::ZERO;
        cap.0[0] = 4000;
        cap.0[1] = 8192;
        let mut used = Amounts::ZERO;
        used.0[0] = 1000;
        used.0[1] = 4096;
        assert_eq!(dominant_share(&used, &cap), PPM / 2);
        assert_eq!(dominant_share(&Amounts::ZERO, &Amounts::ZERO), 0);
    }

    #[test]
    fn catalog_bounds_the_names() {
        let mut catalog = Catalog::default();
        for i in 0..CAPABILITIES_MAX {
            catalog.add_capability(&format!("c{i}")).unwrap();
        }
        assert_eq!(catalog.add_capability("c0"), Ok(CapSet(1)));
        assert_eq!(catalog.add_capability("one-more"), Err(CatalogError::TooManyCapabilities));
        assert!(catalog.capabilities([&"nope".to_owned()]).is_none());
    }
}
