//! The shard reader on arbitrary bytes: opening (header, index checks) and
//! reading and verifying every record must return errors, never panic or
//! read out of bounds.
#![no_main]

use std::io::Write;

use barlow::data::shard::Shard;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(data).unwrap();
    file.flush().unwrap();
    if let Ok(shard) = Shard::open(file.path()) {
        for i in 0..shard.len().min(4096) {
            let _ = shard.verify_record(i);
        }
        let _ = shard.record(shard.len());
    }
});
