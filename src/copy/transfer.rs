//! Moving blobs: each one at most once, many at a time, resuming partial ones, retrying
//! what failed transiently, and reporting progress as bytes flow.

use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};

use super::CopyOptions;
use crate::error::{Error, Result};
use crate::oci::Descriptor;
use crate::progress::Progress;
use crate::store::{BlobState, Store};

/// One blob to move, where to read it, and how to name what needs it in messages.
#[derive(Clone)]
pub struct BlobJob {
    pub blob: Descriptor,
    pub source: Arc<dyn Store>,
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
}

enum Done {
    Present(u64),
    Copied { resumed: u64, transferred: u64 },
}

/// Moves every blob the destination lacks, `options.concurrency` at a time, resuming
/// partial ones and retrying transient failures.
pub async fn copy_blobs(
    jobs: Vec<BlobJob>,
    destination: Arc<dyn Store>,
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

    let results: Vec<Result<Done>> = futures::stream::iter(jobs.iter().zip(states))
        .map(|(job, state)| copy_blob(job, state, destination.as_ref(), options, progress))
        .buffer_unordered(options.concurrency.max(1))
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

async fn copy_blob(
    job: &BlobJob,
    mut state: BlobState,
    destination: &dyn Store,
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
            && let Some(path) = job.source.local_file(blob)
        {
            progress.blob_started(&blob.digest, blob.size, 0);
            let reporter = progress.clone();
            let digest = blob.digest.clone();
            let advance = move |n: u64| reporter.blob_advanced(&digest, n);
            match destination
                .write_blob_from_file(&job.dest_repo, blob, &path, &advance)
                .await
            {
                Ok(Some(already)) => {
                    progress.blob_finished(&blob.digest);
                    return Ok(Done::Copied {
                        resumed: already,
                        transferred: blob.size - already,
                    });
                }
                Ok(None) => {}
                Err(e) => {
                    return Err(Error::Context {
                        context: job.label.clone(),
                        inner: Box::new(e),
                    });
                }
            }
        }
        let result = async {
            let (start, stream) = job.source.read_blob(&job.source_repo, blob, offset).await?;
            resumed.get_or_insert(start);
            progress.blob_started(&blob.digest, blob.size, start);
            let digest = blob.digest.clone();
            let reporter = progress.clone();
            let counted = stream
                .inspect_ok(move |chunk| reporter.blob_advanced(&digest, chunk.len() as u64))
                .boxed();
            destination
                .write_blob(&job.dest_repo, blob, start, counted)
                .await
                .map(|()| blob.size - start)
        }
        .await;
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
