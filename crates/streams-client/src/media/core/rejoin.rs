//! Rejoining the room's media when its session at the bridge is gone: the bridge lost it (it
//! restarted, or the signaling connection stayed down past the bridge's grace) or the media path
//! died. A new peer connection (new ICE and DTLS) replaces the old one, the bridge is asked to end
//! whatever is left of the old session, and then everything is negotiated again: local tracks keep
//! their index, source, encoder and SFrame state (frame counters go on, so no nonce repeats) and are
//! published again; remote tracks end and are received again from the bridge's listing. Attempts
//! go on for [`REJOIN_GIVE_UP`]; then the core stops.
use std::time::{Duration, Instant};

use super::{Pending, Retry, RoomMediaCore};
use crate::api::Operation;
use crate::media::events::{MediaEvent, RejoinReason, StopReason};
use crate::media::rtc::RtcPeer;

/// How long a core keeps trying to rejoin before it stops.
pub const REJOIN_GIVE_UP: Duration = Duration::from_secs(60);

/// A rejoin under way.
pub(super) struct Rejoining {
    /// When the session was found gone.
    since: Instant,
    reason: RejoinReason,
}

impl RoomMediaCore {
    /// The session at the bridge is gone: starts over with a new peer connection (see the module).
    pub(super) fn rejoin(&mut self, now: Instant, reason: RejoinReason) {
        if self.rejoin_given_up(now) {
            return;
        }
        let since = self.rejoining.as_ref().map_or(now, |r| r.since);
        let peer = match RtcPeer::with_tcp(now, self.peer.local_addr()) {
            Ok(peer) => peer,
            Err(e) => return self.stop(now, StopReason::Failed(format!("cannot rejoin: {e}"))),
        };
        self.peer.close(now);
        self.peer = peer;
        self.offer_relay_again(now);
        if self.rejoining.is_none() {
            tracing::warn!(room = %self.room_id, ?reason, "media session lost; rejoining");
            self.emit(MediaEvent::Reconnecting {
                reason: reason.clone(),
            });
            self.rejoining = Some(Rejoining { since, reason });
        }
        // Replies to offers of the old connection mean nothing to the new one.
        self.in_flight
            .retain(|_, p| !matches!(p, Pending::Negotiate(_) | Pending::SetSubscriptions));
        self.local.retain(|t| !t.removed);
        for track in &mut self.local {
            track.mid = None;
            track.retired = false;
        }
        self.drop_remote_where(|_| true);
        self.pending_streams.clear();
        self.resubscribe = false;
        self.negotiate_after = now;
        self.reset_session();
        self.list_streams();
        if !self.in_flight(|p| matches!(p, Pending::GetRoom)) {
            self.retry(Retry::GetRoom);
        }
    }

    /// Asks the bridge to end what is left of the old session before anything is offered.
    pub(super) fn reset_session(&mut self) {
        self.retries.retain(|(_, r)| *r != Retry::Reset);
        self.resetting = true;
        self.signal(Operation::CloseMedia(self.room_id.clone()), Pending::Reset);
    }

    /// The media connection is up again: the rejoin is over.
    pub(super) fn rejoined(&mut self, now: Instant) {
        if let Some(rejoining) = self.rejoining.take() {
            let after = now.duration_since(rejoining.since);
            tracing::info!(room = %self.room_id, ?after, "media rejoined");
            self.emit(MediaEvent::Rejoined {
                reason: rejoining.reason,
                after,
            });
        }
    }

    /// Stops the core when a rejoin has gone on for [`REJOIN_GIVE_UP`] (one whose new session
    /// never got an answer fails nothing by itself); `true` if it did.
    pub(super) fn rejoin_given_up(&mut self, now: Instant) -> bool {
        let Some(since) = self.rejoining.as_ref().map(|r| r.since) else {
            return false;
        };
        let waited = now.duration_since(since);
        if waited < REJOIN_GIVE_UP {
            return false;
        }
        self.stop(now, StopReason::MediaLost { waited });
        true
    }

    /// Whether a rejoin is under way.
    pub(super) fn is_rejoining(&self) -> bool {
        self.rejoining.is_some()
    }
}
