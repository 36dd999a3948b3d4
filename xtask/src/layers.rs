//! The layering check: reads the `crate::` and `super::` paths of every
//! file under `src/` (no build) and fails when a module imports one above
//! it in [`LAYERS`], when files import each other in a circle of three or
//! more, or when two files of one module import each other and README's
//! "Files that import each other" table does not name the pair; in each
//! board crate (`boards/*/src`) it fails on any import cycle, pairs
//! included; and it runs the field check ([`crate::fields`]).
//!
//! A top-level module may import only modules of lower layers. Test code
//! (a file's `#[cfg(test)] mod tests` and test-only modules) is not
//! layered. A directory's `mod.rs` is the module itself, so its files
//! importing it do not count as a pair.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;

/// The driver's top-level modules, bottom first. A module imports only
/// modules of the layers below its own.
pub const LAYERS: &[&[&str]] = &[
    // Specification definitions: plain data.
    &["spec"],
    // The crate's error type and the embedder's boundary.
    &["error", "platform", "link"],
    // What the driver reports.
    &["event"],
    // PCI and NVMe, independent of each other.
    &["pci", "nvme"],
    // Enumeration, attach and the hot-plug monitor over both.
    &["driver"],
    // Block devices over a controller or the driver.
    &["block"],
    // Filesystem crates' traits over block devices.
    &["adapters"],
];

/// A module path inside the crate (`["nvme", "controller"]`).
type ModPath = Vec<String>;

/// What the check found wrong, one line each.
pub fn check(root: &Path) -> Result<(), String> {
    let files = modules(&root.join("src"))?;
    let readme = fs::read_to_string(root.join("README.md")).map_err(|e| format!("README: {e}"))?;
    let allowed = allowed_pairs(&readme);
    let reexports = root_reexports(&files);
    let mut problems = Vec::new();
    let mut edges: BTreeMap<ModPath, BTreeSet<ModPath>> = BTreeMap::new();
    for (module, source) in &files {
        for target in imports(module, source, &files, &reexports) {
            if let Some(problem) = layer_violation(module, &target) {
                problems.push(problem);
            }
            edges.entry(module.clone()).or_default().insert(target);
        }
    }
    let mut mutual = BTreeSet::new();
    for (a, targets) in &edges {
        for b in targets {
            let siblings = a.len() == b.len() && a[..a.len() - 1] == b[..b.len() - 1];
            if siblings && a < b && edges.get(b).is_some_and(|t| t.contains(a)) {
                mutual.insert((a.join("::"), b.join("::")));
            }
        }
    }
    problems.extend(pair_problems(&mutual, &allowed));
    for cycle in cycles(&edges, 3) {
        let names: Vec<String> = cycle.iter().map(|m| m.join("::")).collect();
        problems.push(format!(
            "import cycle of {} files: {}",
            cycle.len() - 1,
            names.join(" -> ")
        ));
    }
    problems.extend(board_cycles(root)?);
    let named: BTreeMap<String, String> = files
        .iter()
        .map(|(m, text)| (m.join("::"), text.clone()))
        .collect();
    problems.extend(crate::fields::check(&named));
    problems.sort();
    problems.dedup();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("\n"))
    }
}

/// `Some(problem)` when `module` may not import `target`.
fn layer_violation(module: &ModPath, target: &ModPath) -> Option<String> {
    let (from, to) = (module.first()?, target.first()?);
    if from == to {
        return None;
    }
    let layer = |name: &str| LAYERS.iter().position(|l| l.contains(&name));
    match (layer(from), layer(to)) {
        (Some(a), Some(b)) if b < a => None,
        (Some(_), Some(_)) => Some(format!(
            "{} imports {}, which is not in a layer below",
            module.join("::"),
            target.join("::")
        )),
        _ => Some(format!(
            "{} or {} is in no layer of xtask/src/layers.rs",
            from, to
        )),
    }
}

/// Every file under `src` by module path, with test code cut off.
fn modules(src: &Path) -> Result<BTreeMap<ModPath, String>, String> {
    let mut files = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries = fs::read_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let relative = path.strip_prefix(src).map_err(|e| e.to_string())?;
            let mut module: ModPath = relative
                .with_extension("")
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if module
                .last()
                .is_some_and(|m| m == "mod" || m == "lib" || m == "main")
            {
                module.pop();
            }
            let text = fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            files.insert(module, without_tests(&text));
        }
    }
    // Modules declared `#[cfg(test)]` are test code.
    let test_only: Vec<ModPath> = files
        .iter()
        .flat_map(|(parent, text)| {
            test_modules(text).into_iter().map(move |name| {
                let mut path = parent.clone();
                path.push(name);
                path
            })
        })
        .collect();
    for module in test_only {
        files.remove(&module);
    }
    Ok(files)
}

/// `text` without comments and without what follows its `#[cfg(test)]`
/// test module (by convention the end of the file).
fn without_tests(text: &str) -> String {
    let mut kept = String::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let trimmed = line.trim();
        if trimmed == "#[cfg(test)]"
            && lines
                .peek()
                .is_some_and(|next| next.trim_start().starts_with("mod ") && next.contains('{'))
        {
            break;
        }
        let code = trimmed.split("//").next().unwrap_or("");
        kept.push_str(code);
        kept.push('\n');
    }
    kept
}

/// Names of the modules `text` declares under `#[cfg(test)]` (`mod x;`).
fn test_modules(text: &str) -> Vec<String> {
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    lines
        .windows(2)
        .filter(|w| w[0] == "#[cfg(test)]")
        .filter_map(|w| w[1].strip_prefix("mod ")?.strip_suffix(';'))
        .map(str::to_string)
        .collect()
}

/// Which top-level module each name the crate root re-exports comes from.
fn root_reexports(files: &BTreeMap<ModPath, String>) -> BTreeMap<String, String> {
    let mut names = BTreeMap::new();
    let Some(lib) = files.get(&Vec::new()) else {
        return names;
    };
    for statement in lib.split(';') {
        let Some(rest) = statement.trim().strip_prefix("pub use ") else {
            continue;
        };
        let module = rest.split("::").next().unwrap_or("").trim().to_string();
        let items = rest.rsplit("::{").next().unwrap_or(rest);
        for item in items.split([',', '{', '}']) {
            let name = item.rsplit("::").next().unwrap_or("").trim();
            if !name.is_empty() {
                names.insert(name.to_string(), module.clone());
            }
        }
    }
    names
}

/// The crate modules `module`'s code names by `crate::` or `super::` paths,
/// each resolved to the longest module path that is a file.
fn imports(
    module: &ModPath,
    source: &str,
    files: &BTreeMap<ModPath, String>,
    reexports: &BTreeMap<String, String>,
) -> BTreeSet<ModPath> {
    let mut found = BTreeSet::new();
    let bytes = source.as_bytes();
    for (start, root) in path_starts(source) {
        // The path: identifiers joined by `::`, and for a `use` group the
        // first name inside the braces.
        let mut segments: Vec<String> = Vec::new();
        let mut i = start + root.len();
        while source[i..].starts_with("::") {
            i += 2;
            if source[i..].starts_with('{') {
                i += 1;
                while i < bytes.len() && bytes[i].is_ascii_whitespace() {
                    i += 1;
                }
            }
            let end = source[i..]
                .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                .map_or(source.len(), |n| i + n);
            if end == i {
                break;
            }
            segments.push(source[i..end].to_string());
            i = end;
        }
        let mut path: ModPath = match root {
            "crate" => Vec::new(),
            // `super` of a module's file is its parent.
            _ => module[..module.len().saturating_sub(1)].to_vec(),
        };
        if root == "crate" {
            if let Some(first) = segments.first() {
                if let Some(from) = reexports.get(first) {
                    path.push(from.clone());
                    segments.clear();
                }
            }
        }
        path.extend(segments);
        let target = (1..=path.len())
            .rev()
            .map(|n| path[..n].to_vec())
            .find(|p| files.contains_key(p));
        if let Some(target) = target.filter(|t| t != module && !module.starts_with(t)) {
            found.insert(target);
        }
    }
    found
}

/// Where `crate::` and `super::` paths start in `source` (not inside a
/// longer identifier).
fn path_starts(source: &str) -> Vec<(usize, &'static str)> {
    let mut starts = Vec::new();
    for root in ["crate", "super"] {
        let pattern = format!("{root}::");
        let mut from = 0;
        while let Some(n) = source[from..].find(&pattern) {
            let at = from + n;
            let before = source[..at].chars().next_back();
            if !before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                starts.push((at, root));
            }
            from = at + pattern.len();
        }
    }
    starts
}

/// Import cycles of any length inside each board crate (`boards/*/src`),
/// one line each.
fn board_cycles(root: &Path) -> Result<Vec<String>, String> {
    let mut problems = Vec::new();
    let boards = fs::read_dir(root.join("boards")).map_err(|e| format!("boards: {e}"))?;
    let mut dirs: Vec<_> = boards.flatten().map(|e| e.path()).collect();
    dirs.sort();
    for dir in dirs.iter().filter(|d| d.join("src").is_dir()) {
        let files = modules(&dir.join("src"))?;
        let reexports = root_reexports(&files);
        let mut edges: BTreeMap<ModPath, BTreeSet<ModPath>> = BTreeMap::new();
        for (module, source) in &files {
            edges
                .entry(module.clone())
                .or_default()
                .extend(imports(module, source, &files, &reexports));
        }
        let board = dir
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        for cycle in cycles(&edges, 2) {
            let names: Vec<String> = cycle.iter().map(|m| m.join("::")).collect();
            problems.push(format!(
                "boards/{board}: import cycle of {} files: {}",
                cycle.len() - 1,
                names.join(" -> ")
            ));
        }
    }
    Ok(problems)
}

/// Every import cycle longer than a pair (pairs have their own rule): one
/// per strongly connected component of the import graph, as a path through
/// it that returns to its first file.
fn cycles(edges: &BTreeMap<ModPath, BTreeSet<ModPath>>, shortest: usize) -> Vec<Vec<ModPath>> {
    let mut found = Vec::new();
    for component in components(edges) {
        if component.len() < shortest {
            continue;
        }
        // A shortest cycle through the component's first file, by breadth-first search.
        let inside: BTreeSet<&ModPath> = component.iter().collect();
        let start = &component[0];
        let mut before: BTreeMap<&ModPath, &ModPath> = BTreeMap::new();
        let mut queue = std::collections::VecDeque::from([start]);
        let mut last = None;
        'search: while let Some(at) = queue.pop_front() {
            for next in edges.get(at).into_iter().flatten() {
                if !inside.contains(next) {
                    continue;
                }
                if next == start {
                    last = Some(at);
                    break 'search;
                }
                if !before.contains_key(next) {
                    before.insert(next, at);
                    queue.push_back(next);
                }
            }
        }
        let mut path = vec![start.clone()];
        let mut at = last;
        let mut back = Vec::new();
        while let Some(m) = at.filter(|m| *m != start) {
            back.push(m.clone());
            at = before.get(m).copied();
        }
        path.extend(back.into_iter().rev());
        path.push(start.clone());
        found.push(path);
    }
    found
}

/// The strongly connected components of the import graph (Tarjan's
/// algorithm, iteratively), each sorted.
fn components(edges: &BTreeMap<ModPath, BTreeSet<ModPath>>) -> Vec<Vec<ModPath>> {
    let nodes: Vec<&ModPath> = edges
        .iter()
        .flat_map(|(a, b)| std::iter::once(a).chain(b.iter()))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let index_of: BTreeMap<&ModPath, usize> =
        nodes.iter().enumerate().map(|(i, n)| (*n, i)).collect();
    let succ: Vec<Vec<usize>> = nodes
        .iter()
        .map(|n| {
            edges
                .get(*n)
                .into_iter()
                .flatten()
                .map(|m| index_of[m])
                .collect()
        })
        .collect();
    let n = nodes.len();
    let (mut index, mut low) = (vec![usize::MAX; n], vec![0; n]);
    let (mut on_stack, mut stack) = (vec![false; n], Vec::new());
    let mut next = 0;
    let mut out = Vec::new();
    for root in 0..n {
        if index[root] != usize::MAX {
            continue;
        }
        // (node, position in its successor list)
        let mut work = vec![(root, 0)];
        index[root] = next;
        low[root] = next;
        next += 1;
        stack.push(root);
        on_stack[root] = true;
        while let Some(&mut (v, ref mut pos)) = work.last_mut() {
            if let Some(&w) = succ[v].get(*pos) {
                *pos += 1;
                if index[w] == usize::MAX {
                    index[w] = next;
                    low[w] = next;
                    next += 1;
                    stack.push(w);
                    on_stack[w] = true;
                    work.push((w, 0));
                } else if on_stack[w] {
                    low[v] = low[v].min(index[w]);
                }
                continue;
            }
            work.pop();
            if let Some(&(parent, _)) = work.last() {
                low[parent] = low[parent].min(low[v]);
            }
            if low[v] == index[v] {
                let mut component = Vec::new();
                while let Some(w) = stack.pop() {
                    on_stack[w] = false;
                    component.push(nodes[w].clone());
                    if w == v {
                        break;
                    }
                }
                component.sort();
                out.push(component);
            }
        }
    }
    out
}

/// Pairs that import each other without README's table saying why, and
/// rows of the table for pairs that no longer do (the table stays true).
fn pair_problems(
    mutual: &BTreeSet<(String, String)>,
    allowed: &BTreeSet<(String, String)>,
) -> Vec<String> {
    let unlisted = mutual.difference(allowed).map(|(a, b)| {
        format!(
            "{a} and {b} import each other (README's \"Files that import each other\" \
             does not say why)"
        )
    });
    let stale = allowed.difference(mutual).map(|(a, b)| {
        format!(
            "README's \"Files that import each other\" lists {a} and {b}, which no longer \
             import each other: remove the row"
        )
    });
    unlisted.chain(stale).collect()
}

/// The pairs README's "Files that import each other" table names: rows
/// whose first two cells are module paths in backquotes.
fn allowed_pairs(readme: &str) -> BTreeSet<(String, String)> {
    let mut pairs = BTreeSet::new();
    let Some(section) = readme.split("### Files that import each other").nth(1) else {
        return pairs;
    };
    for line in section.lines().skip_while(|l| !l.starts_with('|')) {
        if !line.starts_with('|') {
            break;
        }
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let name = |cell: Option<&&str>| {
            cell.and_then(|c| c.strip_prefix('`')?.strip_suffix('`'))
                .map(str::to_string)
        };
        if let (Some(a), Some(b)) = (name(cells.get(1)), name(cells.get(2))) {
            pairs.insert(if a < b { (a, b) } else { (b, a) });
        }
    }
    pairs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(list: &[(&str, &str)]) -> BTreeMap<ModPath, String> {
        list.iter()
            .map(|(m, s)| {
                let path = m.split("::").filter(|p| !p.is_empty()).map(String::from);
                (path.collect(), without_tests(s))
            })
            .collect()
    }

    #[test]
    fn paths_resolve_to_the_longest_module_that_is_a_file() {
        let files = files(&[
            ("", "pub use nvme::{Controller, State};"),
            ("nvme", ""),
            ("nvme::identify", ""),
            ("driver::tick", ""),
        ]);
        let reexports = root_reexports(&files);
        let module: ModPath = vec!["driver".into(), "tick".into()];
        let source = "use crate::nvme::identify::{IdString, ctrl};\nuse crate::State;\n\
                      use super::tick::X; // crate::pci::gone\n";
        let found = imports(&module, &without_tests(source), &files, &reexports);
        let names: Vec<String> = found.iter().map(|p| p.join("::")).collect();
        assert_eq!(names, ["nvme", "nvme::identify"]);
    }

    #[test]
    fn a_lower_layer_importing_a_higher_one_is_reported() {
        let path = |s: &str| s.split("::").map(String::from).collect::<ModPath>();
        assert!(layer_violation(&path("error"), &path("nvme::command")).is_some());
        assert!(layer_violation(&path("pci"), &path("nvme")).is_some());
        assert!(layer_violation(&path("driver::tick"), &path("nvme::identify")).is_none());
        assert!(layer_violation(&path("nvme::io"), &path("nvme::queue")).is_none());
    }

    #[test]
    fn test_modules_are_cut_off() {
        let source = "use crate::spec;\n#[cfg(test)]\nmod tests {\n    use crate::driver;\n}\n";
        assert!(!without_tests(source).contains("driver"));
        assert_eq!(
            test_modules("#[cfg(test)]\nmod test_memory;\n"),
            ["test_memory"]
        );
    }

    #[test]
    fn cycles_of_any_length_are_found_and_shown_as_a_path() {
        let path = |s: &str| s.split("::").map(String::from).collect::<ModPath>();
        let graph = |list: &[(&str, &str)]| {
            let mut edges: BTreeMap<ModPath, BTreeSet<ModPath>> = BTreeMap::new();
            for (a, b) in list {
                edges.entry(path(a)).or_default().insert(path(b));
            }
            edges
        };
        // a -> b -> c -> a, with d hanging off it and e -> f a pair.
        let edges = graph(&[
            ("n::a", "n::b"),
            ("n::b", "n::c"),
            ("n::c", "n::a"),
            ("n::c", "n::d"),
            ("n::e", "n::f"),
            ("n::f", "n::e"),
        ]);
        let long = cycles(&edges, 3);
        assert_eq!(long.len(), 1);
        let names: Vec<String> = long[0].iter().map(|m| m.join("::")).collect();
        assert_eq!(names, ["n::a", "n::b", "n::c", "n::a"]);
        assert_eq!(cycles(&edges, 2).len(), 2);
        let acyclic = graph(&[("n::a", "n::b"), ("n::b", "n::c"), ("n::a", "n::c")]);
        assert!(cycles(&acyclic, 2).is_empty());
    }

    #[test]
    fn unlisted_pairs_and_stale_rows_are_both_reported() {
        let pair = |a: &str, b: &str| (a.to_string(), b.to_string());
        let mutual = BTreeSet::from([pair("nvme::a", "nvme::b"), pair("nvme::c", "nvme::d")]);
        let allowed = BTreeSet::from([pair("nvme::a", "nvme::b"), pair("nvme::e", "nvme::f")]);
        let problems = pair_problems(&mutual, &allowed);
        assert_eq!(problems.len(), 2);
        assert!(problems[0].starts_with("nvme::c and nvme::d import each other"));
        assert!(problems[1].contains("lists nvme::e and nvme::f, which no longer"));
    }

    #[test]
    fn readme_pairs_are_read_in_either_order() {
        let readme = "### Files that import each other\n\n| a | b | why |\n|---|---|---|\n\
                      | `nvme::b` | `nvme::a` | because |\n\nafter\n";
        let pairs = allowed_pairs(readme);
        assert!(pairs.contains(&("nvme::a".to_string(), "nvme::b".to_string())));
        assert_eq!(pairs.len(), 1);
    }
}
