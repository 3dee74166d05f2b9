//! A forwarding worker's thread: owns its UDP socket, its TCP listener and streams (ICE-TCP, if
//! served) and its rooms' recordings, and runs its [`SfuCore`]. Each turn it
//! takes the commands queued (it is woken for them), runs the core's timers, sends what the core
//! has to send (a run of packets to one subscriber in one system call), writes recorded frames,
//! then waits on the socket (and the TCP streams, on the same poller) until the core's next
//! deadline and reads what has arrived, many UDP datagrams per system call.
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, TryRecvError};
use streams_proto::RoomId;
use streams_proto::recording::FrameRecord;
use streams_proto::wire::{ErrorCode, WireError};
use streams_rtc::socket::{MediaSocket, Outbox, ReceiveBatch, TcpMedia, Transport};

use super::core::{RecordedFrame, SfuCore};
use super::worker::{Command, LostSender, WorkerStats};
use crate::recorder::Recorder;

/// Reads (system calls) made in one go before the core's timers run again, which sends what the
/// datagrams read made; each fills up to 32 datagrams.
const READS_PER_TURN: usize = 2;

/// The longest wait: commands wake the thread and the core's deadlines end a wait, so this only
/// bounds how long a wake-up lost by the OS could go unnoticed.
const IDLE_WAIT: Duration = Duration::from_secs(1);

/// Runs until every [`super::SfuHandle`] is gone; publishes `stats` after each turn and sends
/// the streams whose session ended on its own to `lost`.
pub(super) fn run(
    mut core: SfuCore,
    mut socket: MediaSocket,
    mut tcp: Option<TcpMedia>,
    commands: Receiver<Command>,
    stats: &WorkerStats,
    lost: &LostSender,
) {
    // The DTLS certificate and configuration every session shares, made before the first.
    streams_rtc::dtls::prepare();
    let mut recordings: HashMap<RoomId, Recorder> = HashMap::new();
    let mut batch = ReceiveBatch::new(&socket, 32);
    let mut outbox = Outbox::default();
    loop {
        loop {
            match commands.try_recv() {
                Ok(command) => handle(&mut core, &mut recordings, command),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => return,
            }
        }
        let now = Instant::now();
        core.handle_timeout(now);
        if let Some(tcp) = &mut tcp {
            tcp.handle_timeout(now);
        }
        // A full send buffer loses the datagrams, as the network would.
        while let Some(transmit) = core.poll_transmit() {
            match (transmit.transport, &mut tcp) {
                (Transport::Udp, _) => {
                    outbox.push(
                        &socket,
                        transmit.source,
                        transmit.destination,
                        &transmit.contents,
                    );
                }
                (Transport::Tcp, Some(tcp)) => {
                    tcp.send(now, transmit.destination, &transmit.contents);
                }
                (Transport::Tcp, None) => {}
            }
        }
        outbox.flush(&socket);
        while let Some(stream) = core.poll_lost() {
            // The signaling side gone means the bridge is stopping: nobody is left to tell.
            let _ = lost.send(stream);
        }
        while let Some(frame) = core.poll_recorded() {
            record(&mut recordings, frame);
        }
        stats
            .keyframe_requests
            .store(core.keyframe_requests_forwarded(), Ordering::Relaxed);
        stats
            .sessions
            .store(core.session_count(), Ordering::Relaxed);
        let deadline = core
            .poll_timeout()
            .unwrap_or(now + IDLE_WAIT)
            .min(now + IDLE_WAIT);
        if let Err(e) = socket.wait(deadline) {
            tracing::warn!("SFU socket wait: {e}");
            // Not a busy loop if the poller keeps failing.
            std::thread::sleep(Duration::from_millis(1));
        }
        if let Some(tcp) = &mut tcp {
            let now = Instant::now();
            tcp.handle_ready(now, socket.ready(), |frame| {
                core.handle_tcp_frame(now, frame.source, frame.destination, frame.contents);
            });
        }
        for _ in 0..READS_PER_TURN {
            match socket.try_recv_batch(&mut batch) {
                Ok(0) => break,
                Ok(_) => {
                    let now = Instant::now();
                    for datagram in batch.datagrams() {
                        core.handle_datagram(
                            now,
                            datagram.source,
                            datagram.destination,
                            datagram.contents,
                        );
                    }
                }
                Err(e) => tracing::debug!("SFU socket: {e}"),
            }
        }
    }
}

/// Appends a forwarded frame to its room's recording.
fn record(recordings: &mut HashMap<RoomId, Recorder>, frame: RecordedFrame) {
    let Some(recorder) = recordings.get_mut(&frame.room) else {
        return;
    };
    let record = FrameRecord {
        arrival_us: streams_rtc::clock::wall_us(frame.arrived),
        rtp_time: frame.rtp_time,
        keyframe: frame.keyframe,
        payload: frame.payload,
    };
    recorder.frame(frame.track, &frame.user, frame.kind, frame.codec, record);
}

fn handle(core: &mut SfuCore, recordings: &mut HashMap<RoomId, Recorder>, command: Command) {
    let now = Instant::now();
    match command {
        Command::StartRecording {
            room,
            root,
            id,
            reply,
        } => {
            let result = match recordings.entry(room) {
                std::collections::hash_map::Entry::Occupied(_) => Err(WireError::new(
                    ErrorCode::Conflict,
                    "the room is being recorded already",
                )),
                std::collections::hash_map::Entry::Vacant(slot) => {
                    Recorder::start(&root, slot.key(), &id, crate::recorder::now_us()).map(
                        |recorder| {
                            core.set_recorded(slot.key().clone(), true);
                            slot.insert(recorder);
                        },
                    )
                }
            };
            let _ = reply.send(result);
        }
        Command::StopRecording { room, reply } => {
            core.set_recorded(room.clone(), false);
            let stopped = recordings.remove(&room).map(|r| {
                let id = r.id().to_string();
                r.stop(crate::recorder::now_us());
                id
            });
            let _ = reply.send(stopped);
        }
        Command::Negotiate {
            conn,
            room,
            user,
            offer,
            publish,
            subscribe,
            reply,
        } => {
            let _ = reply.send(core.negotiate(now, conn, room, user, &offer, publish, subscribe));
        }
        Command::SetSubscriptions {
            conn,
            room,
            subscribe,
            reply,
        } => {
            let _ = reply.send(core.set_subscriptions(conn, &room, subscribe));
        }
        Command::Close { conn, room, reply } => {
            let _ = reply.send(core.close_conn(conn, room.as_ref()));
        }
        Command::CloseRoom { room, reply } => {
            // A deleted room's recording ends with it.
            if let Some(recorder) = recordings.remove(&room) {
                recorder.stop(crate::recorder::now_us());
            }
            let _ = reply.send(core.close_room(&room));
        }
        Command::CloseUser { room, user, reply } => {
            let _ = reply.send(core.close_user(&room, &user));
        }
        Command::List { room, reply } => {
            let _ = reply.send(core.streams(&room));
        }
        Command::Count { reply } => {
            let _ = reply.send(core.session_count());
        }
        Command::Peers { reply } => {
            let _ = reply.send(core.peer_addresses());
        }
    }
}
