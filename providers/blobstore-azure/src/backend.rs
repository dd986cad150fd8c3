//! One link's Azure Blob Storage client and every blobstore operation on it.
//!
//! Containers are Azure containers (through the link's aliases); objects are block blobs.
//! Memory stays bounded both ways: an upload is staged block by block (one block buffered)
//! and committed as a block list at the end — nothing is visible before the commit, and an
//! upload that fails commits nothing (its staged blocks expire unused); a read fetches the
//! range in chunks streamed as they arrive; a listing fetches its pages (markers) as the
//! caller takes them.

use azure_core::StatusCode;
use azure_core::error::ErrorKind;
use azure_storage::{CloudLocation, StorageCredentials};
use azure_storage_blobs::prelude::*;
use bytes::{Bytes, BytesMut};
use futures::StreamExt as _;
use trellis_interfaces::blobstore::{
    self, ByteStream, ContainerInfo, Done, NameStream, ObjectInfo, Upload,
};

use crate::settings::LinkSettings;

/// Why an operation failed, as the component reads it.
pub type Error = String;

/// Blobs per listing page.
const PAGE: u32 = 1000;
/// Bytes fetched per ranged request of a read: each request costs a round trip before its
/// first byte, and a response body streams as it arrives (memory does not grow with it).
const CHUNK: u64 = 8 << 20;

/// A link's client and settings.
#[derive(Clone, Debug)]
pub struct Store {
    service: BlobServiceClient,
    settings: LinkSettings,
}

/// Whether `err` is a 404.
fn is_not_found(err: &azure_core::Error) -> bool {
    matches!(
        err.kind(),
        ErrorKind::HttpResponse {
            status: StatusCode::NotFound,
            ..
        }
    )
}

/// What a failed request means: not-found as such, anything else with Azure's reason.
fn failed(what: &str, err: &azure_core::Error) -> Error {
    if is_not_found(err) {
        return format!("{what} does not exist");
    }
    format!("{what}: {err}")
}

/// Seconds since the epoch of `at`.
fn secs(at: time::OffsetDateTime) -> u64 {
    u64::try_from(at.unix_timestamp()).unwrap_or(0)
}

impl Store {
    /// The client `settings` describe.
    pub fn new(settings: LinkSettings) -> Self {
        let credentials = StorageCredentials::access_key(
            settings.account.clone(),
            settings.access_key.expose().to_string(),
        );
        let builder = match &settings.endpoint {
            Some(uri) => ClientBuilder::with_location(
                CloudLocation::Custom {
                    account: settings.account.clone(),
                    uri: uri.clone(),
                },
                credentials,
            ),
            None => ClientBuilder::new(settings.account.clone(), credentials),
        };
        Self {
            service: builder.blob_service_client(),
            settings,
        }
    }

    fn container(&self, name: &str) -> Result<ContainerClient, Error> {
        if name.is_empty() {
            return Err("invalid container name \"\": empty".into());
        }
        Ok(self.service.container_client(self.settings.container(name)))
    }

    fn blob(&self, container: &str, key: &str) -> Result<BlobClient, Error> {
        if key.is_empty() {
            return Err("invalid object name \"\": empty".into());
        }
        Ok(self.container(container)?.blob_client(key))
    }

    /// Every blob name of the container, page by page.
    fn pages(
        &self,
        name: &str,
    ) -> Result<impl futures::Stream<Item = Result<Vec<String>, Error>> + Send + 'static, Error>
    {
        let what = format!("container {name}");
        let max = std::num::NonZeroU32::new(PAGE).ok_or("page size")?;
        let pages = self
            .container(name)?
            .list_blobs()
            .max_results(max)
            .into_stream();
        Ok(pages.map(move |page| {
            page.map(|p| p.blobs.blobs().map(|b| b.name.clone()).collect())
                .map_err(|e| failed(&what, &e))
        }))
    }

    /// A failed write: a missing container said as such.
    fn write_failed(&self, container: &str, what: &str, err: &azure_core::Error) -> Error {
        let missing = matches!(
            err.kind(),
            ErrorKind::HttpResponse { error_code: Some(code), .. } if code == "ContainerNotFound"
        );
        if missing {
            return format!("container {container} does not exist");
        }
        failed(what, err)
    }
}

impl blobstore::Store for Store {
    async fn create_container(&self, name: &str) -> Result<(), Error> {
        match self.container(name)?.create().await {
            Ok(_) => Ok(()),
            // Already there: nothing to do, as in 1.x.
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::HttpResponse {
                        status: StatusCode::Conflict,
                        ..
                    }
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(failed(&format!("container {name}"), &e)),
        }
    }

    async fn container_exists(&self, name: &str) -> Result<bool, Error> {
        self.container(name)?
            .exists()
            .await
            .map_err(|e| failed(&format!("container {name}"), &e))
    }

    async fn container_info(&self, name: &str) -> Result<ContainerInfo, Error> {
        let properties = self
            .container(name)?
            .get_properties()
            .await
            .map_err(|e| failed(&format!("container {name}"), &e))?;
        // Azure reports a container's last modification, no creation time.
        Ok(ContainerInfo {
            created_at: secs(properties.container.last_modified),
        })
    }

    async fn delete_container(&self, name: &str) -> Result<(), Error> {
        self.container(name)?
            .delete()
            .await
            .map_err(|e| failed(&format!("container {name}"), &e))?;
        Ok(())
    }

    async fn clear_container(&self, name: &str) -> Result<(), Error> {
        // All names first: deleting while paging would move the pages under the cursor.
        let mut names = Vec::new();
        let mut pages = Box::pin(self.pages(name)?);
        while let Some(page) = pages.next().await {
            names.extend(page?);
        }
        for key in names {
            self.delete_object(name, &key).await?;
        }
        Ok(())
    }

    /// The container's names from `offset`, at most `limit`, fetched as the stream is read;
    /// the first page now, so a missing container is this call's error.
    async fn list(
        &self,
        name: &str,
        limit: Option<u64>,
        offset: Option<u64>,
    ) -> Result<(NameStream, Done), Error> {
        let mut pages = Box::pin(self.pages(name)?);
        let first = pages.next().await.unwrap_or(Ok(Vec::new()))?;
        let (done_tx, done_rx) = tokio::sync::oneshot::channel::<Result<(), Error>>();
        let rest =
            futures::stream::unfold((pages, Some(done_tx)), |(mut pages, mut done)| async move {
                match pages.next().await {
                    Some(Ok(page)) => Some((page, (pages, done))),
                    Some(Err(err)) => {
                        if let Some(tx) = done.take() {
                            let _ = tx.send(Err(err));
                        }
                        None
                    }
                    None => {
                        if let Some(tx) = done.take() {
                            let _ = tx.send(Ok(()));
                        }
                        None
                    }
                }
            });
        let skip = usize::try_from(offset.unwrap_or(0)).unwrap_or(usize::MAX);
        let take = limit.map_or(usize::MAX, |l| usize::try_from(l).unwrap_or(usize::MAX));
        let names = futures::stream::iter([first])
            .chain(rest)
            .flat_map(futures::stream::iter)
            .skip(skip)
            .take(take)
            .chunks(PAGE as usize);
        let done: Done = Box::pin(async move { done_rx.await.unwrap_or(Ok(())) });
        Ok((Box::pin(names), done))
    }

    async fn object_info(&self, container: &str, key: &str) -> Result<ObjectInfo, Error> {
        let properties = self
            .blob(container, key)?
            .get_properties()
            .await
            .map_err(|e| failed(&format!("object {container}/{key}"), &e))?;
        let p = &properties.blob.properties;
        Ok(ObjectInfo {
            created_at: secs(p.creation_time),
            size: p.content_length,
        })
    }

    async fn has_object(&self, container: &str, key: &str) -> Result<bool, Error> {
        match self.blob(container, key)?.exists().await {
            Ok(found) => Ok(found),
            Err(e) => Err(failed(&format!("object {container}/{key}"), &e)),
        }
    }

    /// Deletes a blob; deleting an absent one succeeds.
    async fn delete_object(&self, container: &str, key: &str) -> Result<(), Error> {
        match self.blob(container, key)?.delete().await {
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) && !e.to_string().contains("ContainerNotFound") => Ok(()),
            Err(e) => Err(failed(&format!("object {container}/{key}"), &e)),
        }
    }

    /// Deletes `keys` of the container.
    async fn delete_objects(&self, container: &str, keys: Vec<String>) -> Result<(), Error> {
        for key in keys {
            self.delete_object(container, &key).await?;
        }
        Ok(())
    }

    /// Copies a blob (server side, synchronous for the service's own copies), across
    /// containers too; `then_delete` makes it a move.
    async fn copy(
        &self,
        src: (&str, &str),
        dest: (&str, &str),
        then_delete: bool,
    ) -> Result<(), Error> {
        let what = format!("object {}/{}", src.0, src.1);
        let source = self
            .blob(src.0, src.1)?
            .url()
            .map_err(|e| failed(&what, &e))?;
        // Read the source's size first, so a missing source says so.
        self.object_info(src.0, src.1).await?;
        self.blob(dest.0, dest.1)?
            .copy_from_url(source)
            .await
            .map_err(|e| failed(&what, &e))?;
        if then_delete {
            self.delete_object(src.0, src.1).await?;
        }
        Ok(())
    }

    /// Bytes `start..=end` of a blob, fetched in chunks as the stream is read; a range past
    /// the end is cut at the end (empty past it).
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
        let size = self.object_info(container, key).await?.size;
        if start >= size {
            return Ok(blobstore::download(futures::stream::empty()));
        }
        let stop = end.saturating_add(1).min(size);
        let what = format!("object {container}/{key}");
        let requests = self
            .blob(container, key)?
            .get()
            .range(start..stop)
            .chunk_size(CHUNK)
            .into_stream();
        // Each chunk is a ranged request whose body streams as it arrives. The next request
        // goes out while the current body is still being read (one ahead: its body waits in
        // the socket, not in memory), so the emulator's or service's time to first byte is
        // not paid between chunks.
        let (ahead, mut next) = tokio::sync::mpsc::channel(1);
        tokio::spawn(async move {
            let mut requests = requests;
            while let Some(response) = requests.next().await {
                if ahead.send(response).await.is_err() {
                    break; // the reader went away
                }
            }
        });
        let chunks = futures::stream::poll_fn(move |cx| next.poll_recv(cx));
        let pieces = chunks
            .map(move |chunk| {
                let what = what.clone();
                match chunk {
                    Ok(response) => response
                        .data
                        .map(move |piece| piece.map_err(|e| failed(&what, &e)))
                        .boxed(),
                    Err(e) => futures::stream::once(futures::future::ready(Err(failed(&what, &e))))
                        .boxed(),
                }
            })
            .flatten();
        Ok(blobstore::download(pieces))
    }

    /// Stores `data` as a block blob: whole in one request if it ends within a block, else
    /// each block staged as it fills and the list committed at the end; a failed upload
    /// commits nothing.
    async fn write(&self, container: &str, key: &str, mut data: Upload) -> Result<(), Error> {
        let blob = self.blob(container, key)?;
        let what = format!("object {container}/{key}");
        let block_size = usize::try_from(self.settings.block_size).unwrap_or(usize::MAX);
        let mut buffered = BytesMut::new();
        let mut ended = false;
        let mut list = BlockList::default();
        loop {
            while !ended && buffered.len() <= block_size {
                match data.next().await {
                    Some(Ok(piece)) => buffered.extend_from_slice(&piece),
                    Some(Err(why)) => return Err(format!("the object was not stored: {why}")),
                    None => ended = true,
                }
            }
            if ended && list.blocks.is_empty() && buffered.len() <= block_size {
                // Small: one request.
                let body = buffered.freeze();
                blob.put_block_blob(body)
                    .await
                    .map_err(|e| self.write_failed(container, &what, &e))?;
                return Ok(());
            }
            while buffered.len() > block_size || (ended && !buffered.is_empty()) {
                let take = buffered.len().min(block_size);
                let block: Bytes = buffered.split_to(take).freeze();
                // Ids of one blob must have the same length.
                let id = format!("{:010}", list.blocks.len());
                blob.put_block(id.clone(), block)
                    .await
                    .map_err(|e| self.write_failed(container, &what, &e))?;
                list.blocks.push(BlobBlockType::new_uncommitted(id));
            }
            if ended {
                break;
            }
        }
        blob.put_block_list(list)
            .await
            .map_err(|e| self.write_failed(container, &what, &e))?;
        Ok(())
    }
}
