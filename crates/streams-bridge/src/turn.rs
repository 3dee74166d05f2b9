//! [`TurnRelays`]: the TURN servers (coturn, run beside the bridge) that clients may relay their
//! media through when no direct path reaches the bridge, and the short-lived credentials the
//! bridge hands each authenticated member for them: the TURN REST API scheme that coturn's
//! `use-auth-secret` / `static-auth-secret` checks (username `EXPIRY:USER`, password
//! `base64(HMAC-SHA1(secret, username))`). The secret never leaves the bridge and the TURN
//! server; a leaked credential stops working at its expiry.
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use streams_proto::wire::IceServer;
use streams_proto::{TurnUrl, UserId};

/// How long a credential is good for unless told otherwise (allocations made with it are
/// refreshed on the same credential: a call longer than this needs a new allocation).
pub const DEFAULT_CREDENTIAL_TTL: Duration = Duration::from_secs(24 * 3600);

/// What a bridge relays through.
#[derive(Clone, Debug)]
pub struct TurnRelays {
    /// The servers' URLs, most preferred first.
    pub urls: Vec<TurnUrl>,
    /// The secret shared with the TURN servers (coturn `static-auth-secret`).
    pub secret: String,
    /// How long a credential is good for.
    pub ttl: Duration,
}

impl TurnRelays {
    /// Credentials for `user`, good for [`TurnRelays::ttl`] from `now`.
    pub fn credentials_for(&self, user: &UserId, now: SystemTime) -> IceServer {
        let expires_at = now
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
            .saturating_add(self.ttl.as_secs());
        let username = format!("{expires_at}:{user}");
        IceServer {
            urls: self.urls.iter().map(ToString::to_string).collect(),
            credential: password(&self.secret, &username),
            username,
            expires_at,
        }
    }
}

/// The TURN REST API password of `username` under `secret`.
fn password(secret: &str, username: &str) -> String {
    let mut mac = <Hmac<Sha1> as Mac>::new_from_slice(secret.as_bytes())
        .expect("HMAC takes a key of any length");
    mac.update(username.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_is_the_rest_api_hmac() {
        // RFC 2202 test case 2 (HMAC-SHA1, key "Jefe"), base64 of
        // effcdf6ae5eb2fa2d27416d5f184df9c259a7c79.
        assert_eq!(
            password("Jefe", "what do ya want for nothing?"),
            "7/zfauXrL6LSdBbV8YTfnCWafHk="
        );
    }

    #[test]
    fn credentials_name_the_expiry_and_the_user() {
        let relays = TurnRelays {
            urls: vec!["turn:10.0.0.1?transport=tcp".parse().unwrap()],
            secret: "s3cret".into(),
            ttl: Duration::from_secs(600),
        };
        let user = streams_proto::Identity::generate().user_id().clone();
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let server = relays.credentials_for(&user, now);
        assert_eq!(server.expires_at, 1_000_600);
        assert_eq!(server.username, format!("1000600:{user}"));
        assert_eq!(server.credential, password("s3cret", &server.username));
        assert_eq!(server.urls, ["turn:10.0.0.1:3478?transport=tcp"]);
    }
}
