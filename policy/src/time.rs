//! The `when` component of a security rule: days of the week and a daily
//! time window, compared against a [`TimeOfWeek`] the caller supplies.
//!
//! # Format
//!
//! ```json
//! "when": { "days": ["mon", "tue", "wed", "thu", "fri"], "start": "08:00", "end": "18:30" }
//! ```
//!
//! * `days`: three-letter lowercase day names (`mon` ... `sun`); absent means
//!   every day; an empty list is an error.
//! * `start`, `end`: `HH:MM`, 24-hour clock; `end` may be `24:00`. Both or
//!   neither; absent means the whole day. The window is `[start, end)`.
//! * `start` later than `end` is an overnight window: `"days": ["fri"],
//!   "start": "22:00", "end": "06:00"` covers Friday 22:00 to Saturday 06:00
//!   (the part after midnight belongs to the day it started on).
//! * `start` equal to `end` is an error (use no times for a whole day).
//! * At least one of `days`, `start`/`end` must be given.
//!
//! Times are wall-clock times in whatever zone the caller uses to build the
//! [`TimeOfWeek`] (GuardFS uses the host's local time, like CTE).

use std::fmt;

/// A day of the week.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Weekday {
    /// Monday.
    Mon = 0,
    /// Tuesday.
    Tue,
    /// Wednesday.
    Wed,
    /// Thursday.
    Thu,
    /// Friday.
    Fri,
    /// Saturday.
    Sat,
    /// Sunday.
    Sun,
}

impl Weekday {
    /// Every day, Monday first.
    pub const ALL: [Weekday; 7] = [
        Weekday::Mon,
        Weekday::Tue,
        Weekday::Wed,
        Weekday::Thu,
        Weekday::Fri,
        Weekday::Sat,
        Weekday::Sun,
    ];

    /// The policy name (`mon` ... `sun`).
    pub const fn name(self) -> &'static str {
        match self {
            Weekday::Mon => "mon",
            Weekday::Tue => "tue",
            Weekday::Wed => "wed",
            Weekday::Thu => "thu",
            Weekday::Fri => "fri",
            Weekday::Sat => "sat",
            Weekday::Sun => "sun",
        }
    }

    /// Parse a policy day name.
    pub fn parse(s: &str) -> Option<Weekday> {
        Weekday::ALL.into_iter().find(|d| d.name() == s)
    }

    /// The day before.
    pub const fn previous(self) -> Weekday {
        Weekday::ALL[(self as usize + 6) % 7]
    }

    const fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

impl fmt::Display for Weekday {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A wall-clock time of day, in minutes since midnight (`0..=1440`; 1440 is
/// `24:00`, allowed only as a window end).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClockTime(u16);

impl ClockTime {
    /// Midnight at the start of the day.
    pub const MIDNIGHT: ClockTime = ClockTime(0);
    /// `24:00`, the end of the day.
    pub const END_OF_DAY: ClockTime = ClockTime(1440);

    /// A time from hours and minutes; `24:00` is accepted, nothing later.
    pub const fn new(hour: u8, minute: u8) -> Option<ClockTime> {
        if minute >= 60 || hour > 24 || (hour == 24 && minute != 0) {
            return None;
        }
        Some(ClockTime(hour as u16 * 60 + minute as u16))
    }

    /// Parse `HH:MM` (two digits each).
    pub fn parse(s: &str) -> Option<ClockTime> {
        let b = s.as_bytes();
        if b.len() != 5 || b[2] != b':' || ![b[0], b[1], b[3], b[4]].iter().all(u8::is_ascii_digit)
        {
            return None;
        }
        let hour = (b[0] - b'0') * 10 + (b[1] - b'0');
        let minute = (b[3] - b'0') * 10 + (b[4] - b'0');
        ClockTime::new(hour, minute)
    }

    /// Minutes since midnight.
    pub const fn minutes(self) -> u16 {
        self.0
    }
}

impl fmt::Display for ClockTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02}:{:02}", self.0 / 60, self.0 % 60)
    }
}

/// The current time as the policy sees it: a day of the week and the
/// minute of that day.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TimeOfWeek {
    weekday: Weekday,
    minute: u16,
}

impl TimeOfWeek {
    /// A time from its parts; `None` unless `hour < 24` and `minute < 60`.
    pub const fn new(weekday: Weekday, hour: u8, minute: u8) -> Option<TimeOfWeek> {
        if hour >= 24 || minute >= 60 {
            return None;
        }
        Some(TimeOfWeek {
            weekday,
            minute: hour as u16 * 60 + minute as u16,
        })
    }

    /// The wall-clock time at `unix_secs` (seconds since the epoch, UTC) in
    /// a zone `utc_offset_secs` east of UTC. Pure arithmetic: the caller
    /// looks the offset up (it changes with daylight saving time).
    pub fn from_unix(unix_secs: i64, utc_offset_secs: i32) -> TimeOfWeek {
        let local = unix_secs.saturating_add(i64::from(utc_offset_secs));
        let days = local.div_euclid(86_400);
        let secs = local.rem_euclid(86_400);
        // 1970-01-01 was a Thursday.
        let weekday = Weekday::ALL[(days + 3).rem_euclid(7) as usize];
        TimeOfWeek {
            weekday,
            minute: (secs / 60) as u16,
        }
    }

    /// The day of the week.
    pub const fn weekday(self) -> Weekday {
        self.weekday
    }

    /// Minutes since midnight (`0..1440`).
    pub const fn minute_of_day(self) -> u16 {
        self.minute
    }
}

/// A `when` component as written in a policy (see the module doc).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TimeWindow {
    /// The days the window opens on; `None` is every day.
    pub days: Option<Vec<Weekday>>,
    /// Start of the daily window.
    pub start: Option<ClockTime>,
    /// End of the daily window (exclusive).
    pub end: Option<ClockTime>,
}

/// Why a [`TimeWindow`] is invalid.
pub(crate) fn window_problem(w: &TimeWindow) -> Option<&'static str> {
    if w.days.is_none() && w.start.is_none() && w.end.is_none() {
        return Some("it has none of `days`, `start`, `end`");
    }
    if w.days.as_ref().is_some_and(Vec::is_empty) {
        return Some("`days` is empty");
    }
    match (w.start, w.end) {
        (Some(_), None) => Some("`start` without `end`"),
        (None, Some(_)) => Some("`end` without `start`"),
        (Some(s), Some(_)) if s == ClockTime::END_OF_DAY => Some("`start` cannot be 24:00"),
        (Some(s), Some(e)) if s == e => Some("`start` equals `end`"),
        _ => None,
    }
}

/// A validated time window, as the compiled policy stores it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CompiledWindow {
    days: u8,
    start: u16,
    end: u16,
}

impl CompiledWindow {
    /// Compile a window that passed [`window_problem`].
    pub(crate) fn new(w: &TimeWindow) -> CompiledWindow {
        let days = match &w.days {
            None => 0x7f,
            Some(list) => list.iter().fold(0, |acc, d| acc | d.bit()),
        };
        let (start, end) = match (w.start, w.end) {
            (Some(s), Some(e)) => (s.0, e.0),
            _ => (0, 1440),
        };
        CompiledWindow { days, start, end }
    }

    fn on(self, day: Weekday) -> bool {
        self.days & day.bit() != 0
    }

    /// Whether `t` falls in the window.
    pub(crate) fn contains(self, t: TimeOfWeek) -> bool {
        let m = t.minute;
        if self.start < self.end {
            self.on(t.weekday) && (self.start..self.end).contains(&m)
        } else {
            (self.on(t.weekday) && m >= self.start)
                || (self.on(t.weekday.previous()) && m < self.end)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(day: Weekday, h: u8, m: u8) -> TimeOfWeek {
        TimeOfWeek::new(day, h, m).unwrap()
    }

    #[test]
    fn clock_parse() {
        assert_eq!(ClockTime::parse("08:30"), ClockTime::new(8, 30));
        assert_eq!(ClockTime::parse("24:00"), Some(ClockTime::END_OF_DAY));
        for bad in ["8:30", "24:01", "12:60", "ab:cd", "12-00", "123:00", ""] {
            assert_eq!(ClockTime::parse(bad), None, "{bad}");
        }
        assert_eq!(ClockTime::new(7, 5).unwrap().to_string(), "07:05");
    }

    #[test]
    fn from_unix() {
        // 1970-01-01 00:00 UTC: Thursday.
        assert_eq!(TimeOfWeek::from_unix(0, 0), t(Weekday::Thu, 0, 0));
        // One minute before the epoch: Wednesday 23:59.
        assert_eq!(TimeOfWeek::from_unix(-60, 0), t(Weekday::Wed, 23, 59));
        // 2024-01-01 12:34:56 UTC was a Monday; at UTC+2 it is 14:34.
        assert_eq!(
            TimeOfWeek::from_unix(1_704_112_496, 7200),
            t(Weekday::Mon, 14, 34)
        );
        // Extreme inputs do not panic.
        let _ = TimeOfWeek::from_unix(i64::MAX, i32::MAX);
        let _ = TimeOfWeek::from_unix(i64::MIN, i32::MIN);
    }

    #[test]
    fn windows() {
        let office = TimeWindow {
            days: Some(vec![Weekday::Mon, Weekday::Fri]),
            start: ClockTime::new(8, 0),
            end: ClockTime::new(18, 0),
        };
        assert_eq!(window_problem(&office), None);
        let w = CompiledWindow::new(&office);
        assert!(w.contains(t(Weekday::Mon, 8, 0)));
        assert!(w.contains(t(Weekday::Fri, 17, 59)));
        assert!(!w.contains(t(Weekday::Fri, 18, 0)));
        assert!(!w.contains(t(Weekday::Tue, 12, 0)));

        let night = TimeWindow {
            days: Some(vec![Weekday::Sun]),
            start: ClockTime::new(22, 0),
            end: ClockTime::new(6, 0),
        };
        let w = CompiledWindow::new(&night);
        assert!(w.contains(t(Weekday::Sun, 23, 0)));
        assert!(w.contains(t(Weekday::Mon, 5, 59)));
        assert!(!w.contains(t(Weekday::Mon, 6, 0)));
        assert!(!w.contains(t(Weekday::Sun, 5, 0)));

        let weekend = TimeWindow {
            days: Some(vec![Weekday::Sat, Weekday::Sun]),
            ..TimeWindow::default()
        };
        let w = CompiledWindow::new(&weekend);
        assert!(w.contains(t(Weekday::Sat, 0, 0)));
        assert!(w.contains(t(Weekday::Sun, 23, 59)));
        assert!(!w.contains(t(Weekday::Mon, 0, 0)));
    }

    #[test]
    fn window_problems() {
        let none = TimeWindow::default();
        assert!(window_problem(&none).is_some());
        let empty_days = TimeWindow {
            days: Some(vec![]),
            ..TimeWindow::default()
        };
        assert!(window_problem(&empty_days).is_some());
        let half = TimeWindow {
            start: ClockTime::new(1, 0),
            ..TimeWindow::default()
        };
        assert!(window_problem(&half).is_some());
        let same = TimeWindow {
            start: ClockTime::new(1, 0),
            end: ClockTime::new(1, 0),
            ..TimeWindow::default()
        };
        assert!(window_problem(&same).is_some());
    }
}
