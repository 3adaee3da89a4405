//! `Ipv4Cidr`: an IPv4 address with a prefix length (`10.1.2.3/24`), the arithmetic IPAM needs.

use std::fmt;
use std::net::Ipv4Addr;

/// An address and prefix length; the address keeps its host bits (`10.1.2.3/24` is a pod
/// address on the `10.1.2.0/24` network).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv4Cidr {
    addr: Ipv4Addr,
    prefix_len: u8,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an IPv4 CIDR (a.b.c.d/n)")]
pub struct CidrParseError(pub String);

impl Ipv4Cidr {
    pub fn new(addr: Ipv4Addr, prefix_len: u8) -> Option<Self> {
        (prefix_len <= 32).then_some(Self { addr, prefix_len })
    }

    /// `0.0.0.0/0`.
    pub fn default_route() -> Self {
        Self {
            addr: Ipv4Addr::UNSPECIFIED,
            prefix_len: 0,
        }
    }

    pub fn parse(text: &str) -> Result<Self, CidrParseError> {
        let err = || CidrParseError(text.to_owned());
        let (addr, len) = text.split_once('/').ok_or_else(err)?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| err())?;
        let len: u8 = len.parse().map_err(|_| err())?;
        Self::new(addr, len).ok_or_else(err)
    }

    pub fn addr(&self) -> Ipv4Addr {
        self.addr
    }

    pub fn prefix_len(&self) -> u8 {
        self.prefix_len
    }

    fn mask(&self) -> u32 {
        if self.prefix_len == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(self.prefix_len))
        }
    }

    /// The prefix as an address mask (`/24` is 255.255.255.0).
    pub fn netmask(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.mask())
    }

    pub fn network(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) & self.mask())
    }

    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) | !self.mask())
    }

    /// The same prefix with the host bits cleared.
    pub fn truncated(&self) -> Self {
        Self {
            addr: self.network(),
            prefix_len: self.prefix_len,
        }
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.addr) & self.mask()
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_arithmetic() {
        let cidr = Ipv4Cidr::parse("10.1.2.3/24").expect("parse");
        assert_eq!(cidr.network(), Ipv4Addr::new(10, 1, 2, 0));
        assert_eq!(cidr.broadcast(), Ipv4Addr::new(10, 1, 2, 255));
        assert_eq!(cidr.truncated().to_string(), "10.1.2.0/24");
        assert!(cidr.contains(Ipv4Addr::new(10, 1, 2, 200)));
        assert!(!cidr.contains(Ipv4Addr::new(10, 1, 3, 0)));
        let all = Ipv4Cidr::parse("0.0.0.0/0").expect("parse");
        assert!(all.contains(Ipv4Addr::new(8, 8, 8, 8)));
        assert_eq!(all, Ipv4Cidr::default_route());
        for bad in ["10.1.2.3", "10.1.2.3/33", "x/8", "10.1.2/8", "10.1.2.3/"] {
            assert!(Ipv4Cidr::parse(bad).is_err(), "{bad}");
        }
    }
}
