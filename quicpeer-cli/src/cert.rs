//! `quicpeer cert`: libp2p TLS certificates.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::SystemTime;

use quicpeer::identity::verify_certificate;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::output::{Json, Output};
use crate::UsageError;

/// Subcommands of `quicpeer cert`.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Verify a certificate as a libp2p peer would and print the PeerId it proves
    /// (`peer_id <ID>`, exit 0) or why it is rejected (`rejected: <reason>`, exit 1).
    Inspect {
        /// The certificate: DER, PEM, or hex.
        file: PathBuf,
        /// Verify at this time (RFC 3339, e.g. 2026-01-01T00:00:00Z) instead of now.
        #[arg(long, value_name = "RFC3339", value_parser = parse_time)]
        at: Option<SystemTime>,
    },
}

pub fn run(command: &Command, out: Output) -> Result<ExitCode, UsageError> {
    let Command::Inspect { file, at } = command;
    let bytes = std::fs::read(file)
        .map_err(|e| UsageError(format!("cannot read {}: {e}", file.display())))?;
    let der = decode(&bytes).map_err(|e| UsageError(format!("{}: {e}", file.display())))?;
    match verify_certificate(at.unwrap_or_else(SystemTime::now), &der) {
        Ok(peer) => {
            let peer_id = peer.peer_id.to_string();
            out.emit(
                std::time::Instant::now(),
                Json::event("certificate")
                    .bool("valid", true)
                    .str("peer_id", &peer_id),
                || format!("peer_id {peer_id}"),
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(error) => {
            out.emit(
                std::time::Instant::now(),
                Json::event("certificate")
                    .bool("valid", false)
                    .str("rejected", &error.to_string()),
                || format!("rejected: {error}"),
            );
            Ok(ExitCode::FAILURE)
        }
    }
}

fn parse_time(text: &str) -> Result<SystemTime, String> {
    OffsetDateTime::parse(text, &Rfc3339)
        .map(SystemTime::from)
        .map_err(|e| format!("not an RFC 3339 time: {e}"))
}

/// The DER inside a PEM or hex file; any other content is taken as DER.
fn decode(bytes: &[u8]) -> Result<Vec<u8>, String> {
    let text = std::str::from_utf8(bytes)
        .map(str::trim)
        .unwrap_or_default();
    if text.starts_with("-----BEGIN") {
        let (_, pem) = x509_parser::pem::parse_x509_pem(text.as_bytes())
            .map_err(|e| format!("bad PEM: {e}"))?;
        if pem.label != "CERTIFICATE" {
            return Err(format!("the PEM holds a {}, not a CERTIFICATE", pem.label));
        }
        return Ok(pem.contents);
    }
    let hex_digits: String = text.split_ascii_whitespace().collect();
    if !hex_digits.is_empty() && hex_digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return hex::decode(&hex_digits).map_err(|e| format!("bad hex: {e}"));
    }
    Ok(bytes.to_vec())
}

#[cfg(test)]
mod tests {
    use super::decode;

    #[test]
    fn decodes_der_pem_and_hex() {
        let der = vec![0x30, 0x03, 0x02, 0x01, 0x07];
        assert_eq!(decode(&der), Ok(der.clone()));
        assert_eq!(decode(b"30 03 02\n01 07\n"), Ok(der.clone()));
        let pem = "-----BEGIN CERTIFICATE-----\nMAMCAQc=\n-----END CERTIFICATE-----\n";
        assert_eq!(decode(pem.as_bytes()), Ok(der));
        assert!(
            decode(b"-----BEGIN PRIVATE KEY-----\nMAMCAQc=\n-----END PRIVATE KEY-----\n").is_err()
        );
    }
}
