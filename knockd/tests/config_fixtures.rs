//! Every `tests/fixtures/config/good/*.conf` loads; every `bad/*.conf` fails with the error
//! announced on its first line: `# expect: <line>: <substring>`.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

fn fixtures(kind: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/config")
        .join(kind);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "conf"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no fixtures in {}", dir.display());
    files
}

#[test]
fn config_fixtures_good_load() {
    let files = fixtures("good");
    for name in ["seed.conf", "every-key.conf"] {
        assert!(
            files.iter().any(|f| f.ends_with(name)),
            "missing good fixture {name}"
        );
    }
    for file in &files {
        let parsed = knockd::config::load(file)
            .unwrap_or_else(|e| panic!("{} should load:\n{e}", file.display()));
        assert!(
            !parsed.config.doors.is_empty(),
            "{}: no doors",
            file.display()
        );
        for door in &parsed.config.doors {
            assert!(
                !door.sequence.is_empty(),
                "{}: door {} has no sequence",
                file.display(),
                door.name
            );
        }
        // parse() agrees with load() apart from one-time sequences.
        let text = std::fs::read_to_string(file).unwrap();
        let pure = knockd::config::parse(&text, "x").unwrap();
        assert_eq!(pure.config.doors.len(), parsed.config.doors.len());
    }
}

#[test]
fn config_fixtures_seed_has_two_doors() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/config/good");
    let parsed = knockd::config::load(&dir.join("seed.conf")).unwrap();
    let names: Vec<&str> = parsed
        .config
        .doors
        .iter()
        .map(|d| d.name.as_str())
        .collect();
    assert_eq!(names, ["openSSH", "closeSSH"]);
    assert!(parsed.config.options.use_syslog);
}

#[test]
fn config_fixtures_bad_fail_as_expected() {
    for file in fixtures("bad") {
        let text = std::fs::read_to_string(&file).unwrap();
        let first = text.lines().next().unwrap_or_default();
        let expect = first.strip_prefix("# expect: ").unwrap_or_else(|| {
            panic!(
                "{}: first line must be '# expect: <line>: <substring>'",
                file.display()
            )
        });
        let (line, phrase) = expect.split_once(": ").unwrap();
        let line: usize = line.parse().unwrap();
        let errors = match knockd::config::load(&file) {
            Ok(p) => panic!("{} should fail, got {:#?}", file.display(), p.config),
            Err(e) => e,
        };
        assert!(
            errors
                .iter()
                .any(|e| e.line == line && e.message.contains(phrase)),
            "{}: want an error on line {line} containing {phrase:?}, got:\n{errors}",
            file.display()
        );
        let shown = errors.to_string();
        assert!(
            shown.contains(&format!("{}:{line}: ", file.display())),
            "{shown}"
        );
    }
}

/// `disabled/*.conf` load with every door disabled (empty sequence) and a warning saying so.
#[test]
fn config_fixtures_disabled_load_with_doors_disabled() {
    let files = fixtures("disabled");
    assert!(!files.is_empty());
    for file in &files {
        let parsed = knockd::config::load(file)
            .unwrap_or_else(|e| panic!("{} should load:\n{e}", file.display()));
        for door in &parsed.config.doors {
            assert!(
                door.sequence.is_empty(),
                "{}: {}",
                file.display(),
                door.name
            );
            assert!(
                parsed
                    .warnings
                    .iter()
                    .any(|w| w.door.as_deref() == Some(&door.name)
                        && w.message.starts_with("door disabled:")),
                "{}: {:#?}",
                file.display(),
                parsed.warnings
            );
        }
    }
}
