//! Moving blobs: each one at most once, many at a time, resuming partial ones, retrying
//! what failed transiently, and reporting progress as bytes flow.

use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};

use super::CopyOptions;
use crate::error::{Error, Result};
use crate::oci::Descriptor;
use crate::progress::Progress;
use crate::store::{BlobScope, BlobSink, BlobSource, BlobState};

/// One blob to move, where to read it, and how to name what needs it in messages.
#[derive(Clone)]
pub struct BlobJob {
    pub blob: Descriptor,
    pub source: Arc<dyn BlobSource>,
    pub source_repo: String,
    pub dest_repo: String,
    pub label: String,
}

/// What moving a set of blobs did.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Outcome {
    pub present: usize,
    pub bytes_present: u64,
    pub bytes_resumed: u64,
    pub bytes_transferred: u64,
    /// Blobs another repository of the destination already held, mounted instead of sent.
    pub mounted: usize,
    pub bytes_mounted: u64,
}

enum Done {
    Present(u64),
    Mounted(u64),
    Copied { resumed: u64, transferred: u64 },
}

/// Moves every blob the destination lacks, `options.concurrency` at a time, resuming
/// partial ones and retrying transient failures.
pub async fn copy_blobs(
    jobs: Vec<BlobJob>,
    destination: Arc<dyn BlobSink>,
    options: &CopyOptions,
    progress: &Arc<dyn Progress>,
) -> Result<Outcome> {
    // Ask the destination first so the total and the bars start right.
    let states: Vec<BlobState> = futures::stream::iter(jobs.iter())
        .map(|job| destination.blob_state(&job.dest_repo, &job.blob))
        .buffered(options.concurrency.max(1) * 4)
        .try_collect()
        .await?;
    let total: u64 = jobs.iter().map(|j| j.blob.size).sum();
    let already: u64 = jobs
        .iter()
        .zip(&states)
        .map(|(j, s)| match s {
            BlobState::Present => j.blob.size,
            BlobState::Partial(n) => *n,
            BlobState::Absent => 0,
        })
        .sum();
    progress.total(total, already);

    // Where blobs belong to repositories, the jobs of one blob go together: it is sent once,
    // then mounted into the other repositories (one request each, no bytes), falling back to
    // sending where the destination will not mount.
    let mut groups: Vec<Vec<(&BlobJob, BlobState)>> = Vec::new();
    let mut group_of: std::collections::HashMap<&crate::digest::Digest, usize> =
        std::collections::HashMap::new();
    let per_repository = destination.scope() == BlobScope::PerRepository;
    for (job, state) in jobs.iter().zip(states) {
        match group_of.get(&job.blob.digest) {
            Some(&i) if per_repository => groups[i].push((job, state)),
            _ => {
                group_of.insert(&job.blob.digest, groups.len());
                groups.push(vec![(job, state)]);
            }
        }
    }
    // Largest first: the biggest blobs start while every slot is busy, and the run does not end
    // on one large blob alone while the rest of the machine waits.
    groups
        .sort_by_key(|group| std::cmp::Reverse(group.first().map_or(0, |(job, _)| job.blob.size)));
    let results: Vec<Result<Done>> = futures::stream::iter(groups)
        .map(|group| copy_group(group, destination.as_ref(), options, progress))
        .buffer_unordered(options.concurrency.max(1))
        .flat_map(futures::stream::iter)
        .collect()
        .await;

    let mut outcome = Outcome::default();
    let mut errors = Vec::new();
    for result in results {
        match result {
            Ok(Done::Present(size)) => {
                outcome.present += 1;
                outcome.bytes_present += size;
            }
            Ok(Done::Mounted(size)) => {
                outcome.mounted += 1;
                outcome.bytes_mounted += size;
            }
            Ok(Done::Copied {
                resumed,
                transferred,
            }) => {
                outcome.bytes_resumed += resumed;
                outcome.bytes_transferred += transferred;
            }
            Err(e) => errors.push(e),
        }
    }
    match errors.len() {
        0 => Ok(outcome),
        1 => Err(errors.remove(0)),
        n => {
            let lines: Vec<String> = errors.iter().map(|e| format!("  - {e}")).collect();
            Err(Error::invalid(format!(
                "{n} blobs could not be copied:\n{}",
                lines.join("\n")
            )))
        }
    }
}

/// The jobs of one blob, in order: a repository that holds it (from the start, or once it
/// has been sent there) is where the next ones mount it from.
async fn copy_group(
    group: Vec<(&BlobJob, BlobState)>,
    destination: &dyn BlobSink,
    options: &CopyOptions,
    progress: &Arc<dyn Progress>,
) -> Vec<Result<Done>> {
    let mut holder: Option<String> = group
        .iter()
        .find(|(_, state)| *state == BlobState::Present)
        .map(|(job, _)| job.dest_repo.clone());
    let mut results = Vec::with_capacity(group.len());
    for (job, state) in group {
        if state != BlobState::Present
            && let Some(from) = &holder
            && from != &job.dest_repo
            && let Some(mount) = destination.mount()
        {
            match mount.mount_blob(&job.dest_repo, &job.blob, from).await {
                Ok(true) => {
                    progress.blob_advanced(&job.blob.digest, job.blob.size);
                    results.push(Ok(Done::Mounted(job.blob.size)));
                    continue;
                }
                Ok(false) => {}
                Err(e) => {
                    results.push(Err(e));
                    continue;
                }
            }
        }
        let result = copy_blob(job, state, destination, options, progress).await;
        let damaged = result.as_ref().is_err_and(|e| {
            matches!(
                e.root(),
                Error::DigestMismatch { .. } | Error::SizeMismatch { .. }
            )
        });
        if result.is_ok() {
            holder = Some(job.dest_repo.clone());
        }
        results.push(result);
        // The same bytes would fail the same way for every other repository.
        if damaged {
            break;
        }
    }
    results
}

async fn copy_blob(
    job: &BlobJob,
    mut state: BlobState,
    destination: &dyn BlobSink,
    options: &CopyOptions,
    progress: &Arc<dyn Progress>,
) -> Result<Done> {
    let blob = &job.blob;
    let mut resumed = None;
    let mut transferred = 0;
    let mut attempt = 0;
    let mut mismatches = 0;
    loop {
        let offset = match state {
            BlobState::Present => {
                return Ok(match resumed {
                    None => Done::Present(blob.size),
                    Some(resumed) => Done::Copied {
                        resumed,
                        transferred,
                    },
                });
            }
            BlobState::Partial(n) => n,
            BlobState::Absent => 0,
        };
        if offset == 0
            && let Some(upload) = destination.file_upload()
            && let Some(path) = job.source.local_file(blob)
        {
            progress.blob_started(&blob.digest, blob.size, 0);
            let reporter = progress.clone();
            let digest = blob.digest.clone();
            let advance = move |n: u64| reporter.blob_advanced(&digest, n);
            return match upload
                .write_blob_from_file(&job.dest_repo, blob, &path, &advance)
                .await
            {
                Ok(already) => {
                    progress.blob_finished(&blob.digest);
                    Ok(Done::Copied {
                        resumed: already,
                        transferred: blob.size - already,
                    })
                }
                Err(e) => Err(Error::Context {
                    context: job.label.clone(),
                    inner: Box::new(e),
                }),
            };
        }
        // What the source itself failed with (a blob that does not hash to its digest, say):
        // a destination sees only a broken body, so this is what gets reported.
        let source_error: Arc<std::sync::Mutex<Option<Error>>> = Arc::default();
        let result = async {
            let (start, stream) = job.source.read_blob(&job.source_repo, blob, offset).await?;
            resumed.get_or_insert(start);
            progress.blob_started(&blob.digest, blob.size, start);
            let digest = blob.digest.clone();
            let reporter = progress.clone();
            let slot = source_error.clone();
            let counted = stream
                .inspect_ok(move |chunk| reporter.blob_advanced(&digest, chunk.len() as u64))
                .map_err(move |e| {
                    let message = e.to_string();
                    slot.lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .get_or_insert(e);
                    Error::invalid(message)
                })
                .boxed();
            destination
                .write_blob(&job.dest_repo, blob, start, counted)
                .await
                .map(|()| blob.size - start)
        }
        .await;
        let result = result.map_err(|e| {
            source_error
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take()
                .unwrap_or(e)
        });
        match result {
            Ok(sent) => {
                transferred += sent;
                progress.blob_finished(&blob.digest);
                return Ok(Done::Copied {
                    resumed: resumed.unwrap_or(0),
                    transferred,
                });
            }
            Err(e) => {
                let retry = match e.root() {
                    // A corrupt or altered blob may be a bad copy in a cache: try once more
                    // from scratch, then report it.
                    Error::DigestMismatch { .. } => {
                        mismatches += 1;
                        mismatches < 2
                    }
                    _ => e.is_transient(),
                } && attempt < options.retry.retries;
                if !retry {
                    return Err(Error::Context {
                        context: job.label.clone(),
                        inner: Box::new(Error::Context {
                            context: format!(
                                "blob {} ({} bytes) from {}",
                                blob.digest,
                                blob.size,
                                job.source.describe()
                            ),
                            inner: Box::new(e),
                        }),
                    });
                }
                progress.blob_retrying(&blob.digest, &e.to_string());
                tokio::time::sleep(options.retry.delay(attempt, e.retry_after())).await;
                attempt += 1;
                state = destination.blob_state(&job.dest_repo, blob).await?;
            }
        }
    }
}
