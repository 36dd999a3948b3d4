//! The field check: a type that holds state (a struct that is not `Copy`)
//! has its fields written only in the file that defines it. Other files
//! change such a type through its methods, never by assigning one of its
//! fields or by pushing into, clearing or taking from a container field.
//! Reading a field, or calling a method of the part a field holds, is fine:
//! that is how a type composes parts that each own their fields.
//!
//! The check reads sources (no build) and names fields, not types, so a
//! field name that is also a field of a plain value type (`Copy`, built
//! whole) or of a type of the writing file itself is not judged there.

use std::collections::{BTreeMap, BTreeSet};

/// Methods that change the container they are called on.
const MUTATORS: &[&str] = &[
    "push",
    "push_back",
    "push_front",
    "pop",
    "pop_back",
    "pop_front",
    "clear",
    "retain",
    "truncate",
    "insert",
    "remove",
    "take",
    "replace",
    "extend",
    "get_or_insert",
    "get_or_insert_with",
];

/// A struct as the check sees it.
#[derive(Debug)]
struct Struct {
    name: String,
    /// Whether it derives `Copy` (a plain value, built whole).
    copy: bool,
    /// Fields visible outside the struct's own file.
    open_fields: Vec<String>,
    /// Every field.
    fields: Vec<String>,
}

/// One line per write of a state type's field from another file;
/// `files` maps a name for each file to its text without comments and
/// tests (as the layering check reads it).
pub fn check(files: &BTreeMap<String, String>) -> Vec<String> {
    let structs: BTreeMap<&String, Vec<Struct>> =
        files.iter().map(|(f, text)| (f, structs(text))).collect();
    let record_fields: BTreeSet<&str> = structs
        .values()
        .flatten()
        .filter(|s| s.copy)
        .flat_map(|s| s.fields.iter().map(String::as_str))
        .collect();
    let mut problems = Vec::new();
    for (owner, defined) in &structs {
        for s in defined.iter().filter(|s| !s.copy) {
            for field in &s.open_fields {
                if record_fields.contains(field.as_str()) {
                    continue;
                }
                for (file, text) in files {
                    let own = structs[file]
                        .iter()
                        .any(|t| t.fields.iter().any(|f| f == field));
                    if file == *owner || own {
                        continue;
                    }
                    for (n, line) in text.lines().enumerate() {
                        if writes(line, field) {
                            problems.push(format!(
                                "{file}, line {}: writes {}.{field} (a type of {owner}): give it a method there",
                                n + 1,
                                s.name
                            ));
                        }
                    }
                }
            }
        }
    }
    problems
}

/// The structs `text` defines, with their fields.
fn structs(text: &str) -> Vec<Struct> {
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    let mut found = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let Some(name) = struct_name(lines[i]) else {
            i += 1;
            continue;
        };
        let copy = lines[..i]
            .iter()
            .rev()
            .take_while(|l| l.starts_with("#[") || l.is_empty())
            .any(|l| l.starts_with("#[derive") && l.contains("Copy"));
        // The body starts at the first line ending in `{` (generics may
        // span lines); a `;` first means a tuple or unit struct.
        let Some(open) =
            (i..lines.len()).find(|&j| lines[j].ends_with('{') || lines[j].ends_with(';'))
        else {
            break;
        };
        if lines[open].ends_with(';') {
            i = open + 1;
            continue;
        }
        let mut s = Struct {
            name,
            copy,
            open_fields: Vec::new(),
            fields: Vec::new(),
        };
        let mut depth = 1;
        let mut j = open + 1;
        while j < lines.len() && depth > 0 {
            let line = lines[j];
            if depth == 1 {
                if let Some((field, open_field)) = field_of(line) {
                    s.fields.push(field.clone());
                    if open_field {
                        s.open_fields.push(field);
                    }
                }
            }
            depth += line.matches('{').count();
            depth -= line.matches('}').count().min(depth);
            j += 1;
        }
        found.push(s);
        i = j;
    }
    found
}

/// The name of the struct a line starts to define.
fn struct_name(line: &str) -> Option<String> {
    let rest = line
        .strip_prefix("pub(crate) struct ")
        .or_else(|| line.strip_prefix("pub struct "))
        .or_else(|| line.strip_prefix("struct "))?;
    let name: String = rest
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    (!name.is_empty()).then_some(name)
}

/// A field declaration: its name and whether it is visible outside the
/// file (`pub` or `pub(crate)`).
fn field_of(line: &str) -> Option<(String, bool)> {
    let (rest, open) = match line.strip_prefix("pub(crate) ") {
        Some(rest) => (rest, true),
        None => match line.strip_prefix("pub ") {
            Some(rest) => (rest, true),
            None => (line, false),
        },
    };
    let (name, after) = rest.split_once(':')?;
    let is_name = !name.is_empty() && name.chars().all(|c| c.is_alphanumeric() || c == '_');
    // `name: Type,` (not `name::path` or a `match` arm).
    (is_name && !after.starts_with(':') && line.ends_with(',')).then(|| (name.to_string(), open))
}

/// Whether `line` assigns `.field` or changes the container it holds.
fn writes(line: &str, field: &str) -> bool {
    let needle = format!(".{field}");
    let mut from = 0;
    while let Some(at) = line[from..].find(&needle) {
        let end = from + at + needle.len();
        from = end;
        let rest = &line[end..];
        if rest.starts_with(|c: char| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let rest = rest.trim_start();
        let assigns = ["=", "+=", "-=", "|=", "&=", "^=", "<<=", ">>="]
            .iter()
            .any(|op| rest.starts_with(op) && !rest.starts_with("=="));
        let mutates = rest.strip_prefix('.').is_some_and(|call| {
            let method: String = call
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            MUTATORS.contains(&method.as_str()) && call[method.len()..].starts_with('(')
        });
        if assigns || mutates {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(list: &[(&str, &str)]) -> BTreeMap<String, String> {
        list.iter()
            .map(|(f, t)| (f.to_string(), t.to_string()))
            .collect()
    }

    const OWNER: &str = "pub(crate) struct Owner<T,\n> {\npub(crate) count: u32,\npub(crate) list: Vec<u8>,\nhidden: u8,\n}\n\
                         #[derive(Clone, Copy)]\npub struct Value {\npub size: u32,\n}\n";

    #[test]
    fn assignments_and_container_changes_from_another_file_are_reported() {
        let f = files(&[
            ("owner.rs", OWNER),
            ("user.rs", "o.count += 1;\no.list.push(3);\nlet n = o.count;\no.list.iter();\nif o.count == 2 {}\n"),
        ]);
        let problems = check(&f);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].starts_with("user.rs, line 1: writes Owner.count"));
        assert!(problems[1].starts_with("user.rs, line 2: writes Owner.list"));
    }

    #[test]
    fn the_own_file_and_fields_of_plain_values_are_not_judged() {
        let f = files(&[
            (
                "owner.rs",
                &format!("{OWNER}fn f(o: &mut Owner) {{ o.count = 1; }}\n"),
            ),
            ("user.rs", "v.size = 4;\no.counter = 1;\n"),
            ("other.rs", "struct Mine {\ncount: u8,\n}\nm.count = 2;\n"),
        ]);
        assert_eq!(check(&f), Vec::<String>::new());
    }
}
