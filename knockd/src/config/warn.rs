//! Configuration warnings: accepted, but probably not what the admin wants.

use std::fmt;

/// Most warnings the daemon logs at start or reload (`knockd -t` prints them all).
pub const MAX_LOGGED_WARNINGS: usize = 200;

/// A non-fatal finding about a config file.
/// Displays as `{file}:{line}: warning: door 'x': message` (without the door part when
/// `door` is None).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    pub file: String,
    pub line: usize,
    pub door: Option<String>,
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: warning: ", self.file, self.line)?;
        if let Some(door) = &self.door {
            write!(f, "door '{door}': ")?;
        }
        f.write_str(&self.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warning_display() {
        let w = Warning {
            file: "k.conf".into(),
            line: 4,
            door: Some("ssh".into()),
            message: "hmm".into(),
        };
        assert_eq!(w.to_string(), "k.conf:4: warning: door 'ssh': hmm");
        let w = Warning { door: None, ..w };
        assert_eq!(w.to_string(), "k.conf:4: warning: hmm");
    }
}
