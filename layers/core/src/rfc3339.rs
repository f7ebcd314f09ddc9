//! RFC 3339 UTC timestamps (`2026-12-03T05:39:47.517Z`) written without `fmt`, for lines
//! written per request (the JSON access log, the audit file). The date and time of day are
//! kept per thread for the current second, so most calls write only the fraction.

use std::{
    cell::RefCell,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

/// Append `t` as RFC 3339 UTC with `digits` fractional digits (1 to 9, truncated as
/// `humantime` and tracing-subscriber truncate): `digits = 3` is
/// `humantime::format_rfc3339_millis`, `6` tracing-subscriber's JSON timestamp. A time
/// before 1970 is written as 1970-01-01T00:00:00.
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
///
/// let mut s = String::new();
/// let t = UNIX_EPOCH + Duration::new(1_796_275_387, 517_098_123);
/// portcullis_core::rfc3339::push(&mut s, t, 3);
/// assert_eq!(s, "2026-12-03T05:23:07.517Z");
/// ```
pub fn push(out: &mut String, t: SystemTime, digits: u32) {
    thread_local! {
        static SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }
    let since = t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    let secs = since.as_secs();
    SECOND.with(|cell| {
        let mut cached = cell.borrow_mut();
        if cached.0 != secs {
            cached.1.clear();
            civil(&mut cached.1, secs);
            cached.0 = secs;
        }
        out.push_str(&cached.1);
    });
    let digits = digits.clamp(1, 9) as usize;
    let mut frac = *b".000000000";
    let mut nanos = since.subsec_nanos();
    for d in frac[1..].iter_mut().rev() {
        *d = b'0' + (nanos % 10) as u8;
        nanos /= 10;
    }
    // ASCII digits: always UTF-8.
    out.push_str(std::str::from_utf8(&frac[..=digits]).unwrap_or(".0"));
    out.push('Z');
}

/// `YYYY-MM-DDTHH:MM:SS` of a Unix time (Howard Hinnant's days-to-civil algorithm).
fn civil(out: &mut String, secs: u64) {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let two = |out: &mut String, n: i64| {
        out.push(char::from(b'0' + (n / 10 % 10) as u8));
        out.push(char::from(b'0' + (n % 10) as u8));
    };
    two(out, year / 100);
    two(out, year % 100);
    out.push('-');
    two(out, month);
    out.push('-');
    two(out, day);
    out.push('T');
    two(out, (rem / 3600) as i64);
    out.push(':');
    two(out, (rem / 60 % 60) as i64);
    out.push(':');
    two(out, (rem % 60) as i64);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        let cases = [
            (0u64, "1970-01-01T00:00:00"),
            (951_782_400, "2000-02-29T00:00:00"),
            (1_796_275_387, "2026-12-03T05:23:07"),
            (4_107_542_399, "2100-02-28T23:59:59"),
        ];
        for (secs, want) in cases {
            let mut s = String::new();
            civil(&mut s, secs);
            assert_eq!(s, want, "{secs}");
        }
    }

    proptest::proptest! {
        /// The same text as humantime's RFC 3339 writers, for any time up to year 9999,
        /// whatever the previous call on this thread cached.
        #[test]
        fn same_as_humantime(secs in 0u64..253_402_300_799, nanos in 0u32..1_000_000_000, again in 0u64..3) {
            for s in [secs, secs + again] {
                let t = UNIX_EPOCH + Duration::new(s, nanos);
                let mut ours = String::new();
                push(&mut ours, t, 3);
                proptest::prop_assert_eq!(&ours, &humantime::format_rfc3339_millis(t).to_string());
                ours.clear();
                push(&mut ours, t, 6);
                proptest::prop_assert_eq!(&ours, &humantime::format_rfc3339_micros(t).to_string());
                ours.clear();
                push(&mut ours, t, 9);
                proptest::prop_assert_eq!(&ours, &humantime::format_rfc3339_nanos(t).to_string());
            }
        }
    }
}
