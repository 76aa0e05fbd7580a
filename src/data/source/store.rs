//! The object-store client: `object_store` on a small tokio runtime of its
//! own, with barlow's retry policy (backoff, resumed ranges, a deadline)
//! and counters. Callers are plain threads; they block on the runtime.

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use object_store::aws::AmazonS3ConfigKey;
use object_store::azure::AzureConfigKey;
use object_store::client::{HttpError, HttpErrorKind};
use object_store::gcp::GoogleConfigKey;
use object_store::path::Path as ObjectPath;
use object_store::{
    ClientConfigKey, ClientOptions, GetOptions, GetRange, ObjectMeta, ObjectStore, ObjectStoreExt,
    RetryConfig, WriteMultipart,
};

use super::{Location, RemoteError};

/// A remote prefix: the store, the prefix's objects' names and the retry
/// policy.
pub(crate) struct Store {
    store: Arc<dyn ObjectStore>,
    /// Always `Some` but in `drop`.
    runtime: Option<tokio::runtime::Runtime>,
    /// `scheme://bucket/prefix`, for messages.
    url: String,
    prefix: String,
    deadline: Duration,
    pub(crate) counters: Arc<Counters>,
}

/// What the client did, summed over the run.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) requests: AtomicU64,
    pub(crate) bytes: AtomicU64,
    pub(crate) retries: AtomicU64,
}

/// A read's bytes, and the object's ETag and whole size as the server
/// sent them.
pub(crate) struct Fetched {
    pub(crate) bytes: Vec<u8>,
    pub(crate) etag: Option<String>,
    pub(crate) size: u64,
}

impl Fetched {
    fn new(bytes: Vec<u8>, meta: ObjectMeta) -> Fetched {
        Fetched {
            bytes,
            etag: meta.e_tag,
            size: meta.size,
        }
    }
}

/// Whether a failed request is worth repeating.
pub(super) enum Failure {
    /// Connection errors, 5xx, 429, time-outs: retried until the deadline.
    Transient(String),
    /// Refused or absent: no retry helps.
    Fatal(RemoteError),
}

/// The idle time after which a request that sends nothing is abandoned
/// (and retried): a server that hangs is a failure, not a wait.
const IDLE: Duration = Duration::from_secs(30);

impl Store {
    /// A client for `location`'s store (credentials and endpoints from the
    /// cloud's usual environment variables); `deadline` bounds how long a
    /// request is retried.
    pub(crate) fn connect(location: &Location, deadline: Duration) -> Result<Store, RemoteError> {
        let Location::Remote(url) = location else {
            return Err(RemoteError::Url {
                url: location.to_string(),
                reason: "not a remote location".into(),
            });
        };
        let bad = |reason: String| RemoteError::Url {
            url: url.to_string(),
            reason,
        };
        // barlow retries itself (counted, resuming partial ranges, up to
        // the deadline); the client's own retries are off.
        let retry = RetryConfig {
            max_retries: 0,
            ..RetryConfig::default()
        };
        // Time-outs through the config keys, which keep what the
        // environment set (AWS_ALLOW_HTTP and the like): a stalled body is
        // caught by barlow's own idle time-out, a dead server by the
        // connect time-out.
        let timeouts = [
            (ClientConfigKey::ConnectTimeout, "10 seconds"),
            (ClientConfigKey::Timeout, "1 hour"),
        ];
        // A cloud's builder, from the environment, with the time-outs, the
        // URL and no retries of its own.
        macro_rules! cloud {
            ($builder:ty, $key:path) => {
                Arc::new(
                    timeouts
                        .iter()
                        .fold(<$builder>::from_env(), |b, (k, v)| {
                            b.with_config($key(*k), *v)
                        })
                        .with_url(url.as_str())
                        .with_retry(retry)
                        .build()
                        .map_err(|e| bad(e.to_string()))?,
                )
            };
        }
        let store: Arc<dyn ObjectStore> = match url.scheme() {
            "s3" | "s3a" => cloud!(
                object_store::aws::AmazonS3Builder,
                AmazonS3ConfigKey::Client
            ),
            "gs" => cloud!(
                object_store::gcp::GoogleCloudStorageBuilder,
                GoogleConfigKey::Client
            ),
            "az" | "azure" | "abfs" | "abfss" => cloud!(
                object_store::azure::MicrosoftAzureBuilder,
                AzureConfigKey::Client
            ),
            "http" | "https" => Arc::new(
                object_store::http::HttpBuilder::new()
                    .with_url(&url[..url::Position::BeforePath])
                    .with_retry(retry)
                    .with_client_options(
                        timeouts
                            .iter()
                            .fold(ClientOptions::new(), |o, (k, v)| o.with_config(*k, *v))
                            .with_allow_http(true),
                    )
                    .build()
                    .map_err(|e| bad(e.to_string()))?,
            ),
            other => return Err(bad(format!("unknown scheme {other:?}"))),
        };
        // For buckets the host is the bucket and the path the prefix in
        // it; for http(s) the path is the prefix under the host.
        let prefix = url.path().trim_matches('/').to_string();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("barlow-fetch")
            .enable_all()
            .build()
            .map_err(|e| bad(format!("cannot start the fetch runtime: {e}")))?;
        Ok(Store {
            store,
            runtime: Some(runtime),
            url: url.as_str().trim_end_matches('/').to_string(),
            prefix,
            deadline,
            counters: Arc::default(),
        })
    }

    /// The full name of object `name` under the prefix, for messages.
    pub(crate) fn url_of(&self, name: &str) -> String {
        format!("{}/{name}", self.url)
    }

    fn path_of(&self, name: &str) -> ObjectPath {
        if self.prefix.is_empty() {
            ObjectPath::from(name)
        } else {
            ObjectPath::from(format!("{}/{name}", self.prefix))
        }
    }

    /// Runs `f` on the store's runtime from a plain thread.
    pub(crate) fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        match &self.runtime {
            Some(rt) => rt.block_on(f),
            None => unreachable!("the runtime lives until the store is dropped"),
        }
    }

    /// Starts `f` on the runtime without waiting for it.
    pub(crate) fn spawn<F>(&self, f: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        if let Some(rt) = &self.runtime {
            rt.spawn(f);
        }
    }

    /// Bytes `range` of object `name` (all of it when `None`; a range past
    /// the object's end is cut at its end), retried with backoff on
    /// transient failures until the deadline; a read cut off mid-body
    /// continues from the last byte received. Every answer's ETag must
    /// match the first one's. `etag`, given for reads after the dataset's
    /// open, must match too, and the object must still hold the whole
    /// range: an object changed, cut short or removed since is an error.
    pub(crate) async fn get(
        self: &Arc<Self>,
        name: &str,
        range: Option<Range<u64>>,
        etag: Option<&str>,
    ) -> Result<Fetched, RemoteError> {
        let path = self.path_of(name);
        let changed = |detail: String| RemoteError::Changed {
            object: self.url_of(name),
            detail,
        };
        let mut out = Vec::with_capacity(range.as_ref().map_or(0, |r| (r.end - r.start) as usize));
        // The first answer's metadata, once one came.
        let mut seen: Option<ObjectMeta> = None;
        let mut retry = Retry::default();
        loop {
            // Whether `out` holds all the object's bytes of the range, once
            // its size is known.
            let complete = |out: &Vec<u8>, size: u64| {
                let (start, end) = range.as_ref().map_or((0, size), |r| (r.start, r.end));
                out.len() as u64 == end.min(size).saturating_sub(start)
            };
            // A body cut off after its last byte: nothing left to ask for.
            if let Some(meta) = &seen
                && complete(&out, meta.size)
            {
                return Ok(Fetched::new(out, meta.clone()));
            }
            let done = out.len() as u64;
            let want = range
                .as_ref()
                .map(|r| GetRange::Bounded(r.start + done..r.end))
                .or((done > 0).then_some(GetRange::Offset(done)));
            let failure = match self.get_once(&path, name, want, &mut out).await {
                Err(failure) => failure,
                Ok((meta, body)) => {
                    let expected = etag.or(seen.as_ref().and_then(|m| m.e_tag.as_deref()));
                    if let (Some(expected), Some(found)) = (expected, meta.e_tag.as_deref())
                        && expected != found
                    {
                        return Err(changed(format!("ETag {expected} at open, {found} now")));
                    }
                    if let (Some(_), Some(r)) = (etag, &range)
                        && meta.size < r.end
                    {
                        return Err(changed(format!(
                            "it is {} bytes now, shorter than at open",
                            meta.size
                        )));
                    }
                    let meta = seen.get_or_insert(meta);
                    match body {
                        Ok(()) if complete(&out, meta.size) => {
                            return Ok(Fetched::new(out, meta.clone()));
                        }
                        Ok(()) => {
                            Failure::Transient(format!("the body ended after {} bytes", out.len()))
                        }
                        Err(failure) => failure,
                    }
                }
            };
            let failure = match failure {
                // Read at open, and now gone or shorter than a range within
                // its length then.
                Failure::Fatal(RemoteError::NotFound { .. }) if etag.is_some() => {
                    return Err(changed("it is gone (404)".into()));
                }
                Failure::Fatal(RemoteError::PastEnd { .. }) if etag.is_some() => {
                    return Err(changed("it is shorter than at open (416)".into()));
                }
                Failure::Fatal(e) => return Err(e),
                Failure::Transient(why) => why,
            };
            retry.back_off(self, name, failure).await?;
        }
    }

    /// One request, appending the body to `out`: with an answer, the
    /// object's metadata and how its body ended; else why none came.
    async fn get_once(
        &self,
        path: &ObjectPath,
        name: &str,
        range: Option<GetRange>,
        out: &mut Vec<u8>,
    ) -> Result<(ObjectMeta, Result<(), Failure>), Failure> {
        self.counters.requests.fetch_add(1, Ordering::Relaxed);
        let opts = GetOptions {
            range,
            ..GetOptions::default()
        };
        let result = match tokio::time::timeout(IDLE, self.store.get_opts(path, opts)).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => return Err(self.classify(name, e)),
            Err(_) => return Err(Failure::Transient(format!("no answer in {IDLE:?}"))),
        };
        let meta = result.meta.clone();
        let mut body = result.into_stream();
        let end = loop {
            match tokio::time::timeout(IDLE, body.next()).await {
                Ok(Some(Ok(chunk))) => {
                    self.counters
                        .bytes
                        .fetch_add(chunk.len() as u64, Ordering::Relaxed);
                    out.extend_from_slice(&chunk);
                }
                Ok(None) => break Ok(()),
                Ok(Some(Err(e))) => break Err(self.classify(name, e)),
                Err(_) => break Err(Failure::Transient(format!("the body stalled for {IDLE:?}"))),
            }
        };
        Ok((meta, end))
    }

    pub(super) fn classify(&self, name: &str, e: object_store::Error) -> Failure {
        let object = self.url_of(name);
        match e {
            object_store::Error::NotFound { .. } => {
                Failure::Fatal(RemoteError::NotFound { object })
            }
            object_store::Error::PermissionDenied { source, .. }
            | object_store::Error::Unauthenticated { source, .. } => {
                Failure::Fatal(RemoteError::Forbidden {
                    object,
                    detail: source.to_string(),
                })
            }
            object_store::Error::Precondition { .. } => Failure::Fatal(RemoteError::Changed {
                object,
                detail: "its ETag no longer matches the one read at open".into(),
            }),
            other if status_of(&other) == Some(416) => {
                Failure::Fatal(RemoteError::PastEnd { object })
            }
            other => {
                let message = other.to_string();
                if transient(&other) {
                    Failure::Transient(message)
                } else {
                    Failure::Fatal(RemoteError::Refused {
                        object,
                        detail: message,
                    })
                }
            }
        }
    }

    /// Uploads local file `from` as object `name` in parts of 16 MiB, read
    /// from the file part by part, with the retries of reads (each retry
    /// uploads the whole file again).
    pub(crate) fn put_file(
        self: &Arc<Self>,
        from: &std::path::Path,
        name: &str,
    ) -> Result<(), RemoteError> {
        const PART: usize = 16 << 20;
        let local = |e: std::io::Error| RemoteError::Local {
            path: from.to_path_buf(),
            detail: e.to_string(),
        };
        let path = self.path_of(name);
        let mut part = vec![0u8; PART];
        let mut retry = Retry::default();
        self.block_on(async {
            loop {
                self.counters.requests.fetch_add(1, Ordering::Relaxed);
                let mut file = std::fs::File::open(from).map_err(local)?;
                let mut sent = 0u64;
                // The local file's error apart from the store's.
                let mut unread = None;
                let result = async {
                    let upload = self.store.put_multipart(&path).await?;
                    let mut w = WriteMultipart::new_with_chunk_size(upload, PART);
                    loop {
                        let n = match std::io::Read::read(&mut file, &mut part) {
                            Ok(n) => n,
                            Err(e) => {
                                unread = Some(e);
                                w.abort().await?;
                                return Ok(());
                            }
                        };
                        if n == 0 {
                            break;
                        }
                        w.wait_for_capacity(4).await?;
                        w.write(&part[..n]);
                        sent += n as u64;
                    }
                    w.finish().await.map(drop)
                }
                .await;
                if let Some(e) = unread {
                    return Err(local(e));
                }
                let failure = match result {
                    Ok(()) => {
                        self.counters.bytes.fetch_add(sent, Ordering::Relaxed);
                        return Ok(());
                    }
                    Err(e) => match self.classify(name, e) {
                        Failure::Fatal(e) => return Err(e),
                        Failure::Transient(why) => why,
                    },
                };
                retry.back_off(self, name, failure).await?;
            }
        })
    }
}

/// The retries of one request: when the first failure came, how many
/// there were.
#[derive(Default)]
struct Retry {
    since: Option<Instant>,
    attempts: u32,
}

impl Retry {
    /// After a transient failure (`last`) of a request for object `name`:
    /// waits the backoff (100 ms doubling to 5 s) and counts the retry, or
    /// past `store`'s deadline since the first failure gives up.
    async fn back_off(
        &mut self,
        store: &Store,
        name: &str,
        last: String,
    ) -> Result<(), RemoteError> {
        let first = *self.since.get_or_insert_with(Instant::now);
        self.attempts += 1;
        if first.elapsed() >= store.deadline {
            return Err(RemoteError::Deadline {
                object: store.url_of(name),
                waited: first.elapsed(),
                attempts: self.attempts,
                last,
            });
        }
        store.counters.retries.fetch_add(1, Ordering::Relaxed);
        let backoff =
            Duration::from_millis(100 << (self.attempts - 1).min(6)).min(Duration::from_secs(5));
        tokio::time::sleep(backoff.min(store.deadline.saturating_sub(first.elapsed()))).await;
        Ok(())
    }
}

impl Drop for Store {
    /// The last fetch task may hold the last reference, on one of the
    /// runtime's own threads, where a blocking shutdown is not allowed.
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// Whether a failure may pass if the request is repeated: connection
/// errors, time-outs, bodies cut off, 5xx and 429 answers. A request the
/// client could not even build, or any other 4xx, is not retried.
fn transient(e: &object_store::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if let Some(http) = err.downcast_ref::<HttpError>() {
            return matches!(
                http.kind(),
                HttpErrorKind::Connect
                    | HttpErrorKind::Request
                    | HttpErrorKind::Timeout
                    | HttpErrorKind::Interrupted
            );
        }
        source = err.source();
    }
    match status_of(e) {
        Some(status) => status >= 500 || status == 429 || status == 408,
        // An error answer whose status the message does not give: the
        // stores' codes for overload and time-outs.
        None => [
            "SlowDown",
            "ServiceUnavailable",
            "InternalError",
            "RequestTimeout",
            "Throttl",
            "ServerBusy",
        ]
        .iter()
        .any(|code| e.to_string().contains(code)),
    }
}

/// The HTTP status of an error answer, as object_store's message gives it
/// ("... status code: 416 Range Not Satisfiable ...").
fn status_of(e: &object_store::Error) -> Option<u16> {
    let message = e.to_string();
    let (_, rest) = message.split_once("status code: ")?;
    rest.get(..3)?.parse().ok()
}
