//! `wasi:blobstore` in a component, carried to a provider as the 1.x wire interface
//! `wrpc:blobstore/blobstore@0.2.0`, with data streamed both ways (objects larger than a NATS
//! message). The provider is a small SDK provider keeping objects in memory: what is under
//! test is the host's mapping and streaming; real backends come with the blobstore providers.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt as _, stream};
use trellis_host::read_component;
use trellis_sdk::provider::Provider;
use trellis_sdk::runtime::CallContext;
use trellis_sdk::store::StoredLink;
use trellis_sdk::subjects::LatticeSubjects;
use trellis_tests as common;
use trellis_wrpc_nats::{Connection, TransportOptions};

mod support;

use trellis_interfaces::blobstore::bindings as provider_bindings;
mod caller {
    wit_bindgen_wrpc::generate!({
        inline: "
            package trellis-test:components@0.1.0;
            interface echo { blob: func(container: string, object: string, size: u32) -> result<string, string>; }
            world caller { import echo; }
        ",
    });
}

use provider_bindings::exports::wrpc::blobstore0_2_0::blobstore as bs;
use provider_bindings::wrpc::blobstore0_2_0::types as bt;

const ECHO_WASM: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/components/prebuilt/echo.wasm"
);

type Objects = BTreeMap<(String, String), Bytes>;

#[derive(Clone, Default)]
struct MemBlobs {
    objects: Arc<Mutex<Objects>>,
    containers: Arc<Mutex<Vec<String>>>,
}
impl Provider for MemBlobs {}

type Done = Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send>>;

impl bs::Handler<CallContext> for MemBlobs {
    async fn clear_container(
        &self,
        _: CallContext,
        name: String,
    ) -> anyhow::Result<Result<(), String>> {
        self.objects.lock().unwrap().retain(|(c, _), _| *c != name);
        Ok(Ok(()))
    }
    async fn container_exists(
        &self,
        _: CallContext,
        name: String,
    ) -> anyhow::Result<Result<bool, String>> {
        Ok(Ok(self.containers.lock().unwrap().contains(&name)))
    }
    async fn create_container(
        &self,
        _: CallContext,
        name: String,
    ) -> anyhow::Result<Result<(), String>> {
        self.containers.lock().unwrap().push(name);
        Ok(Ok(()))
    }
    async fn delete_container(
        &self,
        _: CallContext,
        name: String,
    ) -> anyhow::Result<Result<(), String>> {
        self.containers.lock().unwrap().retain(|c| *c != name);
        Ok(Ok(()))
    }
    async fn get_container_info(
        &self,
        _: CallContext,
        _name: String,
    ) -> anyhow::Result<Result<bt::ContainerMetadata, String>> {
        Ok(Ok(bt::ContainerMetadata { created_at: 0 }))
    }
    async fn list_container_objects(
        &self,
        _: CallContext,
        name: String,
        _limit: Option<u64>,
        _offset: Option<u64>,
    ) -> anyhow::Result<Result<(Pin<Box<dyn Stream<Item = Vec<String>> + Send>>, Done), String>>
    {
        let names: Vec<String> = self
            .objects
            .lock()
            .unwrap()
            .keys()
            .filter(|(c, _)| *c == name)
            .map(|(_, o)| o.clone())
            .collect();
        Ok(Ok((
            Box::pin(stream::iter([names])),
            Box::pin(async { Ok(()) }),
        )))
    }
    async fn copy_object(
        &self,
        _: CallContext,
        src: bt::ObjectId,
        dest: bt::ObjectId,
    ) -> anyhow::Result<Result<(), String>> {
        let mut o = self.objects.lock().unwrap();
        let Some(v) = o.get(&(src.container, src.object)).cloned() else {
            return Ok(Err("no such object".into()));
        };
        o.insert((dest.container, dest.object), v);
        Ok(Ok(()))
    }
    async fn delete_object(
        &self,
        _: CallContext,
        id: bt::ObjectId,
    ) -> anyhow::Result<Result<(), String>> {
        self.objects
            .lock()
            .unwrap()
            .remove(&(id.container, id.object));
        Ok(Ok(()))
    }
    async fn delete_objects(
        &self,
        _: CallContext,
        container: String,
        objects: Vec<String>,
    ) -> anyhow::Result<Result<(), String>> {
        let mut o = self.objects.lock().unwrap();
        for name in objects {
            o.remove(&(container.clone(), name));
        }
        Ok(Ok(()))
    }
    async fn get_container_data(
        &self,
        _: CallContext,
        id: bt::ObjectId,
        start: u64,
        end: u64,
    ) -> anyhow::Result<Result<(Pin<Box<dyn Stream<Item = Bytes> + Send>>, Done), String>> {
        let Some(v) = self
            .objects
            .lock()
            .unwrap()
            .get(&(id.container, id.object))
            .cloned()
        else {
            return Ok(Err("no such object".into()));
        };
        let end = (end as usize).saturating_add(1).min(v.len());
        let v = v.slice((start as usize).min(end)..end);
        // Sent in 256 KiB pieces, as a backend would.
        let chunks: Vec<Bytes> = (0..v.len())
            .step_by(256 << 10)
            .map(|i| v.slice(i..(i + (256 << 10)).min(v.len())))
            .collect();
        Ok(Ok((
            Box::pin(stream::iter(chunks)),
            Box::pin(async { Ok(()) }),
        )))
    }
    async fn get_object_info(
        &self,
        _: CallContext,
        id: bt::ObjectId,
    ) -> anyhow::Result<Result<bt::ObjectMetadata, String>> {
        Ok(
            match self.objects.lock().unwrap().get(&(id.container, id.object)) {
                Some(v) => Ok(bt::ObjectMetadata {
                    created_at: 0,
                    size: v.len() as u64,
                }),
                None => Err("no such object".into()),
            },
        )
    }
    async fn has_object(
        &self,
        _: CallContext,
        id: bt::ObjectId,
    ) -> anyhow::Result<Result<bool, String>> {
        Ok(Ok(self
            .objects
            .lock()
            .unwrap()
            .contains_key(&(id.container, id.object))))
    }
    async fn move_object(
        &self,
        cx: CallContext,
        src: bt::ObjectId,
        dest: bt::ObjectId,
    ) -> anyhow::Result<Result<(), String>> {
        let res = self.copy_object(cx.clone(), src.clone(), dest).await?;
        self.objects
            .lock()
            .unwrap()
            .remove(&(src.container, src.object));
        Ok(res)
    }
    async fn write_container_data(
        &self,
        _: CallContext,
        id: bt::ObjectId,
        mut data: Pin<Box<dyn Stream<Item = Bytes> + Send>>,
    ) -> anyhow::Result<Result<Done, String>> {
        let objects = Arc::clone(&self.objects);
        Ok(Ok(Box::pin(async move {
            let mut buf = Vec::new();
            while let Some(chunk) = data.next().await {
                buf.extend_from_slice(&chunk);
            }
            objects
                .lock()
                .unwrap()
                .insert((id.container, id.object), Bytes::from(buf));
            Ok(())
        })))
    }
}

#[test]
fn wasi_blobstore_streams_objects_through_the_linked_provider() {
    // The futures generated for streaming interfaces are large in unoptimised builds.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_stack_size(16 << 20)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async { tokio::spawn(blob_round_trips()).await.unwrap() });
}

async fn blob_round_trips() {
    let lattice = common::unique_lattice("blob");
    let subjects = LatticeSubjects::new(&lattice).unwrap();
    let blobs = MemBlobs::default();
    let provider = support::provider(&lattice, "blobs", blobs.clone()).await;
    provider
        .serve(
            Box::pin(provider_bindings::serve(&provider.server(), blobs.clone()))
                .await
                .unwrap(),
        )
        .unwrap();

    let host = support::host(&lattice).await;
    host.admin()
        .put_link(StoredLink::new(
            "blob-comp",
            "blobs",
            "wasi",
            "blobstore",
            ["blobstore"],
        ))
        .await
        .unwrap();
    let _c = host
        .start_component("blob-comp", read_component(ECHO_WASM).unwrap(), &[])
        .await
        .unwrap();
    let conn = Connection::new(
        common::nats().await,
        TransportOptions {
            timeout: Duration::from_secs(20),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let client = conn.client(subjects.wrpc_prefix("blob-comp"));
    let call = |size: u32| {
        Box::pin(caller::trellis_test::components::echo::blob(
            &client, None, "photos", "cat.jpg", size,
        ))
    };
    let mut res = call(1000).await.unwrap();
    for _ in 0..50 {
        // The provider picks the link up from the store within milliseconds.
        if res.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        res = call(1000).await.unwrap();
    }
    assert_eq!(
        res.unwrap(),
        "size=1000 read=1000 mismatches=0 listed=cat.jpg had=true gone=true"
    );
    // Five MiB: several NATS messages each way, streamed.
    let size = 5 << 20;
    let res = call(size).await.unwrap().unwrap();
    assert_eq!(
        res,
        format!("size={size} read={size} mismatches=0 listed=cat.jpg had=true gone=true")
    );
}
