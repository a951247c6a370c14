//! The README and the guides in `docs/` are read in two places: on the repository's web pages,
//! where their relative links (`docs/stores.md`, `../src/rules.md`) lead to the files, and in
//! rustdoc, where `src/lib.rs` and `src/guide/mod.rs` define the same link labels first, so
//! that they lead to the crate's own pages. rustdoc says nothing of a relative link it cannot
//! follow, so these checks keep the two sets of links in step.

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

/// The link reference definitions of a markdown text whose target is a path in the
/// repository (not a URL): `(label, target)`.
fn relative_links(markdown: &str) -> Vec<(String, String)> {
    markdown
        .lines()
        .filter_map(|line| {
            let (label, target) = line.strip_prefix('[')?.split_once("]: ")?;
            let relative = !target.contains("://") && !target.starts_with('#');
            relative.then(|| (label.to_owned(), target.trim().to_owned()))
        })
        .collect()
}

/// The labels that the `doc` attributes of `rust` define for rustdoc right before the
/// `include_str!` of `file`, with an intra-doc target (`crate::…`).
fn rustdoc_labels(rust: &str, file: &str) -> Vec<String> {
    let include = format!("include_str!(\"{file}\")");
    let lines: Vec<&str> = rust.lines().collect();
    let at = lines
        .iter()
        .position(|line| line.contains(&include))
        .unwrap_or_else(|| panic!("nothing includes {file}"));
    lines[..at]
        .iter()
        .rev()
        .map_while(|line| {
            let definition = line
                .trim()
                .strip_prefix("#![doc = \"[")
                .or_else(|| line.trim().strip_prefix("#[doc = \"["))?;
            let (label, target) = definition.split_once("]: ")?;
            target.starts_with("crate::").then(|| label.to_owned())
        })
        .collect()
}

/// Checks one markdown file: each relative link leads to a file that exists, and has a
/// rustdoc definition in `rust`, beside the file's `include_str!(included_as)`.
fn check(markdown: &Path, rust: &Path, included_as: &str) {
    let text = read(markdown);
    let labels = rustdoc_labels(&read(rust), included_as);
    let dir = markdown.parent().expect("a file in a folder");
    // An inline link, `[text](path)`, could have no rustdoc counterpart: only reference links.
    for (_, rest) in text
        .match_indices("](")
        .map(|(at, _)| text.split_at(at + 2))
    {
        let target = rest.split(')').next().unwrap_or_default();
        assert!(
            target.contains("://") || target.starts_with('#'),
            "{}: an inline link to {target}: use a reference link, `[text][label]`",
            markdown.display()
        );
    }
    for (label, target) in relative_links(&text) {
        assert!(
            dir.join(&target).exists(),
            "{}: [{label}] leads to {target}, which does not exist",
            markdown.display()
        );
        assert!(
            labels.contains(&label),
            "{}: [{label}] has no rustdoc definition (`[{label}]: crate::…`) before \
             its include_str! in {}",
            markdown.display(),
            rust.display()
        );
    }
}

#[test]
fn the_readmes_links_lead_to_files_and_to_rustdoc_pages() {
    check(
        &root().join("README.md"),
        &root().join("src/lib.rs"),
        "../README.md",
    );
}

#[test]
fn every_guide_is_a_rustdoc_page_whose_links_lead_to_files_and_to_rustdoc_pages() {
    let guides = root().join("docs");
    let mut names: Vec<String> = std::fs::read_dir(&guides)
        .expect("docs/")
        .map(|entry| {
            entry
                .expect("an entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|name| name.ends_with(".md"))
        .collect();
    names.sort();
    assert!(!names.is_empty());
    for name in names {
        check(
            &guides.join(&name),
            &root().join("src/guide/mod.rs"),
            &format!("../../docs/{name}"),
        );
    }
}
