//! Players who can reach nothing of the bridge's media — every UDP datagram they send is dropped,
//! and the bridge has no media over TCP — but may open TCP to a TURN server: coturn (Debian's
//! `coturn`), run in a namespace of its own between them and the bridge, with the TURN REST API
//! secret the bridge shares (`--use-auth-secret`). The bridge hands each player short-lived
//! credentials; the player's engine allocates a relay over TCP and ICE finds the relayed pair. The
//! tone and the video pattern arrive, and the bridge sees the media come from coturn's relayed
//! addresses, never from a player.
//!
//! ```text
//!  players 10.222.N.2 ──── 10.222.N.1 turn (coturn) 10.223.N.2 ──── 10.223.N.1 bridge (media)
//!          10.224.N.2 ────────────────────────────────────────────── 10.224.N.1 bridge (signaling)
//! ```
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use streams_bridge::turn::TurnRelays;
use streams_bridge::{Bridge, BridgeConfig, BridgeHandle};

use super::netns::{Child, End, Netns, STREAMS, json, keygen, ok_stdout, veth};

/// coturn's relayed ports.
const RELAY_PORTS: std::ops::RangeInclusive<u16> = 49_200..=49_300;
const SECRET: &str = "streams-turn-test-secret";

/// The namespaces, their links and coturn.
struct Setup {
    players: Netns,
    /// Kept for its lifetime (coturn runs inside; deleting it ends the links).
    _turn: Netns,
    coturn: Child,
    /// coturn's pid file and database (not the system's).
    _coturn_dir: tempfile::TempDir,
    /// Where the players reach coturn.
    turn_ip: Ipv4Addr,
    /// coturn's address facing the bridge (its relayed addresses).
    relay_ip: Ipv4Addr,
    /// The bridge's media address (facing coturn).
    media_ip: Ipv4Addr,
    /// The bridge's signaling address (facing the players).
    signaling_ip: Ipv4Addr,
}

impl Setup {
    fn create() -> Setup {
        let (players, id) = Netns::claim("streams-tp");
        let turn = Netns::create(&format!("streams-tt-{id}"));
        let ip = |net: u8, last: u8| Ipv4Addr::new(10, net, id, last);
        let link = |a: (Option<&Netns>, &str, Ipv4Addr), b: (Option<&Netns>, &str, Ipv4Addr)| {
            veth(
                End {
                    ns: a.0,
                    dev: &format!("{}{id}", a.1),
                    addr: &format!("{}/30", a.2),
                },
                End {
                    ns: b.0,
                    dev: &format!("{}{id}", b.1),
                    addr: &format!("{}/30", b.2),
                },
            );
        };
        link(
            (Some(&turn), "sttp", ip(222, 1)),
            (Some(&players), "stpt", ip(222, 2)),
        );
        link(
            (None, "sthb", ip(223, 1)),
            (Some(&turn), "sttb", ip(223, 2)),
        );
        link(
            (None, "sths", ip(224, 1)),
            (Some(&players), "stps", ip(224, 2)),
        );
        // Not one UDP datagram leaves the players' namespace: no direct media, no TURN over UDP.
        let rules = "table ip no_udp {
            chain output {
                type filter hook output priority filter;
                ip protocol udp counter drop
            }
        }";
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("rules.nft");
        std::fs::write(&file, rules).unwrap();
        players.exec(&["nft", "-f", file.to_str().unwrap()]);

        let (turn_ip, relay_ip) = (ip(222, 1), ip(223, 2));
        let (min, max) = (
            RELAY_PORTS.start().to_string(),
            RELAY_PORTS.end().to_string(),
        );
        let coturn_dir = tempfile::tempdir().unwrap();
        let own = |name: &str| coturn_dir.path().join(name).to_str().unwrap().to_owned();
        let coturn = turn
            .command("turnserver")
            .args(["-n", "--no-cli", "--no-tls", "--no-dtls", "--fingerprint"])
            .args([
                "--listening-ip",
                &turn_ip.to_string(),
                "--listening-port",
                "3478",
            ])
            .args(["--relay-ip", &relay_ip.to_string()])
            .args(["--min-port", &min, "--max-port", &max])
            .args(["--use-auth-secret", "--static-auth-secret", SECRET])
            .args([
                "--realm",
                "streams.test",
                "--log-file",
                "stdout",
                "--simple-log",
            ])
            .args([
                "--pidfile",
                &own("turnserver.pid"),
                "--userdb",
                &own("turndb"),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("coturn's turnserver (apt-get install coturn)");
        let setup = Setup {
            players,
            _turn: turn,
            coturn: Child(coturn),
            _coturn_dir: coturn_dir,
            turn_ip,
            relay_ip,
            media_ip: ip(223, 1),
            signaling_ip: ip(224, 1),
        };
        setup.wait_for_coturn();
        setup
    }

    /// Until coturn accepts TCP from the players' side (it starts in well under a second).
    fn wait_for_coturn(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let target = format!("{}:3478", self.turn_ip);
        loop {
            let probe = self
                .players
                .command("bash")
                .args([
                    "-c",
                    &format!("exec 3<>/dev/tcp/{}", target.replace(':', "/")),
                ])
                .output()
                .unwrap();
            if probe.status.success() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "coturn did not listen at {target}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `streams` as a player runs it, against `bridge`.
    fn player(&self, bridge: &BridgeHandle, key: &Path) -> Command {
        let url = format!("ws://{}:{}", self.signaling_ip, bridge.addr().port());
        let mut command = self.players.command(STREAMS);
        command
            .args(["--insecure", "--bridge", &url, "--key"])
            .arg(key);
        command
    }
}

#[test]
fn with_only_tcp_to_a_turn_server_media_is_relayed_through_coturn() {
    let _serial = super::one_at_a_time();
    let mut setup = Setup::create();
    let bridge = Bridge::spawn(BridgeConfig {
        listen: SocketAddr::new(IpAddr::V4(setup.signaling_ip), 0),
        media_listen: SocketAddr::new(IpAddr::V4(setup.media_ip), 0),
        turn: Some(TurnRelays {
            urls: vec![
                format!("turn:{}:3478?transport=tcp", setup.turn_ip)
                    .parse()
                    .unwrap(),
            ],
            secret: SECRET.into(),
            ttl: Duration::from_secs(600),
        }),
        ..BridgeConfig::ephemeral()
    })
    .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let (alice, bob) = (dir.path().join("alice.key"), dir.path().join("bob.key"));
    keygen(&alice);
    let bob_id = keygen(&bob);
    let room_id = ok_stdout(
        setup
            .player(&bridge, &alice)
            .args(["room", "create", "--name", "Relayed", "--user", &bob_id])
            .output()
            .unwrap(),
    )
    .trim()
    .to_string();
    let listener = setup
        .player(&bridge, &bob)
        .args(["listen", "--room", &room_id, "--seconds", "9", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let bot = setup
        .player(&bridge, &alice)
        .args([
            "bot", "--room", &room_id, "--tone", "440", "--video", "pattern",
        ])
        .args(["--seconds", "5", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Mid-call: where the bridge's media comes from.
    std::thread::sleep(Duration::from_secs(4));
    let peers = bridge.media_peer_addresses();
    let sent = json(&ok_stdout(bot.wait_with_output().unwrap()));
    let heard = ok_stdout(listener.wait_with_output().unwrap());
    assert!(
        setup.coturn.0.try_wait().unwrap().is_none(),
        "coturn is still running"
    );

    println!("the bridge received media from {peers:?}");
    assert!(!peers.is_empty(), "the bridge saw no media");
    for peer in &peers {
        assert_eq!(
            peer.ip(),
            IpAddr::V4(setup.relay_ip),
            "media came from {peer}, not through coturn"
        );
        assert!(RELAY_PORTS.contains(&peer.port()), "{peer}");
    }
    let tracks: Vec<serde_json::Value> = heard.lines().map(json).collect();
    let track = |kind: &str| {
        tracks
            .iter()
            .find(|t| t["kind"] == kind)
            .unwrap_or_else(|| panic!("no {kind} track arrived: {heard}"))
    };
    let (audio, video) = (track("audio"), track("video"));
    println!("relayed: sent {sent}\nheard audio {audio}\nheard video {video}");
    let freq = audio["freq_hz"].as_f64().unwrap();
    assert!((freq - 440.0).abs() <= 5.0, "{audio}");
    let (sent_audio, audio_frames) = (
        sent["frames"].as_u64().unwrap(),
        audio["frames"].as_u64().unwrap(),
    );
    assert!(
        audio_frames * 10 >= sent_audio * 9,
        "{audio_frames} of {sent_audio}"
    );
    assert_eq!(video["decrypt_failures"], 0);
    let (psnr, fps) = (
        video["psnr_db"].as_f64().unwrap(),
        video["fps"].as_f64().unwrap(),
    );
    assert!(psnr >= 30.0 && fps >= 20.0, "{video}");
}
