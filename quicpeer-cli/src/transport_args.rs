//! `--idle-timeout-ms`, `--keep-alive-ms`, `--random-keys`: the transport knobs a command that
//! runs a node shares, so two terminals can reproduce what `quicpeer demo` shows.

use std::time::Duration;

use quicpeer::{Config, KeyMode};

use crate::UsageError;

/// Transport settings of a node.
#[derive(Debug, Clone, clap::Args)]
pub struct TransportArgs {
    /// Idle timeout negotiated with peers, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 10_000)]
    idle_timeout_ms: u64,
    /// Keep-alive interval in milliseconds (0: none).
    #[arg(long, value_name = "MS", default_value_t = 5_000)]
    keep_alive_ms: u64,
    /// Use random per-process restart keys, as quinn does by default, instead of keys derived
    /// from the identity: a restart of this node then goes unnoticed until the idle timeout.
    #[arg(long)]
    random_keys: bool,
}

impl TransportArgs {
    /// The manager configuration these settings describe.
    pub fn config(&self) -> Result<Config, UsageError> {
        if self.idle_timeout_ms == 0 {
            return Err(UsageError("--idle-timeout-ms must be positive".into()));
        }
        let mut config = Config::default();
        config.idle_timeout = Duration::from_millis(self.idle_timeout_ms);
        config.keep_alive =
            (self.keep_alive_ms > 0).then(|| Duration::from_millis(self.keep_alive_ms));
        if self.random_keys {
            config.keys = KeyMode::RandomPerProcess;
        }
        Ok(config)
    }
}
