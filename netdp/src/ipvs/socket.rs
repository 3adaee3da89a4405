//! The IPVS executor over `NETLINK_GENERIC`: resolves the family id by name, lists virtual
//! services and their destinations (with connection counters), and applies [`IpvsAction`]s (many per datagram, one ACK
//! each; the first refusal is reported, named).

use std::io;

use netlink_sys::protocols::NETLINK_GENERIC;

use super::error::IpvsError;
use super::plan::IpvsAction;
use super::wire::{
    self, GENL_HDRLEN, IPVS_CMD_DEL_DEST, IPVS_CMD_NEW_DEST, IPVS_CMD_NEW_SERVICE,
    IPVS_CMD_SET_DEST, IPVS_CMD_SET_SERVICE, IPVS_GENL_NAME,
};
use super::{Connections, Destination, ServiceKey, VirtualService};
use crate::netlink_socket::{ExchangeError, NlSocket};
use crate::netlink_wire::Writer;

const ENOENT: i32 = 2;

/// What the IPVS mode needs from the kernel; [`IpvsSocket`] implements it.
pub trait IpvsApi {
    /// Every (non-firewall-mark) virtual service.
    fn list_services(&self) -> Result<Vec<VirtualService>, IpvsError>;
    /// The destinations of one virtual service with their connection counters.
    fn list_destinations_counted(
        &self,
        key: &ServiceKey,
    ) -> Result<Vec<(Destination, Connections)>, IpvsError>;
    /// Applies `actions` in order.
    fn apply(&self, actions: &[IpvsAction]) -> Result<(), IpvsError>;

    /// The destinations of one virtual service.
    fn list_destinations(&self, key: &ServiceKey) -> Result<Vec<Destination>, IpvsError> {
        Ok(self
            .list_destinations_counted(key)?
            .into_iter()
            .map(|(d, _)| d)
            .collect())
    }

    /// Every virtual service with its destinations, as [`super::plan_changes`] takes them.
    fn list_all(&self) -> Result<Vec<(VirtualService, Vec<Destination>)>, IpvsError> {
        self.list_services()?
            .into_iter()
            .map(|s| {
                let d = self.list_destinations(&s.key)?;
                Ok((s, d))
            })
            .collect()
    }
}

/// An IPVS connection in the network namespace it was opened in. Blocking.
#[derive(Debug)]
pub struct IpvsSocket {
    socket: NlSocket,
    family_id: u16,
}

fn exchange_error(what: &str) -> impl Fn(ExchangeError) -> IpvsError + '_ {
    move |e| match e {
        ExchangeError::Send(e) => IpvsError::Send(e),
        ExchangeError::Receive(e) => IpvsError::Receive(e),
        ExchangeError::Refused(source) => IpvsError::Rejected {
            what: what.to_owned(),
            source,
            extack: None,
        },
        ExchangeError::Malformed(m) => IpvsError::Malformed(m),
    }
}

/// Resolves a generic-netlink family name to its id over `socket`.
fn resolve(socket: &NlSocket, name: &str) -> Result<u16, IpvsError> {
    let replies = socket
        .dump(|w, seq| wire::encode_get_family(w, name, seq))
        .map_err(|e| match e {
            ExchangeError::Refused(err) if err.raw_os_error() == Some(ENOENT) => {
                IpvsError::FamilyNotFound(name.to_owned())
            }
            other => exchange_error("resolve family")(other),
        })?;
    replies
        .iter()
        .find_map(|r| wire::parse_family_id(r.get(GENL_HDRLEN..).unwrap_or(&[])))
        .ok_or_else(|| IpvsError::FamilyNotFound(name.to_owned()))
}

/// The id of the generic-netlink family `name` in the calling thread's namespace (the IPVS
/// client uses it for "IPVS"; `nlctrl` always exists).
pub fn resolve_family(name: &str) -> Result<u16, IpvsError> {
    let socket = NlSocket::open(NETLINK_GENERIC).map_err(IpvsError::Socket)?;
    resolve(&socket, name)
}

impl IpvsSocket {
    /// Opens a socket in the calling thread's network namespace; fails with
    /// [`IpvsError::FamilyNotFound`] when the kernel has no IPVS.
    pub fn open() -> Result<Self, IpvsError> {
        let socket = NlSocket::open(NETLINK_GENERIC).map_err(IpvsError::Socket)?;
        let family_id = resolve(&socket, IPVS_GENL_NAME)?;
        Ok(Self { socket, family_id })
    }
}

fn encode_action(w: &mut Writer, family_id: u16, action: &IpvsAction, seq: u32) {
    match action {
        IpvsAction::NewService(s) => {
            wire::encode_service(w, family_id, IPVS_CMD_NEW_SERVICE, s, seq)
        }
        IpvsAction::SetService(s) => {
            wire::encode_service(w, family_id, IPVS_CMD_SET_SERVICE, s, seq)
        }
        IpvsAction::DelService(k) => wire::encode_del_service(w, family_id, k, seq),
        IpvsAction::NewDest(k, d) => wire::encode_dest(w, family_id, IPVS_CMD_NEW_DEST, k, d, seq),
        IpvsAction::SetDest(k, d) => wire::encode_dest(w, family_id, IPVS_CMD_SET_DEST, k, d, seq),
        IpvsAction::DelDest(k, d) => wire::encode_dest(w, family_id, IPVS_CMD_DEL_DEST, k, d, seq),
    }
}

impl IpvsApi for IpvsSocket {
    fn list_services(&self) -> Result<Vec<VirtualService>, IpvsError> {
        let replies = self
            .socket
            .dump(|w, seq| wire::encode_dump_services(w, self.family_id, seq))
            .map_err(exchange_error("list services"))?;
        let mut out = Vec::new();
        for r in &replies {
            if let Some(s) = wire::parse_service(r.get(GENL_HDRLEN..).unwrap_or(&[]))? {
                out.push(s);
            }
        }
        Ok(out)
    }

    fn list_destinations_counted(
        &self,
        key: &ServiceKey,
    ) -> Result<Vec<(Destination, Connections)>, IpvsError> {
        let replies = self
            .socket
            .dump(|w, seq| wire::encode_dump_dests(w, self.family_id, key, seq))
            .map_err(exchange_error("list destinations"))?;
        replies
            .iter()
            .map(|r| {
                wire::parse_dest(r.get(GENL_HDRLEN..).unwrap_or(&[]), key.family())
                    .map_err(IpvsError::from)
            })
            .collect()
    }

    fn apply(&self, actions: &[IpvsAction]) -> Result<(), IpvsError> {
        let acks = self
            .socket
            .acked(actions.len(), |w, i, seq| {
                encode_action(w, self.family_id, &actions[i], seq)
            })
            .map_err(exchange_error("apply"))?;
        match acks.into_iter().zip(actions).find(|(a, _)| a.errno != 0) {
            None => Ok(()),
            Some((ack, action)) => Err(IpvsError::Rejected {
                what: format!("{action:?}"),
                source: io::Error::from_raw_os_error(ack.errno),
                extack: ack.extack,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Real kernel, no privileges needed: `nlctrl` resolves to `GENL_ID_CTRL`, and a family
    /// that does not exist (this kernel has no IPVS; "kwk-no-such" never exists) is
    /// `FamilyNotFound`, which is how the IPVS mode learns that `ip_vs` is missing.
    #[test]
    fn family_resolution_against_the_running_kernel() {
        assert_eq!(
            resolve_family("nlctrl").expect("nlctrl"),
            wire::GENL_ID_CTRL
        );
        assert!(matches!(
            resolve_family("kwk-no-such"),
            Err(IpvsError::FamilyNotFound(name)) if name == "kwk-no-such"
        ));
        match IpvsSocket::open() {
            Ok(s) => assert!(s.family_id > wire::GENL_ID_CTRL),
            Err(e) => assert!(matches!(e, IpvsError::FamilyNotFound(_)), "{e}"),
        }
    }
}
