//! Wall-clock time as ilha writes it: Unix seconds in records, UTC in names and reports.

/// Seconds since the Unix epoch (0 if the clock is before it).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn utc(unix: u64) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp(unix as i64)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

/// `20261127T030000Z`: for file names, sorts by time.
pub fn utc_stamp(unix: u64) -> String {
    let t = utc(unix);
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// `2026-11-27 03:00:00 UTC`: for people.
pub fn utc_time(unix: u64) -> String {
    let t = utc(unix);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_sort_by_time_and_read_as_utc() {
        assert_eq!(utc_stamp(0), "19700101T000000Z");
        assert_eq!(utc_stamp(1_795_748_400), "20261127T030000Z");
        assert!(utc_stamp(1_795_748_400) < utc_stamp(1_795_748_401));
        assert_eq!(utc_time(1_795_748_400), "2026-11-27 03:00:00 UTC");
    }
}
