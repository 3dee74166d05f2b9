//! How the client reaches the bridge's signaling: the URL ([`Endpoint`]: `wss://` or `ws://`, host,
//! port), the rule that plain `ws://` goes only to loopback unless allowed, the TCP connection
//! with TLS over it ([`Transport::open`]), and [`ConnectError`], every typed reason a connection
//! attempt fails.
use std::net::IpAddr;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::http::Uri;

use crate::tls::{self, TlsError, TlsTrust};

/// Why connecting to the bridge failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// Plain `ws://` to a host that is not this machine, without the insecure option.
    #[error(
        "refusing plain ws:// to {host}: signaling (logins, room records) would cross the network unencrypted; use wss://, or allow it explicitly (--insecure / allow_insecure)"
    )]
    Insecure {
        /// The host.
        host: String,
    },
    /// The URL is not a `ws://` or `wss://` URL with a host.
    #[error("{url:?} is not a bridge URL (ws://host:port or wss://host:port): {why}")]
    InvalidUrl {
        /// The URL.
        url: String,
        /// What is wrong.
        why: String,
    },
    /// No TCP connection to the bridge.
    #[error("cannot reach {url}: {why}")]
    Unreachable {
        /// The URL.
        url: String,
        /// The system's error.
        why: String,
    },
    /// The TLS handshake failed.
    #[error("{0}")]
    Tls(#[from] TlsError),
    /// The WebSocket upgrade failed (the port speaks something else).
    #[error("WebSocket upgrade failed: {0}")]
    Upgrade(String),
    /// The bridge speaks another protocol version.
    #[error("the bridge speaks protocol {bridge}, this client {client}")]
    Protocol {
        /// The bridge's.
        bridge: u32,
        /// Ours.
        client: u32,
    },
    /// The bridge refused the login.
    #[error("the bridge refused this key: {0}")]
    Refused(String),
    /// The connection closed or failed during the handshake.
    #[error("the connection ended during the handshake: {0}")]
    Lost(String),
    /// The bridge sent something that is not a message of the protocol.
    #[error("unreadable message from the bridge: {0}")]
    Unreadable(String),
    /// No answer in time.
    #[error("no answer from {url} in time")]
    Timeout {
        /// The URL.
        url: String,
    },
}

impl ConnectError {
    /// Whether trying again may succeed without a change of settings: `false` for a refused
    /// certificate, key, protocol or URL, `true` for what networks and restarts cause.
    pub fn may_pass_on_retry(&self) -> bool {
        match self {
            ConnectError::Insecure { .. }
            | ConnectError::InvalidUrl { .. }
            | ConnectError::Protocol { .. }
            | ConnectError::Refused(_) => false,
            ConnectError::Tls(tls) => matches!(tls, TlsError::Handshake(_)),
            ConnectError::Unreachable { .. }
            | ConnectError::Upgrade(_)
            | ConnectError::Lost(_)
            | ConnectError::Unreadable(_)
            | ConnectError::Timeout { .. } => true,
        }
    }
}

/// A stream the WebSocket runs over: TCP, or TLS over TCP.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A WebSocket to the bridge.
pub type Ws = WebSocketStream<Box<dyn Io>>;

/// A bridge URL, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// The URL as given.
    pub url: String,
    /// `wss://`.
    pub secure: bool,
    /// The host: a name, or an IP address (IPv6 without the URL's brackets).
    pub host: String,
    /// The port (the scheme's default when the URL has none).
    pub port: u16,
}

impl Endpoint {
    /// Parses `url`; plain `ws://` to anything but loopback is refused unless `allow_insecure`.
    pub fn parse(url: &str, allow_insecure: bool) -> Result<Self, ConnectError> {
        let invalid = |why: &str| ConnectError::InvalidUrl {
            url: url.to_owned(),
            why: why.to_owned(),
        };
        let uri: Uri = url.parse().map_err(|_| invalid("it does not parse"))?;
        let secure = match uri.scheme_str() {
            Some("wss") => true,
            Some("ws") => false,
            _ => return Err(invalid("the scheme must be ws:// or wss://")),
        };
        let host = uri
            .host()
            .map(|h| h.trim_start_matches('[').trim_end_matches(']'))
            .filter(|h| !h.is_empty())
            .ok_or_else(|| invalid("no host"))?;
        let port = uri.port_u16().unwrap_or(if secure { 443 } else { 80 });
        if !secure && !allow_insecure && !is_loopback(host) {
            return Err(ConnectError::Insecure {
                host: host.to_owned(),
            });
        }
        Ok(Endpoint {
            url: url.to_owned(),
            secure,
            host: host.to_owned(),
            port,
        })
    }
}

/// Whether `host` names this machine (`localhost`, 127.0.0.0/8, `::1`).
fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// An endpoint and, for `wss://`, the TLS connector for it: made once, used for every attempt.
pub struct Transport {
    endpoint: Endpoint,
    tls: Option<TlsConnector>,
}

impl Transport {
    /// Checks `url` and prepares TLS with `trust` when it is `wss://`.
    pub fn new(url: &str, trust: &TlsTrust, allow_insecure: bool) -> Result<Self, ConnectError> {
        let endpoint = Endpoint::parse(url, allow_insecure)?;
        let tls = if endpoint.secure {
            Some(tls::connector(trust)?)
        } else {
            None
        };
        Ok(Transport { endpoint, tls })
    }

    /// The bridge's URL.
    pub fn url(&self) -> &str {
        &self.endpoint.url
    }

    /// Connects, does TLS when `wss://`, and upgrades to a WebSocket.
    pub async fn open(&self) -> Result<Ws, ConnectError> {
        let Endpoint {
            url, host, port, ..
        } = &self.endpoint;
        let tcp = TcpStream::connect((host.as_str(), *port))
            .await
            .map_err(|e| ConnectError::Unreachable {
                url: url.clone(),
                why: e.to_string(),
            })?;
        let _ = tcp.set_nodelay(true);
        let stream: Box<dyn Io> = match &self.tls {
            None => Box::new(tcp),
            Some(connector) => {
                let name = tls::server_name(host)?;
                let tls = connector
                    .connect(name, tcp)
                    .await
                    .map_err(|e| tls::classify(&e, host))?;
                Box::new(tls)
            }
        };
        let (ws, _) = tokio_tungstenite::client_async(url.as_str(), stream)
            .await
            .map_err(|e| ConnectError::Upgrade(e.to_string()))?;
        Ok(ws)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_ws_goes_only_to_loopback_unless_allowed() {
        for local in [
            "ws://127.0.0.1:7800",
            "ws://127.8.0.1:1",
            "ws://localhost:7800",
            "ws://[::1]:7800",
        ] {
            assert!(Endpoint::parse(local, false).is_ok(), "{local}");
        }
        for remote in [
            "ws://10.1.2.3:7800",
            "ws://bridge.example:7800",
            "ws://[2001:db8::1]:1",
        ] {
            let refused = Endpoint::parse(remote, false).unwrap_err();
            assert!(matches!(refused, ConnectError::Insecure { .. }), "{remote}");
            assert!(refused.to_string().contains("wss://"), "says what to do");
            assert!(
                Endpoint::parse(remote, true).is_ok(),
                "{remote} when allowed"
            );
        }
        assert!(Endpoint::parse("wss://bridge.example", false).is_ok_and(|e| e.port == 443));
        let v6 = Endpoint::parse("wss://[2001:db8::1]:7800", false).unwrap();
        assert_eq!(
            (v6.host.as_str(), v6.port),
            ("2001:db8::1", 7800),
            "without brackets"
        );
    }

    #[test]
    fn what_is_not_a_bridge_url_is_refused_with_the_reason() {
        for bad in [
            "http://127.0.0.1:7800",
            "127.0.0.1:7800",
            "ws://",
            "not a url",
        ] {
            let refused = Endpoint::parse(bad, true).unwrap_err();
            assert!(
                matches!(refused, ConnectError::InvalidUrl { .. }),
                "{bad}: {refused:?}"
            );
        }
    }
}
