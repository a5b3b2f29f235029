//! git's pkt-line framing, as far as a mirror push needs it: four hex digits of length, then
//! the payload; `0000` ends a section. See gitprotocol-common(5).

use thiserror::Error;

use crate::ssh::remote::{RemoteError, RemoteOut};

/// The largest packet git sends or accepts, length prefix included.
pub(crate) const MAX_PACKET: usize = 65520;

/// The packet that ends a section.
pub(crate) const FLUSH: &[u8] = b"0000";

/// Why the remote's protocol stream could not be read.
#[derive(Debug, Error)]
pub(crate) enum WireError {
    #[error(transparent)]
    Remote(#[from] RemoteError),
    /// The stream ended where a packet was due.
    #[error("the peer's git ended its answer early")]
    Ended,
    /// Something that is not git's protocol.
    #[error("the peer's git sent {0}")]
    Malformed(String),
    /// Reading this process's own input failed.
    #[error("cannot read the peer's request: {0}")]
    Input(#[from] std::io::Error),
}

/// One packet read.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Packet {
    Flush,
    Data(Vec<u8>),
}

/// `data` framed as one packet.
pub(crate) fn encode(data: &[u8]) -> Vec<u8> {
    let mut out = format!("{:04x}", data.len() + 4).into_bytes();
    out.extend_from_slice(data);
    out
}

/// Reads one packet; [`WireError::Ended`] at the end of the stream.
pub(crate) async fn read(out: &mut RemoteOut) -> Result<Packet, WireError> {
    let mut head = [0u8; 4];
    if !out.read_exact(&mut head).await? {
        return Err(WireError::Ended);
    }
    let len = length(&head)?;
    if len == 0 {
        return Ok(Packet::Flush);
    }
    let mut data = vec![0u8; len - 4];
    if !out.read_exact(&mut data).await? {
        return Err(WireError::Ended);
    }
    Ok(Packet::Data(data))
}

/// Reads one packet from `input` without reading past it (what follows may be a pack that
/// another process reads from the same descriptor); [`WireError::Ended`] at the end.
pub(crate) fn read_blocking(input: &mut impl std::io::Read) -> Result<Packet, WireError> {
    let mut head = [0u8; 4];
    read_all(input, &mut head)?;
    let len = length(&head)?;
    if len == 0 {
        return Ok(Packet::Flush);
    }
    let mut data = vec![0u8; len - 4];
    read_all(input, &mut data)?;
    Ok(Packet::Data(data))
}

/// `read_exact`, with the end of the stream as [`WireError::Ended`].
fn read_all(input: &mut impl std::io::Read, buf: &mut [u8]) -> Result<(), WireError> {
    input.read_exact(buf).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => WireError::Ended,
        _ => WireError::Input(e),
    })
}

/// The length a packet header gives: 0 for a flush (or git's other special packets, which a
/// v0 exchange does not send), else 5 to [`MAX_PACKET`].
fn length(head: &[u8; 4]) -> Result<usize, WireError> {
    let len = std::str::from_utf8(head)
        .ok()
        .filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit()))
        .and_then(|h| usize::from_str_radix(h, 16).ok())
        .ok_or_else(|| {
            WireError::Malformed(format!(
                "{:?} where a packet length was due",
                String::from_utf8_lossy(head)
            ))
        })?;
    match len {
        0 => Ok(0),
        5..=MAX_PACKET => Ok(len),
        _ => Err(WireError::Malformed(format!("a packet of length {len}"))),
    }
}

/// A packet's text without its trailing newline.
pub(crate) fn text(data: &[u8]) -> &[u8] {
    data.strip_suffix(b"\n").unwrap_or(data)
}

/// Side-band channels (gitprotocol-pack(5)): data, progress and hook output, a fatal error.
pub(crate) const BAND_DATA: u8 = 1;
pub(crate) const BAND_MESSAGES: u8 = 2;
pub(crate) const BAND_ERROR: u8 = 3;

/// Splits a side-band packet into its channel and payload.
pub(crate) fn band(data: &[u8]) -> Result<(u8, &[u8]), WireError> {
    match data.split_first() {
        Some((&b @ (BAND_DATA | BAND_MESSAGES | BAND_ERROR), rest)) => Ok((b, rest)),
        Some((b, _)) => Err(WireError::Malformed(format!("side-band channel {b}"))),
        None => Err(WireError::Malformed("an empty side-band packet".into())),
    }
}

/// Splits a stream of packets held in memory (a side-band's data channel), ignoring a
/// trailing partial one.
pub(crate) fn split(mut raw: &[u8]) -> Result<Vec<Packet>, WireError> {
    let mut packets = Vec::new();
    while raw.len() >= 4 {
        let mut head = [0u8; 4];
        head.copy_from_slice(&raw[..4]);
        let len = length(&head)?;
        if len == 0 {
            packets.push(Packet::Flush);
            raw = &raw[4..];
            continue;
        }
        if len > raw.len() {
            return Err(WireError::Ended);
        }
        packets.push(Packet::Data(raw[4..len].to_vec()));
        raw = &raw[len..];
    }
    if raw.is_empty() {
        Ok(packets)
    } else {
        Err(WireError::Ended)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packets_round_trip_through_split() {
        let mut raw = encode(b"unpack ok\n");
        raw.extend_from_slice(&encode(b"ok refs/heads/main\n"));
        raw.extend_from_slice(FLUSH);
        assert_eq!(
            split(&raw).unwrap(),
            [
                Packet::Data(b"unpack ok\n".to_vec()),
                Packet::Data(b"ok refs/heads/main\n".to_vec()),
                Packet::Flush
            ]
        );
        assert_eq!(text(b"ok x\n"), b"ok x");
    }

    #[test]
    fn garbage_lengths_are_refused() {
        for bad in [*b"zzzz", *b"0003", *b"fff1", *b"-001", *b"+fff"] {
            assert!(
                matches!(length(&bad), Err(WireError::Malformed(_))),
                "{bad:?}"
            );
        }
        assert_eq!(length(b"0000").unwrap(), 0);
        assert_eq!(length(b"0005").unwrap(), 5);
        assert!(matches!(split(b"0010abc"), Err(WireError::Ended)));
        assert!(matches!(band(b"\x07x"), Err(WireError::Malformed(_))));
    }
}
