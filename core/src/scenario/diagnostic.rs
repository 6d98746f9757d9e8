//! Problems found in a scenario file: where they are, which field, and what is wrong.

use std::fmt;

use super::json::{Json, Pos, Value};

/// A field path inside a scenario, printed as `workload.tasks[1].requires.cpu_millis`.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Path(Vec<Segment>);

/// One step of a [`Path`].
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Segment {
    /// An object member.
    Key(String),
    /// An array element.
    Index(usize),
}

impl Path {
    /// The root of the document.
    pub fn root() -> Path {
        Path(Vec::new())
    }

    /// This path extended by an object key.
    pub fn key(&self, key: &str) -> Path {
        let mut segments = self.0.clone();
        segments.push(Segment::Key(key.to_owned()));
        Path(segments)
    }

    /// This path extended by an array index.
    pub fn index(&self, index: usize) -> Path {
        let mut segments = self.0.clone();
        segments.push(Segment::Index(index));
        Path(segments)
    }

    /// Whether this is the root.
    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    /// Where the value at this path starts in `json`: the deepest existing prefix's position.
    pub fn locate(&self, json: &Json) -> Pos {
        let mut at = json;
        for segment in &self.0 {
            let next = match (segment, &at.value) {
                (Segment::Key(key), Value::Object(_)) => at.member(key).map(|m| &m.value),
                (Segment::Index(i), Value::Array(items)) => items.get(*i),
                _ => None,
            };
            match next {
                Some(next) => at = next,
                None => break,
            }
        }
        at.pos
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, segment) in self.0.iter().enumerate() {
            match segment {
                Segment::Index(index) => write!(f, "[{index}]")?,
                Segment::Key(key) => {
                    let plain = !key.is_empty()
                        && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'$');
                    match (plain, i) {
                        (true, 0) => write!(f, "{key}")?,
                        (true, _) => write!(f, ".{key}")?,
                        (false, _) => write!(f, "[{key:?}]")?,
                    }
                }
            }
        }
        Ok(())
    }
}

/// One problem in a scenario file.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Diagnostic {
    /// Where in the file, when the file parsed far enough to know.
    pub pos: Option<Pos>,
    /// The field the problem is about; the root for problems with the whole file.
    pub path: Path,
    /// What is wrong, lowercase, no trailing period.
    pub message: String,
}

impl Diagnostic {
    /// Formats the problem as `FILE:LINE:COLUMN: PATH: MESSAGE`, the way compilers do, so that
    /// editors and terminals can jump to it.
    pub fn display_in<'a>(&'a self, file: &'a str) -> impl fmt::Display + 'a {
        DisplayIn { diagnostic: self, file }
    }
}

struct DisplayIn<'a> {
    diagnostic: &'a Diagnostic,
    file: &'a str,
}

impl fmt::Display for DisplayIn<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.diagnostic;
        write!(f, "{}", self.file)?;
        if let Some(pos) = d.pos {
            write!(f, ":{pos}")?;
        }
        if !d.path.is_root() {
            write!(f, ": {}", d.path)?;
        }
        write!(f, ": {}", d.message)
    }
}

/// The closest of `candidates` to `word`, if it is close enough to be a likely typo.
pub fn suggest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (edit_distance(word, c), c))
        .filter(|&(d, c)| d > 0 && d <= (c.chars().count().max(3) / 3))
        .min_by_key(|&(d, c)| (d, c))
        .map(|(_, c)| c)
}

/// Levenshtein distance in characters, for "did you mean" hints.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    let mut current = vec![0; b.len() + 1];
    for (i, ca) in a.chars().enumerate() {
        current[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != cb);
            current[j + 1] = substitution.min(previous[j + 1] + 1).min(current[j] + 1);
        }
        std::mem::swap(&mut previous, &mut current);
    }
    previous[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_print_like_field_accesses() {
        let path = Path::root().key("workload").key("tasks").index(1).key("requires").key("cpu_millis");
        assert_eq!(path.to_string(), "workload.tasks[1].requires.cpu_millis");
        assert_eq!(Path::root().key("targets").key("my api").to_string(), "targets[\"my api\"]");
    }

    #[test]
    fn suggestions_catch_typos_only() {
        let fields = ["cpu_millis", "memory_mb", "gpus"];
        assert_eq!(suggest("cpu_milis", fields), Some("cpu_millis"));
        assert_eq!(suggest("gpu", fields), Some("gpus"));
        assert_eq!(suggest("colour", fields), None);
    }
}
