//! Keeping logs honest and bounded: names from outside are escaped before they reach a log
//! line (a target named `"x\nERROR forged"` must not forge a line), and an error that repeats
//! on every attempt is logged once per interval with the number of repeats in between.

use std::fmt;
use std::time::{Duration, Instant};

/// Displays `text` with control characters escaped (`\n`, `\t`, `\u{1b}`, …) and quotes,
/// backslashes kept as they are. Cheap: borrows, allocates nothing until formatted.
#[derive(Clone, Copy)]
pub struct Escaped<'a>(pub &'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use fmt::Write as _;
        for c in self.0.chars() {
            if c.is_control() {
                for escaped in c.escape_default() {
                    f.write_char(escaped)?;
                }
            } else {
                f.write_char(c)?;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.0, f)
    }
}

/// `text` with control characters escaped, as an owned string (for span fields).
pub fn escape(text: &str) -> String {
    Escaped(text).to_string()
}

/// Lets one log line through per `interval`, counting the ones held back.
#[derive(Debug)]
pub struct Throttle {
    interval: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl Throttle {
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            last: None,
            suppressed: 0,
        }
    }

    /// `Some(held back since the last line)` when a line may be logged now, else `None`.
    pub fn allow(&mut self) -> Option<u64> {
        let now = Instant::now();
        match self.last {
            Some(last) if now.duration_since(last) < self.interval => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }

    /// Whether [`Throttle::allow`] would let a line through now (without counting one).
    pub fn would_allow(&self) -> bool {
        self.last
            .is_none_or(|last| Instant::now().duration_since(last) >= self.interval)
    }

    /// Starts over, so the next line is logged at once (e.g. after a success).
    pub fn reset(&mut self) {
        self.last = None;
        self.suppressed = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(escape("r1"), "r1");
        assert_eq!(escape("a\nERROR forged"), "a\\nERROR forged");
        assert_eq!(escape("tab\there\u{1b}[31m"), "tab\\there\\u{1b}[31m");
        assert_eq!(escape("\0"), "\\u{0}");
        assert_eq!(escape("ünïcode / ok"), "ünïcode / ok");
    }

    #[test]
    fn throttle_lets_one_line_through_per_interval() {
        let mut throttle = Throttle::new(Duration::from_secs(3600));
        assert_eq!(throttle.allow(), Some(0));
        assert_eq!(throttle.allow(), None);
        assert_eq!(throttle.allow(), None);
        throttle.reset();
        assert_eq!(throttle.allow(), Some(0));
        let mut fast = Throttle::new(Duration::ZERO);
        assert_eq!(fast.allow(), Some(0));
        assert_eq!(fast.allow(), Some(0));
    }
}
