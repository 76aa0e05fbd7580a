use std::path::PathBuf;

use super::cache::{Cache, Claim, Piece};
use super::store::{Failure, Store};
use super::{Location, RemoteError};

#[test]
fn locations_are_folders_or_urls_of_known_schemes() {
    assert_eq!(
        Location::parse("data/shards").unwrap(),
        Location::Local(PathBuf::from("data/shards"))
    );
    for url in ["s3://bucket/a/b", "gs://b/p", "az://c/p", "https://host/x/"] {
        let l = Location::parse(url).unwrap();
        assert!(l.is_remote(), "{url}");
        assert_eq!(l.to_string(), url.trim_end_matches('/'));
    }
    assert!(matches!(
        Location::parse("ftp://host/x"),
        Err(RemoteError::Url { .. })
    ));
}

fn piece(i: usize, len: u64) -> Piece {
    Piece {
        shard: 0,
        first: i * 4,
        end: i * 4 + 4,
        global_first: (i * 4) as u64,
        start: 64 + i as u64 * len,
        len,
        file: format!("shard-00000.bshard.00000000.{:06}-{:06}", i * 4, i * 4 + 4),
    }
}

#[test]
fn the_cache_evicts_the_unpinned_piece_needed_furthest_ahead_and_keeps_its_limit() {
    let tmp = tempfile::tempdir().unwrap();
    let pieces: Vec<Piece> = (0..6).map(|i| piece(i, 100)).collect();
    let cache = Cache::open(tmp.path().to_path_buf(), Some(300), pieces).unwrap();
    // Next uses: piece i at time 10 - i (piece 0 furthest ahead).
    let rank = |i: usize| 10 - i as u64;
    let mut st = cache.lock();
    for i in 0..3 {
        assert_eq!(cache.claim(&mut st, i, None, false, &rank), Claim::Fetch);
    }
    drop(st);
    for i in 0..3 {
        cache.store(i, &[7u8; 100]).unwrap();
        cache.finish(i, Ok(()));
    }
    let mut st = cache.lock();
    assert_eq!(cache.claim(&mut st, 1, None, false, &rank), Claim::Ready);
    st.pinned[0] = 1;
    // Full: piece 0 is furthest ahead but pinned, so piece 1 goes.
    assert_eq!(cache.claim(&mut st, 3, None, false, &rank), Claim::Fetch);
    assert!(st.present[0] && !st.present[1] && st.present[2]);
    assert!(!tmp.path().join(&cache.pieces[1].file).exists());
    assert!(st.used <= cache.limit);
    // Everything pinned or in flight: wait; a stalled reader goes past
    // the limit instead, counted.
    st.pinned[2] = 1;
    assert_eq!(cache.claim(&mut st, 4, None, false, &rank), Claim::Wait);
    assert_eq!(cache.claim(&mut st, 5, None, true, &rank), Claim::Fetch);
    assert_eq!((st.overruns, st.used), (1, 400));
    st.fetching[5] = false;
    st.in_flight -= 100;
    st.used -= 100;
    // A horizon already full of fetches: wait too.
    st.pinned[2] = 0;
    assert_eq!(
        cache.claim(&mut st, 4, Some(150), false, &rank),
        Claim::Wait
    );
    drop(st);
    // A file it did not write stays.
    std::fs::write(tmp.path().join("notes.txt"), b"mine").unwrap();
    let pieces: Vec<Piece> = (0..6).map(|i| piece(i, 100)).collect();
    let reopened = Cache::open(tmp.path().to_path_buf(), Some(100), pieces).unwrap();
    assert!(reopened.lock().used <= 100);
    assert!(tmp.path().join("notes.txt").exists());
}

#[test]
fn error_answers_are_retried_or_refused_naming_the_object() {
    let location = Location::parse("http://127.0.0.1:9/set").unwrap();
    let store = Store::connect(&location, std::time::Duration::from_secs(1)).unwrap();
    let answer = |status: &str| object_store::Error::Generic {
        store: "S3",
        source: format!(
            "Error performing GET http://127.0.0.1:9/set/shard-00023.bshard in 4ms - \
             Server returned non-2xx status code: {status}: <Error/>"
        )
        .into(),
    };
    for status in [
        "500 Internal Server Error",
        "503 Service Unavailable",
        "429 Too Many Requests",
    ] {
        let got = store.classify("shard-00023.bshard", answer(status));
        assert!(matches!(got, Failure::Transient(_)), "{status}");
    }
    // Not retried: the bytes asked for lie past the object's end (a read
    // after open calls that a changed object: tests/remote.rs).
    match store.classify("shard-00023.bshard", answer("416 Range Not Satisfiable")) {
        Failure::Fatal(e @ RemoteError::PastEnd { .. }) => {
            let message = e.to_string();
            assert!(
                message.contains("http://127.0.0.1:9/set/shard-00023.bshard"),
                "{message}"
            );
            assert!(message.contains("past its end (416"), "{message}");
        }
        Failure::Fatal(e) => panic!("416 classified as {e}"),
        Failure::Transient(why) => panic!("416 retried: {why}"),
    }
    let got = store.classify("shard-00023.bshard", answer("400 Bad Request"));
    assert!(matches!(got, Failure::Fatal(RemoteError::Refused { .. })));
}
