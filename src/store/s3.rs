//! The S3 store: blobs at `PREFIX/blobs/sha256/<hex>`, shared by every bundle uploaded under
//! the prefix, and each bundle's own files at `PREFIX/bundles/<name>/`. It is a blob source
//! and a blob sink that takes local files, never an image store: it keeps no tags, and a
//! bundle's `bundle.json` says which manifests it holds. Large blobs go up as
//! multipart uploads. Every byte sent is hashed as it is read: a blob whose sha256 is not
//! its name is refused before it becomes an object, and each request carries its SHA256,
//! which S3 checks. An object counts as present only when S3's recorded SHA256 is known to
//! match (see `S3Store::holds`), so a wrong object is replaced by the next good upload. An
//! interrupted multipart upload is resumed (ListParts). Reads resume with `Range`.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::error::{DisplayErrorContext, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    ChecksumAlgorithm, ChecksumMode, ChecksumType, CompletedMultipartUpload, CompletedPart,
};
use base64::Engine as _;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};

use super::{BlobScope, BlobSink, BlobSource, BlobState, BlobStream, FileUpload, Store};
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::oci::Descriptor;
use crate::retry::RetryPolicy;

/// Metadata key holding a blob's sha256, written only after the upload checked out.
const SHA256_METADATA: &str = "sha256";

/// `s3://bucket/prefix`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct S3Location {
    pub bucket: String,
    pub prefix: String,
}

impl S3Location {
    pub fn parse(url: &str) -> Result<S3Location> {
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| Error::invalid(format!("`{url}` is not an s3:// URL")))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(Error::invalid(format!("`{url}`: no bucket")));
        }
        Ok(S3Location {
            bucket: bucket.to_owned(),
            prefix: prefix.trim_matches('/').to_owned(),
        })
    }

    /// Splits `s3://bucket/prefix/bundles/<name>` into the store location and the name.
    pub fn parse_bundle(url: &str) -> Result<(S3Location, String)> {
        let location = S3Location::parse(url)?;
        let (prefix, name) = match location.prefix.rsplit_once("bundles/") {
            Some((prefix, name)) if !name.is_empty() && !name.contains('/') => {
                (prefix.trim_end_matches('/').to_owned(), name.to_owned())
            }
            _ => {
                return Err(Error::invalid(format!(
                    "`{url}` does not name a bundle: expected s3://BUCKET/PREFIX/bundles/NAME"
                )));
            }
        };
        Ok((
            S3Location {
                bucket: location.bucket,
                prefix,
            },
            name,
        ))
    }

    pub fn key(&self, path: &str) -> String {
        if self.prefix.is_empty() {
            path.to_owned()
        } else {
            format!("{}/{path}", self.prefix)
        }
    }

    pub fn blob_key(&self, digest: &Digest) -> String {
        self.key(&format!("blobs/sha256/{}", digest.hex()))
    }

    pub fn bundle_key(&self, name: &str, path: &str) -> String {
        self.key(&format!("bundles/{name}/{path}"))
    }
}

impl std::fmt::Display for S3Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "s3://{}/{}", self.bucket, self.prefix)
    }
}

/// An S3 client from the standard AWS configuration (environment, profiles, instance role).
/// With an endpoint override (`AWS_ENDPOINT_URL[_S3]`, e.g. an S3-compatible server), path-style
/// addressing is used.
pub async fn client() -> Client {
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .load()
        .await;
    client_from(&config)
}

/// An S3 client from a loaded AWS configuration (a region chosen by the caller), with
/// path-style addressing under an endpoint override as [`client`] does.
pub fn client_from(config: &aws_config::SdkConfig) -> Client {
    let path_style = std::env::var_os("AWS_ENDPOINT_URL_S3").is_some()
        || std::env::var_os("AWS_ENDPOINT_URL").is_some();
    let s3 = aws_sdk_s3::config::Builder::from(config)
        .force_path_style(path_style)
        .build();
    Client::from_conf(s3)
}

pub(crate) fn sdk_error<E>(
    what: &str,
    e: SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
) -> Error
where
    E: std::error::Error + Send + Sync + 'static,
{
    let status = e.raw_response().map(|r| r.status().as_u16());
    let transient = match &e {
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) | SdkError::ResponseError(_) => {
            true
        }
        SdkError::ServiceError(_) => status.is_some_and(|s| s >= 500 || s == 429),
        _ => false,
    };
    if status == Some(404) {
        return Error::NotFound {
            what: what.to_owned(),
        };
    }
    Error::Http {
        what: what.to_owned(),
        message: DisplayErrorContext(&e).to_string(),
        status,
        transient,
        retry_after: None,
    }
}

fn crc64_b64(value: u64) -> String {
    base64::engine::general_purpose::STANDARD.encode(value.to_be_bytes())
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The base64 sha256 S3 reports for an object sent in one request with that checksum: the
/// blob's own digest.
fn full_sha256_b64(digest: &Digest) -> String {
    b64(&hex::decode(digest.hex()).unwrap_or_default())
}

/// The composite SHA256 S3 records for a multipart upload: the sha256 of the parts' binary
/// sha256s concatenated, reported as `<base64>-<parts>` ("Checking object integrity",
/// <https://docs.aws.amazon.com/AmazonS3/latest/userguide/checking-object-integrity.html>,
/// section on multipart checksums: SHA-256 exists only as a COMPOSITE checksum; FULL_OBJECT
/// is for the CRC algorithms).
fn composite_sha256_b64(parts: &[[u8; 32]]) -> String {
    use sha2::Digest as _;
    let mut outer = sha2::Sha256::new();
    for part in parts {
        outer.update(part);
    }
    b64(&outer.finalize())
}

/// The checksum value without the `-<parts>` suffix S3 adds to composite checksums.
fn checksum_base(value: &str) -> &str {
    match value.rsplit_once('-') {
        Some((base, count)) if count.bytes().all(|b| b.is_ascii_digit()) => base,
        _ => value,
    }
}

fn sha256_bytes(bytes: &[u8]) -> [u8; 32] {
    use sha2::Digest as _;
    sha2::Sha256::digest(bytes).into()
}

/// Refuses a local blob whose bytes are not its name, before any of it becomes an object.
fn check_local(path: &Path, blob: &Descriptor, hashed: crate::digest::Hasher) -> Result<()> {
    hashed.check(blob.size, &blob.digest, || {
        format!(
            "{} (local blob; damaged, not uploaded — rebuild or download the bundle again)",
            path.display()
        )
    })
}

/// Reads exactly `length` bytes at `offset` of `path`.
fn read_range(path: &Path, offset: u64, length: u64) -> Result<Vec<u8>> {
    use std::io::{Seek, SeekFrom};
    let mut file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    file.seek(SeekFrom::Start(offset))
        .map_err(|e| Error::io(path, e))?;
    let mut buf = Vec::with_capacity(length as usize);
    (&mut file)
        .take(length)
        .read_to_end(&mut buf)
        .map_err(|e| Error::io(path, e))?;
    Ok(buf)
}

/// The whole sha256 and each `part_size` part's sha256 of a local file, in one read; for
/// deciding whether a multipart object in S3 holds exactly this file.
fn file_part_hashes(path: &Path, part_size: u64) -> Result<(Digest, u64, Vec<[u8; 32]>)> {
    use sha2::Digest as _;
    let mut file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut whole = crate::digest::Hasher::new();
    let mut part = sha2::Sha256::new();
    let mut parts = Vec::new();
    let mut in_part = 0u64;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let want = ((part_size - in_part) as usize).min(buf.len());
        let n = file
            .read(&mut buf[..want])
            .map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        whole.update(&buf[..n]);
        part.update(&buf[..n]);
        in_part += n as u64;
        if in_part == part_size {
            parts.push(part.finalize_reset().into());
            in_part = 0;
        }
    }
    if in_part > 0 || parts.is_empty() {
        parts.push(part.finalize().into());
    }
    let len = whole.len();
    Ok((whole.finish(), len, parts))
}

/// Metadata key holding the part size a multipart blob was sent with, so its composite
/// checksum can be recomputed from a local copy.
const PART_SIZE_METADATA: &str = "part-size";

/// The checksum a single-request upload carries.
#[derive(Clone, Copy)]
enum Checksum<'a> {
    /// CRC64NVME of the bytes, for a bundle's own files.
    Crc64Nvme,
    /// The blob's sha256, for a blob.
    Blob(&'a Descriptor),
}

pub struct S3Store {
    pub(crate) client: Client,
    location: S3Location,
    retry: RetryPolicy,
    part_size: u64,
    concurrency: usize,
    /// The local bundle being uploaded, whose `blobs/sha256/<hex>` files let a multipart
    /// object's composite checksum be checked.
    local_bundle: std::sync::RwLock<Option<std::path::PathBuf>>,
}

impl S3Store {
    pub fn new(
        client: Client,
        location: S3Location,
        retry: RetryPolicy,
        part_size: u64,
        concurrency: usize,
    ) -> Self {
        S3Store {
            client,
            location,
            retry,
            part_size: part_size.max(5 << 20),
            concurrency: concurrency.max(1),
            local_bundle: std::sync::RwLock::new(None),
        }
    }

    /// Names the local bundle an upload reads from, so objects sent in parts can be
    /// recognised as holding exactly its blobs.
    pub fn set_local_bundle(&self, dir: &Path) {
        if let Ok(mut slot) = self.local_bundle.write() {
            *slot = Some(dir.to_owned());
        }
    }

    fn local_blob(&self, digest: &Digest) -> Option<std::path::PathBuf> {
        let dir = self.local_bundle.read().ok()?.clone()?;
        let path = dir.join("blobs/sha256").join(digest.hex());
        path.is_file().then_some(path)
    }

    pub fn location(&self) -> &S3Location {
        &self.location
    }

    /// Refuses, before anything is sent, a blob that would take more parts than S3 allows
    /// (10,000, https://docs.aws.amazon.com/AmazonS3/latest/userguide/qfacts.html).
    pub fn check_part_count(&self, what: &str, size: u64) -> Result<()> {
        let parts = size.div_ceil(self.part_size);
        if parts > 10_000 {
            return Err(Error::invalid(format!(
                "{what}: {size} bytes in parts of {} would take {parts} parts; S3 allows 10000 \
                 — use --part-size {} or more",
                self.part_size,
                crate::units::bytes(size.div_ceil(10_000).next_multiple_of(1 << 20))
                    .replace(' ', "")
                    .replace(".0", "")
            )));
        }
        Ok(())
    }

    /// The digests of the blobs under the prefix: every `blobs/sha256/<hex>` key whose name is
    /// a sha256 digest (other keys there are not blobs and are left out). Listed, not read: an
    /// object counts by its name alone.
    pub async fn blob_digests(&self) -> Result<std::collections::BTreeSet<Digest>> {
        let dir = self.location.key("blobs/sha256/");
        let what = format!("the blobs under {}", self.location);
        let mut out = std::collections::BTreeSet::new();
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.location.bucket)
            .prefix(&dir)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| match sdk_error(&what, e) {
                Error::NotFound { .. } => Error::invalid(format!(
                    "{what}: s3://{} does not exist (or is not visible with these credentials)",
                    self.location.bucket
                ))
                .with_hint("check the bucket name and the region"),
                other => other,
            })?;
            out.extend(
                page.contents()
                    .iter()
                    .filter_map(|o| o.key()?.strip_prefix(&dir))
                    .filter_map(|hex| Digest::from_hex(hex).ok()),
            );
        }
        Ok(out)
    }

    /// Fetches a whole small object; `None` if it does not exist.
    pub async fn get_small(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let what = format!("s3://{}/{key}", self.location.bucket);
        let result = self
            .retry
            .run(|| async {
                let object = self
                    .client
                    .get_object()
                    .bucket(&self.location.bucket)
                    .key(key)
                    .send()
                    .await
                    .map_err(|e| sdk_error(&what, e))?;
                let bytes = object.body.collect().await.map_err(|e| Error::Http {
                    what: what.clone(),
                    message: e.to_string(),
                    status: None,
                    transient: true,
                    retry_after: None,
                })?;
                Ok(bytes.into_bytes().to_vec())
            })
            .await;
        match result {
            Ok(bytes) => Ok(Some(bytes)),
            Err(Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Writes a small object in one request, with its CRC64NVME checked by S3.
    pub async fn put_small(&self, key: &str, bytes: &[u8]) -> Result<()> {
        self.put_object(key, Bytes::copy_from_slice(bytes), Checksum::Crc64Nvme)
            .await
    }

    /// Writes an object in one request with a checksum S3 checks against what it receives
    /// (it refuses a mismatch with BadDigest, "Checking object integrity for data uploads",
    /// <https://docs.aws.amazon.com/AmazonS3/latest/userguide/checking-object-integrity-upload.html>).
    /// A blob's bytes must already hash to its digest; its sha256 is sent as the checksum and
    /// recorded in the object's metadata, and the upload counts only once S3 reports that
    /// SHA256 back.
    async fn put_object(&self, key: &str, bytes: Bytes, checksum: Checksum<'_>) -> Result<()> {
        let what = format!("s3://{}/{key}", self.location.bucket);
        let (algorithm, value) = match checksum {
            Checksum::Crc64Nvme => (
                ChecksumAlgorithm::Crc64Nvme,
                crc64_b64(crc_fast::checksum(
                    crc_fast::CrcAlgorithm::Crc64Nvme,
                    &bytes,
                )),
            ),
            Checksum::Blob(blob) => (ChecksumAlgorithm::Sha256, full_sha256_b64(&blob.digest)),
        };
        let put = self
            .retry
            .run(|| async {
                let request = self
                    .client
                    .put_object()
                    .bucket(&self.location.bucket)
                    .key(key)
                    .body(ByteStream::from(bytes.clone()))
                    .checksum_algorithm(algorithm.clone());
                let request = match checksum {
                    Checksum::Crc64Nvme => request.checksum_crc64_nvme(&value),
                    Checksum::Blob(blob) => request
                        .checksum_sha256(&value)
                        .metadata(SHA256_METADATA, blob.digest.hex()),
                };
                request.send().await.map_err(|e| sdk_error(&what, e))
            })
            .await?;
        let Checksum::Blob(_) = checksum else {
            return Ok(());
        };
        let reported = self.recorded_sha256(key, put.checksum_sha256()).await?;
        self.check_sha256(&what, &value, reported.as_deref())
    }

    /// Aborts multipart uploads under the prefix that no blob of `keep` is using and that
    /// were started more than a day ago (younger ones may be another upload at work).
    pub async fn abort_stale_uploads(&self, keep: &[String]) -> Result<usize> {
        let what = format!("multipart uploads under {}", self.location);
        let mut aborted = 0;
        let listed = self
            .client
            .list_multipart_uploads()
            .bucket(&self.location.bucket)
            .prefix(self.location.key("blobs/"))
            .send()
            .await
            .map_err(|e| match sdk_error(&what, e) {
                // The first request of an upload: a 404 here is the bucket itself.
                Error::NotFound { .. } => Error::invalid(format!(
                    "s3://{}: no such bucket (or not visible with these credentials); \
                     create it or check the URL and AWS_REGION",
                    self.location.bucket
                )),
                other => other,
            })?;
        for upload in listed.uploads() {
            let (Some(key), Some(id)) = (upload.key(), upload.upload_id()) else {
                continue;
            };
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0);
            let young = upload.initiated().is_some_and(|t| now - t.secs() < 86_400);
            if keep.iter().any(|k| k == key) || young {
                continue;
            }
            self.client
                .abort_multipart_upload()
                .bucket(&self.location.bucket)
                .key(key)
                .upload_id(id)
                .send()
                .await
                .map_err(|e| sdk_error(&what, e))?;
            aborted += 1;
        }
        Ok(aborted)
    }

    pub(crate) async fn head(
        &self,
        key: &str,
    ) -> Result<Option<aws_sdk_s3::operation::head_object::HeadObjectOutput>> {
        let what = format!("s3://{}/{key}", self.location.bucket);
        match self
            .retry
            .run(|| async {
                self.client
                    .head_object()
                    .bucket(&self.location.bucket)
                    .key(key)
                    .checksum_mode(ChecksumMode::Enabled)
                    .send()
                    .await
                    .map_err(|e| sdk_error(&what, e))
            })
            .await
        {
            Ok(head) => Ok(Some(head)),
            Err(Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Sends a blob in parts. Each part is read once into memory, hashed, and sent with its
    /// sha256, which S3 checks against what it received; the parts' hashes also make the
    /// blob's own sha256, and the upload is completed only when that is the blob's name, so
    /// a damaged local file never becomes an object. A part of an interrupted upload is kept
    /// only when S3 reports the same sha256 for it (or, from servers that list no part
    /// checksums, an ETag that is the part's MD5).
    async fn upload_multipart(
        &self,
        key: &str,
        blob: &Descriptor,
        path: &Path,
        progress: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<u64> {
        let what = format!("s3://{}/{key}", self.location.bucket);
        let part_size = self.part_size;
        let count = blob.size.div_ceil(part_size).max(1);
        if count > 10_000 {
            return Err(Error::invalid(format!(
                "{what}: {} bytes in parts of {part_size} would take {count} parts; S3 allows \
                 10000 — use a larger --part-size",
                blob.size
            )));
        }
        let count = count as i32;
        let part_len = |number: i32| {
            let offset = part_size * (number - 1) as u64;
            (offset, part_size.min(blob.size - offset))
        };

        // Resume an interrupted upload of this key sent with SHA256 part checksums.
        let existing = self
            .client
            .list_multipart_uploads()
            .bucket(&self.location.bucket)
            .prefix(key)
            .send()
            .await
            .map_err(|e| sdk_error(&what, e))?;
        let mut upload_id = None;
        // number -> (etag, size, sha256 as S3 lists it)
        let mut listed: HashMap<i32, (String, i64, Option<String>)> = HashMap::new();
        for upload in existing.uploads().iter().filter(|u| u.key() == Some(key)) {
            let Some(id) = upload.upload_id() else {
                continue;
            };
            if upload_id.is_some()
                || upload.checksum_algorithm() != Some(&ChecksumAlgorithm::Sha256)
            {
                let _ = self
                    .client
                    .abort_multipart_upload()
                    .bucket(&self.location.bucket)
                    .key(key)
                    .upload_id(id)
                    .send()
                    .await;
                continue;
            }
            let parts = self
                .client
                .list_parts()
                .bucket(&self.location.bucket)
                .key(key)
                .upload_id(id)
                .customize()
                .interceptor(ListPartsRoot)
                .send()
                .await
                .map_err(|e| sdk_error(&what, e))?;
            for part in parts.parts() {
                if let (Some(number), Some(etag), Some(size)) =
                    (part.part_number(), part.e_tag(), part.size())
                {
                    listed.insert(
                        number,
                        (
                            etag.to_owned(),
                            size,
                            part.checksum_sha256().map(str::to_owned),
                        ),
                    );
                }
            }
            upload_id = Some(id.to_owned());
        }
        let upload_id = match upload_id {
            Some(id) => id,
            None => self
                .client
                .create_multipart_upload()
                .bucket(&self.location.bucket)
                .key(key)
                .checksum_algorithm(ChecksumAlgorithm::Sha256)
                .checksum_type(ChecksumType::Composite)
                .metadata(SHA256_METADATA, blob.digest.hex())
                .metadata(PART_SIZE_METADATA, part_size.to_string())
                .send()
                .await
                .map_err(|e| sdk_error(&what, e))?
                .upload_id()
                .map(str::to_owned)
                .ok_or_else(|| Error::invalid(format!("{what}: S3 gave no upload id")))?,
        };
        let abort = || async {
            let _ = self
                .client
                .abort_multipart_upload()
                .bucket(&self.location.bucket)
                .key(key)
                .upload_id(&upload_id)
                .send()
                .await;
        };

        // Parts are read in order (the blob's sha256 runs over them in order) and sent
        // concurrently; at most `concurrency` parts are held in memory.
        let mut whole = crate::digest::Hasher::new();
        let mut sent: Vec<(i32, String, [u8; 32], u64)> = Vec::new();
        let mut in_flight = futures::stream::FuturesUnordered::new();
        let mut failure = None;
        for number in 1..=count {
            let (offset, length) = part_len(number);
            let read_path = path.to_owned();
            let bytes =
                match tokio::task::spawn_blocking(move || read_range(&read_path, offset, length))
                    .await
                {
                    Ok(Ok(bytes)) => bytes,
                    Ok(Err(e)) => {
                        failure = Some(e);
                        break;
                    }
                    Err(e) => {
                        failure = Some(Error::internal(format!("read thread failed: {e}")));
                        break;
                    }
                };
            if bytes.len() as u64 != length {
                failure = Some(Error::SizeMismatch {
                    what: format!("{} (local blob)", path.display()),
                    expected: blob.size,
                    actual: offset + bytes.len() as u64,
                });
                break;
            }
            whole.update(&bytes);
            let sha = sha256_bytes(&bytes);
            if let Some((etag, size, listed_sha)) = listed.get(&number) {
                let same = *size == bytes.len() as i64
                    && match listed_sha {
                        Some(listed_sha) => checksum_base(listed_sha) == b64(&sha),
                        None => {
                            use md5::Digest as _;
                            etag.trim_matches('"') == hex::encode(md5::Md5::digest(&bytes))
                        }
                    };
                if same {
                    progress(length);
                    sent.push((number, etag.clone(), sha, length));
                    continue;
                }
            }
            in_flight.push(self.send_part(
                key,
                &upload_id,
                number,
                Bytes::from(bytes),
                sha,
                progress,
            ));
            while in_flight.len() >= self.concurrency {
                match in_flight.next().await {
                    Some(Ok(done)) => sent.push(done),
                    Some(Err(e)) => {
                        failure = Some(e);
                        break;
                    }
                    None => break,
                }
            }
            if failure.is_some() {
                break;
            }
        }
        while failure.is_none() {
            match in_flight.next().await {
                Some(Ok(done)) => sent.push(done),
                Some(Err(e)) => failure = Some(e),
                None => break,
            }
        }
        drop(in_flight);
        if let Some(e) = failure {
            // The parts sent so far stay for a resumed upload.
            return Err(e);
        }
        if let Err(e) = check_local(path, blob, whole) {
            abort().await;
            return Err(e);
        }
        let resumed: u64 = sent.iter().map(|(_, _, _, kept)| kept).sum();
        sent.sort_by_key(|(number, ..)| *number);
        let hashes: Vec<[u8; 32]> = sent.iter().map(|(_, _, sha, _)| *sha).collect();
        let expected = composite_sha256_b64(&hashes);
        let parts: Vec<CompletedPart> = sent
            .iter()
            .map(|(number, etag, sha, _)| {
                CompletedPart::builder()
                    .part_number(*number)
                    .e_tag(etag)
                    .checksum_sha256(b64(sha))
                    .build()
            })
            .collect();
        let completed = self
            .retry
            .run(|| async {
                self.client
                    .complete_multipart_upload()
                    .bucket(&self.location.bucket)
                    .key(key)
                    .upload_id(&upload_id)
                    .checksum_type(ChecksumType::Composite)
                    .multipart_upload(
                        CompletedMultipartUpload::builder()
                            .set_parts(Some(parts.clone()))
                            .build(),
                    )
                    .send()
                    .await
                    .map_err(|e| sdk_error(&what, e))
            })
            .await?;
        let reported = self
            .recorded_sha256(key, completed.checksum_sha256())
            .await?;
        if let Err(e) = self.check_sha256(&what, &expected, reported.as_deref()) {
            let _ = self
                .client
                .delete_object()
                .bucket(&self.location.bucket)
                .key(key)
                .send()
                .await;
            return Err(e);
        }
        Ok(resumed)
    }

    /// Sends one part with its sha256 (S3 refuses it if the bytes it gets differ); returns
    /// `(number, etag, sha256, 0)`: nothing of it was resumed.
    async fn send_part(
        &self,
        key: &str,
        upload_id: &str,
        number: i32,
        bytes: Bytes,
        sha: [u8; 32],
        progress: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<(i32, String, [u8; 32], u64)> {
        let what = format!("s3://{}/{key} part {number}", self.location.bucket);
        let sha_b64 = b64(&sha);
        let length = bytes.len() as u64;
        let etag = self
            .retry
            .run(|| async {
                let part = self
                    .client
                    .upload_part()
                    .bucket(&self.location.bucket)
                    .key(key)
                    .upload_id(upload_id)
                    .part_number(number)
                    .content_length(length as i64)
                    .checksum_algorithm(ChecksumAlgorithm::Sha256)
                    .checksum_sha256(&sha_b64)
                    .body(ByteStream::from(bytes.clone()))
                    .send()
                    .await
                    .map_err(|e| sdk_error(&what, e))?;
                part.e_tag()
                    .map(str::to_owned)
                    .ok_or_else(|| Error::invalid(format!("{what}: no ETag")))
            })
            .await?;
        progress(length);
        Ok((number, etag, sha, 0))
    }

    /// The SHA256 S3 recorded for the object at `key` just written: the one its reply gave,
    /// else the one HeadObject reports.
    async fn recorded_sha256(&self, key: &str, replied: Option<&str>) -> Result<Option<String>> {
        match replied {
            Some(sha) => Ok(Some(sha.to_owned())),
            None => Ok(self
                .head(key)
                .await?
                .and_then(|h| h.checksum_sha256().map(str::to_owned))),
        }
    }

    /// Compares the SHA256 S3 recorded with what we computed.
    fn check_sha256(&self, what: &str, expected: &str, actual: Option<&str>) -> Result<()> {
        match actual {
            Some(actual) if checksum_base(actual) == expected => Ok(()),
            other => Err(Error::Http {
                what: what.to_owned(),
                message: format!(
                    "S3 recorded SHA256 {} after the upload, expected {expected}; the object \
                     will be sent again",
                    other.unwrap_or("missing")
                ),
                status: None,
                transient: true,
                retry_after: None,
            }),
        }
    }

    /// Whether the object at `key`, as HeadObject describes it, is known to hold `blob`:
    /// sent in one request, S3 recorded the blob's own sha256 (S3 computes it and refuses a
    /// mismatching upload with BadDigest, "Checking object integrity for data uploads",
    /// <https://docs.aws.amazon.com/AmazonS3/latest/userguide/checking-object-integrity-upload.html>);
    /// sent in parts, its composite SHA256 equals the one computed from the local copy being
    /// uploaded, which must itself hash to the blob's name. Anything else (no SHA256, a
    /// checksum from another algorithm, no local copy to compare with) is not trusted.
    async fn holds(
        &self,
        blob: &Descriptor,
        head: &aws_sdk_s3::operation::head_object::HeadObjectOutput,
    ) -> Result<bool> {
        if head.content_length() != Some(blob.size as i64) {
            return Ok(false);
        }
        let Some(recorded) = head.checksum_sha256() else {
            return Ok(false);
        };
        if recorded == full_sha256_b64(&blob.digest)
            && head.checksum_type() != Some(&ChecksumType::Composite)
        {
            return Ok(true);
        }
        let part_size = head
            .metadata()
            .and_then(|m| m.get(PART_SIZE_METADATA))
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|p| (5 << 20..=5 << 30).contains(p));
        let (Some(part_size), Some(local)) = (part_size, self.local_blob(&blob.digest)) else {
            return Ok(false);
        };
        let (digest, len, parts) =
            tokio::task::spawn_blocking(move || file_part_hashes(&local, part_size))
                .await
                .map_err(|e| Error::internal(format!("hash thread failed: {e}")))??;
        Ok(digest == blob.digest
            && len == blob.size
            && checksum_base(recorded) == composite_sha256_b64(&parts))
    }
}

impl Store for S3Store {
    fn describe(&self) -> String {
        self.location.to_string()
    }
}

#[async_trait]
impl BlobSource for S3Store {
    async fn read_blob(
        &self,
        _repo: &str,
        blob: &Descriptor,
        offset: u64,
    ) -> Result<(u64, BlobStream)> {
        let key = self.location.blob_key(&blob.digest);
        let what = format!("s3://{}/{key}", self.location.bucket);
        let object = self
            .retry
            .run(|| async {
                let mut request = self
                    .client
                    .get_object()
                    .bucket(&self.location.bucket)
                    .key(&key);
                if offset > 0 {
                    request = request.range(format!("bytes={offset}-"));
                }
                request.send().await.map_err(|e| sdk_error(&what, e))
            })
            .await?;
        let start = if object.content_range().is_some() {
            offset
        } else {
            0
        };
        let stream =
            futures::stream::try_unfold((object.body, what), |(mut body, what)| async move {
                match body.try_next().await {
                    Ok(Some(chunk)) => Ok(Some((chunk, (body, what)))),
                    Ok(None) => Ok(None),
                    Err(e) => Err(Error::connection_lost(what, e)),
                }
            })
            .boxed();
        Ok((start, stream))
    }
}

#[async_trait]
impl BlobSink for S3Store {
    fn scope(&self) -> BlobScope {
        BlobScope::Shared
    }

    /// Present only when what S3 holds is known to be the blob (see [`S3Store::holds`]); an
    /// object that is not — damaged, or written without a SHA256 checksum — is sent again,
    /// which replaces it.
    async fn blob_state(&self, _repo: &str, blob: &Descriptor) -> Result<BlobState> {
        let key = self.location.blob_key(&blob.digest);
        Ok(match self.head(&key).await? {
            Some(head) if self.holds(blob, &head).await? => BlobState::Present,
            _ => BlobState::Absent,
        })
    }

    async fn write_blob(
        &self,
        _repo: &str,
        blob: &Descriptor,
        _offset: u64,
        body: BlobStream,
    ) -> Result<()> {
        // Streams from other stores: buffered in memory, so only for small blobs.
        let chunks: Vec<Bytes> = body.try_collect().await?;
        let bytes = chunks.concat();
        blob.digest
            .verify(&bytes, || format!("blob {}", blob.digest))?;
        let key = self.location.blob_key(&blob.digest);
        self.put_object(&key, Bytes::from(bytes), Checksum::Blob(blob))
            .await
    }

    fn file_upload(&self) -> Option<&dyn FileUpload> {
        Some(self)
    }
}

#[async_trait]
impl FileUpload for S3Store {
    async fn write_blob_from_file(
        &self,
        _repo: &str,
        blob: &Descriptor,
        path: &Path,
        progress: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<u64> {
        let key = self.location.blob_key(&blob.digest);
        // Anything larger than one part goes up in parts.
        if blob.size > self.part_size {
            return self.upload_multipart(&key, blob, path, progress).await;
        }
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let mut hashed = crate::digest::Hasher::new();
        hashed.update(&bytes);
        check_local(path, blob, hashed)?;
        self.put_object(&key, Bytes::from(bytes), Checksum::Blob(blob))
            .await?;
        progress(blob.size);
        Ok(0)
    }
}

/// Some S3-compatible servers name the ListParts reply's root `ListPartsResponse` where S3
/// says `ListPartsResult`, which the SDK refuses. This renames it in place (same length, the
/// difference padded with XML whitespace); on real S3 it changes nothing.
#[derive(Debug)]
struct ListPartsRoot;

impl aws_sdk_s3::config::Intercept for ListPartsRoot {
    fn name(&self) -> &'static str {
        "ListPartsRoot"
    }

    fn modify_before_deserialization(
        &self,
        context: &mut aws_sdk_s3::config::interceptors::BeforeDeserializationInterceptorContextMut<
            '_,
        >,
        _components: &aws_sdk_s3::config::RuntimeComponents,
        _config: &mut aws_sdk_s3::config::ConfigBag,
    ) -> std::result::Result<(), aws_sdk_s3::error::BoxError> {
        let body = std::mem::replace(
            context.response_mut().body_mut(),
            aws_sdk_s3::primitives::SdkBody::taken(),
        );
        *context.response_mut().body_mut() =
            aws_sdk_s3::primitives::SdkBody::from_body_1_x(RenamedRoot { inner: body });
        Ok(())
    }
}

struct RenamedRoot {
    inner: aws_sdk_s3::primitives::SdkBody,
}

fn rename_root(bytes: Bytes) -> Bytes {
    const FROM: [(&[u8], &[u8]); 2] = [
        (b"<ListPartsResponse", b"<ListPartsResult  "),
        (b"</ListPartsResponse>", b"</ListPartsResult  >"),
    ];
    if !bytes.windows(FROM[0].0.len()).any(|w| w == FROM[0].0) {
        return bytes;
    }
    let mut out = bytes.to_vec();
    for (from, to) in FROM {
        while let Some(at) = out.windows(from.len()).position(|w| w == from) {
            out[at..at + from.len()].copy_from_slice(to);
        }
    }
    Bytes::from(out)
}

impl http_body::Body for RenamedRoot {
    type Data = Bytes;
    type Error = aws_sdk_s3::error::BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<std::result::Result<http_body::Frame<Bytes>, Self::Error>>> {
        let inner = std::pin::Pin::new(&mut self.inner);
        inner
            .poll_frame(cx)
            .map(|frame| frame.map(|frame| frame.map(|f| f.map_data(rename_root))))
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::Body::size_hint(&self.inner)
    }
}
