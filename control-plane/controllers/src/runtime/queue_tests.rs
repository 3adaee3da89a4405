use super::*;

fn at(base: Instant, ms: u64) -> Instant {
    base + Duration::from_millis(ms)
}

#[test]
fn a_key_is_queued_once_and_handed_out_in_order() {
    let now = Instant::now();
    let mut q = QueueState::default();
    assert!(q.add("a"));
    assert!(q.add("b"));
    assert!(!q.add("a"), "a second add of a queued key is a no-op");
    assert_eq!(q.take(now), Some("a"));
    assert_eq!(q.take(now), Some("b"));
    assert_eq!(q.take(now), None);
}

#[test]
fn a_key_changed_while_processing_is_processed_again_after_done_never_concurrently() {
    let now = Instant::now();
    let mut q = QueueState::default();
    q.add("a");
    assert_eq!(q.take(now), Some("a"));
    assert!(
        !q.add("a"),
        "not handed to a second worker while the first holds it"
    );
    assert_eq!(q.take(now), None);
    assert!(q.done(&"a"), "back to the ready list once done");
    assert_eq!(q.take(now), Some("a"));
    assert!(!q.done(&"a"), "done without a change: gone");
    assert!(q.is_empty());
}

#[test]
fn delayed_keys_wait_for_their_time_and_the_earliest_delay_wins() {
    let now = Instant::now();
    let mut q = QueueState::default();
    q.add_at("a", at(now, 100), now);
    q.add_at("a", at(now, 50), now);
    q.add_at("a", at(now, 80), now);
    assert_eq!(q.next_due(), Some(at(now, 50)));
    assert_eq!(q.take(at(now, 49)), None);
    assert_eq!(q.take(at(now, 50)), Some("a"));
    assert_eq!(q.next_due(), None);
}

#[test]
fn a_delayed_key_that_is_also_queued_now_is_processed_once_when_due() {
    let now = Instant::now();
    let mut q = QueueState::default();
    q.add("a");
    q.add_at("a", at(now, 10), now);
    assert_eq!(q.take(at(now, 20)), Some("a"));
    assert_eq!(q.take(at(now, 20)), None);
}

#[test]
fn backoff_doubles_from_5ms_up_to_1000s_and_forget_resets_it() {
    let mut backoff = Backoff::default();
    let delays: Vec<Duration> = (0..4).map(|_| backoff.next_delay(&"k")).collect();
    assert_eq!(delays, [5, 10, 20, 40].map(Duration::from_millis).to_vec());
    assert_eq!(
        backoff.next_delay(&"other"),
        Duration::from_millis(5),
        "per key"
    );
    for _ in 0..40 {
        backoff.next_delay(&"k");
    }
    assert_eq!(backoff.next_delay(&"k"), Duration::from_secs(1000));
    backoff.forget(&"k");
    assert_eq!(backoff.failures(&"k"), 0);
    assert_eq!(backoff.next_delay(&"k"), Duration::from_millis(5));
}

#[tokio::test]
async fn workers_wait_for_a_delayed_key_and_stop_on_cancel() {
    let queue = WorkQueue::<&str>::default();
    let token = CancellationToken::new();
    queue.add_after("a", Duration::from_millis(30));
    let started = Instant::now();
    assert_eq!(queue.next(&token).await, Some("a"));
    assert!(started.elapsed() >= Duration::from_millis(30));
    queue.done(&"a");
    let waiting = queue.next(&token);
    token.cancel();
    assert_eq!(waiting.await, None);
}

#[tokio::test]
async fn an_add_wakes_a_waiting_worker() {
    let queue = std::sync::Arc::new(WorkQueue::<&str>::default());
    let token = CancellationToken::new();
    let worker = {
        let queue = queue.clone();
        let token = token.clone();
        tokio::spawn(async move { queue.next(&token).await })
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    queue.add("b");
    let got = tokio::time::timeout(Duration::from_secs(5), worker)
        .await
        .expect("woken")
        .expect("join");
    assert_eq!(got, Some("b"));
}
