//! The shape of `src/`: module dependencies point one way (no import circles), and a layer
//! crate is named in at most three places of `src/` (README "Adding a layer"): the config
//! module (its section; `src/config/` counts as one place), `stack.rs`, and one more.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Source without comments (doc links name modules without depending on them).
fn code(path: &Path) -> String {
    fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Top-level module of a file under src/ (`upstream/router.rs` -> `upstream`).
fn module_of(path: &Path) -> String {
    let rel = path.strip_prefix(src()).unwrap();
    let first = rel
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy();
    first.trim_end_matches(".rs").to_string()
}

fn module_graph() -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let path_use = regex::Regex::new(r"crate::(\w+)").unwrap();
    let group_use = regex::Regex::new(r"(?s)use crate::\{(.*?)\};").unwrap();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in files {
        let m = module_of(&f);
        if m == "lib" || m == "main" {
            continue;
        }
        let text = code(&f);
        let deps = graph.entry(m.clone()).or_default();
        for c in path_use.captures_iter(&text) {
            deps.insert(c[1].to_string());
        }
        for c in group_use.captures_iter(&text) {
            // Top-level names of the group: `a::{..}, b, c::d` (nested groups skipped).
            let mut depth = 0;
            let mut item = String::new();
            for ch in c[1].chars().chain(std::iter::once(',')) {
                match ch {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        let name = item.trim().split("::").next().unwrap_or("").trim();
                        if !name.is_empty() && name != "self" {
                            deps.insert(name.to_string());
                        }
                        item.clear();
                        continue;
                    }
                    _ => {}
                }
                if depth == 0 {
                    item.push(ch);
                }
            }
        }
        deps.remove(&m);
    }
    graph
}

#[test]
fn src_modules_have_no_import_circles() {
    let graph = module_graph();
    assert!(graph.contains_key("stack") && graph.contains_key("config"));
    fn reaches(g: &BTreeMap<String, BTreeSet<String>>, from: &str, to: &str) -> bool {
        let mut seen = BTreeSet::new();
        let mut todo = vec![from.to_string()];
        while let Some(m) = todo.pop() {
            for d in g.get(&m).into_iter().flatten() {
                if d == to {
                    return true;
                }
                if seen.insert(d.clone()) {
                    todo.push(d.clone());
                }
            }
        }
        false
    }
    let circles: Vec<_> = graph
        .keys()
        .filter(|m| reaches(&graph, m, m))
        .cloned()
        .collect();
    assert!(
        circles.is_empty(),
        "modules in an import circle: {circles:?}\n{graph:#?}"
    );
    // The configuration depends on no other module of the binary.
    assert!(
        graph["config"].is_empty(),
        "config imports {:?}",
        graph["config"]
    );
}

#[test]
fn a_layer_crate_is_named_in_at_most_three_files_of_src() {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let layers = Path::new(env!("CARGO_MANIFEST_DIR")).join("layers");
    for e in fs::read_dir(layers).unwrap() {
        let dir = e.unwrap().path();
        let name = dir.file_name().unwrap().to_string_lossy().replace('-', "_");
        if name == "core" || !dir.join("Cargo.toml").exists() {
            continue;
        }
        let krate = format!("portcullis_{name}");
        let naming: Vec<_> = files
            .iter()
            .filter(|f| {
                regex::Regex::new(&format!(r"\b{krate}::"))
                    .unwrap()
                    .is_match(&code(f))
            })
            .map(|f| {
                let rel = f.strip_prefix(src()).unwrap().display().to_string();
                if rel.starts_with("config/") {
                    "config/".to_string()
                } else {
                    rel
                }
            })
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        assert!(
            naming.len() <= 3,
            "{krate} is named in {} files of src/: {naming:?}",
            naming.len()
        );
    }
}
