//! The proxy's sync loop: event handlers only record changes ([`ProxyEvent`] into
//! [`state::ProxyState`]); a dedicated thread decides when to sync ([`schedule`]: upstream's
//! bounded-frequency runner with `minSyncPeriod` / `syncPeriod`), brings the rule set up to date,
//! hands the difference to the [`Dataplane`] (the whole rule set after a failure or a node
//! change), and tells [`SyncObserver`]s (conntrack cleanup, health checks) what changed once it
//! is in the kernel. Between syncs the same thread runs the dataplane's own due work
//! ([`Dataplane::maintain`]: the IPVS mode deletes drained real servers).

mod conntrack;
pub mod schedule;
pub mod state;

use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::dataplane::{Dataplane, DataplaneError, SyncReport};
use crate::model::{NodeState, ProxyOptions, RuleDiff, RuleSet, ServiceName};
pub use conntrack::ConntrackCleanup;
pub use schedule::{Next, Schedule, SyncPeriods};
pub use state::ProxyState;

/// A change the proxy is told about (from the API watches or the node).
#[derive(Debug, Clone)]
pub enum ProxyEvent {
    ServiceApplied(Box<Service>),
    ServiceDeleted(ServiceName),
    SliceApplied(Box<EndpointSlice>),
    SliceDeleted(Box<EndpointSlice>),
    /// This node's addresses, pod CIDRs or zone.
    Node(NodeState),
    Options(ProxyOptions),
    /// The initial lists of Services and EndpointSlices are recorded: syncing may start (a
    /// sync before would remove every Service not listed yet).
    InitialListsDone,
    /// Stop the loop (after nothing: the rules stay in the kernel).
    Shutdown,
}

/// Told after each successful sync what it changed.
pub trait SyncObserver: Send {
    /// `diff` is the difference the sync applied (for a full sync: against the rule set
    /// applied before it).
    fn synced(&mut self, rules: &RuleSet, diff: &RuleDiff<'_>, report: &SyncReport);
}

/// The outcome of one sync, for logs and tests.
#[derive(Debug)]
pub struct SyncOutcome {
    pub full: bool,
    pub took: Duration,
    pub result: Result<SyncReport, DataplaneError>,
}

/// The proxy: state, dataplane, schedule and observers, driven by [`ProxyRunner::run`].
pub struct ProxyRunner {
    state: ProxyState,
    dataplane: Box<dyn Dataplane>,
    schedule: Schedule,
    observers: Vec<Box<dyn SyncObserver>>,
    lists_done: bool,
    /// When the dataplane has work due next ([`Dataplane::next_maintenance`]).
    maintenance_at: Option<Instant>,
}

impl std::fmt::Debug for ProxyRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyRunner")
            .field("mode", &self.dataplane.mode())
            .field("schedule", &self.schedule)
            .field("observers", &self.observers.len())
            .field("lists_done", &self.lists_done)
            .field("maintenance_at", &self.maintenance_at)
            .finish_non_exhaustive()
    }
}

impl ProxyRunner {
    pub fn new(state: ProxyState, dataplane: Box<dyn Dataplane>, periods: SyncPeriods) -> Self {
        Self {
            state,
            dataplane,
            schedule: Schedule::new(periods),
            observers: Vec::new(),
            lists_done: false,
            maintenance_at: None,
        }
    }

    /// Adds an observer told about every successful sync.
    pub fn with_observer(mut self, observer: Box<dyn SyncObserver>) -> Self {
        self.observers.push(observer);
        self
    }

    /// The proxy's state (rule set as of the last sync).
    pub fn state(&self) -> &ProxyState {
        &self.state
    }

    /// Records one event; `false` for [`ProxyEvent::Shutdown`].
    pub fn record(&mut self, event: ProxyEvent) -> bool {
        match event {
            ProxyEvent::ServiceApplied(s) => self.state.service_applied(&s),
            ProxyEvent::ServiceDeleted(name) => self.state.service_deleted(&name),
            ProxyEvent::SliceApplied(s) => self.state.slice_applied(&s),
            ProxyEvent::SliceDeleted(s) => self.state.slice_deleted(&s),
            ProxyEvent::Node(node) => self.state.set_node(node),
            ProxyEvent::Options(options) => self.state.set_options(options),
            ProxyEvent::InitialListsDone => self.lists_done = true,
            ProxyEvent::Shutdown => return false,
        }
        if self.state.needs_rebuild() {
            self.schedule.require_full();
        } else if self.state.has_changes() {
            self.schedule.changed();
        }
        true
    }

    /// Syncs now: brings the rule set up to date and applies it (`full`, or because a rebuild
    /// is pending, the whole of it; otherwise the difference since the last successful sync).
    pub fn sync(&mut self, full: bool) -> SyncOutcome {
        let started = Instant::now();
        let full = full || self.state.needs_rebuild();
        for problem in self.state.prepare() {
            tracing::warn!(%problem, "skipping part of a Service or EndpointSlice");
        }
        let (rules, diff) = self.state.for_sync();
        let result = self
            .dataplane
            .sync(rules, if full { None } else { Some(&diff) });
        let ok = result.is_ok();
        if let Ok(report) = &result {
            for observer in &mut self.observers {
                observer.synced(rules, &diff, report);
            }
        }
        let took = started.elapsed();
        match &result {
            Ok(report) => tracing::debug!(
                mode = self.dataplane.mode(),
                full = full || report.full,
                repaired = report.repaired,
                objects = report.objects,
                took_ms = took.as_secs_f64() * 1e3,
                "proxy rules synced"
            ),
            Err(error) => tracing::warn!(
                mode = self.dataplane.mode(),
                %error,
                failures = self.schedule.failures() + 1,
                "syncing proxy rules failed; the next sync is full"
            ),
        }
        if ok {
            self.state.synced();
        }
        self.schedule.finished(started, full, ok);
        if ok {
            self.maintain(Instant::now());
        }
        SyncOutcome { full, took, result }
    }

    /// Runs the dataplane's work due at `now` and notes when it has more; a failure is
    /// logged (the dataplane says when to try again).
    pub fn maintain(&mut self, now: Instant) {
        match self.dataplane.maintain(now) {
            Ok(0) => {}
            Ok(objects) => tracing::debug!(
                mode = self.dataplane.mode(),
                objects,
                "proxy dataplane maintenance"
            ),
            Err(error) => tracing::warn!(
                mode = self.dataplane.mode(),
                %error,
                "proxy dataplane maintenance failed"
            ),
        }
        self.maintenance_at = self.dataplane.next_maintenance();
    }

    /// When the dataplane has work due next.
    pub fn maintenance_at(&self) -> Option<Instant> {
        self.maintenance_at
    }

    /// Runs until [`ProxyEvent::Shutdown`] or until every sender is gone. Syncs only once the
    /// initial lists are done.
    pub fn run(mut self, events: &Receiver<ProxyEvent>) {
        loop {
            // Record everything already queued, so a burst becomes one sync.
            loop {
                match events.try_recv() {
                    Ok(event) => {
                        if !self.record(event) {
                            return;
                        }
                    }
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => return,
                }
            }
            let now = Instant::now();
            if self.maintenance_at.is_some_and(|at| now >= at) {
                self.maintain(now);
            }
            let wait = if self.lists_done {
                match self.schedule.next(now) {
                    Next::Sync { full } => {
                        self.sync(full);
                        continue;
                    }
                    Next::WaitUntil(at) => {
                        let at = self.maintenance_at.map_or(at, |m| m.min(at));
                        Some(at.saturating_duration_since(Instant::now()))
                    }
                }
            } else {
                None
            };
            let received = match wait {
                Some(timeout) => events.recv_timeout(timeout),
                None => events.recv().map_err(|_| RecvTimeoutError::Disconnected),
            };
            match received {
                Ok(event) => {
                    if !self.record(event) {
                        return;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
    }

    /// Runs the loop on its own thread (`kwk-proxy`).
    pub fn spawn(self, events: Receiver<ProxyEvent>) -> std::io::Result<JoinHandle<()>> {
        std::thread::Builder::new()
            .name("kwk-proxy".into())
            .spawn(move || self.run(&events))
    }
}

#[cfg(test)]
#[path = "runner_tests.rs"]
mod tests;
