//! Lock helpers.

use std::sync::{Mutex, MutexGuard};

/// Locks `mutex`, ignoring poisoning.
///
/// A device's state stays consistent across a panic in another thread that
/// held the lock (every update is a plain register store), and a guest access
/// must never turn an unrelated panic into a second one in the VMM.
pub(crate) fn lock<T: ?Sized>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
