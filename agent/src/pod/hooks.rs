//! Container lifecycle hooks: `postStart` right after a container starts and `preStop` before
//! it is stopped, each an `exec` in the container, an `httpGet` (the pod IP unless `host`
//! says otherwise) or a `sleep`. What a hook is, and the message of a failed one, is decided
//! here (pure); running one needs the runtime's exec, given as a closure.

use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, LifecycleHandler};

use crate::pod::probe::handlers::{self, HttpRequest};
use crate::pod::probe::spec::{Handler, http_get};
use crate::pod::probe::tracker::RunResult;

/// Which hook.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HookKind {
    PostStart,
    PreStop,
}

impl HookKind {
    fn field(self) -> &'static str {
        match self {
            Self::PostStart => "lifecycle.postStart",
            Self::PreStop => "lifecycle.preStop",
        }
    }
}

/// What a hook does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Hook {
    Exec { command: Vec<String> },
    Http(Handler),
    Sleep(Duration),
}

/// The container's hook of that kind; `Ok(None)` when it has none. `tcpSocket` (deprecated,
/// never run by upstream either) counts as none.
pub fn hook(container: &Container, kind: HookKind) -> Result<Option<Hook>, String> {
    let lifecycle = container.lifecycle.as_ref();
    let handler: Option<&LifecycleHandler> = match kind {
        HookKind::PostStart => lifecycle.and_then(|l| l.post_start.as_ref()),
        HookKind::PreStop => lifecycle.and_then(|l| l.pre_stop.as_ref()),
    };
    let Some(handler) = handler else {
        return Ok(None);
    };
    if let Some(exec) = &handler.exec {
        let command = exec.command.clone().unwrap_or_default();
        if command.is_empty() {
            return Err(format!("{}.exec.command: must not be empty", kind.field()));
        }
        return Ok(Some(Hook::Exec { command }));
    }
    if let Some(http) = &handler.http_get {
        return http_get(container, http, kind.field())
            .map(|h| Some(Hook::Http(h)))
            .map_err(|e| e.to_string());
    }
    if let Some(sleep) = &handler.sleep {
        let seconds = u64::try_from(sleep.seconds).map_err(|_| {
            format!(
                "{}.sleep.seconds: must not be negative, got {}",
                kind.field(),
                sleep.seconds
            )
        })?;
        return Ok(Some(Hook::Sleep(Duration::from_secs(seconds))));
    }
    Ok(None)
}

/// Runs `hook` for the container, within `budget` (a hook still running then has failed; its
/// exec is killed). `exec` runs a command in the container with a timeout; `pod_ip` is the
/// default host of an HTTP hook. `Err` carries upstream's message of a failed hook.
pub async fn run<F, Fut>(hook: &Hook, pod_ip: &str, budget: Duration, exec: F) -> Result<(), String>
where
    F: FnOnce(Vec<String>, Duration) -> Fut,
    Fut: Future<Output = Result<RunResult, String>>,
{
    match hook {
        Hook::Exec { command } => match exec(command.clone(), budget).await? {
            RunResult::Success => Ok(()),
            RunResult::Failure(message) | RunResult::Error(message) => Err(format!(
                "Exec lifecycle hook ({command:?}) failed - error: {message}"
            )),
        },
        Hook::Http(Handler::Http {
            scheme,
            host,
            port,
            path,
            headers,
        }) => {
            let host = host.clone().unwrap_or_else(|| pod_ip.to_string());
            let request = HttpRequest {
                scheme: *scheme,
                host: &host,
                port: *port,
                path,
                headers,
            };
            match handlers::http(&request, budget).await {
                RunResult::Success => Ok(()),
                RunResult::Failure(message) | RunResult::Error(message) => Err(format!(
                    "HTTP lifecycle hook ({path}) failed - error: {message}"
                )),
            }
        }
        Hook::Http(_) => Ok(()),
        Hook::Sleep(duration) => {
            tokio::time::sleep((*duration).min(budget)).await;
            Ok(())
        }
    }
}

/// The grace period left for stopping after a `preStop` hook took `spent`: never below
/// upstream's minimum of 2 s.
pub fn grace_after_pre_stop(grace: Duration, spent: Duration) -> Duration {
    grace.saturating_sub(spent).max(Duration::from_secs(2))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pod::probe::spec::Scheme;

    fn container(yaml: &str) -> Container {
        serde_saphyr::from_str(yaml).expect("container yaml")
    }

    #[test]
    fn hooks_from_the_spec() {
        let c = container(
            "{name: a, ports: [{name: web, containerPort: 8080}], lifecycle: {postStart: {exec: {command: [touch, /x]}}, preStop: {httpGet: {port: web, path: quit}}}}",
        );
        assert_eq!(
            hook(&c, HookKind::PostStart),
            Ok(Some(Hook::Exec {
                command: vec!["touch".into(), "/x".into()]
            }))
        );
        assert_eq!(
            hook(&c, HookKind::PreStop),
            Ok(Some(Hook::Http(Handler::Http {
                scheme: Scheme::Http,
                host: None,
                port: 8080,
                path: "/quit".into(),
                headers: Vec::new(),
            })))
        );
        let sleep = container("{name: a, lifecycle: {preStop: {sleep: {seconds: 5}}}}");
        assert_eq!(
            hook(&sleep, HookKind::PreStop),
            Ok(Some(Hook::Sleep(Duration::from_secs(5))))
        );
        assert_eq!(hook(&sleep, HookKind::PostStart), Ok(None));
        assert_eq!(hook(&container("{name: a}"), HookKind::PreStop), Ok(None));
        let bad = container("{name: a, lifecycle: {preStop: {httpGet: {port: nope}}}}");
        assert!(
            hook(&bad, HookKind::PreStop)
                .unwrap_err()
                .starts_with("lifecycle.preStop.httpGet.port:")
        );
        let negative = container("{name: a, lifecycle: {postStart: {sleep: {seconds: -1}}}}");
        assert!(hook(&negative, HookKind::PostStart).is_err());
    }

    #[tokio::test]
    async fn running_hooks() {
        let exec_ok = |_cmd: Vec<String>, _t: Duration| async { Ok(RunResult::Success) };
        let hook_exec = Hook::Exec {
            command: vec!["true".into()],
        };
        assert_eq!(
            run(&hook_exec, "", Duration::from_secs(1), exec_ok).await,
            Ok(())
        );
        let exec_fails =
            |_cmd: Vec<String>, _t: Duration| async { Ok(RunResult::Failure("nope".into())) };
        assert_eq!(
            run(&hook_exec, "", Duration::from_secs(1), exec_fails).await,
            Err("Exec lifecycle hook ([\"true\"]) failed - error: nope".into())
        );
        // A sleep is cut at the budget.
        let started = tokio::time::Instant::now();
        run(
            &Hook::Sleep(Duration::from_secs(30)),
            "",
            Duration::from_millis(50),
            exec_ok,
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn grace_left_after_pre_stop() {
        let s = Duration::from_secs;
        assert_eq!(grace_after_pre_stop(s(30), s(10)), s(20));
        assert_eq!(grace_after_pre_stop(s(30), s(29)), s(2));
        assert_eq!(grace_after_pre_stop(s(5), s(40)), s(2));
    }
}
