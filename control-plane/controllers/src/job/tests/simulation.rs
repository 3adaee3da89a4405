//! Plans applied to an in-memory apiserver and kubelet, over and over, until the Job
//! finishes: the counts must converge whatever order the bookkeeping takes.

use super::*;

/// A tiny apiserver + kubelet: applies plans and finishes pods the way the test says.
struct Cluster {
    job: Job,
    pods: Vec<Pod>,
    created: usize,
    now: Timestamp,
    events: Vec<String>,
    requeues: Vec<Option<Duration>>,
    /// How many actions of each plan the executor performs before "failing" (cycled);
    /// empty: all of them.
    executor_budget: Vec<usize>,
    steps: usize,
}

impl Cluster {
    fn new(job: Job) -> Self {
        Cluster {
            job,
            pods: Vec::new(),
            created: 0,
            now: now(),
            events: Vec::new(),
            requeues: Vec::new(),
            executor_budget: Vec::new(),
            steps: 0,
        }
    }

    fn apply(&mut self, plan: &Plan) {
        let budget = match self.executor_budget.len() {
            0 => usize::MAX,
            n => self.executor_budget[self.steps % n],
        };
        self.steps += 1;
        for action in plan.actions.iter().take(budget) {
            match action {
                Action::Create { body, .. } => {
                    let mut pod: Pod = serde_json::from_value(body.clone()).expect("pod");
                    self.created += 1;
                    let name = format!(
                        "{}{}",
                        pod.metadata.generate_name.clone().unwrap_or_default(),
                        self.created
                    );
                    pod.metadata.uid = Some(format!("uid-{name}"));
                    pod.metadata.name = Some(name);
                    pod.metadata.creation_timestamp = Some(Time(self.now));
                    pod.status =
                        serde_json::from_value(json!({"phase": "Pending"})).expect("status");
                    self.pods.push(pod);
                }
                Action::Patch { target, patch, .. } => {
                    let pod = self
                        .pods
                        .iter_mut()
                        .find(|p| p.metadata.name.as_deref() == Some(&target.name))
                        .expect("patched pod exists");
                    pod.metadata.finalizers =
                        serde_json::from_value(patch["metadata"]["finalizers"].clone())
                            .expect("finalizers");
                }
                Action::Delete { target, .. } => {
                    let pod = self
                        .pods
                        .iter_mut()
                        .find(|p| p.metadata.name.as_deref() == Some(&target.name))
                        .expect("deleted pod exists");
                    pod.metadata.deletion_timestamp = Some(Time(self.now));
                    // The kubelet kills it.
                    pod.status =
                        serde_json::from_value(json!({"phase": "Failed"})).expect("status");
                }
                Action::UpdateStatus { body, .. } => {
                    self.job.status =
                        serde_json::from_value(body["status"].clone()).expect("status");
                }
                Action::Event { reason, .. } => self.events.push(reason.clone()),
                other => panic!("unexpected {other:?}"),
            }
        }
        // Deleted pods without finalizers are gone.
        self.pods
            .retain(|p| p.metadata.deletion_timestamp.is_none() || has_tracking_finalizer(p));
    }

    /// Plan, apply, let the "kubelet" finish pods with `phase`; returns the plan.
    fn step(&mut self, phase: &str) -> Plan {
        let plan = plan(&self.job, &self.pods, self.now);
        self.apply(&plan);
        let running = self
            .pods
            .iter()
            .filter(|p| crate::common::is_active(p))
            .count();
        assert!(
            running <= 2,
            "never more than parallelism pods run: {running}"
        );
        for pod in self.pods.iter_mut().filter(|p| crate::common::is_active(p)) {
            pod.status = serde_json::from_value(json!({"phase": phase, "containerStatuses": [{
                "name": "c", "image": "", "imageID": "", "ready": false, "restartCount": 0,
                "state": {"terminated": {"exitCode": 0, "finishedAt": self.now}}}]}))
            .expect("status");
        }
        self.requeues.push(plan.requeue_after);
        let advance = plan
            .requeue_after
            .unwrap_or(Duration::from_secs(1))
            .max(Duration::from_secs(1));
        self.now = after(self.now, advance);
        plan
    }

    fn conditions(&self) -> Vec<String> {
        conditions(self.job.status.as_ref().expect("status"))
    }
}

#[test]
fn five_completions_two_at_a_time_converge_to_complete() {
    let mut cluster = Cluster::new(job(json!({"completions": 5, "parallelism": 2}), json!({})));
    for _ in 0..20 {
        cluster.step("Succeeded");
        if finished_condition(&cluster.job).is_some() {
            break;
        }
    }
    assert_eq!(
        cluster.conditions(),
        [
            "SuccessCriteriaMet=True CompletionsReached",
            "Complete=True CompletionsReached"
        ]
    );
    let status = cluster.job.status.clone().expect("status");
    assert_eq!(
        (status.succeeded, status.failed, status.active),
        (Some(5), Some(0), Some(0))
    );
    assert!(status.completion_time.is_some());
    assert_eq!(
        status.uncounted_terminated_pods,
        Some(UncountedTerminatedPods::default())
    );
    assert_eq!(cluster.created, 5, "exactly the completions were created");
    assert!(
        cluster.pods.iter().all(|p| !has_tracking_finalizer(p)),
        "all finalizers released"
    );
    assert_eq!(
        cluster.events.iter().filter(|e| *e == "Completed").count(),
        1
    );
    // Stable afterwards.
    assert_eq!(
        plan(&cluster.job, &cluster.pods, cluster.now),
        Plan::default()
    );
}

#[test]
fn counts_stay_exact_when_the_executor_stops_midway() {
    for budget in [vec![1], vec![2], vec![1, 3, 2], vec![3, 1]] {
        let mut cluster = Cluster::new(job(json!({"completions": 5, "parallelism": 2}), json!({})));
        cluster.executor_budget = budget.clone();
        for _ in 0..200 {
            cluster.step("Succeeded");
            if finished_condition(&cluster.job).is_some() {
                break;
            }
        }
        let status = cluster.job.status.clone().expect("status");
        assert_eq!(
            cluster.conditions(),
            [
                "SuccessCriteriaMet=True CompletionsReached",
                "Complete=True CompletionsReached"
            ],
            "budget {budget:?}"
        );
        assert_eq!(status.succeeded, Some(5), "budget {budget:?}");
        assert_eq!(cluster.created, 5, "budget {budget:?}");
    }
}

#[test]
fn indexed_job_converges_with_every_index() {
    let mut cluster = Cluster::new(job(
        json!({"completions": 3, "parallelism": 2, "completionMode": "Indexed"}),
        json!({}),
    ));
    for _ in 0..20 {
        cluster.step("Succeeded");
        if finished_condition(&cluster.job).is_some() {
            break;
        }
    }
    let status = cluster.job.status.clone().expect("status");
    assert_eq!(status.completed_indexes.as_deref(), Some("0-2"));
    assert_eq!(status.succeeded, Some(3));
    assert_eq!(cluster.created, 3);
}

#[test]
fn backoff_limit_one_fails_after_two_failures() {
    let mut cluster = Cluster::new(job(
        json!({"completions": 1, "parallelism": 1, "backoffLimit": 1}),
        json!({}),
    ));
    for _ in 0..20 {
        cluster.step("Failed");
        if finished_condition(&cluster.job).is_some() {
            break;
        }
    }
    assert_eq!(
        cluster.conditions(),
        [
            "FailureTarget=True BackoffLimitExceeded",
            "Failed=True BackoffLimitExceeded"
        ]
    );
    let status = cluster.job.status.clone().expect("status");
    assert_eq!(
        (status.failed, status.succeeded, status.completion_time),
        (Some(2), Some(0), None)
    );
    assert_eq!(cluster.created, 2, "one replacement, then the limit");
    assert!(
        cluster.requeues.contains(&Some(Duration::from_secs(9))),
        "replaced after the 10s backoff: {:?}",
        cluster.requeues
    );
    assert_eq!(
        cluster
            .events
            .iter()
            .filter(|e| *e == "BackoffLimitExceeded")
            .count(),
        1
    );
}
