//! The HTML report: one self-contained page.

use dtest_core::report::Report;

/// The page for `report`.
pub fn page(report: &Report) -> String {
    format!("<!doctype html><title>{}</title>", report.scenario)
}
