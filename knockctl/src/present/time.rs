//! Durations and instants as people read them.

use chrono::{DateTime, TimeZone};

/// `29s`, `4m03s`, `2h05m`, `3d04h`: the two most significant units, truncated.
pub fn format_duration_secs(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    if d > 0 {
        format!("{d}d{h:02}h")
    } else if h > 0 {
        format!("{h}h{m:02}m")
    } else if m > 0 {
        format!("{m}m{s:02}s")
    } else {
        format!("{s}s")
    }
}

/// Like [`format_duration_secs`], with tenths below a minute (`0.4s`, `12.3s`): knock
/// sequences time out within seconds.
pub fn format_duration_ms(ms: u64) -> String {
    if ms < 60_000 {
        format!("{}.{}s", ms / 1000, ms % 1000 / 100)
    } else {
        format_duration_secs(ms / 1000)
    }
}

/// Time left on a grant: `29s`, `4m03s`, or `never` when it has no deadline.
pub fn format_remaining(expires_in_ms: Option<u64>) -> String {
    match expires_in_ms {
        Some(ms) => format_duration_secs(ms / 1000),
        None => "never".to_string(),
    }
}

/// A wall-clock instant in `now`'s time zone: `14:59:16` today, `Mar 02 14:59` another day.
pub fn format_clock<Tz: TimeZone>(unix_ms: i64, now: &DateTime<Tz>) -> String {
    let Some(at) = DateTime::from_timestamp_millis(unix_ms) else {
        return "?".to_string();
    };
    let at = at.with_timezone(&now.timezone()).naive_local();
    if at.date() == now.date_naive() {
        at.format("%H:%M:%S").to_string()
    } else {
        at.format("%b %d %H:%M").to_string()
    }
}

/// The time of day of an instant in `tz`, `14:59:16`, whatever the day (`??:??:??` when out
/// of range): for live event logs, where every line is recent.
pub fn format_time_of_day<Tz: TimeZone>(unix_ms: i64, tz: &Tz) -> String {
    DateTime::from_timestamp_millis(unix_ms).map_or_else(
        || "??:??:??".to_string(),
        |t| {
            t.with_timezone(tz)
                .naive_local()
                .format("%H:%M:%S")
                .to_string()
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{FixedOffset, Utc};

    /// 2026-09-22 14:59:16.201 UTC.
    const T0: i64 = 1_790_089_156_201;

    #[test]
    fn durations() {
        for (secs, want) in [
            (0, "0s"),
            (29, "29s"),
            (59, "59s"),
            (60, "1m00s"),
            (243, "4m03s"),
            (3599, "59m59s"),
            (3600, "1h00m"),
            (7500, "2h05m"),
            (86_399, "23h59m"),
            (86_400, "1d00h"),
            (273_600, "3d04h"),
        ] {
            assert_eq!(format_duration_secs(secs), want, "{secs}s");
        }
        assert_eq!(format_remaining(Some(29_999)), "29s");
        assert_eq!(format_remaining(Some(243_500)), "4m03s");
        assert_eq!(format_remaining(None), "never");
        assert_eq!(format_duration_ms(400), "0.4s");
        assert_eq!(format_duration_ms(12_345), "12.3s");
        assert_eq!(format_duration_ms(61_000), "1m01s");
    }

    #[test]
    fn clock_shows_date_only_for_other_days() {
        let now = DateTime::from_timestamp_millis(T0 + 10_000)
            .expect("valid")
            .with_timezone(&FixedOffset::east_opt(0).expect("utc"));
        assert_eq!(format_clock(T0, &now), "14:59:16");
        assert_eq!(format_clock(T0 - 86_400_000, &now), "Sep 21 14:59");
        let plus2 = now.with_timezone(&FixedOffset::east_opt(2 * 3600).expect("tz"));
        assert_eq!(format_clock(T0, &plus2), "16:59:16");
    }

    #[test]
    fn time_of_day_ignores_the_date() {
        assert_eq!(format_time_of_day(T0, &Utc), "14:59:16");
        assert_eq!(format_time_of_day(T0 - 86_400_000, &Utc), "14:59:16");
        assert_eq!(format_time_of_day(i64::MAX, &Utc), "??:??:??");
    }
}
