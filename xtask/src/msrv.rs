//! `cargo xtask msrv`: no package the driver needs declares a newer
//! `rust-version` than the driver's own.
//!
//! Reads `cargo metadata` of the workspace and of each board, with their
//! lock files as they are (`--locked`: nothing is updated), and walks the
//! dependencies of `bare-nvme` (normal and build; the driver's and the
//! simulated device's dev-dependencies too, which its tests need) with
//! every feature on. A dependency whose `rust-version` is newer fails the
//! check: the driver's declared version would be a promise the build
//! cannot keep.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::board::Board;
use crate::paths;

/// The driver, and the simulated device whose tests run at its version.
const ROOTS: &[&str] = &["bare-nvme", "bare-nvme-sim"];

/// Checks the workspace's lock file and each board's.
pub fn check(root: &Path) -> Result<(), String> {
    let mut problems = Vec::new();
    let mut dirs = vec![(root.to_path_buf(), "Cargo.lock".to_string())];
    for board in Board::ALL {
        let dir = board.dir();
        let name = format!(
            "{}/Cargo.lock",
            dir.strip_prefix(root).unwrap_or(&dir).display()
        );
        dirs.push((dir, name));
    }
    for (dir, lock) in dirs {
        let metadata = metadata(&dir)?;
        let report = check_metadata(&metadata)?;
        println!(
            "     {lock}: bare-nvme declares {}, highest dependency {} ({})",
            show(report.declared),
            show(report.highest.0),
            report.highest.1
        );
        problems.extend(report.newer.into_iter().map(|p| format!("{lock}: {p}")));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "dependencies declare a newer rust-version than bare-nvme's:\n{}",
            problems.join("\n")
        ))
    }
}

fn metadata(dir: &Path) -> Result<Value, String> {
    let out = Command::new(paths::cargo())
        .args([
            "metadata",
            "--format-version",
            "1",
            "--all-features",
            "--locked",
        ])
        .current_dir(dir)
        .output()
        .map_err(|e| format!("cargo metadata in {}: {e}", dir.display()))?;
    if !out.status.success() {
        return Err(format!(
            "cargo metadata in {}: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("cargo metadata: {e}"))
}

type Version = (u32, u32, u32);

/// What one lock file says.
#[derive(Debug)]
struct Report {
    declared: Version,
    /// The newest `rust-version` among the dependencies, and whose.
    highest: (Version, String),
    /// Each dependency newer than `declared`.
    newer: Vec<String>,
}

fn check_metadata(metadata: &Value) -> Result<Report, String> {
    let packages = metadata["packages"].as_array().ok_or("no packages")?;
    let by_id: BTreeMap<&str, &Value> = packages
        .iter()
        .filter_map(|p| Some((p["id"].as_str()?, p)))
        .collect();
    let nodes: BTreeMap<&str, &Value> = metadata["resolve"]["nodes"]
        .as_array()
        .ok_or("no resolve graph")?
        .iter()
        .filter_map(|n| Some((n["id"].as_str()?, n)))
        .collect();
    let name_of = |id: &str| by_id.get(id).and_then(|p| p["name"].as_str()).unwrap_or("");
    let driver = by_id
        .values()
        .find(|p| p["name"] == "bare-nvme")
        .ok_or("bare-nvme is not in the graph")?;
    let declared = driver["rust_version"]
        .as_str()
        .and_then(parse)
        .ok_or("bare-nvme declares no rust-version")?;

    // Roots take their dev-dependencies too; what they pull in, only what
    // is built for it (normal and build dependencies).
    let mut stack: Vec<(&str, bool)> = nodes
        .keys()
        .filter(|id| ROOTS.contains(&name_of(id)))
        .map(|id| (*id, true))
        .collect();
    let mut seen = BTreeSet::new();
    while let Some((id, root)) = stack.pop() {
        if !seen.insert(id) {
            continue;
        }
        for dep in nodes
            .get(id)
            .and_then(|n| n["deps"].as_array())
            .into_iter()
            .flatten()
        {
            let kinds = dep["dep_kinds"].as_array().into_iter().flatten();
            let built = kinds
                .clone()
                .any(|k| k["kind"].is_null() || k["kind"] == "build");
            let dev = kinds.clone().any(|k| k["kind"] == "dev");
            if let Some(pkg) = dep["pkg"].as_str() {
                if built || (root && dev) {
                    stack.push((pkg, ROOTS.contains(&name_of(pkg))));
                }
            }
        }
    }

    let mut highest = ((0, 0, 0), String::from("none"));
    let mut newer = Vec::new();
    for id in seen {
        let Some(package) = by_id.get(id) else {
            continue;
        };
        let name = package["name"].as_str().unwrap_or("");
        if ROOTS.contains(&name) {
            continue;
        }
        let Some(version) = package["rust_version"].as_str().and_then(parse) else {
            continue;
        };
        let label = format!("{name} {}", package["version"].as_str().unwrap_or("?"));
        if version > highest.0 {
            highest = (version, label.clone());
        }
        if version > declared {
            newer.push(format!("{label} declares {}", show(version)));
        }
    }
    Ok(Report {
        declared,
        highest,
        newer,
    })
}

fn parse(text: &str) -> Option<Version> {
    let mut parts = text.split('.').map(|p| p.parse::<u32>());
    let major = parts.next()?.ok()?;
    let minor = parts.next().unwrap_or(Ok(0)).ok()?;
    let patch = parts.next().unwrap_or(Ok(0)).ok()?;
    Some((major, minor, patch))
}

fn show((major, minor, patch): Version) -> String {
    if patch == 0 {
        format!("{major}.{minor}")
    } else {
        format!("{major}.{minor}.{patch}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A graph in `cargo metadata`'s shape: the driver, a normal dependency,
    /// a dependency of that, a dev-dependency, and a dev-dependency of a
    /// dependency (never built for the driver).
    fn graph(driver: &str, deep: &str, far_dev: &str) -> Value {
        let package = |name: &str, rust: &str| {
            serde_json::json!({"id": name, "name": name, "version": "1.0.0",
                "rust_version": if rust.is_empty() { Value::Null } else { rust.into() }})
        };
        let dep =
            |pkg: &str, kind: Value| serde_json::json!({"pkg": pkg, "dep_kinds": [{"kind": kind}]});
        serde_json::json!({
            "packages": [package("bare-nvme", driver), package("heapless", "1.80"),
                package("deep", deep), package("proptest", "1.84"), package("far-dev", far_dev)],
            "resolve": {"nodes": [
                {"id": "bare-nvme", "deps": [dep("heapless", Value::Null), dep("proptest", "dev".into())]},
                {"id": "heapless", "deps": [dep("deep", "build".into()), dep("far-dev", "dev".into())]},
                {"id": "deep", "deps": []},
                {"id": "proptest", "deps": []},
                {"id": "far-dev", "deps": []},
            ]}
        })
    }

    #[test]
    fn a_dependency_newer_than_the_driver_fails_and_is_named() {
        let report = check_metadata(&graph("1.85", "1.88", "")).expect("report");
        assert_eq!(report.newer, ["deep 1.0.0 declares 1.88"]);
        assert_eq!(report.highest, ((1, 88, 0), "deep 1.0.0".into()));
    }

    #[test]
    fn dev_dependencies_of_dependencies_do_not_count() {
        let report = check_metadata(&graph("1.88", "1.88.0", "1.99")).expect("report");
        assert!(report.newer.is_empty(), "{:?}", report.newer);
        assert_eq!(report.highest.0, (1, 88, 0));
    }

    #[test]
    fn the_driver_without_a_rust_version_is_an_error() {
        assert!(check_metadata(&graph("", "1.0", "")).is_err());
    }
}
