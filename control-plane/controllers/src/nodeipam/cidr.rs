//! A CIDR block (`10.244.0.0/16`, `fd00:10:244::/56`) on `std::net`, with its network
//! address as a `u128` for subnet arithmetic.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// An IPv4 or IPv6 network: address (host bits cleared) and prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

/// Why a string is not a CIDR.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid CIDR address: {input}")]
pub struct CidrParseError {
    pub input: String,
}

impl Cidr {
    /// `addr/prefix`, host bits cleared; `None` when the prefix is too long.
    pub fn new(addr: IpAddr, prefix: u8) -> Option<Self> {
        let bits = if addr.is_ipv4() { 32 } else { 128 };
        if prefix > bits {
            return None;
        }
        let raw = match addr {
            IpAddr::V4(a) => u128::from(u32::from(a)),
            IpAddr::V6(a) => u128::from(a),
        };
        let network = raw & mask(bits, prefix);
        Some(Self::with(addr.is_ipv4(), network, prefix))
    }

    fn with(ipv4: bool, network: u128, prefix: u8) -> Self {
        let addr = if ipv4 {
            IpAddr::V4(Ipv4Addr::from(u32::try_from(network).unwrap_or(u32::MAX)))
        } else {
            IpAddr::V6(Ipv6Addr::from(network))
        };
        Cidr { addr, prefix }
    }

    /// The network of `prefix` at `network`, in `family`'s address family.
    pub(super) fn from_network(family: Cidr, network: u128, prefix: u8) -> Self {
        Self::with(family.is_ipv4(), network, prefix)
    }

    pub fn is_ipv4(&self) -> bool {
        self.addr.is_ipv4()
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// 32 or 128.
    pub fn bits(&self) -> u8 {
        if self.is_ipv4() { 32 } else { 128 }
    }

    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The network address as a number.
    pub fn network(&self) -> u128 {
        match self.addr {
            IpAddr::V4(a) => u128::from(u32::from(a)),
            IpAddr::V6(a) => u128::from(a),
        }
    }

    /// Whether the two share an address (same family, and one contains the other).
    pub fn overlaps(&self, other: &Cidr) -> bool {
        if self.is_ipv4() != other.is_ipv4() {
            return false;
        }
        let shorter = self.prefix.min(other.prefix);
        let m = mask(self.bits(), shorter);
        self.network() & m == other.network() & m
    }
}

/// The netmask of `prefix` in a `bits`-wide family, as a `u128`.
fn mask(bits: u8, prefix: u8) -> u128 {
    let width = if bits == 32 {
        u128::from(u32::MAX)
    } else {
        u128::MAX
    };
    width & !width.checked_shr(u32::from(prefix)).unwrap_or(0)
}

impl FromStr for Cidr {
    type Err = CidrParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || CidrParseError {
            input: s.to_string(),
        };
        let (addr, prefix) = s.trim().split_once('/').ok_or_else(err)?;
        let addr: IpAddr = addr.parse().map_err(|_| err())?;
        if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_digit()) {
            return Err(err());
        }
        let prefix: u8 = prefix.parse().map_err(|_| err())?;
        Cidr::new(addr, prefix).ok_or_else(err)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}
