//! [`MediaAddresses`]: where a forwarding worker's media is reached. Each session announces one
//! ICE host candidate per address here, and str0m accepts a datagram only when its destination is
//! one of them; but the address a datagram really arrives at is the bound one, or for a `0.0.0.0`
//! bind one of the machine's, or behind a 1:1 (destination) NAT a private one. So each datagram's
//! local address (IP_PKTINFO) is mapped to the announced address it was sent to; on a wildcard
//! bind each session's replies leave from the local address its datagrams last arrived at (the
//! core keeps it per session).
//!
//! What is announced is one explicit setting, shown at start (`--media-public-ip`): the public
//! addresses when given, else the bound address, else (a wildcard bind) every address of the
//! machine's interfaces but loopback and IPv6 link-local. An unspecified address is never
//! announced.
use std::net::{IpAddr, SocketAddr};

/// The announced addresses could not be worked out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AddressError {
    /// A public address that no client can send to.
    #[error("--media-public-ip {0} cannot be announced (unspecified, multicast or broadcast)")]
    Unannounceable(IpAddr),
    /// A public address of a family the media socket cannot receive.
    #[error(
        "--media-public-ip {public} is IPv6 but the media socket is bound to IPv4 {bound}: \
         bind [::] to serve both"
    )]
    FamilyMismatch {
        /// The public address.
        public: IpAddr,
        /// The bound address.
        bound: SocketAddr,
    },
    /// A public IPv4 address for a socket bound to one IPv6 address, which IPv4 cannot reach.
    #[error(
        "--media-public-ip {public} is IPv4 but the media socket is bound to IPv6 {bound}: \
         bind [::] or an IPv4 address"
    )]
    Ipv4OnIpv6 {
        /// The public address.
        public: IpAddr,
        /// The bound address.
        bound: SocketAddr,
    },
    /// A wildcard bind, no public address given, and no interface address to announce.
    #[error(
        "the media socket is bound to {0} and this machine has no address to announce: \
         give --media-public-ip"
    )]
    NothingToAnnounce(SocketAddr),
}

/// A worker's announced addresses and how datagrams map to them.
#[derive(Debug, Clone)]
pub struct MediaAddresses {
    /// Announced, in order of preference (the first of a family is the fallback for it).
    announced: Vec<SocketAddr>,
    /// The socket is bound to an unspecified address: replies name their source IP.
    wildcard: bool,
}

fn announceable(ip: IpAddr) -> bool {
    let broadcast = matches!(ip, IpAddr::V4(v4) if v4.is_broadcast());
    !(ip.is_unspecified() || ip.is_multicast() || broadcast)
}

fn ipv6_link_local(ip: IpAddr) -> bool {
    matches!(ip, IpAddr::V6(v6) if v6.is_unicast_link_local())
}

impl MediaAddresses {
    /// The addresses a socket bound at `bound` (its real port) announces: `public` when given,
    /// else `bound` itself, else (an unspecified `bound`) the usable `interfaces` of the families
    /// it receives (an IPv6 socket is dual-stack).
    pub fn new(
        bound: SocketAddr,
        public: &[IpAddr],
        interfaces: &[IpAddr],
    ) -> Result<Self, AddressError> {
        let wildcard = bound.ip().is_unspecified();
        let receives = |ip: &IpAddr| bound.is_ipv6() || ip.is_ipv4();
        let ips: Vec<IpAddr> = if !public.is_empty() {
            for ip in public {
                if !announceable(*ip) {
                    return Err(AddressError::Unannounceable(*ip));
                }
                if !receives(ip) {
                    return Err(AddressError::FamilyMismatch { public: *ip, bound });
                }
                if !wildcard && bound.is_ipv6() && ip.is_ipv4() {
                    return Err(AddressError::Ipv4OnIpv6 { public: *ip, bound });
                }
            }
            public.to_vec()
        } else if !wildcard {
            vec![bound.ip()]
        } else {
            let usable: Vec<IpAddr> = interfaces
                .iter()
                .map(|ip| ip.to_canonical())
                .filter(|ip| receives(ip) && announceable(*ip) && !ipv6_link_local(*ip))
                .collect();
            let outside: Vec<IpAddr> = usable
                .iter()
                .copied()
                .filter(|ip| !ip.is_loopback())
                .collect();
            // Loopback only when it is all there is (a machine with no network).
            if outside.is_empty() { usable } else { outside }
        };
        let mut announced: Vec<SocketAddr> = Vec::new();
        for ip in ips {
            let addr = SocketAddr::new(ip, bound.port());
            if !announced.contains(&addr) {
                announced.push(addr);
            }
        }
        if announced.is_empty() {
            return Err(AddressError::NothingToAnnounce(bound));
        }
        Ok(MediaAddresses {
            announced,
            wildcard,
        })
    }

    /// What every session announces, in order of preference.
    pub fn announced(&self) -> &[SocketAddr] {
        &self.announced
    }

    /// The announced address a datagram from `source` that arrived at the local IP `local` was
    /// sent to: the one with that IP, else the first of its family (of `source`'s family when the
    /// platform did not say), else the first.
    pub fn announced_for(&self, local: Option<IpAddr>, source: SocketAddr) -> SocketAddr {
        let ipv4 = local.map_or(source.is_ipv4(), |ip| ip.is_ipv4());
        local
            .and_then(|ip| self.announced.iter().find(|a| a.ip() == ip))
            .or_else(|| self.announced.iter().find(|a| a.is_ipv4() == ipv4))
            .copied()
            .unwrap_or(self.announced[0])
    }

    /// Whether the socket is bound to an unspecified address, so that a reply must say which
    /// local address it leaves from (the one its session's datagrams arrive at).
    pub fn is_wildcard(&self) -> bool {
        self.wildcard
    }

    /// The announced addresses as a log line shows them.
    pub fn describe(&self) -> String {
        let all: Vec<String> = self.announced.iter().map(SocketAddr::to_string).collect();
        all.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    const V4_PEER: &str = "198.51.100.1:5000";
    const V6_PEER: &str = "[2001:db8::99]:5000";

    #[test]
    fn a_bound_address_is_announced_as_it_is_unless_public_ones_are_given() {
        let peer = addr(V4_PEER);
        let bound = MediaAddresses::new(addr("10.0.0.2:7801"), &[], &[]).unwrap();
        assert_eq!(bound.announced(), [addr("10.0.0.2:7801")]);
        assert_eq!(
            bound.announced_for(Some(ip("10.0.0.2")), peer),
            addr("10.0.0.2:7801")
        );
        assert!(!bound.is_wildcard());

        // Behind a 1:1 NAT: datagrams arrive at the private address and map to the public one.
        let natted = MediaAddresses::new(addr("10.0.0.2:7801"), &[ip("203.0.113.7")], &[]).unwrap();
        assert_eq!(natted.announced(), [addr("203.0.113.7:7801")]);
        assert_eq!(
            natted.announced_for(Some(ip("10.0.0.2")), peer),
            addr("203.0.113.7:7801")
        );
        assert_eq!(natted.announced_for(None, peer), addr("203.0.113.7:7801"));
    }

    #[test]
    fn a_wildcard_bind_announces_the_interfaces_and_maps_each_arrival_to_one() {
        let interfaces = [
            ip("127.0.0.1"),
            ip("10.0.0.2"),
            ip("192.168.1.9"),
            ip("::1"),
            ip("fe80::1"),
            ip("2001:db8::2"),
        ];
        let v4 = MediaAddresses::new(addr("0.0.0.0:7801"), &[], &interfaces).unwrap();
        assert_eq!(
            v4.announced(),
            [addr("10.0.0.2:7801"), addr("192.168.1.9:7801")]
        );
        assert!(v4.is_wildcard());
        let dual = MediaAddresses::new(addr("[::]:7801"), &[], &interfaces).unwrap();
        assert_eq!(
            dual.announced(),
            [
                addr("10.0.0.2:7801"),
                addr("192.168.1.9:7801"),
                addr("[2001:db8::2]:7801")
            ]
        );
        assert!(dual.announced().iter().all(|a| !a.ip().is_unspecified()));
        let (p4, p6) = (addr(V4_PEER), addr(V6_PEER));
        assert_eq!(
            dual.announced_for(Some(ip("192.168.1.9")), p4),
            addr("192.168.1.9:7801")
        );
        // Reached at an address not announced (loopback): the first of its family.
        assert_eq!(
            dual.announced_for(Some(ip("127.0.0.1")), p4),
            addr("10.0.0.2:7801")
        );
        assert_eq!(
            dual.announced_for(Some(ip("::1")), p6),
            addr("[2001:db8::2]:7801")
        );
        // The platform did not say: the source's family decides.
        assert_eq!(dual.announced_for(None, p6), addr("[2001:db8::2]:7801"));
        assert_eq!(dual.announced_for(None, p4), addr("10.0.0.2:7801"));

        // A machine with nothing but loopback announces loopback.
        let lonely = MediaAddresses::new(addr("0.0.0.0:7801"), &[], &[ip("127.0.0.1")]).unwrap();
        assert_eq!(lonely.announced(), [addr("127.0.0.1:7801")]);
        assert_eq!(
            MediaAddresses::new(addr("0.0.0.0:7801"), &[], &[ip("::1")]).unwrap_err(),
            AddressError::NothingToAnnounce(addr("0.0.0.0:7801"))
        );
    }

    #[test]
    fn public_addresses_of_both_families_need_a_socket_that_receives_them() {
        let both = [ip("203.0.113.7"), ip("2001:db8::7")];
        let dual = MediaAddresses::new(addr("[::]:7801"), &both, &[]).unwrap();
        assert_eq!(
            dual.announced(),
            [addr("203.0.113.7:7801"), addr("[2001:db8::7]:7801")]
        );
        assert_eq!(dual.describe(), "203.0.113.7:7801, [2001:db8::7]:7801");
        assert!(matches!(
            MediaAddresses::new(addr("0.0.0.0:7801"), &both, &[]),
            Err(AddressError::FamilyMismatch { .. })
        ));
        assert!(matches!(
            MediaAddresses::new(addr("[2001:db8::1]:7801"), &[ip("203.0.113.7")], &[]),
            Err(AddressError::Ipv4OnIpv6 { .. })
        ));
        for bad in [
            IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            ip("224.0.0.1"),
            ip("255.255.255.255"),
        ] {
            assert_eq!(
                MediaAddresses::new(addr("[::]:7801"), &[bad], &[]).unwrap_err(),
                AddressError::Unannounceable(bad)
            );
        }
    }
}
