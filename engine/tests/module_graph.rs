//! The engine's modules import one another one way: this reads every `use` and path that names
//! a module of the crate (`crate::`, `super::`, `self::`, a child's name) in `engine/src`,
//! leaving test modules out, and fails on any import cycle, naming the modules in it and the
//! edges that close it. The crate root (`lib.rs`, the public facade) is not a node.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Module path (`runtime::task`) to its source file's text, test modules cut off.
fn read_modules(src: &Path) -> BTreeMap<String, String> {
    let mut modules = BTreeMap::new();
    let mut dirs = vec![src.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("engine/src is readable") {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            if path.extension().and_then(|e| e.to_str()) != Some("rs") {
                continue;
            }
            let relative = path
                .strip_prefix(src)
                .expect("under src")
                .with_extension("");
            let mut parts: Vec<String> = relative
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if matches!(parts.last().map(String::as_str), Some("mod" | "lib")) {
                parts.pop();
            }
            let text = std::fs::read_to_string(&path).expect("a readable source file");
            modules.insert(parts.join("::"), without_tests_and_comments(&text));
        }
    }
    modules
}

/// The source up to its `#[cfg(test)] mod ...` (test modules may import anything), without
/// `//` comments.
fn without_tests_and_comments(text: &str) -> String {
    let mut out = String::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("#[cfg(test)]")
            && lines
                .peek()
                .is_some_and(|next| next.trim_start().starts_with("mod "))
        {
            break;
        }
        let code = match line.find("//") {
            Some(at) => &line[..at],
            None => line,
        };
        out.push_str(code);
        out.push('\n');
    }
    out
}

/// Expands a use tree (`a::{b, c::{d, e}}`) into its paths.
fn expand_use_tree(tree: &str) -> Vec<String> {
    let tree = tree.trim();
    let Some(open) = tree.find('{') else {
        let path = tree.split(" as ").next().unwrap_or(tree).trim();
        return vec![path.to_string()];
    };
    let prefix = tree[..open].trim().trim_end_matches("::");
    let inner = &tree[open + 1..tree.rfind('}').expect("a closing brace")];
    let mut items = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(&inner[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(&inner[start..]);
    items
        .into_iter()
        .filter(|item| !item.trim().is_empty())
        .flat_map(expand_use_tree)
        .map(|path| match path.as_str() {
            "self" => prefix.to_string(),
            _ if prefix.is_empty() => path,
            _ => format!("{prefix}::{path}"),
        })
        .collect()
}

/// Every path in `code` that may name a module of the crate: the paths of its `use`
/// statements and the `crate::`/`super::`/`self::` paths written inline.
fn paths_in(code: &str) -> Vec<String> {
    let mut paths = Vec::new();
    let mut rest = code;
    while let Some(at) = find_use(rest) {
        let statement = &rest[at..];
        let end = statement.find(';').unwrap_or(statement.len());
        let tree = statement[..end].trim_start_matches("pub(crate) ");
        let tree = tree.trim_start_matches("pub ").trim_start_matches("use ");
        paths.extend(expand_use_tree(tree));
        rest = &statement[end..];
    }
    let bytes = code.as_bytes();
    for anchor in ["crate::", "super::", "self::"] {
        for (at, _) in code.match_indices(anchor) {
            let preceded_by_word =
                at > 0 && (bytes[at - 1].is_ascii_alphanumeric() || bytes[at - 1] == b'_');
            if preceded_by_word {
                continue;
            }
            let path: String = code[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            paths.push(path.trim_end_matches(':').to_string());
        }
    }
    paths
}

/// The start of the next `use` statement (at a line's start, possibly `pub`).
fn find_use(code: &str) -> Option<usize> {
    let mut offset = 0;
    for line in code.split_inclusive('\n') {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        if ["use ", "pub use ", "pub(crate) use "]
            .iter()
            .any(|p| trimmed.starts_with(p))
        {
            return Some(offset + indent);
        }
        offset += line.len();
    }
    None
}

/// The module of the crate a path names (its longest prefix that is a module), seen from
/// module `from`; `None` for paths outside the crate, the crate root and `from` itself.
fn resolve(path: &str, from: &str, modules: &BTreeMap<String, String>) -> Option<String> {
    let mut segments: Vec<&str> = path.split("::").filter(|s| !s.is_empty()).collect();
    let mut base: Vec<&str> = if from.is_empty() {
        Vec::new()
    } else {
        from.split("::").collect()
    };
    match segments.first().copied() {
        Some("crate") => {
            base.clear();
            segments.remove(0);
        }
        Some("self") => {
            segments.remove(0);
        }
        Some("super") => {
            while segments.first() == Some(&"super") {
                segments.remove(0);
                base.pop();
            }
        }
        Some(first) => {
            // A relative path names a child module, or something outside the crate.
            let child = if from.is_empty() {
                first.to_string()
            } else {
                format!("{from}::{first}")
            };
            if !modules.contains_key(&child) {
                return None;
            }
        }
        None => return None,
    }
    let mut best = None;
    for take in 1..=segments.len() {
        let mut candidate = base.clone();
        candidate.extend(&segments[..take]);
        let candidate = candidate.join("::");
        if modules.contains_key(&candidate) {
            best = Some(candidate);
        }
    }
    best.filter(|m| m != from && !m.is_empty())
}

fn import_graph(modules: &BTreeMap<String, String>) -> BTreeMap<String, BTreeSet<String>> {
    modules
        .iter()
        .filter(|(name, _)| !name.is_empty())
        .map(|(name, code)| {
            let edges = paths_in(code)
                .iter()
                .filter_map(|path| resolve(path, name, modules))
                .collect();
            (name.clone(), edges)
        })
        .collect()
}

/// The graph's strongly connected components of more than one module (Tarjan's algorithm).
fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct Walk<'a> {
        graph: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        found: Vec<Vec<String>>,
    }
    impl<'a> Walk<'a> {
        fn visit(&mut self, node: &'a str) {
            let next = self.index.len();
            self.index.insert(node, next);
            self.low.insert(node, next);
            self.stack.push(node);
            for to in self.graph.get(node).into_iter().flatten() {
                let to = to.as_str();
                if !self.index.contains_key(to) {
                    self.visit(to);
                    let low = self.low[node].min(self.low[to]);
                    self.low.insert(node, low);
                } else if self.stack.contains(&to) {
                    let low = self.low[node].min(self.index[to]);
                    self.low.insert(node, low);
                }
            }
            if self.low[node] == self.index[node] {
                let mut component = Vec::new();
                while let Some(member) = self.stack.pop() {
                    component.push(member.to_string());
                    if member == node {
                        break;
                    }
                }
                if component.len() > 1 {
                    component.sort();
                    self.found.push(component);
                }
            }
        }
    }
    let mut walk = Walk {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        found: Vec::new(),
    };
    for node in graph.keys() {
        if !walk.index.contains_key(node.as_str()) {
            walk.visit(node);
        }
    }
    walk.found
}

#[test]
fn the_engine_has_no_import_cycle() {
    // Where the sources are now (cargo sets it when it runs the test), not where this binary
    // was built: a build reused from another checkout of the same files would look there.
    let manifest_dir =
        std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").into());
    let src = Path::new(&manifest_dir).join("src");
    let modules = read_modules(&src);
    assert!(
        modules.contains_key("runtime::consumer_loop") && modules.contains_key("store"),
        "the module walk found the engine's modules: {:?}",
        modules.keys().collect::<Vec<_>>()
    );
    let graph = import_graph(&modules);
    let found = cycles(&graph);
    let described: Vec<String> = found
        .iter()
        .map(|cycle| {
            let edges: Vec<String> = cycle
                .iter()
                .flat_map(|from| {
                    graph[from]
                        .iter()
                        .filter(|to| cycle.contains(to))
                        .map(move |to| format!("{from} -> {to}"))
                })
                .collect();
            format!("[{}]: {}", cycle.join(", "), edges.join("; "))
        })
        .collect();
    assert!(
        found.is_empty(),
        "import cycles among the engine's modules:\n{}",
        described.join("\n")
    );
}

#[test]
fn the_checker_finds_a_cycle_and_reads_use_trees() {
    let modules: BTreeMap<String, String> = [
        ("a", "use crate::b::{Thing, other::{X, Y}};\n"),
        ("b", "use super::c::Z;\n"),
        ("b::other", ""),
        (
            "c",
            "pub(crate) use crate::a::Q;\nfn f() -> crate::Result<()> { Ok(()) }\n",
        ),
        ("d", "use std::fmt;\nuse rdkafka::Offset;\n"),
        ("", "pub use a::Q;\n"),
    ]
    .into_iter()
    .map(|(name, code)| (name.to_string(), code.to_string()))
    .collect();
    let graph = import_graph(&modules);
    assert_eq!(
        graph["a"],
        BTreeSet::from(["b".to_string(), "b::other".to_string()])
    );
    assert_eq!(graph["b"], BTreeSet::from(["c".to_string()]));
    assert!(
        graph["d"].is_empty(),
        "paths outside the crate are no edges"
    );
    assert_eq!(
        cycles(&graph),
        vec![vec!["a".to_string(), "b".to_string(), "c".to_string()]]
    );
    let tests_cut = without_tests_and_comments(
        "use crate::a;\n// use crate::b;\n#[cfg(test)]\nmod tests {\n    use crate::c;\n}\n",
    );
    assert!(tests_cut.contains("crate::a") && !tests_cut.contains("crate::b"));
    assert!(!tests_cut.contains("crate::c"));
}
