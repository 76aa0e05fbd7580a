//! The loader on a dataset larger than the memory it may use: `barlow
//! bench-loader` (its default read path, which must choose `pread` there,
//! and the bare map) inside a memory cgroup (v1: `memory.limit_in_bytes`; v2:
//! `memory.max`) under a third of the dataset's size, the dataset's pages
//! dropped from the page cache first. Making a cgroup needs root: without
//! one the test says so loudly and passes, except where it must run (as
//! root, or with `CI` set), where it fails.

mod common;

use std::path::{Path, PathBuf};

use barlow::data::decode::RgbImage;
use barlow::prep::transcode::encode_jpeg;
use common::*;

/// The cgroup's limit, and the dataset's size against it. The test's
/// `barlow` (a debug build) holds 20-26 MB of anonymous memory of its own
/// in this run; the limit leaves the page cache about as much again.
const LIMIT: u64 = 48 << 20;
const RECORDS: u32 = 1200;

/// A 256 x 256 JPEG of noise at quality 100 (about 137 KB: noise does not
/// compress).
fn noise_jpeg(seed: u32) -> Vec<u8> {
    use rand_core::{Rng, SeedableRng};
    let mut pixels = vec![0u8; 256 * 256 * 3];
    rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(seed.into()).fill_bytes(&mut pixels);
    let img = RgbImage {
        width: 256,
        height: 256,
        pixels,
    };
    encode_jpeg(&img, 100).unwrap()
}

/// This process's memory cgroup folder: v1's `memory` hierarchy or v2's.
fn own_memory_cgroup() -> Option<(PathBuf, bool)> {
    let text = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let path = path.trim_start_matches('/');
        if controllers.split(',').any(|c| c == "memory") {
            return Some((Path::new("/sys/fs/cgroup/memory").join(path), false));
        }
    }
    let v2 = text.lines().find_map(|l| l.strip_prefix("0::"))?;
    Some((
        Path::new("/sys/fs/cgroup").join(v2.trim_start_matches('/')),
        true,
    ))
}

/// A child memory cgroup limited to `limit` bytes, or why none could be made.
struct Cgroup {
    dir: PathBuf,
    v2: bool,
}

impl Cgroup {
    fn new(name: &str, limit: u64) -> Result<Cgroup, String> {
        let (parent, v2) = own_memory_cgroup().ok_or("no memory cgroup in /proc/self/cgroup")?;
        if v2 {
            // The memory controller for the children (refused where this
            // cgroup holds processes itself: then no limit can be set below).
            let _ = std::fs::write(parent.join("cgroup.subtree_control"), "+memory");
        }
        let dir = parent.join(name);
        std::fs::create_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let cg = Cgroup { dir, v2 };
        let files: &[&str] = if v2 {
            &["memory.max", "memory.swap.max"]
        } else {
            &["memory.limit_in_bytes", "memory.memsw.limit_in_bytes"]
        };
        for (i, f) in files.iter().enumerate() {
            let path = cg.dir.join(f);
            match std::fs::write(&path, limit.to_string()) {
                Ok(()) => {}
                // Without swap accounting there is no swap limit to set.
                Err(_) if i == 1 && !path.exists() => {}
                Err(e) => return Err(format!("{}: {e}", path.display())),
            }
        }
        Ok(cg)
    }

    /// The most memory the cgroup has held, where the kernel says
    /// (`memory.peak` needs Linux 5.19 on cgroup v2).
    fn peak(&self) -> Option<u64> {
        let f = if self.v2 {
            "memory.peak"
        } else {
            "memory.max_usage_in_bytes"
        };
        let text = std::fs::read_to_string(self.dir.join(f)).ok()?;
        text.trim().parse().ok()
    }

    /// OOM kills in the cgroup, where the kernel counts them.
    fn oom_kills(&self) -> Option<u64> {
        let f = if self.v2 {
            "memory.events"
        } else {
            "memory.oom_control"
        };
        let text = std::fs::read_to_string(self.dir.join(f)).ok()?;
        let line = text.lines().find(|l| l.starts_with("oom_kill "))?;
        line.split_whitespace().nth(1)?.parse().ok()
    }

    /// `command` run inside the cgroup: its shell joins it, then execs.
    fn run(&self, command: &[String]) -> std::process::Output {
        let procs = self.dir.join("cgroup.procs");
        let script = format!("echo $$ > '{}' && exec \"$@\"", procs.display());
        std::process::Command::new("sh")
            .arg("-c")
            .arg(script)
            .arg("sh")
            .args(command)
            .output()
            .unwrap()
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        // Its processes have exited: the folder can go.
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// `bench-loader`'s JSON line.
fn report(stdout: &str) -> serde_json::Value {
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

#[test]
fn the_loader_runs_in_a_memory_cgroup_a_third_of_its_dataset_with_the_same_batches() {
    // One cgroup for each run, so that each peak is its own.
    let cgroup =
        |read: &str| Cgroup::new(&format!("barlow-test-{}-{read}", std::process::id()), LIMIT);
    if let Err(why) = cgroup("probe") {
        let must = std::env::var_os("CI").is_some() || is_root();
        assert!(
            !must,
            "cannot make a memory cgroup, and this run must: {why}"
        );
        eprintln!(
            "\n*** NOT RUN: the out-of-memory loader test needs a memory cgroup \
             (root): {why} ***\n"
        );
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let records: Vec<Vec<u8>> = (0..RECORDS).map(noise_jpeg).collect();
    let ds = dataset_of(tmp.path(), &records);
    let bytes: u64 = ds.shards().iter().map(|s| s.file_len()).sum();
    assert!(
        bytes > 3 * LIMIT,
        "the dataset ({bytes} bytes) must outsize the limit 3x"
    );
    drop(ds);
    let bench = |read: &str, evict: bool| -> Vec<String> {
        let mut c: Vec<String> = [
            env!("CARGO_BIN_EXE_barlow"),
            "bench-loader",
            "--data",
            &tmp.path().display().to_string(),
            "--threads",
            "2",
            "--batch-size",
            "16",
            "--warmup",
            "0",
            // A whole epoch: every record read once.
            "--batches",
            &(RECORDS / 16).to_string(),
            "--image-size",
            "32",
            "--read",
            read,
            "--checksum",
            "--json",
        ]
        .map(String::from)
        .to_vec();
        if evict {
            c.push("--evict".into());
        }
        c
    };
    // Unconstrained, the data in memory.
    let unconstrained = bench("map", false);
    let free = report(&ok(std::process::Command::new(&unconstrained[0])
        .args(&unconstrained[1..])
        .output()
        .unwrap()));
    // The default (auto: pread, for a dataset larger than the memory), and
    // the bare map (the paths' batches agree in memory: `tests/loader.rs`).
    for read in ["auto", "map"] {
        let cgroup = cgroup(read).unwrap();
        let out = cgroup.run(&bench(read, true));
        let stdout = ok(out);
        let limited = report(&stdout);
        let want = if read == "auto" { "pread" } else { read };
        assert_eq!(
            limited["read"], want,
            "{read}: read with {}",
            limited["read"]
        );
        assert_eq!(
            limited["batches_crc32"], free["batches_crc32"],
            "{read}: other batches under the limit"
        );
        // The data came from the disk: most of the dataset was read (and by
        // the default, not much more).
        let read_bytes = limited["read_bytes"].as_u64().unwrap();
        assert!(
            read_bytes > bytes / 2,
            "{read}: only {read_bytes} bytes read from storage"
        );
        if read == "auto" {
            assert!(
                read_bytes < bytes * 3 / 2,
                "{read}: {read_bytes} bytes read"
            );
        }
        assert_eq!(cgroup.oom_kills().unwrap_or(0), 0, "{read}: OOM kills");
        eprintln!(
            "{read}: cgroup peak {:?} of {LIMIT} bytes; {read_bytes} of the dataset's {bytes} bytes read from storage",
            cgroup.peak()
        );
    }
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("Uid:"))?.to_owned();
            line.split_whitespace().nth(2).map(|uid| uid == "0")
        })
        .unwrap_or(false)
}
