//! Many datagrams per system call on a [`MediaSocket`], through `quinn-udp` (maintained by the
//! quinn project, portable, and it knows each platform's limits): a [`ReceiveBatch`] is filled by
//! one `recvmmsg`, and what the kernel coalesced (GRO) is split back into datagrams; an [`Outbox`]
//! sends a run of equal-sized datagrams to one destination as one segmented send (GSO), which
//! the kernel cuts into datagrams after doing its per-send work once.
use std::io::{self, IoSliceMut};
use std::net::{IpAddr, SocketAddr};

use quinn_udp::{RecvMeta, Transmit};

use super::MediaSocket;

/// Reads filled by one [`MediaSocket::try_recv_batch`] at most.
pub const MAX_RECEIVE_SLOTS: usize = 32;

/// Room for one datagram (the media path stays below 1200 bytes).
const DATAGRAM: usize = 2048;

/// A segmented send carries at most this many bytes (UDP's limit, less headers).
const MAX_SEGMENTED: usize = 65_000;

/// The buffers one read of many datagrams fills.
pub struct ReceiveBatch {
    storage: Vec<u8>,
    /// Bytes per read (several datagrams when the socket coalesces).
    slot: usize,
    metas: [RecvMeta; MAX_RECEIVE_SLOTS],
    /// Reads one call may fill.
    slots: usize,
    filled: usize,
}

/// One datagram read.
#[derive(Debug)]
pub struct Received<'a> {
    /// Where from (IPv4 peers of a dual-stack socket as IPv4).
    pub source: SocketAddr,
    /// The local IP address it was sent to, where the platform says (IP_PKTINFO on Linux): on a
    /// socket bound to `0.0.0.0` or behind a destination NAT it is not the bound address.
    pub destination: Option<IpAddr>,
    /// The datagram.
    pub contents: &'a [u8],
}

impl ReceiveBatch {
    /// Buffers for reading up to `slots` reads of `socket` in one call (at most
    /// [`MAX_RECEIVE_SLOTS`]). Each has room for what the kernel may coalesce into one read; the
    /// pages a read does not reach are never touched, so they cost address space, not memory.
    pub fn new(socket: &MediaSocket, slots: usize) -> Self {
        let slots = slots.clamp(1, MAX_RECEIVE_SLOTS);
        let slot = DATAGRAM * socket.state.gro_segments().max(1);
        ReceiveBatch {
            storage: vec![0; slot * slots],
            slot,
            metas: [RecvMeta::default(); MAX_RECEIVE_SLOTS],
            slots,
            filled: 0,
        }
    }

    /// The datagrams of the last read, in arrival order.
    pub fn datagrams(&self) -> impl Iterator<Item = Received<'_>> {
        self.metas[..self.filled]
            .iter()
            .zip(self.storage.chunks(self.slot))
            .flat_map(|(meta, slot)| {
                slot[..meta.len.min(slot.len())]
                    .chunks(meta.stride.max(1))
                    .map(move |contents| Received {
                        source: super::canonical(meta.addr),
                        destination: meta.dst_ip.map(|ip| ip.to_canonical()),
                        contents,
                    })
            })
    }
}

impl MediaSocket {
    /// Reads what has arrived into `batch` (never blocks); returns how many reads were filled,
    /// 0 when nothing was there. An error left by an earlier send (ICMP port unreachable) is
    /// returned once, like any read error.
    pub fn try_recv_batch(&self, batch: &mut ReceiveBatch) -> io::Result<usize> {
        batch.filled = 0;
        let mut chunks = batch.storage.chunks_mut(batch.slot);
        let mut slices: [IoSliceMut<'_>; MAX_RECEIVE_SLOTS] =
            std::array::from_fn(|_| IoSliceMut::new(chunks.next().unwrap_or_default()));
        let slots = batch.slots;
        match self.state.recv(
            (&self.socket).into(),
            &mut slices[..slots],
            &mut batch.metas[..slots],
        ) {
            Ok(n) => {
                batch.filled = n;
                Ok(n)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
            Err(e) => Err(e),
        }
    }
}

/// Datagrams waiting to leave: a run to one destination from one source whose datagrams are all as
/// long as the first (the last may be shorter) goes out in one send.
#[derive(Default)]
pub struct Outbox {
    run: Vec<u8>,
    destination: Option<SocketAddr>,
    /// The local IP the run is sent from (`None`: the kernel's choice).
    source: Option<IpAddr>,
    segment: usize,
    /// The run ended with a shorter datagram: nothing may follow it.
    closed: bool,
    segments: usize,
}

/// What [`Outbox::flush`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    /// Datagrams handed to the kernel.
    pub datagrams: usize,
    /// System calls made.
    pub sends: usize,
}

impl Outbox {
    /// Queues a datagram to `destination`, sent from the local IP `source` (`None`: the one the
    /// kernel picks; a socket bound to one address always sends from it); sends the run before it
    /// first if it cannot join that run. A failed send loses its datagrams (a full send buffer is
    /// the network's loss; the error is logged).
    pub fn push(
        &mut self,
        socket: &MediaSocket,
        source: Option<IpAddr>,
        destination: SocketAddr,
        contents: &[u8],
    ) -> Sent {
        let joins = self.destination == Some(destination)
            && self.source == source
            && !self.closed
            && contents.len() <= self.segment
            && self.segments < socket.state.max_gso_segments()
            && self.run.len() + contents.len() <= MAX_SEGMENTED;
        let sent = if joins {
            Sent::default()
        } else {
            self.flush(socket)
        };
        if !joins {
            self.destination = Some(destination);
            self.source = source;
            self.segment = contents.len();
        }
        self.closed = contents.len() < self.segment;
        self.run.extend_from_slice(contents);
        self.segments += 1;
        sent
    }

    /// Sends the run queued.
    pub fn flush(&mut self, socket: &MediaSocket) -> Sent {
        let Some(destination) = self.destination.take() else {
            return Sent::default();
        };
        // An IPv4 source stays IPv4 on a dual-stack socket: Linux reads IP_PKTINFO for a
        // v4-mapped destination.
        let transmit = Transmit {
            destination: socket.wire_destination(destination),
            ecn: None,
            contents: &self.run,
            segment_size: (self.segments > 1).then_some(self.segment),
            src_ip: self.source,
        };
        if let Err(e) = socket.state.try_send((&socket.socket).into(), &transmit) {
            tracing::debug!(to = %destination, segments = self.segments, "send failed: {e}");
        }
        let sent = Sent {
            datagrams: self.segments,
            sends: 1,
        };
        self.run.clear();
        self.segments = 0;
        self.closed = false;
        sent
    }
}
