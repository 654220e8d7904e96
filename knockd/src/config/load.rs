//! Loading from disk: read the file, parse it, and fill the current sequence of every
//! One_Time_Sequences door from its file.

use std::path::Path;

use super::error::{ConfigError, ConfigErrors};
use super::otp;
use super::parse::{parse_inner, ParseOutput, Parsed};

/// Reads and parses the config file, then fills the current sequence of every
/// One_Time_Sequences door from its file. A relative One_Time_Sequences path is resolved
/// against the config file's directory, and the resolved path is stored in the door.
pub fn load(path: &Path) -> Result<Parsed, ConfigErrors> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigError::new(
            &file,
            0,
            format!("cannot read config file: {e} (check the path and permissions)"),
        )
    })?;
    let ParseOutput {
        mut parsed,
        otp_lines,
    } = parse_inner(&text, &file)?;
    let base = path.parent().unwrap_or(Path::new(""));
    let mut errors = Vec::new();
    for (door, line) in parsed.config.doors.iter_mut().zip(otp_lines) {
        let Some(otp_path) = door.one_time_sequences.take() else {
            continue;
        };
        let otp_path = if otp_path.is_relative() {
            base.join(otp_path)
        } else {
            otp_path
        };
        let line = line.unwrap_or(door.line);
        match otp::read_current(&otp_path) {
            Ok(Some(seq)) => door.sequence = seq,
            Ok(None) => errors.push(ConfigError::new(
                &file,
                line,
                format!(
                    "one-time sequences file '{}' for door '{}' has no unused sequence: it is empty, or every line is used or invalid (add lines such as 7001,7002:udp,7003)",
                    otp_path.display(),
                    door.name
                ),
            )),
            Err(e) => errors.push(ConfigError::new(
                &file,
                line,
                format!("door '{}': {e}", door.name),
            )),
        }
        door.one_time_sequences = Some(otp_path);
    }
    if errors.is_empty() {
        Ok(parsed)
    } else {
        Err(ConfigErrors(errors))
    }
}
