//! Write thresholds (QMP `block-set-write-threshold`, event `BLOCK_WRITE_THRESHOLD`).
//!
//! A node's threshold is an offset: the first write (or write-zeroes, or discard)
//! reaching past it fires the graph's notifier once and disarms the threshold,
//! as QEMU does to avoid flooding the monitor. Arming is a store; checking is a
//! load, so writes to nodes without a threshold pay one atomic read.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

/// What `BLOCK_WRITE_THRESHOLD` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteThresholdEvent {
    /// The node whose threshold was passed.
    pub node_name: String,
    /// How far past the threshold the write reached (its end minus the threshold).
    pub amount_exceeded: u64,
    /// The threshold that was passed (now disarmed).
    pub write_threshold: u64,
}

/// Receives [`WriteThresholdEvent`]s; called on the I/O thread that did the write.
pub type WriteThresholdNotifier = Box<dyn Fn(WriteThresholdEvent) + Send + Sync>;

/// The graph's notifier, shared with its nodes.
#[derive(Default)]
pub(crate) struct NotifierSlot(RwLock<Option<WriteThresholdNotifier>>);

impl fmt::Debug for NotifierSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let set = self.0.read().map_or(true, |n| n.is_some());
        f.debug_tuple("NotifierSlot").field(&set).finish()
    }
}

impl NotifierSlot {
    /// Replaces the notifier.
    pub(crate) fn set(&self, notifier: Option<WriteThresholdNotifier>) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = notifier;
    }

    fn notify(&self, event: WriteThresholdEvent) {
        if let Some(notify) = &*self.0.read().unwrap_or_else(PoisonError::into_inner) {
            notify(event);
        }
    }
}

/// One node's threshold.
#[derive(Debug)]
pub(crate) struct WriteThreshold {
    node_name: String,
    /// The threshold in bytes; 0 when disarmed.
    offset: AtomicU64,
    notifier: Arc<NotifierSlot>,
}

impl WriteThreshold {
    /// A disarmed threshold for the node `node_name`.
    pub(crate) fn new(node_name: &str, notifier: &Arc<NotifierSlot>) -> Arc<Self> {
        Arc::new(WriteThreshold {
            node_name: node_name.to_string(),
            offset: AtomicU64::new(0),
            notifier: Arc::clone(notifier),
        })
    }

    /// The threshold (0: disarmed).
    pub(crate) fn get(&self) -> u64 {
        self.offset.load(Ordering::Relaxed)
    }

    /// Arms the threshold at `bytes`, or disarms it with 0.
    pub(crate) fn set(&self, bytes: u64) {
        self.offset.store(bytes, Ordering::Relaxed);
    }

    /// A write ending at `end` reached the node: fires and disarms if it passes the threshold.
    pub(crate) fn check(&self, end: u64) {
        let threshold = self.get();
        if threshold == 0 || end <= threshold {
            return;
        }
        // Only the writer that disarms it reports, so concurrent writers fire once.
        let disarmed = self
            .offset
            .compare_exchange(threshold, 0, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok();
        if disarmed {
            self.notifier.notify(WriteThresholdEvent {
                node_name: self.node_name.clone(),
                amount_exceeded: end - threshold,
                write_threshold: threshold,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn fires_once_past_the_threshold_and_disarms() {
        let slot = Arc::new(NotifierSlot::default());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&seen);
        slot.set(Some(Box::new(move |e| sink.lock().unwrap().push(e))));
        let t = WriteThreshold::new("disk0", &slot);
        t.check(1 << 30);
        t.set(4096);
        t.check(4096);
        assert!(
            seen.lock().unwrap().is_empty(),
            "ending at the threshold does not pass it"
        );
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| t.check(5000));
            }
        });
        assert_eq!(
            *seen.lock().unwrap(),
            [WriteThresholdEvent {
                node_name: "disk0".into(),
                amount_exceeded: 904,
                write_threshold: 4096,
            }]
        );
        assert_eq!(t.get(), 0);
        t.check(1 << 40);
        assert_eq!(seen.lock().unwrap().len(), 1);
    }
}
