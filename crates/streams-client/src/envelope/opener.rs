//! [`FrameOpener`]: the keys of one remote sender's track. It derives each key id's key from its
//! epoch's secret on first use, opens protected frames, and holds frames of an epoch whose secret has
//! not arrived yet (a room update can come after the first frames of the new epoch) instead of
//! losing them. Voice and video receivers share it.
use std::collections::HashMap;

use streams_proto::frame_crypto::{EpochTag, FrameDecryptor, KeyId, frame_header};
use streams_proto::{RoomSecret, UserId};

use crate::envelope::frame::{self, OpenedFrame};

/// Frames waiting for their epoch's key, at most this many.
const MAX_HELD: usize = 50;

/// What became of a frame.
#[derive(Debug)]
pub enum Opening {
    /// It authenticated.
    Opened(OpenedFrame),
    /// Its epoch's key is not known yet: held until [`FrameOpener::add_epoch`].
    Held,
    /// It did not authenticate (or was malformed, or too many were held): dropped.
    Failed,
}

/// Opens one sender's frames.
pub struct FrameOpener {
    sender: UserId,
    decryptor: FrameDecryptor,
    secrets: HashMap<EpochTag, RoomSecret>,
    held: Vec<(u64, Vec<u8>)>,
}

impl FrameOpener {
    /// An opener of `sender`'s frames (no epochs known yet).
    pub fn new(sender: UserId) -> Self {
        FrameOpener {
            sender,
            decryptor: FrameDecryptor::new(),
            secrets: HashMap::new(),
            held: Vec::new(),
        }
    }

    /// The sender.
    pub fn sender(&self) -> &UserId {
        &self.sender
    }

    /// Makes an epoch's secret available; returns the frames held for a key (with the times they
    /// arrived) so the caller can open them now.
    pub fn add_epoch(&mut self, epoch: u64, secret: RoomSecret) -> Vec<(u64, Vec<u8>)> {
        self.secrets.insert(EpochTag::of(epoch), secret);
        std::mem::take(&mut self.held)
    }

    /// Opens a frame that arrived at `arrived_us`.
    pub fn open(&mut self, arrived_us: u64, protected: Vec<u8>) -> Opening {
        let Ok((kid, _)) = frame_header(&protected) else {
            return Opening::Failed;
        };
        let Some(secret) = self.secrets.get(&KeyId::from_raw(kid).epoch_tag()) else {
            if self.held.len() < MAX_HELD {
                self.held.push((arrived_us, protected));
                return Opening::Held;
            }
            return Opening::Failed;
        };
        if self
            .decryptor
            .add_sender_if_missing(secret, &self.sender, kid)
            .is_err()
        {
            return Opening::Failed;
        }
        match frame::open(&self.decryptor, &self.sender, &protected) {
            Ok(opened) => Opening::Opened(opened),
            Err(_) => Opening::Failed,
        }
    }
}
