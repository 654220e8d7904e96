//! What `knockd -t` prints: notes, every warning (each one counted in the summary), and the
//! checks it could not make, with why. Pure: the daemon gathers, this decides and renders.

/// The findings of one `knockd -t` run.
#[derive(Debug, Default)]
pub struct Report {
    /// Running with knockd's privileges (CAP_NET_RAW and CAP_NET_ADMIN, e.g. as root): what
    /// fails then would fail at start too.
    privileged: bool,
    /// Informational lines (not counted).
    pub notes: Vec<String>,
    /// Warnings, printed and counted.
    pub warnings: Vec<String>,
    /// Errors that do not stop the config from loading but leave part of it unusable (SPA
    /// clients and keys): printed, counted, and `-t` fails.
    pub errors: Vec<String>,
    /// Checks not made: what, and why.
    pub skipped: Vec<String>,
}

impl Report {
    pub fn new(privileged: bool) -> Report {
        Report {
            privileged,
            ..Report::default()
        }
    }

    /// The interface to capture on does not exist: an error with knockd's privileges (the
    /// start would fail), a warning without them (`-t` may run on another host).
    pub fn missing_interface(&mut self, iface: &str) -> anyhow::Result<()> {
        let what = format!(
            "interface '{iface}' does not exist on this host (`ip link` lists the interfaces; set Interface in [options] or use -i)"
        );
        if self.privileged {
            anyhow::bail!("{what}");
        }
        self.warnings
            .push(format!("warning: {what}: knockd would not start here"));
        Ok(())
    }

    /// The interface's link type could not be read: the filter was compiled for Ethernet.
    pub fn link_type_unknown(&mut self, iface: &str, error: &str) {
        self.notes.push(format!(
            "capture filter compiled for Ethernet (assumed: cannot open {iface} to read its link type)"
        ));
        if self.privileged {
            self.warnings.push(format!(
                "warning: cannot open {iface} to read its link type ({error}): the capture filter was checked for Ethernet framing only"
            ));
        } else {
            self.skipped.push(format!(
                "{iface}'s link type (opening it needs CAP_NET_RAW; Ethernet assumed)"
            ));
        }
    }

    /// The nftables ruleset could not be read, so chains that would drop what knockd opens
    /// were not looked for.
    pub fn ruleset_unread(&mut self, error: &str) {
        let why = if self.privileged {
            error.to_string()
        } else {
            "reading it needs CAP_NET_ADMIN".to_string()
        };
        self.skipped.push(format!(
            "nftables input-hook chains that would drop what knockd opens ({why})"
        ));
    }

    /// The text `knockd -t` prints for `file` with `doors` doors.
    pub fn render(&self, file: &str, doors: usize) -> String {
        let mut out = String::new();
        for line in self.notes.iter().chain(&self.warnings) {
            out.push_str(line);
            out.push('\n');
        }
        for line in &self.errors {
            out.push_str(&format!("error: {line}\n"));
        }
        let verdict = if self.errors.is_empty() {
            "OK".to_string()
        } else {
            format!("{} error(s)", self.errors.len())
        };
        out.push_str(&format!(
            "{file}: {verdict}, {doors} door(s), {} warning(s)\n",
            self.warnings.len()
        ));
        if !self.skipped.is_empty() {
            let fix = if self.privileged {
                ""
            } else {
                " (run knockd -t as root on the host that runs knockd)"
            };
            out.push_str(&format!("not checked: {}{fix}\n", self.skipped.join("; ")));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn as_root_a_missing_interface_is_an_error() {
        let mut r = Report::new(true);
        let e = r.missing_interface("eth9").expect_err("root: error");
        assert_eq!(
            e.to_string(),
            "interface 'eth9' does not exist on this host (`ip link` lists the interfaces; set Interface in [options] or use -i)"
        );
        let mut r = Report::new(false);
        r.missing_interface("eth9").expect("not root: a warning");
        assert_eq!(r.warnings.len(), 1);
        assert!(r.warnings[0].ends_with("knockd would not start here"));
    }

    /// Every warning printed is counted; skipped checks are named, with the fix.
    #[test]
    fn counts_every_warning_and_names_what_it_skipped() {
        let mut r = Report::new(false);
        r.warnings
            .push("k.conf:5: warning: door 'ssh': 3 knocks".into());
        r.link_type_unknown("eth0", "Operation not permitted");
        r.ruleset_unread("cannot list the nftables ruleset: Operation not permitted");
        r.warnings
            .push("warning: nftables base chain 'inet filter input' ...".into());
        let text = r.render("k.conf", 2);
        assert_eq!(
            text,
            "capture filter compiled for Ethernet (assumed: cannot open eth0 to read its link type)\n\
             k.conf:5: warning: door 'ssh': 3 knocks\n\
             warning: nftables base chain 'inet filter input' ...\n\
             k.conf: OK, 2 door(s), 2 warning(s)\n\
             not checked: eth0's link type (opening it needs CAP_NET_RAW; Ethernet assumed); nftables input-hook chains that would drop what knockd opens (reading it needs CAP_NET_ADMIN) (run knockd -t as root on the host that runs knockd)\n"
        );
        assert_eq!(
            text.lines().filter(|l| l.contains("warning: ")).count(),
            2,
            "the summary counts what it printed"
        );

        let mut root = Report::new(true);
        root.link_type_unknown("eth0", "boom");
        root.ruleset_unread("cannot list the nftables ruleset: nft: not found");
        let text = root.render("k.conf", 1);
        assert!(
            text.contains("k.conf: OK, 1 door(s), 1 warning(s)\n"),
            "{text}"
        );
        assert!(
            text.ends_with("not checked: nftables input-hook chains that would drop what knockd opens (cannot list the nftables ruleset: nft: not found)\n"),
            "{text}"
        );
        let clean = Report::new(true).render("k.conf", 1);
        assert_eq!(clean, "k.conf: OK, 1 door(s), 0 warning(s)\n");
    }

    #[test]
    fn errors_are_printed_counted_and_not_ok() {
        let mut r = Report::new(true);
        r.errors
            .push("door 'ssh': SPA names client 'bob', who is not enrolled".into());
        let text = r.render("k.conf", 1);
        assert!(
            text.contains("error: door 'ssh': SPA names client 'bob'"),
            "{text}"
        );
        assert!(
            text.contains("k.conf: 1 error(s), 1 door(s), 0 warning(s)"),
            "{text}"
        );
        assert!(!text.contains("OK"), "{text}");
    }
}
