//! TURN server URLs (RFC 7065: `turn:host[:port][?transport=udp|tcp]`, `turns:` for TLS), as the
//! bridge hands them out and clients read them. Parsed once, checked, with the defaults filled in
//! (port 3478, or 5349 for `turns:`; UDP, or TCP for `turns:`).
use std::fmt;
use std::str::FromStr;

/// How a client reaches a TURN server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TurnTransport {
    /// Datagrams.
    Udp,
    /// A TCP stream.
    Tcp,
    /// A TLS stream (`turns:`).
    Tls,
}

/// A parsed TURN URL.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TurnUrl {
    /// Host name or IP address (no brackets).
    pub host: String,
    /// Port.
    pub port: u16,
    /// Transport to the server.
    pub transport: TurnTransport,
}

/// A TURN URL that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad TURN URL {url:?}: {why}")]
pub struct InvalidTurnUrl {
    /// What was given.
    pub url: String,
    /// What is wrong with it.
    pub why: &'static str,
}

impl FromStr for TurnUrl {
    type Err = InvalidTurnUrl;

    fn from_str(url: &str) -> Result<Self, Self::Err> {
        let bad = |why| InvalidTurnUrl {
            url: url.to_owned(),
            why,
        };
        // Scheme, host and query are all case-insensitive.
        let lower = url.to_ascii_lowercase();
        let (secure, rest) = if let Some(rest) = lower.strip_prefix("turns:") {
            (true, rest)
        } else if let Some(rest) = lower.strip_prefix("turn:") {
            (false, rest)
        } else {
            return Err(bad("it must start with turn: or turns:"));
        };
        let (authority, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) = v6.split_once(']').ok_or(bad("an unclosed [ in the host"))?;
            match after.strip_prefix(':') {
                Some(port) => (host, Some(port)),
                None if after.is_empty() => (host, None),
                None => return Err(bad("something after the ] that is not a port")),
            }
        } else {
            match authority.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            }
        };
        if host.is_empty() || host.contains(['/', '@', ' ']) {
            return Err(bad("no usable host"));
        }
        let port = match port {
            Some(port) => port.parse().map_err(|_| bad("the port is not a number"))?,
            None if secure => 5349,
            None => 3478,
        };
        let transport = match (query, secure) {
            ("", true) | ("transport=tcp", true) => TurnTransport::Tls,
            ("", false) | ("transport=udp", false) => TurnTransport::Udp,
            ("transport=tcp", false) => TurnTransport::Tcp,
            ("transport=udp", true) => return Err(bad("turns: runs over TCP")),
            _ => return Err(bad("the only query is transport=udp or transport=tcp")),
        };
        Ok(TurnUrl {
            host: host.to_owned(),
            port,
            transport,
        })
    }
}

impl fmt::Display for TurnUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = match self.transport {
            TurnTransport::Tls => "turns",
            TurnTransport::Udp | TurnTransport::Tcp => "turn",
        };
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        write!(f, "{scheme}:{host}:{}", self.port)?;
        if self.transport == TurnTransport::Tcp {
            f.write_str("?transport=tcp")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> TurnUrl {
        s.parse().unwrap()
    }

    #[test]
    fn defaults_and_transports() {
        assert_eq!(
            url("turn:turn.example.com"),
            TurnUrl {
                host: "turn.example.com".into(),
                port: 3478,
                transport: TurnTransport::Udp
            }
        );
        assert_eq!(
            url("turn:10.0.0.1:3479?transport=tcp").transport,
            TurnTransport::Tcp
        );
        assert_eq!(url("turn:10.0.0.1:3479?transport=tcp").port, 3479);
        assert_eq!(
            url("TURN:Turn.Example.com?Transport=TCP").host,
            "turn.example.com"
        );
        assert_eq!(
            url("TURN:10.0.0.1?Transport=TCP").transport,
            TurnTransport::Tcp
        );
        let tls = url("turns:turn.example.com");
        assert_eq!((tls.port, tls.transport), (5349, TurnTransport::Tls));
        let v6 = url("turn:[2001:db8::1]:3478?transport=udp");
        assert_eq!(v6.host, "2001:db8::1");
        assert_eq!(v6.to_string(), "turn:[2001:db8::1]:3478");
        assert_eq!(
            url("turn:10.0.0.1?transport=tcp").to_string(),
            "turn:10.0.0.1:3478?transport=tcp"
        );
    }

    #[test]
    fn bad_urls_say_why() {
        for bad in [
            "stun:10.0.0.1",
            "turn:",
            "turn:10.0.0.1:port",
            "turn:10.0.0.1?transport=sctp",
            "turns:10.0.0.1?transport=udp",
            "turn:[::1",
            "turn:[::1]junk",
            "turn:user@host",
        ] {
            let e = bad.parse::<TurnUrl>().unwrap_err();
            assert_eq!(e.url, bad);
            assert!(e.to_string().contains("bad TURN URL"), "{e}");
        }
    }
}
