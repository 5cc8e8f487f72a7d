//! A device event loop: one thread running an event-manager epoll loop over its devices'
//! events (queue notifications, host-side sockets), until told to stop. A VM has one for
//! its devices, and one more for its shared directory, whose host I/O (an fsync, a large
//! write) must not hold up the network and the agent's channel.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use event_manager::{EventManager, MutEventSubscriber, SubscriberOps};

/// A device that handles its events on the loop.
pub type Subscriber = Arc<Mutex<dyn MutEventSubscriber + Send>>;

/// How long one epoll wait lasts before the stop flag is checked again.
const POLL_MS: i32 = 50;

/// The running loop.
pub struct EventLoop {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<Result<(), String>>>,
}

impl EventLoop {
    /// Starts the loop with `subscribers` on a thread called `name`.
    pub fn spawn(name: &str, subscribers: Vec<Subscriber>) -> std::io::Result<Self> {
        let mut manager = EventManager::<Subscriber>::new()
            .map_err(|e| std::io::Error::other(format!("cannot create the event loop: {e:?}")))?;
        for s in subscribers {
            manager.add_subscriber(s);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                while !flag.load(Ordering::SeqCst) {
                    manager
                        .run_with_timeout(POLL_MS)
                        .map_err(|e| format!("event loop failed: {e:?}"))?;
                }
                Ok(())
            })?;
        Ok(EventLoop {
            stop,
            handle: Some(handle),
        })
    }

    /// Tells the loop to stop, without waiting for it.
    pub fn request_stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    /// Stops the loop and waits for it; returns its error, if it failed.
    pub fn stop(&mut self) -> Result<(), String> {
        self.stop.store(true, Ordering::SeqCst);
        match self.handle.take() {
            Some(h) => h.join().map_err(|_| "the event loop panicked".to_owned())?,
            None => Ok(()),
        }
    }
}

impl Drop for EventLoop {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}
