//! A stop signal that ends load runs early and keeps what they measured.
//!
//! The CLI raises it on the first Ctrl-C. A run whose client has the raised signal stops
//! sending, keeps every row that has already arrived, abandons the requests still in flight, and
//! returns its rows marked as interrupted. A sweep then runs no further levels.

use tokio::sync::watch;

/// A shared flag that requests running loads to stop. Clones share the flag.
#[derive(Debug, Clone)]
pub struct StopSignal {
    sender: std::sync::Arc<watch::Sender<bool>>,
}

impl Default for StopSignal {
    fn default() -> Self {
        Self::new()
    }
}

impl StopSignal {
    /// Creates a signal that has not been raised.
    pub fn new() -> Self {
        Self {
            sender: std::sync::Arc::new(watch::Sender::new(false)),
        }
    }

    /// Raises the signal: every run of a client holding it stops at once.
    pub fn stop(&self) {
        self.sender.send_replace(true);
    }

    /// Returns whether the signal has been raised.
    pub fn is_stopped(&self) -> bool {
        *self.sender.borrow()
    }

    /// Completes once the signal is raised.
    pub async fn stopped(&self) {
        let mut receiver = self.sender.subscribe();
        // `self` owns the sender, so the channel stays open and waiting cannot fail.
        let _ = receiver.wait_for(|stopped| *stopped).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stop_wakes_every_waiter() {
        let signal = StopSignal::new();
        assert!(!signal.is_stopped());
        let waiters: Vec<_> = (0..3)
            .map(|_| {
                let signal = signal.clone();
                tokio::spawn(async move { signal.stopped().await })
            })
            .collect();
        signal.stop();
        for waiter in waiters {
            tokio::time::timeout(std::time::Duration::from_secs(10), waiter)
                .await
                .expect("a raised signal wakes its waiters")
                .unwrap();
        }
        assert!(signal.is_stopped());
        // Waiting on a signal raised earlier returns at once.
        signal.stopped().await;
    }
}
