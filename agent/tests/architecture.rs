//! The shape of `agent/src`, checked: no import cycle between its files,
//! and every output module is registered in the outputs table (a new
//! output is one file and one line). The same cycle finder holds the
//! xtask (`xtask/src`, `xtask/bench/src`) to no cycle between its files
//! and none between its stages (its folders), and keeps the bench and its
//! sink out of what `cargo xtask package` compiles.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|x| x == "rs") {
            out.push(path);
        }
    }
}

/// `sources/tail/config.rs` -> ["sources", "tail", "config"];
/// `sources/mod.rs` -> ["sources"]; `main.rs` -> [].
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "main")) {
        parts.pop();
    }
    parts
}

/// The module files of this crate, by path.
fn modules(src: &Path) -> BTreeMap<Vec<String>, PathBuf> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    files.into_iter().map(|f| (module_of(src, &f), f)).collect()
}

/// The longest known module that `path` (module names) starts with.
fn resolve(known: &BTreeMap<Vec<String>, PathBuf>, path: &[String]) -> Option<Vec<String>> {
    (1..=path.len())
        .rev()
        .map(|n| path[..n].to_vec())
        .find(|p| known.contains_key(p))
}

/// Import edges, from `crate::a::b` and `super::x` paths outside tests.
fn edges(src: &Path) -> BTreeMap<Vec<String>, BTreeSet<Vec<String>>> {
    let known = modules(src);
    let ident = |s: &str| -> Vec<String> {
        s.split("::")
            .map(|p| {
                p.chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect::<String>()
            })
            .take_while(|p| !p.is_empty() && p.chars().next().unwrap().is_ascii_lowercase())
            .collect()
    };
    let mut graph = BTreeMap::new();
    for (module, file) in &known {
        let text = std::fs::read_to_string(file).unwrap();
        // Unit tests (a `#[cfg(test)] mod` at the end) may import freely.
        let text = text.split("#[cfg(test)]\nmod ").next().unwrap();
        let mut to = BTreeSet::new();
        for (i, _) in text.match_indices("crate::") {
            let path = ident(&text[i + "crate::".len()..]);
            if let Some(m) = resolve(&known, &path) {
                to.insert(m);
            }
        }
        for (i, _) in text.match_indices("super::") {
            // `super` is the parent module (of `a/b.rs` and `a/b/mod.rs`
            // alike: both are module `a::b`).
            let mut path = module.clone();
            path.pop();
            path.extend(ident(&text[i + "super::".len()..]));
            if let Some(m) = resolve(&known, &path) {
                to.insert(m);
            }
        }
        to.remove(module);
        graph.insert(module.clone(), to);
    }
    graph
}

fn find_cycle(graph: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>) -> Option<Vec<Vec<String>>> {
    fn visit(
        n: &Vec<String>,
        graph: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
        state: &mut BTreeMap<Vec<String>, u8>,
        stack: &mut Vec<Vec<String>>,
    ) -> Option<Vec<Vec<String>>> {
        state.insert(n.clone(), 1);
        stack.push(n.clone());
        for m in graph.get(n).into_iter().flatten() {
            match state.get(m).copied().unwrap_or(0) {
                1 => {
                    let at = stack.iter().position(|s| s == m).unwrap();
                    let mut cycle = stack[at..].to_vec();
                    cycle.push(m.clone());
                    return Some(cycle);
                }
                0 => {
                    if let Some(c) = visit(m, graph, state, stack) {
                        return Some(c);
                    }
                }
                _ => {}
            }
        }
        stack.pop();
        state.insert(n.clone(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for n in graph.keys() {
        if state.get(n).copied().unwrap_or(0) == 0 {
            if let Some(c) = visit(n, graph, &mut state, &mut Vec::new()) {
                return Some(c);
            }
        }
    }
    None
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn assert_no_cycle(what: &str, graph: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>) {
    if let Some(cycle) = find_cycle(graph) {
        let names: Vec<String> = cycle.iter().map(|m| m.join("::")).collect();
        panic!("import cycle in {what}: {}", names.join(" -> "));
    }
}

/// The graph between top-level modules: a folder and everything in it is
/// one node, each file at the top another.
fn top_level(
    graph: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
) -> BTreeMap<Vec<String>, BTreeSet<Vec<String>>> {
    let top = |m: &[String]| m.iter().take(1).cloned().collect::<Vec<_>>();
    let mut out: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
    for (from, to) in graph {
        let entry = out.entry(top(from)).or_default();
        entry.extend(to.iter().map(|m| top(m)).filter(|m| *m != top(from)));
    }
    out
}

#[test]
fn the_import_graph_has_no_cycle() {
    let graph = edges(&src());
    assert!(graph.len() > 20, "found the modules: {:?}", graph.keys());
    let pipeline = graph.get(&vec!["pipeline".to_string()]).unwrap();
    assert!(
        pipeline.contains(&vec!["sources".to_string()]),
        "edges are found: {pipeline:?}"
    );
    assert_no_cycle("agent/src", &graph);
}

#[test]
fn the_xtasks_import_graph_has_no_cycle() {
    let xtask = edges(&workspace().join("xtask/src"));
    assert!(xtask.len() > 25, "found the modules: {:?}", xtask.keys());
    let m = |s: &str| s.split("::").map(String::from).collect::<Vec<_>>();
    let builders = xtask.get(&m("builders")).unwrap();
    let container = xtask.get(&m("builders::container")).unwrap();
    assert!(
        builders.contains(&m("package")) && container.contains(&m("builders::context")),
        "edges are found: {builders:?} {container:?}"
    );
    assert_no_cycle("xtask/src", &xtask);

    let bench = edges(&workspace().join("xtask/bench/src"));
    let forward = bench.get(&m("forward")).unwrap();
    assert!(
        forward.contains(&m("agent")),
        "edges are found: {forward:?}"
    );
    assert_no_cycle("xtask/bench/src", &bench);
}

/// A folder of the xtask is a stage (deps, package, builders, ...): a
/// builder may use the package step, the package step never reaches back
/// into a builder.
#[test]
fn the_xtasks_stages_depend_downward_only() {
    let stages = top_level(&edges(&workspace().join("xtask/src")));
    let m = |s: &str| vec![s.to_string()];
    assert!(
        stages[&m("builders")].contains(&m("package"))
            && stages[&m("package")].contains(&m("deps")),
        "edges are found: {stages:?}"
    );
    assert_no_cycle("the xtask's stages", &stages);
}

/// `cargo xtask package` (and every command but `bench`) compiles the
/// xtask alone: the benches are the xtask-bench crate, and the tests'
/// sink (my-agent-test-support) is none of the xtask's dependencies.
#[test]
fn the_main_job_compiles_no_bench_code() {
    let out = std::process::Command::new(env!("CARGO"))
        .args([
            "tree",
            "-p",
            "xtask",
            "-e",
            "normal",
            "--prefix",
            "none",
            "--offline",
        ])
        .arg("--manifest-path")
        .arg(workspace().join("Cargo.toml"))
        .output()
        .unwrap();
    let tree = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && tree.contains("xshell"),
        "cargo tree -p xtask: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for crate_name in ["my-agent-test-support", "xtask-bench"] {
        assert!(
            !tree
                .lines()
                .any(|l| l.starts_with(&format!("{crate_name} "))),
            "the xtask depends on {crate_name}:\n{tree}"
        );
    }
    let mut files = Vec::new();
    rust_files(&workspace().join("xtask/src"), &mut files);
    for file in files {
        let name = file.file_name().unwrap().to_string_lossy();
        assert!(!name.contains("bench"), "{} is bench code", file.display());
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(
            !text.contains("test_support"),
            "{} uses the tests' sink",
            file.display()
        );
    }
}

#[test]
fn the_cycle_finder_finds_cycles() {
    let m = |s: &str| vec![s.to_string()];
    let mut graph = BTreeMap::new();
    graph.insert(m("a"), BTreeSet::from([m("b")]));
    graph.insert(m("b"), BTreeSet::from([m("c")]));
    graph.insert(m("c"), BTreeSet::from([m("a")]));
    assert_eq!(find_cycle(&graph).unwrap().len(), 4);
    graph.insert(m("c"), BTreeSet::new());
    assert!(find_cycle(&graph).is_none());
}

#[test]
fn every_output_module_is_one_line_in_the_table() {
    let dir = src().join("outputs");
    let table = std::fs::read_to_string(dir.join("mod.rs")).unwrap();
    let table = &table[table.find("const TYPES").expect("the outputs table")..];
    let table = &table[..table.find("];").unwrap()];
    let mut outputs = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        let Some(module) = name.strip_suffix(".rs") else {
            continue;
        };
        if module == "mod" || module == "flusher" {
            continue;
        }
        outputs += 1;
        assert!(
            table.contains(&format!("{module}::")),
            "outputs/{name} is not registered in TYPES:\n{table}"
        );
    }
    assert!(outputs >= 3);
}
