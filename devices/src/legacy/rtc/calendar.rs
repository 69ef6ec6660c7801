//! Conversion between Unix time and the calendar fields the RTC exposes
//! (proleptic Gregorian calendar, UTC).

const SECS_PER_DAY: i64 = 86_400;
// Days from 0000-03-01 to 1970-01-01 in the proleptic Gregorian calendar.
const EPOCH_FROM_MARCH_0000: i64 = 719_468;
const DAYS_PER_400_YEARS: i64 = 146_097;

/// A broken-down UTC time, to the second.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct DateTime {
    pub year: i64,
    /// 1-12.
    pub month: u8,
    /// 1-31.
    pub day: u8,
    /// 0-23.
    pub hour: u8,
    /// 0-59.
    pub minute: u8,
    /// 0-59.
    pub second: u8,
}

impl DateTime {
    /// Breaks down `secs` seconds since 1970-01-01T00:00:00Z.
    pub fn from_unix(secs: i64) -> Self {
        let days = secs.div_euclid(SECS_PER_DAY);
        let in_day = secs.rem_euclid(SECS_PER_DAY);
        let (year, month, day) = civil_from_days(days);
        Self {
            year,
            month,
            day,
            // All three are bounded by the day length, so they fit a u8.
            hour: (in_day / 3600) as u8,
            minute: (in_day / 60 % 60) as u8,
            second: (in_day % 60) as u8,
        }
    }

    /// Seconds since the Unix epoch. A day past the end of its month rolls
    /// over into the next one, as `mktime` does.
    pub fn to_unix(self) -> i64 {
        days_from_civil(self.year, self.month, self.day) * SECS_PER_DAY
            + i64::from(self.hour) * 3600
            + i64::from(self.minute) * 60
            + i64::from(self.second)
    }

    /// Day of the week in RTC numbering: 1 = Sunday through 7 = Saturday.
    pub fn weekday(self) -> u8 {
        let days = days_from_civil(self.year, self.month, self.day);
        // 1970-01-01 was a Thursday (day 4 counting from Sunday = 0).
        (days + 4).rem_euclid(7) as u8 + 1
    }
}

// Years are counted from March so that the leap day falls at the end of the
// counted year, which makes the day-of-year formula independent of leap years.
fn days_from_civil(year: i64, month: u8, day: u8) -> i64 {
    let month = i64::from(month);
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year.rem_euclid(400);
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * DAYS_PER_400_YEARS + day_of_era - EPOCH_FROM_MARCH_0000
}

fn civil_from_days(days: i64) -> (i64, u8, u8) {
    let days = days + EPOCH_FROM_MARCH_0000;
    let era = days.div_euclid(DAYS_PER_400_YEARS);
    let day_of_era = days.rem_euclid(DAYS_PER_400_YEARS);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    // Month is 1-12 and day 1-31 by construction.
    (year, month as u8, day as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dt(year: i64, month: u8, day: u8, hour: u8, minute: u8, second: u8) -> DateTime {
        DateTime {
            year,
            month,
            day,
            hour,
            minute,
            second,
        }
    }

    #[test]
    fn known_instants() {
        let cases = [
            (0, dt(1970, 1, 1, 0, 0, 0), 5),
            (-1, dt(1969, 12, 31, 23, 59, 59), 4),
            (951_782_400, dt(2000, 2, 29, 0, 0, 0), 3),
            (1_700_000_000, dt(2023, 11, 14, 22, 13, 20), 3),
            (4_102_444_800, dt(2100, 1, 1, 0, 0, 0), 6),
            (-62_167_219_200, dt(0, 1, 1, 0, 0, 0), 7),
        ];
        for (secs, expected, weekday) in cases {
            assert_eq!(DateTime::from_unix(secs), expected, "{secs}");
            assert_eq!(expected.to_unix(), secs, "{expected:?}");
            assert_eq!(expected.weekday(), weekday, "{expected:?}");
        }
    }

    #[test]
    fn round_trips_across_leap_years() {
        let mut secs = -2_000_000_000i64;
        while secs < 8_000_000_000 {
            assert_eq!(DateTime::from_unix(secs).to_unix(), secs);
            secs += 86_399 * 37;
        }
    }

    #[test]
    fn day_overflow_rolls_into_next_month() {
        assert_eq!(
            DateTime::from_unix(dt(2023, 2, 31, 0, 0, 0).to_unix()),
            dt(2023, 3, 3, 0, 0, 0)
        );
    }
}
