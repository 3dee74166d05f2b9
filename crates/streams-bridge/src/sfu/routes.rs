//! The routing table: for each published track, the legs that carry it (a subscriber's session
//! and the m-line it receives the track on). Forwarding a frame is one lookup, not a scan of every
//! session's subscriptions.
use std::collections::HashMap;

use str0m::media::Mid;
use streams_proto::TrackId;

use super::session::SessionKey;

/// One subscriber's copy of a track.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Leg {
    /// The subscriber's session.
    pub session: SessionKey,
    /// The m-line of that session the track is sent on.
    pub mid: Mid,
}

/// Published track → its legs.
#[derive(Default)]
pub struct Routes {
    by_track: HashMap<TrackId, Vec<Leg>>,
}

impl Routes {
    /// The legs of `track` (none if nobody receives it).
    pub fn legs(&self, track: &TrackId) -> &[Leg] {
        self.by_track.get(track).map_or(&[], Vec::as_slice)
    }

    /// `leg` carries `track` from now on.
    pub fn add(&mut self, track: TrackId, leg: Leg) {
        let legs = self.by_track.entry(track).or_default();
        if !legs.contains(&leg) {
            legs.push(leg);
        }
    }

    /// `leg` no longer carries `track`.
    pub fn remove(&mut self, track: &TrackId, leg: Leg) {
        if let Some(legs) = self.by_track.get_mut(track) {
            legs.retain(|l| *l != leg);
            if legs.is_empty() {
                self.by_track.remove(track);
            }
        }
    }

    /// Forgets `track` (it is no longer published); returns the legs that carried it.
    pub fn remove_track(&mut self, track: &TrackId) -> Vec<Leg> {
        self.by_track.remove(track).unwrap_or_default()
    }

    /// How many legs there are in all.
    #[cfg(test)]
    pub fn leg_count(&self) -> usize {
        self.by_track.values().map(Vec::len).sum()
    }
}
