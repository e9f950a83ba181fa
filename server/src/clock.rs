//! Wall-clock times as CloudEvents write them: RFC 3339 in UTC, with
//! milliseconds (`time` of monitoring's and the payload log's events).
use std::time::SystemTime;

/// A time as RFC 3339 in UTC, with milliseconds.
pub fn rfc3339(t: SystemTime) -> String {
    let since = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rest) = ((secs / 86_400) as i64, secs % 86_400);
    // Howard Hinnant's civil-from-days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + (month <= 2) as i64;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60,
        since.subsec_millis()
    )
}

/// RFC 3339 UTC with milliseconds, written into `out`; the date and time
/// of the current second are formatted once per second and thread.
pub fn write_rfc3339(out: &mut Vec<u8>, t: SystemTime) {
    thread_local! {
        static SECOND: std::cell::RefCell<(u64, String)> = const { std::cell::RefCell::new((u64::MAX, String::new())) };
    }
    let since = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    SECOND.with_borrow_mut(|(cached, text)| {
        if *cached != secs {
            let full = rfc3339(SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(secs));
            // "YYYY-MM-DDTHH:MM:SS" of "YYYY-MM-DDTHH:MM:SS.mmmZ".
            *text = full[..full.len() - 5].to_owned();
            *cached = secs;
        }
        out.extend_from_slice(text.as_bytes());
    });
    let ms = since.subsec_millis();
    out.extend_from_slice(&[
        b'.',
        b'0' + (ms / 100) as u8,
        b'0' + (ms / 10 % 10) as u8,
        b'0' + (ms % 10) as u8,
        b'Z',
    ]);
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn times_are_rfc3339() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_796_300_000_123);
        // date -u -d @1796300000
        assert_eq!(rfc3339(t), "2026-12-03T12:13:20.123Z");
        assert_eq!(rfc3339(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let leap = SystemTime::UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00.000Z");
        for t in [t, leap, t + Duration::from_millis(7)] {
            let mut out = b"x".to_vec();
            write_rfc3339(&mut out, t);
            assert_eq!(&out[1..], rfc3339(t).as_bytes());
        }
    }
}
