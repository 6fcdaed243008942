//! Cut-over windows (`spec.cutover.window`): the cut-over starts only while a
//! window is open; the copy and its re-sync run at any time. Pure.

use jiff::civil::{Time, Weekday};
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp, ToSpan};

use crate::api::{CutoverWindow, WindowDay};

/// A window, checked: opens at `start` local time on `days` (every day when
/// empty) in `zone`, for `length`.
#[derive(Clone, Debug)]
pub struct Window {
    pub start: Time,
    pub length: SignedDuration,
    pub zone: TimeZone,
    pub days: Vec<Weekday>,
}

impl PartialEq for Window {
    fn eq(&self, other: &Self) -> bool {
        self.start == other.start
            && self.length == other.length
            && self.zone.iana_name() == other.zone.iana_name()
            && self.days == other.days
    }
}

/// Whether the cut-over may start now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WindowState {
    Open,
    /// Closed until `opens_at`.
    Closed {
        opens_at: Timestamp,
    },
}

/// Checks a window's fields: `(field, problem)` for the first bad one.
pub fn parse(w: &CutoverWindow) -> Result<Window, (&'static str, String)> {
    let text = w.start.trim();
    let start = Time::strptime("%H:%M", text)
        .or_else(|_| Time::strptime("%H:%M:%S", text))
        .map_err(|_| ("spec.cutover.window.start", format!("{:?} is not a time as HH:MM (24 hours)", w.start)))?;
    let length = parse_length(&w.duration).ok_or_else(|| {
        ("spec.cutover.window.duration", format!("{:?} is not a duration such as 2h, 90m or 1h30m", w.duration))
    })?;
    if length <= SignedDuration::ZERO || length > SignedDuration::from_hours(24) {
        return Err(("spec.cutover.window.duration", format!("{} must be more than 0 and at most 24h", w.duration)));
    }
    let zone = TimeZone::get(&w.time_zone).map_err(|_| {
        ("spec.cutover.window.timeZone", format!("{:?} is not an IANA time zone (such as Europe/Berlin)", w.time_zone))
    })?;
    let days = w.days.iter().map(|d| weekday(*d)).collect();
    Ok(Window { start, length, zone, days })
}

/// `2h`, `90m`, `1h30m`, `45s` and combinations.
fn parse_length(text: &str) -> Option<SignedDuration> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    let (mut total, mut number) = (0i64, String::new());
    for c in text.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let n: i64 = number.parse().ok()?;
        number.clear();
        total = total.checked_add(match c {
            'h' => n.checked_mul(3600)?,
            'm' => n.checked_mul(60)?,
            's' => n,
            _ => return None,
        })?;
    }
    number.is_empty().then(|| SignedDuration::from_secs(total))
}

fn weekday(d: WindowDay) -> Weekday {
    match d {
        WindowDay::Mon => Weekday::Monday,
        WindowDay::Tue => Weekday::Tuesday,
        WindowDay::Wed => Weekday::Wednesday,
        WindowDay::Thu => Weekday::Thursday,
        WindowDay::Fri => Weekday::Friday,
        WindowDay::Sat => Weekday::Saturday,
        WindowDay::Sun => Weekday::Sunday,
    }
}

/// Whether `w` is open at `now`, else when it opens next. A window that
/// began yesterday (across midnight) counts; a start skipped by a daylight
/// saving jump moves to the next valid instant, as the time zone rules say.
pub fn state(w: &Window, now: Timestamp) -> WindowState {
    let today = now.to_zoned(w.zone.clone()).date();
    let mut next: Option<Timestamp> = None;
    for offset in -1..=8 {
        let Ok(date) = today.checked_add(offset.days()) else { continue };
        if !w.days.is_empty() && !w.days.contains(&date.weekday()) {
            continue;
        }
        let Ok(opens) = date.to_datetime(w.start).to_zoned(w.zone.clone()) else { continue };
        let opens = opens.timestamp();
        let Ok(closes) = opens.checked_add(w.length) else { continue };
        if opens <= now && now < closes {
            return WindowState::Open;
        }
        if opens > now && next.is_none_or(|n| opens < n) {
            next = Some(opens);
        }
    }
    // Some day of the next week is always listed, so `next` is set.
    WindowState::Closed { opens_at: next.unwrap_or(now) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(start: &str, duration: &str, zone: &str, days: &[WindowDay]) -> Window {
        let w = CutoverWindow {
            start: start.into(),
            duration: duration.into(),
            time_zone: zone.into(),
            days: days.to_vec(),
        };
        parse(&w).unwrap()
    }

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    #[test]
    fn a_weekday_night_window_in_berlin() {
        use WindowDay::*;
        let w = window("02:00", "2h", "Europe/Berlin", &[Mon, Tue, Wed, Thu, Fri]);
        // Tuesday 2026-12-01 02:30 in Berlin is 01:30 UTC (CET, +01:00): open.
        assert_eq!(state(&w, at("2026-12-01T01:30:00Z")), WindowState::Open);
        // 04:00 Berlin: just closed; the next is Wednesday 02:00 Berlin.
        assert_eq!(state(&w, at("2026-12-01T03:00:00Z")), WindowState::Closed { opens_at: at("2026-12-02T01:00:00Z") });
        // Friday night after the window: Monday is next, not Saturday.
        assert_eq!(state(&w, at("2026-12-04T12:00:00Z")), WindowState::Closed { opens_at: at("2026-12-07T01:00:00Z") });
        // In summer Berlin is +02:00.
        assert_eq!(state(&w, at("2026-07-01T00:30:00Z")), WindowState::Open);
    }

    #[test]
    fn a_window_across_midnight_counts_the_day_it_started() {
        let w = window("23:00", "3h", "UTC", &[WindowDay::Sat]);
        assert_eq!(state(&w, at("2026-12-06T01:00:00Z")), WindowState::Open, "Sunday 01:00, from Saturday 23:00");
        assert_eq!(state(&w, at("2026-12-06T02:00:00Z")), WindowState::Closed { opens_at: at("2026-12-12T23:00:00Z") });
    }

    #[test]
    fn every_day_when_no_days_are_listed() {
        let w = window("12:00", "30m", "UTC", &[]);
        assert_eq!(state(&w, at("2026-12-01T12:30:00Z")), WindowState::Closed { opens_at: at("2026-12-02T12:00:00Z") });
        assert_eq!(state(&w, at("2026-12-01T12:29:59Z")), WindowState::Open);
    }

    #[test]
    fn bad_fields_are_named() {
        let w = |start: &str, duration: &str, zone: &str| CutoverWindow {
            start: start.into(),
            duration: duration.into(),
            time_zone: zone.into(),
            days: vec![],
        };
        assert_eq!(parse(&w("2am", "2h", "UTC")).unwrap_err().0, "spec.cutover.window.start");
        assert_eq!(parse(&w("25:00", "2h", "UTC")).unwrap_err().0, "spec.cutover.window.start");
        assert_eq!(parse(&w("02:00:30", "2h", "UTC")).unwrap().start, Time::constant(2, 0, 30, 0), "seconds allowed");
        assert_eq!(parse(&w("02:00", "two hours", "UTC")).unwrap_err().0, "spec.cutover.window.duration");
        assert_eq!(parse(&w("02:00", "25h", "UTC")).unwrap_err().0, "spec.cutover.window.duration");
        assert_eq!(parse(&w("02:00", "0m", "UTC")).unwrap_err().0, "spec.cutover.window.duration");
        assert_eq!(parse(&w("02:00", "2h", "Mars/Olympus")).unwrap_err().0, "spec.cutover.window.timeZone");
        assert_eq!(parse_length("1h30m"), Some(SignedDuration::from_secs(5400)));
        assert_eq!(parse_length("90"), None);
    }
}
