//! One live connection to the bridge: connect, answer the signed challenge, then route responses to
//! the operations that asked and hand pushed events to the runtime. Sans reconnection: see
//! [`crate::runtime`].
use std::collections::HashMap;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use streams_proto::bytes::Bytes;
use streams_proto::wire::{
    ClientMessage, Event, PROTOCOL_VERSION, Request, ResponseBody, ResumeTicket, ServerMessage,
    auth_transcript,
};
use streams_proto::{Identity, UserId};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use crate::error::ClientError;
use crate::transport::{ConnectError, Transport, Ws};

/// How long connecting and the handshake may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How often a quiet connection is probed.
pub const KEEPALIVE: Duration = Duration::from_secs(10);
/// A connection silent for this long is considered dead.
pub const DEAD_AFTER: Duration = Duration::from_secs(30);

/// A request waiting to be sent, and where its answer goes.
pub struct Outgoing {
    /// The request.
    pub request: Request,
    /// Receives the bridge's answer, or why there is none.
    pub respond: oneshot::Sender<Result<ResponseBody, ClientError>>,
}

/// What the bridge said when it let a connection in.
#[derive(Clone, Debug)]
pub struct Welcome {
    /// Who it knows the connection as.
    pub user_id: UserId,
    /// How to resume this connection after a drop.
    pub ticket: Option<ResumeTicket>,
    /// Whether this connection took over the one whose token was presented.
    pub resumed: bool,
}

/// Connects (TCP, TLS for `wss://`, WebSocket) and authenticates, presenting `resume` (the token
/// of an earlier connection's [`ResumeTicket`]) to take that connection over.
pub async fn connect(
    transport: &Transport,
    identity: &Identity,
    resume: Option<Bytes>,
) -> Result<(Ws, Welcome), ConnectError> {
    let attempt = async {
        let mut ws = transport.open().await?;
        let challenge = loop {
            match next_message(&mut ws).await? {
                ServerMessage::Hello {
                    protocol,
                    challenge,
                } => {
                    if protocol != PROTOCOL_VERSION {
                        return Err(ConnectError::Protocol {
                            bridge: protocol,
                            client: PROTOCOL_VERSION,
                        });
                    }
                    break challenge;
                }
                other => tracing::debug!("ignoring {other:?} before hello"),
            }
        };
        let auth = ClientMessage::Auth {
            protocol: PROTOCOL_VERSION,
            user_id: identity.user_id().clone(),
            signature: identity.sign(&auth_transcript(challenge.as_slice())),
            resume,
        };
        send(&mut ws, &auth)
            .await
            .map_err(|e| ConnectError::Lost(e.to_string()))?;
        loop {
            match next_message(&mut ws).await? {
                ServerMessage::Welcome {
                    user_id,
                    resume,
                    resumed,
                } => {
                    let welcome = Welcome {
                        user_id,
                        ticket: resume,
                        resumed,
                    };
                    return Ok((ws, welcome));
                }
                ServerMessage::Response { result: Err(e), .. } => {
                    return Err(ConnectError::Refused(e.message));
                }
                other => tracing::debug!("ignoring {other:?} during handshake"),
            }
        }
    };
    tokio::time::timeout(CONNECT_TIMEOUT, attempt)
        .await
        .unwrap_or_else(|_| {
            Err(ConnectError::Timeout {
                url: transport.url().to_owned(),
            })
        })
}

async fn next_message(ws: &mut Ws) -> Result<ServerMessage, ConnectError> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(text))) => {
                return serde_json::from_str(text.as_str())
                    .map_err(|e| ConnectError::Unreadable(e.to_string()));
            }
            Some(Ok(Message::Close(_))) | None => {
                return Err(ConnectError::Lost(
                    "the bridge closed the connection".into(),
                ));
            }
            Some(Err(e)) => return Err(ConnectError::Lost(e.to_string())),
            Some(Ok(_)) => continue,
        }
    }
}

/// Sending a message failed.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// It could not be encoded.
    #[error("cannot encode a message: {0}")]
    Encode(#[from] serde_json::Error),
    /// The connection failed.
    #[error("connection error: {0}")]
    Socket(#[from] tokio_tungstenite::tungstenite::Error),
}

async fn send(ws: &mut Ws, msg: &ClientMessage) -> Result<(), SendError> {
    let text = serde_json::to_string(msg)?;
    Ok(ws.send(Message::text(text)).await?)
}

/// How a link ended.
pub enum LinkEnd {
    /// The connection failed or closed, with the reason.
    Lost(String),
    /// The runtime is shutting down.
    Stopped,
}

/// Serves one connection until it ends (or `stopping` is notified: it closes with a WebSocket
/// close): sends queued requests, routes responses and events.
pub async fn run(
    mut ws: Ws,
    requests: &mut mpsc::Receiver<Outgoing>,
    stopping: &tokio::sync::Notify,
    mut on_event: impl FnMut(Event),
) -> LinkEnd {
    let mut pending: HashMap<u64, oneshot::Sender<Result<ResponseBody, ClientError>>> =
        HashMap::new();
    let mut next_id = 0u64;
    let mut last_heard = Instant::now();
    let mut keepalive = tokio::time::interval(KEEPALIVE);
    keepalive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let end = loop {
        tokio::select! {
            () = stopping.notified() => break LinkEnd::Stopped,
            outgoing = requests.recv() => {
                let Some(Outgoing { request, respond }) = outgoing else { break LinkEnd::Stopped };
                next_id += 1;
                if let Err(e) = send(&mut ws, &ClientMessage::Request { id: next_id, request }).await {
                    let e = e.to_string();
                    let _ = respond.send(Err(ClientError::Disconnected(e.clone())));
                    break LinkEnd::Lost(e);
                }
                pending.insert(next_id, respond);
            }
            incoming = ws.next() => {
                last_heard = Instant::now();
                match incoming {
                    Some(Ok(Message::Text(text))) => match serde_json::from_str::<ServerMessage>(text.as_str()) {
                        Ok(ServerMessage::Response { id: Some(id), result }) => {
                            if let Some(respond) = pending.remove(&id) {
                                let _ = respond.send(result.map_err(ClientError::Bridge));
                            }
                        }
                        Ok(ServerMessage::Response { id: None, result }) => {
                            tracing::warn!("bridge reported an error without request id: {result:?}");
                        }
                        Ok(ServerMessage::Event { event }) => on_event(event),
                        Ok(other) => tracing::debug!("ignoring {other:?}"),
                        Err(e) => tracing::warn!("unreadable message from the bridge: {e}"),
                    },
                    Some(Ok(Message::Close(_))) | None => break LinkEnd::Lost("the bridge closed the connection".into()),
                    Some(Err(e)) => break LinkEnd::Lost(format!("connection error: {e}")),
                    Some(Ok(_)) => {}
                }
            }
            _ = keepalive.tick() => {
                if last_heard.elapsed() > DEAD_AFTER {
                    break LinkEnd::Lost("the bridge stopped answering".into());
                }
                if ws.send(Message::Ping(Vec::new().into())).await.is_err() {
                    break LinkEnd::Lost("keepalive failed".into());
                }
            }
        }
    };
    let reason = match &end {
        LinkEnd::Lost(r) => r.clone(),
        LinkEnd::Stopped => "client stopped".into(),
    };
    for (_, respond) in pending.drain() {
        let _ = respond.send(Err(ClientError::Disconnected(reason.clone())));
    }
    // Only a client that stops says goodbye: the bridge ends a closed connection at once, while
    // it keeps a lost one for a resume (a close sent on a lost link that still got through would
    // cancel the resume it is about to make).
    if matches!(end, LinkEnd::Stopped) {
        let _ = ws.close(None).await;
    }
    end
}
