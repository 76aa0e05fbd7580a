//! Line charts with a title, labelled axes and a legend, drawn by plotters
//! to SVG (text as `<text>` in the viewer's sans-serif font) or to PNG
//! (text rendered with DejaVu Sans, which the `dejavu` crate ships inside
//! the binary: no system font is needed; plotters lays out the SVG's text
//! with it too).

use std::path::Path;
use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::prelude::*;

/// One line of a chart.
#[derive(Debug, Clone)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
    pub color: RGBColor,
    /// Stroke width in pixels.
    pub width: u32,
}

/// A chart: lines over a shared x axis.
#[derive(Debug, Clone)]
pub struct Chart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<Series>,
}

/// The size of every chart barlow draws, in pixels.
pub const WIDTH: u32 = 900;
pub const HEIGHT: u32 = 420;

/// Light blue for raw values, dark blue for their smoothing, then others.
pub const LIGHT: RGBColor = RGBColor(150, 180, 230);
pub const DARK: RGBColor = RGBColor(20, 60, 160);
pub const ORANGE: RGBColor = RGBColor(220, 110, 20);
pub const GREEN: RGBColor = RGBColor(30, 140, 60);

type DrawResult = Result<(), Box<dyn std::error::Error>>;

/// The chart as an SVG document of `width` x `height` pixels.
pub fn svg(chart: &Chart, width: u32, height: u32) -> Result<String, String> {
    // plotters measures text with the font even when the SVG names it only.
    font()?;
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (width, height)).into_drawing_area();
        draw(&root, chart).map_err(|e| format!("drawing {}: {e}", chart.title))?;
    }
    Ok(out)
}

/// The chart as a `width` x `height` PNG at `path`.
pub fn png(chart: &Chart, path: &Path, width: u32, height: u32) -> Result<(), String> {
    font()?;
    let mut rgb = vec![255u8; (width * height * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (width, height)).into_drawing_area();
        draw(&root, chart).map_err(|e| format!("drawing {}: {e}", chart.title))?;
    }
    let mut png = Vec::new();
    image::write_buffer_with_format(
        &mut std::io::Cursor::new(&mut png),
        &rgb,
        width,
        height,
        image::ExtendedColorType::Rgb8,
        image::ImageFormat::Png,
    )
    .map_err(|e| format!("{}: {e}", path.display()))?;
    crate::fs::write_atomically(path, &png).map_err(|e| e.to_string())
}

/// Registers the shipped font as plotters' "sans-serif", once.
fn font() -> Result<(), String> {
    static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            plotters::style::register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular())
                .map_err(|_| "the shipped DejaVu Sans font did not load".to_string())
        })
        .clone()
}

/// The x and y ranges of every finite point, padded; None without points.
fn ranges(chart: &Chart) -> Option<((f64, f64), (f64, f64))> {
    let pts = chart
        .series
        .iter()
        .flat_map(|s| &s.points)
        .filter(|p| p.0.is_finite() && p.1.is_finite());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    let mut any = false;
    for &(x, y) in pts {
        any = true;
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if !any {
        return None;
    }
    if x1 <= x0 {
        x1 = x0 + 1.0;
    }
    let pad = ((y1 - y0) * 0.05).max(y1.abs() * 1e-3).max(1e-9);
    Some(((x0, x1), (y0 - pad, y1 + pad)))
}

fn draw<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, chart: &Chart) -> DrawResult
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE)?;
    let mut builder = ChartBuilder::on(root);
    builder
        .caption(&chart.title, ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(70);
    let Some(((x0, x1), (y0, y1))) = ranges(chart) else {
        // Axes over an empty range, and a note that there is nothing to show.
        let mut c = builder.build_cartesian_2d(0f64..1f64, 0f64..1f64)?;
        c.configure_mesh()
            .x_desc(&chart.x_label)
            .y_desc(&chart.y_label)
            .draw()?;
        c.draw_series(std::iter::once(Text::new(
            "no data in this run",
            (0.35, 0.5),
            ("sans-serif", 16),
        )))?;
        root.present()?;
        return Ok(());
    };
    let mut c = builder.build_cartesian_2d(x0..x1, y0..y1)?;
    let (xd, yd) = (decimals(x1 - x0), decimals(y1 - y0));
    c.configure_mesh()
        .x_desc(&chart.x_label)
        .y_desc(&chart.y_label)
        .x_labels(8)
        .y_labels(8)
        .x_label_formatter(&|v| format!("{v:.xd$}"))
        .y_label_formatter(&|v| format!("{v:.yd$}"))
        .light_line_style(RGBColor(238, 238, 238))
        .bold_line_style(RGBColor(215, 215, 215))
        .label_style(("sans-serif", 13))
        .axis_desc_style(("sans-serif", 14))
        .draw()?;
    for s in &chart.series {
        let pts: Vec<(f64, f64)> = s
            .points
            .iter()
            .copied()
            .filter(|p| p.0.is_finite() && p.1.is_finite())
            .collect();
        let style = s.color.stroke_width(s.width);
        let color = s.color;
        if pts.len() == 1 {
            c.draw_series(std::iter::once(Circle::new(pts[0], 4, color.filled())))?
                .label(&s.name)
                .legend(move |(x, y)| Circle::new((x + 10, y), 4, color.filled()));
        } else {
            c.draw_series(LineSeries::new(pts, style))?
                .label(&s.name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
        }
    }
    if chart.series.len() > 1 {
        c.configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(RGBColor(200, 200, 200))
            .label_font(("sans-serif", 13))
            .position(SeriesLabelPosition::UpperRight)
            .draw()?;
    }
    root.present()?;
    Ok(())
}

/// Decimals that tell apart the ~8 ticks of an axis spanning `span`: the
/// same for every tick label of the axis (0.0004, 0.0008, 0.0012).
fn decimals(span: f64) -> usize {
    let step = span / 8.0;
    if step >= 1.0 || step <= 0.0 || !step.is_finite() {
        0
    } else {
        (-step.log10()).ceil().clamp(0.0, 12.0) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn falling() -> Chart {
        Chart {
            title: "loss".into(),
            x_label: "step".into(),
            y_label: "loss".into(),
            series: vec![Series {
                name: "loss".into(),
                points: (0..200)
                    .map(|s| (s as f64, 100.0 - s as f64 * 0.4))
                    .collect(),
                color: DARK,
                width: 2,
            }],
        }
    }

    #[test]
    fn the_png_has_its_line_where_the_values_are_and_text_beside_it() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("c.png");
        png(&falling(), &path, 480, 300).unwrap();
        let img = image::open(&path).unwrap().to_rgb8();
        assert_eq!(img.dimensions(), (480, 300));
        let is_line = |p: &image::Rgb<u8>| p.0 == [DARK.0, DARK.1, DARK.2];
        let cols: Vec<(u32, u32)> = img
            .enumerate_pixels()
            .filter(|(_, _, p)| is_line(p))
            .map(|(x, y, _)| (x, y))
            .collect();
        assert!(!cols.is_empty(), "no line drawn");
        let xmin = cols.iter().map(|p| p.0).min().unwrap();
        let xmax = cols.iter().map(|p| p.0).max().unwrap();
        let mean_y = |x0: u32, x1: u32| {
            let ys: Vec<u32> = cols
                .iter()
                .filter(|p| p.0 >= x0 && p.0 < x1)
                .map(|p| p.1)
                .collect();
            ys.iter().sum::<u32>() as f64 / ys.len().max(1) as f64
        };
        // A falling value: high (small y) on the left, low on the right.
        assert!(mean_y(xmin, xmin + 20) < mean_y(xmax - 20, xmax + 1) - 100.0);
        // Tick labels and the axis title are drawn left of the plot area:
        // dark pixels there (none would be without a font).
        let text = (0..xmin.saturating_sub(5))
            .flat_map(|x| (0..300).map(move |y| (x, y)))
            .filter(|&(x, y)| img.get_pixel(x, y).0.iter().all(|&c| c < 100))
            .count();
        assert!(text > 100, "{text} text pixels left of the plot");
    }

    #[test]
    fn the_svg_carries_title_axis_names_and_tick_labels() {
        let s = svg(&falling(), 480, 300).unwrap();
        assert!(s.starts_with("<svg"), "{}", &s[..40]);
        for t in ["loss", "step", "100", "20"] {
            assert!(s.contains(&format!(">\n{t}\n</text>")), "{t} missing");
        }
        let empty = Chart {
            series: vec![],
            ..falling()
        };
        assert!(svg(&empty, 300, 200).unwrap().contains("no data"));
    }

    #[test]
    fn tick_labels_have_the_decimals_their_spacing_needs() {
        assert_eq!(decimals(1200.0), 0);
        assert_eq!(decimals(8.0), 0);
        assert_eq!(decimals(1.0), 1);
        assert_eq!(decimals(0.0012), 4);
        assert_eq!(decimals(0.0), 0);
    }
}
