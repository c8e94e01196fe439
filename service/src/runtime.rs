//! Blocking calls from async code.
//!
//! librdkafka's transaction calls (`commit_transaction` flushes and waits
//! for the coordinator) and a catch-up read of a topic block their thread
//! for up to their timeout. Made from a task, they would stall every other
//! task on that worker: another service's requests in the same process, a
//! metrics scrape, the shutdown signal.

use tokio::runtime::{Handle, RuntimeFlavor};

/// Runs blocking `f` without stalling the runtime's other tasks.
///
/// On a multi-thread runtime the worker first hands its other tasks to a
/// fresh thread ([`tokio::task::block_in_place`]); code running in the same
/// task (beside it in a `join!`) still waits, as it would anyway. On a
/// current-thread runtime there is no other worker to hand them to, and
/// outside a runtime nothing to hand: `f` just runs. Not for use inside a
/// `LocalSet` on a multi-thread runtime (tokio refuses to block there).
///
/// ```
/// let answer = hushmap_service::runtime::blocking(|| 6 * 7);
/// assert_eq!(answer, 42);
/// ```
pub fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_on_every_flavour_and_outside() {
        assert_eq!(blocking(|| 1), 1);
        let current = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        assert_eq!(current.block_on(async { blocking(|| 2) }), 2);
        let multi = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .build()
            .unwrap();
        assert_eq!(multi.block_on(async { blocking(|| 3) }), 3);
        let spawned = multi.block_on(async { tokio::spawn(async { blocking(|| 4) }).await });
        assert_eq!(spawned.unwrap(), 4);
    }
}
