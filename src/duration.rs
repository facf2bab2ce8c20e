//! What `timeout_async!` accepts as a timeout (seconds or a `Duration`) and
//! as a deadline (an `Instant`).

use std::fmt;
use std::time::{Duration, Instant};

/// A value that `timeout_async!` takes as its timeout.
///
/// Implemented for [`Duration`], for every primitive integer (whole seconds)
/// and for `f32`/`f64` (fractional seconds).
///
/// - A negative, NaN or infinite number of seconds is an [`InvalidTimeout`]:
///   the macro's future then yields an error that names the value, and never
///   panics or hangs.
/// - A huge value (`u64::MAX` seconds, `1e300`, `Duration::MAX`) is simply a
///   very long timeout.
/// - Zero times out at once, unless the future is ready at its first poll.
///
/// ```
/// use opguard::IntoTimeout;
/// use std::time::Duration;
///
/// assert_eq!(30.into_timeout(), Ok(Duration::from_secs(30)));
/// assert_eq!(0.25.into_timeout(), Ok(Duration::from_millis(250)));
/// assert!((-1).into_timeout().is_err());
/// assert!(f64::NAN.into_timeout().is_err());
/// assert_eq!(u64::MAX.into_timeout(), Ok(Duration::from_secs(u64::MAX)));
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a timeout",
    label = "expected a number of seconds (integer or float) or a `std::time::Duration`",
    note = "the forms are `timeout_async!(fut)`, `timeout_async!(SECS, fut)` and `timeout_async!(label = \"name\", SECS, fut)`"
)]
pub trait IntoTimeout {
    /// Turns `self` into a timeout, or says why it is not one.
    fn into_timeout(self) -> Result<Duration, InvalidTimeout>;
}

/// A value that `timeout_async!(until = .., ..)` takes as its deadline.
///
/// Implemented for [`std::time::Instant`] (and a reference to one) and, with
/// the `tokio` feature, for `tokio::time::Instant`; without the feature, pass
/// a tokio instant as `deadline.into_std()`.
///
/// ```
/// use opguard::IntoDeadline;
/// use std::time::{Duration, Instant};
///
/// let at = Instant::now() + Duration::from_secs(5);
/// assert_eq!(at.into_deadline(), at);
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a deadline",
    label = "expected a `std::time::Instant` (or, with the `tokio` feature, a `tokio::time::Instant`)",
    note = "`timeout_async!(until = INSTANT, fut)` takes an instant; for a number of seconds or a `Duration`, leave out `until =`: `timeout_async!(SECS, fut)`"
)]
pub trait IntoDeadline {
    /// The deadline as a [`std::time::Instant`].
    fn into_deadline(self) -> Instant;
}

impl IntoDeadline for Instant {
    #[inline]
    fn into_deadline(self) -> Instant {
        self
    }
}

impl IntoDeadline for &Instant {
    #[inline]
    fn into_deadline(self) -> Instant {
        *self
    }
}

#[cfg(feature = "tokio")]
impl IntoDeadline for tokio::time::Instant {
    #[inline]
    fn into_deadline(self) -> Instant {
        self.into_std()
    }
}

/// Why a number of seconds is not a valid timeout.
///
/// Its Display names the value: `-1 seconds is negative; give a number of
/// seconds >= 0 or a Duration`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct InvalidTimeout {
    value: Seconds,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Seconds {
    Int(i64),
    Float(f64),
}

impl InvalidTimeout {
    /// The rejected number of seconds, as a float.
    pub fn seconds(&self) -> f64 {
        match self.value {
            Seconds::Int(v) => v as f64,
            Seconds::Float(v) => v,
        }
    }
}

impl fmt::Display for InvalidTimeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let why = match self.value {
            Seconds::Float(v) if v.is_nan() => "is not a number",
            Seconds::Float(v) if v.is_infinite() => "is infinite",
            _ => "is negative",
        };
        match self.value {
            Seconds::Int(v) => write!(f, "{v} seconds {why}")?,
            Seconds::Float(v) => write!(f, "{v} seconds {why}")?,
        }
        f.write_str("; give a number of seconds >= 0 or a Duration")
    }
}

impl std::error::Error for InvalidTimeout {}

impl IntoTimeout for Duration {
    #[inline]
    fn into_timeout(self) -> Result<Duration, InvalidTimeout> {
        Ok(self)
    }
}

impl IntoTimeout for &Duration {
    #[inline]
    fn into_timeout(self) -> Result<Duration, InvalidTimeout> {
        Ok(*self)
    }
}

macro_rules! unsigned {
    ($($t:ty)*) => {$(
        impl IntoTimeout for $t {
            #[inline]
            fn into_timeout(self) -> Result<Duration, InvalidTimeout> {
                // Lossless: no unsigned primitive here is wider than u64.
                Ok(Duration::from_secs(self as u64))
            }
        }
    )*};
}
unsigned!(u8 u16 u32 u64 usize);

macro_rules! signed {
    ($($t:ty)*) => {$(
        impl IntoTimeout for $t {
            #[inline]
            fn into_timeout(self) -> Result<Duration, InvalidTimeout> {
                match u64::try_from(self) {
                    Ok(secs) => Ok(Duration::from_secs(secs)),
                    // Lossless: no signed primitive here is wider than i64.
                    Err(_) => Err(InvalidTimeout { value: Seconds::Int(self as i64) }),
                }
            }
        }
    )*};
}
signed!(i8 i16 i32 i64 isize);

impl IntoTimeout for f64 {
    #[inline]
    fn into_timeout(self) -> Result<Duration, InvalidTimeout> {
        // `-0.0 >= 0.0` holds, and NaN fails every comparison.
        if self >= 0.0 && self.is_finite() {
            // Finite but past Duration's range: just a very long timeout.
            Ok(Duration::try_from_secs_f64(self).unwrap_or(Duration::MAX))
        } else {
            Err(InvalidTimeout {
                value: Seconds::Float(self),
            })
        }
    }
}

impl IntoTimeout for f32 {
    #[inline]
    fn into_timeout(self) -> Result<Duration, InvalidTimeout> {
        f64::from(self).into_timeout()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_seconds_of_every_integer_type() {
        assert_eq!(7u8.into_timeout(), Ok(Duration::from_secs(7)));
        assert_eq!(7i8.into_timeout(), Ok(Duration::from_secs(7)));
        assert_eq!(7usize.into_timeout(), Ok(Duration::from_secs(7)));
        assert_eq!(7isize.into_timeout(), Ok(Duration::from_secs(7)));
        assert_eq!(0i32.into_timeout(), Ok(Duration::ZERO));
    }

    #[test]
    fn fractional_seconds() {
        assert_eq!(1.5f64.into_timeout(), Ok(Duration::from_millis(1500)));
        assert_eq!(0.25f32.into_timeout(), Ok(Duration::from_millis(250)));
        assert_eq!((-0.0f64).into_timeout(), Ok(Duration::ZERO));
    }

    #[test]
    fn negative_nan_and_infinite_are_invalid_and_named() {
        let neg = (-3i64).into_timeout().unwrap_err();
        assert_eq!(neg.seconds(), -3.0);
        assert!(neg.to_string().starts_with("-3 seconds is negative"));
        let nan = f64::NAN.into_timeout().unwrap_err();
        assert!(nan.to_string().starts_with("NaN seconds is not a number"));
        let inf = f64::INFINITY.into_timeout().unwrap_err();
        assert!(inf.to_string().starts_with("inf seconds is infinite"));
        let neg_inf = f32::NEG_INFINITY.into_timeout().unwrap_err();
        assert!(neg_inf.to_string().starts_with("-inf seconds is infinite"));
        assert!(i64::MIN.into_timeout().is_err());
    }

    #[test]
    fn huge_values_are_long_timeouts() {
        assert_eq!(u64::MAX.into_timeout(), Ok(Duration::from_secs(u64::MAX)));
        assert_eq!(1e300f64.into_timeout(), Ok(Duration::MAX));
        assert_eq!(f64::MAX.into_timeout(), Ok(Duration::MAX));
        assert_eq!(Duration::MAX.into_timeout(), Ok(Duration::MAX));
    }
}
