//! Signatures of what crosses Kafka between analyzers and the CLI: operator
//! commands (`glasshouse.control`), baseline snapshots
//! (`glasshouse.baselines`) and alerts (`glasshouse.alerts`). Anyone with
//! access to the broker can write to those topics; only holders of the
//! control key (`control_key_file`, shared by the analyzers and the operators'
//! CLI) can sign.
//!
//! A signature is HMAC-SHA256 over the topic, the message key and the value,
//! each length-prefixed, sent hex-encoded in the `glasshouse-signature`
//! header. Binding topic and key means a signed snapshot of one workload
//! cannot be replayed as another's, nor an alert as a command.

use std::path::{Path, PathBuf};

use ring::hmac;

/// The header that carries the signature.
pub const HEADER: &str = "glasshouse-signature";

/// Fewest bytes a key file must hold (after trimming whitespace).
pub const MIN_KEY_BYTES: usize = 32;

/// Why a key file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("control key file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "control key file {path}: {len} bytes, at least {MIN_KEY_BYTES} needed (e.g. `head -c 32 /dev/urandom | base64`)"
    )]
    Short { path: PathBuf, len: usize },
}

/// Why a message was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Unverified {
    #[error("not signed")]
    Unsigned,
    #[error("bad signature")]
    Forged,
}

/// The shared control key.
#[derive(Clone)]
pub struct Key(hmac::Key);

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(..)")
    }
}

impl Key {
    /// A key from its secret bytes.
    pub fn new(secret: &[u8]) -> Key {
        Key(hmac::Key::new(hmac::HMAC_SHA256, secret))
    }

    /// The key in `path`: its content without surrounding whitespace.
    pub fn from_file(path: &Path) -> Result<Key, KeyError> {
        let text = std::fs::read(path).map_err(|source| KeyError::Read {
            path: path.into(),
            source,
        })?;
        let secret = text.trim_ascii();
        if secret.len() < MIN_KEY_BYTES {
            return Err(KeyError::Short {
                path: path.into(),
                len: secret.len(),
            });
        }
        Ok(Key::new(secret))
    }

    fn context(&self, topic: &str, key: &[u8]) -> hmac::Context {
        let mut c = hmac::Context::with_key(&self.0);
        c.update(&(topic.len() as u64).to_be_bytes());
        c.update(topic.as_bytes());
        c.update(&(key.len() as u64).to_be_bytes());
        c.update(key);
        c
    }

    /// The signature (hex) of `value` sent to `topic` under `key`.
    pub fn sign(&self, topic: &str, key: &[u8], value: &[u8]) -> String {
        let mut c = self.context(topic, key);
        c.update(&(value.len() as u64).to_be_bytes());
        c.update(value);
        hex(c.sign().as_ref())
    }

    /// Checks `signature` (the header's value, if any) of `value`.
    pub fn verify(&self, topic: &str, key: &[u8], value: &[u8], signature: Option<&[u8]>) -> Result<(), Unverified> {
        let signature = signature.ok_or(Unverified::Unsigned)?;
        let tag = unhex(signature).ok_or(Unverified::Forged)?;
        let mut msg = Vec::with_capacity(32 + topic.len() + key.len() + value.len());
        for part in [topic.as_bytes(), key, value] {
            msg.extend_from_slice(&(part.len() as u64).to_be_bytes());
            msg.extend_from_slice(part);
        }
        // Constant-time comparison inside ring.
        hmac::verify(&self.0, &msg, &tag).map_err(|_| Unverified::Forged)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &[u8]) -> Option<Vec<u8>> {
    if text.len() != 64 {
        return None;
    }
    text.chunks(2)
        .map(|pair| {
            std::str::from_utf8(pair)
                .ok()
                .and_then(|p| u8::from_str_radix(p, 16).ok())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_bind_topic_key_and_value() {
        let k = Key::new(&[7; 32]);
        let s = k.sign("t", b"w", b"v");
        assert_eq!(s.len(), 64);
        assert_eq!(k.verify("t", b"w", b"v", Some(s.as_bytes())), Ok(()));
        assert_eq!(k.verify("t", b"w", b"v", None), Err(Unverified::Unsigned));
        assert_eq!(k.verify("t", b"w", b"v2", Some(s.as_bytes())), Err(Unverified::Forged));
        assert_eq!(k.verify("t", b"x", b"v", Some(s.as_bytes())), Err(Unverified::Forged));
        assert_eq!(k.verify("u", b"w", b"v", Some(s.as_bytes())), Err(Unverified::Forged));
        // Boundaries are length-prefixed: moving a byte from key to value differs.
        assert_eq!(
            k.verify("t", b"", b"wv", Some(k.sign("t", b"w", b"v").as_bytes())),
            Err(Unverified::Forged)
        );
        assert_eq!(k.verify("t", b"w", b"v", Some(b"zz")), Err(Unverified::Forged));
        let other = Key::new(&[8; 32]);
        assert_eq!(
            other.verify("t", b"w", b"v", Some(s.as_bytes())),
            Err(Unverified::Forged)
        );
    }

    #[test]
    fn key_files_are_checked() {
        let dir = std::env::temp_dir().join(format!("gh-key-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let short = dir.join("short");
        std::fs::write(&short, "tooshort\n").unwrap();
        let e = Key::from_file(&short).unwrap_err().to_string();
        assert!(e.contains("8 bytes, at least 32"), "{e}");
        let good = dir.join("good");
        std::fs::write(&good, format!("{}\n", "k".repeat(44))).unwrap();
        let a = Key::from_file(&good).unwrap();
        assert_eq!(
            a.verify(
                "t",
                b"",
                b"v",
                Some(Key::new("k".repeat(44).as_bytes()).sign("t", b"", b"v").as_bytes())
            ),
            Ok(())
        );
        assert!(
            Key::from_file(&dir.join("missing"))
                .unwrap_err()
                .to_string()
                .contains("missing")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
