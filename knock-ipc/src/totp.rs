//! Rotating (TOTP) doors: the secret file shared by knockd and the `knock` client, and the
//! derivation of a time step's knock sequence. One implementation for both sides, so they
//! cannot drift; fixed vectors below pin it.
//!
//! Ports of step `t` (= unix time / `step`): HMAC-SHA256(secret, "knockd-totp-v1" ‖ t as u64
//! big-endian ‖ block counter as u32 big-endian), read as big-endian u16s; a value is kept
//! when it falls below the largest multiple of the range's size (no modulo bias), maps to
//! `lo + v % size`, is not excluded and not already chosen; blocks follow until there are
//! `knocks` ports. All knocks are TCP SYNs.

use std::fmt;
use std::fs::OpenOptions;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use hmac::{Hmac, Mac};
use sha2::Sha256;

pub const DEFAULT_STEP_SECS: u64 = 30;
pub const DEFAULT_KNOCKS: usize = 4;
pub const DEFAULT_PORTS: (u16, u16) = (10000, 59999);
/// Ports excluded by default: common services inside the default range.
pub const DEFAULT_EXCLUDE: &[u16] = &[];
pub const SECRET_LEN: usize = 32;
const MIN_SECRET_LEN: usize = 16;
const MAX_KNOCKS: usize = 32;
const LABEL: &[u8] = b"knockd-totp-v1";

#[derive(Debug, thiserror::Error)]
pub enum TotpError {
    #[error("cannot read TOTP file '{}': {source} (check the path and permissions)", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot create TOTP file '{}': {source}", path.display())]
    Create { path: PathBuf, source: io::Error },
    #[error("TOTP file '{}' already exists: knockd --new-totp never overwrites a secret (choose another name, or remove the old file first)", path.display())]
    Exists { path: PathBuf },
    #[error("TOTP file '{}' line {line}: {message}", path.display())]
    Invalid {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("cannot get random bytes for a TOTP secret: {0}")]
    Random(String),
}

/// What a TOTP door and its clients share. `Debug` never shows the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Spec {
    pub secret: Vec<u8>,
    pub step_secs: u64,
    pub knocks: usize,
    pub lo: u16,
    pub hi: u16,
    pub exclude: Vec<u16>,
}

impl fmt::Debug for Spec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Spec")
            .field("secret", &"<hidden>")
            .field("step_secs", &self.step_secs)
            .field("knocks", &self.knocks)
            .field("ports", &format_args!("{}-{}", self.lo, self.hi))
            .field("exclude", &self.exclude)
            .finish()
    }
}

impl Spec {
    /// A fresh secret with the default parameters.
    pub fn generate() -> Result<Spec, TotpError> {
        let mut secret = vec![0u8; SECRET_LEN];
        getrandom::fill(&mut secret).map_err(|e| TotpError::Random(e.to_string()))?;
        Ok(Spec {
            secret,
            step_secs: DEFAULT_STEP_SECS,
            knocks: DEFAULT_KNOCKS,
            lo: DEFAULT_PORTS.0,
            hi: DEFAULT_PORTS.1,
            exclude: DEFAULT_EXCLUDE.to_vec(),
        })
    }

    /// The time step at `unix_secs`.
    pub fn step_at(&self, unix_secs: u64) -> u64 {
        unix_secs / self.step_secs.max(1)
    }

    /// Unix time at which `step` begins.
    pub fn step_start(&self, step: u64) -> u64 {
        step.saturating_mul(self.step_secs.max(1))
    }

    /// Whether a knock on `port` could be part of some step's sequence.
    pub fn covers(&self, port: u16) -> bool {
        (self.lo..=self.hi).contains(&port) && !self.exclude.contains(&port)
    }

    /// The knock ports of `step`: `knocks` distinct ports of the range, none excluded.
    pub fn ports(&self, step: u64) -> Vec<u16> {
        let size = u32::from(self.hi) - u32::from(self.lo) + 1;
        let limit = 65536 - 65536 % size;
        let mut out: Vec<u16> = Vec::with_capacity(self.knocks);
        let mut block: u32 = 0;
        while out.len() < self.knocks && block < 10_000 {
            // new_from_slice accepts any key length for HMAC.
            let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&self.secret) else {
                break;
            };
            mac.update(LABEL);
            mac.update(&step.to_be_bytes());
            mac.update(&block.to_be_bytes());
            let bytes = mac.finalize().into_bytes();
            for pair in bytes.chunks_exact(2) {
                let v = u32::from(u16::from_be_bytes([pair[0], pair[1]]));
                if v >= limit {
                    continue;
                }
                let Ok(port) = u16::try_from(u32::from(self.lo) + v % size) else {
                    continue;
                };
                if self.exclude.contains(&port) || out.contains(&port) {
                    continue;
                }
                out.push(port);
                if out.len() == self.knocks {
                    break;
                }
            }
            block += 1;
        }
        out
    }

    /// The file text (see [`Spec::parse`]).
    pub fn render(&self) -> String {
        let exclude: Vec<String> = self.exclude.iter().map(u16::to_string).collect();
        format!(
            "# knockd TOTP door secret, made by `knockd --new-totp`. Keep it private (mode 0600):\n\
             # whoever holds it can open the door.\n\
             # Server: `TOTP_File = <this file>` in a door of knockd.conf.\n\
             # Client: copy it over a trusted channel, then `knock --totp <this file> HOST`.\n\
             version = 1\n\
             secret = {}\n\
             step = {}\n\
             knocks = {}\n\
             ports = {}-{}\n\
             exclude = {}\n",
            data_encoding::BASE32_NOPAD.encode(&self.secret),
            self.step_secs,
            self.knocks,
            self.lo,
            self.hi,
            exclude.join(",")
        )
    }

    /// Parses the file text; `path` is only used in messages.
    pub fn parse(text: &str, path: &Path) -> Result<Spec, TotpError> {
        let invalid = |line: usize, message: String| TotpError::Invalid {
            path: path.to_path_buf(),
            line,
            message,
        };
        let (mut secret, mut step, mut knocks, mut range, mut exclude) = (
            None,
            DEFAULT_STEP_SECS,
            DEFAULT_KNOCKS,
            DEFAULT_PORTS,
            Vec::new(),
        );
        for (i, raw) in text.lines().enumerate() {
            let n = i + 1;
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                return Err(invalid(n, format!("'{line}' is not key = value")));
            };
            let (key, value) = (key.trim(), value.trim());
            let number = |max: u64| {
                value
                    .parse::<u64>()
                    .ok()
                    .filter(|v| (1..=max).contains(v))
                    .ok_or_else(|| invalid(n, format!("invalid {key} '{value}' (1 to {max})")))
            };
            match key {
                "version" if value == "1" => {}
                "version" => {
                    return Err(invalid(
                        n,
                        format!("unsupported version '{value}' (this knockd reads version 1)"),
                    ))
                }
                "secret" => {
                    let bytes = data_encoding::BASE32_NOPAD
                        .decode(value.trim_end_matches('=').as_bytes())
                        .map_err(|_| invalid(n, "secret is not base32".into()))?;
                    if bytes.len() < MIN_SECRET_LEN {
                        return Err(invalid(
                            n,
                            format!(
                                "secret too short ({} bytes, at least {MIN_SECRET_LEN})",
                                bytes.len()
                            ),
                        ));
                    }
                    secret = Some(bytes);
                }
                "step" => step = number(3600)?.max(5),
                "knocks" => {
                    knocks = usize::try_from(number(MAX_KNOCKS as u64)?).unwrap_or(DEFAULT_KNOCKS);
                    if knocks < 2 {
                        return Err(invalid(n, "knocks must be 2 or more".into()));
                    }
                }
                "ports" => {
                    let parsed = value.split_once('-').and_then(|(a, b)| {
                        Some((a.trim().parse::<u16>().ok()?, b.trim().parse::<u16>().ok()?))
                    });
                    range = parsed.filter(|(a, b)| *a >= 1 && a < b).ok_or_else(|| {
                        invalid(
                            n,
                            format!("invalid ports '{value}' (write lo-hi, e.g. 10000-59999)"),
                        )
                    })?;
                }
                "exclude" => {
                    exclude = value
                        .split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(|s| s.parse::<u16>())
                        .collect::<Result<Vec<u16>, _>>()
                        .map_err(|_| {
                            invalid(
                                n,
                                format!("invalid exclude '{value}' (ports separated by commas)"),
                            )
                        })?;
                }
                _ => return Err(invalid(n, format!("unknown key '{key}'"))),
            }
        }
        let secret = secret
            .ok_or_else(|| invalid(0, "no secret (the file must have a 'secret =' line)".into()))?;
        let spec = Spec {
            secret,
            step_secs: step,
            knocks,
            lo: range.0,
            hi: range.1,
            exclude,
        };
        let usable = (spec.lo..=spec.hi)
            .filter(|p| !spec.exclude.contains(p))
            .count();
        if usable < spec.knocks * 8 {
            return Err(invalid(
                0,
                format!(
                    "ports {}-{} leave only {usable} usable ports for {} knocks (widen the range)",
                    spec.lo, spec.hi, spec.knocks
                ),
            ));
        }
        Ok(spec)
    }

    /// Reads and parses a TOTP file.
    pub fn read(path: &Path) -> Result<Spec, TotpError> {
        let text = std::fs::read_to_string(path).map_err(|source| TotpError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Spec::parse(&text, path)
    }

    /// Writes a fresh secret file at `path`, mode 0600, never overwriting anything.
    pub fn write_new(path: &Path) -> Result<Spec, TotpError> {
        let spec = Spec::generate()?;
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|source| {
                if source.kind() == io::ErrorKind::AlreadyExists {
                    TotpError::Exists {
                        path: path.to_path_buf(),
                    }
                } else {
                    TotpError::Create {
                        path: path.to_path_buf(),
                        source,
                    }
                }
            })?;
        file.write_all(spec.render().as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(|source| TotpError::Create {
                path: path.to_path_buf(),
                source,
            })?;
        Ok(spec)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn vector_spec() -> Spec {
        Spec {
            secret: b"12345678901234567890123456789012".to_vec(),
            step_secs: 30,
            knocks: 4,
            lo: 10000,
            hi: 59999,
            exclude: vec![],
        }
    }

    /// HMAC-SHA256 itself is the standard one (RFC 4231, test case 2).
    #[test]
    fn hmac_sha256_matches_rfc_4231() {
        let mut mac = Hmac::<Sha256>::new_from_slice(b"Jefe").unwrap();
        mac.update(b"what do ya want for nothing?");
        let hex: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(
            hex,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    /// Fixed vectors: (secret, time, door parameters) -> ports. knockd and `knock --totp`
    /// both call `Spec::ports`; a change here breaks every deployed client.
    #[test]
    fn derivation_vectors() {
        let spec = vector_spec();
        for (unix, want) in VECTORS {
            assert_eq!(spec.ports(spec.step_at(*unix)), want.to_vec(), "t = {unix}");
        }
        let mut narrow = vector_spec();
        narrow.lo = 20000;
        narrow.hi = 20063;
        narrow.exclude = vec![20001, 20002, 20003];
        assert_eq!(narrow.ports(1), NARROW_STEP_1.to_vec());
    }

    /// Cross-checked with an independent implementation (Python's hmac + hashlib).
    const VECTORS: &[(u64, [u16; 4])] = &[
        (0, [57405, 13351, 13076, 44517]),
        (59, [43684, 21610, 54344, 48877]),
        (1_111_111_109, [11203, 42826, 32656, 30612]),
        (1_234_567_890, [52682, 51435, 22727, 35366]),
        (2_000_000_000, [47374, 45941, 49182, 36865]),
        (20_000_000_000, [30648, 44037, 14444, 38405]),
    ];
    const NARROW_STEP_1: [u16; 4] = [20020, 20040, 20026, 20056];

    #[test]
    fn ports_are_distinct_in_range_and_never_excluded() {
        let mut spec = vector_spec();
        spec.lo = 5000;
        spec.hi = 5040;
        spec.exclude = (5000..5030).collect();
        spec.knocks = 8;
        for step in 0..500 {
            let ports = spec.ports(step);
            assert_eq!(ports.len(), 8);
            let mut d = ports.clone();
            d.sort_unstable();
            d.dedup();
            assert_eq!(d.len(), 8, "{ports:?}");
            assert!(ports.iter().all(|p| (5030..=5040).contains(p)), "{ports:?}");
        }
        // Steps differ.
        let spec = vector_spec();
        assert_ne!(spec.ports(1), spec.ports(2));
    }

    #[test]
    fn file_round_trip_and_errors() {
        let spec = Spec::generate().unwrap();
        let p = Path::new("x.totp");
        assert_eq!(Spec::parse(&spec.render(), p).unwrap(), spec);
        assert!(!format!("{spec:?}").contains(&data_encoding::BASE32_NOPAD.encode(&spec.secret)));
        for (text, needle) in [
            ("step = 30\n", "no secret"),
            ("secret = !!\n", "not base32"),
            ("secret = MFRGG\n", "too short"),
            ("version = 2\n", "unsupported version"),
            ("bogus = 1\n", "unknown key"),
            ("ports = 9-1\n", "invalid ports"),
        ] {
            let e = Spec::parse(text, p).unwrap_err().to_string();
            assert!(e.contains(needle), "{text}: {e}");
        }
    }

    #[test]
    fn write_new_is_0600_and_never_overwrites() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("door.totp");
        let spec = Spec::write_new(&p).unwrap();
        let meta = std::fs::metadata(&p).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(Spec::read(&p).unwrap(), spec);
        let before = std::fs::read(&p).unwrap();
        assert!(matches!(Spec::write_new(&p), Err(TotpError::Exists { .. })));
        assert_eq!(std::fs::read(&p).unwrap(), before);
    }
}
