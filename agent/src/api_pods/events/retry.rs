//! The recorder's decisions, apart from the I/O: what a failed request means (retry with a
//! back-off, create instead of patch, or drop), the back-off delays, and the bounded queue of
//! events waiting while the apiserver is away.
//!
//! Upstream's recorder holds everything while the apiserver cannot be reached and gives up on
//! an event the apiserver refuses; here a busy or failing apiserver (429, 5xx) is waited for
//! too, and the wait is not limited to a number of tries but by the queue's size.

use std::collections::VecDeque;
use std::time::Duration;

/// How many events may wait for the apiserver; beyond it the oldest are dropped.
pub(super) const MAX_WAITING: usize = 1024;
/// The first pause after a failure.
pub(super) const FIRST_DELAY: Duration = Duration::from_millis(500);
/// The longest pause between tries.
pub(super) const MAX_DELAY: Duration = Duration::from_secs(10);

/// How a request failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Failure {
    /// The apiserver answered with this HTTP status.
    Status(u16),
    /// No answer: connection refused or reset, TLS, timeout.
    Unreachable,
    /// The request could not be built or the answer not read: trying again cannot help.
    Broken,
}

impl Failure {
    pub(super) fn of(err: &kube::Error) -> Self {
        match err {
            kube::Error::Api(status) => Self::Status(status.code),
            kube::Error::HyperError(_)
            | kube::Error::Service(_)
            | kube::Error::HttpError(_)
            | kube::Error::RustlsTls(_)
            | kube::Error::ReadEvents(_)
            | kube::Error::Auth(_) => Self::Unreachable,
            _ => Self::Broken,
        }
    }
}

/// What was being sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Sent {
    Create,
    Patch,
}

/// What to do after a failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Next {
    /// Send the same request again after a pause.
    Retry,
    /// The patched Event is gone (expired): create it.
    CreateInstead,
    /// The Event is already there (409): nothing left to do.
    AlreadyRecorded,
    /// The apiserver refuses the event (or it cannot be sent): drop it.
    Drop,
}

/// The decision after `sent` failed with `failure`.
pub(super) fn after_failure(sent: Sent, failure: Failure) -> Next {
    match (sent, failure) {
        (_, Failure::Unreachable) => Next::Retry,
        (_, Failure::Broken) => Next::Drop,
        (_, Failure::Status(429 | 500..=599)) => Next::Retry,
        (Sent::Patch, Failure::Status(404)) => Next::CreateInstead,
        (_, Failure::Status(409)) => Next::AlreadyRecorded,
        (_, Failure::Status(_)) => Next::Drop,
    }
}

/// The pause before the next try: [`FIRST_DELAY`], doubling up to [`MAX_DELAY`].
pub(super) fn next_delay(previous: Option<Duration>) -> Duration {
    previous.map_or(FIRST_DELAY, |d| d.saturating_mul(2).min(MAX_DELAY))
}

/// Events waiting to be sent, in order, at most `capacity`.
#[derive(Debug)]
pub(super) struct Waiting<T> {
    items: VecDeque<T>,
    capacity: usize,
}

impl<T> Default for Waiting<T> {
    fn default() -> Self {
        Self::with_capacity(MAX_WAITING)
    }
}

impl<T> Waiting<T> {
    pub(super) fn with_capacity(capacity: usize) -> Self {
        Self {
            items: VecDeque::new(),
            capacity: capacity.max(1),
        }
    }

    /// Queues `item`; returns the oldest one if it had to make room.
    pub(super) fn push(&mut self, item: T) -> Option<T> {
        let dropped = if self.items.len() >= self.capacity {
            self.items.pop_front()
        } else {
            None
        };
        self.items.push_back(item);
        dropped
    }

    pub(super) fn pop(&mut self) -> Option<T> {
        self.items.pop_front()
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.items.len()
    }

    #[cfg(test)]
    pub(super) fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_decide_retry_create_or_drop() {
        use Failure::{Broken, Status, Unreachable};
        use Next::{AlreadyRecorded, CreateInstead, Drop, Retry};
        let cases = [
            (Sent::Create, Unreachable, Retry),
            (Sent::Patch, Unreachable, Retry),
            (Sent::Create, Status(500), Retry),
            (Sent::Create, Status(503), Retry),
            (Sent::Patch, Status(504), Retry),
            (Sent::Create, Status(429), Retry),
            (Sent::Patch, Status(404), CreateInstead),
            (Sent::Create, Status(404), Drop),
            (Sent::Create, Status(409), AlreadyRecorded),
            (Sent::Create, Status(400), Drop),
            (Sent::Create, Status(403), Drop),
            (Sent::Create, Status(422), Drop),
            (Sent::Patch, Status(422), Drop),
            (Sent::Create, Broken, Drop),
        ];
        for (sent, failure, next) in cases {
            assert_eq!(after_failure(sent, failure), next, "{sent:?} {failure:?}");
        }
    }

    #[test]
    fn the_delay_doubles_from_half_a_second_to_ten() {
        let mut delay = None;
        let mut seen = Vec::new();
        for _ in 0..8 {
            let d = next_delay(delay);
            seen.push(d.as_millis());
            delay = Some(d);
        }
        assert_eq!(seen, [500, 1000, 2000, 4000, 8000, 10000, 10000, 10000]);
    }

    #[test]
    fn the_queue_keeps_order_and_drops_the_oldest() {
        let mut q = Waiting::with_capacity(3);
        let dropped: Vec<Option<i32>> = (1..=5).map(|i| q.push(i)).collect();
        assert_eq!(dropped, [None, None, None, Some(1), Some(2)]);
        assert_eq!(q.len(), 3);
        let rest: Vec<i32> = std::iter::from_fn(|| q.pop()).collect();
        assert_eq!(rest, [3, 4, 5]);
        assert!(q.is_empty());
    }
}
