//! Imports inside every crate of the workspace point one way: no module
//! import cycle (docs/ARCHITECTURE.md, "shoal-net: code map": the dependency
//! order).
//!
//! The rule is the one `module-cycles.py` checks: a module is a top-level
//! file or folder under a crate's `src/`; an edge A -> B is any `crate::B`
//! mention in A's files (code, `use` lines and doc links alike), plus, here,
//! every first name inside a `crate::{...}` group. A strongly connected
//! component of more than one module is a cycle and fails the test, naming
//! its modules and the edges between them.
//!
//! Reading the sources as text (not the compiler's view) is deliberate: it
//! is fast, needs no dependency, and a doc link upward is as much a reason
//! to read another module first as a `use` is.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Graph = BTreeMap<String, BTreeSet<String>>;

#[test]
fn no_module_import_cycle_in_any_crate() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let crates = crates(root);
    assert!(
        crates.iter().any(|c| c.ends_with("net")),
        "the scan found no net/ crate under {}: is the walk broken?",
        root.display()
    );
    let mut failures = Vec::new();
    for krate in &crates {
        let graph = module_graph(&krate.join("src"));
        for cycle in cycles(&graph) {
            let edges: Vec<String> = cycle
                .iter()
                .flat_map(|a| {
                    graph[a]
                        .iter()
                        .filter(|b| cycle.contains(*b))
                        .map(move |b| format!("{a} -> {b}"))
                })
                .collect();
            failures.push(format!(
                "{}: cycle {:?} (edges: {})",
                krate.strip_prefix(root).unwrap_or(krate).display(),
                cycle,
                edges.join(", ")
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "module import cycles (an edge A -> B is a `crate::B` mention in A):\n{}",
        failures.join("\n")
    );
}

/// The checker itself finds a cycle and accepts a layered graph.
#[test]
fn the_checker_finds_cycles() {
    let graph = |edges: &[(&str, &str)]| {
        let mut g = Graph::new();
        for (a, b) in edges {
            g.entry(a.to_string()).or_default().insert(b.to_string());
            g.entry(b.to_string()).or_default();
        }
        g
    };
    let layered = graph(&[("server", "shard"), ("shard", "bus"), ("server", "bus")]);
    assert!(cycles(&layered).is_empty());
    let cyclic = graph(&[
        ("server", "shard"),
        ("shard", "bus"),
        ("bus", "server"),
        ("server", "stats"),
    ]);
    assert_eq!(
        cycles(&cyclic),
        vec![vec!["bus".to_string(), "server".into(), "shard".into()]]
    );
    let mentioned =
        mentions("use crate::{bus::{Control, Inbox}, shard};\n// crate::server::Dynamic");
    assert_eq!(
        mentioned,
        ["bus", "server", "shard"].map(String::from).into()
    );
}

/// Every directory with a `Cargo.toml` and a `src/` (as the script: not
/// build output, hidden folders or the fuzz workspace).
fn crates(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(dir) = todo.pop() {
        if dir.join("Cargo.toml").is_file() && dir.join("src").is_dir() {
            out.push(dir.clone());
        }
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            let skip = name == "target" || name.starts_with('.') || (dir == root && name == "fuzz");
            if path.is_dir() && !skip {
                todo.push(path);
            }
        }
    }
    out.sort();
    out
}

/// The top-level modules of `src` and their edges to each other.
fn module_graph(src: &Path) -> Graph {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let module_of = |path: &Path| {
        let top = path.strip_prefix(src).unwrap().components().next().unwrap();
        let top = top.as_os_str().to_string_lossy();
        top.strip_suffix(".rs").unwrap_or(&top).to_string()
    };
    let modules: BTreeSet<String> = files.iter().map(|f| module_of(f)).collect();
    let mut graph: Graph = modules
        .iter()
        .map(|m| (m.clone(), BTreeSet::new()))
        .collect();
    for f in &files {
        let from = module_of(f);
        let text = std::fs::read_to_string(f).unwrap();
        for to in mentions(&text) {
            if to != from && to != "lib" && to != "main" && modules.contains(&to) {
                graph.get_mut(&from).unwrap().insert(to);
            }
        }
    }
    graph
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The names `text` reaches through `crate::`: `crate::name` and the first
/// name of every item of a `crate::{...}` group.
fn mentions(text: &str) -> BTreeSet<String> {
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    let mut out = BTreeSet::new();
    for (at, _) in text.match_indices("crate::") {
        let rest = &text[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // Items at depth 0 of the group: `a`, `b::c`, `d::{e, f}`.
            let (mut depth, mut item_start) = (0usize, true);
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => item_start = true,
                    c if item_start && (c.is_alphanumeric() || c == '_') => {
                        out.insert(ident(&group[i..]));
                        item_start = false;
                    }
                    _ => {}
                }
            }
        } else {
            let name = ident(rest);
            if !name.is_empty() {
                out.insert(name);
            }
        }
    }
    out
}

/// Strongly connected components of more than one module (Tarjan), each
/// sorted, in name order.
fn cycles(graph: &Graph) -> Vec<Vec<String>> {
    struct Walk<'a> {
        graph: &'a Graph,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        out: Vec<Vec<String>>,
    }
    impl<'a> Walk<'a> {
        fn visit(&mut self, v: &'a str) {
            let i = self.index.len();
            self.index.insert(v, i);
            self.low.insert(v, i);
            self.stack.push(v);
            self.on_stack.insert(v);
            for w in &self.graph[v] {
                let w = w.as_str();
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let low = self.low[v].min(self.low[w]);
                    self.low.insert(v, low);
                } else if self.on_stack.contains(w) {
                    let low = self.low[v].min(self.index[w]);
                    self.low.insert(v, low);
                }
            }
            if self.low[v] == self.index[v] {
                let mut component = Vec::new();
                loop {
                    let w = self.stack.pop().unwrap();
                    self.on_stack.remove(w);
                    component.push(w.to_string());
                    if w == v {
                        break;
                    }
                }
                if component.len() > 1 {
                    component.sort();
                    self.out.push(component);
                }
            }
        }
    }
    let mut walk = Walk {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in graph.keys() {
        if !walk.index.contains_key(v.as_str()) {
            walk.visit(v);
        }
    }
    walk.out.sort();
    walk.out
}

/// The engine decides and does no I/O: its dependencies are the pure core
/// and byte buffers, nothing that reaches an executor, a channel, a socket,
/// a clock or a global RNG (issue 13; docs/ARCHITECTURE.md).
#[test]
fn the_engine_depends_on_no_runtime() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let manifest = std::fs::read_to_string(root.join("engine/Cargo.toml")).unwrap();
    let mut section = "";
    let mut deps = Vec::new();
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            section = line;
            continue;
        }
        if section == "[dependencies]" && !line.is_empty() && !line.starts_with('#') {
            let name = line.split(['=', '.', ' ']).next().unwrap_or("").trim();
            deps.push(name.to_owned());
        }
    }
    assert!(
        !deps.is_empty(),
        "no [dependencies] read from engine/Cargo.toml"
    );
    let allowed = ["shoal-core", "bytes", "ahash"];
    let extra: Vec<&String> = deps
        .iter()
        .filter(|d| !allowed.contains(&d.as_str()))
        .collect();
    assert!(
        extra.is_empty(),
        "shoal-engine must stay free of I/O; new dependencies: {extra:?}"
    );
}
