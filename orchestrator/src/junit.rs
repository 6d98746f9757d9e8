//! The report as JUnit XML, for CI systems: a test suite per task entry, a test case per
//! instance.

use std::collections::BTreeMap;

use dtest_core::report::{Report, TaskOutcome, TaskResult};
use dtest_core::scenario::Scenario;

/// The report as JUnit XML.
pub fn junit(scenario: &Scenario, report: &Report) -> String {
    let mut by_entry: BTreeMap<&str, Vec<&TaskResult>> = BTreeMap::new();
    for r in &report.results {
        by_entry.entry(r.task.as_str()).or_default().push(r);
    }
    let count =
        |rs: &[&TaskResult], outcomes: &[TaskOutcome]| rs.iter().filter(|r| outcomes.contains(&r.outcome)).count();
    let all: Vec<&TaskResult> = report.results.iter().collect();
    let failures = [TaskOutcome::Failed, TaskOutcome::TimedOut];
    let mut xml = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    xml.push_str(&format!(
        "<testsuites name=\"{}\" tests=\"{}\" failures=\"{}\" errors=\"{}\" time=\"{:.3}\">\n",
        escape(&scenario.name),
        all.len(),
        count(&all, &failures),
        count(&all, &[TaskOutcome::Lost]),
        report.elapsed_s.unwrap_or(0.0)
    ));
    for task in &scenario.workload.tasks {
        let results = by_entry.get(task.name.as_str()).cloned().unwrap_or_default();
        let time: f64 = results.iter().map(|r| r.duration_s).sum();
        xml.push_str(&format!(
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{}\" errors=\"{}\" skipped=\"{}\" time=\"{time:.3}\">\n",
            escape(&task.name),
            results.len(),
            count(&results, &failures),
            count(&results, &[TaskOutcome::Lost]),
            count(&results, &[TaskOutcome::Cancelled]),
        ));
        for r in results {
            xml.push_str(&format!(
                "    <testcase classname=\"{}.{}\" name=\"{}[{}/{}]\" time=\"{:.3}\"",
                escape(&scenario.name),
                escape(&r.task),
                escape(&r.task),
                r.index,
                r.count,
                r.duration_s
            ));
            let first = r.message.lines().next().unwrap_or(r.outcome.name());
            let node = r.node.as_deref().unwrap_or("no node");
            match r.outcome {
                TaskOutcome::Passed => {
                    xml.push_str(&format!(">\n      <system-out>ran on {}</system-out>\n    </testcase>\n", escape(node)))
                }
                TaskOutcome::Cancelled => xml.push_str(">\n      <skipped message=\"cancelled\"/>\n    </testcase>\n"),
                TaskOutcome::Lost => xml.push_str(&format!(
                    ">\n      <error message=\"{}\" type=\"lost\"/>\n    </testcase>\n",
                    escape(first)
                )),
                TaskOutcome::Failed | TaskOutcome::TimedOut => xml.push_str(&format!(
                    ">\n      <failure message=\"{}\" type=\"{}\">{}</failure>\n      <system-out>ran on {} ({} attempts)</system-out>\n    </testcase>\n",
                    escape(first),
                    r.outcome.name(),
                    escape(&r.message),
                    escape(node),
                    r.attempts
                )),
            }
        }
        xml.push_str("  </testsuite>\n");
    }
    xml.push_str("</testsuites>\n");
    xml
}

/// Escapes text for XML attributes and content, dropping characters XML 1.0 cannot hold.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\n' => out.push_str("&#10;"),
            '\t' | '\r' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xml_escaping_keeps_text_and_drops_what_xml_cannot_hold() {
        assert_eq!(escape("a<b & \"c\"\n\u{1}"), "a&lt;b &amp; &quot;c&quot;&#10;\u{FFFD}");
    }
}
