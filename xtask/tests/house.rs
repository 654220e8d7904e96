//! The house rules that keep the code findable: no source file over [`MAX_LINES`] lines
//! outside its `#[cfg(test)]` block (test files and the end-to-end test crate do not count).

use std::path::{Path, PathBuf};

/// Most lines of a source file before its `#[cfg(test)]` block.
const MAX_LINES: usize = 600;

/// Directories that are not source: build output, the end-to-end tests, benchmarks' and
/// fuzzers' generated data, version control.
const SKIP_DIRS: &[&str] = &["target", "tests", ".git", "corpus", "artifacts"];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        if path.is_dir() {
            if !SKIP_DIRS.contains(&name.as_str()) && !name.starts_with('.') {
                rust_files(&path, out);
            }
        } else if name.ends_with(".rs") && name != "tests.rs" && !name.ends_with("_tests.rs") {
            out.push(path);
        }
    }
}

/// Lines before the first `#[cfg(test)]` at the start of a line (the whole file without one).
fn source_lines(text: &str) -> usize {
    text.lines()
        .take_while(|l| !l.starts_with("#[cfg(test)]"))
        .count()
}

#[test]
fn no_source_file_is_over_the_limit() {
    let root = xtask::repo_root();
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    assert!(
        files.len() > 50,
        "found only {} files under {}",
        files.len(),
        root.display()
    );
    let mut over: Vec<String> = files
        .iter()
        .filter_map(|f| {
            let n = source_lines(&std::fs::read_to_string(f).ok()?);
            let rel = f.strip_prefix(&root).unwrap_or(f).display().to_string();
            (n > MAX_LINES).then(|| format!("{rel}: {n} lines"))
        })
        .collect();
    over.sort();
    assert!(
        over.is_empty(),
        "over {MAX_LINES} lines outside #[cfg(test)] (split by concern, see STYLE): {over:?}"
    );
}

#[test]
fn the_count_stops_at_the_test_block() {
    assert_eq!(source_lines("a\nb\n#[cfg(test)]\nmod tests {}\n"), 2);
    assert_eq!(source_lines("a\n    #[cfg(test)]\nb\n"), 3);
}
