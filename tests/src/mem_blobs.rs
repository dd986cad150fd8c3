//! An in-memory blob store serving the blobstore interface, for tests whose subject is not a
//! backend (the host's mapping and streaming, the interface's serving and client).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use futures::StreamExt as _;
use trellis_interfaces::blobstore::{
    self, ByteStream, ContainerInfo, Done, NameStream, ObjectId, ObjectInfo, Upload,
};

/// Pieces a download is sent in, as a backend would send them.
const PIECE: usize = 256 << 10;

#[derive(Default)]
struct Blobs {
    containers: BTreeSet<String>,
    objects: BTreeMap<ObjectId, Bytes>,
}

/// Containers and objects in memory; names listed in chunks of two. Cheap to clone (shared
/// contents). Object operations on a container that does not exist fail, as a backend's do.
#[derive(Clone, Default)]
pub struct MemBlobs(Arc<Mutex<Blobs>>);

/// A transfer that has already ended.
fn ready(v: Result<(), String>) -> Done {
    Box::pin(async move { v })
}

impl MemBlobs {
    /// The stored object `id`, if any.
    pub fn object(&self, id: &ObjectId) -> Option<Bytes> {
        self.lock().objects.get(id).cloned()
    }

    fn lock(&self) -> MutexGuard<'_, Blobs> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn existing(&self, container: &str) -> Result<MutexGuard<'_, Blobs>, String> {
        let blobs = self.lock();
        if blobs.containers.contains(container) {
            Ok(blobs)
        } else {
            Err(format!("container {container:?} does not exist"))
        }
    }
}

impl<C: Send + 'static> blobstore::Handler<C> for MemBlobs {
    async fn create_container(&self, _: C, name: String) -> Result<(), String> {
        self.lock().containers.insert(name);
        Ok(())
    }

    async fn container_exists(&self, _: C, name: String) -> Result<bool, String> {
        Ok(self.lock().containers.contains(&name))
    }

    async fn delete_container(&self, _: C, name: String) -> Result<(), String> {
        let mut blobs = self.lock();
        blobs.objects.retain(|id, _| id.container != name);
        blobs.containers.remove(&name);
        Ok(())
    }

    async fn clear_container(&self, _: C, name: String) -> Result<(), String> {
        self.existing(&name)?
            .objects
            .retain(|id, _| id.container != name);
        Ok(())
    }

    async fn get_container_info(&self, _: C, name: String) -> Result<ContainerInfo, String> {
        drop(self.existing(&name)?);
        Ok(ContainerInfo { created_at: 1 })
    }

    async fn list_container_objects(
        &self,
        _: C,
        name: String,
        limit: Option<u64>,
        offset: Option<u64>,
    ) -> Result<(NameStream, Done), String> {
        let names: Vec<String> = self
            .existing(&name)?
            .objects
            .keys()
            .filter(|id| id.container == name)
            .skip(usize::try_from(offset.unwrap_or(0)).unwrap_or(usize::MAX))
            .take(usize::try_from(limit.unwrap_or(u64::MAX)).unwrap_or(usize::MAX))
            .map(|id| id.object.clone())
            .collect();
        let chunks: Vec<Vec<String>> = names.chunks(2).map(<[String]>::to_vec).collect();
        Ok((Box::pin(futures::stream::iter(chunks)), ready(Ok(()))))
    }

    async fn copy_object(&self, _: C, src: ObjectId, dest: ObjectId) -> Result<(), String> {
        let mut blobs = self.existing(&dest.container)?;
        let value = blobs
            .objects
            .get(&src)
            .cloned()
            .ok_or_else(|| format!("no object {src:?}"))?;
        blobs.objects.insert(dest, value);
        Ok(())
    }

    async fn move_object(&self, _: C, src: ObjectId, dest: ObjectId) -> Result<(), String> {
        let mut blobs = self.existing(&dest.container)?;
        let value = blobs
            .objects
            .remove(&src)
            .ok_or_else(|| format!("no object {src:?}"))?;
        blobs.objects.insert(dest, value);
        Ok(())
    }

    async fn delete_object(&self, _: C, id: ObjectId) -> Result<(), String> {
        self.existing(&id.container)?.objects.remove(&id);
        Ok(())
    }

    async fn delete_objects(
        &self,
        _: C,
        container: String,
        objects: Vec<String>,
    ) -> Result<(), String> {
        let mut blobs = self.existing(&container)?;
        for object in objects {
            blobs.objects.remove(&ObjectId {
                container: container.clone(),
                object,
            });
        }
        Ok(())
    }

    async fn get_container_data(
        &self,
        _: C,
        id: ObjectId,
        start: u64,
        end: u64,
    ) -> Result<(ByteStream, Done), String> {
        let value = self
            .existing(&id.container)?
            .objects
            .get(&id)
            .cloned()
            .ok_or_else(|| format!("no object {id:?}"))?;
        // `end` is inclusive.
        let len = value.len();
        let end = usize::try_from(end).map_or(len, |e| e.saturating_add(1).min(len));
        let start = usize::try_from(start).map_or(end, |s| s.min(end));
        let value = value.slice(start..end);
        let pieces: Vec<Bytes> = (0..value.len())
            .step_by(PIECE)
            .map(|i| value.slice(i..(i + PIECE).min(value.len())))
            .collect();
        Ok((Box::pin(futures::stream::iter(pieces)), ready(Ok(()))))
    }

    async fn get_object_info(&self, _: C, id: ObjectId) -> Result<ObjectInfo, String> {
        let blobs = self.existing(&id.container)?;
        let value = blobs
            .objects
            .get(&id)
            .ok_or_else(|| format!("no object {id:?}"))?;
        Ok(ObjectInfo {
            created_at: 1,
            size: value.len() as u64,
        })
    }

    async fn has_object(&self, _: C, id: ObjectId) -> Result<bool, String> {
        Ok(self.existing(&id.container)?.objects.contains_key(&id))
    }

    async fn write_container_data(
        &self,
        _: C,
        id: ObjectId,
        mut data: Upload,
    ) -> Result<Done, String> {
        drop(self.existing(&id.container)?);
        let blobs = self.clone();
        Ok(Box::pin(async move {
            // Stored only once whole, and only when the upload did not fail: a reader never
            // sees half an object.
            let mut buf = Vec::new();
            while let Some(chunk) = data.next().await {
                buf.extend_from_slice(&chunk?);
            }
            blobs.lock().objects.insert(id, Bytes::from(buf));
            Ok(())
        }))
    }
}
