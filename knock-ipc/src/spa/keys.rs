//! SPA key files: the server's X25519 key (`SPA_ServerKey`, secret), a client's public record
//! (`SPA_ClientDir/NAME.pub`, public: a config repository may hold it) and a client's key file
//! (`NAME.knock`, secret, what `knock --spa` reads). Small `key = value` texts, base64 keys.

use std::fmt;
use std::fs::OpenOptions;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use data_encoding::BASE64;
use ed25519_dalek::{SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};
use x25519_dalek::{PublicKey, StaticSecret};

use super::packet::{seal, Body, SessionKeys, NONCE_LEN, PACKET_LEN};

/// Longest client name.
pub const MAX_NAME: usize = 32;
/// A client's public record in `SPA_ClientDir` is `NAME` + this.
pub const RECORD_SUFFIX: &str = ".pub";

#[derive(Debug, thiserror::Error)]
pub enum SpaError {
    #[error("cannot read '{}': {source} (check the path and permissions)", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot create '{}': {source}", path.display())]
    Create { path: PathBuf, source: io::Error },
    #[error("'{}' already exists: knockd never overwrites a key (choose another name, or remove the old file first)", path.display())]
    Exists { path: PathBuf },
    #[error("'{}' line {line}: {message}", path.display())]
    Invalid {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error(
        "invalid client name '{0}' (1 to 32 of A-Z a-z 0-9 _ - ., not starting with '.' or '-')"
    )]
    Name(String),
    #[error("client '{0}': its X25519 key gives no shared secret with the server key (a low-order point: not a key knockd made)")]
    LowOrder(String),
    #[error("cannot get random bytes: {0}")]
    Random(String),
}

/// Is `name` a valid client name (also a safe file name)?
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && !name.starts_with('.')
        && !name.starts_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

fn random32() -> Result<[u8; 32], SpaError> {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).map_err(|e| SpaError::Random(e.to_string()))?;
    Ok(b)
}

/// A fresh random nonce for a packet.
pub fn random_nonce() -> Result<[u8; NONCE_LEN], SpaError> {
    let mut b = [0u8; NONCE_LEN];
    getrandom::fill(&mut b).map_err(|e| SpaError::Random(e.to_string()))?;
    Ok(b)
}

/// `key = value` lines; `#` comments. Every key in `want` must appear once; no other key.
fn fields<const N: usize>(
    text: &str,
    path: &Path,
    want: [&str; N],
) -> Result<[String; N], SpaError> {
    let invalid = |line: usize, message: String| SpaError::Invalid {
        path: path.to_path_buf(),
        line,
        message,
    };
    let mut got: [Option<String>; N] = std::array::from_fn(|_| None);
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            return Err(invalid(i + 1, format!("'{line}' is not key = value")));
        };
        let (k, v) = (k.trim(), v.trim());
        if k == "version" {
            if v != "1" {
                return Err(invalid(
                    i + 1,
                    format!("unsupported version '{v}' (this knockd reads version 1)"),
                ));
            }
            continue;
        }
        let Some(slot) = want.iter().position(|w| *w == k) else {
            return Err(invalid(i + 1, format!("unknown key '{k}'")));
        };
        if got[slot].replace(v.to_string()).is_some() {
            return Err(invalid(i + 1, format!("'{k}' given twice")));
        }
    }
    let mut out: [String; N] = std::array::from_fn(|_| String::new());
    for (slot, w) in want.iter().enumerate() {
        out[slot] = got[slot]
            .take()
            .ok_or_else(|| invalid(0, format!("no '{w} =' line")))?;
    }
    Ok(out)
}

fn key32(v: &str, what: &str, path: &Path) -> Result<[u8; 32], SpaError> {
    BASE64
        .decode(v.as_bytes())
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b.as_slice()).ok())
        .ok_or_else(|| SpaError::Invalid {
            path: path.to_path_buf(),
            line: 0,
            message: format!("{what} is not 32 bytes of base64"),
        })
}

fn read(path: &Path) -> Result<String, SpaError> {
    std::fs::read_to_string(path).map_err(|source| SpaError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Writes `text` to a new file (never over an existing one) with `mode`, fsynced.
pub fn write_new(path: &Path, text: &str, mode: u32) -> Result<(), SpaError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|source| {
            if source.kind() == io::ErrorKind::AlreadyExists {
                SpaError::Exists {
                    path: path.to_path_buf(),
                }
            } else {
                SpaError::Create {
                    path: path.to_path_buf(),
                    source,
                }
            }
        })?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|source| SpaError::Create {
            path: path.to_path_buf(),
            source,
        })
}

/// The server's X25519 key. `Debug` never shows it.
#[derive(Clone)]
pub struct ServerKey {
    secret: StaticSecret,
}

impl fmt::Debug for ServerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerKey")
            .field("public", &BASE64.encode(&self.public()))
            .finish()
    }
}

impl ServerKey {
    pub fn generate() -> Result<ServerKey, SpaError> {
        Ok(ServerKey::from_bytes(random32()?))
    }

    pub fn from_bytes(secret: [u8; 32]) -> ServerKey {
        ServerKey {
            secret: StaticSecret::from(secret),
        }
    }

    pub fn public(&self) -> [u8; 32] {
        PublicKey::from(&self.secret).to_bytes()
    }

    /// The keys shared with `client`; [`SpaError::LowOrder`] for a key with no shared secret.
    pub fn session(&self, client: &ClientRecord) -> Result<SessionKeys, SpaError> {
        let shared = self.secret.diffie_hellman(&PublicKey::from(client.x));
        if !shared.was_contributory() {
            return Err(SpaError::LowOrder(client.name.clone()));
        }
        Ok(SessionKeys::derive(
            shared.as_bytes(),
            &client.x,
            &self.public(),
        ))
    }

    pub fn render(&self) -> String {
        format!(
            "# knockd SPA server key, made by `knockd --new-client`. Keep it private (mode 0600).\n\
             # It alone opens nothing (every packet is signed by its client), but it lets its\n\
             # holder read packets and pass knockd's cheap filter.\n\
             version = 1\n\
             x25519-secret = {}\n",
            BASE64.encode(self.secret.as_bytes())
        )
    }

    pub fn parse(text: &str, path: &Path) -> Result<ServerKey, SpaError> {
        let [s] = fields(text, path, ["x25519-secret"])?;
        Ok(ServerKey::from_bytes(key32(&s, "x25519-secret", path)?))
    }

    pub fn read(path: &Path) -> Result<ServerKey, SpaError> {
        ServerKey::parse(&read(path)?, path)
    }
}

/// Short fingerprint of a client's two public keys: `SHA256:` + 16 hex digits in groups of 4.
pub fn fingerprint_of(x: &[u8; 32], ed: &[u8; 32]) -> String {
    let d = Sha256::new()
        .chain_update(b"knockd-spa-v1 fingerprint")
        .chain_update(x)
        .chain_update(ed)
        .finalize();
    let hex: Vec<String> = d[..8]
        .chunks(2)
        .map(|c| format!("{:02x}{:02x}", c[0], c[1]))
        .collect();
    format!("SHA256:{}", hex.join(":"))
}

/// A client's public keys, as the server keeps them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientRecord {
    pub name: String,
    /// X25519 public key (the packet's encryption).
    pub x: [u8; 32],
    /// Ed25519 public key (the packet's signature).
    pub verify: VerifyingKey,
}

impl ClientRecord {
    /// Short fingerprint of both public keys: `SHA256:` + 16 hex digits in groups of 4.
    pub fn fingerprint(&self) -> String {
        fingerprint_of(&self.x, self.verify.as_bytes())
    }

    pub fn render(&self) -> String {
        format!(
            "# knockd SPA client record (public keys only), made by `knockd --new-client`.\n\
             # fingerprint {}\n\
             version = 1\n\
             name = {}\n\
             x25519 = {}\n\
             ed25519 = {}\n",
            self.fingerprint(),
            self.name,
            BASE64.encode(&self.x),
            BASE64.encode(self.verify.as_bytes())
        )
    }

    pub fn parse(text: &str, path: &Path) -> Result<ClientRecord, SpaError> {
        let [name, x, e] = fields(text, path, ["name", "x25519", "ed25519"])?;
        if !valid_name(&name) {
            return Err(SpaError::Name(name));
        }
        let verify = VerifyingKey::from_bytes(&key32(&e, "ed25519", path)?).map_err(|_| {
            SpaError::Invalid {
                path: path.to_path_buf(),
                line: 0,
                message: "ed25519 is not a valid public key".into(),
            }
        })?;
        if verify.is_weak() {
            return Err(SpaError::Invalid {
                path: path.to_path_buf(),
                line: 0,
                message: "ed25519 is a weak (small-order) key".into(),
            });
        }
        Ok(ClientRecord {
            name,
            x: key32(&x, "x25519", path)?,
            verify,
        })
    }

    pub fn read(path: &Path) -> Result<ClientRecord, SpaError> {
        ClientRecord::parse(&read(path)?, path)
    }
}

/// A client's secret keys and the server's public key: the file `knock --spa` reads.
#[derive(Clone)]
pub struct ClientKey {
    pub name: String,
    x: StaticSecret,
    sign: SigningKey,
    pub server_x: [u8; 32],
}

impl fmt::Debug for ClientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientKey")
            .field("name", &self.name)
            .field("secret", &"<hidden>")
            .finish()
    }
}

impl ClientKey {
    pub fn generate(name: &str, server_x: [u8; 32]) -> Result<ClientKey, SpaError> {
        if !valid_name(name) {
            return Err(SpaError::Name(name.to_string()));
        }
        Ok(ClientKey::from_bytes(
            name,
            random32()?,
            random32()?,
            server_x,
        ))
    }

    pub fn from_bytes(name: &str, x: [u8; 32], sign: [u8; 32], server_x: [u8; 32]) -> ClientKey {
        ClientKey {
            name: name.to_string(),
            x: StaticSecret::from(x),
            sign: SigningKey::from_bytes(&sign),
            server_x,
        }
    }

    /// The public record the server keeps.
    pub fn record(&self) -> ClientRecord {
        ClientRecord {
            name: self.name.clone(),
            x: PublicKey::from(&self.x).to_bytes(),
            verify: self.sign.verifying_key(),
        }
    }

    pub fn session(&self) -> Result<SessionKeys, SpaError> {
        let shared = self.x.diffie_hellman(&PublicKey::from(self.server_x));
        if !shared.was_contributory() {
            return Err(SpaError::LowOrder(self.name.clone()));
        }
        Ok(SessionKeys::derive(
            shared.as_bytes(),
            &PublicKey::from(&self.x).to_bytes(),
            &self.server_x,
        ))
    }

    /// A packet for `body` with `nonce` (pass [`random_nonce`] outside tests).
    pub fn packet(
        &self,
        body: &Body,
        nonce: &[u8; NONCE_LEN],
    ) -> Result<[u8; PACKET_LEN], SpaError> {
        Ok(seal(
            &self.session()?,
            &self.sign,
            &self.server_x,
            body,
            nonce,
        ))
    }

    pub fn render(&self) -> String {
        format!(
            "# knock --spa key of client '{}', made by `knockd --new-client`.\n\
             # Keep it private (mode 0600): whoever holds it opens what '{}' may open.\n\
             # Use: knock --spa <this file> HOST\n\
             version = 1\n\
             name = {}\n\
             server = {}\n\
             x25519-secret = {}\n\
             ed25519-secret = {}\n",
            self.name,
            self.name,
            self.name,
            BASE64.encode(&self.server_x),
            BASE64.encode(self.x.as_bytes()),
            BASE64.encode(self.sign.as_bytes())
        )
    }

    pub fn parse(text: &str, path: &Path) -> Result<ClientKey, SpaError> {
        let [name, server, x, e] = fields(
            text,
            path,
            ["name", "server", "x25519-secret", "ed25519-secret"],
        )?;
        if !valid_name(&name) {
            return Err(SpaError::Name(name));
        }
        Ok(ClientKey::from_bytes(
            &name,
            key32(&x, "x25519-secret", path)?,
            key32(&e, "ed25519-secret", path)?,
            key32(&server, "server", path)?,
        ))
    }

    pub fn read(path: &Path) -> Result<ClientKey, SpaError> {
        ClientKey::parse(&read(path)?, path)
    }
}
