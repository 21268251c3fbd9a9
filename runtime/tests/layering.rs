//! The runtime's module layering, checked on its sources (DESIGN.md §2a): every file's
//! `use crate::…` / `super::…` imports and inline `crate::…` paths point to its own layer or
//! a lower one, and no two files import each other, directly or through others.
//!
//! Layers, bottom up (the longest matching prefix of a module path decides):
//! ```text
//! 0 foundation   error, clock, cancel, alloc_guard, install, testutil
//! 1 formats      format, quant, lut, dfloat, kv::quant, kv::hadamard, kv::budget,
//!                model::config, tokenizer, chat
//! 2 kernels      backend::cpu (every CPU kernel)
//! 3 state        kv (the stores), model::weights, model::load, sample
//! 4 executors    backend (the trait), backend::cpu::exec, backend::gpu
//! 5 graph        model::graph, model (Model), backend::gpu::forward
//! 6 sessions     session, convert, perplexity, lib.rs
//! ```
//! Unit-test modules at the end of a file (`#[cfg(test)] mod tests`) are not counted: a test
//! may use anything.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const LAYERS: &[(usize, &[&str])] = &[
    (
        0,
        &[
            "error",
            "clock",
            "cancel",
            "alloc_guard",
            "install",
            "testutil",
        ],
    ),
    (
        1,
        &[
            "format",
            "quant",
            "lut",
            "dfloat",
            "kv::quant",
            "kv::hadamard",
            "kv::budget",
            "model::config",
            "tokenizer",
            "chat",
        ],
    ),
    (2, &["backend::cpu"]),
    (3, &["kv", "model::weights", "model::load", "sample"]),
    (4, &["backend", "backend::cpu::exec", "backend::gpu"]),
    (5, &["model", "model::graph", "backend::gpu::forward"]),
    (6, &["", "session", "convert", "perplexity"]),
];

fn layer_of(module: &str) -> usize {
    let mut best = (0usize, None);
    for &(layer, prefixes) in LAYERS {
        for p in prefixes {
            let hit = p.is_empty()
                || module == *p
                || (module.starts_with(p) && module[p.len()..].starts_with("::"));
            if hit && (best.1.is_none() || p.len() >= best.0) {
                best = (p.len(), Some(layer));
            }
        }
    }
    best.1.expect("the empty prefix matches every module")
}

/// Module path of every `.rs` file under `src` (`a/b.rs` and `a/b/mod.rs` → `a::b`).
fn modules(src: &Path) -> BTreeMap<String, PathBuf> {
    let mut out = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                let rel = p.strip_prefix(src).unwrap().with_extension("");
                let mut parts: Vec<String> = rel
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect();
                if matches!(parts.last().map(String::as_str), Some("mod" | "lib")) {
                    parts.pop();
                }
                out.insert(parts.join("::"), p);
            }
        }
    }
    out
}

/// The source without comments and without a trailing `#[cfg(test)] mod tests`.
fn code_of(text: &str) -> String {
    let mut s: String = text
        .lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n");
    let mut search = 0;
    while let Some(i) = s[search..].find("#[cfg(test)]") {
        let at = search + i;
        let rest = s[at + "#[cfg(test)]".len()..].trim_start();
        if rest.starts_with("mod tests") {
            s.truncate(at);
            break;
        }
        search = at + 1;
    }
    s
}

/// Expand a use tree (`a::{b, c::{d, e}}`) into paths.
fn expand(tree: &str, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    let mut depth = 0;
    let mut start = 0;
    let bytes: Vec<char> = tree.chars().collect();
    let mut items = Vec::new();
    for (i, &ch) in bytes.iter().enumerate() {
        match ch {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(bytes[start..i].iter().collect::<String>());
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(bytes[start..].iter().collect());
    for item in items {
        let item = item.trim();
        if item.is_empty() {
            continue;
        }
        if let Some(b) = item.find('{') {
            let head = item[..b].trim_end_matches("::");
            let Some(e) = item.rfind('}').filter(|&e| e > b) else {
                continue; // not a use tree
            };
            let inner = &item[b + 1..e];
            let n = prefix.len();
            prefix.extend(head.split("::").filter(|s| !s.is_empty()).map(String::from));
            expand(inner, prefix, out);
            prefix.truncate(n);
        } else {
            let path = item.split(" as ").next().unwrap();
            let mut p = prefix.clone();
            p.extend(path.split("::").map(String::from));
            out.push(p);
        }
    }
}

/// The longest prefix of `segs` that is a module.
fn resolve(segs: &[String], mods: &BTreeMap<String, PathBuf>) -> Option<String> {
    (1..=segs.len())
        .rev()
        .map(|i| segs[..i].join("::"))
        .find(|m| mods.contains_key(m))
}

fn imports(module: &str, code: &str, mods: &BTreeMap<String, PathBuf>) -> BTreeSet<String> {
    let me: Vec<String> = if module.is_empty() {
        vec![]
    } else {
        module.split("::").map(String::from).collect()
    };
    let mut found = BTreeSet::new();
    let mut add = |segs: Vec<String>| {
        if let Some(t) = resolve(&segs, mods) {
            if t != module {
                found.insert(t);
            }
        }
    };
    // `use` items (possibly multi-line), at any indentation.
    let mut rest = code;
    while let Some(i) = rest.find("use ") {
        let before = &rest[..i];
        // A `use` item starts its line (rustfmt's layout), after an optional visibility;
        // the word inside a string or a comment's leftovers does not.
        let line = &before[before.rfind('\n').map_or(0, |n| n + 1)..];
        let head = line.trim_start();
        let at_item =
            head.is_empty() || head == "pub " || head.starts_with("pub(") && head.ends_with(") ");
        let after = &rest[i + 4..];
        let end = after.find(';').unwrap_or(after.len());
        let tree: String = after[..end].split_whitespace().collect();
        rest = &after[end..];
        if !at_item {
            continue;
        }
        // Indented `use super::` sits in an inline module: `super` is this file.
        let line_start = before.rfind('\n').map_or(0, |n| n + 1);
        let nested = before[line_start..].starts_with(char::is_whitespace);
        let mut paths = Vec::new();
        expand(&tree, &mut Vec::new(), &mut paths);
        for p in paths {
            let mut base: Vec<String> = me.clone();
            if nested {
                base.push("<inline>".into());
            }
            let segs = match p.first().map(String::as_str) {
                Some("crate") => p[1..].to_vec(),
                Some("self") => [base, p[1..].to_vec()].concat(),
                Some("super") => {
                    let mut q = &p[..];
                    while q.first().is_some_and(|s| s == "super") {
                        base.pop();
                        q = &q[1..];
                    }
                    [base, q.to_vec()].concat()
                }
                _ => continue,
            };
            add(segs);
        }
    }
    // Inline `crate::a::b` paths.
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        let after = &rest[i + 7..];
        let end = after
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .unwrap_or(after.len());
        let segs: Vec<String> = after[..end]
            .split("::")
            .filter(|s| !s.is_empty() && s.starts_with(|c: char| c.is_ascii_lowercase()))
            .map(String::from)
            .collect();
        add(segs);
        rest = &after[end..];
    }
    found
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mods = modules(&src);
    mods.iter()
        .map(|(m, p)| {
            let code = code_of(&std::fs::read_to_string(p).unwrap());
            (m.clone(), imports(m, &code, &mods))
        })
        .collect()
}

#[test]
fn every_import_points_to_the_same_layer_or_below() {
    let g = graph();
    assert!(g.len() > 50, "found only {} modules", g.len());
    let mut bad = Vec::new();
    for (a, targets) in &g {
        for b in targets {
            if layer_of(b) > layer_of(a) {
                bad.push(format!(
                    "{a} (layer {}) imports {b} (layer {})",
                    layer_of(a),
                    layer_of(b)
                ));
            }
        }
    }
    assert!(bad.is_empty(), "imports upwards:\n{}", bad.join("\n"));
    // The checker sees imports at all (a kernel imports its format; the graph its backend).
    assert!(g["backend::cpu::lut::gemv"].contains("lut::layout"));
    assert!(g["model::graph"].contains("backend"));
    assert_eq!(layer_of("backend::cpu::lut::gemv"), 2);
    assert_eq!(layer_of("kv::quant"), 1);
    assert_eq!(layer_of("kv::paged"), 3);
}

#[test]
fn no_two_modules_import_each_other() {
    let g = graph();
    // Tarjan's strongly connected components; any with two or more files is a cycle.
    struct T<'a> {
        g: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on: BTreeSet<&'a str>,
        cycles: Vec<Vec<&'a str>>,
    }
    impl<'a> T<'a> {
        fn visit(&mut self, v: &'a str) {
            let n = self.index.len();
            self.index.insert(v, n);
            self.low.insert(v, n);
            self.stack.push(v);
            self.on.insert(v);
            for w in self.g.get(v).into_iter().flatten() {
                let w = w.as_str();
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let lw = self.low[w];
                    let lv = self.low.get_mut(v).unwrap();
                    *lv = (*lv).min(lw);
                } else if self.on.contains(w) {
                    let iw = self.index[w];
                    let lv = self.low.get_mut(v).unwrap();
                    *lv = (*lv).min(iw);
                }
            }
            if self.low[v] == self.index[v] {
                let mut comp = Vec::new();
                loop {
                    let w = self.stack.pop().unwrap();
                    self.on.remove(w);
                    comp.push(w);
                    if w == v {
                        break;
                    }
                }
                if comp.len() > 1 {
                    self.cycles.push(comp);
                }
            }
        }
    }
    let mut t = T {
        g: &g,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        cycles: Vec::new(),
    };
    for v in g.keys() {
        if !t.index.contains_key(v.as_str()) {
            t.visit(v);
        }
    }
    assert!(t.cycles.is_empty(), "import cycles: {:?}", t.cycles);
}

#[test]
fn the_checker_finds_a_cycle_and_an_upward_import() {
    // Two synthetic files: a format that imports a session, and a session that imports it.
    let mut mods = BTreeMap::new();
    mods.insert("format::x".to_string(), PathBuf::new());
    mods.insert("session".to_string(), PathBuf::new());
    let a = imports("format::x", "use crate::session::Session;\n", &mods);
    let b = imports(
        "session",
        "use crate::{error::Error, format::x::{self, Y}};\nfn f() { crate::format::x::g(); }",
        &mods,
    );
    assert!(a.contains("session") && b.contains("format::x"));
    assert!(layer_of("format::x") < layer_of("session"));
    // `use` in a string is not an import.
    let s = imports("session", "let m = \"cannot use the {x} here}\";\n", &mods);
    assert!(s.is_empty(), "{s:?}");
    // Test modules at the end of a file are not counted; comments are not code.
    let code = code_of("use crate::a; // use crate::b;\n#[cfg(test)]\nmod tests { use crate::c; }");
    assert!(code.contains("crate::a") && !code.contains("crate::b") && !code.contains("crate::c"));
}
