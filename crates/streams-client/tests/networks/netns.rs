//! Network namespaces, veth pairs and the processes run inside them, for the tests of this binary.
//! Needs root and iproute2 (CI runs as root and installs them). Each test claims names of its own
//! and private 10.x addresses inside them only; a namespace is deleted (with its veth pairs and
//! their routes) when its [`Netns`] is dropped, however the test ends.
use std::path::Path;
use std::process::{Command, Output};

pub const STREAMS: &str = env!("CARGO_BIN_EXE_streams");

/// Runs a command that must succeed.
pub fn sh(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{}: {e} (needs iproute2, nftables and root)", args[0]));
    assert!(
        out.status.success(),
        "{}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A network namespace of this test.
pub struct Netns {
    pub name: String,
}

impl Netns {
    /// Claims `{prefix}-{id}` for the first free id (20 to 219) from one derived from the process
    /// id: `ip netns add` fails on a name that exists, so claiming is atomic and never touches
    /// another run's. Returns the namespace and its id (for addresses and device names).
    pub fn claim(prefix: &str) -> (Netns, u8) {
        let first = std::process::id() % 200;
        let id = (0..200)
            .map(|k| (first + k) % 200 + 20)
            .find(|id| Netns::try_add(&format!("{prefix}-{id}")))
            .expect("a free network namespace name (needs iproute2 and root)");
        let ns = Netns {
            name: format!("{prefix}-{id}"),
        };
        ns.exec(&["ip", "link", "set", "lo", "up"]);
        (ns, id as u8)
    }

    /// Creates the namespace `name`, which must not exist.
    pub fn create(name: &str) -> Netns {
        assert!(Netns::try_add(name), "network namespace {name} exists");
        let ns = Netns {
            name: name.to_owned(),
        };
        ns.exec(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    fn try_add(name: &str) -> bool {
        Command::new("ip")
            .args(["netns", "add", name])
            .output()
            .is_ok_and(|out| out.status.success())
    }

    /// Runs a command inside; it must succeed.
    pub fn exec(&self, args: &[&str]) {
        let mut all = vec!["ip", "netns", "exec", &self.name];
        all.extend_from_slice(args);
        sh(&all);
    }

    /// `program` to be run inside.
    pub fn command(&self, program: &str) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name, program]);
        command
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// One end of a veth pair: its namespace (`None`: the test's own), device name and address
/// (`10.1.2.3/30`).
pub struct End<'a> {
    pub ns: Option<&'a Netns>,
    pub dev: &'a str,
    pub addr: &'a str,
}

/// A veth pair between `a` and `b`, addressed and up. It goes when a namespace holding one end
/// is deleted.
pub fn veth(a: End<'_>, b: End<'_>) {
    sh(&[
        "ip", "link", "add", a.dev, "type", "veth", "peer", "name", b.dev,
    ]);
    for end in [&a, &b] {
        let run = |args: &[&str]| match end.ns {
            Some(ns) => ns.exec(args),
            None => sh(args),
        };
        if let Some(ns) = end.ns {
            sh(&["ip", "link", "set", end.dev, "netns", &ns.name]);
        }
        run(&["ip", "addr", "add", end.addr, "dev", end.dev]);
        run(&["ip", "link", "set", end.dev, "up"]);
    }
}

/// A child process, killed when the test ends, however it ends.
pub struct Child(pub std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The standard output of a process that must have succeeded (its standard error if not).
pub fn ok_stdout(out: Output) -> String {
    assert!(
        out.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// One JSON line a tool printed.
pub fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text.trim()).unwrap()
}

/// A new key at `path`; returns its user id.
pub fn keygen(path: &Path) -> String {
    let out = Command::new(STREAMS)
        .args(["keygen", "--out"])
        .arg(path)
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Loads nftables `rules` in `ns`.
pub fn nft(ns: &Netns, rules: &str) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rules.nft");
    std::fs::write(&file, rules).unwrap();
    ns.exec(&["nft", "-f", file.to_str().unwrap()]);
}

/// `streams` as a player in `ns` runs it, against the bridge at `url` (plain `ws://`, allowed).
pub fn player(ns: &Netns, url: &str, key: &Path) -> Command {
    let mut command = ns.command(STREAMS);
    command
        .args(["--insecure", "--bridge", url, "--key"])
        .arg(key);
    command
}

/// Alice and Bob's keys in `dir`, and a room named `name` Alice made for both of them, with the
/// commands `streams` (run as a player with a key) gives.
pub fn room_for_two(
    dir: &Path,
    name: &str,
    streams: impl Fn(&Path) -> Command,
) -> (std::path::PathBuf, std::path::PathBuf, String) {
    let (alice, bob) = (dir.join("alice.key"), dir.join("bob.key"));
    keygen(&alice);
    let bob_id = keygen(&bob);
    let room_id = ok_stdout(
        streams(&alice)
            .args(["room", "create", "--name", name, "--user", &bob_id])
            .output()
            .unwrap(),
    )
    .trim()
    .to_string();
    (alice, bob, room_id)
}

/// What `streams listen --json` printed (`heard`) against what `streams bot --tone 440 --video
/// pattern --json` sent: the tone at 440 Hz, nine frames in ten of each kind, the pattern at
/// 30 dB PSNR or better and 20 fps or more, nothing that failed to decrypt. Returns the audio and
/// video lines.
pub fn assert_tone_and_pattern(
    sent: &serde_json::Value,
    heard: &str,
) -> (serde_json::Value, serde_json::Value) {
    let tracks: Vec<serde_json::Value> = heard.lines().map(json).collect();
    let track = |kind: &str| {
        tracks
            .iter()
            .find(|t| t["kind"] == kind)
            .cloned()
            .unwrap_or_else(|| panic!("no {kind} track arrived: {heard}"))
    };
    let (audio, video) = (track("audio"), track("video"));
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
    let (sent_video, video_frames) = (
        sent["video"]["frames"].as_u64().unwrap(),
        video["frames"].as_u64().unwrap(),
    );
    assert!(
        video_frames * 10 >= sent_video * 9,
        "{video_frames} of {sent_video}: {video}"
    );
    assert_eq!(video["decrypt_failures"], 0, "{video}");
    let (psnr, fps) = (
        video["psnr_db"].as_f64().unwrap(),
        video["fps"].as_f64().unwrap(),
    );
    assert!(psnr >= 30.0 && fps >= 20.0, "{video}");
    (audio, video)
}
