//! Go durations (`spec.interval`, `limits.minInterval`, ...): parsed into
//! [`std::time::Duration`] and written back in Go's own format.
//!
//! The reconciler and Flux read these strings with Go's `time.ParseDuration`,
//! so the accepted syntax is Go's: one or more `<number><unit>` pairs, the
//! number an integer or a decimal fraction (`1.5h`, `.5s`), the unit one of
//! `ns`, `us`, `µs` (or Greek `μs`), `ms`, `s`, `m`, `h`. Three things Go
//! accepts are refused because an interval can never use them: a sign
//! (`-5m`, `+5m`), the unitless `0`, and anything beyond Go's largest
//! duration (`i64::MAX` nanoseconds, about 292 years). Fractions are
//! computed exactly and truncated to the nanosecond, where Go uses floating
//! point; the two can differ by a nanosecond on long fractions.

use std::time::Duration;

/// Go's largest duration, `i64::MAX` nanoseconds (`2562047h47m16.854775807s`).
pub const MAX_GO_DURATION: Duration = Duration::from_nanos(9_223_372_036_854_775_807);

/// The units accepted, for messages.
const UNITS: &str = "ns, us, µs, ms, s, m, h";

/// Longest part of the input repeated in an error message.
const ECHO_LEN: usize = 64;

/// Why a duration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// The text is empty.
    #[error("duration is empty; write a Go duration such as 30s, 5m or 1h30m")]
    Empty,
    /// The text starts with `-`.
    #[error("duration {text:?} is negative; durations must be positive, such as 5m")]
    Negative {
        /// The text (at most 64 characters of it).
        text: String,
    },
    /// The text starts with `+`.
    #[error("duration {text:?} has a '+' sign; write it without a sign, such as 5m")]
    Sign {
        /// The text (at most 64 characters of it).
        text: String,
    },
    /// A number without a unit (`5`, `0`, `1h30`).
    #[error("duration {text:?} has a number without a unit; add one of {UNITS}, such as 90s")]
    MissingUnit {
        /// The text (at most 64 characters of it).
        text: String,
    },
    /// A unit that is not one of Go's.
    #[error(
        "duration {text:?} uses the unknown unit {unit:?}; allowed units are {UNITS} (there is no unit for days)"
    )]
    UnknownUnit {
        /// The text (at most 64 characters of it).
        text: String,
        /// The unit (at most 64 characters of it).
        unit: String,
    },
    /// Not of the form `<number><unit>...`.
    #[error(
        "duration {text:?} is not a Go duration; write numbers with units, such as 1h30m, 90s or 1.5h"
    )]
    Invalid {
        /// The text (at most 64 characters of it).
        text: String,
    },
    /// Longer than [`MAX_GO_DURATION`].
    #[error(
        "duration {text:?} is too long; the longest Go duration is 2562047h47m16.854775807s (about 292 years)"
    )]
    Overflow {
        /// The text (at most 64 characters of it).
        text: String,
    },
}

fn echo(text: &str) -> String {
    text.chars().take(ECHO_LEN).collect()
}

fn unit_nanos(unit: &str) -> Option<u128> {
    Some(match unit {
        "ns" => 1,
        "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" => 60_000_000_000,
        "h" => 3_600_000_000_000,
        _ => return None,
    })
}

/// Parses a Go duration such as `1h30m`, `90s`, `1.5h` or `500ms` (see the
/// module documentation for what is refused).
pub fn parse_go_duration(text: &str) -> Result<Duration, DurationError> {
    let max = MAX_GO_DURATION.as_nanos();
    let overflow = || DurationError::Overflow { text: echo(text) };
    if text.is_empty() {
        return Err(DurationError::Empty);
    }
    if text.starts_with('-') {
        return Err(DurationError::Negative { text: echo(text) });
    }
    if text.starts_with('+') {
        return Err(DurationError::Sign { text: echo(text) });
    }
    let not_digit = |c: char| !c.is_ascii_digit();
    let mut total: u128 = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let (int_digits, after) = rest.split_at(rest.find(not_digit).unwrap_or(rest.len()));
        let (frac_digits, after) = match after.strip_prefix('.') {
            Some(after) => after.split_at(after.find(not_digit).unwrap_or(after.len())),
            None => ("", after),
        };
        if int_digits.is_empty() && frac_digits.is_empty() {
            return Err(DurationError::Invalid { text: echo(text) });
        }
        let unit_end = after
            .find(|c: char| c == '.' || c.is_ascii_digit())
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_end);
        if unit.is_empty() {
            return Err(DurationError::MissingUnit { text: echo(text) });
        }
        let Some(unit) = unit_nanos(unit) else {
            return Err(DurationError::UnknownUnit {
                text: echo(text),
                unit: echo(unit),
            });
        };
        let mut integer: u128 = 0;
        for digit in int_digits.bytes() {
            // Bounded by `max` before each step, so this never overflows.
            integer = integer * 10 + u128::from(digit - b'0');
            if integer > max {
                return Err(overflow());
            }
        }
        // Digits past the 19th change the result by less than a
        // nanosecond (the largest unit is 3.6e12 ns).
        let (mut fraction, mut scale) = (0u128, 1u128);
        for digit in frac_digits.bytes().take(19) {
            fraction = fraction * 10 + u128::from(digit - b'0');
            scale *= 10;
        }
        total += integer * unit + fraction * unit / scale;
        if total > max {
            return Err(overflow());
        }
        rest = next;
    }
    u64::try_from(total)
        .map(Duration::from_nanos)
        .map_err(|_| overflow())
}

/// Formats a duration exactly as Go's `time.Duration.String` does: `0s`,
/// `500ms`, `1.5µs`, `1m30s`, `5m0s`, `1h0m0s`, `1h30m0.5s`. Go's format is
/// used (rather than a shorter `5m`) so the text reads the same in
/// fluxgate's status and in the Go tools' output, and parses back to the
/// same value here and in Go. Durations beyond [`MAX_GO_DURATION`] are
/// formatted the same way, although Go cannot parse them.
pub fn format_go_duration(duration: Duration) -> String {
    let nanos = duration.as_nanos();
    if nanos == 0 {
        return "0s".to_owned();
    }
    if nanos < 1_000_000_000 {
        let (unit, precision) = if nanos < 1_000 {
            ("ns", 0)
        } else if nanos < 1_000_000 {
            ("µs", 3)
        } else {
            ("ms", 6)
        };
        let (whole, fraction) = split_fraction(nanos, precision);
        return format!("{whole}{fraction}{unit}");
    }
    let (seconds, fraction) = split_fraction(nanos, 9);
    let minutes = seconds / 60;
    let seconds = seconds % 60;
    if minutes == 0 {
        return format!("{seconds}{fraction}s");
    }
    let hours = minutes / 60;
    let minutes = minutes % 60;
    if hours == 0 {
        format!("{minutes}m{seconds}{fraction}s")
    } else {
        format!("{hours}h{minutes}m{seconds}{fraction}s")
    }
}

/// Splits `value / 10^precision` into its whole part and `.digits` without
/// trailing zeros (empty when the fraction is zero).
fn split_fraction(value: u128, precision: usize) -> (u128, String) {
    let scale = (0..precision).fold(1u128, |scale, _| scale * 10);
    let (whole, fraction) = (value / scale, value % scale);
    if fraction == 0 {
        return (whole, String::new());
    }
    let digits = format!("{fraction:0precision$}");
    (whole, format!(".{}", digits.trim_end_matches('0')))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Recognises the expected error in table tests.
    type Check = fn(&DurationError) -> bool;

    const SECOND: u64 = 1_000_000_000;

    #[test]
    fn parses_go_durations() {
        let cases: &[(&str, Duration)] = &[
            ("90s", Duration::from_secs(90)),
            ("5m", Duration::from_secs(300)),
            ("1h30m", Duration::from_secs(5400)),
            ("1.5h", Duration::from_secs(5400)),
            ("500ms", Duration::from_millis(500)),
            ("1h0m0s", Duration::from_secs(3600)),
            ("2h45m30.5s", Duration::from_millis(9_930_500)),
            ("10us", Duration::from_micros(10)),
            ("10µs", Duration::from_micros(10)),
            ("10\u{3bc}s", Duration::from_micros(10)),
            ("7ns", Duration::from_nanos(7)),
            ("0s", Duration::ZERO),
            ("0.5s", Duration::from_millis(500)),
            (".5s", Duration::from_millis(500)),
            ("1.s", Duration::from_secs(1)),
            ("1m1m", Duration::from_secs(120)),
            ("0000000000000000000000000001s", Duration::from_secs(1)),
            ("1.0000000000000000000000001s", Duration::from_secs(1)),
            ("0.3333333333h", Duration::from_nanos(1_199_999_999_880)),
            ("9223372036854775807ns", MAX_GO_DURATION),
            ("2562047h47m16.854775807s", MAX_GO_DURATION),
        ];
        for (text, want) in cases {
            assert_eq!(parse_go_duration(text), Ok(*want), "{text}");
        }
    }

    #[test]
    fn refuses_what_an_interval_cannot_be() {
        let cases: &[(&str, Check)] = &[
            ("", |e| matches!(e, DurationError::Empty)),
            ("-5m", |e| matches!(e, DurationError::Negative { .. })),
            ("+5m", |e| matches!(e, DurationError::Sign { .. })),
            ("5", |e| matches!(e, DurationError::MissingUnit { .. })),
            ("0", |e| matches!(e, DurationError::MissingUnit { .. })),
            ("1h30", |e| matches!(e, DurationError::MissingUnit { .. })),
            ("1.5.5h", |e| matches!(e, DurationError::MissingUnit { .. })),
            (
                "5d",
                |e| matches!(e, DurationError::UnknownUnit { unit, .. } if unit == "d"),
            ),
            ("5M", |e| matches!(e, DurationError::UnknownUnit { .. })),
            ("5 m", |e| matches!(e, DurationError::UnknownUnit { .. })),
            ("5m ", |e| matches!(e, DurationError::UnknownUnit { .. })),
            ("1h 30m", |e| matches!(e, DurationError::UnknownUnit { .. })),
            (" 5m", |e| matches!(e, DurationError::Invalid { .. })),
            ("m", |e| matches!(e, DurationError::Invalid { .. })),
            (".s", |e| matches!(e, DurationError::Invalid { .. })),
            (".", |e| matches!(e, DurationError::Invalid { .. })),
            ("99999999999999999999h", |e| {
                matches!(e, DurationError::Overflow { .. })
            }),
            ("9223372036854775808ns", |e| {
                matches!(e, DurationError::Overflow { .. })
            }),
            ("2562048h", |e| matches!(e, DurationError::Overflow { .. })),
            ("2562047h47m16.854775808s", |e| {
                matches!(e, DurationError::Overflow { .. })
            }),
            ("2562047h2562047h", |e| {
                matches!(e, DurationError::Overflow { .. })
            }),
        ];
        for (text, check) in cases {
            match parse_go_duration(text) {
                Ok(d) => panic!("{text:?} should be refused, got {d:?}"),
                Err(e) => {
                    assert!(check(&e), "{text:?} gave {e:?}");
                    assert!(e.to_string().starts_with("duration"), "{e}");
                }
            }
        }
        let huge = "9".repeat(10_000) + "h";
        let message = parse_go_duration(&huge).map_err(|e| e.to_string());
        assert!(message.is_err_and(|m| m.len() < 300));
    }

    #[test]
    fn formats_like_go() {
        // Expected strings are Go's `time.Duration.String()` output.
        let cases: &[(u64, &str)] = &[
            (0, "0s"),
            (1, "1ns"),
            (999, "999ns"),
            (1_000, "1µs"),
            (1_500, "1.5µs"),
            (1_000_000, "1ms"),
            (1_500_000, "1.5ms"),
            (500_000_000, "500ms"),
            (SECOND, "1s"),
            (SECOND + 500_000_000, "1.5s"),
            (90 * SECOND, "1m30s"),
            (300 * SECOND, "5m0s"),
            (3600 * SECOND, "1h0m0s"),
            (5400 * SECOND, "1h30m0s"),
            (5400 * SECOND + 1, "1h30m0.000000001s"),
            (100 * 3600 * SECOND, "100h0m0s"),
            (9_223_372_036_854_775_807, "2562047h47m16.854775807s"),
        ];
        for (nanos, want) in cases {
            assert_eq!(
                format_go_duration(Duration::from_nanos(*nanos)),
                *want,
                "{nanos}"
            );
        }
    }

    proptest! {
        #[test]
        fn format_then_parse_round_trips(nanos in 0u64..=9_223_372_036_854_775_807) {
            let duration = Duration::from_nanos(nanos);
            let text = format_go_duration(duration);
            prop_assert_eq!(parse_go_duration(&text), Ok(duration), "{}", text);
        }

        #[test]
        fn never_panics(text in ".{0,64}") {
            let _ = parse_go_duration(&text);
        }

        #[test]
        fn never_panics_on_duration_like_text(text in "[-+]?([0-9]{0,25}(\\.[0-9]{0,25})?(ns|us|µs|ms|s|m|h|d|)){1,4}") {
            let _ = parse_go_duration(&text);
        }
    }
}
