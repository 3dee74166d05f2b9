//! [`TurnTls`]: TLS between a relay's TURN client and its server (`turns:`, RFC 8656 §3.1), with
//! rustls, sans-IO: the TURN client's messages are sealed into TLS records for the TCP stream, and
//! what the stream brings is opened back into them. The server's certificate is checked against
//! the platform's roots ([`crate::turn_servers`] makes the configuration, off the media thread)
//! for the URL's host; a failure names its cause (an unknown issuer, a name that does not match).
use std::io::{ErrorKind, Read, Write};
use std::sync::Arc;

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection};

/// Plaintext taken out of the connection per read.
const READ_CHUNK: usize = 16 << 10;

/// One TLS connection to a TURN server.
pub(super) struct TurnTls {
    conn: ClientConnection,
}

impl TurnTls {
    /// A connection to `host` (a name or an IP address, as the URL gives it).
    pub(super) fn new(config: Arc<ClientConfig>, host: &str) -> Result<Self, String> {
        let name = ServerName::try_from(host.to_owned())
            .map_err(|_| format!("{host:?} is not a name TLS can check"))?;
        let conn = ClientConnection::new(config, name).map_err(|e| e.to_string())?;
        Ok(TurnTls { conn })
    }

    /// The TURN client's bytes, sealed: what to send on the stream goes into `out` (with the
    /// handshake's own records first, while it runs; rustls holds the plaintext until then).
    pub(super) fn seal(&mut self, plain: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
        self.conn
            .writer()
            .write_all(plain)
            .map_err(|e| format!("TLS: {e}"))?;
        self.pending(out)
    }

    /// The records rustls has to send now (handshake, alerts, sealed plaintext), into `out`.
    pub(super) fn pending(&mut self, out: &mut Vec<u8>) -> Result<(), String> {
        while self.conn.wants_write() {
            self.conn.write_tls(out).map_err(|e| format!("TLS: {e}"))?;
        }
        Ok(())
    }

    /// Bytes of the stream, opened: the TURN client's bytes go into `plain`, what the handshake
    /// answers into `out`. An error (a certificate refused, a broken record) ends the connection.
    pub(super) fn open(
        &mut self,
        mut input: &[u8],
        plain: &mut Vec<u8>,
        out: &mut Vec<u8>,
    ) -> Result<(), String> {
        let mut chunk = vec![0u8; READ_CHUNK];
        while !input.is_empty() {
            self.conn
                .read_tls(&mut input)
                .map_err(|e| format!("TLS: {e}"))?;
            self.conn
                .process_new_packets()
                .map_err(|e| format!("TLS with the TURN server: {e}"))?;
            loop {
                match self.conn.reader().read(&mut chunk) {
                    Ok(0) => break,
                    Ok(n) => plain.extend_from_slice(&chunk[..n]),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) => return Err(format!("TLS: {e}")),
                }
            }
        }
        self.pending(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_tls_cannot_check_is_refused_with_a_reason() {
        let config = Arc::new(
            ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::aws_lc_rs::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth(),
        );
        let Err(why) = TurnTls::new(Arc::clone(&config), "not a name!") else {
            panic!("accepted");
        };
        assert!(why.contains("not a name TLS can check"), "{why}");
        // A good name starts a handshake: a ClientHello to send.
        let mut tls = TurnTls::new(config, "turn.example.com").unwrap();
        let mut out = Vec::new();
        tls.seal(b"allocate", &mut out).unwrap();
        assert_eq!(out.first(), Some(&0x16), "a TLS handshake record");
    }
}
