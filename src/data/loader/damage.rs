//! Damaged records: a record whose bytes fail their checksum. Under
//! [`OnDamaged::Skip`] it is replaced as an undecodable record is, counted
//! and reported ([`DamagedRecord`]); past [`MaxDamaged`] distinct damaged
//! records the loader stops with [`super::LoaderError::TooManyDamaged`].
//! Damage to a shard's header or index is never skipped: every record of
//! that shard is then doubtful.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Mutex;

/// What the loader does with a record whose checksum fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnDamaged {
    /// Stop with an error naming the shard, record and offset.
    Stop,
    /// Replace it deterministically, count it and report it; stop only
    /// past [`MaxDamaged`].
    #[default]
    Skip,
}

impl crate::Choice for OnDamaged {
    const NAMES: &'static [(Self, &'static str)] =
        &[(OnDamaged::Stop, "stop"), (OnDamaged::Skip, "skip")];
}

/// How many distinct damaged records [`OnDamaged::Skip`] tolerates.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MaxDamaged {
    /// At most this many.
    Count(u64),
    /// At most this fraction of the dataset's records, rounded up: any
    /// fraction above 0 tolerates one damaged record, however small the
    /// dataset.
    Fraction(f64),
}

impl Default for MaxDamaged {
    /// One record in a thousand: a flipped bit here and there is skipped; a
    /// failing disk or a bad copy, which damages many, stops the run.
    fn default() -> Self {
        MaxDamaged::Fraction(0.001)
    }
}

impl MaxDamaged {
    /// Parses `10` (a count) or `0.001` / `0.1%` (a fraction).
    pub fn parse(s: &str) -> Result<MaxDamaged, String> {
        let bad = || format!("{s:?} is neither a count (10) nor a fraction (0.001 or 0.1%)");
        if let Some(pct) = s.strip_suffix('%') {
            let p: f64 = pct.trim().parse().map_err(|_| bad())?;
            return Self::fraction(p / 100.0).ok_or_else(bad);
        }
        if let Ok(n) = s.parse::<u64>() {
            return Ok(MaxDamaged::Count(n));
        }
        let f: f64 = s.parse().map_err(|_| bad())?;
        Self::fraction(f).ok_or_else(bad)
    }

    fn fraction(f: f64) -> Option<MaxDamaged> {
        (f.is_finite() && (0.0..=1.0).contains(&f)).then_some(MaxDamaged::Fraction(f))
    }

    /// The largest number of distinct damaged records tolerated in a
    /// dataset of `records`.
    pub fn limit(self, records: u64) -> u64 {
        match self {
            MaxDamaged::Count(n) => n,
            MaxDamaged::Fraction(f) => (f * records as f64).ceil() as u64,
        }
    }
}

/// One damaged record met and replaced.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DamagedRecord {
    /// Its number in the dataset.
    pub record: u64,
    /// Its shard file, its number in it and its offset there.
    pub shard: PathBuf,
    pub shard_record: u64,
    pub offset: u64,
}

/// The distinct damaged records a loader has met, for its ceiling.
#[derive(Default)]
pub(crate) struct Damage {
    distinct: Mutex<BTreeSet<u64>>,
}

impl Damage {
    /// Notes that `met` was met; returns the number of distinct damaged
    /// records met so far.
    pub(crate) fn note(&self, met: &DamagedRecord) -> u64 {
        let mut distinct = match self.distinct.lock() {
            Ok(s) => s,
            Err(p) => p.into_inner(),
        };
        distinct.insert(met.record);
        distinct.len() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceilings_parse_as_counts_or_fractions_and_round_up() {
        assert_eq!(MaxDamaged::parse("10"), Ok(MaxDamaged::Count(10)));
        assert_eq!(MaxDamaged::parse("0.001"), Ok(MaxDamaged::Fraction(0.001)));
        assert_eq!(MaxDamaged::parse("0.5%"), Ok(MaxDamaged::Fraction(0.005)));
        for bad in ["", "-1", "1.5", "x", "200%", "NaN"] {
            assert!(MaxDamaged::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(MaxDamaged::default().limit(1_281_167), 1282);
        assert_eq!(MaxDamaged::Fraction(0.001).limit(999), 1);
        assert_eq!(MaxDamaged::Fraction(0.0).limit(999), 0);
        assert_eq!(MaxDamaged::Count(3).limit(10), 3);
    }
}
