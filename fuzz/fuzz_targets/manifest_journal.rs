//! The dataset manifest and shardify's journal parsers on arbitrary bytes:
//! errors, never panics.
#![no_main]

use std::path::Path;

use barlow::data::shard::Manifest;
use barlow::prep::shardify::journal::Journal;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = Manifest::parse(data, Path::new("manifest.json"));
    let _ = Journal::parse(data, Path::new(".shardify-journal.json"));
});
