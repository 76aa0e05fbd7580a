//! Data that ships with barlow as code: a procedural sample dataset, so that
//! every step runs on any machine with no download, and crops of real
//! photographs for loader benchmarks.

pub mod photo_crops;
pub mod sample;
