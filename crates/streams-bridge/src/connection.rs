//! One client connection: WebSocket accept, the signed-challenge handshake, then requests in order, with
//! events interleaved by the hub. Bad input gets a typed error reply and the connection carries on.
use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use streams_proto::UserId;
use streams_proto::bytes::Bytes;
use streams_proto::identity;
use streams_proto::wire::{
    ClientMessage, ErrorCode, Event, MAX_MESSAGE_BYTES, PROTOCOL_VERSION, ResumeTicket,
    ServerMessage, WireError, auth_transcript,
};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{Notify, mpsc};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::hub::OUTBOX_CAPACITY;
use crate::requests::{self, Caller};
use crate::resume::{RESUME_GRACE, Token};
use crate::sfu::LostStreams;
use crate::state::BridgeState;

/// How long a client has to authenticate.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long one outgoing message may take to write before the peer counts as gone.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// The WebSocket layer's own hard cap. Messages above [`MAX_MESSAGE_BYTES`] but below this get a typed
/// `too_large` reply; only a message above this closes the connection (memory protection).
pub const HARD_MESSAGE_CAP: usize = 16 * MAX_MESSAGE_BYTES;

fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(HARD_MESSAGE_CAP))
        .max_frame_size(Some(HARD_MESSAGE_CAP))
}

fn error_reply(id: Option<u64>, code: ErrorCode, message: impl Into<String>) -> ServerMessage {
    ServerMessage::Response {
        id,
        result: Err(WireError::new(code, message)),
    }
}

/// Parses one text message, or says why it cannot be read (with the request id when it is visible).
fn parse(text: &str) -> Result<ClientMessage, ServerMessage> {
    if text.len() > MAX_MESSAGE_BYTES {
        return Err(error_reply(
            None,
            ErrorCode::TooLarge,
            format!(
                "message of {} bytes exceeds the limit of {MAX_MESSAGE_BYTES} bytes",
                text.len()
            ),
        ));
    }
    serde_json::from_str::<ClientMessage>(text).map_err(|e| {
        let id = serde_json::from_str::<serde_json::Value>(text)
            .ok()
            .and_then(|v| v.get("id").and_then(serde_json::Value::as_u64));
        error_reply(id, ErrorCode::Malformed, format!("unreadable message: {e}"))
    })
}

/// Serves one connection (TCP, or TLS over it) until it closes.
pub async fn serve<S>(state: Arc<BridgeState>, stream: S, peer: SocketAddr)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let ws = match tokio_tungstenite::accept_async_with_config(stream, Some(ws_config())).await {
        Ok(ws) => ws,
        Err(e) => {
            tracing::debug!(%peer, "websocket handshake failed: {e}");
            return;
        }
    };
    let (mut sink, mut source) = ws.split();
    let (outbox, mut outgoing) = mpsc::channel::<ServerMessage>(OUTBOX_CAPACITY);
    let writer = tokio::spawn(async move {
        while let Some(msg) = outgoing.recv().await {
            let Ok(text) = serde_json::to_string(&msg) else {
                continue;
            };
            match tokio::time::timeout(WRITE_TIMEOUT, sink.send(Message::text(text))).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => break,
                Err(_) => {
                    tracing::warn!(%peer, "peer stopped reading; closing the connection");
                    break;
                }
            }
        }
        let _ = sink.close().await;
    });

    let challenge: [u8; 32] = rand::random();
    let hello = ServerMessage::Hello {
        protocol: PROTOCOL_VERSION,
        challenge: Bytes(challenge.to_vec()),
    };
    let authenticated = if outbox.send(hello).await.is_ok() {
        tokio::time::timeout(
            HANDSHAKE_TIMEOUT,
            handshake(&state, &mut source, &outbox, &challenge),
        )
        .await
        .ok()
        .flatten()
    } else {
        None
    };
    let Some((user, resume)) = authenticated else {
        drop(outbox);
        let _ = writer.await;
        return;
    };

    let kick = Arc::new(Notify::new());
    let taken = match resume
        .as_ref()
        .and_then(|t| <Token>::try_from(t.as_slice()).ok())
    {
        Some(token) => state.resumption.take(&token, &user).await,
        None => None,
    };
    // Under the hub's lock, the Welcome is queued before the connection can be sent any event
    // (a resumed one keeps its subscriptions, and the client reads nothing before the Welcome).
    let (caller, resumed, token, welcomed) = {
        let mut hub = state.hub();
        let resumed = taken.filter(|conn| hub.contains(*conn));
        let conn = resumed
            .unwrap_or_else(|| hub.register(user.clone(), outbox.clone(), Arc::clone(&kick)));
        let token = state
            .resumption
            .issue(conn, user.clone(), Arc::clone(&kick));
        let welcome = ServerMessage::Welcome {
            user_id: user.clone(),
            resume: Some(ResumeTicket {
                token: Bytes(token.to_vec()),
                grace_ms: RESUME_GRACE.as_millis() as u64,
            }),
            resumed: resumed.is_some(),
        };
        // The outbox is new and empty: it has room.
        let welcomed = outbox.try_send(welcome).is_ok();
        if resumed.is_some() {
            hub.reattach(conn, outbox.clone(), Arc::clone(&kick));
        }
        (Caller { user, conn }, resumed, token, welcomed)
    };
    let conn = caller.conn;
    tracing::info!(%peer, user = %caller.user, conn, resumed = resumed.is_some(), "client authenticated");
    let end = if welcomed {
        request_loop(&state, &caller, &mut source, &outbox, &kick).await
    } else {
        End::Lost
    };
    // The hub's copy of the outbox goes first (detached or unregistered), so the writer ends.
    match end {
        End::Lost => {
            // Kept for a resume; ended when the grace passes without one.
            state.hub().detach(conn);
            tracing::info!(%peer, user = %caller.user, conn, "client dropped; kept {RESUME_GRACE:?} for a resume");
            if let Some(taken) = state.resumption.park(&token) {
                tokio::spawn(end_after_grace(state, token, caller, taken));
            }
        }
        End::Closed => {
            state.resumption.forget(&token);
            end_connection(&state, &caller).await;
            tracing::info!(%peer, user = %caller.user, "client disconnected");
        }
    }
    drop(outbox);
    let _ = writer.await;
}

/// Ends a parked connection when [`RESUME_GRACE`] passes, unless it is taken over first.
async fn end_after_grace(
    state: Arc<BridgeState>,
    token: Token,
    caller: Caller,
    taken: tokio::sync::oneshot::Receiver<()>,
) {
    tokio::select! {
        _ = taken => {}
        () = tokio::time::sleep(RESUME_GRACE) => {
            if state.resumption.expire(&token) {
                end_connection(&state, &caller).await;
                tracing::info!(user = %caller.user, conn = caller.conn, "no resume within the grace; connection ended");
            }
        }
    }
}

/// What a connection leaves behind goes: its media sessions (their streams unpublished), its
/// presence (members told it left), its subscriptions.
async fn end_connection(state: &BridgeState, caller: &Caller) {
    let left = state.hub().unregister(caller.conn);
    for (room_id, stream_id) in state.sfu.close(caller.conn, None).await {
        announce(state, Event::StreamUnpublished { room_id, stream_id }).await;
    }
    for (room_id, user_id) in left {
        announce(state, Event::UserLeft { room_id, user_id }).await;
    }
}

/// How a connection's request loop ended.
enum End {
    /// Its client closed it, or the bridge refused it further service: nothing to keep.
    Closed,
    /// It dropped (an error, a reset, the network, a kick): kept for a resume.
    Lost,
}

type Source<S> = futures_util::stream::SplitStream<tokio_tungstenite::WebSocketStream<S>>;

async fn handshake(
    state: &BridgeState,
    source: &mut Source<impl AsyncRead + AsyncWrite + Unpin>,
    outbox: &mpsc::Sender<ServerMessage>,
    challenge: &[u8; 32],
) -> Option<(UserId, Option<Bytes>)> {
    while let Some(frame) = source.next().await {
        let reply = match frame {
            Ok(Message::Text(text)) => match parse(text.as_str()) {
                Ok(ClientMessage::Auth {
                    protocol,
                    user_id,
                    signature,
                    resume,
                }) => match authenticate(state, protocol, &user_id, &signature, challenge).await {
                    Ok(()) => return Some((user_id, resume)),
                    Err(e) => ServerMessage::Response {
                        id: None,
                        result: Err(e),
                    },
                },
                Ok(ClientMessage::Request { id, .. }) => error_reply(
                    Some(id),
                    ErrorCode::NotAuthenticated,
                    "authenticate first: answer the hello challenge with an auth message",
                ),
                Err(reply) => reply,
            },
            Ok(Message::Binary(_)) => {
                error_reply(None, ErrorCode::Malformed, "binary messages are not used")
            }
            Ok(Message::Close(_)) | Err(_) => return None,
            Ok(_) => continue,
        };
        if outbox.send(reply).await.is_err() {
            return None;
        }
    }
    None
}

async fn authenticate(
    state: &BridgeState,
    protocol: u32,
    user: &UserId,
    signature: &Bytes,
    challenge: &[u8; 32],
) -> Result<(), WireError> {
    if protocol != PROTOCOL_VERSION {
        return Err(WireError::new(
            ErrorCode::ProtocolMismatch,
            format!("this bridge speaks protocol {PROTOCOL_VERSION}, the client {protocol}"),
        ));
    }
    identity::verify(
        user,
        &auth_transcript(challenge),
        signature,
        "auth challenge",
    )
    .map_err(|_| {
        WireError::new(
            ErrorCode::AuthFailed,
            "the challenge signature does not verify",
        )
    })?;
    if state.open {
        return Ok(());
    }
    let id = user.clone();
    if state.with_store(move |s| s.is_registered(&id)).await? {
        Ok(())
    } else {
        Err(WireError::new(
            ErrorCode::NotRegistered,
            format!(
                "user {user} is not registered with this bridge; an administrator can register it with \
                 `streams-bridge users add {user}` (or run the bridge with --open for development)"
            ),
        ))
    }
}

async fn request_loop(
    state: &BridgeState,
    caller: &Caller,
    source: &mut Source<impl AsyncRead + AsyncWrite + Unpin>,
    outbox: &mpsc::Sender<ServerMessage>,
    kick: &Notify,
) -> End {
    loop {
        let frame = tokio::select! {
            _ = kick.notified() => return End::Lost,
            frame = source.next() => frame,
        };
        let reply = match frame {
            Some(Ok(Message::Close(_))) => return End::Closed,
            None => return End::Lost,
            Some(Err(tokio_tungstenite::tungstenite::Error::Capacity(e))) => {
                // Above the hard cap the stream cannot be resynchronised: answer, then close.
                let _ = outbox
                    .send(error_reply(
                        None,
                        ErrorCode::TooLarge,
                        format!("message exceeds the hard cap of {HARD_MESSAGE_CAP} bytes ({e}); closing"),
                    ))
                    .await;
                return End::Closed;
            }
            Some(Err(e)) => {
                tracing::debug!(user = %caller.user, "connection error: {e}");
                return End::Lost;
            }
            Some(Ok(Message::Text(text))) => match parse(text.as_str()) {
                Ok(ClientMessage::Request { id, request }) => {
                    if !still_registered(state, &caller.user).await {
                        let _ = outbox
                            .send(error_reply(
                                Some(id),
                                ErrorCode::NotRegistered,
                                "this key is no longer registered with the bridge",
                            ))
                            .await;
                        return End::Closed;
                    }
                    ServerMessage::Response {
                        id: Some(id),
                        result: requests::handle(state, caller, request).await,
                    }
                }
                Ok(ClientMessage::Auth { .. }) => {
                    error_reply(None, ErrorCode::Invalid, "already authenticated")
                }
                Err(reply) => reply,
            },
            Some(Ok(Message::Binary(_))) => {
                error_reply(None, ErrorCode::Malformed, "binary messages are not used")
            }
            Some(Ok(_)) => continue,
        };
        if outbox.send(reply).await.is_err() {
            return End::Lost;
        }
    }
}

/// Whether the user may still use the bridge (an administrator may have removed the key meanwhile).
async fn still_registered(state: &BridgeState, user: &UserId) -> bool {
    if state.open {
        return true;
    }
    let id = user.clone();
    state
        .with_store(move |s| s.is_registered(&id))
        .await
        .unwrap_or(false)
}

/// Tells each room that a stream is gone whose media session ended on its own (its publisher's
/// network went away while the signaling connection stayed), until the SFU stops. It holds the
/// bridge's state weakly: the state owns the SFU, whose workers hold the other end of `lost`.
pub(crate) async fn announce_lost_streams(state: Weak<BridgeState>, mut lost: LostStreams) {
    while let Some((room_id, stream_id)) = lost.recv().await {
        let Some(state) = state.upgrade() else {
            return;
        };
        tracing::info!(%room_id, %stream_id, "a media session was lost; its stream is unpublished");
        announce(&state, Event::StreamUnpublished { room_id, stream_id }).await;
    }
}

/// Tells a room's audience about something that happened outside a request (a disconnect).
async fn announce(state: &BridgeState, event: Event) {
    let id = event.room_id().clone();
    let Ok(Some(room)) = state.with_store(move |s| s.room(&id)).await else {
        return;
    };
    state
        .hub()
        .publish(&event, &room.context_id, &requests::audience(&room));
}
