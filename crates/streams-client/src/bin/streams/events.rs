//! `streams events`: room and presence events as JSON lines.
use std::time::Duration;

use serde::Serialize;
use streams_client::{ClientEvent, RoomEvent};
use streams_proto::wire::EventScope;
use streams_proto::{ContextId, StreamId, TrackId};

use crate::common::{Globals, connect, identity, room_id};
use crate::rooms::RoomView;

#[derive(Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
enum EventLine {
    RoomCreated {
        room: RoomView,
    },
    RoomUpdated {
        room: RoomView,
    },
    RoomDeleted {
        room_id: String,
    },
    RemovedFromRoom {
        room_id: String,
    },
    StreamPublished {
        room_id: String,
        stream_id: StreamId,
        user_id: String,
        tracks: usize,
    },
    StreamUnpublished {
        room_id: String,
        stream_id: StreamId,
    },
    StreamUpdated {
        room_id: String,
        stream_id: StreamId,
        tracks: usize,
    },
    Subscribed {
        room_id: String,
        user_id: String,
        track_ids: Vec<TrackId>,
    },
    Unsubscribed {
        room_id: String,
        user_id: String,
    },
    UserJoined {
        room_id: String,
        user_id: String,
    },
    UserLeft {
        room_id: String,
        user_id: String,
    },
    RecordingChanged {
        room_id: String,
        recording_id: String,
        recording: bool,
        by: String,
    },
    Rejected {
        room_id: String,
        error: String,
    },
    Connection {
        state: String,
    },
}

pub(crate) fn events(
    cli: &Globals,
    room: Option<&str>,
    seconds: Option<u64>,
) -> Result<(), String> {
    let client = connect(cli, &identity(cli)?)?;
    let scope = match room {
        Some(id) => EventScope::Room(room_id(id)?),
        None => EventScope::Context(ContextId::default()),
    };
    client.subscribe(scope.clone()).map_err(|e| e.to_string())?;
    // Tells scripts that events from now on will be printed.
    println!(
        "{}",
        serde_json::json!({ "event": "subscribed", "scope": scope })
    );
    let deadline = seconds.map(|s| std::time::Instant::now() + Duration::from_secs(s));
    loop {
        let wait = match deadline {
            Some(d) => d.saturating_duration_since(std::time::Instant::now()),
            None => Duration::from_secs(3600),
        };
        if wait.is_zero() {
            return Ok(());
        }
        let event = match client.events().recv_timeout(wait) {
            Ok(event) => event,
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => continue,
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {
                return Err("the client stopped".into());
            }
        };
        let line = match event {
            ClientEvent::Room(RoomEvent::Created(room)) => EventLine::RoomCreated {
                room: RoomView::from(&*room),
            },
            ClientEvent::Room(RoomEvent::Updated(room)) => EventLine::RoomUpdated {
                room: RoomView::from(&*room),
            },
            ClientEvent::Room(RoomEvent::Deleted { room_id, .. }) => EventLine::RoomDeleted {
                room_id: room_id.to_string(),
            },
            ClientEvent::Room(RoomEvent::RemovedFrom { room_id, .. }) => {
                EventLine::RemovedFromRoom {
                    room_id: room_id.to_string(),
                }
            }
            ClientEvent::Room(RoomEvent::StreamPublished { room_id, stream }) => {
                EventLine::StreamPublished {
                    room_id: room_id.to_string(),
                    stream_id: stream.stream_id,
                    user_id: stream.user_id.to_string(),
                    tracks: stream.tracks.len(),
                }
            }
            ClientEvent::Room(RoomEvent::StreamUnpublished { room_id, stream_id }) => {
                EventLine::StreamUnpublished {
                    room_id: room_id.to_string(),
                    stream_id,
                }
            }
            ClientEvent::Room(RoomEvent::StreamUpdated { room_id, stream }) => {
                EventLine::StreamUpdated {
                    room_id: room_id.to_string(),
                    stream_id: stream.stream_id,
                    tracks: stream.tracks.len(),
                }
            }
            ClientEvent::Room(RoomEvent::Subscribed {
                room_id,
                user_id,
                track_ids,
            }) => EventLine::Subscribed {
                room_id: room_id.to_string(),
                user_id: user_id.to_string(),
                track_ids,
            },
            ClientEvent::Room(RoomEvent::Unsubscribed { room_id, user_id }) => {
                EventLine::Unsubscribed {
                    room_id: room_id.to_string(),
                    user_id: user_id.to_string(),
                }
            }
            ClientEvent::Room(RoomEvent::UserJoined { room_id, user_id }) => {
                EventLine::UserJoined {
                    room_id: room_id.to_string(),
                    user_id: user_id.to_string(),
                }
            }
            ClientEvent::Room(RoomEvent::UserLeft { room_id, user_id }) => EventLine::UserLeft {
                room_id: room_id.to_string(),
                user_id: user_id.to_string(),
            },
            ClientEvent::Room(RoomEvent::RecordingChanged {
                room_id,
                recording_id,
                recording,
                by,
            }) => EventLine::RecordingChanged {
                room_id: room_id.to_string(),
                recording_id,
                recording,
                by: by.to_string(),
            },
            ClientEvent::Room(RoomEvent::Rejected { room_id, error }) => EventLine::Rejected {
                room_id: room_id.to_string(),
                error: error.to_string(),
            },
            ClientEvent::Connection(state) => EventLine::Connection {
                state: format!("{state:?}"),
            },
            ClientEvent::Reply { .. } | ClientEvent::Room(RoomEvent::Resync { .. }) => continue,
        };
        println!("{}", serde_json::to_string(&line).unwrap_or_default());
        let _ = std::io::Write::flush(&mut std::io::stdout());
    }
}
