//! Moving blobs: each one at most once, many at a time, resuming partial ones, retrying
//! what failed transiently, and reporting progress as bytes flow.

use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};

use super::{CopyOptions, Root, in_image};
use crate::error::{Error, Result};
use crate::oci::Descriptor;
use crate::progress::Progress;
use crate::store::{BlobState, Store};

pub(super) struct BlobJob {
    pub blob: Descriptor,
    /// The first image that needs this blob: where to read it, and how to name it.
    pub root: Root,
}

#[derive(Default)]
pub(super) struct Outcome {
    pub present: usize,
    pub bytes_present: u64,
    pub bytes_resumed: u64,
    pub bytes_transferred: u64,
}

enum Done {
    Present(u64),
    Copied { resumed: u64, transferred: u64 },
}

pub(super) async fn copy_blobs(
    jobs: Vec<BlobJob>,
    destination: Arc<dyn Store>,
    options: &CopyOptions,
    progress: &Arc<dyn Progress>,
) -> Result<Outcome> {
    // Ask the destination first so the total and the bars start right.
    let states: Vec<BlobState> = futures::stream::iter(jobs.iter())
        .map(|job| destination.blob_state(&job.root.dest_repo, &job.blob))
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
    let root = &job.root;
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
        let result = async {
            let (start, stream) = root
                .source
                .read_blob(&root.source_repo, blob, offset)
                .await?;
            resumed.get_or_insert(start);
            progress.blob_started(&blob.digest, blob.size, start);
            let digest = blob.digest.clone();
            let reporter = progress.clone();
            let counted = stream
                .inspect_ok(move |chunk| reporter.blob_advanced(&digest, chunk.len() as u64))
                .boxed();
            destination
                .write_blob(&root.dest_repo, blob, start, counted)
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
                    return Err(in_image(
                        Error::Context {
                            context: format!(
                                "blob {} ({} bytes) from {}",
                                blob.digest,
                                blob.size,
                                root.source.describe()
                            ),
                            source: Box::new(e),
                        },
                        root,
                    ));
                }
                progress.blob_retrying(&blob.digest, &e.to_string());
                tokio::time::sleep(options.retry.delay(attempt, e.retry_after())).await;
                attempt += 1;
                state = destination.blob_state(&root.dest_repo, blob).await?;
            }
        }
    }
}
