//! NATS subject rules, shared by the in-process bus and config validation.

use super::BusError;

/// Checks that `subject` is a valid NATS subject (or subscription pattern when
/// `allow_wildcards`): non-empty tokens separated by `.`, no whitespace, `>` only last.
pub fn validate_subject(subject: &str, allow_wildcards: bool) -> Result<(), BusError> {
    let invalid = |reason| {
        Err(BusError::InvalidSubject {
            subject: subject.to_string(),
            reason,
        })
    };
    if subject.is_empty() {
        return invalid("empty subject");
    }
    let mut tokens = subject.split('.').peekable();
    while let Some(token) = tokens.next() {
        if token.is_empty() {
            return invalid("empty token (leading, trailing or double '.')");
        }
        if token.chars().any(char::is_whitespace) {
            return invalid("whitespace is not allowed");
        }
        let wildcard = token == "*" || token == ">";
        if wildcard && !allow_wildcards {
            return invalid("wildcards are not allowed when publishing");
        }
        if token == ">" && tokens.peek().is_some() {
            return invalid("'>' must be the last token");
        }
    }
    Ok(())
}

/// Whether `subject` matches the subscription `pattern` (`*` = one token, `>` = the rest).
pub fn subject_matches(pattern: &str, subject: &str) -> bool {
    let mut subject_tokens = subject.split('.');
    for pattern_token in pattern.split('.') {
        match (pattern_token, subject_tokens.next()) {
            (">", Some(_)) => return true,
            ("*", Some(_)) => {}
            (p, Some(s)) if p == s => {}
            _ => return false,
        }
    }
    subject_tokens.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_like_nats() {
        assert!(subject_matches("telemetry.>", "telemetry.a.b"));
        assert!(!subject_matches("telemetry.>", "telemetry"));
        assert!(subject_matches("telemetry.*.port", "telemetry.r1.port"));
        assert!(!subject_matches("telemetry.*.port", "telemetry.r1.x.port"));
        assert!(subject_matches("a.b", "a.b"));
        assert!(!subject_matches("a.b", "a.b.c"));
        assert!(!subject_matches("a.b.c", "a.b"));
    }

    #[test]
    fn invalid_subjects_are_named() {
        assert!(validate_subject("a..b", true).is_err());
        assert!(validate_subject("a.>.b", true).is_err());
        assert!(validate_subject("a.*", false).is_err());
        assert!(validate_subject("a b", false).is_err());
        assert!(validate_subject("telemetry.127-0-0-1:57400.port", false).is_ok());
    }
}
