//! The sync loop against a recording fake dataplane: what each sync is given (full or the
//! difference), failure → full retry, observers, batching and shutdown of the thread, and the
//! dataplane's maintenance between syncs.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};

use super::*;
use crate::testkit::*;

/// One sync as the fake saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Call {
    full: bool,
    front_ends: usize,
    /// (added, removed, changed) for incremental syncs.
    change: Option<(usize, usize, usize)>,
}

#[derive(Clone, Default)]
struct Fake {
    calls: Arc<Mutex<Vec<Call>>>,
    fail: Arc<AtomicBool>,
    /// When `maintain` was called.
    maintained: Arc<Mutex<Vec<Instant>>>,
    /// With `Some(every)`: wants maintenance `every` after the last, three times in all.
    maintain_every: Option<Duration>,
}

impl Dataplane for Fake {
    fn mode(&self) -> &'static str {
        "fake"
    }

    fn sync(
        &mut self,
        rules: &RuleSet,
        change: Option<&RuleDiff<'_>>,
    ) -> Result<SyncReport, DataplaneError> {
        self.calls.lock().unwrap().push(Call {
            full: change.is_none(),
            front_ends: rules.front_ends.len(),
            change: change.map(|d| (d.added.len(), d.removed.len(), d.changed.len())),
        });
        if self.fail.load(Ordering::SeqCst) {
            return Err(DataplaneError::mode(
                "fake",
                std::io::Error::other("injected failure"),
            ));
        }
        Ok(SyncReport {
            full: change.is_none(),
            ..SyncReport::default()
        })
    }

    fn cleanup(&mut self) -> Result<(), DataplaneError> {
        Ok(())
    }

    fn maintain(&mut self, now: Instant) -> Result<usize, DataplaneError> {
        self.maintained.lock().unwrap().push(now);
        Ok(0)
    }

    fn next_maintenance(&self) -> Option<Instant> {
        let every = self.maintain_every?;
        let done = self.maintained.lock().unwrap();
        if done.len() >= 3 {
            return None;
        }
        done.last().map(|at| *at + every)
    }
}

/// Records the backends removed by each observed sync.
#[derive(Clone, Default)]
struct Removed(Arc<Mutex<Vec<Vec<String>>>>);

impl SyncObserver for Removed {
    fn synced(&mut self, _rules: &RuleSet, diff: &RuleDiff<'_>, _report: &SyncReport) {
        let removed = diff
            .changed
            .iter()
            .flat_map(|c| c.backends_removed.iter().map(|b| b.addr().to_string()))
            .collect();
        self.0.lock().unwrap().push(removed);
    }
}

fn runner(fake: &Fake, removed: &Removed) -> ProxyRunner {
    ProxyRunner::new(
        ProxyState::new(node(), options()),
        Box::new(fake.clone()),
        SyncPeriods::default(),
    )
    .with_observer(Box::new(removed.clone()))
}

fn with_backend(addr: &str) -> ProxyEvent {
    ProxyEvent::SliceApplied(Box::new(slice(
        "a-1",
        "a",
        "IPv4",
        8080,
        vec![ep(addr, "R", &[])],
    )))
}

#[test]
fn syncs_get_the_difference_and_a_failure_makes_the_next_full() {
    let (fake, removed) = (Fake::default(), Removed::default());
    let mut r = runner(&fake, &removed);
    r.record(ProxyEvent::ServiceApplied(Box::new(service(
        "a",
        "ClusterIP",
        &["10.96.0.10"],
    ))));
    r.record(with_backend("10.244.2.1"));
    assert!(
        r.sync(false).full,
        "the first sync is full whatever is asked"
    );

    r.record(with_backend("10.244.2.2"));
    assert!(r.sync(false).result.is_ok());

    fake.fail.store(true, Ordering::SeqCst);
    r.record(with_backend("10.244.2.3"));
    assert!(r.sync(false).result.is_err());
    fake.fail.store(false, Ordering::SeqCst);
    assert!(
        matches!(r.schedule.next(Instant::now()), Next::WaitUntil(_)),
        "back-off first"
    );
    assert_eq!(
        r.schedule.next(Instant::now() + Duration::from_secs(2)),
        Next::Sync { full: true }
    );
    assert!(r.sync(true).result.is_ok());

    let calls = fake.calls.lock().unwrap().clone();
    assert_eq!(
        calls,
        [
            Call {
                full: true,
                front_ends: 1,
                change: None
            },
            Call {
                full: false,
                front_ends: 1,
                change: Some((0, 0, 1))
            },
            Call {
                full: false,
                front_ends: 1,
                change: Some((0, 0, 1))
            },
            Call {
                full: true,
                front_ends: 1,
                change: None
            },
        ]
    );
    // Observers hear of successful syncs only; the retry still reports the backend the
    // failed sync would have removed (its conntrack entries are stale now).
    assert_eq!(
        removed.0.lock().unwrap().clone(),
        [
            vec![],
            vec!["10.244.2.1:8080".to_owned()],
            vec!["10.244.2.2:8080".to_owned()]
        ]
    );
}

#[test]
fn a_node_change_makes_the_sync_full() {
    let (fake, removed) = (Fake::default(), Removed::default());
    let mut r = runner(&fake, &removed);
    r.sync(false);
    let mut moved = node();
    moved.ips = vec![ip("192.168.1.99")];
    r.record(ProxyEvent::Node(moved));
    assert!(r.sync(false).full);
}

#[test]
#[allow(
    clippy::disallowed_methods,
    reason = "polls a real thread; sleeps only between checks, asserts on what happened"
)]
fn the_thread_waits_for_the_initial_lists_batches_bursts_and_stops() {
    let (fake, removed) = (Fake::default(), Removed::default());
    let periods = SyncPeriods {
        min_sync_period: Duration::from_millis(200),
        ..SyncPeriods::default()
    };
    let r = ProxyRunner::new(
        ProxyState::new(node(), options()),
        Box::new(fake.clone()),
        periods,
    )
    .with_observer(Box::new(removed));
    let (tx, rx) = mpsc::channel();
    let handle = r.spawn(rx).unwrap();
    for i in 0..50 {
        let svc = service(&format!("s{i}"), "ClusterIP", &[&format!("10.96.1.{i}")]);
        tx.send(ProxyEvent::ServiceApplied(Box::new(svc))).unwrap();
    }
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        fake.calls.lock().unwrap().is_empty(),
        "no sync before the initial lists"
    );
    tx.send(ProxyEvent::InitialListsDone).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while fake.calls.lock().unwrap().is_empty() {
        assert!(Instant::now() < deadline, "no sync after the initial lists");
        std::thread::sleep(Duration::from_millis(10));
    }
    for i in 50..100 {
        let svc = service(&format!("s{i}"), "ClusterIP", &[&format!("10.96.1.{i}")]);
        tx.send(ProxyEvent::ServiceApplied(Box::new(svc))).unwrap();
    }
    while fake.calls.lock().unwrap().last().map(|c| c.front_ends) != Some(100) {
        assert!(
            Instant::now() < deadline,
            "the burst never reached the dataplane"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    tx.send(ProxyEvent::Shutdown).unwrap();
    handle.join().unwrap();
    let calls = fake.calls.lock().unwrap().clone();
    assert!(calls[0].full && calls[0].front_ends == 50, "{calls:?}");
    // 50 events sent at once: batched into a few syncs, not one each.
    assert!(
        calls.len() <= 4,
        "{} syncs for two bursts: {calls:?}",
        calls.len()
    );
}

#[test]
fn udp_flows_to_a_removed_endpoint_are_deleted_after_the_sync() {
    use crate::conntrack::{Flow, FlowTuple, MemoryConntrack};
    let udp = |mut svc: Service| {
        spec(&mut svc).ports.as_mut().unwrap()[0].protocol = Some("UDP".into());
        svc
    };
    let udp_slice = |addr: &str| {
        let mut s = slice("a-1", "a", "IPv4", 53, vec![ep(addr, "R", &[])]);
        s.ports.as_mut().unwrap()[0].protocol = Some("UDP".into());
        ProxyEvent::SliceApplied(Box::new(s))
    };
    let flow = |backend: &str| Flow {
        protocol: 17,
        original: FlowTuple {
            src: ip("10.244.1.7"),
            dst: ip("10.96.0.10"),
            src_port: 40000,
            dst_port: 80,
        },
        reply: FlowTuple {
            src: ip(backend),
            dst: ip("10.244.1.7"),
            src_port: 53,
            dst_port: 40000,
        },
        zone: None,
    };
    let table = Arc::new(MemoryConntrack::new(vec![
        flow("10.244.2.1"),
        flow("10.244.2.2"),
    ]));
    let mut r = ProxyRunner::new(
        ProxyState::new(node(), options()),
        Box::new(Fake::default()),
        SyncPeriods::default(),
    )
    .with_observer(Box::new(ConntrackCleanup::new(table.clone())));
    r.record(ProxyEvent::ServiceApplied(Box::new(udp(service(
        "a",
        "ClusterIP",
        &["10.96.0.10"],
    )))));
    // Two endpoints, then one goes: only its flow is stale.
    let mut two = slice(
        "a-1",
        "a",
        "IPv4",
        53,
        vec![ep("10.244.2.1", "R", &[]), ep("10.244.2.2", "R", &[])],
    );
    two.ports.as_mut().unwrap()[0].protocol = Some("UDP".into());
    r.record(ProxyEvent::SliceApplied(Box::new(two)));
    assert!(r.sync(false).result.is_ok());
    assert_eq!(table.flows().len(), 2, "nothing stale yet");
    r.record(udp_slice("10.244.2.2"));
    assert!(r.sync(false).result.is_ok());
    assert_eq!(table.flows(), vec![flow("10.244.2.2")]);
}

#[test]
fn maintenance_follows_each_successful_sync_only() {
    let (fake, removed) = (
        Fake {
            maintain_every: Some(Duration::from_secs(60)),
            ..Fake::default()
        },
        Removed::default(),
    );
    let mut r = runner(&fake, &removed);
    assert_eq!(r.maintenance_at(), None);
    assert!(r.sync(false).result.is_ok());
    let first = fake.maintained.lock().unwrap().clone();
    assert_eq!(first.len(), 1, "maintained after the sync");
    assert_eq!(r.maintenance_at(), Some(first[0] + Duration::from_secs(60)));
    fake.fail.store(true, Ordering::SeqCst);
    r.record(with_backend("10.244.2.1"));
    assert!(r.sync(false).result.is_err());
    assert_eq!(
        fake.maintained.lock().unwrap().len(),
        1,
        "not after a failed sync"
    );
}

#[test]
#[allow(
    clippy::disallowed_methods,
    reason = "polls a real thread; sleeps only between checks, asserts on what happened"
)]
fn the_thread_runs_due_maintenance_between_syncs() {
    let fake = Fake {
        maintain_every: Some(Duration::from_millis(20)),
        ..Fake::default()
    };
    let r = ProxyRunner::new(
        ProxyState::new(node(), options()),
        Box::new(fake.clone()),
        SyncPeriods::default(),
    );
    let (tx, rx) = mpsc::channel();
    tx.send(ProxyEvent::InitialListsDone).unwrap();
    let handle = r.spawn(rx).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while fake.maintained.lock().unwrap().len() < 3 {
        assert!(
            Instant::now() < deadline,
            "maintenance never came due: {:?}",
            fake.maintained.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    tx.send(ProxyEvent::Shutdown).unwrap();
    handle.join().unwrap();
    let maintained = fake.maintained.lock().unwrap().clone();
    assert_eq!(
        fake.calls.lock().unwrap().len(),
        1,
        "one sync (syncPeriod is 30 s): the rest ran between syncs"
    );
    assert_eq!(maintained.len(), 3, "{maintained:?}");
    assert!(
        maintained
            .windows(2)
            .all(|w| w[1] >= w[0] + Duration::from_millis(20)),
        "never before it was due: {maintained:?}"
    );
}
