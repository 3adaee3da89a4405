use super::*;

fn ts(second: i64) -> Timestamp {
    Timestamp::from_second(1_700_000_000 + second).expect("time")
}

fn held_by(holder: &str, transitions: i32) -> LeaseSpec {
    LeaseSpec {
        holder_identity: Some(holder.into()),
        lease_duration_seconds: Some(15),
        acquire_time: Some(MicroTime(ts(0))),
        renew_time: Some(MicroTime(ts(0))),
        lease_transitions: Some(transitions),
        ..LeaseSpec::default()
    }
}

const FIFTEEN: Duration = Duration::from_secs(15);

#[test]
fn a_missing_or_empty_lease_is_taken_at_once() {
    let start = Instant::now();
    let mut observed = Observed::default();
    observed.record(None, start);
    let spec = plan_lease(&observed, "me", FIFTEEN, ts(1), start).expect("taken");
    assert_eq!(spec.holder_identity.as_deref(), Some("me"));
    assert_eq!(spec.lease_duration_seconds, Some(15));
    assert_eq!(spec.acquire_time, Some(MicroTime(ts(1))));
    assert_eq!(spec.lease_transitions, Some(0), "no previous holder");

    let released = LeaseSpec {
        holder_identity: None,
        lease_transitions: Some(3),
        ..LeaseSpec::default()
    };
    observed.record(Some(&released), start);
    let spec = plan_lease(&observed, "me", FIFTEEN, ts(1), start).expect("taken");
    assert_eq!(
        spec.lease_transitions,
        Some(3),
        "released: not a transition"
    );
}

#[test]
fn a_lease_another_holder_renews_is_not_taken_until_it_lapses_on_our_clock() {
    let start = Instant::now();
    let mut observed = Observed::default();
    observed.record(Some(&held_by("other", 2)), start);
    assert_eq!(
        plan_lease(
            &observed,
            "me",
            FIFTEEN,
            ts(5),
            start + Duration::from_secs(14)
        ),
        None
    );
    // The holder renews: the record changes, the clock restarts.
    let mut renewed = held_by("other", 2);
    renewed.renew_time = Some(MicroTime(ts(14)));
    observed.record(Some(&renewed), start + Duration::from_secs(14));
    assert_eq!(
        plan_lease(
            &observed,
            "me",
            FIFTEEN,
            ts(20),
            start + Duration::from_secs(20)
        ),
        None,
        "renewed 6 s ago"
    );
    // Unchanged records do not restart it.
    observed.record(Some(&renewed), start + Duration::from_secs(25));
    let spec = plan_lease(
        &observed,
        "me",
        FIFTEEN,
        ts(30),
        start + Duration::from_secs(30),
    )
    .expect("lapsed 16 s after the last change");
    assert_eq!(spec.holder_identity.as_deref(), Some("me"));
    assert_eq!(spec.acquire_time, Some(MicroTime(ts(30))));
    assert_eq!(spec.lease_transitions, Some(3));
}

#[test]
fn the_holder_renews_keeping_its_acquire_time_and_transitions() {
    let start = Instant::now();
    let mut observed = Observed::default();
    observed.record(Some(&held_by("me", 4)), start);
    let spec = plan_lease(
        &observed,
        "me",
        FIFTEEN,
        ts(9),
        start + Duration::from_secs(60),
    )
    .expect("renewed even when late");
    assert_eq!(spec.renew_time, Some(MicroTime(ts(9))));
    assert_eq!(spec.acquire_time, Some(MicroTime(ts(0))));
    assert_eq!(spec.lease_transitions, Some(4));
}

#[test]
fn identities_name_the_host_and_differ_per_call() {
    let a = default_identity();
    let b = default_identity();
    assert!(a.contains('_'), "{a}");
    assert_ne!(a, b);
}
