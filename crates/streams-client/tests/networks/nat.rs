//! A bridge behind a 1:1 NAT, as on a cloud VM: the bridge (this namespace) has a private
//! address; a router namespace forwards a public address to it (DNAT) and nothing else reaches the
//! private network; a bot and a listener in a third namespace reach the bridge only at the public
//! address. Without `--media-public-ip` the bridge announces its private address, no media path
//! exists and the bot must say so (naming ICE) within 10 s; with it, a 440 Hz tone arrives.
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use streams_bridge::{Bridge, BridgeConfig, BridgeHandle};

use super::netns::{End, Netns, STREAMS, json, keygen, ok_stdout, sh, veth};

/// The three parties and their addresses.
struct Nat {
    /// Held for its drop, which deletes the router and both veth pairs.
    _router: Netns,
    players: Netns,
    /// The bridge's address on its private network.
    private: Ipv4Addr,
    /// The address the router forwards to it.
    public: Ipv4Addr,
}

impl Nat {
    fn build() -> Nat {
        let (router, id) = Netns::claim("streams-nat-r");
        let players = Netns::create(&format!("streams-nat-c-{id}"));
        let net = |last: u8| Ipv4Addr::new(10, 214, id, last);
        let (private, router_inside, router_outside, player, public) =
            (net(2), net(1), net(5), net(6), net(9));
        veth(
            End {
                ns: None,
                dev: &format!("snb{id}"),
                addr: &format!("{private}/30"),
            },
            End {
                ns: Some(&router),
                dev: &format!("snr{id}"),
                addr: &format!("{router_inside}/30"),
            },
        );
        veth(
            End {
                ns: Some(&router),
                dev: &format!("snk{id}"),
                addr: &format!("{router_outside}/30"),
            },
            End {
                ns: Some(&players),
                dev: &format!("snc{id}"),
                addr: &format!("{player}/30"),
            },
        );
        players.exec(&[
            "ip",
            "route",
            "add",
            "default",
            "via",
            &router_outside.to_string(),
        ]);
        // The bridge's replies to the players go back through the router (the route goes with
        // the veth pair when the router's namespace is deleted).
        sh(&[
            "ip",
            "route",
            "add",
            &format!("{}/30", net(4)),
            "via",
            &router_inside.to_string(),
        ]);
        // Forwarding is per namespace; /proc/sys/net shows the writer's own.
        router.exec(&["sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward"]);
        // 1:1 NAT: the public address is rewritten to the private one (every port, both ways by
        // conntrack); the private network itself is not reachable from outside.
        let private_net = net(0);
        let rules = format!(
            "table ip one_to_one {{
                chain prerouting {{
                    type nat hook prerouting priority dstnat;
                    ip daddr {public} dnat to {private}
                }}
                chain forward {{
                    type filter hook forward priority filter;
                    ct status dnat accept
                    ip daddr {private_net}/30 drop
                }}
            }}"
        );
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("nat.nft");
        std::fs::write(&file, rules).unwrap();
        router.exec(&["nft", "-f", file.to_str().unwrap()]);
        Nat {
            _router: router,
            players,
            private,
            public,
        }
    }

    /// A bridge on the private address, media on `media_listen`, announcing `public_ips`.
    fn bridge(&self, media_listen: IpAddr, public_ips: Vec<IpAddr>) -> BridgeHandle {
        Bridge::spawn(BridgeConfig {
            listen: SocketAddr::new(IpAddr::V4(self.private), 0),
            media_listen: SocketAddr::new(media_listen, 0),
            media_public_ips: public_ips,
            ..BridgeConfig::ephemeral()
        })
        .unwrap()
    }

    /// `streams` as a player runs it: in the players' namespace, at the public address.
    fn player(&self, bridge: &BridgeHandle, key: &Path) -> Command {
        let url = format!("ws://{}:{}", self.public, bridge.addr().port());
        let mut command = self.players.command(STREAMS);
        command
            .args(["--insecure", "--bridge", &url, "--key"])
            .arg(key);
        command
    }
}

/// A room of `alice` with `bob`, made by a player.
fn room(nat: &Nat, bridge: &BridgeHandle, alice: &Path, bob: &str) -> String {
    let out = nat
        .player(bridge, alice)
        .args(["room", "create", "--name", "behind NAT", "--user", bob])
        .output()
        .unwrap();
    ok_stdout(out).trim().to_string()
}

#[test]
fn behind_a_one_to_one_nat_media_needs_the_public_address_and_says_so_without_it() {
    let _serial = super::one_at_a_time();
    let nat = Nat::build();
    let dir = tempfile::tempdir().unwrap();
    let (alice, bob) = (dir.path().join("alice.key"), dir.path().join("bob.key"));
    keygen(&alice);
    let bob_id = keygen(&bob);

    // Without --media-public-ip: signaling works through the NAT, media cannot.
    let bridge = nat.bridge(IpAddr::V4(nat.private), Vec::new());
    assert_eq!(
        bridge.media_announced(),
        vec![vec![bridge.media_addr()]],
        "the private address is all it can announce"
    );
    let room_id = room(&nat, &bridge, &alice, &bob_id);
    let started = Instant::now();
    let out = nat
        .player(&bridge, &alice)
        .args(["bot", "--room", &room_id, "--tone", "440", "--seconds", "3"])
        .output()
        .unwrap();
    let failed_after = started.elapsed();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the bot reported success: {said}");
    assert!(
        said.contains("ICE") && said.contains(&bridge.media_addr().to_string()),
        "the error names ICE and the address tried: {said}"
    );
    assert!(
        failed_after.as_secs_f64() < 10.0,
        "{failed_after:?}: {said}"
    );
    drop(bridge);

    // With it, on a wildcard bind: each datagram's local address maps to the public candidate.
    let bridge = nat.bridge(
        IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        vec![IpAddr::V4(nat.public)],
    );
    let port = bridge.media_addr().port();
    assert_eq!(
        bridge.media_announced(),
        vec![vec![SocketAddr::new(IpAddr::V4(nat.public), port)]]
    );
    let room_id = room(&nat, &bridge, &alice, &bob_id);
    let listener = nat
        .player(&bridge, &bob)
        .args(["listen", "--room", &room_id, "--seconds", "8", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let sent = json(&ok_stdout(
        nat.player(&bridge, &alice)
            .args([
                "bot",
                "--room",
                &room_id,
                "--tone",
                "440",
                "--seconds",
                "3",
                "--json",
            ])
            .output()
            .unwrap(),
    ));
    let sent_frames = sent["frames"].as_u64().unwrap();
    let heard = ok_stdout(listener.wait_with_output().unwrap());
    let tracks: Vec<serde_json::Value> = heard.lines().map(json).collect();
    assert_eq!(tracks.len(), 1, "{heard}");
    let freq = tracks[0]["freq_hz"].as_f64().unwrap();
    let frames = tracks[0]["frames"].as_u64().unwrap();
    assert!((freq - 440.0).abs() <= 5.0, "{heard}");
    assert!(frames * 10 >= sent_frames * 9, "{frames} of {sent_frames}");
    println!(
        "1:1 NAT: without --media-public-ip the bot failed after {:.1} s ({}); with it {frames} of \
         {sent_frames} frames arrived at {freq:.1} Hz",
        failed_after.as_secs_f64(),
        said.trim()
    );
}
