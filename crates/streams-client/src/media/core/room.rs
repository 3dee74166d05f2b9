//! How the core follows its room: keys and epochs from the room record (senders switch at once,
//! receivers learn every epoch), published and unpublished streams from events and listings, and
//! removal from the room.
use std::time::Instant;

use streams_proto::wire::StreamInfo;
use streams_proto::{TrackId, UserId};

use super::{Keys, Pending, RoomMediaCore};
use crate::api::{Operation, Room, RoomEvent};
use crate::media::events::{RejoinReason, StopReason};

impl RoomMediaCore {
    pub(super) fn room_event(&mut self, now: Instant, event: RoomEvent) {
        match event {
            RoomEvent::StreamUpdated { room_id, stream } if room_id == self.room_id => {
                // Tracks the stream no longer has end here.
                self.drop_remote_where(|track| {
                    track.stream == stream.stream_id
                        && !stream.tracks.iter().any(|s| s.track_id == *track)
                });
                self.announce(stream);
            }
            RoomEvent::StreamPublished { room_id, stream } if room_id == self.room_id => {
                self.announce(stream);
            }
            RoomEvent::StreamUnpublished { room_id, stream_id } if room_id == self.room_id => {
                self.announced.retain(|s| s.stream_id != stream_id);
                self.pending_streams.retain(|s| s.stream_id != stream_id);
                self.drop_remote_where(|track| track.stream == stream_id);
            }
            RoomEvent::Updated(room) if room.id == self.room_id => self.apply_room(now, &room),
            // Signaling came back on a connection that is not the old one: the bridge has no
            // media session of it any more.
            RoomEvent::Resync { resumed: false } if self.has_session() => {
                self.rejoin(now, RejoinReason::BridgeLostSession);
            }
            // It came back: what was announced during the gap is read again.
            RoomEvent::Resync { .. } if self.keys.is_some() => {
                self.list_streams();
                if !self.in_flight(|p| matches!(p, Pending::GetRoom)) {
                    self.signal(Operation::GetRoom(self.room_id.clone()), Pending::GetRoom);
                }
            }
            RoomEvent::RemovedFrom { room_id, .. } | RoomEvent::Deleted { room_id, .. }
                if room_id == self.room_id =>
            {
                self.stop(now, StopReason::NotInRoom);
            }
            _ => {}
        }
    }

    /// Takes the room's keys: epochs not seen before are unwrapped (one HPKE open each) and given
    /// to every receiver; a newer current epoch switches every sender at once. The first room seen
    /// starts the media: the streams are listed and held commands run.
    pub(super) fn apply_room(&mut self, now: Instant, room: &Room) {
        let first = self.keys.is_none();
        let known = self.keys.as_ref().map(|k| &k.secrets);
        let fresh: Vec<_> = room
            .record
            .epochs
            .iter()
            .filter(|e| known.is_none_or(|s| !s.contains_key(&e.epoch)))
            .filter_map(|e| e.unwrap_secret(&self.identity).ok().map(|s| (e.epoch, s)))
            .collect();
        let keys = self.keys.get_or_insert_with(|| Keys {
            epoch: room.key_epoch,
            secrets: Default::default(),
        });
        for (epoch, secret) in &fresh {
            keys.secrets.insert(*epoch, secret.clone());
        }
        if !keys.secrets.contains_key(&room.key_epoch) {
            return self.stop(now, StopReason::RemovedFromRoom);
        }
        let switch = room.key_epoch > keys.epoch;
        keys.epoch = keys.epoch.max(room.key_epoch);
        self.give_epochs(now, &fresh);
        if switch {
            self.switch_senders();
        }
        if first {
            self.list_streams();
            for command in std::mem::take(&mut self.deferred) {
                self.command(now, command);
            }
        }
    }

    /// Whether the bridge was given a media session (an offer of it was answered, or is out).
    fn has_session(&self) -> bool {
        self.ever_connected
            || self.local.iter().any(|t| t.mid.is_some())
            || !self.remote.is_empty()
            || self.in_flight(|p| matches!(p, Pending::Negotiate(_)))
    }

    /// Asks the bridge for its current listing of the room's streams.
    pub(super) fn list_streams(&mut self) {
        self.announced.clear();
        self.signal(Operation::ListStreams(self.room_id.clone()), Pending::List);
    }

    /// A stream a room event announced (published or changed): negotiated when subscribing to
    /// everything, and remembered until the next listing is asked for.
    fn announce(&mut self, stream: StreamInfo) {
        self.announced.retain(|s| s.stream_id != stream.stream_id);
        self.announced.push(stream.clone());
        if self.subscribe_all {
            self.pending_streams.push(stream);
        }
    }

    /// The bridge's listing: tracks no longer listed end here, and (when subscribing to everything)
    /// what is listed is negotiated if it is not yet. Streams announced since the listing was asked
    /// for count as listed: the reply may predate them.
    pub(super) fn apply_listing(&mut self, mut streams: Vec<StreamInfo>) {
        for stream in &self.announced {
            if !streams.iter().any(|s| s.stream_id == stream.stream_id) {
                streams.push(stream.clone());
            }
        }
        let live: Vec<TrackId> = streams
            .iter()
            .flat_map(|s| s.tracks.iter().map(|t| t.track_id))
            .collect();
        self.drop_remote_where(|track| !live.contains(track));
        if self.subscribe_all {
            self.pending_streams = streams;
        }
    }

    /// Proximity: a member's voice is received again (from the current listing) or dropped at the
    /// bridge.
    pub(super) fn set_voice_subscribed(&mut self, user_id: UserId, subscribed: bool) {
        if subscribed {
            if self.unheard.remove(&user_id) && self.subscribe_all {
                self.list_streams();
            }
        } else if self.unheard.insert(user_id.clone()) {
            let voices: Vec<TrackId> = self
                .remote
                .values()
                .filter(|t| t.user == user_id && t.is_voice())
                .map(|t| t.track_id)
                .collect();
            if self.drop_remote_where(|track| voices.iter().any(|v| v == track)) > 0 {
                self.resubscribe = true;
            }
        }
    }
}
