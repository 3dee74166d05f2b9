//! Random packet loss with nftables (this kernel has no netem): a table of our own whose input rule
//! drops a share of the UDP packets leaving one port (the test bridge's SFU) — only that bridge's
//! traffic on loopback, nothing else on the machine. Needs root and `nft` (CI installs nftables).
//!
//! A table is named after the test process and the port, so two runs never share one, and the tables a
//! killed run left behind (its process is gone) are removed before a new one is made: a stale rule
//! would drop the packets of whichever later bridge gets that port.
use std::process::Command;

/// How our tables' names start; the owning process id and the port follow.
const PREFIX: &str = "streams_loss_";

/// Deletes our tables whose process no longer runs.
fn remove_stale_tables() {
    let listing = nft(&["list", "tables", "inet"]).unwrap_or_default();
    for name in listing.split_whitespace().filter(|w| w.starts_with(PREFIX)) {
        let pid = name[PREFIX.len()..].split('_').next().unwrap_or_default();
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = nft(&["delete", "table", "inet", name]);
        }
    }
}

/// A loss rule; dropping it deletes its table.
pub struct NftLoss {
    table: String,
}

fn nft(args: &[&str]) -> Result<String, String> {
    let out = Command::new("nft")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run nft (install nftables, run as root): {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "nft {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

impl NftLoss {
    /// Drops `percent` of the UDP packets whose source port is `port`.
    pub fn from_port(port: u16, percent: u8) -> Result<Self, String> {
        remove_stale_tables();
        let table = format!("{PREFIX}{}_{port}", std::process::id());
        nft(&["create", "table", "inet", &table])?;
        let loss = NftLoss { table };
        nft(&[
            "add",
            "chain",
            "inet",
            &loss.table,
            "input",
            "{ type filter hook input priority 0; policy accept; }",
        ])?;
        nft(&[
            "add",
            "rule",
            "inet",
            &loss.table,
            "input",
            "udp",
            "sport",
            &port.to_string(),
            "numgen",
            "random",
            "mod",
            "100",
            "<",
            &percent.to_string(),
            "counter",
            "drop",
        ])?;
        Ok(loss)
    }

    /// Packets dropped so far.
    pub fn dropped(&self) -> u64 {
        let listing = nft(&["list", "table", "inet", &self.table]).unwrap_or_default();
        listing
            .split_whitespace()
            .skip_while(|w| *w != "packets")
            .nth(1)
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for NftLoss {
    fn drop(&mut self) {
        let _ = nft(&["delete", "table", "inet", &self.table]);
    }
}
