//! [`TurnServer`]: a TURN server the bridge handed this client ([`streams_proto::wire::IceServer`]),
//! with its URL read and its host resolved, so the media core (which does no IO) gets addresses.
//! Resolved on the client's runtime when the reply arrives ([`resolve`]), with the TLS
//! configuration a `turns:` server needs; URLs this client cannot use (a bad URL, a name that does
//! not resolve) are logged and left out.
use std::net::SocketAddr;
use std::sync::Arc;

use streams_proto::wire::IceServer;
use streams_proto::{TurnTransport, TurnUrl};

/// The TLS configuration for a `turns:` server (the platform's roots). Equal when it is the same
/// configuration.
#[derive(Clone, Debug)]
pub struct TurnTlsConfig(pub Arc<rustls::ClientConfig>);

impl PartialEq for TurnTlsConfig {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for TurnTlsConfig {}

/// A TURN server to allocate a relay on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TurnServer {
    /// As the bridge gave it.
    pub url: TurnUrl,
    /// Where it was resolved to.
    pub addr: SocketAddr,
    /// The TURN username.
    pub username: String,
    /// The TURN password.
    pub credential: String,
    /// For `turns:`: how its certificate is checked.
    pub tls: Option<TurnTlsConfig>,
}

/// The usable servers among `servers`, in their order: each URL of each server, at its first
/// IPv4 and its first IPv6 address.
pub async fn resolve(servers: Vec<IceServer>) -> Vec<TurnServer> {
    let mut usable = Vec::new();
    let mut tls: Option<Option<TurnTlsConfig>> = None;
    for server in servers {
        for url in &server.urls {
            let url: TurnUrl = match url.parse() {
                Ok(url) => url,
                Err(e) => {
                    tracing::warn!("{e}");
                    continue;
                }
            };
            let server_tls = if url.transport == TurnTransport::Tls {
                // Made once (reading the platform's certificates), off the runtime's threads.
                if tls.is_none() {
                    let made = tokio::task::spawn_blocking(crate::tls::turn_client_config).await;
                    tls = Some(match made {
                        Ok(Ok(config)) => Some(TurnTlsConfig(config)),
                        Ok(Err(e)) => {
                            tracing::warn!("no TLS for TURN servers: {e}");
                            None
                        }
                        Err(e) => {
                            tracing::warn!("no TLS for TURN servers: {e}");
                            None
                        }
                    });
                }
                match tls.clone().flatten() {
                    Some(config) => Some(config),
                    None => continue,
                }
            } else {
                None
            };
            let addrs: Vec<SocketAddr> =
                match tokio::net::lookup_host((url.host.as_str(), url.port)).await {
                    Ok(addrs) => addrs.collect(),
                    Err(e) => {
                        tracing::warn!("cannot resolve TURN server {url}: {e}");
                        continue;
                    }
                };
            // The first address of each family: the media engine takes the one its socket has.
            let v4 = addrs.iter().find(|a| a.is_ipv4());
            let v6 = addrs.iter().find(|a| a.is_ipv6());
            for addr in v4.into_iter().chain(v6) {
                usable.push(TurnServer {
                    url: url.clone(),
                    addr: *addr,
                    username: server.username.clone(),
                    credential: server.credential.clone(),
                    tls: server_tls.clone(),
                });
            }
        }
    }
    usable
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn usable_urls_are_resolved_and_the_rest_left_out() {
        let server = IceServer {
            urls: vec![
                "turn:127.0.0.1:3479?transport=tcp".into(),
                "stun:127.0.0.1".into(),
                "turns:127.0.0.1".into(),
                "turn:localhost".into(),
            ],
            username: "1:u".into(),
            credential: "p".into(),
            expires_at: 1,
        };
        let usable = resolve(vec![server]).await;
        // localhost may also resolve to ::1.
        assert!(usable.len() == 3 || usable.len() == 4, "{usable:?}");
        assert_eq!(usable[0].addr, "127.0.0.1:3479".parse().unwrap());
        assert_eq!(usable[0].url.transport, TurnTransport::Tcp);
        assert!(usable[0].tls.is_none());
        assert_eq!(usable[1].addr, "127.0.0.1:5349".parse().unwrap());
        assert_eq!(usable[1].url.transport, TurnTransport::Tls);
        assert!(
            usable[1].tls.is_some(),
            "checked against the platform's roots"
        );
        assert!(usable[2].addr.ip().is_loopback());
        assert_eq!(usable[2].addr.port(), 3478);
        assert_eq!(
            (usable[2].username.as_str(), usable[2].credential.as_str()),
            ("1:u", "p")
        );
    }
}
