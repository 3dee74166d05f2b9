//! Request handlers: room create/update/get/list/delete, presence, event subscriptions — with the room
//! policy enforced and every signed record verified before anything is stored. Media and recording
//! requests are in `requests/media.rs`.
use std::time::{SystemTime, UNIX_EPOCH};

use streams_proto::policy::{Right, Role};
use streams_proto::wire::{
    ErrorCode, Event, EventScope, MAX_PAGE_LIMIT, Paging, Request, ResponseBody, WireError,
};
use streams_proto::{
    ContextId, CryptoError, EpochRecord, RoomId, RoomRecord, SignedMeta, StreamId, TrackId, UserId,
};

use crate::hub::ConnId;

mod media;
use crate::state::{BridgeState, not_found};
use media::{announce_subscriptions, negotiate, recordings_of, set_recording};

/// Who is asking.
pub struct Caller {
    /// The authenticated user.
    pub user: UserId,
    /// The connection.
    pub conn: ConnId,
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn invalid(message: impl Into<String>) -> WireError {
    WireError::new(ErrorCode::Invalid, message)
}

fn forbidden(right: Right) -> WireError {
    WireError::new(
        ErrorCode::Forbidden,
        format!("the room's policy does not give you the {right:?} right"),
    )
}

fn signature_error(e: CryptoError) -> WireError {
    WireError::new(ErrorCode::InvalidSignature, e.to_string())
}

/// Handles one authenticated request.
pub async fn handle(
    state: &BridgeState,
    caller: &Caller,
    request: Request,
) -> Result<ResponseBody, WireError> {
    match request {
        Request::Ping => Ok(ResponseBody::Pong),
        Request::IceServers => Ok(ResponseBody::IceServers {
            servers: state
                .turn
                .iter()
                .map(|turn| turn.credentials_for(&caller.user, SystemTime::now()))
                .collect(),
        }),
        Request::CreateRoom { genesis, meta } => create_room(state, caller, *genesis, *meta).await,
        Request::UpdateRoom {
            room_id,
            version,
            force,
            epoch,
            meta,
        } => {
            update_room(
                state,
                caller,
                room_id,
                version,
                force,
                epoch.map(|e| *e),
                *meta,
            )
            .await
        }
        Request::GetRoom { room_id } => {
            let room = visible_room(state, caller, &room_id).await?;
            Ok(ResponseBody::Room {
                room: Box::new(room),
            })
        }
        Request::ListRooms { context_id, paging } => {
            list_rooms(state, caller, context_id, paging).await
        }
        Request::DeleteRoom { room_id } => delete_room(state, caller, room_id).await,
        Request::JoinRoom { room_id } => join_room(state, caller, room_id).await,
        Request::LeaveRoom { room_id } => {
            let room = visible_room(state, caller, &room_id).await?;
            let closed = state.sfu.close(caller.conn, Some(room_id.clone())).await;
            announce_unpublished(state, &room, closed);
            let left = state.hub().leave(caller.conn, &room_id);
            if let Some(user) = left {
                publish(
                    state,
                    &room,
                    &Event::UserLeft {
                        room_id: room_id.clone(),
                        user_id: user,
                    },
                );
            }
            Ok(ResponseBody::Done)
        }
        Request::ListParticipants { room_id } => {
            visible_room(state, caller, &room_id).await?;
            let users = state.hub().participants(&room_id);
            Ok(ResponseBody::Participants { room_id, users })
        }
        Request::Subscribe { scope } => {
            match &scope {
                EventScope::Context(ctx) => check_context(ctx)?,
                EventScope::Room(id) => {
                    visible_room(state, caller, id).await?;
                }
            }
            state.hub().subscribe(caller.conn, scope);
            Ok(ResponseBody::Done)
        }
        Request::Unsubscribe { scope } => {
            state.hub().unsubscribe(caller.conn, &scope);
            Ok(ResponseBody::Done)
        }
        Request::Negotiate {
            room_id,
            offer,
            publish,
            subscribe,
        } => negotiate(state, caller, room_id, offer, publish, subscribe).await,
        Request::SetSubscriptions { room_id, subscribe } => {
            let room = visible_room(state, caller, &room_id).await?;
            let role = room.role_of(&caller.user);
            if !subscribe.is_empty()
                && (role == Role::Outsider || !room.policy().allows(Right::Subscribe, role))
            {
                return Err(forbidden(Right::Subscribe));
            }
            let track_ids: Vec<TrackId> = subscribe.iter().map(|s| s.track_id).collect();
            state
                .sfu
                .set_subscriptions(caller.conn, room_id, subscribe)
                .await?;
            announce_subscriptions(state, &room, caller, track_ids);
            Ok(ResponseBody::Done)
        }
        Request::CloseMedia { room_id } => {
            let room = visible_room(state, caller, &room_id).await?;
            let closed = state.sfu.close(caller.conn, Some(room_id)).await;
            announce_unpublished(state, &room, closed);
            Ok(ResponseBody::Done)
        }
        Request::SetRecording { room_id, enabled } => {
            set_recording(state, caller, room_id, enabled).await
        }
        Request::ListRecordings { room_id } => {
            let (root, room) = recordings_of(state, caller, &room_id).await?;
            let recordings =
                tokio::task::spawn_blocking(move || crate::recorder::list(&root, &room.id))
                    .await
                    .map_err(|_| WireError::new(ErrorCode::Internal, "listing failed"))??;
            Ok(ResponseBody::Recordings {
                room_id,
                recordings,
            })
        }
        Request::FetchRecording {
            room_id,
            recording_id,
            file,
            offset,
        } => {
            let (root, room) = recordings_of(state, caller, &room_id).await?;
            let name = file.clone();
            let (data, size) = tokio::task::spawn_blocking(move || {
                crate::recorder::read_chunk(&root, &room.id, &recording_id, &name, offset)
            })
            .await
            .map_err(|_| WireError::new(ErrorCode::Internal, "reading failed"))??;
            Ok(ResponseBody::RecordingChunk {
                file,
                offset,
                size,
                data: streams_proto::Bytes(data),
            })
        }
        Request::ListStreams { room_id } => {
            let room = visible_room(state, caller, &room_id).await?;
            if room.role_of(&caller.user) == Role::Outsider {
                return Err(forbidden(Right::Subscribe));
            }
            let streams = state.sfu.streams(room_id.clone()).await?;
            Ok(ResponseBody::Streams { room_id, streams })
        }
    }
}

fn check_context(ctx: &ContextId) -> Result<(), WireError> {
    if *ctx == ContextId::default_context() {
        Ok(())
    } else {
        Err(WireError::new(
            ErrorCode::NotFound,
            format!("no such context {ctx}"),
        ))
    }
}

/// Loads a room the caller may get. A room an outsider may not see is reported exactly like a missing
/// one; a member without the get right is told so.
async fn visible_room(
    state: &BridgeState,
    caller: &Caller,
    room_id: &RoomId,
) -> Result<RoomRecord, WireError> {
    let id = room_id.clone();
    let room = state
        .with_store(move |s| s.room(&id))
        .await?
        .ok_or_else(not_found)?;
    let role = room.role_of(&caller.user);
    if room.policy().allows(Right::Get, role) {
        Ok(room)
    } else if role == Role::Outsider {
        Err(not_found())
    } else {
        Err(forbidden(Right::Get))
    }
}

/// Who hears about a room: its users and managers that the policy lets see it.
pub fn audience(room: &RoomRecord) -> Vec<UserId> {
    let policy = room.policy();
    room.latest()
        .map(EpochRecord::members)
        .unwrap_or_default()
        .into_iter()
        .filter(|m| policy.allows(Right::Get, room.role_of(m)))
        .collect()
}

fn publish(state: &BridgeState, room: &RoomRecord, event: &Event) {
    state
        .hub()
        .publish(event, &room.context_id, &audience(room));
}

/// Tells a room's audience that the streams the SFU just closed are gone.
fn announce_unpublished(state: &BridgeState, room: &RoomRecord, closed: Vec<(RoomId, StreamId)>) {
    for (room_id, stream_id) in closed {
        publish(
            state,
            room,
            &Event::StreamUnpublished { room_id, stream_id },
        );
    }
}

async fn check_registered(state: &BridgeState, record: &EpochRecord) -> Result<(), WireError> {
    if state.open {
        return Ok(());
    }
    let members = record.members();
    let unknown = state
        .with_store(move |s| {
            for m in members {
                if !s.is_registered(&m)? {
                    return Ok(Some(m));
                }
            }
            Ok(None)
        })
        .await?;
    match unknown {
        Some(user) => Err(invalid(format!(
            "user {user} is not registered with this bridge"
        ))),
        None => Ok(()),
    }
}

fn check_meta(
    meta: &SignedMeta,
    record: &EpochRecord,
    caller: &Caller,
    version: u64,
) -> Result<(), WireError> {
    if meta.author != caller.user {
        return Err(invalid("metadata must be signed by the caller"));
    }
    if meta.version != version {
        return Err(WireError::new(
            ErrorCode::Conflict,
            format!(
                "metadata was written as version {} but the room's next version is {version}",
                meta.version
            ),
        ));
    }
    if meta.epoch != record.epoch {
        return Err(WireError::new(
            ErrorCode::Conflict,
            format!(
                "metadata is for epoch {} but the room is at epoch {}",
                meta.epoch, record.epoch
            ),
        ));
    }
    meta.verify(record).map_err(signature_error)
}

async fn create_room(
    state: &BridgeState,
    caller: &Caller,
    genesis: EpochRecord,
    meta: SignedMeta,
) -> Result<ResponseBody, WireError> {
    check_context(&genesis.context_id)?;
    if genesis.author != caller.user {
        return Err(invalid("the genesis epoch must be signed by the caller"));
    }
    genesis.verify_genesis().map_err(signature_error)?;
    check_meta(&meta, &genesis, caller, 1)?;
    check_registered(state, &genesis).await?;
    let now = now_ms();
    let room = RoomRecord {
        id: genesis.room_id.clone(),
        context_id: genesis.context_id.clone(),
        created_at: now,
        created_by: caller.user.clone(),
        modified_at: now,
        modified_by: caller.user.clone(),
        version: 1,
        meta,
        epochs: vec![genesis],
    };
    let stored = room.clone();
    state.with_store(move |s| s.create_room(&stored)).await?;
    tracing::info!(room = %room.id, "room created");
    publish(
        state,
        &room,
        &Event::RoomCreated {
            room: Box::new(room.clone()),
        },
    );
    Ok(ResponseBody::Room {
        room: Box::new(room),
    })
}

async fn update_room(
    state: &BridgeState,
    caller: &Caller,
    room_id: RoomId,
    version: u64,
    force: bool,
    epoch: Option<EpochRecord>,
    meta: SignedMeta,
) -> Result<ResponseBody, WireError> {
    let room = visible_room(state, caller, &room_id).await?;
    let role = room.role_of(&caller.user);
    let policy = room.policy();
    if !policy.allows(Right::Update, role) {
        return Err(forbidden(Right::Update));
    }
    if !force && version != room.version {
        return Err(WireError::new(
            ErrorCode::Conflict,
            format!(
                "room is at version {} but the update was made against version {version}",
                room.version
            ),
        ));
    }
    let current = room
        .latest()
        .cloned()
        .ok_or_else(|| WireError::new(ErrorCode::Internal, "room without epochs"))?;
    let mut updated = room.clone();
    if let Some(next) = epoch {
        if role != Role::Manager {
            return Err(WireError::new(
                ErrorCode::Forbidden,
                "only managers change members, policy or keys",
            ));
        }
        if next.author != caller.user {
            return Err(invalid("the new epoch must be signed by the caller"));
        }
        if next.epoch != current.epoch + 1 || next.prev_hash.as_slice() != current.hash() {
            return Err(WireError::new(
                ErrorCode::Conflict,
                format!(
                    "the new epoch does not follow the room's current epoch {}",
                    current.epoch
                ),
            ));
        }
        current.verify_successor(&next).map_err(signature_error)?;
        if next.policy != current.policy && !policy.allows(Right::UpdatePolicy, role) {
            return Err(forbidden(Right::UpdatePolicy));
        }
        check_registered(state, &next).await?;
        updated.epochs.push(next);
    }
    let latest = updated.latest().cloned().unwrap_or(current.clone());
    check_meta(&meta, &latest, caller, room.version + 1)?;
    updated.meta = meta;
    updated.version = room.version + 1;
    updated.modified_at = now_ms();
    updated.modified_by = caller.user.clone();
    let stored = updated.clone();
    let read_version = room.version;
    state
        .with_store(move |s| s.replace_room(&stored, read_version))
        .await?;

    // Members removed by this update leave the room's presence.
    let removed: Vec<UserId> = current
        .members()
        .into_iter()
        .filter(|m| latest.role_of(m) == Role::Outsider)
        .collect();
    for user in &removed {
        // Their media ends too: they could not decrypt it any more, and must not receive it.
        let closed = state.sfu.close_user(room_id.clone(), user.clone()).await;
        announce_unpublished(state, &updated, closed);
        if state.hub().evict(&room_id, user) {
            publish(
                state,
                &updated,
                &Event::UserLeft {
                    room_id: room_id.clone(),
                    user_id: user.clone(),
                },
            );
        }
    }
    publish(
        state,
        &updated,
        &Event::RoomUpdated {
            room: Box::new(updated.clone()),
        },
    );
    // Those just removed learn only that much.
    state.hub().publish(
        &Event::RemovedFromRoom {
            room_id: room_id.clone(),
            context_id: updated.context_id.clone(),
        },
        &updated.context_id,
        &removed,
    );
    Ok(ResponseBody::Room {
        room: Box::new(updated),
    })
}

async fn list_rooms(
    state: &BridgeState,
    caller: &Caller,
    context_id: ContextId,
    paging: Paging,
) -> Result<ResponseBody, WireError> {
    check_context(&context_id)?;
    if paging.limit == 0 || paging.limit > MAX_PAGE_LIMIT {
        return Err(invalid(format!(
            "limit must be between 1 and {MAX_PAGE_LIMIT}"
        )));
    }
    let viewer = caller.user.clone();
    let (rooms, total) = state
        .with_store(move |s| s.list_rooms(&context_id, &viewer, paging))
        .await?;
    Ok(ResponseBody::Rooms { rooms, total })
}

async fn delete_room(
    state: &BridgeState,
    caller: &Caller,
    room_id: RoomId,
) -> Result<ResponseBody, WireError> {
    let room = visible_room(state, caller, &room_id).await?;
    if !room
        .policy()
        .allows(Right::Delete, room.role_of(&caller.user))
    {
        return Err(forbidden(Right::Delete));
    }
    let id = room_id.clone();
    if !state.with_store(move |s| s.delete_room(&id)).await? {
        return Err(not_found());
    }
    state.hub().drop_room(&room_id);
    state.sfu.close_room(room_id.clone()).await;
    tracing::info!(room = %room_id, "room deleted");
    publish(
        state,
        &room,
        &Event::RoomDeleted {
            room_id,
            context_id: room.context_id.clone(),
        },
    );
    Ok(ResponseBody::Done)
}

async fn join_room(
    state: &BridgeState,
    caller: &Caller,
    room_id: RoomId,
) -> Result<ResponseBody, WireError> {
    let room = visible_room(state, caller, &room_id).await?;
    if room.role_of(&caller.user) == Role::Outsider {
        return Err(WireError::new(
            ErrorCode::Forbidden,
            "only the room's users and managers may join",
        ));
    }
    let first = state.hub().join(caller.conn, &room_id);
    if first {
        publish(
            state,
            &room,
            &Event::UserJoined {
                room_id: room_id.clone(),
                user_id: caller.user.clone(),
            },
        );
    }
    let users = state.hub().participants(&room_id);
    Ok(ResponseBody::Participants { room_id, users })
}
