//! A remote dataset: its store, the shards' ETags, the pieces and their
//! cache; fetching a piece and reading a record out of the cache.

use std::collections::HashMap;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{StreamExt, TryStreamExt};

use super::cache::{Cache, Claim, Piece};
use super::store::Store;
use super::{Location, RemoteError, RemoteOptions};
use crate::data::shard::manifest::{MANIFEST_FILE, Manifest};
use crate::data::shard::{Dataset, ENTRY_LEN, HEADER_LEN, RecordMeta, Shard, ShardError};

/// A remote dataset's store and cache (held by its [`Dataset`]).
pub struct Remote {
    store: Arc<Store>,
    cache: Cache,
    /// Per shard: its object name and the ETag read at open.
    objects: Vec<(String, Option<String>)>,
    /// The shards' indexes (shared with the [`Dataset`]).
    shards: Arc<Vec<Shard>>,
    horizon: u64,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Remote({})", self.cache.dir.display())
    }
}

/// What the remote source did so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct NetStats {
    /// Requests sent (retries included).
    pub requests: u64,
    /// Bytes received.
    pub bytes: u64,
    /// Requests repeated after a transient failure.
    pub retries: u64,
    /// Pieces fetched into the cache.
    pub pieces_fetched: u64,
    /// Pieces fetched again after a cached copy failed its checksum.
    pub refetched: u64,
    /// Pieces evicted to stay within the limit.
    pub evicted: u64,
    /// Bytes the cache holds now, and its most.
    pub cache_bytes: u64,
    pub cache_peak: u64,
    pub cache_limit: u64,
    /// Fetches past the limit by readers stalled for room (two loaders
    /// sharing the cache whose pins fill it together).
    pub over_limit: u64,
}

/// Opens the remote dataset at `location` (manifest, every shard's header
/// and index: two ranged requests a shard, sixteen at a time).
pub(super) fn open(location: &Location, opts: &RemoteOptions) -> Result<Dataset, ShardError> {
    let store = Arc::new(Store::connect(location, opts.deadline)?);
    let manifest_url = store.url_of(MANIFEST_FILE);
    let fetched = store.block_on(store.get(MANIFEST_FILE, None, None))?;
    let manifest = Manifest::parse(&fetched.bytes, Path::new(&manifest_url))?;
    // Shard names become cache file names: plain names only.
    if let Some(bad) = manifest
        .shards
        .iter()
        .find(|s| s.file.is_empty() || s.file.starts_with('.') || s.file.contains(['/', '\\']))
    {
        return Err(ShardError::ManifestMismatch {
            path: PathBuf::from(&manifest_url),
            what: format!("shard name {:?} is not a plain file name", bad.file),
        });
    }
    let heads = store.block_on(
        futures_util::stream::iter(manifest.shards.iter().map(|info| {
            let store = Arc::clone(&store);
            async move {
                let index_len = info.num_records.saturating_mul(ENTRY_LEN as u64);
                let index_at = info.bytes.saturating_sub(index_len);
                let header = store
                    .get(&info.file, Some(0..HEADER_LEN as u64), None)
                    .await?;
                // Checked before the index is asked for at the end the
                // manifest gives (as the local open checks the file).
                if header.size != info.bytes {
                    return Err(ShardError::ManifestMismatch {
                        path: PathBuf::from(store.url_of(&info.file)),
                        what: format!(
                            "shard is {} bytes, the manifest says {}",
                            header.size, info.bytes
                        ),
                    });
                }
                let index = if index_len == 0 {
                    Vec::new()
                } else {
                    store
                        .get(
                            &info.file,
                            Some(index_at..info.bytes),
                            header.etag.as_deref(),
                        )
                        .await?
                        .bytes
                };
                Ok::<_, ShardError>((header, index))
            }
        }))
        .buffered(16)
        .try_collect::<Vec<_>>(),
    )?;
    let mut shards = Vec::with_capacity(heads.len());
    let mut objects = Vec::with_capacity(heads.len());
    for (info, (header, index)) in manifest.shards.iter().zip(heads) {
        let name = store.url_of(&info.file);
        shards.push(Shard::from_parts(
            PathBuf::from(&name),
            &header.bytes,
            index,
            header.size,
        )?);
        objects.push((info.file.clone(), header.etag));
    }
    let pieces = pieces(&manifest, &shards, opts.piece_records.max(1))?;
    let shards = Arc::new(shards);
    let dir = opts.cache_dir.join(cache_folder(location));
    let cache = Cache::open(dir, opts.cache_limit, pieces)?;
    let remote = Remote {
        store,
        cache,
        objects,
        shards: Arc::clone(&shards),
        horizon: opts.horizon,
    };
    Dataset::assemble(
        PathBuf::from(location.to_string()),
        manifest,
        shards,
        Some(Arc::new(remote)),
    )
}

/// `s3://bucket/a/b` -> `s3/bucket/a/b`: one readable folder per dataset.
fn cache_folder(location: &Location) -> PathBuf {
    let text = location.to_string();
    let (scheme, rest) = text.split_once("://").unwrap_or(("local", &text));
    let mut p = PathBuf::from(scheme);
    for part in rest.split('/').filter(|s| !s.is_empty() && *s != "..") {
        p.push(part.replace(':', "_"));
    }
    p
}

/// The pieces of the dataset: records grouped by `per` in global order
/// (so that a sampler block of `per` records is one piece, or two where
/// it crosses a shard's end), split at shard boundaries.
fn pieces(manifest: &Manifest, shards: &[Shard], per: usize) -> Result<Vec<Piece>, ShardError> {
    let per = per as u64;
    let mut out = Vec::new();
    let mut global = 0u64;
    for (k, (shard, info)) in shards.iter().zip(&manifest.shards).enumerate() {
        let n = shard.len() as u64;
        let mut first = 0u64;
        while first < n {
            let g = (global + first) / per;
            let end = ((g + 1) * per - global).min(n);
            let a = shard.meta(first as usize)?;
            let b = shard.meta(end as usize - 1)?;
            let (start, stop) = (a.offset, b.offset + b.len as u64);
            out.push(Piece {
                shard: k,
                first: first as usize,
                end: end as usize,
                global_first: global + first,
                start,
                len: stop - start,
                file: format!(
                    "{}.{:08x}.{first:06}-{end:06}",
                    info.file,
                    shard.index_crc32()
                ),
            });
            first = end;
        }
        global += n;
    }
    Ok(out)
}

impl Remote {
    /// The piece holding global record `record`.
    pub fn piece_of(&self, record: u64) -> usize {
        self.cache
            .pieces
            .partition_point(|p| p.global_first <= record)
            .saturating_sub(1)
    }

    /// The error that stopped fetching, if one did.
    pub fn failure(&self) -> Option<RemoteError> {
        self.cache.lock().failed.clone()
    }

    /// Bytes of piece `i`.
    pub fn piece_len(&self, i: usize) -> u64 {
        self.cache.pieces[i].len
    }

    /// Bytes the cache may hold.
    pub fn cache_limit(&self) -> u64 {
        self.cache.limit
    }

    /// The dataset's cache folder.
    pub fn cache_dir(&self) -> &Path {
        &self.cache.dir
    }

    /// Bytes of fetches kept in flight ahead of the workers.
    pub fn horizon(&self) -> u64 {
        self.horizon
    }

    /// Counters so far.
    pub fn stats(&self) -> NetStats {
        let st = self.cache.lock();
        let c = &self.store.counters;
        NetStats {
            requests: c.requests.load(Ordering::Relaxed),
            bytes: c.bytes.load(Ordering::Relaxed),
            retries: c.retries.load(Ordering::Relaxed),
            pieces_fetched: st.fetched,
            refetched: st.refetched.iter().filter(|&&r| r).count() as u64,
            evicted: st.evicted,
            cache_bytes: st.used - st.in_flight,
            cache_peak: st.peak,
            cache_limit: self.cache.limit,
            over_limit: st.overruns,
        }
    }

    /// Starts fetching piece `i` if it is neither cached nor on its way and
    /// there is room (`horizon`: the in-flight limit, `None` for a reader
    /// that must have it now; `rank`: how far ahead each piece is needed).
    /// False when there is no room yet.
    /// A `stalled` caller may fetch past the limit ([`Cache::claim`]).
    pub fn request(
        self: &Arc<Self>,
        i: usize,
        horizon: Option<u64>,
        stalled: bool,
        rank: &dyn Fn(usize) -> u64,
    ) -> Result<bool, RemoteError> {
        let mut st = self.cache.lock();
        if let Some(e) = &st.failed {
            return Err(e.clone());
        }
        match self.cache.claim(&mut st, i, horizon, stalled, rank) {
            Claim::Ready => Ok(true),
            Claim::Wait => Ok(false),
            Claim::Fetch => {
                drop(st);
                let mut guard = Fetching {
                    remote: Some(Arc::clone(self)),
                    piece: i,
                };
                self.store.spawn(async move {
                    if let Some(remote) = guard.remote.clone() {
                        let result = remote.fetch(i).await;
                        remote.cache.finish(i, result);
                        // Recorded: nothing left for the guard to do.
                        drop(guard.remote.take());
                    }
                });
                Ok(true)
            }
        }
    }

    /// Fetches piece `i` (one ranged request, retried), checks every
    /// record against the index, fetches once more if one fails, and
    /// stores it. A piece whose records fail twice is stored as it is:
    /// the damage is the source's, and readers meet it as damaged records.
    async fn fetch(&self, i: usize) -> Result<(), RemoteError> {
        let p = &self.cache.pieces[i];
        let (name, etag) = &self.objects[p.shard];
        let range = p.start..p.start + p.len;
        let mut bytes = self
            .store
            .get(name, Some(range.clone()), etag.as_deref())
            .await?
            .bytes;
        if bytes.len() as u64 != p.len {
            return Err(RemoteError::Refused {
                object: self.store.url_of(name),
                detail: format!(
                    "bytes {}..{} requested, {} received",
                    range.start,
                    range.end,
                    bytes.len()
                ),
            });
        }
        if !self.piece_verifies(i, &bytes) {
            self.cache.lock().refetched[i] = true;
            bytes = self
                .store
                .get(name, Some(range), etag.as_deref())
                .await?
                .bytes;
        }
        self.cache.store(i, &bytes)
    }

    /// Whether every record of piece `i` in `bytes` matches its checksum.
    fn piece_verifies(&self, i: usize, bytes: &[u8]) -> bool {
        let p = &self.cache.pieces[i];
        let shard = &self.shards[p.shard];
        (p.first..p.end).all(|r| {
            shard.meta(r).is_ok_and(|m| {
                let at = (m.offset - p.start) as usize;
                bytes
                    .get(at..at + m.len as usize)
                    .is_some_and(|b| shard.check_crc(r, &m, b).is_ok())
            })
        })
    }
}

impl Remote {
    /// Reads record `local` of shard `shard` (`meta` from its index), which
    /// lies in piece `p`, into `buf` out of the cache, fetching the piece
    /// if it is not there (the caller holds a pin on it), and checks it
    /// against its checksum. A cached copy that fails is evicted and
    /// fetched again once; failing again, it is the damaged record the
    /// shard reader reports. Returns the time spent waiting for the
    /// network. `stop` ends a wait early (the loader is stopping).
    #[allow(clippy::too_many_arguments)]
    pub fn read_into(
        self: &Arc<Self>,
        p: usize,
        shard: usize,
        local: usize,
        meta: &RecordMeta,
        buf: &mut Vec<u8>,
        stop: &dyn Fn() -> bool,
    ) -> Result<Duration, ShardError> {
        let piece = &self.cache.pieces[p];
        let mut waited = Duration::ZERO;
        loop {
            let t = Instant::now();
            let mut st = self.cache.lock();
            let mut blocked = false;
            loop {
                if let Some(e) = &st.failed {
                    return Err(e.clone().into());
                }
                if st.present[p] {
                    break;
                }
                if !st.fetching[p] {
                    drop(st);
                    let stalled = t.elapsed() >= STALLED;
                    let started = self.request(p, None, stalled, &|_| 0)?;
                    st = self.cache.lock();
                    if started {
                        continue;
                    }
                }
                if stop() {
                    return Err(RemoteError::Stopped.into());
                }
                blocked = true;
                st = self.cache.wait(st, Duration::from_millis(20));
            }
            let generation = st.generation[p];
            drop(st);
            if blocked {
                waited += t.elapsed();
            }
            let path = self.cache.path_of(p);
            let file = match std::fs::File::open(&path) {
                Ok(f) => f,
                // Evicted by another run sharing the folder: fetch again.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    let mut st = self.cache.lock();
                    self.cache.forget(&mut st, p);
                    continue;
                }
                Err(e) => return Err(local_error(&path, e).into()),
            };
            buf.resize(meta.len as usize, 0);
            file.read_exact_at(buf, meta.offset - piece.start)
                .map_err(|e| local_error(&path, e))?;
            let Err(damaged) = self.shards[shard].check_crc(local, meta, buf) else {
                return Ok(waited);
            };
            let mut st = self.cache.lock();
            if st.generation[p] != generation || !st.present[p] {
                // Replaced (or being replaced) since this copy was read.
                continue;
            }
            if st.refetched[p] {
                return Err(damaged);
            }
            // The cached copy is bad (the fetch checked it): once more.
            st.refetched[p] = true;
            self.cache.evict(&mut st, p);
        }
    }

    /// Global record `record` of `dataset` (this remote's dataset) read
    /// into `buf` and checked, for a reader outside a loader: the piece is
    /// pinned for the read and fetched if needed.
    pub fn read_record(
        self: &Arc<Self>,
        dataset: &Dataset,
        record: u64,
        buf: &mut Vec<u8>,
    ) -> Result<RecordMeta, ShardError> {
        let (shard, local) = dataset.locate(record)?;
        let meta = dataset.shards()[shard].meta(local)?;
        let p = self.piece_of(record);
        self.cache.pin(p, 1);
        let read = self.read_into(p, shard, local, &meta, buf, &|| false);
        self.cache.unpin(p, 1);
        read.map(|_| meta)
    }
}

/// How long a reader waits for room before it may fetch past the limit.
pub const STALLED: Duration = Duration::from_secs(1);

/// A fetch on its way: if its task ends without recording the end (a
/// panic), dropping this records a failure, so that no reader waits for
/// ever.
struct Fetching {
    /// Taken by the task that records the end.
    remote: Option<Arc<Remote>>,
    piece: usize,
}

impl Drop for Fetching {
    fn drop(&mut self) {
        if let Some(remote) = self.remote.take() {
            let shard = remote.cache.pieces[self.piece].shard;
            let object = remote.store.url_of(&remote.objects[shard].0);
            let detail = "the fetch stopped unexpectedly".to_string();
            remote
                .cache
                .finish(self.piece, Err(RemoteError::Refused { object, detail }));
        }
    }
}

fn local_error(path: &Path, e: std::io::Error) -> RemoteError {
    RemoteError::Local {
        path: path.to_path_buf(),
        detail: e.to_string(),
    }
}

/// The pins one reader (a loader, or one read) holds on pieces: a pinned
/// piece is not evicted. Dropping it releases what is left.
pub struct Pins {
    remote: Arc<Remote>,
    mine: Mutex<HashMap<usize, u32>>,
}

impl Pins {
    pub fn new(remote: Arc<Remote>) -> Pins {
        Pins {
            remote,
            mine: Mutex::new(HashMap::new()),
        }
    }

    pub fn remote(&self) -> &Arc<Remote> {
        &self.remote
    }

    fn mine(&self) -> std::sync::MutexGuard<'_, HashMap<usize, u32>> {
        match self.mine.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// One more read of piece `p` to come.
    pub fn pin(&self, p: usize) {
        *self.mine().entry(p).or_insert(0) += 1;
        self.remote.cache.pin(p, 1);
    }

    /// One read of piece `p` done.
    pub fn unpin(&self, p: usize) {
        let mut mine = self.mine();
        match mine.get_mut(&p) {
            Some(n) if *n > 1 => *n -= 1,
            Some(_) => {
                mine.remove(&p);
            }
            None => return,
        }
        drop(mine);
        self.remote.cache.unpin(p, 1);
    }

    /// Wakes every reader waiting on the cache.
    pub fn notify(&self) {
        self.remote.cache.notify();
    }

    /// Waits (up to `timeout`) for the cache to change.
    pub fn wait_change(&self, timeout: Duration) {
        let st = self.remote.cache.lock();
        drop(self.remote.cache.wait(st, timeout));
    }
}

impl Drop for Pins {
    fn drop(&mut self) {
        for (p, n) in std::mem::take(&mut *self.mine()) {
            self.remote.cache.unpin(p, n);
        }
    }
}

/// [`super::upload`].
pub(super) fn upload(
    dir: &Path,
    location: &Location,
    opts: &RemoteOptions,
    progress: &dyn crate::progress::Progress,
) -> Result<(usize, u64), ShardError> {
    let store = Arc::new(Store::connect(location, opts.deadline)?);
    let manifest = Manifest::read(&dir.join(MANIFEST_FILE))?;
    let mut names: Vec<&str> = manifest.shards.iter().map(|s| s.file.as_str()).collect();
    let rejects = crate::prep::shardify::REJECTS_FILE;
    if dir.join(rejects).exists() {
        names.push(rejects);
    }
    names.push(MANIFEST_FILE);
    let total: u64 = manifest.shards.iter().map(|s| s.bytes).sum();
    progress.begin("upload", total, 0);
    let mut bytes = 0u64;
    for name in &names {
        let path = dir.join(name);
        let len = std::fs::metadata(&path)
            .map_err(crate::error::IoError::at(&path))?
            .len();
        store.put_file(&path, name)?;
        bytes += len;
        if manifest.shards.iter().any(|s| s.file == *name) {
            progress.advance(len);
        }
    }
    progress.finish();
    Ok((names.len(), bytes))
}
