//! `quicpeer id`: print the PeerId of an identity.

use std::process::ExitCode;

use std::time::Instant;

use crate::identity_args::IdentityArgs;
use crate::output::{Json, Output};
use crate::UsageError;

/// Arguments of `quicpeer id`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    identity: IdentityArgs,
}

pub fn run(args: &Args, out: Output) -> Result<ExitCode, UsageError> {
    let peer_id = args.identity.load()?.peer_id().to_string();
    out.emit(
        Instant::now(),
        Json::event("peer_id").str("peer_id", &peer_id),
        || peer_id.clone(),
    );
    Ok(ExitCode::SUCCESS)
}
