//! SIGINT and SIGTERM end a running node gracefully.
//!
//! signal-hook's iterator runs on a thread of its own and turns the first signal into
//! `Handle::stop`, which wakes the driver through its `mio::Waker`; the command then closes its
//! connections (`Driver::shutdown`) so peers see a close instead of waiting for an idle
//! timeout. A second signal exits at once. This reuses the driver's one door for other threads
//! instead of teaching the driver about signals.

use quicpeer::driver::Handle;

/// Exit status of a process ended by a second SIGINT.
#[cfg(unix)]
const EXIT_SIGNALLED: i32 = 130;

/// Stops the driver behind `handle` at the first SIGINT/SIGTERM; exits at the second.
#[cfg(unix)]
pub fn stop_on_termination<M: 'static>(handle: Handle<M>) -> std::io::Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let mut forever = signals.forever();
            if forever.next().is_some() {
                tracing::info!("signal received: closing connections");
                let _ = handle.stop();
            }
            if forever.next().is_some() {
                std::process::exit(EXIT_SIGNALLED);
            }
        })?;
    Ok(())
}

/// Elsewhere the process ends the platform's default way (no graceful close).
#[cfg(not(unix))]
pub fn stop_on_termination<M: 'static>(_handle: Handle<M>) -> std::io::Result<()> {
    Ok(())
}
