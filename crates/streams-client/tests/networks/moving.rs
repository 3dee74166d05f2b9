//! A player whose address changes mid-call (Wi-Fi to cable, a new DHCP lease): a bot in a
//! namespace of its own sends a tone to a listener on the bridge's side; four seconds in, its
//! address is taken away and another one given. The engine sees the new route, binds there and
//! moves its media to it in the same session (new ICE candidates, no signaling): the listener's
//! audio gap, counted as concealed frames, stays under a second and the track is the same one (no
//! re-publish).
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::{Command, Stdio};
use std::time::Duration;

use streams_bridge::{Bridge, BridgeConfig};

use super::netns::{End, Netns, STREAMS, json, keygen, ok_stdout, veth};

/// The bot's frames are 20 ms (its default).
const FRAME_MS: u64 = 20;

#[test]
fn a_player_whose_address_changes_mid_call_is_heard_again_within_a_second_on_the_same_track() {
    let _serial = super::one_at_a_time();
    let (ns, id) = Netns::claim("streams-mv");
    let net = |last: u8| Ipv4Addr::new(10, 216, id, last);
    let (bridge_ip, first, second) = (net(1), net(2), net(3));
    let dev = format!("smvn{id}");
    veth(
        End {
            ns: None,
            dev: &format!("smvh{id}"),
            addr: &format!("{bridge_ip}/29"),
        },
        End {
            ns: Some(&ns),
            dev: &dev,
            addr: &format!("{first}/29"),
        },
    );
    let host = IpAddr::V4(bridge_ip);
    let bridge = Bridge::spawn(BridgeConfig {
        listen: SocketAddr::new(host, 0),
        media_listen: SocketAddr::new(host, 0),
        ..BridgeConfig::ephemeral()
    })
    .unwrap();
    let url = format!("ws://{bridge_ip}:{}", bridge.addr().port());
    let dir = tempfile::tempdir().unwrap();
    let (alice, bob) = (dir.path().join("alice.key"), dir.path().join("bob.key"));
    keygen(&alice);
    let bob_id = keygen(&bob);
    let streams = |key: &std::path::Path| {
        let mut command = Command::new(STREAMS);
        command
            .args(["--insecure", "--bridge", &url, "--key"])
            .arg(key);
        command
    };
    let room_id = ok_stdout(
        streams(&alice)
            .args(["room", "create", "--name", "Moving", "--user", &bob_id])
            .output()
            .unwrap(),
    )
    .trim()
    .to_string();

    // The listener on the bridge's side; the bot in the namespace, at its first address.
    let listener = streams(&bob)
        .args(["listen", "--room", &room_id, "--seconds", "13", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Both end by themselves (after their --seconds), however the test ends.
    let bot = ns
        .command(STREAMS)
        .args(["--insecure", "--bridge", &url, "--key"])
        .arg(&alice)
        .args([
            "bot",
            "--room",
            &room_id,
            "--tone",
            "440",
            "--seconds",
            "10",
            "--json",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(4));
    ns.exec(&["ip", "addr", "del", &format!("{first}/29"), "dev", &dev]);
    ns.exec(&["ip", "addr", "add", &format!("{second}/29"), "dev", &dev]);

    let sent = json(&ok_stdout(bot.wait_with_output().unwrap()));
    let heard = ok_stdout(listener.wait_with_output().unwrap());
    let tracks: Vec<serde_json::Value> = heard.lines().map(json).collect();
    assert_eq!(
        tracks.len(),
        1,
        "one track, not a second one published after the move: {heard}"
    );
    let track = &tracks[0];
    let freq = track["freq_hz"].as_f64().unwrap();
    assert!((freq - 440.0).abs() <= 5.0, "{track}");
    let concealed = track["concealed"].as_u64().unwrap();
    let lost = track["lost"].as_u64().unwrap();
    let frames = track["frames"].as_u64().unwrap();
    let sent_frames = sent["frames"].as_u64().unwrap();
    let gap_ms = concealed * FRAME_MS;
    assert!(
        gap_ms <= 1000,
        "{gap_ms} ms concealed after the move: {track}"
    );
    assert!(
        frames + 50 >= sent_frames,
        "media came back after the move: {frames} of {sent_frames}"
    );
    println!(
        "address moved {first} → {second} mid-call: {frames} of {sent_frames} frames heard at \
         {freq:.1} Hz, {concealed} concealed ({gap_ms} ms gap), {lost} lost, one track"
    );
}
