//! A signaling connection cut under a call: the publisher's WebSocket goes through a proxy that
//! resets it and refuses new connections for 5 s, while its media path to the bridge stays up. The
//! bridge keeps the dropped connection for a resume: the listener loses no audio frame, the
//! publisher's client reports the resume, and the bridge's media session (its stream id) is the
//! same before and after.
use std::sync::Mutex;
use std::time::{Duration, Instant};

use streams_client::audio::codec::VoiceSettings;
use streams_client::audio::source::ToneSource;
use streams_client::media::driver::RoomMedia;
use streams_client::media::events::{MediaCommand, MediaEvent};
use streams_client::media::voice_session::listen_media_while;
use streams_client::{ClientEvent, ConnectionState, Operation, Reply, StreamsClient};
use streams_proto::{Identity, RoomId, StreamId};
use streams_testkit::ws_proxy::WsProxy;

use super::common::media::until_a_second_after;
use super::common::*;

/// The stream ids published in `room`, as `client` lists them.
fn streams(client: &StreamsClient, room: &RoomId) -> Vec<StreamId> {
    match client.call(Operation::ListStreams(room.clone())).unwrap() {
        Reply::Streams(streams) => streams.iter().map(|s| s.stream_id).collect(),
        other => panic!("unexpected {other:?}"),
    }
}

/// Waits (30 s at most) for `media` to report `wanted`.
fn wait_media(media: &RoomMedia, wanted: impl Fn(&MediaEvent) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(event) = media.events().recv_timeout(Duration::from_millis(50))
            && wanted(&event)
        {
            return;
        }
    }
    panic!("the media engine did not report what was waited for");
}

#[test]
fn a_cut_signaling_connection_is_resumed_and_media_never_stops() {
    let _serial = super::one_at_a_time();
    let (alice, bob) = (Identity::generate(), Identity::generate());
    let bridge = bridge_with_users(&[&alice, &bob]);
    let url = bridge.handle.url();
    let proxy = WsProxy::start(&url).unwrap();
    let (a, b) = (connect(&proxy.url(), &alice), connect(&url, &bob));
    let room = create_room(&b, "resume", &[alice.user_id()]);

    let done = Mutex::new(None);
    let (listened, cut) = std::thread::scope(|scope| {
        let listener = scope.spawn(|| {
            listen_media_while(&b, &bob, &url, &room.id, &until_a_second_after(&done)).unwrap()
        });
        let media =
            RoomMedia::start(a.handle().unwrap(), alice.clone(), &url, room.id.clone()).unwrap();
        media.send(MediaCommand::SubscribeAll(false));
        media.send(MediaCommand::AddAudioTrack {
            source: Box::new(ToneSource::new(440.0, 0.5)),
            settings: VoiceSettings::default(),
        });
        wait_media(&media, |e| {
            matches!(e, MediaEvent::LocalTrackPublished { .. })
        });
        std::thread::sleep(Duration::from_secs(2));
        let before = streams(&b, &room.id);
        assert_eq!(before.len(), 1, "{before:?}");

        while a.events().try_recv().is_ok() {}
        proxy.set_refusing(true);
        proxy.reset();
        let cut_at = Instant::now();
        std::thread::sleep(Duration::from_secs(5));
        proxy.set_refusing(false);
        let resumed = loop {
            match a.events().recv_timeout(Duration::from_secs(15)) {
                Ok(ClientEvent::Connection(ConnectionState::Connected { resumed, .. })) => {
                    break resumed;
                }
                Ok(_) => continue,
                Err(e) => panic!("the client did not reconnect: {e}"),
            }
        };
        let back_after = cut_at.elapsed();
        let gap = resumed.expect("the connection was resumed, not started afresh");
        assert!(gap >= Duration::from_secs(5), "{gap:?}");
        std::thread::sleep(Duration::from_secs(2));
        let after = streams(&b, &room.id);
        assert_eq!(after, before, "the same media session before and after");
        assert_eq!(bridge.handle.media_session_count(), 2);
        drop(media);
        *done.lock().unwrap() = Some(Instant::now());
        (listener.join().unwrap(), back_after)
    });
    assert_eq!(listened.audio.len(), 1, "{:?}", listened.audio);
    let heard = &listened.audio[0];
    assert_eq!(heard.lost, 0, "{heard:?}");
    assert!(heard.frames >= 400, "9 s of 20 ms frames: {heard:?}");
    assert!((heard.freq_hz - 440.0).abs() <= 5.0, "{heard:?}");
    println!(
        "signaling cut for 5 s: resumed after {:.1} s; the listener decoded {} frames, lost {}, \
         concealed {}",
        cut.as_secs_f64(),
        heard.frames,
        heard.lost,
        heard.concealed
    );
}
