//! Media requests: negotiating a member's media session with the SFU (what it publishes and
//! receives, under the room's publish and subscribe rights) and announcing who receives what, and
//! starting and stopping a room's recordings (and finding where they are kept).
use streams_proto::policy::{Right, Role};
use streams_proto::wire::{
    ErrorCode, Event, ResponseBody, TrackAnnounce, TrackSubscription, WireError,
};
use streams_proto::{RoomId, RoomRecord, TrackId};

use crate::state::{BridgeState, not_found};

use super::{Caller, forbidden, now_ms, publish, visible_room};

/// The recordings directory and the room, for a member of it (outsiders learn nothing).
pub(super) async fn recordings_of(
    state: &BridgeState,
    caller: &Caller,
    room_id: &RoomId,
) -> Result<(std::path::PathBuf, RoomRecord), WireError> {
    let room = visible_room(state, caller, room_id).await?;
    if room.role_of(&caller.user) == Role::Outsider {
        return Err(not_found());
    }
    let root = state
        .recordings
        .clone()
        .ok_or_else(|| WireError::new(ErrorCode::Invalid, "this bridge does not record rooms"))?;
    Ok((root, room))
}

/// Starts or stops recording a room (managers only) and tells its members.
pub(super) async fn set_recording(
    state: &BridgeState,
    caller: &Caller,
    room_id: RoomId,
    enabled: bool,
) -> Result<ResponseBody, WireError> {
    let (root, room) = recordings_of(state, caller, &room_id).await?;
    if room.role_of(&caller.user) != Role::Manager {
        return Err(WireError::new(
            ErrorCode::Forbidden,
            "only the room's managers may record it",
        ));
    }
    let recording_id = if enabled {
        let id = format!("rec-{}-{:08x}", now_ms(), rand::random::<u32>());
        state
            .sfu
            .start_recording(room_id.clone(), root, id.clone())
            .await?;
        id
    } else {
        match state.sfu.stop_recording(room_id.clone()).await? {
            Some(id) => id,
            None => {
                return Err(WireError::new(
                    ErrorCode::Invalid,
                    "the room is not being recorded",
                ));
            }
        }
    };
    tracing::info!(room = %room_id, recording = %recording_id, enabled, "recording changed");
    publish(
        state,
        &room,
        &Event::RecordingChanged {
            room_id,
            recording_id,
            recording: enabled,
            by: caller.user.clone(),
        },
    );
    Ok(ResponseBody::Done)
}

pub(super) async fn negotiate(
    state: &BridgeState,
    caller: &Caller,
    room_id: RoomId,
    offer: String,
    publish_tracks: Vec<TrackAnnounce>,
    subscribe: Vec<TrackSubscription>,
) -> Result<ResponseBody, WireError> {
    let room = visible_room(state, caller, &room_id).await?;
    let role = room.role_of(&caller.user);
    let policy = room.policy();
    // Media is for the room's members, within what the policy grants them.
    if role == Role::Outsider
        || (!publish_tracks.is_empty() && !policy.allows(Right::Publish, role))
    {
        return Err(forbidden(Right::Publish));
    }
    if !subscribe.is_empty() && !policy.allows(Right::Subscribe, role) {
        return Err(forbidden(Right::Subscribe));
    }
    let publishing = !publish_tracks.is_empty();
    let track_ids: Vec<TrackId> = subscribe.iter().map(|s| s.track_id).collect();
    let negotiated = state
        .sfu
        .negotiate(
            caller.conn,
            room_id.clone(),
            caller.user.clone(),
            offer,
            publish_tracks,
            subscribe,
        )
        .await?;
    let stream = negotiated.stream;
    // A removal may have landed while the SFU was negotiating: check again, and undo if so.
    let id = room_id.clone();
    let still_member = state
        .with_store(move |s| s.room(&id))
        .await?
        .is_some_and(|r| r.role_of(&caller.user) != Role::Outsider);
    if !still_member {
        state
            .sfu
            .close_user(room_id.clone(), caller.user.clone())
            .await;
        return Err(not_found());
    }
    if publishing {
        let event = if negotiated.was_published {
            Event::StreamUpdated {
                room_id: room_id.clone(),
                stream: stream.clone(),
            }
        } else {
            Event::StreamPublished {
                room_id: room_id.clone(),
                stream: stream.clone(),
            }
        };
        publish(state, &room, &event);
    } else if negotiated.was_published {
        publish(
            state,
            &room,
            &Event::StreamUnpublished {
                room_id: room_id.clone(),
                stream_id: stream.stream_id,
            },
        );
    }
    announce_subscriptions(state, &room, caller, track_ids);
    Ok(ResponseBody::Answer {
        answer: negotiated.answer,
        stream_id: stream.stream_id,
    })
}

pub(super) fn announce_subscriptions(
    state: &BridgeState,
    room: &RoomRecord,
    caller: &Caller,
    track_ids: Vec<TrackId>,
) {
    let event = if track_ids.is_empty() {
        Event::Unsubscribed {
            room_id: room.id.clone(),
            user_id: caller.user.clone(),
        }
    } else {
        Event::Subscribed {
            room_id: room.id.clone(),
            user_id: caller.user.clone(),
            track_ids,
        }
    };
    publish(state, room, &event);
}
