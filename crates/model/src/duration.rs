//! Durations as people write them in playbooks: `500ms`, `30s`, `10m`, `1h30m`.
//!
//! Kept to whole milliseconds so that a duration read from YAML, written to
//! JSON and read back is exactly the same value, and so that `90s` and `1m30s`
//! hash alike in the playbook's canonical form.

use std::fmt;
use std::num::NonZeroU64;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// At most `u64::MAX - 1` milliseconds (584 million years); longer ones are
/// cut to that.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration {
    // One more than the milliseconds, so that zero is free for `None`: an
    // `Option<Duration>` is 8 bytes, not 16, and a system has eight of them
    // (its timeouts, probe settings and backoff).
    plus_one: NonZeroU64,
}

impl Duration {
    pub const ZERO: Duration = Duration::from_millis(0);

    pub const fn from_millis(millis: u64) -> Self {
        Duration {
            plus_one: NonZeroU64::MIN.saturating_add(millis),
        }
    }

    pub const fn from_secs(secs: u64) -> Self {
        Duration::from_millis(secs.saturating_mul(1000))
    }

    pub const fn as_millis(&self) -> u64 {
        self.plus_one.get() - 1
    }

    /// Seconds, the unit of every duration in JSON output.
    pub fn as_secs_f64(&self) -> f64 {
        self.as_millis() as f64 / 1000.0
    }

    pub fn saturating_add(self, other: Duration) -> Duration {
        Duration::from_millis(self.as_millis().saturating_add(other.as_millis()))
    }

    pub fn to_std(self) -> std::time::Duration {
        std::time::Duration::from_millis(self.as_millis())
    }
}

impl Default for Duration {
    fn default() -> Self {
        Duration::ZERO
    }
}

impl fmt::Debug for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Duration")
            .field("millis", &self.as_millis())
            .finish()
    }
}

impl std::ops::Add for Duration {
    type Output = Duration;
    fn add(self, rhs: Duration) -> Duration {
        self.saturating_add(rhs)
    }
}

impl std::ops::Sub for Duration {
    type Output = Duration;
    /// Saturates at zero: a duration is never negative.
    fn sub(self, rhs: Duration) -> Duration {
        Duration::from_millis(self.as_millis().saturating_sub(rhs.as_millis()))
    }
}

impl std::iter::Sum for Duration {
    fn sum<I: Iterator<Item = Duration>>(iter: I) -> Duration {
        iter.fold(Duration::ZERO, Duration::saturating_add)
    }
}

/// Why a duration did not parse; the message says what a good one looks like.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad duration {text:?}: {reason}; write it like 500ms, 30s, 10m or 1h30m")]
pub struct DurationError {
    pub text: String,
    pub reason: &'static str,
}

const UNITS: [(&str, u64); 4] = [("h", 3_600_000), ("ms", 1), ("m", 60_000), ("s", 1000)];

impl FromStr for Duration {
    type Err = DurationError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let fail = |reason| DurationError {
            text: text.to_owned(),
            reason,
        };
        if text.is_empty() {
            return Err(fail("it is empty"));
        }
        let mut rest = text;
        let mut millis: u64 = 0;
        // Units must come largest first and at most once: `1h30m`, not `30m1h`.
        let mut last_rank = usize::MAX;
        while !rest.is_empty() {
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 {
                return Err(fail("expected a number"));
            }
            let number: u64 = rest[..digits]
                .parse()
                .map_err(|_| fail("the number is too large"))?;
            rest = &rest[digits..];
            let Some((rank, unit, scale)) = unit_at(rest) else {
                return Err(fail(if rest.is_empty() {
                    "a unit is missing (ms, s, m or h)"
                } else {
                    "unknown unit (use ms, s, m or h)"
                }));
            };
            if rank >= last_rank {
                return Err(fail("units must go from largest to smallest, once each"));
            }
            last_rank = rank;
            rest = &rest[unit.len()..];
            millis = number
                .checked_mul(scale)
                .and_then(|m| millis.checked_add(m))
                .filter(|&m| m < u64::MAX)
                .ok_or_else(|| fail("it is too long"))?;
        }
        Ok(Duration::from_millis(millis))
    }
}

/// The unit at the start of `s`, with its rank (h=3 … ms=0) for ordering.
fn unit_at(s: &str) -> Option<(usize, &'static str, u64)> {
    // `ms` must be tried before `m`.
    for (unit, scale) in UNITS {
        if s.starts_with(unit) {
            let rank = match unit {
                "h" => 3,
                "m" => 2,
                "s" => 1,
                _ => 0,
            };
            return Some((rank, unit, scale));
        }
    }
    None
}

impl fmt::Display for Duration {
    /// The canonical spelling: largest units first, zero parts left out.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.as_millis() == 0 {
            return f.write_str("0s");
        }
        let mut rest = self.as_millis();
        let hours = rest / 3_600_000;
        rest %= 3_600_000;
        let minutes = rest / 60_000;
        rest %= 60_000;
        let seconds = rest / 1000;
        let millis = rest % 1000;
        if hours > 0 {
            write!(f, "{hours}h")?;
        }
        if minutes > 0 {
            write!(f, "{minutes}m")?;
        }
        if seconds > 0 {
            write!(f, "{seconds}s")?;
        }
        if millis > 0 {
            write!(f, "{millis}ms")?;
        }
        Ok(())
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// In a CRD: text as people write it, checked by the API server with the
/// same grammar as [`Duration::from_str`] (units largest first, once each).
impl schemars::JsonSchema for Duration {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Duration".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": "^([0-9]+h)?([0-9]+m)?([0-9]+s)?([0-9]+ms)?$",
            "minLength": 2,
            "description": "a duration such as 500ms, 30s, 10m or 1h30m",
        })
    }
}

/// Serializes a duration as seconds, the JSON plan's unit.
pub mod as_secs {
    use super::Duration;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let secs = f64::deserialize(d)?;
        if !(0.0..=1e12).contains(&secs) {
            return Err(serde::de::Error::custom("duration out of range"));
        }
        Ok(Duration::from_millis((secs * 1000.0).round() as u64))
    }

    /// The same for an optional duration.
    pub mod option {
        use super::Duration;
        use serde::{Deserialize, Deserializer, Serializer};

        pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
            match d {
                Some(d) => s.serialize_some(&d.as_secs_f64()),
                None => s.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
            let secs = Option::<f64>::deserialize(d)?;
            match secs {
                None => Ok(None),
                Some(secs) if (0.0..=1e12).contains(&secs) => {
                    Ok(Some(Duration::from_millis((secs * 1000.0).round() as u64)))
                }
                Some(_) => Err(serde::de::Error::custom("duration out of range")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_forms_in_the_design() {
        let cases = [
            ("500ms", 500),
            ("30s", 30_000),
            ("10m", 600_000),
            ("1h30m", 5_400_000),
            ("1h30m15s250ms", 5_415_250),
            ("0s", 0),
            ("90s", 90_000),
        ];
        for (text, millis) in cases {
            assert_eq!(
                text.parse::<Duration>().unwrap().as_millis(),
                millis,
                "{text}"
            );
        }
    }

    #[test]
    fn an_optional_duration_takes_no_more_room_and_keeps_its_order() {
        assert_eq!(size_of::<Option<Duration>>(), 8);
        let longest = Duration::from_millis(u64::MAX - 1);
        assert_eq!(Duration::from_millis(u64::MAX), longest);
        assert_eq!(longest + Duration::from_secs(1), longest);
        assert_eq!(longest.as_millis(), u64::MAX - 1);
        assert_eq!(Duration::default(), Duration::ZERO);
        assert_eq!(Duration::ZERO.as_millis(), 0);
        assert!(Duration::ZERO < Duration::from_millis(1));
        assert!(Duration::from_millis(1) < longest);
        assert_eq!(
            Duration::from_secs(3) - Duration::from_secs(5),
            Duration::ZERO
        );
        assert_eq!(
            format!("{:?}", Duration::from_secs(2)),
            "Duration { millis: 2000 }"
        );
        // The longest a playbook may write is one millisecond short of u64.
        assert!("18446744073709551615ms".parse::<Duration>().is_err());
        assert_eq!("18446744073709551614ms".parse::<Duration>(), Ok(longest));
    }

    #[test]
    fn displays_canonically() {
        assert_eq!(Duration::from_millis(90_000).to_string(), "1m30s");
        assert_eq!(Duration::from_millis(5_400_000).to_string(), "1h30m");
        assert_eq!(Duration::from_millis(500).to_string(), "500ms");
        assert_eq!(Duration::ZERO.to_string(), "0s");
    }

    #[test]
    fn refuses_bad_durations_with_a_reason() {
        for bad in [
            "",
            "10",
            "10x",
            "m",
            "1.5s",
            "30m1h",
            "1m1m",
            "-5s",
            " 5s",
            "99999999999999999999h",
        ] {
            let err = bad.parse::<Duration>().unwrap_err();
            assert!(err.to_string().contains("like 500ms"), "{bad}: {err}");
        }
    }
}
