//! The cache folder of one remote dataset: which pieces are on disk, the
//! bytes they take against the limit, which are being fetched, which are
//! pinned (a loader will read them soon), and eviction.
//!
//! Files: `<shard file>.<index crc32>.<first>-<end>` for a piece holding
//! records `first..end` of that shard, and `<that>.partial-<pid>` while it
//! is written. Nothing else in the folder is touched, so the cache never
//! deletes a file it did not write; the index checksum in the name keeps
//! a rewritten dataset's pieces apart from the old ones.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

use super::RemoteError;

/// One piece: consecutive records of one shard, one ranged request.
#[derive(Debug, Clone)]
pub(crate) struct Piece {
    pub(crate) shard: usize,
    /// Records `first..end` of the shard.
    pub(crate) first: usize,
    pub(crate) end: usize,
    /// The global index of record `first`.
    pub(crate) global_first: u64,
    /// The bytes of the shard file the records occupy.
    pub(crate) start: u64,
    pub(crate) len: u64,
    /// The file name in the cache folder.
    pub(crate) file: String,
}

/// What is true of the cache now.
#[derive(Debug, Default)]
pub(crate) struct State {
    /// Per piece: on disk.
    pub(crate) present: Vec<bool>,
    /// Per piece: a fetch is under way.
    pub(crate) fetching: Vec<bool>,
    /// Per piece: reads promised by loaders (planned or waiting).
    pub(crate) pinned: Vec<u32>,
    /// Per piece: fetched again after a checksum failure (once only).
    pub(crate) refetched: Vec<bool>,
    /// Bytes on disk plus bytes being fetched.
    pub(crate) used: u64,
    /// Bytes being fetched.
    pub(crate) in_flight: u64,
    /// The error that stopped fetching, for every waiting reader.
    pub(crate) failed: Option<RemoteError>,
    /// The most `used` has been.
    pub(crate) peak: u64,
    pub(crate) evicted: u64,
    pub(crate) fetched: u64,
    /// Fetches past the limit by stalled readers.
    pub(crate) overruns: u64,
    /// Per piece: how many times it has been stored (a reader that met a
    /// bad copy tells a replaced one from the same one by it).
    pub(crate) generation: Vec<u64>,
}

/// What [`Cache::claim`] decided about a piece.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Claim {
    /// On disk or being fetched: nothing to do but wait for it.
    Ready,
    /// The caller fetches it now.
    Fetch,
    /// No room yet (the horizon is full, or every cached piece is
    /// pinned): ask again later.
    Wait,
}

/// The cache of one dataset: its folder, limit and [`State`].
pub(crate) struct Cache {
    pub(crate) dir: PathBuf,
    pub(crate) limit: u64,
    pub(crate) pieces: Vec<Piece>,
    state: Mutex<State>,
    changed: Condvar,
}

impl Cache {
    /// The cache in `dir` (created if absent) for `pieces`: pieces already
    /// there of the right size count as present; partial files left by a
    /// process that is gone are removed; if what is there exceeds `limit`
    /// the surplus is evicted.
    pub(crate) fn open(
        dir: PathBuf,
        limit: Option<u64>,
        pieces: Vec<Piece>,
    ) -> Result<Cache, RemoteError> {
        let local = |detail: String| RemoteError::Local {
            path: dir.clone(),
            detail,
        };
        std::fs::create_dir_all(&dir).map_err(|e| local(format!("cannot create: {e}")))?;
        let n = pieces.len();
        let mut state = State {
            present: vec![false; n],
            fetching: vec![false; n],
            pinned: vec![0; n],
            refetched: vec![false; n],
            generation: vec![0; n],
            ..State::default()
        };
        let by_name: HashMap<&str, usize> = pieces
            .iter()
            .enumerate()
            .map(|(i, p)| (p.file.as_str(), i))
            .collect();
        let entries = std::fs::read_dir(&dir).map_err(|e| local(e.to_string()))?;
        for entry in entries {
            let entry = entry.map_err(|e| local(e.to_string()))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(&i) = by_name.get(name.as_str()) {
                let len = entry.metadata().map_err(|e| local(e.to_string()))?.len();
                if len == pieces[i].len {
                    state.present[i] = true;
                    state.used += len;
                }
            } else if let Some((stem, _)) = name.rsplit_once(".partial-")
                && by_name.contains_key(stem)
                && entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age > STALE)
            {
                // A fetch cut off by the death of its process: a live one
                // writes a piece in seconds, on whichever machine shares
                // the folder, so age tells where a process id cannot.
                let _ = std::fs::remove_file(entry.path());
            }
        }
        let total: u64 = pieces.iter().map(|p| p.len).sum();
        let limit = match limit {
            Some(l) => l,
            None => {
                let free = free_space(&dir).unwrap_or(u64::MAX);
                total.min((free.saturating_add(state.used) / 5).saturating_mul(4))
            }
        };
        state.peak = state.used;
        let cache = Cache {
            dir,
            limit,
            pieces,
            state: Mutex::new(state),
            changed: Condvar::new(),
        };
        {
            let mut st = cache.lock();
            while st.used > cache.limit {
                let Some(victim) = (0..n).rev().find(|&i| st.present[i]) else {
                    break;
                };
                cache.evict(&mut st, victim);
            }
        }
        Ok(cache)
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        match self.state.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Wakes everyone waiting on the state.
    pub(crate) fn notify(&self) {
        self.changed.notify_all();
    }

    /// Waits for a change (or `timeout`), releasing the lock meanwhile.
    pub(crate) fn wait<'a>(
        &self,
        guard: MutexGuard<'a, State>,
        timeout: Duration,
    ) -> MutexGuard<'a, State> {
        match self.changed.wait_timeout(guard, timeout) {
            Ok((g, _)) => g,
            Err(p) => p.into_inner().0,
        }
    }

    /// `n` more reads of piece `i` to come: it is not evicted meanwhile.
    pub(crate) fn pin(&self, i: usize, n: u32) {
        self.lock().pinned[i] += n;
    }

    /// `n` reads of piece `i` done (or given up); wakes the waiting.
    pub(crate) fn unpin(&self, i: usize, n: u32) {
        let mut st = self.lock();
        st.pinned[i] = st.pinned[i].saturating_sub(n);
        drop(st);
        self.notify();
    }

    pub(crate) fn path_of(&self, piece: usize) -> PathBuf {
        self.dir.join(&self.pieces[piece].file)
    }

    /// Drops piece `i` from the count when its file has gone (removed by
    /// another run sharing the folder).
    pub(crate) fn forget(&self, st: &mut State, i: usize) {
        if st.present[i] {
            st.present[i] = false;
            st.used -= self.pieces[i].len;
        }
    }

    /// Removes piece `i`'s file and its bytes from the count.
    pub(crate) fn evict(&self, st: &mut State, i: usize) {
        if st.present[i] {
            let _ = std::fs::remove_file(self.path_of(i));
            st.present[i] = false;
            st.used -= self.pieces[i].len;
            st.evicted += 1;
        }
    }

    /// Decides what to do about piece `i` (see [`Claim`]); on
    /// [`Claim::Fetch`] its bytes count as in flight from now. To make
    /// room, the unpinned piece with the largest `rank` (the one needed
    /// furthest ahead) is evicted first. A `stalled` reader (one whose
    /// workers have waited a while, which happens only when two loaders'
    /// pins fill the cache together) fetches past the limit rather than
    /// wait for pins that may not be released before it reads; counted.
    pub(crate) fn claim(
        &self,
        st: &mut State,
        i: usize,
        horizon: Option<u64>,
        stalled: bool,
        rank: &dyn Fn(usize) -> u64,
    ) -> Claim {
        if st.present[i] || st.fetching[i] {
            return Claim::Ready;
        }
        let len = self.pieces[i].len;
        if let Some(h) = horizon
            && st.in_flight > 0
            && st.in_flight + len > h
        {
            return Claim::Wait;
        }
        while st.used + len > self.limit {
            let victim = (0..self.pieces.len())
                .filter(|&j| st.present[j] && st.pinned[j] == 0 && j != i)
                .max_by_key(|&j| rank(j));
            match victim {
                Some(j) => self.evict(st, j),
                // Pieces being fetched or pinned hold the room; once the
                // cache holds nothing else, one piece may overrun a limit
                // smaller than itself rather than wait for ever.
                None if st.used == 0 => break,
                None if stalled => {
                    st.overruns += 1;
                    break;
                }
                None => return Claim::Wait,
            }
        }
        st.fetching[i] = true;
        st.in_flight += len;
        st.used += len;
        st.peak = st.peak.max(st.used);
        Claim::Fetch
    }

    /// Records the end of piece `i`'s fetch.
    pub(crate) fn finish(&self, i: usize, result: Result<(), RemoteError>) {
        let mut st = self.lock();
        let len = self.pieces[i].len;
        st.fetching[i] = false;
        st.in_flight -= len;
        match result {
            Ok(()) => {
                st.present[i] = true;
                st.fetched += 1;
                st.generation[i] += 1;
            }
            Err(e) => {
                st.used -= len;
                if st.failed.is_none() {
                    st.failed = Some(e);
                }
            }
        }
        drop(st);
        self.notify();
    }

    /// Writes `bytes` as piece `i`: a temporary file, synced, renamed into
    /// place.
    pub(crate) fn store(&self, i: usize, bytes: &[u8]) -> Result<(), RemoteError> {
        let path = self.path_of(i);
        let tmp = PathBuf::from(format!("{}.partial-{}", path.display(), std::process::id()));
        let local = |p: &Path, e: std::io::Error| RemoteError::Local {
            path: p.to_path_buf(),
            detail: e.to_string(),
        };
        let mut file = std::fs::File::create(&tmp).map_err(|e| local(&tmp, e))?;
        std::io::Write::write_all(&mut file, bytes).map_err(|e| local(&tmp, e))?;
        file.sync_data().map_err(|e| local(&tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| local(&path, e))
    }
}

/// The age past which a partial file is a dead fetch's.
const STALE: Duration = Duration::from_secs(3600);

/// Free bytes on the file system holding `dir`.
fn free_space(dir: &Path) -> Option<u64> {
    let s = rustix::fs::statvfs(dir).ok()?;
    Some(s.f_bavail.saturating_mul(s.f_frsize))
}
