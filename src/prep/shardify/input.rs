//! Finding the images to shardify: an ImageFolder tree, a flat folder of
//! unlabelled images, or a file list. The order is deterministic: classes
//! sorted by name, files sorted by path (a file list keeps its own order).

use std::fs;
use std::path::{Path, PathBuf};

use super::ShardifyError;
use crate::data::shard::NO_LABEL;
use crate::error::IoError;

/// File extensions torchvision's ImageFolder accepts (compared without case).
pub const IMAGE_EXTENSIONS: [&str; 9] = [
    "jpg", "jpeg", "png", "ppm", "bmp", "pgm", "tif", "tiff", "webp",
];

/// How a folder given as input is organised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Layout {
    /// `image-folder` when the folder holds sub-folders and no images at its
    /// top level, `flat` otherwise.
    Auto,
    /// One sub-folder per class (torchvision's ImageFolder); labels follow the
    /// sorted class names.
    ImageFolder,
    /// Every image below the folder, unlabelled.
    Flat,
}

impl crate::Choice for Layout {
    const NAMES: &'static [(Self, &'static str)] = &[
        (Layout::Auto, "auto"),
        (Layout::ImageFolder, "image-folder"),
        (Layout::Flat, "flat"),
    ];
}

/// What to read.
#[derive(Debug, Clone)]
pub enum Input {
    Folder {
        path: PathBuf,
        layout: Layout,
    },
    /// Lines `path<TAB>label` or `path`; relative paths are relative to the
    /// list's folder. Labels that are all whole numbers are used as they are;
    /// otherwise they are class names, numbered in sorted order.
    FileList(PathBuf),
}

impl Input {
    pub fn path(&self) -> &Path {
        match self {
            Input::Folder { path, .. } | Input::FileList(path) => path,
        }
    }
}

/// One image to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputItem {
    pub path: PathBuf,
    pub label: u32,
    /// File size when listed, part of the run's fingerprint.
    pub size: u64,
}

/// The result of discovery.
#[derive(Debug, Clone)]
pub struct Inputs {
    pub items: Vec<InputItem>,
    pub classes: Vec<String>,
    /// `image-folder`, `flat` or `file-list`.
    pub layout: &'static str,
    /// Files passed over because their extension is not an image's.
    pub ignored: u64,
}

/// Lists the input's images in their deterministic order.
pub fn discover(input: &Input) -> Result<Inputs, ShardifyError> {
    match input {
        Input::Folder { path, layout } => discover_folder(path, *layout),
        Input::FileList(list) => discover_list(list),
    }
}

fn has_image_extension(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.iter().any(|x| e.eq_ignore_ascii_case(x)))
}

fn is_hidden(name: &std::ffi::OsStr) -> bool {
    name.to_string_lossy().starts_with('.')
}

/// Entries of `dir` sorted by name, hidden ones left out; each with whether
/// it is a directory (symlinks followed) and its size.
fn sorted_entries(dir: &Path) -> Result<Vec<(PathBuf, bool, u64)>, ShardifyError> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(IoError::at(dir))? {
        let entry = entry.map_err(IoError::at(dir))?;
        if is_hidden(&entry.file_name()) {
            continue;
        }
        let path = entry.path();
        // Follow symlinks like torchvision (followlinks=True); a dangling
        // link is listed as a file and rejected as unreadable later.
        let (is_dir, size) = match fs::metadata(&path) {
            Ok(m) => (m.is_dir(), m.len()),
            Err(_) => (false, 0),
        };
        out.push((path, is_dir, size));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

const MAX_DEPTH: usize = 64;

fn walk(
    dir: &Path,
    label: u32,
    depth: usize,
    items: &mut Vec<InputItem>,
    ignored: &mut u64,
) -> Result<(), ShardifyError> {
    if depth > MAX_DEPTH {
        return Err(ShardifyError::Input(format!(
            "{}: folders nest deeper than {MAX_DEPTH} levels (a symlink loop?)",
            dir.display()
        )));
    }
    for (path, is_dir, size) in sorted_entries(dir)? {
        if is_dir {
            walk(&path, label, depth + 1, items, ignored)?;
        } else if has_image_extension(&path) {
            items.push(InputItem { path, label, size });
        } else {
            *ignored += 1;
        }
    }
    Ok(())
}

fn discover_folder(root: &Path, layout: Layout) -> Result<Inputs, ShardifyError> {
    let entries = sorted_entries(root)?;
    let layout = match layout {
        Layout::Auto => {
            let any_dir = entries.iter().any(|e| e.1);
            let top_images = entries.iter().any(|e| !e.1 && has_image_extension(&e.0));
            if any_dir && !top_images {
                Layout::ImageFolder
            } else {
                Layout::Flat
            }
        }
        l => l,
    };
    let mut items = Vec::new();
    let mut ignored = 0;
    let mut classes = Vec::new();
    if layout == Layout::ImageFolder {
        for (path, is_dir, _) in entries.iter().filter(|e| e.1) {
            debug_assert!(*is_dir);
            let label = classes.len() as u32;
            classes.push(
                path.file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned(),
            );
            walk(path, label, 1, &mut items, &mut ignored)?;
        }
        // Files beside the class folders belong to no class: passed over.
        ignored += entries.iter().filter(|e| !e.1).count() as u64;
    } else {
        walk(root, NO_LABEL, 0, &mut items, &mut ignored)?;
    }
    Ok(Inputs {
        items,
        classes,
        layout: if layout == Layout::ImageFolder {
            "image-folder"
        } else {
            "flat"
        },
        ignored,
    })
}

fn discover_list(list: &Path) -> Result<Inputs, ShardifyError> {
    let text = fs::read_to_string(list).map_err(IoError::at(list))?;
    let base = list.parent().unwrap_or(Path::new("."));
    let mut rows: Vec<(PathBuf, Option<&str>)> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let (p, label) = match line.split_once('\t') {
            Some((p, l)) => (p, Some(l.trim())),
            None => (line, None),
        };
        if rows
            .first()
            .is_some_and(|r| r.1.is_some() != label.is_some())
        {
            return Err(ShardifyError::Input(format!(
                "{}:{}: some lines have a label and some do not; label every line or none",
                list.display(),
                n + 1
            )));
        }
        rows.push((base.join(p), label));
    }
    let labelled = rows.first().is_some_and(|r| r.1.is_some());
    let numeric = labelled
        && rows
            .iter()
            .all(|r| r.1.is_some_and(|l| l.parse::<u32>().is_ok()));
    let classes: Vec<String> = if !labelled {
        Vec::new()
    } else if numeric {
        let max = rows
            .iter()
            .filter_map(|r| r.1.and_then(|l| l.parse::<u32>().ok()))
            .max()
            .unwrap_or(0);
        if max >= 1 << 24 {
            return Err(ShardifyError::Input(format!(
                "{}: numeric label {max} is implausibly large",
                list.display()
            )));
        }
        (0..=max).map(|i| i.to_string()).collect()
    } else {
        let mut names: Vec<String> = rows.iter().filter_map(|r| r.1.map(String::from)).collect();
        names.sort();
        names.dedup();
        names
    };
    let items = rows
        .into_iter()
        .map(|(path, label)| {
            let label = match label {
                None => NO_LABEL,
                Some(l) if numeric => l.parse().unwrap_or(NO_LABEL),
                Some(l) => classes
                    .binary_search_by(|c| c.as_str().cmp(l))
                    .map_or(NO_LABEL, |i| i as u32),
            };
            let size = fs::metadata(&path).map_or(0, |m| m.len());
            InputItem { path, label, size }
        })
        .collect();
    Ok(Inputs {
        items,
        classes,
        layout: "file-list",
        ignored: 0,
    })
}
