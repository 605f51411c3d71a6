//! [`Driver::spawn`]: a driver on a thread of its own, steered through its [`Handle`].

use std::fmt;
use std::io;
use std::thread::{self, JoinHandle};

use super::{Context, Driver, DriverError, Handle};
use crate::SansIo;

/// A [`Driver`] running on a thread of its own, from [`Driver::spawn`].
///
/// Commands go in through [`DriverThread::handle`]. [`DriverThread::stop`] ends the run and
/// gives the driver back (its machine, its counters, a [`Driver::shutdown`] to close the
/// connections gracefully). Dropping a `DriverThread` stops the run too and drops the driver
/// without closing anything: a crash, as far as the peers can tell.
pub struct DriverThread<M: SansIo> {
    handle: Handle<M>,
    thread: Option<JoinHandle<Stopped<M>>>,
}

/// What a [`DriverThread`] gives back: the driver, and how its run ended.
pub type Stopped<M> = (Driver<M>, Result<(), DriverError>);

impl<M: SansIo + Send + 'static> Driver<M> {
    /// Runs the driver on a new thread (named `quicpeer-driver`) until [`Handle::stop`],
    /// [`Context::stop`] or a driver error, each event going to `on_event` on that thread.
    /// `Err` if the thread cannot be started.
    ///
    /// ```no_run
    /// use std::sync::mpsc;
    /// use std::time::{Duration, Instant, SystemTime};
    /// use quicpeer::driver::Driver;
    /// use quicpeer::{Config, Event, Identity, Manager};
    ///
    /// let identity = Identity::from_ed25519_seed([1; 32]);
    /// let manager = Manager::new(Instant::now(), SystemTime::now(), identity, Config::default(), rand::random())?;
    /// let driver = Driver::bind(manager, &["127.0.0.1:4001".parse()?])?;
    /// let node = driver.spawn(|_, event| {
    ///     if let Event::Connected { peer, .. } = event {
    ///         println!("{peer} connected");
    ///     }
    /// })?;
    /// // A command runs on the driver's thread; one that answers does so on a channel.
    /// let (tx, rx) = mpsc::channel();
    /// node.handle().execute(move |manager, _now| {
    ///     let _ = tx.send(manager.connection_count());
    /// })?;
    /// println!("{} connection(s)", rx.recv()?);
    /// // Later: stop the run, take the driver back and close the connections.
    /// let (mut driver, run) = node.stop().expect("the driver's thread panicked");
    /// run?;
    /// driver.shutdown(Duration::from_secs(1), |_, _| {})?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn spawn(
        mut self,
        on_event: impl FnMut(&mut Context<'_, M>, M::Event) + Send + 'static,
    ) -> io::Result<DriverThread<M>> {
        let handle = self.handle();
        let thread = thread::Builder::new()
            .name("quicpeer-driver".into())
            .spawn(move || {
                let run = self.run(on_event);
                (self, run)
            })?;
        Ok(DriverThread {
            handle,
            thread: Some(thread),
        })
    }
}

impl<M: SansIo> DriverThread<M> {
    /// The door into the running driver: commands ([`Handle::execute`]), clones for other
    /// threads.
    pub fn handle(&self) -> &Handle<M> {
        &self.handle
    }

    /// Stops the run (if it has not ended by itself) and waits for the thread. Returns the
    /// driver and how its run ended, or the thread's panic.
    pub fn stop(mut self) -> thread::Result<Stopped<M>> {
        let thread = self
            .thread
            .take()
            .expect("only stop and drop take the thread");
        // The driver owns its receiver until the thread ends, so the stop is delivered; if
        // the wake-up failed, the run sees it at its next wake-up (a timer, a datagram).
        let _ = self.handle.stop();
        thread.join()
    }
}

impl<M: SansIo> fmt::Debug for DriverThread<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DriverThread").finish_non_exhaustive()
    }
}

impl<M: SansIo> Drop for DriverThread<M> {
    fn drop(&mut self) {
        if let Some(thread) = self.thread.take() {
            let _ = self.handle.stop();
            let _ = thread.join();
        }
    }
}
