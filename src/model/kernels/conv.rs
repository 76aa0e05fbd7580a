//! The 2-D convolution on the CPU: forward, input gradient and weight
//! gradient, all three as im2col (or col2im) around one matrix multiply by
//! `gemm` per chunk of images.
//!
//! Inside, activations are laid out channel-major, `[C, n, H*W]` for a
//! chunk of `n` images, so that a whole chunk is one matrix and `gemm`
//! gets wide products to split over the rayon pool:
//!
//! - forward: `Y[Co, nP] = W[Co, K] · col(x)[K, nP]`;
//! - weight gradient: `dW[Co, K] += dY[Co, nP] · col(x)[K, nP]ᵀ`, summed
//!   over the chunks in order;
//! - input gradient: `dcol[K, nP] = W[Co, K]ᵀ · dY[Co, nP]`, then col2im
//!   adds each column back onto the input pixel it came from;
//!
//! with `K = C_in · kh · kw` and `P = H_out · W_out`. Groups and dilation
//! other than 1 are not handled here (barlow's networks use neither); the
//! caller sends those to burn's own convolution.
//!
//! Every function works on contiguous NCHW `f32` slices, writes into
//! buffers it is given, and allocates only the reused [`Scratch`].

use rayon::prelude::*;

/// The geometry of one convolution (groups 1, dilation 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvShape {
    pub batch: usize,
    pub in_ch: usize,
    pub out_ch: usize,
    pub in_h: usize,
    pub in_w: usize,
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    /// Top, left, bottom, right.
    pub padding: [usize; 4],
}

impl ConvShape {
    pub fn out_h(&self) -> usize {
        (self.in_h + self.padding[0] + self.padding[2] - self.kernel[0]) / self.stride[0] + 1
    }

    pub fn out_w(&self) -> usize {
        (self.in_w + self.padding[1] + self.padding[3] - self.kernel[1]) / self.stride[1] + 1
    }

    /// Whether the shape is one these kernels compute: a kernel that fits
    /// in the padded input and strides of at least 1.
    pub fn is_valid(&self) -> bool {
        self.stride[0] > 0
            && self.stride[1] > 0
            && self.kernel[0] > 0
            && self.kernel[1] > 0
            && self.kernel[0] <= self.in_h + self.padding[0] + self.padding[2]
            && self.kernel[1] <= self.in_w + self.padding[1] + self.padding[3]
    }

    /// Rows of the im2col matrix: `C_in · kh · kw`.
    fn k(&self) -> usize {
        self.in_ch * self.kernel[0] * self.kernel[1]
    }

    /// Output pixels per image.
    fn p(&self) -> usize {
        self.out_h() * self.out_w()
    }

    fn in_plane(&self) -> usize {
        self.in_h * self.in_w
    }

    pub fn input_len(&self) -> usize {
        self.batch * self.in_ch * self.in_plane()
    }

    pub fn weight_len(&self) -> usize {
        self.out_ch * self.k()
    }

    pub fn output_len(&self) -> usize {
        self.batch * self.out_ch * self.p()
    }

    /// Images per chunk: as many as keep the im2col matrix and the
    /// channel-major output within [`CHUNK_VALUES`], at least one.
    fn chunk(&self) -> usize {
        let per_image = (self.k().max(self.out_ch) * self.p()).max(1);
        (CHUNK_VALUES / per_image).clamp(1, self.batch.max(1))
    }
}

/// The most values one scratch matrix holds (32 MiB of f32): large enough
/// that `gemm` sees wide products, small enough to stay out of the way of
/// the activations.
const CHUNK_VALUES: usize = 1 << 23;

/// The buffers a convolution reuses from call to call on one thread.
#[derive(Default)]
struct Scratch {
    col: Vec<f32>,
    cnp: Vec<f32>,
    weight: Vec<f32>,
}

/// A buffer of `len` values out of `v`, grown when needed.
fn grown(v: &mut Vec<f32>, len: usize) -> &mut [f32] {
    if v.len() < len {
        v.resize(len, 0.0);
    }
    &mut v[..len]
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::new(Scratch::default());
}

/// Runs `f` with this thread's scratch buffers, or with new ones when
/// they are in use further up this thread's stack (a rayon worker that
/// waits inside one convolution runs whatever task it can steal, and a
/// task that convolves would otherwise find them borrowed).
fn with_scratch<R>(f: impl FnOnce(&mut Scratch) -> R) -> R {
    SCRATCH.with(|s| match s.try_borrow_mut() {
        Ok(mut scratch) => f(&mut scratch),
        Err(_) => f(&mut Scratch::default()),
    })
}

/// `y = conv(x, w)`: `x` `[N, C_in, H, W]`, `w` `[C_out, C_in, kh, kw]`,
/// `y` `[N, C_out, H_out, W_out]`.
pub fn forward(s: &ConvShape, x: &[f32], w: &[f32], y: &mut [f32]) {
    assert_lens(s, x, w, y);
    let (k, p, co) = (s.k(), s.p(), s.out_ch);
    with_scratch(|scratch| {
        for (start, n) in chunks(s) {
            let col = grown(&mut scratch.col, k * n * p);
            let ycnp = grown(&mut scratch.cnp, co * n * p);
            im2col(s, &x[start * s.in_ch * s.in_plane()..], n, col);
            matmul(
                ycnp,
                false,
                false,
                Mat::row_major(w, co, k),
                Mat::row_major(col, k, n * p),
            );
            from_channel_major(ycnp, &mut y[start * co * p..(start + n) * co * p], co, n, p);
        }
    });
}

/// The gradients of [`forward`] given the output's gradient `dy`: the
/// input's into `dx` and the weight's into `dw`, each only when asked for.
pub fn backward(
    s: &ConvShape,
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    mut dx: Option<&mut [f32]>,
    mut dw: Option<&mut [f32]>,
) {
    assert_lens(s, x, w, dy);
    if let Some(dx) = dx.as_deref() {
        assert_eq!(dx.len(), s.input_len(), "input gradient buffer");
    }
    if let Some(dw) = dw.as_deref() {
        assert_eq!(dw.len(), s.weight_len(), "weight gradient buffer");
    }
    let (k, p, co) = (s.k(), s.p(), s.out_ch);
    let plane = s.in_ch * s.in_plane();
    with_scratch(|scratch| {
        let by_columns = co < k;
        let dwt = grown(&mut scratch.weight, if by_columns { co * k } else { 0 });
        for (i, (start, n)) in chunks(s).enumerate() {
            let col = grown(&mut scratch.col, k * n * p);
            let dycnp = grown(&mut scratch.cnp, co * n * p);
            to_channel_major(&dy[start * co * p..(start + n) * co * p], dycnp, co, n, p);
            let dycnp = &*dycnp;
            if let Some(dw) = dw.as_deref_mut() {
                im2col(s, &x[start * plane..], n, col);
                // dW += dY · colᵀ, colᵀ being col read with its strides
                // swapped. Written column-major into `dwt` when dY is the
                // smaller operand, so that gemm packs it rather than col.
                let col_t = Mat {
                    data: col,
                    rows: n * p,
                    cols: k,
                    row_stride: 1,
                    col_stride: n * p,
                };
                let dst = if by_columns { &mut *dwt } else { dw };
                matmul(
                    dst,
                    by_columns,
                    i > 0,
                    Mat::row_major(dycnp, co, n * p),
                    col_t,
                );
            }
            if let Some(dx) = dx.as_deref_mut() {
                let w_t = Mat {
                    data: w,
                    rows: k,
                    cols: co,
                    row_stride: 1,
                    col_stride: k,
                };
                matmul(col, false, false, w_t, Mat::row_major(dycnp, co, n * p));
                col2im(s, col, n, &mut dx[start * plane..(start + n) * plane]);
            }
        }
        if let Some(dw) = dw.filter(|_| by_columns) {
            // dwt holds dW column-major: (o, r) at o + r·C_out.
            for (o, row) in dw.chunks_exact_mut(k).enumerate() {
                for (r, v) in row.iter_mut().enumerate() {
                    *v = dwt[o + r * co];
                }
            }
        }
    });
}

fn assert_lens(s: &ConvShape, x: &[f32], w: &[f32], y: &[f32]) {
    assert!(s.is_valid(), "convolution shape {s:?}");
    assert_eq!(x.len(), s.input_len(), "input of {s:?}");
    assert_eq!(w.len(), s.weight_len(), "weight of {s:?}");
    assert_eq!(y.len(), s.output_len(), "output of {s:?}");
}

/// The chunks of the batch, as (first image, images).
fn chunks(s: &ConvShape) -> impl Iterator<Item = (usize, usize)> {
    let (batch, chunk) = (s.batch, s.chunk());
    (0..batch)
        .step_by(chunk)
        .map(move |start| (start, chunk.min(batch - start)))
}

/// The im2col matrix of `n` images of `x` (starting at its first value):
/// row `(c, ky, kx)`, column `(image, oy, ox)` holds the input pixel under
/// kernel tap `(ky, kx)` of output pixel `(oy, ox)`, or 0 in the padding.
fn im2col(s: &ConvShape, x: &[f32], n: usize, col: &mut [f32]) {
    let [kh, kw] = s.kernel;
    let (oh, ow, p) = (s.out_h(), s.out_w(), s.p());
    let plane = s.in_plane();
    let image = s.in_ch * plane;
    col.par_chunks_mut(n * p)
        .with_min_len(rows_per_task(n * p))
        .enumerate()
        .for_each(|(r, row)| {
            let (c, ky, kx) = (r / (kh * kw), (r / kw) % kh, r % kw);
            for (b, out) in row.chunks_exact_mut(p).enumerate() {
                let src = &x[b * image + c * plane..b * image + (c + 1) * plane];
                for (oy, out) in out.chunks_exact_mut(ow).enumerate() {
                    match (oy * s.stride[0] + ky).checked_sub(s.padding[0]) {
                        Some(iy) if iy < s.in_h => {
                            let line = &src[iy * s.in_w..(iy + 1) * s.in_w];
                            tap_row(line, out, kx, s.stride[1], s.padding[1]);
                        }
                        _ => out.fill(0.0),
                    }
                }
            }
            debug_assert_eq!(row.len(), n * oh * ow);
        });
}

/// One output row's values under horizontal tap `kx`: `out[ox] =
/// line[ox·stride + kx − pad]`, 0 outside the line.
fn tap_row(line: &[f32], out: &mut [f32], kx: usize, stride: usize, pad: usize) {
    let (lo, hi) = inside(line.len(), out.len(), kx, stride, pad);
    out[..lo].fill(0.0);
    out[hi..].fill(0.0);
    if lo == hi {
        return;
    }
    let start = lo * stride + kx - pad;
    if stride == 1 {
        out[lo..hi].copy_from_slice(&line[start..start + hi - lo]);
    } else {
        let src = line[start..].iter().step_by(stride);
        for (o, v) in out[lo..hi].iter_mut().zip(src) {
            *o = *v;
        }
    }
}

/// The output columns `lo..hi` whose tap `kx` falls inside a line of
/// `w` values: `0 <= ox·stride + kx − pad < w`, within `0..ow`.
fn inside(w: usize, ow: usize, kx: usize, stride: usize, pad: usize) -> (usize, usize) {
    let lo = pad.saturating_sub(kx).div_ceil(stride).min(ow);
    // ox·stride + kx − pad <= w − 1  <=>  ox <= (w − 1 + pad − kx) / stride.
    let hi = match (w + pad).checked_sub(kx + 1) {
        Some(last) => (last / stride + 1).min(ow),
        None => 0,
    };
    (lo, hi.max(lo))
}

/// The adjoint of [`im2col`]: every column value of `col` added onto the
/// input pixel it was read from, into `dx` (`n` images, overwritten).
/// Each input plane is written by one task, so the sums are in a fixed
/// order whatever the number of threads.
fn col2im(s: &ConvShape, col: &[f32], n: usize, dx: &mut [f32]) {
    let [kh, kw] = s.kernel;
    let (ow, p) = (s.out_w(), s.p());
    let plane = s.in_plane();
    dx.par_chunks_mut(plane)
        .with_min_len(rows_per_task(plane * kh * kw))
        .enumerate()
        .for_each(|(plane_index, dst)| {
            let (b, c) = (plane_index / s.in_ch, plane_index % s.in_ch);
            dst.fill(0.0);
            for ky in 0..kh {
                for kx in 0..kw {
                    let r = (c * kh + ky) * kw + kx;
                    let src = &col[r * n * p + b * p..r * n * p + (b + 1) * p];
                    for (oy, src) in src.chunks_exact(ow).enumerate() {
                        let Some(iy) = (oy * s.stride[0] + ky).checked_sub(s.padding[0]) else {
                            continue;
                        };
                        if iy >= s.in_h {
                            continue;
                        }
                        let line = &mut dst[iy * s.in_w..(iy + 1) * s.in_w];
                        add_tap_row(line, src, kx, s.stride[1], s.padding[1]);
                    }
                }
            }
        });
}

/// The adjoint of [`tap_row`]: `line[ox·stride + kx − pad] += src[ox]`.
fn add_tap_row(line: &mut [f32], src: &[f32], kx: usize, stride: usize, pad: usize) {
    let (lo, hi) = inside(line.len(), src.len(), kx, stride, pad);
    if lo == hi {
        return;
    }
    let start = lo * stride + kx - pad;
    let dst = line[start..].iter_mut().step_by(stride);
    for (d, v) in dst.zip(&src[lo..hi]) {
        *d += v;
    }
}

/// `[n, C, P]` (NCHW) to `[C, n, P]`.
fn to_channel_major(src: &[f32], dst: &mut [f32], c: usize, n: usize, p: usize) {
    dst.par_chunks_mut(n * p)
        .with_min_len(rows_per_task(n * p))
        .enumerate()
        .for_each(|(ch, row)| {
            for (b, out) in row.chunks_exact_mut(p).enumerate() {
                out.copy_from_slice(&src[(b * c + ch) * p..(b * c + ch + 1) * p]);
            }
        });
}

/// `[C, n, P]` back to `[n, C, P]` (NCHW).
fn from_channel_major(src: &[f32], dst: &mut [f32], c: usize, n: usize, p: usize) {
    dst.par_chunks_mut(p)
        .with_min_len(rows_per_task(p))
        .enumerate()
        .for_each(|(i, out)| {
            let (b, ch) = (i / c, i % c);
            out.copy_from_slice(&src[(ch * n + b) * p..(ch * n + b + 1) * p]);
        });
}

/// How many rows of `len` values one parallel task takes: enough for
/// about [`TASK_VALUES`] values, so that small layers are not split into
/// tasks costing more to hand out than to run.
pub(super) fn rows_per_task(len: usize) -> usize {
    (TASK_VALUES / len.max(1)).max(1)
}

/// The values one parallel task handles at least.
const TASK_VALUES: usize = 1 << 14;

/// A strided matrix view of a slice: element `(i, j)` is
/// `data[i · row_stride + j · col_stride]`.
pub(super) struct Mat<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    pub row_stride: usize,
    pub col_stride: usize,
}

impl<'a> Mat<'a> {
    pub fn row_major(data: &'a [f32], rows: usize, cols: usize) -> Mat<'a> {
        Mat {
            data,
            rows,
            cols,
            row_stride: cols,
            col_stride: 1,
        }
    }

    /// Whether every element of the view lies inside `data`.
    fn fits(&self) -> bool {
        self.rows == 0
            || self.cols == 0
            || (self.rows - 1) * self.row_stride + (self.cols - 1) * self.col_stride
                < self.data.len()
    }
}

/// `dst = lhs · rhs`, or `dst += lhs · rhs` when `accumulate`; `dst` is
/// row-major, or column-major when `dst_by_columns`. Split over the rayon
/// pool when the product is large.
///
/// gemm packs its left operand (after turning a row-major product into
/// the column-major one it computes), so the callers arrange for the
/// smaller matrix to be on that side.
pub(super) fn matmul(
    dst: &mut [f32],
    dst_by_columns: bool,
    accumulate: bool,
    lhs: Mat<'_>,
    rhs: Mat<'_>,
) {
    let (m, k, n) = (lhs.rows, lhs.cols, rhs.cols);
    assert_eq!(rhs.rows, k, "inner dimensions");
    assert_eq!(dst.len(), m * n, "destination");
    assert!(lhs.fits() && rhs.fits(), "matrix views inside their slices");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            dst.fill(0.0);
        }
        return;
    }
    let parallelism = if m * n * k >= 1 << 18 && rayon::current_num_threads() > 1 {
        gemm::Parallelism::Rayon(0)
    } else {
        gemm::Parallelism::None
    };
    let (dst_cs, dst_rs) = if dst_by_columns { (m, 1) } else { (1, n) };
    // SAFETY: `dst` holds `m · n` values, element (i, j) at
    // `i · dst_rs + j · dst_cs` (row- or column-major), and `fits` checked
    // that every element of the
    // `m x k` and `k x n` strided views lies inside its slice; the three
    // slices are borrowed for the call, `dst` mutably, so none aliases
    // another.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            dst_cs as isize,
            dst_rs as isize,
            accumulate,
            lhs.data.as_ptr(),
            lhs.col_stride as isize,
            lhs.row_stride as isize,
            rhs.data.as_ptr(),
            rhs.col_stride as isize,
            rhs.row_stride as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The convolution by its definition, in f64.
    fn direct(s: &ConvShape, x: &[f32], w: &[f32]) -> Vec<f64> {
        let (oh, ow) = (s.out_h(), s.out_w());
        let mut y = vec![0.0; s.output_len()];
        for b in 0..s.batch {
            for o in 0..s.out_ch {
                for oy in 0..oh {
                    for ox in 0..ow {
                        let mut acc = 0.0f64;
                        for c in 0..s.in_ch {
                            for ky in 0..s.kernel[0] {
                                for kx in 0..s.kernel[1] {
                                    let iy =
                                        (oy * s.stride[0] + ky) as isize - s.padding[0] as isize;
                                    let ix =
                                        (ox * s.stride[1] + kx) as isize - s.padding[1] as isize;
                                    if iy < 0
                                        || ix < 0
                                        || iy >= s.in_h as isize
                                        || ix >= s.in_w as isize
                                    {
                                        continue;
                                    }
                                    let xv = x[((b * s.in_ch + c) * s.in_h + iy as usize) * s.in_w
                                        + ix as usize];
                                    let wv = w
                                        [((o * s.in_ch + c) * s.kernel[0] + ky) * s.kernel[1] + kx];
                                    acc += f64::from(xv) * f64::from(wv);
                                }
                            }
                        }
                        y[((b * s.out_ch + o) * oh + oy) * ow + ox] = acc;
                    }
                }
            }
        }
        y
    }

    fn values(len: usize, seed: u32) -> Vec<f32> {
        (0..len)
            .map(|i| {
                let h = (i as u32)
                    .wrapping_mul(2_654_435_761)
                    .wrapping_add(seed.wrapping_mul(97));
                ((h >> 8) % 2001) as f32 / 1000.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn a_convolution_inside_another_gets_scratch_of_its_own() {
        // As when a rayon worker waiting inside a convolution runs a task
        // that convolves.
        let s = ConvShape {
            batch: 2,
            in_ch: 3,
            out_ch: 4,
            in_h: 6,
            in_w: 6,
            kernel: [3, 3],
            stride: [1, 1],
            padding: [1, 1, 1, 1],
        };
        let (x, w) = (values(s.input_len(), 3), values(s.weight_len(), 4));
        let mut alone = vec![0.0; s.output_len()];
        forward(&s, &x, &w, &mut alone);
        let mut nested = vec![0.0; s.output_len()];
        with_scratch(|_| forward(&s, &x, &w, &mut nested));
        assert_eq!(nested, alone);
    }

    #[test]
    fn forward_is_the_definition_at_every_stride_kernel_and_padding() {
        for (kernel, stride, padding) in [
            ([1, 1], [1, 1], [0, 0, 0, 0]),
            ([1, 1], [2, 2], [0, 0, 0, 0]),
            ([3, 3], [1, 1], [1, 1, 1, 1]),
            ([3, 3], [2, 2], [1, 1, 1, 1]),
            ([3, 3], [2, 1], [0, 2, 1, 3]),
            ([7, 7], [2, 2], [3, 3, 3, 3]),
            ([3, 2], [1, 3], [2, 0, 0, 1]),
        ] {
            let s = ConvShape {
                batch: 3,
                in_ch: 5,
                out_ch: 7,
                in_h: 9,
                in_w: 11,
                kernel,
                stride,
                padding,
            };
            let (x, w) = (values(s.input_len(), 1), values(s.weight_len(), 2));
            let mut y = vec![f32::NAN; s.output_len()];
            forward(&s, &x, &w, &mut y);
            for (got, want) in y.iter().zip(direct(&s, &x, &w)) {
                assert!(
                    (f64::from(*got) - want).abs() < 1e-4,
                    "{s:?}: {got} vs {want}"
                );
            }
        }
    }
}
