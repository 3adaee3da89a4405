//! The systemd cgroup driver's side of systemd: node, QoS and pod cgroups are transient slice
//! units that systemd creates, updates and stops on request over its D-Bus API, as the upstream
//! kubelet has runc's systemd cgroup manager do.
//!
//! [`properties`] turns our resource configs into typed unit properties (pure). [`SystemdApi`]
//! is the boundary: the four calls the cgroup manager needs, implemented for real by
//! [`dbus::DbusSystemd`] and in tests by a recording fake.

pub mod dbus;
pub mod properties;

#[cfg(test)]
pub(crate) mod fake;

use std::time::Duration;

/// A unit property value with its D-Bus type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PropertyValue {
    /// `b`
    Bool(bool),
    /// `t`; [`properties::INFINITY`] (`u64::MAX`) is systemd's "infinity".
    U64(u64),
    /// `s`
    Str(String),
    /// `as`
    StrList(Vec<String>),
}

impl PropertyValue {
    /// The D-Bus type signature.
    pub fn signature(&self) -> &'static str {
        match self {
            PropertyValue::Bool(_) => "b",
            PropertyValue::U64(_) => "t",
            PropertyValue::Str(_) => "s",
            PropertyValue::StrList(_) => "as",
        }
    }
}

/// One unit property (`(sv)` in `StartTransientUnit` and `SetUnitProperties`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnitProperty {
    pub name: &'static str,
    pub value: PropertyValue,
}

impl UnitProperty {
    pub fn new(name: &'static str, value: PropertyValue) -> Self {
        Self { name, value }
    }
}

/// What `StartTransientUnit` did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Started {
    /// The unit was created and its start job finished with `done`.
    Created,
    /// A unit of that name is already loaded (systemd answered `UnitExists`): adopt it.
    AlreadyLoaded,
}

/// What `StopUnit` did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stopped {
    /// The stop job finished with `done`.
    Stopped,
    /// No such unit was loaded (systemd answered `NoSuchUnit`).
    NotLoaded,
}

/// The calls the cgroup manager makes to systemd. Synchronous, like the rest of the cgroup
/// code; implementations wait for systemd's jobs to finish.
pub trait SystemdApi: Send + Sync + std::fmt::Debug {
    /// `StartTransientUnit(unit, "replace", properties, [])`, then waits for the job.
    fn start_transient_unit(
        &self,
        unit: &str,
        properties: &[UnitProperty],
    ) -> Result<Started, SystemdError>;

    /// `SetUnitProperties(unit, runtime = true, properties)`.
    fn set_unit_properties(
        &self,
        unit: &str,
        properties: &[UnitProperty],
    ) -> Result<(), SystemdError>;

    /// `StopUnit(unit, "replace")`, then waits for the job.
    fn stop_unit(&self, unit: &str) -> Result<Stopped, SystemdError>;

    /// systemd's major version (`252` for "252.22-1~deb12u1"); 0 when unknown.
    fn version(&self) -> u32;
}

/// D-Bus error names systemd answers with that the driver tells apart.
pub mod error_names {
    pub const UNIT_EXISTS: &str = "org.freedesktop.systemd1.UnitExists";
    pub const NO_SUCH_UNIT: &str = "org.freedesktop.systemd1.NoSuchUnit";
}

/// Why a call to systemd failed. Every variant names the D-Bus method and the unit.
#[derive(Debug, thiserror::Error)]
pub enum SystemdError {
    /// Neither systemd's private socket nor the system bus answered as systemd.
    #[error(
        "cgroupDriver is systemd, but systemd cannot be reached over D-Bus ({attempts}); \
         the systemd driver needs systemd as PID 1 (use cgroupDriver: cgroupfs otherwise)"
    )]
    Unreachable { attempts: ConnectAttempts },
    /// systemd answered the call with a D-Bus error.
    #[error("systemd {method} {unit}: {name}: {message}")]
    Call {
        method: &'static str,
        unit: String,
        /// The D-Bus error name (`org.freedesktop.systemd1.NoSuchUnit`).
        name: String,
        message: String,
    },
    /// The job systemd queued finished with a result other than `done`.
    #[error("systemd {method} {unit}: job {job} finished with result {result:?}")]
    Job {
        method: &'static str,
        unit: String,
        job: String,
        result: String,
    },
    /// No answer, or no end of the job, in time.
    #[error("systemd {method} {unit}: no result within {timeout:?}")]
    Timeout {
        method: &'static str,
        unit: String,
        timeout: Duration,
    },
    /// The connection failed or the answer could not be read.
    #[error("systemd {method} {unit}: {source}")]
    Transport {
        method: &'static str,
        unit: String,
        #[source]
        source: Box<zbus::Error>,
    },
    /// The thread that talks to systemd could not be started or has stopped.
    #[error("systemd D-Bus client: {reason}")]
    Client { reason: &'static str },
}

impl SystemdError {
    /// Whether systemd said the unit is not loaded.
    pub fn is_no_such_unit(&self) -> bool {
        matches!(self, SystemdError::Call { name, .. } if name == error_names::NO_SUCH_UNIT)
    }
}

/// Each endpoint tried and why it failed, for [`SystemdError::Unreachable`].
#[derive(Debug, Default)]
pub struct ConnectAttempts(pub Vec<(String, String)>);

impl std::fmt::Display for ConnectAttempts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.is_empty() {
            return f.write_str("no endpoint configured");
        }
        for (i, (endpoint, why)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{endpoint}: {why}")?;
        }
        Ok(())
    }
}
