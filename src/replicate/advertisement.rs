//! What git on a slave advertises when a session starts (protocol v0, gitprotocol-pack(5)):
//! its refs with their values, and what it can do.

use std::collections::BTreeMap;

use super::pkt_line::{self, Packet, WireError};
use crate::proto::OWN_NS;
use crate::ssh::remote::RemoteOut;

/// A slave's refs and capabilities, as it advertised them.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Advertisement {
    /// Refs under `refs/` outside [`OWN_NS`], by name.
    pub(crate) refs: BTreeMap<String, String>,
    /// Where HEAD points, when the slave said (upload-pack's `symref=HEAD:...`).
    pub(crate) head: Option<String>,
    /// The slave's own refs under [`OWN_NS`] that it shows (a HEAD carrier left behind), by
    /// name: never compared or pruned, but an update of one must name its value.
    pub(crate) own: BTreeMap<String, String>,
    /// Objects the slave has besides its refs (`.have` lines, peeled tags).
    pub(crate) also: Vec<String>,
    caps: Vec<String>,
}

impl Advertisement {
    /// Whether the slave offered `cap`.
    pub(crate) fn offers(&self, cap: &str) -> bool {
        self.caps.iter().any(|c| c == cap)
    }

    /// Every object the slave said it has.
    pub(crate) fn haves(&self) -> impl Iterator<Item = &String> {
        self.refs.values().chain(self.also.iter())
    }
}

/// Reads the advertisement up to its flush. A remote whose first packet is not one
/// (gitmirror's shell refused, and said why on stderr) ends the stream: [`WireError::Ended`].
pub(crate) async fn read(out: &mut RemoteOut) -> Result<Advertisement, WireError> {
    let mut ad = Advertisement::default();
    let mut first = true;
    let mut bytes = 0usize;
    loop {
        match pkt_line::read(out).await? {
            Packet::Flush => return Ok(ad),
            Packet::Data(data) => {
                // A slave that never stops advertising must not grow the daemon without end.
                bytes += data.len();
                if bytes > ADVERTISEMENT_CAP {
                    return Err(WireError::Malformed(format!(
                        "more than {} MiB of ref advertisement",
                        ADVERTISEMENT_CAP >> 20
                    )));
                }
                ad.take(pkt_line::text(&data), first)?;
                first = false;
            }
        }
    }
}

/// The most advertisement read from a slave: room for about two million refs.
const ADVERTISEMENT_CAP: usize = 128 << 20;

impl Advertisement {
    /// One advertised line: `OID NAME`, with `\0CAPS` on the first.
    pub(super) fn take(&mut self, line: &[u8], first: bool) -> Result<(), WireError> {
        let malformed = || {
            WireError::Malformed(format!(
                "{:?} in its ref advertisement",
                String::from_utf8_lossy(&line[..line.len().min(100)])
            ))
        };
        if let Some(err) = line.strip_prefix(b"ERR ") {
            return Err(WireError::Malformed(format!(
                "an error: {}",
                String::from_utf8_lossy(err)
            )));
        }
        let (line, caps) = match line.iter().position(|&b| b == 0) {
            Some(nul) if first => (&line[..nul], Some(&line[nul + 1..])),
            Some(_) => return Err(malformed()),
            None => (line, None),
        };
        if let Some(caps) = caps {
            let caps = std::str::from_utf8(caps).map_err(|_| malformed())?;
            self.caps = caps.split(' ').map(str::to_string).collect();
            self.head = self
                .caps
                .iter()
                .find_map(|c| c.strip_prefix("symref=HEAD:"))
                .map(str::to_string);
        }
        let line = std::str::from_utf8(line).map_err(|_| {
            WireError::Malformed("a ref whose name is not UTF-8; gitmirror cannot mirror it".into())
        })?;
        let (oid, name) = line.split_once(' ').ok_or_else(malformed)?;
        if oid.len() != 40 || !oid.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(malformed());
        }
        if name == "capabilities^{}" || name == "HEAD" {
            return Ok(());
        }
        if name == ".have" || name.ends_with("^{}") {
            self.also.push(oid.to_string());
        } else if name.starts_with(OWN_NS) {
            self.own.insert(name.to_string(), oid.to_string());
        } else if name.starts_with("refs/") {
            self.refs.insert(name.to_string(), oid.to_string());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "1111111111111111111111111111111111111111";
    const B: &str = "2222222222222222222222222222222222222222";

    fn parse(lines: &[String]) -> Result<Advertisement, WireError> {
        let mut ad = Advertisement::default();
        for (i, l) in lines.iter().enumerate() {
            ad.take(l.as_bytes(), i == 0)?;
        }
        Ok(ad)
    }

    #[test]
    fn refs_head_and_capabilities_are_read() {
        let ad = parse(&[
            format!("{A} HEAD\0multi_ack symref=HEAD:refs/heads/main agent=git/2"),
            format!("{A} refs/heads/main"),
            format!("{B} refs/tags/v1"),
            format!("{A} refs/tags/v1^{{}}"),
            format!("{B} refs/gitmirror/diverged/x"),
            format!("{B} .have"),
        ])
        .unwrap();
        assert_eq!(ad.head.as_deref(), Some("refs/heads/main"));
        assert!(ad.offers("multi_ack") && !ad.offers("side-band"));
        assert_eq!(ad.refs.len(), 2);
        assert_eq!(ad.own.len(), 1);
        assert_eq!(ad.also, [A, B]);
        let empty = parse(&[
            "0000000000000000000000000000000000000000 capabilities^{}\0report-status".to_string(),
        ])
        .unwrap();
        assert!(empty.refs.is_empty() && empty.offers("report-status"));
    }

    #[test]
    fn a_lying_advertisement_is_refused() {
        for bad in [
            "nonsense".to_string(),
            format!("{} refs/heads/x", &A[..39]),
            format!("{A}refs/heads/x"),
            "ERR access denied".to_string(),
        ] {
            assert!(
                matches!(
                    parse(std::slice::from_ref(&bad)),
                    Err(WireError::Malformed(_))
                ),
                "{bad}"
            );
        }
        // Capabilities only on the first line.
        assert!(parse(&[format!("{A} refs/heads/a"), format!("{A} refs/heads/b\0x")]).is_err());
    }
}
