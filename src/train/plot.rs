//! The loss curve as a PNG: loss per step (light) and its moving average
//! (dark) on a light grid. The picture carries no text (plotters without a
//! font backend); the axis ranges are written beside it by the caller.

use std::path::Path;

use plotters::prelude::*;

/// Draws `losses` (step, loss) into a `width` x `height` PNG at `path`.
pub fn loss_curve(
    path: &Path,
    losses: &[(u64, f32)],
    width: u32,
    height: u32,
) -> Result<(), String> {
    let mut rgb = vec![255u8; (width * height * 3) as usize];
    draw(&mut rgb, losses, width, height).map_err(|e| format!("drawing the loss curve: {e}"))?;
    image::save_buffer(path, &rgb, width, height, image::ColorType::Rgb8)
        .map_err(|e| format!("{}: {e}", path.display()))
}

fn draw(
    rgb: &mut [u8],
    losses: &[(u64, f32)],
    width: u32,
    height: u32,
) -> Result<(), Box<dyn std::error::Error>> {
    let finite: Vec<(u64, f32)> = losses
        .iter()
        .copied()
        .filter(|(_, l)| l.is_finite())
        .collect();
    let root = BitMapBackend::with_buffer(rgb, (width, height)).into_drawing_area();
    root.fill(&WHITE)?;
    if finite.is_empty() {
        return Ok(root.present()?);
    }
    let x_max = finite.iter().map(|p| p.0).max().unwrap_or(0).max(1);
    let (lo, hi) = finite
        .iter()
        .fold((f32::MAX, f32::MIN), |(a, b), p| (a.min(p.1), b.max(p.1)));
    let pad = ((hi - lo) * 0.05).max(1e-3);
    let mut chart = ChartBuilder::on(&root)
        .margin(12)
        .build_cartesian_2d(0u64..x_max, (lo - pad)..(hi + pad))?;
    chart
        .configure_mesh()
        .x_labels(10)
        .y_labels(10)
        .disable_x_axis()
        .disable_y_axis()
        .light_line_style(RGBColor(235, 235, 235))
        .bold_line_style(RGBColor(210, 210, 210))
        .draw()?;
    chart.draw_series(LineSeries::new(
        finite.iter().copied(),
        RGBColor(150, 180, 230),
    ))?;
    let window = (finite.len() / 50).max(1);
    let smooth: Vec<(u64, f32)> = finite
        .windows(window)
        .map(|w| {
            (
                w[w.len() - 1].0,
                w.iter().map(|p| p.1).sum::<f32>() / w.len() as f32,
            )
        })
        .collect();
    chart.draw_series(LineSeries::new(
        smooth,
        RGBColor(20, 60, 160).stroke_width(2),
    ))?;
    Ok(root.present()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_curve_is_drawn_where_the_losses_are() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("loss.png");
        // Falling loss: the dark line starts high on the left, ends low on the right.
        let losses: Vec<(u64, f32)> = (0..200).map(|s| (s, 100.0 - s as f32 * 0.4)).collect();
        loss_curve(&path, &losses, 320, 200).unwrap();
        let img = image::open(&path).unwrap().to_rgb8();
        assert_eq!(img.dimensions(), (320, 200));
        let dark_rows = |x0: u32, x1: u32| -> Vec<u32> {
            (0..200)
                .filter(|&y| {
                    (x0..x1)
                        .any(|x| img.get_pixel(x, y).0[2] > 100 && img.get_pixel(x, y).0[0] < 80)
                })
                .collect()
        };
        let left = dark_rows(15, 40);
        let right = dark_rows(280, 305);
        assert!(!left.is_empty() && !right.is_empty(), "no curve drawn");
        assert!(
            left.iter().max() < right.iter().min(),
            "{left:?} vs {right:?}"
        );
    }
}
