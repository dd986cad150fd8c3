//! One link's S3 client and every blobstore operation on it.
//!
//! Containers are buckets (through the link's aliases); objects are keys. Memory stays
//! bounded both ways: an upload is buffered one part at a time (a small one goes whole as one
//! `PutObject`; above the threshold a multipart upload, aborted if the upload or a part
//! fails), a read streams the object's body as S3 sends it, and a listing fetches its pages
//! (`ListObjectsV2` continuation tokens) as the caller takes them. S3 keeps no creation time:
//! `created_at` is the object's last modification (its creation, unless overwritten).

use aws_sdk_s3::Client;
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream as S3Bytes;
use aws_sdk_s3::types::{
    BucketLocationConstraint, CompletedMultipartUpload, CompletedPart, CreateBucketConfiguration,
    Delete, ObjectIdentifier,
};
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;

use bytes::{Bytes, BytesMut};
use futures::StreamExt as _;
use trellis_interfaces::blobstore::{
    self, ByteStream, ContainerInfo, Done, NameStream, ObjectInfo, Upload,
};

use crate::settings::LinkSettings;

/// Why an operation failed, as the component reads it.
pub type Error = String;

/// Keys per listing page (S3's maximum).
const PAGE: i32 = 1000;

/// A part on its way to S3.
type Sending<'a> = Pin<Box<dyn Future<Output = Result<CompletedPart, Error>> + Send + 'a>>;

/// An upload's bytes not yet sent, copied as they arrive into buffers of exactly a part's
/// size: what is held is the parts themselves, not the received pieces (which may share
/// larger read buffers) nor a buffer grown piece by piece (whose capacity doubles past the
/// part).
struct Parts {
    size: usize,
    full: VecDeque<Bytes>,
    filling: BytesMut,
    len: usize,
}

impl Parts {
    fn new(size: usize) -> Self {
        Self {
            size: size.max(1),
            full: VecDeque::new(),
            filling: BytesMut::new(),
            len: 0,
        }
    }

    fn push(&mut self, mut piece: Bytes) {
        self.len += piece.len();
        while !piece.is_empty() {
            if self.filling.capacity() == 0 {
                self.filling = BytesMut::with_capacity(self.size);
            }
            let take = (self.size - self.filling.len()).min(piece.len());
            self.filling.extend_from_slice(&piece.split_to(take));
            if self.filling.len() == self.size {
                self.full
                    .push_back(std::mem::take(&mut self.filling).freeze());
            }
        }
    }

    /// The next part to send: a full one, or (`last`) what is left.
    fn next_part(&mut self, last: bool) -> Option<Bytes> {
        let part = match self.full.pop_front() {
            Some(part) => part,
            None if last && !self.filling.is_empty() => std::mem::take(&mut self.filling).freeze(),
            None => return None,
        };
        self.len -= part.len();
        Some(part)
    }

    /// Everything held, as one buffer (a whole small object).
    fn all(mut self) -> Bytes {
        if self.full.is_empty() {
            return self.filling.freeze();
        }
        let mut all = BytesMut::with_capacity(self.len);
        while let Some(part) = self.next_part(true) {
            all.extend_from_slice(&part);
        }
        all.freeze()
    }
}

/// A link's S3 client and settings.
#[derive(Clone, Debug)]
pub struct Store {
    client: Client,
    settings: LinkSettings,
}

/// What a failed request means: not-found as such, anything else with S3's reason.
fn failed<E, R>(what: &str, err: &SdkError<E, R>) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    if is_not_found(err) {
        return format!("{what} does not exist");
    }
    format!("{what}: {}", DisplayErrorContext(err))
}

/// Whether `err` says the bucket or key does not exist.
fn is_not_found<E: ProvideErrorMetadata, R>(err: &SdkError<E, R>) -> bool {
    match err {
        SdkError::ServiceError(e) => matches!(
            e.err().code(),
            Some("NoSuchBucket" | "NoSuchKey" | "NotFound" | "404")
        ),
        _ => false,
    }
}

/// `key` as a `copy_source` path segment: percent-encoded but for unreserved bytes and `/`.
fn encode_key(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Store {
    /// The client `settings` describe.
    pub fn new(settings: LinkSettings) -> Self {
        let credentials = Credentials::new(
            &settings.access_key_id,
            settings.secret_access_key.expose(),
            settings
                .session_token
                .as_ref()
                .map(|t| t.expose().to_string()),
            None,
            "trellis-link",
        );
        let https = aws_smithy_http_client::Builder::new()
            .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
                aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
            ))
            .build_https();
        let mut config = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .http_client(https)
            .region(Region::new(settings.region.clone()))
            .credentials_provider(credentials)
            .force_path_style(settings.path_style);
        if let Some(endpoint) = &settings.endpoint {
            config = config.endpoint_url(endpoint);
        }
        Self {
            client: Client::from_conf(config.build()),
            settings,
        }
    }

    fn bucket<'a>(&'a self, container: &'a str) -> Result<&'a str, Error> {
        if container.is_empty() {
            return Err("invalid container name \"\": empty".into());
        }
        Ok(self.settings.bucket(container))
    }

    /// One page of keys from `token`; the next page's token.
    async fn page(
        &self,
        name: &str,
        token: Option<String>,
    ) -> Result<(Vec<String>, Option<String>), Error> {
        let out = self
            .client
            .list_objects_v2()
            .bucket(self.bucket(name)?)
            .max_keys(PAGE)
            .set_continuation_token(token)
            .send()
            .await
            .map_err(|e| failed(&format!("container {name}"), &e))?;
        let keys = out
            .contents()
            .iter()
            .filter_map(|o| o.key().map(str::to_string))
            .collect();
        let next = out
            .is_truncated()
            .unwrap_or(false)
            .then(|| out.next_continuation_token().map(str::to_string))
            .flatten();
        Ok((keys, next))
    }

    /// Deletes `keys` (at most 1000 per request).
    async fn delete_keys(&self, name: &str, keys: Vec<String>) -> Result<(), Error> {
        let bucket = self.bucket(name)?;
        for batch in keys.chunks(PAGE as usize) {
            let objects = batch
                .iter()
                .map(|k| {
                    ObjectIdentifier::builder()
                        .key(k)
                        .build()
                        .map_err(|e| e.to_string())
                })
                .collect::<Result<Vec<_>, _>>()?;
            let delete = Delete::builder()
                .set_objects(Some(objects))
                .quiet(true)
                .build()
                .map_err(|e| e.to_string())?;
            self.client
                .delete_objects()
                .bucket(bucket)
                .delete(delete)
                .send()
                .await
                .map_err(|e| failed(&format!("container {name}"), &e))?;
        }
        Ok(())
    }

    /// Sends the upload's parts, `buffered` first; the completed parts, in order.
    ///
    /// A part is sent while the next one fills from the caller (two parts in memory at
    /// most): the caller's stream and S3 then move at once instead of taking turns.
    async fn upload_parts(
        &self,
        bucket: &str,
        key: &str,
        id: &str,
        mut buffered: Parts,
        mut data: Upload,
    ) -> Result<Vec<CompletedPart>, Error> {
        let mut parts = Vec::new();
        let mut ended = false;
        let mut sending: Option<Sending<'_>> = None;
        loop {
            let fill = async {
                while !ended && buffered.full.is_empty() {
                    match data.next().await {
                        Some(Ok(piece)) => buffered.push(piece),
                        Some(Err(why)) => return Err(why),
                        None => ended = true,
                    }
                }
                Ok(())
            };
            match sending.take() {
                Some(send) => {
                    let (sent, filled) = tokio::join!(send, fill);
                    parts.push(sent?);
                    filled?;
                }
                None => fill.await?,
            }
            let Some(part) = buffered.next_part(ended) else {
                break;
            };
            let number =
                i32::try_from(parts.len() + 1).map_err(|_| "too many parts".to_string())?;
            sending = Some(Box::pin(self.send_part(bucket, key, id, number, part)));
        }
        if let Some(send) = sending {
            parts.push(send.await?);
        }
        Ok(parts)
    }

    /// Sends part `number` of upload `id`.
    async fn send_part(
        &self,
        bucket: &str,
        key: &str,
        id: &str,
        number: i32,
        part: Bytes,
    ) -> Result<CompletedPart, Error> {
        let sent = self
            .client
            .upload_part()
            .bucket(bucket)
            .key(key)
            .upload_id(id)
            .part_number(number)
            .body(S3Bytes::from(part))
            .send()
            .await
            .map_err(|e| failed(&format!("part {number}"), &e))?;
        Ok(CompletedPart::builder()
            .part_number(number)
            .set_e_tag(sent.e_tag().map(str::to_string))
            .build())
    }

    /// Copies `source` (`bucket/key`, `size` bytes) to `dest` as a multipart upload of
    /// `UploadPartCopy` ranges; aborted if a part fails.
    async fn copy_parts(&self, source: &str, size: u64, dest: (&str, &str)) -> Result<(), Error> {
        let (bucket, key) = dest;
        let upload = self
            .client
            .create_multipart_upload()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| failed(&format!("object {bucket}/{key}"), &e))?;
        let Some(id) = upload.upload_id().map(str::to_string) else {
            return Err("S3 gave no upload id".into());
        };
        let part_size = self.settings.copy_part_size;
        let mut parts = Vec::new();
        let mut result = Ok(());
        let mut start = 0;
        while start < size {
            let end = (start + part_size).min(size) - 1;
            let Ok(number) = i32::try_from(parts.len() + 1) else {
                result = Err("too many parts".to_string());
                break;
            };
            let sent = self
                .client
                .upload_part_copy()
                .bucket(bucket)
                .key(key)
                .upload_id(&id)
                .part_number(number)
                .copy_source(source)
                .copy_source_range(format!("bytes={start}-{end}"))
                .send()
                .await;
            match sent {
                Ok(out) => parts.push(
                    CompletedPart::builder()
                        .part_number(number)
                        .set_e_tag(
                            out.copy_part_result()
                                .and_then(|r| r.e_tag())
                                .map(str::to_string),
                        )
                        .build(),
                ),
                Err(e) => {
                    result = Err(failed(&format!("part {number}"), &e));
                    break;
                }
            }
            start = end + 1;
        }
        if result.is_ok() {
            let completed = CompletedMultipartUpload::builder()
                .set_parts(Some(parts))
                .build();
            let done = self
                .client
                .complete_multipart_upload()
                .bucket(bucket)
                .key(key)
                .upload_id(&id)
                .multipart_upload(completed)
                .send()
                .await;
            match done {
                Ok(_) => return Ok(()),
                Err(e) => result = Err(failed(&format!("object {bucket}/{key}"), &e)),
            }
        }
        self.abort(bucket, key, &id).await;
        result
    }

    /// Aborts multipart upload `id` (a failed upload or copy), logging if even that fails.
    async fn abort(&self, bucket: &str, key: &str, id: &str) {
        let aborted = self
            .client
            .abort_multipart_upload()
            .bucket(bucket)
            .key(key)
            .upload_id(id)
            .send()
            .await;
        if let Err(e) = aborted {
            tracing::warn!(error = %DisplayErrorContext(&e), "cannot abort a failed multipart upload");
        }
    }
}

impl blobstore::Store for Store {
    async fn create_container(&self, name: &str) -> Result<(), Error> {
        let bucket = self.bucket(name)?;
        let mut request = self.client.create_bucket().bucket(bucket);
        // us-east-1 is the one region that takes no location constraint.
        if self.settings.region != "us-east-1" {
            let constraint = BucketLocationConstraint::from(self.settings.region.as_str());
            let config = CreateBucketConfiguration::builder()
                .location_constraint(constraint)
                .build();
            request = request.create_bucket_configuration(config);
        }
        match request.send().await {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_service_error().and_then(|s| s.code())
                    == Some("BucketAlreadyOwnedByYou") =>
            {
                Ok(())
            }
            Err(e) => Err(failed(&format!("container {name}"), &e)),
        }
    }

    async fn container_exists(&self, name: &str) -> Result<bool, Error> {
        match self
            .client
            .head_bucket()
            .bucket(self.bucket(name)?)
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if is_not_found(&e) => Ok(false),
            Err(e) => Err(failed(&format!("container {name}"), &e)),
        }
    }

    async fn container_info(&self, name: &str) -> Result<ContainerInfo, Error> {
        let bucket = self.bucket(name)?;
        let buckets = self
            .client
            .list_buckets()
            .send()
            .await
            .map_err(|e| failed("the bucket list", &e))?;
        let found = buckets.buckets().iter().find(|b| b.name() == Some(bucket));
        let Some(found) = found else {
            return Err(format!("container {name} does not exist"));
        };
        let created_at = found
            .creation_date()
            .map(|d| u64::try_from(d.secs()).unwrap_or(0))
            .unwrap_or(0);
        Ok(ContainerInfo { created_at })
    }

    /// The container's keys from `offset`, at most `limit`, fetched page by page as the
    /// stream is read; the `Done` says whether a page failed.
    async fn list(
        &self,
        name: &str,
        limit: Option<u64>,
        offset: Option<u64>,
    ) -> Result<(NameStream, Done), Error> {
        // The first page now, so a missing container is this call's error.
        let first = self.page(name, None).await?;
        let (done_tx, done_rx) = tokio::sync::oneshot::channel::<Result<(), Error>>();
        let store = self.clone();
        let name = name.to_string();
        // Each step yields a page and fetches the one after it (one page ahead, no more).
        let pages = futures::stream::unfold(Some((first, Some(done_tx))), move |state| {
            let (store, name) = (store.clone(), name.clone());
            async move {
                let ((keys, next), mut done) = state?;
                let following = match next {
                    None => {
                        if let Some(tx) = done.take() {
                            let _ = tx.send(Ok(()));
                        }
                        None
                    }
                    Some(token) => match store.page(&name, Some(token)).await {
                        Ok(page) => Some((page, done)),
                        Err(err) => {
                            if let Some(tx) = done.take() {
                                let _ = tx.send(Err(err));
                            }
                            None
                        }
                    },
                };
                Some((keys, following))
            }
        });
        let skip = usize::try_from(offset.unwrap_or(0)).unwrap_or(usize::MAX);
        let take = limit.map_or(usize::MAX, |l| usize::try_from(l).unwrap_or(usize::MAX));
        let names = pages
            .flat_map(futures::stream::iter)
            .skip(skip)
            .take(take)
            .chunks(PAGE as usize);
        let done: Done = Box::pin(async move { done_rx.await.unwrap_or(Ok(())) });
        Ok((Box::pin(names), done))
    }

    async fn clear_container(&self, name: &str) -> Result<(), Error> {
        loop {
            let (keys, next) = self.page(name, None).await?;
            if keys.is_empty() {
                return Ok(());
            }
            self.delete_keys(name, keys).await?;
            if next.is_none() {
                return Ok(());
            }
        }
    }

    async fn delete_container(&self, name: &str) -> Result<(), Error> {
        self.clear_container(name).await?;
        self.client
            .delete_bucket()
            .bucket(self.bucket(name)?)
            .send()
            .await
            .map_err(|e| failed(&format!("container {name}"), &e))?;
        Ok(())
    }

    async fn delete_objects(&self, name: &str, keys: Vec<String>) -> Result<(), Error> {
        self.delete_keys(name, keys).await
    }

    async fn object_info(&self, container: &str, key: &str) -> Result<ObjectInfo, Error> {
        let out = self
            .client
            .head_object()
            .bucket(self.bucket(container)?)
            .key(key)
            .send()
            .await
            .map_err(|e| failed(&format!("object {container}/{key}"), &e))?;
        Ok(ObjectInfo {
            created_at: out
                .last_modified()
                .map(|d| u64::try_from(d.secs()).unwrap_or(0))
                .unwrap_or(0),
            size: u64::try_from(out.content_length().unwrap_or(0)).unwrap_or(0),
        })
    }

    async fn has_object(&self, container: &str, key: &str) -> Result<bool, Error> {
        match self
            .client
            .head_object()
            .bucket(self.bucket(container)?)
            .key(key)
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if is_not_found(&e) => Ok(false),
            Err(e) => Err(failed(&format!("object {container}/{key}"), &e)),
        }
    }

    async fn delete_object(&self, container: &str, key: &str) -> Result<(), Error> {
        self.client
            .delete_object()
            .bucket(self.bucket(container)?)
            .key(key)
            .send()
            .await
            .map_err(|e| failed(&format!("object {container}/{key}"), &e))?;
        Ok(())
    }

    /// Copies an object (server side), across buckets too; `then_delete` makes it a move.
    /// One `CopyObject` up to the copy threshold (S3 copies at most 5 GiB so), part by part
    /// above it.
    async fn copy(
        &self,
        src: (&str, &str),
        dest: (&str, &str),
        then_delete: bool,
    ) -> Result<(), Error> {
        let what = format!("object {}/{}", src.0, src.1);
        let source = format!("{}/{}", self.bucket(src.0)?, encode_key(src.1));
        let dest_bucket = self.bucket(dest.0)?.to_string();
        let size = self.object_info(src.0, src.1).await?.size;
        if size > self.settings.copy_threshold {
            self.copy_parts(&source, size, (&dest_bucket, dest.1))
                .await
                .map_err(|e| format!("{what} was not copied: {e}"))?;
        } else {
            self.client
                .copy_object()
                .bucket(&dest_bucket)
                .key(dest.1)
                .copy_source(source)
                .send()
                .await
                .map_err(|e| failed(&what, &e))?;
        }
        if then_delete {
            self.delete_object(src.0, src.1).await?;
        }
        Ok(())
    }

    /// Bytes `start..=end` of an object as S3 sends them; a range past the end is cut at the
    /// end (empty past it).
    async fn read(
        &self,
        container: &str,
        key: &str,
        start: u64,
        end: u64,
    ) -> Result<(ByteStream, Done), Error> {
        if start > end {
            return Err(format!("bad range: start {start} is after end {end}"));
        }
        let what = format!("object {container}/{key}");
        let request = self
            .client
            .get_object()
            .bucket(self.bucket(container)?)
            .key(key)
            .range(format!("bytes={start}-{end}"));
        let out = match request.send().await {
            Ok(out) => out,
            // Starting past the end: nothing to read (the object exists, or this says so).
            Err(e) if e.as_service_error().and_then(|s| s.code()) == Some("InvalidRange") => {
                return Ok(blobstore::download(futures::stream::empty()));
            }
            Err(e) => return Err(failed(&what, &e)),
        };
        let pieces = futures::stream::unfold(out.body, |mut body| async move {
            let piece = body.next().await?;
            Some((
                piece.map_err(|e| format!("reading the object failed: {e}")),
                body,
            ))
        });
        Ok(blobstore::download(pieces))
    }

    /// Stores `data` as an object: whole if it ends within the threshold, else multipart,
    /// one part buffered at a time; a failed upload is aborted and stores nothing.
    async fn write(&self, container: &str, key: &str, mut data: Upload) -> Result<(), Error> {
        let bucket = self.bucket(container)?.to_string();
        let what = format!("object {container}/{key}");
        let threshold = usize::try_from(self.settings.multipart_threshold).unwrap_or(usize::MAX);
        let part_size = usize::try_from(self.settings.part_size).unwrap_or(usize::MAX);
        let mut first = Parts::new(part_size);
        while first.len <= threshold {
            match data.next().await {
                Some(Ok(piece)) => first.push(piece),
                Some(Err(why)) => return Err(format!("the object was not stored: {why}")),
                None => {
                    self.client
                        .put_object()
                        .bucket(&bucket)
                        .key(key)
                        .body(S3Bytes::from(first.all()))
                        .send()
                        .await
                        .map_err(|e| failed(&what, &e))?;
                    return Ok(());
                }
            }
        }
        let upload = self
            .client
            .create_multipart_upload()
            .bucket(&bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| failed(&what, &e))?;
        let Some(id) = upload.upload_id().map(str::to_string) else {
            return Err(format!("{what}: S3 gave no upload id"));
        };
        match self.upload_parts(&bucket, key, &id, first, data).await {
            Ok(parts) => {
                let completed = CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build();
                self.client
                    .complete_multipart_upload()
                    .bucket(&bucket)
                    .key(key)
                    .upload_id(&id)
                    .multipart_upload(completed)
                    .send()
                    .await
                    .map_err(|e| failed(&what, &e))?;
                Ok(())
            }
            Err(err) => {
                self.abort(&bucket, key, &id).await;
                Err(format!("the object was not stored: {err}"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_are_cut_into_exact_parts() {
        let mut p = Parts::new(5);
        for piece in ["abc", "defg", "hijklmnopq", "r"] {
            p.push(Bytes::from(piece));
        }
        assert_eq!(p.len, 18);
        assert_eq!(p.next_part(false).as_deref(), Some(&b"abcde"[..]));
        assert_eq!(p.next_part(false).as_deref(), Some(&b"fghij"[..]));
        assert_eq!(p.next_part(false).as_deref(), Some(&b"klmno"[..]));
        assert_eq!(p.next_part(false), None, "pqr is not a full part");
        assert_eq!(p.next_part(true).as_deref(), Some(&b"pqr"[..]));
        assert_eq!((p.len, p.next_part(true)), (0, None));

        let mut small = Parts::new(4);
        small.push(Bytes::from("abcdefg"));
        assert_eq!(small.all(), "abcdefg");
    }

    #[test]
    fn copy_sources_are_percent_encoded_but_for_slashes() {
        assert_eq!(encode_key("a/b c/ü.txt"), "a/b%20c/%C3%BC.txt");
        assert_eq!(encode_key("plain-key_1.~"), "plain-key_1.~");
    }
}
