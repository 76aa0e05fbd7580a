//! The start-up check of a multi-process run: every process must train the
//! same config on the same data from the same step, or the sums over the
//! processes would mix different runs without a sign.
//!
//! Each process states its facts (the config, the dataset, the step it
//! starts from, ...) as text. A 32-bit checksum of each, cut into 16-bit
//! pieces x, goes through one sum over the processes with x². For P
//! processes holding x_1..x_P, a process holding a sees Σx = P·a and
//! Σx² = P·a² exactly when Σ(x_i − a)² = 0, that is when every process
//! holds a: the pieces and their sums are integers below 2^53, so f64 adds
//! them exactly, whatever the order. Every process therefore reaches the
//! same verdict, and one that differs names its own differing facts.

use super::{PeerError, Processes};

/// One thing every process of a run must state alike.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fact {
    /// What it is, e.g. "dataset".
    pub name: String,
    /// This process's value, as it would print it.
    pub value: String,
}

impl Fact {
    pub fn new(name: impl Into<String>, value: impl Into<String>) -> Fact {
        Fact {
            name: name.into(),
            value: value.into(),
        }
    }

    /// The value for a message: itself, or its checksum when long.
    fn shown(&self) -> String {
        if self.value.chars().count() <= 80 {
            self.value.clone()
        } else {
            format!("checksum {:08x}", crc32fast::hash(self.value.as_bytes()))
        }
    }
}

/// Compares `facts` over the processes: `Ok` when every process stated the
/// same values, else [`PeerError::Disagree`] with this process's differing
/// facts. Every process must call it at the same point (before any other
/// sum over the processes). Two sums: the first compares barlow's version
/// and the number of facts, so that the second has the same length on
/// every process.
pub fn agree(processes: &dyn Processes, facts: &[Fact]) -> Result<(), PeerError> {
    let size = processes.size();
    if size <= 1 {
        return Ok(());
    }
    let header = [
        Fact::new("barlow version", env!("CARGO_PKG_VERSION")),
        Fact::new("number of facts", facts.len().to_string()),
    ];
    for round in [&header[..], facts] {
        let mut values: Vec<f64> = round.iter().flat_map(|f| pieces(&f.value)).collect();
        let mine = values.clone();
        processes
            .sum(&mut values)
            .map_err(|message| PeerError::Processes {
                round: 0,
                message: format!("the start-up check: {message}"),
            })?;
        let differ: Vec<String> = round
            .iter()
            .zip(mine.chunks(4).zip(values.chunks(4)))
            .filter(|(_, (m, s))| differs(m, s, size))
            .map(|(f, _)| format!("{} (here: {})", f.name, f.shown()))
            .collect();
        if !differ.is_empty() {
            return Err(PeerError::Disagree {
                process: processes.rank(),
                processes: size,
                facts: differ.join("; "),
            });
        }
    }
    Ok(())
}

/// Whether some process's pieces differ from `mine`, given their `sum`
/// over `size` processes: each of x and x² summed must be `size` times
/// this process's.
fn differs(mine: &[f64], sum: &[f64], size: usize) -> bool {
    mine.iter().zip(sum).any(|(m, s)| *s != m * size as f64)
}

/// `[lo, lo², hi, hi²]` of the CRC-32 of `value`, lo and hi its 16-bit
/// halves: integers whose sums over up to 2^21 processes f64 holds exactly.
fn pieces(value: &str) -> [f64; 4] {
    let crc = crc32fast::hash(value.as_bytes());
    let lo = f64::from(crc & 0xffff);
    let hi = f64::from(crc >> 16);
    [lo, lo * lo, hi, hi * hi]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pieces a - d, a, a + d: the middle process's plain sum matches
    /// (3a), only the squares' (3a² + 2d²) tells it the others differ.
    #[test]
    fn the_squares_catch_what_the_sum_alone_misses() {
        let (a, d) = (1000.0f64, 7.0);
        let held = [a - d, a, a + d];
        let sum: Vec<f64> = vec![held.iter().sum(), held.iter().map(|x| x * x).sum()];
        for x in held {
            let mine = [x, x * x];
            assert!(differs(&mine, &sum, 3), "the process holding {x}");
        }
        assert_eq!(sum[0], 3.0 * a, "the plain sum alone would pass");
        let same = [a * 3.0, a * a * 3.0];
        assert!(!differs(&[a, a * a], &same, 3));
    }
}
