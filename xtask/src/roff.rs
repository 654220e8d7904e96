//! Small roff helpers for the parts of the man pages that clap_mangen does not render the way
//! we want (descriptions with bullet lists, knockctl's commands).

/// Escape running text for roff: backslashes, hyphens (so options copy-paste as ASCII
/// hyphen-minus) and a leading `.` or `'` (which would start a request).
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\e"),
            '-' => out.push_str("\\-"),
            _ => out.push(c),
        }
    }
    if out.starts_with('.') || out.starts_with('\'') {
        out.insert_str(0, "\\&");
    }
    out
}

/// `\fBtext\fR`.
pub fn bold(text: &str) -> String {
    format!("\\fB{}\\fR", escape(text))
}

/// `\fItext\fR`.
pub fn italic(text: &str) -> String {
    format!("\\fI{}\\fR", escape(text))
}

/// Render help text as roff paragraphs. Paragraphs are separated by blank lines; lines
/// starting with `* ` (after indentation) start bullet items, and more-indented lines that
/// follow continue the item. Other lines are filled into the paragraph.
pub fn paragraphs(text: &str) -> String {
    let mut out = String::new();
    for (i, para) in text.split("\n\n").enumerate() {
        let para = para.trim_matches('\n');
        if para.trim().is_empty() {
            continue;
        }
        if i > 0 {
            out.push_str(".PP\n");
        }
        let mut in_list = false;
        for line in para.lines() {
            let trimmed = line.trim_start();
            if let Some(item) = trimmed.strip_prefix("* ") {
                out.push_str(".IP \\(bu 2\n");
                out.push_str(&escape(item.trim()));
                out.push('\n');
                in_list = true;
            } else {
                if in_list && line.starts_with(' ') {
                    // Continuation of a bullet item.
                } else if in_list {
                    out.push_str(".PP\n");
                    in_list = false;
                }
                out.push_str(&escape(trimmed.trim_end()));
                out.push('\n');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_hyphens_backslashes_and_leading_dots() {
        assert_eq!(escape("-t --check"), "\\-t \\-\\-check");
        assert_eq!(escape("a\\b"), "a\\eb");
        assert_eq!(escape(".conf"), "\\&.conf");
        assert_eq!(escape("'x"), "\\&'x");
    }

    #[test]
    fn renders_bullets_and_paragraphs() {
        let text = "First line\nsecond line.\n\nList:\n  * one\n    more\n  * two\n\nEnd.";
        let roff = paragraphs(text);
        assert_eq!(
            roff,
            "First line\nsecond line.\n.PP\nList:\n.IP \\(bu 2\none\nmore\n.IP \\(bu 2\ntwo\n.PP\nEnd.\n"
        );
    }
}
