//! Dynamic weights from `exec` checks (`dynamic = true`), keepalived's
//! `misc_dynamic` convention: the program's exit status says whether the
//! real server is up, and may set its weight.
//!
//! | exit status | meaning |
//! |---|---|
//! | 0 | up, with its configured weight |
//! | 1 | down (the check failed) |
//! | 2..=255 | up, with weight `status - 2` (0..=253), never above the configured weight |
//!
//! Two choices differ from keepalived, on purpose: exit 0 restores the
//! configured weight (keepalived leaves the last dynamic weight in place),
//! and the configured weight is the ceiling (keepalived takes `status - 2`
//! as is), so a script cannot send a real server more than the operator
//! gave it. A program killed by a signal fails the check.

/// What one exit status of a dynamic exec check says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Up; `Some(w)`: with weight `w` asked for (before the ceiling).
    Up(Option<u32>),
    /// The check failed.
    Down,
}

/// The verdict of exit status `code` (`None`: killed by a signal).
pub fn verdict(code: Option<i32>) -> Verdict {
    match code {
        Some(0) => Verdict::Up(None),
        Some(c @ 2..=255) => Verdict::Up(Some((c - 2) as u32)),
        _ => Verdict::Down,
    }
}

/// The weight to apply: the one asked for, bounded by the configured one;
/// the configured one when none was asked for.
pub fn bounded(asked: Option<u32>, configured: u32) -> u32 {
    asked.map_or(configured, |w| w.min(configured))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keepalived_misc_dynamic_mapping() {
        assert_eq!(verdict(Some(0)), Verdict::Up(None));
        assert_eq!(verdict(Some(1)), Verdict::Down);
        assert_eq!(verdict(Some(2)), Verdict::Up(Some(0)), "2 is up with weight 0 (quiesced)");
        assert_eq!(verdict(Some(12)), Verdict::Up(Some(10)));
        assert_eq!(verdict(Some(255)), Verdict::Up(Some(253)));
        assert_eq!(verdict(None), Verdict::Down, "killed by a signal");
        assert_eq!(verdict(Some(256)), Verdict::Down, "no exit status is above 255");
    }

    #[test]
    fn the_configured_weight_is_the_ceiling() {
        assert_eq!(bounded(None, 5), 5);
        assert_eq!(bounded(Some(3), 5), 3);
        assert_eq!(bounded(Some(253), 5), 5);
        assert_eq!(bounded(Some(0), 5), 0);
        assert_eq!(bounded(Some(7), 0), 0);
    }
}
