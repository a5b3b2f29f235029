//! Error text as people read it: on one line, with the words that say what happened.
//!
//! What a peer, ssh or git said ends up in `status`, in the log and in a pusher's terminal,
//! each of which wants one line; and the useful words ("Permission denied (publickey)") often
//! sit in an error's source, not in its top message.

/// An error with the errors it wraps, joined by `: `. A source whose words the text already
/// ends with is not repeated: many errors print their source in their own message.
pub(crate) fn with_sources(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let words = s.to_string();
        if !text.ends_with(&words) {
            text.push_str(": ");
            text.push_str(&words);
        }
        source = s.source();
    }
    text
}

/// Collapses a multi-line text to one line, dropping empty lines.
pub(crate) fn one_line(s: &str) -> String {
    s.split(['\n', '\r'])
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

/// Cuts `s` to at most `max` bytes, at a character boundary (a peer's text, decoded lossily,
/// may put a multi-byte character across the cut).
pub(crate) fn truncate(s: &mut String, max: usize) {
    if s.len() > max {
        let cut = (0..=max)
            .rev()
            .find(|i| s.is_char_boundary(*i))
            .unwrap_or(0);
        s.truncate(cut);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncate_keeps_whole_characters() {
        let mut s = "a\u{fffd}b".to_string();
        truncate(&mut s, 2);
        assert_eq!(s, "a");
        let mut s = "abc".to_string();
        truncate(&mut s, 5);
        assert_eq!(s, "abc");
    }

    #[test]
    fn one_line_joins_and_sources_chain() {
        assert_eq!(one_line("a\n\n b \r\nc"), "a; b; c");
        let inner = std::io::Error::other("Permission denied (publickey)");
        #[derive(Debug, thiserror::Error)]
        #[error("cannot connect")]
        struct Outer(#[source] std::io::Error);
        assert_eq!(
            with_sources(&Outer(inner)),
            "cannot connect: Permission denied (publickey)"
        );
        // A message that already ends with its source's words does not repeat them.
        #[derive(Debug, thiserror::Error)]
        #[error("cannot read x: {0}")]
        struct Echo(#[source] std::io::Error);
        let echo = Echo(std::io::Error::other("Permission denied"));
        assert_eq!(with_sources(&echo), "cannot read x: Permission denied");
    }
}
