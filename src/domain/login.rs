//! Rules of signing in: which passwords are too common to accept, and how long a client waits
//! after failed attempts on one account.

use std::collections::HashSet;
use std::sync::OnceLock;
use std::time::Duration;

/// The 10,000 most common passwords (SecLists, Passwords/Common-Credentials/10k-most-common.txt, MIT).
const COMMON: &str = include_str!("common-passwords.txt");

/// Whether `password` is on the common-password list, ignoring case.
pub fn is_common(password: &str) -> bool {
    static SET: OnceLock<HashSet<String>> = OnceLock::new();
    SET.get_or_init(|| COMMON.lines().map(str::to_lowercase).collect()).contains(&password.to_lowercase())
}

/// Failed attempts in a row one client may make on one account before it has to wait.
pub const FREE_ATTEMPTS: i64 = 5;
/// Failed attempts one client address may make on all accounts together in 15 minutes.
pub const MAX_ATTEMPTS_PER_ADDRESS: i64 = 50;

/// Whether a client may try a password now, given its failures in a row on the account, its
/// attempts still being checked and the seconds since its last failure; else how long to wait.
/// The first `FREE_ATTEMPTS` cost nothing; then each attempt waits 30 s, doubled per further
/// failure, at most 15 minutes, and only one is checked at a time.
pub fn may_attempt(failures: i64, pending: i64, since_last_failure: f64) -> Result<(), Duration> {
    if failures + pending < FREE_ATTEMPTS {
        return Ok(());
    }
    let doublings = (failures - FREE_ATTEMPTS).clamp(0, 5) as u32;
    let wait = Duration::from_secs((30u64 << doublings).min(15 * 60));
    let left = wait.saturating_sub(Duration::try_from_secs_f64(since_last_failure.max(0.0)).unwrap_or(Duration::MAX));
    if pending > 0 {
        return Err(left.max(Duration::from_secs(1)));
    }
    if left.is_zero() {
        Ok(())
    } else {
        Err(left)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_passwords_are_found_whatever_their_case() {
        assert!(is_common("1234567890"));
        assert!(is_common("QwertyUIOP"));
        assert!(!is_common("correct horse battery"));
    }

    #[test]
    fn failures_cost_nothing_at_first_then_the_wait_doubles_up_to_fifteen_minutes() {
        assert_eq!(may_attempt(0, 0, 0.0), Ok(()));
        assert_eq!(may_attempt(3, 1, 0.0), Ok(()));
        assert!(may_attempt(4, 1, 0.0).is_err(), "attempts being checked count against the limit");
        assert_eq!(may_attempt(5, 0, 10.0), Err(Duration::from_secs(20)));
        assert_eq!(may_attempt(5, 0, 30.0), Ok(()));
        assert!(may_attempt(5, 1, 30.0).is_err(), "one at a time once waiting");
        assert_eq!(may_attempt(6, 0, 0.0), Err(Duration::from_secs(60)));
        assert_eq!(may_attempt(9, 0, 0.0), Err(Duration::from_secs(480)));
        assert_eq!(may_attempt(10, 0, 0.0), Err(Duration::from_secs(900)));
        assert_eq!(may_attempt(1000, 0, 899.0), Err(Duration::from_secs(1)));
        assert_eq!(may_attempt(1000, 0, 900.0), Ok(()));
    }
}
