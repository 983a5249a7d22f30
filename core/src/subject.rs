//! Subjects: tokenising, validation, and the reference wildcard matcher.
//!
//! A subject is a `.`-separated list of non-empty tokens. In a subscription
//! pattern the token `*` matches exactly one token and the token `>` (only as
//! the last token) matches one or more tokens; `*` or `>` inside a longer
//! token (`foo*`) is an ordinary character, as in nats-server.

/// The tokens of a subject.
pub fn tokens(subject: &[u8]) -> impl Iterator<Item = &[u8]> + Clone {
    subject.split(|&b| b == b'.')
}

fn bad_byte(b: u8) -> bool {
    // nats-server rejects whitespace in subjects; control bytes could only be
    // an attempt to smuggle protocol, so they go too.
    b.is_ascii_whitespace() || b.is_ascii_control()
}

/// A subject a client may publish to: non-empty tokens, no wildcard tokens,
/// no whitespace.
pub fn is_valid_publish(subject: &[u8]) -> bool {
    !subject.is_empty()
        && !subject.iter().any(|&b| bad_byte(b))
        && tokens(subject).all(|t| !t.is_empty() && t != b"*" && t != b">")
}

/// A subject a message may carry between nodes (its subject or reply): not
/// empty, no whitespace or control bytes. Both ends of a route apply this
/// same rule, the sender before forwarding and the receiver after decoding,
/// and it is no stricter than what the client parser lets through outside
/// pedantic mode apart from control bytes, so a message a client could
/// publish is never the reason a link closes. Wildcard tokens and empty
/// tokens pass, as they do from a non-pedantic client to local subscribers.
pub fn is_routable(subject: &[u8]) -> bool {
    !subject.is_empty() && !subject.iter().any(|&b| bad_byte(b))
}

/// A subscription pattern: non-empty tokens, `>` only as the last token, no
/// whitespace.
pub fn is_valid_pattern(subject: &[u8]) -> bool {
    if subject.is_empty() || subject.iter().any(|&b| bad_byte(b)) {
        return false;
    }
    let mut toks = tokens(subject).peekable();
    while let Some(t) = toks.next() {
        if t.is_empty() || (t == b">" && toks.peek().is_some()) {
            return false;
        }
    }
    true
}

/// A queue group name: non-empty, no whitespace or control bytes.
pub fn is_valid_queue(name: &[u8]) -> bool {
    !name.is_empty() && !name.iter().any(|&b| bad_byte(b))
}

/// Whether a (valid) pattern contains a wildcard token.
pub fn has_wildcard(pattern: &[u8]) -> bool {
    tokens(pattern).any(|t| t == b"*" || t == b">")
}

/// Whether `pattern` matches the literal `subject`. This is the simple
/// token-by-token definition the index must agree with; the index uses it
/// only to invalidate its cache.
pub fn pattern_matches(pattern: &[u8], subject: &[u8]) -> bool {
    let mut p = tokens(pattern);
    let mut s = tokens(subject);
    loop {
        match (p.next(), s.next()) {
            (None, None) => return true,
            (Some(b">"), Some(_)) => return true,
            (Some(b"*"), Some(_)) => {}
            (Some(pt), Some(st)) if pt == st => {}
            _ => return false,
        }
    }
}

/// Whether every subject `pattern` can match is also matched by `cover`
/// (both valid patterns): `foo.>` covers `foo.*` and `foo.bar.>`, `foo.*`
/// covers `foo.bar` but not `foo.>`. Subscribe permissions use this, so a
/// wildcard subscription is allowed only where all it could receive is.
pub fn pattern_covers(cover: &[u8], pattern: &[u8]) -> bool {
    let mut c = tokens(cover);
    let mut p = tokens(pattern);
    loop {
        match (c.next(), p.next()) {
            (None, None) => return true,
            // `>` covers one or more remaining tokens, whatever they are.
            (Some(b">"), Some(_)) => return true,
            // `*` covers any single token except a `>` (which is many).
            (Some(b"*"), Some(pt)) if pt != b">" => {}
            (Some(ct), Some(pt)) if ct == pt && ct != b"*" && ct != b">" => {}
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_subjects() {
        for ok in ["foo", "foo.bar", "foo*.bar>", "$SYS.x", "_INBOX.abc.1"] {
            assert!(is_valid_publish(ok.as_bytes()), "{ok}");
        }
        for bad in [
            "", ".", "foo.", ".foo", "foo..bar", "foo.*", ">", "a.>", "a b", "a\tb", "a\r",
        ] {
            assert!(!is_valid_publish(bad.as_bytes()), "{bad:?}");
        }
    }

    #[test]
    fn patterns() {
        for ok in [
            "foo", "*", ">", "foo.*", "foo.>", "*.*.>", "foo*.>", "a.*.c",
        ] {
            assert!(is_valid_pattern(ok.as_bytes()), "{ok}");
        }
        for bad in ["", "foo.", "foo..bar", ">.foo", "a.>.b", "a b", ".", "a.\n"] {
            assert!(!is_valid_pattern(bad.as_bytes()), "{bad:?}");
        }
    }

    #[test]
    fn queues() {
        assert!(is_valid_queue(b"workers"));
        assert!(!is_valid_queue(b""));
        assert!(!is_valid_queue(b"a b"));
    }

    #[test]
    fn covering() {
        assert!(pattern_covers(b"foo.>", b"foo.*"));
        assert!(pattern_covers(b"foo.>", b"foo.bar.>"));
        assert!(pattern_covers(b"foo.>", b"foo.>"));
        assert!(pattern_covers(b">", b"a.*.>"));
        assert!(pattern_covers(b"foo.*", b"foo.bar"));
        assert!(pattern_covers(b"foo.*", b"foo.*"));
        assert!(!pattern_covers(b"foo.*", b"foo.>"));
        assert!(!pattern_covers(b"foo.bar", b"foo.*"));
        assert!(!pattern_covers(b"foo.>", b"foo"));
        assert!(!pattern_covers(b"foo.*", b"foo.bar.baz"));
        assert!(pattern_covers(b"a.b", b"a.b"));
    }

    #[test]
    fn reference_matcher() {
        assert!(pattern_matches(b"foo.*", b"foo.bar"));
        assert!(!pattern_matches(b"foo.*", b"foo"));
        assert!(!pattern_matches(b"foo.*", b"foo.bar.baz"));
        assert!(pattern_matches(b"foo.>", b"foo.bar.baz"));
        assert!(!pattern_matches(b"foo.>", b"foo"));
        assert!(pattern_matches(b">", b"foo"));
        assert!(pattern_matches(b"*.bar", b"foo.bar"));
        assert!(!pattern_matches(b"foo*", b"foox"));
        assert!(pattern_matches(b"foo", b"foo"));
        assert!(!pattern_matches(b"foo", b"foo.bar"));
        assert!(has_wildcard(b"a.*"));
        assert!(!has_wildcard(b"a*.b"));
    }
}
