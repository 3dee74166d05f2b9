//! Which local address faces the bridge: the source address the OS routes towards its host.
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};

/// The local address to use for media towards `bridge_url`'s host (the route's source address).
pub fn local_ip_towards(bridge_url: &str) -> IpAddr {
    let host = bridge_url
        .split("://")
        .nth(1)
        .unwrap_or(bridge_url)
        .split('/')
        .next()
        .unwrap_or("127.0.0.1:7800");
    let probe = UdpSocket::bind("0.0.0.0:0").and_then(|s| {
        s.connect(host)?;
        s.local_addr()
    });
    match probe {
        Ok(SocketAddr::V4(a)) if !a.ip().is_unspecified() => IpAddr::V4(*a.ip()),
        _ => IpAddr::V4(Ipv4Addr::LOCALHOST),
    }
}
