//! [`DbusSystemd`]: a small client for systemd's manager object
//! (`org.freedesktop.systemd1.Manager` at `/org/freedesktop/systemd1`) over D-Bus, with zbus.
//!
//! It connects to systemd's private socket (`/run/systemd/private`, a direct connection that
//! works without a bus daemon, as `systemctl` uses as root) and else to the system bus, and
//! reads the `Version` property, which also proves that systemd answers. Starting and stopping
//! a unit queue a job; the client subscribes to `JobRemoved` *before* the call (so a signal that
//! arrives before the reply is not lost), then waits for the signal of its job and its result.
//! A failed or timed-out job is followed by `ResetFailedUnit`, so a retry is not refused
//! because of a leftover failed unit. A connection that drops (systemd re-executing, the bus
//! restarting) is made again, and the call retried once.
//!
//! The cgroup code is synchronous, so the client owns a thread with a single-threaded tokio
//! runtime holding the connection; [`SystemdApi`] calls send it a request and block on the
//! reply. That keeps zbus's tasks off the caller's runtime, and blocking calls are safe from
//! async code (they never wait on the caller's own runtime).

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc as std_mpsc;
use std::time::Duration;

use futures::StreamExt as _;
use tokio::sync::mpsc;
use zbus::message::Type as MessageType;
use zbus::zvariant::{DynamicType, OwnedObjectPath, Value};
use zbus::{Connection, MatchRule, Message, MessageStream};

use super::error_names::UNIT_EXISTS;
use super::{
    ConnectAttempts, PropertyValue, Started, Stopped, SystemdApi, SystemdError, UnitProperty,
};

const DESTINATION: &str = "org.freedesktop.systemd1";
const OBJECT: &str = "/org/freedesktop/systemd1";
const MANAGER: &str = "org.freedesktop.systemd1.Manager";
const PROPERTIES: &str = "org.freedesktop.DBus.Properties";
/// How many `JobRemoved` signals of other jobs may queue while one job is awaited.
const JOB_SIGNAL_QUEUE: usize = 256;

/// Where systemd is reached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// systemd's private socket: a direct (peer-to-peer) connection, root only.
    Private(PathBuf),
    /// The system bus (`DBUS_SYSTEM_BUS_ADDRESS`, else `/run/dbus/system_bus_socket`).
    SystemBus,
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Private(path) => write!(f, "{}", path.display()),
            Endpoint::SystemBus => f.write_str("system bus"),
        }
    }
}

/// How the client connects and how long it waits.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// Tried in order.
    pub endpoints: Vec<Endpoint>,
    /// For connecting and for each method call.
    pub call_timeout: Duration,
    /// For a start or stop job to finish (runc waits 30 s).
    pub job_timeout: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            endpoints: vec![
                Endpoint::Private(PathBuf::from("/run/systemd/private")),
                Endpoint::SystemBus,
            ],
            call_timeout: Duration::from_secs(10),
            job_timeout: Duration::from_secs(30),
        }
    }
}

/// The connected client. Dropping it ends its thread.
#[derive(Debug)]
pub struct DbusSystemd {
    requests: mpsc::UnboundedSender<Request>,
    version: u32,
    endpoint: Endpoint,
    /// The caller's backstop; the client thread's own timeouts fire first.
    reply_timeout: Duration,
}

enum Op {
    Start {
        unit: String,
        properties: Vec<UnitProperty>,
    },
    Set {
        unit: String,
        properties: Vec<UnitProperty>,
    },
    Stop {
        unit: String,
    },
}

impl Op {
    fn method(&self) -> &'static str {
        match self {
            Op::Start { .. } => "StartTransientUnit",
            Op::Set { .. } => "SetUnitProperties",
            Op::Stop { .. } => "StopUnit",
        }
    }

    fn unit(&self) -> &str {
        match self {
            Op::Start { unit, .. } | Op::Set { unit, .. } | Op::Stop { unit } => unit,
        }
    }
}

enum Reply {
    Started(Started),
    Set,
    Stopped(Stopped),
}

/// One call handed to the client thread; it answers on `reply`.
struct Request {
    op: Op,
    reply: std_mpsc::SyncSender<Result<Reply, SystemdError>>,
}

type Ready = Result<(u32, Endpoint), SystemdError>;

impl DbusSystemd {
    /// Starts the client thread and connects; fails with [`SystemdError::Unreachable`] naming
    /// each endpoint tried when systemd does not answer.
    pub fn connect(options: ClientOptions) -> Result<Self, SystemdError> {
        let reply_timeout = options.job_timeout + options.call_timeout * 4;
        let (requests, receiver) = mpsc::unbounded_channel();
        let (ready_tx, ready_rx) = std_mpsc::sync_channel::<Ready>(1);
        std::thread::Builder::new()
            .name("kwk-systemd".to_string())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build();
                match runtime {
                    Ok(runtime) => runtime.block_on(serve(options, receiver, ready_tx)),
                    Err(_) => {
                        let _ = ready_tx.send(Err(SystemdError::Client {
                            reason: "cannot build its runtime",
                        }));
                    }
                }
            })
            .map_err(|_| SystemdError::Client {
                reason: "cannot start its thread",
            })?;
        let (version, endpoint) =
            ready_rx
                .recv_timeout(reply_timeout)
                .map_err(|_| SystemdError::Client {
                    reason: "no answer from its thread while connecting",
                })??;
        Ok(Self {
            requests,
            version,
            endpoint,
            reply_timeout,
        })
    }

    /// The endpoint the client connected to first.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    fn request(&self, op: Op) -> Result<Reply, SystemdError> {
        let method = op.method();
        let unit = op.unit().to_string();
        let (reply, answer) = std_mpsc::sync_channel(1);
        self.requests
            .send(Request { op, reply })
            .map_err(|_| SystemdError::Client {
                reason: "its thread has stopped",
            })?;
        match answer.recv_timeout(self.reply_timeout) {
            Ok(result) => result,
            Err(std_mpsc::RecvTimeoutError::Timeout) => Err(SystemdError::Timeout {
                method,
                unit,
                timeout: self.reply_timeout,
            }),
            Err(std_mpsc::RecvTimeoutError::Disconnected) => Err(SystemdError::Client {
                reason: "its thread has stopped",
            }),
        }
    }
}

fn unexpected_reply(method: &'static str, unit: &str) -> SystemdError {
    SystemdError::Transport {
        method,
        unit: unit.to_string(),
        source: Box::new(zbus::Error::InvalidReply),
    }
}

impl SystemdApi for DbusSystemd {
    fn start_transient_unit(
        &self,
        unit: &str,
        properties: &[UnitProperty],
    ) -> Result<Started, SystemdError> {
        match self.request(Op::Start {
            unit: unit.to_string(),
            properties: properties.to_vec(),
        })? {
            Reply::Started(started) => Ok(started),
            _ => Err(unexpected_reply("StartTransientUnit", unit)),
        }
    }

    fn set_unit_properties(
        &self,
        unit: &str,
        properties: &[UnitProperty],
    ) -> Result<(), SystemdError> {
        match self.request(Op::Set {
            unit: unit.to_string(),
            properties: properties.to_vec(),
        })? {
            Reply::Set => Ok(()),
            _ => Err(unexpected_reply("SetUnitProperties", unit)),
        }
    }

    fn stop_unit(&self, unit: &str) -> Result<Stopped, SystemdError> {
        match self.request(Op::Stop {
            unit: unit.to_string(),
        })? {
            Reply::Stopped(stopped) => Ok(stopped),
            _ => Err(unexpected_reply("StopUnit", unit)),
        }
    }

    fn version(&self) -> u32 {
        self.version
    }
}

/// The client thread: connect, report, then answer requests one at a time until the client is
/// dropped.
async fn serve(
    options: ClientOptions,
    mut requests: mpsc::UnboundedReceiver<Request>,
    ready: std_mpsc::SyncSender<Ready>,
) {
    let mut worker = Worker {
        options,
        conn: None,
    };
    match worker.connect().await {
        Ok((conn, endpoint, version)) => {
            tracing::info!(%endpoint, version, "connected to systemd over D-Bus");
            worker.conn = Some(conn);
            if ready.send(Ok((version, endpoint))).is_err() {
                return;
            }
        }
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    }
    while let Some(request) = requests.recv().await {
        let result = worker.handle(&request.op).await;
        let _ = request.reply.send(result);
    }
}

struct Worker {
    options: ClientOptions,
    conn: Option<Connection>,
}

/// The leading number of systemd's `Version` ("252.22-1~deb12u1", "239 (239-74.el8)", "v256").
pub(crate) fn parse_version(text: &str) -> u32 {
    text.trim_start_matches(|c: char| !c.is_ascii_digit())
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|digits| digits.parse().ok())
        .unwrap_or(0)
}

async fn connect_to(endpoint: &Endpoint) -> zbus::Result<(Connection, u32)> {
    let conn = match endpoint {
        Endpoint::Private(path) => {
            let stream = tokio::net::UnixStream::connect(path)
                .await
                .map_err(|e| zbus::Error::InputOutput(Arc::new(e)))?;
            zbus::connection::Builder::unix_stream(stream)
                .p2p()
                .build()
                .await?
        }
        Endpoint::SystemBus => zbus::connection::Builder::system()?.build().await?,
    };
    let reply = conn
        .call_method(
            Some(DESTINATION),
            OBJECT,
            Some(PROPERTIES),
            "Get",
            &(MANAGER, "Version"),
        )
        .await?;
    let body = reply.body();
    let value: Value<'_> = body.deserialize()?;
    let version = match value {
        Value::Str(text) => parse_version(text.as_str()),
        _ => 0,
    };
    Ok((conn, version))
}

fn wire(properties: &[UnitProperty]) -> Vec<(&str, Value<'_>)> {
    properties
        .iter()
        .map(|p| {
            let value = match &p.value {
                PropertyValue::Bool(b) => Value::Bool(*b),
                PropertyValue::U64(v) => Value::U64(*v),
                PropertyValue::Str(s) => Value::from(s.as_str()),
                PropertyValue::StrList(list) => {
                    Value::from(list.iter().map(String::as_str).collect::<Vec<_>>())
                }
            };
            (p.name, value)
        })
        .collect()
}

fn closed_while_waiting() -> zbus::Error {
    zbus::Error::InputOutput(Arc::new(io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "the connection closed while waiting for the job",
    )))
}

impl Worker {
    async fn connect(&self) -> Result<(Connection, Endpoint, u32), SystemdError> {
        let mut attempts = ConnectAttempts::default();
        for endpoint in &self.options.endpoints {
            match tokio::time::timeout(self.options.call_timeout, connect_to(endpoint)).await {
                Ok(Ok((conn, version))) => return Ok((conn, endpoint.clone(), version)),
                Ok(Err(e)) => attempts.0.push((endpoint.to_string(), e.to_string())),
                Err(_) => attempts.0.push((
                    endpoint.to_string(),
                    format!("no answer within {:?}", self.options.call_timeout),
                )),
            }
        }
        Err(SystemdError::Unreachable { attempts })
    }

    async fn connection(&mut self) -> Result<Connection, SystemdError> {
        if let Some(conn) = &self.conn {
            return Ok(conn.clone());
        }
        let (conn, endpoint, _) = self.connect().await?;
        tracing::info!(%endpoint, "reconnected to systemd");
        self.conn = Some(conn.clone());
        Ok(conn)
    }

    /// Runs one request, reconnecting and retrying once when the connection was lost.
    async fn handle(&mut self, op: &Op) -> Result<Reply, SystemdError> {
        let conn = self.connection().await?;
        match self.run(&conn, op).await {
            Err(SystemdError::Transport { source, .. })
                if matches!(*source, zbus::Error::InputOutput(_)) =>
            {
                tracing::warn!(error = %source, method = op.method(), unit = op.unit(), "lost the connection to systemd; retrying");
                self.conn = None;
                let conn = self.connection().await?;
                self.run(&conn, op).await
            }
            other => other,
        }
    }

    async fn run(&self, conn: &Connection, op: &Op) -> Result<Reply, SystemdError> {
        match op {
            Op::Start { unit, properties } => {
                self.start(conn, unit, properties).await.map(Reply::Started)
            }
            Op::Set { unit, properties } => {
                let body = (unit.as_str(), true, wire(properties));
                self.call(conn, "SetUnitProperties", unit, &body).await?;
                Ok(Reply::Set)
            }
            Op::Stop { unit } => self.stop(conn, unit).await.map(Reply::Stopped),
        }
    }

    async fn call<B>(
        &self,
        conn: &Connection,
        method: &'static str,
        unit: &str,
        body: &B,
    ) -> Result<Message, SystemdError>
    where
        B: serde::Serialize + DynamicType,
    {
        let call = conn.call_method(Some(DESTINATION), OBJECT, Some(MANAGER), method, body);
        match tokio::time::timeout(self.options.call_timeout, call).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(zbus::Error::MethodError(name, message, _))) => Err(SystemdError::Call {
                method,
                unit: unit.to_string(),
                name: name.to_string(),
                message: message.unwrap_or_default(),
            }),
            Ok(Err(source)) => Err(SystemdError::Transport {
                method,
                unit: unit.to_string(),
                source: Box::new(source),
            }),
            Err(_) => Err(SystemdError::Timeout {
                method,
                unit: unit.to_string(),
                timeout: self.options.call_timeout,
            }),
        }
    }

    /// A stream of `JobRemoved` signals, set up before the call that queues the job.
    async fn job_signals(
        &self,
        conn: &Connection,
        method: &'static str,
        unit: &str,
    ) -> Result<MessageStream, SystemdError> {
        let transport = |source| SystemdError::Transport {
            method,
            unit: unit.to_string(),
            source: Box::new(source),
        };
        let rule = MatchRule::builder()
            .msg_type(MessageType::Signal)
            .sender(DESTINATION)
            .and_then(|b| b.path(OBJECT))
            .and_then(|b| b.interface(MANAGER))
            .and_then(|b| b.member("JobRemoved"))
            .map_err(transport)?
            .build();
        let subscribe = MessageStream::for_match_rule(rule, conn, Some(JOB_SIGNAL_QUEUE));
        match tokio::time::timeout(self.options.call_timeout, subscribe).await {
            Ok(stream) => stream.map_err(transport),
            Err(_) => Err(SystemdError::Timeout {
                method,
                unit: unit.to_string(),
                timeout: self.options.call_timeout,
            }),
        }
    }

    fn job_of(
        reply: &Message,
        method: &'static str,
        unit: &str,
    ) -> Result<OwnedObjectPath, SystemdError> {
        reply
            .body()
            .deserialize::<OwnedObjectPath>()
            .map_err(|source| SystemdError::Transport {
                method,
                unit: unit.to_string(),
                source: Box::new(source),
            })
    }

    /// Waits for the `JobRemoved` of `job` and returns its result (`done`, `failed`, ...).
    async fn wait_job(
        &self,
        signals: &mut MessageStream,
        job: &OwnedObjectPath,
        method: &'static str,
        unit: &str,
    ) -> Result<String, SystemdError> {
        let transport = |source| SystemdError::Transport {
            method,
            unit: unit.to_string(),
            source: Box::new(source),
        };
        let wait = async {
            while let Some(signal) = signals.next().await {
                let signal = signal.map_err(transport)?;
                let body = signal.body();
                let Ok((_id, path, _unit, result)) =
                    body.deserialize::<(u32, OwnedObjectPath, String, String)>()
                else {
                    continue;
                };
                if &path == job {
                    return Ok(result);
                }
            }
            Err(transport(closed_while_waiting()))
        };
        match tokio::time::timeout(self.options.job_timeout, wait).await {
            Ok(result) => result,
            Err(_) => Err(SystemdError::Timeout {
                method,
                unit: unit.to_string(),
                timeout: self.options.job_timeout,
            }),
        }
    }

    /// Lets systemd forget a failed unit; best effort.
    async fn reset_failed(&self, conn: &Connection, unit: &str) {
        if let Err(e) = self.call(conn, "ResetFailedUnit", unit, &(unit,)).await {
            tracing::debug!(unit, error = %e, "ResetFailedUnit");
        }
    }

    async fn start(
        &self,
        conn: &Connection,
        unit: &str,
        properties: &[UnitProperty],
    ) -> Result<Started, SystemdError> {
        const METHOD: &str = "StartTransientUnit";
        let mut signals = self.job_signals(conn, METHOD, unit).await?;
        let aux: Vec<(&str, Vec<(&str, Value<'_>)>)> = Vec::new();
        let body = (unit, "replace", wire(properties), aux);
        let job = match self.call(conn, METHOD, unit, &body).await {
            Ok(reply) => Self::job_of(&reply, METHOD, unit)?,
            Err(SystemdError::Call { name, .. }) if name == UNIT_EXISTS => {
                return Ok(Started::AlreadyLoaded);
            }
            Err(e) => return Err(e),
        };
        match self.wait_job(&mut signals, &job, METHOD, unit).await {
            Ok(result) if result == "done" => Ok(Started::Created),
            Ok(result) => {
                self.reset_failed(conn, unit).await;
                Err(SystemdError::Job {
                    method: METHOD,
                    unit: unit.to_string(),
                    job: job.to_string(),
                    result,
                })
            }
            Err(e) => {
                if matches!(e, SystemdError::Timeout { .. }) {
                    self.reset_failed(conn, unit).await;
                }
                Err(e)
            }
        }
    }

    async fn stop(&self, conn: &Connection, unit: &str) -> Result<Stopped, SystemdError> {
        const METHOD: &str = "StopUnit";
        let mut signals = self.job_signals(conn, METHOD, unit).await?;
        let job = match self.call(conn, METHOD, unit, &(unit, "replace")).await {
            Ok(reply) => Self::job_of(&reply, METHOD, unit)?,
            Err(e) if e.is_no_such_unit() => return Ok(Stopped::NotLoaded),
            Err(e) => return Err(e),
        };
        let result = self.wait_job(&mut signals, &job, METHOD, unit).await?;
        if result == "done" {
            return Ok(Stopped::Stopped);
        }
        self.reset_failed(conn, unit).await;
        Err(SystemdError::Job {
            method: METHOD,
            unit: unit.to_string(),
            job: job.to_string(),
            result,
        })
    }
}

#[cfg(test)]
#[path = "dbus_tests.rs"]
mod tests;
