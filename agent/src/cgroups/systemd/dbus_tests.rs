//! The D-Bus client against an in-process stand-in for systemd's manager object, served on a
//! unix socket as a direct connection (as systemd serves `/run/systemd/private`). The stand-in
//! records the D-Bus type of every property it receives, so the wire types are checked, not
//! only our own rendering of them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use zbus::object_server::SignalEmitter;
use zbus::zvariant::{ObjectPath, OwnedObjectPath, OwnedValue, Value};

use super::*;
use crate::cgroups::systemd::properties::INFINITY;

#[derive(Debug, zbus::DBusError)]
#[zbus(prefix = "org.freedesktop.systemd1")]
enum ManagerError {
    #[zbus(error)]
    ZBus(zbus::Error),
    UnitExists(String),
    NoSuchUnit(String),
}

/// What the stand-in saw and how it misbehaves.
#[derive(Debug, Default)]
struct State {
    /// Loaded units and their properties as `Name:signature=value`.
    units: BTreeMap<String, Vec<String>>,
    /// Every call, as `Method unit [args]`.
    calls: Vec<String>,
    next_job: u32,
    /// Units whose jobs end with this result instead of `done`.
    job_results: BTreeMap<String, String>,
    /// Send `JobRemoved` before the method reply.
    signal_before_reply: bool,
    /// Never send `JobRemoved`.
    silent: bool,
}

fn render(value: &Value<'_>) -> String {
    match value {
        Value::Bool(b) => b.to_string(),
        Value::U64(v) if *v == INFINITY => "infinity".to_string(),
        Value::U64(v) => v.to_string(),
        Value::Str(s) => s.to_string(),
        Value::Array(a) => a.iter().map(render).collect::<Vec<_>>().join(","),
        other => format!("{other:?}"),
    }
}

fn rendered(properties: &[(String, OwnedValue)]) -> Vec<String> {
    properties
        .iter()
        .map(|(name, value)| format!("{name}:{}={}", value.value_signature(), render(value)))
        .collect()
}

#[derive(Clone, Debug)]
struct FakeManager {
    state: Arc<Mutex<State>>,
}

impl FakeManager {
    /// Queues a job for `unit` and arranges its `JobRemoved`.
    async fn job(&self, unit: &str, emitter: &SignalEmitter<'_>) -> OwnedObjectPath {
        let (id, result, before, silent) = {
            let mut state = self.state.lock().unwrap();
            state.next_job += 1;
            let result = state
                .job_results
                .get(unit)
                .cloned()
                .unwrap_or_else(|| "done".to_string());
            (
                state.next_job,
                result,
                state.signal_before_reply,
                state.silent,
            )
        };
        let path =
            OwnedObjectPath::try_from(format!("/org/freedesktop/systemd1/job/{id}")).unwrap();
        if silent {
            return path;
        }
        if before {
            Self::job_removed(emitter, id, path.as_ref(), unit, &result)
                .await
                .unwrap();
        } else {
            let emitter = emitter.to_owned();
            let job = path.clone();
            let unit = unit.to_string();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(5)).await;
                let _ = Self::job_removed(&emitter, id, job.as_ref(), &unit, &result).await;
            });
        }
        path
    }
}

#[zbus::interface(name = "org.freedesktop.systemd1.Manager")]
impl FakeManager {
    async fn start_transient_unit(
        &self,
        name: String,
        mode: String,
        properties: Vec<(String, OwnedValue)>,
        aux: Vec<(String, Vec<(String, OwnedValue)>)>,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
    ) -> Result<OwnedObjectPath, ManagerError> {
        {
            let mut state = self.state.lock().unwrap();
            state.calls.push(format!(
                "StartTransientUnit {name} {mode} aux={}",
                aux.len()
            ));
            if state.units.contains_key(&name) {
                return Err(ManagerError::UnitExists(format!(
                    "Unit {name} was already loaded or has a fragment file."
                )));
            }
            let failing = state.job_results.contains_key(&name);
            if !failing {
                state.units.insert(name.clone(), rendered(&properties));
            }
        }
        Ok(self.job(&name, &emitter).await)
    }

    async fn stop_unit(
        &self,
        name: String,
        mode: String,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
    ) -> Result<OwnedObjectPath, ManagerError> {
        {
            let mut state = self.state.lock().unwrap();
            state.calls.push(format!("StopUnit {name} {mode}"));
            if state.units.remove(&name).is_none() {
                return Err(ManagerError::NoSuchUnit(format!("Unit {name} not loaded.")));
            }
        }
        Ok(self.job(&name, &emitter).await)
    }

    async fn set_unit_properties(
        &self,
        name: String,
        runtime: bool,
        properties: Vec<(String, OwnedValue)>,
    ) -> Result<(), ManagerError> {
        let mut state = self.state.lock().unwrap();
        state
            .calls
            .push(format!("SetUnitProperties {name} runtime={runtime}"));
        match state.units.get_mut(&name) {
            Some(props) => {
                props.extend(rendered(&properties));
                Ok(())
            }
            None => Err(ManagerError::NoSuchUnit(format!("Unit {name} not loaded."))),
        }
    }

    async fn reset_failed_unit(&self, name: String) -> Result<(), ManagerError> {
        self.state
            .lock()
            .unwrap()
            .calls
            .push(format!("ResetFailedUnit {name}"));
        Ok(())
    }

    #[zbus(property)]
    async fn version(&self) -> String {
        "252.22-1~deb12u1".to_string()
    }

    #[zbus(signal)]
    async fn job_removed(
        emitter: &SignalEmitter<'_>,
        id: u32,
        job: ObjectPath<'_>,
        unit: &str,
        result: &str,
    ) -> zbus::Result<()>;
}

enum Command {
    /// Close every accepted connection (as a systemd re-exec does).
    Disconnect(std::sync::mpsc::SyncSender<()>),
}

/// The stand-in, on its own thread; stops on drop.
struct FakeSystemd {
    _dir: tempfile::TempDir,
    socket: PathBuf,
    state: Arc<Mutex<State>>,
    commands: Option<tokio::sync::mpsc::UnboundedSender<Command>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

async fn serve_fake(
    listener: tokio::net::UnixListener,
    manager: FakeManager,
    mut commands: tokio::sync::mpsc::UnboundedReceiver<Command>,
) {
    let mut conns: Vec<zbus::Connection> = Vec::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { return };
                let conn = zbus::connection::Builder::unix_stream(stream)
                    .server(zbus::Guid::generate())
                    .unwrap()
                    .p2p()
                    .serve_at(OBJECT, manager.clone())
                    .unwrap()
                    .build()
                    .await;
                if let Ok(conn) = conn {
                    conns.push(conn);
                }
            }
            command = commands.recv() => match command {
                Some(Command::Disconnect(done)) => {
                    for conn in conns.drain(..) {
                        let _ = conn.close().await;
                    }
                    let _ = done.send(());
                }
                None => return,
            },
        }
    }
}

impl FakeSystemd {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("private");
        let state = Arc::new(Mutex::new(State::default()));
        let manager = FakeManager {
            state: state.clone(),
        };
        let (commands, receiver) = tokio::sync::mpsc::unbounded_channel();
        let (bound_tx, bound_rx) = std::sync::mpsc::sync_channel(1);
        let path = socket.clone();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::UnixListener::bind(&path).unwrap();
                bound_tx.send(()).unwrap();
                serve_fake(listener, manager, receiver).await;
            });
        });
        bound_rx.recv().unwrap();
        Self {
            _dir: dir,
            socket,
            state,
            commands: Some(commands),
            thread: Some(thread),
        }
    }

    fn options(&self) -> ClientOptions {
        ClientOptions {
            endpoints: vec![Endpoint::Private(self.socket.clone())],
            call_timeout: Duration::from_secs(5),
            job_timeout: Duration::from_secs(5),
        }
    }

    fn client(&self) -> DbusSystemd {
        DbusSystemd::connect(self.options()).unwrap()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }

    fn disconnect_all(&self) {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.commands
            .as_ref()
            .unwrap()
            .send(Command::Disconnect(tx))
            .unwrap();
        rx.recv().unwrap();
    }
}

impl Drop for FakeSystemd {
    fn drop(&mut self) {
        self.commands.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn slice_properties() -> Vec<UnitProperty> {
    vec![
        UnitProperty::new("Description", PropertyValue::Str("kwk-node pods".into())),
        UnitProperty::new("Wants", PropertyValue::StrList(vec!["-.slice".to_string()])),
        UnitProperty::new("DefaultDependencies", PropertyValue::Bool(false)),
        UnitProperty::new("CPUWeight", PropertyValue::U64(20)),
        UnitProperty::new("MemoryMax", PropertyValue::U64(INFINITY)),
    ]
}

#[test]
fn parses_systemd_versions() {
    for (text, want) in [
        ("252.22-1~deb12u1", 252),
        ("239 (239-74.el8_8.2)", 239),
        ("v256.1", 256),
        ("255", 255),
        ("", 0),
        ("unknown", 0),
    ] {
        assert_eq!(parse_version(text), want, "{text:?}");
    }
}

#[test]
fn starts_a_unit_with_typed_properties_and_waits_for_its_job() {
    let fake = FakeSystemd::start();
    let client = fake.client();
    assert_eq!(client.version(), 252);
    assert_eq!(client.endpoint(), &Endpoint::Private(fake.socket.clone()));
    assert_eq!(
        client
            .start_transient_unit("kubepods.slice", &slice_properties())
            .unwrap(),
        Started::Created
    );
    let state = fake.state();
    assert_eq!(
        state.units["kubepods.slice"],
        [
            "Description:s=kwk-node pods",
            "Wants:as=-.slice",
            "DefaultDependencies:b=false",
            "CPUWeight:t=20",
            "MemoryMax:t=infinity",
        ]
    );
    assert_eq!(
        state.calls,
        ["StartTransientUnit kubepods.slice replace aux=0"]
    );
}

#[test]
fn a_job_signal_ahead_of_the_reply_is_not_lost() {
    let fake = FakeSystemd::start();
    fake.state().signal_before_reply = true;
    let client = fake.client();
    for i in 0..5 {
        let unit = format!("kubepods-pod{i}.slice");
        assert_eq!(
            client.start_transient_unit(&unit, &[]).unwrap(),
            Started::Created
        );
        assert_eq!(client.stop_unit(&unit).unwrap(), Stopped::Stopped);
    }
}

#[test]
fn an_existing_unit_is_adopted_and_updated() {
    let fake = FakeSystemd::start();
    let client = fake.client();
    client
        .start_transient_unit("kubepods.slice", &slice_properties())
        .unwrap();
    assert_eq!(
        client
            .start_transient_unit("kubepods.slice", &slice_properties())
            .unwrap(),
        Started::AlreadyLoaded
    );
    client
        .set_unit_properties(
            "kubepods.slice",
            &[UnitProperty::new("TasksMax", PropertyValue::U64(4096))],
        )
        .unwrap();
    let state = fake.state();
    assert_eq!(
        state.units["kubepods.slice"].last().unwrap(),
        "TasksMax:t=4096"
    );
    assert_eq!(
        state.calls.last().unwrap(),
        "SetUnitProperties kubepods.slice runtime=true"
    );
}

#[test]
fn a_failed_job_is_an_error_naming_the_unit_and_resets_it() {
    let fake = FakeSystemd::start();
    fake.state()
        .job_results
        .insert("kubepods-podx.slice".into(), "failed".into());
    let client = fake.client();
    let err = client
        .start_transient_unit("kubepods-podx.slice", &slice_properties())
        .unwrap_err();
    assert!(matches!(err, SystemdError::Job { ref result, .. } if result == "failed"));
    let text = err.to_string();
    assert!(
        text.contains("StartTransientUnit kubepods-podx.slice") && text.contains("\"failed\""),
        "{text}"
    );
    assert_eq!(
        fake.state().calls.last().unwrap(),
        "ResetFailedUnit kubepods-podx.slice"
    );
}

#[test]
fn a_job_that_never_ends_times_out() {
    let fake = FakeSystemd::start();
    fake.state().silent = true;
    let client = DbusSystemd::connect(ClientOptions {
        job_timeout: Duration::from_millis(200),
        ..fake.options()
    })
    .unwrap();
    let err = client.start_transient_unit("slow.slice", &[]).unwrap_err();
    assert!(matches!(err, SystemdError::Timeout { .. }), "{err}");
    assert!(err.to_string().contains("slow.slice"), "{err}");
    assert_eq!(
        fake.state().calls.last().unwrap(),
        "ResetFailedUnit slow.slice"
    );
}

#[test]
fn stop_and_set_of_missing_units() {
    let fake = FakeSystemd::start();
    let client = fake.client();
    assert_eq!(
        client.stop_unit("kubepods-podgone.slice").unwrap(),
        Stopped::NotLoaded
    );
    let err = client
        .set_unit_properties("kubepods-podgone.slice", &slice_properties()[3..])
        .unwrap_err();
    assert!(err.is_no_such_unit(), "{err}");
    assert_eq!(
        err.to_string(),
        "systemd SetUnitProperties kubepods-podgone.slice: \
         org.freedesktop.systemd1.NoSuchUnit: Unit kubepods-podgone.slice not loaded."
    );
    client.start_transient_unit("a.slice", &[]).unwrap();
    assert_eq!(client.stop_unit("a.slice").unwrap(), Stopped::Stopped);
    assert!(fake.state().units.is_empty());
}

#[test]
fn reconnects_after_the_connection_drops() {
    let fake = FakeSystemd::start();
    let client = fake.client();
    client.start_transient_unit("a.slice", &[]).unwrap();
    fake.disconnect_all();
    assert_eq!(
        client.start_transient_unit("b.slice", &[]).unwrap(),
        Started::Created
    );
    assert!(fake.state().units.contains_key("b.slice"));
}

#[test]
fn unreachable_systemd_names_every_endpoint() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("private");
    let not_a_socket = dir.path().join("file");
    std::fs::write(&not_a_socket, "").unwrap();
    let err = DbusSystemd::connect(ClientOptions {
        endpoints: vec![
            Endpoint::Private(missing.clone()),
            Endpoint::Private(not_a_socket.clone()),
        ],
        ..ClientOptions::default()
    })
    .unwrap_err();
    let text = err.to_string();
    for needle in [
        "cgroupDriver is systemd, but systemd cannot be reached over D-Bus",
        &missing.display().to_string(),
        &not_a_socket.display().to_string(),
        "cgroupfs",
    ] {
        assert!(text.contains(needle), "{needle:?} not in {text}");
    }
    assert!(matches!(err, SystemdError::Unreachable { .. }));
}

#[test]
fn the_first_reachable_endpoint_wins() {
    let fake = FakeSystemd::start();
    let client = DbusSystemd::connect(ClientOptions {
        endpoints: vec![
            Endpoint::Private(Path::new("/nonexistent/kwk/private").to_path_buf()),
            Endpoint::Private(fake.socket.clone()),
        ],
        ..fake.options()
    })
    .unwrap();
    assert_eq!(client.endpoint(), &Endpoint::Private(fake.socket.clone()));
}

#[tokio::test]
async fn blocking_calls_work_from_async_code() {
    let fake = FakeSystemd::start();
    let client = fake.client();
    assert_eq!(
        client.start_transient_unit("a.slice", &[]).unwrap(),
        Started::Created
    );
    drop(client);
}
