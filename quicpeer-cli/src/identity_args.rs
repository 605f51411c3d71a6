//! `--seed` and `--key`: how a command picks the node's identity. Every command that runs a node
//! flattens [`IdentityArgs`] into its arguments.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use quicpeer::{Identity, Keypair};

use crate::UsageError;

/// At most one of `--seed` and `--key`; [`IdentityArgs::load`] requires one,
/// [`IdentityArgs::load_or_generate`] makes a fresh identity without.
#[derive(Debug, clap::Args)]
#[group(required = false, multiple = false)]
pub struct IdentityArgs {
    /// Ed25519 identity whose 32-byte secret is byte N repeated (N in 0..=255), or the given 64
    /// hex characters. For tests and demos: a seed is no secret.
    #[arg(long, value_name = "N|HEX64", value_parser = parse_seed)]
    seed: Option<[u8; 32]>,
    /// File with a libp2p protobuf-encoded keypair; a new Ed25519 one is created (mode 0600) if
    /// the file does not exist.
    #[arg(long, value_name = "FILE")]
    key: Option<PathBuf>,
}

impl IdentityArgs {
    /// The identity the arguments name, creating the key file if needed.
    pub fn load(&self) -> Result<Identity, UsageError> {
        match (&self.seed, &self.key) {
            (Some(seed), _) => Ok(Identity::from_ed25519_seed(*seed)),
            (None, Some(path)) => load_or_create(path).map(Identity::new),
            (None, None) => Err(UsageError("one of --seed and --key is required".into())),
        }
    }

    /// The identity the arguments name, or a fresh random Ed25519 one if they name none.
    pub fn load_or_generate(&self) -> Result<Identity, UsageError> {
        if self.seed.is_none() && self.key.is_none() {
            return Ok(Identity::new(Keypair::generate_ed25519()));
        }
        self.load()
    }
}

/// `N` (a decimal byte, repeated 32 times) or 64 hex characters.
fn parse_seed(text: &str) -> Result<[u8; 32], String> {
    let mut seed = [0; 32];
    if text.len() == 64 {
        hex::decode_to_slice(text, &mut seed).map_err(|e| format!("bad hex seed: {e}"))?;
    } else {
        let byte = text
            .parse::<u8>()
            .map_err(|_| "expected a number in 0..=255 or 64 hex characters".to_owned())?;
        seed = [byte; 32];
    }
    Ok(seed)
}

fn load_or_create(path: &Path) -> Result<Keypair, UsageError> {
    match fs::read(path) {
        Ok(bytes) => Keypair::from_protobuf_encoding(&bytes).map_err(|e| {
            UsageError(format!(
                "{}: not a libp2p protobuf keypair: {e}",
                path.display()
            ))
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => create(path)
            .map_err(|e| UsageError(format!("cannot create key file {}: {e}", path.display()))),
        Err(e) => Err(UsageError(format!(
            "cannot read key file {}: {e}",
            path.display()
        ))),
    }
}

/// Writes a new Ed25519 keypair to `path`, readable by its owner only.
fn create(path: &Path) -> io::Result<Keypair> {
    let keypair = Keypair::generate_ed25519();
    let encoded = keypair.to_protobuf_encoding().map_err(io::Error::other)?;
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(&encoded)?;
    file.sync_all()?;
    eprintln!("created a new Ed25519 identity in {}", path.display());
    Ok(keypair)
}

#[cfg(test)]
mod tests {
    use super::parse_seed;

    #[test]
    fn seeds() {
        assert_eq!(parse_seed("0"), Ok([0; 32]));
        assert_eq!(parse_seed("255"), Ok([255; 32]));
        assert_eq!(parse_seed(&"0b".repeat(32)), Ok([11; 32]));
        assert!(parse_seed("256").is_err());
        assert!(parse_seed("-1").is_err());
        assert!(parse_seed(&"zz".repeat(32)).is_err());
        assert!(parse_seed(&"0b".repeat(31)).is_err());
    }
}
