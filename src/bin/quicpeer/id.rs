//! `quicpeer id`: print the PeerId of an identity.

use std::process::ExitCode;

use crate::identity_args::IdentityArgs;
use crate::UsageError;

/// Arguments of `quicpeer id`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    identity: IdentityArgs,
}

pub fn run(args: &Args) -> Result<ExitCode, UsageError> {
    println!("{}", args.identity.load()?.peer_id());
    Ok(ExitCode::SUCCESS)
}
