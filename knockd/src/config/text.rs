//! Config bytes to text. knockd 0.8 read bytes and accepted anything in comments (Latin-1
//! comments are common in old configs); knockd-rs reads UTF-8, accepts comment lines that are
//! not UTF-8 (their bytes do not matter), and reports non-UTF-8 bytes anywhere else with the
//! line, the column and the fix, instead of refusing the whole file without a line number.

use super::error::{ConfigError, ConfigErrors};

/// The file's text, with non-UTF-8 comment lines replaced lossily; every other non-UTF-8 line
/// is an error.
pub fn decode(bytes: &[u8], file: &str) -> Result<String, ConfigErrors> {
    if let Ok(s) = std::str::from_utf8(bytes) {
        return Ok(s.to_string());
    }
    let mut out = String::with_capacity(bytes.len());
    let mut errors = Vec::new();
    for (i, line) in bytes.split(|&b| b == b'\n').enumerate() {
        if i > 0 {
            out.push('\n');
        }
        match std::str::from_utf8(line) {
            Ok(s) => out.push_str(s),
            Err(e) => {
                let trimmed = line.trim_ascii_start();
                if trimmed.starts_with(b"#") {
                    out.push('#');
                    continue;
                }
                let at = e.valid_up_to();
                errors.push(ConfigError::new(
                    file,
                    i + 1,
                    format!(
                        "byte 0x{:02X} at column {} is not valid UTF-8 (knockd reads UTF-8; convert the file, e.g. iconv -f latin1 -t utf-8, or move the text into a # comment)",
                        line.get(at).copied().unwrap_or(0),
                        at + 1
                    ),
                ));
            }
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(ConfigErrors(errors))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn latin1_comments_pass_and_other_bytes_name_their_line() {
        let ok = b"# caf\xe9 cr\xe8me\n[options]\n  # \xff\xfe\n  LogFile = /tmp/x\n";
        let text = decode(ok, "k.conf").unwrap();
        assert!(text.contains("LogFile = /tmp/x"));
        assert_eq!(text.lines().count(), 4);

        let bad = b"[options]\n# fine \xe9\n[caf\xe9]\nsequence = 1,2,3\ncommand = echo \xff\n";
        let errs = decode(bad, "k.conf").unwrap_err();
        let lines: Vec<usize> = errs.0.iter().map(|e| e.line).collect();
        assert_eq!(lines, vec![3, 5]);
        let msg = errs.0[0].to_string();
        assert!(
            msg.contains("0xE9") && msg.contains("column 5") && msg.contains("iconv"),
            "{msg}"
        );
    }
}
