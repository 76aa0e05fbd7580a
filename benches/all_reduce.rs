//! The peers' host all-reduce alone ([`barlow::peers::Peer::all_reduce`]):
//! W peer threads of one process sum buffers of N f64 values, as the
//! trainer's peers sum their BatchNorm statistics, cross-correlation and
//! gradients (`docs/training.md`, "Several devices"). With `--tensor` it
//! also times the whole trip a training step pays per sum on the CPU
//! backend: an f32 tensor read back, converted, summed and uploaded
//! ([`barlow::peers::Reducer::sum`]).
//!
//!     cargo bench --bench all_reduce -- --peers 1,2,4,8 \
//!         --values 1000,100000,1000000,10000000,44000000,175000000
//!
//! Prints a table and one JSON line per cell: seconds per all-reduce and
//! GB/s, the bytes each peer sends (N x 8) over that time. Cells that would
//! need more host memory than `--max-gib` (about 2 x 8 bytes x N per peer:
//! the peer's buffer and its slot in the group) are skipped and say so.

use std::sync::Barrier;
use std::time::{Duration, Instant};

use barlow::peers::{Peer, Reducer, group};
use burn::backend::{Autodiff, Flex};
use burn::tensor::Tensor;

type AB = Autodiff<Flex>;

struct Args {
    peers: Vec<usize>,
    values: Vec<usize>,
    tensor: bool,
    max_gib: f64,
    /// Values summed per cell, over every repetition and peer: sets the
    /// repetitions.
    budget: f64,
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        peers: vec![1, 2, 4, 8],
        values: vec![
            1_000,
            100_000,
            1_000_000,
            10_000_000,
            44_000_000,
            175_000_000,
        ],
        tensor: false,
        max_gib: 16.0,
        budget: 2e9,
    };
    let list = |flag: &str, v: &str| -> Result<Vec<usize>, String> {
        v.split(',')
            .map(|x| {
                x.trim()
                    .parse::<usize>()
                    .map_err(|e| format!("{flag} {x}: {e}"))
            })
            .collect()
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--bench" => continue,
            "--tensor" => {
                a.tensor = true;
                continue;
            }
            _ => {}
        }
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        let num = || {
            value
                .parse::<f64>()
                .map_err(|e| format!("{flag} {value}: {e}"))
        };
        match flag.as_str() {
            "--peers" => a.peers = list(&flag, &value)?,
            "--values" => a.values = list(&flag, &value)?,
            "--max-gib" => a.max_gib = num()?,
            "--budget" => a.budget = num()?,
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    Ok(a)
}

/// Seconds per call of a sum over `peers` threads of one group, timed by
/// peer 0 over `reps` calls after one warm-up. `prepare` makes each peer's
/// call (its buffers made before the timing).
fn time_peers<F, S>(peers: usize, reps: usize, prepare: F) -> Duration
where
    F: Fn(Peer) -> S + Sync,
    S: FnMut(),
{
    let group = group(peers, Duration::from_secs(600));
    let start = Barrier::new(peers);
    std::thread::scope(|s| {
        let handles: Vec<_> = group
            .into_iter()
            .map(|peer| {
                let (start, prepare) = (&start, &prepare);
                s.spawn(move || {
                    let mut call = prepare(peer);
                    call();
                    start.wait();
                    let t = Instant::now();
                    for _ in 0..reps {
                        call();
                    }
                    t.elapsed()
                })
            })
            .collect();
        let times: Vec<Duration> = handles
            .into_iter()
            .map(|h| h.join().expect("peer thread"))
            .collect();
        times[0] / reps as u32
    })
}

/// [`Peer::all_reduce`] of `values` f64 values.
fn host(peers: usize, values: usize, reps: usize) -> Duration {
    time_peers(peers, reps, |peer| {
        let mut buf = vec![peer.rank() as f64; values];
        move || peer.all_reduce(&mut buf).expect("all-reduce")
    })
}

/// [`Reducer::sum`] of an f32 tensor of `values` on the CPU backend: read
/// back, converted, summed, uploaded.
fn tensor(peers: usize, values: usize, reps: usize) -> Duration {
    time_peers(peers, reps, |peer| {
        let x = Tensor::<AB, 1>::ones([values], &Default::default());
        move || drop(Reducer::<AB>::sum(&peer, x.clone()))
    })
}

fn main() {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("all_reduce: {e}");
            std::process::exit(2);
        }
    };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("host all-reduce of f64 values; {cores} cores");
    println!(
        "{:>5} {:>11} {:>10} {:>12} {:>8}  path",
        "peers", "values", "MB/peer", "ms/call", "GB/s"
    );
    let paths: &[&str] = if args.tensor {
        &["host", "tensor"]
    } else {
        &["host"]
    };
    for &values in &args.values {
        for &peers in &args.peers {
            for &path in paths {
                // The peer's buffer and its slot, plus the sum; the tensor
                // path adds the f32 tensor, its copy back and the upload.
                let per_value = if path == "tensor" {
                    8.0 * 2.0 + 12.0
                } else {
                    8.0 * 2.0
                };
                let gib = (per_value * peers as f64 + 8.0) * values as f64 / (1u64 << 30) as f64;
                if gib > args.max_gib {
                    println!(
                        "{peers:>5} {values:>11} {:>10.1} {:>12} {:>8}  {path} (skipped: needs about {gib:.1} GiB)",
                        values as f64 * 8.0 / 1e6,
                        "-",
                        "-"
                    );
                    continue;
                }
                let reps = ((args.budget / (values * peers) as f64) as usize).clamp(2, 2000);
                let per_call = match path {
                    "tensor" => tensor(peers, values, reps),
                    _ => host(peers, values, reps),
                };
                let secs = per_call.as_secs_f64();
                let bytes = values as f64 * 8.0;
                let gbps = bytes / secs / 1e9;
                println!(
                    "{peers:>5} {values:>11} {:>10.1} {:>12.3} {gbps:>8.2}  {path}",
                    bytes / 1e6,
                    secs * 1e3
                );
                println!(
                    "{{\"bench\":\"all_reduce\",\"path\":\"{path}\",\"peers\":{peers},\"values\":{values},\
                     \"bytes_per_peer\":{},\"reps\":{reps},\"seconds_per_call\":{secs:.6e},\
                     \"gb_per_s\":{gbps:.4},\"cores\":{cores}}}",
                    values * 8
                );
            }
        }
    }
}
