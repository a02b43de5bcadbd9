//! RFC 3339 timestamps in UTC as Go's `time.RFC3339` and `time.RFC3339Nano`
//! print them, from Unix time, with civil-from-days arithmetic.
//! Valid for years 0 through 9999.

const SECS_PER_DAY: i64 = 86_400;
const NANOS_PER_SEC: u32 = 1_000_000_000;

/// `2026-02-13T15:26:27Z`.
pub fn rfc3339(unix_secs: i64) -> String {
    let (date, time) = split(unix_secs);
    format!("{date}T{time}Z")
}

/// Go's RFC3339Nano in UTC: `2026-02-13T15:26:27.123456789Z`, trailing zeros
/// of the fraction trimmed and the dot dropped when the fraction is zero.
/// `nanos` of a second or more carry into the seconds.
pub fn rfc3339_nano(unix_secs: i64, nanos: u32) -> String {
    let secs = unix_secs.saturating_add(i64::from(nanos / NANOS_PER_SEC));
    let nanos = nanos % NANOS_PER_SEC;
    let (date, time) = split(secs);
    if nanos == 0 {
        return format!("{date}T{time}Z");
    }
    let fraction = format!("{nanos:09}");
    format!("{date}T{time}.{}Z", fraction.trim_end_matches('0'))
}

fn split(unix_secs: i64) -> (String, String) {
    let days = unix_secs.div_euclid(SECS_PER_DAY);
    let rem = unix_secs.rem_euclid(SECS_PER_DAY);
    let (y, m, d) = civil_from_days(days);
    let time = format!("{:02}:{:02}:{:02}", rem / 3600, rem / 60 % 60, rem % 60);
    (format!("{y:04}-{m:02}-{d:02}"), time)
}

/// Proleptic Gregorian (year, month, day) of a count of days since 1970-01-01.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month as u32, day as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: i64 = 1_770_996_387; // 2026-02-13T15:26:27Z

    #[test]
    fn seconds() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(T), "2026-02-13T15:26:27Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(253_402_300_799), "9999-12-31T23:59:59Z");
        assert_eq!(rfc3339(-62_167_219_200), "0000-01-01T00:00:00Z");
    }

    #[test]
    fn nanos_trimmed() {
        assert_eq!(rfc3339_nano(T, 0), "2026-02-13T15:26:27Z");
        assert_eq!(rfc3339_nano(T, 100_000_000), "2026-02-13T15:26:27.1Z");
        assert_eq!(
            rfc3339_nano(T, 123_456_789),
            "2026-02-13T15:26:27.123456789Z"
        );
        assert_eq!(rfc3339_nano(T, 10), "2026-02-13T15:26:27.00000001Z");
        assert_eq!(rfc3339_nano(T, 1), "2026-02-13T15:26:27.000000001Z");
        assert_eq!(rfc3339_nano(T, 120_000_000), "2026-02-13T15:26:27.12Z");
        assert_eq!(rfc3339_nano(T, 1_500_000_000), "2026-02-13T15:26:28.5Z");
    }

    #[test]
    fn civil_matches_day_walk() {
        let mut ymd = (1970, 1, 1);
        for days in 0..200_000 {
            assert_eq!(civil_from_days(days), ymd, "day {days}");
            ymd = next_day(ymd);
        }
    }

    fn next_day((y, m, d): (i64, u32, u32)) -> (i64, u32, u32) {
        let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
        let len = [
            31,
            if leap { 29 } else { 28 },
            31,
            30,
            31,
            30,
            31,
            31,
            30,
            31,
            30,
            31,
        ][m as usize - 1];
        match (d < len, m < 12) {
            (true, _) => (y, m, d + 1),
            (false, true) => (y, m + 1, 1),
            (false, false) => (y + 1, 1, 1),
        }
    }
}
