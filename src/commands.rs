//! [`StreamsCommands`]: queue client operations from any system; [`StreamsSystems::Send`] flushes them
//! without blocking, keeping what the client cannot take yet for the next frame.
//!
//! [`StreamsSystems::Send`]: crate::StreamsSystems::Send
use std::collections::VecDeque;

use bevy::prelude::*;
use streams_client::{ClientError, Operation, RequestId, StreamsClient};

/// The client, owned by the ECS. Dropping it (app exit) stops the client thread, then the embedded
/// bridge if any (fields drop in order, so the client never sees its bridge vanish first).
#[derive(Resource)]
pub(crate) struct ClientResource {
    pub client: StreamsClient,
    #[cfg(feature = "embedded-bridge")]
    pub _embedded_bridge: Option<streams_bridge::BridgeHandle>,
}

/// Queue of operations for the client. Each gets an id echoed by its [`crate::StreamsReply`].
#[derive(Resource, Default)]
pub struct StreamsCommands {
    queue: VecDeque<(RequestId, Operation)>,
    next_id: RequestId,
}

impl StreamsCommands {
    /// Queues an operation; returns the id its reply will carry.
    pub fn send(&mut self, op: Operation) -> RequestId {
        self.next_id += 1;
        self.queue.push_back((self.next_id, op));
        self.next_id
    }

    /// Operations waiting to be handed to the client.
    pub fn pending(&self) -> usize {
        self.queue.len()
    }
}

/// Hands queued operations to the client until its channel is full.
pub(crate) fn flush_commands(
    mut commands: ResMut<StreamsCommands>,
    client: Option<Res<ClientResource>>,
) {
    let Some(client) = client else {
        return;
    };
    while let Some((id, op)) = commands.queue.pop_front() {
        match client.client.send_with_id(id, op.clone()) {
            Ok(()) => {}
            Err(ClientError::Busy) => {
                commands.queue.push_front((id, op));
                return;
            }
            Err(e) => {
                warn!("dropping streams operation {id}: {e}");
            }
        }
    }
}
