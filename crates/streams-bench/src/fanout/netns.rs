//! The bench's network namespace: servers run inside it, load clients outside, over a veth pair with
//! private addresses of its own (10.232.N.0/30). Janus skips loopback interfaces when it gathers ICE
//! candidates, so neither server is measured on `lo`. Removed when dropped.
use std::net::Ipv4Addr;
use std::process::Command;

/// A namespace with one veth pair.
pub struct Namespace {
    /// Its name (for `ip netns exec`).
    pub name: String,
    /// The interface inside it (Janus gathers ICE candidates only there).
    pub inner_dev: String,
    host_dev: String,
    /// The load side's address.
    pub host_ip: Ipv4Addr,
    /// The servers' address.
    pub inner_ip: Ipv4Addr,
}

fn run(args: &[&str]) -> Result<(), String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| format!("{}: {e}", args[0]))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`{}` failed: {} (the fan-out bench needs root for network namespaces)",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Namespace {
    /// Creates the namespace and its veth pair.
    pub fn create() -> Result<Namespace, String> {
        let id = std::process::id() % 200 + 20;
        let name = format!("streams-fanout-{id}");
        let (host_dev, inner_dev) = (format!("sfoh{id}"), format!("sfon{id}"));
        let (host_ip, inner_ip) = (
            Ipv4Addr::new(10, 232, id as u8, 1),
            Ipv4Addr::new(10, 232, id as u8, 2),
        );
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        let _ = Command::new("ip").args(["link", "del", &host_dev]).output();
        run(&["ip", "netns", "add", &name])?;
        let ns = Namespace {
            name,
            inner_dev,
            host_dev,
            host_ip,
            inner_ip,
        };
        run(&[
            "ip",
            "link",
            "add",
            &ns.host_dev,
            "type",
            "veth",
            "peer",
            "name",
            &ns.inner_dev,
        ])?;
        run(&["ip", "link", "set", &ns.inner_dev, "netns", &ns.name])?;
        run(&[
            "ip",
            "addr",
            "add",
            &format!("{host_ip}/30"),
            "dev",
            &ns.host_dev,
        ])?;
        run(&["ip", "link", "set", &ns.host_dev, "up"])?;
        let inner = format!("{inner_ip}/30");
        for args in [
            vec![
                "ip",
                "addr",
                "add",
                inner.as_str(),
                "dev",
                ns.inner_dev.as_str(),
            ],
            vec!["ip", "link", "set", ns.inner_dev.as_str(), "up"],
            vec!["ip", "link", "set", "lo", "up"],
        ] {
            let mut all = vec!["ip", "netns", "exec", ns.name.as_str()];
            all.extend(args);
            run(&all)?;
        }
        Ok(ns)
    }

    /// A command that runs `program` inside the namespace, pinned to `cpu`.
    pub fn command(&self, cpu: usize, program: &str) -> Command {
        let mut command = Command::new("ip");
        command
            .args([
                "netns",
                "exec",
                &self.name,
                "taskset",
                "-c",
                &cpu.to_string(),
            ])
            .arg(program);
        command
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_dev])
            .output();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}
