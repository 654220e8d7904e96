//! Loading from disk: read the file, parse it, and fill the current sequence of every
//! One_Time_Sequences door from its file.

use std::path::Path;

use super::error::{ConfigError, ConfigErrors};
use super::otp;
use super::parse::{parse_inner, ParseOutput, Parsed};
use super::warn::Warning;

/// Directories the shipped unit (ProtectSystem=strict) lets knockd write to.
const UNIT_WRITABLE: [&str; 2] = ["/etc/knockd/", "/var/lib/knockd/"];

/// What [`load`] returns.
pub type Loaded = Result<Parsed, ConfigErrors>;

/// Reads and parses the config file, then fills the current sequence of every
/// One_Time_Sequences door from its file. A relative One_Time_Sequences path is resolved
/// against the config file's directory, and the resolved path is stored in the door.
///
/// One-time sequences fail closed without stopping the daemon: a door whose file has no
/// unused sequence left, or whose file knockd could not rewrite to record a use, is loaded
/// disabled (empty sequence) with a warning. A file that cannot be read is an error.
pub fn load(path: &Path) -> Result<Parsed, ConfigErrors> {
    let file = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|e| {
        ConfigError::new(
            &file,
            0,
            format!("cannot read config file: {e} (check the path and permissions)"),
        )
    })?;
    let text = super::text::decode(&bytes, &file)?;
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
        let warn = |message: String| Warning {
            file: file.clone(),
            line,
            door: Some(door.name.clone()),
            message,
        };
        match otp::read_current(&otp_path) {
            Ok(Some(seq)) => match otp::check_writable(&otp_path) {
                Ok(()) => door.sequence = seq,
                Err(e) => parsed.warnings.push(warn(format!(
                    "door disabled: {e}; a used sequence could not be recorded (fix the permissions and reload)"
                ))),
            },
            Ok(None) => parsed.warnings.push(warn(format!(
                "door disabled: one-time sequences file '{}' has no unused sequence: it is empty, or every line is used or invalid (add lines such as 7001,7002:udp,7003, then reload)",
                otp_path.display()
            ))),
            Err(e) => errors.push(ConfigError::new(
                &file,
                line,
                format!("door '{}': {e}", door.name),
            )),
        }
        let real = std::fs::canonicalize(&otp_path).unwrap_or_else(|_| otp_path.clone());
        if !UNIT_WRITABLE.iter().any(|d| real.starts_with(d)) {
            parsed.warnings.push(warn(format!(
                "one-time sequences file '{}' is outside /etc/knockd and /var/lib/knockd: under the shipped unit (ProtectSystem=strict) knockd cannot record a used sequence there and the door is disabled (move the file, or add its directory to ReadWritePaths)",
                real.display()
            )));
        }
        door.one_time_sequences = Some(otp_path);
    }
    for door in &mut parsed.config.doors {
        let Some(totp_path) = door.totp_file.take() else {
            continue;
        };
        let totp_path = if totp_path.is_relative() {
            base.join(totp_path)
        } else {
            totp_path
        };
        match knock_ipc::totp::Spec::read(&totp_path) {
            Ok(spec) => {
                for open in &door.open {
                    if spec.covers(open.port) {
                        errors.push(ConfigError::new(
                            &file,
                            door.line,
                            format!(
                                "door '{}': TOTP_File '{}' may choose port {}, which the door opens (add {} to its exclude line, or narrow its ports range)",
                                door.name,
                                totp_path.display(),
                                open.port,
                                open.port
                            ),
                        ));
                    }
                }
                for message in totp_weaknesses(&spec) {
                    parsed.warnings.push(Warning {
                        file: file.clone(),
                        line: door.line,
                        door: Some(door.name.clone()),
                        message: format!("TOTP_File '{}': {message}", totp_path.display()),
                    });
                }
                door.totp = Some(spec);
            }
            Err(e) => errors.push(ConfigError::new(
                &file,
                door.line,
                format!(
                    "door '{}': {e} (make one with knockd --new-totp FILE)",
                    door.name
                ),
            )),
        }
        door.totp_file = Some(totp_path);
    }
    parsed.warnings.sort_by_key(|w| w.line);
    if errors.is_empty() {
        Ok(parsed)
    } else {
        Err(ConfigErrors(errors))
    }
}

/// Fewest ports a TOTP range should leave to choose from.
pub const TOTP_MIN_PORTS: usize = 1000;
/// Shortest TOTP step worth accepting without a warning, in seconds.
pub const TOTP_MIN_STEP_SECS: u64 = 15;

/// What makes a TOTP file weak: few knocks, a range that leaves few ports (sweeps and guesses
/// meet the knocks often), a short step (a slow clock or a slow client misses it).
pub fn totp_weaknesses(spec: &knock_ipc::totp::Spec) -> Vec<String> {
    let mut out = Vec::new();
    if spec.knocks < 3 {
        out.push(format!(
            "only {} knock{}: easy to guess or stumble on (knocks = 4, or make a new file with knockd --new-totp)",
            spec.knocks,
            if spec.knocks == 1 { "" } else { "s" }
        ));
    }
    let ports = (spec.lo..=spec.hi).filter(|p| spec.covers(*p)).count();
    if ports < TOTP_MIN_PORTS {
        out.push(format!(
            "ports {}-{} leave {ports} port(s) to choose from, under {TOTP_MIN_PORTS}: sweeps and guesses meet the knocks too often (widen the range)",
            spec.lo, spec.hi
        ));
    }
    if spec.step_secs < TOTP_MIN_STEP_SECS {
        out.push(format!(
            "step = {} s is under {TOTP_MIN_STEP_SECS} s: a client whose clock is a little off, or a slow knock, misses the window (step = 30)",
            spec.step_secs
        ));
    }
    out
}
