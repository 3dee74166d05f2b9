//! Negotiation as requests in flight: the core offers new m-lines for local tracks without one and
//! for announced remote tracks (not the voices of members out of earshot), sends the offer as a
//! signaling request and carries on; the answer (or the failure) comes back as an input. One offer
//! is out at a time. Nothing changes for established m-lines while it is out, and a refused or
//! failed offer only delays the new tracks: it is reported, and tried again from what is pending.
use std::time::Instant;

use streams_proto::wire::{StreamInfo, TrackAnnounce, TrackInfo, TrackKind, TrackSubscription};
use streams_proto::{MediaId, StreamId, TrackId, UserId};

use super::remote::{RemoteMedia, RemoteTrack};
use super::{Pending, RETRY_AFTER, RoomMediaCore, unexpected};
use crate::api::{Operation, Reply};
use crate::error::ClientError;
use crate::media::events::MediaEvent;
use crate::media::rtc::MediaKind;

/// What an offer in flight changes once it is answered.
pub(super) struct InFlightOffer {
    /// Local tracks (by index) and the sending m-lines the offer gives them.
    assigned: Vec<(u8, MediaId)>,
    /// Local tracks (by index) whose m-lines the offer makes inactive.
    retiring: Vec<u8>,
    /// Remote tracks, the receiving m-lines the offer adds for them, and their receivers.
    added: Vec<(MediaId, UserId, TrackInfo, RemoteMedia)>,
}

fn media_kind(kind: TrackKind) -> MediaKind {
    match kind {
        TrackKind::Audio => MediaKind::Audio,
        TrackKind::Video | TrackKind::Screen => MediaKind::Video,
    }
}

impl RoomMediaCore {
    /// Offers what is new, unless an offer or a subscription change is already out.
    pub(super) fn negotiate(&mut self, now: Instant) {
        if self.keys.is_none()
            || self.resetting
            || self.in_flight(|p| matches!(p, Pending::Negotiate(_) | Pending::SetSubscriptions))
        {
            return;
        }
        let fresh = self.fresh_remote_tracks();
        let unsent: Vec<(u8, MediaKind)> = self
            .local
            .iter()
            .filter(|t| t.mid.is_none() && !t.removed)
            .map(|t| (t.index, t.media_kind()))
            .collect();
        let retiring: Vec<(u8, MediaId)> = self
            .local
            .iter()
            .filter(|t| t.removed && !t.retired)
            .filter_map(|t| t.mid.map(|mid| (t.index, mid)))
            .collect();
        if fresh.is_empty() && unsent.is_empty() && retiring.is_empty() {
            return;
        }
        if now < self.negotiate_after {
            // A recent attempt failed: keep what is pending for the next try.
            self.keep_pending(fresh);
            return;
        }
        let send: Vec<MediaKind> = unsent.iter().map(|(_, kind)| *kind).collect();
        let receive: Vec<MediaKind> = fresh.iter().map(|(_, t)| media_kind(t.kind)).collect();
        let deactivate: Vec<MediaId> = retiring.iter().map(|(_, mid)| *mid).collect();
        let offer = match self.peer.offer(now, &send, &receive, &deactivate) {
            Ok(offer) => offer,
            Err(e) => {
                tracing::warn!(room = %self.room_id, "cannot make an offer: {e}");
                self.negotiate_after = now + RETRY_AFTER;
                self.keep_pending(fresh);
                return;
            }
        };
        let assigned: Vec<(u8, MediaId)> = unsent
            .iter()
            .map(|(index, _)| *index)
            .zip(offer.send_mids)
            .collect();
        let mut added = Vec::new();
        for ((user, info), mid) in fresh.into_iter().zip(offer.recv_mids) {
            match self.remote_media(now, &user, &info) {
                Ok(media) => added.push((mid, user, info, media)),
                Err(e) => tracing::warn!(track = %info.track_id, "cannot receive: {e}"),
            }
        }
        let publish: Vec<TrackAnnounce> = self
            .local
            .iter()
            .filter(|t| !t.removed)
            .filter_map(|t| {
                let assigned = assigned.iter().find(|(i, _)| *i == t.index);
                let mid = t.mid.or_else(|| assigned.map(|(_, m)| *m))?;
                Some(TrackAnnounce {
                    mid,
                    kind: t.kind(),
                    key_id: t.key_id(),
                    frame_ms: t.frame_ms(),
                })
            })
            .collect();
        let subscribe: Vec<TrackSubscription> = self
            .remote
            .iter()
            .map(|(mid, t)| (*mid, t.track_id))
            .chain(added.iter().map(|(mid, _, info, _)| (*mid, info.track_id)))
            .map(|(mid, track_id)| TrackSubscription { mid, track_id })
            .collect();
        let op = Operation::Negotiate {
            room_id: self.room_id.clone(),
            offer: offer.sdp,
            publish,
            subscribe,
        };
        let retiring = retiring.into_iter().map(|(index, _)| index).collect();
        let in_flight = InFlightOffer {
            assigned,
            retiring,
            added,
        };
        self.signal(op, Pending::Negotiate(Box::new(in_flight)));
    }

    /// The announced remote tracks not received yet, each once (a listing and an event may both
    /// announce one), without this member's own and the voices of members out of earshot.
    fn fresh_remote_tracks(&mut self) -> Vec<(UserId, TrackInfo)> {
        let me = self.identity.user_id().clone();
        let mut known: Vec<TrackId> = self.remote.values().map(|t| t.track_id).collect();
        let mut fresh = Vec::new();
        for stream in std::mem::take(&mut self.pending_streams) {
            if stream.user_id == me {
                continue;
            }
            let unheard = self.unheard.contains(&stream.user_id);
            for track in stream.tracks {
                if unheard && track.kind == TrackKind::Audio || known.contains(&track.track_id) {
                    continue;
                }
                known.push(track.track_id);
                fresh.push((stream.user_id.clone(), track));
            }
        }
        fresh
    }

    fn keep_pending(&mut self, fresh: Vec<(UserId, TrackInfo)>) {
        self.pending_streams
            .extend(fresh.into_iter().map(|(user_id, track)| StreamInfo {
                stream_id: StreamId(0),
                user_id,
                tracks: vec![track],
            }));
    }

    /// The reply to an offer.
    pub(super) fn negotiated(
        &mut self,
        now: Instant,
        offer: InFlightOffer,
        result: Result<Reply, ClientError>,
    ) {
        let answer = match result {
            Ok(Reply::Answer { answer, .. }) => answer,
            Ok(other) => return self.offer_failed(now, offer, unexpected(&other)),
            Err(e) => return self.offer_failed(now, offer, e),
        };
        if let Err(e) = self.peer.accept_answer(now, &answer) {
            let error = ClientError::Unexpected(format!("unusable answer: {e}"));
            return self.offer_failed(now, offer, error);
        }
        for (index, mid) in offer.assigned {
            if let Some(track) = self.local.iter_mut().find(|t| t.index == index) {
                track.mid = Some(mid);
            }
        }
        for index in offer.retiring {
            if let Some(track) = self.local.iter_mut().find(|t| t.index == index) {
                track.retired = true;
            }
        }
        for (mid, user, info, media) in offer.added {
            let kind = info.kind;
            self.add_remote(mid, RemoteTrack::new(info.track_id, user, media), kind);
        }
        // What the owner stopped wanting while the offer was out is dropped again.
        let all = self.subscribe_all;
        let unheard: Vec<TrackId> = self
            .remote
            .values()
            .filter(|t| !all || (t.is_voice() && self.unheard.contains(&t.user)))
            .map(|t| t.track_id)
            .collect();
        if self.drop_remote_where(|track| unheard.iter().any(|u| u == track)) > 0 {
            self.resubscribe = true;
        }
        let published: Vec<MediaEvent> = self
            .local
            .iter()
            .filter(|t| !t.removed && t.mid.is_some())
            .map(|t| MediaEvent::LocalTrackPublished {
                index: t.index,
                key_id: t.key_id(),
            })
            .collect();
        for event in published {
            self.emit(event);
        }
    }

    /// An offer that was refused, failed or went unanswered: established media is untouched, the
    /// new tracks wait for the next try. A refusal (a stream that went away, a right that was
    /// revoked) starts again from the bridge's current listing.
    fn offer_failed(&mut self, now: Instant, offer: InFlightOffer, error: ClientError) {
        tracing::warn!(room = %self.room_id, "media negotiation failed: {error}");
        self.emit(MediaEvent::NegotiationFailed(error.to_string()));
        self.peer.cancel_offer();
        self.negotiate_after = now + RETRY_AFTER;
        if matches!(error, ClientError::Bridge(_)) {
            self.list_streams();
        } else if self.subscribe_all {
            let retry = offer
                .added
                .into_iter()
                .map(|(_, user, info, _)| (user, info))
                .collect();
            self.keep_pending(retry);
        }
    }
}
