//! One media session on the SFU: a member's str0m connection in a room, the tracks it publishes,
//! which of its sending m-lines carries which remote track, and how each numbers what it sends.
use std::collections::HashMap;
use std::net::IpAddr;

use str0m::Rtc;
use str0m::media::Mid;
use streams_proto::wire::{StreamInfo, TrackAnnounce, TrackInfo};
use streams_proto::{MediaId, RoomId, StreamId, TrackId, UserId};

use super::outgoing::Outgoing;
use crate::hub::ConnId;

slotmap::new_key_type! {
    /// A session's place in the SFU (stable while it lives; never reused for another).
    pub struct SessionKey;
}

/// A member's media connection in one room.
pub struct Session {
    /// Its stream id (what subscribers' track ids name).
    pub id: StreamId,
    /// Its local ICE ufrag (what STUN checks for it name).
    pub ufrag: String,
    /// The signaling connection that negotiated it.
    pub conn: ConnId,
    /// The room it is in.
    pub room: RoomId,
    /// Its member.
    pub user: UserId,
    /// The WebRTC connection (ICE lite, DTLS-SRTP).
    pub rtc: Rtc,
    /// The tracks it publishes, as announced.
    pub published: Vec<TrackAnnounce>,
    /// Sending m-line → the remote track it carries.
    pub subscribed: HashMap<Mid, TrackId>,
    /// Sending m-line → its stream and numbering (kept while the session lives, so an m-line
    /// that changes track goes on numbering where it stopped).
    pub sending: HashMap<Mid, Outgoing>,
    /// Written to since its last timeout (queued in the core's dirty list).
    pub dirty: bool,
    /// The local IP its datagrams last arrived at (where the socket says): its replies leave
    /// from it on a wildcard bind.
    pub local_ip: Option<IpAddr>,
}

impl Session {
    /// Its stream as others see it.
    pub fn stream(&self) -> StreamInfo {
        StreamInfo {
            stream_id: self.id,
            user_id: self.user.clone(),
            tracks: self
                .published
                .iter()
                .map(|t| TrackInfo {
                    track_id: TrackId::new(self.id, t.mid),
                    kind: t.kind,
                    key_id: t.key_id,
                    frame_ms: t.frame_ms,
                })
                .collect(),
        }
    }

    /// The track it publishes on `mid`, if it announced one.
    pub fn publication(&self, mid: MediaId) -> Option<&TrackAnnounce> {
        self.published.iter().find(|t| t.mid == mid)
    }
}
