//! `Cidr`: an IP prefix (`10.244.0.0/16`, `fd00::/64`) with a `contains` test. Owns nothing else;
//! kept here so the pure model needs no network crate.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use super::IpFamily;

/// An IP prefix. The address is stored with its host bits cleared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cidr {
    network: IpAddr,
    prefix_len: u8,
}

/// Why a string is not a CIDR.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrParseError {
    #[error("{input:?} is not of the form ADDRESS/PREFIX")]
    MissingSlash { input: String },
    #[error("{input:?}: the address part is not an IP address")]
    BadAddress { input: String },
    #[error("{input:?}: the prefix length is not a number within the address width")]
    BadPrefix { input: String },
}

impl Cidr {
    /// A prefix from an address and a length; `None` when the length exceeds the address width.
    pub fn new(addr: IpAddr, prefix_len: u8) -> Option<Self> {
        let width = match addr {
            IpAddr::V4(_) => 32,
            IpAddr::V6(_) => 128,
        };
        if prefix_len > width {
            return None;
        }
        let network = match addr {
            IpAddr::V4(v4) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(prefix_len))
                    .unwrap_or(0);
                IpAddr::V4((u32::from(v4) & mask).into())
            }
            IpAddr::V6(v6) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(prefix_len))
                    .unwrap_or(0);
                IpAddr::V6((u128::from(v6) & mask).into())
            }
        };
        Some(Self {
            network,
            prefix_len,
        })
    }

    /// The network address (host bits zero).
    pub fn network(&self) -> IpAddr {
        self.network
    }

    /// The prefix length in bits.
    pub fn prefix_len(&self) -> u8 {
        self.prefix_len
    }

    /// The address family of the prefix.
    pub fn family(&self) -> IpFamily {
        IpFamily::of(self.network)
    }

    /// Whether `ip` lies inside the prefix (always false across families).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip) {
            (IpAddr::V4(_), IpAddr::V4(_)) | (IpAddr::V6(_), IpAddr::V6(_)) => {
                Cidr::new(ip, self.prefix_len).is_some_and(|c| c.network == self.network)
            }
            _ => false,
        }
    }
}

impl FromStr for Cidr {
    type Err = CidrParseError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let (addr, len) = input
            .split_once('/')
            .ok_or_else(|| CidrParseError::MissingSlash {
                input: input.to_owned(),
            })?;
        let addr: IpAddr = addr.parse().map_err(|_| CidrParseError::BadAddress {
            input: input.to_owned(),
        })?;
        let bad_prefix = || CidrParseError::BadPrefix {
            input: input.to_owned(),
        };
        let len: u8 = len.parse().map_err(|_| bad_prefix())?;
        Cidr::new(addr, len).ok_or_else(bad_prefix)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix_len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contains_table() {
        let cases = [
            ("10.244.0.0/16", "10.244.3.4", true),
            ("10.244.0.0/16", "10.245.0.1", false),
            ("10.244.1.7/24", "10.244.1.200", true),
            ("0.0.0.0/0", "192.0.2.1", true),
            ("10.0.0.0/8", "fd00::1", false),
            ("fd00:10::/64", "fd00:10::5", true),
            ("fd00:10::/64", "fd00:11::5", false),
            ("::/0", "10.0.0.1", false),
        ];
        for (cidr, ip, want) in cases {
            let c: Cidr = cidr.parse().unwrap();
            assert_eq!(c.contains(ip.parse().unwrap()), want, "{cidr} ∋ {ip}");
        }
    }

    #[test]
    fn parse_errors() {
        assert!(matches!(
            "10.0.0.0".parse::<Cidr>(),
            Err(CidrParseError::MissingSlash { .. })
        ));
        assert!(matches!(
            "10.0.0/8".parse::<Cidr>(),
            Err(CidrParseError::BadAddress { .. })
        ));
        assert!(matches!(
            "10.0.0.0/33".parse::<Cidr>(),
            Err(CidrParseError::BadPrefix { .. })
        ));
        assert_eq!(
            "10.1.2.3/8".parse::<Cidr>().unwrap().to_string(),
            "10.0.0.0/8"
        );
    }
}
