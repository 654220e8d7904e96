//! Text from the daemon made safe to print, and measured in terminal columns.

use std::borrow::Cow;

use unicode_width::{UnicodeWidthChar, UnicodeWidthStr};

/// `text` with control characters (newline, ESC, any C0/C1, DEL) and Unicode bidirectional
/// overrides shown as `\u{..}` escapes: a door name or message from the daemon (or from an
/// old state file) can never add lines, move the cursor or reorder what the terminal shows.
pub fn visible(text: &str) -> Cow<'_, str> {
    let odd =
        |c: char| c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
    if !text.chars().any(odd) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if odd(c) {
            out.push_str(&format!("\\u{{{:x}}}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Columns `s` takes on a terminal: wide (CJK, emoji) characters count two, combining marks
/// none.
pub fn text_width(s: &str) -> usize {
    UnicodeWidthStr::width(s)
}

/// Columns one character takes (control characters: none).
pub fn char_width(c: char) -> usize {
    UnicodeWidthChar::width(c).unwrap_or(0)
}

/// Appends `line` without trailing spaces, and a newline.
pub fn push_line(out: &mut String, line: &str) {
    out.push_str(line.trim_end());
    out.push('\n');
}

/// Greedy word wrap to `width` columns; a word longer than `width` is split. Always at least
/// one (possibly empty) line.
pub fn wrap(text: &str, width: usize) -> Vec<String> {
    let width = width.max(1);
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        let mut word: Vec<char> = word.chars().collect();
        loop {
            let used = text_width(&line);
            let sep = usize::from(used > 0);
            let needed: usize = word.iter().copied().map(char_width).sum();
            if used + sep + needed <= width {
                if sep == 1 {
                    line.push(' ');
                }
                line.extend(word.iter());
                break;
            }
            if used > 0 {
                lines.push(std::mem::take(&mut line));
                continue;
            }
            // The word alone is too long: split it where it fills the width (at least one
            // character, so a double-width character in a 1-column cell still moves on).
            let mut fits = 0;
            let mut taken = 0;
            for &c in &word {
                if taken > 0 && fits + char_width(c) > width {
                    break;
                }
                fits += char_width(c);
                taken += 1;
            }
            let rest = word.split_off(taken);
            lines.push(word.iter().collect());
            word = rest;
        }
    }
    if !line.is_empty() || lines.is_empty() {
        lines.push(line);
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn visible_escapes_controls_and_bidi_overrides() {
        assert!(matches!(visible("openSSH"), Cow::Borrowed("openSSH")));
        assert_eq!(
            visible("a\nb\u{1b}[2J\u{202e}"),
            "a\\u{a}b\\u{1b}[2J\\u{202e}"
        );
    }

    #[test]
    fn wrap_splits_words_and_long_words() {
        assert_eq!(wrap("", 10), vec![""]);
        assert_eq!(wrap("a bb ccc", 4), vec!["a bb", "ccc"]);
        assert_eq!(wrap("abcdefghij", 4), vec!["abcd", "efgh", "ij"]);
        assert_eq!(wrap("x abcdefghij", 4), vec!["x", "abcd", "efgh", "ij"]);
    }

    #[test]
    fn wide_characters_are_measured_in_columns() {
        assert_eq!(wrap("門番門番門番", 5), ["門番", "門番", "門番"]);
        assert_eq!(wrap("門", 1), ["門"]);
        assert_eq!(text_width("門番"), 4);
    }
}
