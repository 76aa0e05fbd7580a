//! The run report: a run folder's logs drawn as charts with axes, units and
//! labels, in a self-contained HTML page (inline SVG, no network, no
//! script) and as PNGs.
//!
//! What it reads: `log.jsonl` (loss, learning rates, images/s and data wait
//! of every logged step; required), `knn.jsonl` (kNN monitor passes),
//! `linear.jsonl` (written by `barlow eval linear` for the run's
//! checkpoints) and the latest checkpoint's `state.json` (the run's
//! config). What it writes into the output folder: `index.html`,
//! `loss.png`, `lr_weights.png`, `lr_biases.png`, `images_per_sec.png`,
//! `data_wait.png`, `accuracy.png` and, for a run on several peers,
//! `all_reduce.png` (the time their sums took per step).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

use crate::chart::{self, Chart, DARK, GREEN, HEIGHT, LIGHT, ORANGE, Series, WIDTH};
use crate::error::IoError;
use crate::eval::linear::ProbeLog;
use crate::run::{KnnLog, PeerTraffic, StepLog, checkpoint, loss_chart};

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error(transparent)]
    Io(#[from] IoError),
    #[error("{path}: not a run folder (it has no log.jsonl)")]
    NotARun { path: PathBuf },
    #[error("{path}, line {line}: {message}")]
    Parse {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error(transparent)]
    Checkpoint(#[from] checkpoint::CheckpointError),
    #[error("{0}")]
    Draw(String),
}

/// Reads a JSONL file; a missing file is empty.
fn read_jsonl<T: DeserializeOwned>(path: &Path) -> Result<Vec<T>, ReportError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(IoError::at(path)(e).into()),
    };
    let lines: Vec<&str> = text.lines().collect();
    let mut rows = Vec::with_capacity(lines.len());
    for (i, l) in lines.iter().enumerate() {
        if l.trim().is_empty() {
            continue;
        }
        match serde_json::from_str(l) {
            Ok(row) => rows.push(row),
            // A last line without its newline is being written (or was
            // cut by a kill): not part of the log yet.
            Err(_) if i + 1 == lines.len() && !text.ends_with('\n') => {}
            Err(e) => {
                return Err(ReportError::Parse {
                    path: path.to_path_buf(),
                    line: i + 1,
                    message: e.to_string(),
                });
            }
        }
    }
    Ok(rows)
}

fn line(name: &str, points: Vec<(f64, f64)>, color: plotters::style::RGBColor) -> Series {
    Series {
        name: name.into(),
        points,
        color,
        width: 2,
    }
}

/// Writes the report of the run folder `run` into `out`; returns the files.
pub fn write(run: &Path, out: &Path) -> Result<Vec<PathBuf>, ReportError> {
    if !run.join("log.jsonl").is_file() {
        return Err(ReportError::NotARun {
            path: run.to_path_buf(),
        });
    }
    let steps: Vec<StepLog> = read_jsonl(&run.join("log.jsonl"))?;
    let knn: Vec<KnnLog> = read_jsonl(&run.join("knn.jsonl"))?;
    let probes: Vec<ProbeLog> = read_jsonl(&run.join("linear.jsonl"))?;
    // The last line of each checkpoint's probe: its final accuracy.
    let mut linear: Vec<(u64, f64, f64)> = Vec::new();
    for p in probes {
        let Some(step) = p.step else { continue };
        match linear.iter_mut().find(|l| l.0 == step) {
            Some(l) => *l = (step, p.epoch.top1, p.epoch.top5),
            None => linear.push((step, p.epoch.top1, p.epoch.top5)),
        }
    }
    linear.sort_by_key(|l| l.0);
    let config = match checkpoint::resolve(run) {
        Ok(dir) => Some(checkpoint::load_state(&dir)?),
        Err(checkpoint::CheckpointError::NotFound { .. }) => None,
        Err(e) => return Err(e.into()),
    };

    let at = |f: &dyn Fn(&StepLog) -> f64| -> Vec<(f64, f64)> {
        steps.iter().map(|s| (s.step as f64, f(s))).collect()
    };
    // Step 0's throughput covers one step, compile and warm-up included.
    let after_first = |f: &dyn Fn(&StepLog) -> f64| -> Vec<(f64, f64)> {
        steps
            .iter()
            .filter(|s| s.step > 0)
            .map(|s| (s.step as f64, f(s)))
            .collect()
    };
    let losses: Vec<(u64, f32)> = steps.iter().map(|s| (s.step, s.loss)).collect();
    let mut charts: Vec<(&str, Chart)> = vec![
        ("loss", loss_chart(&losses)),
        (
            "lr_weights",
            Chart {
                title: "Learning rate of the weights (LARS)".into(),
                x_label: "training step".into(),
                y_label: "learning rate".into(),
                series: vec![line("weights", at(&|s| s.lr_weights), DARK)],
            },
        ),
        (
            "lr_biases",
            Chart {
                title: "Learning rate of biases and BatchNorm parameters".into(),
                x_label: "training step".into(),
                y_label: "learning rate".into(),
                series: vec![line("biases and BN", at(&|s| s.lr_biases), ORANGE)],
            },
        ),
        (
            "images_per_sec",
            Chart {
                title: "Training throughput (each image gives two views)".into(),
                x_label: "training step".into(),
                y_label: "images / s".into(),
                series: vec![line("images/s", after_first(&|s| s.images_per_sec), DARK)],
            },
        ),
        (
            "data_wait",
            Chart {
                title: "Time the trainer waited for data".into(),
                x_label: "training step".into(),
                y_label: "data wait (% of step time)".into(),
                series: vec![line(
                    "data wait",
                    after_first(&|s| 100.0 * s.data_wait),
                    ORANGE,
                )],
            },
        ),
        (
            "accuracy",
            Chart {
                title: "Accuracy on the validation set".into(),
                x_label: "training step".into(),
                y_label: "accuracy (%)".into(),
                series: vec![
                    line(
                        "kNN top-1",
                        knn.iter().map(|k| (k.step as f64, k.top1)).collect(),
                        DARK,
                    ),
                    line(
                        "kNN top-5",
                        knn.iter().map(|k| (k.step as f64, k.top5)).collect(),
                        LIGHT,
                    ),
                    line(
                        "linear top-1",
                        linear.iter().map(|l| (l.0 as f64, l.1)).collect(),
                        GREEN,
                    ),
                ],
            },
        ),
    ];
    // Runs on several peers: what their all-reduces cost.
    let traffic: Vec<(f64, PeerTraffic)> = steps
        .iter()
        .filter(|s| s.step > 0)
        .filter_map(|s| s.peers.map(|t| (s.step as f64, t)))
        .collect();
    if !traffic.is_empty() {
        charts.push((
            "all_reduce",
            Chart {
                title: "Time in the peers' sums per step (device waits included)".into(),
                x_label: "training step".into(),
                y_label: "milliseconds".into(),
                series: vec![line(
                    "all-reduce",
                    traffic.iter().map(|(s, t)| (*s, 1e3 * t.seconds)).collect(),
                    ORANGE,
                )],
            },
        ));
    }

    std::fs::create_dir_all(out).map_err(IoError::at(out))?;
    let mut files = Vec::new();
    let name = run
        .canonicalize()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| run.display().to_string());
    let mut html = String::new();
    let _ = write!(
        html,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n<title>barlow run {0}</title>\n<style>\nbody {{ font-family: sans-serif; max-width: 960px; margin: 2em auto; color: #222; }}\ntable {{ border-collapse: collapse; margin: 1em 0; }}\ntd, th {{ border: 1px solid #ccc; padding: 4px 10px; text-align: left; }}\nfigure {{ margin: 1.5em 0; }}\n</style></head><body>\n<h1>barlow run {0}</h1>\n<p>{1}</p>\n",
        escape(&name),
        escape(&run.display().to_string())
    );
    html.push_str("<h2>Summary</h2>\n<table>\n");
    let mean = |v: &[(f64, f64)]| v.iter().map(|p| p.1).sum::<f64>() / v.len().max(1) as f64;
    let mut row = |k: &str, v: String| {
        let _ = writeln!(
            html,
            "<tr><th>{}</th><td>{}</td></tr>",
            escape(k),
            escape(&v)
        );
    };
    if let (Some(first), Some(last)) = (steps.first(), steps.last()) {
        row(
            "steps",
            format!("{} (epoch {})", last.step + 1, last.epoch + 1),
        );
        row(
            "loss",
            format!(
                "{:.2} at step {} -> {:.2} at step {}",
                first.loss, first.step, last.loss, last.step
            ),
        );
        row(
            "images/s (mean of the logs)",
            format!("{:.1}", mean(&after_first(&|s| s.images_per_sec))),
        );
        row(
            "data wait (mean of the logs)",
            format!("{:.2}%", mean(&after_first(&|s| 100.0 * s.data_wait))),
        );
    }
    if let Some((_, t)) = traffic.last() {
        let ms = traffic.iter().map(|(_, t)| 1e3 * t.seconds).sum::<f64>() / traffic.len() as f64;
        row(
            "peers' all-reduces per step (each peer)",
            format!(
                "{} calls, {:.1} MB sent, {} host round trips, {ms:.1} ms (mean of the logs)",
                t.collectives,
                t.sent_bytes as f64 / 1e6,
                t.round_trips
            ),
        );
    }
    let damaged: u64 = steps.iter().map(|s| s.damaged_records).sum();
    if damaged > 0 {
        row(
            "damaged records skipped",
            format!("{damaged} (their checksums fail; each listed in damaged.jsonl)"),
        );
    }
    if let Some(k) = knn.last() {
        row(
            "kNN (last)",
            format!(
                "top-1 {:.2}%, top-5 {:.2}% at step {}",
                k.top1, k.top5, k.step
            ),
        );
    }
    if let Some(l) = linear.last() {
        row(
            "linear probe (last)",
            format!("top-1 {:.2}%, top-5 {:.2}% at step {}", l.1, l.2, l.0),
        );
    }
    html.push_str("</table>\n");
    for (file, c) in &charts {
        let png = out.join(format!("{file}.png"));
        chart::png(c, &png, WIDTH, HEIGHT).map_err(ReportError::Draw)?;
        files.push(png);
        let svg = chart::svg(c, WIDTH, HEIGHT).map_err(ReportError::Draw)?;
        let _ = write!(
            html,
            "<figure>\n{svg}\n<figcaption>{file}.png</figcaption></figure>\n"
        );
    }
    if let Some(state) = &config {
        let _ = write!(
            html,
            "<h2>Config (checkpoint at step {})</h2>\n<table>\n",
            state.step
        );
        let json =
            serde_json::to_value(&state.config).map_err(|e| ReportError::Draw(e.to_string()))?;
        if let Some(map) = json.as_object() {
            for (k, v) in map {
                let _ = writeln!(
                    html,
                    "<tr><th>{}</th><td>{}</td></tr>",
                    escape(k),
                    escape(&v.to_string())
                );
            }
        }
        html.push_str("</table>\n");
    }
    html.push_str("</body></html>\n");
    let index = out.join("index.html");
    crate::fs::write_atomically(&index, html.as_bytes())?;
    files.insert(0, index);
    Ok(files)
}

/// Text made safe inside HTML.
fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_text_is_escaped() {
        assert_eq!(escape("a<b & \"c\">"), "a&lt;b &amp; &quot;c&quot;&gt;");
    }

    #[test]
    fn a_folder_without_a_log_is_not_a_run_and_a_bad_line_is_named() {
        let tmp = tempfile::tempdir().unwrap();
        assert!(matches!(
            write(tmp.path(), &tmp.path().join("r")),
            Err(ReportError::NotARun { .. })
        ));
        std::fs::write(tmp.path().join("log.jsonl"), "{\"step\": 0}\n").unwrap();
        let e = write(tmp.path(), &tmp.path().join("r"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("log.jsonl, line 1"), "{e}");
        // A last line still being written (no newline yet) is left out.
        let good = r#"{"epoch":0,"step":0,"lr_weights":0.1,"lr_biases":0.002,"loss":9.5,"images_per_sec":1.0,"data_wait":0.0}"#;
        std::fs::write(tmp.path().join("log.jsonl"), format!("{good}\n{{\"epo")).unwrap();
        let files = write(tmp.path(), &tmp.path().join("r")).unwrap();
        let html = std::fs::read_to_string(&files[0]).unwrap();
        assert!(html.contains("9.50 at step 0"), "the good line is reported");
    }

    #[test]
    fn a_run_on_several_peers_gets_its_traffic_charted_and_summed_up() {
        let tmp = tempfile::tempdir().unwrap();
        let line = |step: u64, peers: &str| {
            format!(
                r#"{{"epoch":0,"step":{step},"lr_weights":0.1,"lr_biases":0.002,"loss":9.5,"images_per_sec":1.0,"data_wait":0.0{peers}}}"#
            )
        };
        let traffic = r#","peers":{"collectives":179,"values":1000000,"sent_bytes":8000000,"round_trips":180,"seconds":0.004}"#;
        let log = [line(0, traffic), line(1, traffic), line(3, traffic)].join("\n") + "\n";
        std::fs::write(tmp.path().join("log.jsonl"), log).unwrap();
        let out = tmp.path().join("r");
        let files = write(tmp.path(), &out).unwrap();
        assert!(files.contains(&out.join("all_reduce.png")), "{files:?}");
        let html = std::fs::read_to_string(out.join("index.html")).unwrap();
        assert!(
            html.contains("179 calls, 8.0 MB sent, 180 host round trips, 4.0 ms"),
            "{html}"
        );
        // One device: no such chart.
        let one = [line(0, ""), line(1, "")].join("\n") + "\n";
        std::fs::write(tmp.path().join("log.jsonl"), one).unwrap();
        let files = write(tmp.path(), &out.join("one")).unwrap();
        assert!(
            !files.iter().any(|f| f.ends_with("all_reduce.png")),
            "{files:?}"
        );
    }
}
