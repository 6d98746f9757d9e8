//! Checks a parsed document against the scenario's JSON Schema and reports every problem.
//!
//! The schema is generated from the serde types in `file.rs`, so checking against it is checking
//! against the parser's own idea of the format. This walker understands the subset of JSON Schema
//! 2020-12 that schemars emits for those types (`$ref`, `type`, `properties`, `required`,
//! `additionalProperties`, `items`, `enum`, `const`, `oneOf`, `anyOf` and the numeric and size
//! bounds); a keyword it does not know is a bug, caught by `every_schema_keyword_is_understood`.
//! Unlike serde it does not stop at the first problem.

use serde_json::{Map, Value as Schema};

use super::diagnostic::{Diagnostic, Path, suggest};
use super::json::{Json, Number, Value};

/// Keywords this checker enforces or may safely ignore (annotations); a test holds the
/// generated schema to this list.
#[cfg(test)]
pub(crate) const KEYWORDS: &[&str] = &[
    "$ref",
    "type",
    "properties",
    "required",
    "additionalProperties",
    "items",
    "enum",
    "const",
    "oneOf",
    "anyOf",
    "minimum",
    "maximum",
    "minItems",
    "maxItems",
    "maxProperties",
    "format",
    "description",
    "default",
    "title",
    "$schema",
    "$defs",
];

/// Every problem of `json` against `schema` (the root schema, holding `$defs`).
pub(crate) fn check(schema: &Schema, json: &Json) -> Vec<Diagnostic> {
    let mut checker = Checker { root: schema, problems: Vec::new() };
    checker.value(schema, json, &Path::root());
    checker.problems
}

struct Checker<'s> {
    root: &'s Schema,
    problems: Vec<Diagnostic>,
}

impl<'s> Checker<'s> {
    fn problem(&mut self, json: &Json, path: &Path, message: String) {
        self.problems.push(Diagnostic { pos: Some(json.pos), path: path.clone(), message });
    }

    /// Follows `$ref` chains to the schema that says something.
    fn resolve(&self, mut schema: &'s Schema) -> &'s Schema {
        // schemars only emits local references: `#/$defs/Name`.
        while let Some(reference) = schema.get("$ref").and_then(Schema::as_str) {
            let name = reference.trim_start_matches("#/$defs/");
            match self.root.get("$defs").and_then(|defs| defs.get(name)) {
                Some(target) => schema = target,
                None => break,
            }
        }
        schema
    }

    fn value(&mut self, schema: &'s Schema, json: &Json, path: &Path) {
        let schema = self.resolve(schema);
        let Some(schema) = schema.as_object() else { return };
        if let Some(branches) = schema.get("oneOf").and_then(Schema::as_array) {
            return self.one_of(branches, json, path);
        }
        if let Some(branches) = schema.get("anyOf").and_then(Schema::as_array) {
            return self.any_of(branches, json, path);
        }
        if !self.type_matches(schema, json, path) {
            return;
        }
        if let Some(allowed) = schema.get("enum").and_then(Schema::as_array) {
            let names: Vec<&str> = allowed.iter().filter_map(Schema::as_str).collect();
            if !matches!(&json.value, Value::String(s) if names.contains(&s.as_str())) {
                let message = expected_one_of(&names, json);
                self.problem(json, path, message);
            }
        }
        match &json.value {
            Value::String(text) => {
                if let Err(why) = super::rules::text(text) {
                    self.problem(json, path, why);
                }
            }
            Value::Number(n) => self.bounds(schema, *n, json, path),
            Value::Array(items) => self.array(schema, items, json, path),
            Value::Object(_) => self.object(schema, json, path),
            _ => {}
        }
    }

    /// Checks `type`; on a mismatch reports it and returns false (nothing further applies).
    fn type_matches(&mut self, schema: &Map<String, Schema>, json: &Json, path: &Path) -> bool {
        let types: Vec<&str> = match schema.get("type") {
            Some(Schema::String(t)) => vec![t.as_str()],
            Some(Schema::Array(ts)) => ts.iter().filter_map(Schema::as_str).collect(),
            _ => return true,
        };
        let ok = types.iter().any(|t| match (*t, &json.value) {
            ("null", Value::Null) | ("boolean", Value::Bool(_)) | ("string", Value::String(_)) => true,
            ("array", Value::Array(_)) | ("object", Value::Object(_)) => true,
            ("number", Value::Number(_)) => true,
            ("integer", Value::Number(n)) => is_integer(*n),
            _ => false,
        });
        if !ok {
            let minimum = schema.get("minimum").and_then(Schema::as_f64);
            let wanted = types.iter().find(|t| **t != "null").copied().unwrap_or("null");
            let message = format!("expected {}, found {}", describe_type(wanted, minimum), found(json));
            self.problem(json, path, message);
        }
        ok
    }

    fn bounds(&mut self, schema: &Map<String, Schema>, n: Number, json: &Json, path: &Path) {
        let x = n.as_f64();
        let minimum = schema.get("minimum").and_then(Schema::as_f64);
        let maximum = schema.get("maximum").and_then(Schema::as_f64);
        let integer = schema
            .get("type")
            .is_some_and(|t| t == "integer" || t.as_array().is_some_and(|a| a.iter().any(|t| t == "integer")));
        let kind = if integer { "integer" } else { "number" };
        match (minimum, maximum) {
            (Some(min), _) if x < min && (min == 0.0 || (min == 1.0 && integer)) => {
                let message = format!("expected {}, found {}", describe_type(kind, minimum), found(json));
                self.problem(json, path, message);
            }
            (Some(min), _) if x < min => {
                self.problem(json, path, format!("expected at least {}, found {}", number(min), found(json)));
            }
            (_, Some(max)) if x > max => {
                self.problem(json, path, format!("expected at most {}, found {}", number(max), found(json)));
            }
            _ => {}
        }
    }

    fn array(&mut self, schema: &'s Map<String, Schema>, items: &[Json], json: &Json, path: &Path) {
        let count = items.len() as u64;
        if let Some(min) = schema.get("minItems").and_then(Schema::as_u64).filter(|&min| count < min) {
            let message = format!("expected at least {min} item{}, found {count}", plural(min));
            self.problem(json, path, message);
        }
        if let Some(max) = schema.get("maxItems").and_then(Schema::as_u64).filter(|&max| count > max) {
            self.problem(json, path, format!("expected at most {max} items, found {count}"));
            return; // Do not walk a list that is too long to matter.
        }
        if let Some(item_schema) = schema.get("items") {
            for (i, item) in items.iter().enumerate() {
                self.value(item_schema, item, &path.index(i));
            }
        }
    }

    fn object(&mut self, schema: &'s Map<String, Schema>, json: &Json, path: &Path) {
        let Value::Object(members) = &json.value else { return };
        let properties = schema.get("properties").and_then(Schema::as_object);
        let additional = schema.get("additionalProperties");
        if let Some(max) = schema.get("maxProperties").and_then(Schema::as_u64)
            && members.len() as u64 > max
        {
            self.problem(json, path, format!("expected at most {max} entries, found {}", members.len()));
            return;
        }
        for member in members {
            let member_path = path.key(&member.key);
            match (properties.and_then(|p| p.get(&member.key)), additional) {
                (Some(property), _) => self.value(property, &member.value, &member_path),
                (None, Some(Schema::Bool(false))) => {
                    let known: Vec<&str> =
                        properties.map(|p| p.keys().map(String::as_str).collect()).unwrap_or_default();
                    let mut message = format!("unknown field `{}`", member.key);
                    match suggest(&member.key, known.iter().copied()) {
                        Some(near) => message.push_str(&format!(", did you mean `{near}`?")),
                        None => message.push_str(&format!("; expected one of {}", list(&known))),
                    }
                    self.problems.push(Diagnostic { pos: Some(member.key_pos), path: member_path, message });
                }
                (None, Some(additional)) if additional.is_object() => {
                    self.value(additional, &member.value, &member_path);
                }
                (None, _) => {}
            }
        }
        for required in schema.get("required").and_then(Schema::as_array).into_iter().flatten() {
            let Some(name) = required.as_str() else { continue };
            if json.member(name).is_none() {
                self.problem(json, path, format!("missing field `{name}`"));
            }
        }
    }

    /// `oneOf` as schemars emits it: string constants (a unit enum) or objects tagged by a
    /// property holding a `const` (an internally tagged enum). Anything else must match exactly
    /// one branch.
    fn one_of(&mut self, branches: &'s [Schema], json: &Json, path: &Path) {
        let branches: Vec<&'s Schema> = branches.iter().map(|b| self.resolve(b)).collect();
        let constants: Vec<&str> = branches.iter().filter_map(|b| b.get("const").and_then(Schema::as_str)).collect();
        if constants.len() == branches.len() {
            if !matches!(&json.value, Value::String(s) if constants.contains(&s.as_str())) {
                let message = expected_one_of(&constants, json);
                self.problem(json, path, message);
            }
            return;
        }
        if let Some((tag, tags)) = tagged(&branches) {
            let Value::Object(_) = &json.value else {
                return self.problem(json, path, format!("expected an object, found {}", found(json)));
            };
            let Some(member) = json.member(tag) else {
                return self.problem(json, path, format!("missing field `{tag}` (one of {})", list(&tags)));
            };
            let chosen = tags.iter().position(|t| matches!(&member.value.value, Value::String(s) if s == t));
            match chosen {
                Some(i) => self.value(branches[i], json, path),
                None => {
                    let message = expected_one_of(&tags, &member.value);
                    self.problem(&member.value, &path.key(tag), message);
                }
            }
            return;
        }
        let matching: Vec<Vec<Diagnostic>> = branches.iter().map(|b| check_branch(self.root, b, json, path)).collect();
        if matching.iter().filter(|problems| problems.is_empty()).count() != 1 {
            // Report the problems of the branch that came closest.
            let closest = matching.into_iter().min_by_key(Vec::len).unwrap_or_default();
            self.problems.extend(closest);
        }
    }

    /// `anyOf` as schemars emits it for `Option<T>`: `[T, {type: null}]`.
    fn any_of(&mut self, branches: &'s [Schema], json: &Json, path: &Path) {
        let mut best: Option<Vec<Diagnostic>> = None;
        for branch in branches {
            let problems = check_branch(self.root, branch, json, path);
            if problems.is_empty() {
                return;
            }
            let is_null_branch = self.resolve(branch).get("type").is_some_and(|t| t == "null");
            if !is_null_branch && best.as_ref().is_none_or(|b| problems.len() < b.len()) {
                best = Some(problems);
            }
        }
        self.problems.extend(best.unwrap_or_default());
    }
}

fn check_branch(root: &Schema, branch: &Schema, json: &Json, path: &Path) -> Vec<Diagnostic> {
    let mut checker = Checker { root, problems: Vec::new() };
    checker.value(branch, json, path);
    checker.problems
}

/// If every branch is an object schema whose property `tag` is a string `const`, the tag's
/// name and the constants in branch order.
fn tagged<'s>(branches: &[&'s Schema]) -> Option<(&'s str, Vec<&'s str>)> {
    let first = branches.first()?.get("properties")?.as_object()?;
    let (tag, _) = first.iter().find(|(_, p)| p.get("const").is_some())?;
    let tags = branches
        .iter()
        .map(|b| b.get("properties")?.get(tag)?.get("const")?.as_str())
        .collect::<Option<Vec<&str>>>()?;
    Some((tag.as_str(), tags))
}

fn is_integer(n: Number) -> bool {
    match n {
        Number::Unsigned(_) | Number::Signed(_) => true,
        // JSON Schema counts 5.0 as an integer; serde does not, so neither do we.
        Number::Float(_) => false,
    }
}

/// "a non-negative integer" and the like, from the type and its `minimum`.
fn describe_type(t: &str, minimum: Option<f64>) -> String {
    match (t, minimum) {
        ("integer", Some(0.0)) => "a non-negative integer",
        ("integer", Some(1.0)) => "a positive integer",
        ("integer", _) => "an integer",
        ("number", Some(0.0)) => "a non-negative number",
        ("number", _) => "a number",
        ("string", _) => "a string",
        ("boolean", _) => "true or false",
        ("array", _) => "an array",
        ("object", _) => "an object",
        _ => "null",
    }
    .to_owned()
}

fn expected_one_of(names: &[&str], json: &Json) -> String {
    let mut message = format!("expected one of {}, found {}", list(names), found(json));
    if let Value::String(s) = &json.value
        && let Some(near) = suggest(s, names.iter().copied())
    {
        message.push_str(&format!(" (did you mean `{near}`?)"));
    }
    message
}

fn found(json: &Json) -> String {
    match &json.value {
        Value::Number(Number::Float(x)) => number(*x),
        _ => json.describe(),
    }
}

/// A number as people write it: `100000`, `0.5`, `1e30`.
pub(super) fn number(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e16 {
        format!("{}", x as i64)
    } else if x.abs() >= 1e16 {
        format!("{x:e}")
    } else {
        format!("{x}")
    }
}

fn list(names: &[&str]) -> String {
    names.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ")
}

fn plural(n: u64) -> &'static str {
    if n == 1 { "" } else { "s" }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Walks every schema object and collects keywords this checker does not know.
    fn unknown_keywords(schema: &Schema, out: &mut Vec<String>) {
        match schema {
            Schema::Object(map) => {
                for (key, value) in map {
                    match key.as_str() {
                        // Maps from names to schemas: their keys are names, not keywords.
                        "properties" | "$defs" => {
                            for sub in value.as_object().into_iter().flat_map(|m| m.values()) {
                                unknown_keywords(sub, out);
                            }
                        }
                        "default" | "const" | "enum" => {}
                        _ => {
                            if !KEYWORDS.contains(&key.as_str()) {
                                out.push(key.clone());
                            }
                            unknown_keywords(value, out);
                        }
                    }
                }
            }
            Schema::Array(items) => items.iter().for_each(|item| unknown_keywords(item, out)),
            _ => {}
        }
    }

    #[test]
    fn every_schema_keyword_is_understood() {
        let mut unknown = Vec::new();
        unknown_keywords(crate::scenario::schema(), &mut unknown);
        assert_eq!(unknown, Vec::<String>::new());
    }

    fn problems(schema: Schema, text: &str) -> Vec<String> {
        let json = crate::scenario::json::parse(text.as_bytes()).unwrap();
        check(&schema, &json).iter().map(|d| format!("{}: {}: {}", d.pos.unwrap(), d.path, d.message)).collect()
    }

    #[test]
    fn reports_every_problem_not_only_the_first() {
        let schema = serde_json::json!({
            "type": "object",
            "properties": {
                "count": { "type": "integer", "minimum": 0, "maximum": 10 },
                "items": { "type": "array", "items": { "type": "string" }, "maxItems": 2 }
            },
            "required": ["count", "name"],
            "additionalProperties": false
        });
        assert_eq!(
            problems(schema, r#"{"count": -5, "items": ["a", 1], "colour": 1}"#),
            [
                "1:11: count: expected a non-negative integer, found -5",
                "1:30: items[1]: expected a string, found 1",
                "1:34: colour: unknown field `colour`; expected one of `count`, `items`",
                "1:1: : missing field `name`",
            ]
        );
    }
}
