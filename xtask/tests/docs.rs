//! The documentation names only what exists, and shows what the programs really print.
//!
//! - Every man page renders without a groff warning (`stale.rs`), and every `knockd`, `knock` or `knockctl` command line it
//!   shows (bold, `code` or example blocks) uses flags and commands the clap definitions
//!   have; the README likewise (`code` and fenced blocks).
//! - Every `Key =` in knockd.conf(5) and the README is a knockd.conf key, and every key is
//!   documented in knockd.conf(5).
//! - The README's output examples (`knockctl list`, `knockctl tail`, the TUI at 80x24) are
//!   what knockctl prints for the same data, and its troubleshooting messages are texts the
//!   programs print.

use clap::{Command, CommandFactory};

fn read(rel: &str) -> String {
    std::fs::read_to_string(xtask::repo_root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

const PAGES: &[&str] = &[
    "man/knockd.8",
    "man/knockctl.8",
    "man/knock.1",
    "man/knockd.conf.5",
];

/// Roff to plain text, for the escapes these pages use.
fn unroff(text: &str) -> String {
    let mut s = text.to_string();
    for (from, to) in [
        ("\\-", "-"),
        ("\\(lq", "\""),
        ("\\(rq", "\""),
        ("\\(aq", "'"),
        ("\\(em", "-"),
        ("\\(en", "-"),
        ("\\(bu", "*"),
        ("\\(co", "(c)"),
        ("\\&", ""),
        ("\\|", ""),
        ("\\ ", " "),
        ("\\e", "\\"),
    ] {
        s = s.replace(from, to);
    }
    s
}

/// The spans of a man page that show code: bold text, `backticks` (clap's help text) and
/// `.nf`/`.fi` example blocks, unescaped.
fn roff_code(page: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_block = false;
    for line in page.lines() {
        if line.starts_with(".nf") {
            in_block = true;
            continue;
        }
        if line.starts_with(".fi") {
            in_block = false;
            continue;
        }
        if in_block {
            out.push(unroff(line));
            continue;
        }
        if let Some(rest) = line.strip_prefix(".B ") {
            out.push(unroff(rest.trim_matches('"')));
        }
        let mut rest = line;
        while let Some(start) = rest.find("\\fB") {
            let after = &rest[start + 3..];
            let end = after.find("\\f").unwrap_or(after.len());
            out.push(unroff(&after[..end]));
            rest = &after[end..];
        }
        out.extend(backticks(&unroff(line)));
    }
    out
}

/// `code` spans of one line.
fn backticks(line: &str) -> Vec<String> {
    line.split('`')
        .enumerate()
        .filter(|(i, _)| i % 2 == 1)
        .map(|(_, s)| s.to_string())
        .collect()
}

/// The README's code: inline `spans` and fenced blocks.
fn markdown_code(md: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_block = false;
    // A ```toml block is knockctl's hosts file, not knockd.conf or a command line.
    let mut other_file = false;
    for line in md.lines() {
        if let Some(fence) = line.trim_start().strip_prefix("```") {
            in_block = !in_block;
            other_file = in_block && fence.trim() == "toml";
            continue;
        }
        if other_file {
            continue;
        }
        if in_block {
            out.push(line.to_string());
        } else {
            out.extend(backticks(line));
        }
    }
    out
}

/// Whether `flag` (`--socket`, `-H`) is an option of `cmd` that takes a value.
fn takes_value(cmd: &Command, flag: &str) -> bool {
    let mut cmd = cmd.clone();
    cmd.build();
    let found = cmd.get_arguments().find(|a| match flag.strip_prefix("--") {
        Some(long) => a.get_long() == Some(long),
        None => flag.len() == 2 && a.get_short() == flag.chars().nth(1),
    });
    found.is_some_and(|a| a.get_action().takes_values())
}

/// The flags (`-t`, `--socket`) a command accepts, help and version included.
fn flags(cmd: &Command) -> Vec<String> {
    let mut cmd = cmd.clone();
    cmd.build();
    let mut out = vec!["-h".to_string(), "--help".to_string()];
    for a in cmd.get_arguments() {
        out.extend(
            a.get_short_and_visible_aliases()
                .into_iter()
                .flatten()
                .map(|c| format!("-{c}")),
        );
        out.extend(
            a.get_long_and_visible_aliases()
                .into_iter()
                .flatten()
                .map(|l| format!("--{l}")),
        );
    }
    if cmd.get_version().is_some() {
        out.extend(["-V".to_string(), "--version".to_string()]);
    }
    out
}

/// Shell words that end a command line.
fn ends_command(word: &str) -> bool {
    [
        "|", "||", "&&", ";", ">", ">>", "#", "{", "}", "&", "2>&1", "<",
    ]
    .contains(&word)
        || word.starts_with('>')
        || word.starts_with('#')
}

/// What is wrong with the command lines in `code` (one span or block line each).
fn check_commands(code: &[String], source: &str) -> Vec<String> {
    let knockd = knockd::cli::Args::command();
    let knock = knockctl::knock::Args::command();
    let knockctl = knockctl::ctl::Args::command();
    let mut problems = Vec::new();
    for span in code {
        let words: Vec<&str> = span.split_whitespace().collect();
        let mut i = 0;
        while i < words.len() {
            let program = words[i].trim_start_matches(['(', '"', '\'']);
            // `cargo test -p knockd`, `cargo install --path knockd`: a package, not the program.
            let package = i > 0 && ["-p", "--package", "--path", "--bin"].contains(&words[i - 1]);
            let cmd = match program {
                _ if package => {
                    i += 1;
                    continue;
                }
                "knockd" => &knockd,
                "knock" => &knock,
                "knockctl" => &knockctl,
                _ => {
                    i += 1;
                    continue;
                }
            };
            let mut sub: Option<&Command> = None;
            i += 1;
            while i < words.len() && !ends_command(words[i]) {
                let word =
                    words[i].trim_matches(['[', ']', '(', ')', ',', '.', ';', ':', '"', '\'']);
                if ["knockd", "knock", "knockctl"].contains(&word) {
                    break;
                }
                if word.starts_with('-')
                    && word.len() > 1
                    && !word[1..].starts_with(|c: char| c.is_ascii_digit() && program != "knock")
                {
                    let flag = word.split('=').next().unwrap_or(word);
                    let known = flags(cmd).contains(&flag.to_string())
                        || sub.is_some_and(|s| flags(s).contains(&flag.to_string()));
                    if !known {
                        problems.push(format!(
                            "{source}: `{}` has no flag {flag} (in \"{span}\")",
                            program
                        ));
                    }
                } else if program == "knockctl"
                    && sub.is_none()
                    && word.chars().all(|c| c.is_ascii_lowercase())
                    && !word.is_empty()
                    && !takes_value(cmd, words[i - 1])
                {
                    match cmd.find_subcommand(word) {
                        Some(s) => sub = Some(s),
                        None => problems.push(format!(
                            "{source}: knockctl has no command '{word}' (in \"{span}\")"
                        )),
                    }
                }
                i += 1;
            }
        }
    }
    problems
}

#[test]
fn man_pages_and_readme_name_only_flags_and_commands_that_exist() {
    let mut problems = Vec::new();
    for page in PAGES {
        problems.extend(check_commands(&roff_code(&read(page)), page));
    }
    problems.extend(check_commands(
        &markdown_code(&read("README.md")),
        "README.md",
    ));
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Words written `Key =` in `code` (config lines and `Key = value` spans).
fn written_keys(code: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for span in code {
        for (i, _) in span.match_indices('=') {
            let before = span[..i].trim_end();
            let word: String = before
                .chars()
                .rev()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            // `Key = value` only: a key starts the span or its line, and has a space before =.
            let at_start = before.trim_start() == word;
            if !word.is_empty()
                && at_start
                && span[..i].ends_with(' ')
                && !span[i + 1..].starts_with('=')
            {
                out.push(word);
            }
        }
    }
    out
}

/// Keys of the TOTP secret file (knock-ipc's format), shown in the docs next to config keys.
const TOTP_FILE_KEYS: &[&str] = &["version", "secret", "step", "knocks", "ports", "exclude"];

#[test]
fn every_documented_key_exists_and_every_key_is_documented() {
    let known: Vec<String> = knockd::config::key_names()
        .flat_map(|(name, aliases)| std::iter::once(name).chain(aliases.iter().copied()))
        .map(str::to_ascii_lowercase)
        .collect();
    let mut problems = Vec::new();
    let conf = read("man/knockd.conf.5");
    for (source, code) in [
        ("man/knockd.conf.5", roff_code(&conf)),
        ("README.md", markdown_code(&read("README.md"))),
    ] {
        let keys = written_keys(&code);
        assert!(
            keys.len() > 20,
            "{source}: only {} `Key =` found",
            keys.len()
        );
        for key in keys {
            let lower = key.to_ascii_lowercase();
            if !known.contains(&lower) && !TOTP_FILE_KEYS.contains(&lower.as_str()) {
                problems.push(format!("{source}: `{key} =` is not a knockd.conf key"));
            }
        }
    }
    let plain = unroff(&conf);
    for (name, _) in knockd::config::key_names() {
        if !plain.contains(&format!("\n.B {name}")) && !plain.contains(&format!("\\fB{name}")) {
            problems.push(format!(
                "man/knockd.conf.5 does not document the key {name} (a `.B {name}` entry)"
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The checks find what they are for (so a passing run means something).
#[test]
fn the_checks_catch_made_up_flags_commands_and_keys() {
    let code: Vec<String> = [
        "sudo knockd -t -i eth9 --no-such-flag",
        "knockctl --json frobnicate",
        "knockctl revoke 10.0.0.1 --door ssh --all",
        "knock -v --totp FILE HOST -x",
        "cargo test -p knockd --test matcher_model",
        "knockctl metrics > /tmp/x.prom",
        "knockctl -H ssh://a --hosts prod --timeout 3 list",
        "knockctl --hosts prod frobnicate",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let problems = check_commands(&code, "t");
    assert_eq!(
        problems,
        vec![
            "t: `knockd` has no flag --no-such-flag (in \"sudo knockd -t -i eth9 --no-such-flag\")",
            "t: knockctl has no command 'frobnicate' (in \"knockctl --json frobnicate\")",
            "t: `knockctl` has no flag --all (in \"knockctl revoke 10.0.0.1 --door ssh --all\")",
            "t: `knock` has no flag -x (in \"knock -v --totp FILE HOST -x\")",
            "t: knockctl has no command 'frobnicate' (in \"knockctl --hosts prod frobnicate\")",
        ]
    );
    let keys = written_keys(&[
        "    Sequence    = 7000,8000".to_string(),
        "TOTP_Adresses = 2".to_string(),
        "x == y".to_string(),
    ]);
    assert_eq!(keys, vec!["Sequence", "TOTP_Adresses"]);
}

/// The lines of the README's fenced block that starts right after the line `after`.
fn readme_block(readme: &str, after: &str) -> Vec<String> {
    let start = readme
        .find(after)
        .unwrap_or_else(|| panic!("README.md has no {after:?}"));
    let rest = &readme[start + after.len()..];
    let open = rest.find("```\n").expect("a fenced block follows") + 4;
    let body = &rest[open..];
    let end = body.find("```").expect("the block ends");
    body[..end].lines().map(str::to_string).collect()
}

/// Columns as a reader sees them: words, whatever the padding.
fn words(line: &str) -> String {
    line.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The first example: `knockctl list` prints these columns for this grant.
#[test]
fn readme_knockctl_list_example_is_what_knockctl_prints() {
    use chrono::TimeZone;
    let readme = read("README.md");
    let block = readme_block(&readme, "A port-knocking daemon for Linux");
    let at = block
        .iter()
        .position(|l| l.starts_with("server# knockctl list"))
        .expect("the example runs knockctl list");
    let end = block
        .iter()
        .position(|l| l.starts_with("server# knockctl revoke"))
        .expect("then revokes");
    let shown: Vec<String> = block[at + 1..end].iter().map(|l| words(l)).collect();
    let opened = chrono::Utc
        .with_ymd_and_hms(2026, 11, 25, 14, 59, 16)
        .single()
        .expect("time");
    let grant = knock_ipc::GrantInfo {
        door: "openSSH".into(),
        addr: "10.0.0.12".parse().expect("addr"),
        opened: "22/tcp (INPUT)".into(),
        opened_at_unix_ms: opened.timestamp_millis(),
        expires_in_ms: Some(28_000),
        closes: "native rule delete".into(),
        refreshes: 0,
        kernel_expires_in_ms: None,
        closing: false,
        close_error: None,
        client: None,
    };
    let now = opened + chrono::Duration::seconds(2);
    let printed: Vec<String> = knockctl::ctl::output::format_grants(&[grant], &now, None)
        .lines()
        .map(words)
        .collect();
    assert_eq!(
        shown, printed,
        "README's `knockctl list` example is not what knockctl prints for that grant"
    );
}

/// `knockctl tail`'s line in the README's command table.
#[test]
fn readme_tail_line_is_what_knockctl_prints() {
    use chrono::TimeZone;
    let readme = read("README.md");
    let line = "`14:59:16.201 10.0.0.12 openSSH stage 2/3`";
    assert!(readme.contains(line), "README.md no longer shows {line}");
    let at = chrono::Utc
        .with_ymd_and_hms(2026, 11, 25, 14, 59, 16)
        .single()
        .expect("time");
    let event = knock_ipc::Event {
        at_unix_ms: at.timestamp_millis() + 201,
        kind: knock_ipc::EventKind::Stage {
            addr: "10.0.0.12".parse().expect("addr"),
            door: "openSSH".into(),
            stage: 2,
            of: 3,
        },
    };
    assert_eq!(
        format!(
            "`{}`",
            knockctl::ctl::output::format_event(&event, &chrono::Utc)
        ),
        line
    );
}

/// The README's TUI screen is the 80x24 snapshot the render test checks.
#[test]
fn readme_tui_screen_is_the_80x24_snapshot() {
    let readme = read("README.md");
    let shown = readme_block(&readme, "At 80x24:").join("\n");
    let snap = read(
        "knockctl/src/tui/render/snapshots/knockctl__tui__render__tests__attempts_in_progress_80x24.snap",
    );
    let body = snap.splitn(3, "---\n").nth(2).expect("insta header");
    assert_eq!(
        shown,
        body.trim_end_matches('\n'),
        "README's TUI screen differs from the 80x24 snapshot: copy the snapshot into README.md"
    );
}

/// The README's screen of the dashboard over many hosts is the fleet 80x24 snapshot.
#[test]
fn readme_fleet_tui_screen_is_the_fleet_80x24_snapshot() {
    let readme = read("README.md");
    let shown: Vec<String> = readme_block(&readme, "With many hosts, at 80x24:")
        .iter()
        .map(|l| l.strip_prefix("  ").unwrap_or(l).to_string())
        .filter(|l| !l.trim().is_empty())
        .collect();
    let snap = read(
        "knockctl/src/tui/render/tests/snapshots/knockctl__tui__render__tests__fleet__fleet_80x24.snap",
    );
    let body = snap.splitn(3, "---\n").nth(2).expect("insta header");
    assert_eq!(
        shown.join("\n"),
        body.trim_end_matches('\n'),
        "README's fleet TUI screen differs from the fleet 80x24 snapshot: copy it into README.md"
    );
}

/// Messages the README quotes, and the parts of the programs' text they come from (a `...`
/// in the README stands for a value).
const QUOTED_MESSAGES: &[(&str, &[&str])] = &[
    (
        "*`missing capabilities: CAP_NET_RAW`*",
        &["missing capabilities: "],
    ),
    (
        "*`cannot capture on interface 'eth0'`*",
        &["cannot capture on interface '"],
    ),
    (
        "`Firewall changed from ... restart knockd to switch`",
        &["Firewall changed from ", "restart knockd to switch"],
    ),
    (
        "`kernel timeout (nftables) (kernel: 28s left)`",
        &["kernel timeout (nftables)", " (kernel: ", " left)"],
    ),
    ("the TUI `kernel`", &["\"kernel\"", "kernel, ", " left"]),
    ("`disconnected, retrying`", &["disconnected, retrying"]),
    ("`sequence reset at stage N`", &["sequence reset at stage "]),
    ("`grant refreshed`", &["grant refreshed"]),
    ("`firewall  nftables`", &["firewall"]),
];

#[test]
fn readme_messages_are_texts_the_programs_print() {
    let readme = read("README.md");
    let root = xtask::repo_root();
    let mut sources = String::new();
    for dir in ["knockd/src", "knockctl/src"] {
        for f in walk(&root.join(dir)) {
            if f.extension().is_some_and(|e| e == "rs") {
                sources.push_str(&std::fs::read_to_string(&f).unwrap_or_default());
            }
        }
    }
    let mut problems = Vec::new();
    for (quote, parts) in QUOTED_MESSAGES {
        if !readme.contains(quote) {
            problems.push(format!(
                "README.md no longer quotes {quote:?} (update this list)"
            ));
        }
        for part in *parts {
            if !sources.contains(part) {
                problems.push(format!(
                    "README.md quotes {quote:?}, but no program prints {part:?}"
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
