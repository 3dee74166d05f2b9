//! Real networks for tests and benchmarks, on loopback (this kernel has no netem):
//!
//! - [`udp_relay::UdpRelay`] sits between a media client and the SFU and impairs each direction on
//!   its own — drop, delay, jitter, reorder, rate limit — from a seed, so a run can be repeated;
//! - [`ws_proxy::WsProxy`] sits between a client and the bridge's WebSocket and relays messages, which
//!   a test can hold back and release, delay, inspect, rewrite or drop, and whose connections it can
//!   cut cleanly or reset.
//!
//! Both run on threads of their own, stop when dropped, and never panic on what crosses them.
#![warn(missing_docs)]

pub mod udp_relay;
pub mod ws_proxy;

/// Which way something travels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// From the client to the server (the bridge or the SFU).
    ToServer,
    /// From the server to the client.
    ToClient,
}
