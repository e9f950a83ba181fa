//! Keeps `docs/architecture.md` true: the engine crate depends on no
//! protocol, command-line or storage crate, and in the engine and the server
//! no module imports a module of a layer above its own, and no two files
//! import each other. The layers are the `layers` blocks of
//! `docs/architecture.md`, read here, so the picture and the check cannot
//! drift apart.
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// What `quiver-engine` must never depend on, directly or not.
const FORBIDDEN: &[&str] = &["axum", "hyper", "tonic", "clap", "reqwest", "object_store"];

#[test]
fn the_engine_depends_on_no_protocol_cli_or_storage_crate() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = std::process::Command::new(cargo)
        .args([
            "tree",
            "-p",
            "quiver-engine",
            "-e",
            "normal,build",
            "--prefix",
            "none",
            "--offline",
            "--locked",
        ])
        .current_dir(workspace())
        .output()
        .expect("cargo runs");
    assert!(
        out.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let crates: BTreeSet<&str> = text.lines().filter_map(|l| l.split_whitespace().next()).collect();
    assert!(crates.contains("quiver-runtimes") && crates.contains("tokio"), "{text}");
    let found: Vec<&&str> = FORBIDDEN.iter().filter(|c| crates.contains(**c)).collect();
    assert!(found.is_empty(), "quiver-engine depends on {found:?}:\n{text}");
}

/// The layers of `crate_dir` from docs/architecture.md: module path -> layer
/// index (0 = top). A module not listed takes the layer of its closest
/// listed parent.
fn layers(crate_dir: &str) -> Vec<Vec<String>> {
    let doc = std::fs::read_to_string(workspace().join("docs/architecture.md")).unwrap();
    let opening = format!("```layers {crate_dir}");
    let start = doc
        .find(&opening)
        .unwrap_or_else(|| panic!("docs/architecture.md has no '{opening}' block"));
    let body = &doc[start + opening.len()..];
    let body = &body[..body.find("```").expect("the block ends")];
    body.lines()
        .map(|l| l.split('#').next().unwrap().trim())
        .filter(|l| !l.is_empty())
        .map(|l| l.split_whitespace().map(str::to_owned).collect())
        .collect()
}

/// Every `.rs` file under `src`: module path ("" for the crate root).
fn modules(src: &Path) -> BTreeMap<String, PathBuf> {
    let mut out = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") || path.file_name().unwrap() == "main.rs" {
                continue;
            }
            let rel = path.strip_prefix(src).unwrap().with_extension("");
            let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
            if matches!(parts.last().map(String::as_str), Some("mod" | "lib")) {
                parts.pop();
            }
            out.insert(parts.join("::"), path);
        }
    }
    out
}

/// The code of a file without its comments and its `#[cfg(test)] mod tests`.
fn code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => &text[..i],
        None => &text,
    };
    text.lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// `a::{b, c::{d, e}}` -> `a::b`, `a::c::d`, `a::c::e`.
fn expand(tree: &str) -> Vec<String> {
    let tree: String = tree.chars().filter(|c| !c.is_whitespace()).collect();
    let Some(open) = tree.find('{') else {
        return vec![tree];
    };
    // Not a use tree after all ("use" in a string): only its prefix counts.
    let Some(close) = tree.rfind('}').filter(|&c| c > open) else {
        return vec![tree[..open].to_owned()];
    };
    let (prefix, inner) = (&tree[..open], &tree[open + 1..close]);
    let (mut parts, mut depth, mut current) = (Vec::new(), 0, String::new());
    for c in inner.chars() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(std::mem::take(&mut current));
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    parts.push(current);
    parts
        .iter()
        .filter(|p| !p.is_empty())
        .flat_map(|p| expand(p).into_iter().map(move |e| format!("{prefix}{e}")))
        .collect()
}

/// The paths a file names: `use` trees expanded, and `a::b::c` elsewhere.
fn paths(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = code;
    let mut others = String::new();
    while let Some(i) = rest.find("use ") {
        let boundary = i == 0 || !rest.as_bytes()[i - 1].is_ascii_alphanumeric() && rest.as_bytes()[i - 1] != b'_';
        others.push_str(&rest[..i]);
        if !boundary {
            others.push_str("use ");
            rest = &rest[i + 4..];
            continue;
        }
        let end = rest[i..].find(';').map_or(rest.len(), |e| i + e);
        let tree = rest[i + 4..end].trim();
        let tree = tree.split(" as ").next().unwrap();
        out.extend(expand(tree));
        rest = &rest[end.min(rest.len())..];
    }
    others.push_str(rest);
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    for token in others.split(|c: char| !word(c)) {
        if token.contains("::") && !token.starts_with(':') {
            out.push(token.trim_end_matches(':').to_owned());
        }
    }
    out
}

/// The module files a module's code refers to.
fn imports(module: &str, code: &str, files: &BTreeMap<String, PathBuf>) -> BTreeSet<String> {
    let children: BTreeSet<String> = code
        .lines()
        .filter_map(|l| {
            let l = l.trim().trim_start_matches("pub ").trim_start_matches("pub(crate) ");
            l.strip_prefix("mod ")?.strip_suffix(';').map(str::to_owned)
        })
        .collect();
    let here: Vec<&str> = module.split("::").filter(|s| !s.is_empty()).collect();
    let mut out = BTreeSet::new();
    for path in paths(code) {
        let segments: Vec<&str> = path.split("::").filter(|s| !s.is_empty()).collect();
        let Some(first) = segments.first() else { continue };
        let mut full: Vec<&str> = match *first {
            "crate" => Vec::new(),
            "self" => here.clone(),
            "super" => here.clone(),
            c if children.contains(c) => here.clone(),
            _ => continue,
        };
        let mut rest = &segments[..];
        if *first == "crate" || *first == "self" {
            rest = &segments[1..];
        }
        while rest.first() == Some(&"super") {
            full.pop();
            rest = &rest[1..];
        }
        full.extend(rest);
        let target = (0..=full.len())
            .rev()
            .map(|k| full[..k].join("::"))
            .find(|m| files.contains_key(m))
            .unwrap();
        if target != module {
            out.insert(target);
        }
    }
    out
}

/// Checks `crate_dir` against its layers; the messages name every breach.
fn check_layers(crate_dir: &str, at_least: usize) {
    let src = workspace().join(crate_dir).join("src");
    let files = modules(&src);
    let layers = layers(crate_dir);
    let layer_of = |module: &str| -> Option<usize> {
        if module.is_empty() {
            return Some(0); // the crate root is above every layer
        }
        let parts: Vec<&str> = module.split("::").collect();
        (1..=parts.len()).rev().find_map(|k| {
            let prefix = parts[..k].join("::");
            layers.iter().position(|l| l.contains(&prefix)).map(|i| i + 1)
        })
    };
    let mut problems = Vec::new();
    let mut edges = BTreeSet::new();
    for (module, path) in &files {
        let Some(own) = layer_of(module) else {
            problems.push(format!(
                "{crate_dir}: module '{module}' is in no layer of docs/architecture.md"
            ));
            continue;
        };
        for target in imports(module, &code(path), &files) {
            edges.insert((module.clone(), target.clone()));
            if let Some(theirs) = layer_of(&target)
                && theirs < own
            {
                let name = |m: &str| {
                    if m.is_empty() {
                        "the crate root".to_owned()
                    } else {
                        format!("'{m}'")
                    }
                };
                problems.push(format!(
                    "{crate_dir}: {} imports {}, a layer above it",
                    name(module),
                    name(&target)
                ));
            }
        }
    }
    for (a, b) in &edges {
        if a < b && edges.contains(&(b.clone(), a.clone())) {
            problems.push(format!("{crate_dir}: '{a}' and '{b}' import each other"));
        }
    }
    // The check must see what it checks: the engine's request path imports
    // the engine, the server's listeners the API, the codec's fuzz entry
    // points the codecs.
    assert!(
        edges.len() >= at_least,
        "{crate_dir}: only {} imports found",
        edges.len()
    );
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_engine_keeps_its_layers() {
    check_layers("engine", 60);
}

#[test]
fn the_server_keeps_its_layers() {
    check_layers("server", 40);
}

#[test]
fn the_codec_keeps_its_layers() {
    check_layers("codec", 4);
}

#[test]
fn the_monitor_keeps_its_layers() {
    check_layers("monitor", 20);
}

/// The image builds the workspace from its members alone (Dockerfile): a
/// member it does not copy fails the image's build.
#[test]
fn the_image_copies_every_workspace_member() {
    let manifest = std::fs::read_to_string(workspace().join("Cargo.toml")).unwrap();
    let members = manifest
        .lines()
        .find_map(|l| l.trim().strip_prefix("members = ["))
        .expect("Cargo.toml lists its members on one line");
    let dockerfile = std::fs::read_to_string(workspace().join("Dockerfile")).unwrap();
    let copied: BTreeSet<&str> = dockerfile
        .lines()
        .filter_map(|l| l.strip_prefix("COPY "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    let mut checked = 0;
    for member in members.trim_end_matches(']').split(',') {
        let member = member.trim().trim_matches('"');
        // A nested member (runtimes/torch) comes with its parent's folder.
        let top = member.split('/').next().unwrap();
        assert!(
            copied.contains(top),
            "the Dockerfile does not COPY workspace member '{member}'"
        );
        checked += 1;
    }
    assert!(checked >= 8, "{members}");
}

#[test]
fn the_parser_sees_use_trees_and_paths() {
    let code = "use super::{a, b::{c, d}};\nuse crate::e::F as G;\nfn x() { crate::h::i(); child::j(); }\nmod child;";
    let p = paths(code);
    for want in [
        "super::a",
        "super::b::c",
        "super::b::d",
        "crate::e::F",
        "crate::h::i",
        "child::j",
    ] {
        assert!(p.iter().any(|x| x == want), "{want} not in {p:?}");
    }
}
