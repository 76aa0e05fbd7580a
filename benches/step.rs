//! One Barlow Twins training step on the CPU (both views forward,
//! backward, LARS), as the trainer takes it on one device
//! (`data_parallel_step` without peers), on synthetic views, with barlow's
//! convolution and BatchNorm kernels and with burn's own ops in the same
//! process: the network alone, as `benches/pytorch_step.py` times
//! PyTorch's.
//!
//!     cargo bench --bench step -- --arch resnet50 --size 128 --batch 16 \
//!         --projector 2048-2048-2048 --threads 2 --steps 3
//!
//! Prints the images/s (one image = its two views) of each timed step and
//! a JSON line per kind of ops with the median.

use std::time::Instant;

use barlow::model::Precision;
use barlow::model::kernels::with_burn_ops;
use barlow::model::{Arch, BarlowTwins, ResNetConfig, parse_projector};
use barlow::optim::LarsConfig;
use barlow::train::{Parallel, data_parallel_step};
use burn::backend::{Autodiff, Flex};
use burn::tensor::{Distribution, Tensor};

type AB = Autodiff<Flex>;

struct Args {
    arch: Arch,
    width: usize,
    size: usize,
    batch: usize,
    projector: Vec<usize>,
    threads: usize,
    steps: usize,
    warmup: usize,
    ops: Vec<String>,
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        arch: Arch::Resnet50,
        width: 64,
        size: 128,
        batch: 16,
        projector: vec![2048, 2048, 2048],
        threads: 2,
        steps: 3,
        warmup: 1,
        ops: vec!["barlow".into(), "burn".into()],
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--bench" {
            continue;
        }
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        let num = || {
            value
                .parse::<usize>()
                .map_err(|e| format!("{flag} {value}: {e}"))
        };
        match flag.as_str() {
            "--arch" => {
                a.arch = barlow::Choice::from_name(&value).ok_or(format!("--arch {value}"))?
            }
            "--width" => a.width = num()?,
            "--size" => a.size = num()?,
            "--batch" => a.batch = num()?,
            "--projector" => a.projector = parse_projector(&value)?,
            "--threads" => a.threads = num()?,
            "--steps" => a.steps = num()?,
            "--warmup" => a.warmup = num()?,
            "--ops" => a.ops = value.split(',').map(str::to_owned).collect(),
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    Ok(a)
}

fn main() -> Result<(), String> {
    let a = parse()?;
    rayon::ThreadPoolBuilder::new()
        .num_threads(a.threads)
        .build_global()
        .map_err(|e| e.to_string())?;
    let device = Default::default();
    let cfg = ResNetConfig {
        arch: a.arch,
        width: a.width,
        small_stem: false,
    };
    let shape = [a.batch, 3, a.size, a.size];
    let view = || Tensor::<AB, 4>::random(shape, Distribution::Normal(0.0, 1.0), &device);
    let (y1, y2) = (view(), view());
    for ops in &a.ops {
        let mut model = BarlowTwins::<AB>::seeded(&cfg, &a.projector, 0, &device);
        let mut optim = LarsConfig::new().init();
        let mut rates = Vec::new();
        for i in 0..a.warmup + a.steps {
            let t = Instant::now();
            let parallel = Parallel {
                precision: Precision::F32,
                peer: None,
                batch: a.batch,
                grad_divisor: 1.0,
                stop: false,
            };
            let mut step = || {
                let (y1, y2) = (y1.clone(), y2.clone());
                let stepped =
                    data_parallel_step(model.clone(), &mut optim, y1, y2, 0.0051, 0.2, parallel)
                        .map_err(|e| e.to_string())?;
                model = stepped.model;
                Ok::<f32, String>(stepped.loss.into_scalar())
            };
            let loss = match ops.as_str() {
                "barlow" => step()?,
                "burn" => with_burn_ops(step)?,
                other => return Err(format!("--ops {other}: barlow or burn")),
            };
            let rate = a.batch as f64 / t.elapsed().as_secs_f64();
            if i >= a.warmup {
                println!("{ops}: {rate:.3} images/s (loss {loss:.3})");
                rates.push(rate);
            }
        }
        rates.sort_by(f64::total_cmp);
        let median = rates.get(rates.len() / 2).copied().unwrap_or(f64::NAN);
        println!(
            "{{\"ops\":\"{ops}\",\"arch\":\"{}\",\"width\":{},\"size\":{},\"batch\":{},\"threads\":{},\"median_images_per_sec\":{median:.3}}}",
            barlow::Choice::name(a.arch),
            a.width,
            a.size,
            a.batch,
            a.threads
        );
    }
    Ok(())
}
